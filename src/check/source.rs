//! `source`: can medic see through one of its sources (a Prometheus, a
//! Kubernetes API, a Docker Engine)? The monitoring-outage guard.
//!
//! When a source is unreachable, every symptom observed through it is
//! *unknown* (never failing), so nothing is remediated on it, and medic
//! would be silently blind. This check is the one place where "cannot
//! reach the source" is *failing*: the monitoring-system scenario watches
//! each source with it and pages about the blindness. It asks a Prometheus
//! `GET /-/ready` (with the target's credentials), a Kubernetes API
//! `GET /version` and a Docker Engine `GET /_ping` on its socket. It answers within 80 % of the symptom's timeout, so a
//! hanging source counts as failing rather than as the scheduler's
//! "timed out" unknown.

use std::time::Duration;

use serde::Deserialize;

#[cfg(feature = "kubernetes")]
use super::kubernetes::{KubernetesCheck, KubernetesParams};
use super::promql::PrometheusClient;
use super::{BuildError, Check};
use crate::config::{Config, TargetConfig};
use crate::connect::docker::Engine;
use crate::features::Feature;
use crate::observe::Outcome;

/// `check: { source: { target: prometheus } }` (shorthand `{ source: prometheus }`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceParams {
    /// A config target of kind `prometheus`, `kubernetes` or `docker`.
    pub target: String,
}

enum Probe {
    Prometheus(PrometheusClient),
    #[cfg(feature = "kubernetes")]
    Kubernetes(Box<KubernetesCheck>),
    Docker(Engine),
}

/// A runnable `source` check.
pub struct SourceCheck {
    name: String,
    probe: Probe,
    /// Its own bound, inside the symptom's timeout.
    within: Duration,
}

impl std::fmt::Debug for SourceCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceCheck")
            .field("target", &self.name)
            .finish()
    }
}

impl SourceCheck {
    pub fn build(p: &SourceParams, timeout: Duration, config: &Config) -> Result<Self, BuildError> {
        let within = timeout.mul_f64(0.8);
        let probe = match config.targets.get(&p.target) {
            Some(TargetConfig::Prometheus(t)) => {
                Probe::Prometheus(PrometheusClient::new(p.target.clone(), t)?)
            }
            #[cfg(not(feature = "kubernetes"))]
            Some(TargetConfig::Kubernetes(_)) => {
                return Err(BuildError::Invalid(Feature::Kubernetes.needed_by(
                    &format!("a source check of kubernetes target {:?}", p.target),
                )));
            }
            #[cfg(feature = "kubernetes")]
            Some(TargetConfig::Kubernetes(_)) => {
                let kp = KubernetesParams {
                    target: p.target.clone(),
                    available: false,
                    crashloop: false,
                    max_restarts: None,
                    window: None,
                };
                Probe::Kubernetes(Box::new(KubernetesCheck::build(&kp, within, config)?))
            }
            Some(TargetConfig::Docker(t)) => {
                Probe::Docker(Engine::new(&p.target, t, within).map_err(BuildError::Invalid)?)
            }
            _ => {
                return Err(BuildError::Invalid(format!(
                    "target {:?} is not a prometheus, kubernetes or docker target",
                    p.target
                )));
            }
        };
        Ok(SourceCheck {
            name: p.target.clone(),
            probe,
            within,
        })
    }

    /// A check of a Kubernetes API through a given check's client (tests).
    #[cfg(feature = "kubernetes")]
    pub fn kubernetes(name: &str, check: KubernetesCheck, within: Duration) -> Self {
        SourceCheck {
            name: name.to_string(),
            probe: Probe::Kubernetes(Box::new(check)),
            within,
        }
    }
}

#[async_trait::async_trait]
impl Check for SourceCheck {
    async fn run(&self) -> Outcome {
        let blind = |why: String| Outcome::Failing(format!("medic is blind: {why}"));
        match &self.probe {
            Probe::Prometheus(p) => {
                let answer =
                    tokio::time::timeout(self.within, p.get("/-/ready", &[], self.within)).await;
                match answer {
                    Err(_) => blind(format!(
                        "prometheus {} at {} did not answer within {}",
                        self.name,
                        p.base,
                        humantime::format_duration(self.within)
                    )),
                    Ok(Err(e)) => blind(format!("prometheus {} at {} {e}", self.name, p.base)),
                    Ok(Ok(r)) if r.status().is_success() => Outcome::Ok,
                    Ok(Ok(r)) => {
                        let status = r.status().as_u16();
                        let body = r.text().await.unwrap_or_default();
                        blind(format!(
                            "prometheus {} at {} is not ready: HTTP {status} {}",
                            self.name,
                            p.base,
                            body.trim()
                        ))
                    }
                }
            }
            #[cfg(feature = "kubernetes")]
            Probe::Kubernetes(k) => {
                match tokio::time::timeout(self.within, k.api_version()).await {
                    Err(_) => blind(format!(
                        "the Kubernetes API of target {} did not answer within {}",
                        self.name,
                        humantime::format_duration(self.within)
                    )),
                    Ok(Err(e)) => blind(format!(
                        "the Kubernetes API of target {} is unreachable: {e}",
                        self.name
                    )),
                    Ok(Ok(_)) => Outcome::Ok,
                }
            }
            Probe::Docker(engine) => {
                let ping = async {
                    let docker = engine.client().await?;
                    docker.ping().await.map_err(|e| engine.error(e))
                };
                match tokio::time::timeout(self.within, ping).await {
                    Err(_) => blind(format!(
                        "the Docker Engine of target {} at {} did not answer within {}",
                        self.name,
                        engine.socket,
                        humantime::format_duration(self.within)
                    )),
                    Ok(Err(e)) => blind(format!("target {}: {e}", self.name)),
                    Ok(Ok(_)) => Outcome::Ok,
                }
            }
        }
    }
}

impl super::CheckKind for SourceParams {
    /// `{source: TARGET}` is `{source: {target: TARGET}}`.
    fn shorthand(scalar: &marked_yaml::Node) -> Option<marked_yaml::Node> {
        Some(crate::yaml::wrap("target", scalar.clone()))
    }

    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        v.target(
            p,
            "target",
            &self.target,
            &["prometheus", "kubernetes", "docker"],
            "a source check",
        );
        let kubernetes = v
            .config
            .and_then(|c| c.targets.get(&self.target))
            .is_some_and(|t| matches!(t, TargetConfig::Kubernetes(_)));
        if kubernetes
            && let Some(why) = Feature::Kubernetes.missing_for(&format!(
                "a source check of kubernetes target {:?}",
                self.target
            ))
        {
            v.err(crate::yaml::field_pos(p, "target"), why);
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
        Ok(std::sync::Arc::new(SourceCheck::build(
            self, timeout, config,
        )?))
    }
}
