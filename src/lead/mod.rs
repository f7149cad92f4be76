//! Leadership: exactly one medic replica evaluates and acts.
//!
//! Leadership comes from an existing engine, never a home-made protocol:
//! - [`postgres`]: a session-level advisory lock in the store's database,
//!   held by a dedicated connection inside an open transaction, so that a
//!   leader that stops answering (killed, paused, cut off) loses it when the
//!   server ends its session (`idle_in_transaction_session_timeout`);
//! - `kubernetes`: a `coordination.k8s.io/v1` Lease, renewed while held
//!   and taken over once its holder stops renewing for `leaseDurationSeconds`
//!   (the `kubernetes` feature);
//! - `single`: one replica, always the leader (the SQLite store).
//!
//! Winning the election is not enough to act: the winner claims a new term
//! in the store ([`crate::store::Store::claim_term`]); every write of its
//! engine carries that term (the fencing token, [`crate::store::Fenced`])
//! and the store refuses writes of older terms. A deposed leader that has
//! not noticed yet thus cannot change anything.

#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod postgres;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, LeadershipConfig, StoreConfig};
use crate::store::prelude::*;

/// What this replica is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Rules loaded, no incidents opened, no actions.
    Follower,
    /// Acts, with this term as its fencing token.
    Leader(u64),
}

impl Role {
    /// `leader` or `follower`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Leader(_) => "leader",
        }
    }

    /// The term, when leading.
    pub fn term(self) -> Option<u64> {
        match self {
            Role::Leader(t) => Some(t),
            Role::Follower => None,
        }
    }
}

/// Leadership errors.
#[derive(Debug, thiserror::Error)]
pub enum LeadError {
    #[error("leadership: {0}")]
    Setup(String),
}

/// This replica's identity: `$MEDIC_IDENTITY`, else the pod or host name,
/// with the process id (two processes on one host stay distinct).
pub fn identity() -> String {
    if let Ok(id) = std::env::var("MEDIC_IDENTITY")
        && !id.is_empty()
    {
        return id;
    }
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "medic".into());
    format!("{host}-{}", std::process::id())
}

/// How often a follower tries to take over, for a lease of `lease`.
pub fn retry_period(lease: Duration) -> Duration {
    (lease / 5).clamp(Duration::from_millis(100), Duration::from_secs(2))
}

/// Starts the configured election; the receiver follows this replica's
/// role until `stop` (then it ends as a follower, leadership released).
pub async fn start(
    config: &Config,
    store: Arc<dyn Store>,
    clock: Clock,
    stop: CancellationToken,
) -> Result<(watch::Receiver<Role>, tokio::task::JoinHandle<()>), LeadError> {
    let (tx, rx) = watch::channel(Role::Follower);
    let me = identity();
    let handle = match config.leadership() {
        LeadershipConfig::Single => tokio::spawn(single(store, clock, me, tx, stop)),
        LeadershipConfig::Postgres(l) => {
            let StoreConfig::Postgres(target) = &config.store else {
                return Err(LeadError::Setup(
                    "an advisory lock needs the PostgreSQL store".into(),
                ));
            };
            let pg = postgres::pg_config(target).map_err(LeadError::Setup)?;
            let elector = postgres::Elector {
                pg,
                lease: l.lease_duration.get(),
                identity: me,
                store,
                clock,
            };
            tokio::spawn(elector.run(tx, stop))
        }
        #[cfg(not(feature = "kubernetes"))]
        LeadershipConfig::Kubernetes(_) => {
            return Err(LeadError::Setup(
                crate::features::Feature::Kubernetes.needed_by("leadership `kubernetes`"),
            ));
        }
        #[cfg(feature = "kubernetes")]
        LeadershipConfig::Kubernetes(l) => {
            let client = crate::connect::kubernetes(l.kubeconfig.as_deref())
                .await
                .map_err(LeadError::Setup)?;
            let ns = l
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            let elector = kubernetes::Elector {
                api: kube::Api::namespaced(client, &ns),
                name: l.name.clone(),
                lease: l.lease_duration.get(),
                identity: me,
                store,
                clock,
            };
            tokio::spawn(elector.run(tx, stop))
        }
    };
    Ok((rx, handle))
}

/// Claims a term for `identity`, retrying store failures until `stop`.
pub(crate) async fn claim(
    store: &dyn Store,
    clock: &Clock,
    identity: &str,
    stop: &CancellationToken,
) -> Option<u64> {
    loop {
        match store.claim_term(identity, clock.now()).await {
            Ok(t) => return Some(t.term),
            Err(e) => tracing::error!(error = %e, "cannot claim a leadership term; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// `single`: leader from start to stop, with one claimed term.
async fn single(
    store: Arc<dyn Store>,
    clock: Clock,
    identity: String,
    tx: watch::Sender<Role>,
    stop: CancellationToken,
) {
    if let Some(term) = claim(&*store, &clock, &identity, &stop).await {
        tracing::info!(term, "leader (single replica)");
        tx.send_replace(Role::Leader(term));
    }
    stop.cancelled().await;
    tx.send_replace(Role::Follower);
}
