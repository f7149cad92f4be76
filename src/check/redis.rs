//! `redis`: PING (and, later, role and a SET/GET/DEL round-trip).

use serde::Deserialize;

/// `check: { redis: { target: cache, ping: true } }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisParams {
    /// A config target of kind `redis`.
    pub target: String,
    /// Send PING and expect PONG (default true).
    #[serde(default = "yes")]
    pub ping: bool,
    /// Expected role from INFO replication (`master` or `slave`).
    pub role: Option<String>,
    /// The runbook's SET/GET/DEL round-trip on a medic-owned key.
    #[serde(default)]
    pub roundtrip: bool,
}

fn yes() -> bool {
    true
}

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError,
};
use tokio::sync::Mutex;

use super::{BuildError, Check, Outcome};
use crate::config::{Config, RedisTarget, TargetConfig};

/// A runnable `redis` check. It keeps one connection open between runs, so
/// a run costs one round-trip; a broken connection is re-opened at once.
pub struct RedisCheck {
    address: String,
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    params: RedisParams,
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

/// A client for the redis target `name` (address, TLS, user, password, db);
/// the password is resolved here, once.
pub fn client_for(name: &str, t: &RedisTarget) -> Result<redis::Client, BuildError> {
    let (host, port) = t
        .address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| BuildError::Invalid(format!("bad redis address {:?}", t.address)))?;
    let addr = match &t.tls {
        Some(tls) => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: tls.insecure,
            tls_params: None,
        },
        None => ConnectionAddr::Tcp(host, port),
    };
    let mut settings = redis::RedisConnectionInfo::default().set_db(t.db);
    if let Some(u) = &t.username {
        settings = settings.set_username(u);
    }
    if let Some(pw) = &t.password {
        let pw = pw
            .resolve()
            .map_err(|e| BuildError::Invalid(format!("target {name:?} password: {e}")))?;
        settings = settings.set_password(pw.expose());
    }
    let info: ConnectionInfo = addr
        .into_connection_info()
        .map_err(|e| BuildError::Invalid(e.to_string()))?
        .set_redis_settings(settings);
    redis::Client::open(info).map_err(|e| BuildError::Invalid(format!("redis client: {e}")))
}

impl RedisCheck {
    pub fn build(p: &RedisParams, config: &Config) -> Result<Self, BuildError> {
        if p.role.is_some() || p.roundtrip {
            return Err(BuildError::NotImplemented("redis (role, roundtrip)"));
        }
        let Some(TargetConfig::Redis(t)) = config.targets.get(&p.target) else {
            return Err(BuildError::Invalid(format!(
                "target {:?} is not a redis target",
                p.target
            )));
        };
        let client = client_for(&p.target, t)?;
        Ok(RedisCheck {
            address: t.address.clone(),
            client,
            conn: Mutex::new(None),
            params: p.clone(),
            sentinel: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        // No response timeout here: the scheduler's per-check timeout bounds
        // the whole run and turns a hang into `unknown`.
        self.client
            .get_multiplexed_async_connection_with_config(&AsyncConnectionConfig::new())
            .await
    }

    fn classify(&self, e: &RedisError) -> Outcome {
        let a = &self.address;
        if e.is_timeout() {
            Outcome::Unknown(format!("{a}: timed out"))
        } else if e.is_connection_refusal() {
            Outcome::Failing(format!("{a}: connection refused"))
        } else if e.kind() == redis::ErrorKind::AuthenticationFailed {
            // A credentials problem is medic's blindness, not Redis being down.
            Outcome::Unknown(format!("{a}: authentication failed ({e})"))
        } else {
            // I/O errors on a fresh connection (reset, EOF) and error replies
            // (LOADING, MASTERDOWN...) come from a broken server.
            Outcome::Failing(format!("{a}: {e}"))
        }
    }
}

async fn ping(conn: &mut MultiplexedConnection) -> Result<String, RedisError> {
    redis::cmd("PING").query_async::<String>(conn).await
}

impl RedisCheck {
    fn judge(&self, pong: String) -> Outcome {
        if pong == "PONG" {
            Outcome::Ok
        } else {
            Outcome::Failing(format!("{}: PING answered {pong:?}", self.address))
        }
    }
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
        let out = self.ping_once().await;
        if out == Outcome::Ok {
            self.arm().await;
        }
        out
    }
}

impl RedisCheck {
    async fn ping_once(&self) -> Outcome {
        if !self.params.ping {
            return Outcome::Ok;
        }
        let mut guard = self.conn.lock().await;
        // Try the held connection first; if it broke, re-open once and judge
        // by the fresh one (a dead held socket says little on its own).
        if let Some(conn) = guard.as_mut() {
            match ping(conn).await {
                Ok(o) => return self.judge(o),
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
        match ping(conn).await {
            Ok(o) => self.judge(o),
            Err(e) => {
                *guard = None;
                self.classify(&e)
            }
        }
    }
}
