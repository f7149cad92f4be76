//! The SQLite store against real files: restart resume, the one-open-incident
//! rule (also under concurrency and at the database level), the ledger,
//! corrupt rows, and calls that never block the runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use medic::store::sqlite::SCHEMA_VERSION;
use medic::store::{
    AttemptOutcome, IncidentState, NewAttempt, NewIncident, SqliteStore, StoreError, TimelineEntry,
    prelude::*,
};
use serde_json::json;

/// A wall-clock time `ms` milliseconds after a fixed base.
fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
}

fn new_incident(scenario: &str, instance: &str, at: DateTime<Utc>) -> NewIncident {
    NewIncident {
        scenario: scenario.into(),
        instance: instance.into(),
        severity: "high".into(),
        summary: format!("{scenario} on {instance:?}"),
        at,
    }
}

fn new_attempt(incident_id: i64, step: &str, key: &str, at: DateTime<Utc>) -> NewAttempt {
    NewAttempt {
        incident_id,
        scenario: "redis-cache-failure".into(),
        instance: "cache".into(),
        step: step.into(),
        step_index: 0,
        action: "exec".into(),
        key: key.into(),
        started_at: at,
        inputs: json!({"args": ["docker-compose", "restart", "redis"]}),
    }
}

struct TempStore {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn temp_db() -> TempStore {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("medic.db");
    TempStore { _dir: dir, path }
}

/// A second, raw connection to the same file, as an operator's `sqlite3`.
fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

#[tokio::test]
async fn restart_resumes_open_incidents_timelines_and_inflight_attempts() {
    let db = temp_db();
    let (open, resolved_id, attempt_id) = {
        let store = SqliteStore::open(&db.path).await.unwrap();
        // Nanoseconds on purpose: timestamps must round-trip exactly.
        let opened = DateTime::from_timestamp(1_699_999_999, 123_456_789).unwrap();
        let (open, _) = store
            .open_incident(new_incident("redis-cache-failure", "cache", opened))
            .await
            .unwrap();
        let (done, _) = store
            .open_incident(new_incident("postgres-primary-down", "", t(1)))
            .await
            .unwrap();
        store
            .set_state(done.id, IncidentState::Resolved, t(2))
            .await
            .unwrap();
        store
            .append(
                open.id,
                TimelineEntry::new(t(3), "symptom", "redis_down fired")
                    .with_data(json!({"for": "3s"})),
            )
            .await
            .unwrap();
        let attempt_id = store
            .begin_attempt(new_attempt(open.id, "restart", "1:0:1", t(4)))
            .await
            .unwrap();
        store.flush().await.unwrap();
        store.close().await.unwrap();
        (open, done.id, attempt_id)
    };

    let store = SqliteStore::open(&db.path).await.unwrap();
    let mut expected = open.clone();
    expected.updated_at = t(3);
    assert_eq!(store.open_incidents().await.unwrap(), vec![expected]);
    let resolved = store.incident(resolved_id).await.unwrap().unwrap();
    assert_eq!(resolved.state, IncidentState::Resolved);
    assert_eq!(resolved.resolved_at, Some(t(2)));
    let timeline = store.timeline(open.id).await.unwrap();
    assert_eq!(timeline.len(), 1);
    assert_eq!(timeline[0].data, json!({"for": "3s"}));
    let attempts = store.incident_attempts(open.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].id, attempt_id);
    assert_eq!(attempts[0].outcome, None, "still in flight after restart");
    assert_eq!(attempts[0].ended_at, None);
    // Reopening the same key after a restart returns the same incident.
    let (again, created) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(10)))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, open.id);
}

#[tokio::test]
async fn one_open_incident_per_scenario_and_instance() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let (first, created) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(0)))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(first.state, IncidentState::Open);
    let (second, created) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(5)))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(second, first, "the existing incident, unchanged");
    // Still one per key even once it is being remediated.
    store
        .set_state(first.id, IncidentState::Escalated, t(6))
        .await
        .unwrap();
    let (third, created) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(7)))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(third.id, first.id);
    assert_eq!(third.state, IncidentState::Escalated);
    // Another instance or scenario is another incident.
    let (other, created) = store
        .open_incident(new_incident("redis-cache-failure", "cache-2", t(8)))
        .await
        .unwrap();
    assert!(created);
    assert_ne!(other.id, first.id);
    let (other, created) = store
        .open_incident(new_incident("redis-memory", "cache", t(9)))
        .await
        .unwrap();
    assert!(created);
    assert_ne!(other.id, first.id);
    assert_eq!(store.open_incidents().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_open_incident_creates_exactly_one() {
    let db = temp_db();
    // Two stores are two connections (two medic processes on one file):
    // the logic alone cannot serialise them, the database must.
    let a = Arc::new(SqliteStore::open(&db.path).await.unwrap());
    let b = Arc::new(SqliteStore::open(&db.path).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .open_incident(new_incident("redis-cache-failure", "cache", t(i)))
                .await
                .unwrap()
        }));
    }
    let mut created = 0;
    let mut ids = Vec::new();
    for task in tasks {
        let (incident, was_created) = task.await.unwrap();
        created += usize::from(was_created);
        ids.push(incident.id);
    }
    assert_eq!(created, 1, "exactly one caller creates the incident");
    ids.dedup();
    assert_eq!(ids.len(), 1, "every caller sees the same incident");
    let rows: i64 = raw(&db.path)
        .query_row("SELECT count(*) FROM incidents", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn database_itself_refuses_a_second_open_incident() {
    let db = temp_db();
    let store = SqliteStore::open(&db.path).await.unwrap();
    store
        .open_incident(new_incident("redis-cache-failure", "cache", t(0)))
        .await
        .unwrap();
    let conn = raw(&db.path);
    let insert = |state: &str| {
        conn.execute(
            "INSERT INTO incidents (scenario, instance, state, severity, summary, opened_at, updated_at)
             VALUES ('redis-cache-failure', 'cache', ?1, 'high', 's',
                     '2024-01-01T00:00:00.000000000Z', '2024-01-01T00:00:00.000000000Z')",
            [state],
        )
    };
    let err = insert("acknowledged").unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    // Resolved incidents are history: any number of them may share a key.
    insert("resolved").unwrap();
    insert("resolved").unwrap();
}

#[tokio::test]
async fn resolved_incident_does_not_block_a_new_one() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let (first, _) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(0)))
        .await
        .unwrap();
    store
        .set_state(first.id, IncidentState::Resolved, t(100))
        .await
        .unwrap();
    let resolved = store.incident(first.id).await.unwrap().unwrap();
    assert_eq!(resolved.state, IncidentState::Resolved);
    assert_eq!(resolved.resolved_at, Some(t(100)));
    assert_eq!(resolved.updated_at, t(100));
    assert!(store.open_incidents().await.unwrap().is_empty());

    let (second, created) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(200)))
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

#[tokio::test]
async fn resolving_is_final() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let (incident, _) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(0)))
        .await
        .unwrap();
    store
        .set_state(incident.id, IncidentState::Resolved, t(10))
        .await
        .unwrap();
    // A late Slack "acknowledge" click must not reopen it.
    let err = store
        .set_state(incident.id, IncidentState::Acknowledged, t(20))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    // Resolving twice is harmless and keeps the first time.
    store
        .set_state(incident.id, IncidentState::Resolved, t(30))
        .await
        .unwrap();
    let after = store.incident(incident.id).await.unwrap().unwrap();
    assert_eq!(after.state, IncidentState::Resolved);
    assert_eq!(after.resolved_at, Some(t(10)));
}

#[tokio::test]
async fn state_changes_are_stored() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let (incident, _) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(0)))
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
            .set_state(incident.id, state, t(i as i64 + 1))
            .await
            .unwrap();
        let now = store.incident(incident.id).await.unwrap().unwrap();
        assert_eq!(now.state, state);
        assert_eq!(now.updated_at, t(i as i64 + 1));
        assert_eq!(now.resolved_at, None);
        assert_eq!(now.opened_at, t(0));
    }
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let err = store
        .set_state(42, IncidentState::Acknowledged, t(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(42)), "{err}");
    let err = store
        .append(42, TimelineEntry::new(t(0), "note", "hello"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(42)), "{err}");
    assert!(matches!(
        store.timeline(42).await,
        Err(StoreError::NotFound(42))
    ));
    assert!(matches!(
        store.incident_attempts(42).await,
        Err(StoreError::NotFound(42))
    ));
    assert!(matches!(
        store
            .begin_attempt(new_attempt(42, "restart", "42:0:1", t(0)))
            .await,
        Err(StoreError::NotFound(42))
    ));
    assert!(matches!(
        store
            .finish_attempt(7, AttemptOutcome::Failed, "exit 1", t(0))
            .await,
        Err(StoreError::AttemptNotFound(7))
    ));
    assert_eq!(store.incident(42).await.unwrap(), None);
}

#[tokio::test]
async fn timeline_keeps_write_order() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let (a, _) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(0)))
        .await
        .unwrap();
    let (b, _) = store
        .open_incident(new_incident("redis-memory", "cache", t(0)))
        .await
        .unwrap();
    assert_eq!(store.timeline(a.id).await.unwrap(), vec![]);
    // Timestamps out of order on purpose: the order written wins.
    let mut written = Vec::new();
    for (i, ms) in [50, 10, 30, 30, 20].into_iter().enumerate() {
        let entry = TimelineEntry::new(t(ms), "note", format!("entry {i}"))
            .with_data(json!({"i": i, "nested": {"ok": true}}));
        store.append(a.id, entry.clone()).await.unwrap();
        store
            .append(b.id, TimelineEntry::new(t(ms), "note", "other incident"))
            .await
            .unwrap();
        written.push(entry);
    }
    assert_eq!(store.timeline(a.id).await.unwrap(), written);
    assert_eq!(store.timeline(b.id).await.unwrap().len(), 5);
    // updated_at follows the latest entry and never goes back.
    assert_eq!(
        store.incident(a.id).await.unwrap().unwrap().updated_at,
        t(50)
    );
}

#[tokio::test]
async fn ledger_begin_and_finish() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let (incident, _) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(0)))
        .await
        .unwrap();
    let mut new = new_attempt(incident.id, "restart", "1:0:1", t(10));
    new.step_index = 3;
    let id = store.begin_attempt(new.clone()).await.unwrap();
    let inflight = &store.incident_attempts(incident.id).await.unwrap()[0];
    assert_eq!(inflight.id, id);
    assert_eq!(inflight.incident_id, incident.id);
    assert_eq!(inflight.step, "restart");
    assert_eq!(inflight.step_index, 3);
    assert_eq!(inflight.action, "exec");
    assert_eq!(inflight.key, "1:0:1");
    assert_eq!(inflight.started_at, t(10));
    assert_eq!(inflight.inputs, new.inputs);
    assert_eq!((inflight.ended_at, inflight.outcome), (None, None));
    assert_eq!(inflight.reason, "");

    store
        .finish_attempt(id, AttemptOutcome::TimedOut, "no answer within 30s", t(40))
        .await
        .unwrap();
    let done = &store.incident_attempts(incident.id).await.unwrap()[0];
    assert_eq!(done.ended_at, Some(t(40)));
    assert_eq!(done.outcome, Some(AttemptOutcome::TimedOut));
    assert_eq!(done.reason, "no answer within 30s");

    // A retried finish (lost reply) is harmless; a different ending is not.
    store
        .finish_attempt(id, AttemptOutcome::TimedOut, "again", t(50))
        .await
        .unwrap();
    let err = store
        .finish_attempt(id, AttemptOutcome::Succeeded, "", t(60))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let still = &store.incident_attempts(incident.id).await.unwrap()[0];
    assert_eq!(still.outcome, Some(AttemptOutcome::TimedOut));
    assert_eq!(still.ended_at, Some(t(40)));
    assert_eq!(still.reason, "no answer within 30s");
}

#[tokio::test]
async fn attempt_keys_are_used_once_and_errors_do_not_echo_them() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let (incident, _) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(0)))
        .await
        .unwrap();
    let key = "1:0:1-s3cr3t-looking-value";
    store
        .begin_attempt(new_attempt(incident.id, "restart", key, t(1)))
        .await
        .unwrap();
    let err = store
        .begin_attempt(new_attempt(incident.id, "restart", key, t(2)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    assert_eq!(store.incident_attempts(incident.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn attempts_since_filters_and_orders_the_window() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let (first, _) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(0)))
        .await
        .unwrap();
    store
        .set_state(first.id, IncidentState::Resolved, t(1))
        .await
        .unwrap();
    let (second, _) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(2)))
        .await
        .unwrap();
    // Started out of order, and across two incidents of the same key.
    let mut keys = 0;
    let mut begin = |incident: i64, step: &str, ms: i64| {
        keys += 1;
        let mut a = new_attempt(incident, step, &format!("k{keys}"), t(ms));
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
        .attempts_since("redis-cache-failure", "restart", "cache", t(2000))
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|a| (a.started_at, a.id)).collect::<Vec<_>>(),
        expected
            .iter()
            .map(|&(ms, id)| (t(ms), id))
            .collect::<Vec<_>>(),
        "the boundary is inclusive, oldest first"
    );
    let later = store
        .attempts_since("redis-cache-failure", "restart", "cache", t(2001))
        .await
        .unwrap();
    assert_eq!(later.len(), 2);
    let none = store
        .attempts_since("redis-cache-failure", "restart", "cache", t(4001))
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[track_caller]
fn expect_corrupt<T>(r: Result<T, StoreError>, needle: &str) {
    match r {
        Err(StoreError::Corrupt(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        Err(other) => panic!("expected Corrupt about {needle}, got {other}"),
        Ok(_) => panic!("expected Corrupt about {needle}, got Ok"),
    }
}

#[tokio::test]
async fn corrupt_rows_are_errors_not_panics() {
    let db = temp_db();
    let store = SqliteStore::open(&db.path).await.unwrap();
    let (incident, _) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(0)))
        .await
        .unwrap();
    store
        .append(incident.id, TimelineEntry::new(t(1), "note", "fine"))
        .await
        .unwrap();
    let attempt = store
        .begin_attempt(new_attempt(incident.id, "restart", "k", t(2)))
        .await
        .unwrap();
    let conn = raw(&db.path);
    let corrupt = |sql: &str| conn.execute_batch(sql).unwrap();

    corrupt("UPDATE incidents SET state = 'opne'");
    expect_corrupt(store.incident(incident.id).await, "unknown state \"opne\"");
    expect_corrupt(store.open_incidents().await, "opne");
    expect_corrupt(store.recent_incidents(5).await, "opne");
    expect_corrupt(
        store
            .set_state(incident.id, IncidentState::Resolved, t(3))
            .await,
        "opne",
    );
    corrupt("UPDATE incidents SET state = 'open', opened_at = 'yesterday'");
    expect_corrupt(store.incident(incident.id).await, "opened_at");
    corrupt("UPDATE incidents SET opened_at = updated_at, summary = x'ff00'");
    expect_corrupt(store.incident(incident.id).await, "summary");
    corrupt("UPDATE incidents SET summary = 'ok'");
    assert!(store.incident(incident.id).await.unwrap().is_some());

    corrupt("UPDATE timeline SET data = '{not json'");
    expect_corrupt(store.timeline(incident.id).await, "data is not valid JSON");

    corrupt("UPDATE attempts SET outcome = 'exploded'");
    expect_corrupt(store.incident_attempts(incident.id).await, "exploded");
    corrupt("UPDATE attempts SET outcome = NULL, step_index = -1");
    expect_corrupt(
        store
            .attempts_since("redis-cache-failure", "restart", "cache", t(0))
            .await,
        "step_index",
    );
    corrupt("UPDATE attempts SET step_index = 0, inputs = ''");
    expect_corrupt(store.incident_attempts(incident.id).await, "inputs");
    corrupt("UPDATE attempts SET inputs = '{}', started_at = 12");
    expect_corrupt(store.incident_attempts(incident.id).await, "started_at");

    // The store still works around the bad rows.
    corrupt("UPDATE attempts SET started_at = '2024-01-01T00:00:00.000000000Z'");
    store
        .finish_attempt(attempt, AttemptOutcome::Failed, "exit 1", t(4))
        .await
        .unwrap();
    let (other, created) = store
        .open_incident(new_incident("redis-memory", "cache", t(5)))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(store.incident(other.id).await.unwrap().unwrap(), other);
}

/// Store calls run off the runtime's threads: on a single-threaded runtime,
/// another task keeps ticking while a write waits ~300 ms for a lock held
/// by another connection. A store that did its I/O inline would freeze it.
#[tokio::test(flavor = "current_thread")]
async fn slow_store_calls_do_not_block_the_runtime() {
    let db = temp_db();
    let store = SqliteStore::open(&db.path).await.unwrap();

    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = {
        let path = db.path.clone();
        std::thread::spawn(move || {
            let conn = raw(&path);
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            conn.execute_batch("COMMIT").unwrap();
        })
    };
    locked_rx.recv().unwrap();

    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    store
        .open_incident(new_incident("redis-cache-failure", "cache", t(0)))
        .await
        .unwrap();
    let waited = started.elapsed();
    ticker.abort();
    holder.join().unwrap();

    assert!(
        waited >= Duration::from_millis(200),
        "the write should have waited for the lock, took {waited:?}"
    );
    let ticks = ticks.load(Ordering::Relaxed);
    assert!(
        ticks >= 10,
        "the runtime froze during a store call: {ticks} ticks in {waited:?}"
    );
}

#[tokio::test]
async fn flush_and_close_leave_a_single_file() {
    let db = temp_db();
    let store = SqliteStore::open(&db.path).await.unwrap();
    let (incident, _) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(0)))
        .await
        .unwrap();
    for i in 0..20 {
        store
            .append(
                incident.id,
                TimelineEntry::new(t(i), "note", "x".repeat(500)),
            )
            .await
            .unwrap();
    }
    let wal = db.path.with_file_name("medic.db-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "writes go to the WAL"
    );
    store.flush().await.unwrap();
    assert_eq!(
        std::fs::metadata(&wal).unwrap().len(),
        0,
        "flush folds the WAL into the main file"
    );
    store.close().await.unwrap();
    let files: Vec<String> = std::fs::read_dir(db.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec!["medic.db".to_string()]);

    // And the single file holds everything.
    let conn = raw(&db.path);
    let entries: i64 = conn
        .query_row("SELECT count(*) FROM timeline", [], |r| r.get(0))
        .unwrap();
    assert_eq!(entries, 20);
}

#[tokio::test]
async fn schema_is_versioned_and_newer_files_are_refused() {
    let db = temp_db();
    SqliteStore::open(&db.path)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let version: i64 = raw(&db.path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, i64::from(SCHEMA_VERSION));

    // Reopening applies nothing twice.
    SqliteStore::open(&db.path)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();

    raw(&db.path)
        .execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
        .unwrap();
    let err = SqliteStore::open(&db.path).await.err().unwrap();
    assert!(
        matches!(&err, StoreError::Backend(m) if m.contains("newer")),
        "{err}"
    );
}

#[tokio::test]
async fn opening_in_a_missing_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(&dir.path().join("missing/medic.db"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_all_land_in_order_per_writer() {
    let db = temp_db();
    let store = Arc::new(SqliteStore::open(&db.path).await.unwrap());
    let (incident, _) = store
        .open_incident(new_incident("redis-cache-failure", "cache", t(0)))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                store
                    .append(
                        incident.id,
                        TimelineEntry::new(t(i), "note", format!("{w}:{i}"))
                            .with_data(json!({"w": w, "i": i})),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let timeline = store.timeline(incident.id).await.unwrap();
    assert_eq!(timeline.len(), 16 * 25);
    for w in 0..16 {
        let mine: Vec<i64> = timeline
            .iter()
            .filter(|e| e.data["w"] == w)
            .map(|e| e.data["i"].as_i64().unwrap())
            .collect();
        assert_eq!(mine, (0..25).collect::<Vec<_>>(), "writer {w}");
    }
}
