//! `route53.failover`: repoint a DNS record to the secondary target.
//!
//! One UPSERT batch (aws-sdk-route53), then medic polls GetChange itself
//! until INSYNC within `within` (the SDK's waiter sleeps 30 s and more
//! between polls): first after 500 ms, then backing off to 5 s. Throttling
//! and PriorRequestNotComplete answers are retried with exponential backoff
//! (the SDK's own retries are off, so every attempt is medic's and bounded
//! by the step's deadline). Finally the record is read back: the step
//! works only if it now holds the secondary values.
//!
//! Preconditions: the managed record exists, its TTL is at most the
//! target's `max_ttl` (default 60 s: with a longer TTL resolvers keep the
//! old address and the failover does not take effect), and it does not
//! already point at the secondary (then there is nothing to do, and an
//! attempt found in flight after a crash is reconciled by reading it back).

use std::time::Duration;

use serde::Deserialize;

use super::{Action, BuildError};
use crate::config::Config;
use crate::duration::Dur;
use crate::features::Feature;

#[cfg(feature = "aws")]
mod api;
#[cfg(feature = "aws")]
pub use api::Failover;

/// Default `within`: how long to wait for INSYNC.
pub const DEFAULT_WITHIN: Dur = Dur::secs(300);

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverParams {
    /// A config target of kind `route53`.
    pub target: String,
    /// How long to wait for INSYNC.
    pub within: Option<Dur>,
}

/// How medic polls and backs off (shorter in tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacing {
    /// First GetChange after this long.
    pub first_poll: Duration,
    /// Polls back off up to this.
    pub max_poll: Duration,
    /// First wait after Throttling / PriorRequestNotComplete.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            first_poll: Duration::from_millis(500),
            max_poll: Duration::from_secs(5),
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl super::ActionKind for FailoverParams {
    fn feature() -> Option<Feature> {
        Some(Feature::Aws)
    }

    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::field_pos;
        v.target(p, "target", &self.target, &["route53"], "route53.failover");
        if let Some(d) = self.within
            && d.get().is_zero()
        {
            v.err(field_pos(p, "within"), "within must be longer than 0s");
        }
    }

    fn targets(&self) -> Vec<String> {
        vec![self.target.clone()]
    }

    fn build(&self, config: &Config) -> Result<std::sync::Arc<dyn Action>, BuildError> {
        #[cfg(feature = "aws")]
        return Ok(std::sync::Arc::new(Failover::build(self, config)?));
        #[cfg(not(feature = "aws"))]
        {
            let _ = config;
            Err(BuildError::Invalid(
                Feature::Aws.needed_by("action `route53.failover`"),
            ))
        }
    }
}
