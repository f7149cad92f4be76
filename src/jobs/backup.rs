//! `postgres.backup`: `pg_dump --format=custom` (compressed), verified with
//! `pg_restore --list` and checksummed before it counts, stored in a
//! directory and/or S3 under a UTC-timestamped name, then retention.
//!
//! Retention deletes copies older than `retention`, but never the newest
//! good one (a copy a succeeded run recorded), even when every copy is old:
//! a backup job that has been failing for a month must not leave nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};

use super::storage::{self, Storage, StoredCopy, copy_name};
use super::{JobContext, JobError, Report};
use crate::config::{BackupJobConfig, Config, PostgresTarget, TargetConfig};
use crate::store::{JobOutcome, prelude::*};

/// A built `postgres.backup` job.
pub struct BackupJob {
    name: String,
    target: PostgresTarget,
    bin: Option<PathBuf>,
    /// The local directory, if any (also where the dump is written first).
    directory: Option<PathBuf>,
    storages: Vec<Storage>,
    retention: chrono::Duration,
    compress: u8,
}

impl BackupJob {
    /// Builds job `name` from its config.
    pub fn build(name: &str, c: &BackupJobConfig, config: &Config) -> Result<Self, JobError> {
        let target = postgres_target(config, &c.target)?;
        let directory = c.directory.as_ref().map(|d| config.resolve_path(d));
        Ok(BackupJob {
            name: name.to_string(),
            target,
            bin: super::pg_bin(c.pg_bin.as_deref()),
            storages: storages(config, c),
            directory,
            retention: chrono::Duration::from_std(c.retention.get())
                .unwrap_or(chrono::Duration::MAX),
            compress: c.compress,
        })
    }
}

/// The storages of a backup job's config: the directory first.
pub fn storages(config: &Config, c: &BackupJobConfig) -> Vec<Storage> {
    storages_of(config, c.directory.as_ref(), c.s3.as_ref())
}

/// The storages of a directory and/or bucket: the directory first.
pub fn storages_of(
    config: &Config,
    directory: Option<&PathBuf>,
    s3: Option<&crate::config::S3Config>,
) -> Vec<Storage> {
    let mut v = Vec::new();
    if let Some(d) = directory {
        v.push(Storage::Local(config.resolve_path(d)));
    }
    if let Some(s3) = s3 {
        v.push(Storage::s3(s3.clone()));
    }
    v
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
        let taken_at = cx.clock.now();
        let name = copy_name(&self.name, taken_at);
        let mut report = self.dump(cx, &name).await;
        retain(
            cx,
            &self.name,
            &self.storages,
            &name,
            taken_at - self.retention,
            &mut report,
        )
        .await;
        report
    }
}

impl BackupJob {
    /// Dump, verify, checksum, store.
    async fn dump(&self, cx: &JobContext, name: &str) -> Report {
        let work = match &self.directory {
            Some(d) => match tokio::fs::create_dir_all(d).await {
                Ok(()) => d.clone(),
                Err(e) => return Report::failed(format!("create {}: {e}", d.display()), json!({})),
            },
            None => match scratch_dir("backup") {
                Ok(d) => d,
                Err(e) => return Report::failed(e, json!({})),
            },
        };
        let partial = work.join(format!(".{name}.partial"));
        let r = self.dump_into(cx, name, &partial, &work).await;
        let _ = tokio::fs::remove_file(&partial).await;
        if self.directory.is_none() {
            let _ = tokio::fs::remove_dir_all(&work).await;
        }
        match r {
            Ok(data) => Report::ok(
                format!(
                    "backup {name} taken, verified and stored ({} bytes)",
                    data["size"]
                ),
                data,
            ),
            Err(e) => Report::failed(e, json!({ "file": name })),
        }
    }

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
        cx.event(
            "dump",
            format!("pg_dump of {}:{}/{}", t.host, t.port, t.dbname),
            json!({ "program": pg_dump.display().to_string(), "compress": self.compress }),
        )
        .await;
        run_program(&pg_dump, &args, t).await?;
        let entries = archive_entries(self.bin.as_deref(), partial).await?;
        let (sha256, size) = storage::sha256_file(partial).await?;
        cx.event(
            "verify",
            format!("pg_restore --list reads {entries} entries; sha256 {sha256}, {size} bytes"),
            json!({ "entries": entries, "sha256": sha256, "size": size }),
        )
        .await;
        let stored = store_copy(
            cx,
            &self.storages,
            self.directory.as_deref(),
            work,
            partial,
            name,
        )
        .await?;
        Ok(json!({
            "file": name,
            "sha256": sha256,
            "size": size,
            "entries": entries,
            "stored": stored,
        }))
    }
}

/// Retention after a run of backup job `job` that took copy `name`:
/// deletes copies older than `cutoff` from every storage except the newest
/// good one. It runs after failures too: a failing job must not fill the
/// disk, nor may it delete the last good copy. What it deleted goes into
/// `report.data.deleted`.
pub async fn retain(
    cx: &JobContext,
    job: &str,
    storages: &[Storage],
    name: &str,
    cutoff: chrono::DateTime<chrono::Utc>,
    report: &mut Report,
) {
    // Retention runs after failures too: a failing job must not fill
    // the disk, nor may it delete the last good copy.
    let good = match recorded_copies(&*cx.store, job).await {
        Ok(m) => {
            let mut s: BTreeSet<String> = m.into_keys().collect();
            if report.outcome == JobOutcome::Succeeded {
                s.insert(name.to_string());
            }
            Some(s)
        }
        Err(e) => {
            cx.event("retention", format!("retention skipped: {e}"), Value::Null)
                .await;
            None
        }
    };
    if let Some(good) = good {
        let mut deleted = Vec::new();
        for st in storages {
            match prune(st, job, &good, cutoff).await {
                Ok(d) => {
                    if !d.is_empty() {
                        cx.event(
                            "retention",
                            format!(
                                "deleted {} copies older than the retention from {}",
                                d.len(),
                                st.describe()
                            ),
                            json!({ "deleted": d }),
                        )
                        .await;
                    }
                    deleted.extend(d);
                }
                Err(e) => {
                    cx.event(
                        "retention",
                        format!("retention on {}: {e}", st.describe()),
                        Value::Null,
                    )
                    .await;
                }
            }
        }
        if let Value::Object(m) = &mut report.data {
            m.insert("deleted".into(), json!(deleted));
        }
    }
}

/// Deletes `job`'s copies taken before `cutoff` from `st`, except the
/// newest good one (the newest of all if none is known good). Returns the
/// names deleted.
pub async fn prune(
    st: &Storage,
    job: &str,
    good: &BTreeSet<String>,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<String>, String> {
    let copies: Vec<StoredCopy> = st.list(job).await?;
    let keep = copies
        .iter()
        .rev()
        .find(|c| good.contains(&c.name))
        .or(copies.last())
        .map(|c| c.name.clone());
    let mut deleted = Vec::new();
    for c in &copies {
        if c.taken_at < cutoff && Some(&c.name) != keep.as_ref() {
            st.delete(&c.name).await?;
            deleted.push(c.name.clone());
        }
    }
    Ok(deleted)
}

/// Puts the verified copy `partial` (named `name`) in every storage of a
/// backup job, each on the timeline: moved when the storage is the work
/// directory itself, else uploaded from the directory's copy when there
/// is one. Returns the storages it went to. Shared by every backup kind.
pub(crate) async fn store_copy(
    cx: &JobContext,
    storages: &[Storage],
    directory: Option<&Path>,
    work: &Path,
    partial: &Path,
    name: &str,
) -> Result<Vec<String>, String> {
    let mut stored = Vec::new();
    for st in storages {
        match st {
            Storage::Local(dir) if dir == work => {
                tokio::fs::rename(partial, dir.join(name))
                    .await
                    .map_err(|e| format!("rename into {}: {e}", dir.display()))?;
            }
            _ => {
                let from = match directory {
                    Some(d) if d.join(name).exists() => d.join(name),
                    _ => partial.to_path_buf(),
                };
                st.put(name, &from).await?;
            }
        }
        cx.event(
            "store",
            format!("stored {name} in {}", st.describe()),
            Value::Null,
        )
        .await;
        stored.push(st.describe());
    }
    Ok(stored)
}
