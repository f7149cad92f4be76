//! The Docker Engine of a `docker` target: a bollard client on its unix
//! socket (the API version negotiated once, so a 20.10 Engine at API 1.41
//! and a newer one both answer), and the containers the target names: one
//! by name, or every container of a Compose service by its labels.
//!
//! The client is made at the first use, not when the config is loaded: a
//! socket that is not there yet (dockerd starting after medic) is an
//! [`EngineError::Unreachable`] of that run, not a refused config. A
//! transport error drops the client, so the next use connects again.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, HealthStatusEnum, RestartPolicyNameEnum};
use bollard::query_parameters::ListContainersOptionsBuilder;
use tokio::sync::Mutex;

use crate::config::DockerTarget;

/// The Compose project label.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// The Compose service label.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
/// Set to `True` on `docker compose run` containers (not the service's).
pub const COMPOSE_ONEOFF: &str = "com.docker.compose.oneoff";

/// Which containers a target means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// One container, by its exact name.
    Name(String),
    /// Every container of a Compose service.
    Compose { project: String, service: String },
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Name(n) => write!(f, "container {n}"),
            Selector::Compose { project, service } => {
                write!(f, "compose service {project}/{service}")
            }
        }
    }
}

/// Why the Engine gave no answer about the containers.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The socket is missing, refuses, resets, times out, or medic may not
    /// use it: medic cannot see (and cannot act) through this Engine.
    #[error("the Docker Engine at {socket} is unreachable: {why}")]
    Unreachable { socket: String, why: String },
    /// The Engine answered with an error (a 5xx, a refused request).
    #[error("the Docker Engine at {socket} answered {status}: {message}")]
    Refused {
        socket: String,
        status: u16,
        message: String,
    },
}

/// A docker target's Engine and the containers it names.
pub struct Engine {
    /// The socket path, without `unix://`.
    pub socket: String,
    pub selector: Selector,
    /// `stop_timeout` in seconds, when the target sets one.
    pub stop_timeout: Option<i32>,
    /// Request timeout (whole seconds, at least 1) of the client.
    timeout: u64,
    client: Mutex<Option<Docker>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("socket", &self.socket)
            .field("selector", &self.selector)
            .finish()
    }
}

impl Engine {
    /// The Engine of target `name`, whose requests give up after `timeout`.
    pub fn new(name: &str, t: &DockerTarget, timeout: Duration) -> Result<Engine, String> {
        let selector = match (&t.container, &t.compose) {
            (Some(c), None) => Selector::Name(c.trim_start_matches('/').to_string()),
            (None, Some(c)) => Selector::Compose {
                project: c.project.clone(),
                service: c.service.clone(),
            },
            _ => {
                return Err(format!(
                    "docker target {name:?} names neither one container nor one compose service"
                ));
            }
        };
        Ok(Engine {
            socket: t
                .socket
                .strip_prefix("unix://")
                .unwrap_or(&t.socket)
                .to_string(),
            selector,
            stop_timeout: t
                .stop_timeout
                .map(|d| i32::try_from(d.get().as_secs()).unwrap_or(i32::MAX)),
            timeout: timeout.as_secs_f64().ceil().max(1.0) as u64,
            client: Mutex::new(None),
        })
    }

    /// The client, connected and its API version negotiated.
    pub async fn client(&self) -> Result<Docker, EngineError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Docker::connect_with_unix(&self.socket, self.timeout, bollard::API_DEFAULT_VERSION)
            .map_err(|e| self.error(e))?;
        let c = c.negotiate_version().await.map_err(|e| self.error(e))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// `e` as medic reads it; a transport error also drops the client.
    pub fn error(&self, e: BollardError) -> EngineError {
        match e {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => EngineError::Refused {
                socket: self.socket.clone(),
                status: status_code,
                message,
            },
            other => {
                if let Ok(mut slot) = self.client.try_lock() {
                    *slot = None;
                }
                EngineError::Unreachable {
                    socket: self.socket.clone(),
                    why: describe(&other),
                }
            }
        }
    }

    /// Every container the target names, inspected (none: an empty list).
    pub async fn containers(&self) -> Result<Vec<ContainerInspectResponse>, EngineError> {
        let docker = self.client().await?;
        let ids: Vec<String> = match &self.selector {
            Selector::Name(n) => vec![n.clone()],
            Selector::Compose { project, service } => {
                let filters = HashMap::from([(
                    "label".to_string(),
                    vec![
                        format!("{COMPOSE_PROJECT}={project}"),
                        format!("{COMPOSE_SERVICE}={service}"),
                    ],
                )]);
                let opts = ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build();
                let mut list = docker
                    .list_containers(Some(opts))
                    .await
                    .map_err(|e| self.error(e))?;
                list.retain(|c| {
                    c.labels
                        .as_ref()
                        .and_then(|l| l.get(COMPOSE_ONEOFF))
                        .is_none_or(|v| !v.eq_ignore_ascii_case("true"))
                });
                let mut ids: Vec<String> = list.into_iter().filter_map(|c| c.id).collect();
                ids.sort();
                ids
            }
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match docker.inspect_container(&id, None).await {
                // The Engine also takes an ID prefix for a name: a name
                // is the name only.
                Ok(c) if matches!(&self.selector, Selector::Name(n) if name_of(&c) != n) => {}
                Ok(c) => out.push(c),
                // Gone between the list and the inspect, or no such name.
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(self.error(e)),
            }
        }
        out.sort_by(|a, b| name_of(a).cmp(name_of(b)));
        Ok(out)
    }
}

/// A container's name without Docker's leading `/`.
pub fn name_of(c: &ContainerInspectResponse) -> &str {
    c.name
        .as_deref()
        .map(|n| n.trim_start_matches('/'))
        .unwrap_or_default()
}

/// What one container's state says, for checks and verifications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// `running`, `exited`, `restarting`, ...
    pub status: String,
    /// `healthy`, `unhealthy`, `starting`; `None` without a healthcheck.
    pub health: Option<String>,
    pub restart_count: i64,
    /// When the current (or last) run started, as Docker writes it.
    pub started_at: String,
    /// A short account of what is wrong (`None`: running, and healthy if
    /// it has a healthcheck).
    pub problem: Option<String>,
    /// Stopped, with no restart policy that would start it again: waiting
    /// for it to come back is waiting for nothing.
    pub stays_down: bool,
}

impl Seen {
    /// Reads `c`'s state.
    pub fn of(c: &ContainerInspectResponse) -> Seen {
        let state = c.state.clone().unwrap_or_default();
        let status = state
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".into());
        let health = state.health.as_ref().and_then(|h| match h.status {
            Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => None,
            Some(s) => Some(s.to_string()),
        });
        let problem = if status != "running" {
            let mut p = format!("is {status}");
            if status == "exited" || status == "dead" {
                p.push_str(&format!(" (exit code {}", state.exit_code.unwrap_or(0)));
                if state.oom_killed == Some(true) {
                    p.push_str(", OOM-killed");
                }
                p.push(')');
            }
            if let Some(e) = state.error.as_deref().filter(|e| !e.is_empty()) {
                p.push_str(&format!(": {e}"));
            }
            Some(p)
        } else {
            match health.as_deref() {
                Some("unhealthy") => {
                    let last = state
                        .health
                        .as_ref()
                        .and_then(|h| h.log.as_ref())
                        .and_then(|l| l.last())
                        .and_then(|r| r.output.as_deref())
                        .map(|o| o.trim().chars().take(200).collect::<String>())
                        .filter(|o| !o.is_empty());
                    let streak = state
                        .health
                        .as_ref()
                        .and_then(|h| h.failing_streak)
                        .unwrap_or(0);
                    Some(match last {
                        Some(o) => {
                            format!("is unhealthy ({streak} failing checks; last: {o})")
                        }
                        None => format!("is unhealthy ({streak} failing checks)"),
                    })
                }
                Some("starting") => Some("is running, health still starting".into()),
                _ => None,
            }
        };
        let policy = c
            .host_config
            .as_ref()
            .and_then(|h| h.restart_policy.as_ref())
            .and_then(|p| p.name);
        let stays_down = matches!(status.as_str(), "exited" | "dead")
            && matches!(
                policy,
                None | Some(RestartPolicyNameEnum::NO | RestartPolicyNameEnum::EMPTY)
            );
        Seen {
            stays_down,
            status,
            health,
            restart_count: c.restart_count.unwrap_or(0),
            started_at: state.started_at.unwrap_or_default(),
            problem,
        }
    }

    /// Running, and healthy if the container has a healthcheck.
    pub fn is_well(&self) -> bool {
        self.problem.is_none()
    }
}

/// One line for a bollard error: its message and its causes.
fn describe(e: &BollardError) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

/// The repository of an image reference (`registry:5000/app:v2` →
/// `registry:5000/app`; a digest or tag is dropped).
pub fn repository(reference: &str) -> &str {
    let r = reference.split('@').next().unwrap_or(reference);
    match r.rfind(':') {
        Some(i) if !r[i..].contains('/') => &r[..i],
        _ => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerState, ContainerStateStatusEnum, Health, HealthcheckResult};

    #[test]
    fn repository_drops_tag_and_digest_not_the_registry_port() {
        assert_eq!(repository("app:v2"), "app");
        assert_eq!(repository("app"), "app");
        assert_eq!(
            repository("registry:5000/team/app:v2"),
            "registry:5000/team/app"
        );
        assert_eq!(
            repository("registry:5000/team/app"),
            "registry:5000/team/app"
        );
        assert_eq!(repository("app@sha256:abcd"), "app");
        assert_eq!(repository("app:v1@sha256:abcd"), "app");
    }

    fn container(
        status: ContainerStateStatusEnum,
        health: Option<HealthStatusEnum>,
    ) -> ContainerInspectResponse {
        ContainerInspectResponse {
            name: Some("/web".into()),
            restart_count: Some(3),
            state: Some(ContainerState {
                status: Some(status),
                exit_code: Some(137),
                oom_killed: Some(false),
                health: health.map(|s| Health {
                    status: Some(s),
                    failing_streak: Some(4),
                    log: Some(vec![HealthcheckResult {
                        output: Some("wget: connection refused\n".into()),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn states_read_as_problems() {
        use ContainerStateStatusEnum as S;
        use HealthStatusEnum as H;
        let well = Seen::of(&container(S::RUNNING, None));
        assert!(well.is_well(), "{well:?}");
        assert_eq!(well.health, None);
        assert_eq!(well.restart_count, 3);
        assert!(Seen::of(&container(S::RUNNING, Some(H::HEALTHY))).is_well());
        assert!(Seen::of(&container(S::RUNNING, Some(H::NONE))).is_well());
        assert_eq!(
            Seen::of(&container(S::EXITED, None)).problem.as_deref(),
            Some("is exited (exit code 137)")
        );
        assert_eq!(
            Seen::of(&container(S::RESTARTING, None)).problem.as_deref(),
            Some("is restarting")
        );
        assert_eq!(
            Seen::of(&container(S::RUNNING, Some(H::UNHEALTHY)))
                .problem
                .as_deref(),
            Some("is unhealthy (4 failing checks; last: wget: connection refused)")
        );
        assert_eq!(
            Seen::of(&container(S::RUNNING, Some(H::STARTING)))
                .problem
                .as_deref(),
            Some("is running, health still starting")
        );
    }
}
