//! `redis.backup` against real private redis-servers: BGSAVE, the RDB copy
//! verified (magic, CRC64) and stored, `backup.verify` on it, a corrupted
//! copy caught and paged like PostgreSQL's, a failed BGSAVE reported with
//! `rdb_last_bgsave_status`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use medic::check::{self, Check};
use medic::clock::Clock;
use medic::config::Config;
use medic::jobs;
use medic::observe::Outcome;
use medic::page::{Delivered, Notice, Notifier, NotifyError};
use medic::store::{JobOutcome, JobRun, MemoryStore, prelude::*};
use tokio_util::sync::CancellationToken;

/// A redis-server whose data directory is `dir` (so BGSAVE writes there,
/// never in the crate's root).
struct RedisDir {
    port: u16,
    child: Child,
    _log: tempfile::NamedTempFile,
}

impl RedisDir {
    fn start(dir: &Path) -> RedisDir {
        std::fs::create_dir_all(dir).unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let dir = dir.to_path_buf();
        let (child, port) = common::start_service(
            "redis-server",
            None,
            log.path(),
            Duration::from_secs(10),
            |port| {
                let argv = common::redis_argv(port);
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]).arg("--dir").arg(&dir);
                c
            },
            |_, port| common::redis_ping(port),
        );
        RedisDir {
            port,
            child,
            _log: log,
        }
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn fill(&self, n: usize) {
        let mut c = self.conn();
        for i in 0..n {
            redis::cmd("SET")
                .arg(format!("patient:{i}"))
                .arg(format!("record {i} {}", "x".repeat(64)))
                .query::<()>(&mut c)
                .unwrap();
        }
    }
}

impl Drop for RedisDir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(port: u16, dir: &Path) -> Config {
    let yaml = format!(
        "
rules: [rules]
targets:
  cache: {{ redis: {{ address: '127.0.0.1:{port}' }} }}
jobs:
  cache-backup:
    schedule: '0 2 * * *'
    redis.backup: {{ target: cache, directory: backups, retention: 30d, save_timeout: 20s }}
  backup-verify:
    schedule: '0 3 * * SUN'
    backup.verify: {{ backup: cache-backup, rpo: 24h }}
"
    );
    let mut c = medic::config::load_str("medic.yaml", &yaml).unwrap_or_else(|d| panic!("{d:?}"));
    c.base_dir = dir.to_path_buf();
    c
}

async fn run(config: &Config, store: &Arc<dyn Store>, name: &str) -> JobRun {
    let clock = Clock::system();
    let job = jobs::build(name, &config.jobs[name], config).unwrap();
    jobs::run_once(
        store,
        &clock,
        name,
        &job,
        clock.now(),
        Duration::from_secs(60),
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

fn stored(dir: &Path, run: &JobRun) -> PathBuf {
    dir.join("backups").join(run.data["file"].as_str().unwrap())
}

#[tokio::test]
async fn redis_backup_round_trip_is_verified_and_counts_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisDir::start(&dir.path().join("redis-data"));
    redis.fill(250);
    let config = config(redis.port, dir.path());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());

    let b = run(&config, &store, "cache-backup").await;
    assert_eq!(b.outcome, Some(JobOutcome::Succeeded), "{}", b.summary);
    assert_eq!(b.kind, "redis.backup");
    assert_eq!(b.data["keys"], 250);
    assert!(b.data["rdb_version"].as_u64().unwrap() >= 5);
    assert_eq!(b.data["crc64"].as_str().unwrap().len(), 16);
    assert_eq!(b.data["sha256"].as_str().unwrap().len(), 64);
    let file = b.data["file"].as_str().unwrap();
    assert!(file.starts_with("cache-backup-"), "{file}");
    assert_eq!(
        b.data["source"],
        dir.path().join("redis-data/dump.rdb").display().to_string()
    );
    let copy = stored(dir.path(), &b);
    let bytes = std::fs::read(&copy).unwrap();
    assert!(bytes.starts_with(b"REDIS"));
    assert_eq!(bytes.len() as u64, b.data["size"].as_u64().unwrap());
    // The copy has the keys: a fresh redis-server loading it counts 250.
    let kinds: Vec<String> = store
        .job_events(b.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        ["start", "bgsave", "copy", "verify", "store", "succeeded"]
    );

    let restored_dir = dir.path().join("restored");
    std::fs::create_dir_all(&restored_dir).unwrap();
    std::fs::copy(&copy, restored_dir.join("dump.rdb")).unwrap();
    let restored = RedisDir::start(&restored_dir);
    let n: u64 = redis::cmd("DBSIZE").query(&mut restored.conn()).unwrap();
    assert_eq!(n, 250, "the copy loads with every key");

    // A second backup after more writes: LASTSAVE must move again.
    redis.fill(300);
    let b2 = run(&config, &store, "cache-backup").await;
    assert_eq!(b2.outcome, Some(JobOutcome::Succeeded), "{}", b2.summary);
    assert_eq!(b2.data["keys"], 300);
    assert_ne!(b2.data["file"], b.data["file"]);

    let v = run(&config, &store, "backup-verify").await;
    assert_eq!(v.outcome, Some(JobOutcome::Succeeded), "{}", v.summary);
    assert_eq!(v.data["checked"][0]["file"], b2.data["file"]);
    assert_eq!(v.data["checked"][0]["crc64"], b2.data["crc64"]);
    assert_eq!(backup_check(&config).run().await, Outcome::Ok);
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
async fn corrupted_redis_copy_fails_verification_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisDir::start(&dir.path().join("redis-data"));
    redis.fill(100);
    let mut config = config(redis.port, dir.path());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let b = run(&config, &store, "cache-backup").await;
    assert_eq!(b.outcome, Some(JobOutcome::Succeeded), "{}", b.summary);

    // Bit rot in the middle of the stored copy.
    let path = stored(dir.path(), &b);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    // The RDB's own checksum sees it too (without the recorded sha256).
    let e = jobs::redis_backup::rdb::check(&path).await.unwrap_err();
    assert!(e.contains("CRC64 mismatch"), "{e}");

    let v = run(&config, &store, "backup-verify").await;
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
    let timeline = store.timeline(page.view.incident.id).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.data.to_string().contains("sha256")),
        "{timeline:#?}"
    );
}

#[tokio::test]
async fn a_failed_bgsave_fails_the_run_with_the_bgsave_status() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("redis-data");
    let redis = RedisDir::start(&data);
    redis.fill(10);
    // The data directory disappears under the server: its save cannot
    // create the temporary file (root is not stopped by permissions).
    std::fs::remove_dir_all(&data).unwrap();
    let config = config(redis.port, dir.path());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let b = run(&config, &store, "cache-backup").await;
    assert_eq!(b.outcome, Some(JobOutcome::Failed));
    assert!(
        b.summary.contains("rdb_last_bgsave_status is err"),
        "{}",
        b.summary
    );
    assert!(
        std::fs::read_dir(dir.path().join("backups"))
            .unwrap()
            .next()
            .is_none()
    );
    // The failure is on the run's timeline, like any failed job.
    let events = store.job_events(b.id).await.unwrap();
    assert_eq!(events.last().unwrap().kind, "failed");
}

fn persistence_check(port: u16, persistence: &str) -> Arc<dyn Check> {
    let cfg = config(port, Path::new("/nonexistent"));
    let rule = format!(
        "scenario: s\nsummary: S\nseverity: info\nrto: 5m\nsymptoms:\n  p:\n    check: {{ redis: {{ target: cache, persistence: {persistence} }} }}\nwhen: {{ any: [p] }}\nplan: []\nescalation: default\n"
    );
    let s = medic::rules::load_str("r.yaml", &rule, &cfg).unwrap_or_else(|d| panic!("{d}"));
    check::build(&s.symptoms[0].check, Duration::from_secs(5), &cfg).unwrap()
}

fn failing(o: Outcome) -> String {
    match o {
        Outcome::Failing(why) => why,
        other => panic!("expected failing, got {other:?}"),
    }
}

#[tokio::test]
async fn persistence_check_fails_on_aof_off_no_save_points_and_an_old_save() {
    let dir = tempfile::tempdir().unwrap();
    // redis_argv: --appendonly no, --save "".
    let redis = RedisDir::start(&dir.path().join("redis-data"));
    let aof = persistence_check(redis.port, "{ appendonly: true }");
    let why = failing(aof.run().await);
    assert!(why.contains("appendonly is off"), "{why}");
    let save = persistence_check(redis.port, "{ save: required }");
    let why = failing(save.run().await);
    assert!(why.contains("no RDB save points"), "{why}");

    // Both set as the runbook wants: ok.
    let mut c = redis.conn();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("yes")
        .query::<()>(&mut c)
        .unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("save")
        .arg("3600 1 300 100")
        .query::<()>(&mut c)
        .unwrap();
    common::eventually(Duration::from_secs(10), "AOF on", || {
        let aof = aof.clone();
        async move { aof.run().await == Outcome::Ok }
    })
    .await;
    assert_eq!(save.run().await, Outcome::Ok);
    let all = persistence_check(
        redis.port,
        "{ appendonly: true, save: required, max_last_save_age: 1h }",
    );
    assert_eq!(all.run().await, Outcome::Ok);

    // No save for longer than the limit (the server's start counts as the
    // last save): failing once a second has passed.
    let old = persistence_check(redis.port, "{ max_last_save_age: 1s }");
    common::eventually(Duration::from_secs(10), "the save too old", || {
        let old = old.clone();
        async move {
            matches!(old.run().await, Outcome::Failing(w) if w.contains("longer than max_last_save_age 1s"))
        }
    })
    .await;
}

#[tokio::test]
async fn persistence_check_fails_on_a_failed_bgsave() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("redis-data");
    let redis = RedisDir::start(&data);
    let check = persistence_check(redis.port, "{}");
    assert_eq!(check.run().await, Outcome::Ok);
    // As root the directory's mode stops nothing: remove it instead.
    std::fs::remove_dir_all(&data).unwrap();
    let mut c = redis.conn();
    redis::cmd("BGSAVE").query::<String>(&mut c).unwrap();
    common::eventually(Duration::from_secs(10), "the save fails", || {
        let check = check.clone();
        async move { check.run().await != Outcome::Ok }
    })
    .await;
    let why = failing(check.run().await);
    assert!(why.contains("rdb_last_bgsave_status is err"), "{why}");
}

/// `GET` with the read token: (status, body).
fn api_get(url: &str) -> (u16, String) {
    common::block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .bearer_auth(common::TEST_READ_TOKEN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

fn medic_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .output()
        .unwrap()
}

/// The manual backup before a change: `medic backup run JOB` over the
/// API of a running medic runs the job now, recorded like a scheduled run
/// and marked manual with who asked; a job in dry-run runs nothing; the
/// route needs the API token.
#[test]
fn medic_backup_run_records_a_manual_run_over_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisDir::start(&dir.path().join("redis-data"));
    redis.fill(40);
    let http = common::free_port();
    let config = common::enforce_config(dir.path(), http, "2s");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "targets:\n  cache: {{ redis: {{ address: '127.0.0.1:{port}' }} }}\n\
         jobs:\n\
         \x20 cache-backup:\n\
         \x20   schedule: '0 2 1 1 *'\n\
         \x20   redis.backup: {{ target: cache, directory: backups, save_timeout: 20s }}\n\
         \x20 cache-backup-dry:\n\
         \x20   schedule: '0 2 1 1 *'\n\
         \x20   mode: dry-run\n\
         \x20   redis.backup: {{ target: cache, directory: backups-dry }}\n",
        port = redis.port
    ));
    std::fs::write(&config, text).unwrap();
    std::fs::write(
        dir.path().join("rules/cache.yaml"),
        "scenario: cache\nsummary: S\nseverity: info\nrto: 5m\nsymptoms:\n  down:\n    check: { redis: { target: cache, persistence: {} } }\n    every: 1s\nwhen: { any: [down] }\nplan: []\nescalation: default\n",
    )
    .unwrap();
    let log = dir.path().join("medic.log");
    let mut medic = common::Medic::start(&config, &log);
    let base = format!("http://127.0.0.1:{http}");
    common::wait_until(Duration::from_secs(30), "medic ready", || {
        api_get(&format!("{base}/readyz")).0 == 200
    });

    let url = ["--url", base.as_str()];
    let out = medic_cli(
        &[
            &["backup", "run", "cache-backup"][..],
            &url,
            &["--token", common::TEST_API_TOKEN, "--by", "alice"],
        ]
        .concat(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        medic.log_text()
    );
    assert!(stdout.contains("(manual, by alice) succeeded"), "{stdout}");
    assert!(stdout.contains("\"keys\": 40"), "{stdout}");

    let (code, body) = api_get(&format!("{base}/api/v1/jobs/cache-backup/runs"));
    assert_eq!(code, 200, "{body}");
    let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "{body}");
    let run = &runs[0]["run"];
    assert_eq!(run["kind"], "redis.backup");
    assert_eq!(run["outcome"], "succeeded");
    assert_eq!(run["data"]["manual"], true);
    assert_eq!(run["data"]["requested_by"], "alice");
    assert_eq!(run["data"]["keys"], 40);
    let start = &runs[0]["timeline"][0];
    assert_eq!(start["kind"], "start");
    assert!(
        start["message"]
            .as_str()
            .unwrap()
            .contains("asked by alice"),
        "{start}"
    );
    let file = run["data"]["file"].as_str().unwrap();
    assert!(dir.path().join("backups").join(file).exists());

    // Dry-run: nothing runs, nothing is recorded, and the CLI says why.
    let out = medic_cli(
        &[
            &["backup", "run", "cache-backup-dry"][..],
            &url,
            &["--token", common::TEST_API_TOKEN, "--by", "alice"],
        ]
        .concat(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("409") && stderr.contains("dry-run"),
        "{stderr}"
    );
    let (_, body) = api_get(&format!("{base}/api/v1/jobs/cache-backup-dry/runs"));
    assert_eq!(body, "[]");

    // An unknown job is 404; the read token may not run jobs.
    let out = medic_cli(
        &[
            &["backup", "run", "nope"][..],
            &url,
            &["--token", common::TEST_API_TOKEN],
        ]
        .concat(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("404"), "{stderr}");
    let out = medic_cli(
        &[
            &["backup", "run", "cache-backup"][..],
            &url,
            &["--token", common::TEST_READ_TOKEN],
        ]
        .concat(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("401"), "{stderr}");
    medic.stop();
}
