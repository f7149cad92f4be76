//! Acceptance: high availability with two real medic processes sharing one
//! private PostgreSQL (advisory-lock leadership, fenced terms).
//!
//! - kill -9 the leader while its action runs: the follower takes over
//!   within the lease, verifies the attempt in flight instead of running it
//!   again, and the incident's timeline continues in one piece;
//! - SIGSTOP the leader past its lease: the follower takes over; SIGCONT
//!   the old one: it acts on nothing and its writes are refused (fenced).
//!
//! Both print the measured takeover time (README, "Performance").

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use medic::store::{IncidentState, PostgresStore, prelude::*};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The lease both replicas use.
const LEASE: &str = "2s";

fn rule(port: u16, runs: &Path, sleep: u32) -> String {
    port_closed_rule_with_plan(
        "port-closed",
        "Port closed",
        port,
        &format!(
            "\x20 - name: reopen\n\
             \x20   action: exec\n\
             \x20   args: [\"sh\", \"-c\", \"echo run >> {} && sleep {sleep}\"]\n\
             \x20   timeout: 30s\n\
             \x20   verify: {{ within: 30s }}\n\
             \x20   limit: {{ attempts: 1, per: 1h }}\n",
            runs.display()
        ),
    )
}

struct Replica {
    dir: PathBuf,
    http: u16,
}

impl Replica {
    fn new(root: &Path, name: &str, pg_port: u16, rule: &str) -> Replica {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        std::fs::write(dir.join("rules/port.yaml"), rule).unwrap();
        let http = free_port();
        std::fs::write(
            dir.join("medic.yaml"),
            format!(
                "mode: enforce\n\
                 store: {{ postgres: {{ host: 127.0.0.1, port: {pg_port}, user: postgres, dbname: postgres }} }}\n\
                 leadership: {{ postgres: {{ lease_duration: {LEASE} }} }}\n\
                 rules: [rules]\n\
                 shutdown_grace: 2s\n\
                 http: {{ listen: \"127.0.0.1:{http}\" }}\n"
            ),
        )
        .unwrap();
        Replica { dir, http }
    }

    fn start(&self) -> Medic {
        Medic::start_with_env(
            &self.dir.join("medic.yaml"),
            &self.dir.join("medic.log"),
            &[("MEDIC_IDENTITY", self.dir.display().to_string())],
        )
    }

    /// `/readyz`'s role and term, if it answers.
    fn role(&self) -> Option<(String, Option<u64>)> {
        block_on(async {
            let r = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{}/readyz", self.http))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            Some((
                v["status"]["role"].as_str()?.to_string(),
                v["status"]["term"].as_u64(),
            ))
        })
    }

    fn metrics(&self) -> String {
        block_on(async {
            reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    }

    fn is(&self, role: &str) -> bool {
        self.role().is_some_and(|(r, _)| r == role)
    }
}

fn store(pg_port: u16) -> PostgresStore {
    block_on(PostgresStore::open(&medic::config::PostgresTarget {
        host: "127.0.0.1".into(),
        port: pg_port,
        user: "postgres".into(),
        password: None,
        dbname: "postgres".into(),
        ..Default::default()
    }))
    .unwrap()
}

fn runs(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// The value of an unlabelled metric line `name value`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn kill_9_leader_mid_action_follower_takes_over_without_running_it_twice() {
    let pg = pg::Pg::primary();
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let runs_file = root.path().join("runs");
    let rule = rule(port, &runs_file, 4);
    let a = Replica::new(root.path(), "a", pg.primary.port, &rule);
    let b = Replica::new(root.path(), "b", pg.primary.port, &rule);

    let mut ma = a.start();
    wait_until(Duration::from_secs(20), "a to lead", || a.is("leader"));
    let _mb = b.start();
    wait_until(Duration::from_secs(20), "b to follow", || b.is("follower"));
    assert!(b.metrics().contains("medic_is_leader 0"), "{}", b.metrics());

    // Nothing listens: the leader opens an incident and runs its step.
    wait_until(Duration::from_secs(20), "the action to start", || {
        runs(&runs_file) == 1
    });
    let st = store(pg.primary.port);
    let incident = block_on(st.open_incidents()).unwrap()[0].clone();

    let killed = Instant::now();
    ma.kill9();
    wait_until(Duration::from_secs(20), "b to take over", || b.is("leader"));
    let takeover = killed.elapsed();
    println!("takeover after kill -9 (lease {LEASE}): {takeover:?}");
    let (_, term) = b.role().unwrap();
    assert_eq!(term, Some(2), "a new term");

    // The new leader verifies the attempt in flight, it does not rerun it.
    wait_until(Duration::from_secs(10), "b to verify the attempt", || {
        block_on(st.timeline(incident.id))
            .unwrap()
            .iter()
            .any(|e| e.message.contains("verifying instead of running it again"))
    });
    let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    wait_until(Duration::from_secs(30), "the incident to resolve", || {
        block_on(st.incident(incident.id)).unwrap().unwrap().state == IncidentState::Resolved
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(runs(&runs_file), 1, "the action ran exactly once");
    let attempts = block_on(st.incident_attempts(incident.id)).unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(
        attempts[0].outcome,
        Some(medic::store::AttemptOutcome::Succeeded),
        "{attempts:#?}"
    );
    assert_eq!(block_on(st.open_incidents()).unwrap().len(), 0);

    // One continuous timeline: opened by a, resumed and closed by b, in order.
    let timeline = block_on(st.timeline(incident.id)).unwrap();
    let text: Vec<String> = timeline
        .iter()
        .map(|e| format!("{}: {}", e.kind, e.message))
        .collect();
    let at = |needle: &str| {
        text.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {text:#?}"))
    };
    let order = [
        at("opened: closed firing"),
        at("step reopen"),
        at("resuming this remediating incident"),
        at("verifying instead of running it again"),
        at("verified after restart"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text:#?}");
    assert!(timeline.windows(2).all(|w| w[0].at <= w[1].at), "{text:#?}");
    assert_eq!(
        block_on(st.current_term()).unwrap().unwrap().holder,
        b.dir.display().to_string()
    );
}

#[test]
fn sigstopped_leader_is_deposed_and_its_writes_are_fenced_after_sigcont() {
    let pg = pg::Pg::primary();
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let runs_file = root.path().join("runs");
    let rule = rule(port, &runs_file, 3);
    let a = Replica::new(root.path(), "a", pg.primary.port, &rule);
    let b = Replica::new(root.path(), "b", pg.primary.port, &rule);

    let ma = a.start();
    wait_until(Duration::from_secs(20), "a to lead", || a.is("leader"));
    let _mb = b.start();
    wait_until(Duration::from_secs(20), "b to follow", || b.is("follower"));
    wait_until(Duration::from_secs(20), "the action to start", || {
        runs(&runs_file) == 1
    });
    let st = store(pg.primary.port);
    let incident = block_on(st.open_incidents()).unwrap()[0].clone();

    // Paused mid-action: its heartbeats stop; the server ends its session
    // after the lease and b takes over.
    ma.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    wait_until(Duration::from_secs(20), "b to take over", || b.is("leader"));
    let takeover = stopped.elapsed();
    println!("takeover after SIGSTOP (lease {LEASE}): {takeover:?}");
    assert_eq!(b.role().unwrap().1, Some(2));
    // Let a's action finish while a is paused.
    std::thread::sleep(Duration::from_secs(3));
    let timeline_before = block_on(st.timeline(incident.id)).unwrap().len();

    ma.signal(Signal::SIGCONT);
    wait_until(Duration::from_secs(10), "a to step down", || {
        a.is("follower")
    });
    wait_until(
        Duration::from_secs(10),
        "a's stale write to be fenced",
        || metric(&a.metrics(), "medic_fenced_writes_total").is_some_and(|n| n >= 1.0),
    );
    assert!(
        ma.log_text().contains("write refused: fenced"),
        "{}",
        ma.log_text()
    );
    // a acted on nothing, and nothing a wrote after b's term landed: every
    // timeline entry since is b's (b verifies the attempt a left in flight).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(runs(&runs_file), 1, "no action ran twice");
    let attempts = block_on(st.incident_attempts(incident.id)).unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    let timeline = block_on(st.timeline(incident.id)).unwrap();
    assert!(
        timeline[timeline_before..]
            .iter()
            .all(|e| !e.message.contains("step reopen: ") || e.message.contains("restart")),
        "{timeline:#?}"
    );
    // b finishes the job once the port opens.
    let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    wait_until(Duration::from_secs(40), "the incident to resolve", || {
        block_on(st.incident(incident.id)).unwrap().unwrap().state == IncidentState::Resolved
    });
    assert_eq!(runs(&runs_file), 1);
    assert!(a.is("follower") && b.is("leader"));
    assert_eq!(metric(&b.metrics(), "medic_is_leader"), Some(1.0));
    assert_eq!(metric(&b.metrics(), "medic_leader_term"), Some(2.0));
}
