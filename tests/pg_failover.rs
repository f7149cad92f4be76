//! Acceptance: the real medic binary fails a real PostgreSQL primary over
//! to its streaming replica. The test kills the primary with SIGKILL; the
//! database-failure scenario's chain (promote → repoint → restart) runs,
//! every gate on the timeline; the replica takes writes; the old primary is
//! fenced (it comes back read-only). A promotion that fails runs no
//! follow-up step.
//!
//! The "app" is a stand-in run by the test: a TCP port that closes when its
//! database dies and opens again once its config points at the promoted
//! replica and it was restarted, which is what `app_unhealthy` watches.
//!
//! `failover_benchmark` (ignored; run it with `cargo test --release --test
//! pg_failover -- --ignored --nocapture`) repeats the failover and prints
//! the median and p95 from SIGKILL to the first write accepted by the
//! promoted replica.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::pg::Pg;
use common::{Medic, block_on, free_port, wait_until};
use medic::store::{AttemptOutcome, IncidentState, SqliteStore, prelude::*};

/// The app stand-in: healthy (listening) until its database dies; healthy
/// again once `env_file` names the replica's port and `restarted` exists.
struct FakeApp {
    stop: Arc<AtomicBool>,
    db_lost: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApp {
    fn start(port: u16, env_file: PathBuf, restarted: PathBuf, replica_port: u16) -> FakeApp {
        let stop = Arc::new(AtomicBool::new(false));
        let db_lost = Arc::new(AtomicBool::new(false));
        let (s, lost) = (stop.clone(), db_lost.clone());
        let thread = std::thread::spawn(move || {
            let mut listener = Some(TcpListener::bind(("127.0.0.1", port)).unwrap());
            let wanted = format!(":{replica_port}/");
            while !s.load(Ordering::SeqCst) {
                let repointed =
                    std::fs::read_to_string(&env_file).is_ok_and(|t| t.contains(&wanted));
                let healthy = !lost.load(Ordering::SeqCst) || (repointed && restarted.exists());
                match (&listener, healthy) {
                    (Some(_), false) => listener = None,
                    (None, true) => listener = TcpListener::bind(("127.0.0.1", port)).ok(),
                    _ => {}
                }
                if let Some(l) = &listener {
                    l.set_nonblocking(true).unwrap();
                    while l.accept().is_ok() {}
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        FakeApp {
            stop,
            db_lost,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeApp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    db: PathBuf,
    env_file: PathBuf,
    restarted: PathBuf,
}

/// Writes medic's config and the database-failure rule for this cluster.
fn setup(c: &Pg, app_port: u16, fence: &str, on_unreachable: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("rules")).unwrap();
    let env_file = d.join("backend.env");
    let restarted = d.join("backend.restarted");
    let replica = &c.replicas[0];
    std::fs::write(
        d.join("medic.yaml"),
        format!(
            "mode: enforce\n\
             store: {{ sqlite: {{ path: state/medic.db }} }}\n\
             rules: [rules]\n\
             shutdown_grace: 5s\n\
             targets:\n  db: {}\n  db-replica: {}\n",
            c.primary.target_yaml(),
            replica.target_yaml()
        ),
    )
    .unwrap();
    let repoint = serde_json::to_string(&[
        "sh".to_string(),
        "-c".to_string(),
        format!(
            "echo DATABASE_URL=postgres://127.0.0.1:{}/postgres > {}",
            replica.port,
            env_file.display()
        ),
    ])
    .unwrap();
    let restart =
        serde_json::to_string(&["touch".to_string(), restarted.display().to_string()]).unwrap();
    std::fs::write(
        d.join("rules/database-failure.yaml"),
        format!(
            "scenario: database-failure
summary: Primary PostgreSQL database unreachable
severity: critical
rto: 2h
symptoms:
  db_down:
    check: {{ tcp: {{ target: db }} }}
    every: 500ms
    timeout: 500ms
    for: 1s
    clear_for: 5s
  app_unhealthy:
    check: {{ tcp: {{ address: \"127.0.0.1:{app_port}\" }} }}
    every: 200ms
    timeout: 200ms
    clear_for: 400ms
when: {{ any: [db_down] }}
plan:
  - name: promote-replica
    action: postgres.promote-replica
    primary: db
    replicas: [db-replica]
    max_lag_bytes: 1048576
    unreachable_checks: 3
    unreachable_for: 1s
    cooldown: 1h
    fence: {{ args: {fence} }}
    old_primary_unreachable: {on_unreachable}
    timeout: 30s
    then: continue
    limit: {{ attempts: 1, per: 1h }}
  - name: repoint-backend
    action: exec
    args: {repoint}
    then: continue
    limit: {{ attempts: 1, per: 1h }}
  - name: restart-backend
    action: exec
    args: {restart}
    verify: {{ clears: app_unhealthy, within: 20s }}
    limit: {{ attempts: 1, per: 1h }}
escalation: default
"
        ),
    )
    .unwrap();
    Setup {
        config: d.join("medic.yaml"),
        db: d.join("state/medic.db"),
        env_file,
        restarted,
        dir,
    }
}

/// The fence used in the happy path: the old primary's data directory
/// gets `standby.signal`, so should it ever start again it comes up as a
/// read-only standby, never as a second writable primary.
fn standby_fence(c: &Pg) -> String {
    serde_json::to_string(&[
        "touch".to_string(),
        c.primary.data.join("standby.signal").display().to_string(),
    ])
    .unwrap()
}

async fn timeline(
    db: &Path,
) -> (
    medic::store::Incident,
    Vec<String>,
    Vec<medic::store::Attempt>,
) {
    let store = SqliteStore::open(db).await.unwrap();
    let inc = store.recent_incidents(10).await.unwrap().remove(0);
    let tl = store
        .timeline(inc.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    let ledger = store.incident_attempts(inc.id).await.unwrap();
    (inc, tl, ledger)
}

/// Kills the primary under a running medic; returns the seconds from the
/// SIGKILL to the first write the promoted replica accepted.
fn fail_over(c: &mut Pg, s: &Setup, app: &FakeApp) -> f64 {
    let replica_port = c.replicas[0].port;
    let killed = Instant::now();
    c.primary.kill9();
    app.db_lost.store(true, Ordering::SeqCst);
    let replica = &c.replicas[0];
    let mut took = None;
    while killed.elapsed() < Duration::from_secs(60) {
        if replica.try_psql("INSERT INTO t VALUES (2)").is_ok() {
            took = Some(killed.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = took.unwrap_or_else(|| panic!("replica on {replica_port} never took a write"));
    wait_until(Duration::from_secs(30), "the plan to finish", || {
        block_on(async {
            let store = SqliteStore::open(&s.db).await.unwrap();
            match store.recent_incidents(1).await.unwrap().first() {
                Some(i) => store.timeline(i.id).await.unwrap(),
                None => Vec::new(),
            }
        })
        .iter()
        .any(|e| e.message.starts_with("remediated by step"))
    });
    took
}

/// A cluster whose primary holds table `t` (one row), its replica caught
/// up; the app stand-in up; medic running the database-failure scenario
/// with the fence `fence(cluster)` for 2 s.
fn medic_watching(
    fence: impl FnOnce(&Pg) -> String,
    on_unreachable: &str,
) -> (Pg, Setup, FakeApp, Medic) {
    let c = Pg::start(1);
    c.primary
        .psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
    c.wait_caught_up(Duration::from_secs(20));
    let app_port = free_port();
    let s = setup(&c, app_port, &fence(&c), on_unreachable);
    let app = FakeApp::start(
        app_port,
        s.env_file.clone(),
        s.restarted.clone(),
        c.replicas[0].port,
    );
    let medic = Medic::start(&s.config, &s.dir.path().join("medic.log"));
    std::thread::sleep(Duration::from_secs(2));
    (c, s, app, medic)
}

#[test]
fn kill9_primary_promotes_the_replica_through_every_gate_and_fences_the_old_primary() {
    let (mut c, s, app, mut medic) = medic_watching(standby_fence, "proceed");

    let took = fail_over(&mut c, &s, &app);
    eprintln!("SIGKILL → promoted replica took a write: {took:.2}s");
    assert!(medic.stop().success());

    let replica = &c.replicas[0];
    assert!(!replica.in_recovery());
    assert_eq!(replica.psql("SELECT count(*) FROM t"), "2");
    let (inc, tl, ledger) = block_on(timeline(&s.db));
    assert_eq!(inc.state, IncidentState::Remediating);
    let find = |p: &str| {
        tl.iter()
            .position(|m| m.starts_with(p))
            .unwrap_or_else(|| panic!("no {p:?} in {tl:#?}"))
    };
    let order = [
        find("opened: db_down firing"),
        find("step promote-replica: gate cooldown passed: no failover of cluster \"db\""),
        find(
            "step promote-replica: gate primary-unreachable passed: symptom db_down saw \"db\" fail",
        ),
        find(
            "step promote-replica: gate no-other-primary passed: no reachable node answers as primary",
        ),
        find("step promote-replica: gate candidate db-replica passed: in recovery, streaming"),
        find("step promote-replica: gate candidate-chosen passed: db-replica"),
        find("step promote-replica: running postgres.promote-replica"),
        find(
            "step promote-replica: verified by the action: db-replica promoted: pg_is_in_recovery() = false, timeline 1 → 2",
        ),
        find("step promote-replica worked; continuing with step repoint-backend"),
        find("step repoint-backend: running exec"),
        find("step repoint-backend worked; continuing with step restart-backend"),
        find("step restart-backend: running exec"),
        find("step restart-backend: verified: app_unhealthy cleared"),
        find("remediated by step restart-backend"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{tl:#?}");
    let outcomes: Vec<_> = ledger
        .iter()
        .map(|a| (a.step.as_str(), a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("promote-replica", Some(AttemptOutcome::Succeeded)),
            ("repoint-backend", Some(AttemptOutcome::Succeeded)),
            ("restart-backend", Some(AttemptOutcome::Succeeded)),
        ]
    );
    // The ledger keeps what medic saw and every gate with the attempt.
    let inputs = &ledger[0].inputs;
    assert_eq!(inputs["params"]["primary"], "db");
    assert_eq!(inputs["preflight"]["candidate"], "db-replica");
    // cooldown, primary-unreachable, no-other-primary, old-primary-fenced
    // (unreachable: proceed), candidate, candidate-chosen.
    assert_eq!(inputs["gates"].as_array().unwrap().len(), 6);
    assert!(
        inputs["observed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["symptom"] == "db_down" && o["seen"] == "failing"),
        "{inputs:#}"
    );

    // Fenced: the old primary, started again, is a read-only standby.
    c.primary.start();
    assert!(
        c.primary.in_recovery(),
        "the old primary came back writable"
    );
    assert!(c.primary.try_psql("INSERT INTO t VALUES (3)").is_err());
    drop(app);
}

#[test]
fn a_promotion_that_fails_runs_no_follow_up_step() {
    // The fence cannot fence and the rule says refuse: medic must not
    // promote, and must not repoint.
    let (mut c, s, app, mut medic) = medic_watching(
        |_| r#"[sh, -c, "echo cannot reach the fencing API >&2; exit 1"]"#.to_string(),
        "refuse",
    );
    c.primary.kill9();
    app.db_lost.store(true, Ordering::SeqCst);
    wait_until(Duration::from_secs(30), "escalation", || {
        block_on(async {
            let store = SqliteStore::open(&s.db).await.unwrap();
            store.recent_incidents(1).await.unwrap()
        })
        .first()
        .is_some_and(|i| i.state == IncidentState::Escalated)
    });
    assert!(medic.stop().success());
    let (_, tl, ledger) = block_on(timeline(&s.db));
    assert!(c.replicas[0].in_recovery(), "nothing was promoted");
    assert!(!s.env_file.exists(), "the backend was repointed anyway");
    assert!(!s.restarted.exists(), "the backend was restarted anyway");
    assert!(
        ledger.iter().all(|a| a.step == "promote-replica"),
        "a follow-up step ran: {ledger:#?}"
    );
    assert_eq!(ledger[0].outcome, Some(AttemptOutcome::Failed));
    assert!(
        ledger[0].reason.starts_with(
            "fence failed (exit status 1: cannot reach the fencing API); not promoting"
        ),
        "{}",
        ledger[0].reason
    );
    assert!(
        tl.iter().any(|m| m
            == "step promote-replica did not work, so its follow-up steps (repoint-backend, restart-backend) do not run"),
        "{tl:#?}"
    );
    drop(app);
}

#[test]
#[ignore = "benchmark: cargo test --release --test pg_failover -- --ignored --nocapture"]
fn failover_benchmark() {
    let runs: usize = std::env::var("MEDIC_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut times = Vec::new();
    for i in 0..runs {
        let (mut c, s, app, mut medic) = medic_watching(standby_fence, "proceed");
        let took = fail_over(&mut c, &s, &app);
        assert!(medic.stop().success());
        eprintln!("run {}: {took:.3}s", i + 1);
        times.push(took);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let p95 = times[((times.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)];
    eprintln!(
        "PostgreSQL primary SIGKILL → replica promoted and writable ({runs} runs): median {median:.2}s, p95 {p95:.2}s"
    );
}
