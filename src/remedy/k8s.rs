//! Kubernetes actions, done the way kubectl does them.
//!
//! - `k8s.rollout-restart` is `kubectl rollout restart`: a strategic merge
//!   patch of the pod template annotation `kubectl.kubernetes.io/restartedAt`.
//!   Refused for a paused Deployment (kubectl refuses too) and for an
//!   `OnDelete` StatefulSet or DaemonSet (the patch would restart nothing).
//! - `k8s.rollout-undo` is `kubectl rollout undo` of a Deployment: the
//!   ReplicaSets it controls, by `deployment.kubernetes.io/revision`; the
//!   previous revision's template (without `pod-template-hash`) and
//!   annotations are written back with kubectl's JSON patch. Skipped when the
//!   template already matches; refused for a paused Deployment or without
//!   history.
//! - `k8s.set-env` sets container variables with a strategic merge patch
//!   (by container name, by variable name); a value is plain, one of medic's
//!   secret references (resolved, never shown), or a Kubernetes
//!   `secret_key_ref` (the cluster resolves it: the secret never leaves it).
//! - `k8s.scale` patches the `scale` subresource, as `kubectl scale` does.
//!
//! Reads and writes are plain API requests through the kube client (its
//! config, auth and TLS), so the exact bodies are those tests assert.
//!
//! Restart, undo and scale act on the target's object, or on another of
//! its kind in its cluster: `workload` and `namespace` override the
//! target's name and namespace, and may say `${labels.NAME}` (one incident
//! per deployment restarts that deployment). An expanded name must be a
//! DNS-1123 subdomain and a namespace a DNS-1123 label, or the step is
//! refused (see [`super::template`]).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::template::{self, has_vars};
use super::{Action, BuildError};
use crate::config::Config;
use crate::features::Feature;
use crate::secret::SecretRef;

#[cfg(feature = "kubernetes")]
mod api;
#[cfg(feature = "kubernetes")]
pub use api::{RolloutRestart, RolloutUndo, Scale, SetEnv, Workload};

/// The annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The revision of a ReplicaSet (and of its Deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// `k8s.rollout-restart`: patch the pod template's restartedAt annotation.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRestartParams {
    /// A config target of kind `kubernetes`.
    pub target: String,
    /// Another object of the target's kind than the target's own (may
    /// expand `${labels.NAME}`).
    pub workload: Option<String>,
    /// Another namespace than the target's (may expand `${labels.NAME}`).
    pub namespace: Option<String>,
}

/// `k8s.rollout-undo`: back to the previous revision.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutUndoParams {
    pub target: String,
    pub workload: Option<String>,
    pub namespace: Option<String>,
}

/// A Kubernetes Secret's key, resolved by the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// `{ secret_key_ref: { name, key } }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSecret {
    pub secret_key_ref: SecretKeyRef,
}

/// `{ valueFrom: { secretKeyRef: { name, key } } }`, as a Kubernetes
/// container spec writes it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeValueFrom {
    #[serde(rename = "valueFrom")]
    pub value_from: ValueFrom,
}

/// The `valueFrom` of [`KubeValueFrom`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueFrom {
    #[serde(rename = "secretKeyRef")]
    pub secret_key_ref: SecretKeyRef,
}

/// A value written inline, taken from one of medic's secret references, or
/// (for `k8s.set-env` only) a Kubernetes Secret's key, in either spelling
/// (`secret_key_ref: {...}` or Kubernetes' `valueFrom: { secretKeyRef: {...} }`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    Plain(String),
    Secret(SecretRef),
    Kube(KubeSecret),
    KubeFrom(KubeValueFrom),
}

impl EnvValue {
    /// The Kubernetes Secret's key, when the cluster resolves the value.
    pub fn kube_ref(&self) -> Option<&SecretKeyRef> {
        match self {
            EnvValue::Kube(k) => Some(&k.secret_key_ref),
            EnvValue::KubeFrom(k) => Some(&k.value_from.secret_key_ref),
            EnvValue::Plain(_) | EnvValue::Secret(_) => None,
        }
    }
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
    pub workload: Option<String>,
    pub namespace: Option<String>,
}

/// A step's `workload` and `namespace`, as written (they may expand).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Override {
    pub workload: Option<String>,
    pub namespace: Option<String>,
}

impl Override {
    fn new(workload: &Option<String>, namespace: &Option<String>) -> Self {
        Override {
            workload: workload.clone(),
            namespace: namespace.clone(),
        }
    }

    /// Load-time checks: a literal name or namespace must be DNS-1123.
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::field_pos;
        if let Some(w) = self.workload.as_deref().filter(|w| !has_vars(w))
            && let Err(e) = template::dns1123_subdomain(w)
        {
            v.err(field_pos(p, "workload"), e);
        }
        if let Some(n) = self.namespace.as_deref().filter(|n| !has_vars(n))
            && let Err(e) = template::dns1123_label(n)
        {
            v.err(field_pos(p, "namespace"), e);
        }
    }
}

/// The build error of a `k8s.*` action in a build without the feature
/// (loading refused it already; this is the backstop).
#[cfg(not(feature = "kubernetes"))]
fn missing(kind: &str, _config: &Config) -> Result<std::sync::Arc<dyn Action>, BuildError> {
    Err(BuildError::Invalid(
        Feature::Kubernetes.needed_by(&format!("action `{kind}`")),
    ))
}

/// Target kinds the k8s actions act on.
const K8S: &[&str] = &["kubernetes"];

impl super::ActionKind for RolloutRestartParams {
    fn feature() -> Option<Feature> {
        Some(Feature::Kubernetes)
    }

    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        v.target(p, "target", &self.target, K8S, "k8s.rollout-restart");
        Override::new(&self.workload, &self.namespace).validate(v, p);
    }

    fn expands() -> &'static [&'static str] {
        &["workload", "namespace"]
    }

    fn targets(&self) -> Vec<String> {
        vec![self.target.clone()]
    }

    fn build(&self, config: &Config) -> Result<std::sync::Arc<dyn Action>, BuildError> {
        #[cfg(feature = "kubernetes")]
        return Ok(std::sync::Arc::new(RolloutRestart::build(self, config)?));
        #[cfg(not(feature = "kubernetes"))]
        missing("k8s.rollout-restart", config)
    }
}

impl super::ActionKind for RolloutUndoParams {
    fn feature() -> Option<Feature> {
        Some(Feature::Kubernetes)
    }

    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        v.target(p, "target", &self.target, K8S, "k8s.rollout-undo");
        Override::new(&self.workload, &self.namespace).validate(v, p);
    }

    fn expands() -> &'static [&'static str] {
        &["workload", "namespace"]
    }

    fn targets(&self) -> Vec<String> {
        vec![self.target.clone()]
    }

    fn build(&self, config: &Config) -> Result<std::sync::Arc<dyn Action>, BuildError> {
        #[cfg(feature = "kubernetes")]
        return Ok(std::sync::Arc::new(RolloutUndo::build(self, config)?));
        #[cfg(not(feature = "kubernetes"))]
        missing("k8s.rollout-undo", config)
    }
}

impl super::ActionKind for SetEnvParams {
    fn feature() -> Option<Feature> {
        Some(Feature::Kubernetes)
    }

    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::field_pos;
        v.target(p, "target", &self.target, K8S, "k8s.set-env");
        if self.env.is_empty() {
            v.err(
                field_pos(p, "env"),
                "k8s.set-env needs at least one variable",
            );
        }
        let env = p.as_mapping().and_then(|m| m.get("env"));
        for (name, value) in &self.env {
            if let EnvValue::Secret(r) = value {
                let shown = match r {
                    SecretRef::Env(n) => format!("{{ env: {n} }}"),
                    SecretRef::File(f) => format!("{{ file: {} }}", f.display()),
                };
                let at = env.map_or_else(|| field_pos(p, "env"), |e| field_pos(e, name));
                v.warn(
                    at,
                    format!(
                        "env {name}: medic's secret {shown} would be written into the workload as a plain `value` (readable by anyone who can read its spec, and kept in its ReplicaSet history); reference a Kubernetes Secret instead: `{name}: {{ valueFrom: {{ secretKeyRef: {{ name: SECRET, key: KEY }} }} }}`"
                    ),
                );
            }
        }
    }

    fn targets(&self) -> Vec<String> {
        vec![self.target.clone()]
    }

    fn build(&self, config: &Config) -> Result<std::sync::Arc<dyn Action>, BuildError> {
        #[cfg(feature = "kubernetes")]
        return Ok(std::sync::Arc::new(SetEnv::build(self, config)?));
        #[cfg(not(feature = "kubernetes"))]
        missing("k8s.set-env", config)
    }
}

impl super::ActionKind for ScaleParams {
    fn feature() -> Option<Feature> {
        Some(Feature::Kubernetes)
    }

    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        v.target(p, "target", &self.target, K8S, "k8s.scale");
        Override::new(&self.workload, &self.namespace).validate(v, p);
    }

    fn expands() -> &'static [&'static str] {
        &["workload", "namespace"]
    }

    fn targets(&self) -> Vec<String> {
        vec![self.target.clone()]
    }

    fn build(&self, config: &Config) -> Result<std::sync::Arc<dyn Action>, BuildError> {
        #[cfg(feature = "kubernetes")]
        return Ok(std::sync::Arc::new(Scale::build(self, config)?));
        #[cfg(not(feature = "kubernetes"))]
        missing("k8s.scale", config)
    }
}
