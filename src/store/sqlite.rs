//! The embedded SQLite store.
//!
//! # Thread model
//!
//! One dedicated thread (`medic-store`) owns the only connection; async
//! callers send it requests over a bounded channel and await a oneshot
//! reply, so no runtime worker ever waits on SQLite. Chosen over
//! `spawn_blocking` plus a `Mutex<Connection>` because SQLite has one writer
//! anyway: a mutex would only park blocking-pool threads behind each other,
//! whereas the thread can *group-commit*. It drains every queued request into
//! one `BEGIN IMMEDIATE` transaction, runs each under its own savepoint (a
//! failing request rolls back alone), commits once and only then replies.
//! Under load many writes share one fsync; every reply still means "on
//! disk" (`synchronous=FULL`), so "written before it is acted on" holds.
//!
//! # Schema
//!
//! Versioned with `PRAGMA user_version`: [`MIGRATIONS`] is append-only and
//! migration *n* (1-based) brings the file to version *n* in one transaction.
//! A file newer than this binary is refused, never downgraded.
//!
//! Timestamps are RFC 3339 text in UTC with exactly nine fractional digits
//! (`2024-05-01T12:00:00.123456789Z`): they round-trip exactly, sort
//! correctly as text and stay readable in the `sqlite3` shell. JSON columns
//! are text.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use rusqlite::types::FromSql;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::*;

/// The schema version this binary writes (the number of [`MIGRATIONS`]).
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Schema migrations, oldest first. Append only: never edit a shipped one.
/// Later versions add budgets, the notification outbox and leadership.
pub const MIGRATIONS: &[&str] = &[
    // 1: incidents, timelines and the action ledger.
    "
    CREATE TABLE incidents (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        scenario    TEXT NOT NULL,
        instance    TEXT NOT NULL,
        state       TEXT NOT NULL,
        severity    TEXT NOT NULL,
        summary     TEXT NOT NULL,
        opened_at   TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        resolved_at TEXT
    );
    -- At most one unresolved incident per key, whatever the code does.
    CREATE UNIQUE INDEX incidents_one_open
        ON incidents (scenario, instance) WHERE state != 'resolved';
    CREATE INDEX incidents_opened ON incidents (opened_at, id);

    CREATE TABLE timeline (
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        seq         INTEGER NOT NULL,
        at          TEXT NOT NULL,
        kind        TEXT NOT NULL,
        message     TEXT NOT NULL,
        data        TEXT NOT NULL,
        PRIMARY KEY (incident_id, seq)
    ) WITHOUT ROWID;

    CREATE TABLE attempts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        scenario    TEXT NOT NULL,
        instance    TEXT NOT NULL,
        step        TEXT NOT NULL,
        step_index  INTEGER NOT NULL,
        action      TEXT NOT NULL,
        key         TEXT NOT NULL UNIQUE,
        started_at  TEXT NOT NULL,
        ended_at    TEXT,
        outcome     TEXT,
        reason      TEXT NOT NULL DEFAULT '',
        inputs      TEXT NOT NULL
    );
    -- attempts_since: limits and cooldowns per scenario, step and instance.
    CREATE INDEX attempts_window ON attempts (scenario, step, instance, started_at);
    CREATE INDEX attempts_incident ON attempts (incident_id, started_at);
    ",
    // 2: scheduled disaster-recovery jobs (backups, verification, restore
    // tests): one row per run, with a timeline like an incident's.
    "
    CREATE TABLE job_runs (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        job           TEXT NOT NULL,
        kind          TEXT NOT NULL,
        scheduled_for TEXT NOT NULL,
        started_at    TEXT NOT NULL,
        ended_at      TEXT,
        outcome       TEXT,
        summary       TEXT NOT NULL DEFAULT '',
        data          TEXT NOT NULL DEFAULT 'null'
    );
    CREATE INDEX job_runs_job ON job_runs (job, started_at, id);

    CREATE TABLE job_events (
        run_id  INTEGER NOT NULL REFERENCES job_runs (id),
        seq     INTEGER NOT NULL,
        at      TEXT NOT NULL,
        kind    TEXT NOT NULL,
        message TEXT NOT NULL,
        data    TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    ",
    // 3: leadership terms (the fencing token): one row, the newest term.
    "
    CREATE TABLE leader (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        term   INTEGER NOT NULL,
        holder TEXT NOT NULL,
        since  TEXT NOT NULL
    );
    ",
    // 4: alerts pushed by Alertmanager (one row per firing of an alert).
    "
    CREATE TABLE alerts (
        fingerprint   TEXT NOT NULL,
        starts_at     TEXT NOT NULL,
        status        TEXT NOT NULL,
        labels        TEXT NOT NULL,
        annotations   TEXT NOT NULL,
        ends_at       TEXT,
        generator_url TEXT NOT NULL,
        received_at   TEXT NOT NULL,
        PRIMARY KEY (fingerprint, starts_at)
    ) WITHOUT ROWID;
    CREATE INDEX alerts_firing ON alerts (status, starts_at);
    ",
    // 5: the paging outbox (timers, pages, notifications written before
    // they are sent) and what notifiers need to find their messages again.
    "
    CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        key         TEXT NOT NULL UNIQUE,
        notifier    TEXT NOT NULL,
        kind        TEXT NOT NULL,
        due_at      TEXT NOT NULL,
        payload     TEXT NOT NULL,
        state       TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        detail      TEXT NOT NULL DEFAULT '',
        done_at     TEXT
    );
    CREATE INDEX outbox_pending ON outbox (due_at, id) WHERE state = 'pending';
    CREATE INDEX outbox_incident ON outbox (incident_id, id);
    CREATE TABLE page_refs (
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        notifier    TEXT NOT NULL,
        reference   TEXT NOT NULL,
        PRIMARY KEY (incident_id, notifier)
    ) WITHOUT ROWID;
    ",
    // 6: keys claimed once (the Slack interaction replay cache), kept
    // until `until`, so a captured click does not replay after a restart.
    "
    CREATE TABLE claims (
        key   TEXT PRIMARY KEY,
        until TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX claims_until ON claims (until);
    ",
    // 7: bounded alert intake. When a firing resolved (retention prunes
    // by it), and a label index: an `alert` check reads the alerts one of
    // its matchers selects, not every firing alert.
    "
    ALTER TABLE alerts ADD COLUMN resolved_at TEXT;
    UPDATE alerts SET resolved_at = received_at WHERE status = 'resolved';
    CREATE INDEX alerts_resolved ON alerts (resolved_at) WHERE status = 'resolved';
    CREATE TABLE alert_labels (
        name        TEXT NOT NULL,
        value       TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        PRIMARY KEY (name, value, fingerprint)
    ) WITHOUT ROWID;
    CREATE INDEX alert_labels_fingerprint ON alert_labels (fingerprint);
    INSERT OR IGNORE INTO alert_labels (name, value, fingerprint)
        SELECT j.key, j.value, a.fingerprint FROM alerts a, json_each(a.labels) j;
    ",
    // 8: observations shared between replicas (the quorum before acting):
    // each replica's latest outcome per symptom instance, and heartbeats.
    "
    CREATE TABLE observations (
        scenario    TEXT NOT NULL,
        symptom     TEXT NOT NULL,
        instance    TEXT NOT NULL,
        replica     TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        detail      TEXT NOT NULL,
        observed_at TEXT NOT NULL,
        PRIMARY KEY (scenario, symptom, instance, replica)
    ) WITHOUT ROWID;
    CREATE INDEX observations_at ON observations (observed_at);
    CREATE TABLE replicas (
        replica TEXT PRIMARY KEY,
        seen_at TEXT NOT NULL
    ) WITHOUT ROWID;
    ",
    // 9: one failure, one actor. An incident's cause (the incident it
    // waits on), target locks (one step at a time acts on a target,
    // across scenarios; `term` is the leadership term it was taken
    // under, so a deposed leader's locks are free), and attempts by time
    // for a target's own budget.
    "
    ALTER TABLE incidents ADD COLUMN cause_id INTEGER REFERENCES incidents (id);
    CREATE INDEX incidents_cause ON incidents (cause_id) WHERE cause_id IS NOT NULL;
    CREATE TABLE target_locks (
        target TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        term   INTEGER NOT NULL,
        until  TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX attempts_started ON attempts (started_at);
    ",
    // 10: readers of a long timeline find its decisions, pages and steps
    // without reading every symptom transition.
    "
    CREATE INDEX timeline_kind ON timeline (incident_id, kind, seq);
    ",
];

/// How long a write waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests queued before callers wait (back-pressure).
const QUEUE_DEPTH: usize = 1024;
/// Most requests sharing one transaction (and one fsync).
const MAX_BATCH: usize = 256;

/// A SQLite file, created on open. I/O runs on a dedicated thread (see the
/// module docs); dropping the store lets that thread finish what is queued
/// and close the connection.
///
/// `updated_at` of an incident is its last state change or timeline entry.
pub struct SqliteStore {
    tx: mpsc::Sender<Msg>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`: WAL journal,
    /// `synchronous=FULL`, foreign keys on, pending migrations applied.
    /// The parent directory must exist.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::start(Some(path.to_path_buf())).await
    }

    /// A private in-memory store (tests, `medic rules test`).
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        Self::start(None).await
    }

    async fn start(path: Option<PathBuf>) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (ready_tx, ready_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("medic-store".into())
            .spawn(move || match open_connection(path.as_deref()) {
                Ok(conn) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(conn, rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Backend(format!("spawn store thread: {e}")))?;
        ready_rx
            .await
            .map_err(|_| StoreError::Backend("store thread died while opening".into()))??;
        Ok(SqliteStore { tx })
    }

    /// Finishes queued requests and closes the connection, waiting until it
    /// is closed: after [`Store::flush`] and `close`, the store is one file.
    pub async fn close(self) -> Result<(), StoreError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.tx
            .send(Msg::Close(done_tx))
            .await
            .map_err(|_| stopped())?;
        done_rx.await.map_err(|_| stopped())?
    }

    /// Runs `f` on the store thread inside the current batch transaction,
    /// under its own savepoint: an `Err` rolls back what `f` wrote.
    async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.request(f, false).await
    }

    /// Runs `f` on the store thread outside any transaction.
    async fn call_alone<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.request(f, true).await
    }

    async fn request<R, F>(&self, f: F, alone: bool) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let req: Box<dyn Request> = Box::new(Call {
            f: Some(f),
            result: None,
            reply,
        });
        let msg = if alone {
            Msg::Alone(req)
        } else {
            Msg::Batched(req)
        };
        self.tx.send(msg).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Backend("store thread stopped".into())
}

// ---------------------------------------------------------------------------
// The store thread.

enum Msg {
    /// Runs inside the batch transaction, under its own savepoint.
    Batched(Box<dyn Request>),
    /// Runs alone, outside any transaction (a WAL checkpoint cannot run
    /// inside one).
    Alone(Box<dyn Request>),
    /// Closes the connection and ends the thread.
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// A queued call: run once, then replied to once the fate of the
/// transaction it ran in is known.
trait Request: Send {
    /// Runs against the connection; true if it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Sends the result; `failed` says why the transaction did not commit
    /// (in which case nothing this request wrote was kept).
    fn reply(self: Box<Self>, failed: Option<&str>);
    /// Whether its caller gave up (timed out, disconnected): nobody waits
    /// for the result, so the work is dropped, not done.
    fn abandoned(&self) -> bool;
}

struct Call<F, R> {
    f: Option<F>,
    result: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<F, R> Request for Call<F, R>
where
    R: Send,
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let result = catch_unwind(AssertUnwindSafe(|| f(conn)))
            .unwrap_or_else(|_| Err(StoreError::Backend("store request panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn reply(self: Box<Self>, failed: Option<&str>) {
        let result = match (self.result, failed) {
            (Some(Err(e)), _) => Err(e),
            (_, Some(why)) => Err(StoreError::Backend(why.to_string())),
            (Some(Ok(value)), None) => Ok(value),
            (None, None) => Err(StoreError::Backend("store request was not run".into())),
        };
        let _ = self.reply.send(result);
    }
}

fn serve(conn: Connection, mut rx: mpsc::Receiver<Msg>) {
    let mut next = None;
    loop {
        let msg = match next.take() {
            Some(msg) => msg,
            None => match rx.blocking_recv() {
                Some(msg) => msg,
                None => return, // every sender dropped: the connection closes on drop
            },
        };
        match msg {
            Msg::Batched(first) => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Msg::Batched(req)) => batch.push(req),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                run_batch(&conn, batch);
            }
            Msg::Alone(req) if req.abandoned() => {}
            Msg::Alone(mut req) => {
                req.run(&conn);
                req.reply(None);
            }
            Msg::Close(done) => {
                let result = conn
                    .close()
                    .map_err(|(_, e)| StoreError::Backend(format!("close: {e}")));
                let _ = done.send(result);
                return;
            }
        }
    }
}

/// Runs `batch` in one transaction, each request under its own savepoint,
/// commits once, then replies to all.
fn run_batch(conn: &Connection, mut batch: Vec<Box<dyn Request>>) {
    // Work whose caller gave up while it queued is dropped: under overload
    // the queue drains instead of doing what nobody waits for.
    let queued = batch.len();
    batch.retain(|r| !r.abandoned());
    if batch.len() < queued {
        tracing::debug!(
            dropped = queued - batch.len(),
            "store requests dropped: their callers gave up"
        );
    }
    if batch.is_empty() {
        return;
    }
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let why = format!("begin transaction: {e}");
        for req in batch {
            req.reply(Some(&why));
        }
        return;
    }
    let mut ran = Vec::with_capacity(batch.len());
    let mut failed: Option<String> = None;
    let mut pending = batch.into_iter();
    for mut req in pending.by_ref() {
        if let Err(e) = conn.execute_batch("SAVEPOINT request") {
            failed = Some(format!("savepoint: {e}"));
            ran.push(req);
            break;
        }
        let ok = req.run(conn);
        ran.push(req);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (disk full, I/O error).
            failed = Some("transaction rolled back by SQLite after an error".into());
            break;
        }
        let end = if ok {
            "RELEASE request"
        } else {
            "ROLLBACK TO request; RELEASE request"
        };
        if let Err(e) = conn.execute_batch(end) {
            failed = Some(format!("end savepoint: {e}"));
            break;
        }
    }
    if failed.is_none()
        && let Err(e) = conn.execute_batch("COMMIT")
    {
        failed = Some(format!("commit: {e}"));
    }
    if failed.is_some() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let failed = failed.as_deref();
    for req in ran {
        req.reply(failed);
    }
    // Requests after an aborted one never ran: nothing of theirs was written.
    for req in pending {
        req.reply(Some(failed.unwrap_or("transaction aborted")));
    }
}

fn open_connection(path: Option<&Path>) -> Result<Connection, StoreError> {
    let what = match path {
        Some(p) => p.display().to_string(),
        None => ":memory:".to_string(),
    };
    let err = |e: rusqlite::Error| StoreError::Backend(format!("open {what}: {e}"));
    let mut conn = match path {
        Some(p) => Connection::open(p),
        None => Connection::open_in_memory(),
    }
    .map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    if path.is_some() {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "open {what}: journal_mode is {mode}, WAL was refused"
            )));
        }
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(err)?;
    conn.set_prepared_statement_cache_capacity(32);
    migrate(&mut conn).map_err(|e| match e {
        StoreError::Backend(m) => StoreError::Backend(format!("open {what}: {m}")),
        other => other,
    })?;
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`], one transaction per migration.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current = user_version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "schema version {current} is newer than this medic understands \
             ({SCHEMA_VERSION}); refusing to open"
        )));
    }
    for (done, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = done as u32 + 1;
        let err = |e: rusqlite::Error| {
            StoreError::Backend(format!("migration to schema version {version}: {e}"))
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        // Another process may have migrated while we waited for the lock.
        if user_version(&tx)? >= version {
            continue;
        }
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

fn user_version(conn: &Connection) -> Result<u32, StoreError> {
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql("read schema version"))?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("schema version {v} is negative")))
}

// ---------------------------------------------------------------------------
// Conversions.

/// Maps a SQLite error to `Backend`, naming the operation. rusqlite's
/// messages never include bound parameters, so neither do ours.
fn sql(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Backend(format!("{op}: {e}"))
}

/// The stored form of a timestamp (see the module docs).
fn ts(at: &DateTime<Utc>) -> Result<String, StoreError> {
    if !(0..=9999).contains(&at.year()) {
        return Err(StoreError::Backend(
            "timestamp outside the years 0000-9999 cannot be stored".into(),
        ));
    }
    Ok(at.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
}

fn json(value: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encode JSON: {e}")))
}

/// A stored string quoted for an error message, cut short.
fn shown(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// Reads one row's columns, turning anything unexpected into `Corrupt`
/// that names the row and the column.
struct Cols<'a, 'r> {
    row: &'a Row<'r>,
    what: String,
}

impl Cols<'_, '_> {
    fn get<T: FromSql>(&self, col: &str) -> Result<T, StoreError> {
        self.row.get(col).map_err(|e| match e {
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => {
                StoreError::Corrupt(format!("{}: column {col}: {e}", self.what))
            }
            other => StoreError::Backend(format!("read {}: {other}", self.what)),
        })
    }

    fn time(&self, col: &str) -> Result<DateTime<Utc>, StoreError> {
        let s: String = self.get(col)?;
        self.parse_time(col, &s)
    }

    fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self.get::<Option<String>>(col)? {
            Some(s) => self.parse_time(col, &s).map(Some),
            None => Ok(None),
        }
    }

    fn parse_time(&self, col: &str, s: &str) -> Result<DateTime<Utc>, StoreError> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                StoreError::Corrupt(format!(
                    "{}: {col} {} is not an RFC 3339 timestamp",
                    self.what,
                    shown(s)
                ))
            })
    }

    /// An optional column holding a name that `parse` knows (an outcome).
    fn opt_name<T>(
        &self,
        col: &str,
        parse: fn(&str) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        match self.get::<Option<String>>(col)? {
            None => Ok(None),
            Some(s) => parse(&s).map(Some).ok_or_else(|| {
                StoreError::Corrupt(format!("{}: unknown {col} {}", self.what, shown(&s)))
            }),
        }
    }

    fn json(&self, col: &str) -> Result<serde_json::Value, StoreError> {
        let s: String = self.get(col)?;
        // serde_json's message holds a position, never the text.
        serde_json::from_str(&s).map_err(|e| {
            StoreError::Corrupt(format!("{}: {col} is not valid JSON ({e})", self.what))
        })
    }
}

const INCIDENT_COLS: &str = "id, scenario, instance, state, severity, summary, opened_at, \
     updated_at, resolved_at, cause_id";

fn incident_row(row: &Row) -> Result<Incident, StoreError> {
    let id: i64 = row.get("id").map_err(sql("read incident"))?;
    let c = Cols {
        row,
        what: format!("incident {id}"),
    };
    let state: String = c.get("state")?;
    Ok(Incident {
        id,
        scenario: c.get("scenario")?,
        instance: c.get("instance")?,
        state: IncidentState::parse(&state).ok_or_else(|| {
            StoreError::Corrupt(format!("incident {id}: unknown state {}", shown(&state)))
        })?,
        severity: c.get("severity")?,
        summary: c.get("summary")?,
        opened_at: c.time("opened_at")?,
        updated_at: c.time("updated_at")?,
        resolved_at: c.opt_time("resolved_at")?,
        cause: c.get("cause_id")?,
    })
}

fn timeline_row(incident: IncidentId, row: &Row) -> Result<TimelineEntry, StoreError> {
    let seq: i64 = row.get("seq").map_err(sql("read timeline"))?;
    let c = Cols {
        row,
        what: format!("incident {incident} timeline entry {seq}"),
    };
    Ok(TimelineEntry {
        at: c.time("at")?,
        kind: c.get("kind")?,
        message: c.get("message")?,
        data: c.json("data")?,
    })
}

const ATTEMPT_COLS: &str = "id, incident_id, scenario, instance, step, step_index, action, key, \
                            started_at, ended_at, outcome, reason, inputs";

fn attempt_row(row: &Row) -> Result<Attempt, StoreError> {
    let id: i64 = row.get("id").map_err(sql("read attempt"))?;
    let c = Cols {
        row,
        what: format!("attempt {id}"),
    };
    let step_index: i64 = c.get("step_index")?;
    let outcome = c.opt_name("outcome", AttemptOutcome::parse)?;
    Ok(Attempt {
        id,
        incident_id: c.get("incident_id")?,
        scenario: c.get("scenario")?,
        instance: c.get("instance")?,
        step: c.get("step")?,
        step_index: u32::try_from(step_index).map_err(|_| {
            StoreError::Corrupt(format!(
                "attempt {id}: step_index {step_index} out of range"
            ))
        })?,
        action: c.get("action")?,
        key: c.get("key")?,
        started_at: c.time("started_at")?,
        ended_at: c.opt_time("ended_at")?,
        outcome,
        reason: c.get("reason")?,
        inputs: c.json("inputs")?,
    })
}

const OUTBOX_COLS: &str =
    "id, incident_id, key, notifier, kind, due_at, payload, state, attempts, detail, done_at";

fn outbox_row(row: &Row) -> Result<OutboxEntry, StoreError> {
    let id: i64 = row.get("id").map_err(sql("read outbox"))?;
    let c = Cols {
        row,
        what: format!("outbox entry {id}"),
    };
    let state: String = c.get("state")?;
    let attempts: i64 = c.get("attempts")?;
    Ok(OutboxEntry {
        id,
        incident_id: c.get("incident_id")?,
        key: c.get("key")?,
        notifier: c.get("notifier")?,
        kind: c.get("kind")?,
        due_at: c.time("due_at")?,
        payload: c.json("payload")?,
        state: OutboxState::parse(&state).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "outbox entry {id}: unknown state {}",
                shown(&state)
            ))
        })?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        detail: c.get("detail")?,
        done_at: c.opt_time("done_at")?,
    })
}

fn outbox_by_key(conn: &Connection, key: &str) -> Result<Option<OutboxEntry>, StoreError> {
    Ok(query_all(
        conn,
        "find outbox key",
        &format!("SELECT {OUTBOX_COLS} FROM outbox WHERE key = ?1"),
        [key],
        outbox_row,
    )?
    .pop())
}

/// Runs a query and converts every row with `convert`.
fn query_all<T>(
    conn: &Connection,
    op: &'static str,
    sql_text: &str,
    params: impl rusqlite::Params,
    convert: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql_text).map_err(sql(op))?;
    let mut rows = stmt.query(params).map_err(sql(op))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql(op))? {
        out.push(convert(row)?);
    }
    Ok(out)
}

fn incident_exists(conn: &Connection, id: IncidentId) -> Result<bool, StoreError> {
    row_exists(conn, "incidents", id)
}

/// Whether `table` (`incidents`, `job_runs`) has a row `id`.
fn row_exists(conn: &Connection, table: &'static str, id: i64) -> Result<bool, StoreError> {
    let op = match table {
        "incidents" => "find incident",
        _ => "find job run",
    };
    conn.prepare_cached(&format!("SELECT 1 FROM {table} WHERE id = ?1"))
        .and_then(|mut s| s.exists([id]))
        .map_err(sql(op))
}

const JOB_RUN_COLS: &str =
    "id, job, kind, scheduled_for, started_at, ended_at, outcome, summary, data";

fn job_run_row(row: &Row) -> Result<JobRun, StoreError> {
    let id: i64 = row.get("id").map_err(sql("read job run"))?;
    let c = Cols {
        row,
        what: format!("job run {id}"),
    };
    let outcome = c.opt_name("outcome", JobOutcome::parse)?;
    Ok(JobRun {
        id,
        job: c.get("job")?,
        kind: c.get("kind")?,
        scheduled_for: c.time("scheduled_for")?,
        started_at: c.time("started_at")?,
        ended_at: c.opt_time("ended_at")?,
        outcome,
        summary: c.get("summary")?,
        data: c.json("data")?,
    })
}

fn job_run_exists(conn: &Connection, id: JobRunId) -> Result<bool, StoreError> {
    row_exists(conn, "job_runs", id)
}

// ---------------------------------------------------------------------------
// The trait.

impl SqliteStore {
    /// [`query_all`] on the store thread.
    async fn all<T, P>(
        &self,
        op: &'static str,
        sql_text: String,
        params: P,
        convert: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError>
    where
        T: Send + 'static,
        P: rusqlite::Params + Send + 'static,
    {
        self.call(move |conn| query_all(conn, op, &sql_text, params, convert))
            .await
    }

    /// The entries of one timeline table (`timeline` of incident `id`, or
    /// `job_events` of job run `id`) in the order written; `missing` if
    /// there are none because there is no such incident or run.
    async fn timeline_of(
        &self,
        table: &'static str,
        id: i64,
        missing: StoreError,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        let (op, owner_col, owners) = match table {
            "timeline" => ("read timeline", "incident_id", "incidents"),
            _ => ("read job events", "run_id", "job_runs"),
        };
        self.call(move |conn| {
            let entries = query_all(
                conn,
                op,
                &format!(
                    "SELECT seq, at, kind, message, data FROM {table} \
                     WHERE {owner_col} = ?1 ORDER BY seq"
                ),
                [id],
                |row| timeline_row(id, row),
            )?;
            if entries.is_empty() && !row_exists(conn, owners, id)? {
                return Err(missing);
            }
            Ok(entries)
        })
        .await
    }
}

#[async_trait::async_trait]
impl IncidentReads for SqliteStore {
    async fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        let sql = format!(
            "SELECT {INCIDENT_COLS} FROM incidents \
             WHERE state != 'resolved' ORDER BY opened_at, id"
        );
        self.all("list open incidents", sql, (), incident_row).await
    }

    async fn incident(&self, id: IncidentId) -> Result<Option<Incident>, StoreError> {
        let sql = format!("SELECT {INCIDENT_COLS} FROM incidents WHERE id = ?1");
        let found = self.all("read incident", sql, [id], incident_row).await?;
        Ok(found.into_iter().next())
    }

    async fn recent_incidents(&self, limit: usize) -> Result<Vec<Incident>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {INCIDENT_COLS} FROM incidents \
             ORDER BY opened_at DESC, id DESC LIMIT ?1"
        );
        self.all("list recent incidents", sql, [limit], incident_row)
            .await
    }

    async fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEntry>, StoreError> {
        self.timeline_of("timeline", id, StoreError::NotFound(id))
            .await
    }

    async fn timeline_kinds(
        &self,
        id: IncidentId,
        kinds: &[&str],
        last: Option<usize>,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        // One indexed range per kind (incident, kind, seq): the newest
        // `last` of each, merged by position. LIMIT -1 is no limit.
        let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
        let limit = last.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.call(move |conn| {
            let mut found: Vec<(i64, TimelineEntry)> = Vec::new();
            for kind in &kinds {
                found.extend(query_all(
                    conn,
                    "read timeline",
                    // The planner would take the primary key (for the
                    // order) and read every entry: name the index.
                    "SELECT seq, at, kind, message, data FROM timeline INDEXED BY timeline_kind
                     WHERE incident_id = ?1 AND kind = ?2 ORDER BY seq DESC LIMIT ?3",
                    rusqlite::params![id, kind, limit],
                    |row| {
                        let seq: i64 = row.get("seq").map_err(sql("read timeline"))?;
                        Ok((seq, timeline_row(id, row)?))
                    },
                )?);
            }
            if found.is_empty() && !incident_exists(conn, id)? {
                return Err(StoreError::NotFound(id));
            }
            Ok(super::newest_in_order(found, last))
        })
        .await
    }

    async fn timeline_len(&self, id: IncidentId) -> Result<usize, StoreError> {
        self.call(move |conn| {
            let n: i64 = conn
                .prepare_cached("SELECT count(*) FROM timeline WHERE incident_id = ?1")
                .and_then(|mut s| s.query_row([id], |r| r.get(0)))
                .map_err(sql("count timeline"))?;
            if n == 0 && !incident_exists(conn, id)? {
                return Err(StoreError::NotFound(id));
            }
            Ok(usize::try_from(n).unwrap_or_default())
        })
        .await
    }

    async fn timeline_range(
        &self,
        id: IncidentId,
        from: usize,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        // seq counts from 1 within the incident: position p is seq p + 1,
        // so a page is one range of the primary key.
        let after = i64::try_from(from).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let entries = query_all(
                conn,
                "read timeline",
                "SELECT seq, at, kind, message, data FROM timeline \
                 WHERE incident_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                rusqlite::params![id, after, limit],
                |row| timeline_row(id, row),
            )?;
            if entries.is_empty() && !incident_exists(conn, id)? {
                return Err(StoreError::NotFound(id));
            }
            Ok(entries)
        })
        .await
    }
}

#[async_trait::async_trait]
impl LedgerReads for SqliteStore {
    async fn attempts_since(
        &self,
        scenario: &str,
        step: &str,
        instance: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        let params = (
            scenario.to_string(),
            step.to_string(),
            instance.to_string(),
            ts(&since)?,
        );
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM attempts \
             WHERE scenario = ?1 AND step = ?2 AND instance = ?3 AND started_at >= ?4 \
             ORDER BY started_at, id"
        );
        self.all("list attempts", sql, params, attempt_row).await
    }

    async fn scenario_attempts_since(
        &self,
        scenario: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        // attempts_window's first column is the scenario.
        let params = (scenario.to_string(), ts(&since)?);
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM attempts \
             WHERE scenario = ?1 AND started_at >= ?2 ORDER BY started_at, id"
        );
        self.all("list attempts of a scenario", sql, params, attempt_row)
            .await
    }

    async fn action_attempts_since(
        &self,
        action: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        let params = (action.to_string(), ts(&since)?);
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM attempts \
             WHERE action = ?1 AND started_at >= ?2 ORDER BY started_at, id"
        );
        self.all("list attempts of an action", sql, params, attempt_row)
            .await
    }

    async fn attempts_in_flight(&self) -> Result<Vec<Attempt>, StoreError> {
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM attempts \
             WHERE outcome IS NULL ORDER BY started_at, id"
        );
        self.all("list attempts in flight", sql, (), attempt_row)
            .await
    }

    async fn incident_attempts(&self, id: IncidentId) -> Result<Vec<Attempt>, StoreError> {
        self.call(move |conn| {
            let attempts = query_all(
                conn,
                "list incident attempts",
                &format!(
                    "SELECT {ATTEMPT_COLS} FROM attempts \
                     WHERE incident_id = ?1 ORDER BY started_at, id"
                ),
                [id],
                attempt_row,
            )?;
            if attempts.is_empty() && !incident_exists(conn, id)? {
                return Err(StoreError::NotFound(id));
            }
            Ok(attempts)
        })
        .await
    }

    async fn target_attempts_since(
        &self,
        target: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Attempt>, StoreError> {
        let params = (target.to_string(), ts(&since)?);
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM attempts a \
             WHERE started_at >= ?2 AND EXISTS \
             (SELECT 1 FROM json_each(a.inputs, '$.targets') t WHERE t.value = ?1) \
             ORDER BY started_at, id"
        );
        self.all("list target attempts", sql, params, attempt_row)
            .await
    }
}

#[async_trait::async_trait]
impl JobReads for SqliteStore {
    async fn job_runs(&self, job: &str, limit: usize) -> Result<Vec<JobRun>, StoreError> {
        let params = (job.to_string(), i64::try_from(limit).unwrap_or(i64::MAX));
        let sql = format!(
            "SELECT {JOB_RUN_COLS} FROM job_runs WHERE job = ?1 \
             ORDER BY started_at DESC, id DESC LIMIT ?2"
        );
        self.all("list job runs", sql, params, job_run_row).await
    }

    async fn job_events(&self, id: JobRunId) -> Result<Vec<TimelineEntry>, StoreError> {
        self.timeline_of("job_events", id, StoreError::JobRunNotFound(id))
            .await
    }
}

#[async_trait::async_trait]
impl TermReads for SqliteStore {
    async fn current_term(&self) -> Result<Option<Term>, StoreError> {
        self.call(move |conn| {
            let row: Option<(i64, String, String)> = conn
                .prepare_cached("SELECT term, holder, since FROM leader WHERE id = 1")
                .and_then(|mut s| {
                    s.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()
                })
                .map_err(sql("read term"))?;
            row.map(|(term, holder, since)| {
                let since = DateTime::parse_from_rfc3339(&since)
                    .map_err(|e| StoreError::Corrupt(format!("leader.since: {e}")))?
                    .with_timezone(&Utc);
                Ok(Term {
                    term: term as u64,
                    holder,
                    since,
                })
            })
            .transpose()
        })
        .await
    }
}

#[async_trait::async_trait]
impl AlertReads for SqliteStore {
    async fn firing_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        let sql = "SELECT fingerprint, starts_at, status, labels, annotations, ends_at, \
                   generator_url, received_at FROM alerts WHERE status = 'firing' \
                   ORDER BY starts_at, fingerprint";
        self.all("list firing alerts", sql.into(), (), alert_row)
            .await
    }

    async fn firing_alerts_matching(
        &self,
        matchers: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        let Some((name, value)) = lead_matcher(matchers) else {
            return self.firing_alerts().await;
        };
        let (name, value, matchers) = (name.clone(), value.clone(), matchers.clone());
        self.call(move |conn| {
            // CROSS JOIN keeps alert_labels the outer loop: the lookup
            // starts from the index, never from every firing row.
            let rows = query_all(
                conn,
                "list matching alerts",
                "SELECT a.fingerprint, a.starts_at, a.status, a.labels, a.annotations, \
                 a.ends_at, a.generator_url, a.received_at \
                 FROM alert_labels l CROSS JOIN alerts a ON a.fingerprint = l.fingerprint \
                 WHERE l.name = ?1 AND l.value = ?2 AND a.status = 'firing' \
                 ORDER BY a.starts_at, a.fingerprint",
                [name, value],
                alert_row,
            )?;
            Ok(rows
                .into_iter()
                .filter(|a| labels_match(&a.labels, &matchers))
                .collect())
        })
        .await
    }

    async fn firing_alert_count(&self) -> Result<usize, StoreError> {
        self.call(firing_count).await
    }
}

fn firing_count(conn: &Connection) -> Result<usize, StoreError> {
    conn.prepare_cached("SELECT count(*) FROM alerts WHERE status = 'firing'")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .map(|n| n as usize)
        .map_err(sql("count firing alerts"))
}

#[async_trait::async_trait]
impl OutboxReads for SqliteStore {
    async fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let sql =
            format!("SELECT {OUTBOX_COLS} FROM outbox WHERE state = 'pending' ORDER BY due_at, id");
        self.all("list pending outbox", sql, (), outbox_row).await
    }

    async fn outbox_of(&self, id: IncidentId) -> Result<Vec<OutboxEntry>, StoreError> {
        let sql = format!("SELECT {OUTBOX_COLS} FROM outbox WHERE incident_id = ?1 ORDER BY id");
        self.all("list incident outbox", sql, [id], outbox_row)
            .await
    }

    async fn page_refs(
        &self,
        id: IncidentId,
    ) -> Result<std::collections::BTreeMap<String, serde_json::Value>, StoreError> {
        self.call(move |conn| {
            let rows = query_all(
                conn,
                "list page references",
                "SELECT notifier, reference FROM page_refs WHERE incident_id = ?1",
                [id],
                |row| {
                    let c = Cols {
                        row,
                        what: format!("incident {id} page reference"),
                    };
                    Ok((c.get::<String>("notifier")?, c.json("reference")?))
                },
            )?;
            Ok(rows.into_iter().collect())
        })
        .await
    }
}

#[async_trait::async_trait]
impl ObservationReads for SqliteStore {
    async fn observations(
        &self,
        scenario: &str,
        symptom: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<SharedObservation>, StoreError> {
        let sql = "SELECT scenario, symptom, instance, replica, outcome, detail, observed_at \
                   FROM observations WHERE scenario = ?1 AND symptom = ?2 AND observed_at >= ?3 \
                   ORDER BY instance, replica"
            .to_string();
        let params = (scenario.to_string(), symptom.to_string(), ts(&since)?);
        self.all("list observations", sql, params, observation_row)
            .await
    }

    async fn replicas_since(&self, since: DateTime<Utc>) -> Result<Vec<ReplicaBeat>, StoreError> {
        let sql = "SELECT replica, seen_at FROM replicas WHERE seen_at >= ?1 ORDER BY replica"
            .to_string();
        self.all("list replicas", sql, [ts(&since)?], |row| {
            let c = Cols {
                row,
                what: "replica heartbeat".into(),
            };
            Ok(ReplicaBeat {
                replica: c.get("replica")?,
                seen_at: c.time("seen_at")?,
            })
        })
        .await
    }
}

fn observation_row(row: &Row) -> Result<SharedObservation, StoreError> {
    let c = Cols {
        row,
        what: "observation".into(),
    };
    Ok(SharedObservation {
        replica: c.get("replica")?,
        scenario: c.get("scenario")?,
        symptom: c.get("symptom")?,
        instance: c.get("instance")?,
        outcome: c.get("outcome")?,
        detail: c.get("detail")?,
        observed_at: c.time("observed_at")?,
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    /// Runs on the store thread inside the batch transaction: the term
    /// check and the write share one savepoint.
    async fn write(&self, fence: Option<u64>, write: Write) -> Result<Written, StoreError> {
        self.call(move |conn| {
            if let Some(term) = fence {
                let newest: Option<i64> = conn
                    .prepare_cached("SELECT term FROM leader WHERE id = 1")
                    .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
                    .map_err(sql("read term"))?;
                if let Some(newer) = newest.map(|t| t as u64).filter(|&t| t > term) {
                    return Err(StoreError::Fenced { term, newer });
                }
            }
            apply_on(conn, write)
        })
        .await
    }

    /// Every write is already durable when its call returns; this folds
    /// the WAL back into the main file and truncates it, so that after
    /// [`SqliteStore::close`] the store is a single file. A checkpoint kept
    /// from finishing by another reader is logged, not an error: nothing
    /// is lost.
    async fn flush(&self) -> Result<(), StoreError> {
        let (busy, _, _) = self
            .call_alone(|conn| {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(sql("checkpoint"))
            })
            .await?;
        if busy != 0 {
            tracing::warn!("store checkpoint incomplete: another connection is reading");
        }
        Ok(())
    }
}

fn alert_row(row: &Row) -> Result<AlertRecord, StoreError> {
    let fingerprint: String = row.get("fingerprint").map_err(sql("read alert"))?;
    let c = Cols {
        row,
        what: format!("alert {}", shown(&fingerprint)),
    };
    let status: String = c.get("status")?;
    let map = |col: &str| -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        serde_json::from_value(c.json(col)?).map_err(|e| {
            StoreError::Corrupt(format!("{}: {col} is not a string map ({e})", c.what))
        })
    };
    Ok(AlertRecord {
        starts_at: c.time("starts_at")?,
        status: AlertStatus::parse(&status).ok_or_else(|| {
            StoreError::Corrupt(format!("{}: unknown status {}", c.what, shown(&status)))
        })?,
        labels: map("labels")?,
        annotations: map("annotations")?,
        ends_at: c.opt_time("ends_at")?,
        generator_url: c.get("generator_url")?,
        received_at: c.time("received_at")?,
        fingerprint,
    })
}

/// Applies one write (on the store thread, under the request's savepoint).
fn apply_on(conn: &Connection, write: Write) -> Result<Written, StoreError> {
    apply_write!(conn, write)
}

fn open_incident_on(conn: &Connection, new: NewIncident) -> Result<(Incident, bool), StoreError> {
    let at = ts(&new.at)?;
    let existing = query_all(
        conn,
        "find open incident",
        &format!(
            "SELECT {INCIDENT_COLS} FROM incidents \
             WHERE scenario = ?1 AND instance = ?2 AND state != 'resolved'"
        ),
        params![new.scenario, new.instance],
        incident_row,
    )?;
    if let Some(incident) = existing.into_iter().next() {
        return Ok((incident, false));
    }
    conn.prepare_cached(
        "INSERT INTO incidents \
         (scenario, instance, state, severity, summary, opened_at, updated_at) \
         VALUES (?1, ?2, 'open', ?3, ?4, ?5, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            new.scenario,
            new.instance,
            new.severity,
            new.summary,
            at
        ])
    })
    .map_err(sql("insert incident"))?;
    let incident = Incident {
        id: conn.last_insert_rowid(),
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
    Ok((incident, true))
}

fn set_state_on(
    conn: &Connection,
    id: IncidentId,
    state: IncidentState,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = ts(&at)?;
    let current: Option<String> = conn
        .prepare_cached("SELECT state FROM incidents WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(sql("read incident state"))?;
    let current = current.ok_or(StoreError::NotFound(id))?;
    let current = IncidentState::parse(&current).ok_or_else(|| {
        StoreError::Corrupt(format!("incident {id}: unknown state {}", shown(&current)))
    })?;
    if current == IncidentState::Resolved {
        return if state == IncidentState::Resolved {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "incident {id} is resolved; it cannot become {}",
                state.as_str()
            )))
        };
    }
    conn.prepare_cached(
        "UPDATE incidents SET state = ?2, updated_at = ?3, \
         resolved_at = CASE WHEN ?2 = 'resolved' THEN ?3 END WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, state.as_str(), at]))
    .map_err(sql("update incident state"))?;
    Ok(())
}

fn append_on(conn: &Connection, id: IncidentId, entry: TimelineEntry) -> Result<(), StoreError> {
    let at = ts(&entry.at)?;
    let data = json(&entry.data)?;
    let touched = conn
        .prepare_cached("UPDATE incidents SET updated_at = max(updated_at, ?2) WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, at]))
        .map_err(sql("touch incident"))?;
    if touched == 0 {
        return Err(StoreError::NotFound(id));
    }
    conn.prepare_cached(
        "INSERT INTO timeline (incident_id, seq, at, kind, message, data) \
         SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5 \
         FROM timeline WHERE incident_id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, at, entry.kind, entry.message, data]))
    .map_err(sql("append timeline entry"))?;
    Ok(())
}

fn begin_attempt_on(conn: &Connection, new: NewAttempt) -> Result<AttemptId, StoreError> {
    let started_at = ts(&new.started_at)?;
    let inputs = json(&new.inputs)?;
    if !incident_exists(conn, new.incident_id)? {
        return Err(StoreError::NotFound(new.incident_id));
    }
    let used: Option<AttemptId> = conn
        .prepare_cached("SELECT id FROM attempts WHERE key = ?1")
        .and_then(|mut s| s.query_row([&new.key], |r| r.get(0)).optional())
        .map_err(sql("find attempt key"))?;
    if let Some(other) = used {
        return Err(StoreError::Conflict(format!(
            "attempt key already used by attempt {other}"
        )));
    }
    conn.prepare_cached(
        "INSERT INTO attempts (incident_id, scenario, instance, step, step_index, \
         action, key, started_at, inputs) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            new.incident_id,
            new.scenario,
            new.instance,
            new.step,
            new.step_index,
            new.action,
            new.key,
            started_at,
            inputs
        ])
    })
    .map_err(sql("insert attempt"))?;
    Ok(conn.last_insert_rowid())
}

fn finish_attempt_on(
    conn: &Connection,
    id: AttemptId,
    outcome: AttemptOutcome,
    reason: String,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = ts(&at)?;
    let changed = conn
        .prepare_cached(
            "UPDATE attempts SET ended_at = ?2, outcome = ?3, reason = ?4 \
             WHERE id = ?1 AND ended_at IS NULL",
        )
        .and_then(|mut s| s.execute(params![id, at, outcome.as_str(), reason]))
        .map_err(sql("finish attempt"))?;
    ended_once(conn, changed, EndsOnce::Attempt, id, outcome.as_str())
}

fn outbox_enqueue_on(conn: &Connection, new: NewOutbox) -> Result<(OutboxEntry, bool), StoreError> {
    let due = ts(&new.due_at)?;
    let payload = json(&new.payload)?;
    if let Some(e) = outbox_by_key(conn, &new.key)? {
        return Ok((e, false));
    }
    if !incident_exists(conn, new.incident_id)? {
        return Err(StoreError::NotFound(new.incident_id));
    }
    conn.prepare_cached(
        "INSERT INTO outbox (incident_id, key, notifier, kind, due_at, payload, state) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending')",
    )
    .and_then(|mut s| {
        s.execute(params![
            new.incident_id,
            new.key,
            new.notifier,
            new.kind,
            due,
            payload
        ])
    })
    .map_err(sql("insert outbox"))?;
    let e = outbox_by_key(conn, &new.key)?
        .ok_or_else(|| StoreError::Backend("outbox entry vanished".into()))?;
    Ok((e, true))
}

fn outbox_mark_on(conn: &Connection, id: i64, mark: OutboxMark) -> Result<(), StoreError> {
    let due = ts(&mark.due_at)?;
    let at = ts(&mark.at)?;
    let done = (mark.state != OutboxState::Pending).then_some(at);
    let changed = conn
        .prepare_cached(
            "UPDATE outbox SET state = ?2, attempts = ?3, due_at = ?4, detail = ?5, \
             done_at = ?6 WHERE id = ?1 AND state = 'pending'",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                mark.state.as_str(),
                mark.attempts,
                due,
                mark.detail,
                done
            ])
        })
        .map_err(sql("mark outbox"))?;
    if changed == 1 {
        return Ok(());
    }
    let prev: Option<String> = conn
        .prepare_cached("SELECT state FROM outbox WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(sql("read outbox"))?;
    match prev {
        None => Err(StoreError::Conflict(format!("outbox entry {id} not found"))),
        Some(p) if p == mark.state.as_str() => Ok(()),
        Some(p) => Err(StoreError::Conflict(format!(
            "outbox entry {id} already {}",
            shown(&p)
        ))),
    }
}

fn set_page_ref_on(
    conn: &Connection,
    id: IncidentId,
    notifier: String,
    reference: serde_json::Value,
) -> Result<(), StoreError> {
    let reference = json(&reference)?;
    if !incident_exists(conn, id)? {
        return Err(StoreError::NotFound(id));
    }
    conn.prepare_cached(
        "INSERT INTO page_refs (incident_id, notifier, reference) VALUES (?1, ?2, ?3) \
         ON CONFLICT (incident_id, notifier) DO UPDATE SET reference = excluded.reference",
    )
    .and_then(|mut s| s.execute(params![id, notifier, reference]))
    .map_err(sql("store page reference"))?;
    Ok(())
}

fn observe_on(
    conn: &Connection,
    beat: ReplicaBeat,
    observations: Vec<SharedObservation>,
) -> Result<(), StoreError> {
    let forget = ts(&(beat.seen_at - OBSERVATION_RETENTION))?;
    conn.prepare_cached("DELETE FROM observations WHERE observed_at < ?1")
        .and_then(|mut s| s.execute([&forget]))
        .map_err(sql("forget old observations"))?;
    conn.prepare_cached("DELETE FROM replicas WHERE seen_at < ?1")
        .and_then(|mut s| s.execute([&forget]))
        .map_err(sql("forget old replicas"))?;
    // Text timestamps of one format compare as times.
    let seen_at = ts(&beat.seen_at)?;
    conn.prepare_cached(
        "INSERT INTO replicas (replica, seen_at) VALUES (?1, ?2) \
         ON CONFLICT (replica) DO UPDATE SET seen_at = max(seen_at, excluded.seen_at)",
    )
    .and_then(|mut s| s.execute(params![beat.replica, seen_at]))
    .map_err(sql("record heartbeat"))?;
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO observations \
             (scenario, symptom, instance, replica, outcome, detail, observed_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (scenario, symptom, instance, replica) DO UPDATE SET \
             outcome = excluded.outcome, detail = excluded.detail, \
             observed_at = excluded.observed_at \
             WHERE excluded.observed_at >= observations.observed_at",
        )
        .map_err(sql("record observation"))?;
    for o in observations {
        upsert
            .execute(params![
                o.scenario,
                o.symptom,
                o.instance,
                o.replica,
                o.outcome,
                o.detail,
                ts(&o.observed_at)?
            ])
            .map_err(sql("record observation"))?;
    }
    Ok(())
}

fn claim_once_on(
    conn: &Connection,
    key: String,
    at: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let (at, until) = (ts(&at)?, ts(&until)?);
    conn.prepare_cached("DELETE FROM claims WHERE until < ?1")
        .and_then(|mut s| s.execute(params![at]))
        .map_err(sql("forget old claims"))?;
    let n = conn
        .prepare_cached(
            "INSERT INTO claims (key, until) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![key, until]))
        .map_err(sql("claim key"))?;
    Ok(n == 1)
}

fn set_cause_on(
    conn: &Connection,
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
        if !incident_exists(conn, c)? {
            return Err(StoreError::NotFound(c));
        }
    }
    let current: Option<(String, Option<i64>)> = conn
        .prepare_cached("SELECT state, cause_id FROM incidents WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(sql("read incident cause"))?;
    let (state, before) = current.ok_or(StoreError::NotFound(id))?;
    if state == IncidentState::Resolved.as_str() {
        return if before == cause {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!("incident {id} is resolved")))
        };
    }
    let at = ts(&at)?;
    conn.prepare_cached("UPDATE incidents SET cause_id = ?2, updated_at = ?3 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, cause, at]))
        .map_err(sql("set incident cause"))?;
    Ok(())
}

fn lock_target_on(
    conn: &Connection,
    target: String,
    holder: String,
    at: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let term: i64 = conn
        .prepare_cached("SELECT term FROM leader WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(sql("read term"))?
        .unwrap_or(0);
    let (at, until) = (ts(&at)?, ts(&until)?);
    let held: Option<String> = conn
        .prepare_cached(
            "SELECT holder FROM target_locks \
             WHERE target = ?1 AND holder != ?2 AND until > ?3 AND term >= ?4",
        )
        .and_then(|mut s| {
            s.query_row(params![target, holder, at, term], |r| r.get(0))
                .optional()
        })
        .map_err(sql("read target lock"))?;
    if held.is_some() {
        return Ok(held);
    }
    conn.prepare_cached(
        "INSERT INTO target_locks (target, holder, term, until) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (target) DO UPDATE SET holder = ?2, term = ?3, until = ?4",
    )
    .and_then(|mut s| s.execute(params![target, holder, term, until]))
    .map_err(sql("take target lock"))?;
    Ok(None)
}

fn unlock_target_on(conn: &Connection, target: String, holder: String) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM target_locks WHERE target = ?1 AND holder = ?2")
        .and_then(|mut s| s.execute(params![target, holder]))
        .map_err(sql("release target lock"))?;
    Ok(())
}

fn claim_term_on(conn: &Connection, holder: String, at: DateTime<Utc>) -> Result<Term, StoreError> {
    let since = ts(&at)?;
    let term: i64 = conn
        .prepare_cached(
            "INSERT INTO leader (id, term, holder, since) VALUES (1, 1, ?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET term = term + 1, holder = ?1, since = ?2 \
             RETURNING term",
        )
        .and_then(|mut s| s.query_row(params![holder, since], |r| r.get(0)))
        .map_err(sql("claim term"))?;
    Ok(Term {
        term: term as u64,
        holder,
        since: at,
    })
}

fn begin_job_run_on(conn: &Connection, new: NewJobRun) -> Result<JobRunId, StoreError> {
    let scheduled_for = ts(&new.scheduled_for)?;
    let started_at = ts(&new.started_at)?;
    conn.prepare_cached(
        "INSERT INTO job_runs (job, kind, scheduled_for, started_at) \
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![new.job, new.kind, scheduled_for, started_at]))
    .map_err(sql("insert job run"))?;
    Ok(conn.last_insert_rowid())
}

fn append_job_event_on(
    conn: &Connection,
    id: JobRunId,
    entry: TimelineEntry,
) -> Result<(), StoreError> {
    let at = ts(&entry.at)?;
    let data = json(&entry.data)?;
    if !job_run_exists(conn, id)? {
        return Err(StoreError::JobRunNotFound(id));
    }
    conn.prepare_cached(
        "INSERT INTO job_events (run_id, seq, at, kind, message, data) \
         SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5 \
         FROM job_events WHERE run_id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, at, entry.kind, entry.message, data]))
    .map_err(sql("append job event"))?;
    Ok(())
}

fn finish_job_run_on(
    conn: &Connection,
    id: JobRunId,
    outcome: JobOutcome,
    summary: String,
    data: serde_json::Value,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = ts(&at)?;
    let data = json(&data)?;
    let changed = conn
        .prepare_cached(
            "UPDATE job_runs SET ended_at = ?2, outcome = ?3, summary = ?4, data = ?5 \
             WHERE id = ?1 AND outcome IS NULL",
        )
        .and_then(|mut s| s.execute(params![id, at, outcome.as_str(), summary, data]))
        .map_err(sql("finish job run"))?;
    ended_once(conn, changed, EndsOnce::JobRun, id, outcome.as_str())
}

/// After an UPDATE that ends a row only if not yet ended (`changed` rows).
fn ended_once(
    conn: &Connection,
    changed: usize,
    ends: EndsOnce,
    id: i64,
    outcome: &str,
) -> Result<(), StoreError> {
    if changed == 1 {
        return Ok(());
    }
    let previous: Option<Option<String>> = conn
        .prepare_cached(&format!(
            "SELECT outcome FROM {} WHERE id = ?1",
            ends.table()
        ))
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(sql(ends.read_op()))?;
    ends.again(id, previous, outcome, shown)
}

/// One request, so one savepoint: the whole delivery or none of it (an
/// `Err`, such as the firing cap, rolls back what it wrote).
fn record_alerts_on(
    conn: &Connection,
    alerts: &[AlertRecord],
    max_firing: Option<usize>,
) -> Result<(), StoreError> {
    let before = max_firing.map(|_| firing_count(conn)).transpose()?;
    for a in alerts {
        let starts_at = ts(&a.starts_at)?;
        let ends_at = a.ends_at.as_ref().map(ts).transpose()?;
        let received_at = ts(&a.received_at)?;
        if a.status == AlertStatus::Resolved {
            // Exactly this firing: same fingerprint, same startsAt.
            conn.prepare_cached(
                "UPDATE alerts SET status = 'resolved', ends_at = ?3, resolved_at = ?4 \
                 WHERE fingerprint = ?1 AND starts_at = ?2 AND status = 'firing'",
            )
            .and_then(|mut s| s.execute(params![a.fingerprint, starts_at, ends_at, received_at]))
            .map_err(sql("resolve alert"))?;
        }
        let labels = json(&serde_json::to_value(&a.labels).unwrap_or_default())?;
        let annotations = json(&serde_json::to_value(&a.annotations).unwrap_or_default())?;
        let resolved_at = (a.status == AlertStatus::Resolved).then_some(&received_at);
        let inserted = conn
            .prepare_cached(
                "INSERT INTO alerts (fingerprint, starts_at, status, labels, annotations, \
                 ends_at, generator_url, received_at, resolved_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (fingerprint, starts_at) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    a.fingerprint,
                    starts_at,
                    a.status.as_str(),
                    labels,
                    annotations,
                    ends_at,
                    a.generator_url,
                    received_at,
                    resolved_at
                ])
            })
            .map_err(sql("record alert"))?;
        if inserted > 0 && a.status == AlertStatus::Firing {
            let mut s = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO alert_labels (name, value, fingerprint) \
                     VALUES (?1, ?2, ?3)",
                )
                .map_err(sql("index alert labels"))?;
            for (k, v) in &a.labels {
                s.execute(params![k, v, a.fingerprint])
                    .map_err(sql("index alert labels"))?;
            }
        }
    }
    if let (Some(max), Some(before)) = (max_firing, before) {
        let after = firing_count(conn)?;
        if after > before && after > max {
            return Err(StoreError::TooManyFiring { firing: after, max });
        }
    }
    Ok(())
}

/// Retention: at most `max` resolved alerts older than `resolved_before`
/// go, and the label index of fingerprints with no row left.
fn prune_alerts_on(
    conn: &Connection,
    resolved_before: DateTime<Utc>,
    max: usize,
) -> Result<usize, StoreError> {
    let before = ts(&resolved_before)?;
    let gone: Vec<String> = query_all(
        conn,
        "prune alerts",
        "DELETE FROM alerts WHERE (fingerprint, starts_at) IN (\
         SELECT fingerprint, starts_at FROM alerts \
         WHERE status = 'resolved' AND resolved_at < ?1 LIMIT ?2) \
         RETURNING fingerprint",
        params![before, max as i64],
        |r| r.get::<_, String>(0).map_err(sql("prune alerts")),
    )?;
    let mut s = conn
        .prepare_cached(
            "DELETE FROM alert_labels WHERE fingerprint = ?1 \
             AND NOT EXISTS (SELECT 1 FROM alerts WHERE fingerprint = ?1)",
        )
        .map_err(sql("prune alert labels"))?;
    for fp in gone.iter().collect::<std::collections::BTreeSet<_>>() {
        s.execute([fp]).map_err(sql("prune alert labels"))?;
    }
    Ok(gone.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    /// A request for `run_batch`, and where its reply lands.
    fn request<R: Send + 'static>(
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> (Box<dyn Request>, oneshot::Receiver<Result<R, StoreError>>) {
        let (reply, rx) = oneshot::channel();
        let req = Box::new(Call {
            f: Some(f),
            result: None,
            reply,
        });
        (req, rx)
    }

    fn insert_note(n: i64) -> impl FnOnce(&Connection) -> Result<(), StoreError> + Send {
        move |conn| {
            conn.execute("INSERT INTO notes (n) VALUES (?1)", [n])
                .map_err(sql("insert"))?;
            Ok(())
        }
    }

    #[test]
    fn failing_request_rolls_back_alone_in_a_batch() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE notes (n INTEGER)")
            .unwrap();
        let (a, ra) = request(insert_note(1));
        let (b, rb) = request(|conn| {
            insert_note(2)(conn)?;
            Err::<(), _>(StoreError::Conflict("refused after writing".into()))
        });
        let (c, rc) = request(insert_note(3));
        run_batch(&conn, vec![a, b, c]);
        assert!(ra.blocking_recv().unwrap().is_ok());
        assert!(matches!(
            rb.blocking_recv().unwrap(),
            Err(StoreError::Conflict(_))
        ));
        assert!(rc.blocking_recv().unwrap().is_ok());
        let kept: Vec<i64> = conn
            .prepare("SELECT n FROM notes ORDER BY n")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            kept,
            vec![1, 3],
            "the failed request's write must not survive"
        );
        assert!(conn.is_autocommit(), "the batch transaction must be closed");
    }

    /// Overload: a caller that timed out must not leave work behind it.
    #[test]
    fn work_whose_caller_gave_up_is_dropped() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE notes (n INTEGER)")
            .unwrap();
        let (a, ra) = request(insert_note(1));
        let (b, rb) = request(insert_note(2));
        drop(rb);
        run_batch(&conn, vec![a, b]);
        assert!(ra.blocking_recv().unwrap().is_ok());
        let kept: Vec<i64> = conn
            .prepare("SELECT n FROM notes")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kept, vec![1], "the abandoned write did not run");
    }

    #[test]
    fn batch_that_cannot_begin_fails_every_request() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE notes (n INTEGER); BEGIN")
            .unwrap();
        let (a, ra) = request(insert_note(1));
        run_batch(&conn, vec![a]);
        let err = ra.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(err, StoreError::Backend(m) if m.contains("begin")));
    }

    #[tokio::test]
    async fn panicking_request_is_an_error_and_the_store_lives_on() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let r: Result<(), _> = store.call(|_| panic!("bug in a request")).await;
        assert!(matches!(r, Err(StoreError::Backend(m)) if m.contains("panicked")));
        assert!(store.open_incidents().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn connection_is_durable_and_strict() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("medic.db"))
            .await
            .unwrap();
        let (journal, sync, fk, busy) = store
            .call_alone(|conn| {
                let q = |p: &str| -> rusqlite::Result<String> {
                    conn.pragma_query_value(None, p, |r| {
                        r.get::<_, rusqlite::types::Value>(0).map(|v| match v {
                            rusqlite::types::Value::Integer(i) => i.to_string(),
                            rusqlite::types::Value::Text(s) => s,
                            other => format!("{other:?}"),
                        })
                    })
                };
                Ok((
                    q("journal_mode").map_err(sql("pragma"))?,
                    q("synchronous").map_err(sql("pragma"))?,
                    q("foreign_keys").map_err(sql("pragma"))?,
                    q("busy_timeout").map_err(sql("pragma"))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(sync, "2", "synchronous must be FULL");
        assert_eq!(fk, "1");
        assert_eq!(busy, "5000");
    }

    #[test]
    fn timestamps_round_trip_exactly_and_sort_as_text() {
        let times = [
            t(0),
            t(1),
            t(999),
            t(1000),
            t(86_400_000),
            DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap(),
            DateTime::from_timestamp(0, 0).unwrap(),
        ];
        let mut stored: Vec<String> = times.iter().map(|at| ts(at).unwrap()).collect();
        for (at, s) in times.iter().zip(&stored) {
            let back = DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
            assert_eq!(&back, at, "{s}");
        }
        let mut by_time = times.to_vec();
        by_time.sort();
        stored.sort();
        let expected: Vec<String> = by_time.iter().map(|at| ts(at).unwrap()).collect();
        assert_eq!(stored, expected);
    }

    #[test]
    fn timestamps_beyond_year_9999_are_refused() {
        let far = DateTime::from_timestamp(253_402_300_800, 0).unwrap(); // 10000-01-01
        assert!(ts(&far).is_err());
    }

    #[test]
    fn shown_cuts_long_values() {
        assert_eq!(shown("opne"), "\"opne\"");
        assert!(shown(&"x".repeat(100)).ends_with("..."));
        assert!(shown(&"é".repeat(100)).len() < 100);
    }
}
