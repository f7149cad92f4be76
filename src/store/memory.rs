//! An in-memory store: for tests and for `medic test`'s simulated runs.
//! Same semantics as the SQLite store, nothing durable.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::*;

#[derive(Default)]
struct Inner {
    incidents: Vec<Incident>,
    timelines: Vec<(IncidentId, TimelineEntry)>,
    attempts: Vec<Attempt>,
    /// Each alert with when it resolved (for retention).
    alerts: Vec<(AlertRecord, Option<DateTime<Utc>>)>,
    job_runs: Vec<JobRun>,
    job_events: Vec<(JobRunId, TimelineEntry)>,
    term: Option<Term>,
    outbox: Vec<OutboxEntry>,
    refs: std::collections::BTreeMap<(IncidentId, String), serde_json::Value>,
    /// Claimed keys and until when they are kept.
    claims: std::collections::HashMap<String, DateTime<Utc>>,
    /// Shared observations by (scenario, symptom, instance, replica).
    observations: std::collections::BTreeMap<ObservationKey, SharedObservation>,
    /// Heartbeats by replica.
    replicas: std::collections::BTreeMap<String, DateTime<Utc>>,
    /// Target locks: target → (holder, term taken under, until).
    locks: std::collections::HashMap<String, (String, u64, DateTime<Utc>)>,
}

type ObservationKey = (String, String, String, String);

/// A store that lives in memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the data half-written
        // in a way later readers could misread, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl IncidentReads for MemoryStore {
    async fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        Ok(self
            .lock()
            .incidents
            .iter()
            .filter(|i| i.state.is_open())
            .cloned()
            .collect())
    }

    async fn incident(&self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        Ok(self.lock().incidents.iter().find(|i| i.id == id).cloned())
    }

    async fn recent_incidents(&self, limit: usize) -> Result<Vec<Incident>, StoreError> {
        Ok(self
            .lock()
            .incidents
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEntry>, StoreError> {
        let g = self.lock();
        if !g.incidents.iter().any(|i| i.id == id) {
            return Err(StoreError::NotFound(id));
        }
        Ok(entries_of(&g.timelines, id))
    }
}

#[async_trait::async_trait]
impl LedgerReads for MemoryStore {
    async fn attempts_since(
        &self,
        scenario: &str,
        step: &str,
        instance: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        Ok(self
            .lock()
            .attempts
            .iter()
            .filter(|a| {
                a.scenario == scenario
                    && a.step == step
                    && a.instance == instance
                    && a.started_at >= since
            })
            .cloned()
            .collect())
    }

    async fn scenario_attempts_since(
        &self,
        scenario: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        Ok(self
            .lock()
            .attempts
            .iter()
            .filter(|a| a.scenario == scenario && a.started_at >= since)
            .cloned()
            .collect())
    }

    async fn action_attempts_since(
        &self,
        action: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        Ok(self
            .lock()
            .attempts
            .iter()
            .filter(|a| a.action == action && a.started_at >= since)
            .cloned()
            .collect())
    }

    async fn attempts_in_flight(&self) -> Result<Vec<Attempt>, StoreError> {
        Ok(self
            .lock()
            .attempts
            .iter()
            .filter(|a| a.outcome.is_none())
            .cloned()
            .collect())
    }

    async fn incident_attempts(&self, id: IncidentId) -> Result<Vec<Attempt>, StoreError> {
        Ok(self
            .lock()
            .attempts
            .iter()
            .filter(|a| a.incident_id == id)
            .cloned()
            .collect())
    }

    async fn target_attempts_since(
        &self,
        target: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        Ok(self
            .lock()
            .attempts
            .iter()
            .filter(|a| a.started_at >= since && acts_on(&a.inputs, target))
            .cloned()
            .collect())
    }
}

#[async_trait::async_trait]
impl JobReads for MemoryStore {
    async fn job_runs(&self, job: &str, limit: usize) -> Result<Vec<JobRun>, StoreError> {
        let g = self.lock();
        let mut runs: Vec<JobRun> = g
            .job_runs
            .iter()
            .filter(|r| r.job == job)
            .cloned()
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse((r.started_at, r.id)));
        runs.truncate(limit);
        Ok(runs)
    }

    async fn job_events(&self, id: JobRunId) -> Result<Vec<TimelineEntry>, StoreError> {
        let g = self.lock();
        if !g.job_runs.iter().any(|r| r.id == id) {
            return Err(StoreError::JobRunNotFound(id));
        }
        Ok(entries_of(&g.job_events, id))
    }
}

#[async_trait::async_trait]
impl TermReads for MemoryStore {
    async fn current_term(&self) -> Result<Option<Term>, StoreError> {
        Ok(self.lock().term.clone())
    }
}

#[async_trait::async_trait]
impl AlertReads for MemoryStore {
    async fn firing_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.firing_alerts_matching(&Default::default()).await
    }

    /// A scan: the memory store serves tests and `medic test`, not load.
    async fn firing_alerts_matching(
        &self,
        matchers: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        let g = self.lock();
        let alerts: Vec<AlertRecord> = g.alerts.iter().map(|(a, _)| a.clone()).collect();
        let keep =
            |a: &AlertRecord| a.status == AlertStatus::Firing && labels_match(&a.labels, matchers);
        Ok(sorted(&alerts, keep, |a| {
            (a.starts_at, a.fingerprint.clone())
        }))
    }

    async fn firing_alert_count(&self) -> Result<usize, StoreError> {
        Ok(firing_count(&self.lock().alerts))
    }
}

#[async_trait::async_trait]
impl OutboxReads for MemoryStore {
    async fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let g = self.lock();
        let pending = |e: &OutboxEntry| e.state == OutboxState::Pending;
        Ok(sorted(&g.outbox, pending, |e| (e.due_at, e.id)))
    }

    async fn outbox_of(&self, id: IncidentId) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self
            .lock()
            .outbox
            .iter()
            .filter(|e| e.incident_id == id)
            .cloned()
            .collect())
    }

    async fn page_refs(
        &self,
        id: IncidentId,
    ) -> Result<std::collections::BTreeMap<String, serde_json::Value>, StoreError> {
        Ok(self
            .lock()
            .refs
            .iter()
            .filter(|((i, _), _)| *i == id)
            .map(|((_, n), v)| (n.clone(), v.clone()))
            .collect())
    }
}

#[async_trait::async_trait]
impl ObservationReads for MemoryStore {
    async fn observations(
        &self,
        scenario: &str,
        symptom: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<SharedObservation>, StoreError> {
        Ok(self
            .lock()
            .observations
            .values()
            .filter(|o| o.scenario == scenario && o.symptom == symptom && o.observed_at >= since)
            .cloned()
            .collect())
    }

    async fn replicas_since(&self, since: DateTime<Utc>) -> Result<Vec<ReplicaBeat>, StoreError> {
        Ok(self
            .lock()
            .replicas
            .iter()
            .filter(|(_, at)| **at >= since)
            .map(|(r, at)| ReplicaBeat {
                replica: r.clone(),
                seen_at: *at,
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn write(&self, fence: Option<u64>, write: Write) -> Result<Written, StoreError> {
        let mut g = self.lock();
        if let Some(term) = fence
            && let Some(newer) = g.term.as_ref().map(|t| t.term).filter(|&t| t > term)
        {
            return Err(StoreError::Fenced { term, newer });
        }
        apply(&mut g, write)
    }
}

/// The items that `keep`, by `key`.
fn sorted<T: Clone, K: Ord>(
    items: &[T],
    keep: impl Fn(&T) -> bool,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let mut v: Vec<T> = items.iter().filter(|i| keep(i)).cloned().collect();
    v.sort_by_key(key);
    v
}

/// The entries of one timeline (an incident's or a job run's), in order.
fn entries_of(all: &[(i64, TimelineEntry)], id: i64) -> Vec<TimelineEntry> {
    all.iter()
        .filter(|(owner, _)| *owner == id)
        .map(|(_, e)| e.clone())
        .collect()
}

fn apply(g: &mut Inner, write: Write) -> Result<Written, StoreError> {
    apply_write!(g, write)
}

fn open_incident_on(g: &mut Inner, new: NewIncident) -> Result<(Incident, bool), StoreError> {
    if let Some(i) = g
        .incidents
        .iter()
        .find(|i| i.state.is_open() && i.scenario == new.scenario && i.instance == new.instance)
    {
        return Ok((i.clone(), false));
    }
    let inc = Incident {
        id: g.incidents.len() as i64 + 1,
        scenario: new.scenario,
        instance: new.instance,
        state: IncidentState::Open,
        severity: new.severity,
        summary: new.summary,
        opened_at: new.at,
        updated_at: new.at,
        resolved_at: None,
        cause: None,
    };
    g.incidents.push(inc.clone());
    Ok((inc, true))
}

fn set_state_on(
    g: &mut Inner,
    id: IncidentId,
    state: IncidentState,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let inc = g
        .incidents
        .iter_mut()
        .find(|i| i.id == id)
        .ok_or(StoreError::NotFound(id))?;
    if inc.state == IncidentState::Resolved {
        // Resolution is final (as in the SQLite store).
        return if state == IncidentState::Resolved {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!("incident {id} is resolved")))
        };
    }
    inc.state = state;
    inc.updated_at = at;
    if state == IncidentState::Resolved {
        inc.resolved_at = Some(at);
    }
    Ok(())
}

fn set_cause_on(
    g: &mut Inner,
    id: IncidentId,
    cause: Option<IncidentId>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if let Some(c) = cause {
        if c == id {
            return Err(StoreError::Conflict(format!(
                "incident {id} cannot be its own cause"
            )));
        }
        if !g.incidents.iter().any(|i| i.id == c) {
            return Err(StoreError::NotFound(c));
        }
    }
    let inc = g
        .incidents
        .iter_mut()
        .find(|i| i.id == id)
        .ok_or(StoreError::NotFound(id))?;
    if inc.state == IncidentState::Resolved {
        return if inc.cause == cause {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!("incident {id} is resolved")))
        };
    }
    inc.cause = cause;
    inc.updated_at = at;
    Ok(())
}

fn lock_target_on(
    g: &mut Inner,
    target: String,
    holder: String,
    at: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let term = g.term.as_ref().map_or(0, |t| t.term);
    if let Some((h, t, u)) = g.locks.get(&target)
        && *h != holder
        && *u > at
        && *t >= term
    {
        return Ok(Some(h.clone()));
    }
    g.locks.insert(target, (holder, term, until));
    Ok(None)
}

fn unlock_target_on(g: &mut Inner, target: String, holder: String) -> Result<(), StoreError> {
    if g.locks.get(&target).is_some_and(|(h, _, _)| *h == holder) {
        g.locks.remove(&target);
    }
    Ok(())
}

fn append_on(g: &mut Inner, id: IncidentId, entry: TimelineEntry) -> Result<(), StoreError> {
    if !g.incidents.iter().any(|i| i.id == id) {
        return Err(StoreError::NotFound(id));
    }
    g.timelines.push((id, entry));
    Ok(())
}

fn begin_attempt_on(g: &mut Inner, new: NewAttempt) -> Result<AttemptId, StoreError> {
    if !g.incidents.iter().any(|i| i.id == new.incident_id) {
        return Err(StoreError::NotFound(new.incident_id));
    }
    if let Some(other) = g.attempts.iter().find(|a| a.key == new.key) {
        return Err(StoreError::Conflict(format!(
            "attempt key already used by attempt {}",
            other.id
        )));
    }
    let id = g.attempts.len() as i64 + 1;
    g.attempts.push(Attempt {
        id,
        incident_id: new.incident_id,
        scenario: new.scenario,
        instance: new.instance,
        step: new.step,
        step_index: new.step_index,
        action: new.action,
        key: new.key,
        started_at: new.started_at,
        ended_at: None,
        outcome: None,
        reason: String::new(),
        inputs: new.inputs,
    });
    Ok(id)
}

fn finish_attempt_on(
    g: &mut Inner,
    id: AttemptId,
    outcome: AttemptOutcome,
    reason: String,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let a = g
        .attempts
        .iter_mut()
        .find(|a| a.id == id)
        .ok_or(StoreError::AttemptNotFound(id))?;
    if let Some(prev) = a.outcome {
        // The ledger is an audit record: ended once, never rewritten.
        return if prev == outcome {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "attempt {id} already ended as {}",
                prev.as_str()
            )))
        };
    }
    a.outcome = Some(outcome);
    a.reason = reason;
    a.ended_at = Some(at);
    Ok(())
}

fn begin_job_run_on(g: &mut Inner, new: NewJobRun) -> Result<JobRunId, StoreError> {
    let id = g.job_runs.len() as i64 + 1;
    g.job_runs.push(JobRun {
        id,
        job: new.job,
        kind: new.kind,
        scheduled_for: new.scheduled_for,
        started_at: new.started_at,
        ended_at: None,
        outcome: None,
        summary: String::new(),
        data: serde_json::Value::Null,
    });
    Ok(id)
}

fn append_job_event_on(
    g: &mut Inner,
    id: JobRunId,
    entry: TimelineEntry,
) -> Result<(), StoreError> {
    if !g.job_runs.iter().any(|r| r.id == id) {
        return Err(StoreError::JobRunNotFound(id));
    }
    g.job_events.push((id, entry));
    Ok(())
}

fn finish_job_run_on(
    g: &mut Inner,
    id: JobRunId,
    outcome: JobOutcome,
    summary: String,
    data: serde_json::Value,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let run = g
        .job_runs
        .iter_mut()
        .find(|r| r.id == id)
        .ok_or(StoreError::JobRunNotFound(id))?;
    match run.outcome {
        None => {
            run.outcome = Some(outcome);
            run.ended_at = Some(at);
            run.summary = summary;
            run.data = data;
            Ok(())
        }
        Some(prev) if prev == outcome => Ok(()),
        Some(prev) => Err(StoreError::Conflict(format!(
            "job run {id} already ended as {}",
            prev.as_str()
        ))),
    }
}

fn claim_term_on(g: &mut Inner, holder: String, at: DateTime<Utc>) -> Result<Term, StoreError> {
    let term = Term {
        term: g.term.as_ref().map_or(1, |t| t.term + 1),
        holder,
        since: at,
    };
    g.term = Some(term.clone());
    Ok(term)
}

fn firing_count(alerts: &[(AlertRecord, Option<DateTime<Utc>>)]) -> usize {
    alerts
        .iter()
        .filter(|(a, _)| a.status == AlertStatus::Firing)
        .count()
}

/// Applied to a copy, kept only when within `max_firing`: all or none.
fn record_alerts_on(
    g: &mut Inner,
    alerts: &[AlertRecord],
    max_firing: Option<usize>,
) -> Result<(), StoreError> {
    let before = firing_count(&g.alerts);
    let mut rows = g.alerts.clone();
    for a in alerts {
        let known = rows
            .iter_mut()
            .find(|(b, _)| b.fingerprint == a.fingerprint && b.starts_at == a.starts_at);
        match known {
            // Exactly this firing ends; a known row never fires again.
            Some((b, resolved_at)) => {
                if a.status == AlertStatus::Resolved && b.status == AlertStatus::Firing {
                    b.status = AlertStatus::Resolved;
                    b.ends_at = a.ends_at;
                    *resolved_at = Some(a.received_at);
                }
            }
            None => {
                let resolved_at = (a.status == AlertStatus::Resolved).then_some(a.received_at);
                rows.push((a.clone(), resolved_at));
            }
        }
    }
    let after = firing_count(&rows);
    if let Some(max) = max_firing
        && after > before
        && after > max
    {
        return Err(StoreError::TooManyFiring { firing: after, max });
    }
    g.alerts = rows;
    Ok(())
}

fn prune_alerts_on(
    g: &mut Inner,
    resolved_before: DateTime<Utc>,
    max: usize,
) -> Result<usize, StoreError> {
    let mut n = 0;
    g.alerts.retain(|(_, resolved_at)| {
        let old = n < max && resolved_at.is_some_and(|t| t < resolved_before);
        n += usize::from(old);
        !old
    });
    Ok(n)
}

fn outbox_enqueue_on(g: &mut Inner, new: NewOutbox) -> Result<(OutboxEntry, bool), StoreError> {
    if !g.incidents.iter().any(|i| i.id == new.incident_id) {
        return Err(StoreError::NotFound(new.incident_id));
    }
    if let Some(e) = g.outbox.iter().find(|e| e.key == new.key) {
        return Ok((e.clone(), false));
    }
    let e = OutboxEntry {
        id: g.outbox.len() as i64 + 1,
        incident_id: new.incident_id,
        key: new.key,
        notifier: new.notifier,
        kind: new.kind,
        due_at: new.due_at,
        payload: new.payload,
        state: OutboxState::Pending,
        attempts: 0,
        detail: String::new(),
        done_at: None,
    };
    g.outbox.push(e.clone());
    Ok((e, true))
}

fn outbox_mark_on(g: &mut Inner, id: i64, mark: OutboxMark) -> Result<(), StoreError> {
    let e = g
        .outbox
        .iter_mut()
        .find(|e| e.id == id)
        .ok_or_else(|| StoreError::Conflict(format!("outbox entry {id} not found")))?;
    if e.state != OutboxState::Pending {
        return if e.state == mark.state {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "outbox entry {id} already {}",
                e.state.as_str()
            )))
        };
    }
    e.state = mark.state;
    e.attempts = mark.attempts;
    e.due_at = mark.due_at;
    e.detail = mark.detail;
    if mark.state != OutboxState::Pending {
        e.done_at = Some(mark.at);
    }
    Ok(())
}

fn claim_once_on(
    g: &mut Inner,
    key: String,
    at: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    g.claims.retain(|_, kept| *kept >= at);
    Ok(match g.claims.entry(key) {
        std::collections::hash_map::Entry::Occupied(_) => false,
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(until);
            true
        }
    })
}

fn observe_on(
    g: &mut Inner,
    beat: ReplicaBeat,
    observations: Vec<SharedObservation>,
) -> Result<(), StoreError> {
    let forget = beat.seen_at - OBSERVATION_RETENTION;
    g.observations.retain(|_, o| o.observed_at >= forget);
    g.replicas.retain(|_, at| *at >= forget);
    let seen = g.replicas.entry(beat.replica).or_insert(beat.seen_at);
    *seen = (*seen).max(beat.seen_at);
    for o in observations {
        let key = (
            o.scenario.clone(),
            o.symptom.clone(),
            o.instance.clone(),
            o.replica.clone(),
        );
        match g.observations.get(&key) {
            Some(prev) if prev.observed_at > o.observed_at => {}
            _ => {
                g.observations.insert(key, o);
            }
        }
    }
    Ok(())
}

fn set_page_ref_on(
    g: &mut Inner,
    id: IncidentId,
    notifier: String,
    reference: serde_json::Value,
) -> Result<(), StoreError> {
    if !g.incidents.iter().any(|i| i.id == id) {
        return Err(StoreError::NotFound(id));
    }
    g.refs.insert((id, notifier), reference);
    Ok(())
}
