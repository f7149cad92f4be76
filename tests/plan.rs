//! The plan executor on its own, on tokio's paused clock: chains
//! (`then: continue`), preconditions and their gates, dry-run, maintenance
//! windows, the blast radius, incidents acting at once, and resuming a
//! chained step found in flight. Scripted actions and symptom views; an
//! in-memory store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use medic::clock::Clock;
use medic::config::Mode;
use medic::config::{Config, MaintenanceWindow};
use medic::duration::Dur;
use medic::engine::bounds::{Bounds, Health};
use medic::engine::plan::{self, PlanContext, PlanOutcome, PlannedStep};
use medic::observe::{Phase, Seen, SymptomView};
use medic::remedy::exec::ExecParams;
use medic::remedy::{Action, ActionContext, ActionResult, ActionSpec, Gate, Preflight};
use medic::rules::model::{Approval, Limit, Step, Then, Verify};
use medic::store::{AttemptOutcome, MemoryStore, NewAttempt, NewIncident, prelude::*};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

/// A scripted action: counts runs, answers `ok`, and may heal the symptom.
struct Scripted {
    name: &'static str,
    runs: Arc<AtomicUsize>,
    ok: bool,
    heals: Option<watch::Sender<SymptomView>>,
    /// Preflight answers in order (the last repeats); empty: no gates.
    gates: Mutex<Vec<Vec<Gate>>>,
    preflights: AtomicUsize,
    reconcile: Option<bool>,
}

impl Scripted {
    fn new(name: &'static str, ok: bool) -> Scripted {
        Scripted {
            name,
            runs: Arc::new(AtomicUsize::new(0)),
            ok,
            heals: None,
            gates: Mutex::new(Vec::new()),
            preflights: AtomicUsize::new(0),
            reconcile: None,
        }
    }
    fn healing(mut self, tx: &watch::Sender<SymptomView>) -> Self {
        self.heals = Some(tx.clone());
        self
    }
    fn gated(self, answers: Vec<Vec<Gate>>) -> Self {
        *self.gates.lock().unwrap() = answers;
        self
    }
}

#[async_trait::async_trait]
impl Action for Scripted {
    fn describe(&self) -> String {
        format!("scripted {}", self.name)
    }
    fn inputs(&self) -> serde_json::Value {
        serde_json::json!({ "name": self.name })
    }
    async fn preflight(&self, _ctx: &ActionContext) -> Preflight {
        self.preflights.fetch_add(1, Ordering::SeqCst);
        let mut g = self.gates.lock().unwrap();
        let gates = match g.len() {
            0 => Vec::new(),
            1 => g[0].clone(),
            _ => g.remove(0),
        };
        Preflight {
            gates,
            data: serde_json::Value::Null,
        }
    }
    async fn run(&self, _ctx: &ActionContext) -> ActionResult {
        self.runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(tx) = &self.heals {
            tx.send_replace(SymptomView::new(Phase::Ok, Seen::Ok));
        }
        if self.ok {
            ActionResult::ok(format!("{} done", self.name), serde_json::Value::Null)
        } else {
            ActionResult::failed(format!("{} broke", self.name), serde_json::Value::Null)
        }
    }
    async fn reconcile(&self, _ctx: &ActionContext) -> Option<ActionResult> {
        self.reconcile.map(|ok| ActionResult {
            ok,
            detail: "looked".into(),
            data: serde_json::Value::Null,
        })
    }
}

fn step(name: &str, then: Then, clears: &[&str], attempts: u32) -> Step {
    Step {
        name: name.into(),
        action: ActionSpec::Exec(ExecParams {
            args: vec!["true".into()],
            env: Default::default(),
            cwd: None,
        }),
        verify: Verify {
            clears: clears.iter().map(|s| s.to_string()).collect(),
            within: Dur::secs(5),
        },
        limit: Limit {
            attempts,
            per: Dur::secs(3600),
            cooldown: Dur::secs(0),
        },
        timeout: Dur::secs(30),
        approval: Approval::None,
        mode: None,
        then,
        only_if: vec![],
        label_patterns: Default::default(),
        otherwise: None,
    }
}

fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

struct Run {
    store: Arc<MemoryStore>,
    ctx: PlanContext,
    symptom: watch::Sender<SymptomView>,
}

async fn setup(config: &Config, mode: Mode) -> Run {
    let store = Arc::new(MemoryStore::new());
    let (inc, _) = store
        .open_incident(NewIncident {
            scenario: "sc".into(),
            instance: String::new(),
            severity: "high".into(),
            summary: "s".into(),
            at: base(),
        })
        .await
        .unwrap();
    let (tx, rx) = watch::channel(SymptomView {
        phase: Phase::Firing,
        seen: Seen::Failing,
        streak: 5,
        streak_since: Some(tokio::time::Instant::now()),
        quiet_since: None,
    });
    let ctx = PlanContext {
        approvals: None,
        incident: inc.id,
        scenario: "sc".into(),
        instance: String::new(),
        steps: Vec::new(),
        mode,
        when: vec!["down".into()],
        symptoms: HashMap::from([("down".to_string(), rx)]),
        observed: HashMap::from([("down".to_string(), (Some("db".to_string()), "tcp"))]),
        quorum: HashMap::new(),
        observers: medic::engine::quorum::Observers::single(),
        max_acting: 1,
        limit: Default::default(),
        blast_window: Default::default(),
        store: store.clone(),
        clock: Clock::tokio(base()),
        actions: Arc::new(Semaphore::new(4)),
        bounds: Arc::new(Bounds::new(config)),
        stop: CancellationToken::new(),
        shutdown: CancellationToken::new(),
        kill: CancellationToken::new(),
        hold: medic::engine::depend::never(),
        grace: std::time::Duration::ZERO,
        rpo: None,
        opened_at: None,
    };
    Run {
        store,
        ctx,
        symptom: tx,
    }
}

fn with_steps(r: &mut Run, steps: Vec<(Step, Arc<Scripted>)>) {
    r.ctx.steps = steps
        .into_iter()
        .map(|(step, a)| PlannedStep {
            step,
            action: a as Arc<dyn Action>,
        })
        .collect();
}

async fn timeline(r: &Run) -> Vec<String> {
    r.store
        .timeline(r.ctx.incident)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}: {}", e.kind, e.message))
        .collect()
}

fn has(tl: &[String], line: &str) -> bool {
    tl.iter().any(|m| m == line)
}

#[tokio::test(start_paused = true)]
async fn a_chain_runs_each_follow_up_after_the_step_before_worked() {
    let mut r = setup(&Config::default(), Mode::Enforce).await;
    let promote = Arc::new(Scripted::new("promote", true));
    let repoint = Arc::new(Scripted::new("repoint", true));
    let restart = Arc::new(Scripted::new("restart", true).healing(&r.symptom));
    with_steps(
        &mut r,
        vec![
            (step("promote", Then::Continue, &[], 1), promote.clone()),
            (step("repoint", Then::Continue, &[], 1), repoint.clone()),
            (step("restart", Then::Stop, &["down"], 1), restart.clone()),
        ],
    );
    let out = plan::execute(&r.ctx).await.unwrap();
    assert_eq!(
        out,
        PlanOutcome::Recovered {
            step: "restart".into()
        }
    );
    for a in [&promote, &repoint, &restart] {
        assert_eq!(a.runs.load(Ordering::SeqCst), 1, "{}", a.name);
    }
    let tl = timeline(&r).await;
    assert!(
        has(
            &tl,
            "verify: step promote: verified by the action: promote done"
        ),
        "{tl:#?}"
    );
    assert!(
        has(
            &tl,
            "step: step promote worked; continuing with step repoint"
        ),
        "{tl:#?}"
    );
    assert!(
        has(
            &tl,
            "step: step repoint worked; continuing with step restart"
        ),
        "{tl:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_chain_step_runs_no_follow_up_and_ends_the_plan() {
    let mut r = setup(&Config::default(), Mode::Enforce).await;
    let promote = Arc::new(Scripted::new("promote", false));
    let repoint = Arc::new(Scripted::new("repoint", true));
    with_steps(
        &mut r,
        vec![
            (step("promote", Then::Continue, &[], 2), promote.clone()),
            (step("repoint", Then::Stop, &["down"], 1), repoint.clone()),
        ],
    );
    let out = plan::execute(&r.ctx).await.unwrap();
    let PlanOutcome::Exhausted { reason } = out else {
        panic!("{out:?}")
    };
    assert!(
        reason.ends_with("step promote did not work, so its follow-up steps (repoint) do not run"),
        "{reason}"
    );
    assert_eq!(
        promote.runs.load(Ordering::SeqCst),
        2,
        "retried within its budget"
    );
    assert_eq!(repoint.runs.load(Ordering::SeqCst), 0);
    let ledger = r.store.incident_attempts(r.ctx.incident).await.unwrap();
    assert!(ledger.iter().all(|a| a.step == "promote"), "{ledger:#?}");
}

/// The runbook's database plan: promote → repoint → restart, and only
/// when the promotion could not be done, restore from backup → repoint to
/// the restored database. A failed restart after a good promotion must
/// never start a restore.
fn with_else_plan(r: &mut Run, promote_ok: bool, restart_ok: bool) -> Vec<Arc<Scripted>> {
    let names = [
        "promote",
        "repoint",
        "restart",
        "restore",
        "repoint-restored",
    ];
    let actions: Vec<Arc<Scripted>> = names
        .iter()
        .map(|n| {
            let ok = match *n {
                "promote" => promote_ok,
                "restart" => restart_ok,
                _ => true,
            };
            let a = Scripted::new(n, ok);
            // The steps verified on the symptom clear it when they work.
            let verified = matches!(*n, "restart" | "repoint-restored");
            Arc::new(if ok && verified {
                a.healing(&r.symptom)
            } else {
                a
            })
        })
        .collect();
    let mut promote = step("promote", Then::Continue, &[], 1);
    promote.otherwise = Some("restore".into());
    with_steps(
        r,
        vec![
            (promote, actions[0].clone()),
            (step("repoint", Then::Continue, &[], 1), actions[1].clone()),
            (
                step("restart", Then::Stop, &["down"], 1),
                actions[2].clone(),
            ),
            (step("restore", Then::Continue, &[], 1), actions[3].clone()),
            (
                step("repoint-restored", Then::Stop, &["down"], 1),
                actions[4].clone(),
            ),
        ],
    );
    actions
}

fn runs(actions: &[Arc<Scripted>]) -> Vec<usize> {
    actions
        .iter()
        .map(|a| a.runs.load(Ordering::SeqCst))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_failed_step_with_else_goes_on_at_that_step_and_only_it_reaches_it() {
    // The promotion fails: the chain's follow-ups are skipped, the restore
    // branch runs.
    let mut r = setup(&Config::default(), Mode::Enforce).await;
    let a = with_else_plan(&mut r, false, true);
    let out = plan::execute(&r.ctx).await.unwrap();
    assert_eq!(
        out,
        PlanOutcome::Recovered {
            step: "repoint-restored".into()
        }
    );
    assert_eq!(runs(&a), [1, 0, 0, 1, 1]);
    let tl = timeline(&r).await;
    assert!(
        has(
            &tl,
            "step: step promote did not work; its `else` goes on with step restore"
        ),
        "{tl:#?}"
    );

    // The promotion works but the restart does not: the plan ends at the
    // branch, no restore.
    let mut r = setup(&Config::default(), Mode::Enforce).await;
    let a = with_else_plan(&mut r, true, false);
    let out = plan::execute(&r.ctx).await.unwrap();
    let PlanOutcome::Exhausted { reason } = out else {
        panic!("{out:?}")
    };
    assert!(
        reason.ends_with("step restore runs only as the `else` of step promote"),
        "{reason}"
    );
    assert_eq!(runs(&a), [1, 1, 1, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_stop_step_falls_back_to_the_next() {
    let mut r = setup(&Config::default(), Mode::Enforce).await;
    let first = Arc::new(Scripted::new("first", false));
    let second = Arc::new(Scripted::new("second", true).healing(&r.symptom));
    with_steps(
        &mut r,
        vec![
            (step("first", Then::Stop, &["down"], 1), first.clone()),
            (step("second", Then::Stop, &["down"], 1), second.clone()),
        ],
    );
    let out = plan::execute(&r.ctx).await.unwrap();
    assert_eq!(
        out,
        PlanOutcome::Recovered {
            step: "second".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusing_precondition_is_in_the_ledger_and_on_the_timeline_and_runs_nothing() {
    let mut r = setup(&Config::default(), Mode::Enforce).await;
    let flush = Arc::new(Scripted::new("flush", true).gated(vec![vec![
        Gate::pass("reachable", "127.0.0.1:6380"),
        Gate::fail("role-is-master", "127.0.0.1:6380 answers role:slave"),
    ]]));
    with_steps(
        &mut r,
        vec![(step("flush", Then::Stop, &["down"], 3), flush.clone())],
    );
    let out = plan::execute(&r.ctx).await.unwrap();
    assert!(matches!(out, PlanOutcome::Exhausted { .. }));
    assert_eq!(flush.runs.load(Ordering::SeqCst), 0);
    let tl = timeline(&r).await;
    assert!(
        has(
            &tl,
            "gate: step flush: gate reachable passed: 127.0.0.1:6380"
        ),
        "{tl:#?}"
    );
    assert!(
        has(
            &tl,
            "gate: step flush: gate role-is-master refused: 127.0.0.1:6380 answers role:slave"
        ),
        "{tl:#?}"
    );
    let ledger = r.store.incident_attempts(r.ctx.incident).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].outcome, Some(AttemptOutcome::Refused));
    assert_eq!(
        ledger[0].reason,
        "refused: role-is-master: 127.0.0.1:6380 answers role:slave"
    );
    assert_eq!(ledger[0].inputs["gates"].as_array().unwrap().len(), 2);
    assert_eq!(ledger[0].inputs["observed"][0]["symptom"], "down");
    assert_eq!(ledger[0].inputs["observed"][0]["target"], "db");
    assert_eq!(ledger[0].inputs["observed"][0]["streak"], 5);
}

#[tokio::test(start_paused = true)]
async fn a_not_yet_gate_is_waited_for_then_the_action_runs() {
    let mut r = setup(&Config::default(), Mode::Enforce).await;
    let wait = Duration::from_secs(2);
    let promote = Arc::new(Scripted::new("promote", true).gated(vec![
        vec![Gate::not_yet("primary-unreachable", "2 of 5 checks", wait)],
        vec![Gate::not_yet("primary-unreachable", "4 of 5 checks", wait)],
        vec![Gate::pass("primary-unreachable", "5 of 5 checks")],
    ]));
    let after = Arc::new(Scripted::new("after", true).healing(&r.symptom));
    with_steps(
        &mut r,
        vec![
            (step("promote", Then::Continue, &[], 1), promote.clone()),
            (step("after", Then::Stop, &["down"], 1), after.clone()),
        ],
    );
    let started = tokio::time::Instant::now();
    let out = plan::execute(&r.ctx).await.unwrap();
    assert_eq!(
        out,
        PlanOutcome::Recovered {
            step: "after".into()
        }
    );
    assert_eq!(promote.preflights.load(Ordering::SeqCst), 3);
    assert_eq!(promote.runs.load(Ordering::SeqCst), 1);
    assert!(started.elapsed() >= 2 * wait);
    let tl = timeline(&r).await;
    let not_yet = tl.iter().filter(|m| m.contains("not yet")).count();
    assert_eq!(
        not_yet, 1,
        "one 'not yet' line, not one per re-check: {tl:#?}"
    );
    let ledger = r.store.incident_attempts(r.ctx.incident).await.unwrap();
    assert_eq!(ledger.len(), 2, "waiting is not an attempt: {ledger:#?}");
}

#[tokio::test(start_paused = true)]
async fn dry_run_reports_every_gate_of_every_step_and_runs_nothing() {
    let mut r = setup(&Config::default(), Mode::DryRun).await;
    let promote = Arc::new(Scripted::new("promote", true).gated(vec![vec![
        Gate::pass("primary-unreachable", "5 of 5"),
        Gate::fail("candidate-chosen", "no eligible candidate"),
    ]]));
    let repoint = Arc::new(Scripted::new("repoint", true));
    with_steps(
        &mut r,
        vec![
            (step("promote", Then::Continue, &[], 1), promote.clone()),
            (step("repoint", Then::Stop, &["down"], 1), repoint.clone()),
        ],
    );
    let out = plan::execute(&r.ctx).await.unwrap();
    assert!(matches!(out, PlanOutcome::Exhausted { .. }));
    assert_eq!(
        promote.runs.load(Ordering::SeqCst) + repoint.runs.load(Ordering::SeqCst),
        0
    );
    let tl = timeline(&r).await;
    for line in [
        "gate: step promote: gate approval passed: not required",
        "gate: step promote: gate limit passed: 0 of 1 attempts per 1h used",
        "gate: step promote: gate primary-unreachable passed: 5 of 5",
        "gate: step promote: gate candidate-chosen would refuse: no eligible candidate",
        "step: step promote: dry-run: would refuse scripted promote (candidate-chosen: no eligible candidate)",
        "gate: step repoint: gate acting passed: 0 other incident(s) acting",
        "step: step repoint: dry-run: would run scripted repoint",
    ] {
        assert!(has(&tl, line), "no {line:?} in {tl:#?}");
    }
    let ledger = r.store.incident_attempts(r.ctx.incident).await.unwrap();
    assert!(
        ledger
            .iter()
            .all(|a| a.outcome == Some(AttemptOutcome::DryRun))
    );
    assert_eq!(ledger.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_maintenance_window_blocks_actions_until_it_ends() {
    let config = Config {
        maintenance: vec![MaintenanceWindow {
            scenario: Some("sc".into()),
            target: None,
            start: base() - chrono::Duration::minutes(5),
            end: base() + chrono::Duration::minutes(10),
            reason: "database upgrade".into(),
        }],
        ..Config::default()
    };
    let mut r = setup(&config, Mode::Enforce).await;
    let restart = Arc::new(Scripted::new("restart", true).healing(&r.symptom));
    with_steps(
        &mut r,
        vec![(step("restart", Then::Stop, &["down"], 1), restart.clone())],
    );
    let runs = restart.runs.clone();
    let ctx = r.ctx;
    let task = tokio::spawn(async move { (plan::execute(&ctx).await.unwrap(), ctx) });
    tokio::time::sleep(Duration::from_secs(9 * 60)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 0, "acted inside the window");
    let (out, ctx) = task.await.unwrap();
    assert_eq!(
        out,
        PlanOutcome::Recovered {
            step: "restart".into()
        }
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let tl = r.store.timeline(ctx.incident).await.unwrap();
    assert!(
        tl.iter().any(|e| e.message
            == "step restart: blocked by a maintenance window (database upgrade) until 2026-01-01T00:10:00+00:00; observation goes on"),
        "{tl:#?}"
    );
    assert!(
        tl.iter()
            .filter(|e| e.message.contains("maintenance"))
            .count()
            == 1,
        "noted once"
    );
}

#[tokio::test(start_paused = true)]
async fn most_targets_failing_at_once_acts_on_none_and_escalates() {
    let mut r = setup(&Config::default(), Mode::Enforce).await;
    r.ctx.bounds.set_health(
        "sc",
        Health {
            failing: 3,
            total: 4,
        },
    );
    let restart = Arc::new(Scripted::new("restart", true));
    let other = Arc::new(Scripted::new("other", true));
    with_steps(
        &mut r,
        vec![
            (step("restart", Then::Stop, &["down"], 1), restart.clone()),
            (step("other", Then::Stop, &["down"], 1), other.clone()),
        ],
    );
    let out = plan::execute(&r.ctx).await.unwrap();
    let PlanOutcome::Exhausted { reason } = out else {
        panic!("{out:?}")
    };
    assert!(
        reason.starts_with(
            "refused: blast radius: 3 of 4 targets of this scenario fail at once (more than 50%)"
        ),
        "{reason}"
    );
    assert_eq!(
        restart.runs.load(Ordering::SeqCst) + other.runs.load(Ordering::SeqCst),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn only_max_acting_incidents_of_a_scenario_act_at_once() {
    let mut r = setup(&Config::default(), Mode::Enforce).await;
    // Another incident of the scenario has an attempt in flight.
    let (other_incident, _) = r
        .store
        .open_incident(NewIncident {
            scenario: "sc".into(),
            instance: "web-2".into(),
            severity: "high".into(),
            summary: "other".into(),
            at: base(),
        })
        .await
        .unwrap();
    let other = r
        .store
        .begin_attempt(NewAttempt {
            incident_id: other_incident.id,
            scenario: "sc".into(),
            instance: "web-2".into(),
            step: "restart".into(),
            step_index: 0,
            action: "exec".into(),
            key: format!("{}:0:1", other_incident.id),
            started_at: base(),
            inputs: serde_json::Value::Null,
        })
        .await
        .unwrap();
    let restart = Arc::new(Scripted::new("restart", true).healing(&r.symptom));
    with_steps(
        &mut r,
        vec![(step("restart", Then::Stop, &["down"], 1), restart.clone())],
    );
    let runs = restart.runs.clone();
    let store = r.store.clone();
    let ctx = r.ctx;
    let task = tokio::spawn(async move { plan::execute(&ctx).await.unwrap() });
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "acted beside the other incident"
    );
    store
        .finish_attempt(other, AttemptOutcome::Succeeded, "done", base())
        .await
        .unwrap();
    let out = task.await.unwrap();
    assert_eq!(
        out,
        PlanOutcome::Recovered {
            step: "restart".into()
        }
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_chained_step_in_flight_at_restart_is_reconciled_not_rerun() {
    let mut r = setup(&Config::default(), Mode::Enforce).await;
    let mut promote = Scripted::new("promote", true);
    promote.reconcile = Some(true);
    let promote = Arc::new(promote);
    let repoint = Arc::new(Scripted::new("repoint", true).healing(&r.symptom));
    with_steps(
        &mut r,
        vec![
            (step("promote", Then::Continue, &[], 1), promote.clone()),
            (step("repoint", Then::Stop, &["down"], 1), repoint.clone()),
        ],
    );
    // As a crash leaves it: the promotion's attempt written, never finished.
    r.store
        .begin_attempt(NewAttempt {
            incident_id: r.ctx.incident,
            scenario: "sc".into(),
            instance: String::new(),
            step: "promote".into(),
            step_index: 0,
            action: "postgres.promote-replica".into(),
            key: format!("{}:0:1", r.ctx.incident),
            started_at: base(),
            inputs: serde_json::Value::Null,
        })
        .await
        .unwrap();
    let out = plan::execute(&r.ctx).await.unwrap();
    assert_eq!(
        out,
        PlanOutcome::Recovered {
            step: "repoint".into()
        }
    );
    assert_eq!(
        promote.runs.load(Ordering::SeqCst),
        0,
        "never blindly run again"
    );
    assert_eq!(repoint.runs.load(Ordering::SeqCst), 1);
    let ledger = r.store.incident_attempts(r.ctx.incident).await.unwrap();
    assert_eq!(ledger[0].outcome, Some(AttemptOutcome::Succeeded));
    assert_eq!(ledger[0].reason, "verified after restart: looked");
}

/// Nobody is asked to approve a step the scenario-wide limit would refuse:
/// other instances used the scenario's attempts, so this one escalates with
/// the reason, and neither approval nor action happens.
#[tokio::test(start_paused = true)]
async fn a_spent_scenario_limit_refuses_before_asking_for_approval() {
    use medic::rules::model::{ApprovalPolicy, ScenarioLimit};
    let mut r = setup(&Config::default(), Mode::Enforce).await;
    r.ctx.instance = "web-1".into();
    r.ctx.limit = ScenarioLimit {
        attempts: 2,
        per: Dur::secs(3600),
    };
    for (i, instance) in ["web-2", "web-3"].into_iter().enumerate() {
        let id = r
            .store
            .begin_attempt(NewAttempt {
                incident_id: r.ctx.incident,
                scenario: "sc".into(),
                instance: instance.into(),
                step: "restart".into(),
                step_index: 0,
                action: "exec".into(),
                key: format!("other:{i}"),
                started_at: base(),
                inputs: serde_json::Value::Null,
            })
            .await
            .unwrap();
        r.store
            .finish_attempt(id, AttemptOutcome::Failed, "exit 1", base())
            .await
            .unwrap();
    }
    let restart = Arc::new(Scripted::new("restart", true));
    let mut s = step("restart", Then::Stop, &["down"], 3);
    s.approval = Approval::Required(ApprovalPolicy::default());
    with_steps(&mut r, vec![(s, restart.clone())]);
    let out = plan::execute(&r.ctx).await.unwrap();
    let PlanOutcome::Exhausted { reason } = out else {
        panic!("{out:?}")
    };
    assert!(
        reason.starts_with(
            "refused: scenario-limit: 2 of 2 attempts per 1h used by this scenario (over 2 instance(s))"
        ),
        "{reason}"
    );
    assert_eq!(restart.runs.load(Ordering::SeqCst), 0);
    assert!(
        !timeline(&r).await.iter().any(|m| m.contains("approval")),
        "asked for approval: {:#?}",
        timeline(&r).await
    );
}

/// Makes `r` one of two replicas sharing observations (quorum 2 on
/// `down`): this one sees `down` failing every second, the other sees it ok
/// until the returned flag is set. Cancel the token to stop them.
fn two_observers(r: &mut Run) -> (Arc<std::sync::atomic::AtomicBool>, CancellationToken) {
    use medic::engine::quorum::{Observers, SymptomQuorum};
    use medic::observe::{Observation, Outcome};
    use medic::store::{ReplicaBeat, SharedObservation};
    let clock = Clock::tokio(base());
    let stop = CancellationToken::new();
    let me = Observers::shared(
        r.store.clone(),
        clock.clone(),
        "me".into(),
        Duration::from_secs(3),
    );
    tokio::spawn(me.clone().run(stop.clone()));
    r.ctx.observers = me.clone();
    r.ctx.clock = clock.clone();
    r.ctx.quorum = HashMap::from([(
        "down".to_string(),
        SymptomQuorum {
            rule: Some(2),
            every: Duration::from_secs(1),
            per_series: false,
        },
    )]);
    let other_fails = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (store, flag, s) = (r.store.clone(), other_fails.clone(), stop.clone());
    tokio::spawn(async move {
        while !s.is_cancelled() {
            let failing = Observation::Whole(Outcome::Failing("refused".into()));
            me.record("sc", "down", false, &failing);
            let outcome = if flag.load(Ordering::SeqCst) {
                "failing"
            } else {
                "ok"
            };
            let now = clock.now();
            let row = SharedObservation {
                replica: "other".into(),
                scenario: "sc".into(),
                symptom: "down".into(),
                instance: String::new(),
                outcome: outcome.into(),
                detail: String::new(),
                observed_at: now,
            };
            let beat = ReplicaBeat {
                replica: "other".into(),
                seen_at: now,
            };
            store.observe(beat, vec![row]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    (other_fails, stop)
}

fn lines(tl: Vec<medic::store::TimelineEntry>) -> Vec<String> {
    tl.into_iter()
        .map(|e| format!("{}: {}", e.kind, e.message))
        .collect()
}

/// With several replicas a step acts on the objective view: it waits
/// while only this replica (of two observers) sees the symptom failing,
/// says so once on the timeline, and acts once the other one agrees.
#[tokio::test(start_paused = true)]
async fn a_step_waits_for_a_quorum_of_fresh_observers_then_acts() {
    let mut r = setup(&Config::default(), Mode::Enforce).await;
    let (other_fails, stop) = two_observers(&mut r);
    let fix = Arc::new(Scripted::new("fix", true).healing(&r.symptom));
    with_steps(
        &mut r,
        vec![(step("fix", Then::Stop, &["down"], 1), fix.clone())],
    );
    let ctx = Arc::new(r.ctx);
    let run = tokio::spawn({
        let ctx = ctx.clone();
        async move { plan::execute(&ctx).await.unwrap() }
    });
    // The step waits up to its verify.within (5 s) for a quorum.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        fix.runs.load(Ordering::SeqCst),
        0,
        "one observer of two is not a quorum"
    );
    let tl = lines(r.store.timeline(ctx.incident).await.unwrap());
    let waiting = "guard: step fix: down failing on 1 of 2 observers, quorum 2: waiting";
    assert_eq!(
        tl.iter().filter(|l| *l == waiting).count(),
        1,
        "noted once while the count holds: {tl:#?}"
    );
    assert!(
        r.store
            .incident_attempts(ctx.incident)
            .await
            .unwrap()
            .is_empty()
    );
    other_fails.store(true, Ordering::SeqCst);
    let out = run.await.unwrap();
    assert_eq!(out, PlanOutcome::Recovered { step: "fix".into() });
    assert_eq!(fix.runs.load(Ordering::SeqCst), 1);
    let tl = lines(r.store.timeline(ctx.incident).await.unwrap());
    assert!(
        has(
            &tl,
            "guard: step fix: down failing on 2 of 2 observers, quorum 2: acting"
        ),
        "{tl:#?}"
    );
    stop.cancel();
}

/// A quorum that never comes: after the step's verify.within the step is
/// refused (recorded, nothing run) and the plan ends, so humans are paged.
#[tokio::test(start_paused = true)]
async fn a_step_without_a_quorum_is_refused_after_its_verify_window() {
    let mut r = setup(&Config::default(), Mode::Enforce).await;
    let (_never, stop) = two_observers(&mut r);
    let fix = Arc::new(Scripted::new("fix", true).healing(&r.symptom));
    with_steps(
        &mut r,
        vec![(step("fix", Then::Stop, &["down"], 1), fix.clone())],
    );
    let out = plan::execute(&r.ctx).await.unwrap();
    let PlanOutcome::Exhausted { reason } = out else {
        panic!("{out:?}")
    };
    assert!(
        reason.contains("refused: down failing on 1 of 2 observers, quorum 2 for 5s (no quorum"),
        "{reason}"
    );
    assert_eq!(fix.runs.load(Ordering::SeqCst), 0);
    let ledger = r.store.incident_attempts(r.ctx.incident).await.unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:#?}");
    assert_eq!(ledger[0].outcome, Some(AttemptOutcome::Refused));
    stop.cancel();
}
