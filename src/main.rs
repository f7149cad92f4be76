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
    /// Print the version.
    Version,
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
        Command::Run { config } => {
            logging::init(cli.log_format);
            run(config)
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
