//! Acceptance: the database failure restarts PostgreSQL in place before it
//! fails over (`postgres.restart`). A real medic binary watches a real
//! cluster (a primary and its streaming replica, `db: { members: [db-a,
//! db-b] }`) and runs the shipped rule's steps on a faster clock: the
//! restart in place first, the promotion as its fallback.
//!
//! - the postmaster is SIGKILLed on a live host: the member's `exec`
//!   method (`pg_ctl start` on the same data directory, as the host's
//!   service manager would) starts it again, the incident resolves by the
//!   restart, nothing is promoted (the replica stays a replica and streams
//!   the next write);
//! - the method fails (its host is gone: the `ssh` exits 255 at once): the
//!   plan falls back to the promotion and the replica takes writes;
//! - no method is configured: the step is skipped on the timeline and the
//!   failover runs;
//! - a server that comes back in recovery is no restored primary (the
//!   action alone).
//!
//! `restart_in_place_trials` (ignored; `MEDIC_TRIALS`, default 5) times
//! SIGKILL → the primary accepts an INSERT again, and for comparison the
//! failover without a restart method, for docs/performance.md; on the
//! tests' clock, or the shipped rule's with `MEDIC_TRIALS_CLOCK=shipped`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::pg::Pg;
use common::{Medic, block_on, wait_until};
use medic::store::{Incident, IncidentState, SqliteStore, prelude::*};

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    db: PathBuf,
}

/// The rule's detection clock: `every`, `timeout`, `for` of `db_down`, and
/// the promotion's `unreachable_checks` over `unreachable_for`.
struct Clock(&'static str, &'static str, &'static str, u32, &'static str);

/// The tests' clock.
const FAST: Clock = Clock("500ms", "500ms", "1s", 3, "1s");
/// The shipped rule's (rules/database-failure.yaml), for the trials
/// (`MEDIC_TRIALS_CLOCK=shipped`).
const SHIPPED: Clock = Clock("2s", "2s", "6s", 4, "10s");

fn clock() -> &'static Clock {
    match std::env::var("MEDIC_TRIALS_CLOCK").as_deref() {
        Ok("shipped") => &SHIPPED,
        _ => &FAST,
    }
}

/// medic.yaml and the rule for cluster `c`; `restart` is db-a's method
/// (`restart: { exec: ... }`), if any.
fn setup(c: &Pg, restart: Option<&[String]>) -> Setup {
    let Clock(every, timeout, for_, checks, unreachable_for) = clock();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("rules")).unwrap();
    let member = |n: &common::pg::PgNode, restart: Option<&[String]>| {
        let restart = restart.map_or_else(String::new, |argv| {
            format!(
                ", restart: {{ exec: {} }}",
                serde_json::to_string(argv).unwrap()
            )
        });
        format!(
            "{{ postgres: {{ host: 127.0.0.1, port: {}, user: postgres, dbname: postgres, peer_timeout: 1s{restart} }} }}",
            n.port,
        )
    };
    std::fs::write(
        d.join("medic.yaml"),
        format!(
            "mode: enforce\n\
             store: {{ sqlite: {{ path: state/medic.db }} }}\n\
             rules: [rules]\n\
             shutdown_grace: 5s\n\
             targets:\n  db: {{ postgres: {{ members: [db-a, db-b] }} }}\n  db-a: {}\n  db-b: {}\n",
            member(&c.primary, restart),
            member(c.replica(), None)
        ),
    )
    .unwrap();
    let repoint = serde_json::to_string(&[
        "sh".to_string(),
        "-c".to_string(),
        format!(
            "echo DATABASE_URL=postgres://127.0.0.1:{}/postgres > {}",
            c.replica().port,
            d.join("backend.env").display()
        ),
    ])
    .unwrap();
    // The shipped rule's database steps (rules/database-failure.yaml) on a
    // faster clock; the repoint is an exec here, verified by the `db`
    // check following the new primary.
    std::fs::write(
        d.join("rules/database-failure.yaml"),
        format!(
            "scenario: database-failure
summary: Primary PostgreSQL database unreachable
severity: critical
rto: 2h
symptoms:
  db_down:
    check: {{ postgres: {{ target: db, ready: true }} }}
    every: {every}
    timeout: {timeout}
    for: {for_}
    clear_for: 2s
when: {{ any: [db_down] }}
plan:
  - name: restart-in-place
    action: postgres.restart
    target: db
    host_timeout: 2s
    ready_within: 10s
    timeout: 30s
    verify: {{ clears: [] }}
    limit: {{ attempts: 1, per: 1h }}
  - name: promote-replica
    action: postgres.promote-replica
    primary: db
    max_lag_bytes: 1048576
    unreachable_checks: {checks}
    unreachable_for: {unreachable_for}
    cooldown: 1h
    old_primary_unreachable: proceed
    timeout: 30s
    then: continue
    limit: {{ attempts: 1, per: 1h }}
  - name: repoint-backend
    action: exec
    args: {repoint}
    verify: {{ clears: db_down, within: 20s }}
    limit: {{ attempts: 1, per: 1h }}
escalation: default
"
        ),
    )
    .unwrap();
    Setup {
        config: d.join("medic.yaml"),
        db: d.join("state/medic.db"),
        dir,
    }
}

/// The database-failure incident and its timeline, once there is one.
fn incident(db: &Path) -> Option<(Incident, Vec<String>)> {
    block_on(async {
        let store = SqliteStore::open(db).await.ok()?;
        let i = store
            .recent_incidents(10)
            .await
            .ok()?
            .into_iter()
            .find(|i| i.scenario == "database-failure")?;
        let tl = store
            .timeline(i.id)
            .await
            .ok()?
            .into_iter()
            .map(|e| e.message)
            .collect();
        Some((i, tl))
    })
}

fn resolved(db: &Path) -> (Incident, Vec<String>) {
    wait_until(
        Duration::from_secs(90),
        "database-failure to resolve",
        || incident(db).is_some_and(|(i, _)| i.state == IncidentState::Resolved),
    );
    incident(db).unwrap()
}

/// The index of the first timeline line starting with `p`.
fn at(tl: &[String], p: &str) -> usize {
    tl.iter()
        .position(|m| m.starts_with(p))
        .unwrap_or_else(|| panic!("no {p:?} in {tl:#?}"))
}

/// A cluster with a table, caught up, under a fresh medic; db-a's restart
/// method is `restart(&mut cluster)`.
fn start(restart: impl FnOnce(&mut Pg) -> Option<Vec<String>>) -> (Pg, Setup, Medic) {
    let mut c = Pg::with_replica();
    c.primary
        .psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
    c.wait_caught_up(Duration::from_secs(20));
    let argv = restart(&mut c);
    let s = setup(&c, argv.as_deref());
    let medic = Medic::start(&s.config, &s.dir.path().join("medic.log"));
    // medic sees the cluster's primary before it dies (the member to restart
    // is the one last seen as primary): its store opened, then a few checks.
    wait_until(Duration::from_secs(30), "medic to open its store", || {
        s.db.exists()
    });
    std::thread::sleep(Duration::from_secs(2));
    (c, s, medic)
}

/// SIGKILL of the postmaster → the primary accepts an INSERT again.
fn kill_and_wait_back(c: &mut Pg) -> Duration {
    let killed = Instant::now();
    c.primary.kill9();
    wait_until(
        Duration::from_secs(60),
        "the primary to accept an INSERT again (restarted in place)",
        || c.primary.try_psql("INSERT INTO t VALUES (2)").is_ok(),
    );
    killed.elapsed()
}

#[test]
fn a_postmaster_killed_on_a_live_host_is_restarted_in_place_without_a_failover() {
    let (mut c, s, mut medic) = start(|c| Some(c.primary.pg_ctl_start()));
    let back = kill_and_wait_back(&mut c);
    eprintln!(
        "SIGKILL → the primary accepted an INSERT again: {:.2}s",
        back.as_secs_f64()
    );
    let (_, tl) = resolved(&s.db);
    assert!(medic.stop().success());
    let order = [
        at(&tl, "opened: db_down firing"),
        at(
            &tl,
            "step restart-in-place: gate member passed: db-a, the member of cluster \"db\" last seen as primary",
        ),
        at(
            &tl,
            "step restart-in-place: gate not-failed-over passed: no other member answers as primary",
        ),
        at(
            &tl,
            "step restart-in-place: gate member-down passed: db-a does not answer",
        ),
        at(&tl, "step restart-in-place: gate host-alive passed: exec:"),
        at(
            &tl,
            "step restart-in-place: verified by the action: db-a restarted in place (exec: exit status 0",
        ),
        at(&tl, "remediated by step restart-in-place"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{tl:#?}");
    assert!(
        !tl.iter().any(|m| m.starts_with("step promote-replica")),
        "a failover ran after the restart: {tl:#?}"
    );
    // Nothing was promoted: the replica is still one, and streams the
    // restarted primary's next write on the same timeline.
    assert!(c.replica().in_recovery());
    assert!(!c.primary.in_recovery());
    c.primary.psql("INSERT INTO t VALUES (3)");
    wait_until(
        Duration::from_secs(30),
        "the replica to stream row 3 from the restarted primary",
        || {
            c.replica()
                .try_psql("SELECT count(*) FROM t WHERE id = 3")
                .is_ok_and(|n| n == "1")
        },
    );
    assert_eq!(
        c.replica()
            .psql("SELECT status || ' ' || received_tli FROM pg_stat_wal_receiver"),
        "streaming 1"
    );
}

#[test]
fn a_restart_that_fails_falls_back_to_the_promotion() {
    // The host is gone: the ssh that would restart it fails at once.
    let ssh = [
        "sh",
        "-c",
        "echo 'ssh: connect to host db1 port 22: No route to host' >&2; exit 255",
    ]
    .map(String::from)
    .to_vec();
    let (mut c, s, mut medic) = start(|_| Some(ssh));
    c.primary.kill9();
    wait_until(
        Duration::from_secs(60),
        "the replica to take writes (the fallback promotion)",
        || c.replica().try_psql("INSERT INTO t VALUES (2)").is_ok(),
    );
    let (_, tl) = resolved(&s.db);
    assert!(medic.stop().success());
    let order = [
        at(&tl, "step restart-in-place: gate host-alive passed: exec:"),
        at(
            &tl,
            "step restart-in-place: action failed: restart of db-a in place (exec) failed: exit status 255: ssh: connect to host db1 port 22: No route to host",
        ),
        at(&tl, "step restart-in-place: refused: limit of 1 attempts"),
        at(
            &tl,
            "step promote-replica: verified by the action: db-b promoted: pg_is_in_recovery() = false, timeline 1 → 2",
        ),
        at(&tl, "step repoint-backend: verified: db_down cleared"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{tl:#?}");
    assert!(!c.primary.is_running());
}

#[test]
fn without_a_restart_method_the_step_is_skipped_and_the_failover_runs() {
    let (mut c, s, mut medic) = start(|_| None);
    c.primary.kill9();
    wait_until(
        Duration::from_secs(60),
        "the replica to take writes (the failover)",
        || c.replica().try_psql("INSERT INTO t VALUES (2)").is_ok(),
    );
    let (_, tl) = resolved(&s.db);
    assert!(medic.stop().success());
    let order = [
        at(&tl, "opened: db_down firing"),
        at(
            &tl,
            "step restart-in-place: skipped: db has no restart method configured (targets.db-a.postgres.restart, targets.db-b.postgres.restart)",
        ),
        at(
            &tl,
            "step promote-replica: verified by the action: db-b promoted",
        ),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{tl:#?}");
    assert!(
        !tl.iter()
            .any(|m| m.starts_with("step restart-in-place: gate")),
        "a skipped step evaluates no gate: {tl:#?}"
    );
}

#[test]
#[ignore = "timing harness for docs/performance.md"]
fn restart_in_place_trials() {
    let runs: usize = std::env::var("MEDIC_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let summary = |what: &str, mut all: Vec<f64>| {
        all.sort_by(f64::total_cmp);
        println!(
            "{what}, {runs} trials: median {:.2}s, min {:.2}s, max {:.2}s",
            all[all.len() / 2],
            all[0],
            all[all.len() - 1]
        );
    };
    let mut restarts = Vec::new();
    for i in 0..runs {
        let (mut c, s, mut medic) = start(|c| Some(c.primary.pg_ctl_start()));
        let back = kill_and_wait_back(&mut c);
        let (_, tl) = resolved(&s.db);
        assert!(medic.stop().success());
        let verified = tl
            .iter()
            .find(|m| m.starts_with("step restart-in-place: verified by the action"))
            .cloned()
            .unwrap_or_default();
        eprintln!(
            "trial {}: SIGKILL → INSERT accepted {:.2}s ({verified})",
            i + 1,
            back.as_secs_f64()
        );
        assert!(c.replica().in_recovery(), "a failover ran");
        restarts.push(back.as_secs_f64());
    }
    // For comparison, on the same clock: no restart method, the failover.
    let mut failovers = Vec::new();
    for i in 0..runs {
        let (mut c, s, mut medic) = start(|_| None);
        let killed = Instant::now();
        c.primary.kill9();
        wait_until(
            Duration::from_secs(60),
            "the replica to take writes (the failover)",
            || c.replica().try_psql("INSERT INTO t VALUES (2)").is_ok(),
        );
        let took = killed.elapsed();
        resolved(&s.db);
        assert!(medic.stop().success());
        eprintln!(
            "failover trial {}: SIGKILL → the promoted replica took an INSERT {:.2}s",
            i + 1,
            took.as_secs_f64()
        );
        failovers.push(took.as_secs_f64());
    }
    summary(
        "restart in place (SIGKILL → INSERT on the restarted primary)",
        restarts,
    );
    summary(
        "failover without a restart method (SIGKILL → INSERT on the promoted replica)",
        failovers,
    );
}

/// A server that comes back in recovery (as one demoted on disk by an
/// earlier failover does) is not a restored primary: the action fails, so
/// the plan's failover is the fallback. The action on its own, without
/// the daemon.
#[test]
fn a_server_that_comes_back_as_a_standby_is_not_a_restored_primary() {
    use medic::remedy::pg_restart::{Restart, RestartParams};
    use medic::remedy::{Action, ActionContext};
    let mut c = Pg::primary();
    let start = c.primary.pg_ctl_start();
    // standby.signal first, then pg_ctl start (retried while the killed
    // server's backends still hold its shared memory).
    let mut argv: Vec<String> = [
        "sh",
        "-c",
        "touch \"$0/standby.signal\"; for i in 1 2 3 4 5 6 7 8 9 10; do \"$@\" && exit 0; sleep 0.3; done; exit 1",
    ]
    .map(String::from)
    .to_vec();
    argv.push(c.primary.data.display().to_string());
    argv.extend(start);
    let cfg = medic::config::load_str(
        "medic.yaml",
        &format!(
            "targets:\n  db: {{ postgres: {{ host: 127.0.0.1, port: {}, user: postgres, dbname: postgres, restart: {{ exec: {} }} }} }}\n",
            c.primary.port,
            serde_json::to_string(&argv).unwrap()
        ),
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let a = Restart::build(
        &RestartParams {
            target: "db".into(),
            host_timeout: None,
            ready_within: Some("10s".parse().unwrap()),
        },
        &cfg,
    )
    .unwrap();
    c.primary.kill9();
    let r = block_on(async {
        let mut ctx = ActionContext::new("t", Duration::from_secs(30));
        let pre = a.preflight(&ctx).await;
        assert_eq!(pre.refusal(), None, "{:#?}", pre.gates);
        ctx.preflight = pre.data;
        a.run(&ctx).await
    });
    assert!(!r.ok, "{r:#?}");
    assert!(
        r.detail.starts_with(
            "db was restarted (exec: exit status 0) but came back in recovery (a standby), not as a writable primary"
        ),
        "{}",
        r.detail
    );
    assert!(c.primary.in_recovery());
}
