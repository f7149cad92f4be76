//! Leadership from a `coordination.k8s.io/v1` Lease, as client-go's leader
//! election does it:
//! - no Lease: create it, holding it (`holderIdentity`, `acquireTime`,
//!   `renewTime`, `leaseDurationSeconds`, `leaseTransitions: 0`);
//! - held by us: renew (`renewTime`) every [`super::retry_period`]; a
//!   leader that has not renewed for two thirds of the lease steps down
//!   before anyone may take over;
//! - held by another: take over (new holder, `leaseTransitions + 1`) once
//!   its record has not changed for `leaseDurationSeconds`, measured on our
//!   own clock from when we saw it change (no trust in clock agreement).
//!
//! Every write is a replace with the `resourceVersion` read, so two
//! replicas racing for an expired lease cannot both win (409 Conflict).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Role;
use crate::clock::Clock;
use crate::store::prelude::*;

/// One replica's campaign for the Lease.
pub struct Elector {
    pub api: Api<Lease>,
    pub name: String,
    pub lease: Duration,
    pub identity: String,
    pub store: Arc<dyn Store>,
    pub clock: Clock,
}

/// What we last saw of someone else's record, and when it last changed.
struct Observed {
    holder: String,
    renew: Option<MicroTime>,
    at: Instant,
}

fn micro(clock: &Clock) -> MicroTime {
    let now = clock.now();
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_microsecond(now.timestamp_micros())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

impl Elector {
    /// Campaigns until `stop`, publishing the role on `tx`; releases the
    /// Lease on stop when holding it.
    pub async fn run(self, tx: watch::Sender<Role>, stop: CancellationToken) {
        let retry = super::retry_period(self.lease);
        let renew_deadline = self.lease * 2 / 3;
        let mut observed: Option<Observed> = None;
        let mut last_renew: Option<Instant> = None;
        loop {
            let held = match self.try_acquire_or_renew(&mut observed).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "lease request failed");
                    false
                }
            };
            let leading = tx.borrow().term().is_some();
            if held {
                last_renew = Some(Instant::now());
                if !leading {
                    let Some(term) =
                        super::claim(&*self.store, &self.clock, &self.identity, &stop).await
                    else {
                        break;
                    };
                    tracing::info!(term, identity = %self.identity, lease = %self.name, "leader: lease held");
                    tx.send_replace(Role::Leader(term));
                }
            } else if leading && last_renew.is_none_or(|t| t.elapsed() >= renew_deadline) {
                tracing::warn!(lease = %self.name, "lease not renewed in time: stepping down");
                tx.send_replace(Role::Follower);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(retry) => {}
            }
        }
        if tx.borrow().term().is_some() {
            self.release().await;
        }
        tx.send_replace(Role::Follower);
    }

    /// One round; true when we hold the lease afterwards.
    async fn try_acquire_or_renew(&self, observed: &mut Option<Observed>) -> Result<bool, String> {
        let now = micro(&self.clock);
        let secs = i32::try_from(self.lease.as_secs().max(1)).unwrap_or(i32::MAX);
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| format!("get lease {}: {e}", self.name))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Someone else created it first.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(format!("create lease {}: {e}", self.name)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mut next = spec.clone();
        if holder == self.identity {
            next.renew_time = Some(now);
            next.lease_duration_seconds = Some(secs);
        } else {
            // Another holder (or none): expired once its record has not
            // changed for its lease duration, on our clock.
            let changed = observed
                .as_ref()
                .is_none_or(|o| o.holder != holder || o.renew != spec.renew_time);
            if changed {
                *observed = Some(Observed {
                    holder: holder.clone(),
                    renew: spec.renew_time.clone(),
                    at: Instant::now(),
                });
            }
            let duration = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(secs)).unwrap_or(1),
            );
            let expired = holder.is_empty()
                || observed
                    .as_ref()
                    .is_some_and(|o| o.at.elapsed() >= duration);
            if !expired {
                return Ok(false);
            }
            tracing::info!(lease = %self.name, previous = %holder, "lease expired: taking over");
            next.holder_identity = Some(self.identity.clone());
            next.acquire_time = Some(now.clone());
            next.renew_time = Some(now);
            next.lease_duration_seconds = Some(secs);
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(next);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(format!("update lease {}: {e}", self.name)),
        }
    }

    /// Gives the lease up so a follower need not wait for it to expire.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, lease = %self.name, "could not release the lease");
        }
    }
}
