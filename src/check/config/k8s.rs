//! The `config` check on a kubernetes target (the `kubernetes` feature):
//! the workload's pod template, and the ConfigMaps and Secrets it reads.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodTemplateSpec, Secret};
use kube::Client;
use kube::api::Api;

use super::{Compiled, ConfigParams, Problem, compare, verdict};
use crate::check::BuildError;
use crate::check::kubernetes::api::{Connection, classify};
use crate::config::{Config, KubernetesTarget};
use crate::observe::Outcome;

/// The annotation naming a pod's default container (kubectl's).
const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// A kubernetes target's side of a `config` check.
pub(crate) struct KubeSide {
    target: KubernetesTarget,
    container: Option<String>,
    conn: Connection,
    config_maps: Vec<(String, Compiled)>,
    secrets: Vec<(String, Compiled)>,
}

/// A ConfigMap's or Secret's keys and their bytes. No `Debug`: a Secret's
/// values must never reach a log.
struct Object {
    keys: HashMap<String, Vec<u8>>,
}

/// What a run read, so each object is read once: `None` is 404.
type Read = Result<Option<Object>, Problem>;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }
}

/// Where a variable's value comes from.
enum Resolved {
    /// Its bytes, whether they are a Secret's, and where they come from.
    Value(Vec<u8>, bool),
    /// Set from the pod itself (`fieldRef`, `resourceFieldRef`): known only
    /// inside the pod.
    Opaque(&'static str),
    /// Not set (why, when it is worth saying).
    Unset(String),
}

impl KubeSide {
    pub(crate) fn build(
        p: &ConfigParams,
        t: &KubernetesTarget,
        timeout: Duration,
        config: &Config,
        config_maps: Vec<(String, Compiled)>,
        secrets: Vec<(String, Compiled)>,
    ) -> Result<Self, BuildError> {
        Ok(KubeSide {
            target: t.clone(),
            container: p.container.clone(),
            conn: Connection::build(&p.target, t, timeout, config)?,
            config_maps,
            secrets,
        })
    }

    /// `Deployment keneyapp/backend`.
    fn what(&self) -> String {
        format!(
            "{} {}/{}",
            self.target.kind, self.target.namespace, self.target.name
        )
    }

    pub(crate) async fn run(&self, env: &Compiled) -> Outcome {
        let what = self.what();
        let client = match self.conn.client().await {
            Ok(c) => c,
            Err(o) => return o,
        };
        let mut problems = Vec::new();
        let mut reads: HashMap<(Kind, String), Read> = HashMap::new();
        if !env.is_empty() {
            let template = match self.template(&client).await {
                Ok(t) => t,
                Err(o) => return o,
            };
            match self.container(&template) {
                Err(p) => problems.push(p),
                Ok(c) => {
                    for (name, exp) in env {
                        let key = format!("env {name}");
                        match self.resolve(&client, &mut reads, c, name).await {
                            Err(p) => problems.push(p),
                            Ok(Resolved::Unset(why)) => {
                                problems.push(Problem::Failing(format!("{key} is not set{why}")))
                            }
                            Ok(Resolved::Opaque(from)) => {
                                if !matches!(exp, super::Expected::Present) {
                                    problems.push(Problem::Unknown(format!(
                                        "{key} is set from the pod's {from}: its value is known only inside the pod"
                                    )));
                                }
                            }
                            Ok(Resolved::Value(v, secret)) => {
                                problems.extend(compare(&key, exp, &v, secret))
                            }
                        }
                    }
                }
            }
        }
        for (kind, objects) in [
            (Kind::ConfigMap, &self.config_maps),
            (Kind::Secret, &self.secrets),
        ] {
            for (name, keys) in objects {
                let label = format!("{} {name}", kind.name());
                match self.read(&client, &mut reads, kind, name).await {
                    Err(p) => problems.push(p),
                    Ok(None) => problems.push(Problem::Failing(format!("{label} not found"))),
                    Ok(Some(o)) => {
                        for (key, exp) in keys {
                            match o.keys.get(key) {
                                None => problems
                                    .push(Problem::Failing(format!("{label} has no key {key}"))),
                                Some(v) => problems.extend(compare(
                                    &format!("{label} key {key}"),
                                    exp,
                                    v,
                                    kind == Kind::Secret,
                                )),
                            }
                        }
                    }
                }
            }
        }
        verdict(&what, problems)
    }

    /// The workload's pod template.
    async fn template(&self, client: &Client) -> Result<PodTemplateSpec, Outcome> {
        let (ns, name) = (&self.target.namespace, &self.target.name);
        let err = |e: kube::Error| classify(&self.what(), e);
        Ok(match self.target.kind.as_str() {
            "Deployment" => {
                let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
                let d = deployments.get(name).await.map_err(err)?;
                d.spec.unwrap_or_default().template
            }
            "StatefulSet" => {
                let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
                let s = sets.get(name).await.map_err(err)?;
                s.spec.unwrap_or_default().template
            }
            "DaemonSet" => {
                let sets: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
                let d = sets.get(name).await.map_err(err)?;
                d.spec.unwrap_or_default().template
            }
            other => {
                return Err(Outcome::Unknown(format!(
                    "workload kind {other:?} is not supported"
                )));
            }
        })
    }

    /// The container whose env is read.
    fn container<'t>(&self, t: &'t PodTemplateSpec) -> Result<&'t Container, Problem> {
        let containers = t
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default();
        let wanted = self.container.clone().or_else(|| {
            t.metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(DEFAULT_CONTAINER))
                .cloned()
        });
        let found = match &wanted {
            Some(w) => containers.iter().find(|c| &c.name == w),
            None => containers.first(),
        };
        found.ok_or_else(|| {
            let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
            Problem::Failing(match wanted {
                Some(w) => format!(
                    "its pod template has no container {w} (containers: {})",
                    names.join(", ")
                ),
                None => "its pod template has no containers".into(),
            })
        })
    }

    /// Variable `name` of container `c`: its last `env` entry, else the
    /// last `envFrom` source that has it.
    async fn resolve(
        &self,
        client: &Client,
        reads: &mut HashMap<(Kind, String), Read>,
        c: &Container,
        name: &str,
    ) -> Result<Resolved, Problem> {
        let key = format!("env {name}");
        if let Some(var) = c.env.iter().flatten().rev().find(|e| e.name == name) {
            let Some(from) = &var.value_from else {
                return Ok(Resolved::Value(
                    var.value.clone().unwrap_or_default().into_bytes(),
                    false,
                ));
            };
            let (kind, object, k, optional) = if let Some(r) = &from.config_map_key_ref {
                (Kind::ConfigMap, &r.name, &r.key, r.optional)
            } else if let Some(r) = &from.secret_key_ref {
                (Kind::Secret, &r.name, &r.key, r.optional)
            } else if from.field_ref.is_some() {
                return Ok(Resolved::Opaque("fieldRef"));
            } else {
                return Ok(Resolved::Opaque("resourceFieldRef"));
            };
            let optional = optional == Some(true);
            let label = format!("{} {object}", kind.name());
            return match self.read(client, reads, kind, object).await? {
                Some(o) => match o.keys.get(k) {
                    Some(v) => Ok(Resolved::Value(v.clone(), kind == Kind::Secret)),
                    None if optional => Ok(Resolved::Unset(format!(
                        " (its optional {label} has no key {k})"
                    ))),
                    None => Err(Problem::Failing(format!("{key}: {label} has no key {k}"))),
                },
                None if optional => Ok(Resolved::Unset(format!(
                    " (its optional {label} is not found)"
                ))),
                None => Err(Problem::Failing(format!("{key}: {label} not found"))),
            };
        }
        for source in c.env_from.iter().flatten().rev() {
            let prefix = source.prefix.as_deref().unwrap_or_default();
            let Some(k) = name.strip_prefix(prefix) else {
                continue;
            };
            let (kind, object, optional) = if let Some(r) = &source.config_map_ref {
                (Kind::ConfigMap, &r.name, r.optional)
            } else if let Some(r) = &source.secret_ref {
                (Kind::Secret, &r.name, r.optional)
            } else {
                continue;
            };
            match self.read(client, reads, kind, object).await? {
                Some(o) => {
                    if let Some(v) = o.keys.get(k) {
                        return Ok(Resolved::Value(v.clone(), kind == Kind::Secret));
                    }
                }
                None if optional == Some(true) => {}
                None => {
                    return Err(Problem::Failing(format!(
                        "{key}: {} {object} (envFrom) not found",
                        kind.name()
                    )));
                }
            }
        }
        Ok(Resolved::Unset(String::new()))
    }

    /// Reads a ConfigMap or Secret once per run.
    async fn read<'r>(
        &self,
        client: &Client,
        reads: &'r mut HashMap<(Kind, String), Read>,
        kind: Kind,
        name: &str,
    ) -> Result<Option<&'r Object>, Problem> {
        let slot = (kind, name.to_string());
        if !reads.contains_key(&slot) {
            let got = self.fetch(client, kind, name).await;
            reads.insert(slot.clone(), got);
        }
        match &reads[&slot] {
            Ok(o) => Ok(o.as_ref()),
            Err(p) => Err(p.clone()),
        }
    }

    async fn fetch(&self, client: &Client, kind: Kind, name: &str) -> Read {
        let ns = &self.target.namespace;
        let label = format!("{} {ns}/{name}", kind.name());
        let gone = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
        let fail = |e: kube::Error| Problem::of(classify(&label, e)).expect("an error");
        match kind {
            Kind::ConfigMap => {
                let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
                match maps.get(name).await {
                    Ok(m) => {
                        let mut keys: HashMap<String, Vec<u8>> = m
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes()))
                            .collect();
                        keys.extend(
                            m.binary_data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.0)),
                        );
                        Ok(Some(Object { keys }))
                    }
                    Err(e) if gone(&e) => Ok(None),
                    Err(e) => Err(fail(e)),
                }
            }
            Kind::Secret => {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
                match secrets.get(name).await {
                    Ok(s) => Ok(Some(Object {
                        keys: s
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0))
                            .collect(),
                    })),
                    Err(e) if gone(&e) => Ok(None),
                    Err(e) => Err(fail(e)),
                }
            }
        }
    }
}
