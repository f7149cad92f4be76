//! [`Fenced`]: the store as one leadership term sees it.
//!
//! The leader's engine writes through a `Fenced` holding its term. Every
//! write that changes incidents or the ledger goes to [`Store::fenced`],
//! where the backend checks, atomically with the write, that no newer term
//! was claimed. A deposed leader (paused past its lease, partitioned) thus
//! cannot open an incident, start or finish an attempt or write a timeline
//! entry once another replica took over: its writes fail with
//! [`StoreError::Fenced`]. Reads pass through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use super::*;

/// A store whose writes carry a leadership term (the fencing token).
pub struct Fenced {
    inner: Arc<dyn Store>,
    term: u64,
    /// Writes refused because a newer term exists.
    refused: AtomicU64,
    /// Action kind of each attempt begun through this term (for metrics).
    actions: std::sync::Mutex<std::collections::HashMap<AttemptId, String>>,
}

impl Fenced {
    /// `inner` as term `term` sees it.
    pub fn new(inner: Arc<dyn Store>, term: u64) -> Self {
        Fenced {
            inner,
            term,
            refused: AtomicU64::new(0),
            actions: Default::default(),
        }
    }

    /// The term every write carries.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// How many writes were refused as fenced.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let r = self.inner.fenced(self.term, write).await;
        if let Err(StoreError::Fenced { term, newer }) = &r {
            self.refused.fetch_add(1, Ordering::Relaxed);
            crate::metrics::fenced_write();
            tracing::warn!(term, newer, "write refused: fenced (a newer leader exists)");
        }
        r
    }
}

#[async_trait::async_trait]
impl Store for Fenced {
    async fn open_incident(&self, new: NewIncident) -> Result<(Incident, bool), StoreError> {
        self.write(Write::OpenIncident(new)).await?.incident()
    }

    async fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        self.inner.open_incidents().await
    }

    async fn incident(&self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        self.inner.incident(id).await
    }

    async fn recent_incidents(&self, limit: usize) -> Result<Vec<Incident>, StoreError> {
        self.inner.recent_incidents(limit).await
    }

    async fn set_state(
        &self,
        id: IncidentId,
        state: IncidentState,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(Write::SetState { id, state, at }).await?;
        Ok(())
    }

    async fn append(&self, id: IncidentId, entry: TimelineEntry) -> Result<(), StoreError> {
        self.write(Write::Append { id, entry }).await?;
        Ok(())
    }

    async fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEntry>, StoreError> {
        self.inner.timeline(id).await
    }

    async fn begin_attempt(&self, new: NewAttempt) -> Result<AttemptId, StoreError> {
        let action = new.action.clone();
        let id = self.write(Write::BeginAttempt(new)).await?.attempt()?;
        self.actions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, action);
        Ok(id)
    }

    async fn finish_attempt(
        &self,
        id: AttemptId,
        outcome: AttemptOutcome,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let known = self
            .actions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        // Begun by an earlier term (resumed): the action kind is in the ledger.
        let action = match known {
            Some(a) => a,
            None => self
                .inner
                .attempts_in_flight()
                .await
                .ok()
                .and_then(|v| v.into_iter().find(|a| a.id == id).map(|a| a.action))
                .unwrap_or_else(|| "unknown".into()),
        };
        self.write(Write::FinishAttempt {
            id,
            outcome,
            reason: reason.to_string(),
            at,
        })
        .await?;
        crate::metrics::action(&action, outcome.as_str());
        Ok(())
    }

    async fn attempts_since(
        &self,
        scenario: &str,
        step: &str,
        instance: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        self.inner
            .attempts_since(scenario, step, instance, since)
            .await
    }

    async fn action_attempts_since(
        &self,
        action: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        self.inner.action_attempts_since(action, since).await
    }

    async fn attempts_in_flight(&self) -> Result<Vec<Attempt>, StoreError> {
        self.inner.attempts_in_flight().await
    }

    async fn incident_attempts(&self, id: IncidentId) -> Result<Vec<Attempt>, StoreError> {
        self.inner.incident_attempts(id).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }

    /// A deposed leader starts no job run (a backup per slot, not two).
    /// Checked before the insert, not atomically with it: a job that slips
    /// through the gap writes a run record, never an incident or attempt.
    async fn begin_job_run(&self, new: NewJobRun) -> Result<JobRunId, StoreError> {
        if let Some(newer) = self
            .inner
            .current_term()
            .await?
            .map(|t| t.term)
            .filter(|&t| t > self.term)
        {
            self.refused.fetch_add(1, Ordering::Relaxed);
            crate::metrics::fenced_write();
            return Err(StoreError::Fenced {
                term: self.term,
                newer,
            });
        }
        self.inner.begin_job_run(new).await
    }

    async fn append_job_event(&self, id: JobRunId, entry: TimelineEntry) -> Result<(), StoreError> {
        self.inner.append_job_event(id, entry).await
    }

    async fn finish_job_run(
        &self,
        id: JobRunId,
        outcome: JobOutcome,
        summary: &str,
        data: serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner
            .finish_job_run(id, outcome, summary, data, at)
            .await
    }

    async fn job_runs(&self, job: &str, limit: usize) -> Result<Vec<JobRun>, StoreError> {
        self.inner.job_runs(job, limit).await
    }

    async fn job_events(&self, id: JobRunId) -> Result<Vec<TimelineEntry>, StoreError> {
        self.inner.job_events(id).await
    }

    /// Alert intake is not leadership work: every replica records what
    /// Alertmanager sends it.
    async fn record_alerts(&self, alerts: &[AlertRecord]) -> Result<(), StoreError> {
        self.inner.record_alerts(alerts).await
    }

    async fn firing_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.inner.firing_alerts().await
    }

    async fn claim_term(&self, holder: &str, at: DateTime<Utc>) -> Result<Term, StoreError> {
        self.inner.claim_term(holder, at).await
    }

    async fn current_term(&self) -> Result<Option<Term>, StoreError> {
        self.inner.current_term().await
    }

    async fn fenced(&self, term: u64, write: Write) -> Result<Written, StoreError> {
        self.inner.fenced(term, write).await
    }
}
