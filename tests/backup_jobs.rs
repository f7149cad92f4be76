//! Scheduled DR jobs against a real PostgreSQL (and moto for S3): backup →
//! verify → restore-test, a corrupted copy caught and paged, retention, and
//! the scheduler's overrun and missed-run rules on the paused clock.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::moto::Moto;
use common::pg::Pg;
use medic::check::{self, Check};
use medic::clock::Clock;
use medic::config::Config;
use medic::jobs::{self, Job, JobContext, Report, Scheduled};
use medic::observe::Outcome;
use medic::page::{Delivered, Notice, Notifier, NotifyError};
use medic::schedule::Schedule;
use medic::store::{JobOutcome, JobRun, MemoryStore, NewJobRun, prelude::*};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SEED: &str = "
CREATE TABLE patients (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE appointments (id serial PRIMARY KEY, patient_id int NOT NULL,
    status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE prescriptions (id serial PRIMARY KEY, patient_id int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE audit_logs (id serial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO patients (name) SELECT 'p' || g FROM generate_series(1, 500) g;
INSERT INTO appointments (patient_id, status)
    SELECT 1 + g % 500, 'scheduled' FROM generate_series(1, 1200) g;
INSERT INTO prescriptions (patient_id) SELECT 1 + g % 500 FROM generate_series(1, 800) g;
INSERT INTO audit_logs DEFAULT VALUES;
INSERT INTO audit_logs DEFAULT VALUES;
";

fn config(yaml: &str, dir: &Path) -> Config {
    let mut c = medic::config::load_str("medic.yaml", yaml).unwrap_or_else(|d| panic!("{d:?}"));
    c.base_dir = dir.to_path_buf();
    c
}

fn local_config(port: u16, dir: &Path) -> Config {
    config(
        &format!(
            "
rules: [rules]
targets:
  db: {{ postgres: {{ host: 127.0.0.1, port: {port}, user: postgres, dbname: postgres }} }}
jobs:
  db-backup:
    schedule: '0 2 * * *'
    postgres.backup: {{ target: db, directory: backups, retention: 30d }}
  backup-verify:
    schedule: '0 3 * * SUN'
    backup.verify: {{ backup: db-backup, rpo: 24h }}
  restore-test:
    schedule: '0 4 1 * *'
    postgres.restore-test: {{ backup: db-backup, rto: 2h }}
"
        ),
        dir,
    )
}

async fn run(config: &Config, store: &Arc<dyn Store>, clock: &Clock, name: &str) -> JobRun {
    let job = jobs::build(name, &config.jobs[name], config).unwrap();
    jobs::run_once(
        store,
        clock,
        name,
        &job,
        clock.now(),
        Duration::from_secs(300),
    )
    .await
    .unwrap()
}

fn backup_check(config: &Config) -> Arc<dyn Check> {
    let spec = check::CheckSpec::Backup(check::backup::BackupParams {
        job: "backup-verify".into(),
    });
    check::build(&spec, Duration::from_secs(10), config).unwrap()
}

fn days_ago(d: i64) -> Clock {
    Clock::tokio(Utc::now() - chrono::Duration::days(d))
}

fn copies(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".dump"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn backup_verify_restore_round_trip_keeps_row_counts() {
    let pg = Pg::primary();
    pg.primary.psql(SEED);
    let dir = tempfile::tempdir().unwrap();
    let config = local_config(pg.primary.port, dir.path());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Clock::system();

    let b = run(&config, &store, &clock, "db-backup").await;
    assert_eq!(b.outcome, Some(JobOutcome::Succeeded), "{}", b.summary);
    let file = b.data["file"].as_str().unwrap().to_string();
    assert!(file.starts_with("db-backup-") && file.ends_with("Z.dump"));
    assert_eq!(b.data["sha256"].as_str().unwrap().len(), 64);
    assert!(b.data["size"].as_u64().unwrap() > 1000);
    assert_eq!(copies(&dir.path().join("backups")), vec![file.clone()]);
    let kinds: Vec<String> = store
        .job_events(b.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["start", "dump", "verify", "store", "succeeded"]);

    let v = run(&config, &store, &clock, "backup-verify").await;
    assert_eq!(v.outcome, Some(JobOutcome::Succeeded), "{}", v.summary);
    assert_eq!(backup_check(&config).run().await, Outcome::Ok);

    let r = run(&config, &store, &clock, "restore-test").await;
    assert_eq!(r.outcome, Some(JobOutcome::Succeeded), "{}", r.summary);
    assert_eq!(
        r.data["counts"],
        json!({"patients": 500, "appointments": 1200, "prescriptions": 800, "audit_logs": 2})
    );
    let live: Vec<i64> = ["patients", "appointments", "prescriptions", "audit_logs"]
        .iter()
        .map(|t| {
            pg.primary
                .psql(&format!("SELECT count(*) FROM {t}"))
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        live,
        [500, 1200, 800, 2],
        "restored counts equal production's"
    );
    assert_eq!(
        r.data["integrity"],
        json!({"future_prescriptions": 0, "invalid_appointment_status": 0, "orphaned_appointments": 0})
    );
    assert_eq!(r.data["within_rto"], json!(true));
    println!(
        "figures: backup {} ms ({} bytes), verify {} ms, restore-test {} ms (restore {} ms)",
        b.data["duration_ms"],
        b.data["size"],
        v.data["duration_ms"],
        r.data["duration_ms"],
        r.data["restore_ms"]
    );
    // The runs and their timelines over HTTP.
    let app = medic::server::router(common::open_reads_state(store.clone(), clock.clone()));
    let stop = CancellationToken::new();
    let (addr, server) = medic::server::serve("127.0.0.1:0".parse().unwrap(), app, stop.clone())
        .await
        .unwrap();
    let url = format!("http://{addr}/api/v1/jobs/db-backup/runs");
    let body: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(body[0]["run"]["id"], json!(b.id));
    assert_eq!(body[0]["run"]["data"]["sha256"], b.data["sha256"]);
    assert_eq!(body[0]["timeline"][1]["kind"], json!("dump"));
    let bad = reqwest::get(format!("{url}?limit=0")).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("limit must be"));
    stop.cancel();
    server.await.unwrap();

    // The scratch database is gone; production untouched.
    assert_eq!(
        pg.primary
            .psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'medic_restore_test_%'"),
        "0"
    );
}

/// Records every page it is given.
#[derive(Default)]
struct Pages(std::sync::Mutex<Vec<Notice>>);

#[async_trait::async_trait]
impl Notifier for Pages {
    async fn send(&self, page: &Notice) -> Result<Delivered, NotifyError> {
        self.0.lock().unwrap().push(page.clone());
        Ok(Delivered::default())
    }
}

#[tokio::test]
async fn corrupted_backup_is_caught_by_verify_and_pages() {
    let pg = Pg::primary();
    pg.primary.psql(SEED);
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(pg.primary.port, dir.path());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Clock::system();
    let b = run(&config, &store, &clock, "db-backup").await;
    assert_eq!(b.outcome, Some(JobOutcome::Succeeded), "{}", b.summary);

    // Bit rot in the middle of the stored copy.
    let path = dir
        .path()
        .join("backups")
        .join(b.data["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let v = run(&config, &store, &clock, "backup-verify").await;
    assert_eq!(v.outcome, Some(JobOutcome::Failed));
    assert!(
        v.summary.contains("sha256") && v.summary.contains("differs"),
        "{}",
        v.summary
    );
    let Outcome::Failing(why) = backup_check(&config).run().await else {
        panic!("the backup check must fail");
    };
    assert!(why.contains("sha256"), "{why}");

    // The shipped rule turns it into an incident that pages.
    config.mode = medic::config::Mode::Enforce;
    let rules = medic::rules::load_paths(
        &[Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/backup-failure.yaml")],
        &config,
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    let (runtimes, refused) = medic::daemon::build_runtimes(&config, rules);
    assert!(refused.is_empty(), "{refused:?}");
    let pages = Arc::new(Pages::default());
    let notifiers: HashMap<String, Arc<dyn Notifier>> =
        HashMap::from([("log".to_string(), pages.clone() as Arc<dyn Notifier>)]);
    let shutdown = CancellationToken::new();
    let daemon = {
        let (config, store, shutdown) = (config.clone(), store.clone(), shutdown.clone());
        tokio::spawn(async move {
            medic::daemon::run_with_options(
                &config,
                runtimes,
                0,
                store,
                Clock::system(),
                shutdown,
                medic::daemon::RunOptions {
                    notifiers: Some(notifiers),
                    no_jobs: true,
                    ..Default::default()
                },
            )
            .await
        })
    };
    common::eventually(Duration::from_secs(60), "a page", || {
        let n = pages.0.lock().unwrap().len();
        async move { n > 0 }
    })
    .await;
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
    let page = pages.0.lock().unwrap()[0].clone();
    assert_eq!(page.view.incident.scenario, "backup-failure");
    // The incident's timeline says what verification found.
    let timeline = store.timeline(page.view.incident.id).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.data.to_string().contains("sha256")),
        "{timeline:#?}"
    );
}

#[tokio::test]
async fn retention_keeps_the_newest_good_copy_even_when_all_are_old() {
    let mut pg = Pg::primary();
    pg.primary.psql(SEED);
    let dir = tempfile::tempdir().unwrap();
    let config = local_config(pg.primary.port, dir.path());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let old = run(&config, &store, &days_ago(45), "db-backup").await;
    let newest_good = run(&config, &store, &days_ago(40), "db-backup").await;
    assert_eq!(newest_good.outcome, Some(JobOutcome::Succeeded));
    assert_eq!(copies(&dir.path().join("backups")).len(), 2);

    // The database is down today: the backup fails; retention still runs
    // and, with every copy past 30 days, keeps the newest good one.
    pg.primary.stop_immediate();
    let failed = run(&config, &store, &Clock::system(), "db-backup").await;
    assert_eq!(failed.outcome, Some(JobOutcome::Failed));
    assert_eq!(
        copies(&dir.path().join("backups")),
        [newest_good.data["file"].as_str().unwrap()]
    );
    assert_eq!(failed.data["deleted"], json!([old.data["file"]]));
    // No partial file left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty());

    // ...and verify reports the copy as stale (older than the RPO).
    let v = run(&config, &store, &Clock::system(), "backup-verify").await;
    assert_eq!(v.outcome, Some(JobOutcome::Failed));
    assert!(v.summary.contains("older than the RPO"), "{}", v.summary);
}

#[tokio::test]
async fn s3_upload_verify_and_retention_on_moto() {
    let moto = Moto::start();
    let pg = Pg::primary();
    pg.primary.psql(SEED);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key-id"), "testing").unwrap();
    std::fs::write(dir.path().join("secret"), "testing").unwrap();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(format!("http://127.0.0.1:{}", moto.port))
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket()
        .bucket("keneyapp-backups")
        .send()
        .await
        .unwrap();
    let config = config(
        &format!(
            "
rules: [rules]
targets:
  db: {{ postgres: {{ host: 127.0.0.1, port: {port}, user: postgres, dbname: postgres }} }}
jobs:
  db-backup:
    schedule: '0 2 * * *'
    postgres.backup:
      target: db
      retention: 30d
      s3:
        bucket: keneyapp-backups
        prefix: postgres/
        endpoint_url: http://127.0.0.1:{moto}
        credentials: {{ access_key_id: {{ file: {d}/key-id }}, secret_access_key: {{ file: {d}/secret }} }}
  backup-verify:
    schedule: '0 3 * * SUN'
    backup.verify: {{ backup: db-backup }}
  restore-test:
    schedule: '0 4 1 * *'
    postgres.restore-test: {{ backup: db-backup }}
",
            port = pg.primary.port,
            moto = moto.port,
            d = dir.path().display()
        ),
        dir.path(),
    );
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = run(&config, &store, &days_ago(40), "db-backup").await;
    let b = run(&config, &store, &days_ago(35), "db-backup").await;
    let c = run(&config, &store, &Clock::system(), "db-backup").await;
    for r in [&a, &b, &c] {
        assert_eq!(r.outcome, Some(JobOutcome::Succeeded), "{}", r.summary);
    }
    assert_eq!(c.data["deleted"], json!([a.data["file"], b.data["file"]]));
    let listed = s3
        .list_objects_v2()
        .bucket("keneyapp-backups")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        keys,
        [format!("postgres/{}", c.data["file"].as_str().unwrap())]
    );

    let v = run(&config, &store, &Clock::system(), "backup-verify").await;
    assert_eq!(v.outcome, Some(JobOutcome::Succeeded), "{}", v.summary);
    // Restored from the S3 copy (downloaded, checksummed).
    let r = run(&config, &store, &Clock::system(), "restore-test").await;
    assert_eq!(r.outcome, Some(JobOutcome::Succeeded), "{}", r.summary);
    assert_eq!(r.data["file"], c.data["file"]);
    assert_eq!(r.data["counts"]["patients"], json!(500));
}

#[tokio::test]
async fn restore_test_fails_on_corrupt_data_and_on_a_missed_rto() {
    let pg = Pg::primary();
    pg.primary.psql(SEED);
    // Corruption that made it into the backup.
    pg.primary
        .psql("INSERT INTO appointments (patient_id, status) VALUES (999999, 'scheduled')");
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(pg.primary.port, dir.path());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Clock::system();
    let b = run(&config, &store, &clock, "db-backup").await;
    assert_eq!(b.outcome, Some(JobOutcome::Succeeded), "{}", b.summary);
    // A scratch database an earlier, crashed run left behind.
    pg.primary
        .psql("CREATE DATABASE medic_restore_test_19990101000000");
    let r = run(&config, &store, &clock, "restore-test").await;
    assert_eq!(r.outcome, Some(JobOutcome::Failed));
    assert_eq!(
        r.summary,
        "integrity checks failed: orphaned_appointments: 1"
    );
    assert_eq!(r.data["integrity"]["orphaned_appointments"], json!(1));

    // An objective no restore can meet: measured, and the run fails.
    pg.primary
        .psql("DELETE FROM appointments WHERE patient_id = 999999");
    let b = run(&config, &store, &clock, "db-backup").await;
    assert_eq!(b.outcome, Some(JobOutcome::Succeeded), "{}", b.summary);
    config
        .jobs
        .get_mut("restore-test")
        .unwrap()
        .restore_test
        .as_mut()
        .unwrap()
        .rto = medic::duration::Dur(Duration::from_millis(1));
    let r = run(&config, &store, &clock, "restore-test").await;
    assert_eq!(r.outcome, Some(JobOutcome::Failed));
    assert!(r.summary.contains("objective 1ms: MISSED"), "{}", r.summary);
    assert_eq!(r.data["within_rto"], json!(false));
    // Every scratch database was dropped.
    assert_eq!(
        pg.primary
            .psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'medic_restore_test_%'"),
        "0"
    );
}

// ---------------------------------------------------------------------------
// The scheduler, on the paused clock (no database needed).

/// A job that takes `takes` and counts how many of it run at once.
struct Slow {
    takes: Duration,
    running: AtomicUsize,
    most: AtomicUsize,
    runs: AtomicUsize,
}

impl Slow {
    fn new(takes: Duration) -> Arc<Slow> {
        Arc::new(Slow {
            takes,
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            runs: AtomicUsize::new(0),
        })
    }
}

#[async_trait::async_trait]
impl Job for Slow {
    fn kind(&self) -> &'static str {
        "postgres.backup"
    }
    async fn run(&self, _cx: &JobContext) -> Report {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.takes).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Report::ok("done", json!({}))
    }
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn start_scheduler(
    job: Arc<Slow>,
    store: Arc<dyn Store>,
    clock: Clock,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let s = Scheduled {
        name: "hourly".into(),
        schedule: Schedule::parse("0 * * * *", "UTC").unwrap(),
        timeout: Duration::from_secs(4 * 3600),
        job,
    };
    let h = tokio::spawn({
        let stop = stop.clone();
        async move { jobs::scheduler(s, store, clock, stop).await.unwrap() }
    });
    (stop, h)
}

#[tokio::test(start_paused = true)]
async fn a_job_that_overruns_never_runs_twice_at_once() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Clock::tokio(t("2026-03-01T00:30:00Z"));
    // Hourly, but each run takes 90 minutes.
    let job = Slow::new(Duration::from_secs(90 * 60));
    let (stop, h) = start_scheduler(job.clone(), store.clone(), clock);
    tokio::time::sleep(Duration::from_secs(10 * 3600)).await;
    stop.cancel();
    h.await.unwrap();
    assert_eq!(job.most.load(Ordering::SeqCst), 1, "never two at once");
    let runs = store.job_runs("hourly", 100).await.unwrap();
    // Slots 01:00, 03:00, 05:00, 07:00, 09:00 (each run skips the slot it
    // overran), the last one stopped by the shutdown while running.
    let slots: Vec<String> = runs
        .iter()
        .rev()
        .map(|r| r.scheduled_for.format("%H:%M").to_string())
        .collect();
    assert_eq!(slots, ["01:00", "03:00", "05:00", "07:00", "09:00"]);
}

#[tokio::test(start_paused = true)]
async fn a_missed_run_runs_once_at_start_up_not_once_per_missed_slot() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // The last run was the 00:00 slot; medic was down until 05:30.
    let last = store
        .begin_job_run(NewJobRun {
            job: "hourly".into(),
            kind: "postgres.backup".into(),
            scheduled_for: t("2026-03-01T00:00:00Z"),
            started_at: t("2026-03-01T00:00:00Z"),
        })
        .await
        .unwrap();
    store
        .finish_job_run(
            last,
            JobOutcome::Succeeded,
            "ok",
            json!({}),
            t("2026-03-01T00:01:00Z"),
        )
        .await
        .unwrap();
    // And one run was cut off by the crash: closed as abandoned, not re-run.
    let cut = store
        .begin_job_run(NewJobRun {
            job: "hourly".into(),
            kind: "postgres.backup".into(),
            scheduled_for: t("2026-03-01T00:00:00Z"),
            started_at: t("2026-03-01T00:00:01Z"),
        })
        .await
        .unwrap();
    let clock = Clock::tokio(t("2026-03-01T05:30:00Z"));
    let job = Slow::new(Duration::from_secs(60));
    let (stop, h) = start_scheduler(job.clone(), store.clone(), clock);
    tokio::time::sleep(Duration::from_secs(10 * 60)).await;
    assert_eq!(
        job.runs.load(Ordering::SeqCst),
        1,
        "one catch-up run for five missed slots"
    );
    tokio::time::sleep(Duration::from_secs(30 * 60)).await; // 06:10
    stop.cancel();
    h.await.unwrap();
    assert_eq!(job.runs.load(Ordering::SeqCst), 2);
    let runs = store.job_runs("hourly", 100).await.unwrap();
    let slots: Vec<String> = runs
        .iter()
        .map(|r| r.scheduled_for.format("%H:%M").to_string())
        .collect();
    assert_eq!(slots, ["06:00", "05:00", "00:00", "00:00"]);
    let cut = runs.iter().find(|r| r.id == cut).unwrap();
    assert_eq!(cut.outcome, Some(JobOutcome::Abandoned));
}
