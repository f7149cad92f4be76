//! Acceptance: live reload against the real medic binary (SIGHUP and
//! `POST /-/reload`), with real TCP ports as the watched targets.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::*;
use medic::store::{Incident, IncidentState, SqliteStore, prelude::*};
use nix::sys::signal::Signal;
use serde_json::Value;

fn rule(name: &str, port: u16, summary: &str) -> String {
    port_closed_rule(name, summary, port, 1)
}

fn setup(dir: &Path, http: u16) -> std::path::PathBuf {
    enforce_config(dir, http, "5s")
}

async fn incidents(db: &Path) -> Vec<Incident> {
    let store = SqliteStore::open(db).await.unwrap();
    let mut v = store.recent_incidents(100).await.unwrap();
    v.reverse();
    v
}

async fn timeline(db: &Path, id: i64) -> Vec<String> {
    let store = SqliteStore::open(db).await.unwrap();
    store
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}: {}", e.kind, e.message))
        .collect()
}

fn get(url: &str) -> (u16, Value) {
    block_on(async {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    })
}

/// A POST with the API token (`/-/reload` needs it).
fn post(url: &str) -> (u16, Value) {
    block_on(async {
        let r = reqwest::Client::new()
            .post(url)
            .bearer_auth(TEST_API_TOKEN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    })
}

fn open_of(db: &Path, scenario: &str) -> Vec<Incident> {
    block_on(incidents(db))
        .into_iter()
        .filter(|i| i.scenario == scenario && i.state.is_open())
        .collect()
}

#[test]
fn broken_reload_keeps_old_rules_and_good_reload_keeps_open_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let (http, port_a, port_b) = (free_port(), free_port(), free_port());
    let config = setup(dir.path(), http);
    let db = dir.path().join("state/medic.db");
    let rules = dir.path().join("rules");
    std::fs::write(
        rules.join("a.yaml"),
        rule("port-a", port_a, "Port A closed"),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{http}");

    let mut medic = Medic::start(&config, &dir.path().join("medic.log"));
    // Nothing listens on port A: an incident opens, its step fails
    // verification, it escalates.
    wait_until(Duration::from_secs(20), "port-a to escalate", || {
        open_of(&db, "port-a")
            .iter()
            .any(|i| i.state == IncidentState::Escalated)
    });
    let incident = open_of(&db, "port-a")[0].id;

    // A broken file: SIGHUP is rejected as a whole, with path:line:col.
    let broken = rules.join("b.yaml");
    std::fs::write(
        &broken,
        rule("port-b", port_b, "Port B closed").replace("action: exec", "action: exce"),
    )
    .unwrap();
    medic.signal(Signal::SIGHUP);
    wait_until(Duration::from_secs(10), "the reload to be rejected", || {
        medic.log_text().contains("reload rejected: the old config")
    });
    let want = format!(
        "{}:15:13: unknown action \"exce\" (did you mean \"exec\"?)",
        broken.display()
    );
    assert!(medic.log_text().contains(&want), "{}", medic.log_text());
    let (code, ready) = get(&format!("{base}/readyz"));
    assert_eq!(code, 200, "the old rules still run: still ready: {ready}");
    assert_eq!(ready["status"]["scenarios"], 1);
    assert_eq!(ready["status"]["reload_error"], want.as_str());
    assert_eq!(ready["status"]["reloads"]["failed"], 1);
    assert_eq!(ready["status"]["reloads"]["last_ok"], false);

    // The same through HTTP: 422 and every problem.
    let (code, out) = post(&format!("{base}/-/reload"));
    assert_eq!(code, 422, "{out}");
    assert_eq!(out["ok"], false);
    assert_eq!(out["errors"][0], want.as_str());
    assert_eq!(
        open_of(&db, "port-a")[0].id,
        incident,
        "old incident untouched"
    );

    // A good set: port-a changed, port-b added (its port answers).
    let listener_b = TcpListener::bind(("127.0.0.1", port_b)).unwrap();
    std::fs::write(&broken, rule("port-b", port_b, "Port B closed")).unwrap();
    std::fs::write(
        rules.join("a.yaml"),
        rule("port-a", port_a, "Port A closed (edited)"),
    )
    .unwrap();
    let (code, out) = post(&format!("{base}/-/reload"));
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["ok"], true);
    assert_eq!(out["added"], serde_json::json!(["port-b"]));
    assert_eq!(out["scenarios"], 2);
    let (_, ready) = get(&format!("{base}/readyz"));
    assert_eq!(ready["status"]["reload_error"], Value::Null);
    assert_eq!(ready["status"]["reloads"]["succeeded"], 1);
    assert_eq!(ready["status"]["scenarios"], 2);

    // The open incident carried on: port A answering now resolves *it*.
    let listener_a = TcpListener::bind(("127.0.0.1", port_a)).unwrap();
    wait_until(
        Duration::from_secs(20),
        "port-a's incident to resolve",
        || open_of(&db, "port-a").is_empty(),
    );
    let all = block_on(incidents(&db));
    let a: Vec<_> = all.iter().filter(|i| i.scenario == "port-a").collect();
    assert_eq!(a.len(), 1, "not dropped and reopened: {all:#?}");
    assert_eq!(a[0].id, incident);
    let tl = block_on(timeline(&db, incident));
    assert!(
        tl.iter()
            .any(|m| m.starts_with("note: rules reloaded: this incident carries on")),
        "{tl:#?}"
    );
    assert!(
        tl.iter()
            .any(|m| m.starts_with("state: resolved: all symptoms clear")),
        "{tl:#?}"
    );

    // port-b fails, then its scenario is removed: its incident is closed
    // with a note.
    drop(listener_b);
    wait_until(
        Duration::from_secs(20),
        "port-b to open an incident",
        || !open_of(&db, "port-b").is_empty(),
    );
    let b = open_of(&db, "port-b")[0].id;
    std::fs::remove_file(&broken).unwrap();
    medic.signal(Signal::SIGHUP);
    wait_until(
        Duration::from_secs(20),
        "port-b's incident to close",
        || open_of(&db, "port-b").is_empty(),
    );
    let tl = block_on(timeline(&db, b));
    assert!(
        tl.iter()
            .any(|m| m == "state: closed: scenario port-b was removed from the rules by a reload"),
        "{tl:#?}"
    );
    let (_, ready) = get(&format!("{base}/readyz"));
    assert_eq!(ready["status"]["scenarios"], 1);

    assert!(medic.stop().success(), "graceful exit 0 on SIGTERM");
    drop(listener_a);
}

/// [`rule`] with a slower check (every 3 s, firing after 6 s), whose first
/// run is spread after start.
fn slow_rule(name: &str, port: u16) -> String {
    rule(name, port, &format!("{name} port closed"))
        .replace("every: 200ms", "every: 3s")
        .replace("timeout: 200ms", "timeout: 1s")
        .replace("for: 400ms", "for: 6s")
}

/// Attack (issue 13): a reload a second kept every check loop restarting
/// behind its spread delay, so a closed port never opened an incident.
/// Now, under a SIGHUP every 100 ms, reloads coalesce and the unchanged
/// check keeps its cadence: the closed port's incident opens within its
/// `for:` plus an interval or two, while reloads keep succeeding.
#[test]
fn reload_storm_while_a_port_is_closed_still_opens_the_incident() {
    let dir = tempfile::tempdir().unwrap();
    let (http, open_port, closed_port) = (free_port(), free_port(), free_port());
    let config = setup(dir.path(), http);
    let db = dir.path().join("state/medic.db");
    let rules = dir.path().join("rules");
    // The open port's scenario takes the first slot, so the closed port's
    // check has a non-zero spread delay (longer than a reload's gap).
    let _listening = TcpListener::bind(("127.0.0.1", open_port)).unwrap();
    std::fs::write(rules.join("a-open.yaml"), slow_rule("a-open", open_port)).unwrap();
    std::fs::write(
        rules.join("z-closed.yaml"),
        slow_rule("z-closed", closed_port),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{http}");
    let mut medic = Medic::start(&config, &dir.path().join("medic.log"));
    wait_until(Duration::from_secs(10), "medic to be ready", || {
        block_on(async { reqwest::get(format!("{base}/readyz")).await })
            .is_ok_and(|r| r.status() == 200)
    });

    let started = std::time::Instant::now();
    let storming = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let pid = nix::unistd::Pid::from_raw(medic.pid() as i32);
    let storm = {
        let storming = storming.clone();
        std::thread::spawn(move || {
            let mut sent = 0u32;
            while storming.load(std::sync::atomic::Ordering::Relaxed) {
                nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
                sent += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            sent
        })
    };
    wait_until(
        Duration::from_secs(30),
        "the closed port's incident to open during the reload storm",
        || !open_of(&db, "z-closed").is_empty(),
    );
    let took = started.elapsed();
    let (_, ready) = get(&format!("{base}/readyz"));
    storming.store(false, std::sync::atomic::Ordering::Relaxed);
    let sent = storm.join().unwrap();
    let reloads = ready["status"]["reloads"]["succeeded"].as_u64().unwrap();
    eprintln!("incident opened after {took:?} under {sent} SIGHUPs ({reloads} reloads)");
    assert!(reloads >= 3, "the storm reloaded: {ready}");
    assert!(
        u64::from(sent) > reloads,
        "SIGHUPs coalesce: {sent} sent, {reloads} reloads"
    );
    assert!(open_of(&db, "a-open").is_empty(), "the open port is fine");
    assert!(
        medic.log_text().contains("reload done: new rules running"),
        "{}",
        medic.log_text()
    );
    assert!(medic.stop().success());
}
