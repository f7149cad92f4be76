//! `redis`: PING, role from INFO replication, and the runbook's
//! SET/GET/DEL round-trip on a medic-owned key.
//!
//! | seen | outcome |
//! | --- | --- |
//! | PONG, expected role, round-trip read back what it wrote | ok |
//! | connection refused or reset, error replies (LOADING, MASTERDOWN, READONLY on the round-trip, OOM) | failing |
//! | another role than expected (`master` / `slave`) | failing |
//! | the round-trip reads back something else, or DEL finds no key | failing |
//! | timeout, no route, no answer within the symptom's timeout (a frozen server) | unreachable (a candidate: unknown when medic is blind) |
//! | authentication failure, NOAUTH, NOPERM (medic's ACL) | unknown |
//! | `persistence:` not met: AOF off, no save points, last save too old, a failed save, AOF rewrite or write | failing |
//!
//! On a cluster (`members:` on the target, [`crate::connect::redis_cluster`])
//! `target: cache` checks the current master and `cache/replicas` every
//! replica (the worst outcome speaks); no member in that role is failing
//! when members answered, unknown when medic saw none of them.
//!
//! The round-trip key is `medic:roundtrip:{nonce}` (one nonce per check,
//! random per process) with a 60 s TTL, so a run cut short leaves nothing
//! behind for long; the value changes on every run.

use serde::Deserialize;

/// `check: { redis: { target: cache, ping: true } }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisParams {
    /// A config target of kind `redis`; for a cluster, `NAME` (its
    /// master) or `NAME/replicas`.
    pub target: String,
    /// Send PING and expect PONG (default true).
    #[serde(default = "yes")]
    pub ping: bool,
    /// Expected role from INFO replication (`master` or `slave`).
    pub role: Option<String>,
    /// The runbook's SET/GET/DEL round-trip on a medic-owned key with a
    /// TTL (fails on a replica: it is read-only).
    #[serde(default)]
    pub roundtrip: bool,
    /// The runbook's persistence requirements (AOF on, RDB save points,
    /// a recent successful save, no failed save or rewrite).
    pub persistence: Option<PersistenceParams>,
}

fn yes() -> bool {
    true
}

/// `persistence: { appendonly: true, save: required, max_last_save_age: 1h }`.
/// Whenever the block is present, a failed RDB save
/// (`rdb_last_bgsave_status:err`), AOF rewrite (`aof_last_bgrewrite_status`)
/// or AOF write (`aof_last_write_status`) is failing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceParams {
    /// `true`: the append-only file must be on (INFO `aof_enabled:1`).
    pub appendonly: Option<bool>,
    /// `required`: RDB save points must be configured (`CONFIG GET save`
    /// not empty).
    pub save: Option<String>,
    /// The last successful RDB save (INFO `rdb_last_save_time`, against
    /// the server's `TIME`) must be younger than this.
    pub max_last_save_age: Option<crate::duration::Dur>,
}

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use tokio::sync::Mutex;

use super::{BuildError, Check};
use crate::config::{Config, TargetConfig};
use crate::connect::redis_cluster::{Cluster, Role, View};
use crate::observe::Outcome;

/// How long a round-trip key lives if its DEL never runs.
const ROUNDTRIP_TTL_MS: u64 = 60_000;

/// A runnable `redis` check. It keeps one connection open between runs, so
/// a run costs one round-trip per test; a broken connection is re-opened at
/// once and the run judged on the fresh one.
pub struct RedisCheck {
    address: String,
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    params: RedisParams,
    /// `medic:roundtrip:{nonce}`.
    key: String,
    runs: AtomicU64,
    /// An idle TCP connection to the server, opened after a run that saw
    /// it healthy: Redis never writes to it, so the moment it reads EOF
    /// (or fails) the server is gone and [`Check::lost`] fires, without
    /// waiting for the next poll.
    sentinel: Mutex<Option<tokio::net::TcpStream>>,
}

impl std::fmt::Debug for RedisCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCheck")
            .field("address", &self.address)
            .finish()
    }
}

/// A random-enough 64-bit nonce without a random-number crate: std's
/// `RandomState` is seeded from the OS per process (and varies per call).
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

impl RedisCheck {
    pub fn build(p: &RedisParams, config: &Config) -> Result<Self, BuildError> {
        let Some(TargetConfig::Redis(t)) = config.targets.get(&p.target) else {
            return Err(BuildError::Invalid(format!(
                "target {:?} is not a redis target",
                p.target
            )));
        };
        let client = crate::connect::redis(&p.target, t).map_err(BuildError::Invalid)?;
        Ok(RedisCheck {
            address: t.address.clone(),
            client,
            conn: Mutex::new(None),
            params: p.clone(),
            key: format!("medic:roundtrip:{:016x}", nonce()),
            runs: AtomicU64::new(0),
            sentinel: Mutex::new(None),
        })
    }

    /// The round-trip key this check owns.
    pub fn roundtrip_key(&self) -> &str {
        &self.key
    }

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        // No response timeout here: the scheduler's per-check timeout bounds
        // the whole run and turns a hang into a candidate `unreachable`.
        self.client
            .get_multiplexed_async_connection_with_config(&AsyncConnectionConfig::new())
            .await
    }

    fn classify(&self, e: &RedisError) -> Outcome {
        let a = &self.address;
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
        let mut no_route = false;
        while let Some(x) = src {
            if let Some(io) = x.downcast_ref::<std::io::Error>() {
                no_route = matches!(
                    io.kind(),
                    std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable
                );
                break;
            }
            src = x.source();
        }
        // Connect errors reach here as text only (redis keeps the
        // io::Error private): ENETUNREACH and EHOSTUNREACH by their words.
        let text = e.to_string();
        no_route |= text.contains("Network is unreachable") || text.contains("No route to host");
        if e.is_timeout() {
            Outcome::Unreachable(format!("{a}: timed out"))
        } else if no_route {
            Outcome::Unreachable(format!("{a}: no route ({})", describe(e)))
        } else if e.is_connection_refusal() {
            Outcome::Failing(format!("{a}: connection refused"))
        } else if e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
        {
            // Credentials or ACLs: medic's blindness, not Redis being down.
            Outcome::Unknown(format!("{a}: not allowed ({})", describe(e)))
        } else {
            // I/O errors on a fresh connection (reset, EOF) and error replies
            // (LOADING, MASTERDOWN, READONLY, OOM...) come from a broken server.
            Outcome::Failing(format!("{a}: {}", describe(e)))
        }
    }

    /// Runs every requested test on `conn`. `Ok` carries the judgement;
    /// `Err` a Redis error still to classify.
    async fn probe(&self, conn: &mut MultiplexedConnection) -> Result<Outcome, RedisError> {
        let a = &self.address;
        let p = &self.params;
        if p.ping {
            let pong = redis::cmd("PING").query_async::<String>(conn).await?;
            if pong != "PONG" {
                return Ok(Outcome::Failing(format!("{a}: PING answered {pong:?}")));
            }
        }
        if let Some(want) = &p.role {
            let info = redis::cmd("INFO")
                .arg("replication")
                .query_async::<String>(conn)
                .await?;
            match info_field(&info, "role") {
                Some(role) if role == want => {}
                Some(role) => {
                    return Ok(Outcome::Failing(format!(
                        "{a}: role is {role}, expected {want}"
                    )));
                }
                None => {
                    return Ok(Outcome::Unknown(format!(
                        "{a}: INFO replication has no role"
                    )));
                }
            }
        }
        if let Some(pp) = &p.persistence
            && let Some(o) = persistence(a, pp, conn).await?
        {
            return Ok(o);
        }
        if p.roundtrip {
            let value = format!("{}", self.runs.fetch_add(1, Ordering::Relaxed));
            redis::cmd("SET")
                .arg(&self.key)
                .arg(&value)
                .arg("PX")
                .arg(ROUNDTRIP_TTL_MS)
                .query_async::<()>(conn)
                .await?;
            let got = redis::cmd("GET")
                .arg(&self.key)
                .query_async::<Option<String>>(conn)
                .await?;
            let deleted = redis::cmd("DEL")
                .arg(&self.key)
                .query_async::<i64>(conn)
                .await?;
            if got.as_deref() != Some(value.as_str()) {
                return Ok(Outcome::Failing(format!(
                    "{a}: round-trip: GET {} returned {got:?} after SET {value:?}",
                    self.key
                )));
            }
            if deleted != 1 {
                return Ok(Outcome::Failing(format!(
                    "{a}: round-trip: DEL {} removed {deleted} keys, expected 1",
                    self.key
                )));
            }
        }
        Ok(Outcome::Ok)
    }
}

/// The persistence requirements on `conn`: `Some` outcome when they are
/// not met (or cannot be read), `None` when they are.
async fn persistence(
    a: &str,
    pp: &PersistenceParams,
    conn: &mut MultiplexedConnection,
) -> Result<Option<Outcome>, RedisError> {
    let info = redis::cmd("INFO")
        .arg("persistence")
        .query_async::<String>(conn)
        .await?;
    for field in [
        "rdb_last_bgsave_status",
        "aof_last_bgrewrite_status",
        "aof_last_write_status",
    ] {
        if info_field(&info, field) == Some("err") {
            return Ok(Some(Outcome::Failing(format!(
                "{a}: {field} is err (see the Redis log: often the data directory is not writable or the disk is full)"
            ))));
        }
    }
    if pp.appendonly == Some(true) {
        match info_field(&info, "aof_enabled") {
            Some("1") => {}
            Some(_) => {
                return Ok(Some(Outcome::Failing(format!(
                    "{a}: appendonly is off (aof_enabled:0); the runbook wants AOF on"
                ))));
            }
            None => {
                return Ok(Some(Outcome::Unknown(format!(
                    "{a}: INFO persistence has no aof_enabled"
                ))));
            }
        }
    }
    if pp.save.as_deref() == Some("required") {
        let v = redis::cmd("CONFIG")
            .arg("GET")
            .arg("save")
            .query_async::<Vec<String>>(conn)
            .await;
        match v {
            Ok(v) => {
                let points = v.get(1).map_or("", |s| s.trim());
                if points.is_empty() {
                    return Ok(Some(Outcome::Failing(format!(
                        "{a}: no RDB save points (CONFIG GET save is empty): snapshots are off"
                    ))));
                }
            }
            Err(e) if e.code().is_some() => {
                // CONFIG renamed away or not allowed for medic's user.
                return Ok(Some(Outcome::Unknown(format!(
                    "{a}: cannot read the save points: {}",
                    describe(&e)
                ))));
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(max) = pp.max_last_save_age {
        let Some(last) =
            info_field(&info, "rdb_last_save_time").and_then(|v| v.parse::<i64>().ok())
        else {
            return Ok(Some(Outcome::Unknown(format!(
                "{a}: INFO persistence has no rdb_last_save_time"
            ))));
        };
        let (now, _): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
        let age = Duration::from_secs(now.saturating_sub(last).max(0) as u64);
        if age > max.get() {
            return Ok(Some(Outcome::Failing(format!(
                "{a}: the last successful RDB save was {} ago, longer than max_last_save_age {}",
                humantime::format_duration(age),
                max
            ))));
        }
    }
    Ok(None)
}

/// An error as Redis wrote it (`READONLY You can't write...`) when it is an
/// error reply, else redis-rs's description.
fn describe(e: &RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    }
}

/// The value of `name:` in an INFO section.
pub(crate) fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

impl RedisCheck {
    /// Opens the sentinel connection if there is none (after a healthy run).
    async fn arm(&self) {
        let mut g = self.sentinel.lock().await;
        if g.is_none() {
            *g = tokio::net::TcpStream::connect(&self.address).await.ok();
        }
    }
}

#[async_trait::async_trait]
impl Check for RedisCheck {
    async fn lost(&self) {
        let mut g = self.sentinel.lock().await;
        let Some(s) = g.as_mut() else {
            return std::future::pending().await;
        };
        let mut buf = [0u8; 256];
        loop {
            if s.readable().await.is_err() {
                break;
            }
            match s.try_read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        *g = None;
    }

    async fn run(&self) -> Outcome {
        let out = self.run_once().await;
        if out == Outcome::Ok {
            self.arm().await;
        }
        out
    }

    fn timed_out(&self, after: std::time::Duration) -> Outcome {
        super::silent(&self.address, after)
    }
}

impl RedisCheck {
    async fn run_once(&self) -> Outcome {
        let mut guard = self.conn.lock().await;
        // Try the held connection first; if it broke, re-open once and judge
        // by the fresh one (a dead held socket says little on its own).
        if let Some(conn) = guard.as_mut() {
            match self.probe(conn).await {
                Ok(o) => return o,
                Err(e) if !(e.is_io_error() || e.is_unrecoverable_error()) => {
                    return self.classify(&e);
                }
                Err(_) => *guard = None,
            }
        }
        let conn = match self.connect().await {
            Ok(c) => guard.insert(c),
            Err(e) => return self.classify(&e),
        };
        match self.probe(conn).await {
            Ok(o) => o,
            Err(e) => {
                if e.is_io_error() || e.is_unrecoverable_error() {
                    *guard = None;
                }
                self.classify(&e)
            }
        }
    }
}

/// A `redis` check on a cluster: its master, or its replicas.
pub struct ClusterCheck {
    cluster: Arc<Cluster>,
    /// `NAME/replicas` rather than the master.
    replicas: bool,
    /// One check per member, with this check's tests.
    members: BTreeMap<String, RedisCheck>,
    timeout: Duration,
    /// The member checked as master last.
    current: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for ClusterCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCheck")
            .field("cluster", &self.cluster.name)
            .field("replicas", &self.replicas)
            .finish()
    }
}

/// The most telling of several outcomes: failing, then unreachable, then
/// unknown, then ok.
fn worst(all: Vec<Outcome>) -> Outcome {
    let rank = |o: &Outcome| match o {
        Outcome::Failing(_) => 0,
        Outcome::Unreachable(_) => 1,
        Outcome::Unknown(_) => 2,
        Outcome::Ok => 3,
    };
    all.into_iter().min_by_key(rank).unwrap_or(Outcome::Ok)
}

fn prefixed(o: Outcome, prefix: &str) -> Outcome {
    match o {
        Outcome::Failing(d) => Outcome::Failing(format!("{prefix}{d}")),
        Outcome::Unreachable(d) => Outcome::Unreachable(format!("{prefix}{d}")),
        Outcome::Unknown(d) => Outcome::Unknown(format!("{prefix}{d}")),
        Outcome::Ok => Outcome::Ok,
    }
}

impl ClusterCheck {
    /// The check of `p.target`, `NAME` or `NAME/replicas` of a cluster;
    /// `timeout` bounds each member's `ROLE` (at most 2 s).
    pub fn build(p: &RedisParams, timeout: Duration, config: &Config) -> Result<Self, BuildError> {
        let (base, role) = match p.target.split_once('/') {
            Some((b, r)) => (b, Some(r)),
            None => (p.target.as_str(), None),
        };
        let Some(cluster) = crate::connect::redis_cluster::cluster(config, base) else {
            return Err(BuildError::Invalid(format!(
                "target {base:?} is not a redis cluster (members)"
            )));
        };
        let replicas = match role {
            None => false,
            Some("replicas") => true,
            Some(r) => {
                return Err(BuildError::Invalid(format!(
                    "{:?}: {r:?} is not a role of a redis cluster",
                    p.target
                )));
            }
        };
        let members = cluster
            .members
            .iter()
            .map(|(n, _)| {
                let mp = RedisParams {
                    target: n.clone(),
                    ..p.clone()
                };
                Ok((n.clone(), RedisCheck::build(&mp, config)?))
            })
            .collect::<Result<_, BuildError>>()?;
        Ok(ClusterCheck {
            cluster,
            replicas,
            members,
            timeout: timeout.min(Duration::from_secs(2)),
            current: std::sync::Mutex::new(None),
        })
    }

    /// No member in `role`: failing when members answered (or are down for
    /// sure), unknown when medic saw none of them.
    fn no_member(&self, view: &View, role: &str) -> Outcome {
        let c = &self.cluster.name;
        if let Some(p) = &view.problem {
            return Outcome::Failing(format!("{c}: no single master: {p}"));
        }
        let detail = format!("{c}: no member answers as {role} ({})", view.summary());
        let seen = view
            .members
            .iter()
            .any(|(_, r)| !matches!(r, Role::Down { broken: false, .. }));
        if seen {
            Outcome::Failing(detail)
        } else {
            Outcome::Unknown(detail)
        }
    }

    /// The member checked as master by the last run.
    pub fn current_master(&self) -> Option<String> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait::async_trait]
impl Check for ClusterCheck {
    async fn lost(&self) {
        let current = self.current_master();
        match current.as_ref().and_then(|m| self.members.get(m)) {
            Some(check) if !self.replicas => check.lost().await,
            _ => std::future::pending().await,
        }
    }

    async fn run(&self) -> Outcome {
        let view = self.cluster.discover(self.timeout).await;
        let c = &self.cluster.name;
        if self.replicas {
            if view.replicas.is_empty() {
                return self.no_member(&view, "replica");
            }
            let runs =
                view.replicas
                    .iter()
                    .filter_map(|n| self.members.get(n).map(|ch| (n, ch)))
                    .map(|(n, ch)| async move {
                        prefixed(ch.run().await, &format!("{c} replica {n}: "))
                    });
            return worst(futures_util::future::join_all(runs).await);
        }
        let Some(m) = view.master.clone() else {
            *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return self.no_member(&view, "master");
        };
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(m.clone());
        match self.members.get(&m) {
            Some(ch) => prefixed(ch.run().await, &format!("{c} master {m}: ")),
            None => Outcome::Unknown(format!("{c}: master {m} is not a member")),
        }
    }

    fn timed_out(&self, after: Duration) -> Outcome {
        super::silent(&self.cluster.name, after)
    }
}

impl super::CheckKind for RedisParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::{field_pos, pos, unknown_field};
        let (base, role) = match self.target.split_once('/') {
            Some((b, r)) => (b, Some(r)),
            None => (self.target.as_str(), None),
        };
        v.target(p, "target", base, &["redis"], "a redis check");
        let cluster = v.config.and_then(|c| match c.targets.get(base) {
            Some(TargetConfig::Redis(t)) => Some(t.is_cluster()),
            _ => None,
        });
        match (role, cluster) {
            (Some("replicas"), Some(false)) => v.err(
                field_pos(p, "target"),
                format!("target {base:?} is one server, not a cluster (members): it has no roles to select"),
            ),
            (Some(r), _) if r != "replicas" => v.err(
                field_pos(p, "target"),
                format!("{r:?} is not a role of a redis cluster: write {base:?} (the master) or {:?}", format!("{base}/replicas")),
            ),
            _ => {}
        }
        if let Some(role) = &self.role
            && !matches!(role.as_str(), "master" | "slave")
        {
            v.err(
                field_pos(p, "role"),
                unknown_field("role", role, &["master", "slave"]),
            );
        }
        if let Some(pp) = &self.persistence {
            let block = p
                .as_mapping()
                .and_then(|m| m.get("persistence"))
                .cloned()
                .unwrap_or_else(|| p.clone());
            if let Some(s) = &pp.save
                && s != "required"
            {
                v.err(
                    field_pos(&block, "save"),
                    unknown_field("save", s, &["required"]),
                );
            }
            if pp.appendonly == Some(false) {
                v.err(
                    field_pos(&block, "appendonly"),
                    "appendonly: false requires nothing; write true (AOF must be on) or leave it out",
                );
            }
            if let Some(d) = pp.max_last_save_age
                && d.get().is_zero()
            {
                v.err(
                    field_pos(&block, "max_last_save_age"),
                    "max_last_save_age must be longer than 0s",
                );
            }
        }
        if !self.ping && self.role.is_none() && !self.roundtrip && self.persistence.is_none() {
            v.err(
                pos(p),
                "a redis check must test something: ping, role, roundtrip or persistence",
            );
        }
    }

    fn target(&self) -> Option<&str> {
        Some(&self.target)
    }

    fn build(
        &self,
        timeout: std::time::Duration,
        config: &Config,
    ) -> Result<std::sync::Arc<dyn Check>, BuildError> {
        let base = self
            .target
            .split_once('/')
            .map_or(self.target.as_str(), |(b, _)| b);
        if self.target.contains('/') || config.redis_members(base).is_some() {
            Ok(std::sync::Arc::new(ClusterCheck::build(
                self, timeout, config,
            )?))
        } else {
            Ok(std::sync::Arc::new(RedisCheck::build(self, config)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields() {
        let info = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n";
        assert_eq!(info_field(info, "role"), Some("slave"));
        assert_eq!(info_field(info, "master_host"), Some("127.0.0.1"));
        assert_eq!(info_field(info, "master"), None, "whole names only");
        assert_eq!(info_field("", "role"), None);
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
    }
}
