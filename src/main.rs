//! The `medic` binary: parse arguments, set up logging, call the library,
//! turn its answer into output and an exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use medic::cli::{Cli, Command, DrillArgs};
use medic::clock::Clock;
use medic::ops::Request;
use medic::{daemon, drill, logging, ops, probe, rules, ruletest};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Drill jobs send their reports through the notifiers; `drill.target`
    // jobs follow the daemon's own engine (built a layer above the jobs).
    medic::page::register_report_sinks();
    medic::drill::scheduled::register();
    match cli.command {
        Command::Version => {
            println!("medic {}", medic::cli::VERSION);
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => print_bytes(&medic::cli::completions(shell)),
        Command::Man => match medic::cli::man_page() {
            Ok(page) => print_bytes(&page),
            Err(e) => {
                eprintln!("medic: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config, paths } => match rules::check(Some(&config), &paths) {
            Ok(summary) => {
                summary.warnings.iter().for_each(|w| eprintln!("{w}"));
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(diags) => {
                diags.0.iter().for_each(|d| eprintln!("{d}"));
                ExitCode::FAILURE
            }
        },
        Command::Test { config, paths } => {
            let reports = ruletest::run_paths(&paths, &config);
            let (_, failed) = ruletest::print(&reports, &mut std::io::stdout().lock());
            exit_if(failed == 0)
        }
        Command::Probe { config, json, name } => probe(&config, &name, json),
        Command::Drill { args } => drill(args),
        Command::Run { config } => {
            logging::init(cli.log_format);
            run(config)
        }
        Command::Ops(command) => {
            let (remote, request) = command.into_request();
            operate(&remote, request)
        }
    }
}

/// Writes `bytes` to stdout (a closed pipe is a failure, not a panic).
fn print_bytes(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    exit_if(out.write_all(bytes).and_then(|()| out.flush()).is_ok())
}

fn exit_if(ok: bool) -> ExitCode {
    ExitCode::from(u8::from(!ok))
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Runs one operator command; prints its output or its error.
fn operate(remote: &ops::Remote, request: Request) -> ExitCode {
    let result = runtime().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(ops::run(remote, request))
            .map_err(|e| e.to_string())
    });
    match &result {
        Ok(out) => print!("{out}"),
        Err(e) => eprintln!("medic: {e}"),
    }
    exit_if(result.is_ok())
}

/// Exit code: the probe's (0 ok, 1 failing, 3 unknown), or 4: cannot probe.
fn probe(config: &Path, name: &str, json: bool) -> ExitCode {
    let probed = runtime()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|rt| {
            rt.block_on(probe::probe(config, name))
                .map_err(|e| format!("medic probe: {e}"))
        });
    match probed {
        Ok(p) => {
            if json {
                println!("{}", p.to_json());
            } else {
                print!("{p}");
            }
            ExitCode::from(p.exit_code())
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(4)
        }
    }
}

/// `medic run`: loads config and rules (refusing to start on any problem),
/// then runs the daemon until a signal stops it.
fn run(config: PathBuf) -> ExitCode {
    let loader = daemon::file_loader(config);
    let loaded = match loader() {
        Ok(l) => l,
        Err(diags) => {
            diags.0.iter().for_each(|d| eprintln!("{d}"));
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
        let signals = daemon::signals(shutdown.clone(), handle.clone());
        tokio::spawn(async move {
            match signals.await {
                Ok(()) => std::process::exit(130),
                Err(_) => tracing::error!("cannot install signal handlers"),
            }
        });
        let options = daemon::RunOptions {
            reload: Some((loader, handle, requests)),
            ..Default::default()
        };
        daemon::start(loaded, Clock::system(), shutdown, options).await
    });
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "medic failed");
    }
    exit_if(result.is_ok())
}

/// The first SIGTERM or SIGINT, by name (never, if they cannot be watched).
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => std::future::pending().await,
    }
}

/// `medic drill`: exit code 0 only when recovery met the scenario's RTO.
fn drill(a: DrillArgs) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut out, target) = (std::io::stdout(), a.target.unwrap_or_default());
    let result = rt.block_on(async {
        let sandbox = a.sandbox;
        let run = async {
            if a.sandbox {
                return drill::sandbox::run(&a.scenario, &a.rules, a.store.as_deref(), &mut out)
                    .await;
            }
            let input = &mut std::io::stdin().lock();
            drill::real(&a.config, &a.scenario, &target, a.yes, &mut out, input).await
        };
        // SIGTERM or SIGINT (a drill job's timeout, Ctrl-C) stops the
        // drill: dropping it stops the sandbox's services and deletes its
        // directory before medic exits.
        tokio::select! {
            r = run => r,
            sig = stop_signal() => Err(drill::DrillError::Failed(format!(
                "stopped by {sig} before the drill ended; {}",
                if sandbox {
                    "the sandbox's services were stopped and its directory deleted"
                } else {
                    "the target may still be broken: check it"
                }
            ))),
        }
    });
    match result {
        Ok(report) => {
            println!("\n{report}");
            exit_if(report.rto_met())
        }
        Err(e) => {
            eprintln!("drill: {e}");
            ExitCode::FAILURE
        }
    }
}
