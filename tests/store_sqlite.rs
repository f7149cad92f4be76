//! What only the SQLite store has: real files (restart resume, flush and
//! close to one file, schema versions, a missing directory), two
//! connections on one file and the database's own one-open-incident rule,
//! corrupt rows, group commit under concurrent writers, and calls that
//! never block the runtime. What every backend shares is in
//! `store_conformance.rs`.

mod store_fixtures;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::DateTime;
use medic::store::sqlite::SCHEMA_VERSION;
use medic::store::{
    AttemptOutcome, IncidentState, SqliteStore, StoreError, TimelineEntry, prelude::*,
};
use serde_json::json;
use store_fixtures::{at_ms, attempt_at, incident_at};

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
            .open_incident(incident_at("redis-cache-failure", "cache", opened))
            .await
            .unwrap();
        let (done, _) = store
            .open_incident(incident_at("postgres-primary-down", "", at_ms(1)))
            .await
            .unwrap();
        store
            .set_state(done.id, IncidentState::Resolved, at_ms(2))
            .await
            .unwrap();
        store
            .append(
                open.id,
                TimelineEntry::new(at_ms(3), "symptom", "redis_down fired")
                    .with_data(json!({"for": "3s"})),
            )
            .await
            .unwrap();
        let attempt_id = store
            .begin_attempt(attempt_at(open.id, "restart", "1:0:1", at_ms(4)))
            .await
            .unwrap();
        store.flush().await.unwrap();
        store.close().await.unwrap();
        (open, done.id, attempt_id)
    };

    let store = SqliteStore::open(&db.path).await.unwrap();
    let mut expected = open.clone();
    expected.updated_at = at_ms(3);
    assert_eq!(store.open_incidents().await.unwrap(), vec![expected]);
    let resolved = store.incident(resolved_id).await.unwrap().unwrap();
    assert_eq!(resolved.state, IncidentState::Resolved);
    assert_eq!(resolved.resolved_at, Some(at_ms(2)));
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
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(10)))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, open.id);
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
                .open_incident(incident_at("redis-cache-failure", "cache", at_ms(i)))
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
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
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
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
        .await
        .unwrap();
    store
        .append(incident.id, TimelineEntry::new(at_ms(1), "note", "fine"))
        .await
        .unwrap();
    let attempt = store
        .begin_attempt(attempt_at(incident.id, "restart", "k", at_ms(2)))
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
            .set_state(incident.id, IncidentState::Resolved, at_ms(3))
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
            .attempts_since("redis-cache-failure", "restart", "cache", at_ms(0))
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
        .finish_attempt(attempt, AttemptOutcome::Failed, "exit 1", at_ms(4))
        .await
        .unwrap();
    let (other, created) = store
        .open_incident(incident_at("redis-memory", "cache", at_ms(5)))
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
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
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
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
        .await
        .unwrap();
    for i in 0..20 {
        store
            .append(
                incident.id,
                TimelineEntry::new(at_ms(i), "note", "x".repeat(500)),
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
        .open_incident(incident_at("redis-cache-failure", "cache", at_ms(0)))
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
                        TimelineEntry::new(at_ms(i), "note", format!("{w}:{i}"))
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
