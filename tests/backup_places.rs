//! Backup jobs with more than one place (the runbook's S3 copy and its
//! Azure Blob copy: moto and Azurite here), each verified on its own, and
//! retention tiers (`keep: { daily: 30d, monthly: 1y }`) over simulated
//! years on the paused clock.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::azurite::{self, Azurite};
use common::moto::Moto;
use common::pg::Pg;
use medic::check;
use medic::clock::Clock;
use medic::config::{AzureConfig, Config, KeepConfig, Retention};
use medic::jobs::backup::{Retain, retain};
use medic::jobs::storage::{Place, Storage, copy_name, sha256_file};
use medic::jobs::{self, Job, JobContext, Report};
use medic::observe::Outcome;
use medic::page::{Delivered, Notice, Notifier, NotifyError};
use medic::secret::SecretRef;
use medic::store::{JobOutcome, JobRun, MemoryStore, prelude::*};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SEED: &str = "
CREATE TABLE patients (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE appointments (id serial PRIMARY KEY, patient_id int NOT NULL,
    status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE prescriptions (id serial PRIMARY KEY, patient_id int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE audit_logs (id serial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO patients (name) SELECT 'p' || g FROM generate_series(1, 300) g;
INSERT INTO appointments (patient_id, status)
    SELECT 1 + g % 300, 'scheduled' FROM generate_series(1, 600) g;
INSERT INTO prescriptions (patient_id) SELECT 1 + g % 300 FROM generate_series(1, 400) g;
INSERT INTO audit_logs DEFAULT VALUES;
";

async fn run(config: &Config, store: &Arc<dyn Store>, name: &str) -> JobRun {
    let clock = Clock::system();
    let job = jobs::build(name, &config.jobs[name], config).unwrap();
    jobs::run_once(
        store,
        &clock,
        name,
        &job,
        clock.now(),
        Duration::from_secs(120),
    )
    .await
    .unwrap()
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

fn azure_config(az: &Azurite, key_file: &Path) -> AzureConfig {
    AzureConfig {
        account: azurite::ACCOUNT.into(),
        container: "keneyapp-backups".into(),
        prefix: "postgres/".into(),
        key: Some(SecretRef::File(key_file.to_path_buf())),
        sas: None,
        endpoint_url: Some(az.url()),
    }
}

#[tokio::test]
async fn a_copy_corrupted_in_one_place_pages_for_that_place_only() {
    let moto = Moto::start();
    let az = Azurite::start();
    let pg = Pg::primary();
    pg.primary.psql(SEED);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("key-id"), "testing").unwrap();
    std::fs::write(d.join("secret"), "testing").unwrap();
    std::fs::write(d.join("azure-key"), azurite::KEY).unwrap();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(moto.url())
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket()
        .bucket("keneyapp-backups")
        .send()
        .await
        .unwrap();
    let container = Storage::azure(azure_config(&az, &d.join("azure-key")));
    let Storage::Azure(c) = &container else {
        unreachable!()
    };
    c.create_container().await.unwrap();

    let mut config = medic::config::load_str(
        "medic.yaml",
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
      keep: {{ daily: 30d, monthly: 1y }}
      places:
        - name: primary
          s3:
            bucket: keneyapp-backups
            prefix: postgres/
            endpoint_url: {moto}
            credentials: {{ access_key_id: {{ file: {d}/key-id }}, secret_access_key: {{ file: {d}/secret }} }}
        - name: azure-copy
          azure:
            account: {account}
            container: keneyapp-backups
            prefix: postgres/
            key: {{ file: {d}/azure-key }}
            endpoint_url: {azurite}
  backup-verify:
    schedule: '0 3 * * SUN'
    backup.verify: {{ backup: db-backup }}
  restore-test:
    schedule: '0 4 1 * *'
    postgres.restore-test: {{ backup: db-backup }}
",
            port = pg.primary.port,
            moto = moto.url(),
            azurite = az.url(),
            account = azurite::ACCOUNT,
            d = d.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    config.base_dir = d.to_path_buf();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());

    let b = run(&config, &store, "db-backup").await;
    assert_eq!(b.outcome, Some(JobOutcome::Succeeded), "{}", b.summary);
    let file = b.data["file"].as_str().unwrap().to_string();
    let stored: Vec<String> = serde_json::from_value(b.data["stored"].clone()).unwrap();
    assert_eq!(
        stored,
        [
            "primary (s3://keneyapp-backups/postgres/)".to_string(),
            format!(
                "azure-copy (azure://{}/keneyapp-backups/postgres/)",
                azurite::ACCOUNT
            )
        ]
    );
    // Both places hold the copy, byte for byte.
    let scratch = tempfile::tempdir().unwrap();
    let got = container.fetch(&file, scratch.path()).await.unwrap();
    assert_eq!(
        sha256_file(&got).await.unwrap().0,
        b.data["sha256"].as_str().unwrap()
    );
    let listed = s3
        .list_objects_v2()
        .bucket("keneyapp-backups")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, [format!("postgres/{file}")]);

    let v = run(&config, &store, "backup-verify").await;
    assert_eq!(v.outcome, Some(JobOutcome::Succeeded), "{}", v.summary);
    assert_eq!(v.data["places"][0]["ok"], json!(true));
    assert_eq!(v.data["places"][1]["ok"], json!(true));

    // Bit rot in the Azure copy only (rewritten through the Blob API).
    let mut bytes = std::fs::read(&got).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let rotten = scratch.path().join("rotten");
    std::fs::write(&rotten, &bytes).unwrap();
    container.put(&file, &rotten).await.unwrap();

    let v = run(&config, &store, "backup-verify").await;
    assert_eq!(v.outcome, Some(JobOutcome::Failed));
    let problems: Vec<String> = serde_json::from_value(v.data["problems"].clone()).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("azure-copy") && problems[0].contains("sha256"),
        "{problems:?}"
    );
    assert!(!problems[0].contains("primary"), "{problems:?}");
    assert_eq!(v.data["places"][0]["place"], json!("primary"));
    assert_eq!(v.data["places"][0]["ok"], json!(true));
    assert_eq!(v.data["places"][1]["place"], json!("azure-copy"));
    assert_eq!(v.data["places"][1]["ok"], json!(false));
    assert!(v.summary.ends_with("(intact in primary)"), "{}", v.summary);
    let spec = check::CheckSpec::Backup(check::backup::BackupParams {
        job: "backup-verify".into(),
    });
    let Outcome::Failing(why) = check::build(&spec, Duration::from_secs(10), &config)
        .unwrap()
        .run()
        .await
    else {
        panic!("the backup check must fail");
    };
    assert!(
        why.contains("azure-copy") && why.contains("(intact in primary)"),
        "{why}"
    );

    // The shipped rule pages, naming the place.
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
    common::eventually(Duration::from_secs(30), "a page", || {
        let n = pages.0.lock().unwrap().len();
        async move { n > 0 }
    })
    .await;
    shutdown.cancel();
    daemon.await.unwrap().unwrap();
    let page = pages.0.lock().unwrap()[0].clone();
    assert_eq!(page.view.incident.scenario, "backup-failure");
    let timeline = store.timeline(page.view.incident.id).await.unwrap();
    let said = serde_json::to_string(&timeline).unwrap();
    assert!(said.contains("azure-copy"), "{said}");

    // The restore test still restores, from the intact place.
    let r = run(&config, &store, "restore-test").await;
    assert_eq!(r.outcome, Some(JobOutcome::Succeeded), "{}", r.summary);
    assert_eq!(r.data["counts"]["patients"], json!(300));
    let events = store.job_events(r.id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("from primary (s3://")),
        "{events:#?}"
    );

    // Retention keeps one copy a day, the newest good one: in azure-copy
    // the broken copy is not good (verify said so), in primary the newer
    // copy supersedes it. Both places keep the new copy only.
    let b2 = run(&config, &store, "db-backup").await;
    assert_eq!(b2.outcome, Some(JobOutcome::Succeeded), "{}", b2.summary);
    assert_eq!(b2.data["deleted"], json!([file, file]));
    for place in ["primary", "azure-copy"] {
        assert_eq!(
            b2.data["retention"][place]["kept"],
            json!([[b2.data["file"], "newest good copy"]]),
            "{place}"
        );
    }
    assert_eq!(container.list("db-backup").await.unwrap().len(), 1);
}

/// The Blob API beyond one block (Put Block + Put Block List), listing
/// by job under a prefix, deleting twice, and a wrong key refused with
/// the service's error.
#[tokio::test]
async fn azure_blocks_listing_and_a_wrong_key() {
    let az = Azurite::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), azurite::KEY).unwrap();
    let st = Storage::azure(azure_config(&az, &dir.path().join("key")));
    let Storage::Azure(c) = &st else {
        unreachable!()
    };
    c.create_container().await.unwrap();
    c.create_container().await.unwrap(); // exists already: fine
    // 9 MiB and a bit: two blocks.
    let big = dir.path().join("big");
    let data: Vec<u8> = (0..(9u32 << 20) + 12345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    let at = DateTime::parse_from_rfc3339("2026-03-01T02:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let name = copy_name("db", at);
    st.put(&name, &big).await.unwrap();
    let small = dir.path().join("small");
    std::fs::write(&small, b"x").unwrap();
    st.put(&copy_name("db", at + chrono::Duration::days(1)), &small)
        .await
        .unwrap();
    // Another job's copy under the same prefix is not listed.
    st.put(&copy_name("dbx", at), &small).await.unwrap();
    let listed = st.list("db").await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0].name, name);
    assert_eq!(listed[0].size, data.len() as u64);
    assert_eq!(listed[0].taken_at, at);
    let scratch = tempfile::tempdir().unwrap();
    let got = st.fetch(&name, scratch.path()).await.unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), data);
    st.delete(&name).await.unwrap();
    st.delete(&name).await.unwrap(); // gone already: fine
    assert_eq!(st.list("db").await.unwrap().len(), 1);

    // A wrong key: the service's refusal, named.
    std::fs::write(dir.path().join("bad"), "d3Jvbmcga2V5").unwrap();
    let bad = Storage::azure(azure_config(&az, &dir.path().join("bad")));
    let e = bad.list("db").await.unwrap_err();
    assert!(
        e.contains("403")
            && (e.contains("AuthorizationFailure") || e.contains("AuthenticationFailed")),
        "{e}"
    );
}

/// A job that takes a copy without a database: it writes a small file
/// into its local place on every run (or fails, taking none, on the days
/// `failing` says), then runs the real retention, like the backup kinds.
struct Daily {
    places: Vec<Place>,
    policy: Retention,
    /// Days whose copy is stored but whose run fails (unrecorded).
    unrecorded: fn(DateTime<Utc>) -> bool,
    /// Days the job fails before taking any copy.
    failing: fn(DateTime<Utc>) -> bool,
}

#[async_trait::async_trait]
impl Job for Daily {
    fn kind(&self) -> &'static str {
        "postgres.backup"
    }

    async fn run(&self, cx: &JobContext) -> Report {
        let now = cx.clock.now();
        let name = copy_name(&cx.job, now);
        let mut report = if (self.failing)(now) {
            Report::failed("the database is down", json!({}))
        } else {
            let Storage::Local(dir) = &self.places[0].storage else {
                unreachable!()
            };
            let path = dir.join(&name);
            tokio::fs::write(&path, now.to_rfc3339()).await.unwrap();
            let (sha256, size) = sha256_file(&path).await.unwrap();
            if (self.unrecorded)(now) {
                Report::failed("stored, then failed", json!({ "file": name }))
            } else {
                Report::ok(
                    "taken",
                    json!({ "file": name, "sha256": sha256, "size": size }),
                )
            }
        };
        retain(
            cx,
            &Retain {
                job: &cx.job,
                places: &self.places,
                policy: &self.policy,
                verifiers: &[],
            },
            &name,
            now,
            &mut report,
        )
        .await;
        report
    }
}

fn day(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("{s}T02:00:00Z"))
        .unwrap()
        .with_timezone(&Utc)
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn keep_tiers_over_790_simulated_days_on_the_paused_clock() {
    let dir = tempfile::tempdir().unwrap();
    let backups: PathBuf = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let start = day("2026-01-01");
    let clock = Clock::tokio(start);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let job: Arc<dyn Job> = Arc::new(Daily {
        places: vec![Place {
            name: "local".into(),
            storage: Storage::Local(backups.clone()),
        }],
        policy: Retention::Tiers(KeepConfig {
            daily: Some("30d".parse().unwrap()),
            monthly: Some("1y".parse().unwrap()),
            ..Default::default()
        }),
        // The last three days of good backups stored copies that no
        // succeeded run recorded.
        unrecorded: |t| t > day("2027-02-01") && t <= day("2027-02-04"),
        // From 2027-02-05 on, the database is down: no copy at all.
        failing: |t| t > day("2027-02-04"),
    });
    let mut kept_per_day = Vec::new();
    let mut on_day_400 = Vec::new();
    // Daily at 02:00 for 400 days, then (the database down) every 10
    // days for 400 more: failed runs take no copy, retention still runs.
    for i in 0..440 {
        let run = jobs::run_once(
            &store,
            &clock,
            "db-backup",
            &job,
            clock.now(),
            Duration::from_secs(600),
        )
        .await
        .unwrap();
        let now = files(&backups);
        if clock.now() == day("2027-02-04") {
            on_day_400 = now.clone();
        }
        kept_per_day.push((clock.now(), now.len(), run));
        let step = if i < 400 { 1 } else { 10 };
        tokio::time::advance(Duration::from_secs(step * 86_400)).await;
    }
    let name = |s: &str| copy_name("db-backup", day(s));

    // Day 400 (2027-02-04, the last copy): 30 dailies (2027-01-06 to
    // 2027-02-04; the newest three unrecorded but each its day's only
    // copy) and the newest copy of each month younger than 1y (365.25
    // days: from 2026-02-04 on) not already a daily: 2026-02-28 ...
    // 2026-12-31.
    let (when, n, _) = &kept_per_day[399];
    assert_eq!(*when, day("2027-02-04"));
    let mut want: Vec<String> = [
        "2026-02-28",
        "2026-03-31",
        "2026-04-30",
        "2026-05-31",
        "2026-06-30",
        "2026-07-31",
        "2026-08-31",
        "2026-09-30",
        "2026-10-31",
        "2026-11-30",
        "2026-12-31",
    ]
    .iter()
    .map(|d| name(d))
    .collect();
    want.extend(
        (0..30).map(|i| copy_name("db-backup", day("2027-01-06") + chrono::Duration::days(i))),
    );
    want.sort();
    assert_eq!(on_day_400, want);
    assert_eq!(*n, 41);

    // 2028-03-01 (day 790): no copy for 391 days, every tier empty; only the newest
    // good copy remains (2027-02-01), not the newer unrecorded ones.
    let (when, _, last) = &kept_per_day[439];
    assert_eq!(*when, day("2028-03-01"));
    assert_eq!(files(&backups), [name("2027-02-01")]);
    assert_eq!(last.outcome, Some(JobOutcome::Failed));
    assert_eq!(
        last.data["retention"]["local"]["kept"],
        json!([[name("2027-02-01"), "newest good copy"]])
    );
    // Never more than 30 dailies + 13 monthlies on any day, and never
    // none.
    let most = kept_per_day.iter().map(|(_, n, _)| *n).max().unwrap();
    assert!(most <= 43, "{most}");
    assert!(kept_per_day.iter().all(|(_, n, _)| *n >= 1));
    // When the monthly copies go: by 2027-03-07 02:00 the 2026-02-28 copy
    // is 372 days old, past 1y (365.25 days).
    let on = |s: &str| {
        kept_per_day
            .iter()
            .find(|(t, _, _)| *t == day(s))
            .map(|(_, _, r)| r.data["deleted"].clone())
            .unwrap()
    };
    assert!(
        on("2027-03-07")
            .as_array()
            .unwrap()
            .contains(&json!(name("2026-02-28"))),
        "{}",
        on("2027-03-07")
    );
}
