//! Live reload in process, on tokio's paused clock: the real engine, plan
//! executor and pager, scripted checks and actions, an in-memory store.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::scripted::Scripted;
use medic::check::CheckSpec;
use medic::clock::Clock;
use medic::config::Config;
use medic::config::Mode;
use medic::daemon::{Loaded, Loader, RunOptions};
use medic::duration::Dur;
use medic::engine::ScenarioRuntime;
use medic::engine::plan::PlannedStep;
use medic::observe::Outcome;
use medic::reload::ReloadHandle;
use medic::remedy::exec::ExecParams;
use medic::remedy::{Action, ActionContext, ActionResult, ActionSpec};
use medic::rules::model::{Approval, Limit, Scenario, Severity, Step, Symptom, Then, Verify, When};
use medic::store::{AttemptOutcome, IncidentState, MemoryStore, prelude::*};
use tokio_util::sync::CancellationToken;

/// Counts runs; takes `takes`; never heals anything.
struct Slow {
    runs: Arc<AtomicUsize>,
    takes: Duration,
}

#[async_trait::async_trait]
impl Action for Slow {
    fn describe(&self) -> String {
        "slow fix".into()
    }
    fn inputs(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    async fn run(&self, _ctx: &ActionContext) -> ActionResult {
        self.runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.takes).await;
        ActionResult {
            ok: true,
            detail: "done".into(),
            data: serde_json::Value::Null,
        }
    }
}

fn failing() -> Outcome {
    Outcome::Failing("refused".into())
}

fn scenario(name: &str, address: &str) -> Scenario {
    Scenario {
        name: name.into(),
        summary: format!("{name} down"),
        severity: Severity::High,
        rto: Dur::secs(300),
        rpo: None,
        runbook: None,
        mode: None,
        symptoms: vec![Symptom {
            name: "down".into(),
            check: CheckSpec::Tcp(medic::check::tcp::TcpParams {
                target: None,
                address: Some(address.into()),
            }),
            every: Dur::secs(1),
            timeout: Dur::secs(1),
            for_: Dur::secs(2),
            clear_for: Dur::secs(3),
            quorum: None,
        }],
        when: When::Any(vec!["down".into()]),
        plan: vec![Step {
            name: "fix".into(),
            action: ActionSpec::Exec(ExecParams {
                args: vec!["true".into()],
                env: Default::default(),
                cwd: None,
            }),
            verify: Verify {
                clears: vec!["down".into()],
                within: Dur::secs(10),
            },
            limit: Limit {
                attempts: 1,
                per: Dur::secs(3600),
                cooldown: Dur::secs(0),
            },
            timeout: Dur::secs(60),
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
        path: format!("rules/{name}.yaml").into(),
    }
}

fn runtime(sc: Scenario, check: &Scripted, action: Arc<dyn Action>) -> Arc<ScenarioRuntime> {
    Arc::new(ScenarioRuntime {
        steps: vec![PlannedStep {
            step: sc.plan[0].clone(),
            action,
        }],
        checks: vec![Arc::new(check.clone())],
        scenario: sc,
        mode: Mode::Enforce,
    })
}

struct Harness {
    store: Arc<MemoryStore>,
    next: Arc<Mutex<Vec<Arc<ScenarioRuntime>>>>,
    reload: ReloadHandle,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn start(runtimes: Vec<Arc<ScenarioRuntime>>) -> Harness {
    let store = Arc::new(MemoryStore::new());
    let next: Arc<Mutex<Vec<Arc<ScenarioRuntime>>>> = Arc::new(Mutex::new(Vec::new()));
    let n = next.clone();
    let loader: Loader = Arc::new(move || {
        Ok(Loaded {
            config: Config::default(),
            runtimes: n.lock().unwrap().clone(),
            refused: Vec::new(),
        })
    });
    let (reload, requests) = medic::reload::channel();
    let shutdown = CancellationToken::new();
    let (st, sd, h) = (store.clone(), shutdown.clone(), reload.clone());
    let handle = tokio::spawn(async move {
        let st: Arc<dyn Store> = st;
        let options = RunOptions {
            reload: Some((loader, h, requests)),
            ..Default::default()
        };
        medic::daemon::run_with_options(
            &Config::default(),
            runtimes,
            0,
            st,
            Clock::tokio(base()),
            sd,
            options,
        )
        .await
    });
    Harness {
        store,
        next,
        reload,
        shutdown,
        handle,
    }
}

impl Harness {
    async fn reload(&self, runtimes: Vec<Arc<ScenarioRuntime>>) -> medic::reload::ReloadOutcome {
        *self.next.lock().unwrap() = runtimes;
        self.reload.reload("test").await.expect("daemon running")
    }

    async fn stop(self) -> Arc<MemoryStore> {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
        self.store
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

/// Regression: a symptom whose check changed must not start as "ok" (the
/// incident would resolve at once, unseen); it is presumed firing until the
/// new check sees it clear.
#[tokio::test(start_paused = true)]
async fn changed_check_keeps_the_incident_open_until_seen_clear() {
    let old = Scripted::new(failing());
    let runs = Arc::new(AtomicUsize::new(0));
    let slow = Arc::new(Slow {
        runs: runs.clone(),
        takes: Duration::from_millis(100),
    });
    let h = start(vec![runtime(
        scenario("a", "127.0.0.1:1"),
        &old,
        slow.clone(),
    )]);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let inc = h.store.open_incidents().await.unwrap()[0].clone();
    assert_eq!(inc.state, IncidentState::Escalated);

    let new = Scripted::new(Outcome::Ok);
    let out = h
        .reload(vec![runtime(scenario("a", "127.0.0.1:2"), &new, slow)])
        .await;
    assert!(out.ok, "{out:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        h.store
            .incident(inc.id)
            .await
            .unwrap()
            .unwrap()
            .state
            .is_open(),
        "resolved without being seen clear"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let store = h.stop().await;
    let all = store.recent_incidents(10).await.unwrap();
    assert_eq!(all.len(), 1, "the incident carried on: {all:#?}");
    assert_eq!(all[0].state, IncidentState::Resolved);
    let tl = messages(&store, inc.id).await;
    let note = tl
        .iter()
        .position(|m| m.starts_with("note: rules reloaded"))
        .expect("reload note");
    let resolved = tl
        .iter()
        .position(|m| m.starts_with("state: resolved: all symptoms clear"))
        .expect("resolved");
    assert!(note < resolved, "{tl:#?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the plan is not re-run");
}

#[tokio::test(start_paused = true)]
async fn removed_scenario_closes_its_incident_after_the_running_action() {
    let check = Scripted::new(failing());
    let runs = Arc::new(AtomicUsize::new(0));
    let slow = Arc::new(Slow {
        runs: runs.clone(),
        takes: Duration::from_secs(10),
    });
    let h = start(vec![runtime(scenario("a", "127.0.0.1:1"), &check, slow)]);
    // Fires at 2s; the 10 s action runs from then on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let inc = h.store.open_incidents().await.unwrap()[0].clone();
    let out = h.reload(Vec::new()).await;
    assert!(out.ok);
    assert_eq!(out.removed, vec!["a".to_string()]);
    assert_eq!(out.closed, vec![inc.id]);
    // The action is let finish (a safe point), then the incident closes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        h.store
            .incident(inc.id)
            .await
            .unwrap()
            .unwrap()
            .state
            .is_open()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let store = h.stop().await;
    let done = store.incident(inc.id).await.unwrap().unwrap();
    assert_eq!(done.state, IncidentState::Resolved);
    let tl = messages(&store, inc.id).await;
    assert_eq!(
        tl.last().unwrap(),
        "state: closed: scenario a was removed from the rules by a reload",
        "{tl:#?}"
    );
    let ledger = store.incident_attempts(inc.id).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].outcome, Some(AttemptOutcome::Abandoned));
    assert_eq!(
        ledger[0].reason,
        "scenario removed by a rule reload while in flight"
    );
}

#[tokio::test(start_paused = true)]
async fn added_scenario_runs_and_kept_symptoms_keep_their_state() {
    let a = Scripted::new(Outcome::Ok);
    let runs = Arc::new(AtomicUsize::new(0));
    let slow = Arc::new(Slow {
        runs: runs.clone(),
        takes: Duration::from_millis(10),
    });
    let h = start(vec![runtime(
        scenario("a", "127.0.0.1:1"),
        &a,
        slow.clone(),
    )]);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    // a fails from the check at 5 s; the reload comes at 6.2 s. Its pending
    // streak carries over, so it fires at 7.2 s (2 s after 5 s), not at
    // 8.2 s (2 s after the reload), like b, which fails from the reload on.
    a.set(failing());
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let b = Scripted::new(failing());
    let out = h
        .reload(vec![
            runtime(scenario("a", "127.0.0.1:1"), &a, slow.clone()),
            runtime(scenario("b", "127.0.0.1:2"), &b, slow),
        ])
        .await;
    assert_eq!(out.added, vec!["b".to_string()]);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let open: Vec<String> = h
        .store
        .open_incidents()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.scenario)
        .collect();
    assert_eq!(open, vec!["a".to_string()], "a fired on its carried streak");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let store = h.stop().await;
    let mut open: Vec<String> = store
        .open_incidents()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.scenario)
        .collect();
    open.sort();
    assert_eq!(open, vec!["a".to_string(), "b".to_string()]);
}
