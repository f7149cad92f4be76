//! The embedded SQLite store.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::*;

/// A SQLite file, created on open. I/O runs off the async worker threads.
pub struct SqliteStore {}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let _ = path;
        todo!("sqlite store")
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn open_incident(&self, _new: NewIncident) -> Result<(Incident, bool), StoreError> {
        todo!()
    }
    async fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        todo!()
    }
    async fn incident(&self, _id: IncidentId) -> Result<Option<Incident>, StoreError> {
        todo!()
    }
    async fn recent_incidents(&self, _limit: usize) -> Result<Vec<Incident>, StoreError> {
        todo!()
    }
    async fn set_state(
        &self,
        _id: IncidentId,
        _state: IncidentState,
        _at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        todo!()
    }
    async fn append(&self, _id: IncidentId, _entry: TimelineEntry) -> Result<(), StoreError> {
        todo!()
    }
    async fn timeline(&self, _id: IncidentId) -> Result<Vec<TimelineEntry>, StoreError> {
        todo!()
    }
    async fn begin_attempt(&self, _new: NewAttempt) -> Result<AttemptId, StoreError> {
        todo!()
    }
    async fn finish_attempt(
        &self,
        _id: AttemptId,
        _outcome: AttemptOutcome,
        _reason: &str,
        _at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        todo!()
    }
    async fn attempts_since(
        &self,
        _scenario: &str,
        _step: &str,
        _instance: &str,
        _since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        todo!()
    }
    async fn incident_attempts(&self, _id: IncidentId) -> Result<Vec<Attempt>, StoreError> {
        todo!()
    }
    async fn flush(&self) -> Result<(), StoreError> {
        todo!()
    }
}
