//! One conformance suite for every store backend: in-memory, SQLite, and
//! PostgreSQL (a private server per test, started on an ephemeral port).
//! Each behaviour is one `async fn` over `Arc<dyn Store>`; the macros at the
//! end make it one `#[tokio::test]` per backend (`sqlite::resolving_is_final`),
//! so a failure names the backend and what broke.

mod common;
mod store_fixtures;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use medic::store::*;
use serde_json::json;
use store_fixtures::{at_ms, attempt_at, incident_at};

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

// ---------------------------------------------------------------------------
// Incidents and timelines.

/// One open incident per (scenario, instance), even under concurrency.
async fn concurrent_opens_create_one_incident(store: Arc<dyn Store>) {
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
}

async fn one_open_incident_per_scenario_and_instance(store: Arc<dyn Store>) {
    let (first, created) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(first.state, IncidentState::Open);
    let (second, created) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(5)))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(second, first, "the existing incident, unchanged");
    // Still one per key even once it is being remediated.
    store
        .set_state(first.id, IncidentState::Escalated, at_ms(6))
        .await
        .unwrap();
    let (third, created) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(7)))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(third.id, first.id);
    assert_eq!(third.state, IncidentState::Escalated);
    // Another instance or scenario is another incident.
    let (other, created) = store
        .open_incident(incident_at("redis-cache-failure", "cache-2", at_ms(8)))
        .await
        .unwrap();
    assert!(created);
    assert_ne!(other.id, first.id);
    let (other, created) = store
        .open_incident(incident_at("redis-memory", "cache", at_ms(9)))
        .await
        .unwrap();
    assert!(created);
    assert_ne!(other.id, first.id);
    assert_eq!(store.open_incidents().await.unwrap().len(), 3);
}

/// Timeline entries come back in order, with their data and times.
async fn timeline_keeps_order_and_data(store: Arc<dyn Store>) {
    let (inc, _) = store
        .open_incident(new_incident("redis", "", 0))
        .await
        .unwrap();
    let id = inc.id;
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
}

/// A long timeline read by kind (the newest few of them) and counted, as
/// the pager and the engine read it; the full history stays.
async fn timeline_is_read_by_kind_and_counted(store: Arc<dyn Store>) {
    let (inc, _) = store
        .open_incident(new_incident("redis", "", 0))
        .await
        .unwrap();
    let id = inc.id;
    for i in 0..300 {
        let kind = match i % 100 {
            7 => "decision",
            50 => "page",
            _ => "symptom",
        };
        store
            .append(
                id,
                TimelineEntry::new(t(10 + i), kind, format!("{kind} {i}"))
                    .with_data(json!({ "i": i })),
            )
            .await
            .unwrap();
    }
    let msgs = |v: Vec<TimelineEntry>| v.into_iter().map(|e| e.message).collect::<Vec<_>>();
    assert_eq!(
        msgs(
            store
                .timeline_kinds(id, &["decision", "page"], None)
                .await
                .unwrap()
        ),
        [
            "decision 7",
            "page 50",
            "decision 107",
            "page 150",
            "decision 207",
            "page 250"
        ]
    );
    let last = store
        .timeline_kinds(id, &["decision", "page"], Some(3))
        .await
        .unwrap();
    assert_eq!(last[0].data, json!({ "i": 150 }));
    assert_eq!(msgs(last), ["page 150", "decision 207", "page 250"]);
    assert_eq!(
        msgs(
            store
                .timeline_kinds(id, &["symptom"], Some(2))
                .await
                .unwrap()
        ),
        ["symptom 298", "symptom 299"]
    );
    assert!(
        store
            .timeline_kinds(id, &["nothing"], None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .timeline_kinds(id, &[], Some(5))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.timeline_len(id).await.unwrap(), 300);
    assert_eq!(store.timeline(id).await.unwrap().len(), 300);
    // Pages by position: 0 is the first entry written.
    let page = store.timeline_range(id, 0, 2).await.unwrap();
    assert_eq!(msgs(page), ["symptom 0", "symptom 1"]);
    let page = store.timeline_range(id, 106, 3).await.unwrap();
    assert_eq!(msgs(page), ["symptom 106", "decision 107", "symptom 108"]);
    assert_eq!(
        msgs(store.timeline_range(id, 298, 10).await.unwrap()),
        ["symptom 298", "symptom 299"]
    );
    assert!(store.timeline_range(id, 300, 10).await.unwrap().is_empty());
    assert!(store.timeline_range(id, 5, 0).await.unwrap().is_empty());
    // An incident with no entries yet counts 0; an unknown one is not found.
    let (other, _) = store
        .open_incident(new_incident("redis", "other", 0))
        .await
        .unwrap();
    assert_eq!(store.timeline_len(other.id).await.unwrap(), 0);
    assert!(matches!(
        store.timeline_len(other.id + 1000).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.timeline_kinds(other.id + 1000, &["page"], None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        store
            .timeline_range(other.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.timeline_range(other.id + 1000, 0, 10).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn timeline_keeps_write_order(store: Arc<dyn Store>) {
    let (a, _) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
        .await
        .unwrap();
    let (b, _) = store
        .open_incident(incident_at("redis-memory", "cache", at_ms(0)))
        .await
        .unwrap();
    assert_eq!(store.timeline(a.id).await.unwrap(), vec![]);
    // Timestamps out of order on purpose: the order written wins.
    let mut written = Vec::new();
    for (i, ms) in [50, 10, 30, 30, 20].into_iter().enumerate() {
        let entry = TimelineEntry::new(at_ms(ms), "note", format!("entry {i}"))
            .with_data(json!({"i": i, "nested": {"ok": true}}));
        store.append(a.id, entry.clone()).await.unwrap();
        store
            .append(
                b.id,
                TimelineEntry::new(at_ms(ms), "note", "other incident"),
            )
            .await
            .unwrap();
        written.push(entry);
    }
    assert_eq!(store.timeline(a.id).await.unwrap(), written);
    assert_eq!(store.timeline(b.id).await.unwrap().len(), 5);
}

/// updated_at follows the latest timeline entry and never goes back (the
/// memory store does not track it).
async fn timeline_entry_moves_updated_at_forward(store: Arc<dyn Store>) {
    let (a, _) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
        .await
        .unwrap();
    for (i, ms) in [50, 10, 30, 30, 20].into_iter().enumerate() {
        let entry = TimelineEntry::new(at_ms(ms), "note", format!("entry {i}"));
        store.append(a.id, entry).await.unwrap();
    }
    // updated_at follows the latest entry and never goes back.
    assert_eq!(
        store.incident(a.id).await.unwrap().unwrap().updated_at,
        at_ms(50)
    );
}

/// State changes; resolution is final; a resolved incident does not block a new one for its key.
async fn resolution_is_final_and_frees_the_key(store: Arc<dyn Store>) {
    let (inc, _) = store
        .open_incident(new_incident("redis", "", 0))
        .await
        .unwrap();
    let id = inc.id;
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
}

async fn resolved_incident_does_not_block_a_new_one(store: Arc<dyn Store>) {
    let (first, _) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
        .await
        .unwrap();
    store
        .set_state(first.id, IncidentState::Resolved, at_ms(100))
        .await
        .unwrap();
    let resolved = store.incident(first.id).await.unwrap().unwrap();
    assert_eq!(resolved.state, IncidentState::Resolved);
    assert_eq!(resolved.resolved_at, Some(at_ms(100)));
    assert_eq!(resolved.updated_at, at_ms(100));
    assert!(store.open_incidents().await.unwrap().is_empty());

    let (second, created) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(200)))
        .await
        .unwrap();
    assert!(created);
    assert_ne!(second.id, first.id);
    assert_eq!(store.open_incidents().await.unwrap(), vec![second.clone()]);
    let recent = store.recent_incidents(10).await.unwrap();
    assert_eq!(
        recent.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![second.id, first.id],
        "newest first"
    );
    assert_eq!(store.recent_incidents(1).await.unwrap()[0].id, second.id);
}

async fn resolving_is_final(store: Arc<dyn Store>) {
    let (incident, _) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
        .await
        .unwrap();
    store
        .set_state(incident.id, IncidentState::Resolved, at_ms(10))
        .await
        .unwrap();
    // A late Slack "acknowledge" click must not reopen it.
    let err = store
        .set_state(incident.id, IncidentState::Acknowledged, at_ms(20))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    // Resolving twice is harmless and keeps the first time.
    store
        .set_state(incident.id, IncidentState::Resolved, at_ms(30))
        .await
        .unwrap();
    let after = store.incident(incident.id).await.unwrap().unwrap();
    assert_eq!(after.state, IncidentState::Resolved);
    assert_eq!(after.resolved_at, Some(at_ms(10)));
}

async fn state_changes_are_stored(store: Arc<dyn Store>) {
    let (incident, _) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
        .await
        .unwrap();
    for (i, state) in [
        IncidentState::Remediating,
        IncidentState::Escalated,
        IncidentState::Acknowledged,
    ]
    .into_iter()
    .enumerate()
    {
        store
            .set_state(incident.id, state, at_ms(i as i64 + 1))
            .await
            .unwrap();
        let now = store.incident(incident.id).await.unwrap().unwrap();
        assert_eq!(now.state, state);
        assert_eq!(now.updated_at, at_ms(i as i64 + 1));
        assert_eq!(now.resolved_at, None);
        assert_eq!(now.opened_at, at_ms(0));
    }
}

// ---------------------------------------------------------------------------
// Unknown ids.

async fn unknown_ids_are_not_found(store: Arc<dyn Store>) {
    let err = store
        .set_state(42, IncidentState::Acknowledged, at_ms(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(42)), "{err}");
    let err = store
        .append(42, TimelineEntry::new(at_ms(0), "note", "hello"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(42)), "{err}");
    assert!(matches!(
        store.timeline(42).await,
        Err(StoreError::NotFound(42))
    ));
    assert!(matches!(
        store
            .begin_attempt(attempt_at(42, "restart", "42:0:1", at_ms(0)))
            .await,
        Err(StoreError::NotFound(42))
    ));
    assert!(matches!(
        store
            .finish_attempt(7, AttemptOutcome::Failed, "exit 1", at_ms(0))
            .await,
        Err(StoreError::AttemptNotFound(7))
    ));
    assert_eq!(store.incident(42).await.unwrap(), None);
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
}

/// The attempts of an unknown incident are NotFound (the memory store
/// returns none instead).
async fn attempts_of_unknown_incident_are_not_found(store: Arc<dyn Store>) {
    assert!(matches!(
        store.incident_attempts(42).await,
        Err(StoreError::NotFound(42))
    ));
}

/// The newest incidents first.
async fn recent_incidents_are_newest_first(store: Arc<dyn Store>) {
    let (first, _) = store
        .open_incident(new_incident("redis", "", 0))
        .await
        .unwrap();
    let (other, _) = store
        .open_incident(new_incident("redis", "{pod=\"a\"}", 1))
        .await
        .unwrap();
    store
        .set_state(first.id, IncidentState::Resolved, t(30))
        .await
        .unwrap();
    let (again, _) = store
        .open_incident(new_incident("redis", "", 50))
        .await
        .unwrap();
    // Recent first.
    let recent = store.recent_incidents(2).await.unwrap();
    assert_eq!(
        recent.iter().map(|i| i.id).collect::<Vec<_>>(),
        [again.id, other.id]
    );
}

// ---------------------------------------------------------------------------
// The ledger.

/// Ledger: begin/finish, keys used once, windows.
async fn ledger_keys_are_used_once_and_windows_filter(store: Arc<dyn Store>) {
    let (again, _) = store
        .open_incident(new_incident("redis", "", 50))
        .await
        .unwrap();
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
}

async fn ledger_begin_and_finish(store: Arc<dyn Store>) {
    let (incident, _) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
        .await
        .unwrap();
    let mut new = attempt_at(incident.id, "restart", "1:0:1", at_ms(10));
    new.step_index = 3;
    let id = store.begin_attempt(new.clone()).await.unwrap();
    let inflight = &store.incident_attempts(incident.id).await.unwrap()[0];
    assert_eq!(inflight.id, id);
    assert_eq!(inflight.incident_id, incident.id);
    assert_eq!(inflight.step, "restart");
    assert_eq!(inflight.step_index, 3);
    assert_eq!(inflight.action, "exec");
    assert_eq!(inflight.key, "1:0:1");
    assert_eq!(inflight.started_at, at_ms(10));
    assert_eq!(inflight.inputs, new.inputs);
    assert_eq!((inflight.ended_at, inflight.outcome), (None, None));
    assert_eq!(inflight.reason, "");

    store
        .finish_attempt(
            id,
            AttemptOutcome::TimedOut,
            "no answer within 30s",
            at_ms(40),
        )
        .await
        .unwrap();
    let done = &store.incident_attempts(incident.id).await.unwrap()[0];
    assert_eq!(done.ended_at, Some(at_ms(40)));
    assert_eq!(done.outcome, Some(AttemptOutcome::TimedOut));
    assert_eq!(done.reason, "no answer within 30s");

    // A retried finish (lost reply) is harmless; a different ending is not.
    store
        .finish_attempt(id, AttemptOutcome::TimedOut, "again", at_ms(50))
        .await
        .unwrap();
    let err = store
        .finish_attempt(id, AttemptOutcome::Succeeded, "", at_ms(60))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let still = &store.incident_attempts(incident.id).await.unwrap()[0];
    assert_eq!(still.outcome, Some(AttemptOutcome::TimedOut));
    assert_eq!(still.ended_at, Some(at_ms(40)));
    assert_eq!(still.reason, "no answer within 30s");
}

async fn attempt_keys_are_used_once_and_errors_do_not_echo_them(store: Arc<dyn Store>) {
    let (incident, _) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
        .await
        .unwrap();
    let key = "1:0:1-s3cr3t-looking-value";
    store
        .begin_attempt(attempt_at(incident.id, "restart", key, at_ms(1)))
        .await
        .unwrap();
    let err = store
        .begin_attempt(attempt_at(incident.id, "restart", key, at_ms(2)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    assert_eq!(store.incident_attempts(incident.id).await.unwrap().len(), 1);
}

async fn attempts_since_filters_and_orders_the_window(store: Arc<dyn Store>) {
    let (first, _) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
        .await
        .unwrap();
    store
        .set_state(first.id, IncidentState::Resolved, at_ms(1))
        .await
        .unwrap();
    let (second, _) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(2)))
        .await
        .unwrap();
    // Started out of order, and across two incidents of the same key.
    let mut keys = 0;
    let mut begin = |incident: i64, step: &str, ms: i64| {
        keys += 1;
        let mut a = attempt_at(incident, step, &format!("k{keys}"), at_ms(ms));
        a.step_index = keys;
        a
    };
    let mut expected = Vec::new();
    for (incident, ms) in [(second.id, 4000), (first.id, 2000), (second.id, 3000)] {
        let a = begin(incident, "restart", ms);
        expected.push((ms, store.begin_attempt(a).await.unwrap()));
    }
    // Outside the window, or another step / instance / scenario.
    store
        .begin_attempt(begin(first.id, "restart", 1999))
        .await
        .unwrap();
    store
        .begin_attempt(begin(second.id, "flush", 3500))
        .await
        .unwrap();
    let mut other_instance = begin(second.id, "restart", 3500);
    other_instance.instance = "cache-2".into();
    store.begin_attempt(other_instance).await.unwrap();
    let mut other_scenario = begin(second.id, "restart", 3500);
    other_scenario.scenario = "redis-memory".into();
    store.begin_attempt(other_scenario).await.unwrap();

    expected.sort();
    let got = store
        .attempts_since("redis-cache-failure", "restart", "cache", at_ms(2000))
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|a| (a.started_at, a.id)).collect::<Vec<_>>(),
        expected
            .iter()
            .map(|&(ms, id)| (at_ms(ms), id))
            .collect::<Vec<_>>(),
        "the boundary is inclusive, oldest first"
    );
    let later = store
        .attempts_since("redis-cache-failure", "restart", "cache", at_ms(2001))
        .await
        .unwrap();
    assert_eq!(later.len(), 2);
    let none = store
        .attempts_since("redis-cache-failure", "restart", "cache", at_ms(4001))
        .await
        .unwrap();
    assert!(none.is_empty());
}
/// The scenario-wide limit and the blast radius over time read every step
/// and instance of one scenario within a window, and nothing else.
async fn scenario_attempts_span_steps_and_instances(store: Arc<dyn Store>) {
    let (inc, _) = store
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
        .await
        .unwrap();
    let mut want = Vec::new();
    for (i, (step, instance, scenario, ms)) in [
        ("restart", "a", "redis-cache-failure", 1000),
        ("flush", "b", "redis-cache-failure", 2000),
        ("restart", "", "redis-cache-failure", 3000),
        ("restart", "a", "redis-cache-failure", 999),
        ("restart", "a", "redis-memory", 2000),
    ]
    .into_iter()
    .enumerate()
    {
        let mut a = attempt_at(inc.id, step, &format!("s{i}"), at_ms(ms));
        a.instance = instance.into();
        a.scenario = scenario.into();
        let id = store.begin_attempt(a).await.unwrap();
        if scenario == "redis-cache-failure" && ms >= 1000 {
            want.push(id);
        }
    }
    let mut got: Vec<_> = store
        .scenario_attempts_since("redis-cache-failure", at_ms(1000))
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    got.sort_unstable();
    assert_eq!(got, want, "every step and instance, the boundary inclusive");
}

// ---------------------------------------------------------------------------
// Job runs, alerts, leadership, the outbox.

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
async fn alert_intake_is_idempotent_and_never_revives(store: Arc<dyn Store>) {
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
    // A resolution ends exactly its firing (same fingerprint and
    // startsAt): a forged far-future one ends nothing else, and a firing
    // is recorded firing whatever resolution came before it.
    store
        .record_alerts(&[
            alert("Fire", Resolved, 10_000_000),
            alert("Smoke", Resolved, 60),
            alert("Smoke", Firing, 30),
        ])
        .await
        .unwrap();
    store
        .record_alerts(&[alert("Fire", Firing, -10)])
        .await
        .unwrap();
    assert_eq!(
        names(store.firing_alerts().await.unwrap()),
        [
            ("Fire".to_string(), t(-10)),
            ("Smoke".to_string(), t(5)),
            ("Smoke".to_string(), t(30)),
            ("Fire".to_string(), t(50)),
        ]
    );
    // Resolved within one delivery, in either order: that firing ends.
    store
        .record_alerts(&[alert("Smoke", Resolved, 5), alert("Fire", Resolved, -10)])
        .await
        .unwrap();
    store
        .record_alerts(&[alert("Smoke", Firing, 30), alert("Smoke", Resolved, 30)])
        .await
        .unwrap();
    // Nothing, and a resolved alert medic never saw firing, are fine.
    store.record_alerts(&[]).await.unwrap();
    store
        .record_alerts(&[alert("Ghost", Resolved, 0)])
        .await
        .unwrap();
    assert_eq!(
        names(store.firing_alerts().await.unwrap()),
        [("Fire".to_string(), t(50))]
    );
}

/// An `alert` check's read: the firing alerts its matchers select.
async fn firing_alerts_matching_reads_what_matchers_select(store: Arc<dyn Store>) {
    use AlertStatus::*;
    let mut a = alert("Down", Firing, 0);
    a.labels.insert("instance".into(), "a".into());
    a.fingerprint = "fp-down-a".into();
    let mut b = alert("Down", Firing, 5);
    b.labels.insert("instance".into(), "b".into());
    b.fingerprint = "fp-down-b".into();
    store
        .record_alerts(&[a.clone(), b.clone(), alert("Other", Firing, 1)])
        .await
        .unwrap();
    let m = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let got = |v: Vec<AlertRecord>| v.into_iter().map(|a| a.fingerprint).collect::<Vec<_>>();
    let by_name = store
        .firing_alerts_matching(&m(&[("alertname", "Down")]))
        .await
        .unwrap();
    assert_eq!(got(by_name), ["fp-down-a", "fp-down-b"], "oldest first");
    let one = store
        .firing_alerts_matching(&m(&[("alertname", "Down"), ("instance", "b")]))
        .await
        .unwrap();
    assert_eq!(got(one), ["fp-down-b"]);
    let by_label = store
        .firing_alerts_matching(&m(&[("instance", "a")]))
        .await
        .unwrap();
    assert_eq!(got(by_label), ["fp-down-a"]);
    assert!(
        store
            .firing_alerts_matching(&m(&[("alertname", "Nope")]))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.firing_alert_count().await.unwrap(), 3);
    let mut resolved = a.clone();
    resolved.status = Resolved;
    store.record_alerts(&[resolved]).await.unwrap();
    let left = store
        .firing_alerts_matching(&m(&[("alertname", "Down")]))
        .await
        .unwrap();
    assert_eq!(got(left), ["fp-down-b"], "a resolved alert is not read");
    assert_eq!(store.firing_alert_count().await.unwrap(), 2);
}

/// The firing cap refuses a delivery whole; resolutions and repeats pass.
async fn firing_cap_refuses_a_delivery_whole(store: Arc<dyn Store>) {
    use AlertStatus::*;
    store
        .record_alerts_capped(&[alert("A", Firing, 0), alert("B", Firing, 0)], Some(2))
        .await
        .unwrap();
    let over = [
        alert("C", Firing, 0),
        alert("D", Firing, 0),
        alert("A", Resolved, 0),
    ];
    let err = store
        .record_alerts_capped(&over, Some(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TooManyFiring { firing: 3, max: 2 }),
        "{err}"
    );
    assert_eq!(store.firing_alert_count().await.unwrap(), 2, "none of it");
    // A repeat adds nothing, a resolution frees room: both pass at the cap.
    store
        .record_alerts_capped(&[alert("A", Firing, 0)], Some(2))
        .await
        .unwrap();
    store
        .record_alerts_capped(&[alert("A", Resolved, 0), alert("C", Firing, 0)], Some(2))
        .await
        .unwrap();
    let names: Vec<String> = store
        .firing_alerts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.labels["alertname"].clone())
        .collect();
    assert_eq!(names, ["B", "C"]);
}

/// Retention: resolved alerts go once old enough, firing ones never, and
/// at most `max` per call.
async fn resolved_alerts_are_pruned(store: Arc<dyn Store>) {
    use AlertStatus::*;
    // Resolved (received) at t(1), t(11), t(21); one still firing.
    store
        .record_alerts(&[
            alert("Old", Resolved, 0),
            alert("Older", Resolved, 10),
            alert("New", Resolved, 20),
            alert("Fire", Firing, -1000),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.prune_alerts(t(15), 1).await.unwrap(),
        1,
        "max per call"
    );
    assert_eq!(store.prune_alerts(t(15), 100).await.unwrap(), 1);
    assert_eq!(store.prune_alerts(t(15), 100).await.unwrap(), 0);
    assert_eq!(store.firing_alert_count().await.unwrap(), 1);
    let m = [("alertname".to_string(), "Fire".to_string())].into();
    assert_eq!(store.firing_alerts_matching(&m).await.unwrap().len(), 1);
    assert_eq!(store.prune_alerts(t(10_000), 100).await.unwrap(), 1);
    assert_eq!(store.firing_alert_count().await.unwrap(), 1, "firing stays");
}

/// Scheduled jobs' runs: begun, timed, finished once, newest first.
async fn job_runs_end_once_newest_first(store: Arc<dyn Store>) {
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

/// Leadership terms only grow, even when claimed concurrently.
async fn terms_only_grow_even_when_claimed_concurrently(store: Arc<dyn Store>) {
    assert_eq!(store.current_term().await.unwrap(), None);
    let one = store.claim_term("a", t(0)).await.unwrap();
    let two = store.claim_term("b", t(1)).await.unwrap();
    assert_eq!((one.term, two.term), (1, 2));
    assert_eq!(store.current_term().await.unwrap(), Some(two.clone()));
    let three = store.claim_term("c", t(6)).await.unwrap();
    assert_eq!(three.term, 3);
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

/// Fencing: a deposed term's writes are refused, the store untouched; reads
/// through it still work; the new term finishes what it left in flight.
async fn deposed_term_cannot_write(store: Arc<dyn Store>) {
    store.claim_term("a", t(0)).await.unwrap();
    store.claim_term("b", t(1)).await.unwrap();

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

    // A deposed term starts no job run either.
    assert!(matches!(
        Fenced::new(store.clone(), 2)
            .begin_job_run(NewJobRun {
                job: "nightly".into(),
                kind: "postgres.backup".into(),
                scheduled_for: t(9),
                started_at: t(9),
            })
            .await,
        Err(StoreError::Fenced { term: 2, newer: 3 })
    ));
    assert!(store.job_runs("nightly", 10).await.unwrap().is_empty());
}

fn entry(incident: IncidentId, key: &str, notifier: &str, due: i64) -> NewOutbox {
    NewOutbox {
        incident_id: incident,
        key: key.into(),
        notifier: notifier.into(),
        kind: "page".into(),
        due_at: t(due),
        payload: json!({ "level": 1 }),
    }
}

fn mark(state: OutboxState, attempts: u32, due: i64, detail: &str) -> OutboxMark {
    OutboxMark {
        state,
        attempts,
        due_at: t(due),
        detail: detail.into(),
        at: t(due),
    }
}

/// The paging outbox: idempotent enqueue by key, pending by due time,
/// marks that end once.
async fn outbox_enqueues_once_and_marks_end_once(store: Arc<dyn Store>) {
    let (inc, _) = store
        .open_incident(new_incident("redis", "", 0))
        .await
        .unwrap();
    let id = inc.id;
    let (late, created) = store
        .outbox_enqueue(entry(id, "o:late", "slack", 100))
        .await
        .unwrap();
    assert!(created && late.state == OutboxState::Pending && late.attempts == 0);
    let (early, _) = store
        .outbox_enqueue(entry(id, "o:early", "pd", 50))
        .await
        .unwrap();
    // The same key again is the stored entry, not a second one.
    let (same, created) = store
        .outbox_enqueue(entry(id, "o:late", "other", 1))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(
        (same.id, same.notifier.as_str(), same.due_at),
        (late.id, "slack", t(100))
    );
    assert!(matches!(
        store.outbox_enqueue(entry(999_999, "o:x", "pd", 0)).await,
        Err(StoreError::NotFound(_))
    ));
    let pending = store.outbox_pending().await.unwrap();
    let keys: Vec<&str> = pending.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["o:early", "o:late"], "by due time");
    assert_eq!(pending[0].payload, json!({ "level": 1 }));

    // A retry: still pending, later, one attempt used.
    store
        .outbox_mark(early.id, mark(OutboxState::Pending, 1, 200, "HTTP 503"))
        .await
        .unwrap();
    let keys: Vec<String> = store
        .outbox_pending()
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}:{}:{}", e.key, e.attempts, e.detail))
        .collect();
    assert_eq!(keys, ["o:late:0:", "o:early:1:HTTP 503"]);
    // Sent once; again with the same state is a no-op; another is a conflict.
    store
        .outbox_mark(early.id, mark(OutboxState::Sent, 2, 201, "ok"))
        .await
        .unwrap();
    store
        .outbox_mark(early.id, mark(OutboxState::Sent, 3, 202, "again"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .outbox_mark(early.id, mark(OutboxState::Failed, 3, 202, "x"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    store
        .outbox_mark(
            late.id,
            mark(OutboxState::Cancelled, 0, 100, "acknowledged"),
        )
        .await
        .unwrap();
    assert!(store.outbox_pending().await.unwrap().is_empty());
    let all = store.outbox_of(id).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].key, "o:late");
    assert_eq!(all[0].state, OutboxState::Cancelled);
    assert_eq!(all[1].state, OutboxState::Sent);
    assert_eq!((all[1].attempts, all[1].detail.as_str()), (2, "ok"));
    assert_eq!(all[1].done_at, Some(t(201)));
}

/// Page references: one per notifier, replaced; unknown incidents refused.
async fn page_refs_one_per_notifier(store: Arc<dyn Store>) {
    let (inc, _) = store
        .open_incident(new_incident("redis", "", 0))
        .await
        .unwrap();
    let id = inc.id;
    // Page references: one per notifier, replaced.
    assert!(store.page_refs(id).await.unwrap().is_empty());
    store
        .set_page_ref(id, "slack", json!({ "ts": "1.1" }))
        .await
        .unwrap();
    store
        .set_page_ref(id, "slack", json!({ "ts": "1.2", "channel": "C1" }))
        .await
        .unwrap();
    let refs = store.page_refs(id).await.unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs["slack"], json!({ "ts": "1.2", "channel": "C1" }));
    assert!(matches!(
        store.set_page_ref(999_999, "slack", json!({})).await,
        Err(StoreError::NotFound(_))
    ));
}

/// A key is claimed once while it is kept, even when claimed concurrently;
/// once its time has passed it is forgotten (the Slack replay cache).
async fn claims_are_first_once_and_expire(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.claim_once("v0=abc", t(0), t(600)).await.unwrap()
        }));
    }
    let mut firsts = 0;
    for task in tasks {
        firsts += usize::from(task.await.unwrap());
    }
    assert_eq!(firsts, 1, "exactly one claim is first");
    assert!(!store.claim_once("v0=abc", t(599), t(1200)).await.unwrap());
    assert!(store.claim_once("v0=other", t(1), t(600)).await.unwrap());
    // Kept until t(600): at t(601) it is forgotten, and the late claim
    // starts a new keep.
    assert!(store.claim_once("v0=abc", t(601), t(1200)).await.unwrap());
    assert!(!store.claim_once("v0=abc", t(602), t(1200)).await.unwrap());
}

/// An incident's cause is stored, read back on every incident read,
/// unlinked with `None`; an incident is never its own cause, an unknown
/// one is not found, and a resolved incident keeps its link.
async fn incident_cause_links_are_stored(store: Arc<dyn Store>) {
    let (db, _) = store
        .open_incident(new_incident("database-failure", "", 0))
        .await
        .unwrap();
    let (app, _) = store
        .open_incident(new_incident("application-service-failure", "", 1))
        .await
        .unwrap();
    assert_eq!(app.cause, None, "a new incident has no cause");
    store.set_cause(app.id, Some(db.id), t(2)).await.unwrap();
    let read = store.incident(app.id).await.unwrap().unwrap();
    assert_eq!(read.cause, Some(db.id));
    let open = store.open_incidents().await.unwrap();
    assert_eq!(
        open.iter().find(|i| i.id == app.id).unwrap().cause,
        Some(db.id),
        "open_incidents carries the cause"
    );
    let recent = store.recent_incidents(10).await.unwrap();
    assert_eq!(
        recent.iter().find(|i| i.id == app.id).unwrap().cause,
        Some(db.id)
    );
    assert!(matches!(
        store.set_cause(app.id, Some(app.id), t(3)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.set_cause(app.id, Some(9999), t(3)).await,
        Err(StoreError::NotFound(9999))
    ));
    assert!(matches!(
        store.set_cause(9999, Some(db.id), t(3)).await,
        Err(StoreError::NotFound(9999))
    ));
    store
        .set_state(app.id, IncidentState::Resolved, t(4))
        .await
        .unwrap();
    store.set_cause(app.id, Some(db.id), t(5)).await.unwrap();
    assert!(matches!(
        store.set_cause(app.id, None, t(5)).await,
        Err(StoreError::Conflict(_))
    ));
    store.set_cause(db.id, None, t(6)).await.unwrap();
    assert_eq!(store.incident(db.id).await.unwrap().unwrap().cause, None);
}

/// A target lock has one holder at a time (even when sixteen ask at
/// once); the holder may take it again; it frees on release, on expiry,
/// and when a newer leadership term exists than the one it was taken
/// under (its holder lost its lease); releasing another's lock does
/// nothing.
async fn target_locks_have_one_holder(store: Arc<dyn Store>) {
    store.claim_term("a", t(0)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let holder = format!("h{i}");
            let got = s.lock_target("cache", &holder, t(0), t(60)).await.unwrap();
            (holder, got)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (holder, got) = task.await.unwrap();
        if got.is_none() {
            winners.push(holder);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one holder: {winners:?}");
    let w = winners.pop().unwrap();
    assert_eq!(
        store
            .lock_target("cache", "other", t(1), t(60))
            .await
            .unwrap(),
        Some(w.clone()),
        "a waiter is told who holds it"
    );
    assert_eq!(
        store.lock_target("cache", &w, t(2), t(90)).await.unwrap(),
        None
    );
    assert_eq!(
        store.lock_target("db", "other", t(2), t(60)).await.unwrap(),
        None,
        "locks are per target"
    );
    store.unlock_target("cache", "other").await.unwrap();
    assert_eq!(
        store
            .lock_target("cache", "other", t(3), t(60))
            .await
            .unwrap(),
        Some(w.clone()),
        "only the holder releases"
    );
    store.unlock_target("cache", &w).await.unwrap();
    assert_eq!(
        store
            .lock_target("cache", "other", t(4), t(60))
            .await
            .unwrap(),
        None
    );
    // Expired at t(60).
    assert_eq!(
        store
            .lock_target("cache", "third", t(61), t(120))
            .await
            .unwrap(),
        None
    );
    // A newer term frees what an older one took.
    store.claim_term("b", t(62)).await.unwrap();
    assert_eq!(
        store
            .lock_target("cache", "fourth", t(63), t(120))
            .await
            .unwrap(),
        None
    );
    // Fenced like every write: the deposed term takes no lock.
    let old = Fenced::new(store.clone(), 1);
    assert!(matches!(
        old.lock_target("app", "deposed", t(64), t(120)).await,
        Err(StoreError::Fenced { term: 1, newer: 2 })
    ));
    assert_eq!(
        store
            .lock_target("app", "fifth", t(65), t(120))
            .await
            .unwrap(),
        None
    );
}

/// The ledger by target: attempts whose inputs list the target, across
/// scenarios, from `since` on.
async fn target_attempts_span_scenarios(store: Arc<dyn Store>) {
    let (a, _) = store
        .open_incident(new_incident("one", "", 0))
        .await
        .unwrap();
    let (b, _) = store
        .open_incident(new_incident("two", "", 0))
        .await
        .unwrap();
    for (inc, key, at, targets) in [
        (a.id, "a1", 10, json!(["backend"])),
        (b.id, "b1", 20, json!(["backend", "db"])),
        (a.id, "a2", 30, json!(["cache"])),
        (b.id, "b2", 5, json!(["backend"])),
    ] {
        let mut n = attempt(inc, key, at);
        n.inputs = json!({ "targets": targets });
        store.begin_attempt(n).await.unwrap();
    }
    let keys = |v: Vec<Attempt>| v.into_iter().map(|a| a.key).collect::<Vec<_>>();
    assert_eq!(
        keys(store.target_attempts_since("backend", t(6)).await.unwrap()),
        ["a1", "b1"]
    );
    assert_eq!(
        keys(store.target_attempts_since("db", t(0)).await.unwrap()),
        ["b1"]
    );
    assert!(
        store
            .target_attempts_since("app", t(0))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Flushing after writes succeeds (SQLite checkpoints; the others have
/// nothing buffered).
async fn flush_after_writes_succeeds(store: Arc<dyn Store>) {
    store
        .open_incident(new_incident("redis", "", 0))
        .await
        .unwrap();
    store.flush().await.unwrap();
}

// ---------------------------------------------------------------------------
// Observations shared between replicas (the quorum before acting).

fn obs(replica: &str, symptom: &str, instance: &str, outcome: &str, at: i64) -> SharedObservation {
    SharedObservation {
        replica: replica.into(),
        scenario: "db".into(),
        symptom: symptom.into(),
        instance: instance.into(),
        outcome: outcome.into(),
        detail: format!("{outcome} at {at}"),
        observed_at: t(at),
    }
}

fn beat(replica: &str, at: i64) -> ReplicaBeat {
    ReplicaBeat {
        replica: replica.into(),
        seen_at: t(at),
    }
}

/// Each replica's newest observation per symptom instance replaces its
/// older one, never the reverse; reads select one symptom observed since a
/// time, by instance then replica; a deposed leader still observes.
async fn observations_keep_the_newest_per_replica_and_instance(store: Arc<dyn Store>) {
    store
        .observe(
            beat("b", 10),
            vec![
                obs("b", "down", "", "ok", 10),
                obs("b", "lag", "", "failing", 10),
            ],
        )
        .await
        .unwrap();
    // Two of one key in one write: the newest counts, whatever the order.
    store
        .observe(
            beat("a", 10),
            vec![
                obs("a", "down", "", "failing", 10),
                obs("a", "down", "", "unknown", 9),
            ],
        )
        .await
        .unwrap();
    let got = store.observations("db", "down", t(0)).await.unwrap();
    assert_eq!(
        got,
        vec![
            obs("a", "down", "", "failing", 10),
            obs("b", "down", "", "ok", 10)
        ]
    );
    // An older observation arriving late changes nothing.
    store
        .observe(beat("a", 11), vec![obs("a", "down", "", "ok", 8)])
        .await
        .unwrap();
    assert_eq!(
        store.observations("db", "down", t(0)).await.unwrap()[0],
        obs("a", "down", "", "failing", 10)
    );
    // A newer one replaces it; `since` leaves out the stale.
    store
        .observe(
            beat("a", 12),
            vec![
                obs("a", "down", "", "unreachable", 12),
                obs("a", "down", RUN_MARKER, "ok", 12),
            ],
        )
        .await
        .unwrap();
    let fresh = store.observations("db", "down", t(11)).await.unwrap();
    assert_eq!(
        fresh,
        vec![
            obs("a", "down", "", "unreachable", 12),
            obs("a", "down", RUN_MARKER, "ok", 12)
        ],
        "by instance, and only since t(11)"
    );
    assert_eq!(
        store.observations("db", "lag", t(0)).await.unwrap(),
        vec![obs("b", "lag", "", "failing", 10)]
    );
    assert!(
        store
            .observations("other", "down", t(0))
            .await
            .unwrap()
            .is_empty()
    );
    // Observing is not acting: a deposed term's store still records it.
    let first = store.claim_term("a", t(1)).await.unwrap().term;
    store.claim_term("b", t(2)).await.unwrap();
    let deposed = Fenced::new(store.clone(), first);
    deposed
        .observe(beat("a", 13), vec![obs("a", "down", "", "failing", 13)])
        .await
        .unwrap();
    assert_eq!(
        deposed.observations("db", "down", t(13)).await.unwrap(),
        vec![obs("a", "down", "", "failing", 13)]
    );
}

/// Heartbeats only move forward; rows older than the retention before a
/// heartbeat are forgotten.
async fn heartbeats_move_forward_and_old_rows_are_forgotten(store: Arc<dyn Store>) {
    store
        .observe(beat("a", 100), vec![obs("a", "down", "", "failing", 100)])
        .await
        .unwrap();
    store.observe(beat("b", 105), vec![]).await.unwrap();
    store.observe(beat("a", 90), vec![]).await.unwrap();
    assert_eq!(
        store.replicas_since(t(0)).await.unwrap(),
        vec![beat("a", 100), beat("b", 105)]
    );
    assert_eq!(
        store.replicas_since(t(101)).await.unwrap(),
        vec![beat("b", 105)]
    );
    let hour = OBSERVATION_RETENTION.num_seconds();
    store.observe(beat("c", 101 + hour), vec![]).await.unwrap();
    assert_eq!(
        store.replicas_since(t(0)).await.unwrap(),
        vec![beat("b", 105), beat("c", 101 + hour)],
        "a's heartbeat is past retention"
    );
    assert!(
        store
            .observations("db", "down", t(0))
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------
// The backends.

/// A store under test and what keeps it alive.
struct Backend {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<common::pg::Pg>,
}

async fn memory() -> Backend {
    Backend {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
        _pg: None,
    }
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
    Backend {
        store: Arc::new(store),
        _dir: Some(dir),
        _pg: None,
    }
}

fn pg_target(pg: &common::pg::Pg) -> medic::config::PostgresTarget {
    medic::config::PostgresTarget {
        host: "127.0.0.1".into(),
        port: pg.primary.port,
        user: "postgres".into(),
        password: None,
        dbname: "postgres".into(),
        ..Default::default()
    }
}

/// A private PostgreSQL server of its own (a copy of a template cluster,
/// about 0.3 s), so tests share no rows.
async fn postgres() -> Backend {
    let pg = common::pg::Pg::primary();
    let store = PostgresStore::open(&pg_target(&pg)).await.unwrap();
    Backend {
        store: Arc::new(store),
        _dir: None,
        _pg: Some(pg),
    }
}

/// One `#[tokio::test]` per behaviour, on the backend of the enclosing
/// module (`super::$backend()`).
macro_rules! tests_on {
    ($backend:ident: $($behaviour:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $behaviour() {
                let backend = super::$backend().await;
                super::$behaviour(backend.store.clone()).await;
            }
        )*
    };
}

/// What every backend does alike.
macro_rules! shared {
    ($backend:ident) => {
        tests_on!($backend:
            concurrent_opens_create_one_incident,
            one_open_incident_per_scenario_and_instance,
            timeline_keeps_order_and_data,
            timeline_is_read_by_kind_and_counted,
            timeline_keeps_write_order,
            resolution_is_final_and_frees_the_key,
            resolved_incident_does_not_block_a_new_one,
            resolving_is_final,
            state_changes_are_stored,
            unknown_ids_are_not_found,
            recent_incidents_are_newest_first,
            ledger_keys_are_used_once_and_windows_filter,
            ledger_begin_and_finish,
            scenario_attempts_span_steps_and_instances,
            attempt_keys_are_used_once_and_errors_do_not_echo_them,
            alert_intake_is_idempotent_and_never_revives,
            firing_alerts_matching_reads_what_matchers_select,
            firing_cap_refuses_a_delivery_whole,
            resolved_alerts_are_pruned,
            job_runs_end_once_newest_first,
            terms_only_grow_even_when_claimed_concurrently,
            deposed_term_cannot_write,
            outbox_enqueues_once_and_marks_end_once,
            page_refs_one_per_notifier,
            claims_are_first_once_and_expire,
            incident_cause_links_are_stored,
            target_locks_have_one_holder,
            target_attempts_span_scenarios,
            flush_after_writes_succeeds,
            observations_keep_the_newest_per_replica_and_instance,
            heartbeats_move_forward_and_old_rows_are_forgotten,
        );
    };
}

/// What the durable backends do and the memory store does not (yet): it
/// keeps `updated_at` at the last state change, returns attempts in the
/// order begun, and an unknown incident's attempts as none.
macro_rules! durable {
    ($backend:ident) => {
        tests_on!($backend:
            timeline_entry_moves_updated_at_forward,
            attempts_since_filters_and_orders_the_window,
            attempts_of_unknown_incident_are_not_found,
        );
    };
}

mod memory {
    shared!(memory);
}

mod sqlite {
    shared!(sqlite);
    durable!(sqlite);
}

mod postgres {
    use super::*;
    shared!(postgres);
    durable!(postgres);

    /// Re-opening migrates nothing and keeps the data; the re-opened store
    /// fences as a fresh one does.
    #[tokio::test]
    async fn reopening_migrates_nothing_and_keeps_the_data() {
        let backend = super::postgres().await;
        super::recent_incidents_are_newest_first(backend.store.clone()).await;
        let pg = backend._pg.as_ref().unwrap();
        let again = PostgresStore::open(&pg_target(pg)).await.unwrap();
        assert_eq!(again.recent_incidents(10).await.unwrap().len(), 3);
        super::deposed_term_cannot_write(Arc::new(again)).await;
    }
}
