//! `postgres.promote-replica` and `postgres.quarantine` against real
//! PostgreSQL servers (a primary and streaming replicas the test starts on
//! ephemeral ports): every promotion gate, the promotion itself, and the
//! quarantine's row accounting.

mod common;

use std::time::Duration;

use common::pg::{Pg, PgNode};
use medic::observe::{Phase, Seen, SymptomObservation, SymptomView};
use medic::remedy::postgres::{PromoteReplica, PromoteReplicaParams, Quarantine, QuarantineParams};
use medic::remedy::{Action, ActionContext, Preflight};
use tokio::time::Instant;

fn config(nodes: &[(&str, &PgNode)]) -> medic::config::Config {
    let mut y = String::from("targets:\n");
    for (name, n) in nodes {
        y.push_str(&format!("  {name}: {}\n", n.target_yaml()));
    }
    medic::config::load_str("medic.yaml", &y).unwrap()
}

fn promote(json: &str, config: &medic::config::Config) -> PromoteReplica {
    let p: PromoteReplicaParams =
        serde_json::from_value(serde_json::from_str(json).unwrap()).unwrap();
    PromoteReplica::build(&p, config).unwrap()
}

/// What the engine would have seen: the primary failing `streak` checks
/// over `secs`.
fn ctx_seeing_primary_fail(streak: u32, secs: u64) -> ActionContext {
    let mut ctx = ActionContext::new("test:0:1", Duration::from_secs(30));
    let since = Instant::now()
        .checked_sub(Duration::from_secs(secs))
        .unwrap_or_else(Instant::now);
    ctx.observations = vec![SymptomObservation {
        symptom: "db_down".into(),
        target: Some("db".into()),
        check: "tcp",
        view: SymptomView {
            phase: Phase::Firing,
            seen: Seen::Failing,
            streak,
            streak_since: Some(since),
            quiet_since: None,
        },
        quorum: None,
    }];
    ctx
}

fn gate<'a>(pre: &'a Preflight, name: &str) -> &'a medic::remedy::Gate {
    pre.gates
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no gate {name}: {pre:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_primary_then_promotion_passes_every_gate_and_the_replica_takes_writes() {
    let mut c = Pg::start(1);
    c.primary
        .psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)");
    c.wait_caught_up(Duration::from_secs(20));
    let cfg = config(&[("db", &c.primary), ("db-replica", &c.replicas[0])]);
    let a = promote(
        r#"{"primary": "db", "replicas": ["db-replica"], "unreachable_checks": 3, "unreachable_for": "1s"}"#,
        &cfg,
    );
    c.primary.kill9();

    let mut ctx = ctx_seeing_primary_fail(5, 3);
    let pre = a.preflight(&ctx).await;
    assert!(pre.refusal().is_none(), "{pre:#?}");
    let names: Vec<&str> = pre.gates.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "cooldown",
            "primary-unreachable",
            "no-other-primary",
            "candidate db-replica",
            "candidate-chosen"
        ]
    );
    assert_eq!(pre.data["candidate"], "db-replica");

    ctx.preflight = pre.data.clone();
    let r = a.run(&ctx).await;
    assert!(r.ok, "{r:#?}");
    assert!(
        r.detail
            .starts_with("db-replica promoted: pg_is_in_recovery() = false, timeline 1 → 2"),
        "{}",
        r.detail
    );
    let replica = &c.replicas[0];
    assert!(!replica.in_recovery());
    replica.psql("INSERT INTO t VALUES (101)");
    assert_eq!(replica.psql("SELECT count(*) FROM t"), "101");
    // A second look (as after a crash) sees the effect without re-running.
    let again = a.reconcile(&ctx).await.unwrap();
    assert!(again.ok, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_while_the_old_primary_still_answers_as_primary() {
    let c = Pg::start(1);
    c.wait_caught_up(Duration::from_secs(20));
    let cfg = config(&[("db", &c.primary), ("db-replica", &c.replicas[0])]);
    let a = promote(
        r#"{"primary": "db", "replicas": ["db-replica"], "unreachable_checks": 1, "unreachable_for": "1s"}"#,
        &cfg,
    );
    // medic's checks say the primary is down (a partition, say), but it
    // answers as primary when asked directly: no promotion beside it.
    let pre = a.preflight(&ctx_seeing_primary_fail(10, 10)).await;
    let g = pre.refusal().expect("refused");
    assert_eq!(g.name, "no-other-primary");
    assert!(
        g.detail.contains("\"db\" still answers as primary"),
        "{}",
        g.detail
    );
    assert!(c.replicas[0].in_recovery(), "nothing was promoted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_enough_failed_checks_is_not_yet_and_unknown_is_not_unreachable() {
    let mut c = Pg::start(1);
    let cfg = config(&[("db", &c.primary), ("db-replica", &c.replicas[0])]);
    let a = promote(
        r#"{"primary": "db", "replicas": ["db-replica"], "unreachable_checks": 5, "unreachable_for": "10s"}"#,
        &cfg,
    );
    c.primary.kill9();
    let pre = a.preflight(&ctx_seeing_primary_fail(2, 1)).await;
    let g = pre.refusal().expect("refused");
    assert_eq!(g.name, "primary-unreachable");
    assert!(g.wait.is_some(), "too early is 'not yet': {g:?}");
    assert!(
        g.detail.contains("fail 2 consecutive checks"),
        "{}",
        g.detail
    );

    let mut blind = ctx_seeing_primary_fail(50, 60);
    blind.observations[0].view.seen = Seen::Unknown;
    let pre = a.preflight(&blind).await;
    let g = pre.refusal().expect("refused");
    assert_eq!(g.name, "primary-unreachable");
    assert!(g.wait.is_none());
    assert!(
        g.detail.contains("unknown is not unreachable"),
        "{}",
        g.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_candidate_whose_lag_exceeds_the_limit() {
    let mut c = Pg::start(2);
    c.wait_caught_up(Duration::from_secs(20));
    // replica2 loses its primary (a wrong address): it stays a streaming
    // replica in recovery, but receives nothing more.
    let r2 = &c.replicas[1];
    r2.psql("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1 user=postgres'");
    r2.psql("SELECT pg_reload_conf()");
    let start = std::time::Instant::now();
    while r2.psql("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'") != "0" {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "replica2 still streaming"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // About 4 MiB of WAL that only replica1 receives.
    c.primary.psql(
        "CREATE TABLE big AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 30000) g",
    );
    let target = c.primary.psql("SELECT pg_current_wal_lsn()");
    let r1 = &c.replicas[0];
    while r1.psql(&format!(
        "SELECT pg_wal_lsn_diff('{target}', pg_last_wal_receive_lsn()) > 0"
    )) == "t"
    {
        assert!(start.elapsed() < Duration::from_secs(30), "replica1 behind");
        std::thread::sleep(Duration::from_millis(50));
    }
    let cfg = config(&[
        ("db", &c.primary),
        ("db-replica1", &c.replicas[0]),
        ("db-replica2", &c.replicas[1]),
    ]);
    // replica1 is up to date but never to be promoted (a reporting node);
    // replica2 is the candidate, and it misses megabytes of WAL.
    let a = promote(
        r#"{"primary": "db", "replicas": [{"target": "db-replica1", "priority": 0}, "db-replica2"],
            "unreachable_checks": 1, "unreachable_for": "1s"}"#,
        &cfg,
    );
    c.primary.kill9();
    let pre = a.preflight(&ctx_seeing_primary_fail(3, 3)).await;
    let g = pre.refusal().expect("refused");
    assert_eq!(g.name, "candidate-chosen");
    assert_eq!(
        g.detail,
        "no eligible candidate (db-replica1, db-replica2 refused)"
    );
    let lagging = gate(&pre, "candidate db-replica2");
    assert!(!lagging.passed);
    assert!(
        lagging.detail.starts_with("lags ") && lagging.detail.contains("(max 1.0 MiB)"),
        "{}",
        lagging.detail
    );
    assert_eq!(
        gate(&pre, "candidate db-replica1").detail,
        "priority 0: never promoted"
    );
    assert!(c.replicas[1].in_recovery(), "nothing was promoted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_candidates_are_ranked_by_lsn_then_priority_then_name() {
    let mut c = Pg::start(2);
    c.primary
        .psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
    c.wait_caught_up(Duration::from_secs(20));
    let cfg = config(&[
        ("db", &c.primary),
        ("db-b", &c.replicas[0]),
        ("db-a", &c.replicas[1]),
    ]);
    c.primary.kill9();
    let ctx = ctx_seeing_primary_fail(3, 3);
    // Same WAL received, same priority: the name decides, every time.
    let same = promote(
        r#"{"primary": "db", "replicas": ["db-b", "db-a"], "unreachable_checks": 1, "unreachable_for": "1s"}"#,
        &cfg,
    );
    for _ in 0..3 {
        let pre = same.preflight(&ctx).await;
        assert_eq!(pre.data["candidate"], "db-a", "{pre:#?}");
        assert!(
            gate(&pre, "candidate-chosen")
                .detail
                .ends_with("ranking by received LSN, priority, name: db-a > db-b"),
            "{pre:#?}"
        );
    }
    // A higher priority wins over the name.
    let ranked = promote(
        r#"{"primary": "db", "replicas": [{"target": "db-b", "priority": 2}, "db-a"],
            "unreachable_checks": 1, "unreachable_for": "1s"}"#,
        &cfg,
    );
    let pre = ranked.preflight(&ctx).await;
    assert_eq!(pre.data["candidate"], "db-b", "{pre:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_moves_exactly_the_orphans_and_keeps_every_row() {
    let c = Pg::start(0);
    let db = &c.primary;
    db.psql(
        "CREATE TABLE patients (id int PRIMARY KEY, name text NOT NULL);
         CREATE TABLE appointments (id int PRIMARY KEY, patient_id int NOT NULL,
                                    status text NOT NULL, at timestamptz NOT NULL);
         CREATE TABLE prescriptions (id int PRIMARY KEY, appointment_id int,
                                     drug text NOT NULL, created_at timestamptz NOT NULL);
         INSERT INTO patients SELECT g, 'patient ' || g FROM generate_series(1, 200) g;
         -- 1000 appointments; those of patients 201..207 are orphans (7 x 3 = 21).
         INSERT INTO appointments
           SELECT g, 1 + (g % 207), 'scheduled', now() - interval '1 day'
           FROM generate_series(1, 1000) g;
         -- 300 prescriptions; 5 claim to be written tomorrow.
         INSERT INTO prescriptions
           SELECT g, g, 'drug ' || g,
                  CASE WHEN g <= 5 THEN now() + interval '1 day' ELSE now() - interval '1 hour' END
           FROM generate_series(1, 300) g;",
    );
    let orphans = db.psql(
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM appointments
         WHERE patient_id NOT IN (SELECT id FROM patients)",
    );
    let orphan_count = orphans.split(',').count();
    assert!(orphan_count > 0);
    let cfg = config(&[("db", db)]);
    let q = |table: &str, cond: &str, into: &str, max: u64| {
        Quarantine::build(
            &QuarantineParams {
                target: "db".into(),
                table: table.into(),
                where_: cond.into(),
                into: Some(into.into()),
                max_rows: Some(max),
            },
            &cfg,
        )
        .unwrap()
    };
    let ctx = ActionContext::new("7:0:1", Duration::from_secs(30));

    // Too wide: refused by the preflight and by the action itself.
    let wide = q(
        "appointments",
        "status = 'scheduled'",
        "corrupted_appointments",
        100,
    );
    let pre = wide.preflight(&ctx).await;
    let g = pre.refusal().expect("refused");
    assert_eq!(g.name, "max-rows");
    assert_eq!(
        g.detail,
        "1000 rows match, more than max_rows 100: corruption that wide goes to a human"
    );
    let r = wide.run(&ctx).await;
    assert!(!r.ok);
    assert_eq!(db.psql("SELECT count(*) FROM appointments"), "1000");

    let orph = q(
        "appointments",
        "patient_id NOT IN (SELECT id FROM patients)",
        "corrupted_appointments",
        1000,
    );
    let pre = orph.preflight(&ctx).await;
    assert!(pre.refusal().is_none(), "{pre:#?}");
    assert_eq!(pre.data["matching"], orphan_count as u64);
    let r = orph.run(&ctx).await;
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.data["deleted"], orphan_count as u64);
    assert_eq!(r.data["copied"], orphan_count as u64);
    assert_eq!(
        db.psql("SELECT count(*) FROM appointments"),
        (1000 - orphan_count).to_string()
    );
    assert_eq!(
        db.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM corrupted_appointments"),
        orphans,
        "exactly the orphans moved"
    );
    assert_eq!(
        db.psql(
            "SELECT count(*) FROM appointments WHERE patient_id NOT IN (SELECT id FROM patients)"
        ),
        "0"
    );
    assert_eq!(
        db.psql("SELECT (SELECT count(*) FROM appointments) + (SELECT count(*) FROM corrupted_appointments)"),
        "1000",
        "source plus quarantine unchanged"
    );
    assert_eq!(
        db.psql("SELECT DISTINCT medic_attempt FROM corrupted_appointments"),
        "7:0:1"
    );

    let future = q(
        "prescriptions",
        "created_at > NOW()",
        "corrupted_prescriptions",
        1000,
    );
    let r = future.run(&ctx).await;
    assert!(r.ok, "{r:#?}");
    assert_eq!(
        db.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM corrupted_prescriptions"),
        "1,2,3,4,5"
    );
    assert_eq!(
        db.psql("SELECT (SELECT count(*) FROM prescriptions) + (SELECT count(*) FROM corrupted_prescriptions)"),
        "300"
    );
    // Run again: nothing left to move, nothing changes.
    let r = orph.run(&ctx).await;
    assert!(r.ok);
    assert_eq!(r.detail, "no rows match; nothing moved");
    assert_eq!(
        db.psql("SELECT count(*) FROM corrupted_appointments"),
        orphan_count.to_string()
    );
}
