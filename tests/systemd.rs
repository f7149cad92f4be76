//! The systemd unit (`deploy/systemd/medic.service`) and the daemon's side
//! of the notify protocol, against systemd's own tools and a real notify
//! socket.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

const UNIT: &str = "deploy/systemd/medic.service";

fn unit_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(UNIT)).unwrap()
}

/// The unit with its medic paths pointed at the binary under test, so
/// `systemd-analyze` can check the command exists (nothing else changes).
fn unit_for_test(dir: &Path) -> PathBuf {
    let text = unit_text().replace("/usr/local/bin/medic", env!("CARGO_BIN_EXE_medic"));
    let path = dir.join("medic.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // Unknown or misspelt directives are only warnings: none allowed.
    assert_eq!(text.trim(), "", "systemd-analyze verify complained");
}

#[test]
fn unit_exposure_is_low() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    // systemd's own score: 0 (locked down) .. 10 (exposed). Fail above 2.0.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Overall exposure level"), "{text}");
}

#[test]
fn unit_has_the_required_directives() {
    let text = unit_text();
    let has = |line: &str| text.lines().any(|l| l.trim() == line);
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=medic",
        "ReadWritePaths=/var/lib/medic",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "ExecReload=/usr/bin/kill -HUP $MAINPID",
        "WantedBy=multi-user.target",
    ] {
        assert!(has(line), "missing {line:?} in {UNIT}");
    }
}

fn setup(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("medic.yaml"),
        "store: { sqlite: { path: state/medic.db } }\nrules: [rules]\nshutdown_grace: 2s\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("rules/a.yaml"),
        format!(
            "scenario: a\nsummary: a\nseverity: info\nrto: 1m\n\
             symptoms:\n  closed:\n    check: {{ tcp: {{ address: \"127.0.0.1:{}\" }} }}\n    every: 1s\n\
             when: {{ any: [closed] }}\nescalation: default\n",
            free_port()
        ),
    )
    .unwrap();
    dir.join("medic.yaml")
}

/// Receives notify datagrams until `want` arrives (all received so far
/// are returned), or panics after `limit`.
fn recv_until(sock: &UnixDatagram, want: &str, limit: Duration, seen: &mut Vec<String>) {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m| m.lines().any(|l| l == want)) {
        assert!(
            start.elapsed() < limit,
            "no {want} within {limit:?}; got {seen:?}"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[test]
fn binary_notifies_ready_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let socket = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut medic = Medic::start_with_env(
        &config,
        &dir.path().join("medic.log"),
        &[
            ("NOTIFY_SOCKET", socket.display().to_string()),
            ("WATCHDOG_USEC", "200000".to_string()),
        ],
    );
    let mut seen = Vec::new();
    recv_until(&sock, "READY=1", Duration::from_secs(10), &mut seen);
    assert!(
        dir.path().join("state/medic.db").exists(),
        "READY=1 only once the store is open"
    );
    let ready = seen.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(ready.contains("STATUS=running 1 scenarios"), "{ready}");
    // Watchdog every 100 ms (half of WATCHDOG_USEC): several in a second.
    let mut watchdogs = Vec::new();
    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5), &mut watchdogs);
    watchdogs.clear();
    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5), &mut watchdogs);

    let mut reload = Vec::new();
    medic.signal(Signal::SIGHUP);
    recv_until(&sock, "RELOADING=1", Duration::from_secs(10), &mut reload);
    let reloading = reload.iter().find(|m| m.contains("RELOADING=1")).unwrap();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    reload.clear();
    recv_until(&sock, "READY=1", Duration::from_secs(10), &mut reload);

    // Datagrams wait in the socket: stop first, then read.
    assert!(medic.stop().success());
    let mut stopping = Vec::new();
    recv_until(&sock, "STOPPING=1", Duration::from_secs(10), &mut stopping);
}
