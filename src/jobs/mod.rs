//! Scheduled disaster-recovery jobs: the runbook's backup procedures and
//! restoration tests, run on cron schedules and recorded in the store.
//!
//! - [`backup`]: `postgres.backup`, `pg_dump` to every place of the job
//!   (directories, S3, Azure Blob), verified, with retention.
//! - [`verify`]: `backup.verify`, the newest copy exists in each place, is
//!   younger than the RPO and is intact; writes the state the `backup`
//!   check reads, naming the place at fault.
//! - [`restore`]: `postgres.restore-test`, restore into a scratch database,
//!   integrity queries, measured restore time against the RTO.
//! - [`redis_backup`]: `redis.backup`, `BGSAVE` and a copy of the RDB
//!   file to every place of the job, verified (magic, CRC64), with the same
//!   retention.
//! - `kubernetes_backup`: `kubernetes.backup`, a namespace's manifests,
//!   ConfigMaps and Secrets as one YAML stream, age-encrypted (with the
//!   `kubernetes` feature).
//! - [`drill`]: the scheduled DR drills: `drill.sandbox` (a sandbox drill
//!   of a shipped scenario) and `drill.target` (a real target marked for
//!   drills), the report on the run and sent to the channel.
//! - [`storage`]: where copies live (named places: a local directory, S3,
//!   Azure Blob).
//! - [`retention`]: which copies a place keeps (`retention:` or `keep:`
//!   tiers), on the job's clock.
//! - [`schedule`]: cron expressions in a time zone.
//!
//! # Scheduling
//!
//! One task per job, on its own small loop over the `cron` crate rather than
//! tokio-cron-scheduler, because of three properties we need and measured
//! that crate not to give (docs/design.md, "Why not
//! tokio-cron-scheduler"):
//! - **never twice at once**: the loop awaits a run before it looks at the
//!   schedule again, so a run that overruns its next slot delays it; the
//!   slots that passed meanwhile are skipped (and said so), never queued;
//! - **a missed run runs once**: at start-up the job's last slot is read
//!   from the store; if slots passed while medic was down, the newest one
//!   runs at once, one run however many were missed;
//! - **the paused test clock**: waits are `tokio::time` sleeps towards
//!   [`Clock`] time, so tests drive days in milliseconds.
//!
//! Every run is a row in the store with its own timeline
//! ([`Store::begin_job_run`], [`Store::append_job_event`]): job runs are not
//! incidents (nothing to remediate, no escalation), so they do not share
//! the incidents table; a broken backup becomes an incident through the
//! `backup` check, like any other symptom.

pub mod backup;
pub mod drill;
#[cfg(feature = "kubernetes")]
pub mod kubernetes_backup;
pub mod redis_backup;
pub mod restore;
pub mod retention;
pub mod storage;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::Mode;
use crate::config::{Config, JobConfig};
use crate::schedule::Schedule;
use crate::store::{
    JobOutcome, JobRun, JobRunId, NewJobRun, StoreError, TimelineEntry, prelude::*,
};

/// Why a job could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Invalid(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What a job's run ended with.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub outcome: JobOutcome,
    /// One line for humans.
    pub summary: String,
    /// What it produced (file, size, sha256, durations, counts).
    pub data: Value,
}

impl Report {
    /// A successful run.
    pub fn ok(summary: impl Into<String>, data: Value) -> Self {
        Report {
            outcome: JobOutcome::Succeeded,
            summary: summary.into(),
            data,
        }
    }

    /// A failed run.
    pub fn failed(summary: impl Into<String>, data: Value) -> Self {
        Report {
            outcome: JobOutcome::Failed,
            summary: summary.into(),
            data,
        }
    }
}

/// What a running job may use: the store (its timeline, other jobs'
/// runs) and the clock.
pub struct JobContext {
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    /// This run.
    pub run: JobRunId,
    /// The job's name.
    pub job: String,
}

impl JobContext {
    /// Writes one line on the run's timeline (a store failure is logged:
    /// the run goes on, its outcome is still recorded at the end).
    pub async fn event(&self, kind: &str, message: impl Into<String>, data: Value) {
        let message = message.into();
        tracing::info!(job = %self.job, run = self.run, "{message}");
        let entry = TimelineEntry::new(self.clock.now(), kind, message).with_data(data);
        if let Err(e) = self.store.append_job_event(self.run, entry).await {
            tracing::warn!(job = %self.job, error = %e, "cannot write the job's timeline");
        }
    }
}

/// One kind of scheduled job.
#[async_trait::async_trait]
pub trait Job: Send + Sync {
    /// The kind's name, e.g. `postgres.backup`.
    fn kind(&self) -> &'static str;
    /// Runs once. Must be cancel-safe: on timeout or shutdown the future
    /// is dropped (child processes are killed on drop).
    async fn run(&self, cx: &JobContext) -> Report;
}

/// Builds the job `name` of the config.
pub fn build(name: &str, job: &JobConfig, config: &Config) -> Result<Arc<dyn Job>, JobError> {
    if let Some(b) = &job.backup {
        return Ok(Arc::new(backup::BackupJob::build(name, b, config)?));
    }
    if let Some(v) = &job.verify {
        return Ok(Arc::new(verify::VerifyJob::build(name, v, config)?));
    }
    if let Some(r) = &job.restore_test {
        return Ok(Arc::new(restore::RestoreTestJob::build(r, config)?));
    }
    if let Some(r) = &job.redis_backup {
        return Ok(Arc::new(redis_backup::RedisBackupJob::build(
            name, r, config,
        )?));
    }
    #[cfg(feature = "kubernetes")]
    if let Some(k) = &job.kubernetes_backup {
        return Ok(Arc::new(kubernetes_backup::KubernetesBackupJob::build(
            name, k, config,
        )?));
    }
    if let Some(d) = &job.drill {
        return Ok(Arc::new(drill::DrillJob::build(name, d, config)?));
    }
    if let Some(d) = &job.drill_target {
        return drill::build_target(name, d, config);
    }
    #[cfg(not(feature = "kubernetes"))]
    if job.kubernetes_backup.is_some() {
        return Err(JobError::Invalid(
            crate::features::Feature::Kubernetes.needed_by("job `kubernetes.backup`"),
        ));
    }
    Err(JobError::Invalid(format!(
        "job {name} has no kind (one of {})",
        JobConfig::KINDS.join(", ")
    )))
}

/// A job with its schedule.
#[derive(Clone)]
pub struct Scheduled {
    pub name: String,
    pub schedule: Schedule,
    pub timeout: Duration,
    pub job: Arc<dyn Job>,
}

/// Runs `job` once now for `scheduled_for`, recording the run. The run
/// is bounded by `timeout`.
pub async fn run_once(
    store: &Arc<dyn Store>,
    clock: &Clock,
    name: &str,
    job: &Arc<dyn Job>,
    scheduled_for: DateTime<Utc>,
    timeout: Duration,
) -> Result<JobRun, JobError> {
    let (cx, started) = begin(store, clock, name, job, scheduled_for, None).await?;
    execute(&cx, job, started, timeout, None).await
}

/// Records the start of a run (`by`: a manual run, who asked for it).
async fn begin(
    store: &Arc<dyn Store>,
    clock: &Clock,
    name: &str,
    job: &Arc<dyn Job>,
    scheduled_for: DateTime<Utc>,
    by: Option<&str>,
) -> Result<(JobContext, DateTime<Utc>), JobError> {
    let started = clock.now();
    let run = store
        .begin_job_run(NewJobRun {
            job: name.to_string(),
            kind: job.kind().to_string(),
            scheduled_for,
            started_at: started,
        })
        .await?;
    let cx = JobContext {
        store: store.clone(),
        clock: clock.clone(),
        run,
        job: name.to_string(),
    };
    match by {
        None => {
            cx.event(
                "start",
                format!("{} started (slot {scheduled_for})", job.kind()),
                Value::Null,
            )
            .await
        }
        Some(by) => {
            cx.event(
                "start",
                format!("{} started by hand, asked by {by} (manual run)", job.kind()),
                serde_json::json!({ "manual": true, "requested_by": by }),
            )
            .await
        }
    }
    Ok((cx, started))
}

/// Runs a begun run to its end and records the outcome.
async fn execute(
    cx: &JobContext,
    job: &Arc<dyn Job>,
    started: DateTime<Utc>,
    timeout: Duration,
    by: Option<&str>,
) -> Result<JobRun, JobError> {
    let (store, clock, name, run) = (&cx.store, &cx.clock, cx.job.as_str(), cx.run);
    let report = match tokio::time::timeout(timeout, job.run(cx)).await {
        Ok(r) => r,
        Err(_) => Report::failed(
            format!(
                "timed out after {} and was stopped",
                humantime::format_duration(timeout)
            ),
            Value::Null,
        ),
    };
    let ended = clock.now();
    let mut data = report.data;
    if let Value::Object(m) = &mut data {
        m.insert(
            "duration_ms".into(),
            ((ended - started).num_milliseconds()).into(),
        );
        if let Some(by) = by {
            m.insert("manual".into(), true.into());
            m.insert("requested_by".into(), by.into());
        }
    }
    cx.event(report.outcome.as_str(), report.summary.clone(), Value::Null)
        .await;
    store
        .finish_job_run(run, report.outcome, &report.summary, data, ended)
        .await?;
    match report.outcome {
        JobOutcome::Succeeded => tracing::info!(job = name, "{}", report.summary),
        _ => tracing::error!(job = name, "job failed: {}", report.summary),
    }
    // Newest first: this run is the first one unless the wall clock went
    // back meanwhile.
    Ok(store
        .job_runs(name, 100)
        .await?
        .into_iter()
        .find(|r| r.id == run)
        .ok_or(StoreError::JobRunNotFound(run))?)
}

/// Runs one job on its schedule until `stop` (see the module docs for the
/// overrun and missed-run rules).
pub async fn scheduler(
    s: Scheduled,
    store: Arc<dyn Store>,
    clock: Clock,
    stop: CancellationToken,
) -> Result<(), JobError> {
    // Runs left unfinished by a previous medic: closed, never resumed.
    let history = store.job_runs(&s.name, 50).await?;
    for r in history.iter().filter(|r| r.outcome.is_none()) {
        store
            .finish_job_run(
                r.id,
                JobOutcome::Abandoned,
                "medic stopped while it ran",
                Value::Null,
                clock.now(),
            )
            .await?;
    }
    let mut last = history.first().map(|r| r.scheduled_for);
    if let Some(prev) = last
        && let Some(missed) = s.schedule.newest_between(prev, clock.now())
    {
        tracing::info!(job = %s.name, slot = %missed, "catching up on a missed run (once)");
        run_once(&store, &clock, &s.name, &s.job, missed, s.timeout).await?;
        last = Some(missed);
    }
    loop {
        let now = clock.now();
        let from = last.map_or(now, |l| l.max(now));
        if let Some(l) = last {
            let skipped = count_between(&s.schedule, l, now);
            if skipped > 0 {
                tracing::warn!(
                    job = %s.name,
                    skipped,
                    "the previous run overran: skipping the slots that passed meanwhile"
                );
            }
        }
        let Some(next) = s.schedule.next_after(from) else {
            tracing::warn!(job = %s.name, "the schedule has no further slot");
            return Ok(());
        };
        // Sleep towards the slot in steps, so a wall clock that jumps is
        // noticed within a minute.
        loop {
            let left = (next - clock.now()).to_std().unwrap_or(Duration::ZERO);
            if left.is_zero() {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(left.min(Duration::from_secs(60))) => {}
            }
        }
        let run = run_once(&store, &clock, &s.name, &s.job, next, s.timeout);
        tokio::select! {
            // Shutdown stops a running job (its processes are killed); its
            // row stays unfinished and is closed as abandoned at start-up.
            _ = stop.cancelled() => return Ok(()),
            r = run => { r?; }
        }
        last = Some(next);
    }
}

/// The jobs of the config in force, for runs by hand (`medic backup run
/// JOB`, `POST /api/v1/jobs/{name}/run`): replaced on reload.
#[derive(Default)]
pub struct Manual {
    config: std::sync::RwLock<Option<Arc<Config>>>,
    /// Manual runs going on now, by job: one at a time per job.
    running: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// Why a manual run did not start.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error("no job {0:?} in the config (jobs: {1})")]
    Unknown(String, String),
    #[error("job {0:?} cannot run: {1}")]
    Invalid(String, String),
    #[error(
        "job {0:?} is in dry-run: it would run now; nothing was run (set `mode: enforce` on the job or globally)"
    )]
    DryRun(String),
    #[error("a manual run of job {0:?} is already going on")]
    Busy(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A manual run that started: its id, and the task that runs it.
pub struct Started {
    pub run: JobRunId,
    pub kind: &'static str,
    pub task: tokio::task::JoinHandle<Result<JobRun, JobError>>,
}

impl Manual {
    /// Puts `config`'s jobs in force.
    pub fn set(&self, config: &Config) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(config.clone()));
    }

    /// Starts job `name` now, asked by `by`: recorded like a scheduled run
    /// (its slot is now), marked `manual` with `requested_by`, bounded by
    /// the job's timeout. Returns once the run is recorded as begun.
    pub async fn start(
        self: &Arc<Self>,
        name: &str,
        by: &str,
        store: &Arc<dyn Store>,
        clock: &Clock,
    ) -> Result<Started, ManualError> {
        let config = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        let Some(jc) = config.jobs.get(name) else {
            let known: Vec<&str> = config.jobs.keys().map(String::as_str).collect();
            return Err(ManualError::Unknown(name.to_string(), known.join(", ")));
        };
        let job = build(name, jc, &config)
            .map_err(|e| ManualError::Invalid(name.to_string(), e.to_string()))?;
        if jc.mode.unwrap_or(config.mode) == Mode::DryRun {
            tracing::info!(
                job = name,
                by,
                "dry-run: a manual run was asked for, nothing was run"
            );
            return Err(ManualError::DryRun(name.to_string()));
        }
        if !self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string())
        {
            return Err(ManualError::Busy(name.to_string()));
        }
        let begun = begin(store, clock, name, &job, clock.now(), Some(by)).await;
        let (cx, started) = match begun {
            Ok(b) => b,
            Err(e) => {
                self.running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(name);
                return Err(match e {
                    JobError::Store(s) => ManualError::Store(s),
                    JobError::Invalid(i) => ManualError::Invalid(name.to_string(), i),
                });
            }
        };
        let run = cx.run;
        let kind = job.kind();
        let timeout = jc.timeout.get();
        let (me, by, name) = (self.clone(), by.to_string(), name.to_string());
        let task = tokio::spawn(async move {
            let r = execute(&cx, &job, started, timeout, Some(&by)).await;
            me.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            r
        });
        Ok(Started { run, kind, task })
    }
}

/// Slots in `(after, until)`, capped at 1000.
fn count_between(s: &Schedule, after: DateTime<Utc>, until: DateTime<Utc>) -> usize {
    let mut n = 0;
    let mut t = after;
    while let Some(next) = s.next_after(t).filter(|x| *x < until) {
        n += 1;
        t = next;
        if n >= 1000 {
            break;
        }
    }
    n
}

/// Builds the config's jobs: scheduled ones, and refusals (`name: why`).
pub fn build_all(config: &Config) -> (Vec<Scheduled>, Vec<String>) {
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for (name, j) in &config.jobs {
        let schedule = match Schedule::parse(&j.schedule, &j.timezone) {
            Ok(s) => s,
            Err(e) => {
                refused.push(format!("{name}: {e}"));
                continue;
            }
        };
        match build(name, j, config) {
            Ok(job) => ok.push(Scheduled {
                name: name.clone(),
                schedule,
                timeout: j.timeout.get(),
                job,
            }),
            Err(e) => refused.push(format!("{name}: {e}")),
        }
    }
    (ok, refused)
}

/// Starts every job of the config in enforce mode (a job in dry-run only
/// logs that it would run), on `tasks`, until `stop`.
pub fn start(
    config: &Config,
    store: Arc<dyn Store>,
    clock: Clock,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    let (jobs, refused) = build_all(config);
    for r in refused {
        tracing::error!("job refused, not scheduled: {r}");
    }
    for s in jobs {
        let mode = config.jobs[&s.name].mode.unwrap_or(config.mode);
        if mode == Mode::DryRun {
            tracing::info!(job = %s.name, kind = s.job.kind(), "dry-run: job not scheduled (would run on its schedule)");
            continue;
        }
        let (store, clock, stop) = (store.clone(), clock.clone(), stop.clone());
        tasks.spawn(async move {
            let name = s.name.clone();
            if let Err(e) = scheduler(s, store, clock, stop).await {
                tracing::error!(job = %name, error = %e, "job scheduler stopped");
            }
        });
    }
}

/// The newest `pg_dump`/`pg_restore` directory: `pg_bin` if set, else the
/// newest `/usr/lib/postgresql/*/bin`, else `None` (use `PATH`).
pub fn pg_bin(configured: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    if let Some(p) = configured {
        return Some(p.to_path_buf());
    }
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_dump").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

/// The path of a PostgreSQL program.
pub fn pg_program(bin: Option<&std::path::Path>, name: &str) -> std::path::PathBuf {
    match bin {
        Some(b) => b.join(name),
        None => std::path::PathBuf::from(name),
    }
}
