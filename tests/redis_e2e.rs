//! Acceptance: the real medic binary against a real redis-server that the
//! test starts on an ephemeral port and kills.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use medic::store::{AttemptOutcome, IncidentState, SqliteStore, prelude::*};

fn write_setup(dir: &Path, port: u16, plan: &str) -> std::path::PathBuf {
    redis_setup(
        dir,
        port,
        "check: { redis: { target: cache, ping: true } }\n\
         every: 200ms\n\
         timeout: 200ms\n\
         for: 600ms\n\
         clear_for: 400ms",
        plan,
    )
}

async fn incidents(db: &Path) -> Vec<medic::store::Incident> {
    let store = SqliteStore::open(db).await.unwrap();
    store.recent_incidents(100).await.unwrap()
}

#[test]
fn redis_killed_is_restarted_verified_and_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pidfile = dir.path().join("restarted.pid");
    let argv: Vec<String> = redis_argv(port)
        .into_iter()
        .chain(["--daemonize", "yes", "--pidfile"].map(String::from))
        .chain([pidfile.display().to_string()])
        .collect();
    let plan = format!(
        "  - name: restart-redis\n    action: exec\n    args: {}\n    timeout: 10s\n    verify: {{ clears: redis_down, within: 10s }}\n    limit: {{ attempts: 2, per: 1h }}\n",
        serde_json::to_string(&argv).unwrap()
    );
    let config = write_setup(dir.path(), port, &plan);
    let db = dir.path().join("state/medic.db");

    let mut redis = Redis::start(port);
    let mut medic = Medic::start(&config, &dir.path().join("medic.log"));
    std::thread::sleep(Duration::from_millis(800));
    redis.kill();
    wait_until(Duration::from_secs(30), "the incident to resolve", || {
        block_on(incidents(&db))
            .iter()
            .any(|i| i.state == IncidentState::Resolved)
    });
    assert!(redis_ping(port), "redis answers PING again");
    assert!(medic.stop().success(), "graceful exit 0 on SIGTERM");
    kill_pidfile(&pidfile);

    block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        let incs = store.recent_incidents(10).await.unwrap();
        assert_eq!(incs.len(), 1, "exactly one incident");
        let tl: Vec<String> = store
            .timeline(incs[0].id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        let find = |p: &str| {
            tl.iter()
                .position(|m| m.starts_with(p))
                .unwrap_or_else(|| panic!("no {p:?} in {tl:#?}"))
        };
        let opened = find("opened: redis_down firing");
        let running = find("step restart-redis: running exec");
        let verified = find("step restart-redis: verified: redis_down cleared");
        let resolved = find("resolved: all symptoms clear");
        assert!(
            opened < running && running < verified && verified < resolved,
            "{tl:#?}"
        );
        let ledger = store.incident_attempts(incs[0].id).await.unwrap();
        assert_eq!(ledger.len(), 1, "{ledger:#?}");
        assert_eq!(ledger[0].outcome, Some(AttemptOutcome::Succeeded));
        assert_eq!(ledger[0].action, "exec");
        assert!(ledger[0].ended_at.is_some());
    });
}

#[test]
fn failing_restart_stops_at_limit_escalates_and_survives_medic_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let plan = "  - name: restart-redis\n    action: exec\n    args: [sh, -c, \"echo cannot restart redis >&2; exit 1\"]\n    verify: { clears: redis_down, within: 2s }\n    limit: { attempts: 2, per: 1h, cooldown: 300ms }\n";
    let config = write_setup(dir.path(), port, plan);
    let db = dir.path().join("state/medic.db");

    let mut redis = Redis::start(port);
    let mut medic = Medic::start(&config, &dir.path().join("medic.log"));
    redis.kill();
    wait_until(Duration::from_secs(30), "escalation", || {
        block_on(incidents(&db))
            .iter()
            .any(|i| i.state == IncidentState::Escalated)
    });
    wait_until(Duration::from_secs(10), "the page in the log", || {
        medic.log_text().contains("PAGE:")
    });
    assert!(medic.stop().success());

    let (id, attempts_before) = block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        let incs = store.open_incidents().await.unwrap();
        assert_eq!(incs.len(), 1);
        let ledger = store.incident_attempts(incs[0].id).await.unwrap();
        let ran: Vec<_> = ledger
            .iter()
            .filter(|a| a.outcome == Some(AttemptOutcome::Failed))
            .collect();
        assert_eq!(ran.len(), 2, "exactly `attempts` runs: {ledger:#?}");
        assert!(
            ran[0]
                .reason
                .contains("exit status 1: cannot restart redis"),
            "{}",
            ran[0].reason
        );
        let refused = ledger
            .iter()
            .filter(|a| a.outcome == Some(AttemptOutcome::Refused))
            .count();
        assert_eq!(refused, 1, "the limit refusal is in the ledger");
        (incs[0].id, ledger.len())
    });

    // Restart medic inside the window: it resumes the incident, runs nothing.
    let mut medic = Medic::start(&config, &dir.path().join("medic2.log"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(medic.stop().success());
    block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        let incs = store.recent_incidents(10).await.unwrap();
        assert_eq!(incs.len(), 1, "no duplicate incident");
        assert_eq!(incs[0].id, id);
        assert_eq!(incs[0].state, IncidentState::Escalated);
        let ledger = store.incident_attempts(id).await.unwrap();
        assert_eq!(
            ledger.len(),
            attempts_before,
            "no further attempt after restart: {ledger:#?}"
        );
        let tl: Vec<String> = store
            .timeline(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert!(
            tl.iter()
                .any(|m| m.starts_with("medic restarted; resuming this escalated incident")),
            "{tl:#?}"
        );
        assert_eq!(
            tl.iter()
                .filter(|m| m.starts_with("paged level 1 via log"))
                .count(),
            1,
            "{tl:#?}"
        );
    });
}
