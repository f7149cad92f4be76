//! The command line of the `medic` binary (clap derive): its commands,
//! flags and help text. `main.rs` parses it and calls the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;
use crate::ops::{Remote, Request, Verb};

/// The version and the git commit it was built from (`unknown` without
/// git): what `medic --version` and `medic version` print.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("MEDIC_GIT_COMMIT"),
    ")"
);

/// medic keeps production systems alive: it watches, remediates within
/// bounds, and pages humans for what it cannot fix.
#[derive(Parser, Debug)]
#[command(name = "medic", version = VERSION, about)]
pub struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// The config file.
        #[arg(long, short, default_value = "medic.yaml")]
        config: PathBuf,
    },
    /// Validate the config and rule files without contacting any target.
    Check {
        /// The config file.
        #[arg(long, short, default_value = "medic.yaml")]
        config: PathBuf,
        /// Rule files or directories; default: the config's `rules`.
        paths: Vec<PathBuf>,
    },
    /// Run rule unit tests on a simulated clock (nothing real runs).
    Test {
        /// The config (targets, escalation policies) for test files that
        /// do not name their own.
        #[arg(long, short, default_value = "medic.yaml")]
        config: PathBuf,
        /// Test files or directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run one symptom's check once and print what it saw (for per-series
    /// checks, every matched series with its labels and value). Exit code:
    /// 0 ok, 1 failing, 3 unknown, 4 cannot probe (bad config or rules, no
    /// such symptom, ambiguous name).
    Probe {
        /// The config file.
        #[arg(long, short, default_value = "medic.yaml")]
        config: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// The symptom: NAME, or SCENARIO/NAME when several scenarios have one.
        name: String,
    },
    #[command(flatten)]
    Ops(OpsCommand),
    /// A disaster-recovery drill: break something on purpose, let medic
    /// detect and remediate it, report detection and recovery times and
    /// data loss against the scenario's RTO and RPO.
    Drill {
        #[command(flatten)]
        args: DrillArgs,
    },
    /// Print the version and the git commit it was built from.
    Version,
    /// Print a shell completion script (install it where your shell looks,
    /// e.g. `medic completions bash > /etc/bash_completion.d/medic`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `medic man > /usr/share/man/man1/medic.1`.
    Man,
}

/// The completion script for `shell`, from this command line's definition.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "medic", &mut out);
    out
}

/// The man page (roff), from this command line's definition: the
/// commands, then each command's synopsis and options, with their help.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    // The commands, each pointing at its section below (clap_mangen names
    // a page per command, `medic-run(1)`, which is not installed).
    let mut commands = Vec::new();
    man.render_subcommands_section(&mut commands)?;
    let mut commands = String::from_utf8_lossy(&commands).into_owned();
    for sub in cmd.get_subcommands() {
        commands = commands.replace(
            &format!("medic\\-{}(1)", sub.get_name().replace('-', "\\-")),
            &format!("medic {}", sub.get_name()),
        );
    }
    out.extend_from_slice(commands.as_bytes());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("medic {}", sub.get_name());
        let page = clap_mangen::Man::new(sub.clone().bin_name(name.clone()));
        let mut section = Vec::new();
        page.render_synopsis_section(&mut section)?;
        page.render_options_section(&mut section)?;
        // One section per command: its synopsis, then its options.
        let text = String::from_utf8_lossy(&section)
            .replacen(
                ".SH SYNOPSIS",
                &format!(".SH \"{}\"", name.to_uppercase()),
                1,
            )
            .replacen(".SH OPTIONS", ".SS Options", 1);
        out.extend_from_slice(text.as_bytes());
    }
    man.render_version_section(&mut out)?;
    Ok(out)
}

// The commands that talk to a running medic (or, for `report`, its store).
#[derive(Subcommand, Debug)]
pub enum OpsCommand {
    /// List incidents, or show one with its timeline (from a running medic).
    Incidents {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        what: Option<IncidentsCommand>,
    },
    /// Acknowledge an incident (stops its escalation).
    Ack {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
    /// Approve a step waiting for approval.
    Approve {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        step: String,
    },
    /// Reject a step waiting for approval.
    Reject {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        step: String,
    },
    /// Resolve an incident by hand.
    Resolve {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
    /// Print a post-mortem draft (Markdown) of an incident: from the store
    /// of `--config`, or from a running medic with `--url`.
    Report {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
    /// Backup jobs on a running medic.
    Backup {
        #[command(subcommand)]
        what: BackupCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Run a job now, by hand (the runbook's manual backup before a major
    /// change): recorded like a scheduled run, marked manual with --by;
    /// waits for it and prints the result (exit 1 when it failed).
    Run {
        #[command(flatten)]
        api: ApiArgs,
        /// The job's name in config (`jobs:`).
        job: String,
    },
}

// `medic drill`'s arguments. (A plain comment: a doc comment here would
// become the subcommand's about text.)
#[derive(clap::Args, Debug)]
pub struct DrillArgs {
    /// The scenario (a rule file's `scenario:`).
    pub scenario: String,
    /// Drill against private throwaway services medic starts itself
    /// (redis-server, PostgreSQL primary + replica): safe anywhere.
    #[arg(long, conflicts_with = "target")]
    pub sandbox: bool,
    /// The target to break; the config must mark it `drill: allowed`.
    #[arg(long, required_unless_present = "sandbox")]
    pub target: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// The config file (not used by --sandbox).
    #[arg(long, short, default_value = "medic.yaml")]
    pub config: PathBuf,
    /// Where the shipped rule files are (--sandbox).
    #[arg(long, default_value = "rules")]
    pub rules: PathBuf,
    /// Keep the drill's store (SQLite) at this path instead of the
    /// sandbox's temp dir (--sandbox): its incident, timeline and pages
    /// stay for `medic incidents`, the console or a report.
    #[arg(long, requires = "sandbox")]
    pub store: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum IncidentsCommand {
    /// Open and recent incidents (the default).
    List,
    /// One incident with its timeline and attempts.
    Show { id: String },
}

/// How to reach a running medic.
#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// The config file (its `http.listen` is the default URL; `report`
    /// reads its store).
    #[arg(long, short, default_value = "medic.yaml")]
    pub config: PathBuf,
    /// The API's base URL, e.g. http://127.0.0.1:9185.
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer token: the API token (mutating calls and reads) or a read
    /// token (reads only).
    #[arg(long, env = "MEDIC_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Who is acting, written on the timeline.
    #[arg(long, env = "USER", default_value = "cli")]
    pub by: String,
}

impl OpsCommand {
    /// The command as a request to [`crate::ops::run`].
    pub fn into_request(self) -> (Remote, Request) {
        let post = |id, verb, step| Request::Post { id, verb, step };
        let (api, request) = match self {
            OpsCommand::Incidents { api, what } => match what {
                None | Some(IncidentsCommand::List) => (api, Request::List),
                Some(IncidentsCommand::Show { id }) => (api, Request::Show(id)),
            },
            OpsCommand::Ack { api, id } => (api, post(id, Verb::Acknowledge, None)),
            OpsCommand::Approve { api, id, step } => (api, post(id, Verb::Approve, Some(step))),
            OpsCommand::Reject { api, id, step } => (api, post(id, Verb::Reject, Some(step))),
            OpsCommand::Resolve { api, id } => (api, post(id, Verb::Resolve, None)),
            OpsCommand::Report { api, id } => (api, Request::Report(id)),
            OpsCommand::Backup {
                what: BackupCommand::Run { api, job },
            } => (api, Request::RunJob(job)),
        };
        (api.into(), request)
    }
}

impl From<ApiArgs> for Remote {
    fn from(a: ApiArgs) -> Self {
        Remote {
            config: a.config,
            url: a.url,
            token: a.token,
            by: a.by,
        }
    }
}
