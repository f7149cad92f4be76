//! `postgres.restore` and `postgres.restore-tables` against real
//! PostgreSQL servers the test starts (the production one and a second
//! server to restore onto), with copies taken by the real
//! `postgres.backup` job: a restore into a new database whose row counts
//! equal the backup's, refused while the original answers as a writable
//! primary, a safety dump of a fenced original first; a table restore that
//! brings back exactly the deleted rows and leaves changed and newer rows
//! and every other table alone.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::pg::{Pg, PgNode, pg_bin};
use medic::clock::Clock;
use medic::config::Config;
use medic::jobs;
use medic::remedy::pg_restore::{Restore, RestoreParams, RestoreTables, RestoreTablesParams};
use medic::remedy::{Action, ActionContext, Preflight};
use medic::store::{JobOutcome, MemoryStore, Store};
use serde_json::json;

const SEED: &str = "
CREATE TABLE patients (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE appointments (id serial PRIMARY KEY, patient_id int NOT NULL,
    status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE prescriptions (id serial PRIMARY KEY, patient_id int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO patients (name) SELECT 'p' || g FROM generate_series(1, 500) g;
INSERT INTO appointments (patient_id, status)
    SELECT 1 + g % 500, 'scheduled' FROM generate_series(1, 1200) g;
INSERT INTO prescriptions (patient_id) SELECT 1 + g % 500 FROM generate_series(1, 800) g;
";

fn config(prod: &PgNode, standby: Option<&PgNode>, dir: &Path) -> Config {
    let standby = standby.map_or(String::new(), |s| {
        format!("  standby: {}\n", s.target_yaml())
    });
    let mut c = medic::config::load_str(
        "medic.yaml",
        &format!(
            "
targets:
  db: {}
  db-cluster: {{ postgres: {{ members: [db] }} }}
{standby}jobs:
  db-backup:
    schedule: '0 2 * * *'
    postgres.backup: {{ target: db, directory: backups, retention: 30d }}
",
            prod.target_yaml()
        ),
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    c.base_dir = dir.to_path_buf();
    c
}

/// Runs the backup job with its clock at `at`; returns the copy's name.
async fn backup(config: &Config, store: &Arc<dyn Store>, at: chrono::DateTime<Utc>) -> String {
    let job = jobs::build("db-backup", &config.jobs["db-backup"], config).unwrap();
    let clock = Clock::tokio(at);
    let r = jobs::run_once(
        store,
        &clock,
        "db-backup",
        &job,
        at,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(r.outcome, Some(JobOutcome::Succeeded), "{}", r.summary);
    r.data["file"].as_str().unwrap().to_string()
}

fn ctx(store: &Arc<dyn Store>) -> ActionContext {
    let mut c = ActionContext::new("test:0:1", Duration::from_secs(120));
    c.ledger = Some(store.clone());
    c.rpo = Some(Duration::from_secs(24 * 3600));
    c
}

fn restore(config: &Config, extra: serde_json::Value) -> Restore {
    let mut p =
        json!({ "backup": "db-backup", "target": "standby", "database": "keneyapp_restored" });
    p.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let p: RestoreParams = serde_json::from_value(p).unwrap();
    Restore::build(&p, config).unwrap()
}

fn gate<'a>(pre: &'a Preflight, name: &str) -> &'a medic::remedy::Gate {
    pre.gates
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no gate {name}: {pre:#?}"))
}

fn counts(n: &PgNode, db: &str) -> Vec<i64> {
    ["patients", "appointments", "prescriptions"]
        .iter()
        .map(|t| {
            n.psql_db(db, &format!("SELECT count(*) FROM {t}"))
                .parse()
                .unwrap()
        })
        .collect()
}

fn databases(n: &PgNode, name: &str) -> String {
    n.psql(&format!(
        "SELECT count(*) FROM pg_database WHERE datname = '{name}'"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_a_new_database_has_the_backups_row_counts_and_reports_the_data_window() {
    let mut prod = Pg::primary();
    prod.primary.psql(SEED);
    let standby = Pg::primary();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&prod.primary, Some(&standby.primary), dir.path());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let file = backup(&cfg, &store, Utc::now() - chrono::Duration::hours(3)).await;
    let runs = store.job_runs("db-backup", 10).await.unwrap();
    assert_eq!(
        runs[0].data["rows"],
        json!({"public.appointments": 1200, "public.patients": 500, "public.prescriptions": 800}),
        "the backup counts its rows in the dump's snapshot"
    );
    // The primary is gone, and no replica is left.
    prod.primary.kill9();

    let a = restore(
        &cfg,
        json!({ "integrity": {
            "orphaned_appointments": "SELECT count(*) FROM appointments WHERE patient_id NOT IN (SELECT id FROM patients)"
        } }),
    );
    let c = ctx(&store);
    let pre = a.preflight(&c).await;
    assert!(pre.refusal().is_none(), "{pre:#?}");
    let names: Vec<&str> = pre.gates.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        ["original-down", "new-database", "backup", "data-window"]
    );
    let window = &gate(&pre, "data-window").detail;
    assert!(
        window.contains(&file) && window.contains("3h") && window.contains("RPO 1day: within"),
        "{window}"
    );

    let started = std::time::Instant::now();
    let r = a.run(&c).await;
    let took = started.elapsed();
    assert!(r.ok, "{r:#?}");
    assert_eq!(
        r.data["counts"],
        json!({"public.appointments": 1200, "public.patients": 500, "public.prescriptions": 800})
    );
    assert_eq!(
        counts(&standby.primary, "keneyapp_restored"),
        [500, 1200, 800]
    );
    assert_eq!(r.data["window"]["within_rpo"], json!(true));
    let lost = r.data["window"]["lost_secs"].as_i64().unwrap();
    assert!((3 * 3600..3 * 3600 + 120).contains(&lost), "{lost}");
    assert!(
        r.data.get("safety_dump").is_none(),
        "nothing to dump: {r:#?}"
    );
    assert!(r.detail.contains("data window lost 3h"), "{}", r.detail);
    println!(
        "figures: restore {} ms (pg_restore + verify), whole action {} ms",
        r.data["restore_ms"],
        took.as_millis()
    );

    // As after a crash: the effect is seen in place, nothing run again.
    let seen = a.reconcile(&c).await.expect("the restore can tell");
    assert!(seen.ok, "{seen:#?}");
    // Never over a database that exists: a second attempt refuses.
    let pre = a.preflight(&c).await;
    let g = pre.refusal().expect("refused");
    assert_eq!(g.name, "new-database", "{pre:#?}");
    assert!(g.detail.contains("already exists"), "{}", g.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_while_the_original_answers_as_a_writable_primary() {
    let prod = Pg::primary();
    prod.primary.psql(SEED);
    let standby = Pg::primary();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&prod.primary, Some(&standby.primary), dir.path());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    backup(&cfg, &store, Utc::now() - chrono::Duration::minutes(5)).await;

    let a = restore(&cfg, json!({}));
    let c = ctx(&store);
    let pre = a.preflight(&c).await;
    let g = pre.refusal().expect("refused");
    assert_eq!(g.name, "original-down");
    assert!(
        g.detail.contains("answers as a writable primary"),
        "{}",
        g.detail
    );
    // Run re-checks (an approval may come long after the preflight).
    let r = a.run(&c).await;
    assert!(!r.ok, "{r:#?}");
    assert!(r.detail.contains("writable primary"), "{}", r.detail);
    assert_eq!(databases(&standby.primary, "keneyapp_restored"), "0");
    assert_eq!(counts(&prod.primary, "postgres"), [500, 1200, 800]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_original_is_dumped_first_then_restored() {
    let prod = Pg::primary();
    prod.primary.psql(SEED);
    let standby = Pg::primary();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&prod.primary, Some(&standby.primary), dir.path());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    backup(&cfg, &store, Utc::now() - chrono::Duration::hours(1)).await;
    // Written after the backup: only the safety dump has it.
    prod.primary
        .psql("INSERT INTO patients (name) VALUES ('after the backup')");
    // Fenced (as postgres.fence does): it answers, read-only.
    prod.primary
        .psql("ALTER SYSTEM SET default_transaction_read_only = on");
    prod.primary.psql("SELECT pg_reload_conf()");
    common::wait_until(Duration::from_secs(5), "read-only", || {
        prod.primary.psql("SHOW default_transaction_read_only") == "on"
    });

    let a = restore(&cfg, json!({}));
    let c = ctx(&store);
    let pre = a.preflight(&c).await;
    assert!(pre.refusal().is_none(), "{pre:#?}");
    assert!(
        gate(&pre, "original-down").detail.contains("fenced"),
        "{pre:#?}"
    );
    assert_eq!(pre.data["safety_dump"], json!(true));
    let r = a.run(&c).await;
    assert!(r.ok, "{r:#?}");
    let dump = r.data["safety_dump"]["file"].as_str().unwrap();
    assert!(dump.starts_with("db-backup-safety-"), "{dump}");
    assert!(r.detail.contains(dump), "{}", r.detail);
    // The restore is the backup (500 patients); the safety dump holds the
    // original as it was (501).
    assert_eq!(
        counts(&standby.primary, "keneyapp_restored"),
        [500, 1200, 800]
    );
    let path = dir.path().join("backups").join(dump);
    standby.primary.psql("CREATE DATABASE safety_check");
    let out = std::process::Command::new(pg_bin().join("pg_restore"))
        .args(["-h", "127.0.0.1", "-p", &standby.primary.port.to_string()])
        .args(["-U", "postgres", "-d", "safety_check", "--no-owner"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(counts(&standby.primary, "safety_check"), [501, 1200, 800]);
    // A safety dump is not a copy: no restore or retention counts it.
    let copies: Vec<String> = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(copies.len(), 2, "{copies:?}");
}

fn fingerprint(n: &PgNode, sql: &str) -> String {
    n.psql(&format!(
        "SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY id), '')) FROM ({sql}) t"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_restore_brings_back_exactly_the_deleted_rows_and_changes_nothing_else() {
    let prod = Pg::primary();
    prod.primary.psql(SEED);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&prod.primary, None, dir.path());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let now = Utc::now();
    let good = backup(&cfg, &store, now - chrono::Duration::hours(3)).await;
    // The corruption: rows deleted, rows changed, and (legitimately) new
    // rows; then a backup that already holds it, after the detection.
    prod.primary.psql(
        "DELETE FROM appointments WHERE id BETWEEN 10 AND 16;
         UPDATE appointments SET status = 'cancelled' WHERE id IN (100, 101, 102);
         INSERT INTO appointments (patient_id, status)
             SELECT 1, 'confirmed' FROM generate_series(1, 5);",
    );
    backup(&cfg, &store, now - chrono::Duration::minutes(10)).await;
    let untouched_before = fingerprint(
        &prod.primary,
        "SELECT * FROM appointments WHERE id NOT BETWEEN 10 AND 16",
    );
    let patients_before = fingerprint(&prod.primary, "SELECT * FROM patients");
    let prescriptions_before = fingerprint(&prod.primary, "SELECT * FROM prescriptions");

    let build = |copy_back: bool| {
        let p: RestoreTablesParams = serde_json::from_value(json!({
            "backup": "db-backup", "tables": ["appointments"],
            "copy_back": copy_back, "max_rows": 100,
            // A cluster: the table restore acts on its current primary.
            "target": "db-cluster",
        }))
        .unwrap();
        RestoreTables::build(&p, &cfg).unwrap()
    };
    let mut c = ctx(&store);
    c.detected_at = Some(now - chrono::Duration::hours(1));

    // The diff first: nothing written to the live table.
    let diff = build(false);
    let pre = diff.preflight(&c).await;
    assert!(pre.refusal().is_none(), "{pre:#?}");
    assert_eq!(
        pre.data["file"],
        json!(good),
        "the newest copy older than the detection"
    );
    let r = diff.run(&c).await;
    assert!(r.ok, "{r:#?}");
    let t = &r.data["tables"][0];
    assert_eq!(
        (
            t["missing"].as_i64(),
            t["changed"].as_i64(),
            t["added_since"].as_i64(),
            t["copied"].as_u64()
        ),
        (Some(7), Some(3), Some(5), Some(0)),
        "{r:#?}"
    );
    assert!(
        r.detail.contains(
            "public.appointments: 7 missing, 3 changed (left as they are), 5 added since"
        ),
        "{}",
        r.detail
    );
    assert_eq!(
        prod.primary.psql("SELECT count(*) FROM appointments"),
        "1198"
    );

    // A limit below the damage: refused, rolled back.
    let p: RestoreTablesParams = serde_json::from_value(json!({
        "backup": "db-backup", "tables": ["appointments"], "max_rows": 6,
    }))
    .unwrap();
    let r = RestoreTables::build(&p, &cfg).unwrap().run(&c).await;
    assert!(!r.ok && r.detail.contains("more than max_rows 6"), "{r:#?}");
    assert_eq!(
        prod.primary.psql("SELECT count(*) FROM appointments"),
        "1198"
    );

    // Approved: the missing rows come back, nothing else moves.
    let r = build(true).run(&c).await;
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.data["tables"][0]["copied"], json!(7), "{r:#?}");
    assert_eq!(
        prod.primary.psql("SELECT count(*) FROM appointments"),
        "1205"
    );
    assert_eq!(
        prod.primary.psql("SELECT string_agg(id::text, ',' ORDER BY id) FROM appointments WHERE id BETWEEN 10 AND 16"),
        "10,11,12,13,14,15,16"
    );
    assert_eq!(
        fingerprint(
            &prod.primary,
            "SELECT * FROM appointments WHERE id BETWEEN 10 AND 16"
        ),
        fingerprint(
            &prod.primary,
            "SELECT * FROM medic_restore.appointments WHERE id BETWEEN 10 AND 16"
        ),
        "the restored rows are the backup's, column for column"
    );
    assert_eq!(
        prod.primary.psql("SELECT string_agg(status, ',' ORDER BY id) FROM appointments WHERE id IN (100, 101, 102)"),
        "cancelled,cancelled,cancelled",
        "changed rows are reported, not overwritten"
    );
    assert_eq!(
        fingerprint(
            &prod.primary,
            "SELECT * FROM appointments WHERE id NOT BETWEEN 10 AND 16"
        ),
        untouched_before
    );
    assert_eq!(
        fingerprint(&prod.primary, "SELECT * FROM patients"),
        patients_before
    );
    assert_eq!(
        fingerprint(&prod.primary, "SELECT * FROM prescriptions"),
        prescriptions_before
    );
    // Again: nothing is missing any more; nothing is copied twice.
    let r = build(true).run(&c).await;
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.data["tables"][0]["missing"], json!(0));
    assert_eq!(
        prod.primary.psql("SELECT count(*) FROM appointments"),
        "1205"
    );
    // The scratch databases are gone.
    let scratch_dbs = || {
        prod.primary
            .psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'medic_restore_tables_%'")
    };
    assert_eq!(scratch_dbs(), "0");

    // After a restart that found an attempt in flight, the live database
    // tells whether its effect is in place. Here it is: copied back.
    let seen = build(true).reconcile(&c).await.expect("it can tell");
    assert!(seen.ok, "{seen:#?}");
    assert!(
        seen.detail
            .contains("the copy back committed before the restart"),
        "{}",
        seen.detail
    );
    // A crash before the copy back committed (one transaction: nothing of
    // it stays): the side copy is whole, rows are still missing.
    assert!(build(false).run(&c).await.ok);
    prod.primary
        .psql("DELETE FROM appointments WHERE id BETWEEN 20 AND 22");
    let seen = build(true).reconcile(&c).await.expect("it can tell");
    assert!(!seen.ok, "{seen:#?}");
    assert!(
        seen.detail
            .contains("did not commit before the restart (one transaction: nothing half-copied): 3 rows still missing"),
        "{}",
        seen.detail
    );
    // A crash during the side copy: a short side table, and the crashed
    // attempt's scratch database left behind, which the reconcile drops.
    prod.primary
        .psql("DELETE FROM medic_restore.appointments WHERE id > 600");
    prod.primary
        .psql("CREATE DATABASE medic_restore_tables_20261207000000000");
    let seen = build(true).reconcile(&c).await.expect("it can tell");
    assert!(!seen.ok, "{seen:#?}");
    assert!(
        seen.detail.contains("before its side copy was complete")
            && seen
                .detail
                .contains("holds 600 rows, the backup counted 1200"),
        "{}",
        seen.detail
    );
    assert_eq!(
        seen.data["dropped"],
        json!(["medic_restore_tables_20261207000000000"])
    );
    assert_eq!(scratch_dbs(), "0");
}
