//! Acceptance: several observers before a dangerous act, with three real
//! medic processes sharing one private PostgreSQL (advisory-lock
//! leadership, shared observations).
//!
//! - The leader is partitioned from the target but not from the store
//!   (its config points the target at a port that refuses): with
//!   `quorum: 2` its failing observations alone never run the step, and the
//!   timeline says `failing on 1 of 3 observers, quorum 2: waiting`; once a
//!   second replica sees the failure, the step runs.
//! - A leader cut off from the store (its connections go through a proxy
//!   that stops forwarding, sockets open: packets dropped, nothing
//!   refused) stops acting within its lease; the other replica takes over.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use medic::store::{PostgresStore, prelude::*};
use serde_json::Value;

/// The lease every replica uses.
const LEASE: &str = "2s";

/// A scenario on the target `app` (a tcp check every 200 ms, firing after
/// 400 ms) whose one step appends `tag` to `runs` and verifies for
/// `within` (how long it also waits for a quorum).
fn rule(runs: &Path, tag: &str, quorum: &str, attempts: u32, within: &str) -> String {
    format!(
        "scenario: app-down\n\
         summary: App port closed\n\
         severity: high\n\
         rto: 5m\n\
         {quorum}\
         symptoms:\n\
         \x20 closed:\n\
         \x20   check: {{ tcp: {{ target: app }} }}\n\
         \x20   every: 200ms\n\
         \x20   timeout: 200ms\n\
         \x20   for: 400ms\n\
         \x20   clear_for: 400ms\n\
         when: {{ any: [closed] }}\n\
         plan:\n\
         \x20 - name: reopen\n\
         \x20   action: exec\n\
         \x20   args: [\"sh\", \"-c\", \"echo {tag} >> {}\"]\n\
         \x20   timeout: 10s\n\
         \x20   verify: {{ within: {within} }}\n\
         \x20   limit: {{ attempts: {attempts}, per: 1h }}\n\
         escalation: default\n",
        runs.display()
    )
}

struct Replica {
    dir: PathBuf,
    http: u16,
}

impl Replica {
    /// A replica whose target `app` is `app`, its store at `store_port`.
    fn new(root: &Path, name: &str, store_port: u16, app: u16, rule: &str) -> Replica {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        std::fs::write(dir.join("rules/app.yaml"), rule).unwrap();
        let http = free_port();
        std::fs::write(
            dir.join("medic.yaml"),
            format!(
                "mode: enforce\n\
                 store: {{ postgres: {{ host: 127.0.0.1, port: {store_port}, user: postgres, dbname: postgres }} }}\n\
                 leadership: {{ postgres: {{ lease_duration: {LEASE} }} }}\n\
                 targets: {{ app: {{ tcp: {{ address: \"127.0.0.1:{app}\" }} }} }}\n\
                 rules: [rules]\n\
                 shutdown_grace: 1s\n\
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
            &[("MEDIC_IDENTITY", self.name())],
        )
    }

    fn name(&self) -> String {
        self.dir.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// `/readyz`'s role, if it answers.
    fn role(&self) -> Option<String> {
        block_on(async {
            let r = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{}/readyz", self.http))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            Some(v["status"]["role"].as_str()?.to_string())
        })
    }

    fn is(&self, role: &str) -> bool {
        self.role().is_some_and(|r| r == role)
    }
}

/// A port that answers: accepts and closes every connection until dropped.
struct Listening {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listening {
    fn start() -> Listening {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Listening {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Listening {
    /// The port closes: connections are refused from now on.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

fn runs(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Every timeline line (`kind: message`) of every incident.
fn timelines(st: &PostgresStore) -> Vec<String> {
    block_on(async {
        let mut out = Vec::new();
        for i in st.recent_incidents(10).await.unwrap() {
            for e in st.timeline(i.id).await.unwrap() {
                out.push(format!("{}: {}", e.kind, e.message));
            }
        }
        out
    })
}

#[test]
fn one_partitioned_observer_never_acts_with_quorum_2_two_observers_do() {
    let pg = pg::Pg::primary();
    let root = tempfile::tempdir().unwrap();
    let runs_file = root.path().join("runs");
    let refused = free_port(); // nothing listens: connection refused
    let app_a = Listening::start();
    let app_b = Listening::start();
    let r = rule(&runs_file, "run", "quorum: 2\n", 1, "30s");
    // c is partitioned from the target (its address refuses), not from
    // the store; it leads, so its own view alone would open and act.
    let c = Replica::new(root.path(), "c", pg.primary.port, refused, &r);
    let a = Replica::new(root.path(), "a", pg.primary.port, app_a.port, &r);
    let b = Replica::new(root.path(), "b", pg.primary.port, app_b.port, &r);
    let started = Instant::now();
    let mc = c.start();
    wait_until(Duration::from_secs(20), "c to lead", || c.is("leader"));
    let _ma = a.start();
    let _mb = b.start();
    wait_until(Duration::from_secs(20), "a and b to follow", || {
        a.is("follower") && b.is("follower")
    });
    let st = store(pg.primary.port);

    // c's symptom fires and opens the incident (its subjective view); the
    // step waits for a second observer.
    wait_until(
        Duration::from_secs(15),
        "the step to wait for a quorum",
        || {
            timelines(&st)
                .iter()
                .any(|l| l.contains("failing on 1 of 3 observers, quorum 2: waiting"))
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        runs(&runs_file),
        Vec::<String>::new(),
        "{:#?}",
        timelines(&st)
    );
    let incident = block_on(st.open_incidents()).unwrap()[0].clone();
    assert!(
        block_on(st.incident_attempts(incident.id))
            .unwrap()
            .is_empty(),
        "no attempt, not even a refused one: it waits"
    );
    // What the leader counted came from the store: one row per replica.
    let rows = block_on(st.observations(
        "app-down",
        "closed",
        chrono::Utc::now() - chrono::Duration::seconds(5),
    ))
    .unwrap();
    let mut seen: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.replica.clone(), r.outcome.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("a".to_string(), "ok".to_string()),
            ("b".into(), "ok".into()),
            ("c".into(), "failing".into())
        ]
    );

    // b's target goes away too: two of three observers see it failing.
    drop(app_b);
    let lost = Instant::now();
    wait_until(Duration::from_secs(15), "the step to run", || {
        runs(&runs_file).len() == 1
    });
    println!(
        "quorum of 2 reached and acted {:?} after the second observer's target closed",
        lost.elapsed()
    );
    let text = timelines(&st);
    let at = |needle: &str| {
        text.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {text:#?}"))
    };
    assert!(
        at("failing on 1 of 3 observers, quorum 2: waiting")
            < at("failing on 2 of 3 observers, quorum 2: acting")
    );
    assert!(at("failing on 2 of 3 observers, quorum 2: acting") < at("step reopen: running"));
    assert!(c.is("leader"), "{}", mc.log_text());
    drop(app_a);
    println!("test wall time {:?}", started.elapsed());
}

/// A TCP proxy to `upstream` whose forwarding can be cut: once `cut`,
/// nothing more passes either way and no socket closes (a partition that
/// drops packets, not one that refuses).
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(down) = conn else { return };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    let cut = c.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if cut.load(Ordering::SeqCst) {
                                // Swallow it all from now on, and hold the socket.
                                continue;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Proxy { port, cut }
    }
}

#[test]
fn a_leader_cut_off_from_the_store_stops_acting_within_its_lease() {
    let pg = pg::Pg::primary();
    let root = tempfile::tempdir().unwrap();
    let runs_file = root.path().join("runs");
    let closed = free_port();
    let proxy = Proxy::start(pg.primary.port);
    // a reaches the store through the proxy, b directly; both see the
    // target's port closed. Each step run says who ran it. (`quorum: 1`:
    // this test is about the store, the one above about observers.)
    let a = Replica::new(
        root.path(),
        "a",
        proxy.port,
        closed,
        &rule(&runs_file, "a", "quorum: 1\n", 100, "1s"),
    );
    let b = Replica::new(
        root.path(),
        "b",
        pg.primary.port,
        closed,
        &rule(&runs_file, "b", "quorum: 1\n", 100, "1s"),
    );
    let ma = a.start();
    wait_until(Duration::from_secs(20), "a to lead", || a.is("leader"));
    let _mb = b.start();
    wait_until(Duration::from_secs(20), "b to follow", || b.is("follower"));
    // a acts, over and over (each verification fails: the port stays closed).
    wait_until(Duration::from_secs(20), "a to act", || {
        runs(&runs_file).iter().filter(|r| *r == "a").count() >= 1
    });

    proxy.cut.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    // Nothing a does reaches the store now, so it can begin no attempt
    // (every attempt is written before it runs); it must notice and stop.
    wait_until(Duration::from_secs(10), "a to step down", || {
        ma.log_text().contains("leadership lost: stepping down")
    });
    let stepped_down = cut.elapsed();
    println!("leader cut off from the store stepped down after {stepped_down:?} (lease {LEASE})");
    assert!(
        stepped_down <= Duration::from_millis(2500),
        "within the lease (2 s, and one log poll): {stepped_down:?}"
    );
    let a_runs = runs(&runs_file).iter().filter(|r| *r == "a").count();
    wait_until(Duration::from_secs(20), "b to take over and act", || {
        b.is("leader") && runs(&runs_file).iter().any(|r| r == "b")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        runs(&runs_file).iter().filter(|r| *r == "a").count(),
        a_runs,
        "a ran nothing once it stepped down: {:?}",
        runs(&runs_file)
    );
    wait_until(Duration::from_secs(5), "a to say it is blind", || {
        ma.log_text().contains("this replica is blind")
    });
}

/// A `/metrics` endpoint whose text the test changes: `app_up` per
/// instance, 1 (up) or 0 (down). One per replica: what each observer sees.
struct Exposition {
    port: u16,
    down: Arc<std::sync::Mutex<Vec<&'static str>>>,
    stop: Arc<AtomicBool>,
}

impl Exposition {
    const INSTANCES: [&'static str; 2] = ["x", "y"];

    fn start() -> Exposition {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let down: Arc<std::sync::Mutex<Vec<&'static str>>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (down.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let down = d.lock().unwrap().clone();
                let body: String = Self::INSTANCES
                    .iter()
                    .map(|i| {
                        format!(
                            "app_up{{instance=\"{i}\"}} {}\n",
                            u8::from(!down.contains(i))
                        )
                    })
                    .collect();
                let _ = c.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Exposition { port, down, stop }
    }

    /// From now on, this observer sees `instance` down.
    fn fail(&self, instance: &'static str) {
        self.down.lock().unwrap().push(instance);
    }
}

impl Drop for Exposition {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A per-series scenario: one instance per `instance` label of `app_up`
/// scraped from `metrics`, failing below 1, needing `quorum: 2`; its step
/// appends the instance to `runs`.
fn per_series_rule(runs: &Path, metrics: u16) -> String {
    format!(
        "scenario: instance-down\n\
         summary: An app instance is down\n\
         severity: high\n\
         rto: 5m\n\
         symptoms:\n\
         \x20 down:\n\
         \x20   check: {{ scrape: {{ url: \"http://127.0.0.1:{metrics}/metrics\", metric: app_up, below: 1 }} }}\n\
         \x20   every: 200ms\n\
         \x20   timeout: 200ms\n\
         \x20   for: 400ms\n\
         \x20   clear_for: 400ms\n\
         \x20   quorum: 2\n\
         when: {{ any: [down] }}\n\
         plan:\n\
         \x20 - name: restart\n\
         \x20   action: exec\n\
         \x20   args: [\"sh\", \"-c\", \"echo \\\"$1\\\" >> {}\", \"sh\", \"${{labels.instance}}\"]\n\
         \x20   timeout: 10s\n\
         \x20   verify: {{ within: 30s }}\n\
         \x20   limit: {{ attempts: 1, per: 1h }}\n\
         escalation: default\n",
        runs.display()
    )
}

/// Per-series quorum across three real medic processes: the quorum
/// counts observers of the *same* label set. The leader alone seeing
/// instance x down never acts; a follower seeing instance y down adds
/// nothing to x (nor makes y an incident: the leader sees y up); once a
/// second observer sees x down, x's step runs, and y's never does.
#[test]
fn per_series_quorum_counts_observers_of_the_same_instance_only() {
    let pg = pg::Pg::primary();
    let root = tempfile::tempdir().unwrap();
    let runs_file = root.path().join("runs");
    let unused = free_port();
    let (mc, ma, mb) = (
        Exposition::start(),
        Exposition::start(),
        Exposition::start(),
    );
    let c = Replica::new(
        root.path(),
        "c",
        pg.primary.port,
        unused,
        &per_series_rule(&runs_file, mc.port),
    );
    let a = Replica::new(
        root.path(),
        "a",
        pg.primary.port,
        unused,
        &per_series_rule(&runs_file, ma.port),
    );
    let b = Replica::new(
        root.path(),
        "b",
        pg.primary.port,
        unused,
        &per_series_rule(&runs_file, mb.port),
    );
    let medic_c = c.start();
    wait_until(Duration::from_secs(20), "c to lead", || c.is("leader"));
    let _medic_a = a.start();
    let _medic_b = b.start();
    wait_until(Duration::from_secs(20), "a and b to follow", || {
        a.is("follower") && b.is("follower")
    });
    let st = store(pg.primary.port);

    // The leader sees x down, a follower sees y down: two failing
    // observers, of different instances.
    mc.fail("x");
    ma.fail("y");
    wait_until(
        Duration::from_secs(15),
        "x's step to wait for a quorum",
        || {
            timelines(&st)
                .iter()
                .any(|l| l.contains("failing on 1 of 3 observers, quorum 2: waiting"))
        },
    );
    // a's failing y is in the store, and still counts nothing for x.
    wait_until(Duration::from_secs(10), "a's observation of y", || {
        block_on(st.observations(
            "instance-down",
            "down",
            chrono::Utc::now() - chrono::Duration::seconds(2),
        ))
        .unwrap()
        .iter()
        .any(|r| r.replica == "a" && r.instance == "{instance=\"y\"}" && r.outcome == "failing")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        runs(&runs_file),
        Vec::<String>::new(),
        "{:#?}",
        timelines(&st)
    );
    let text = timelines(&st);
    assert!(
        !text
            .iter()
            .any(|l| l.contains("failing on 2 of 3 observers")),
        "{text:#?}"
    );
    let open = block_on(st.open_incidents()).unwrap();
    let instances: Vec<&str> = open.iter().map(|i| i.instance.as_str()).collect();
    assert_eq!(
        instances,
        ["{instance=\"x\"}"],
        "only the leader's x opened"
    );
    assert!(
        block_on(st.incident_attempts(open[0].id))
            .unwrap()
            .is_empty(),
        "no attempt: it waits"
    );

    // b sees x down too: two observers of x.
    mb.fail("x");
    wait_until(Duration::from_secs(15), "x's step to run", || {
        runs(&runs_file).len() == 1
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs(&runs_file), ["x"], "{:#?}", timelines(&st));
    let text = timelines(&st);
    let at = |needle: &str| {
        text.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {text:#?}"))
    };
    assert!(
        at("failing on 1 of 3 observers, quorum 2: waiting")
            < at("failing on 2 of 3 observers, quorum 2: acting")
    );
    assert!(c.is("leader"), "{}", medic_c.log_text());
}
