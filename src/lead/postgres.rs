//! Leadership from a PostgreSQL advisory lock.
//!
//! A dedicated connection (not the store's) sets
//! `idle_in_transaction_session_timeout` to the lease duration, opens a
//! transaction and takes a session-level advisory lock
//! (`pg_try_advisory_lock`). The leader then runs a heartbeat (`SELECT 1`)
//! in that transaction every third of the lease:
//! - killed (kill -9, crash): the kernel closes the socket, the server ends
//!   the session and the lock is free at once;
//! - paused (SIGSTOP) or cut off: the session sits idle in its transaction
//!   past the timeout, the server ends it and the lock is free within one
//!   lease (TCP keepalives would not see a paused process: its kernel
//!   still answers them);
//! - a heartbeat that fails or takes longer than a third of the lease:
//!   the leader steps down itself and starts over as a follower.
//!
//! Followers try the lock every [`super::retry_period`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

use super::Role;
use crate::clock::Clock;
use crate::config::PostgresTarget;
use crate::store::prelude::*;

/// The advisory lock key ("medicldr").
pub const LOCK_KEY: i64 = 0x6d65_6469_636c_6472;

/// The connection settings of a store target (password resolved now).
pub fn pg_config(target: &PostgresTarget) -> Result<tokio_postgres::Config, String> {
    let mut config = crate::connect::postgres(target, "medic-leader", Duration::from_secs(5))
        .map_err(|e| format!("store {e}"))?;
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5));
    Ok(config)
}

/// One replica's campaign for the advisory lock.
pub struct Elector {
    pub pg: tokio_postgres::Config,
    pub lease: Duration,
    pub identity: String,
    pub store: Arc<dyn Store>,
    pub clock: Clock,
}

impl Elector {
    /// Campaigns until `stop`, publishing the role on `tx`.
    pub async fn run(self, tx: watch::Sender<Role>, stop: CancellationToken) {
        let retry = super::retry_period(self.lease);
        while !stop.is_cancelled() {
            match self.campaign(&tx, &stop).await {
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "advisory lock connection failed"),
            }
            if tx.borrow().term().is_some() {
                tracing::warn!("leadership lost: stepping down");
                tx.send_replace(Role::Follower);
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(retry) => {}
            }
        }
        tx.send_replace(Role::Follower);
    }

    async fn connect(&self) -> Result<Client, String> {
        let (client, conn) = self
            .pg
            .connect(NoTls)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let ms = self.lease.as_millis().max(1);
        client
            .batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = {ms}; \
                 SET statement_timeout = {ms}"
            ))
            .await
            .map_err(|e| format!("session settings: {e}"))?;
        Ok(client)
    }

    /// One connection: wait for the lock, then hold it while the heartbeat
    /// holds. Returns when the lock (or the connection) is lost, or on stop.
    async fn campaign(
        &self,
        tx: &watch::Sender<Role>,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let client = self.connect().await?;
        let retry = super::retry_period(self.lease);
        let beat = self.lease / 3;
        loop {
            // The transaction first: from the moment the lock is held, a
            // paused holder is one the server will time out.
            let got = tokio::time::timeout(beat, async {
                client.batch_execute("BEGIN").await?;
                let got: bool = client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
                    .await?
                    .get(0);
                if !got {
                    client.batch_execute("ROLLBACK").await?;
                }
                Ok::<_, tokio_postgres::Error>(got)
            })
            .await
            .map_err(|_| "lock attempt timed out".to_string())?
            .map_err(|e| format!("lock attempt: {e}"))?;
            if got {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(retry) => {}
            }
        }
        let Some(term) = super::claim(&*self.store, &self.clock, &self.identity, stop).await else {
            return Ok(());
        };
        tracing::info!(term, identity = %self.identity, "leader: advisory lock held");
        tx.send_replace(Role::Leader(term));
        let mut ticker = tokio::time::interval(beat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    // Dropping the connection releases the lock; say so first.
                    let _ = client.batch_execute("ROLLBACK").await;
                    let _ = client
                        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
                        .await;
                    return Ok(());
                }
                _ = ticker.tick() => {}
            }
            match tokio::time::timeout(beat, client.batch_execute("SELECT 1")).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("heartbeat: {e}")),
                Err(_) => return Err("heartbeat timed out".into()),
            }
        }
    }
}
