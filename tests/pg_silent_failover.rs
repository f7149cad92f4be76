//! Acceptance (issue 14): a real PostgreSQL primary that goes *silent*,
//! with a real streaming replica, under the real medic binary running the
//! shipped `rules/database-failure.yaml` unchanged (every 2s, timeout 2s,
//! for 6s; promotion after 4 unreachable checks, 10s since the primary's
//! last answer, one per hour).
//!
//! The primary runs in its own network namespace (root only, as CI has),
//! listening on its veth address; its replica and medic run in the test's
//! namespace. It goes silent in two ways:
//! - SIGSTOP of the postmaster and every process it started (its kernel
//!   still accepts TCP; nothing answers);
//! - `iptables -j DROP` of every packet into its namespace (a host gone).
//!
//! Each time the incident opens after `for:`, its opening says
//! `unreachable` (never unknown), and the promotion passes every gate
//! (cooldown, the primary unreachable for 4 checks and 10s since its last
//! answer, counted from unreachable outcomes, no node answering as primary, the candidate's
//! lag, the ranking) and the replica takes writes. The clients are
//! repointed through a fake Kubernetes API (the shipped step's PATCH is
//! recorded).
//!
//! A medic cut off from everything (its own namespace's link down) is
//! blind: the database-failure incident never opens and nothing is
//! promoted.
//!
//! `silent_trials` (ignored; `scripts/pg-silent-trials.sh`) measures
//! detection and the promotion total for SIGKILL, SIGSTOP and DROP.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::fake_kube::FakeKube;
use common::netns::Netns;
use common::pg::Pg;
use common::{Medic, block_on, wait_until};
use medic::store::{Incident, SqliteStore, prelude::*};
use nix::sys::signal::Signal;
use serde_json::json;

/// The shipped rule's timings (asserted against the file below).
const FOR: Duration = Duration::from_secs(6);
const UNREACHABLE_FOR: Duration = Duration::from_secs(10);
/// The shipped rule's check interval.
const EVERY: Duration = Duration::from_secs(2);
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/keneyapp/deployments/backend";

/// The shipped rule's timings, as this test expects them.
const SHIPPED: &[&str] = &[
    "every: 2s",
    "timeout: 2s",
    "for: 6s",
    "unreachable_checks: 4",
    "unreachable_for: 10s",
    "cooldown: 1h",
];

/// The rule file medic runs: the shipped one, or (for the harness, to
/// compare timings) `MEDIC_DB_RULE`; and whether it is the shipped one.
fn rule_file() -> (PathBuf, bool) {
    match std::env::var_os("MEDIC_DB_RULE") {
        Some(p) => (PathBuf::from(p), false),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/database-failure.yaml"),
            true,
        ),
    }
}

/// How the primary stops answering.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// SIGKILL of the postmaster (the reference: refused at once).
    Kill,
    /// SIGSTOP of the postmaster and all its processes.
    Stop,
    /// Every packet into the primary's namespace dropped.
    Drop,
}

/// An HTTP server answering 200 to every request (the app is healthy:
/// `app_unhealthy` stays ok) until dropped.
struct Healthy {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Healthy {
    fn start(addr: &str) -> Healthy {
        let l = TcpListener::bind((addr, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut buf = [0u8; 4096];
                        let _ = c.read(&mut buf);
                        let _ = c.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Healthy {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Healthy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Thaws a SIGSTOPped primary (the postmaster `pid` and its processes)
/// before the cluster is dropped: a stopped postmaster cannot shut down.
struct Thaw(Option<i32>);

impl Drop for Thaw {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            common::pg::signal_tree(pid, Signal::SIGCONT);
        }
    }
}

/// A cluster, the app, a fake Kubernetes API and medic running the
/// shipped database-failure rule, all running.
struct World {
    dir: tempfile::TempDir,
    db: PathBuf,
    kube: FakeKube,
    _app: Healthy,
    medic: Medic,
    // Keeps the fake API serving.
    _rt: tokio::runtime::Runtime,
}

/// medic's config for cluster `c` (members `db-main`, `db-replica`, as in
/// the shipped medic.yaml, peer_timeout 2s), the app on `app_port`, the
/// backend behind `kubeconfig`, and the shipped rule file copied as is.
fn write_config(dir: &Path, c: &Pg, app: &str, kubeconfig: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    let (path, shipped) = rule_file();
    let text = std::fs::read_to_string(&path).unwrap();
    for timing in shipped.then_some(SHIPPED).into_iter().flatten() {
        assert!(
            text.contains(timing),
            "the shipped rule changed ({timing}): update this test's figures"
        );
    }
    std::fs::write(dir.join("rules/database-failure.yaml"), text).unwrap();
    // medic's own blindness pages (the monitoring-system scenario's check).
    std::fs::write(
        dir.join("rules/medic-blind.yaml"),
        "scenario: medic-blind\nsummary: medic cannot see\nseverity: high\nrto: 30m\n\
         symptoms:\n  blind:\n    check: { vantage: {} }\n    every: 500ms\n    for: 1s\n    clear_for: 1s\n\
         when: { any: [blind] }\nplan: []\nescalation: default\n",
    )
    .unwrap();
    let member = |n: &common::pg::PgNode| {
        format!(
            "{{ postgres: {{ host: {}, port: {}, user: postgres, dbname: postgres, peer_timeout: 2s }} }}",
            n.host, n.port
        )
    };
    let config = dir.join("medic.yaml");
    std::fs::write(
        &config,
        format!(
            "mode: enforce\n\
             store: {{ sqlite: {{ path: state/medic.db }} }}\n\
             rules: [rules]\n\
             shutdown_grace: 2s\n\
             targets:\n\
             \x20 db: {{ postgres: {{ members: [db-main, db-replica] }} }}\n\
             \x20 db-main: {}\n\
             \x20 db-replica: {}\n\
             \x20 app: {{ http: {{ url: \"http://{app}/health\" }} }}\n\
             \x20 backend: {{ kubernetes: {{ kind: Deployment, name: backend, namespace: keneyapp, kubeconfig: {} }} }}\n\
             \x20 db-restore: {{ postgres: {{ host: 127.0.0.1, port: 9 }} }}\n\
             jobs:\n\
             \x20 db-backup: {{ schedule: '0 2 * * *', postgres.backup: {{ target: db-replica, directory: backups }} }}\n",
            member(&c.primary),
            member(c.replica()),
            kubeconfig.display()
        ),
    )
    .unwrap();
    config
}

/// The fake API's Deployment: GET and PATCH answer it.
fn deployment() -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "backend", "namespace": "keneyapp", "generation": 1, "uid": "d-1" },
        "spec": { "replicas": 1, "template": { "spec": { "containers": [{ "name": "backend", "image": "backend:1" }] } } },
        "status": { "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1 }
    })
}

/// Starts the app, the fake API and medic for cluster `c`, medic inside
/// `medic_ns` when given, the app on `app_addr`; returns once medic holds
/// its session to the primary (it has seen it as the primary).
fn world(c: &Pg, app_addr: &str, medic_ns: Option<&Netns>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kube = rt.block_on(FakeKube::start());
    kube.put(DEPLOYMENT, deployment());
    let kubeconfig = kube.kubeconfig(dir.path(), "keneyapp");
    let app = Healthy::start(app_addr);
    let config = write_config(
        dir.path(),
        c,
        &format!("{app_addr}:{}", app.port),
        &kubeconfig,
    );
    let log = dir.path().join("medic.log");
    let medic = match medic_ns {
        Some(ns) => Medic::start_in(ns, &config, &log),
        None => Medic::start(&config, &log),
    };
    // Held: medic opens it only after a run that found db-main the primary;
    // a discovery's probe sessions are idle too, for milliseconds only.
    let start = Instant::now();
    while c.primary.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'medic' AND state = 'idle' AND backend_start < now() - interval '1 second'",
    ) == "0"
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "medic holds no session on the primary after 30 s; medic's log ends:\n{}\nthe primary's log ends:\n{}",
            common::log_tail(&medic.log, 0, 30),
            c.primary.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    World {
        db: dir.path().join("state/medic.db"),
        dir,
        kube,
        _app: app,
        medic,
        _rt: rt,
    }
}

/// A primary in `ns` with table `t` (one row), its replica caught up.
fn cluster(ns: &Netns) -> Pg {
    let c = Pg::start_in(ns, 1);
    c.primary
        .psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
    c.wait_caught_up(Duration::from_secs(30));
    c
}

fn fault(c: &mut Pg, ns: &Netns, f: Fault) {
    match f {
        Fault::Kill => c.primary.kill9(),
        Fault::Stop => c.primary.signal_all(Signal::SIGSTOP),
        Fault::Drop => ns.drop_all(),
    }
}

fn incident(db: &Path) -> Option<Incident> {
    incident_of(db, "database-failure")
}

fn incident_of(db: &Path, scenario: &str) -> Option<Incident> {
    block_on(async {
        let s = SqliteStore::open(db).await.ok()?;
        s.recent_incidents(10)
            .await
            .ok()?
            .into_iter()
            .find(|i| i.scenario == scenario)
    })
}

/// Every timeline entry: `message data`.
fn timeline(db: &Path, id: i64) -> Vec<String> {
    block_on(async {
        let s = SqliteStore::open(db).await.unwrap();
        s.timeline(id)
            .await
            .unwrap()
            .iter()
            .map(|e| format!("{} {}", e.message, e.data))
            .collect()
    })
}

/// What one failover took, from the fault.
struct Took {
    /// The incident was in the store.
    opened: Duration,
    /// The promoted replica accepted an INSERT.
    promoted: Duration,
}

/// Faults the primary and waits (polling) for the incident and for the
/// replica to take a write.
fn fail_over(c: &mut Pg, ns: &Netns, w: &World, f: Fault) -> Took {
    // A fault comes at any moment of the check interval (2s), not just
    // after a check: a uniform phase, from the clock's nanoseconds.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::thread::sleep(Duration::from_micros(u64::from(nanos % 2_000_000)));
    fault(c, ns, f);
    let at = Instant::now();
    let mut opened = None;
    loop {
        if opened.is_none() && incident(&w.db).is_some() {
            opened = Some(at.elapsed());
        }
        if c.replica().try_psql("INSERT INTO t VALUES (2)").is_ok() {
            let promoted = at.elapsed();
            return Took {
                opened: opened.unwrap_or(promoted),
                promoted,
            };
        }
        assert!(
            at.elapsed() < Duration::from_secs(90),
            "{f:?}: the replica took no write within 90 s; medic's log ends:\n{}\nthe replica's log ends:\n{}",
            common::log_tail(&w.medic.log, 0, 60),
            c.replica().log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The silent-primary acceptance: incident after `for:`, unreachable on
/// its timeline, every gate in order, the replica promoted and writable,
/// the clients repointed.
fn silent_primary_is_promoted_through_every_gate(f: Fault) {
    let ns = Netns::new();
    let mut c = cluster(&ns);
    let _thaw = Thaw(c.primary.pid());
    let mut w = world(&c, "127.0.0.1", None);
    let took = fail_over(&mut c, &ns, &w, f);
    eprintln!(
        "{f:?}: incident after {:.2}s, the promoted replica took a write after {:.2}s",
        took.opened.as_secs_f64(),
        took.promoted.as_secs_f64()
    );
    assert!(
        took.opened >= FOR,
        "opened {:?} after the fault, before for: 6s",
        took.opened
    );
    assert!(
        // The silence counts from the last answer, at most one interval
        // before the fault.
        took.promoted >= UNREACHABLE_FOR - EVERY,
        "promoted {:?} after the fault, before unreachable_for: 10s since a check before it",
        took.promoted
    );
    assert!(!c.replica().in_recovery());
    assert_eq!(c.replica().psql("SELECT count(*) FROM t"), "2");
    // The repoint step ran once the promotion was verified.
    let mut seen = Vec::new();
    wait_until(Duration::from_secs(30), "the repoint PATCH", || {
        seen.extend(w.kube.take_seen());
        seen.iter().any(|s| {
            s.method == "PATCH" && s.uri.starts_with(DEPLOYMENT) && s.body.contains("replica-url")
        })
    });
    assert!(w.medic.stop().success());

    let inc = incident(&w.db).unwrap();
    let tl = timeline(&w.db, inc.id);
    let at = |p: &str| {
        tl.iter()
            .position(|m| m.starts_with(p))
            .unwrap_or_else(|| panic!("{f:?}: no {p:?} in {tl:#?}"))
    };
    let order = [
        at("opened: db_down firing"),
        at("step promote-replica: gate cooldown passed: no failover of cluster \"db\""),
        at(
            "step promote-replica: gate primary-unreachable passed: symptom db_down saw \"db\" fail",
        ),
        at("step promote-replica: gate cluster-roles passed: cluster \"db\": old primary db-main"),
        at(
            "step promote-replica: gate no-other-primary passed: no reachable node answers as primary (db-main is unreachable",
        ),
        at(
            "step promote-replica: gate old-primary-fenced passed: db-main cannot be reached to fence it",
        ),
        at("step promote-replica: gate candidate db-replica passed: in recovery, streaming"),
        at("step promote-replica: gate candidate-chosen passed: db-replica"),
        at(
            "step promote-replica: verified by the action: db-replica promoted: pg_is_in_recovery() = false, timeline 1 → 2",
        ),
        at("step repoint-backend: running k8s.set-env"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{f:?}: {tl:#?}");
    // Silent, not blind: the opening says unreachable, and why.
    let opening = &tl[order[0]];
    assert!(opening.contains("\"outcome\":\"unreachable\""), "{opening}");
    assert!(
        opening.contains("medic's vantage is healthy: it still reaches"),
        "{opening}"
    );
    assert!(opening.contains("db-replica"), "{opening}");
    assert!(
        !tl.iter().any(|l| l.contains("\"outcome\":\"unknown\"")),
        "{f:?}: {tl:#?}"
    );
    // The gate counted at least 4 failing checks and at least 10 s since
    // the primary's last answer.
    let gate = &tl[order[2]];
    let streak: u32 = gate
        .split("fail ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{gate}"));
    let secs: f64 = gate
        .split("consecutive checks, ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{gate}"));
    assert!(streak >= 4 && secs >= 10.0, "{gate}");
    assert!(
        gate.contains("since its last answer (need 4 over 10s)"),
        "{gate}"
    );
    drop(w.dir);
}

#[test]
fn a_sigstopped_primary_is_unreachable_and_the_replica_is_promoted_through_every_gate() {
    silent_primary_is_promoted_through_every_gate(Fault::Stop);
}

#[test]
fn a_packet_dropping_primary_is_unreachable_and_the_replica_is_promoted_through_every_gate() {
    silent_primary_is_promoted_through_every_gate(Fault::Drop);
}

/// medic in a namespace of its own whose link goes down: every member is
/// silent and so is the app. medic is blind: the database-failure
/// incident never opens, nothing is promoted, and the blindness scenario
/// (a `vantage` check, as the monitoring-system scenario has) opens.
#[test]
fn a_cut_off_medic_is_blind_and_promotes_nothing() {
    let ns = Netns::new();
    let c = Pg::start_reachable_from(&ns, 1);
    c.wait_caught_up(Duration::from_secs(30));
    let w = world(&c, &ns.host_addr, Some(&ns));
    ns.cut_inside();
    // Long past `for:` (6s) plus `unreachable_for` (10s) and a check.
    let cut = Instant::now();
    while cut.elapsed() < FOR + UNREACHABLE_FOR + Duration::from_secs(4) {
        assert!(
            incident(&w.db).is_none(),
            "an incident opened while medic was blind: {:#?}",
            incident(&w.db).map(|i| timeline(&w.db, i.id))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(c.replica().in_recovery(), "promoted while blind");
    assert!(!c.primary.in_recovery());
    // ...and it says so: the blindness scenario opened, and why.
    let blind = incident_of(&w.db, "medic-blind").unwrap_or_else(|| {
        panic!(
            "no blindness incident; medic's log ends:\n{}",
            common::log_tail(&w.medic.log, 0, 40)
        )
    });
    let tl = timeline(&w.db, blind.id);
    assert!(
        tl.iter()
            .any(|l| l.contains("medic is blind: it reaches nothing")),
        "{tl:#?}"
    );
}

fn median_p95(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let p95 = v[((v.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)];
    (v[v.len() / 2], p95)
}

/// Harness (`scripts/pg-silent-trials.sh`): `MEDIC_TRIALS` (default 10)
/// failovers per fault on a fresh cluster under a fresh medic with the
/// shipped rule; prints, per fault, the median and p95 from the fault to
/// the incident in the store and to the promoted replica's first INSERT.
#[test]
#[ignore = "harness: scripts/pg-silent-trials.sh"]
fn silent_trials() {
    let runs: usize = std::env::var("MEDIC_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let faults: Vec<Fault> = match std::env::var("MEDIC_FAULTS").ok().as_deref() {
        Some(list) => list
            .split(',')
            .map(|f| match f.trim() {
                "kill" => Fault::Kill,
                "stop" => Fault::Stop,
                "drop" => Fault::Drop,
                other => panic!("MEDIC_FAULTS: unknown fault {other:?} (kill, stop, drop)"),
            })
            .collect(),
        None => vec![Fault::Kill, Fault::Stop, Fault::Drop],
    };
    let (rule, _) = rule_file();
    let text = std::fs::read_to_string(&rule).unwrap();
    let timings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            [
                "every:",
                "timeout:",
                "for:",
                "unreachable_checks:",
                "unreachable_for:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .collect();
    let mut lines = vec![format!(
        "rule {} ({}); members' peer_timeout 2s",
        rule.display(),
        timings.join(", ")
    )];
    for f in faults {
        let (mut opened, mut promoted, mut failed) = (Vec::new(), Vec::new(), 0);
        for i in 0..runs {
            // A trial that fails is counted and reported, not hidden.
            let trial = std::panic::catch_unwind(|| {
                let ns = Netns::new();
                let mut c = cluster(&ns);
                let _thaw = Thaw(c.primary.pid());
                let mut w = world(&c, "127.0.0.1", None);
                let t = fail_over(&mut c, &ns, &w, f);
                assert!(w.medic.stop().success());
                t
            });
            let Ok(t) = trial else {
                eprintln!("{f:?} trial {}: FAILED (above)", i + 1);
                failed += 1;
                continue;
            };
            eprintln!(
                "{f:?} trial {}: incident {:.2}s, promoted replica took a write {:.2}s",
                i + 1,
                t.opened.as_secs_f64(),
                t.promoted.as_secs_f64()
            );
            opened.push(t.opened.as_secs_f64());
            promoted.push(t.promoted.as_secs_f64());
        }
        if opened.is_empty() {
            lines.push(format!("{f:?}: all {runs} trials failed"));
            continue;
        }
        let (om, op) = median_p95(opened);
        let (pm, pp) = median_p95(promoted);
        lines.push(format!(
            "{f:?}, {} trials ({failed} failed): fault → incident median {om:.2}s p95 {op:.2}s; fault → promoted replica takes an INSERT median {pm:.2}s p95 {pp:.2}s",
            runs - failed
        ));
    }
    for l in lines {
        println!("{l}");
    }
}
