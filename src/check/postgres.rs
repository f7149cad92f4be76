//! `postgres`: readiness, role, replica lag, and read-only SQL checks.
//!
//! Every run opens a fresh connection, like `pg_isready`: a server that
//! accepts no new connections (too many clients, shutting down) is failing
//! even while old connections still work. The connection carries
//! `statement_timeout` (the symptom's timeout), so the server stops a query
//! when medic stops waiting for it, and `default_transaction_read_only`.
//!
//! What each answer means:
//!
//! | seen | outcome |
//! | --- | --- |
//! | connection refused or reset, closed by the server | failing |
//! | "starting up", "shutting down", "too many clients", crash shutdown | failing |
//! | connect timeout, no route, no answer within the symptom's timeout | unreachable (a candidate: unknown when medic is blind) |
//! | a cluster whose last primary is silent (a timeout, or frozen) and no member answers as primary | unreachable (a candidate; the members' answers are evidence for the judgement) |
//! | name resolution | unknown |
//! | authentication failed, no pg_hba entry, database does not exist | unknown (medic's credentials or config) |
//! | `role` differs from `pg_is_in_recovery()` | failing |
//! | a replica (for `role: replica` or lag limits) whose WAL receiver is not `streaming` | failing |
//! | lag limits on a server that is not in recovery | failing (not a replica) |
//! | lag above `max_lag_bytes` / `max_lag_seconds` | failing |
//! | `sql` value above `above` / below `below` | failing |
//! | `sql` hits the statement timeout, a syntax error, a missing table, a write, a non-number, not one row | unknown (medic cannot tell) |
//! | `sql` hits corrupted data (SQLSTATE XX001/XX002), out of resources (53), I/O errors (58) | failing |

use serde::Deserialize;

/// `check: { postgres: { target: db, ready: true } }` and friends. Several
/// tests may be combined; they run in the order below and the first that
/// does not pass decides.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresParams {
    /// A config target of kind `postgres`.
    pub target: String,
    /// Reachable and answering `SELECT 1` (the runbook's pg_isready).
    #[serde(default)]
    pub ready: bool,
    /// Expected role: `primary` or `replica` (a replica must also be
    /// streaming).
    pub role: Option<String>,
    /// Failing when replay lag exceeds this many bytes (measured on the
    /// replica: the primary's last reported WAL end minus the replay LSN).
    pub max_lag_bytes: Option<u64>,
    /// Failing when replay lag exceeds this many seconds (0 while the
    /// replica has replayed all it received).
    #[serde(default, deserialize_with = "crate::yaml::threshold")]
    pub max_lag_seconds: Option<f64>,
    /// A read-only query returning one number.
    pub sql: Option<String>,
    /// With `sql`: failing when the number is above this.
    #[serde(default, deserialize_with = "crate::yaml::threshold")]
    pub above: Option<f64>,
    /// With `sql`: failing when the number is below this.
    #[serde(default, deserialize_with = "crate::yaml::threshold")]
    pub below: Option<f64>,
}

use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Type};

use std::sync::Arc;

use super::{BuildError, Check};
use crate::config::{Config, PostgresTarget, TargetConfig};
use crate::connect::pg::{Session, SessionError};
use crate::connect::pg_cluster::{Cluster, Seen, View};
use crate::observe::Outcome;

/// One server a check connects to.
struct Server {
    /// The config target (a member's name for clusters).
    name: String,
    /// `host:port`, prefixed to every detail.
    address: String,
    target: PostgresTarget,
    /// Client settings with `statement_timeout` and read-only transactions.
    config: tokio_postgres::Config,
}

/// What a check aims at: one server, or a role in a cluster.
enum Aim {
    Server(Box<Server>),
    /// `target: db` on a cluster: its current primary.
    Primary(Arc<Cluster>, Vec<Server>),
    /// `target: db/replicas`: every member that is neither the primary
    /// nor an old primary.
    Replicas(Arc<Cluster>, Vec<Server>),
    /// `target: db/demoted`: old primaries; failing while one answers as
    /// a primary (fenced or not: it must be rebuilt as a replica).
    Demoted(Arc<Cluster>),
}

/// A runnable `postgres` check.
pub struct PostgresCheck {
    aim: Aim,
    params: PostgresParams,
    /// Bounds the whole connection start-up (TCP connect, TLS, auth), not
    /// only the socket connect that `connect_timeout` covers.
    timeout: Duration,
    /// A session held open to the server last seen healthy (the primary,
    /// for a cluster): it ends the moment the server's socket closes (the
    /// process was killed) or keepalive gives up on a silent peer
    /// (`peer_timeout`), and [`Check::lost`] fires, without waiting for
    /// the next poll.
    held: tokio::sync::Mutex<Option<(String, Session)>>,
    /// medic's vantage judgement (`medic run` attaches it): a cluster
    /// check records every member's answer or silence there, so a silent
    /// primary beside an answering replica is judged unreachable.
    vantage: std::sync::OnceLock<Arc<crate::check::vantage::Vantage>>,
}

impl std::fmt::Debug for PostgresCheck {
    // The config holds the password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCheck")
            .field("address", &self.address())
            .finish()
    }
}

/// `db`, `db/replicas`, `db/demoted`: the target and the role selected.
pub fn split_target(t: &str) -> (&str, Option<&str>) {
    match t.split_once('/') {
        Some((base, role)) => (base, Some(role)),
        None => (t, None),
    }
}

/// The roles a cluster target may select after `/`.
pub const ROLES: &[&str] = &["replicas", "demoted"];

impl PostgresCheck {
    /// `timeout` bounds the connection attempt and, server-side, every
    /// statement (`statement_timeout`).
    pub fn build(
        p: &PostgresParams,
        timeout: Duration,
        config: &Config,
    ) -> Result<Self, BuildError> {
        let (base, role) = split_target(&p.target);
        let server = |name: &str, t: &PostgresTarget| -> Result<Server, BuildError> {
            let mut c = crate::connect::postgres(t, "medic", timeout)
                .map_err(|e| BuildError::Invalid(format!("target {name:?} {e}")))?;
            c.options(format!(
                "-c statement_timeout={} -c default_transaction_read_only=on",
                timeout.as_millis().max(1)
            ));
            Ok(Server {
                name: name.to_string(),
                address: format!("{}:{}", t.host, t.port),
                target: t.clone(),
                config: c,
            })
        };
        let Some(TargetConfig::Postgres(t)) = config.targets.get(base) else {
            return Err(BuildError::Invalid(format!(
                "target {base:?} is not a postgres target"
            )));
        };
        let aim = match (crate::connect::pg_cluster::cluster(config, base), role) {
            (None, None) => Aim::Server(Box::new(server(base, t)?)),
            (None, Some(_)) => {
                return Err(BuildError::Invalid(format!(
                    "target {base:?} is not a cluster (members): it has no roles"
                )));
            }
            (Some(c), role) => {
                let servers = c
                    .members
                    .iter()
                    .map(|m| server(&m.name, &m.target))
                    .collect::<Result<Vec<_>, _>>()?;
                match role {
                    None => Aim::Primary(c, servers),
                    Some("replicas") => Aim::Replicas(c, servers),
                    Some("demoted") => Aim::Demoted(c),
                    Some(other) => {
                        return Err(BuildError::Invalid(format!(
                            "{other:?} is not a role of a cluster: one of {}",
                            ROLES.join(", ")
                        )));
                    }
                }
            }
        };
        Ok(PostgresCheck {
            aim,
            params: p.clone(),
            timeout,
            held: tokio::sync::Mutex::new(None),
            vantage: std::sync::OnceLock::new(),
        })
    }

    /// The address (`host:port`) this check connects to; for a cluster,
    /// its name.
    pub fn address(&self) -> &str {
        match &self.aim {
            Aim::Server(s) => &s.address,
            Aim::Primary(c, _) | Aim::Replicas(c, _) | Aim::Demoted(c) => &c.name,
        }
    }

    async fn connect(&self, s: &Server) -> Result<Session, Outcome> {
        crate::connect::pg::session(&s.target, &s.config, self.timeout)
            .await
            .map_err(|e| session_outcome(&s.address, e))
    }

    async fn observe(&self, s: &Server) -> Result<Outcome, Outcome> {
        let a = &s.address;
        let p = &self.params;
        let session = self.connect(s).await?;
        let client = &session.client;
        if p.ready {
            let row = client
                .query_one("SELECT 1", &[])
                .await
                .map_err(|e| classify(a, &e))?;
            let one: i32 = row.try_get(0).map_err(|e| classify(a, &e))?;
            if one != 1 {
                return Err(Outcome::Failing(format!("{a}: SELECT 1 answered {one}")));
            }
        }
        let wants_replica = p.role.as_deref() == Some("replica")
            || p.max_lag_bytes.is_some()
            || p.max_lag_seconds.is_some();
        if p.role.is_some() || wants_replica {
            let state = replica_state(client).await.map_err(|e| classify(a, &e))?;
            if let Some(role) = &p.role {
                let is = if state.in_recovery {
                    "replica"
                } else {
                    "primary"
                };
                if is != role {
                    return Err(Outcome::Failing(format!(
                        "{a}: is a {is} (pg_is_in_recovery() = {}), expected a {role}",
                        state.in_recovery
                    )));
                }
            }
            if wants_replica {
                self.judge_replica(a, &state)?;
            }
        }
        if let Some(sql) = &p.sql {
            let value = read_only_number(client, sql).await.map_err(|e| match e {
                SqlError::Pg(e) => classify_query(a, &e),
                SqlError::Shape(why) => Outcome::Unknown(format!("{a}: sql {why}")),
            })?;
            if let Some(max) = p.above
                && value > max
            {
                return Err(Outcome::Failing(format!(
                    "{a}: sql returned {}, above {}",
                    num(value),
                    num(max)
                )));
            }
            if let Some(min) = p.below
                && value < min
            {
                return Err(Outcome::Failing(format!(
                    "{a}: sql returned {}, below {}",
                    num(value),
                    num(min)
                )));
            }
        }
        Ok(Outcome::Ok)
    }

    fn judge_replica(&self, a: &str, s: &ReplicaState) -> Result<(), Outcome> {
        if !s.in_recovery {
            return Err(Outcome::Failing(format!(
                "{a}: not a replica (pg_is_in_recovery() = false)"
            )));
        }
        match (&s.receiver_pid, s.status.as_deref()) {
            (Some(_), None) => {
                return Err(Outcome::Unknown(format!(
                    "{a}: cannot read pg_stat_wal_receiver (grant pg_monitor to medic's user)"
                )));
            }
            (None, _) => {
                return Err(Outcome::Failing(format!(
                    "{a}: replica is not streaming (no WAL receiver)"
                )));
            }
            (Some(_), Some("streaming")) => {}
            (Some(_), Some(other)) => {
                return Err(Outcome::Failing(format!(
                    "{a}: replica is not streaming (WAL receiver {other})"
                )));
            }
        }
        if let Some(max) = self.params.max_lag_bytes {
            let Some(lag) = s.lag_bytes else {
                return Err(Outcome::Unknown(format!(
                    "{a}: replica has no WAL position to measure lag from"
                )));
            };
            if lag > max as f64 {
                return Err(Outcome::Failing(format!(
                    "{a}: replica lags {} bytes, limit {max}",
                    num(lag)
                )));
            }
        }
        if let Some(max) = self.params.max_lag_seconds {
            let Some(lag) = s.lag_seconds else {
                return Err(Outcome::Unknown(format!(
                    "{a}: replica is replaying but has no replayed transaction to time"
                )));
            };
            if lag > max {
                return Err(Outcome::Failing(format!(
                    "{a}: replica lags {lag:.1} s, limit {}",
                    num(max)
                )));
            }
        }
        Ok(())
    }

    /// One server: its outcome, and it is held when healthy.
    async fn run_server(&self, s: &Server) -> Outcome {
        let out = match self.observe(s).await {
            Ok(o) | Err(o) => o,
        };
        if out == Outcome::Ok {
            self.hold(s).await;
        }
        out
    }

    /// Opens the held session to `s` unless one is open to it already.
    async fn hold(&self, s: &Server) {
        let mut g = self.held.lock().await;
        if matches!(&*g, Some((n, h)) if *n == s.name && !h.is_closed()) {
            return;
        }
        *g = None;
        if let Ok(h) = self.connect(s).await {
            *g = Some((s.name.clone(), h));
        }
    }

    /// How long a discovery waits for each member: four fifths of the
    /// check's timeout, so a silent member is called silent (and the
    /// others' answers recorded) before the scheduler gives up on the run.
    fn discovery_timeout(&self) -> Duration {
        self.timeout * 4 / 5
    }

    /// Records what each member said in the vantage judgement: an answer
    /// (a role, or a refusal: the host's kernel answered) or silence.
    /// Fresh for three check timeouts (about a symptom's two intervals
    /// plus its timeout; the judgement that needs it follows at once).
    fn record_members(&self, view: &View) {
        let Some(v) = self.vantage.get() else { return };
        let now = tokio::time::Instant::now();
        for (name, seen) in &view.members {
            let o = match seen {
                Seen::Answered(_) => Outcome::Ok,
                Seen::Down {
                    silent: true,
                    detail,
                    ..
                } => Outcome::Unreachable(detail.clone()),
                Seen::Down {
                    broken: true,
                    detail,
                    ..
                } => Outcome::Failing(detail.clone()),
                Seen::Down { .. } => continue,
            };
            v.heard_target(name, &o, now, self.timeout * 3);
        }
    }

    async fn run_primary(&self, c: &Arc<Cluster>, servers: &[Server]) -> Outcome {
        let view = c.discover(self.discovery_timeout()).await;
        self.record_members(&view);
        let Some(primary) = &view.primary else {
            return no_member(c, &view, "primary");
        };
        match servers.iter().find(|s| s.name == *primary) {
            Some(s) => self.run_server(s).await,
            None => Outcome::Unknown(format!("{}: unknown member {primary:?}", c.name)),
        }
    }

    async fn run_replicas(&self, c: &Arc<Cluster>, servers: &[Server]) -> Outcome {
        let view = c.discover(self.discovery_timeout()).await;
        self.record_members(&view);
        let replicas: Vec<&Server> = servers
            .iter()
            .filter(|s| view.primary.as_ref() != Some(&s.name))
            .filter(|s| !view.demoted.contains_key(&s.name))
            .collect();
        if replicas.is_empty() {
            return no_member(c, &view, "replica");
        }
        let outcomes = futures_util::future::join_all(replicas.iter().map(|s| async {
            match self.observe(s).await {
                Ok(o) | Err(o) => o,
            }
        }))
        .await;
        // The worst: failing (or unreachable), then unknown, then ok.
        let mut worst = Outcome::Ok;
        for (s, o) in replicas.iter().zip(outcomes) {
            let o = match o {
                Outcome::Ok => continue,
                Outcome::Failing(d) => Outcome::Failing(format!("{}: {d}", s.name)),
                Outcome::Unreachable(d) => Outcome::Unreachable(format!("{}: {d}", s.name)),
                Outcome::Unknown(d) => Outcome::Unknown(format!("{}: {d}", s.name)),
            };
            if !worst.is_failing() {
                worst = o;
            }
        }
        worst
    }

    async fn run_demoted(&self, c: &Arc<Cluster>) -> Outcome {
        let view = c.discover(self.discovery_timeout()).await;
        let mut back = Vec::new();
        for (name, was_tl) in &view.demoted {
            let Some(Seen::Answered(a)) = view.seen(name) else {
                continue;
            };
            if a.in_recovery {
                // A standby (demoted on disk) that has not followed the new
                // primary within the grace: its WAL went past the fork.
                if let Some(d) = view.stale_standbys.get(name)
                    && *d >= crate::connect::pg_cluster::REJOIN_GRACE
                {
                    back.push(format!(
                        "{name}, primary on timeline {was_tl} before the failover, is back in recovery (a standby, read-only) but has not followed {} to timeline {} in {}: rebuild it as a replica (pg_rewind or a new base backup)",
                        view.primary.as_deref().unwrap_or("the new primary"),
                        view.timeline,
                        humantime::format_duration(Duration::from_secs(d.as_secs()))
                    ));
                }
                continue;
            }
            let fence = match view.fenced.iter().rev().find(|f| f.member == *name) {
                _ if a.read_only => "fenced (default_transaction_read_only = on)".to_string(),
                Some(f) if !f.ok => format!("NOT fenced: the fence failed: {}", f.detail),
                _ => "NOT fenced".to_string(),
            };
            back.push(format!(
                "{name}, primary on timeline {was_tl} before the failover, answers as a primary again (timeline {}) beside {} on timeline {}; {fence}: rebuild it as a replica (pg_rewind or a new base backup)",
                a.timeline,
                view.primary.as_deref().unwrap_or("no primary"),
                view.timeline
            ));
        }
        if back.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Failing(format!("{}: {}", c.name, back.join("; ")))
        }
    }
}

/// No member in the wanted role: failing when the members answered (or
/// are down for sure), unknown when medic could see none of them. No
/// primary because the last one went *silent* (no TCP answer, or a frozen
/// server) is a candidate unreachable: the engine's vantage judgement
/// keeps it (the other members' answers are recorded there) or makes it
/// unknown when medic itself is blind.
fn no_member(c: &Cluster, view: &View, role: &str) -> Outcome {
    if let Some(p) = &view.problem {
        return Outcome::Failing(format!("{}: no single primary: {p}", c.name));
    }
    let seen_something = view
        .members
        .iter()
        .any(|(_, s)| matches!(s, Seen::Answered(_) | Seen::Down { broken: true, .. }));
    let detail = format!(
        "{}: no member answers as {role} ({})",
        c.name,
        view.summary()
    );
    let silent = |n: &str| matches!(view.seen(n), Some(Seen::Down { silent: true, .. }));
    let primary_silent = role == "primary"
        && match c.last_primary() {
            Some(last) => silent(&last),
            None => view.members.iter().any(|(n, _)| silent(n)),
        };
    if primary_silent {
        Outcome::Unreachable(detail)
    } else if seen_something {
        Outcome::Failing(detail)
    } else {
        Outcome::Unknown(detail)
    }
}

/// A session that could not be opened, as an outcome.
fn session_outcome(a: &str, e: SessionError) -> Outcome {
    match e {
        // Silence on the target: a candidate unreachable, judged against
        // medic's vantage (a SIGSTOPped postmaster's kernel still accepts).
        SessionError::ConnectTimeout => Outcome::Unreachable(format!("{a}: connect timed out")),
        SessionError::StartupTimeout => Outcome::Unreachable(format!("{a}: start-up timed out")),
        SessionError::Silent(_) => Outcome::Failing(format!("{a}: {e}")),
        SessionError::Tcp(io) => super::tcp::classify_io(a, &io),
        SessionError::Pg(e) => classify(a, &e),
        SessionError::Config(e) => Outcome::Unknown(format!("{a}: {e}")),
    }
}

#[async_trait::async_trait]
impl Check for PostgresCheck {
    async fn run(&self) -> Outcome {
        match &self.aim {
            Aim::Server(s) => self.run_server(s).await,
            Aim::Primary(c, servers) => self.run_primary(c, servers).await,
            Aim::Replicas(c, servers) => self.run_replicas(c, servers).await,
            Aim::Demoted(c) => self.run_demoted(c).await,
        }
    }

    fn timed_out(&self, after: Duration) -> Outcome {
        super::silent(self.address(), after)
    }

    fn attach_vantage(&self, vantage: &Arc<crate::check::vantage::Vantage>) {
        let _ = self.vantage.set(vantage.clone());
    }

    async fn lost(&self) {
        let mut g = self.held.lock().await;
        let Some((_, s)) = g.as_mut() else {
            return std::future::pending().await;
        };
        s.closed().await;
        *g = None;
    }
}

/// What a server says about its replication.
#[derive(Debug)]
struct ReplicaState {
    in_recovery: bool,
    receiver_pid: Option<i32>,
    status: Option<String>,
    lag_bytes: Option<f64>,
    lag_seconds: Option<f64>,
}

async fn replica_state(c: &Client) -> Result<ReplicaState, tokio_postgres::Error> {
    // latest_end_lsn is the primary's WAL end as last reported by its WAL
    // sender; replay lag in bytes is how far replay is behind it. Replay
    // lag in seconds is 0 while everything received is replayed (an idle
    // primary would otherwise look like growing lag).
    let row = c
        .query_one(
            "SELECT pg_is_in_recovery(), r.pid, r.status,
                    greatest(pg_wal_lsn_diff(r.latest_end_lsn, pg_last_wal_replay_lsn()), 0)::float8,
                    CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                         ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())
                    END::float8
             FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver r ON true",
            &[],
        )
        .await?;
    Ok(ReplicaState {
        in_recovery: row.try_get(0)?,
        receiver_pid: row.try_get(1)?,
        status: row.try_get(2)?,
        lag_bytes: row.try_get(3)?,
        lag_seconds: row.try_get(4)?,
    })
}

enum SqlError {
    Pg(tokio_postgres::Error),
    Shape(String),
}

/// Runs `sql` in a read-only transaction (rolled back) and returns its one
/// number. The extended protocol takes exactly one statement, so `sql`
/// cannot end the transaction and run more.
async fn read_only_number(c: &Client, sql: &str) -> Result<f64, SqlError> {
    c.batch_execute("START TRANSACTION READ ONLY")
        .await
        .map_err(SqlError::Pg)?;
    let rows = c.query(sql, &[]).await;
    // Best effort: the connection is closed at the end of the run anyway.
    let _ = c.batch_execute("ROLLBACK").await;
    let rows = rows.map_err(SqlError::Pg)?;
    if rows.len() != 1 {
        return Err(SqlError::Shape(format!(
            "returned {} rows, expected 1",
            rows.len()
        )));
    }
    let row = &rows[0];
    if row.len() != 1 {
        return Err(SqlError::Shape(format!(
            "returned {} columns, expected 1",
            row.len()
        )));
    }
    let ty = row.columns()[0].type_().clone();
    match row.try_get::<_, Option<Number>>(0) {
        Ok(Some(Number(v))) if v.is_nan() => Err(SqlError::Shape("returned NaN".into())),
        Ok(Some(Number(v))) => Ok(v),
        Ok(None) => Err(SqlError::Shape("returned NULL".into())),
        Err(_) => Err(SqlError::Shape(format!(
            "returned a {ty}, expected a number"
        ))),
    }
}

/// A number of any SQL numeric type (`count(*)` is bigint, `avg` numeric).
struct Number(f64);

impl<'a> FromSql<'a> for Number {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Number(match *ty {
            Type::INT2 => i16::from_sql(ty, raw)? as f64,
            Type::INT4 => i32::from_sql(ty, raw)? as f64,
            Type::INT8 => i64::from_sql(ty, raw)? as f64,
            Type::OID => u32::from_sql(ty, raw)? as f64,
            Type::FLOAT4 => f32::from_sql(ty, raw)? as f64,
            Type::FLOAT8 => f64::from_sql(ty, raw)?,
            Type::BOOL => u8::from(bool::from_sql(ty, raw)?) as f64,
            Type::NUMERIC => numeric(raw)?,
            _ => return Err(format!("{ty} is not a number").into()),
        }))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::OID
                | Type::FLOAT4
                | Type::FLOAT8
                | Type::BOOL
                | Type::NUMERIC
        )
    }
}

/// Decodes PostgreSQL's binary `numeric`: ndigits, weight, sign, dscale,
/// then base-10000 digits, the first worth 10000^weight.
fn numeric(raw: &[u8]) -> Result<f64, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i32;
    let sign = word(2)?;
    match sign {
        0xC000 => return Ok(f64::NAN),
        0xD000 => return Ok(f64::INFINITY),
        0xF000 => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    let mut v = 0f64;
    for i in 0..ndigits {
        v += word(4 + i)? as f64 * 10000f64.powi(weight - i as i32);
    }
    Ok(if sign == 0x4000 { -v } else { v })
}

/// Formats a number without a useless `.0`.
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The SQLSTATE of a server error, if it is one.
fn state(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.as_db_error().map(|d| d.code())
}

/// Errors while connecting or running medic's own probes.
fn classify(a: &str, e: &tokio_postgres::Error) -> Outcome {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let msg = db.message();
        // Class 28: authentication; 3D000: no such database. medic's
        // credentials or config, not the server.
        if code.starts_with("28") || code == "3D000" {
            return Outcome::Unknown(format!("{a}: {msg}"));
        }
        // 57P03 cannot connect now, 53300 too many connections, 57P01/2
        // shutdowns, 53xxx resources, 58xxx I/O, XX corruption: the server
        // is not serving.
        if code.starts_with("57")
            || code.starts_with("53")
            || code.starts_with("58")
            || code.starts_with("08")
            || code.starts_with("XX")
        {
            return Outcome::Failing(format!("{a}: {msg}"));
        }
        return Outcome::Unknown(format!("{a}: {msg} (SQLSTATE {code})"));
    }
    if e.is_closed() {
        return Outcome::Failing(format!("{a}: the server closed the connection"));
    }
    // Walk down to an io::Error: refused/reset means broken, a timeout or
    // no route a silent server (a candidate unreachable), others (name
    // resolution) mean medic cannot see.
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match super::tcp::classify_io(a, io) {
                Outcome::Unreachable(_) if io.kind() == std::io::ErrorKind::TimedOut => {
                    Outcome::Unreachable(format!("{a}: connect timed out"))
                }
                o => o,
            };
        }
        src = s.source();
    }
    // An unexpected EOF or protocol error during startup: the server hung up.
    let text = e.to_string();
    if text.contains("unexpected EOF") || text.contains("connection closed") {
        return Outcome::Failing(format!("{a}: {text}"));
    }
    Outcome::Unknown(format!("{a}: {text}"))
}

/// Errors of a user's `sql`: only errors that say the server or its data is
/// broken are failing; mistakes in the query are medic's blindness.
fn classify_query(a: &str, e: &tokio_postgres::Error) -> Outcome {
    match state(e) {
        Some(s) if *s == SqlState::QUERY_CANCELED => {
            Outcome::Unknown(format!("{a}: sql hit the statement timeout"))
        }
        Some(s) if *s == SqlState::READ_ONLY_SQL_TRANSACTION => Outcome::Unknown(format!(
            "{a}: sql tried to write in a read-only transaction"
        )),
        _ => classify(a, e),
    }
}

impl super::CheckKind for PostgresParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::{field_pos, pos, unknown_field};
        let (base, role) = split_target(&self.target);
        v.target(p, "target", base, &["postgres"], "a postgres check");
        let cluster = v.config.and_then(|c| match c.targets.get(base) {
            Some(TargetConfig::Postgres(t)) => Some(t.is_cluster()),
            _ => None,
        });
        match role {
            Some(r) if !ROLES.contains(&r) => v.err(
                field_pos(p, "target"),
                format!(
                    "{:?} is not a role of a cluster: write {base:?} (the primary), {}",
                    r,
                    ROLES
                        .iter()
                        .map(|r| format!("{:?}", format!("{base}/{r}")))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ),
            Some(_) if cluster == Some(false) => v.err(
                field_pos(p, "target"),
                format!(
                    "target {base:?} is one server, not a cluster (members): it has no roles to select"
                ),
            ),
            Some("demoted")
                if self.role.as_deref() != Some("replica")
                    || self.ready
                    || self.sql.is_some()
                    || self.max_lag_bytes.is_some()
                    || self.max_lag_seconds.is_some() =>
            {
                v.err(
                    pos(p),
                    format!(
                        "a check of {:?} tests one thing: `role: replica` (an old primary that answers as a primary must be rebuilt as a replica)",
                        self.target
                    ),
                )
            }
            _ => {}
        }
        if let Some(role) = &self.role
            && !matches!(role.as_str(), "primary" | "replica")
        {
            v.err(
                field_pos(p, "role"),
                unknown_field("role", role, &["primary", "replica"]),
            );
        }
        let bounds = self.above.is_some() || self.below.is_some();
        match &self.sql {
            Some(sql) => {
                if !is_read_only(sql) {
                    v.err(
                        field_pos(p, "sql"),
                        "sql checks must be read-only: start with SELECT or WITH",
                    );
                }
                if !bounds {
                    v.err(field_pos(p, "sql"), "an sql check needs `above` or `below`");
                }
            }
            None if bounds => v.err(
                field_pos(
                    p,
                    if self.above.is_some() {
                        "above"
                    } else {
                        "below"
                    },
                ),
                "`above` and `below` apply to `sql`, which is missing",
            ),
            None => {}
        }
        let tests = self.ready
            || self.role.is_some()
            || self.max_lag_bytes.is_some()
            || self.max_lag_seconds.is_some()
            || self.sql.is_some();
        if !tests {
            v.err(
                pos(p),
                "a postgres check must test something: ready, role, max_lag_bytes, max_lag_seconds or sql",
            );
        }
    }

    fn target(&self) -> Option<&str> {
        Some(&self.target)
    }

    fn build(
        &self,
        timeout: Duration,
        config: &Config,
    ) -> Result<std::sync::Arc<dyn Check>, BuildError> {
        Ok(std::sync::Arc::new(PostgresCheck::build(
            self, timeout, config,
        )?))
    }
}

/// A first guard against writes; the check also runs in a read-only
/// transaction at run time.
fn is_read_only(sql: &str) -> bool {
    let first = sql
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    first.eq_ignore_ascii_case("select") || first.eq_ignore_ascii_case("with")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_binary_decoding() {
        // 12345.67: ndigits 3, weight 1, sign +, dscale 2: 1 2345 6700.
        let raw: Vec<u8> = [3u16, 1, 0, 2, 1, 2345, 6700]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert!((numeric(&raw).unwrap() - 12345.67).abs() < 1e-9);
        // -0.5: ndigits 1, weight -1, sign -, dscale 1: 5000.
        let raw: Vec<u8> = [1u16, (-1i16) as u16, 0x4000, 1, 5000]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(numeric(&raw).unwrap(), -0.5);
        assert!(numeric(&[0, 1]).is_err(), "truncated input is an error");
        assert_eq!(numeric(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(), 0.0);
    }

    #[test]
    fn numbers_print_without_useless_decimals() {
        assert_eq!(num(3.0), "3");
        assert_eq!(num(0.25), "0.25");
        assert_eq!(num(-2.0), "-2");
    }
}
