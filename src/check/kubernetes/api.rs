//! The `kubernetes` check's runtime: the client and the reads of the
//! workload and its pods (the `kubernetes` feature).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config as KubeConfig};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::KubernetesParams;
use crate::check::{BuildError, Check};
use crate::config::{Config, KubernetesTarget, TargetConfig};
use crate::observe::Outcome;

/// Restart counts of one container, oldest first.
type Samples = crate::check::Samples;

/// Where the client's config comes from.
enum Source {
    /// A kubeconfig file named by the target, already parsed.
    File(PathBuf, Box<Kubeconfig>),
    /// In-cluster, then `$KUBECONFIG` / `~/.kube/config`.
    Infer,
    /// A client given by the caller (tests, shared clients).
    Given,
}

/// A kubernetes target's API client, made at the first use (shared by
/// the `kubernetes` and `config` checks).
pub(crate) struct Connection {
    timeout: Duration,
    source: Source,
    client: Mutex<Option<Client>>,
}

impl Connection {
    /// The client of target `name`: its kubeconfig (read now: a missing or
    /// broken file refuses the check), or inferred at the first use.
    pub(crate) fn build(
        name: &str,
        t: &KubernetesTarget,
        timeout: Duration,
        config: &Config,
    ) -> Result<Self, BuildError> {
        let source = match &t.kubeconfig {
            Some(path) => {
                let path = config.resolve_path(path);
                let kc = Kubeconfig::read_from(&path).map_err(|e| {
                    BuildError::Invalid(format!(
                        "target {name:?}: kubeconfig {}: {e}",
                        path.display()
                    ))
                })?;
                Source::File(path, Box::new(kc))
            }
            None => Source::Infer,
        };
        Ok(Self::new(timeout, source, None))
    }

    /// A connection through `client` (tests; shared clients).
    pub(crate) fn given(timeout: Duration, client: Client) -> Self {
        Self::new(timeout, Source::Given, Some(client))
    }

    fn new(timeout: Duration, source: Source, client: Option<Client>) -> Self {
        Connection {
            timeout,
            source,
            client: Mutex::new(client),
        }
    }

    /// The client; unknown while no usable config is found.
    pub(crate) async fn client(&self) -> Result<Client, Outcome> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let mut config = match &self.source {
            Source::File(path, kc) => {
                KubeConfig::from_custom_kubeconfig((**kc).clone(), &KubeConfigOptions::default())
                    .await
                    .map_err(|e| Outcome::Unknown(format!("kubeconfig {}: {e}", path.display())))?
            }
            Source::Infer => match KubeConfig::incluster() {
                Ok(c) => c,
                Err(in_cluster) => KubeConfig::from_kubeconfig(&KubeConfigOptions::default())
                    .await
                    .map_err(|kc| {
                        Outcome::Unknown(format!(
                            "no Kubernetes config: in-cluster: {in_cluster}; kubeconfig: {kc}"
                        ))
                    })?,
            },
            Source::Given => {
                return Err(Outcome::Unknown("no Kubernetes client".into()));
            }
        };
        config.connect_timeout = Some(self.timeout);
        config.read_timeout = Some(self.timeout);
        let client = Client::try_from(config)
            .map_err(|e| Outcome::Unknown(format!("Kubernetes client: {e}")))?;
        *guard = Some(client.clone());
        Ok(client)
    }
}

/// An API error about `what` as an outcome: the object missing is
/// failing (the API server says so); refusals, errors and silence are
/// unknown.
pub(crate) fn classify(what: &str, e: kube::Error) -> Outcome {
    match e {
        kube::Error::Api(s) => match s.code {
            404 => Outcome::Failing(format!("{what}: not found")),
            401 | 403 => Outcome::Unknown(format!(
                "{what}: the API server refused medic ({}: {})",
                s.code, s.message
            )),
            code => Outcome::Unknown(format!("{what}: API server error {code}: {}", s.message)),
        },
        other => Outcome::Unknown(format!("{what}: API server unreachable: {other}")),
    }
}

/// A runnable `kubernetes` check.
pub struct KubernetesCheck {
    target: KubernetesTarget,
    params: KubernetesParams,
    conn: Connection,
    /// Restart-count samples per (pod uid, container).
    history: std::sync::Mutex<HashMap<(String, String), Samples>>,
}

impl std::fmt::Debug for KubernetesCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesCheck")
            .field("kind", &self.target.kind)
            .field("name", &self.target.name)
            .field("namespace", &self.target.namespace)
            .finish()
    }
}

impl KubernetesCheck {
    pub fn build(
        p: &KubernetesParams,
        timeout: Duration,
        config: &Config,
    ) -> Result<Self, BuildError> {
        let Some(TargetConfig::Kubernetes(t)) = config.targets.get(&p.target) else {
            return Err(BuildError::Invalid(format!(
                "target {:?} is not a kubernetes target",
                p.target
            )));
        };
        let conn = Connection::build(&p.target, t, timeout, config)?;
        Ok(Self::new(p, t.clone(), conn))
    }

    /// A check that uses `client` (tests; several checks sharing one).
    pub fn with_client(
        p: &KubernetesParams,
        target: KubernetesTarget,
        timeout: Duration,
        client: Client,
    ) -> Self {
        Self::new(p, target, Connection::given(timeout, client))
    }

    fn new(p: &KubernetesParams, target: KubernetesTarget, conn: Connection) -> Self {
        KubernetesCheck {
            target,
            params: p.clone(),
            conn,
            history: Default::default(),
        }
    }

    /// `Deployment keneyapp/backend`.
    fn what(&self) -> String {
        format!(
            "{} {}/{}",
            self.target.kind, self.target.namespace, self.target.name
        )
    }

    async fn client(&self) -> Result<Client, Outcome> {
        self.conn.client().await
    }

    /// The API server's version (`GET /version`): whether medic can reach
    /// the API at all (the `source` check).
    pub async fn api_version(&self) -> Result<String, String> {
        let client = self.client().await.map_err(|o| match o {
            Outcome::Unknown(m) | Outcome::Failing(m) | Outcome::Unreachable(m) => m,
            Outcome::Ok => String::new(),
        })?;
        client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .map_err(|e| e.to_string())
    }

    /// The workload's desired and available replicas, and its pod selector.
    async fn workload(&self, client: &Client) -> Result<Workload, Outcome> {
        let (ns, name) = (&self.target.namespace, &self.target.name);
        let err = |e: kube::Error| self.classify(e);
        Ok(match self.target.kind.as_str() {
            "Deployment" => {
                let d = Api::<Deployment>::namespaced(client.clone(), ns)
                    .get(name)
                    .await
                    .map_err(err)?;
                let spec = d.spec.unwrap_or_default();
                let status = d.status.unwrap_or_default();
                Workload {
                    desired: spec.replicas.unwrap_or(1),
                    available: status.available_replicas.unwrap_or(0),
                    selector: spec.selector,
                }
            }
            "StatefulSet" => {
                let s = Api::<StatefulSet>::namespaced(client.clone(), ns)
                    .get(name)
                    .await
                    .map_err(err)?;
                let spec = s.spec.unwrap_or_default();
                let status = s.status.unwrap_or_default();
                Workload {
                    desired: spec.replicas.unwrap_or(1),
                    available: status.available_replicas.unwrap_or(0),
                    selector: spec.selector,
                }
            }
            "DaemonSet" => {
                let d = Api::<DaemonSet>::namespaced(client.clone(), ns)
                    .get(name)
                    .await
                    .map_err(err)?;
                let status = d.status.unwrap_or_default();
                Workload {
                    desired: status.desired_number_scheduled,
                    available: status.number_available.unwrap_or(0),
                    selector: d.spec.unwrap_or_default().selector,
                }
            }
            other => {
                return Err(Outcome::Unknown(format!(
                    "workload kind {other:?} is not supported"
                )));
            }
        })
    }

    fn classify(&self, e: kube::Error) -> Outcome {
        classify(&self.what(), e)
    }

    async fn observe(&self) -> Result<(), Outcome> {
        let client = self.client().await?;
        let w = self.workload(&client).await?;
        let what = self.what();
        if self.params.available && w.available < w.desired {
            return Err(Outcome::Failing(format!(
                "{what}: {} of {} replicas available",
                w.available, w.desired
            )));
        }
        if !self.params.crashloop && self.params.max_restarts.is_none() {
            return Ok(());
        }
        let selector = selector_string(&w.selector)
            .map_err(|why| Outcome::Unknown(format!("{what}: cannot select its pods: {why}")))?;
        let pods = Api::<Pod>::namespaced(client, &self.target.namespace)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.classify(e))?;
        if self.params.crashloop {
            for pod in &pods.items {
                for cs in statuses(pod) {
                    let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
                    if waiting.and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff") {
                        return Err(Outcome::Failing(format!(
                            "{what}: pod {} container {} in CrashLoopBackOff ({} restarts)",
                            pod_name(pod),
                            cs.name,
                            cs.restart_count
                        )));
                    }
                }
            }
        }
        if let Some(max) = self.params.max_restarts {
            self.judge_restarts(&pods.items, max)?;
        }
        Ok(())
    }

    fn judge_restarts(&self, pods: &[Pod], max: u32) -> Result<(), Outcome> {
        let window = self.params.window.map(|d| d.get());
        let now = Instant::now();
        let wall = chrono::Utc::now();
        let mut worst: Option<(i64, String, String)> = None;
        let mut seen = HashSet::new();
        let mut history = self
            .history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for pod in pods {
            let uid = pod.metadata.uid.clone().unwrap_or_else(|| pod_name(pod));
            let started = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            for cs in statuses(pod) {
                let restarts = match window {
                    None => i64::from(cs.restart_count),
                    Some(window) => {
                        let key = (uid.clone(), cs.name.clone());
                        let samples = history.entry(key.clone()).or_default();
                        seen.insert(key);
                        let started_inside = started.is_some_and(|t| {
                            chrono::Duration::from_std(window).is_ok_and(|w| {
                                wall.timestamp_millis() - t.as_millisecond() <= w.num_milliseconds()
                            })
                        });
                        crate::check::restarts_in_window(
                            samples,
                            now,
                            i64::from(cs.restart_count),
                            window,
                            started_inside,
                        )
                    }
                };
                if restarts > i64::from(max) && worst.as_ref().is_none_or(|(n, _, _)| restarts > *n)
                {
                    worst = Some((restarts, pod_name(pod), cs.name.clone()));
                }
            }
        }
        if window.is_some() {
            history.retain(|k, _| seen.contains(k));
        }
        match worst {
            None => Ok(()),
            Some((n, pod, container)) => {
                let span = match self.params.window {
                    Some(w) => format!("in {w}"),
                    None => "since it started".into(),
                };
                Err(Outcome::Failing(format!(
                    "{}: pod {pod} container {container} restarted {n} times {span} (limit {max})",
                    self.what()
                )))
            }
        }
    }
}

#[async_trait::async_trait]
impl Check for KubernetesCheck {
    async fn run(&self) -> Outcome {
        match self.observe().await {
            Ok(()) => Outcome::Ok,
            Err(o) => o,
        }
    }
}

struct Workload {
    desired: i32,
    available: i32,
    selector: LabelSelector,
}

fn pod_name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_else(|| "?".into())
}

/// Init and regular container statuses of a pod.
fn statuses(p: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let s = p.status.as_ref();
    let init = s.and_then(|s| s.init_container_statuses.as_deref());
    let main = s.and_then(|s| s.container_statuses.as_deref());
    init.unwrap_or_default()
        .iter()
        .chain(main.unwrap_or_default())
}

/// A label selector in the API's query syntax (`app=backend,tier in (a,b)`).
/// An empty selector would match every pod in the namespace: refused.
pub fn selector_string(s: &LabelSelector) -> Result<String, String> {
    let mut parts = Vec::new();
    for (k, v) in s.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => return Err(format!("unknown selector operator {other:?}")),
        });
    }
    if parts.is_empty() {
        return Err("its selector is empty".into());
    }
    Ok(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use std::collections::BTreeMap;

    #[test]
    fn selectors_in_query_syntax() {
        let s = LabelSelector {
            match_labels: Some(BTreeMap::from([
                ("app".to_string(), "backend".to_string()),
                ("tier".to_string(), "api".to_string()),
            ])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "In".into(),
                    values: Some(vec!["prod".into(), "staging".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(
            selector_string(&s).unwrap(),
            "app=backend,tier=api,env in (prod,staging),!canary"
        );
        assert!(selector_string(&LabelSelector::default()).is_err());
    }
}
