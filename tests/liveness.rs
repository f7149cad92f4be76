//! A silent target is failing, medic's own blindness is unknown (issue 14):
//! the real medic binary against real servers whose packets are dropped
//! (iptables in a network namespace), frozen (SIGSTOP) or cut off from
//! medic. Needs root (`ip netns`, iptables), as CI has.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{Netns, Proc};
use common::{block_on, free_port, wait_until};
use medic::store::{Incident, SqliteStore, prelude::*};
use nix::sys::signal::Signal;

/// One scenario: symptoms as `(name, check)` with the test timing (every
/// 500ms, timeout 500ms, `for`), `when` over all of them (`all`) or any,
/// and `plan` (YAML list, indented by two; `[]` for none).
fn scenario(name: &str, symptoms: &[(&str, &str)], for_: &str, all: bool, plan: &str) -> String {
    let mut s = format!("scenario: {name}\nsummary: {name}\nseverity: high\nrto: 5m\nsymptoms:\n");
    for (n, check) in symptoms {
        s += &format!(
            "  {n}:\n    check: {check}\n    every: 500ms\n    timeout: 500ms\n    for: {for_}\n    clear_for: 1s\n"
        );
    }
    let names: Vec<&str> = symptoms.iter().map(|(n, _)| *n).collect();
    let when = if all { "all" } else { "any" };
    s += &format!(
        "when: {{ {when}: [{}] }}\nplan:{plan}\nescalation: default\n",
        names.join(", ")
    );
    s
}

/// `dir/medic.yaml` with `body` (targets, zones, mode) and the rules.
fn setup(dir: &Path, body: &str, rules: &[String]) -> PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    for (i, r) in rules.iter().enumerate() {
        std::fs::write(dir.join(format!("rules/r{i}.yaml")), r).unwrap();
    }
    let config = dir.join("medic.yaml");
    std::fs::write(
        &config,
        format!("store: {{ sqlite: {{ path: state/medic.db }} }}\nrules: [rules]\nshutdown_grace: 1s\n{body}"),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["check", "--config"])
        .arg(&config)
        .arg(dir.join("rules"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "medic check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    config
}

/// The medic binary, in `ns` when given; waits until it runs.
fn medic(config: &Path, ns: Option<&Netns>) -> Proc {
    let log = config.with_file_name("medic.log");
    let out = std::fs::File::create(&log).unwrap();
    let bin = env!("CARGO_BIN_EXE_medic");
    let mut c = match ns {
        Some(ns) => ns.command(&[bin]),
        None => Command::new(bin),
    };
    let child = c
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let p = Proc(child);
    wait_until(Duration::from_secs(20), "medic to start", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("medic running"))
    });
    p
}

fn incidents(db: &Path) -> Vec<Incident> {
    block_on(async {
        match SqliteStore::open(db).await {
            Ok(s) => s.recent_incidents(100).await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    })
}

/// Every timeline entry of `id`, message and data, as text, once the
/// opening is written (the incident row comes first).
fn timeline(db: &Path, id: i64) -> String {
    let mut t = String::new();
    wait_until(
        Duration::from_secs(5),
        "the opening on the timeline",
        || {
            t = timeline_now(db, id);
            t.contains("opened")
        },
    );
    t
}

fn timeline_now(db: &Path, id: i64) -> String {
    block_on(async {
        let s = SqliteStore::open(db).await.unwrap();
        s.timeline(id)
            .await
            .unwrap()
            .iter()
            .map(|e| format!("{} {}\n", e.message, e.data))
            .collect()
    })
}

/// Waits for an incident of `scenario`; returns it and when it was seen.
fn wait_incident(db: &Path, scenario: &str, limit: Duration, log: &Path) -> (Incident, Instant) {
    let start = Instant::now();
    loop {
        if let Some(i) = incidents(db).into_iter().find(|i| i.scenario == scenario) {
            return (i, Instant::now());
        }
        assert!(
            start.elapsed() < limit,
            "no {scenario} incident within {limit:?}; medic's log:\n{}",
            common::log_tail(log, 0, 60)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether something accepts TCP connections at `addr`.
fn answers(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)).is_ok()
}

/// A Python HTTP server on `addr:port` (inside `ns` when given).
fn http_server(ns: Option<&Netns>, addr: &str, port: u16, log: &Path) -> Proc {
    let p = port.to_string();
    let args = ["python3", "-m", "http.server", &p, "--bind", addr];
    let child = match ns {
        Some(ns) => ns.spawn(&args, log),
        None => Command::new(args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    let proc = Proc(child);
    wait_until(Duration::from_secs(10), "the HTTP server", || {
        answers(&format!("{addr}:{port}"))
    });
    proc
}

/// A real redis-server on `addr:port` (inside `ns` when given).
fn redis_server(ns: Option<&Netns>, addr: &str, port: u16, log: &Path) -> Proc {
    let mut argv = common::redis_argv(port);
    let bind = argv.iter().position(|a| a == "--bind").unwrap() + 1;
    argv[bind] = addr.to_string();
    // medic connects from another address than loopback.
    argv.extend(["--protected-mode".to_string(), "no".to_string()]);
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let child = match ns {
        Some(ns) => ns.spawn(&args, log),
        None => Command::new(args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    let proc = Proc(child);
    wait_until(Duration::from_secs(10), "redis-server", || {
        answers(&format!("{addr}:{port}"))
    });
    proc
}

/// How long detection may take: `for` (1 s) plus the check timeout
/// (500 ms), plus an interval (500 ms) and polling slack.
const DETECTION: Duration = Duration::from_millis(1_500 + 2_000);

/// A tcp target and an http target whose packets are dropped (the host
/// still answers on other ports: its zone's vantage probe gets a refusal)
/// open their scenario's incidents, as unreachable, after `for` plus the
/// check timeout; before the drop nothing opens.
#[test]
fn dropped_packets_make_tcp_and_http_targets_unreachable() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let port = 8080;
    let _web = http_server(Some(&ns), &ns.ns_addr, port, &dir.path().join("http.log"));
    let a = &ns.ns_addr;
    let config = setup(
        dir.path(),
        &format!(
            "targets:\n  svc: {{ tcp: {{ address: \"{a}:{port}\" }} }}\n  web: {{ http: {{ url: \"http://{a}:{port}/\" }} }}\n\
             zones:\n  a: {{ targets: [svc, web], vantage: [{{ tcp: \"{a}:1\" }}], every: 250ms, timeout: 250ms }}\n"
        ),
        &[
            scenario(
                "svc-down",
                &[("svc_down", "{ tcp: { target: svc } }")],
                "1s",
                false,
                " []",
            ),
            scenario(
                "web-down",
                &[("web_down", "{ http: { target: web } }")],
                "1s",
                false,
                " []",
            ),
        ],
    );
    let db = dir.path().join("state/medic.db");
    let _medic = medic(&config, None);
    std::thread::sleep(Duration::from_secs(2));
    assert!(incidents(&db).is_empty(), "{:?}", incidents(&db));
    ns.drop_port(port);
    let dropped = Instant::now();
    let log = dir.path().join("medic.log");
    for (scenario, what) in [
        ("svc-down", format!("{a}:{port}")),
        ("web-down", format!("http://{a}:{port}/")),
    ] {
        let (inc, seen) = wait_incident(&db, scenario, Duration::from_secs(10), &log);
        let took = seen - dropped;
        assert!(
            took >= Duration::from_secs(1) && took <= DETECTION,
            "{scenario} opened {took:?} after the drop (for 1s + timeout 500ms)"
        );
        let t = timeline(&db, inc.id);
        assert!(t.contains("\"outcome\":\"unreachable\""), "{t}");
        assert!(t.contains(&what), "{t}");
        assert!(
            t.contains(&format!(
                "medic's vantage is healthy: zone a's vantage probe tcp {a}:1 answers"
            )),
            "{t}"
        );
    }
}

/// A real Redis frozen with SIGSTOP still accepts TCP connections (the
/// kernel does) but never answers: unreachable (its zone's probe, a port
/// the test holds, answers), and the redis incident opens.
#[test]
fn a_frozen_redis_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let redis = redis_server(None, "127.0.0.1", port, &dir.path().join("redis.log"));
    let gateway = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let g = gateway.local_addr().unwrap();
    let config = setup(
        dir.path(),
        &format!(
            "targets:\n  cache: {{ redis: {{ address: \"127.0.0.1:{port}\" }} }}\n\
             zones:\n  local: {{ targets: [cache], vantage: [{{ tcp: \"{g}\" }}], every: 250ms, timeout: 250ms }}\n"
        ),
        &[scenario(
            "redis-cache-failure",
            &[("redis_down", "{ redis: { target: cache, ping: true } }")],
            "1s",
            false,
            " []",
        )],
    );
    let db = dir.path().join("state/medic.db");
    let _medic = medic(&config, None);
    std::thread::sleep(Duration::from_secs(1));
    assert!(incidents(&db).is_empty());
    redis.signal(Signal::SIGSTOP);
    let frozen = Instant::now();
    let log = dir.path().join("medic.log");
    let (inc, seen) = wait_incident(&db, "redis-cache-failure", Duration::from_secs(10), &log);
    let took = seen - frozen;
    assert!(took <= DETECTION, "opened {took:?} after SIGSTOP");
    let t = timeline(&db, inc.id);
    assert!(t.contains("\"outcome\":\"unreachable\""), "{t}");
    assert!(
        t.contains(&format!("127.0.0.1:{port}: no answer within 500ms")),
        "{t}"
    );
    assert!(
        t.contains(&format!("zone local's vantage probe tcp {g} answers")),
        "{t}"
    );
}

/// A real PostgreSQL primary SIGSTOPped (its replica in the same zone
/// still answers) is unreachable, and the database-failure incident opens.
/// Detection only: the promotion through every gate is tested elsewhere.
#[test]
fn a_sigstopped_postgres_primary_is_unreachable() {
    let pg = common::pg::Pg::with_replica();
    let dir = tempfile::tempdir().unwrap();
    let pid: i32 = std::fs::read_to_string(pg.primary.data.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Continued before the cluster drops (a stopped postmaster cannot stop).
    struct Cont(i32);
    impl Drop for Cont {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGCONT);
        }
    }
    let config = setup(
        dir.path(),
        &format!(
            "targets:\n  db: {}\n  db-replica: {}\n\
             zones:\n  primary: {{ targets: [db, db-replica] }}\n",
            pg.primary.target_yaml(),
            pg.replica().target_yaml()
        ),
        &[
            scenario(
                "database-failure",
                &[("primary_down", "{ postgres: { target: db, ready: true } }")],
                "1s",
                false,
                " []",
            ),
            scenario(
                "replica-down",
                &[(
                    "replica_down",
                    "{ postgres: { target: db-replica, ready: true } }",
                )],
                "1s",
                false,
                " []",
            ),
        ],
    );
    let db = dir.path().join("state/medic.db");
    let _medic = medic(&config, None);
    std::thread::sleep(Duration::from_secs(1));
    assert!(incidents(&db).is_empty(), "{:?}", incidents(&db));
    let _cont = Cont(pid);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let frozen = Instant::now();
    let log = dir.path().join("medic.log");
    let (inc, seen) = wait_incident(&db, "database-failure", Duration::from_secs(10), &log);
    let took = seen - frozen;
    assert!(took <= DETECTION, "opened {took:?} after SIGSTOP");
    let t = timeline(&db, inc.id);
    assert!(t.contains("\"outcome\":\"unreachable\""), "{t}");
    assert!(t.contains("zone primary still answers (db-replica)"), "{t}");
    assert!(!incidents(&db).iter().any(|i| i.scenario == "replica-down"));
}

/// medic in its own namespace, whose one link goes down: every target
/// goes silent at once and so does the zone's probe. medic is blind: no
/// symptom of the targets fires, no action runs (the step would leave a
/// marker file), and the monitoring-system scenario pages about the
/// blindness.
#[test]
fn a_cut_off_medic_is_blind_acts_on_nothing_and_pages_about_it() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let h = ns.host_addr.clone();
    let (rport, hport) = (free_port(), free_port());
    let _redis = redis_server(None, &h, rport, &dir.path().join("redis.log"));
    let _web = http_server(None, &h, hport, &dir.path().join("http.log"));
    let marker = dir.path().join("acted");
    let plan = format!(
        "\n  - name: act\n    action: exec\n    args: [\"touch\", \"{}\"]\n    verify: {{ within: 1s }}\n",
        marker.display()
    );
    let config = setup(
        dir.path(),
        &format!(
            "mode: enforce\n\
             targets:\n  cache: {{ redis: {{ address: \"{h}:{rport}\" }} }}\n  web: {{ http: {{ url: \"http://{h}:{hport}/\" }} }}\n\
             zones:\n  a: {{ targets: [cache, web], vantage: [{{ tcp: \"{h}:1\" }}], every: 250ms, timeout: 250ms }}\n"
        ),
        &[
            // `for` above every word's freshness (2 intervals + timeout):
            // a cut cannot look like one silent target for that long.
            scenario(
                "redis-cache-failure",
                &[("redis_down", "{ redis: { target: cache, ping: true } }")],
                "2s",
                false,
                &plan,
            ),
            scenario(
                "app-down",
                &[("web_down", "{ http: { target: web } }")],
                "2s",
                false,
                &plan,
            ),
            scenario(
                "monitoring-system-failure",
                &[("medic_blind", "{ vantage: {} }")],
                "1s",
                false,
                " []",
            ),
        ],
    );
    let db = dir.path().join("state/medic.db");
    let _medic = medic(&config, Some(&ns));
    std::thread::sleep(Duration::from_secs(1));
    assert!(incidents(&db).is_empty(), "{:?}", incidents(&db));
    ns.cut_inside();
    let log = dir.path().join("medic.log");
    let (inc, _) = wait_incident(
        &db,
        "monitoring-system-failure",
        Duration::from_secs(10),
        &log,
    );
    let t = timeline(&db, inc.id);
    assert!(t.contains("medic is blind: it reaches nothing"), "{t}");
    // Paged: the opening's page is in the outbox.
    wait_until(Duration::from_secs(5), "a page about the blindness", || {
        block_on(async {
            let s = SqliteStore::open(&db).await.unwrap();
            !s.outbox_of(inc.id).await.unwrap().is_empty()
        })
    });
    // Long past `for`: still nothing else opened, nothing ran.
    std::thread::sleep(Duration::from_secs(3));
    let others: Vec<String> = incidents(&db)
        .into_iter()
        .filter(|i| i.scenario != "monitoring-system-failure")
        .map(|i| i.scenario)
        .collect();
    assert!(others.is_empty(), "opened while blind: {others:?}");
    assert!(!marker.exists(), "an action ran while medic was blind");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("medic is blind"),
        "the targets' outcomes say why they are unknown"
    );
}

/// Zone outage: every target of zone a silent (all its packets dropped)
/// while zone b and the store answer. The complete-infrastructure
/// scenario fires, and its timeline says "zone a outage".
#[test]
fn a_zone_outage_fires_the_complete_infrastructure_scenario() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let a = ns.ns_addr.clone();
    let (hport, rport) = (8080, 6379);
    let _web = http_server(Some(&ns), &a, hport, &dir.path().join("http.log"));
    let _redis = redis_server(Some(&ns), &a, rport, &dir.path().join("redis.log"));
    let bport = free_port();
    let _redis_b = redis_server(None, "127.0.0.1", bport, &dir.path().join("redis-b.log"));
    let config = setup(
        dir.path(),
        &format!(
            "targets:\n  app: {{ http: {{ url: \"http://{a}:{hport}/\" }} }}\n  db: {{ tcp: {{ address: \"{a}:{hport}\" }} }}\n  cache: {{ redis: {{ address: \"{a}:{rport}\" }} }}\n  cache-b: {{ redis: {{ address: \"127.0.0.1:{bport}\" }} }}\n\
             zones:\n  a: {{ targets: [app, db, cache] }}\n  b: {{ targets: [cache-b] }}\n"
        ),
        &[
            scenario(
                "complete-infrastructure-failure",
                &[
                    ("app_down", "{ http: { target: app } }"),
                    ("db_down", "{ tcp: { target: db } }"),
                    ("cache_down", "{ tcp: { target: cache } }"),
                ],
                "1s",
                true,
                " []",
            ),
            scenario(
                "secondary-down",
                &[("cache_b_down", "{ redis: { target: cache-b, ping: true } }")],
                "1s",
                false,
                " []",
            ),
        ],
    );
    let db = dir.path().join("state/medic.db");
    let _medic = medic(&config, None);
    std::thread::sleep(Duration::from_secs(1));
    assert!(incidents(&db).is_empty(), "{:?}", incidents(&db));
    ns.drop_all();
    let log = dir.path().join("medic.log");
    let (inc, _) = wait_incident(
        &db,
        "complete-infrastructure-failure",
        Duration::from_secs(10),
        &log,
    );
    let t = timeline(&db, inc.id);
    assert!(t.contains("zone a outage"), "{t}");
    assert!(
        t.contains("while medic still reaches cache-b (zone b) and its store"),
        "{t}"
    );
    assert!(
        !incidents(&db)
            .iter()
            .any(|i| i.scenario == "secondary-down")
    );
}
