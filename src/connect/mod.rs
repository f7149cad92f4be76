//! Connections to targets: the one place a config target becomes a client
//! (PostgreSQL, Redis, Kubernetes, Docker). Checks, actions, jobs, leadership and
//! the store all connect through here, so they connect the same way.
//!
//! Secrets are resolved when the client settings are built, never stored
//! in them as text; errors name what failed (`password: ...`) and leave
//! naming the target to the caller.

pub mod docker;
pub mod pg;
pub mod pg_cluster;
pub mod pg_demote;
pub mod redis_cluster;

#[cfg(feature = "kubernetes")]
use std::path::Path;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::config::{PostgresTarget, RedisTarget};

/// The client settings of a PostgreSQL target (host, port, user, database,
/// password resolved now), as application `app`, giving up on a connect
/// after `timeout`. Callers add what they need on top (keepalives).
pub fn postgres(
    t: &PostgresTarget,
    app: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Config, String> {
    if t.is_cluster() {
        return Err(format!(
            "is a cluster of members ({}): connect to a member",
            t.members.join(", ")
        ));
    }
    let mut c = tokio_postgres::Config::new();
    c.host(&t.host)
        .port(t.port)
        .user(&t.user)
        .dbname(&t.dbname)
        .application_name(app)
        .connect_timeout(timeout);
    if let Some(pw) = &t.password {
        let pw = pw.resolve().map_err(|e| format!("password: {e}"))?;
        c.password(pw.expose());
    }
    Ok(c)
}

/// A client for the redis target `name` (address, TLS, user, password, db);
/// the password is resolved here, once.
pub fn redis(name: &str, t: &RedisTarget) -> Result<redis::Client, String> {
    if t.is_cluster() {
        return Err(format!(
            "target {name:?} is a cluster of members ({}): connect to a member",
            t.members.join(", ")
        ));
    }
    let (host, port) = t
        .address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("bad redis address {:?}", t.address))?;
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
            .map_err(|e| format!("target {name:?} password: {e}"))?;
        settings = settings.set_password(pw.expose());
    }
    let info: ConnectionInfo = addr
        .into_connection_info()
        .map_err(|e| e.to_string())?
        .set_redis_settings(settings);
    redis::Client::open(info).map_err(|e| format!("redis client: {e}"))
}

/// A Kubernetes client from `kubeconfig`, else in-cluster or `~/.kube/config`.
#[cfg(feature = "kubernetes")]
pub async fn kubernetes(kubeconfig: Option<&Path>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes config: {e}"))?,
    };
    kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}
