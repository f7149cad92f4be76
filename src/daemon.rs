//! `medic run`: wires config, rules, store, checks, engine and pager
//! together, and shuts down gracefully.
//!
//! Shutdown order (one root token, a child per subsystem, one task tracker):
//! checks stop first (no new observations), then the engine and incident
//! tasks stop at their next safe point; a running action may finish within
//! the grace period, after which it is aborted; the store is flushed last.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::check::{self, Check, Outcome};
use crate::clock::Clock;
use crate::config::{Config, StoreConfig};
use crate::engine::{Engine, ScenarioRuntime, Shared, Update};
use crate::page::Pager;
use crate::remedy::{self, plan::PlannedStep};
use crate::rules::model::Scenario;
use crate::server::{self, AppState, Readiness};
use crate::store::{SqliteStore, Store};

/// A scenario medic will not run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub scenario: String,
    pub reason: String,
}

/// Builds the checks and actions of each scenario. A scenario with any kind
/// this build cannot run (or cannot build, e.g. a missing secret) is refused
/// as a whole rather than run partly.
pub fn build_runtimes(
    config: &Config,
    scenarios: Vec<Scenario>,
) -> (Vec<Arc<ScenarioRuntime>>, Vec<Refusal>) {
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for sc in scenarios {
        let mut problems = Vec::new();
        let mut checks: Vec<Arc<dyn Check>> = Vec::new();
        for s in &sc.symptoms {
            match check::build(&s.check, s.timeout.get(), config) {
                Ok(c) => checks.push(c),
                Err(e) => problems.push(format!("symptom {}: {e}", s.name)),
            }
        }
        let mut steps = Vec::new();
        for st in &sc.plan {
            match remedy::build(&st.action, config) {
                Ok(action) => steps.push(PlannedStep {
                    step: st.clone(),
                    action,
                }),
                Err(e) => problems.push(format!("step {}: {e}", st.name)),
            }
        }
        if problems.is_empty() {
            let mode = sc.mode.unwrap_or(config.mode);
            ok.push(Arc::new(ScenarioRuntime {
                scenario: sc,
                checks,
                steps,
                mode,
            }));
        } else {
            refused.push(Refusal {
                scenario: sc.name.clone(),
                reason: problems.join("; "),
            });
        }
    }
    (ok, refused)
}

/// Opens the configured store, creating its directory if needed.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match &config.store {
        StoreConfig::Sqlite { path } => {
            let path = config.resolve_path(path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the store directory {}", dir.display()))?;
            }
            let store = SqliteStore::open(&path)
                .await
                .with_context(|| format!("opening the store {}", path.display()))?;
            Ok(Arc::new(store))
        }
    }
}

/// Runs the daemon until `shutdown` is cancelled (SIGTERM/SIGINT in `main`).
pub async fn run(
    config: Config,
    scenarios: Vec<Scenario>,
    clock: Clock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let (runtimes, refused) = build_runtimes(&config, scenarios);
    for r in &refused {
        tracing::error!(scenario = %r.scenario, "scenario refused, not running: {}", r.reason);
    }
    run_with(&config, runtimes, refused.len(), store, clock, shutdown).await
}

/// Runs already-built scenarios against `store` until `shutdown`. Tests
/// use it to run the real engine with scripted checks and actions.
pub async fn run_with(
    config: &Config,
    runtimes: Vec<Arc<ScenarioRuntime>>,
    refused: usize,
    store: Arc<dyn Store>,
    clock: Clock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(
        scenarios = runtimes.len(),
        mode = ?config.mode,
        "medic starting"
    );

    let readiness = Readiness {
        rules_loaded: true,
        scenarios: runtimes.len(),
        refused,
        role: "leader".into(),
        reload_error: None,
    };
    let (_ready_tx, ready_rx) = watch::channel(readiness);
    let server_stop = CancellationToken::new();
    let server = match &config.http {
        Some(http) => {
            let app = server::router(AppState {
                store: store.clone(),
                clock: clock.clone(),
                readiness: ready_rx,
            });
            let (_, handle) = server::serve(http.listen, app, server_stop.clone())
                .await
                .with_context(|| format!("listening on {}", http.listen))?;
            Some(handle)
        }
        None => None,
    };

    let tasks = TaskTracker::new();
    let checks_stop = CancellationToken::new();
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let shared = Shared {
        store: store.clone(),
        clock: clock.clone(),
        pager: Arc::new(Pager::new(config, store.clone(), clock.clone())),
        actions: Arc::new(Semaphore::new(config.limits.actions_in_flight.max(1))),
        stop: stop.clone(),
        kill: kill.clone(),
        tasks: tasks.clone(),
    };
    let mut engine = Engine::new(runtimes, shared);
    engine.resume().await?;

    let (tx, rx) = mpsc::channel(4096);
    let permits = Arc::new(Semaphore::new(config.limits.concurrent_checks.max(1)));
    for (slot, rt, j) in engine.schedule() {
        let s = &rt.scenario.symptoms[j];
        tasks.spawn(check_loop(
            slot,
            rt.checks[j].clone(),
            s.every.get(),
            s.timeout.get(),
            tx.clone(),
            permits.clone(),
            checks_stop.clone(),
        ));
    }
    drop(tx);
    let engine_task = tasks.spawn(engine.run(rx));
    tracing::info!("medic running");

    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = engine_task => {
            // The engine only stops early on a store failure.
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "engine stopped: store failure"),
                Err(e) => tracing::error!(error = %e, "engine task failed"),
            }
        }
    }
    tracing::info!(grace = %config.shutdown_grace, "shutting down: no new checks or actions");
    checks_stop.cancel();
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(config.shutdown_grace.get(), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over: aborting running actions");
        kill.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
    }
    server_stop.cancel();
    if let Some(h) = server {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    store.flush().await?;
    tracing::info!("medic stopped");
    Ok(())
}

/// Runs one symptom's check on its own schedule. A slow or hanging check
/// only delays itself: each run is bounded by the symptom's timeout, which
/// turns a hang into `unknown`.
async fn check_loop(
    slot: usize,
    check: Arc<dyn Check>,
    every: Duration,
    timeout: Duration,
    tx: mpsc::Sender<Update>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let _permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = permits.acquire() => match p { Ok(p) => p, Err(_) => return },
        };
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(timeout, check.run()) => r.unwrap_or_else(|_| {
                Outcome::Unknown(format!("timed out after {}", humantime::format_duration(timeout)))
            }),
        };
        let update = Update {
            slot,
            outcome,
            at: Instant::now(),
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}
