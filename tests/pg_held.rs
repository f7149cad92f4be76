//! The `postgres` check's held session and PostgreSQL clusters, against
//! real servers (tests/common/pg.rs):
//! - a SIGKILLed postmaster closes the held session: `Check::lost` fires
//!   and the next run is failing;
//! - a SIGSTOPped postmaster (the kernel still accepts TCP) is failing
//!   once `peer_timeout` passes without a start-up answer;
//! - a cluster's checks follow the promoted replica, and the old primary,
//!   restarted, is fenced on sight and reported by `db/demoted`.
//!
//! How fast the held session notices is measured by `scripts/pg-detect.sh`
//! (docs/performance.md), not asserted here.

mod common;

use std::time::Duration;

use common::pg::Pg;
use common::wait_until;
use medic::check::Check;
use medic::check::postgres::{PostgresCheck, PostgresParams};
use medic::config::{Config, PostgresTarget, TargetConfig};
use medic::observe::Outcome;
use nix::sys::signal::Signal;

fn target(port: u16) -> PostgresTarget {
    PostgresTarget {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        dbname: "postgres".into(),
        ..Default::default()
    }
}

fn params(target: &str) -> PostgresParams {
    PostgresParams {
        target: target.into(),
        ready: false,
        role: None,
        max_lag_bytes: None,
        max_lag_seconds: None,
        sql: None,
        above: None,
        below: None,
    }
}

fn ready(target: &str) -> PostgresParams {
    PostgresParams {
        ready: true,
        ..params(target)
    }
}

fn role(target: &str, role: &str) -> PostgresParams {
    PostgresParams {
        role: Some(role.into()),
        ..params(target)
    }
}

fn one(t: PostgresTarget) -> Config {
    let mut config = Config::default();
    config
        .targets
        .insert("db".into(), TargetConfig::Postgres(t));
    config
}

fn failing_with(o: &Outcome, what: &str) -> bool {
    matches!(o, Outcome::Failing(d) if d.contains(what))
}

#[tokio::test]
async fn a_killed_primary_closes_the_held_session_and_the_next_run_fails() {
    let mut c = Pg::primary();
    let config = one(target(c.primary.port));
    let check = PostgresCheck::build(&ready("db"), Duration::from_secs(5), &config).unwrap();
    assert_eq!(check.run().await, Outcome::Ok);
    c.primary.kill9();
    // Bounded only so a broken build fails instead of hanging.
    tokio::time::timeout(Duration::from_secs(20), check.lost())
        .await
        .expect("the held session never noticed the kill");
    let o = check.run().await;
    assert!(failing_with(&o, "connection refused"), "{o:?}");
}

#[tokio::test]
async fn a_sigstopped_postmaster_fails_after_peer_timeout_and_recovers() {
    let c = Pg::primary();
    let t = PostgresTarget {
        peer_timeout: Some("500ms".parse().unwrap()),
        ..target(c.primary.port)
    };
    let config = one(t);
    let check = PostgresCheck::build(&ready("db"), Duration::from_secs(3), &config).unwrap();
    assert_eq!(check.run().await, Outcome::Ok);
    c.primary.signal(Signal::SIGSTOP);
    let o = check.run().await;
    c.primary.signal(Signal::SIGCONT);
    assert!(
        failing_with(
            &o,
            "accepted the TCP connection but did not answer within 500ms (peer_timeout): the server is frozen"
        ),
        "{o:?}"
    );
    assert_eq!(check.run().await, Outcome::Ok);
}

/// `db-a` (the primary), `db-b` (its replica) and the cluster `db`.
fn cluster(c: &Pg) -> Config {
    let mut config = Config::default();
    config.targets.insert(
        "db-a".into(),
        TargetConfig::Postgres(target(c.primary.port)),
    );
    config.targets.insert(
        "db-b".into(),
        TargetConfig::Postgres(target(c.replica().port)),
    );
    config.targets.insert(
        "db".into(),
        TargetConfig::Postgres(PostgresTarget {
            members: vec!["db-a".into(), "db-b".into()],
            ..Default::default()
        }),
    );
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_checks_follow_the_promotion_and_the_returning_old_primary_is_fenced_on_sight() {
    let mut c = Pg::with_replica();
    c.primary.psql("CREATE TABLE t (id int)");
    // The test servers run with synchronous_commit off: make the table
    // durable on the primary before it is killed, so its restart still
    // has it (the INSERT below must fail for the fence, not for that).
    c.primary.psql("CHECKPOINT");
    c.wait_caught_up(Duration::from_secs(20));
    let config = cluster(&c);
    let t = Duration::from_secs(3);
    let primary = PostgresCheck::build(&ready("db"), t, &config).unwrap();
    let replicas = PostgresCheck::build(&role("db/replicas", "replica"), t, &config).unwrap();
    let demoted = PostgresCheck::build(&role("db/demoted", "replica"), t, &config).unwrap();
    assert_eq!(primary.run().await, Outcome::Ok);
    assert_eq!(replicas.run().await, Outcome::Ok);
    assert_eq!(demoted.run().await, Outcome::Ok);

    c.primary.kill9();
    let o = primary.run().await;
    assert!(
        failing_with(&o, "db: no member answers as primary"),
        "{o:?}"
    );

    c.replica().psql("SELECT pg_promote(true, 30)");
    let o = primary.run().await;
    assert_eq!(o, Outcome::Ok, "the check follows db-b, promoted");
    // db-a is down: nothing to fence yet, nothing to report.
    assert_eq!(demoted.run().await, Outcome::Ok);
    let o = replicas.run().await;
    assert!(failing_with(&o, "no member answers as replica"), "{o:?}");

    // The old primary comes back on its old timeline.
    tokio::task::block_in_place(|| c.primary.start());
    wait_until(Duration::from_secs(10), "db-a to be fenced", || {
        c.primary.psql("SHOW default_transaction_read_only") == "on"
    });
    let write = c.primary.try_psql("INSERT INTO t VALUES (1)");
    assert!(
        write
            .as_ref()
            .is_err_and(|e| e.contains("read-only transaction")),
        "{write:?}"
    );
    let o = demoted.run().await;
    assert!(
        failing_with(
            &o,
            "db-a, primary on timeline 1 before the failover, answers as a primary again (timeline 1) beside db-b on timeline 2; fenced (default_transaction_read_only = on): rebuild it as a replica"
        ),
        "{o:?}"
    );
    assert_eq!(primary.run().await, Outcome::Ok, "still db-b");
}

fn median_p95(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let p95 = v[((v.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)];
    (v[v.len() / 2], p95)
}

/// Harness (`scripts/pg-detect.sh`): from the signal to the check's
/// failing outcome, for a SIGKILLed postmaster (the held session closes;
/// `lost` fires, the run that follows is failing) and a SIGSTOPped one
/// (`peer_timeout: 1s`; the next run is failing once it passes), over
/// `MEDIC_TRIALS` (default 10) trials each.
#[tokio::test]
#[ignore = "harness: scripts/pg-detect.sh"]
async fn detection_trials() {
    let runs: usize = std::env::var("MEDIC_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let (mut killed, mut stopped) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut c = Pg::primary();
        let t = PostgresTarget {
            peer_timeout: Some("1s".parse().unwrap()),
            ..target(c.primary.port)
        };
        let config = one(t);
        let check = PostgresCheck::build(&ready("db"), Duration::from_secs(3), &config).unwrap();
        assert_eq!(check.run().await, Outcome::Ok);
        c.primary.signal(Signal::SIGSTOP);
        let at = std::time::Instant::now();
        let o = check.run().await;
        stopped.push(at.elapsed().as_secs_f64());
        assert!(failing_with(&o, "frozen"), "{o:?}");
        c.primary.signal(Signal::SIGCONT);
        assert_eq!(check.run().await, Outcome::Ok);
        let at = std::time::Instant::now();
        c.primary.kill9();
        tokio::time::timeout(Duration::from_secs(20), check.lost())
            .await
            .unwrap();
        let o = check.run().await;
        killed.push(at.elapsed().as_secs_f64());
        assert!(failing_with(&o, "connection refused"), "{o:?}");
    }
    let (km, kp) = median_p95(killed);
    let (sm, sp) = median_p95(stopped);
    println!(
        "postgres check, {runs} trials: SIGKILL → failing: median {:.1} ms, p95 {:.1} ms; SIGSTOP (peer_timeout 1s) → failing: median {:.3} s, p95 {:.3} s",
        km * 1000.0,
        kp * 1000.0,
        sm,
        sp
    );
}
