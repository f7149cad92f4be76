//! `kubernetes`: workload availability and crash-looping pods.

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
    /// ...within this window.
    pub window: Option<Dur>,
}
