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

use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, NoTls};

use super::{BuildError, Check};
use crate::config::{Config, TargetConfig};
use crate::observe::Outcome;

/// A runnable `postgres` check.
pub struct PostgresCheck {
    /// `host:port`, prefixed to every detail.
    address: String,
    config: tokio_postgres::Config,
    params: PostgresParams,
    /// Bounds the whole connection start-up (TCP connect, TLS, auth), not
    /// only the socket connect that `connect_timeout` covers.
    timeout: Duration,
}

impl std::fmt::Debug for PostgresCheck {
    // The config holds the password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCheck")
            .field("address", &self.address)
            .finish()
    }
}

impl PostgresCheck {
    /// `timeout` bounds the connection attempt and, server-side, every
    /// statement (`statement_timeout`).
    pub fn build(
        p: &PostgresParams,
        timeout: Duration,
        config: &Config,
    ) -> Result<Self, BuildError> {
        let Some(TargetConfig::Postgres(t)) = config.targets.get(&p.target) else {
            return Err(BuildError::Invalid(format!(
                "target {:?} is not a postgres target",
                p.target
            )));
        };
        let mut c = crate::connect::postgres(t, "medic", timeout)
            .map_err(|e| BuildError::Invalid(format!("target {:?} {e}", p.target)))?;
        c.options(format!(
            "-c statement_timeout={} -c default_transaction_read_only=on",
            timeout.as_millis().max(1)
        ));
        Ok(PostgresCheck {
            address: format!("{}:{}", t.host, t.port),
            config: c,
            params: p.clone(),
            timeout,
        })
    }

    /// The address (`host:port`) this check connects to.
    pub fn address(&self) -> &str {
        &self.address
    }

    async fn connect(&self) -> Result<Client, Outcome> {
        let a = &self.address;
        let (client, conn) = tokio::time::timeout(self.timeout, self.config.connect(NoTls))
            .await
            .map_err(|_| Outcome::Unreachable(format!("{a}: connect timed out")))?
            .map_err(|e| classify(a, &e))?;
        // The connection task ends when `client` is dropped (end of run) or
        // the server goes away.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    async fn observe(&self) -> Result<Outcome, Outcome> {
        let a = &self.address;
        let p = &self.params;
        let client = self.connect().await?;
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
            let state = replica_state(&client).await.map_err(|e| classify(a, &e))?;
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
                self.judge_replica(&state)?;
            }
        }
        if let Some(sql) = &p.sql {
            let value = read_only_number(&client, sql).await.map_err(|e| match e {
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

    fn judge_replica(&self, s: &ReplicaState) -> Result<(), Outcome> {
        let a = &self.address;
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
}

#[async_trait::async_trait]
impl Check for PostgresCheck {
    async fn run(&self) -> Outcome {
        match self.observe().await {
            Ok(o) | Err(o) => o,
        }
    }

    fn timed_out(&self, after: Duration) -> Outcome {
        super::silent(&self.address, after)
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
        v.target(p, "target", &self.target, &["postgres"], "a postgres check");
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
