//! Per-series symptoms in the real engine: one symptom instance, and one
//! incident, per label set; labels reach the plan as `${labels.NAME}`.
//! Paused clock where nothing real runs; the real clock where `exec` runs
//! a real process.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::scripted::{Running, ScriptedSeries, run_scenario};
use medic::check::CheckSpec;
use medic::clock::Clock;
use medic::config::Config;
use medic::config::Mode;
use medic::duration::Dur;
use medic::observe::{Observation, Outcome};
use medic::remedy::ActionSpec;
use medic::remedy::exec::ExecParams;
use medic::rules::model::{Approval, Limit, Scenario, Severity, Step, Symptom, Then, Verify, When};
use medic::store::{IncidentState, MemoryStore, prelude::*};

fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A per-deployment 5xx scenario whose one step runs `args`.
fn scenario(args: &[&str], mode: Mode, every: Dur, for_: Dur, clear_for: Dur) -> Scenario {
    Scenario {
        name: "application-errors".into(),
        summary: "5xx ratio high".into(),
        severity: Severity::High,
        rto: Dur::secs(3600),
        rpo: None,
        runbook: None,
        mode: Some(mode),
        symptoms: vec![Symptom {
            name: "errors_5xx".into(),
            check: CheckSpec::Promql(medic::check::promql::PromqlParams {
                query: "sum by (deployment) (rate(http_5xx[5m])) > 0.1".into(),
                source: None,
            }),
            every,
            timeout: Dur::secs(1),
            for_,
            clear_for,
            quorum: None,
        }],
        when: When::Any(vec!["errors_5xx".into()]),
        plan: vec![Step {
            name: "restart".into(),
            action: ActionSpec::Exec(ExecParams {
                args: args.iter().map(|a| a.to_string()).collect(),
                env: Default::default(),
                cwd: None,
            }),
            verify: Verify {
                clears: vec!["errors_5xx".into()],
                within: Dur::secs(5),
            },
            limit: Limit::default(),
            timeout: Dur::secs(10),
            approval: Approval::None,
            mode: None,
            then: Then::Stop,
            only_if: vec![],
            label_patterns: Default::default(),
            otherwise: None,
        }],
        max_acting: 4,
        quorum: None,
        limit: Default::default(),
        blast_radius: Default::default(),
        escalation: "default".into(),
        supersedes: Vec::new(),
        path: "rules/application-errors.yaml".into(),
    }
}

struct Harness {
    store: Arc<MemoryStore>,
    engine: Running,
}

impl Harness {
    async fn stop(self) -> Arc<MemoryStore> {
        self.engine.stop().await;
        self.store
    }
}

/// Runs `sc` with `check` and its real actions (built from the rule).
fn start(sc: Scenario, check: &ScriptedSeries, store: Arc<MemoryStore>, clock: Clock) -> Harness {
    let mut config = Config::default();
    // Every deployment this test fails is all of those seen: let medic act.
    config.limits.blast_radius.percent = 100;
    let action = medic::remedy::build(&sc.plan[0].action, &config).unwrap();
    let mode = sc.mode.unwrap();
    let engine = run_scenario(
        config,
        sc,
        mode,
        Arc::new(check.clone()),
        action,
        store.clone(),
        clock,
    );
    Harness { store, engine }
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

const API: &[(&str, &str)] = &[("deployment", "api"), ("namespace", "prod")];
const WEB: &[(&str, &str)] = &[("deployment", "web"), ("namespace", "prod")];
const API_KEY: &str = r#"{deployment="api",namespace="prod"}"#;
const WEB_KEY: &str = r#"{deployment="web",namespace="prod"}"#;

#[tokio::test(start_paused = true)]
async fn two_failing_series_open_two_incidents_and_only_the_recovered_one_resolves() {
    let check = ScriptedSeries::new(Observation::Series(vec![]));
    let sc = scenario(
        &[
            "kubectl",
            "rollout",
            "restart",
            "deployment/${labels.deployment}",
            "-n",
            "${labels.namespace}",
        ],
        Mode::DryRun,
        Dur::secs(1),
        Dur::secs(3),
        Dur::secs(2),
    );
    let h = start(
        sc,
        &check,
        Arc::new(MemoryStore::new()),
        Clock::tokio(base()),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(h.store.open_incidents().await.unwrap().is_empty());

    check.set(ScriptedSeries::failing(&[API, WEB]));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut open = h.store.open_incidents().await.unwrap();
    open.sort_by(|a, b| a.instance.cmp(&b.instance));
    let instances: Vec<&str> = open.iter().map(|i| i.instance.as_str()).collect();
    assert_eq!(instances, [API_KEY, WEB_KEY]);
    let (api, web) = (open[0].id, open[1].id);
    let tl = messages(&h.store, api).await;
    assert!(
        tl[0].starts_with(&format!("state: opened on {API_KEY}: errors_5xx firing")),
        "{tl:#?}"
    );
    // The labels reached the exec step's args (dry-run says what it would run).
    assert!(
        tl.iter().any(|m| m.contains(
            r#"dry-run: would run exec ["kubectl", "rollout", "restart", "deployment/api", "-n", "prod"]"#
        )),
        "{tl:#?}"
    );
    let tl = messages(&h.store, web).await;
    assert!(
        tl.iter()
            .any(|m| m.contains(r#""deployment/web", "-n", "prod"]"#)),
        "{tl:#?}"
    );
    let ledger = h.store.incident_attempts(web).await.unwrap();
    assert!(ledger.iter().all(|a| a.instance == WEB_KEY), "{ledger:#?}");

    // api's series leaves the result: only api's incident resolves.
    check.set(ScriptedSeries::failing(&[WEB]));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let open = h.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0].id, web);
    let tl = messages(&h.store, api).await;
    assert!(
        tl.iter().any(|m| m.starts_with(&format!(
            "symptom: symptom errors_5xx{API_KEY}: firing → clearing"
        ))),
        "{tl:#?}"
    );
    assert!(
        tl.iter()
            .any(|m| m.starts_with("state: resolved: all symptoms clear")),
        "{tl:#?}"
    );

    // Prometheus unreachable: every instance is unknown, which resolves
    // nothing and opens nothing.
    check.set(Observation::Whole(Outcome::Unknown(
        "prometheus unreachable: connection refused".into(),
    )));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let open = h.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, web);
    let tl = messages(&h.store, web).await;
    assert!(
        tl.iter().any(|m| m == &format!(
            "symptom: symptom errors_5xx{WEB_KEY}: cannot observe (unknown: prometheus unreachable: connection refused)"
        )),
        "{tl:#?}"
    );
    let store = h.stop().await;
    assert_eq!(store.recent_incidents(10).await.unwrap().len(), 2);
    let api_inc = store
        .recent_incidents(10)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == api)
        .unwrap();
    assert_eq!(api_inc.state, IncidentState::Resolved);
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_each_instance_with_its_labels() {
    let store = Arc::new(MemoryStore::new());
    let check = ScriptedSeries::new(ScriptedSeries::failing(&[API]));
    let sc = || {
        scenario(
            &["echo", "${labels.deployment}"],
            Mode::DryRun,
            Dur::secs(1),
            Dur::secs(3),
            Dur::secs(2),
        )
    };
    let h = start(sc(), &check, store.clone(), Clock::tokio(base()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let store = h.stop().await;
    let open = store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 1);
    let id = open[0].id;

    // medic restarts; the series is gone meanwhile: the incident resumes
    // for its instance and resolves once medic sees it clear.
    check.set(Observation::Series(vec![]));
    let h = start(sc(), &check, store.clone(), Clock::tokio(base()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let store = h.stop().await;
    assert!(store.open_incidents().await.unwrap().is_empty());
    assert_eq!(
        store.recent_incidents(10).await.unwrap().len(),
        1,
        "no duplicate"
    );
    let tl = messages(&store, id).await;
    assert!(
        tl.iter()
            .any(|m| m.starts_with("state: medic restarted; resuming")),
        "{tl:#?}"
    );
    assert!(
        tl.iter().any(|m| m.starts_with("state: resolved")),
        "{tl:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_label_the_series_lacks_refuses_the_step() {
    let check = ScriptedSeries::new(ScriptedSeries::failing(&[API]));
    let sc = scenario(
        &["echo", "${labels.pod}"],
        Mode::Enforce,
        Dur::secs(1),
        Dur::secs(0),
        Dur::secs(0),
    );
    let h = start(
        sc,
        &check,
        Arc::new(MemoryStore::new()),
        Clock::tokio(base()),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let store = h.stop().await;
    let inc = &store.open_incidents().await.unwrap()[0];
    assert_eq!(inc.state, IncidentState::Escalated);
    let tl = messages(&store, inc.id).await;
    assert!(
        tl.iter().any(|m| m.contains(
            r#"gate labels refused: the series has no label "pod" (its labels: deployment, namespace)"#
        )),
        "{tl:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn blast_radius_counts_instances() {
    let store = Arc::new(MemoryStore::new());
    let check = ScriptedSeries::new(Observation::Series(vec![]));
    let sc = scenario(
        &["true"],
        Mode::Enforce,
        Dur::secs(1),
        Dur::secs(3),
        Dur::secs(0),
    );
    let mut config = Config::default();
    config.limits.blast_radius.percent = 50;
    let action = medic::remedy::build(&sc.plan[0].action, &config).unwrap();
    let engine = run_scenario(
        config,
        sc,
        Mode::Enforce,
        Arc::new(check.clone()),
        action,
        store.clone(),
        Clock::tokio(base()),
    );
    // Four deployments blip (shorter than `for`), so medic has seen four.
    let c = &[("deployment", "c")][..];
    let d = &[("deployment", "d")][..];
    check.set(ScriptedSeries::failing(&[API, WEB, c, d]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    check.set(Observation::Series(vec![]));
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Then three of the four fail for real: more than half.
    check.set(ScriptedSeries::failing(&[API, WEB, c]));
    tokio::time::sleep(Duration::from_secs(10)).await;
    engine.stop().await;
    let open = store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 3);
    for inc in open {
        let tl = messages(&store, inc.id).await;
        assert!(
            tl.iter().any(|m| m
                .contains("refused: blast radius: 3 of 4 targets of this scenario fail at once")),
            "{tl:#?}"
        );
    }
}

/// A real process: each incident's `exec` gets its own deployment's name.
#[tokio::test]
async fn labels_reach_a_real_exec_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("restarted");
    let out_s = out.to_str().unwrap().to_string();
    let check = ScriptedSeries::new(ScriptedSeries::failing(&[API, WEB]));
    let sc = scenario(
        &[
            "sh",
            "-c",
            "echo \"$1\" >> \"$2\"",
            "sh",
            "${labels.deployment}",
            &out_s,
        ],
        Mode::Enforce,
        Dur(Duration::from_millis(50)),
        Dur::secs(0),
        Dur::secs(0),
    );
    let rt = Arc::new(medic::engine::ScenarioRuntime {
        steps: vec![],
        checks: vec![Arc::new(check.clone())],
        scenario: sc.clone(),
        mode: Mode::Enforce,
    });
    let h = start(sc, &check, Arc::new(MemoryStore::new()), Clock::system());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        if lines == ["api", "web"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "exec wrote {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Healed: both verify and resolve.
    check.set(Observation::Series(vec![]));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !h.store.open_incidents().await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "not resolved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let store = h.stop().await;
    // Regression (issue 18): budgets shown on `/metrics` and the status page
    // were counted under instance "" while the plan spends each label
    // set's: both stayed at their full limit. Each instance spent one.
    let budgets = medic::server::budgets(&*store, &[rt], Utc::now())
        .await
        .unwrap();
    let limit = Limit::default().attempts;
    let shown: Vec<(&str, u32, u32)> = budgets
        .iter()
        .map(|b| (b.instance.as_str(), b.used, b.remaining))
        .collect();
    assert_eq!(
        shown,
        [(API_KEY, 1, limit - 1), (WEB_KEY, 1, limit - 1)],
        "{budgets:#?}"
    );
    for inc in store.recent_incidents(10).await.unwrap() {
        let attempts = store.incident_attempts(inc.id).await.unwrap();
        assert_eq!(attempts.len(), 1, "{attempts:#?}");
        assert_eq!(attempts[0].instance, inc.instance);
        assert_eq!(
            attempts[0].outcome,
            Some(medic::store::AttemptOutcome::Succeeded),
            "{attempts:#?}"
        );
    }
}
