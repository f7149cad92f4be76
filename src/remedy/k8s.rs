//! Kubernetes actions, done the way kubectl does them.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::secret::SecretRef;

/// `k8s.rollout-restart`: patch the pod template's restartedAt annotation.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRestartParams {
    /// A config target of kind `kubernetes`.
    pub target: String,
}

/// `k8s.rollout-undo`: back to the previous revision.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutUndoParams {
    pub target: String,
}

/// A value written inline or taken from a secret reference.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    Plain(String),
    Secret(SecretRef),
}

/// `k8s.set-env`: set container environment variables.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetEnvParams {
    pub target: String,
    /// Container name; default: every container.
    pub container: Option<String>,
    pub env: BTreeMap<String, EnvValue>,
}

/// `k8s.scale`: set the replica count.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleParams {
    pub target: String,
    pub replicas: u32,
}
