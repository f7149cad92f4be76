//! Docker actions, done through the Engine API on the target's socket
//! ([`crate::connect::docker`]), never the docker CLI.
//!
//! - `docker.restart` is `docker restart` (`docker-compose restart SERVICE`
//!   for a Compose target: every container of the service), with the
//!   target's `stop_timeout`.
//! - `docker.recreate` is `docker-compose up -d --force-recreate SERVICE`:
//!   each container is replaced by a new one of the same configuration
//!   (environment, command, entrypoint, labels, healthcheck, host config:
//!   mounts, network mode, restart policy, ...) on the same image, on
//!   another `tag` of its repository, or on the `previous` image of its
//!   repository (a rollback: the runbook's `docker pull app:previous-tag`
//!   then `up --force-recreate`). Where the old container only repeated
//!   its image's defaults (its `CMD`, `ENV`, labels), the new image's own
//!   defaults apply: a rollback runs the old image's command, not the
//!   broken one's.
//!
//! Both verify their effect before reporting success: every container
//! running again (a new start), and healthy if it has a healthcheck,
//! within the step's timeout. The step's `verify:` then judges the
//! symptom, as for every action.
//!
//! A recreate stops the old container, renames it aside, creates and
//! starts the new one under its name, then removes the old one (its
//! volumes stay; anonymous ones are carried into the new container). If
//! the new one cannot be created or started, the old one gets its name
//! back and is started again. The image must be on the host: medic does
//! not pull (no registry credentials of its own); a previous tag stays on
//! the host until it is pruned.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig, ImageConfig,
    NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListImagesOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder, RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Action, ActionContext, ActionResult, BuildError, Gate, Preflight};
use crate::config::{Config, TargetConfig};
use crate::connect::docker::{Engine, Seen, name_of, repository};

/// How often a verification inspects the containers.
const POLL: Duration = Duration::from_millis(100);
/// Requests of an action give up after this long (each is also bounded by
/// the step's timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// The Compose label holding the image a container was created from.
const COMPOSE_IMAGE: &str = "com.docker.compose.image";

/// `docker.restart`: restart the target's container(s).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerRestartParams {
    /// A config target of kind `docker`.
    pub target: String,
}

/// `docker.recreate`: replace the target's container(s), keeping their
/// configuration, on the same image, another `tag`, or the `previous` one.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerRecreateParams {
    /// A config target of kind `docker`.
    pub target: String,
    /// Another tag of the container's image repository (`v1.4.2`).
    pub tag: Option<String>,
    /// The newest image of the container's repository on the host that was
    /// created before the one it runs (a rollback).
    #[serde(default)]
    pub previous: bool,
}

/// A docker target's Engine, for an action.
fn engine(target: &str, config: &Config) -> Result<Engine, BuildError> {
    let Some(TargetConfig::Docker(t)) = config.targets.get(target) else {
        return Err(BuildError::Invalid(format!(
            "target {target:?} is not a docker target"
        )));
    };
    Engine::new(target, t, REQUEST_TIMEOUT).map_err(BuildError::Invalid)
}

/// The containers of the target, as gates: the Engine answered, and
/// named at least one container.
async fn found(engine: &Engine, pre: &mut Preflight) -> Option<Vec<ContainerInspectResponse>> {
    let cs = match engine.containers().await {
        Ok(cs) => cs,
        Err(e) => {
            pre.gate(Gate::fail("docker-engine", e.to_string()));
            return None;
        }
    };
    pre.gate(Gate::pass(
        "docker-engine",
        format!("the Engine at {} answered", engine.socket),
    ));
    if cs.is_empty() {
        pre.gate(Gate::fail(
            "containers",
            format!("{}: no such container", engine.selector),
        ));
        return None;
    }
    let names: Vec<&str> = cs.iter().map(name_of).collect();
    pre.gate(Gate::pass("containers", names.join(", ")));
    Some(cs)
}

/// A result that ends `run` early.
/// The Engine's client and the target's containers (at least one), or
/// why not: what both actions start from.
async fn client_and_containers(
    engine: &Engine,
) -> Result<(Docker, Vec<ContainerInspectResponse>), String> {
    let docker = engine.client().await.map_err(|e| e.to_string())?;
    let cs = engine.containers().await.map_err(|e| e.to_string())?;
    if cs.is_empty() {
        return Err(format!("{}: no such container", engine.selector));
    }
    Ok((docker, cs))
}

fn failed(detail: impl Into<String>, data: &Value) -> ActionResult {
    ActionResult::failed(detail, data.clone())
}

/// Waits until every container of `ids` (id, name, the `StartedAt` before
/// the action) started anew and is well (running; healthy if it has a
/// healthcheck), polling until `deadline`; the milliseconds each took.
async fn verify(
    engine: &Engine,
    docker: &Docker,
    ids: &[(String, String, String)],
    started: Instant,
    deadline: Instant,
    ctx: &ActionContext,
) -> Result<Vec<Value>, String> {
    let mut done: HashMap<&str, u128> = HashMap::new();
    let mut last: HashMap<&str, String> = HashMap::new();
    loop {
        for (id, name, before) in ids {
            if done.contains_key(id.as_str()) {
                continue;
            }
            match docker.inspect_container(id, None).await {
                Ok(c) => {
                    let seen = Seen::of(&c);
                    if seen.is_well() && seen.started_at != *before {
                        done.insert(id, started.elapsed().as_millis());
                    } else {
                        let why = seen
                            .problem
                            .unwrap_or_else(|| "has not started again".to_string());
                        // Started and stopped again, and nothing will
                        // start it: no use waiting for the deadline.
                        if seen.stays_down && seen.started_at != *before {
                            return Err(format!("{name} {why} and has no restart policy"));
                        }
                        last.insert(id, format!("{name} {why}"));
                    }
                }
                Err(e) => {
                    last.insert(id, format!("{name}: {}", engine.error(e)));
                }
            }
        }
        if done.len() == ids.len() {
            return Ok(ids
                .iter()
                .map(|(id, name, _)| json!({ "name": name, "id": id, "well_after_ms": done[id.as_str()] }))
                .collect());
        }
        let why: Vec<&str> = ids
            .iter()
            .filter(|(id, _, _)| !done.contains_key(id.as_str()))
            .filter_map(|(id, _, _)| last.get(id.as_str()).map(String::as_str))
            .collect();
        if Instant::now() + POLL > deadline {
            return Err(format!(
                "not well within {}: {}",
                humantime::format_duration(deadline - started),
                why.join("; ")
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = ctx.cancel.cancelled() => {
                return Err(format!("aborted: medic is stopping ({})", why.join("; ")));
            }
        }
    }
}

/// Whether every container of the target is well now (for reconcile).
async fn all_well(engine: &Engine) -> Option<ActionResult> {
    let cs = engine.containers().await.ok()?;
    if cs.is_empty() {
        return None;
    }
    let names: Vec<&str> = cs.iter().map(name_of).collect();
    cs.iter().all(|c| Seen::of(c).is_well()).then(|| {
        ActionResult::ok(
            format!("{} well: {}", engine.selector, names.join(", ")),
            json!({ "containers": names }),
        )
    })
}

/// A runnable `docker.restart`.
#[derive(Debug)]
pub struct DockerRestart {
    target: String,
    engine: Engine,
}

impl DockerRestart {
    pub fn build(p: &DockerRestartParams, config: &Config) -> Result<Self, BuildError> {
        Ok(DockerRestart {
            target: p.target.clone(),
            engine: engine(&p.target, config)?,
        })
    }
}

#[async_trait::async_trait]
impl Action for DockerRestart {
    fn describe(&self) -> String {
        format!(
            "docker restart {} (target {})",
            self.engine.selector, self.target
        )
    }

    fn inputs(&self) -> Value {
        json!({ "target": self.target, "socket": self.engine.socket })
    }

    async fn preflight(&self, _ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        found(&self.engine, &mut pre).await;
        pre
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        let started = Instant::now();
        let deadline = started + ctx.timeout;
        let mut data = json!({ "target": self.target });
        let (docker, cs) = match client_and_containers(&self.engine).await {
            Ok(x) => x,
            Err(why) => return failed(why, &data),
        };
        let mut ids = Vec::new();
        for c in &cs {
            let id = c.id.clone().unwrap_or_default();
            let name = name_of(c).to_string();
            let before = Seen::of(c).started_at;
            let mut opts = RestartContainerOptionsBuilder::default();
            if let Some(t) = self.engine.stop_timeout {
                opts = opts.t(t);
            }
            let restart = docker.restart_container(&id, Some(opts.build()));
            let r = tokio::select! {
                r = tokio::time::timeout_at(deadline, restart) => r,
                _ = ctx.cancel.cancelled() => return failed("aborted: medic is stopping", &data),
            };
            match r {
                Err(_) => {
                    return failed(format!("restart of {name} did not finish in time"), &data);
                }
                Ok(Err(e)) => {
                    return failed(
                        format!("restart of {name}: {}", self.engine.error(e)),
                        &data,
                    );
                }
                Ok(Ok(())) => ids.push((id, name, before)),
            }
        }
        let names: Vec<&str> = ids.iter().map(|(_, n, _)| n.as_str()).collect();
        data["containers"] = json!(names);
        match verify(&self.engine, &docker, &ids, started, deadline, ctx).await {
            Ok(well) => {
                data["verified"] = json!(well);
                ActionResult::ok(
                    format!("restarted {}: running again", names.join(", ")),
                    data,
                )
            }
            Err(why) => failed(format!("restarted {}, but {why}", names.join(", ")), &data),
        }
    }

    async fn reconcile(&self, _ctx: &ActionContext) -> Option<ActionResult> {
        all_well(&self.engine).await
    }
}

/// Which image a recreate runs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Aim {
    Same,
    Tag(String),
    Previous,
}

/// A runnable `docker.recreate`.
#[derive(Debug)]
pub struct DockerRecreate {
    target: String,
    engine: Engine,
    aim: Aim,
}

/// One container's replacement, as preflight decided it.
#[derive(Clone, Debug)]
struct Replacement {
    /// The old container, inspected.
    old: ContainerInspectResponse,
    /// The image reference the new one is created from.
    image: String,
    /// That image's id.
    image_id: String,
}

impl DockerRecreate {
    pub fn build(p: &DockerRecreateParams, config: &Config) -> Result<Self, BuildError> {
        let aim = match (&p.tag, p.previous) {
            (None, false) => Aim::Same,
            (Some(t), false) => {
                tag_name(t).map_err(|e| BuildError::Invalid(format!("docker.recreate: {e}")))?;
                Aim::Tag(t.clone())
            }
            (None, true) => Aim::Previous,
            (Some(_), true) => {
                return Err(BuildError::Invalid(
                    "docker.recreate: `tag` or `previous`, not both".into(),
                ));
            }
        };
        Ok(DockerRecreate {
            target: p.target.clone(),
            engine: engine(&p.target, config)?,
            aim,
        })
    }

    /// The image reference each container is recreated on.
    async fn plan(
        &self,
        docker: &Docker,
        cs: Vec<ContainerInspectResponse>,
    ) -> Result<Vec<Replacement>, String> {
        let mut out = Vec::new();
        for old in cs {
            let name = name_of(&old).to_string();
            let current = old
                .config
                .as_ref()
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let current_id = old.image.clone().unwrap_or_default();
            let image = match &self.aim {
                Aim::Same => current.clone(),
                Aim::Tag(t) => format!("{}:{t}", repository(&current)),
                Aim::Previous => self.previous(docker, &current, &current_id).await?,
            };
            let inspected = docker.inspect_image(&image).await.map_err(|e| {
                format!(
                    "{name}: image {image} is not on this host ({}); medic does not pull",
                    self.engine.error(e)
                )
            })?;
            out.push(Replacement {
                old,
                image,
                image_id: inspected.id.unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// The newest image of `current`'s repository created before the one
    /// the container runs (`current_id`), by one of its tags.
    async fn previous(
        &self,
        docker: &Docker,
        current: &str,
        current_id: &str,
    ) -> Result<String, String> {
        let repo = repository(current);
        let created = |i: &bollard::models::ImageInspect| {
            i.created
                .as_ref()
                .and_then(|d| chrono::DateTime::parse_from_rfc3339(&d.to_string()).ok())
        };
        let now = docker
            .inspect_image(current_id)
            .await
            .map_err(|e| format!("image {current}: {}", self.engine.error(e)))?;
        let now_created =
            created(&now).ok_or_else(|| format!("image {current} has no creation time"))?;
        let filters = HashMap::from([("reference".to_string(), vec![repo.to_string()])]);
        let list = docker
            .list_images(Some(
                ListImagesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| self.engine.error(e).to_string())?;
        let mut best: Option<(chrono::DateTime<chrono::FixedOffset>, String)> = None;
        for img in list.into_iter().filter(|i| i.id != current_id) {
            let Some(tag) = img
                .repo_tags
                .iter()
                .find(|t| repository(t) == repo && *t != "<none>:<none>")
                .cloned()
            else {
                continue;
            };
            let Ok(i) = docker.inspect_image(&img.id).await else {
                continue;
            };
            let Some(at) = created(&i) else { continue };
            if at < now_created && best.as_ref().is_none_or(|(b, _)| at > *b) {
                best = Some((at, tag));
            }
        }
        best.map(|(_, tag)| tag).ok_or_else(|| {
            format!("no image of {repo} on this host is older than the one running ({current})")
        })
    }

    /// Replaces `r.old` by a container on `r.image`; the new container's id.
    async fn replace(&self, docker: &Docker, r: &Replacement, key: &str) -> Result<String, String> {
        let old = &r.old;
        let name = name_of(old).to_string();
        let old_id = old.id.clone().unwrap_or_default();
        let old_image = match old.image.as_deref() {
            Some(id) => docker.inspect_image(id).await.ok().and_then(|i| i.config),
            None => None,
        };
        let body = create_body(old, old_image.as_ref(), &r.image, &r.image_id);
        let was_running = Seen::of(old).status == "running";
        let err = |what: &str, e: bollard::errors::Error| {
            format!("{what} {name}: {}", self.engine.error(e))
        };

        let mut stop = StopContainerOptionsBuilder::default();
        if let Some(t) = self.engine.stop_timeout {
            stop = stop.t(t);
        }
        match docker.stop_container(&old_id, Some(stop.build())).await {
            Ok(()) => {}
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(err("stop", e)),
        }
        let short: String = key
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        let aside = format!("{name}-medic-replaced-{short}");
        docker
            .rename_container(
                &old_id,
                RenameContainerOptionsBuilder::default()
                    .name(&aside)
                    .build(),
            )
            .await
            .map_err(|e| err("rename", e))?;

        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await;
        let new_id = match created {
            Ok(c) => match docker.start_container(&c.id, None).await {
                Ok(()) => Ok(c.id),
                Err(e) => Err(err("start", e)),
            },
            Err(e) => Err(err("create", e)),
        };
        match new_id {
            Ok(new_id) => {
                let rm = RemoveContainerOptionsBuilder::default().force(true).build();
                if let Err(e) = docker.remove_container(&old_id, Some(rm)).await {
                    tracing::warn!(container = %aside, error = %self.engine.error(e), "could not remove the replaced container");
                }
                Ok(new_id)
            }
            Err(why) => {
                // Put the old container back as it was.
                if let Ok(c) = docker.inspect_container(&name, None).await
                    && let Some(id) = c.id
                    && id != old_id
                {
                    let rm = RemoveContainerOptionsBuilder::default().force(true).build();
                    let _ = docker.remove_container(&id, Some(rm)).await;
                }
                let back = docker
                    .rename_container(
                        &old_id,
                        RenameContainerOptionsBuilder::default().name(&name).build(),
                    )
                    .await;
                let restarted = if was_running && back.is_ok() {
                    docker.start_container(&old_id, None).await.is_ok()
                } else {
                    false
                };
                Err(match (back, restarted || !was_running) {
                    (Ok(()), true) => format!("{why}; the old container is back"),
                    (Ok(()), false) => {
                        format!("{why}; the old container is back but did not start")
                    }
                    (Err(e), _) => format!(
                        "{why}; the old container is left as {aside}: {}",
                        self.engine.error(e)
                    ),
                })
            }
        }
    }
}

#[async_trait::async_trait]
impl Action for DockerRecreate {
    fn describe(&self) -> String {
        let on = match &self.aim {
            Aim::Same => "on the same image".to_string(),
            Aim::Tag(t) => format!("on tag {t}"),
            Aim::Previous => "on the previous image".to_string(),
        };
        format!(
            "docker recreate {} {on} (target {})",
            self.engine.selector, self.target
        )
    }

    fn inputs(&self) -> Value {
        let aim = match &self.aim {
            Aim::Same => json!("same"),
            Aim::Tag(t) => json!({ "tag": t }),
            Aim::Previous => json!("previous"),
        };
        json!({ "target": self.target, "socket": self.engine.socket, "image": aim })
    }

    async fn preflight(&self, _ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        let Some(cs) = found(&self.engine, &mut pre).await else {
            return pre;
        };
        let Ok(docker) = self.engine.client().await else {
            return pre;
        };
        match self.plan(&docker, cs).await {
            Ok(plan) => {
                let shown: Vec<String> = plan
                    .iter()
                    .map(|r| {
                        let from = r
                            .old
                            .config
                            .as_ref()
                            .and_then(|c| c.image.as_deref())
                            .unwrap_or("?");
                        format!("{}: {from} -> {}", name_of(&r.old), r.image)
                    })
                    .collect();
                pre.gate(Gate::pass("image", shown.join("; ")));
                pre.data = json!({
                    "images": plan.iter().map(|r| json!({
                        "container": name_of(&r.old),
                        "image": r.image,
                        "image_id": r.image_id,
                    })).collect::<Vec<_>>()
                });
            }
            Err(why) => {
                pre.gate(Gate::fail("image", why));
            }
        }
        pre
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        let started = Instant::now();
        let deadline = started + ctx.timeout;
        let mut data = json!({ "target": self.target });
        let (docker, cs) = match client_and_containers(&self.engine).await {
            Ok(x) => x,
            Err(why) => return failed(why, &data),
        };
        let plan = match tokio::time::timeout_at(deadline, self.plan(&docker, cs)).await {
            Ok(Ok(p)) => p,
            Ok(Err(why)) => return failed(why, &data),
            Err(_) => return failed("resolving the images did not finish in time", &data),
        };
        let mut ids = Vec::new();
        let mut replaced = Vec::new();
        for r in &plan {
            // A safe point: between containers, never inside a replacement.
            if ctx.cancel.is_cancelled() {
                data["replaced"] = json!(replaced);
                return failed("aborted: medic is stopping", &data);
            }
            let name = name_of(&r.old).to_string();
            let from = r
                .old
                .config
                .as_ref()
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            match tokio::time::timeout_at(deadline, self.replace(&docker, r, &ctx.key)).await {
                Ok(Ok(new_id)) => {
                    replaced.push(json!({
                        "name": name,
                        "old_id": r.old.id,
                        "new_id": new_id,
                        "from": from,
                        "to": r.image,
                        "image_id": r.image_id,
                    }));
                    // A new container: any start counts.
                    ids.push((new_id, name, String::new()));
                }
                Ok(Err(why)) => {
                    data["replaced"] = json!(replaced);
                    return failed(why, &data);
                }
                Err(_) => {
                    data["replaced"] = json!(replaced);
                    return failed(format!("recreating {name} did not finish in time"), &data);
                }
            }
        }
        data["replaced"] = json!(replaced);
        let shown: Vec<String> = plan
            .iter()
            .map(|r| format!("{} on {}", name_of(&r.old), r.image))
            .collect();
        match verify(&self.engine, &docker, &ids, started, deadline, ctx).await {
            Ok(well) => {
                data["verified"] = json!(well);
                ActionResult::ok(format!("recreated {}: running", shown.join(", ")), data)
            }
            Err(why) => failed(format!("recreated {}, but {why}", shown.join(", ")), &data),
        }
    }

    async fn reconcile(&self, ctx: &ActionContext) -> Option<ActionResult> {
        // In place when every container runs the image preflight chose.
        let want: Vec<&str> = ctx.preflight["images"]
            .as_array()?
            .iter()
            .filter_map(|i| i["image_id"].as_str())
            .collect();
        let cs = self.engine.containers().await.ok()?;
        let on_it = !cs.is_empty()
            && cs
                .iter()
                .all(|c| c.image.as_deref().is_some_and(|i| want.contains(&i)));
        if on_it {
            all_well(&self.engine).await
        } else {
            None
        }
    }
}

/// What the old container set beyond its image's defaults, on `image`:
/// a field equal to the old image's default is left out, so the new
/// image's own default applies.
fn create_body(
    old: &ContainerInspectResponse,
    old_image: Option<&ImageConfig>,
    image: &str,
    image_id: &str,
) -> ContainerCreateBody {
    let c = old.config.clone().unwrap_or_default();
    let d = old_image.cloned().unwrap_or_default();
    let unless_default = |v: Option<Vec<String>>, def: &Option<Vec<String>>| {
        if old_image.is_some() && v == *def {
            None
        } else {
            v
        }
    };
    let minus = |v: Option<Vec<String>>, def: &Option<Vec<String>>| {
        v.map(|v| {
            v.into_iter()
                .filter(|x| def.as_ref().is_none_or(|d| !d.contains(x)))
                .collect::<Vec<_>>()
        })
    };
    let same = |v: Option<String>, def: &Option<String>| {
        if old_image.is_some() && v == *def {
            None
        } else {
            v
        }
    };
    let mut labels = c.labels.map(|mut l| {
        if let Some(dl) = &d.labels {
            l.retain(|k, v| dl.get(k) != Some(v));
        }
        l
    });
    if let Some(l) = labels.as_mut()
        && l.contains_key(COMPOSE_IMAGE)
    {
        l.insert(COMPOSE_IMAGE.into(), image_id.to_string());
    }
    let mut host = old.host_config.clone().unwrap_or_default();
    carry_anonymous_volumes(old, &mut host);
    let mode = host.network_mode.clone().unwrap_or_default();
    let own_network = !(mode.is_empty()
        || mode == "default"
        || mode == "bridge"
        || mode == "host"
        || mode == "none"
        || mode.starts_with("container:"));
    // The hostname Docker gave it (its short id), or the host's: not the
    // container's own setting.
    let id12: String = old
        .id
        .clone()
        .unwrap_or_default()
        .chars()
        .take(12)
        .collect();
    let hostname = c
        .hostname
        .filter(|h| *h != id12 && mode != "host" && !mode.starts_with("container:"));
    let networking_config = own_network
        .then(|| {
            let ep = old
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .and_then(|n| n.get(&mode))?;
            let aliases = ep
                .aliases
                .clone()
                .map(|a| a.into_iter().filter(|x| *x != id12).collect());
            Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    mode.clone(),
                    EndpointSettings {
                        ipam_config: ep.ipam_config.clone(),
                        links: ep.links.clone(),
                        aliases,
                        driver_opts: ep.driver_opts.clone(),
                        ..Default::default()
                    },
                )])),
            })
        })
        .flatten();
    ContainerCreateBody {
        hostname,
        domainname: c.domainname,
        user: same(c.user, &d.user),
        attach_stdin: c.attach_stdin,
        attach_stdout: c.attach_stdout,
        attach_stderr: c.attach_stderr,
        exposed_ports: minus(c.exposed_ports, &d.exposed_ports),
        tty: c.tty,
        open_stdin: c.open_stdin,
        stdin_once: c.stdin_once,
        env: minus(c.env, &d.env),
        cmd: unless_default(c.cmd, &d.cmd),
        healthcheck: if old_image.is_some() && c.healthcheck == d.healthcheck {
            None
        } else {
            c.healthcheck
        },
        image: Some(image.to_string()),
        volumes: minus(c.volumes, &d.volumes),
        working_dir: same(c.working_dir, &d.working_dir),
        entrypoint: unless_default(c.entrypoint, &d.entrypoint),
        network_disabled: c.network_disabled,
        labels,
        stop_signal: same(c.stop_signal, &d.stop_signal),
        stop_timeout: c.stop_timeout,
        host_config: Some(host),
        networking_config,
        ..Default::default()
    }
}

/// Anonymous volumes (a `VOLUME` of the image, `-v /path`) are not in the
/// host config: they are carried over by name, as Compose does.
fn carry_anonymous_volumes(old: &ContainerInspectResponse, host: &mut HostConfig) {
    let taken: Vec<String> = host
        .binds
        .iter()
        .flatten()
        .filter_map(|b| b.split(':').nth(1).map(str::to_string))
        .chain(
            host.mounts
                .iter()
                .flatten()
                .filter_map(|m| m.target.clone()),
        )
        .collect();
    for m in old.mounts.iter().flatten() {
        let (Some(name), Some(dest)) = (&m.name, &m.destination) else {
            continue;
        };
        if m.typ.as_deref() != Some("volume") || taken.contains(dest) {
            continue;
        }
        let ro = if m.rw == Some(false) { ":ro" } else { "" };
        host.binds
            .get_or_insert_with(Vec::new)
            .push(format!("{name}:{dest}{ro}"));
    }
}

/// Whether `t` is a tag Docker accepts (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
pub fn tag_name(t: &str) -> Result<(), String> {
    let mut chars = t.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && t.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {t:?} is not an image tag: [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        ))
    }
}

/// Target kinds the docker actions act on.
const DOCKER: &[&str] = &["docker"];

impl super::ActionKind for DockerRestartParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        v.target(p, "target", &self.target, DOCKER, "docker.restart");
    }

    fn targets(&self) -> Vec<String> {
        vec![self.target.clone()]
    }

    fn build(&self, config: &Config) -> Result<Arc<dyn Action>, BuildError> {
        Ok(Arc::new(DockerRestart::build(self, config)?))
    }
}

impl super::ActionKind for DockerRecreateParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::field_pos;
        v.target(p, "target", &self.target, DOCKER, "docker.recreate");
        if let Some(t) = &self.tag {
            if self.previous {
                v.err(
                    field_pos(p, "previous"),
                    "docker.recreate takes `tag` or `previous`, not both",
                );
            }
            if let Err(e) = tag_name(t) {
                v.err(field_pos(p, "tag"), e);
            }
        }
    }

    fn targets(&self) -> Vec<String> {
        vec![self.target.clone()]
    }

    fn build(&self, config: &Config) -> Result<Arc<dyn Action>, BuildError> {
        Ok(Arc::new(DockerRecreate::build(self, config)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, MountPoint};

    #[test]
    fn tags_are_checked() {
        assert!(tag_name("v1.4.2").is_ok());
        assert!(tag_name("previous_tag-2").is_ok());
        assert!(tag_name("-v1").is_err());
        assert!(tag_name("v1:x").is_err());
        assert!(tag_name("").is_err());
        assert!(tag_name(&"a".repeat(129)).is_err());
    }

    /// A rollback runs the old image's command, not the broken one's: what
    /// the container only inherited from its image is left to the new one.
    #[test]
    fn the_new_container_keeps_what_was_set_not_what_was_inherited() {
        let image = ImageConfig {
            cmd: Some(vec!["/bin/broken".into()]),
            env: Some(vec!["PATH=/bin".into(), "MODE=v2".into()]),
            labels: Some(HashMap::from([("org.version".into(), "2".into())])),
            working_dir: Some("/".into()),
            ..Default::default()
        };
        let old = ContainerInspectResponse {
            id: Some("0123456789abcdef".into()),
            config: Some(ContainerConfig {
                hostname: Some("0123456789ab".into()),
                image: Some("app:v2".into()),
                cmd: Some(vec!["/bin/broken".into()]),
                env: Some(vec![
                    "PATH=/bin".into(),
                    "MODE=v2".into(),
                    "DATABASE_URL=postgres://db/app".into(),
                ]),
                labels: Some(HashMap::from([
                    ("org.version".into(), "2".into()),
                    ("com.docker.compose.service".into(), "backend".into()),
                    (COMPOSE_IMAGE.into(), "sha256:new".into()),
                ])),
                working_dir: Some("/srv".into()),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                network_mode: Some("host".into()),
                binds: Some(vec!["/data:/data".into()]),
                ..Default::default()
            }),
            mounts: Some(vec![
                MountPoint {
                    typ: Some("bind".into()),
                    source: Some("/data".into()),
                    destination: Some("/data".into()),
                    ..Default::default()
                },
                MountPoint {
                    typ: Some("volume".into()),
                    name: Some("f00d".into()),
                    destination: Some("/cache".into()),
                    rw: Some(true),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let b = create_body(&old, Some(&image), "app:v1", "sha256:v1");
        assert_eq!(b.image.as_deref(), Some("app:v1"));
        assert_eq!(b.cmd, None, "the image's command is the new image's");
        assert_eq!(
            b.env,
            Some(vec!["DATABASE_URL=postgres://db/app".to_string()])
        );
        assert_eq!(b.working_dir.as_deref(), Some("/srv"));
        assert_eq!(b.hostname, None);
        let labels = b.labels.unwrap();
        assert!(!labels.contains_key("org.version"));
        assert_eq!(labels["com.docker.compose.service"], "backend");
        assert_eq!(labels[COMPOSE_IMAGE], "sha256:v1");
        let host = b.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(
            host.binds,
            Some(vec!["/data:/data".to_string(), "f00d:/cache".to_string()])
        );
        assert!(b.networking_config.is_none());

        // Without the old image (pruned), everything is kept as it was.
        let b = create_body(&old, None, "app:v1", "sha256:v1");
        assert_eq!(b.cmd, Some(vec!["/bin/broken".to_string()]));
    }
}
