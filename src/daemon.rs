//! `medic run`: wires config, rules, store, checks, engine and pager
//! together, and shuts down gracefully.
//!
//! Shutdown order (one root token, a child per subsystem, one task tracker):
//! checks stop first (no new observations), then the engine and incident
//! tasks stop at their next safe point; a running action may finish within
//! the grace period, after which it is aborted; the store is flushed last.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::check::vantage::Vantage;
use crate::check::{self, Check};
use crate::clock::Clock;
use crate::config::Config;
use crate::diag::Diagnostics;
use crate::engine::plan::PlannedStep;
use crate::engine::quorum::{self, Observers};
use crate::engine::reload::{Control, Reloaded, UPDATES_CAPACITY};
use crate::engine::{Engine, ScenarioRuntime, Shared, Update};
use crate::lead::{self, Role};
use crate::notify;
use crate::observe::Observation;
use crate::page::{Notifier, Pager};
use crate::reload::{ReloadHandle, ReloadOutcome, ReloadRequest, ReloadRequests, ReloadStats};
use crate::remedy;
use crate::rules::model::Scenario;
use crate::server::{self, AppState, Readiness};
use crate::store::{Fenced, StoreError, prelude::*};

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

/// Opens the configured store, creating its directory if needed
/// ([`crate::store::open`]).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(crate::store::open(config).await?)
}

/// Runs the daemon until `shutdown` is cancelled (SIGTERM/SIGINT in `main`).
pub async fn run(
    config: Config,
    scenarios: Vec<Scenario>,
    clock: Clock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (runtimes, refused) = build_runtimes(&config, scenarios);
    start(
        Loaded {
            config,
            runtimes,
            refused,
        },
        clock,
        shutdown,
        RunOptions::default(),
    )
    .await
}

/// A loaded and built set of config and scenarios.
pub struct Loaded {
    pub config: Config,
    pub runtimes: Vec<Arc<ScenarioRuntime>>,
    pub refused: Vec<Refusal>,
}

/// Loads (or reloads) the config and rules; problems as `path:line:col`.
pub type Loader = Arc<dyn Fn() -> Result<Loaded, Diagnostics> + Send + Sync>;

/// The loader of `medic run --config PATH`: the config file (with `MEDIC_`
/// environment overrides) and every rule file it names, built.
pub fn file_loader(config_path: PathBuf) -> Loader {
    Arc::new(move || {
        let config = crate::config::load(&config_path)?;
        let scenarios = crate::rules::load_configured(&config)?;
        let (runtimes, refused) = build_runtimes(&config, scenarios);
        Ok(Loaded {
            config,
            runtimes,
            refused,
        })
    })
}

/// Optional parts of a run.
#[derive(Default)]
pub struct RunOptions {
    /// Live reload: how to load, and where requests arrive (SIGHUP and
    /// `POST /-/reload` send to the handle).
    pub reload: Option<(Loader, ReloadHandle, ReloadRequests)>,
    /// Page these instead of the configured notifiers (`medic test`).
    pub notifiers: Option<HashMap<String, Arc<dyn Notifier>>>,
    /// Do not schedule the config's jobs (`medic test`, `medic drill`:
    /// a simulated week must not take real backups).
    pub no_jobs: bool,
    /// Publishes the leader's pager here (`medic test` makes scripted
    /// human decisions through it).
    pub pager: Option<watch::Sender<Option<Arc<Pager>>>>,
    /// Do not run the zones' vantage probes or the store's heartbeat, and
    /// take outcomes as checks give them (`medic test`: a simulated run
    /// must not probe the network, and its scripted outcomes are verdicts).
    pub no_vantage: bool,
}

/// Opens the store and runs `loaded` until `shutdown`.
pub async fn start(
    loaded: Loaded,
    clock: Clock,
    shutdown: CancellationToken,
    options: RunOptions,
) -> anyhow::Result<()> {
    let store = open_store(&loaded.config).await?;
    for r in &loaded.refused {
        tracing::error!(scenario = %r.scenario, "scenario refused, not running: {}", r.reason);
    }
    run_with_options(
        &loaded.config,
        loaded.runtimes,
        loaded.refused.len(),
        store,
        clock,
        shutdown,
        options,
    )
    .await
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
    run_with_options(
        config,
        runtimes,
        refused,
        store,
        clock,
        shutdown,
        RunOptions::default(),
    )
    .await
}

/// [`run_with`], with live reload and notifier overrides.
pub async fn run_with_options(
    config: &Config,
    runtimes: Vec<Arc<ScenarioRuntime>>,
    refused: usize,
    store: Arc<dyn Store>,
    clock: Clock,
    shutdown: CancellationToken,
    options: RunOptions,
) -> anyhow::Result<()> {
    tracing::info!(
        scenarios = runtimes.len(),
        mode = ?config.mode,
        "medic starting"
    );

    let (loader, reload_handle, reload_rx) = match options.reload {
        Some((l, h, rx)) => (Some(l), Some(h), rx),
        None => (None, None, crate::reload::channel().1),
    };
    let readiness = initial_readiness(runtimes.len(), refused, &clock);
    readiness.reloads.export();
    crate::metrics::leadership(None);
    crate::metrics::per_symptom(&config.metrics.per_symptom);
    let (ready_tx, ready_rx) = watch::channel(readiness);
    attach_store(&runtimes, &store);
    let (scenarios_tx, scenarios_rx) = watch::channel(runtimes.clone());
    // The leader's pager, for decisions arriving over HTTP.
    let (pager_tx, pager_rx) = match options.pager {
        Some(tx) => {
            let rx = tx.subscribe();
            (tx, rx)
        }
        None => watch::channel::<Option<Arc<Pager>>>(None),
    };
    let server_stop = CancellationToken::new();
    let credentials = Arc::new(server::auth::Credentials::default());
    let manual = Arc::new(crate::jobs::Manual::default());
    manual.set(config);
    let (public_tx, public_rx) = watch::channel(config.public_status.clone().map(Arc::new));
    let public_server = match &config.public_status {
        Some(p) => {
            let state = server::public::PublicState {
                store: store.clone(),
                clock: clock.clone(),
                scenarios: scenarios_rx.clone(),
                config: public_rx,
            };
            let (addr, h) = server::public::serve(p, state, server_stop.clone()).await?;
            tracing::info!(%addr, "public status page listening");
            Some(h)
        }
        None => None,
    };
    let app = AppState {
        store: store.clone(),
        clock: clock.clone(),
        readiness: ready_rx,
        reload: reload_handle,
        scenarios: scenarios_rx,
        pager: pager_rx,
        access: credentials.clone(),
        alerts: config.alerts.clone(),
        jobs: manual.clone(),
        console: Arc::new(server::console::Console::new(
            config.http.as_ref().is_some_and(|h| h.tls.is_some()),
        )),
    };
    let server = start_server(config, app, &server_stop).await?;

    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    // With several replicas, every one shares what it observes.
    let observers = match config.leadership() {
        crate::config::LeadershipConfig::Single => Observers::single(),
        crate::config::LeadershipConfig::Postgres(l) => Observers::shared(
            store.clone(),
            clock.clone(),
            lead::identity(),
            l.lease_duration.get(),
        ),
        crate::config::LeadershipConfig::Kubernetes(l) => Observers::shared(
            store.clone(),
            clock.clone(),
            lead::identity(),
            l.lease_duration.get(),
        ),
    };
    tasks.spawn(observers.clone().run(stop.clone()));
    // The vantage judgement outlives terms: its probes and the store's
    // heartbeat run on every replica.
    let vantage = Arc::new(Vantage::new(config));
    if !options.no_vantage {
        vantage.start(config, store.clone(), &tasks, stop.clone());
    }
    attach_vantage(&runtimes, &vantage);
    let lead_stop = CancellationToken::new();
    let (role_rx, lead_task) =
        lead::start(config, store.clone(), clock.clone(), lead_stop.clone()).await?;
    tracing::info!(leadership = ?config.leadership(), "medic running; waiting for leadership");
    notify::ready(&format!("running {} scenarios (follower)", runtimes.len()));
    if let Some(period) = notify::watchdog_period() {
        tasks.spawn(notify::watchdog(period, store.clone(), stop.clone()));
    }
    if config.http.is_some() {
        tasks.spawn(crate::server::alertmanager::prune_loop(
            store.clone(),
            config.alerts.clone(),
            clock.clone(),
            stop.clone(),
        ));
    }

    let watch = Watch::start(config, &runtimes, &observers);
    let mut daemon = Daemon {
        current: config.clone(),
        running: runtimes,
        term: None,
        observers,
        watch,
        vantage,
        judge: !options.no_vantage,
        store,
        clock,
        notifiers: options.notifiers,
        jobs: !options.no_jobs,
        loader,
        role_rx,
        reload_rx,
        last_reload: None,
        ready_tx,
        scenarios_tx,
        pager_tx,
        stop,
        tasks,
        lead_stop,
        lead_task,
        server_stop,
        server,
        public_server,
        public_tx,
        credentials,
        manual,
    };
    daemon.serve(&shutdown).await;
    daemon.shut_down().await
}

/// What `/readyz` reports at start-up: the rules loaded, following.
fn initial_readiness(scenarios: usize, refused: usize, clock: &Clock) -> Readiness {
    Readiness {
        rules_loaded: true,
        scenarios,
        refused,
        role: Role::Follower.as_str().into(),
        term: None,
        reload_error: None,
        reloads: ReloadStats {
            last_ok: true,
            last_success_unix: clock.now().timestamp(),
            ..ReloadStats::default()
        },
    }
}

/// Serves `app` on `http.listen` when the config has `http:` (its
/// credentials resolved: an empty or unreadable one stops start-up); the
/// server's task, ended by `stop`.
async fn start_server(
    config: &Config,
    app: AppState,
    stop: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(http) = &config.http else {
        return Ok(None);
    };
    app.access
        .replace(server::auth::Access::from_config(http).map_err(anyhow::Error::msg)?);
    let (_, handle) = server::listener::serve(http, server::router(app), stop.clone()).await?;
    Ok(Some(handle))
}

/// One `medic run` from start-up to shutdown: the config and scenarios
/// running now, the leadership term (while leading), and the channels
/// that publish them to the HTTP surface.
struct Daemon {
    /// The config running now (the last one loaded without problems).
    current: Config,
    running: Vec<Arc<ScenarioRuntime>>,
    /// The term this replica leads, if it leads.
    term: Option<TermRun>,
    /// Who observes (this replica alone, or every replica through the store).
    observers: Arc<Observers>,
    /// While following with several replicas: the checks whose outcomes
    /// this replica shares.
    watch: Option<Watch>,
    /// What medic knows of its own vantage (zones, probes, the store).
    vantage: Arc<Vantage>,
    /// Whether the engine judges candidate unreachables with it (not in
    /// `medic test`, whose scripted outcomes are verdicts already).
    judge: bool,
    store: Arc<dyn Store>,
    clock: Clock,
    /// Page these instead of the configured notifiers (`medic test`).
    notifiers: Option<HashMap<String, Arc<dyn Notifier>>>,
    /// Whether a leader runs the config's scheduled jobs.
    jobs: bool,
    /// `None`: reload is off, requests are ignored.
    loader: Option<Loader>,
    role_rx: watch::Receiver<Role>,
    reload_rx: ReloadRequests,
    /// When the last reload finished (reloads coalesce after it).
    last_reload: Option<Instant>,
    ready_tx: watch::Sender<Readiness>,
    scenarios_tx: watch::Sender<Vec<Arc<ScenarioRuntime>>>,
    pager_tx: watch::Sender<Option<Arc<Pager>>>,
    /// The root of every term's tasks and of the watchdog.
    stop: CancellationToken,
    tasks: TaskTracker,
    lead_stop: CancellationToken,
    lead_task: tokio::task::JoinHandle<()>,
    server_stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    /// The public status page's listener (`public_status.listen`, fixed
    /// at start-up) and its config (components, words: swapped on reload).
    public_server: Option<tokio::task::JoinHandle<()>>,
    public_tx: watch::Sender<Option<Arc<crate::config::PublicStatus>>>,
    /// The credentials the server checks (replaced on reload).
    credentials: Arc<server::auth::Credentials>,
    /// The jobs runnable by hand (replaced on reload).
    manual: Arc<crate::jobs::Manual>,
}

/// What the current term's engine task ended with.
type EngineEnd = Result<Result<(), StoreError>, tokio::task::JoinError>;

/// The current term's engine ending (never, without a term).
async fn engine_end(term: &mut Option<TermRun>) -> EngineEnd {
    match term {
        Some(t) => (&mut t.engine).await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    /// Until `shutdown`, or a reason to stop: follows leadership changes,
    /// the engine ending, and reload requests.
    async fn serve(&mut self, shutdown: &CancellationToken) {
        loop {
            let flow = tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = self.role_rx.changed() => {
                    if changed.is_err() {
                        tracing::error!("leader election stopped");
                        break;
                    }
                    let role = *self.role_rx.borrow_and_update();
                    self.on_role(role).await;
                    ControlFlow::Continue(())
                }
                r = engine_end(&mut self.term), if self.term.is_some() => self.on_engine_end(r).await,
                Some(req) = self.reload_rx.recv() => self.on_reload(req).await,
            };
            if flow.is_break() {
                break;
            }
        }
    }

    /// The pager of a term (or of a reload while following).
    fn new_pager(&self, config: &Config, store: Arc<dyn Store>) -> Arc<Pager> {
        let p = match &self.notifiers {
            Some(n) => Pager::with_notifiers(config, n.clone(), store, self.clock.clone()),
            None => Pager::new(config, store, self.clock.clone()),
        };
        Arc::new(p)
    }

    /// Leadership changed: a deposed term stops at once; a new leader
    /// term resumes from the store and starts.
    async fn on_role(&mut self, role: Role) {
        let held = self.term.as_ref().map(|t| t.term);
        if held.is_some() && held != role.term() {
            // Deposed (or a new term): stop acting now, mid-action
            // if need be; the next leader verifies what was in flight.
            if let Some(t) = self.term.take() {
                self.pager_tx.send_replace(None);
                t.stop(Duration::ZERO).await;
            }
        }
        if let (Role::Leader(n), None) = (role, &self.term) {
            // The term's checks observe from now on.
            if let Some(w) = self.watch.take() {
                w.stop().await;
            }
            let fenced: Arc<dyn Store> = Arc::new(Fenced::new(self.store.clone(), n));
            let p = self.new_pager(&self.current, fenced.clone());
            let start = TermRun::start(
                &self.current,
                n,
                self.running.clone(),
                fenced,
                self.clock.clone(),
                p,
                &self.stop,
                self.jobs,
                self.observers.clone(),
                self.judge.then(|| self.vantage.clone()),
            );
            match start.await {
                Ok(t) => {
                    self.pager_tx.send_replace(Some(t.pager.clone()));
                    self.term = Some(t);
                }
                Err(e) => {
                    tracing::error!(term = n, error = %e, "cannot take over: resuming from the store failed")
                }
            }
        }
        let role = if self.term.is_some() {
            role
        } else {
            Role::Follower
        };
        if self.term.is_none() && self.watch.is_none() {
            self.watch = Watch::start(&self.current, &self.running, &self.observers);
        }
        tracing::info!(role = role.as_str(), term = ?role.term(), "leadership changed");
        crate::metrics::leadership(role.term());
        self.ready_tx.send_modify(|r| {
            r.role = role.as_str().into();
            r.term = role.term();
        });
        notify::ready(&format!(
            "running {} scenarios ({})",
            self.running.len(),
            role.as_str()
        ));
    }

    /// The term's engine ended: back to following. Medic goes on only
    /// when a newer leader fenced this one out.
    async fn on_engine_end(&mut self, r: EngineEnd) -> ControlFlow<()> {
        let t = self.term.take().expect("guarded");
        let n = t.term;
        self.pager_tx.send_replace(None);
        t.stop(Duration::ZERO).await;
        crate::metrics::leadership(None);
        self.ready_tx.send_modify(|r| {
            r.role = Role::Follower.as_str().into();
            r.term = None;
        });
        if self.watch.is_none() {
            self.watch = Watch::start(&self.current, &self.running, &self.observers);
        }
        match r {
            // Only a newer leader: keep following until the election says otherwise.
            Ok(Err(StoreError::Fenced { newer, .. })) => {
                tracing::warn!(
                    term = n,
                    newer,
                    "deposed: a newer leader exists; acting on nothing"
                );
                return ControlFlow::Continue(());
            }
            Ok(Ok(())) => {}
            // The engine only stops early on a store failure.
            Ok(Err(e)) => tracing::error!(error = %e, "engine stopped: store failure"),
            Err(e) => tracing::error!(error = %e, "engine task failed"),
        }
        ControlFlow::Break(())
    }

    /// One reload request: load, swap what runs if the new set is sound,
    /// answer the requester. Stops medic when the engine is gone.
    async fn on_reload(&mut self, req: ReloadRequest) -> ControlFlow<()> {
        if self.loader.is_none() {
            return ControlFlow::Continue(());
        }
        // Coalesce: at most one reload per RELOAD_MIN_GAP; every request
        // queued by the time it starts is answered by it (it reads the
        // files after they all arrived).
        if let Some(last) = self.last_reload {
            tokio::time::sleep_until(last + RELOAD_MIN_GAP).await;
        }
        let mut requests = vec![req];
        while let Ok(r) = self.reload_rx.try_recv() {
            requests.push(r);
        }
        let flow = self.reload_once(&requests[0].source, requests.len()).await;
        self.last_reload = Some(Instant::now());
        let outcome = match flow {
            ControlFlow::Continue(outcome) => outcome,
            ControlFlow::Break(()) => return ControlFlow::Break(()),
        };
        for r in requests {
            if let Some(reply) = r.reply {
                let _ = reply.send(outcome.clone());
            }
        }
        ControlFlow::Continue(())
    }

    /// One reload for `n` coalesced requests (the first from `source`).
    async fn reload_once(&mut self, source: &str, n: usize) -> ControlFlow<(), ReloadOutcome> {
        let Some(loader) = &self.loader else {
            let off = vec!["reload is off in this run".to_string()];
            return ControlFlow::Continue(ReloadOutcome::rejected(self.running.len(), 0, off));
        };
        tracing::info!(source = %source, requests = n, "reloading config and rules");
        notify::reloading();
        let control = self.term.as_ref().map(|t| (&t.control, t.store.clone()));
        let names: Vec<String> = self
            .running
            .iter()
            .map(|r| r.scenario.name.clone())
            .collect();
        let term_pager = self.term.as_ref().map(|t| t.pager.clone());
        let pager = |c: &Config, s| match &term_pager {
            Some(p) => {
                p.reconfigure(c);
                p.clone()
            }
            None => self.new_pager(c, s),
        };
        let outcome = reload(
            loader,
            &self.current,
            &names,
            &self.ready_tx,
            control,
            pager,
            &self.store,
        )
        .await;
        let outcome = match outcome {
            Ok((outcome, new)) => {
                if let Some((config, reloaded, runtimes, access)) = new {
                    if let Some(access) = access {
                        self.credentials.replace(access);
                    }
                    self.manual.set(&config);
                    self.swap(config, reloaded, runtimes);
                }
                outcome
            }
            Err(()) => return ControlFlow::Break(()),
        };
        self.ready_tx.borrow().reloads.export();
        let n = self.running.len();
        notify::ready(&if outcome.ok {
            format!("running {n} scenarios")
        } else {
            format!("running {n} scenarios; the last reload FAILED (old rules kept)")
        });
        ControlFlow::Continue(outcome)
    }

    /// Runs a reloaded config and scenarios from now on.
    fn swap(
        &mut self,
        config: Config,
        reloaded: Option<Reloaded>,
        runtimes: Vec<Arc<ScenarioRuntime>>,
    ) {
        attach_vantage(&runtimes, &self.vantage);
        if let (Some(t), Some(reloaded)) = (self.term.as_mut(), reloaded) {
            // The engine already reads the new channel: loops whose check
            // is unchanged are pointed at it and keep their cadence (no new
            // spread delay); the others stop, and new ones start.
            let same_inputs = checks_see_the_same(&self.current, &config);
            t.checks.replace(
                &config,
                reloaded.schedule,
                &reloaded.updates,
                &t.tasks,
                same_inputs,
            );
        }
        self.running = runtimes;
        self.scenarios_tx.send_replace(self.running.clone());
        if self.public_server.is_none() && config.public_status.is_some() {
            tracing::warn!("public_status added: its listener starts at the next restart");
        }
        if self.public_server.is_some() {
            let (was, now) = (&self.current.public_status, &config.public_status);
            if was.as_ref().map(|p| p.listen) != now.as_ref().map(|p| p.listen) {
                tracing::warn!("public_status.listen changed: it takes effect at the next restart");
            }
            if now.is_some() {
                self.public_tx.send_replace(now.clone().map(Arc::new));
            }
        }
        self.current = config;
        // A follower observes the new scenarios from now on.
        if let Some(w) = self.watch.take() {
            w.cancel();
            self.watch = Watch::start(&self.current, &self.running, &self.observers);
        }
    }

    /// Stops the term (running actions get the grace period), then
    /// leadership, the remaining tasks and the server; flushes the store.
    async fn shut_down(mut self) -> anyhow::Result<()> {
        let grace = self.current.shutdown_grace;
        notify::stopping();
        tracing::info!(grace = %grace, "shutting down: no new checks or actions");
        if let Some(t) = self.term.take() {
            self.pager_tx.send_replace(None);
            t.stop(grace.get()).await;
        }
        if let Some(w) = self.watch.take() {
            w.stop().await;
        }
        // Leadership last: no other replica acts before this one stopped.
        self.lead_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.lead_task).await;
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
        self.server_stop.cancel();
        for h in [self.server, self.public_server].into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
        self.store.flush().await?;
        tracing::info!("medic stopped");
        Ok(())
    }
}

/// One leadership term: the engine, its incident tasks and its check loops,
/// all writing through the term's fenced store.
struct TermRun {
    term: u64,
    /// The term's pager: its dispatcher runs with the term.
    pager: Arc<Pager>,
    store: Arc<dyn Store>,
    engine: tokio::task::JoinHandle<Result<(), StoreError>>,
    control: mpsc::Sender<Control>,
    tasks: TaskTracker,
    checks: CheckLoops,
    stop: CancellationToken,
    kill: CancellationToken,
}

impl TermRun {
    /// Resumes what the store holds (open incidents, in-flight attempts,
    /// budgets, escalation timers) and starts the engine and its checks
    /// (and, with `jobs`, the scheduled DR jobs).
    #[allow(clippy::too_many_arguments)]
    async fn start(
        config: &Config,
        term: u64,
        runtimes: Vec<Arc<ScenarioRuntime>>,
        store: Arc<dyn Store>,
        clock: Clock,
        pager: Arc<Pager>,
        root: &CancellationToken,
        jobs: bool,
        observers: Arc<Observers>,
        vantage: Option<Arc<Vantage>>,
    ) -> Result<Self, StoreError> {
        let tasks = TaskTracker::new();
        let stop = root.child_token();
        let kill = CancellationToken::new();
        // Scheduled DR jobs run on the leader only: one backup per slot.
        if jobs {
            crate::page::register_report_sinks();
            crate::jobs::start(config, store.clone(), clock.clone(), &tasks, stop.clone());
        }
        // The outbox dispatcher: the only sender of pages, on the leader.
        tasks.spawn(pager.clone().run(stop.clone()));
        let shared = Shared {
            store: store.clone(),
            clock,
            pager: pager.clone(),
            actions: Arc::new(Semaphore::new(config.limits.actions_in_flight.max(1))),
            bounds: Arc::new(crate::engine::bounds::Bounds::new(config)),
            stop: stop.clone(),
            kill: kill.clone(),
            tasks: tasks.clone(),
            observers,
        };
        let mut engine = Engine::new(runtimes, shared);
        if let Some(v) = vantage {
            engine = engine.with_vantage(v);
        }
        engine.resume().await?;
        let (tx, rx) = mpsc::channel(UPDATES_CAPACITY);
        let mut checks = CheckLoops::new(config);
        checks.replace(config, engine.schedule(), &tx, &tasks, false);
        drop(tx);
        let (control, control_rx) = mpsc::channel(1);
        let engine = tasks.spawn(engine.run_controlled(rx, control_rx));
        tracing::info!(term, "leading: engine running");
        Ok(TermRun {
            term,
            pager,
            store,
            engine,
            control,
            tasks,
            checks,
            stop,
            kill,
        })
    }

    /// Stops checks, then the engine and incidents at a safe point; after
    /// `grace`, running actions are aborted.
    async fn stop(self, grace: Duration) {
        self.checks.root.cancel();
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            if !grace.is_zero() {
                tracing::warn!("grace period over: aborting running actions");
            }
            self.kill.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
        }
        tracing::info!(term = self.term, "term ended");
    }
}

/// A follower's share of observation (several replicas): the checks of
/// the scenarios that can act, whose outcomes go to the store for the
/// leader to count ([`crate::engine::quorum`]). Nothing else runs.
struct Watch {
    checks: CheckLoops,
    tasks: TaskTracker,
}

impl Watch {
    /// Starts the checks, unless observations are not shared (one
    /// replica) or no scenario can act.
    fn start(
        config: &Config,
        runtimes: &[Arc<ScenarioRuntime>],
        observers: &Arc<Observers>,
    ) -> Option<Watch> {
        if !observers.is_shared() {
            return None;
        }
        let (schedule, slots) = quorum::observe_only(runtimes);
        if schedule.is_empty() {
            return None;
        }
        let n = schedule.len();
        let tasks = TaskTracker::new();
        let (tx, rx) = mpsc::channel(UPDATES_CAPACITY);
        let mut checks = CheckLoops::new(config);
        checks.replace(config, schedule, &tx, &tasks, false);
        drop(tx);
        tasks.spawn(quorum::record_all(rx, slots, observers.clone()));
        tracing::info!(symptoms = n, "following: observing for the leader's quorum");
        Some(Watch { checks, tasks })
    }

    /// Stops the checks; their tasks end on their own.
    fn cancel(&self) {
        self.checks.root.cancel();
        self.tasks.close();
    }

    /// Stops the checks and waits (at most 5 s) until they have.
    async fn stop(self) {
        self.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}

/// The least time between two reloads: requests arriving faster are
/// answered together by the next one, so a reload storm costs one reload a
/// second, not one per request.
const RELOAD_MIN_GAP: Duration = Duration::from_secs(1);

/// Where a check loop sends its outcomes: the engine's slot for its
/// symptom and the engine's update channel, both replaced by a reload.
type Route = (usize, mpsc::Sender<Update>);

/// What a check loop runs: a loop is kept across a reload only when this
/// is unchanged (and the config it was built from is the same).
#[derive(Clone, PartialEq)]
struct LoopDef {
    check: crate::check::CheckSpec,
    every: Duration,
    timeout: Duration,
}

/// One running check loop.
struct RunningLoop {
    def: LoopDef,
    route: watch::Sender<Route>,
    stop: CancellationToken,
}

/// The term's check loops, one per scheduled symptom, by scenario and
/// symptom name.
struct CheckLoops {
    /// Cancelled when the term stops: every loop ends.
    root: CancellationToken,
    permits: Arc<Semaphore>,
    loops: HashMap<(String, String), RunningLoop>,
}

impl CheckLoops {
    fn new(config: &Config) -> Self {
        CheckLoops {
            root: CancellationToken::new(),
            permits: Arc::new(Semaphore::new(config.limits.concurrent_checks.max(1))),
            loops: HashMap::new(),
        }
    }

    /// Runs `schedule` from now on. With `keep`, a loop whose symptom is
    /// unchanged carries on (only its route changes); every other loop
    /// stops, and the symptoms without a loop get a new one (spread).
    fn replace(
        &mut self,
        config: &Config,
        schedule: Vec<(usize, Arc<ScenarioRuntime>, usize)>,
        tx: &mpsc::Sender<Update>,
        tasks: &TaskTracker,
        keep: bool,
    ) {
        let mut old = std::mem::take(&mut self.loops);
        let (mut kept, mut started) = (0usize, 0usize);
        // The console shows what these loops see.
        server::console::board::board().schedule(&schedule);
        for (slot, rt, j) in schedule {
            let s = &rt.scenario.symptoms[j];
            let key = (rt.scenario.name.clone(), s.name.clone());
            let def = LoopDef {
                check: s.check.clone(),
                every: s.every.get(),
                timeout: s.timeout.get(),
            };
            if let Some(running) = old.remove(&key) {
                if keep && running.def == def {
                    running.route.send_replace((slot, tx.clone()));
                    self.loops.insert(key, running);
                    kept += 1;
                    continue;
                }
                running.stop.cancel();
            }
            let stop = self.root.child_token();
            let (route, route_rx) = watch::channel((slot, tx.clone()));
            tasks.spawn(check_loop(
                (rt.scenario.name.clone(), s.name.clone(), s.check.kind()),
                rt.checks[j].clone(),
                Cadence {
                    every: def.every,
                    timeout: def.timeout,
                    spread: config.limits.spread_first_checks,
                },
                route_rx,
                self.permits.clone(),
                stop.clone(),
            ));
            self.loops.insert(key, RunningLoop { def, route, stop });
            started += 1;
        }
        for (_, gone) in old {
            gone.stop.cancel();
        }
        tracing::debug!(kept, started, "check loops scheduled");
    }
}

/// Whether checks built from `new` see what checks built from `old` see:
/// the config sections a check's build reads (targets, the HTTP server,
/// jobs, the config's directory). Otherwise every loop restarts.
fn checks_see_the_same(old: &Config, new: &Config) -> bool {
    old.targets == new.targets
        && old.http == new.http
        && old.jobs == new.jobs
        && old.base_dir == new.base_dir
        && old.limits.concurrent_checks == new.limits.concurrent_checks
}

/// One reload: load and validate off the runtime's threads, then swap the
/// engine's scenarios. `Err(())` when the engine is gone (medic stops).
async fn reload(
    loader: &Loader,
    current: &Config,
    running: &[String],
    ready: &watch::Sender<Readiness>,
    control: Option<(&mpsc::Sender<Control>, Arc<dyn Store>)>,
    pager: impl Fn(&Config, Arc<dyn Store>) -> Arc<Pager>,
    store: &Arc<dyn Store>,
) -> Result<ReloadResult, ()> {
    let load = loader.clone();
    let loaded = match tokio::task::spawn_blocking(move || load()).await {
        Ok(r) => r,
        Err(e) => Err(Diagnostics(vec![crate::diag::Diagnostic::new(
            "reload",
            0,
            0,
            format!("loading failed: {e}"),
        )])),
    };
    let reject = |errors: Vec<String>| {
        for e in &errors {
            tracing::error!("reload rejected: {e}");
        }
        tracing::error!(
            problems = errors.len(),
            "reload rejected: the old config and rules keep running"
        );
        let mut refused = 0;
        ready.send_modify(|r| {
            r.reload_error = Some(errors.join("\n"));
            r.reloads.failed += 1;
            r.reloads.last_ok = false;
            refused = r.refused;
        });
        ReloadOutcome::rejected(running.len(), refused, errors)
    };
    let loaded = match loaded {
        Ok(l) => l,
        Err(diags) => {
            let errors = diags.0.iter().map(|d| d.to_string()).collect();
            return Ok((reject(errors), None));
        }
    };
    // A running scenario that would be refused would silently stop being
    // watched: that is a broken set, not a smaller one.
    let problems: Vec<String> = loaded
        .refused
        .iter()
        .filter(|r| running.contains(&r.scenario))
        .map(|r| {
            format!(
                "scenario {} is running but would be refused: {}",
                r.scenario, r.reason
            )
        })
        .collect();
    if !problems.is_empty() {
        return Ok((reject(problems), None));
    }
    for r in &loaded.refused {
        tracing::error!(scenario = %r.scenario, "scenario refused, not running: {}", r.reason);
    }
    // The route credentials are read again from their references, so a
    // rotated token takes effect with this reload; one that cannot be read
    // (or is empty) rejects it, and the old credentials stay in force.
    let access = match loaded
        .config
        .http
        .as_ref()
        .map(server::auth::Access::from_config)
    {
        Some(Err(e)) => return Ok((reject(vec![e]), None)),
        Some(Ok(a)) => Some(a),
        None => None,
    };
    let needs_restart = needs_restart(current, &loaded.config);
    for what in &needs_restart {
        tracing::warn!("reload: {what} changed; it takes effect only after a restart");
    }
    // Checks read through the unfenced store (alerts any replica recorded).
    attach_store(&loaded.runtimes, store);
    // Before the engine recounts its symptoms under the new rules.
    crate::metrics::per_symptom(&loaded.config.metrics.per_symptom);
    let runtimes = loaded.runtimes.clone();
    let (reloaded, added, removed, closed) = match control {
        Some((control, store)) => {
            let (tx, rx) = oneshot::channel();
            let request = Control::Reload {
                scenarios: loaded.runtimes,
                pager: pager(&loaded.config, store),
                reply: tx,
            };
            if control.send(request).await.is_err() {
                return Err(());
            }
            let reloaded = rx.await.map_err(|_| ())?;
            let (a, r, c) = (
                reloaded.added.clone(),
                reloaded.removed.clone(),
                reloaded.closed.clone(),
            );
            (Some(reloaded), a, r, c)
        }
        // A follower: nothing runs; the next term starts with these.
        None => {
            let names: Vec<String> = runtimes.iter().map(|r| r.scenario.name.clone()).collect();
            let added = names
                .iter()
                .filter(|n| !running.contains(n))
                .cloned()
                .collect();
            let removed = running
                .iter()
                .filter(|n| !names.contains(n))
                .cloned()
                .collect();
            (None, added, removed, Vec::new())
        }
    };
    let outcome = ReloadOutcome {
        ok: true,
        scenarios: runtimes.len(),
        refused: loaded.refused.len(),
        added,
        removed,
        closed,
        errors: Vec::new(),
        needs_restart,
    };
    tracing::info!(
        scenarios = outcome.scenarios,
        added = ?outcome.added,
        removed = ?outcome.removed,
        closed = ?outcome.closed,
        "reload done: new rules running"
    );
    let now = crate::clock::Clock::system().now().timestamp();
    ready.send_modify(|r| {
        r.scenarios = outcome.scenarios;
        r.refused = outcome.refused;
        r.reload_error = None;
        r.reloads.succeeded += 1;
        r.reloads.last_ok = true;
        r.reloads.last_success_unix = now;
    });
    Ok((outcome, Some((loaded.config, reloaded, runtimes, access))))
}

/// A reload's outcome and, when it was applied, the new config, what the
/// engine changed (when leading), the scenarios now running and the route
/// credentials read again (to put in force).
type ReloadResult = (
    ReloadOutcome,
    Option<(
        Config,
        Option<Reloaded>,
        Vec<Arc<ScenarioRuntime>>,
        Option<server::auth::Access>,
    )>,
);
/// Gives every check the store (the `alert` check reads alerts from it).
fn attach_store(runtimes: &[Arc<ScenarioRuntime>], store: &Arc<dyn Store>) {
    for rt in runtimes {
        for c in &rt.checks {
            c.attach_store(store);
        }
    }
}

/// Gives every check medic's vantage judgement (the `vantage` check reads it).
fn attach_vantage(runtimes: &[Arc<ScenarioRuntime>], vantage: &Arc<Vantage>) {
    for rt in runtimes {
        for c in &rt.checks {
            c.attach_vantage(vantage);
        }
    }
}

/// Config sections a reload cannot apply to a running daemon.
fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut v = Vec::new();
    if old.store != new.store {
        v.push("store".to_string());
    }
    // Credentials apply on reload; the listener's settings at restart.
    let listener = |c: &Config| {
        c.http.clone().map(|h| crate::config::HttpConfig {
            api_token: None,
            read_token: None,
            open_reads: false,
            intake: None,
            ..h
        })
    };
    if listener(old) != listener(new) {
        v.push("http".to_string());
    }
    if old.jobs != new.jobs {
        v.push("jobs".to_string());
    }
    if old.alerts != new.alerts {
        v.push("alerts".to_string());
    }
    if old.zones != new.zones {
        v.push("zones".to_string());
    }
    if old.limits.actions_in_flight != new.limits.actions_in_flight {
        v.push("limits.actions_in_flight".to_string());
    }
    v
}

/// When and how long one symptom's check runs.
struct Cadence {
    every: Duration,
    /// Each run is dropped after this (and counts as
    /// [`Check::timed_out`] says: unreachable or unknown).
    timeout: Duration,
    /// Whether the first run is spread (see [`first_run_offset`]).
    spread: bool,
}

/// When a check's first run comes, after start: checks with intervals up to
/// a second run at once (they exist to notice fast); slower ones are spread
/// evenly over their first interval (at most the first 15 s, so an hourly
/// check still reports soon after start) by slot, so 10,000 checks at 10 s
/// do not all fire in the same millisecond at start-up and every tick after.
fn first_run_offset(slot: usize, every: Duration) -> Duration {
    if every <= Duration::from_secs(1) {
        return Duration::ZERO;
    }
    // Golden-ratio sequence: neighbouring slots land far apart.
    let frac = (slot as f64 * 0.618_033_988_749_895).fract();
    every.min(Duration::from_secs(15)).mul_f64(frac)
}

/// Runs one symptom's check on its own schedule. A slow or hanging check
/// only delays itself: each run is bounded by the symptom's timeout, which
/// turns a hang into what [`Check::timed_out`] says.
async fn check_loop(
    (scenario, symptom, kind): (String, String, &'static str),
    check: Arc<dyn Check>,
    Cadence {
        every,
        timeout,
        spread,
    }: Cadence,
    mut route: watch::Receiver<Route>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let every = every.max(Duration::from_millis(1));
    let first = if spread {
        first_run_offset(route.borrow().0, every)
    } else {
        Duration::ZERO
    };
    let mut ticker = tokio::time::interval_at(Instant::now() + first, every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // When this run was due: its scheduled tick, so consecutive
        // observations are whole intervals apart however long each check
        // or the wait for a permit took (as Prometheus stamps a rule
        // evaluation with its scheduled time), and `for:` is reached on the
        // tick it is due, not one interval later by a millisecond's jitter.
        let due = tokio::select! {
            _ = stop.cancelled() => return,
            due = ticker.tick() => due,
            // A held connection dropped: look now; the next tick comes a
            // full interval later.
            _ = check.lost() => {
                ticker.reset();
                Instant::now()
            }
        };
        let _permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = permits.acquire() => match p { Ok(p) => p, Err(_) => return },
        };
        let started = std::time::Instant::now();
        let observation = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(timeout, check.observe()) => r.unwrap_or_else(|_| {
                // A silent target is a candidate unreachable; a silent
                // monitoring source, medic's blindness (unknown).
                Observation::Whole(check.timed_out(timeout))
            }),
        };
        let outcome = match &observation {
            Observation::Whole(o) => o.label(),
            Observation::Series(s) if s.is_empty() => "ok",
            Observation::Series(_) => "failing",
        };
        crate::metrics::check(&scenario, kind, outcome, started.elapsed());
        server::console::board::board().record(&scenario, &symptom, &observation, due);
        let (slot, tx) = route.borrow_and_update().clone();
        let update = Update {
            slot,
            observation,
            at: due,
        };
        if tx.send(update).await.is_err() {
            // The engine dropped this channel: a reload swapped it (the
            // new route follows) or the term is ending (stop follows).
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = route.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// Watches the process's signals for `medic run`. First SIGTERM/SIGINT:
/// graceful shutdown (cancels `shutdown`). SIGHUP: reload config and
/// rules. Returns on a second SIGTERM/SIGINT, when the caller should exit
/// at once; an error when the handlers cannot be installed.
pub async fn signals(shutdown: CancellationToken, reload: ReloadHandle) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
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
            return Ok(());
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Outcome;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its runs; always ok.
    struct Counting(AtomicUsize);

    #[async_trait::async_trait]
    impl Check for Counting {
        async fn run(&self) -> Outcome {
            self.0.fetch_add(1, Ordering::SeqCst);
            Outcome::Ok
        }
    }

    /// Fails after a run time that varies from run to run (a loaded
    /// machine: 40 ms, then 1 ms, ...).
    struct Jittery(AtomicUsize);

    #[async_trait::async_trait]
    impl Check for Jittery {
        async fn run(&self) -> Outcome {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            let ms = [40, 1, 25, 3, 60, 2][n % 6];
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Outcome::Failing("connection refused".into())
        }
    }

    /// Observations are stamped with the tick they were due, not when the
    /// check finished: they are whole intervals apart however long each
    /// run took, and a symptom with `for:` of two intervals fires on the
    /// second failing tick after the first (a slower first run than third
    /// run used to leave it a millisecond short, firing an interval late).
    #[tokio::test(start_paused = true)]
    async fn observations_carry_their_due_tick_and_for_is_reached_on_time() {
        use crate::engine::symptom::{SymptomState, Timing};
        use crate::observe::{Phase, Seen};
        let (tx, mut rx) = mpsc::channel(8);
        let (_route, route_rx) = watch::channel((0, tx));
        let stop = CancellationToken::new();
        let every = Duration::from_millis(200);
        let task = tokio::spawn(check_loop(
            ("s".into(), "x".into(), "tcp"),
            Arc::new(Jittery(AtomicUsize::new(0))),
            Cadence {
                every,
                timeout: Duration::from_secs(1),
                spread: false,
            },
            route_rx,
            Arc::new(Semaphore::new(1)),
            stop.clone(),
        ));
        let timing = Timing {
            for_: 2 * every,
            clear_for: Duration::ZERO,
        };
        let first = rx.recv().await.unwrap();
        let mut state = SymptomState::new(first.at);
        state.update(Seen::Failing, first.at, timing);
        assert_eq!(state.phase, Phase::Pending);
        let mut last = first.at;
        for n in 1..=2 {
            let u = rx.recv().await.unwrap();
            assert_eq!(
                u.at - last,
                every,
                "run {n} is one interval after the one before"
            );
            last = u.at;
            state.update(Seen::Failing, u.at, timing);
        }
        assert_eq!(state.phase, Phase::Firing, "fired on the tick for: was due");
        assert_eq!(last - first.at, timing.for_);
        stop.cancel();
        task.await.unwrap();
    }

    /// A reload swaps the engine's channel and slot under a kept loop: its
    /// next outcome goes to the new channel with the new slot, at its old
    /// cadence (no restart, no extra run).
    #[tokio::test(start_paused = true)]
    async fn a_kept_check_loop_follows_its_new_route() {
        let check = Arc::new(Counting(AtomicUsize::new(0)));
        let (tx1, mut rx1) = mpsc::channel(8);
        let (route, route_rx) = watch::channel((3, tx1));
        let stop = CancellationToken::new();
        let every = Duration::from_secs(5);
        let task = tokio::spawn(check_loop(
            ("s".into(), "x".into(), "tcp"),
            check.clone(),
            Cadence {
                every,
                timeout: Duration::from_secs(1),
                spread: false,
            },
            route_rx,
            Arc::new(Semaphore::new(1)),
            stop.clone(),
        ));
        let first = rx1.recv().await.unwrap();
        assert_eq!(first.slot, 3);
        // The reload: the engine drops the old receiver, the daemon
        // points the loop at the new channel and slot.
        drop(rx1);
        let (tx2, mut rx2) = mpsc::channel(8);
        route.send_replace((7, tx2));
        let next = rx2.recv().await.unwrap();
        assert_eq!(next.slot, 7);
        assert_eq!(next.at - first.at, every, "the cadence carried on");
        assert_eq!(check.0.load(Ordering::SeqCst), 2, "no extra run");
        // The engine's channel goes before the new route arrives: the
        // loop's send fails, and it waits for the route instead of ending.
        drop(rx2);
        tokio::time::sleep(every + Duration::from_secs(1)).await;
        assert_eq!(check.0.load(Ordering::SeqCst), 3);
        assert!(!task.is_finished(), "the loop outlived a dropped channel");
        let (tx3, mut rx3) = mpsc::channel(8);
        route.send_replace((9, tx3));
        assert_eq!(rx3.recv().await.unwrap().slot, 9);
        stop.cancel();
        task.await.unwrap();
    }
}
