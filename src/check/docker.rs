//! `docker`: container state, health and restarts, read from the Docker
//! Engine API on the target's unix socket ([`crate::connect::docker`]).
//!
//! Each run inspects the target's container (by name), or lists and
//! inspects every container of its Compose service: one or a few requests
//! on a local socket. The worst container speaks.
//!
//! | seen | outcome |
//! | --- | --- |
//! | running; healthy when it has a healthcheck | ok |
//! | exited, dead, restarting, paused, created (exit code, OOM-kill in the detail) | failing |
//! | unhealthy (its last healthcheck output in the detail), or health still starting | failing |
//! | restarted more than `max_restarts` times (in `window`) | failing |
//! | no such container, a Compose service without containers | failing: the Engine says so |
//! | socket missing, refused, permission denied, timeout; a 5xx from the Engine | unknown |
//!
//! The Engine is medic's only view of its containers, as the API server is
//! of a Deployment's pods: when it does not answer, medic is blind there
//! (and could not restart anything through it either), so that is unknown,
//! never failing. A dead container behind a live Engine is failing.

use serde::Deserialize;

use crate::duration::Dur;

/// `check: { docker: { target: backend } }` (shorthand `{ docker: backend }`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerParams {
    /// A config target of kind `docker`.
    pub target: String,
    /// Failing when a container restarted more than this many times
    /// (Docker's `RestartCount`, the restarts its restart policy made)...
    pub max_restarts: Option<u32>,
    /// ...within this window (default: since the container was created).
    pub window: Option<Dur>,
}

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bollard::models::ContainerInspectResponse;
use tokio::time::Instant;

use super::{BuildError, Check, Samples};
use crate::config::{Config, TargetConfig};
use crate::connect::docker::{Engine, Seen, name_of};
use crate::observe::Outcome;

/// A runnable `docker` check.
#[derive(Debug)]
pub struct DockerCheck {
    engine: Engine,
    params: DockerParams,
    /// Restart-count samples per container id (with `window`).
    history: std::sync::Mutex<HashMap<String, Samples>>,
}

impl DockerCheck {
    pub fn build(p: &DockerParams, timeout: Duration, config: &Config) -> Result<Self, BuildError> {
        let Some(TargetConfig::Docker(t)) = config.targets.get(&p.target) else {
            return Err(BuildError::Invalid(format!(
                "target {:?} is not a docker target",
                p.target
            )));
        };
        Ok(DockerCheck {
            engine: Engine::new(&p.target, t, timeout).map_err(BuildError::Invalid)?,
            params: p.clone(),
            history: Default::default(),
        })
    }

    /// The worst problem among `containers`, if any.
    fn judge(&self, containers: &[ContainerInspectResponse]) -> Outcome {
        let what = self.engine.selector.to_string();
        if containers.is_empty() {
            return Outcome::Failing(format!("{what}: no such container"));
        }
        let mut problems = Vec::new();
        for c in containers {
            if let Some(p) = Seen::of(c).problem {
                problems.push(format!("{} {p}", name_of(c)));
            }
        }
        if problems.is_empty()
            && let Some(p) = self.restarts(containers)
        {
            problems.push(p);
        }
        if problems.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Failing(format!("{what}: {}", problems.join("; ")))
        }
    }

    /// The container that restarted too often, if `max_restarts` is set.
    fn restarts(&self, containers: &[ContainerInspectResponse]) -> Option<String> {
        let max = self.params.max_restarts?;
        let window = self.params.window.map(|d| d.get());
        let now = Instant::now();
        let wall = chrono::Utc::now();
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashSet::new();
        let mut worst: Option<(i64, String)> = None;
        for c in containers {
            let count = c.restart_count.unwrap_or(0);
            let n = match window {
                None => count,
                Some(window) => {
                    let id = c.id.clone().unwrap_or_default();
                    let created = c
                        .created
                        .as_ref()
                        .and_then(|d| chrono::DateTime::parse_from_rfc3339(&d.to_string()).ok());
                    let inside = created.is_some_and(|t| {
                        (wall - t.with_timezone(&chrono::Utc))
                            .to_std()
                            .is_ok_and(|age| age <= window)
                    });
                    seen.insert(id.clone());
                    let samples = history.entry(id).or_default();
                    super::restarts_in_window(samples, now, count, window, inside)
                }
            };
            if n > i64::from(max) && worst.as_ref().is_none_or(|(w, _)| n > *w) {
                worst = Some((n, name_of(c).to_string()));
            }
        }
        if window.is_some() {
            history.retain(|k, _| seen.contains(k));
        }
        let (n, name) = worst?;
        let span = match self.params.window {
            Some(w) => format!("in {w}"),
            None => "since it was created".into(),
        };
        Some(format!("{name} restarted {n} times {span} (limit {max})"))
    }
}

#[async_trait::async_trait]
impl Check for DockerCheck {
    async fn run(&self) -> Outcome {
        match self.engine.containers().await {
            Ok(cs) => self.judge(&cs),
            Err(e) => Outcome::Unknown(format!("{}: {e}", self.engine.selector)),
        }
    }
}

impl super::CheckKind for DockerParams {
    /// `{docker: TARGET}` is `{docker: {target: TARGET}}`.
    fn shorthand(scalar: &marked_yaml::Node) -> Option<marked_yaml::Node> {
        Some(crate::yaml::wrap("target", scalar.clone()))
    }

    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        v.target(p, "target", &self.target, &["docker"], "a docker check");
        if self.window.is_some() && self.max_restarts.is_none() {
            v.err(
                crate::yaml::field_pos(p, "window"),
                "`window` applies to `max_restarts`, which is missing",
            );
        }
    }

    fn target(&self) -> Option<&str> {
        Some(&self.target)
    }

    fn build(&self, timeout: Duration, config: &Config) -> Result<Arc<dyn Check>, BuildError> {
        Ok(Arc::new(DockerCheck::build(self, timeout, config)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(socket: &str) -> DockerCheck {
        let config = crate::config::load_str(
            "medic.yaml",
            &format!("targets:\n  web: {{ docker: {{ socket: {socket}, container: web }} }}\n"),
        )
        .unwrap();
        DockerCheck::build(
            &DockerParams {
                target: "web".into(),
                max_restarts: None,
                window: None,
            },
            Duration::from_secs(1),
            &config,
        )
        .unwrap()
    }

    /// No socket is medic's blindness, never a failing container.
    #[tokio::test]
    async fn a_missing_socket_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let o = check(sock.to_str().unwrap()).run().await;
        assert_eq!(o.label(), "unknown", "{o:?}");
        assert!(o.detail().contains("is unreachable"), "{o:?}");
    }

    /// A socket file nobody listens on (dockerd died, its socket left).
    #[tokio::test]
    async fn a_refusing_socket_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let o = check(sock.to_str().unwrap()).run().await;
        assert_eq!(o.label(), "unknown", "{o:?}");
    }
}
