//! `backup.verify`: the newest copy of a backup job exists in every place
//! it is stored (each place checked on its own and named: a copy missing
//! or broken in one place fails that place only), is younger than the
//! RPO, has the size and sha256 its backup run recorded, and is readable: `pg_restore --list` reads a
//! PostgreSQL dump; a Redis copy (`redis.backup`) starts with the `REDIS`
//! magic and its trailing CRC64 matches ([`super::redis_backup::rdb`]).
//!
//! The result is written to a small JSON state file that the `backup`
//! check reads (the file's type and place belong to [`crate::check::backup`]): a stale or broken backup then
//! becomes a symptom like any other, opens a `backup-failure` incident and
//! pages. The check also re-evaluates the newest copy's age on every run,
//! so a backup that stops between two weekly verifications still shows.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::backup::{archive_entries, places, recorded_copies, scratch_dir};
use super::storage::Place;
use super::{JobContext, JobError, Report};
use crate::check::backup::{PlaceState, VerifyState, human, state_path};
use crate::config::{Config, VerifyJobConfig};

/// A built `backup.verify` job.
pub struct VerifyJob {
    name: String,
    backup: String,
    rpo: chrono::Duration,
    places: Vec<Place>,
    bin: Option<PathBuf>,
    /// The backup job is a `redis.backup` (RDB files), not pg_dump's.
    redis: bool,
    /// The backup job is a `kubernetes.backup` (a YAML stream, maybe
    /// age-encrypted), with the identity that decrypts it if configured.
    kubernetes: Option<Option<crate::secret::SecretRef>>,
    state: PathBuf,
}

impl VerifyJob {
    /// Builds job `name` from its config.
    pub fn build(name: &str, v: &VerifyJobConfig, config: &Config) -> Result<Self, JobError> {
        let j = config.jobs.get(&v.backup);
        let places = places(config, &v.backup)?;
        let pg_bin = j
            .and_then(|j| j.backup.as_ref())
            .and_then(|b| b.pg_bin.as_deref());
        Ok(VerifyJob {
            name: name.to_string(),
            backup: v.backup.clone(),
            rpo: chrono::Duration::from_std(v.rpo.get()).unwrap_or(chrono::Duration::MAX),
            places,
            bin: super::pg_bin(pg_bin),
            redis: j.is_some_and(|j| j.redis_backup.is_some()),
            kubernetes: j
                .and_then(|j| j.kubernetes_backup.as_ref())
                .map(|k| k.encrypt.as_ref().and_then(|e| e.identity.clone())),
            state: state_path(config, name, v),
        })
    }
}

#[async_trait::async_trait]
impl super::Job for VerifyJob {
    fn kind(&self) -> &'static str {
        "backup.verify"
    }

    async fn run(&self, cx: &JobContext) -> Report {
        let now = cx.clock.now();
        let mut problems = Vec::new();
        let mut newest_overall: Option<(DateTime<Utc>, String)> = None;
        let recorded = match recorded_copies(&*cx.store, &self.backup).await {
            Ok(r) => r,
            Err(e) => return Report::failed(e, json!({})),
        };
        let scratch = match scratch_dir("verify") {
            Ok(d) => d,
            Err(e) => return Report::failed(e, json!({})),
        };
        let mut checked = Vec::new();
        let mut place_states = Vec::new();
        for place in &self.places {
            let (file, problem) = self
                .check_place(cx, place, now, &recorded, &scratch, &mut checked)
                .await;
            if let Some(f) = &file {
                // The newest copy of any place (ties: the first place's).
                let t = super::storage::copy_time(&self.backup, f);
                if let Some(t) = t
                    && newest_overall.as_ref().is_none_or(|(n, _)| t > *n)
                {
                    newest_overall = Some((t, f.clone()));
                }
            }
            if let Some(p) = &problem {
                problems.push(p.clone());
            }
            place_states.push(PlaceState {
                place: place.name.clone(),
                storage: place.storage.describe(),
                file,
                ok: problem.is_none(),
                problem,
            });
        }
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        let state = VerifyState {
            job: self.name.clone(),
            backup: self.backup.clone(),
            checked_at: now,
            rpo_secs: self.rpo.num_seconds().max(0) as u64,
            newest_taken_at: newest_overall.as_ref().map(|(t, _)| *t),
            newest: newest_overall.map(|(_, n)| n),
            problems: problems.clone(),
            places: place_states.clone(),
        };
        if let Err(e) = state.write(&self.state).await {
            problems.push(e);
        }
        for p in &problems {
            cx.event("problem", p.clone(), json!({})).await;
        }
        let data = json!({
            "checked": checked,
            "problems": problems,
            "places": place_states,
            "state": self.state.display().to_string(),
        });
        if problems.is_empty() {
            Report::ok(
                format!(
                    "the newest backup {} is fresh and intact",
                    state.newest.unwrap_or_default()
                ),
                data,
            )
        } else {
            let intact: Vec<&str> = place_states
                .iter()
                .filter(|p| p.ok)
                .map(|p| p.place.as_str())
                .collect();
            let mut summary = problems.join("; ");
            if !intact.is_empty() {
                summary.push_str(&format!(" (intact in {})", intact.join(", ")));
            }
            Report::failed(summary, data)
        }
    }
}

impl VerifyJob {
    /// One place: its newest copy is there, fresh and intact. Returns the
    /// newest copy's name (if any) and the place's problem (if any); what
    /// was found intact goes into `checked` and on the timeline.
    async fn check_place(
        &self,
        cx: &JobContext,
        place: &Place,
        now: DateTime<Utc>,
        recorded: &std::collections::BTreeMap<String, (String, u64)>,
        scratch: &Path,
        checked: &mut Vec<serde_json::Value>,
    ) -> (Option<String>, Option<String>) {
        let copies = match place.storage.list(&self.backup).await {
            Ok(c) => c,
            Err(e) => return (None, Some(format!("{}: {e}", place.describe()))),
        };
        let Some(newest) = copies.last() else {
            return (
                None,
                Some(format!(
                    "no backup of {} in {}",
                    self.backup,
                    place.describe()
                )),
            );
        };
        let file = Some(newest.name.clone());
        let age = now - newest.taken_at;
        let mut problem = Vec::new();
        if age > self.rpo {
            problem.push(format!(
                "the newest backup {} in {} is {} old, older than the RPO {}",
                newest.name,
                place.describe(),
                human(age),
                human(self.rpo)
            ));
        }
        // Each place's own scratch: a download never meets another's.
        let here = scratch.join(&place.name);
        if let Err(e) = tokio::fs::create_dir_all(&here).await {
            problem.push(format!("create {}: {e}", here.display()));
            return (file, Some(problem.join("; ")));
        }
        match self
            .intact(&place.storage, &newest.name, recorded, &here)
            .await
        {
            Ok((what, detail)) => {
                cx.event(
                    "verify",
                    format!("{} in {} is intact ({what})", newest.name, place.describe()),
                    json!({ "place": place.name, "file": newest.name, "detail": detail }),
                )
                .await;
                let mut c = json!({
                    "place": place.name,
                    "storage": place.storage.describe(),
                    "file": newest.name,
                });
                if let (Some(m), Some(d)) = (c.as_object_mut(), detail.as_object()) {
                    m.extend(d.clone());
                }
                checked.push(c);
            }
            Err(e) => problem.push(format!("{} in {}: {e}", newest.name, place.describe())),
        }
        (file, (!problem.is_empty()).then(|| problem.join("; ")))
    }

    /// Size and sha256 as recorded, and readable (pg_restore, or the RDB
    /// magic and CRC64): what was found, for humans and as data.
    async fn intact(
        &self,
        st: &super::storage::Storage,
        name: &str,
        recorded: &std::collections::BTreeMap<String, (String, u64)>,
        scratch: &Path,
    ) -> Result<(String, serde_json::Value), String> {
        let Some((want_sha, want_size)) = recorded.get(name) else {
            return Err("no succeeded backup run recorded this copy (unknown checksum)".into());
        };
        let path = st.fetch(name, scratch).await?;
        let (sha, size) = super::storage::sha256_file(&path).await?;
        if size != *want_size {
            return Err(format!(
                "size {size} bytes, the backup recorded {want_size}"
            ));
        }
        if &sha != want_sha {
            return Err(format!(
                "sha256 {sha} differs from the recorded {want_sha}: the file changed"
            ));
        }
        if self.redis {
            let rdb = super::redis_backup::rdb::check(&path).await?;
            return Ok((
                rdb.describe(),
                json!({ "rdb_version": rdb.version, "crc64": rdb.crc64_hex() }),
            ));
        }
        if let Some(identity) = &self.kubernetes {
            return kubernetes_copy(&path, identity.as_ref()).await;
        }
        let entries = archive_entries(self.bin.as_deref(), &path).await?;
        Ok((format!("{entries} entries"), json!({ "entries": entries })))
    }
}

/// A `kubernetes.backup` copy read back: its objects counted (decrypted
/// with the identity when the copy is encrypted and one is configured).
#[cfg(feature = "kubernetes")]
async fn kubernetes_copy(
    path: &Path,
    identity: Option<&crate::secret::SecretRef>,
) -> Result<(String, serde_json::Value), String> {
    use super::kubernetes_backup::read_copy;
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    let key = identity
        .map(|i| i.resolve().map_err(|e| format!("encrypt.identity: {e}")))
        .transpose()?;
    match read_copy(&bytes, key.as_ref().map(|k| k.expose()))? {
        Some(n) => Ok((format!("{n} objects"), json!({ "objects": n }))),
        None => Ok((
            "age-encrypted (no identity configured to read it back)".into(),
            json!({ "encrypted": true }),
        )),
    }
}

/// Without the `kubernetes` feature a `kubernetes.backup` job cannot be
/// built, so no copy of one is ever verified.
#[cfg(not(feature = "kubernetes"))]
async fn kubernetes_copy(
    _path: &Path,
    _identity: Option<&crate::secret::SecretRef>,
) -> Result<(String, serde_json::Value), String> {
    Err(crate::features::Feature::Kubernetes.needed_by("a kubernetes.backup copy"))
}
