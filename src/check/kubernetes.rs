//! `kubernetes`: workload availability, crash-looping and restarting pods.
//!
//! Each run reads the workload (a Deployment, StatefulSet or DaemonSet) and,
//! for pod tests, lists the pods its selector matches: two GETs.
//!
//! The client comes from the target's `kubeconfig` when it names one (read
//! when the check is built: a missing or broken file refuses the scenario);
//! otherwise from the in-cluster service account, then `$KUBECONFIG` or
//! `~/.kube/config`, resolved at the first run and retried while it fails.
//!
//! | seen | outcome |
//! | --- | --- |
//! | fewer available replicas than desired | failing |
//! | a container waiting in CrashLoopBackOff | failing |
//! | a container restarted more than `max_restarts` times (in `window`) | failing |
//! | the workload does not exist (404) | failing: the API server says so |
//! | API server unreachable, timeout, 5xx, 429 | unknown |
//! | 401 / 403 (medic's credentials or RBAC), no usable config | unknown |
//!
//! Restarts in a window: restart counts only grow, so the check keeps a
//! short history per container. The count at the start of the window is
//! the last sample at or before it; before medic has watched a container
//! for a whole window, a pod started inside the window counts all its
//! restarts, an older pod only those medic saw (a lower bound).

use serde::Deserialize;

use crate::duration::Dur;

/// `check: { kubernetes: { target: backend, available: true } }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesParams {
    /// A config target of kind `kubernetes` (a Deployment or StatefulSet).
    pub target: String,
    /// Failing while available replicas < desired.
    #[serde(default)]
    pub available: bool,
    /// Failing while any pod is in CrashLoopBackOff.
    #[serde(default)]
    pub crashloop: bool,
    /// Failing when a pod restarted more than this many times...
    pub max_restarts: Option<u32>,
    /// ...within this window (default: since the pod started).
    pub window: Option<Dur>,
}

use std::time::Duration;

use super::{BuildError, Check};
use crate::config::Config;
use crate::features::Feature;

#[cfg(feature = "kubernetes")]
pub(crate) mod api;
#[cfg(feature = "kubernetes")]
pub use api::{KubernetesCheck, selector_string};

impl super::CheckKind for KubernetesParams {
    fn feature() -> Option<Feature> {
        Some(Feature::Kubernetes)
    }

    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::{field_pos, pos};
        v.target(
            p,
            "target",
            &self.target,
            &["kubernetes"],
            "a kubernetes check",
        );
        if !self.available && !self.crashloop && self.max_restarts.is_none() {
            v.err(
                pos(p),
                "a kubernetes check must test something: available, crashloop or max_restarts",
            );
        }
        if self.window.is_some() && self.max_restarts.is_none() {
            v.err(
                field_pos(p, "window"),
                "`window` applies to `max_restarts`, which is missing",
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
        #[cfg(feature = "kubernetes")]
        return Ok(std::sync::Arc::new(KubernetesCheck::build(
            self, timeout, config,
        )?));
        #[cfg(not(feature = "kubernetes"))]
        {
            let _ = (timeout, config);
            Err(BuildError::Invalid(
                Feature::Kubernetes.needed_by("check `kubernetes`"),
            ))
        }
    }
}
