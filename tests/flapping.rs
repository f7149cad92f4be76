//! Acceptance: a flapping target never gets more actions than its limit,
//! even across a medic restart. A real redis-server goes down and up every
//! 2 s for 60 s; the real medic binary acts on each failure, within a
//! budget of 3 attempts per hour; half-way through, medic is stopped and
//! started again. The budget lives in the store, so the restart resets
//! nothing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use medic::store::{SqliteStore, prelude::*};

const LIMIT: usize = 3;

#[test]
fn a_flapping_target_never_gets_more_actions_than_its_limit_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let runs = dir.path().join("runs");
    let config = redis_setup(
        dir.path(),
        port,
        "check: { redis: { target: cache, ping: true } }\n\
         every: 250ms\n\
         timeout: 250ms\n\
         for: 0s\n\
         clear_for: 500ms",
        &format!(
            "  - name: restart-redis
    action: exec
    args: [sh, -c, \"echo run >> {}\"]
    verify: {{ clears: redis_down, within: 3s }}
    limit: {{ attempts: {LIMIT}, per: 1h }}
",
            runs.display()
        ),
    );

    // Down and up every 2 s for 60 s.
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let flapper = std::thread::spawn(move || {
        let start = Instant::now();
        let mut flaps = 0;
        while start.elapsed() < Duration::from_secs(60) && !s.load(Ordering::SeqCst) {
            let mut redis = Redis::start(port);
            std::thread::sleep(Duration::from_secs(2));
            redis.kill();
            flaps += 1;
            std::thread::sleep(Duration::from_secs(2));
        }
        flaps
    });
    let mut medic = Medic::start(&config, &dir.path().join("medic1.log"));
    std::thread::sleep(Duration::from_secs(30));
    assert!(medic.stop().success());
    let mut medic = Medic::start(&config, &dir.path().join("medic2.log"));
    let flaps = flapper.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    assert!(medic.stop().success());
    assert!(flaps >= 14, "the target flapped only {flaps} times");

    let ran = std::fs::read_to_string(&runs)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(ran, LIMIT, "actions run: {ran}, limit {LIMIT}");
    block_on(async {
        let store = SqliteStore::open(&dir.path().join("state/medic.db"))
            .await
            .unwrap();
        let incidents = store.recent_incidents(1000).await.unwrap();
        assert!(incidents.len() > LIMIT, "{} incidents", incidents.len());
        let mut executed = 0;
        let mut refused = 0;
        for inc in &incidents {
            for a in store.incident_attempts(inc.id).await.unwrap() {
                match a.outcome {
                    Some(o) if o.counts_against_limit() => executed += 1,
                    Some(medic::store::AttemptOutcome::Refused) => {
                        refused += 1;
                        assert!(
                            a.reason
                                .starts_with("refused: limit of 3 attempts per 1h reached"),
                            "{}",
                            a.reason
                        );
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(executed, LIMIT, "ledger entries that executed something");
        assert!(refused >= 1, "later failures were refused by the budget");
    });
}
