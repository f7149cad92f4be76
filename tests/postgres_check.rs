//! The `postgres` check against a private PostgreSQL 15 primary and a real
//! streaming replica (tests/common/pg.rs): readiness, role, replica lag,
//! and the data-corruption scenario's integrity queries as shipped in
//! `rules/data-corruption.yaml`, on seeded tables.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::pg::{PASSWORD_ROLE, Pg, PgNode, wait_caught_up};
use common::*;
use medic::check::postgres::{PostgresCheck, PostgresParams};
use medic::check::{Check, CheckSpec};
use medic::config::{Config, PostgresTarget, TargetConfig};
use medic::observe::Outcome;
use medic::secret::SecretRef;

fn target(port: u16) -> PostgresTarget {
    PostgresTarget {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        password: None,
        dbname: "postgres".into(),
        ..Default::default()
    }
}

fn params() -> PostgresParams {
    PostgresParams {
        target: "db".into(),
        ready: false,
        role: None,
        max_lag_bytes: None,
        max_lag_seconds: None,
        sql: None,
        above: None,
        below: None,
    }
}

fn check_with(t: PostgresTarget, p: PostgresParams, timeout: Duration) -> PostgresCheck {
    let mut config = Config::default();
    config
        .targets
        .insert("db".into(), TargetConfig::Postgres(t));
    PostgresCheck::build(&p, timeout, &config).unwrap()
}

fn check(node: &PgNode, p: PostgresParams) -> PostgresCheck {
    check_with(target(node.port), p, Duration::from_secs(5))
}

fn ready() -> PostgresParams {
    PostgresParams {
        ready: true,
        ..params()
    }
}

fn role(r: &str) -> PostgresParams {
    PostgresParams {
        role: Some(r.into()),
        ..params()
    }
}

fn failing_with(o: &Outcome, text: &str) -> bool {
    matches!(o, Outcome::Failing(d) if d.contains(text))
}

fn unknown_with(o: &Outcome, text: &str) -> bool {
    matches!(o, Outcome::Unknown(d) if d.contains(text))
}

#[tokio::test]
async fn ready_ok_then_refused_after_stop_then_ok_after_restart() {
    let mut pg = Pg::primary();
    let c = check(&pg.primary, ready());
    assert_eq!(c.run().await, Outcome::Ok);
    pg.primary.stop_immediate();
    let o = c.run().await;
    assert_eq!(
        o,
        Outcome::Failing(format!("127.0.0.1:{}: connection refused", pg.primary.port))
    );
    pg.primary.start();
    assert_eq!(c.run().await, Outcome::Ok);
}

#[tokio::test]
async fn roles_of_primary_and_streaming_replica() {
    let pg = Pg::with_replica();
    let (p, r) = (&pg.primary, pg.replica());
    assert_eq!(check(p, role("primary")).run().await, Outcome::Ok);
    assert_eq!(check(r, role("replica")).run().await, Outcome::Ok);
    assert_eq!(
        check(p, role("replica")).run().await,
        Outcome::Failing(format!(
            "127.0.0.1:{}: is a primary (pg_is_in_recovery() = false), expected a replica",
            p.port
        ))
    );
    assert_eq!(
        check(r, role("primary")).run().await,
        Outcome::Failing(format!(
            "127.0.0.1:{}: is a replica (pg_is_in_recovery() = true), expected a primary",
            r.port
        ))
    );
    // Lag limits only make sense on a replica.
    let lag = PostgresParams {
        max_lag_bytes: Some(1 << 20),
        ..params()
    };
    assert_eq!(check(r, lag.clone()).run().await, Outcome::Ok);
    assert_eq!(
        check(p, lag).run().await,
        Outcome::Failing(format!(
            "127.0.0.1:{}: not a replica (pg_is_in_recovery() = false)",
            p.port
        ))
    );
}

#[tokio::test]
async fn replica_lag_in_bytes_and_seconds_while_replay_is_paused() {
    let pg = Pg::with_replica();
    let (p, r) = (&pg.primary, pg.replica());
    p.psql("CREATE TABLE filler (x text)");
    wait_caught_up(p, r);
    let bytes = |max: u64| {
        check(
            r,
            PostgresParams {
                max_lag_bytes: Some(max),
                ..params()
            },
        )
    };
    let seconds = |max: f64| {
        check(
            r,
            PostgresParams {
                max_lag_seconds: Some(max),
                ..params()
            },
        )
    };
    // The primary writes WAL of its own now and then (a running-xacts
    // record every 15 s), so "caught up" is waited for, not assumed.
    let (b0, s0) = (bytes(0), seconds(0.0));
    eventually(Duration::from_secs(20), "no lag in bytes", || async {
        b0.run().await == Outcome::Ok
    })
    .await;
    eventually(Duration::from_secs(20), "no lag in seconds", || async {
        s0.run().await == Outcome::Ok
    })
    .await;

    // The replica keeps receiving WAL but stops replaying it.
    r.psql("SELECT pg_wal_replay_pause()");
    p.psql("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 2000)");
    let c = bytes(100_000);
    eventually(Duration::from_secs(20), "lag to exceed 100 kB", || async {
        failing_with(&c.run().await, "replica lags")
    })
    .await;
    let o = bytes(100_000).run().await;
    assert!(failing_with(&o, ", limit 100000"), "{o:?}");
    assert_eq!(
        bytes(1 << 30).run().await,
        Outcome::Ok,
        "under a 1 GiB limit"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let o = seconds(1.0).run().await;
    assert!(failing_with(&o, " s, limit 1"), "{o:?}");
    assert_eq!(seconds(3600.0).run().await, Outcome::Ok);

    r.psql("SELECT pg_wal_replay_resume()");
    wait_caught_up(p, r);
    assert_eq!(bytes(0).run().await, Outcome::Ok);
    assert_eq!(seconds(0.0).run().await, Outcome::Ok);
}

#[tokio::test]
async fn replica_that_stopped_streaming_is_failing() {
    let mut pg = Pg::with_replica();
    let r_port = pg.replica().port;
    let c = check(pg.replica(), role("replica"));
    let lag = check(
        pg.replica(),
        PostgresParams {
            max_lag_bytes: Some(1 << 20),
            ..params()
        },
    );
    assert_eq!(c.run().await, Outcome::Ok);
    pg.primary.stop_immediate();
    eventually(Duration::from_secs(20), "the replica to notice", || async {
        failing_with(&c.run().await, "not streaming")
    })
    .await;
    let o = c.run().await;
    assert!(
        o == Outcome::Failing(format!(
            "127.0.0.1:{r_port}: replica is not streaming (no WAL receiver)"
        )) || failing_with(&o, "replica is not streaming (WAL receiver "),
        "{o:?}"
    );
    assert!(failing_with(&lag.run().await, "not streaming"));
    // It is still up and in recovery.
    assert_eq!(check(pg.replica(), ready()).run().await, Outcome::Ok);
}

#[tokio::test]
async fn wrong_password_and_missing_database_are_unknown() {
    let pg = Pg::primary();
    let p = &pg.primary;
    p.psql(&format!(
        "CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 's3cret-pw'"
    ));
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    std::fs::write(&good, "s3cret-pw\n").unwrap();
    std::fs::write(&bad, "wrong\n").unwrap();
    let with_pw = |file: &std::path::Path| PostgresTarget {
        user: PASSWORD_ROLE.into(),
        password: Some(SecretRef::File(file.to_path_buf())),
        ..target(p.port)
    };
    let t = Duration::from_secs(5);
    assert_eq!(
        check_with(with_pw(&good), ready(), t).run().await,
        Outcome::Ok
    );
    let o = check_with(with_pw(&bad), ready(), t).run().await;
    assert!(unknown_with(&o, "password authentication failed"), "{o:?}");
    assert!(!format!("{o:?}").contains("wrong"), "no secret in {o:?}");
    let o = check_with(
        PostgresTarget {
            dbname: "nope".into(),
            ..target(p.port)
        },
        ready(),
        t,
    )
    .run()
    .await;
    assert!(
        unknown_with(&o, "database \"nope\" does not exist"),
        "{o:?}"
    );
}

#[tokio::test]
/// A silent server is a candidate unreachable (failing when medic's vantage
/// is healthy), not unknown, until `peer_timeout` says it is frozen: a
/// frozen primary must be able to fail over.
async fn a_server_that_never_answers_is_unreachable_until_peer_timeout_then_frozen() {
    // Accepts the TCP connection (the kernel does, as for a SIGSTOPped
    // postmaster), then says nothing.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // The run's timeout comes before peer_timeout (5s): silent, a candidate
    // unreachable (the vantage judgement decides).
    let c = check_with(target(port), ready(), Duration::from_millis(300));
    let o = c.run().await;
    assert_eq!(
        o,
        Outcome::Unreachable(format!("127.0.0.1:{port}: start-up timed out"))
    );
    // peer_timeout within the run's timeout: the server is frozen.
    let quick = PostgresTarget {
        peer_timeout: Some("200ms".parse().unwrap()),
        ..target(port)
    };
    let o = check_with(quick, ready(), Duration::from_secs(2))
        .run()
        .await;
    assert_eq!(
        o,
        Outcome::Failing(format!(
            "127.0.0.1:{port}: accepted the TCP connection but did not answer within 200ms (peer_timeout): the server is frozen"
        ))
    );
    drop(l);
}

/// The three integrity symptoms of the shipped data-corruption scenario,
/// exactly as the rule file says them.
fn integrity_symptoms() -> Vec<(String, PostgresParams)> {
    // The shipped rule's table restore names a backup job of db.
    let mut config = medic::config::load_str(
        "medic.yaml",
        "targets:\n  db: { postgres: { host: 127.0.0.1 } }\njobs:\n  db-backup: { schedule: '0 2 * * *', postgres.backup: { target: db, directory: /tmp/b } }\n",
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    config
        .targets
        .insert("db".into(), TargetConfig::Postgres(target(5432)));
    let sc = medic::rules::load::load_str(
        "rules/data-corruption.yaml",
        include_str!("../rules/data-corruption.yaml"),
        &config,
    )
    .unwrap();
    sc.symptoms
        .into_iter()
        .map(|s| match s.check {
            CheckSpec::Postgres(p) => (s.name, p),
            other => panic!("{}: not a postgres check: {other:?}", s.name),
        })
        .collect()
}

const SCHEMA: &str = "
CREATE TABLE patients (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE appointments (
    id serial PRIMARY KEY,
    patient_id int NOT NULL,
    status text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE prescriptions (
    id serial PRIMARY KEY,
    patient_id int NOT NULL,
    drug text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO patients (name) VALUES ('Awa'), ('Moussa'), ('Fatou');
INSERT INTO appointments (patient_id, status) VALUES
    (1, 'scheduled'), (2, 'confirmed'), (3, 'cancelled'), (1, 'completed');
INSERT INTO prescriptions (patient_id, drug, created_at) VALUES
    (1, 'amoxicillin', now() - interval '2 days'), (2, 'paracetamol', now());
";

#[tokio::test]
async fn data_corruption_integrity_queries_on_seeded_tables() {
    let pg = Pg::primary();
    let p = &pg.primary;
    p.psql("CREATE DATABASE keneyapp");
    p.psql_db("keneyapp", SCHEMA);
    let t = PostgresTarget {
        dbname: "keneyapp".into(),
        ..target(p.port)
    };
    let symptoms = integrity_symptoms();
    let names: Vec<&str> = symptoms.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "orphaned_appointments",
            "invalid_appointment_status",
            "future_prescriptions"
        ]
    );
    let run_all = || async {
        let mut out = Vec::new();
        for (name, params) in &symptoms {
            let o = check_with(t.clone(), params.clone(), Duration::from_secs(30))
                .run()
                .await;
            out.push((name.clone(), o));
        }
        out
    };
    let a = format!("127.0.0.1:{}", p.port);
    let expect = |orphans: Option<u32>, invalid: Option<u32>, future: Option<u32>| {
        let o = |n: Option<u32>| match n {
            None => Outcome::Ok,
            Some(n) => Outcome::Failing(format!("{a}: sql returned {n}, above 0")),
        };
        vec![
            ("orphaned_appointments".to_string(), o(orphans)),
            ("invalid_appointment_status".to_string(), o(invalid)),
            ("future_prescriptions".to_string(), o(future)),
        ]
    };
    assert_eq!(run_all().await, expect(None, None, None), "clean data");

    p.psql_db(
        "keneyapp",
        "INSERT INTO appointments (patient_id, status) VALUES (99, 'scheduled'), (98, 'confirmed')",
    );
    assert_eq!(run_all().await, expect(Some(2), None, None));

    p.psql_db(
        "keneyapp",
        "INSERT INTO appointments (patient_id, status) VALUES (2, 'lost'), (3, '')",
    );
    assert_eq!(run_all().await, expect(Some(2), Some(2), None));

    p.psql_db(
        "keneyapp",
        "INSERT INTO prescriptions (patient_id, drug, created_at)
         VALUES (3, 'ibuprofen', now() + interval '30 days')",
    );
    assert_eq!(run_all().await, expect(Some(2), Some(2), Some(1)));

    // The runbook's isolate step, by hand: the symptoms clear.
    p.psql_db(
        "keneyapp",
        "DELETE FROM appointments WHERE patient_id NOT IN (SELECT id FROM patients);
         DELETE FROM appointments
             WHERE status NOT IN ('scheduled', 'confirmed', 'cancelled', 'completed');
         DELETE FROM prescriptions WHERE created_at > NOW();",
    );
    assert_eq!(run_all().await, expect(None, None, None), "after cleanup");
}

fn sql(q: &str) -> PostgresParams {
    PostgresParams {
        sql: Some(q.into()),
        above: Some(10.0),
        ..params()
    }
}

#[tokio::test]
async fn sql_runs_read_only_one_statement_within_the_timeout() {
    let pg = Pg::primary();
    let p = &pg.primary;
    p.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 5)");
    let port = p.port;
    let run = |params: PostgresParams| async move {
        check_with(target(port), params, Duration::from_millis(500))
            .run()
            .await
    };
    // Numbers of every common type.
    assert_eq!(run(sql("SELECT count(*) FROM t")).await, Outcome::Ok);
    assert_eq!(
        run(sql("SELECT avg(x) FROM t")).await,
        Outcome::Ok,
        "numeric"
    );
    assert_eq!(run(sql("SELECT 10.5::float4")).await.label(), "failing");
    assert!(failing_with(
        &run(sql("SELECT sum(x) * 1.5 FROM t")).await,
        "sql returned 22.5, above 10"
    ));
    assert!(failing_with(
        &run(PostgresParams {
            sql: Some("SELECT min(x) FROM t".into()),
            below: Some(2.0),
            ..params()
        })
        .await,
        "sql returned 1, below 2"
    ));

    // A write hidden in a CTE is refused by the read-only transaction.
    let o = run(sql(
        "WITH d AS (DELETE FROM t RETURNING 1) SELECT count(*) FROM d",
    ))
    .await;
    assert!(unknown_with(&o, "read-only transaction"), "{o:?}");
    // A second statement cannot ride along.
    let o = run(sql("SELECT 1; DELETE FROM t")).await;
    assert!(unknown_with(&o, "multiple commands"), "{o:?}");
    assert_eq!(p.psql("SELECT count(*) FROM t"), "5", "nothing deleted");

    // Hitting the statement timeout: unknown, and the server stopped.
    let o = run(sql("SELECT count(*) FROM pg_sleep(5)")).await;
    assert!(unknown_with(&o, "statement timeout"), "{o:?}");

    // Answers that are not one number.
    for (q, why) in [
        ("SELECT 'seven'", "returned a text, expected a number"),
        ("SELECT x FROM t", "returned 5 rows, expected 1"),
        ("SELECT 1, 2", "returned 2 columns, expected 1"),
        ("SELECT NULL::int", "returned NULL"),
        ("SELECT count(*) FROM missing_table", "does not exist"),
    ] {
        let o = run(sql(q)).await;
        assert!(unknown_with(&o, why), "{q}: {o:?}");
    }
}
