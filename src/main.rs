//! The `medic` binary: parse arguments, set up logging, call the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use medic::clock::Clock;
use medic::logging::{self, LogFormat};
use tokio_util::sync::CancellationToken;

/// medic keeps production systems alive: it watches, remediates within
/// bounds, and pages humans for what it cannot fix.
#[derive(Parser, Debug)]
#[command(name = "medic", version, about)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    /// A disaster-recovery drill: break something on purpose, let medic
    /// detect and remediate it, report detection and recovery times and
    /// data loss against the scenario's RTO and RPO.
    Drill {
        /// The scenario (a rule file's `scenario:`).
        scenario: String,
        /// Drill against private throwaway services medic starts itself
        /// (redis-server, PostgreSQL primary + replica): safe anywhere.
        #[arg(long, conflicts_with = "target")]
        sandbox: bool,
        /// The target to break; the config must mark it `drill: allowed`.
        #[arg(long, required_unless_present = "sandbox")]
        target: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// The config file (not used by --sandbox).
        #[arg(long, short, default_value = "medic.yaml")]
        config: PathBuf,
        /// Where the shipped rule files are (--sandbox).
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand, Debug)]
enum IncidentsCommand {
    /// Open and recent incidents (the default).
    List,
    /// One incident with its timeline and attempts.
    Show { id: String },
}

/// How to reach a running medic.
#[derive(clap::Args, Debug)]
struct ApiArgs {
    /// The config file (its `http.listen` is the default URL; `report`
    /// reads its store).
    #[arg(long, short, default_value = "medic.yaml")]
    config: PathBuf,
    /// The API's base URL, e.g. http://127.0.0.1:9185.
    #[arg(long)]
    url: Option<String>,
    /// Bearer token of mutating calls.
    #[arg(long, env = "MEDIC_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Who is acting, written on the timeline.
    #[arg(long, env = "USER", default_value = "cli")]
    by: String,
}

impl ApiArgs {
    fn client(&self) -> Result<medic::ops::Client, String> {
        let url = match &self.url {
            Some(u) => u.clone(),
            None => {
                let config = medic::config::load(&self.config).map_err(|d| {
                    format!(
                        "no --url, and the config {} cannot be read:\n{d}",
                        self.config.display()
                    )
                })?;
                let http = config.http.ok_or_else(|| {
                    format!("no --url, and {} has no http.listen", self.config.display())
                })?;
                format!("http://{}", http.listen)
            }
        };
        Ok(medic::ops::Client::new(&url, self.token.clone()))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("medic {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { config, paths } => match medic::rules::check(Some(&config), &paths) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(diags) => {
                for d in &diags.0 {
                    eprintln!("{d}");
                }
                ExitCode::FAILURE
            }
        },
        Command::Test { config, paths } => {
            let reports = medic::ruletest::run_paths(&paths, &config);
            let (_, failed) = medic::ruletest::print(&reports, &mut std::io::stdout().lock());
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Probe { config, json, name } => probe(&config, &name, json),
        Command::Drill {
            scenario,
            sandbox,
            target,
            yes,
            config,
            rules,
        } => drill(&scenario, sandbox, target, yes, config, rules),
        Command::Run { config } => {
            logging::init(cli.log_format);
            run(config)
        }
        Command::Incidents { api, what } => operate(&api, async |c| match what {
            None | Some(IncidentsCommand::List) => Ok(medic::ops::format_list(
                &c.list().await.map_err(|e| e.to_string())?,
            )),
            Some(IncidentsCommand::Show { id }) => Ok(medic::ops::format_detail(
                &c.show(&id).await.map_err(|e| e.to_string())?,
            )),
        }),
        Command::Ack { api, id } => mutate(&api, &id, Verb::Acknowledge, None),
        Command::Approve { api, id, step } => mutate(&api, &id, Verb::Approve, Some(&step)),
        Command::Reject { api, id, step } => mutate(&api, &id, Verb::Reject, Some(&step)),
        Command::Resolve { api, id } => mutate(&api, &id, Verb::Resolve, None),
        Command::Report { api, id } => report(&api, &id),
    }
}

use medic::ops::Verb;

/// Runs one API call on a small runtime; prints its output or its error.
fn operate(
    api: &ApiArgs,
    f: impl AsyncFnOnce(medic::ops::Client) -> Result<String, String>,
) -> ExitCode {
    let result = api.client().and_then(|c| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(f(c))
    });
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("medic: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mutate(api: &ApiArgs, id: &str, verb: Verb, step: Option<&str>) -> ExitCode {
    let by = api.by.clone();
    operate(api, async |c| {
        let answer = c
            .post(id, verb, &by, step)
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!("incident {id}: {} done\n{answer}\n", verb.as_str()))
    })
}

/// `medic report`: from the API with `--url`, else from the config's store.
fn report(api: &ApiArgs, id: &str) -> ExitCode {
    if api.url.is_some() {
        return operate(api, async |c| {
            let d = c.show(id).await.map_err(|e| e.to_string())?;
            Ok(medic::ops::report::render(&d, chrono::Utc::now()))
        });
    }
    let config_path = api.config.clone();
    let id = id.to_string();
    let result = (|| -> Result<String, String> {
        let config = medic::config::load(&config_path).map_err(|d| d.to_string())?;
        let paths: Vec<PathBuf> = config
            .rules
            .iter()
            .map(|p| config.resolve_path(p))
            .collect();
        // The scenario gives RTO, RPO and runbook; rules that do not load
        // only cost those lines.
        let scenarios = medic::rules::load_paths(&paths, &config).unwrap_or_default();
        let incident_id: i64 = id
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("incident id {id:?} is not a positive integer"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let store = medic::daemon::open_store(&config)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let incident = store
                .incident(incident_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("incident {incident_id} not found"))?;
            let timeline = store
                .timeline(incident_id)
                .await
                .map_err(|e| e.to_string())?;
            let attempts = store
                .incident_attempts(incident_id)
                .await
                .map_err(|e| e.to_string())?;
            let sc = scenarios.iter().find(|s| s.name == incident.scenario);
            let d = medic::ops::IncidentDetail {
                rto: sc.map(|s| s.rto.to_string()),
                rpo: sc.and_then(|s| s.rpo.map(|r| r.to_string())),
                runbook: sc.and_then(|s| s.runbook.clone()),
                incident,
                timeline,
                attempts,
            };
            Ok(medic::ops::report::render(&d, chrono::Utc::now()))
        })
    })();
    match result {
        Ok(md) => {
            print!("{md}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("medic: {e}");
            ExitCode::FAILURE
        }
    }
}

fn probe(config: &std::path::Path, name: &str, json: bool) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(4);
        }
    };
    match rt.block_on(medic::probe::probe(config, name)) {
        Ok(p) => {
            if json {
                println!("{}", p.to_json());
            } else {
                print!("{p}");
            }
            ExitCode::from(p.exit_code())
        }
        Err(e) => {
            eprintln!("medic probe: {e}");
            ExitCode::from(4)
        }
    }
}

fn run(config_path: PathBuf) -> ExitCode {
    let loader = medic::daemon::file_loader(config_path);
    let loaded = match loader() {
        Ok(l) => l,
        Err(diags) => {
            for d in &diags.0 {
                eprintln!("{d}");
            }
            tracing::error!(
                problems = diags.0.len(),
                "invalid config or rules; not starting"
            );
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let shutdown = CancellationToken::new();
        let (handle, requests) = medic::reload::channel();
        tokio::spawn(watch_signals(shutdown.clone(), handle.clone()));
        let options = medic::daemon::RunOptions {
            reload: Some((loader, handle, requests)),
            ..Default::default()
        };
        medic::daemon::start(loaded, Clock::system(), shutdown, options).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "medic failed");
            ExitCode::FAILURE
        }
    }
}

fn drill(
    scenario: &str,
    sandbox: bool,
    target: Option<String>,
    yes: bool,
    config_path: PathBuf,
    rules: PathBuf,
) -> ExitCode {
    use medic::drill::{self, DrillError};
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<drill::DrillReport, DrillError> = rt.block_on(async {
        let mut out = std::io::stdout();
        if sandbox {
            return drill::sandbox::run(scenario, &rules, &mut out).await;
        }
        let target = target.unwrap_or_default();
        let config = medic::config::load(&config_path).map_err(|d| {
            DrillError::Refused(d.0.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("\n"))
        })?;
        let paths: Vec<PathBuf> = config.rules.iter().map(|p| config.resolve_path(p)).collect();
        let scenarios = medic::rules::load_paths(&paths, &config).map_err(|d| {
            DrillError::Refused(d.0.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("\n"))
        })?;
        let store = medic::daemon::open_store(&config)
            .await
            .map_err(|e| DrillError::Failed(format!("{e:#}")))?;
        let (d, inject) = drill::prepare_real(&config, scenarios, scenario, &target, store)?;
        println!(
            "drill: {scenario} on target {target}: medic will run `{}` (a REAL failure), then detect and remediate it",
            inject.join(" ")
        );
        for n in &d.notes {
            println!("note: {n}");
        }
        if !yes {
            use std::io::BufRead;
            print!("type the target's name ({target}) to go on: ");
            use std::io::Write;
            let _ = std::io::stdout().flush();
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            if line.trim() != target {
                return Err(DrillError::Refused("not confirmed; nothing was done".into()));
            }
        }
        d.run(drill::command_injection(inject), None, &mut out).await
    });
    match result {
        Ok(report) => {
            println!("\n{report}");
            if report.rto_met() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("drill: {e}");
            ExitCode::FAILURE
        }
    }
}

/// First SIGTERM/SIGINT: graceful shutdown. Second: exit at once. SIGHUP:
/// reload config and rules.
async fn watch_signals(shutdown: CancellationToken, reload: medic::reload::ReloadHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let mut n = 0;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading config and rules");
                reload.request("SIGHUP");
                continue;
            }
        }
        if n == 0 {
            tracing::info!("signal received: shutting down gracefully (again to force)");
            shutdown.cancel();
        } else {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
        n += 1;
    }
}
