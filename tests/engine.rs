//! The engine end to end, in process, on tokio's paused clock: scripted
//! checks and actions, the real engine, plan executor, pager and an
//! in-memory store. Hours of simulated time run in milliseconds.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::scripted::{Running, Scripted, run_scenario};
use medic::check::CheckSpec;
use medic::clock::Clock;
use medic::config::Config;
use medic::config::Mode;
use medic::duration::Dur;
use medic::observe::Outcome;
use medic::remedy::exec::ExecParams;
use medic::remedy::{Action, ActionContext, ActionResult, ActionSpec};
use medic::rules::model::{Approval, Limit, Scenario, Severity, Step, Symptom, Then, Verify, When};
use medic::store::{AttemptOutcome, IncidentState, MemoryStore, prelude::*};

/// An action that counts its runs and, when `heals`, makes the check ok.
struct Fake {
    runs: Arc<AtomicUsize>,
    heals: Option<Scripted>,
    ok: bool,
    takes: Duration,
}

#[async_trait::async_trait]
impl Action for Fake {
    fn describe(&self) -> String {
        "fake restart".into()
    }
    fn inputs(&self) -> serde_json::Value {
        serde_json::json!({ "fake": true })
    }
    async fn run(&self, _ctx: &ActionContext) -> ActionResult {
        self.runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.takes).await;
        if let Some(c) = &self.heals {
            c.set(Outcome::Ok);
        }
        ActionResult {
            ok: self.ok,
            detail: if self.ok {
                "done".into()
            } else {
                "exit status 1".into()
            },
            data: serde_json::Value::Null,
        }
    }
}

fn scenario(limit: Limit, mode: Option<Mode>) -> Scenario {
    let spec = CheckSpec::Tcp(medic::check::tcp::TcpParams {
        target: None,
        address: Some("127.0.0.1:1".into()),
    });
    Scenario {
        name: "redis-cache-failure".into(),
        summary: "Redis cache down".into(),
        severity: Severity::High,
        rto: Dur::secs(300),
        rpo: None,
        runbook: None,
        mode,
        symptoms: vec![Symptom {
            name: "redis_down".into(),
            check: spec,
            every: Dur::secs(1),
            timeout: Dur::secs(1),
            for_: Dur::secs(3),
            clear_for: Dur::secs(2),
            quorum: None,
        }],
        when: When::Any(vec!["redis_down".into()]),
        plan: vec![Step {
            name: "restart".into(),
            action: ActionSpec::Exec(ExecParams {
                args: vec!["true".into()],
                env: Default::default(),
                cwd: None,
            }),
            verify: Verify {
                clears: vec!["redis_down".into()],
                within: Dur::secs(10),
            },
            limit,
            timeout: Dur::secs(30),
            approval: Approval::None,
            mode: None,
            then: Then::Stop,
            only_if: vec![],
            label_patterns: Default::default(),
            otherwise: None,
        }],
        max_acting: 1,
        quorum: None,
        limit: Default::default(),
        blast_radius: Default::default(),
        escalation: "default".into(),
        supersedes: Vec::new(),
        path: "rules/redis.yaml".into(),
    }
}

fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

struct Harness {
    store: Arc<MemoryStore>,
    check: Scripted,
    runs: Arc<AtomicUsize>,
    engine: Running,
}

fn start(sc: Scenario, check: Scripted, heals: bool, ok: bool, store: Arc<MemoryStore>) -> Harness {
    start_with(
        sc,
        check,
        heals,
        ok,
        store,
        Duration::from_millis(200),
        Clock::tokio(base()),
    )
}

fn start_with(
    sc: Scenario,
    check: Scripted,
    heals: bool,
    ok: bool,
    store: Arc<MemoryStore>,
    takes: Duration,
    clock: Clock,
) -> Harness {
    let runs = Arc::new(AtomicUsize::new(0));
    let action = Arc::new(Fake {
        runs: runs.clone(),
        heals: heals.then(|| check.clone()),
        ok,
        takes,
    });
    let mode = sc.mode.unwrap_or(Mode::Enforce);
    let engine = run_scenario(
        Config::default(),
        sc,
        mode,
        Arc::new(check.clone()),
        action,
        store.clone(),
        clock,
    );
    Harness {
        store,
        check,
        runs,
        engine,
    }
}

impl Harness {
    async fn stop(self) -> (Arc<MemoryStore>, Scripted, usize) {
        self.engine.stop().await;
        (self.store, self.check, self.runs.load(Ordering::SeqCst))
    }
}

async fn messages(store: &MemoryStore, id: i64) -> Vec<String> {
    store
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}: {}", e.kind, e.message))
        .collect()
}

fn failing() -> Outcome {
    Outcome::Failing("connection refused".into())
}

#[tokio::test(start_paused = true)]
async fn detects_after_for_remediates_verifies_and_resolves() {
    let h = start(
        scenario(Limit::default(), None),
        Scripted::new(Outcome::Ok),
        true,
        true,
        Arc::new(MemoryStore::new()),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(h.store.open_incidents().await.unwrap().is_empty());
    h.check.set(failing());
    // Fails at t≈5..8 (pending), fires at for = 3 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        h.store.open_incidents().await.unwrap().is_empty(),
        "fired before `for`"
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (store, _, runs) = h.stop().await;
    assert_eq!(runs, 1);
    let incs = store.recent_incidents(10).await.unwrap();
    assert_eq!(incs.len(), 1);
    assert_eq!(incs[0].state, IncidentState::Resolved);
    let tl = messages(&store, incs[0].id).await;
    assert!(
        tl[0].starts_with("state: opened: redis_down firing"),
        "{tl:#?}"
    );
    assert!(
        tl.iter()
            .any(|m| m.starts_with("action: step restart: running fake restart")),
        "{tl:#?}"
    );
    assert!(
        tl.iter()
            .any(|m| m.starts_with("verify: step restart: verified: redis_down cleared")),
        "{tl:#?}"
    );
    assert!(
        tl.last()
            .unwrap()
            .starts_with("state: resolved: all symptoms clear"),
        "{tl:#?}"
    );
    let ledger = store.incident_attempts(incs[0].id).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].outcome, Some(AttemptOutcome::Succeeded));
}

#[tokio::test(start_paused = true)]
async fn unknown_never_opens_an_incident() {
    let h = start(
        scenario(Limit::default(), None),
        Scripted::new(Outcome::Unknown("prometheus unreachable".into())),
        true,
        true,
        Arc::new(MemoryStore::new()),
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let (store, _, runs) = h.stop().await;
    assert_eq!(runs, 0);
    assert!(store.recent_incidents(10).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn flapping_inside_for_never_fires() {
    let h = start(
        scenario(Limit::default(), None),
        Scripted::new(Outcome::Ok),
        true,
        true,
        Arc::new(MemoryStore::new()),
    );
    for _ in 0..60 {
        h.check.set(failing());
        tokio::time::sleep(Duration::from_secs(2)).await;
        h.check.set(Outcome::Ok);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (store, _, runs) = h.stop().await;
    assert_eq!(runs, 0);
    assert!(store.recent_incidents(10).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn failing_action_stops_at_limit_escalates_and_restart_makes_no_more_attempts() {
    let limit = Limit {
        attempts: 2,
        per: Dur::secs(3600),
        cooldown: Dur::secs(5),
    };
    let store = Arc::new(MemoryStore::new());
    let h = start(
        scenario(limit, None),
        Scripted::new(failing()),
        false,
        false,
        store.clone(),
    );
    tokio::time::sleep(Duration::from_secs(120)).await;
    let (store, check, runs) = h.stop().await;
    assert_eq!(runs, 2, "attempts must stop at the limit");
    let inc = &store.open_incidents().await.unwrap()[0];
    assert_eq!(inc.state, IncidentState::Escalated);
    let tl = messages(&store, inc.id).await;
    assert!(
        tl.iter()
            .any(|m| m.starts_with("guard: step restart: cooling down until")),
        "{tl:#?}"
    );
    assert!(
        tl.iter()
            .any(|m| m
                .starts_with("guard: step restart: refused: limit of 2 attempts per 1h reached")),
        "{tl:#?}"
    );
    assert!(
        tl.iter()
            .any(|m| m.starts_with("escalate: escalated: plan exhausted")),
        "{tl:#?}"
    );
    assert!(
        tl.iter().any(|m| m == "page: paged level 1 via log"),
        "{tl:#?}"
    );

    // Restart inside the window: the same incident resumes, nothing runs again.
    let h = start(scenario(limit, None), check, false, false, store.clone());
    tokio::time::sleep(Duration::from_secs(600)).await;
    let (store, _, runs) = h.stop().await;
    assert_eq!(runs, 0, "a restart must not reset the budget");
    let open = store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 1, "no duplicate incident after restart");
    assert_eq!(open[0].id, inc.id);
    let pages = messages(&store, inc.id)
        .await
        .into_iter()
        .filter(|m| m.starts_with("page:"))
        .count();
    assert_eq!(pages, 1, "level 1 is not paged twice");
}

#[tokio::test(start_paused = true)]
async fn dry_run_writes_would_run_and_runs_nothing() {
    let h = start(
        scenario(Limit::default(), Some(Mode::DryRun)),
        Scripted::new(failing()),
        true,
        true,
        Arc::new(MemoryStore::new()),
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (store, _, runs) = h.stop().await;
    assert_eq!(runs, 0);
    let inc = &store.open_incidents().await.unwrap()[0];
    let tl = messages(&store, inc.id).await;
    assert!(
        tl.iter()
            .any(|m| m == "step: step restart: dry-run: would run fake restart"),
        "{tl:#?}"
    );
    let ledger = store.incident_attempts(inc.id).await.unwrap();
    assert_eq!(ledger[0].outcome, Some(AttemptOutcome::DryRun));
}

#[tokio::test(start_paused = true)]
async fn resolved_incident_then_new_failure_opens_a_new_one() {
    let h = start(
        scenario(Limit::default(), None),
        Scripted::new(failing()),
        true,
        true,
        Arc::new(MemoryStore::new()),
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    h.check.set(failing());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (store, _, runs) = h.stop().await;
    assert_eq!(runs, 2);
    let incs = store.recent_incidents(10).await.unwrap();
    assert_eq!(incs.len(), 2);
    assert!(incs.iter().all(|i| i.state == IncidentState::Resolved));
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_the_running_action_finish_and_restart_verifies_instead_of_rerunning() {
    let clock = Clock::tokio(base());
    let store = Arc::new(MemoryStore::new());
    let sc = scenario(Limit::default(), None);
    let h = start_with(
        sc.clone(),
        Scripted::new(failing()),
        false,
        true,
        store.clone(),
        Duration::from_secs(5),
        clock.clone(),
    );
    while h.runs.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SIGTERM while the 5 s action runs: it finishes within the grace period.
    let (store, check, runs) = h.stop().await;
    assert_eq!(runs, 1);
    let inc = store.open_incidents().await.unwrap()[0].clone();
    let ledger = store.incident_attempts(inc.id).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        ledger[0].outcome, None,
        "left in flight for the next run to verify"
    );

    // The target recovered meanwhile; the restarted medic verifies, not re-runs.
    check.set(Outcome::Ok);
    let h = start_with(sc, check, false, true, store, Duration::from_secs(5), clock);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (store, _, runs) = h.stop().await;
    assert_eq!(runs, 0, "an in-flight attempt is never blindly run again");
    let ledger = store.incident_attempts(inc.id).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].outcome, Some(AttemptOutcome::Succeeded));
    assert!(
        ledger[0].reason.starts_with("verified after restart"),
        "{}",
        ledger[0].reason
    );
    assert_eq!(
        store.incident(inc.id).await.unwrap().unwrap().state,
        IncidentState::Resolved
    );
}
