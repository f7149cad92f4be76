//! `postgres.backup`: `pg_dump --format=custom` (compressed), verified with
//! `pg_restore --list` and checksummed before it counts, stored in every
//! place of the job (directories, S3, Azure Blob) under a UTC-timestamped
//! name, then retention in each place.
//!
//! Retention ([`super::retention`]: `retention:` or `keep:` tiers) never
//! deletes the newest good copy of a place (a copy a succeeded run
//! recorded and `backup.verify` did not find broken there), even when
//! every copy is old: a backup job that has been failing for a month must
//! not leave nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};

use super::storage::{self, Place, Storage, copy_name};
use super::{JobContext, JobError, Report};
use crate::config::{
    BackupJobConfig, BackupStorage, Config, PostgresTarget, Retention, TargetConfig,
};
use crate::store::{JobOutcome, prelude::*};

/// A built `postgres.backup` job.
pub struct BackupJob {
    target: PostgresTarget,
    bin: Option<PathBuf>,
    copies: Copies,
    compress: u8,
}

impl BackupJob {
    /// Builds job `name` from its config.
    pub fn build(name: &str, c: &BackupJobConfig, config: &Config) -> Result<Self, JobError> {
        let target = postgres_target(config, &c.target)?;
        Ok(BackupJob {
            target,
            bin: super::pg_bin(c.pg_bin.as_deref()),
            copies: Copies::of(config, name)?,
            compress: c.compress,
        })
    }
}

/// What every backup job (`postgres.backup`, `redis.backup`,
/// `kubernetes.backup`) shares: where its copies go and how long they
/// stay, and one run's frame around the kind's own work (a work
/// directory, the partial file, storing, retention).
pub struct Copies {
    /// The backup job's name (copies are `JOB-TIMESTAMP.dump`).
    pub job: String,
    /// The first local directory place, if any (where the copy is written
    /// first).
    pub directory: Option<PathBuf>,
    pub places: Vec<Place>,
    pub retention: Retention,
    /// The `backup.verify` jobs of this job: what they found broken is not
    /// a good copy to retention.
    pub verifiers: Vec<String>,
}

/// What a kind's work produced: the run's summary and data.
pub type Taken = Result<(String, Value), String>;

impl Copies {
    /// Backup job `name`'s places and retention.
    pub fn of(config: &Config, name: &str) -> Result<Self, JobError> {
        let st = storage_of(config, name)?;
        Ok(Copies {
            job: name.to_string(),
            directory: st.work_directory().map(|d| config.resolve_path(&d)),
            places: places_of(config, &st),
            retention: st.retention_policy(),
            verifiers: verifiers_of(config, name),
        })
    }

    /// One run: `take(name, partial, work)` writes the copy to `partial`
    /// in the work directory (a scratch `scratch` directory when the job
    /// has no local place) and stores it with [`Copies::store`]; the
    /// partial file and a scratch directory are removed after, then
    /// retention runs (after failures too).
    pub async fn run<F, Fut>(&self, cx: &JobContext, scratch: &str, take: F) -> Report
    where
        F: FnOnce(String, PathBuf, PathBuf) -> Fut,
        Fut: std::future::Future<Output = Taken>,
    {
        let taken_at = cx.clock.now();
        let name = copy_name(&self.job, taken_at);
        let mut report = self.take(&name, scratch, take).await;
        retain(
            cx,
            &Retain {
                job: &self.job,
                places: &self.places,
                policy: &self.retention,
                verifiers: &self.verifiers,
            },
            &name,
            taken_at,
            &mut report,
        )
        .await;
        report
    }

    async fn take<F, Fut>(&self, name: &str, scratch: &str, take: F) -> Report
    where
        F: FnOnce(String, PathBuf, PathBuf) -> Fut,
        Fut: std::future::Future<Output = Taken>,
    {
        let work = match &self.directory {
            Some(d) => match tokio::fs::create_dir_all(d).await {
                Ok(()) => d.clone(),
                Err(e) => return Report::failed(format!("create {}: {e}", d.display()), json!({})),
            },
            None => match scratch_dir(scratch) {
                Ok(d) => d,
                Err(e) => return Report::failed(e, json!({})),
            },
        };
        let partial = work.join(format!(".{name}.partial"));
        let r = take(name.to_string(), partial.clone(), work.clone()).await;
        let _ = tokio::fs::remove_file(&partial).await;
        if self.directory.is_none() {
            let _ = tokio::fs::remove_dir_all(&work).await;
        }
        match r {
            Ok((summary, data)) => Report::ok(summary, data),
            Err(e) => Report::failed(e, json!({ "file": name })),
        }
    }

    /// Stores the verified copy at `partial` as `name` in every place.
    pub async fn store(
        &self,
        cx: &JobContext,
        work: &Path,
        partial: &Path,
        name: &str,
    ) -> Result<Vec<String>, String> {
        store_copy(
            cx,
            &self.places,
            self.directory.as_deref(),
            work,
            partial,
            name,
        )
        .await
    }
}

/// The storage fields of backup job `name`.
pub fn storage_of<'a>(config: &'a Config, name: &str) -> Result<BackupStorage<'a>, JobError> {
    config
        .jobs
        .get(name)
        .and_then(|j| j.backup_storage())
        .ok_or_else(|| {
            JobError::Invalid(format!(
                "{name:?} is not a postgres.backup, redis.backup or kubernetes.backup job"
            ))
        })
}

/// The places of a backup job, in config order (the old `directory` and
/// `s3` keys first).
pub fn places_of(config: &Config, st: &BackupStorage<'_>) -> Vec<Place> {
    st.places()
        .iter()
        .filter_map(|p| Place::build(p, |d| config.resolve_path(d)))
        .collect()
}

/// The `backup.verify` jobs that check backup job `name`.
pub fn verifiers_of(config: &Config, name: &str) -> Vec<String> {
    config
        .jobs
        .iter()
        .filter(|(_, j)| j.verify.as_ref().is_some_and(|v| v.backup == name))
        .map(|(n, _)| n.clone())
        .collect()
}

/// The places of backup job `name`.
pub fn places(config: &Config, name: &str) -> Result<Vec<Place>, JobError> {
    Ok(places_of(config, &storage_of(config, name)?))
}

/// The PostgreSQL target `name` of the config.
pub fn postgres_target(config: &Config, name: &str) -> Result<PostgresTarget, JobError> {
    match config.targets.get(name) {
        Some(TargetConfig::Postgres(t)) => Ok(t.clone()),
        Some(_) => Err(JobError::Invalid(format!(
            "target {name:?} is not a postgres target"
        ))),
        None => Err(JobError::Invalid(format!("unknown target {name:?}"))),
    }
}

/// Runs a program (never through a shell), killed if the run is dropped;
/// its stdout, or an error with the end of its stderr.
pub async fn run_program(
    program: &Path,
    args: &[String],
    target: &PostgresTarget,
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(pw) = &target.password {
        let pw = pw.resolve().map_err(|e| format!("password: {e}"))?;
        cmd.env("PGPASSWORD", pw.expose());
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim();
        let tail: String = err
            .char_indices()
            .rev()
            .nth(400)
            .map_or(err, |(i, _)| &err[i..])
            .to_string();
        Err(format!(
            "{} failed ({}): {tail}",
            program.file_name().map_or_else(
                || program.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            ),
            out.status
        ))
    }
}

/// Connection arguments of the PostgreSQL client programs.
pub fn conn_args(t: &PostgresTarget, dbname: &str) -> Vec<String> {
    vec![
        "--host".into(),
        t.host.clone(),
        "--port".into(),
        t.port.to_string(),
        "--username".into(),
        t.user.clone(),
        "--dbname".into(),
        dbname.to_string(),
        "--no-password".into(),
    ]
}

/// `pg_restore --list FILE` succeeds: the archive is readable. Returns the
/// number of entries in its table of contents.
pub async fn archive_entries(bin: Option<&Path>, file: &Path) -> Result<usize, String> {
    let mut cmd = tokio::process::Command::new(super::pg_program(bin, "pg_restore"));
    cmd.arg("--list")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run pg_restore: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pg_restore --list failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .count())
}

/// A unique scratch path for work files.
pub fn scratch_dir(what: &str) -> Result<PathBuf, String> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("medic-{what}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// The copies that succeeded runs of backup job `job` recorded, with their
/// sha256 and size: name → (sha256, size).
pub async fn recorded_copies(
    store: &dyn Store,
    job: &str,
) -> Result<std::collections::BTreeMap<String, (String, u64)>, String> {
    let runs = store
        .job_runs(job, 10_000)
        .await
        .map_err(|e| format!("store: {e}"))?;
    Ok(runs
        .iter()
        .filter(|r| r.outcome == Some(JobOutcome::Succeeded))
        .filter_map(|r| {
            Some((
                r.data.get("file")?.as_str()?.to_string(),
                (
                    r.data.get("sha256")?.as_str()?.to_string(),
                    r.data.get("size")?.as_u64()?,
                ),
            ))
        })
        .collect())
}

#[async_trait::async_trait]
impl super::Job for BackupJob {
    fn kind(&self) -> &'static str {
        "postgres.backup"
    }

    async fn run(&self, cx: &JobContext) -> Report {
        self.copies
            .run(cx, "backup", |name, partial, work| async move {
                let data = self.dump_into(cx, &name, &partial, &work).await?;
                let summary = format!(
                    "backup {name} taken, verified and stored ({} bytes)",
                    data["size"]
                );
                Ok((summary, data))
            })
            .await
    }
}

impl BackupJob {
    async fn dump_into(
        &self,
        cx: &JobContext,
        name: &str,
        partial: &Path,
        work: &Path,
    ) -> Result<Value, String> {
        let t = &self.target;
        let mut args = conn_args(t, &t.dbname);
        args.extend([
            "--format=custom".to_string(),
            format!("--compress={}", self.compress),
            "--file".into(),
            partial.display().to_string(),
        ]);
        let pg_dump = super::pg_program(self.bin.as_deref(), "pg_dump");
        // The row count of every table, in the snapshot pg_dump then dumps:
        // what a restore (`postgres.restore`) must find again. Held open
        // until pg_dump has imported it.
        let snapshot = match counted_snapshot(t).await {
            Ok(s) => {
                args.push(format!("--snapshot={}", s.id));
                Some(s)
            }
            Err(e) => {
                cx.event(
                    "rows",
                    format!("row counts not recorded ({e}); the dump goes on without them"),
                    Value::Null,
                )
                .await;
                None
            }
        };
        cx.event(
            "dump",
            format!("pg_dump of {}:{}/{}", t.host, t.port, t.dbname),
            json!({ "program": pg_dump.display().to_string(), "compress": self.compress }),
        )
        .await;
        run_program(&pg_dump, &args, t).await?;
        let rows = snapshot.map(|s| s.rows);
        let entries = archive_entries(self.bin.as_deref(), partial).await?;
        let (sha256, size) = storage::sha256_file(partial).await?;
        cx.event(
            "verify",
            format!("pg_restore --list reads {entries} entries; sha256 {sha256}, {size} bytes"),
            json!({ "entries": entries, "sha256": sha256, "size": size }),
        )
        .await;
        let stored = self.copies.store(cx, work, partial, name).await?;
        Ok(json!({
            "file": name,
            "sha256": sha256,
            "size": size,
            "entries": entries,
            "stored": stored,
            "rows": rows,
        }))
    }
}

/// An exported snapshot (`pg_export_snapshot()`), held open by its
/// session, with the row count of every table in it.
struct CountedSnapshot {
    id: String,
    /// `schema.table` → rows.
    rows: BTreeMap<String, i64>,
    _client: tokio_postgres::Client,
}

/// Opens a repeatable-read snapshot of `t`'s database, exports it and
/// counts the rows of every ordinary and partitioned table outside the
/// system schemas.
async fn counted_snapshot(t: &PostgresTarget) -> Result<CountedSnapshot, String> {
    let cfg = crate::connect::postgres(t, "medic-backup", std::time::Duration::from_secs(10))?;
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(|e| {
        e.as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string())
    })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let err = |e: tokio_postgres::Error| {
        e.as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string())
    };
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(err)?;
    let id: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(err)?
        .get(0);
    let tables = client
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_%'
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(err)?;
    let mut rows = BTreeMap::new();
    for r in tables {
        let (schema, table): (String, String) = (r.get(0), r.get(1));
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let n: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {}.{}", q(&schema), q(&table)),
                &[],
            )
            .await
            .map_err(err)?
            .get(0);
        rows.insert(format!("{schema}.{table}"), n);
    }
    Ok(CountedSnapshot {
        id,
        rows,
        _client: client,
    })
}

/// What retention needs to know of a backup job.
pub struct Retain<'a> {
    pub job: &'a str,
    pub places: &'a [Place],
    pub policy: &'a Retention,
    /// Its `backup.verify` jobs ([`verifiers_of`]).
    pub verifiers: &'a [String],
}

/// Retention after a run of a backup job that took copy `name` at `now`
/// (the job's clock): in every place, deletes what the policy does not
/// keep, except the newest good copy of that place. It runs after
/// failures too: a failing job must not fill the disk, nor may it delete
/// the last good copy. What it deleted goes into `report.data.deleted`
/// (names) and `report.data.retention` (per place: kept with why, deleted).
pub async fn retain(
    cx: &JobContext,
    r: &Retain<'_>,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
    report: &mut Report,
) {
    let mut good: BTreeSet<String> = match recorded_copies(&*cx.store, r.job).await {
        Ok(m) => m.into_keys().collect(),
        Err(e) => {
            cx.event("retention", format!("retention skipped: {e}"), Value::Null)
                .await;
            return;
        }
    };
    if report.outcome == JobOutcome::Succeeded {
        good.insert(name.to_string());
    }
    let broken = match verified_broken(&*cx.store, r.verifiers).await {
        Ok(b) => b,
        Err(e) => {
            cx.event("retention", format!("retention skipped: {e}"), Value::Null)
                .await;
            return;
        }
    };
    let mut deleted = Vec::new();
    let mut per_place = serde_json::Map::new();
    for place in r.places {
        let good_here: BTreeSet<String> = match broken.get(&place.name) {
            Some(b) => good.difference(b).cloned().collect(),
            None => good.clone(),
        };
        match prune(&place.storage, r.job, &good_here, r.policy, now).await {
            Ok(d) => {
                if !d.delete.is_empty() {
                    cx.event(
                        "retention",
                        format!(
                            "deleted {} copies the retention does not keep from {}",
                            d.delete.len(),
                            place.describe()
                        ),
                        json!({ "place": place.name, "deleted": d.delete, "kept": d.keep }),
                    )
                    .await;
                }
                per_place.insert(
                    place.name.clone(),
                    json!({ "kept": d.keep, "deleted": d.delete }),
                );
                deleted.extend(d.delete);
            }
            Err(e) => {
                cx.event(
                    "retention",
                    format!("retention on {}: {e}", place.describe()),
                    Value::Null,
                )
                .await;
            }
        }
    }
    if let Value::Object(m) = &mut report.data {
        m.insert("deleted".into(), json!(deleted));
        m.insert("retention".into(), Value::Object(per_place));
    }
}

/// Copies the newest run of each `backup.verify` job in `verifiers` found
/// broken, by place name (`data.places[].ok == false`); a copy a newer
/// run found intact again is not broken.
pub async fn verified_broken(
    store: &dyn Store,
    verifiers: &[String],
) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let mut verdicts: BTreeMap<(String, String), bool> = BTreeMap::new();
    for v in verifiers {
        let runs = store
            .job_runs(v, 1000)
            .await
            .map_err(|e| format!("store: {e}"))?;
        // Newest first: the first verdict on a copy in a place wins.
        for run in &runs {
            let Some(places) = run.data.get("places").and_then(Value::as_array) else {
                continue;
            };
            for p in places {
                let (Some(place), Some(file), Some(ok)) = (
                    p.get("place").and_then(Value::as_str),
                    p.get("file").and_then(Value::as_str),
                    p.get("ok").and_then(Value::as_bool),
                ) else {
                    continue;
                };
                verdicts
                    .entry((place.to_string(), file.to_string()))
                    .or_insert(ok);
            }
        }
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ((place, file), ok) in verdicts {
        if !ok {
            out.entry(place).or_default().insert(file);
        }
    }
    Ok(out)
}

/// Applies the retention policy to `job`'s copies in `st` at `now`:
/// deletes what [`super::retention::decide`] does not keep. Returns the
/// decision (what was kept and why, what was deleted).
pub async fn prune(
    st: &Storage,
    job: &str,
    good: &BTreeSet<String>,
    policy: &Retention,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<super::retention::Decision, String> {
    let copies = st.list(job).await?;
    let d = super::retention::decide(&copies, good, policy, now);
    for name in &d.delete {
        st.delete(name).await?;
    }
    Ok(d)
}

/// Puts the verified copy `partial` (named `name`) in every place of a
/// backup job, each on the timeline: moved when the place is the work
/// directory itself, else uploaded from the directory's copy when there
/// is one. A place that fails does not stop the others (the copy still
/// reaches every place that works); the run then fails naming each place
/// that failed. Returns the places it went to. Shared by every backup kind.
pub(crate) async fn store_copy(
    cx: &JobContext,
    places: &[Place],
    directory: Option<&Path>,
    work: &Path,
    partial: &Path,
    name: &str,
) -> Result<Vec<String>, String> {
    let mut stored = Vec::new();
    let mut failed = Vec::new();
    // The work directory first: the others upload from its copy.
    let mut order: Vec<&Place> = places.iter().collect();
    order.sort_by_key(|p| !matches!(&p.storage, Storage::Local(d) if d == work));
    for place in order {
        let r = match &place.storage {
            Storage::Local(dir) if dir == work => tokio::fs::rename(partial, dir.join(name))
                .await
                .map_err(|e| format!("rename into {}: {e}", dir.display())),
            st => {
                let from = match directory {
                    Some(d) if d.join(name).exists() => d.join(name),
                    _ => partial.to_path_buf(),
                };
                st.put(name, &from).await
            }
        };
        match r {
            Ok(()) => {
                cx.event(
                    "store",
                    format!("stored {name} in {}", place.describe()),
                    json!({ "place": place.name }),
                )
                .await;
                stored.push(place.describe());
            }
            Err(e) => {
                cx.event(
                    "store",
                    format!("storing {name} in {} failed: {e}", place.describe()),
                    json!({ "place": place.name, "error": e }),
                )
                .await;
                failed.push(format!("{}: {e}", place.describe()));
            }
        }
    }
    if failed.is_empty() {
        Ok(stored)
    } else {
        Err(format!(
            "stored in {} of {} places; {}",
            stored.len(),
            places.len(),
            failed.join("; ")
        ))
    }
}
