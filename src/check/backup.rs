//! `backup`: the newest database backup is fresh and intact, as the last
//! `backup.verify` job run found it (it writes a state file this reads).
//!
//! | seen | outcome |
//! | --- | --- |
//! | the last verification found no problem, and the newest copy is younger than the RPO now | ok |
//! | the last verification found a problem (missing, broken, checksum) | failing |
//! | the newest copy has grown older than the RPO since | failing |
//! | no verification has run yet, the state file cannot be read | unknown |

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BuildError, Check};
use crate::config::{Config, VerifyJobConfig};
use crate::observe::Outcome;

/// What the last verification found: written by the `backup.verify` job
/// ([`crate::jobs::verify`]), read by this check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyState {
    /// The verify job.
    pub job: String,
    /// The backup job it checks.
    pub backup: String,
    pub checked_at: DateTime<Utc>,
    /// The RPO the newest copy is held to, in seconds.
    pub rpo_secs: u64,
    /// When the newest copy found was taken (none found: `None`).
    pub newest_taken_at: Option<DateTime<Utc>>,
    pub newest: Option<String>,
    /// Empty when the backup is fine.
    pub problems: Vec<String>,
    /// Each place on its own (absent in files written before places).
    #[serde(default)]
    pub places: Vec<PlaceState>,
}

/// What the last verification found in one place of the backup job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlaceState {
    /// The place's name in the backup job's config.
    pub place: String,
    /// `s3://bucket/prefix`, for humans.
    pub storage: String,
    /// The newest copy found there.
    pub file: Option<String>,
    pub ok: bool,
    pub problem: Option<String>,
}

/// Where verify job `name` writes its state (and this check reads it).
pub fn state_path(config: &Config, name: &str, v: &VerifyJobConfig) -> PathBuf {
    match &v.state {
        Some(p) => config.resolve_path(p),
        None => config.resolve_path(Path::new(&format!("medic-backup-{name}.json"))),
    }
}

impl VerifyState {
    /// Writes the state atomically (temp file, then rename): how the
    /// `backup.verify` job hands its result to this check.
    pub async fn write(&self, path: &Path) -> Result<(), String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(|e| format!("encode state: {e}"))?;
        tokio::fs::write(&tmp, text)
            .await
            .map_err(|e| format!("write {}: {e}", tmp.display()))?;
        tokio::fs::rename(&tmp, path)
            .await
            .map_err(|e| format!("write {}: {e}", path.display()))
    }
}

/// `26h`, `3d 2h`: a chrono duration for humans.
pub fn human(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// `check: { backup: { job: weekly-backup-verify } }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupParams {
    /// The `backup.verify` job whose result to read.
    pub job: String,
}

/// A runnable `backup` check.
#[derive(Debug)]
pub struct BackupCheck {
    job: String,
    state: PathBuf,
}

impl BackupCheck {
    /// Finds the verify job's state file in the config.
    pub fn build(p: &BackupParams, config: &Config) -> Result<Self, BuildError> {
        let v = config
            .jobs
            .get(&p.job)
            .and_then(|j| j.verify.as_ref())
            .ok_or_else(|| {
                BuildError::Invalid(format!(
                    "{:?} is not a backup.verify job in the config",
                    p.job
                ))
            })?;
        Ok(BackupCheck {
            job: p.job.clone(),
            state: state_path(config, &p.job, v),
        })
    }
}

#[async_trait::async_trait]
impl Check for BackupCheck {
    async fn run(&self) -> Outcome {
        let text = match tokio::fs::read(&self.state).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Outcome::Unknown(format!("the {} job has not run yet", self.job));
            }
            Err(e) => return Outcome::Unknown(format!("read {}: {e}", self.state.display())),
        };
        let state: VerifyState = match serde_json::from_slice(&text) {
            Ok(s) => s,
            Err(e) => return Outcome::Unknown(format!("{}: {e}", self.state.display())),
        };
        if !state.problems.is_empty() {
            // Which places are still good, so the page says where to
            // restore from.
            let intact: Vec<&str> = state
                .places
                .iter()
                .filter(|p| p.ok)
                .map(|p| p.place.as_str())
                .collect();
            let mut why = format!(
                "backup verification at {}: {}",
                state.checked_at.format("%Y-%m-%d %H:%M UTC"),
                state.problems.join("; ")
            );
            if !intact.is_empty() {
                why.push_str(&format!(" (intact in {})", intact.join(", ")));
            }
            return Outcome::Failing(why);
        }
        if let Some(t) = state.newest_taken_at {
            let age = Utc::now() - t;
            if age.num_seconds() > state.rpo_secs as i64 {
                return Outcome::Failing(format!(
                    "the newest backup {} is {} old, older than the RPO {}",
                    state.newest.unwrap_or_default(),
                    human(age),
                    human(chrono::Duration::seconds(state.rpo_secs as i64))
                ));
            }
        }
        Outcome::Ok
    }
}

impl super::CheckKind for BackupParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::field_pos;
        let Some(cfg) = v.config else { return };
        match cfg.jobs.get(&self.job) {
            Some(j) if j.verify.is_some() => {}
            Some(_) => v.err(
                field_pos(p, "job"),
                format!("job {:?} is not a backup.verify job", self.job),
            ),
            None => {
                let known: Vec<&str> = cfg
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.verify.is_some())
                    .map(|(n, _)| n.as_str())
                    .collect();
                v.err(
                    field_pos(p, "job"),
                    format!(
                        "unknown job {:?} (backup.verify jobs in the config: {})",
                        self.job,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
    }

    fn build(
        &self,
        _timeout: std::time::Duration,
        config: &Config,
    ) -> Result<std::sync::Arc<dyn Check>, BuildError> {
        Ok(std::sync::Arc::new(BackupCheck::build(self, config)?))
    }
}
