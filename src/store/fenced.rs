//! [`Fenced`]: the store as one leadership term sees it.
//!
//! The leader's engine writes through a `Fenced` holding its term. Every
//! write that changes incidents, the ledger or starts a job run goes to
//! [`Store::write`] with that term, and the backend checks, atomically with
//! the write, that no newer term was claimed. A deposed leader (paused past
//! its lease, partitioned) thus cannot open an incident, start or finish an
//! attempt, write a timeline entry or start a job run once another replica
//! took over: its writes fail with [`StoreError::Fenced`]. Reads go straight
//! to the inner store ([`ReadThrough`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

    /// The action kind of attempt `id`, for its metric: remembered when
    /// begun through this term, else (begun by an earlier term and resumed)
    /// read from the ledger.
    async fn action_of(&self, id: AttemptId) -> String {
        let known = self
            .actions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        match known {
            Some(a) => a,
            None => self
                .inner
                .attempts_in_flight()
                .await
                .ok()
                .and_then(|v| v.into_iter().find(|a| a.id == id).map(|a| a.action))
                .unwrap_or_else(|| "unknown".into()),
        }
    }
}

/// Whether a write carries the term. Alertmanager intake is not an action
/// (any replica may receive a delivery); the paging outbox's dispatcher runs
/// per term and stops with it, so its writes are not fenced (yet); job
/// events and endings belong to a run the term already started; claiming a
/// term is how a term begins.
fn carries_term(write: &Write) -> bool {
    match write {
        Write::OpenIncident(_)
        | Write::SetState { .. }
        | Write::Append { .. }
        | Write::BeginAttempt(_)
        | Write::FinishAttempt { .. }
        // A deposed leader starts no job run (a backup per slot, not two).
        | Write::BeginJobRun(_)
        // A deposed leader neither links incidents nor takes a target.
        | Write::SetCause { .. }
        | Write::LockTarget { .. }
        | Write::UnlockTarget { .. } => true,
        Write::AppendJobEvent { .. }
        | Write::FinishJobRun { .. }
        | Write::ClaimTerm { .. }
        | Write::RecordAlerts { .. }
        | Write::PruneAlerts { .. }
        | Write::OutboxEnqueue(_)
        | Write::OutboxMark { .. }
        | Write::SetPageRef { .. }
        | Write::ClaimOnce { .. }
        // Every replica observes, leader or not.
        | Write::Observe { .. } => false,
    }
}

impl ReadThrough for Fenced {
    fn reads(&self) -> &dyn Store {
        &*self.inner
    }
}

#[async_trait::async_trait]
impl Store for Fenced {
    /// An explicit `fence` (a caller's own [`Store::fenced`]) passes through
    /// as given; otherwise a write that [carries the term](carries_term)
    /// carries this one.
    async fn write(&self, fence: Option<u64>, write: Write) -> Result<Written, StoreError> {
        let fence = fence.or_else(|| carries_term(&write).then_some(self.term));
        let begun = match &write {
            Write::BeginAttempt(new) => Some(new.action.clone()),
            _ => None,
        };
        let finished = match &write {
            Write::FinishAttempt { id, outcome, .. } => Some((self.action_of(*id).await, *outcome)),
            _ => None,
        };
        let r = self.inner.write(fence, write).await;
        match &r {
            Err(StoreError::Fenced { term, newer }) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                crate::metrics::fenced_write();
                tracing::warn!(term, newer, "write refused: fenced (a newer leader exists)");
            }
            Ok(Written::Attempt(id)) => {
                if let Some(action) = begun {
                    self.actions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(*id, action);
                }
            }
            Ok(_) => {
                if let Some((action, outcome)) = finished {
                    crate::metrics::action(&action, outcome.as_str());
                }
            }
            Err(_) => {}
        }
        r
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
}
