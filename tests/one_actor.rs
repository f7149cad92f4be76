//! One actor per target, against a real redis-server the test starts:
//! two scenarios whose plans both flush the same Redis (`redis.flush`,
//! for real) fire together; the real medic binary lets one step act on it
//! at a time. The ledger's attempts on the target never overlap, the
//! second step's timeline says it waited for the lock, and both flushes
//! really happened.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use medic::store::{SqliteStore, prelude::*};

fn scenario(name: &str, prefix: &str, dead: u16) -> String {
    format!(
        r#"scenario: {name}
summary: {name}
severity: high
rto: 5m
symptoms:
  gone:
    check: {{ tcp: {{ address: "127.0.0.1:{dead}" }} }}
    every: 200ms
    timeout: 200ms
    for: 0s
when: {{ any: [gone] }}
plan:
  - name: flush-{prefix}
    action: redis.flush
    target: cache
    pattern: "{prefix}:*"
    timeout: 5s
    verify: {{ within: 2s }}        # never clears: the lock is held 2s
    limit: {{ attempts: 1, per: 1h }}
escalation: default
"#
    )
}

async fn seed(port: u16) {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut cmd = redis::cmd("MSET");
    for i in 0..100 {
        for p in ["a", "b", "keep"] {
            cmd.arg(format!("{p}:{i}")).arg("v");
        }
    }
    let _: () = cmd.query_async(&mut c).await.unwrap();
}

async fn count(port: u16, pattern: &str) -> usize {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut c)
        .await
        .unwrap();
    keys.len()
}

async fn ended(db: &Path) -> Vec<medic::store::Attempt> {
    let store = SqliteStore::open(db).await.unwrap();
    let mut out = Vec::new();
    for i in store.recent_incidents(10).await.unwrap() {
        out.extend(
            store
                .incident_attempts(i.id)
                .await
                .unwrap()
                .into_iter()
                .filter(|a| {
                    a.action == "redis.flush" && a.outcome.is_some_and(|o| o.counts_against_limit())
                }),
        );
    }
    out
}

/// Why: before the lock, both scenarios' steps ran on the same target at
/// once (issue 17: two scenarios restarting one Deployment side by side).
#[test]
fn two_scenarios_on_one_redis_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dead = free_port();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("medic.yaml"),
        format!(
            "mode: enforce\n\
             store: {{ sqlite: {{ path: state/medic.db }} }}\n\
             rules: [rules]\n\
             shutdown_grace: 5s\n\
             targets:\n  cache: {{ redis: {{ address: \"127.0.0.1:{port}\" }} }}\n"
        ),
    )
    .unwrap();
    for (name, prefix) in [("flush-a-keys", "a"), ("flush-b-keys", "b")] {
        std::fs::write(
            dir.path().join(format!("rules/{name}.yaml")),
            scenario(name, prefix, dead),
        )
        .unwrap();
    }
    let _redis = Redis::start(port);
    block_on(seed(port));
    let db = dir.path().join("state/medic.db");
    let mut medic = Medic::start(
        &dir.path().join("medic.yaml"),
        &dir.path().join("medic.log"),
    );
    wait_until(Duration::from_secs(30), "both flushes to end", || {
        db.exists() && block_on(ended(&db)).len() >= 2
    });
    assert!(medic.stop().success(), "graceful exit 0 on SIGTERM");

    let attempts = block_on(ended(&db));
    assert_eq!(attempts.len(), 2, "one flush per scenario: {attempts:#?}");
    let (a, b) = (&attempts[0], &attempts[1]);
    let (first, second) = if a.started_at <= b.started_at {
        (a, b)
    } else {
        (b, a)
    };
    assert_ne!(first.scenario, second.scenario);
    assert!(
        first.ended_at.unwrap() <= second.started_at,
        "the second flush started only after the first ended: {first:#?} {second:#?}"
    );
    let waited = block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        store.timeline(second.incident_id).await.unwrap()
    });
    let lines: Vec<&str> = waited.iter().map(|e| e.message.as_str()).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("waiting for target cache: incident #")
                && l.contains("is acting on it")),
        "the waiting step says so: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("are free after waiting")),
        "and how long it waited: {lines:#?}"
    );
    // Both flushes really ran, one after the other, on the one Redis.
    assert_eq!(block_on(count(port, "a:*")), 0);
    assert_eq!(block_on(count(port, "b:*")), 0);
    assert_eq!(block_on(count(port, "keep:*")), 100);
}
