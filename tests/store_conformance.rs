//! One conformance suite for every store backend: in-memory, SQLite, and
//! PostgreSQL (a private server started by the test on an ephemeral port).

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use medic::store::*;
use serde_json::json;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + Duration::seconds(s)
}

fn new_incident(scenario: &str, instance: &str, at: i64) -> NewIncident {
    NewIncident {
        scenario: scenario.into(),
        instance: instance.into(),
        severity: "high".into(),
        summary: "cache down".into(),
        at: t(at),
    }
}

fn attempt(incident: IncidentId, key: &str, at: i64) -> NewAttempt {
    NewAttempt {
        incident_id: incident,
        scenario: "redis".into(),
        instance: String::new(),
        step: "restart".into(),
        step_index: 0,
        action: "exec".into(),
        key: key.into(),
        started_at: t(at),
        inputs: json!({ "args": ["true"] }),
    }
}

/// The behaviour every backend must share.
async fn conformance(store: Arc<dyn Store>) {
    // One open incident per (scenario, instance), even under concurrency.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.open_incident(new_incident("redis", "", 0)).await.unwrap()
        }));
    }
    let mut created = 0;
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let (inc, new) = task.await.unwrap();
        created += usize::from(new);
        ids.insert(inc.id);
    }
    assert_eq!((created, ids.len()), (1, 1), "exactly one incident opened");
    let id = *ids.iter().next().unwrap();
    let (other, new) = store
        .open_incident(new_incident("redis", "{pod=\"a\"}", 1))
        .await
        .unwrap();
    assert!(
        new && other.id != id,
        "another instance is another incident"
    );

    // Timeline order and updated_at.
    for i in 0..5 {
        store
            .append(
                id,
                TimelineEntry::new(t(10 + i), "note", format!("entry {i}"))
                    .with_data(json!({ "i": i })),
            )
            .await
            .unwrap();
    }
    let tl = store.timeline(id).await.unwrap();
    assert_eq!(
        tl.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        ["entry 0", "entry 1", "entry 2", "entry 3", "entry 4"]
    );
    assert_eq!(tl[3].data, json!({ "i": 3 }));
    assert_eq!(tl[0].at, t(10));

    // State changes; resolution is final.
    store
        .set_state(id, IncidentState::Escalated, t(20))
        .await
        .unwrap();
    assert_eq!(
        store.incident(id).await.unwrap().unwrap().state,
        IncidentState::Escalated
    );
    store
        .set_state(id, IncidentState::Resolved, t(30))
        .await
        .unwrap();
    let inc = store.incident(id).await.unwrap().unwrap();
    assert_eq!(
        (inc.state, inc.resolved_at),
        (IncidentState::Resolved, Some(t(30)))
    );
    store
        .set_state(id, IncidentState::Resolved, t(40))
        .await
        .unwrap();
    assert_eq!(
        store.incident(id).await.unwrap().unwrap().resolved_at,
        Some(t(30)),
        "resolving twice keeps the first time"
    );
    assert!(matches!(
        store.set_state(id, IncidentState::Open, t(41)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        store
            .open_incidents()
            .await
            .unwrap()
            .iter()
            .all(|i| i.id != id)
    );

    // A resolved incident does not block a new one for the same key.
    let (again, new) = store
        .open_incident(new_incident("redis", "", 50))
        .await
        .unwrap();
    assert!(new && again.id != id);

    // Ledger: begin/finish, keys used once, windows.
    let a1 = store
        .begin_attempt(attempt(again.id, "k1", 100))
        .await
        .unwrap();
    let a2 = store
        .begin_attempt(attempt(again.id, "k2", 200))
        .await
        .unwrap();
    assert!(matches!(
        store.begin_attempt(attempt(again.id, "k1", 300)).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .finish_attempt(a1, AttemptOutcome::Failed, "exit status 1", t(101))
        .await
        .unwrap();
    store
        .finish_attempt(a1, AttemptOutcome::Failed, "exit status 1", t(102))
        .await
        .unwrap();
    assert!(matches!(
        store
            .finish_attempt(a1, AttemptOutcome::Succeeded, "x", t(103))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let window = store
        .attempts_since("redis", "restart", "", t(150))
        .await
        .unwrap();
    assert_eq!(window.iter().map(|a| a.id).collect::<Vec<_>>(), [a2]);
    let all = store.incident_attempts(again.id).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].outcome, all[0].ended_at, all[0].reason.as_str()),
        (Some(AttemptOutcome::Failed), Some(t(101)), "exit status 1")
    );
    assert_eq!((all[1].outcome, all[1].ended_at), (None, None), "in flight");
    assert_eq!(all[0].inputs, json!({ "args": ["true"] }));

    // Unknown ids.
    assert!(matches!(
        store.set_state(999_999, IncidentState::Open, t(0)).await,
        Err(StoreError::NotFound(999_999))
    ));
    assert!(matches!(
        store
            .append(999_999, TimelineEntry::new(t(0), "x", "y"))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.timeline(999_999).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.begin_attempt(attempt(999_999, "k9", 0)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .finish_attempt(999_999, AttemptOutcome::Failed, "", t(0))
            .await,
        Err(StoreError::AttemptNotFound(_))
    ));
    assert!(store.incident(999_999).await.unwrap().is_none());

    // Recent first.
    let recent = store.recent_incidents(2).await.unwrap();
    assert_eq!(
        recent.iter().map(|i| i.id).collect::<Vec<_>>(),
        [again.id, other.id]
    );
    job_runs(&*store).await;
    alerts(store.as_ref()).await;
    store.flush().await.unwrap();
}
fn alert(name: &str, status: AlertStatus, starts: i64) -> AlertRecord {
    AlertRecord {
        fingerprint: format!("fp-{name}"),
        starts_at: t(starts),
        status,
        labels: [("alertname".to_string(), name.to_string())].into(),
        annotations: [("summary".to_string(), format!("{name} is on fire"))].into(),
        ends_at: (status == AlertStatus::Resolved).then(|| t(starts + 100)),
        generator_url: "http://prometheus:9090/graph".into(),
        received_at: t(starts + 1),
    }
}

/// Alertmanager intake: idempotent, resolved ends a firing, never revived.
async fn alerts(store: &dyn Store) {
    use AlertStatus::*;
    let names = |v: Vec<AlertRecord>| -> Vec<(String, DateTime<Utc>)> {
        v.into_iter()
            .map(|a| (a.labels["alertname"].clone(), a.starts_at))
            .collect()
    };
    assert!(store.firing_alerts().await.unwrap().is_empty());
    let fire = alert("Fire", Firing, 0);
    // An HA pair delivers the same group twice; one payload may repeat too.
    store
        .record_alerts(&[fire.clone(), alert("Smoke", Firing, 5)])
        .await
        .unwrap();
    store
        .record_alerts(&[fire.clone(), fire.clone()])
        .await
        .unwrap();
    let firing = store.firing_alerts().await.unwrap();
    assert_eq!(firing.len(), 2);
    assert_eq!(firing[0], fire, "round-trips exactly");
    // Resolved ends it; a late duplicate firing does not revive it.
    store
        .record_alerts(&[alert("Fire", Resolved, 0)])
        .await
        .unwrap();
    store
        .record_alerts(std::slice::from_ref(&fire))
        .await
        .unwrap();
    assert_eq!(
        names(store.firing_alerts().await.unwrap()),
        [("Smoke".to_string(), t(5))]
    );
    // It fires again later: a new firing (new startsAt).
    store
        .record_alerts(&[alert("Fire", Firing, 50)])
        .await
        .unwrap();
    assert_eq!(store.firing_alerts().await.unwrap().len(), 2);
    // A resolved for a later firing ends earlier ones too, and a firing
    // older than a recorded resolution is recorded resolved, whatever the
    // order inside one delivery.
    store
        .record_alerts(&[alert("Smoke", Resolved, 60), alert("Smoke", Firing, 30)])
        .await
        .unwrap();
    store
        .record_alerts(&[alert("Fire", Firing, -10)])
        .await
        .unwrap();
    assert_eq!(
        names(store.firing_alerts().await.unwrap()),
        [("Fire".to_string(), t(50))]
    );
    // Nothing, and a resolved alert medic never saw firing, are fine.
    store.record_alerts(&[]).await.unwrap();
    store
        .record_alerts(&[alert("Ghost", Resolved, 0)])
        .await
        .unwrap();
    assert_eq!(store.firing_alerts().await.unwrap().len(), 1);
}

/// Scheduled jobs' runs: begun, timed, finished once, newest first.
async fn job_runs(store: &dyn Store) {
    let new = |job: &str, at: i64| NewJobRun {
        job: job.into(),
        kind: "postgres.backup".into(),
        scheduled_for: t(at),
        started_at: t(at + 1),
    };
    let a = store.begin_job_run(new("nightly", 100)).await.unwrap();
    let b = store.begin_job_run(new("nightly", 200)).await.unwrap();
    let other = store.begin_job_run(new("weekly", 150)).await.unwrap();
    for i in 0..3 {
        store
            .append_job_event(
                a,
                TimelineEntry::new(t(101 + i), "step", format!("e{i}")).with_data(json!({"i": i})),
            )
            .await
            .unwrap();
    }
    let events = store.job_events(a).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        ["e0", "e1", "e2"]
    );
    assert_eq!(events[2].data, json!({"i": 2}));
    assert!(store.job_events(b).await.unwrap().is_empty());

    let runs = store.job_runs("nightly", 10).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [b, a]);
    assert_eq!((runs[0].outcome, runs[0].ended_at), (None, None));
    assert_eq!(runs[0].scheduled_for, t(200));

    let data = json!({"file": "x.dump", "size": 12, "sha256": "ab"});
    store
        .finish_job_run(a, JobOutcome::Succeeded, "ok", data.clone(), t(120))
        .await
        .unwrap();
    // Again with the same outcome: a no-op; another outcome: refused.
    store
        .finish_job_run(a, JobOutcome::Succeeded, "ok", data.clone(), t(121))
        .await
        .unwrap();
    assert!(matches!(
        store
            .finish_job_run(a, JobOutcome::Failed, "no", json!(null), t(122))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let run = &store.job_runs("nightly", 10).await.unwrap()[1];
    assert_eq!(run.outcome, Some(JobOutcome::Succeeded));
    assert_eq!(run.ended_at, Some(t(120)));
    assert_eq!((run.summary.as_str(), &run.data), ("ok", &data));
    assert_eq!(store.job_runs("nightly", 1).await.unwrap().len(), 1);
    assert_eq!(store.job_runs("weekly", 10).await.unwrap()[0].id, other);
    assert!(store.job_runs("none", 10).await.unwrap().is_empty());

    assert!(matches!(
        store
            .append_job_event(999_999, TimelineEntry::new(t(0), "x", "y"))
            .await,
        Err(StoreError::JobRunNotFound(_))
    ));
    assert!(matches!(
        store.job_events(999_999).await,
        Err(StoreError::JobRunNotFound(_))
    ));
    assert!(matches!(
        store
            .finish_job_run(999_999, JobOutcome::Failed, "", json!(null), t(0))
            .await,
        Err(StoreError::JobRunNotFound(_))
    ));
}

/// Leadership terms and fencing: a deposed term's writes are refused, the
/// store untouched; terms only grow, even when claimed concurrently.
async fn fencing(store: Arc<dyn Store>) {
    assert_eq!(store.current_term().await.unwrap(), None);
    let one = store.claim_term("a", t(0)).await.unwrap();
    let two = store.claim_term("b", t(1)).await.unwrap();
    assert_eq!((one.term, two.term), (1, 2));
    assert_eq!(store.current_term().await.unwrap(), Some(two.clone()));

    let old = Fenced::new(store.clone(), 1);
    let new = Fenced::new(store.clone(), 2);
    let before = store.open_incidents().await.unwrap().len();
    assert!(matches!(
        old.open_incident(new_incident("fenced", "", 2)).await,
        Err(StoreError::Fenced { term: 1, newer: 2 })
    ));
    assert_eq!(store.open_incidents().await.unwrap().len(), before);

    // The current term writes everything.
    let (inc, created) = new
        .open_incident(new_incident("fenced", "", 3))
        .await
        .unwrap();
    assert!(created);
    new.set_state(inc.id, IncidentState::Remediating, t(4))
        .await
        .unwrap();
    new.append(inc.id, TimelineEntry::new(t(4), "note", "leader 2"))
        .await
        .unwrap();
    let mut a = attempt(inc.id, "fence:0:1", 5);
    a.scenario = "fenced".into();
    let first = new.begin_attempt(a.clone()).await.unwrap();

    // A third term deposes the second: none of its writes land.
    let three = store.claim_term("c", t(6)).await.unwrap();
    assert_eq!(three.term, 3);
    let fenced =
        |r: Result<(), StoreError>| matches!(r, Err(StoreError::Fenced { term: 2, newer: 3 }));
    assert!(fenced(
        new.finish_attempt(first, AttemptOutcome::Succeeded, "ok", t(7))
            .await
    ));
    assert!(fenced(
        new.set_state(inc.id, IncidentState::Resolved, t(7)).await
    ));
    assert!(fenced(
        new.append(inc.id, TimelineEntry::new(t(7), "note", "stale"))
            .await
    ));
    a.key = "fence:0:2".into();
    assert!(matches!(
        new.begin_attempt(a).await,
        Err(StoreError::Fenced { term: 2, newer: 3 })
    ));
    assert_eq!(new.refused(), 4);
    let attempts = store.incident_attempts(inc.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, None, "still in flight");
    let inc2 = store.incident(inc.id).await.unwrap().unwrap();
    assert_eq!(inc2.state, IncidentState::Remediating);
    let timeline = store.timeline(inc.id).await.unwrap();
    assert_eq!(timeline.len(), 1);
    // Reads through a deposed term still work.
    assert_eq!(new.incident_attempts(inc.id).await.unwrap().len(), 1);

    // The new term finishes what the old one left in flight.
    Fenced::new(store.clone(), 3)
        .finish_attempt(first, AttemptOutcome::Abandoned, "leader changed", t(8))
        .await
        .unwrap();

    // Concurrent claims get distinct, growing terms.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.claim_term(&format!("r{i}"), t(9)).await.unwrap().term
        }));
    }
    let mut terms = Vec::new();
    for task in tasks {
        terms.push(task.await.unwrap());
    }
    terms.sort();
    assert_eq!(terms, (4..12).collect::<Vec<u64>>());
    assert_eq!(store.current_term().await.unwrap().unwrap().term, 11);
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn memory_store_fences() {
    fencing(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn sqlite_store_fences() {
    let dir = tempfile::tempdir().unwrap();
    fencing(Arc::new(
        SqliteStore::open(&dir.path().join("s.db")).await.unwrap(),
    ))
    .await;
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Arc::new(
        SqliteStore::open(&dir.path().join("s.db")).await.unwrap(),
    ))
    .await;
}

#[tokio::test]
async fn postgres_store_conforms() {
    let pg = common::pg::Pg::primary();
    let target = medic::config::PostgresTarget {
        host: "127.0.0.1".into(),
        port: pg.primary.port,
        user: "postgres".into(),
        password: None,
        dbname: "postgres".into(),
    };
    let store = PostgresStore::open(&target).await.unwrap();
    conformance(Arc::new(store)).await;
    // Re-opening migrates nothing and keeps the data.
    let again = PostgresStore::open(&target).await.unwrap();
    assert_eq!(again.recent_incidents(10).await.unwrap().len(), 3);
    fencing(Arc::new(again)).await;
}
