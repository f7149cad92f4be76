//! The PostgreSQL store: the same semantics as the SQLite store, shared by
//! several medic replicas (issue: high availability).
//!
//! tokio-postgres is async all the way down, so nothing blocks the runtime.
//! One connection, re-opened on demand when it drops. Atomicity comes from
//! the database itself: the partial unique index allows one unresolved
//! incident per key; ledger keys are unique; the timeline orders by a
//! sequence, so concurrent appenders never collide.

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, NoTls, Row};

use super::*;
use crate::config::PostgresTarget;

/// Schema migrations, oldest first; append only. Applied under an advisory
/// lock so replicas starting together migrate once.
const MIGRATIONS: &[&str] = &[
    // 1: incidents, timelines and the action ledger.
    "
    CREATE TABLE IF NOT EXISTS medic_incidents (
        id          BIGSERIAL PRIMARY KEY,
        scenario    TEXT NOT NULL,
        instance    TEXT NOT NULL,
        state       TEXT NOT NULL,
        severity    TEXT NOT NULL,
        summary     TEXT NOT NULL,
        opened_at   TIMESTAMPTZ NOT NULL,
        updated_at  TIMESTAMPTZ NOT NULL,
        resolved_at TIMESTAMPTZ
    );
    CREATE UNIQUE INDEX IF NOT EXISTS medic_incidents_one_open
        ON medic_incidents (scenario, instance) WHERE state <> 'resolved';
    CREATE INDEX IF NOT EXISTS medic_incidents_opened ON medic_incidents (opened_at, id);
    CREATE TABLE IF NOT EXISTS medic_timeline (
        seq         BIGSERIAL PRIMARY KEY,
        incident_id BIGINT NOT NULL REFERENCES medic_incidents (id),
        at          TIMESTAMPTZ NOT NULL,
        kind        TEXT NOT NULL,
        message     TEXT NOT NULL,
        data        JSONB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS medic_timeline_incident ON medic_timeline (incident_id, seq);
    CREATE TABLE IF NOT EXISTS medic_attempts (
        id          BIGSERIAL PRIMARY KEY,
        incident_id BIGINT NOT NULL REFERENCES medic_incidents (id),
        scenario    TEXT NOT NULL,
        instance    TEXT NOT NULL,
        step        TEXT NOT NULL,
        step_index  INTEGER NOT NULL,
        action      TEXT NOT NULL,
        key         TEXT NOT NULL UNIQUE,
        started_at  TIMESTAMPTZ NOT NULL,
        ended_at    TIMESTAMPTZ,
        outcome     TEXT,
        reason      TEXT NOT NULL DEFAULT '',
        inputs      JSONB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS medic_attempts_window
        ON medic_attempts (scenario, step, instance, started_at);
    CREATE INDEX IF NOT EXISTS medic_attempts_incident ON medic_attempts (incident_id, started_at);
    ",
    // 2: scheduled disaster-recovery jobs: one row per run, with a timeline.
    "
    CREATE TABLE IF NOT EXISTS medic_job_runs (
        id            BIGSERIAL PRIMARY KEY,
        job           TEXT NOT NULL,
        kind          TEXT NOT NULL,
        scheduled_for TIMESTAMPTZ NOT NULL,
        started_at    TIMESTAMPTZ NOT NULL,
        ended_at      TIMESTAMPTZ,
        outcome       TEXT,
        summary       TEXT NOT NULL DEFAULT '',
        data          JSONB NOT NULL DEFAULT 'null'
    );
    CREATE INDEX IF NOT EXISTS medic_job_runs_job ON medic_job_runs (job, started_at, id);
    CREATE TABLE IF NOT EXISTS medic_job_events (
        seq     BIGSERIAL PRIMARY KEY,
        run_id  BIGINT NOT NULL REFERENCES medic_job_runs (id),
        at      TIMESTAMPTZ NOT NULL,
        kind    TEXT NOT NULL,
        message TEXT NOT NULL,
        data    JSONB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS medic_job_events_run ON medic_job_events (run_id, seq);
    ",
    // 3: leadership terms (the fencing token): one row, the newest term.
    "
    CREATE TABLE IF NOT EXISTS medic_leader (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        term   BIGINT NOT NULL,
        holder TEXT NOT NULL,
        since  TIMESTAMPTZ NOT NULL
    );
    ",
    // 4: alerts pushed by Alertmanager (one row per firing of an alert).
    // starts_at is RFC 3339 text with nine fractional digits: Alertmanager
    // sends nanoseconds, TIMESTAMPTZ keeps microseconds, and the key must
    // be exact.
    "
    CREATE TABLE IF NOT EXISTS medic_alerts (
        fingerprint   TEXT NOT NULL,
        starts_at     TEXT COLLATE \"C\" NOT NULL,
        status        TEXT NOT NULL,
        labels        JSONB NOT NULL,
        annotations   JSONB NOT NULL,
        ends_at       TIMESTAMPTZ,
        generator_url TEXT NOT NULL,
        received_at   TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (fingerprint, starts_at)
    );
    CREATE INDEX IF NOT EXISTS medic_alerts_firing ON medic_alerts (status, starts_at);
    ",
    // 5: the paging outbox and page references (see the SQLite store).
    "
    CREATE TABLE IF NOT EXISTS medic_outbox (
        id          BIGSERIAL PRIMARY KEY,
        incident_id BIGINT NOT NULL REFERENCES medic_incidents (id),
        key         TEXT NOT NULL UNIQUE,
        notifier    TEXT NOT NULL,
        kind        TEXT NOT NULL,
        due_at      TIMESTAMPTZ NOT NULL,
        payload     JSONB NOT NULL,
        state       TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        detail      TEXT NOT NULL DEFAULT '',
        done_at     TIMESTAMPTZ
    );
    CREATE INDEX IF NOT EXISTS medic_outbox_pending ON medic_outbox (due_at, id) WHERE state = 'pending';
    CREATE INDEX IF NOT EXISTS medic_outbox_incident ON medic_outbox (incident_id, id);
    CREATE TABLE IF NOT EXISTS medic_page_refs (
        incident_id BIGINT NOT NULL REFERENCES medic_incidents (id),
        notifier    TEXT NOT NULL,
        reference   JSONB NOT NULL,
        PRIMARY KEY (incident_id, notifier)
    );
    ",
    // 6: keys claimed once (the Slack interaction replay cache).
    "
    CREATE TABLE IF NOT EXISTS medic_claims (
        key   TEXT PRIMARY KEY,
        until TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX IF NOT EXISTS medic_claims_until ON medic_claims (until);
    ",
    // 7: bounded alert intake (see the SQLite store): when a firing
    // resolved, for retention, and a label index for `alert` checks.
    "
    ALTER TABLE medic_alerts ADD COLUMN IF NOT EXISTS resolved_at TIMESTAMPTZ;
    UPDATE medic_alerts SET resolved_at = received_at
        WHERE status = 'resolved' AND resolved_at IS NULL;
    CREATE INDEX IF NOT EXISTS medic_alerts_resolved
        ON medic_alerts (resolved_at) WHERE status = 'resolved';
    CREATE INDEX IF NOT EXISTS medic_alerts_labels
        ON medic_alerts USING GIN (labels jsonb_path_ops) WHERE status = 'firing';
    ",
    // 8: observations shared between replicas (the quorum before acting):
    // each replica's latest outcome per symptom instance, and heartbeats.
    "
    CREATE TABLE IF NOT EXISTS medic_observations (
        scenario    TEXT NOT NULL,
        symptom     TEXT NOT NULL,
        instance    TEXT NOT NULL,
        replica     TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        detail      TEXT NOT NULL,
        observed_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (scenario, symptom, instance, replica)
    );
    CREATE INDEX IF NOT EXISTS medic_observations_at ON medic_observations (observed_at);
    CREATE TABLE IF NOT EXISTS medic_replicas (
        replica TEXT PRIMARY KEY,
        seen_at TIMESTAMPTZ NOT NULL
    );
    ",
    // 9: one failure, one actor (see the SQLite store): an incident's
    // cause, target locks under a leadership term, attempts by time.
    "
    ALTER TABLE medic_incidents ADD COLUMN IF NOT EXISTS cause_id BIGINT
        REFERENCES medic_incidents (id);
    CREATE INDEX IF NOT EXISTS medic_incidents_cause
        ON medic_incidents (cause_id) WHERE cause_id IS NOT NULL;
    CREATE TABLE IF NOT EXISTS medic_target_locks (
        target TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        term   BIGINT NOT NULL,
        until  TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX IF NOT EXISTS medic_attempts_started ON medic_attempts (started_at);
    ",
    // 10: a long timeline's decisions, pages and steps found by kind.
    "
    CREATE INDEX IF NOT EXISTS medic_timeline_kind ON medic_timeline (incident_id, kind, seq);
    ",
];

/// Advisory lock key serialising migrations across replicas ("medicmig").
const MIGRATION_LOCK: i64 = 0x6d65_6469_636d_6967;

/// A store in a PostgreSQL database.
pub struct PostgresStore {
    config: tokio_postgres::Config,
    client: Mutex<Option<std::sync::Arc<Client>>>,
    /// The connection of fenced writes (each one a transaction).
    fence: Mutex<Option<Client>>,
}

fn db(op: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    // The server's message names the problem, never parameter values.
    move |e| match e.as_db_error() {
        Some(d) => StoreError::Backend(format!("{op}: {} ({})", d.message(), d.code().code())),
        None => StoreError::Backend(format!("{op}: {e}")),
    }
}

impl PostgresStore {
    /// Connects (the password resolved from its reference now) and brings the
    /// schema up to date.
    pub async fn open(target: &PostgresTarget) -> Result<Self, StoreError> {
        let config = crate::connect::postgres(target, "medic", std::time::Duration::from_secs(5))
            .map_err(|e| StoreError::Backend(format!("store {e}")))?;
        let store = PostgresStore {
            config,
            client: Mutex::new(None),
            fence: Mutex::new(None),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The live connection, re-opened if it dropped.
    async fn client(&self) -> Result<std::sync::Arc<Client>, StoreError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let (client, conn) = self.config.connect(NoTls).await.map_err(db("connect"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "store connection closed");
            }
        });
        let client = std::sync::Arc::new(client);
        *guard = Some(client.clone());
        Ok(client)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db("lock"))?;
        let result = async {
            c.batch_execute("CREATE TABLE IF NOT EXISTS medic_schema (version INTEGER NOT NULL)")
                .await
                .map_err(db("schema table"))?;
            let version: i32 = c
                .query_opt("SELECT version FROM medic_schema", &[])
                .await
                .map_err(db("schema version"))?
                .map_or(0, |r| r.get(0));
            if version as usize > MIGRATIONS.len() {
                return Err(StoreError::Backend(format!(
                    "the store's schema version {version} is newer than this medic ({})",
                    MIGRATIONS.len()
                )));
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                c.batch_execute(&format!(
                    "BEGIN; {m}; DELETE FROM medic_schema; INSERT INTO medic_schema VALUES ({}); COMMIT;",
                    i + 1
                ))
                .await
                .map_err(db("migrate"))?;
            }
            Ok(())
        }
        .await;
        let _ = c
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        result
    }
}

const INCIDENT_COLS: &str = "id, scenario, instance, state, severity, summary, opened_at, \
     updated_at, resolved_at, cause_id";
const ATTEMPT_COLS: &str = "id, incident_id, scenario, instance, step, step_index, action, key, \
     started_at, ended_at, outcome, reason, inputs";

fn incident_row(r: &Row) -> Result<Incident, StoreError> {
    let state: String = r.get("state");
    let id: i64 = r.get("id");
    Ok(Incident {
        id,
        state: IncidentState::parse(&state).ok_or_else(|| {
            StoreError::Corrupt(format!("incident {id}: unknown state {state:.40?}"))
        })?,
        scenario: r.get("scenario"),
        instance: r.get("instance"),
        severity: r.get("severity"),
        summary: r.get("summary"),
        opened_at: r.get("opened_at"),
        updated_at: r.get("updated_at"),
        resolved_at: r.get("resolved_at"),
        cause: r.get("cause_id"),
    })
}

fn attempt_row(r: &Row) -> Result<Attempt, StoreError> {
    let id: i64 = r.get("id");
    let outcome: Option<String> = r.get("outcome");
    let outcome = match outcome {
        None => None,
        Some(o) => Some(AttemptOutcome::parse(&o).ok_or_else(|| {
            StoreError::Corrupt(format!("attempt {id}: unknown outcome {o:.40?}"))
        })?),
    };
    let step_index: i32 = r.get("step_index");
    Ok(Attempt {
        id,
        incident_id: r.get("incident_id"),
        scenario: r.get("scenario"),
        instance: r.get("instance"),
        step: r.get("step"),
        step_index: u32::try_from(step_index)
            .map_err(|_| StoreError::Corrupt(format!("attempt {id}: negative step_index")))?,
        action: r.get("action"),
        key: r.get("key"),
        started_at: r.get("started_at"),
        ended_at: r.get("ended_at"),
        outcome,
        reason: r.get("reason"),
        inputs: r.get("inputs"),
    })
}

const OUTBOX_COLS: &str =
    "id, incident_id, key, notifier, kind, due_at, payload, state, attempts, detail, done_at";

fn outbox_row(r: &Row) -> Result<OutboxEntry, StoreError> {
    let id: i64 = r.get("id");
    let state: String = r.get("state");
    let attempts: i32 = r.get("attempts");
    Ok(OutboxEntry {
        id,
        incident_id: r.get("incident_id"),
        key: r.get("key"),
        notifier: r.get("notifier"),
        kind: r.get("kind"),
        due_at: r.get("due_at"),
        payload: r.get("payload"),
        state: OutboxState::parse(&state).ok_or_else(|| {
            StoreError::Corrupt(format!("outbox entry {id}: unknown state {state:.40?}"))
        })?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        detail: r.get("detail"),
        done_at: r.get("done_at"),
    })
}

async fn exists<C: GenericClient + Sync>(c: &C, id: IncidentId) -> Result<bool, StoreError> {
    Ok(
        c.query_opt("SELECT 1 FROM medic_incidents WHERE id = $1", &[&id])
            .await
            .map_err(db("find incident"))?
            .is_some(),
    )
}

const JOB_RUN_COLS: &str =
    "id, job, kind, scheduled_for, started_at, ended_at, outcome, summary, data";

fn job_run_row(r: &Row) -> Result<JobRun, StoreError> {
    let id: i64 = r.get("id");
    let outcome: Option<String> = r.get("outcome");
    let outcome = match outcome {
        None => None,
        Some(o) => Some(JobOutcome::parse(&o).ok_or_else(|| {
            StoreError::Corrupt(format!("job run {id}: unknown outcome {o:.40?}"))
        })?),
    };
    Ok(JobRun {
        id,
        job: r.get("job"),
        kind: r.get("kind"),
        scheduled_for: r.get("scheduled_for"),
        started_at: r.get("started_at"),
        ended_at: r.get("ended_at"),
        outcome,
        summary: r.get("summary"),
        data: r.get("data"),
    })
}

async fn job_run_exists<C: GenericClient + Sync>(c: &C, id: JobRunId) -> Result<bool, StoreError> {
    Ok(
        c.query_opt("SELECT 1 FROM medic_job_runs WHERE id = $1", &[&id])
            .await
            .map_err(db("find job run"))?
            .is_some(),
    )
}

/// A timeline entry (of an incident or a job run).
fn timeline_row(r: &Row) -> Result<TimelineEntry, StoreError> {
    Ok(TimelineEntry {
        at: r.get("at"),
        kind: r.get("kind"),
        message: r.get("message"),
        data: r.get("data"),
    })
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Runs a query on `c` and converts every row with `convert`, naming the
/// operation in any error.
async fn query_all<C: GenericClient + Sync, T>(
    c: &C,
    op: &'static str,
    sql: &str,
    params: Params<'_>,
    convert: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    c.query(sql, params)
        .await
        .map_err(db(op))?
        .iter()
        .map(convert)
        .collect()
}

/// [`query_all`] for at most one row (a lookup by key).
async fn query_opt<C: GenericClient + Sync, T>(
    c: &C,
    op: &'static str,
    sql: &str,
    params: Params<'_>,
    convert: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    Ok(query_all(c, op, sql, params, convert).await?.pop())
}

impl PostgresStore {
    /// [`query_all`] on the shared connection.
    async fn all<T>(
        &self,
        op: &'static str,
        sql: &str,
        params: Params<'_>,
        convert: impl Fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        query_all(&*self.client().await?, op, sql, params, convert).await
    }

    /// [`query_opt`] on the shared connection.
    async fn opt<T>(
        &self,
        op: &'static str,
        sql: &str,
        params: Params<'_>,
        convert: impl Fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.all(op, sql, params, convert).await?.pop())
    }

    /// The connection of fenced writes, opened if needed.
    async fn fence_client<'a>(
        &self,
        guard: &'a mut Option<Client>,
    ) -> Result<&'a mut Client, StoreError> {
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, conn) = self.config.connect(NoTls).await.map_err(db("connect"))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!(error = %e, "store connection closed");
                }
            });
            // A replica paused inside a fenced write would hold the share
            // lock on the term row and keep the next leader from claiming
            // its term: the server ends such a transaction.
            client
                .batch_execute("SET idle_in_transaction_session_timeout = 5000")
                .await
                .map_err(db("session settings"))?;
            *guard = Some(client);
        }
        guard
            .as_mut()
            .ok_or_else(|| StoreError::Backend("no connection".into()))
    }
}

#[async_trait::async_trait]
impl IncidentReads for PostgresStore {
    async fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        let sql = format!(
            "SELECT {INCIDENT_COLS} FROM medic_incidents WHERE state <> 'resolved' ORDER BY opened_at, id"
        );
        self.all("list open incidents", &sql, &[], incident_row)
            .await
    }

    async fn incident(&self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        let sql = format!("SELECT {INCIDENT_COLS} FROM medic_incidents WHERE id = $1");
        self.opt("read incident", &sql, &[&id], incident_row).await
    }

    async fn recent_incidents(&self, limit: usize) -> Result<Vec<Incident>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {INCIDENT_COLS} FROM medic_incidents ORDER BY opened_at DESC, id DESC LIMIT $1"
        );
        self.all("list recent incidents", &sql, &[&limit], incident_row)
            .await
    }

    async fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEntry>, StoreError> {
        let c = self.client().await?;
        let sql = "SELECT at, kind, message, data FROM medic_timeline WHERE incident_id = $1 ORDER BY seq";
        let entries = query_all(&*c, "read timeline", sql, &[&id], timeline_row).await?;
        if entries.is_empty() && !exists(&*c, id).await? {
            return Err(StoreError::NotFound(id));
        }
        Ok(entries)
    }

    async fn timeline_kinds(
        &self,
        id: IncidentId,
        kinds: &[&str],
        last: Option<usize>,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        let c = self.client().await?;
        // One indexed range per kind (incident, kind, seq): the newest
        // `last` of each, merged by position. LIMIT NULL is no limit.
        let limit: Option<i64> = last.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let sql = "SELECT seq, at, kind, message, data FROM medic_timeline
                   WHERE incident_id = $1 AND kind = $2 ORDER BY seq DESC LIMIT $3";
        let mut found: Vec<(i64, TimelineEntry)> = Vec::new();
        for kind in kinds {
            found.extend(
                query_all(&*c, "read timeline", sql, &[&id, kind, &limit], |r| {
                    Ok((r.get::<_, i64>("seq"), timeline_row(r)?))
                })
                .await?,
            );
        }
        if found.is_empty() && !exists(&*c, id).await? {
            return Err(StoreError::NotFound(id));
        }
        Ok(super::newest_in_order(found, last))
    }

    async fn timeline_len(&self, id: IncidentId) -> Result<usize, StoreError> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM medic_timeline WHERE incident_id = $1",
                &[&id],
            )
            .await
            .map_err(db("count timeline"))?
            .get(0);
        if n == 0 && !exists(&*c, id).await? {
            return Err(StoreError::NotFound(id));
        }
        Ok(usize::try_from(n).unwrap_or_default())
    }

    async fn timeline_range(
        &self,
        id: IncidentId,
        from: usize,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        let c = self.client().await?;
        // seq is global here: a position is an offset along the index on
        // (incident_id, seq).
        let offset = i64::try_from(from).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = "SELECT at, kind, message, data FROM medic_timeline WHERE incident_id = $1 \
                   ORDER BY seq OFFSET $2 LIMIT $3";
        let entries = query_all(
            &*c,
            "read timeline",
            sql,
            &[&id, &offset, &limit],
            timeline_row,
        )
        .await?;
        if entries.is_empty() && !exists(&*c, id).await? {
            return Err(StoreError::NotFound(id));
        }
        Ok(entries)
    }
}

#[async_trait::async_trait]
impl LedgerReads for PostgresStore {
    async fn attempts_since(
        &self,
        scenario: &str,
        step: &str,
        instance: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM medic_attempts \
             WHERE scenario = $1 AND step = $2 AND instance = $3 AND started_at >= $4 \
             ORDER BY started_at, id"
        );
        let params: Params = &[&scenario, &step, &instance, &since];
        self.all("list attempts", &sql, params, attempt_row).await
    }

    async fn scenario_attempts_since(
        &self,
        scenario: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM medic_attempts WHERE scenario = $1 AND started_at >= $2 \
             ORDER BY started_at, id"
        );
        self.all(
            "list scenario attempts",
            &sql,
            &[&scenario, &since],
            attempt_row,
        )
        .await
    }

    async fn action_attempts_since(
        &self,
        action: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM medic_attempts WHERE action = $1 AND started_at >= $2 \
             ORDER BY started_at, id"
        );
        self.all(
            "list action attempts",
            &sql,
            &[&action, &since],
            attempt_row,
        )
        .await
    }

    async fn attempts_in_flight(&self) -> Result<Vec<Attempt>, StoreError> {
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM medic_attempts WHERE ended_at IS NULL ORDER BY started_at, id"
        );
        self.all("list attempts in flight", &sql, &[], attempt_row)
            .await
    }

    async fn incident_attempts(&self, id: IncidentId) -> Result<Vec<Attempt>, StoreError> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM medic_attempts WHERE incident_id = $1 ORDER BY started_at, id"
        );
        let attempts = query_all(&*c, "list incident attempts", &sql, &[&id], attempt_row).await?;
        if attempts.is_empty() && !exists(&*c, id).await? {
            return Err(StoreError::NotFound(id));
        }
        Ok(attempts)
    }

    async fn target_attempts_since(
        &self,
        target: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM medic_attempts \
             WHERE started_at >= $2 AND inputs->'targets' ? $1 ORDER BY started_at, id"
        );
        self.all(
            "list target attempts",
            &sql,
            &[&target, &since],
            attempt_row,
        )
        .await
    }
}

#[async_trait::async_trait]
impl JobReads for PostgresStore {
    async fn job_runs(&self, job: &str, limit: usize) -> Result<Vec<JobRun>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {JOB_RUN_COLS} FROM medic_job_runs WHERE job = $1 \
             ORDER BY started_at DESC, id DESC LIMIT $2"
        );
        self.all("list job runs", &sql, &[&job, &limit], job_run_row)
            .await
    }

    async fn job_events(&self, id: JobRunId) -> Result<Vec<TimelineEntry>, StoreError> {
        let c = self.client().await?;
        let sql =
            "SELECT at, kind, message, data FROM medic_job_events WHERE run_id = $1 ORDER BY seq";
        let entries = query_all(&*c, "read job events", sql, &[&id], timeline_row).await?;
        if entries.is_empty() && !job_run_exists(&*c, id).await? {
            return Err(StoreError::JobRunNotFound(id));
        }
        Ok(entries)
    }
}

#[async_trait::async_trait]
impl TermReads for PostgresStore {
    async fn current_term(&self) -> Result<Option<Term>, StoreError> {
        self.opt(
            "read term",
            "SELECT term, holder, since FROM medic_leader WHERE id = 1",
            &[],
            |r| {
                Ok(Term {
                    term: r.get::<_, i64>(0) as u64,
                    holder: r.get(1),
                    since: r.get(2),
                })
            },
        )
        .await
    }
}

#[async_trait::async_trait]
impl AlertReads for PostgresStore {
    async fn firing_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.all(
            "list firing alerts",
            "SELECT fingerprint, starts_at, status, labels, annotations, ends_at, \
             generator_url, received_at FROM medic_alerts WHERE status = 'firing' \
             ORDER BY starts_at, fingerprint",
            &[],
            alert_row,
        )
        .await
    }

    async fn firing_alerts_matching(
        &self,
        matchers: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        // `@>` on the partial GIN index: only the alerts whose labels
        // contain every matcher are read.
        let wanted = serde_json::to_value(matchers).unwrap_or_default();
        self.all(
            "list matching alerts",
            "SELECT fingerprint, starts_at, status, labels, annotations, ends_at, \
             generator_url, received_at FROM medic_alerts \
             WHERE status = 'firing' AND labels @> $1::jsonb \
             ORDER BY starts_at, fingerprint",
            &[&wanted],
            alert_row,
        )
        .await
    }

    async fn firing_alert_count(&self) -> Result<usize, StoreError> {
        firing_count(&*self.client().await?).await
    }
}

async fn firing_count<C: GenericClient + Sync>(c: &C) -> Result<usize, StoreError> {
    let n = query_opt(
        c,
        "count firing alerts",
        "SELECT count(*) FROM medic_alerts WHERE status = 'firing'",
        &[],
        |r| Ok(r.get::<_, i64>(0)),
    )
    .await?;
    Ok(n.unwrap_or(0) as usize)
}

#[async_trait::async_trait]
impl OutboxReads for PostgresStore {
    async fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLS} FROM medic_outbox WHERE state = 'pending' ORDER BY due_at, id"
        );
        self.all("list pending outbox", &sql, &[], outbox_row).await
    }

    async fn outbox_of(&self, id: IncidentId) -> Result<Vec<OutboxEntry>, StoreError> {
        let sql =
            format!("SELECT {OUTBOX_COLS} FROM medic_outbox WHERE incident_id = $1 ORDER BY id");
        self.all("list incident outbox", &sql, &[&id], outbox_row)
            .await
    }

    async fn page_refs(
        &self,
        id: IncidentId,
    ) -> Result<std::collections::BTreeMap<String, serde_json::Value>, StoreError> {
        let rows = self
            .all(
                "list page references",
                "SELECT notifier, reference FROM medic_page_refs WHERE incident_id = $1",
                &[&id],
                |r| Ok((r.get(0), r.get(1))),
            )
            .await?;
        Ok(rows.into_iter().collect())
    }
}

#[async_trait::async_trait]
impl ObservationReads for PostgresStore {
    async fn observations(
        &self,
        scenario: &str,
        symptom: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<SharedObservation>, StoreError> {
        self.all(
            "list observations",
            "SELECT scenario, symptom, instance, replica, outcome, detail, observed_at \
             FROM medic_observations \
             WHERE scenario = $1 AND symptom = $2 AND observed_at >= $3 \
             ORDER BY instance, replica",
            &[&scenario, &symptom, &since],
            |r| {
                Ok(SharedObservation {
                    scenario: r.get("scenario"),
                    symptom: r.get("symptom"),
                    instance: r.get("instance"),
                    replica: r.get("replica"),
                    outcome: r.get("outcome"),
                    detail: r.get("detail"),
                    observed_at: r.get("observed_at"),
                })
            },
        )
        .await
    }

    async fn replicas_since(&self, since: DateTime<Utc>) -> Result<Vec<ReplicaBeat>, StoreError> {
        self.all(
            "list replicas",
            "SELECT replica, seen_at FROM medic_replicas WHERE seen_at >= $1 ORDER BY replica",
            &[&since],
            |r| {
                Ok(ReplicaBeat {
                    replica: r.get("replica"),
                    seen_at: r.get("seen_at"),
                })
            },
        )
        .await
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    /// Unfenced, one write on the shared connection (each statement its own
    /// transaction; every multi-row write is one statement). Fenced, on a
    /// connection of its own, in a transaction that first takes a share
    /// lock on the term row: a concurrent [`Store::claim_term`] waits until
    /// this write commits, and a write after it sees the new term. Fenced
    /// writes of one process are serialised.
    /// A capped alert delivery also takes the transaction path (unfenced):
    /// its count, write and recount roll back together when over the cap.
    async fn write(&self, fence: Option<u64>, write: Write) -> Result<Written, StoreError> {
        let capped = matches!(
            write,
            Write::RecordAlerts {
                max_firing: Some(_),
                ..
            }
        );
        if fence.is_none() && !capped {
            return apply(&*self.client().await?, write).await;
        }
        let mut guard = self.fence.lock().await;
        let client = self.fence_client(&mut guard).await?;
        let tx = client.transaction().await.map_err(db("begin"))?;
        if let Some(term) = fence {
            let newest: Option<i64> = query_opt(
                &tx,
                "read term",
                "SELECT term FROM medic_leader WHERE id = 1 FOR SHARE",
                &[],
                |r| Ok(r.get(0)),
            )
            .await?;
            if let Some(newer) = newest.map(|t| t as u64).filter(|&t| t > term) {
                return Err(StoreError::Fenced { term, newer });
            }
        }
        let written = apply(&tx, write).await?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(written)
    }
}

/// The stored form of an alert's `starts_at` (exact, sorts as text).
fn key_time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

fn alert_row(r: &Row) -> Result<AlertRecord, StoreError> {
    let fingerprint: String = r.get("fingerprint");
    let what = format!("alert {fingerprint:.40?}");
    let starts_at: String = r.get("starts_at");
    let status: String = r.get("status");
    let map = |col: &str| -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        serde_json::from_value(r.get::<_, serde_json::Value>(col))
            .map_err(|e| StoreError::Corrupt(format!("{what}: {col} is not a string map ({e})")))
    };
    Ok(AlertRecord {
        starts_at: DateTime::parse_from_rfc3339(&starts_at)
            .map_err(|_| StoreError::Corrupt(format!("{what}: starts_at {starts_at:.40?}")))?
            .with_timezone(&Utc),
        status: AlertStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("{what}: unknown status {status:.40?}")))?,
        labels: map("labels")?,
        annotations: map("annotations")?,
        ends_at: r.get("ends_at"),
        generator_url: r.get("generator_url"),
        received_at: r.get("received_at"),
        fingerprint,
    })
}

/// Runs one write on `c` (a connection or a transaction).
async fn apply<C: GenericClient + Sync>(c: &C, write: Write) -> Result<Written, StoreError> {
    apply_write!(c, write; .await)
}

async fn open_incident_on<C: GenericClient + Sync>(
    c: &C,
    new: NewIncident,
) -> Result<(Incident, bool), StoreError> {
    // Insert-or-find, retried: the unique index decides between racing replicas.
    for _ in 0..5 {
        let inserted = c
            .query_opt(
                &format!(
                    "INSERT INTO medic_incidents \
                     (scenario, instance, state, severity, summary, opened_at, updated_at) \
                     VALUES ($1, $2, 'open', $3, $4, $5, $5) \
                     ON CONFLICT (scenario, instance) WHERE state <> 'resolved' DO NOTHING \
                     RETURNING {INCIDENT_COLS}"
                ),
                &[
                    &new.scenario,
                    &new.instance,
                    &new.severity,
                    &new.summary,
                    &new.at,
                ],
            )
            .await
            .map_err(db("insert incident"))?;
        if let Some(r) = inserted {
            return Ok((incident_row(&r)?, true));
        }
        let existing = c
            .query_opt(
                &format!(
                    "SELECT {INCIDENT_COLS} FROM medic_incidents \
                     WHERE scenario = $1 AND instance = $2 AND state <> 'resolved'"
                ),
                &[&new.scenario, &new.instance],
            )
            .await
            .map_err(db("find open incident"))?;
        if let Some(r) = existing {
            return Ok((incident_row(&r)?, false));
        }
        // Resolved in between: try again.
    }
    Err(StoreError::Conflict(
        "open_incident kept racing with resolution".into(),
    ))
}

async fn set_state_on<C: GenericClient + Sync>(
    c: &C,
    id: IncidentId,
    state: IncidentState,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let changed = c
        .execute(
            "UPDATE medic_incidents SET state = $2::text, updated_at = $3::timestamptz, \
             resolved_at = CASE WHEN $2::text = 'resolved' THEN $3::timestamptz END \
             WHERE id = $1 AND state <> 'resolved'",
            &[&id, &state.as_str(), &at],
        )
        .await
        .map_err(db("update incident state"))?;
    if changed == 1 {
        return Ok(());
    }
    match c
        .query_opt("SELECT state FROM medic_incidents WHERE id = $1", &[&id])
        .await
        .map_err(db("read incident state"))?
    {
        None => Err(StoreError::NotFound(id)),
        Some(_) if state == IncidentState::Resolved => Ok(()),
        Some(_) => Err(StoreError::Conflict(format!(
            "incident {id} is resolved; it cannot become {}",
            state.as_str()
        ))),
    }
}

async fn append_on<C: GenericClient + Sync>(
    c: &C,
    id: IncidentId,
    entry: TimelineEntry,
) -> Result<(), StoreError> {
    let touched = c
        .execute(
            "UPDATE medic_incidents SET updated_at = GREATEST(updated_at, $2) WHERE id = $1",
            &[&id, &entry.at],
        )
        .await
        .map_err(db("touch incident"))?;
    if touched == 0 {
        return Err(StoreError::NotFound(id));
    }
    c.execute(
        "INSERT INTO medic_timeline (incident_id, at, kind, message, data) VALUES ($1, $2, $3, $4, $5)",
        &[&id, &entry.at, &entry.kind, &entry.message, &entry.data],
    )
    .await
    .map_err(db("append timeline entry"))?;
    Ok(())
}

async fn begin_attempt_on<C: GenericClient + Sync>(
    c: &C,
    new: NewAttempt,
) -> Result<AttemptId, StoreError> {
    let step_index = i32::try_from(new.step_index)
        .map_err(|_| StoreError::Backend("step index out of range".into()))?;
    let r = c
        .query_one(
            "INSERT INTO medic_attempts (incident_id, scenario, instance, step, step_index, \
             action, key, started_at, inputs) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            &[
                &new.incident_id,
                &new.scenario,
                &new.instance,
                &new.step,
                &step_index,
                &new.action,
                &new.key,
                &new.started_at,
                &new.inputs,
            ],
        )
        .await;
    match r {
        Ok(row) => Ok(row.get(0)),
        Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
            Err(StoreError::NotFound(new.incident_id))
        }
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            Err(StoreError::Conflict("attempt key already used".into()))
        }
        Err(e) => Err(db("insert attempt")(e)),
    }
}

async fn finish_attempt_on<C: GenericClient + Sync>(
    c: &C,
    id: AttemptId,
    outcome: AttemptOutcome,
    reason: String,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let changed = c
        .execute(
            "UPDATE medic_attempts SET ended_at = $2, outcome = $3, reason = $4 \
             WHERE id = $1 AND ended_at IS NULL",
            &[&id, &at, &outcome.as_str(), &reason.as_str()],
        )
        .await
        .map_err(db("finish attempt"))?;
    ended_once(c, changed, EndsOnce::Attempt, id, outcome.as_str()).await
}

async fn begin_job_run_on<C: GenericClient + Sync>(
    c: &C,
    new: NewJobRun,
) -> Result<JobRunId, StoreError> {
    let row = c
        .query_one(
            "INSERT INTO medic_job_runs (job, kind, scheduled_for, started_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[&new.job, &new.kind, &new.scheduled_for, &new.started_at],
        )
        .await
        .map_err(db("insert job run"))?;
    Ok(row.get(0))
}

async fn append_job_event_on<C: GenericClient + Sync>(
    c: &C,
    id: JobRunId,
    entry: TimelineEntry,
) -> Result<(), StoreError> {
    let r = c
        .execute(
            "INSERT INTO medic_job_events (run_id, at, kind, message, data) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&id, &entry.at, &entry.kind, &entry.message, &entry.data],
        )
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
            Err(StoreError::JobRunNotFound(id))
        }
        Err(e) => Err(db("append job event")(e)),
    }
}

async fn finish_job_run_on<C: GenericClient + Sync>(
    c: &C,
    id: JobRunId,
    outcome: JobOutcome,
    summary: String,
    data: serde_json::Value,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let changed = c
        .execute(
            "UPDATE medic_job_runs SET ended_at = $2, outcome = $3, summary = $4, data = $5 \
             WHERE id = $1 AND outcome IS NULL",
            &[&id, &at, &outcome.as_str(), &summary, &data],
        )
        .await
        .map_err(db("finish job run"))?;
    ended_once(c, changed, EndsOnce::JobRun, id, outcome.as_str()).await
}

/// After an UPDATE that ends a row only if not yet ended (`changed` rows).
async fn ended_once<C: GenericClient + Sync>(
    c: &C,
    changed: u64,
    ends: EndsOnce,
    id: i64,
    outcome: &str,
) -> Result<(), StoreError> {
    if changed == 1 {
        return Ok(());
    }
    let sql = format!("SELECT outcome FROM medic_{} WHERE id = $1", ends.table());
    let op = ends.read_op();
    let previous = query_opt(c, op, &sql, &[&id], |r| Ok(r.get(0))).await?;
    ends.again(id, previous, outcome, |p| format!("{p:.40}"))
}

async fn claim_term_on<C: GenericClient + Sync>(
    c: &C,
    holder: String,
    at: DateTime<Utc>,
) -> Result<Term, StoreError> {
    let r = c
        .query_one(
            "INSERT INTO medic_leader (id, term, holder, since) VALUES (1, 1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET term = medic_leader.term + 1, \
             holder = EXCLUDED.holder, since = EXCLUDED.since RETURNING term",
            &[&holder, &at],
        )
        .await
        .map_err(db("claim term"))?;
    let term: i64 = r.get(0);
    Ok(Term {
        term: term as u64,
        holder,
        since: at,
    })
}

/// One statement (the shared connection runs no multi-statement
/// transaction): atomic, and no row is touched twice. A resolved alert
/// ends exactly the firing with its fingerprint and `startsAt`. With
/// `max_firing` it runs in a transaction ([`PostgresStore::write`]) between
/// two counts; over the cap, the error rolls it back.
async fn record_alerts_on<C: GenericClient + Sync>(
    c: &C,
    alerts: &[AlertRecord],
    max_firing: Option<usize>,
) -> Result<(), StoreError> {
    if alerts.is_empty() {
        return Ok(());
    }
    let before = match max_firing {
        Some(_) => Some(firing_count(c).await?),
        None => None,
    };
    let input: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| {
            serde_json::json!({
                "fingerprint": a.fingerprint,
                "starts_at": key_time(&a.starts_at),
                "status": a.status.as_str(),
                "labels": a.labels,
                "annotations": a.annotations,
                "ends_at": a.ends_at,
                "generator_url": a.generator_url,
                "received_at": a.received_at,
            })
        })
        .collect();
    let input = serde_json::Value::Array(input);
    c.execute(
        "WITH input AS (
            SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
                fingerprint TEXT, starts_at TEXT, status TEXT, labels JSONB,
                annotations JSONB, ends_at TIMESTAMPTZ, generator_url TEXT,
                received_at TIMESTAMPTZ)
        ), ended AS (
            UPDATE medic_alerts a
            SET status = 'resolved', ends_at = i.ends_at, resolved_at = i.received_at
            FROM input i
            WHERE i.status = 'resolved' AND a.fingerprint = i.fingerprint
              AND a.starts_at = i.starts_at AND a.status = 'firing'
            RETURNING 1
        )
        INSERT INTO medic_alerts (fingerprint, starts_at, status, labels, annotations,
                                  ends_at, generator_url, received_at, resolved_at)
        SELECT DISTINCT ON (fingerprint, starts_at)
            fingerprint, starts_at, status, labels, annotations, ends_at, generator_url,
            received_at, CASE WHEN status = 'resolved' THEN received_at END
        FROM input
        ORDER BY fingerprint, starts_at, (status = 'resolved') DESC
        ON CONFLICT (fingerprint, starts_at) DO NOTHING",
        &[&input],
    )
    .await
    .map_err(db("record alerts"))?;
    if let (Some(max), Some(before)) = (max_firing, before) {
        let after = firing_count(c).await?;
        if after > before && after > max {
            return Err(StoreError::TooManyFiring { firing: after, max });
        }
    }
    Ok(())
}

/// Retention: at most `max` resolved alerts older than `resolved_before`.
async fn prune_alerts_on<C: GenericClient + Sync>(
    c: &C,
    resolved_before: DateTime<Utc>,
    max: usize,
) -> Result<usize, StoreError> {
    let n = c
        .execute(
            "DELETE FROM medic_alerts WHERE (fingerprint, starts_at) IN (
                SELECT fingerprint, starts_at FROM medic_alerts
                WHERE status = 'resolved' AND resolved_at < $1 LIMIT $2)",
            &[&resolved_before, &(max as i64)],
        )
        .await
        .map_err(db("prune alerts"))?;
    Ok(n as usize)
}

async fn outbox_enqueue_on<C: GenericClient + Sync>(
    c: &C,
    new: NewOutbox,
) -> Result<(OutboxEntry, bool), StoreError> {
    let inserted = c
        .query_opt(
            &format!(
                "INSERT INTO medic_outbox (incident_id, key, notifier, kind, due_at, payload, state) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending') ON CONFLICT (key) DO NOTHING \
                 RETURNING {OUTBOX_COLS}"
            ),
            &[
                &new.incident_id,
                &new.key,
                &new.notifier,
                &new.kind,
                &new.due_at,
                &new.payload,
            ],
        )
        .await;
    match inserted {
        Ok(Some(row)) => Ok((outbox_row(&row)?, true)),
        Ok(None) => {
            let row = c
                .query_one(
                    &format!("SELECT {OUTBOX_COLS} FROM medic_outbox WHERE key = $1"),
                    &[&new.key],
                )
                .await
                .map_err(db("find outbox key"))?;
            Ok((outbox_row(&row)?, false))
        }
        Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
            Err(StoreError::NotFound(new.incident_id))
        }
        Err(e) => Err(db("insert outbox")(e)),
    }
}

async fn outbox_mark_on<C: GenericClient + Sync>(
    c: &C,
    id: i64,
    mark: OutboxMark,
) -> Result<(), StoreError> {
    let attempts = i32::try_from(mark.attempts).unwrap_or(i32::MAX);
    let done = (mark.state != OutboxState::Pending).then_some(mark.at);
    let changed = c
        .execute(
            "UPDATE medic_outbox SET state = $2, attempts = $3, due_at = $4, detail = $5, \
             done_at = $6 WHERE id = $1 AND state = 'pending'",
            &[
                &id,
                &mark.state.as_str(),
                &attempts,
                &mark.due_at,
                &mark.detail,
                &done,
            ],
        )
        .await
        .map_err(db("mark outbox"))?;
    if changed == 1 {
        return Ok(());
    }
    let sql = "SELECT state FROM medic_outbox WHERE id = $1";
    let prev: Option<String> = query_opt(c, "read outbox", sql, &[&id], |r| Ok(r.get(0))).await?;
    match prev {
        None => Err(StoreError::Conflict(format!("outbox entry {id} not found"))),
        Some(p) if p == mark.state.as_str() => Ok(()),
        Some(p) => Err(StoreError::Conflict(format!(
            "outbox entry {id} already {p:.40}"
        ))),
    }
}

/// The heartbeat, then every observation in one statement (rows given as
/// arrays), then the forgetting of rows past retention.
async fn observe_on<C: GenericClient + Sync>(
    c: &C,
    beat: ReplicaBeat,
    observations: Vec<SharedObservation>,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO medic_replicas (replica, seen_at) VALUES ($1, $2) \
         ON CONFLICT (replica) DO UPDATE \
         SET seen_at = GREATEST(medic_replicas.seen_at, EXCLUDED.seen_at)",
        &[&beat.replica, &beat.seen_at],
    )
    .await
    .map_err(db("record heartbeat"))?;
    if !observations.is_empty() {
        let mut cols: [Vec<String>; 6] = Default::default();
        let mut at: Vec<DateTime<Utc>> = Vec::with_capacity(observations.len());
        for o in observations {
            let [sc, sy, inst, rep, out, det] = &mut cols;
            sc.push(o.scenario);
            sy.push(o.symptom);
            inst.push(o.instance);
            rep.push(o.replica);
            out.push(o.outcome);
            det.push(o.detail);
            at.push(o.observed_at);
        }
        let [sc, sy, inst, rep, out, det] = &cols;
        c.execute(
            "INSERT INTO medic_observations \
             (scenario, symptom, instance, replica, outcome, detail, observed_at) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                                  $5::text[], $6::text[], $7::timestamptz[]) \
             ON CONFLICT (scenario, symptom, instance, replica) DO UPDATE SET \
             outcome = EXCLUDED.outcome, detail = EXCLUDED.detail, \
             observed_at = EXCLUDED.observed_at \
             WHERE EXCLUDED.observed_at >= medic_observations.observed_at",
            &[sc, sy, inst, rep, out, det, &at],
        )
        .await
        .map_err(db("record observations"))?;
    }
    let forget = beat.seen_at - OBSERVATION_RETENTION;
    c.execute(
        "DELETE FROM medic_observations WHERE observed_at < $1",
        &[&forget],
    )
    .await
    .map_err(db("forget old observations"))?;
    c.execute("DELETE FROM medic_replicas WHERE seen_at < $1", &[&forget])
        .await
        .map_err(db("forget old replicas"))?;
    Ok(())
}

async fn set_cause_on<C: GenericClient + Sync>(
    c: &C,
    id: IncidentId,
    cause: Option<IncidentId>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if let Some(k) = cause {
        if k == id {
            return Err(StoreError::Conflict(format!(
                "incident {id} cannot be its own cause"
            )));
        }
        if !exists(c, k).await? {
            return Err(StoreError::NotFound(k));
        }
    }
    let changed = c
        .execute(
            "UPDATE medic_incidents SET cause_id = $2, updated_at = $3 \
             WHERE id = $1 AND state <> 'resolved'",
            &[&id, &cause, &at],
        )
        .await
        .map_err(db("set incident cause"))?;
    if changed == 1 {
        return Ok(());
    }
    let before: Option<Option<i64>> = query_opt(
        c,
        "read incident cause",
        "SELECT cause_id FROM medic_incidents WHERE id = $1",
        &[&id],
        |r| Ok(r.get(0)),
    )
    .await?;
    match before {
        None => Err(StoreError::NotFound(id)),
        Some(b) if b == cause => Ok(()),
        Some(_) => Err(StoreError::Conflict(format!("incident {id} is resolved"))),
    }
}

/// One statement: free, expired, the holder's own, or taken under an
/// older term, the lock becomes the caller's; else who holds it.
async fn lock_target_on<C: GenericClient + Sync>(
    c: &C,
    target: String,
    holder: String,
    at: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let taken = c
        .query_opt(
            "INSERT INTO medic_target_locks (target, holder, term, until) \
             VALUES ($1, $2, COALESCE((SELECT term FROM medic_leader WHERE id = 1), 0), $4) \
             ON CONFLICT (target) DO UPDATE \
             SET holder = EXCLUDED.holder, term = EXCLUDED.term, until = EXCLUDED.until \
             WHERE medic_target_locks.holder = EXCLUDED.holder \
                OR medic_target_locks.until <= $3 \
                OR medic_target_locks.term < EXCLUDED.term \
             RETURNING holder",
            &[&target, &holder, &at, &until],
        )
        .await
        .map_err(db("take target lock"))?;
    if taken.is_some() {
        return Ok(None);
    }
    query_opt(
        c,
        "read target lock",
        "SELECT holder FROM medic_target_locks WHERE target = $1",
        &[&target],
        |r| Ok(r.get(0)),
    )
    .await
}

async fn unlock_target_on<C: GenericClient + Sync>(
    c: &C,
    target: String,
    holder: String,
) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM medic_target_locks WHERE target = $1 AND holder = $2",
        &[&target, &holder],
    )
    .await
    .map_err(db("release target lock"))?;
    Ok(())
}

async fn claim_once_on<C: GenericClient + Sync>(
    c: &C,
    key: String,
    at: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    c.execute("DELETE FROM medic_claims WHERE until < $1", &[&at])
        .await
        .map_err(db("forget old claims"))?;
    let n = c
        .execute(
            "INSERT INTO medic_claims (key, until) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &until],
        )
        .await
        .map_err(db("claim key"))?;
    Ok(n == 1)
}

async fn set_page_ref_on<C: GenericClient + Sync>(
    c: &C,
    id: IncidentId,
    notifier: String,
    reference: serde_json::Value,
) -> Result<(), StoreError> {
    let r = c
        .execute(
            "INSERT INTO medic_page_refs (incident_id, notifier, reference) VALUES ($1, $2, $3) \
             ON CONFLICT (incident_id, notifier) DO UPDATE SET reference = EXCLUDED.reference",
            &[&id, &notifier, &reference],
        )
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
            Err(StoreError::NotFound(id))
        }
        Err(e) => Err(db("store page reference")(e)),
    }
}
