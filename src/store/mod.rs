//! Durable state: incidents, their timelines and the action ledger.
//!
//! Everything medic decides is written here *before* it is acted on, so a
//! restart resumes open incidents (none duplicated, none forgotten) and every
//! limit (attempts per window, cooldowns) survives restarts: limits are
//! computed from the ledger, not kept in memory.
//!
//! Reads are small traits by area ([`IncidentReads`], [`LedgerReads`],
//! [`JobReads`], [`TermReads`], [`AlertReads`], [`OutboxReads`],
//! [`ObservationReads`]); [`Store`]
//! is their union plus one write path, [`Store::write`] of a [`Write`], with
//! convenience methods over it (`open_incident`, `append`, ...). Callers
//! `use crate::store::prelude::*` to have every read in scope. Backends:
//! in memory ([`memory::MemoryStore`]), embedded SQLite (the default,
//! [`sqlite::SqliteStore`]) and PostgreSQL ([`postgres::PostgresStore`]);
//! [`Fenced`] wraps the write path of any of them with a leadership term.
//! Implementations must never block the async runtime's worker threads.

/// Applies a [`Write`] with the calling backend's `*_on` functions (one per
/// variant, each taking the handle `$on` first): the one dispatch every
/// backend shares. `; .await` after the write for an async backend.
macro_rules! apply_write {
    ($on:expr, $write:expr $(; $($aw:tt)+)?) => {
        Ok(match $write {
            Write::OpenIncident(new) => {
                let (i, created) = open_incident_on($on, new) $($($aw)+)? ?;
                Written::Incident(i, created)
            }
            Write::SetState { id, state, at } => {
                set_state_on($on, id, state, at) $($($aw)+)? ?;
                Written::Done
            }
            Write::Append { id, entry } => {
                append_on($on, id, entry) $($($aw)+)? ?;
                Written::Done
            }
            Write::BeginAttempt(new) => Written::Attempt(begin_attempt_on($on, new) $($($aw)+)? ?),
            Write::FinishAttempt {
                id,
                outcome,
                reason,
                at,
            } => {
                finish_attempt_on($on, id, outcome, reason, at) $($($aw)+)? ?;
                Written::Done
            }
            Write::BeginJobRun(new) => Written::JobRun(begin_job_run_on($on, new) $($($aw)+)? ?),
            Write::AppendJobEvent { id, entry } => {
                append_job_event_on($on, id, entry) $($($aw)+)? ?;
                Written::Done
            }
            Write::FinishJobRun {
                id,
                outcome,
                summary,
                data,
                at,
            } => {
                finish_job_run_on($on, id, outcome, summary, data, at) $($($aw)+)? ?;
                Written::Done
            }
            Write::ClaimTerm { holder, at } => Written::Term(claim_term_on($on, holder, at) $($($aw)+)? ?),
            Write::RecordAlerts { alerts, max_firing } => {
                record_alerts_on($on, &alerts, max_firing) $($($aw)+)? ?;
                Written::Done
            }
            Write::PruneAlerts { resolved_before, max } => {
                Written::Pruned(prune_alerts_on($on, resolved_before, max) $($($aw)+)? ?)
            }
            Write::OutboxEnqueue(new) => {
                let (e, created) = outbox_enqueue_on($on, new) $($($aw)+)? ?;
                Written::Outbox(e, created)
            }
            Write::OutboxMark { id, mark } => {
                outbox_mark_on($on, id, mark) $($($aw)+)? ?;
                Written::Done
            }
            Write::SetPageRef {
                id,
                notifier,
                reference,
            } => {
                set_page_ref_on($on, id, notifier, reference) $($($aw)+)? ?;
                Written::Done
            }
            Write::ClaimOnce { key, at, until } => {
                Written::Claimed(claim_once_on($on, key, at, until) $($($aw)+)? ?)
            }
            Write::Observe { beat, observations } => {
                observe_on($on, beat, latest_per_key(observations)) $($($aw)+)? ?;
                Written::Done
            }
            Write::SetCause { id, cause, at } => {
                set_cause_on($on, id, cause, at) $($($aw)+)? ?;
                Written::Done
            }
            Write::LockTarget { target, holder, at, until } => {
                Written::Lock(lock_target_on($on, target, holder, at, until) $($($aw)+)? ?)
            }
            Write::UnlockTarget { target, holder } => {
                unlock_target_on($on, target, holder) $($($aw)+)? ?;
                Written::Done
            }
        })
    };
}

pub mod fenced;
pub mod memory;
mod open;
pub mod postgres;
pub mod sqlite;
pub mod tree;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use fenced::Fenced;
pub use memory::MemoryStore;
pub use open::{OpenError, open};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Primary key of an incident.
pub type IncidentId = i64;
/// Primary key of a ledger entry.
pub type AttemptId = i64;

/// Where an incident is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// Detected; the plan has not started (or waits for a guard).
    Open,
    /// The plan is running.
    Remediating,
    /// The plan is exhausted or refused: humans are paged.
    Escalated,
    /// A human has taken it.
    Acknowledged,
    /// Its symptoms cleared. Final.
    Resolved,
}

impl IncidentState {
    /// The name stored and shown (`open`, `remediating`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Remediating => "remediating",
            IncidentState::Escalated => "escalated",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
        }
    }

    /// Parses [`IncidentState::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => IncidentState::Open,
            "remediating" => IncidentState::Remediating,
            "escalated" => IncidentState::Escalated,
            "acknowledged" => IncidentState::Acknowledged,
            "resolved" => IncidentState::Resolved,
            _ => return None,
        })
    }

    /// Everything but `Resolved`.
    pub fn is_open(self) -> bool {
        self != IncidentState::Resolved
    }
}

/// One occurrence of a scenario on one instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Incident {
    pub id: IncidentId,
    /// The scenario's name (its rule file's `scenario:`).
    pub scenario: String,
    /// Which occurrence: empty for a scenario-wide incident, or a canonical
    /// label set for per-series symptoms.
    pub instance: String,
    pub state: IncidentState,
    /// The scenario's severity when the incident opened.
    pub severity: String,
    /// One line for humans.
    pub summary: String,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The incident this one waits on (a dependency's or a superseding
    /// scenario's): while it is set and that one is open, this one runs no
    /// step and pages no one. See [`Store::set_cause`].
    #[serde(default)]
    pub cause: Option<IncidentId>,
}

/// What opening an incident needs.
#[derive(Clone, Debug)]
pub struct NewIncident {
    pub scenario: String,
    pub instance: String,
    pub severity: String,
    pub summary: String,
    pub at: DateTime<Utc>,
}

/// One line of an incident's timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// A short, stable category: `symptom`, `state`, `step`, `action`,
    /// `verify`, `guard`, `page`, `note`.
    pub kind: String,
    /// What happened, for humans.
    pub message: String,
    /// The inputs that led to it (observations, parameters, outputs).
    pub data: serde_json::Value,
}

impl TimelineEntry {
    /// An entry without structured data.
    pub fn new(at: DateTime<Utc>, kind: &str, message: impl Into<String>) -> Self {
        TimelineEntry {
            at,
            kind: kind.to_string(),
            message: message.into(),
            data: serde_json::Value::Null,
        }
    }

    /// Attaches structured inputs.
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The action ran and its verification held.
    Succeeded,
    /// The action failed, or ran but its verification did not hold.
    Failed,
    /// The action did not finish within its timeout.
    TimedOut,
    /// A guard refused to run it (limit, cooldown, precondition).
    Refused,
    /// dry-run: reported, not executed.
    DryRun,
    /// Found in flight after a restart; its effect could not be verified.
    Abandoned,
}

impl AttemptOutcome {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Refused => "refused",
            AttemptOutcome::DryRun => "dry_run",
            AttemptOutcome::Abandoned => "abandoned",
        }
    }

    /// Parses [`AttemptOutcome::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "succeeded" => AttemptOutcome::Succeeded,
            "failed" => AttemptOutcome::Failed,
            "timed_out" => AttemptOutcome::TimedOut,
            "refused" => AttemptOutcome::Refused,
            "dry_run" => AttemptOutcome::DryRun,
            "abandoned" => AttemptOutcome::Abandoned,
            _ => return None,
        })
    }

    /// Whether this attempt used up budget (it really executed something).
    pub fn counts_against_limit(self) -> bool {
        matches!(
            self,
            AttemptOutcome::Succeeded
                | AttemptOutcome::Failed
                | AttemptOutcome::TimedOut
                | AttemptOutcome::Abandoned
        )
    }
}

/// A ledger entry about to start.
#[derive(Clone, Debug)]
pub struct NewAttempt {
    pub incident_id: IncidentId,
    pub scenario: String,
    pub instance: String,
    /// The step's name (limits are kept per scenario, step and instance).
    pub step: String,
    pub step_index: u32,
    /// The action kind, e.g. `exec`.
    pub action: String,
    /// Unique per attempt: `{incident}:{step_index}:{n}`. An attempt found
    /// in flight after a restart is verified, never blindly run again.
    pub key: String,
    pub started_at: DateTime<Utc>,
    /// The inputs the action ran with (secrets never included).
    pub inputs: serde_json::Value,
}

/// A ledger entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub id: AttemptId,
    pub incident_id: IncidentId,
    pub scenario: String,
    pub instance: String,
    pub step: String,
    pub step_index: u32,
    pub action: String,
    pub key: String,
    pub started_at: DateTime<Utc>,
    /// `None` while in flight.
    pub ended_at: Option<DateTime<Utc>>,
    /// `None` while in flight.
    pub outcome: Option<AttemptOutcome>,
    /// Why it ended so (exit status, refusal reason, verification result).
    pub reason: String,
    pub inputs: serde_json::Value,
}

/// Primary key of a scheduled job's run.
pub type JobRunId = i64;

/// How a scheduled job's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    /// It did its work and verified it.
    Succeeded,
    /// It failed (or its verification did not hold).
    Failed,
    /// Found unfinished at start-up (medic stopped while it ran).
    Abandoned,
}

impl JobOutcome {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::Abandoned => "abandoned",
        }
    }

    /// Parses [`JobOutcome::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "succeeded" => JobOutcome::Succeeded,
            "failed" => JobOutcome::Failed,
            "abandoned" => JobOutcome::Abandoned,
            _ => return None,
        })
    }
}

/// A job run about to start.
#[derive(Clone, Debug)]
pub struct NewJobRun {
    /// The job's name in config (`jobs:`).
    pub job: String,
    /// Its kind, e.g. `postgres.backup`.
    pub kind: String,
    /// The schedule slot it runs for (a late start-up run names the slot
    /// it catches up on).
    pub scheduled_for: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
}

/// One run of a scheduled job (`postgres.backup`, `backup.verify`, ...):
/// like an incident, it has a timeline ([`Store::job_events`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobRun {
    pub id: JobRunId,
    pub job: String,
    pub kind: String,
    pub scheduled_for: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    /// `None` while running.
    pub ended_at: Option<DateTime<Utc>>,
    /// `None` while running.
    pub outcome: Option<JobOutcome>,
    /// One line for humans.
    pub summary: String,
    /// What it produced (backup file, size, sha256, measured durations).
    pub data: serde_json::Value,
}

/// Whether an alert pushed by Alertmanager is firing or has resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    /// The name stored and shown (`firing`, `resolved`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }

    /// Parses [`AlertStatus::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "firing" => Some(AlertStatus::Firing),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

/// One alert as Alertmanager delivered it. `(fingerprint, starts_at)`
/// identifies one firing of one alert: a duplicate delivery (an HA pair
/// sends every group twice) writes nothing new.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Alertmanager's fingerprint of the label set (16 hex digits).
    pub fingerprint: String,
    pub starts_at: DateTime<Utc>,
    pub status: AlertStatus,
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// When it ended (resolved), or Alertmanager's expected end.
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: String,
    /// When medic first recorded it.
    pub received_at: DateTime<Utc>,
}

/// Where an outbox entry is: waiting (due or not), or done one way or another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting for `due_at` (or for a retry).
    Pending,
    /// Delivered (or, for a timer, fired).
    Sent,
    /// Given up on, with why in `detail`.
    Failed,
    /// No longer needed (a timer of an acknowledged or resolved incident).
    Cancelled,
}

impl OutboxState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
            OutboxState::Cancelled => "cancelled",
        }
    }

    /// Parses [`OutboxState::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => OutboxState::Pending,
            "sent" => OutboxState::Sent,
            "failed" => OutboxState::Failed,
            "cancelled" => OutboxState::Cancelled,
            _ => return None,
        })
    }
}

/// Something the pager will do later: an escalation timer, a page, a
/// notification. Written *before* it is sent (the outbox), so a restart
/// neither loses nor repeats it.
#[derive(Clone, Debug)]
pub struct NewOutbox {
    pub incident_id: IncidentId,
    /// Unique and deterministic (e.g. `7:page:e0:r0:l2:slack`): enqueueing
    /// the same key again is a no-op that returns the stored entry.
    pub key: String,
    /// The notifier that delivers it; empty for timers.
    pub notifier: String,
    /// `timer`, `status-timer`, `ack-timer`, `page`, `update`, `status`,
    /// `resolution`.
    pub kind: String,
    pub due_at: DateTime<Utc>,
    pub payload: serde_json::Value,
}

/// One outbox entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: i64,
    pub incident_id: IncidentId,
    pub key: String,
    pub notifier: String,
    pub kind: String,
    pub due_at: DateTime<Utc>,
    pub payload: serde_json::Value,
    pub state: OutboxState,
    /// Delivery attempts started. Above 0, an earlier attempt may have
    /// reached the receiver before a crash: notifiers look before re-posting.
    pub attempts: u32,
    /// The last error, or what delivery returned.
    pub detail: String,
    /// When it left `Pending`.
    pub done_at: Option<DateTime<Utc>>,
}

/// A change to an outbox entry.
#[derive(Clone, Debug)]
pub struct OutboxMark {
    pub state: OutboxState,
    pub attempts: u32,
    /// The next try, for an entry left `Pending`.
    pub due_at: DateTime<Utc>,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// One replica's latest observation of one symptom instance, shared
/// through the store so that the leader can count how many observers see
/// a symptom failing before it acts (the quorum, see
/// `crate::engine::quorum`). Kept per (scenario, symptom, instance,
/// replica): a newer observation replaces the older one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedObservation {
    /// The observing replica's identity ([`crate::lead::identity`]).
    pub replica: String,
    pub scenario: String,
    pub symptom: String,
    /// The instance (a labels key, `""` for the whole target), or
    /// [`RUN_MARKER`] for a per-series check's run as a whole.
    pub instance: String,
    /// The outcome's kind: `ok`, `failing`, `unknown` (or `unreachable`).
    pub outcome: String,
    pub detail: String,
    /// When the check ran, on the observer's clock.
    pub observed_at: DateTime<Utc>,
}

/// The instance under which a per-series check records its run as a
/// whole: an instance of that replica is failing only if its row is as
/// new as this one (it was in the latest run); a series gone from the
/// result is ok without a row of its own.
pub const RUN_MARKER: &str = "*";

/// A replica's heartbeat: it wrote its observations (or nothing new) at
/// `seen_at`. What "live replicas" are counted from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaBeat {
    pub replica: String,
    pub seen_at: DateTime<Utc>,
}

/// How long observations and heartbeats are kept: rows older than this
/// (a replica long gone) are deleted by the next [`Write::Observe`].
pub const OBSERVATION_RETENTION: chrono::Duration = chrono::Duration::hours(1);

/// `observations` with one row per key (the newest; the last of equals).
pub(crate) fn latest_per_key(observations: Vec<SharedObservation>) -> Vec<SharedObservation> {
    let mut latest: std::collections::BTreeMap<
        (String, String, String, String),
        SharedObservation,
    > = std::collections::BTreeMap::new();
    for o in observations {
        let key = (
            o.scenario.clone(),
            o.symptom.clone(),
            o.instance.clone(),
            o.replica.clone(),
        );
        match latest.get(&key) {
            Some(prev) if prev.observed_at > o.observed_at => {}
            _ => {
                latest.insert(key, o);
            }
        }
    }
    latest.into_values().collect()
}

/// Store failures. The variant names double as metric labels.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store backend: {0}")]
    Backend(String),
    #[error("incident {0} not found")]
    NotFound(IncidentId),
    #[error("corrupt store row: {0}")]
    Corrupt(String),
    /// The request contradicts what is stored: a resolved incident is
    /// final, an attempt key is used once, an attempt ends once.
    #[error("store conflict: {0}")]
    Conflict(String),
    #[error("attempt {0} not found")]
    AttemptNotFound(AttemptId),
    #[error("job run {0} not found")]
    JobRunNotFound(JobRunId),
    /// A write of leadership term `term` was refused: term `newer` was
    /// claimed since (this replica was deposed; it must stop acting).
    #[error("fenced: term {term} was deposed by term {newer}")]
    Fenced { term: u64, newer: u64 },
    /// A delivery would take the firing alerts above the cap: nothing of
    /// it was recorded.
    #[error(
        "too many firing alerts: recording this delivery would make {firing}, over the cap of {max} (alerts.max_firing)"
    )]
    TooManyFiring { firing: usize, max: usize },
}

/// A change to the store: the one way to write. Every backend applies it in
/// [`Store::write`]; [`Fenced`] checks it against the leadership term.
#[derive(Clone, Debug)]
pub enum Write {
    /// [`Store::open_incident`].
    OpenIncident(NewIncident),
    /// [`Store::set_state`].
    SetState {
        id: IncidentId,
        state: IncidentState,
        at: DateTime<Utc>,
    },
    /// [`Store::append`].
    Append {
        id: IncidentId,
        entry: TimelineEntry,
    },
    /// [`Store::begin_attempt`].
    BeginAttempt(NewAttempt),
    /// [`Store::finish_attempt`].
    FinishAttempt {
        id: AttemptId,
        outcome: AttemptOutcome,
        reason: String,
        at: DateTime<Utc>,
    },
    /// [`Store::begin_job_run`].
    BeginJobRun(NewJobRun),
    /// [`Store::append_job_event`].
    AppendJobEvent { id: JobRunId, entry: TimelineEntry },
    /// [`Store::finish_job_run`].
    FinishJobRun {
        id: JobRunId,
        outcome: JobOutcome,
        summary: String,
        data: serde_json::Value,
        at: DateTime<Utc>,
    },
    /// [`Store::claim_term`].
    ClaimTerm { holder: String, at: DateTime<Utc> },
    /// [`Store::record_alerts`]; with `max_firing`, refused whole
    /// ([`StoreError::TooManyFiring`]) when it would add firing alerts
    /// beyond that many.
    RecordAlerts {
        alerts: Vec<AlertRecord>,
        max_firing: Option<usize>,
    },
    /// [`Store::prune_alerts`].
    PruneAlerts {
        resolved_before: DateTime<Utc>,
        max: usize,
    },
    /// [`Store::outbox_enqueue`].
    OutboxEnqueue(NewOutbox),
    /// [`Store::outbox_mark`].
    OutboxMark { id: i64, mark: OutboxMark },
    /// [`Store::set_page_ref`].
    SetPageRef {
        id: IncidentId,
        notifier: String,
        reference: serde_json::Value,
    },
    /// [`Store::claim_once`].
    ClaimOnce {
        key: String,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// [`Store::observe`].
    Observe {
        beat: ReplicaBeat,
        observations: Vec<SharedObservation>,
    },
    /// [`Store::set_cause`].
    SetCause {
        id: IncidentId,
        cause: Option<IncidentId>,
        at: DateTime<Utc>,
    },
    /// [`Store::lock_target`].
    LockTarget {
        target: String,
        holder: String,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// [`Store::unlock_target`].
    UnlockTarget { target: String, holder: String },
}

/// What a [`Write`] returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Written {
    /// From [`Write::OpenIncident`]: the incident, and whether it was created.
    Incident(Incident, bool),
    /// From [`Write::BeginAttempt`].
    Attempt(AttemptId),
    /// From [`Write::BeginJobRun`].
    JobRun(JobRunId),
    /// From [`Write::ClaimTerm`].
    Term(Term),
    /// From [`Write::OutboxEnqueue`]: the entry, and whether it was created.
    Outbox(OutboxEntry, bool),
    /// From [`Write::ClaimOnce`]: whether this was the first claim.
    Claimed(bool),
    /// From [`Write::PruneAlerts`]: how many alerts were deleted.
    Pruned(usize),
    /// From [`Write::LockTarget`]: `None` when the lock is now the
    /// caller's, else who holds it.
    Lock(Option<String>),
    /// From the other writes.
    Done,
}

impl Written {
    /// The result of [`Write::OpenIncident`].
    pub fn incident(self) -> Result<(Incident, bool), StoreError> {
        match self {
            Written::Incident(i, created) => Ok((i, created)),
            other => Err(other.unexpected("an incident")),
        }
    }

    /// The result of [`Write::BeginAttempt`].
    pub fn attempt(self) -> Result<AttemptId, StoreError> {
        match self {
            Written::Attempt(id) => Ok(id),
            other => Err(other.unexpected("an attempt")),
        }
    }

    /// The result of [`Write::BeginJobRun`].
    pub fn job_run(self) -> Result<JobRunId, StoreError> {
        match self {
            Written::JobRun(id) => Ok(id),
            other => Err(other.unexpected("a job run")),
        }
    }

    /// The result of [`Write::ClaimTerm`].
    pub fn term(self) -> Result<Term, StoreError> {
        match self {
            Written::Term(t) => Ok(t),
            other => Err(other.unexpected("a term")),
        }
    }

    /// The result of [`Write::OutboxEnqueue`].
    pub fn outbox(self) -> Result<(OutboxEntry, bool), StoreError> {
        match self {
            Written::Outbox(e, created) => Ok((e, created)),
            other => Err(other.unexpected("an outbox entry")),
        }
    }

    /// The result of [`Write::ClaimOnce`].
    pub fn claimed(self) -> Result<bool, StoreError> {
        match self {
            Written::Claimed(first) => Ok(first),
            other => Err(other.unexpected("a claim")),
        }
    }

    /// The result of [`Write::LockTarget`].
    pub fn lock(self) -> Result<Option<String>, StoreError> {
        match self {
            Written::Lock(held_by) => Ok(held_by),
            other => Err(other.unexpected("a lock")),
        }
    }

    fn unexpected(self, expected: &str) -> StoreError {
        StoreError::Backend(format!("expected {expected}, got {self:?}"))
    }
}

/// A row that ends once (an audit record): an attempt or a job run.
#[derive(Clone, Copy)]
enum EndsOnce {
    Attempt,
    JobRun,
}

impl EndsOnce {
    /// Its table (PostgreSQL prefixes `medic_`).
    fn table(self) -> &'static str {
        match self {
            EndsOnce::Attempt => "attempts",
            EndsOnce::JobRun => "job_runs",
        }
    }

    /// The operation that reads its stored outcome (for error messages).
    fn read_op(self) -> &'static str {
        match self {
            EndsOnce::Attempt => "read attempt",
            EndsOnce::JobRun => "read job run",
        }
    }

    /// Ending row `id` again, given its stored outcome (`None`: no such
    /// row): the same outcome is a no-op (a retry after a lost reply),
    /// another is [`StoreError::Conflict`] (`quote` shows the stored one).
    fn again(
        self,
        id: i64,
        previous: Option<Option<String>>,
        outcome: &str,
        quote: impl FnOnce(&str) -> String,
    ) -> Result<(), StoreError> {
        let (what, missing) = match self {
            EndsOnce::Attempt => ("attempt", StoreError::AttemptNotFound(id)),
            EndsOnce::JobRun => ("job run", StoreError::JobRunNotFound(id)),
        };
        match previous {
            None => Err(missing),
            Some(Some(prev)) if prev == outcome => Ok(()),
            Some(prev) => Err(StoreError::Conflict(format!(
                "{what} {id} already ended as {}",
                quote(prev.as_deref().unwrap_or("(none)"))
            ))),
        }
    }
}

/// A claimed leadership term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    /// Strictly increasing across claims: the fencing token.
    pub term: u64,
    /// Who claimed it (a replica's identity).
    pub holder: String,
    pub since: DateTime<Utc>,
}

/// Callers import this once (`use crate::store::prelude::*`): [`Store`] and
/// every read trait, whose methods need their trait in scope.
pub mod prelude {
    pub use super::{
        AlertReads, IncidentReads, JobReads, LedgerReads, ObservationReads, OutboxReads, Store,
        TermReads,
    };
}

/// Reads of the observations replicas share (see [`SharedObservation`]).
#[async_trait::async_trait]
pub trait ObservationReads: Send + Sync {
    /// Every replica's latest observation of every instance of one
    /// symptom, observed at or after `since`, by instance then replica.
    async fn observations(
        &self,
        scenario: &str,
        symptom: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<SharedObservation>, StoreError>;

    /// Every replica whose heartbeat is at or after `since`, by identity.
    async fn replicas_since(&self, since: DateTime<Utc>) -> Result<Vec<ReplicaBeat>, StoreError>;
}

/// Timeline entries found by position (per kind, in any order): in the
/// order written, only the newest `last` when given.
pub(crate) fn newest_in_order(
    mut found: Vec<(i64, TimelineEntry)>,
    last: Option<usize>,
) -> Vec<TimelineEntry> {
    found.sort_by_key(|(seq, _)| *seq);
    if let Some(n) = last {
        found.drain(..found.len().saturating_sub(n));
    }
    found.into_iter().map(|(_, e)| e).collect()
}

/// Reads of incidents and their timelines.
#[async_trait::async_trait]
pub trait IncidentReads: Send + Sync {
    /// Every incident not yet resolved, oldest first.
    async fn open_incidents(&self) -> Result<Vec<Incident>, StoreError>;

    /// One incident.
    async fn incident(&self, id: IncidentId) -> Result<Option<Incident>, StoreError>;

    /// The newest `limit` incidents, newest first.
    async fn recent_incidents(&self, limit: usize) -> Result<Vec<Incident>, StoreError>;

    /// The whole timeline, in the order written.
    async fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEntry>, StoreError>;

    /// The timeline's entries of these `kinds` only, in the order written;
    /// with `last`, only the newest that many of them. Readers that look
    /// for decisions, pages or steps use this: a long-open incident's
    /// timeline is mostly symptom transitions, and it is never cut (the
    /// full history stays in the store).
    async fn timeline_kinds(
        &self,
        id: IncidentId,
        kinds: &[&str],
        last: Option<usize>,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        let found = self
            .timeline(id)
            .await?
            .into_iter()
            .enumerate()
            .filter(|(_, e)| kinds.contains(&e.kind.as_str()))
            .map(|(i, e)| (i as i64, e))
            .collect();
        Ok(newest_in_order(found, last))
    }

    /// How many entries the timeline holds (the next entry's position).
    async fn timeline_len(&self, id: IncidentId) -> Result<usize, StoreError> {
        Ok(self.timeline(id).await?.len())
    }

    /// At most `limit` entries from position `from` on (0 is the first
    /// entry written), in the order written: a page of a long timeline,
    /// or what was written since a position (a notice's thread).
    async fn timeline_range(
        &self,
        id: IncidentId,
        from: usize,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        Ok(self
            .timeline(id)
            .await?
            .into_iter()
            .skip(from)
            .take(limit)
            .collect())
    }
}

/// Reads of the action ledger (the basis of limits, cooldowns and budgets).
#[async_trait::async_trait]
pub trait LedgerReads: Send + Sync {
    /// Attempts of one step on one instance started at or after `since`,
    /// oldest first, across incidents (the basis of attempt limits and
    /// cooldowns).
    async fn attempts_since(
        &self,
        scenario: &str,
        step: &str,
        instance: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError>;

    /// Attempts of one scenario (every step, every instance) started at or
    /// after `since`, oldest first: the basis of the scenario-wide limit and
    /// the blast radius over time.
    async fn scenario_attempts_since(
        &self,
        scenario: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError>;

    /// Attempts of one action kind (e.g. `postgres.promote-replica`)
    /// started at or after `since`, oldest first, across scenarios: the basis
    /// of guards that span scenarios (one failover per cluster per cooldown).
    async fn action_attempts_since(
        &self,
        action: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError>;

    /// Every attempt still in flight (no outcome yet), oldest first: the
    /// basis of "how many incidents of a scenario act at once".
    async fn attempts_in_flight(&self) -> Result<Vec<Attempt>, StoreError>;

    /// Every attempt of one incident, oldest first.
    async fn incident_attempts(&self, id: IncidentId) -> Result<Vec<Attempt>, StoreError>;

    /// Attempts started at or after `since` whose inputs name `target`
    /// among their `targets`, oldest first, across scenarios: the basis of
    /// a target's own budget (how often it is changed, whoever asks).
    async fn target_attempts_since(
        &self,
        target: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError>;
}

/// Reads of scheduled jobs' runs.
#[async_trait::async_trait]
pub trait JobReads: Send + Sync {
    /// The newest `limit` runs of one job, newest first.
    async fn job_runs(&self, job: &str, limit: usize) -> Result<Vec<JobRun>, StoreError>;

    /// A job run's timeline, in the order written.
    async fn job_events(&self, id: JobRunId) -> Result<Vec<TimelineEntry>, StoreError>;
}

/// Reads of leadership.
#[async_trait::async_trait]
pub trait TermReads: Send + Sync {
    /// The newest claimed term, if any.
    async fn current_term(&self) -> Result<Option<Term>, StoreError>;
}

/// Reads of the alerts Alertmanager pushed.
#[async_trait::async_trait]
pub trait AlertReads: Send + Sync {
    /// Every alert firing now (recorded firing, not yet resolved), oldest
    /// first.
    async fn firing_alerts(&self) -> Result<Vec<AlertRecord>, StoreError>;

    /// The firing alerts whose labels include every `matchers` pair,
    /// oldest first. Indexed: it reads the alerts one matcher selects, not
    /// every firing alert (an `alert` check runs this on every tick).
    async fn firing_alerts_matching(
        &self,
        matchers: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<AlertRecord>, StoreError>;

    /// How many alerts are firing now.
    async fn firing_alert_count(&self) -> Result<usize, StoreError>;
}

/// The matcher an index lookup starts from: `alertname` when there is one
/// (the most selective label Alertmanager sets), else the first.
pub fn lead_matcher(
    matchers: &std::collections::BTreeMap<String, String>,
) -> Option<(&String, &String)> {
    matchers
        .get_key_value("alertname")
        .or_else(|| matchers.iter().next())
}

/// Whether `labels` include every `matchers` pair.
pub fn labels_match(
    labels: &std::collections::BTreeMap<String, String>,
    matchers: &std::collections::BTreeMap<String, String>,
) -> bool {
    matchers.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Reads of the paging outbox and page references.
#[async_trait::async_trait]
pub trait OutboxReads: Send + Sync {
    /// Every pending outbox entry, by `due_at` then id.
    async fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Every outbox entry of one incident, in the order enqueued.
    async fn outbox_of(&self, id: IncidentId) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Every stored page reference of one incident, by notifier.
    async fn page_refs(
        &self,
        id: IncidentId,
    ) -> Result<std::collections::BTreeMap<String, serde_json::Value>, StoreError>;
}

/// Durable state: every read trait, one write path ([`Store::write`]) and
/// convenience methods over it. Every method is async and must not block
/// the runtime.
#[async_trait::async_trait]
pub trait Store:
    IncidentReads + LedgerReads + JobReads + TermReads + AlertReads + OutboxReads + ObservationReads
{
    /// Applies `write`, durably before it returns. With `fence: Some(term)`,
    /// only if no term newer than `term` was claimed, checked atomically
    /// with the write ([`StoreError::Fenced`] otherwise).
    async fn write(&self, fence: Option<u64>, write: Write) -> Result<Written, StoreError>;

    /// Flushes anything buffered; called on shutdown.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Applies `write` only if no term newer than `term` was claimed,
    /// atomically ([`StoreError::Fenced`] otherwise).
    async fn fenced(&self, term: u64, write: Write) -> Result<Written, StoreError> {
        self.write(Some(term), write).await
    }

    /// Opens an incident for `(scenario, instance)`, or returns the one
    /// already open (never two at once). The bool is true if it was created.
    async fn open_incident(&self, new: NewIncident) -> Result<(Incident, bool), StoreError> {
        self.write(None, Write::OpenIncident(new)).await?.incident()
    }

    /// Moves an incident to `state` (setting `resolved_at` on `Resolved`).
    /// Resolving is final: resolving again is a no-op that keeps the first
    /// `resolved_at`; any other state on a resolved incident is
    /// [`StoreError::Conflict`]. An unknown id is [`StoreError::NotFound`].
    async fn set_state(
        &self,
        id: IncidentId,
        state: IncidentState,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(None, Write::SetState { id, state, at })
            .await
            .map(drop)
    }

    /// Appends one timeline entry.
    async fn append(&self, id: IncidentId, entry: TimelineEntry) -> Result<(), StoreError> {
        self.write(None, Write::Append { id, entry })
            .await
            .map(drop)
    }

    /// Records an attempt as started; returns its id.
    async fn begin_attempt(&self, new: NewAttempt) -> Result<AttemptId, StoreError> {
        self.write(None, Write::BeginAttempt(new)).await?.attempt()
    }

    /// Records how an attempt ended, once. Finishing it again with the same
    /// outcome is a no-op (a retry after a lost reply); a different outcome
    /// is [`StoreError::Conflict`]: the ledger is an audit record.
    async fn finish_attempt(
        &self,
        id: AttemptId,
        outcome: AttemptOutcome,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let reason = reason.to_string();
        let write = Write::FinishAttempt {
            id,
            outcome,
            reason,
            at,
        };
        self.write(None, write).await.map(drop)
    }

    /// Records a scheduled job's run as started; returns its id.
    async fn begin_job_run(&self, new: NewJobRun) -> Result<JobRunId, StoreError> {
        self.write(None, Write::BeginJobRun(new)).await?.job_run()
    }

    /// Appends one entry to a job run's timeline.
    async fn append_job_event(&self, id: JobRunId, entry: TimelineEntry) -> Result<(), StoreError> {
        self.write(None, Write::AppendJobEvent { id, entry })
            .await
            .map(drop)
    }

    /// Records how a job run ended, once (again with the same outcome is a
    /// no-op; another outcome is [`StoreError::Conflict`]).
    async fn finish_job_run(
        &self,
        id: JobRunId,
        outcome: JobOutcome,
        summary: &str,
        data: serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let summary = summary.to_string();
        let write = Write::FinishJobRun {
            id,
            outcome,
            summary,
            data,
            at,
        };
        self.write(None, write).await.map(drop)
    }

    /// Claims the next leadership term for `holder`: greater than every term claimed before.
    async fn claim_term(&self, holder: &str, at: DateTime<Utc>) -> Result<Term, StoreError> {
        let holder = holder.to_string();
        self.write(None, Write::ClaimTerm { holder, at })
            .await?
            .term()
    }

    /// Records Alertmanager alerts, all or none, durably before it returns.
    /// A known `(fingerprint, starts_at)` is not recorded twice. A resolved
    /// alert ends exactly the firing with its fingerprint *and* `startsAt`,
    /// nothing else (a forged resolution with another `startsAt` ends
    /// nothing), and a resolved firing never fires again (a late duplicate
    /// cannot revive it).
    async fn record_alerts(&self, alerts: &[AlertRecord]) -> Result<(), StoreError> {
        self.record_alerts_capped(alerts, None).await
    }

    /// [`Store::record_alerts`], refused whole with
    /// [`StoreError::TooManyFiring`] when it would raise the number of
    /// firing alerts above `max_firing` (a delivery that adds no firing
    /// alert, such as resolutions or a repeat, always passes).
    async fn record_alerts_capped(
        &self,
        alerts: &[AlertRecord],
        max_firing: Option<usize>,
    ) -> Result<(), StoreError> {
        let write = Write::RecordAlerts {
            alerts: alerts.to_vec(),
            max_firing,
        };
        self.write(None, write).await.map(drop)
    }

    /// Deletes up to `max` resolved alerts that resolved before
    /// `resolved_before` (retention); returns how many went.
    async fn prune_alerts(
        &self,
        resolved_before: DateTime<Utc>,
        max: usize,
    ) -> Result<usize, StoreError> {
        let write = Write::PruneAlerts {
            resolved_before,
            max,
        };
        match self.write(None, write).await? {
            Written::Pruned(n) => Ok(n),
            other => Err(other.unexpected("a pruned count")),
        }
    }

    /// Enqueues an outbox entry, or returns the one with the same key (true
    /// when created). An unknown incident is [`StoreError::NotFound`].
    async fn outbox_enqueue(&self, new: NewOutbox) -> Result<(OutboxEntry, bool), StoreError> {
        self.write(None, Write::OutboxEnqueue(new)).await?.outbox()
    }

    /// Updates a pending entry. A done entry changes no more: marking it
    /// again with its state is a no-op, with another is [`StoreError::Conflict`].
    async fn outbox_mark(&self, id: i64, mark: OutboxMark) -> Result<(), StoreError> {
        self.write(None, Write::OutboxMark { id, mark })
            .await
            .map(drop)
    }

    /// Stores what a notifier needs to find its message again (a Slack `ts`).
    async fn set_page_ref(
        &self,
        id: IncidentId,
        notifier: &str,
        reference: serde_json::Value,
    ) -> Result<(), StoreError> {
        let notifier = notifier.to_string();
        let write = Write::SetPageRef {
            id,
            notifier,
            reference,
        };
        self.write(None, write).await.map(drop)
    }

    /// Claims `key` once: true the first time, false while an earlier
    /// claim is kept (until its `until`). Claims kept until before `at`
    /// are forgotten first. The Slack interaction replay cache: a
    /// captured click replays neither after a restart nor on another
    /// replica sharing the store.
    async fn claim_once(
        &self,
        key: &str,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let key = key.to_string();
        self.write(None, Write::ClaimOnce { key, at, until })
            .await?
            .claimed()
    }

    /// Records this replica's heartbeat and its latest observations (each
    /// replacing the replica's older one of the same symptom instance; an
    /// older one never replaces a newer), and forgets rows older than
    /// [`OBSERVATION_RETENTION`] before the heartbeat. Any replica writes
    /// its own, leader or not: never fenced.
    async fn observe(
        &self,
        beat: ReplicaBeat,
        observations: Vec<SharedObservation>,
    ) -> Result<(), StoreError> {
        self.write(None, Write::Observe { beat, observations })
            .await
            .map(drop)
    }

    /// Links incident `id` to the incident it waits on (`None` unlinks).
    /// An incident cannot be its own cause, and a resolved one keeps its
    /// link as it was ([`StoreError::Conflict`] otherwise).
    async fn set_cause(
        &self,
        id: IncidentId,
        cause: Option<IncidentId>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(None, Write::SetCause { id, cause, at })
            .await
            .map(drop)
    }

    /// Takes the lock of `target` for `holder` until `until`: `None` when
    /// it is now the caller's (free, expired, already `holder`'s, or taken
    /// under a leadership term older than the newest one, whose holder
    /// lost its lease), else `Some(holder)` of whoever has it. One step at
    /// a time acts on a target, across scenarios.
    async fn lock_target(
        &self,
        target: &str,
        holder: &str,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let write = Write::LockTarget {
            target: target.to_string(),
            holder: holder.to_string(),
            at,
            until,
        };
        self.write(None, write).await?.lock()
    }

    /// Releases `holder`'s lock of `target` (a no-op when another holds it
    /// or nobody does).
    async fn unlock_target(&self, target: &str, holder: &str) -> Result<(), StoreError> {
        let write = Write::UnlockTarget {
            target: target.to_string(),
            holder: holder.to_string(),
        };
        self.write(None, write).await.map(drop)
    }
}

/// Whether an attempt's inputs name `target` among their `targets` (how
/// the ledger records what an attempt acted on).
pub fn acts_on(inputs: &serde_json::Value, target: &str) -> bool {
    inputs["targets"]
        .as_array()
        .is_some_and(|a| a.iter().any(|t| t.as_str() == Some(target)))
}

/// A store that changes only the write path of another: every read goes
/// straight to [`ReadThrough::reads`] (so a wrapper such as [`Fenced`]
/// implements [`Store::write`] and nothing else).
pub trait ReadThrough: Send + Sync {
    /// The store every read goes to.
    fn reads(&self) -> &dyn Store;
}

#[async_trait::async_trait]
impl<T: ReadThrough> IncidentReads for T {
    async fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        self.reads().open_incidents().await
    }
    async fn incident(&self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        self.reads().incident(id).await
    }
    async fn recent_incidents(&self, limit: usize) -> Result<Vec<Incident>, StoreError> {
        self.reads().recent_incidents(limit).await
    }
    async fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEntry>, StoreError> {
        self.reads().timeline(id).await
    }
    async fn timeline_kinds(
        &self,
        id: IncidentId,
        kinds: &[&str],
        last: Option<usize>,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        self.reads().timeline_kinds(id, kinds, last).await
    }
    async fn timeline_len(&self, id: IncidentId) -> Result<usize, StoreError> {
        self.reads().timeline_len(id).await
    }
    async fn timeline_range(
        &self,
        id: IncidentId,
        from: usize,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        self.reads().timeline_range(id, from, limit).await
    }
}

#[async_trait::async_trait]
impl<T: ReadThrough> LedgerReads for T {
    async fn attempts_since(
        &self,
        scenario: &str,
        step: &str,
        instance: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        let r = self.reads();
        r.attempts_since(scenario, step, instance, since).await
    }
    async fn scenario_attempts_since(
        &self,
        scenario: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        self.reads().scenario_attempts_since(scenario, since).await
    }
    async fn action_attempts_since(
        &self,
        action: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        self.reads().action_attempts_since(action, since).await
    }
    async fn attempts_in_flight(&self) -> Result<Vec<Attempt>, StoreError> {
        self.reads().attempts_in_flight().await
    }
    async fn incident_attempts(&self, id: IncidentId) -> Result<Vec<Attempt>, StoreError> {
        self.reads().incident_attempts(id).await
    }
    async fn target_attempts_since(
        &self,
        target: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        self.reads().target_attempts_since(target, since).await
    }
}

#[async_trait::async_trait]
impl<T: ReadThrough> JobReads for T {
    async fn job_runs(&self, job: &str, limit: usize) -> Result<Vec<JobRun>, StoreError> {
        self.reads().job_runs(job, limit).await
    }
    async fn job_events(&self, id: JobRunId) -> Result<Vec<TimelineEntry>, StoreError> {
        self.reads().job_events(id).await
    }
}

#[async_trait::async_trait]
impl<T: ReadThrough> TermReads for T {
    async fn current_term(&self) -> Result<Option<Term>, StoreError> {
        self.reads().current_term().await
    }
}

#[async_trait::async_trait]
impl<T: ReadThrough> AlertReads for T {
    async fn firing_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.reads().firing_alerts().await
    }
    async fn firing_alerts_matching(
        &self,
        matchers: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        self.reads().firing_alerts_matching(matchers).await
    }
    async fn firing_alert_count(&self) -> Result<usize, StoreError> {
        self.reads().firing_alert_count().await
    }
}

#[async_trait::async_trait]
impl<T: ReadThrough> OutboxReads for T {
    async fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.reads().outbox_pending().await
    }
    async fn outbox_of(&self, id: IncidentId) -> Result<Vec<OutboxEntry>, StoreError> {
        self.reads().outbox_of(id).await
    }
    async fn page_refs(
        &self,
        id: IncidentId,
    ) -> Result<std::collections::BTreeMap<String, serde_json::Value>, StoreError> {
        self.reads().page_refs(id).await
    }
}

#[async_trait::async_trait]
impl<T: ReadThrough> ObservationReads for T {
    async fn observations(
        &self,
        scenario: &str,
        symptom: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<SharedObservation>, StoreError> {
        self.reads().observations(scenario, symptom, since).await
    }
    async fn replicas_since(&self, since: DateTime<Utc>) -> Result<Vec<ReplicaBeat>, StoreError> {
        self.reads().replicas_since(since).await
    }
}
