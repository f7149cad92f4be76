//! The `k8s.*` actions' runtime: the workload's client, its reads and
//! patches (the `kubernetes` feature).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::sync::OnceCell;

use std::sync::Arc;

use super::{
    EnvValue, Override, RESTARTED_AT, REVISION, RolloutRestartParams, RolloutUndoParams,
    ScaleParams, SetEnvParams,
};
use crate::config::{Config, KubernetesTarget, TargetConfig};
use crate::remedy::template::{Slot, TemplateError, Values, has_vars};
use crate::remedy::{Action, ActionContext, ActionResult, BuildError, Gate, Preflight};
use crate::secret::SecretRef;

/// Annotations `kubectl rollout undo` keeps from the Deployment rather than
/// copy from the ReplicaSet.
const UNDO_SKIPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// A workload and a client for its cluster, made on first use (shared by
/// the same target's other objects, see [`Workload::named`]).
pub struct Workload {
    name: String,
    target: KubernetesTarget,
    client: Arc<OnceCell<kube::Client>>,
}

impl Override {
    /// What applies without labels (the fields with nothing to expand).
    fn literal(&self) -> (Option<String>, Option<String>) {
        let lit = |o: &Option<String>| o.clone().filter(|v| !has_vars(v));
        (lit(&self.workload), lit(&self.namespace))
    }

    /// `w` for one incident's labels; `None` when nothing expands.
    fn apply(&self, w: &Workload, values: &Values) -> Result<Option<Workload>, TemplateError> {
        let vars = |o: &Option<String>| o.as_deref().is_some_and(has_vars);
        if !vars(&self.workload) && !vars(&self.namespace) {
            return Ok(None);
        }
        let name = match &self.workload {
            Some(t) if has_vars(t) => Some(values.expand(t, Slot::KubeName)?),
            _ => None,
        };
        let ns = match &self.namespace {
            Some(t) if has_vars(t) => Some(values.expand(t, Slot::KubeNamespace)?),
            _ => None,
        };
        Ok(Some(w.named(name, ns)))
    }
}

impl Workload {
    fn build(config: &Config, name: &str) -> Result<Self, BuildError> {
        match config.targets.get(name) {
            Some(TargetConfig::Kubernetes(t)) => {
                if !matches!(t.kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet") {
                    return Err(BuildError::Invalid(format!(
                        "target {name:?}: kind {:?} is not Deployment, StatefulSet or DaemonSet",
                        t.kind
                    )));
                }
                Ok(Workload {
                    name: name.to_string(),
                    target: KubernetesTarget {
                        kubeconfig: t.kubeconfig.as_ref().map(|p| config.resolve_path(p)),
                        ..t.clone()
                    },
                    client: Arc::new(OnceCell::new()),
                })
            }
            _ => Err(BuildError::Invalid(format!(
                "target {name:?} is not a kubernetes target"
            ))),
        }
    }

    /// With a ready client (tests with an in-process API).
    pub fn with_client(target: KubernetesTarget, client: kube::Client) -> Self {
        Workload {
            name: target.name.clone(),
            target,
            client: Arc::new(OnceCell::new_with(Some(client))),
        }
    }

    /// The object `name` in `namespace` (each `None`: as now), of the same
    /// kind, in the same cluster, through the same client.
    pub fn named(&self, name: Option<String>, namespace: Option<String>) -> Workload {
        let mut target = self.target.clone();
        if let Some(n) = name {
            target.name = n;
        }
        if let Some(ns) = namespace {
            target.namespace = ns;
        }
        Workload {
            name: self.name.clone(),
            target,
            client: self.client.clone(),
        }
    }

    async fn client(&self) -> Result<&kube::Client, String> {
        self.client
            .get_or_try_init(|| crate::connect::kubernetes(self.target.kubeconfig.as_deref()))
            .await
    }

    fn resource(&self) -> &'static str {
        match self.target.kind.as_str() {
            "StatefulSet" => "statefulsets",
            "DaemonSet" => "daemonsets",
            _ => "deployments",
        }
    }

    /// `/apis/apps/v1/namespaces/NS/deployments/NAME`.
    pub fn path(&self) -> String {
        format!(
            "/apis/apps/v1/namespaces/{}/{}/{}",
            self.target.namespace,
            self.resource(),
            self.target.name
        )
    }

    fn shown(&self) -> String {
        format!(
            "{} {}/{}",
            self.target.kind, self.target.namespace, self.target.name
        )
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Value, String> {
        let client = self.client().await?;
        let mut req = http::Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            req = req.header(http::header::CONTENT_TYPE, ct);
        }
        let req = req.body(body).map_err(|e| e.to_string())?;
        client
            .request::<Value>(req)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        self.send("GET", path, None, Vec::new()).await
    }

    async fn patch(&self, path: &str, content_type: &str, body: &Value) -> Result<Value, String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let pp = "?fieldManager=medic";
        self.send("PATCH", &format!("{path}{pp}"), Some(content_type), bytes)
            .await
    }

    fn inputs(&self) -> Value {
        json!({
            "target": self.name,
            "kind": self.target.kind,
            "namespace": self.target.namespace,
            "name": self.target.name,
        })
    }
}

const STRATEGIC: &str = "application/strategic-merge-patch+json";
const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";

fn paused(obj: &Value) -> bool {
    obj.pointer("/spec/paused").and_then(Value::as_bool) == Some(true)
}

/// Gates shared by restart and undo: the object exists; not paused; for
/// StatefulSets and DaemonSets, a RollingUpdate strategy.
async fn workload_gates(w: &Workload, pre: &mut Preflight) -> Option<Value> {
    let obj = match w.get(&w.path()).await {
        Ok(o) => o,
        Err(e) => {
            pre.gate(Gate::fail("exists", e));
            return None;
        }
    };
    pre.gate(Gate::pass("exists", w.shown()));
    if w.target.kind == "Deployment" {
        if paused(&obj) {
            pre.gate(Gate::fail(
                "not-paused",
                "the Deployment is paused (kubectl rollout resume first)",
            ));
            return None;
        }
        pre.gate(Gate::pass("not-paused", "the Deployment is not paused"));
    } else {
        let strategy = obj
            .pointer("/spec/updateStrategy/type")
            .and_then(Value::as_str)
            .unwrap_or("RollingUpdate");
        if strategy != "RollingUpdate" {
            pre.gate(Gate::fail(
                "rolling-update",
                format!("update strategy {strategy}: a restart annotation would restart nothing"),
            ));
            return None;
        }
        pre.gate(Gate::pass(
            "rolling-update",
            "update strategy RollingUpdate",
        ));
    }
    Some(obj)
}

fn aborted() -> ActionResult {
    ActionResult::failed("aborted: medic is stopping", json!({}))
}

/// Runs `f` under the action's timeout and cancellation.
async fn bounded(
    ctx: &ActionContext,
    f: impl std::future::Future<Output = Result<ActionResult, String>>,
) -> ActionResult {
    tokio::select! {
        r = tokio::time::timeout(ctx.timeout, f) => match r {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => ActionResult::failed(e, json!({})),
            Err(_) => ActionResult::failed(
                format!("timed out after {}", humantime::format_duration(ctx.timeout)),
                json!({ "timed_out": true }),
            ),
        },
        _ = ctx.cancel.cancelled() => aborted(),
    }
}

/// A runnable `k8s.rollout-restart`.
pub struct RolloutRestart {
    w: Workload,
    over: Override,
}

impl RolloutRestart {
    pub fn build(p: &RolloutRestartParams, config: &Config) -> Result<Self, BuildError> {
        let over = Override::new(&p.workload, &p.namespace);
        let (name, ns) = over.literal();
        Ok(RolloutRestart {
            w: Workload::build(config, &p.target)?.named(name, ns),
            over,
        })
    }

    /// On `w`; with `over`'s `workload`/`namespace` templates (tests).
    pub fn new(w: Workload, over: Override) -> Self {
        RolloutRestart { w, over }
    }

    /// kubectl's patch: the annotation with the time as RFC 3339.
    pub fn patch_body(at: chrono::DateTime<chrono::Utc>) -> Value {
        let stamp = at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        json!({ "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: stamp } } } } })
    }
}

#[async_trait::async_trait]
impl Action for RolloutRestart {
    fn describe(&self) -> String {
        format!("kubectl rollout restart of {}", self.w.shown())
    }

    fn inputs(&self) -> Value {
        self.w.inputs()
    }

    async fn preflight(&self, _ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        workload_gates(&self.w, &mut pre).await;
        pre
    }

    fn for_labels(&self, values: &Values) -> Result<Option<Arc<dyn Action>>, TemplateError> {
        Ok(self.over.apply(&self.w, values)?.map(|w| {
            let a: Arc<dyn Action> = Arc::new(RolloutRestart {
                w,
                over: Override::default(),
            });
            a
        }))
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        bounded(ctx, async {
            let body = Self::patch_body(ctx.now);
            self.w.patch(&self.w.path(), STRATEGIC, &body).await?;
            Ok(ActionResult::ok(
                format!("{} restarted ({RESTARTED_AT} patched)", self.w.shown()),
                json!({ "patch": body }),
            ))
        })
        .await
    }
}

/// A runnable `k8s.rollout-undo` (Deployments).
pub struct RolloutUndo {
    w: Workload,
    over: Override,
}

/// What an undo would do.
#[derive(Debug, PartialEq)]
enum UndoPlan {
    /// The patch back to `revision`.
    Patch { revision: u64, body: Value },
    /// The template already matches `revision`.
    Skip { revision: u64 },
}

impl RolloutUndo {
    pub fn build(p: &RolloutUndoParams, config: &Config) -> Result<Self, BuildError> {
        let over = Override::new(&p.workload, &p.namespace);
        let (name, ns) = over.literal();
        let w = Workload::build(config, &p.target)?.named(name, ns);
        if w.target.kind != "Deployment" {
            return Err(BuildError::Invalid(format!(
                "k8s.rollout-undo supports Deployments; target {:?} is a {}",
                p.target, w.target.kind
            )));
        }
        Ok(RolloutUndo { w, over })
    }

    pub fn new(w: Workload) -> Self {
        RolloutUndo {
            w,
            over: Override::default(),
        }
    }

    /// kubectl's rollback computation from the Deployment and its
    /// ReplicaSets.
    fn plan(deployment: &Value, replica_sets: &[Value]) -> Result<UndoPlan, String> {
        let uid = deployment.pointer("/metadata/uid").and_then(Value::as_str);
        let revision = |rs: &Value| {
            rs.pointer("/metadata/annotations")
                .and_then(|a| a.get(REVISION))
                .and_then(Value::as_str)
                .and_then(|v| v.parse::<u64>().ok())
        };
        let owned = replica_sets.iter().filter(|rs| {
            rs.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter().any(|r| {
                        r.get("controller").and_then(Value::as_bool) == Some(true)
                            && r.get("uid").and_then(Value::as_str) == uid
                    })
                })
        });
        let mut max: Option<(u64, &Value)> = None;
        let mut prev: Option<(u64, &Value)> = None;
        for rs in owned {
            let Some(v) = revision(rs) else { continue };
            match max {
                Some((m, _)) if v <= m => {
                    if v < m && prev.is_none_or(|(p, _)| v > p) {
                        prev = Some((v, rs));
                    }
                }
                _ => {
                    prev = max;
                    max = Some((v, rs));
                }
            }
        }
        let Some((revision, rs)) = prev else {
            return Err("no rollout history found: there is no previous revision".into());
        };
        let mut template = rs
            .pointer("/spec/template")
            .cloned()
            .ok_or_else(|| format!("ReplicaSet of revision {revision} has no template"))?;
        if let Some(labels) = template
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove("pod-template-hash");
        }
        let current = deployment
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(Value::Null);
        if template == current {
            return Ok(UndoPlan::Skip { revision });
        }
        let mut annotations = serde_json::Map::new();
        if let Some(d) = deployment
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
        {
            for k in UNDO_SKIPPED_ANNOTATIONS {
                if let Some(v) = d.get(*k) {
                    annotations.insert((*k).to_string(), v.clone());
                }
            }
        }
        if let Some(r) = rs
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
        {
            for (k, v) in r {
                if !UNDO_SKIPPED_ANNOTATIONS.contains(&k.as_str()) {
                    annotations.insert(k.clone(), v.clone());
                }
            }
        }
        let body = json!([
            { "op": "replace", "path": "/spec/template", "value": template },
            { "op": "replace", "path": "/metadata/annotations", "value": annotations },
        ]);
        Ok(UndoPlan::Patch { revision, body })
    }

    async fn current_plan(&self, deployment: &Value) -> Result<UndoPlan, String> {
        let selector = deployment
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let path = format!(
            "/apis/apps/v1/namespaces/{}/replicasets?labelSelector={}",
            self.w.target.namespace,
            urlencode(&selector)
        );
        let list = self.w.get(&path).await?;
        let items = list
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Self::plan(deployment, &items)
    }
}

/// Percent-encodes a label selector for a query string.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[async_trait::async_trait]
impl Action for RolloutUndo {
    fn describe(&self) -> String {
        format!("kubectl rollout undo of {}", self.w.shown())
    }

    fn inputs(&self) -> Value {
        self.w.inputs()
    }

    fn for_labels(&self, values: &Values) -> Result<Option<Arc<dyn Action>>, TemplateError> {
        Ok(self.over.apply(&self.w, values)?.map(|w| {
            let a: Arc<dyn Action> = Arc::new(RolloutUndo::new(w));
            a
        }))
    }

    async fn preflight(&self, _ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        let Some(d) = workload_gates(&self.w, &mut pre).await else {
            return pre;
        };
        match self.current_plan(&d).await {
            Ok(UndoPlan::Patch { revision, .. }) => {
                pre.gate(Gate::pass(
                    "previous-revision",
                    format!("back to revision {revision}"),
                ));
                pre.data = json!({ "to_revision": revision });
            }
            Ok(UndoPlan::Skip { revision }) => {
                pre.gate(Gate::pass(
                    "previous-revision",
                    format!("the template already matches revision {revision}: nothing to undo"),
                ));
                pre.data = json!({ "to_revision": revision, "skip": true });
            }
            Err(e) => {
                pre.gate(Gate::fail("previous-revision", e));
            }
        }
        pre
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        bounded(ctx, async {
            let d = self.w.get(&self.w.path()).await?;
            if paused(&d) {
                return Err("the Deployment is paused (kubectl rollout resume first)".into());
            }
            match self.current_plan(&d).await? {
                UndoPlan::Skip { revision } => Ok(ActionResult::ok(
                    format!(
                        "skipped rollback (current template already matches revision {revision})"
                    ),
                    json!({ "to_revision": revision, "skipped": true }),
                )),
                UndoPlan::Patch { revision, body } => {
                    self.w.patch(&self.w.path(), JSON_PATCH, &body).await?;
                    Ok(ActionResult::ok(
                        format!("{} rolled back to revision {revision}", self.w.shown()),
                        json!({ "to_revision": revision }),
                    ))
                }
            }
        })
        .await
    }
}

/// A runnable `k8s.set-env`.
pub struct SetEnv {
    w: Workload,
    params: SetEnvParams,
}

impl SetEnv {
    pub fn build(p: &SetEnvParams, config: &Config) -> Result<Self, BuildError> {
        Ok(SetEnv {
            w: Workload::build(config, &p.target)?,
            params: p.clone(),
        })
    }

    pub fn new(w: Workload, params: SetEnvParams) -> Self {
        SetEnv { w, params }
    }

    /// The containers to change: the named one, or every container.
    fn containers(&self, obj: &Value) -> Result<Vec<String>, String> {
        let all: Vec<String> = obj
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        match &self.params.container {
            Some(c) if all.contains(c) => Ok(vec![c.clone()]),
            Some(c) => Err(format!(
                "no container {c:?} in {} (containers: {})",
                self.w.shown(),
                all.join(", ")
            )),
            None if all.is_empty() => Err(format!("{} has no containers", self.w.shown())),
            None => Ok(all),
        }
    }

    /// One env entry as the patch writes it; the other form is nulled so
    /// a switch between `value` and `valueFrom` leaves no stale half.
    fn entry(name: &str, v: &EnvValue) -> Result<Value, String> {
        Ok(match v {
            EnvValue::Plain(s) => json!({ "name": name, "value": s, "valueFrom": null }),
            EnvValue::Secret(r) => {
                let s = r.resolve().map_err(|e| format!("env {name}: {e}"))?;
                json!({ "name": name, "value": s.expose(), "valueFrom": null })
            }
            EnvValue::Kube(_) | EnvValue::KubeFrom(_) => json!({
                "name": name,
                "value": null,
                "valueFrom": { "secretKeyRef": v.kube_ref() },
            }),
        })
    }

    /// The strategic merge patch (containers merge by name, env by name).
    pub fn patch_body(&self, containers: &[String]) -> Result<Value, String> {
        let env = self
            .params
            .env
            .iter()
            .map(|(k, v)| Self::entry(k, v))
            .collect::<Result<Vec<_>, _>>()?;
        let cs: Vec<Value> = containers
            .iter()
            .map(|c| json!({ "name": c, "env": env }))
            .collect();
        Ok(json!({ "spec": { "template": { "spec": { "containers": cs } } } }))
    }
}

#[async_trait::async_trait]
impl Action for SetEnv {
    fn describe(&self) -> String {
        let names: Vec<&str> = self.params.env.keys().map(String::as_str).collect();
        format!("k8s.set-env {} on {}", names.join(", "), self.w.shown())
    }

    fn inputs(&self) -> Value {
        let env: BTreeMap<&str, String> = self
            .params
            .env
            .iter()
            .map(|(k, v)| {
                let shown = match v {
                    EnvValue::Plain(s) => s.clone(),
                    EnvValue::Secret(SecretRef::Env(n)) => format!("<secret env:{n}>"),
                    EnvValue::Secret(SecretRef::File(p)) => {
                        format!("<secret file:{}>", p.display())
                    }
                    EnvValue::Kube(_) | EnvValue::KubeFrom(_) => {
                        let k = v.kube_ref().expect("a Kubernetes reference");
                        format!("<secretKeyRef {}/{}>", k.name, k.key)
                    }
                };
                (k.as_str(), shown)
            })
            .collect();
        let mut v = self.w.inputs();
        v["container"] = json!(self.params.container);
        v["env"] = json!(env);
        v
    }

    async fn preflight(&self, _ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        let obj = match self.w.get(&self.w.path()).await {
            Ok(o) => o,
            Err(e) => {
                pre.gate(Gate::fail("exists", e));
                return pre;
            }
        };
        pre.gate(Gate::pass("exists", self.w.shown()));
        match self.containers(&obj) {
            Ok(cs) => {
                pre.gate(Gate::pass("containers", cs.join(", ")));
                pre.data = json!({ "containers": cs });
            }
            Err(e) => {
                pre.gate(Gate::fail("containers", e));
            }
        }
        // Secrets must resolve before anything is changed.
        for (k, v) in &self.params.env {
            if let EnvValue::Secret(r) = v
                && let Err(e) = r.resolve()
            {
                pre.gate(Gate::fail("secrets", format!("env {k}: {e}")));
                return pre;
            }
        }
        pre
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        bounded(ctx, async {
            let obj = self.w.get(&self.w.path()).await?;
            let cs = self.containers(&obj)?;
            let body = self.patch_body(&cs)?;
            self.w.patch(&self.w.path(), STRATEGIC, &body).await?;
            let names: Vec<&str> = self.params.env.keys().map(String::as_str).collect();
            Ok(ActionResult::ok(
                format!(
                    "set {} on container(s) {} of {}",
                    names.join(", "),
                    cs.join(", "),
                    self.w.shown()
                ),
                json!({ "containers": cs, "env": names }),
            ))
        })
        .await
    }
}

/// A runnable `k8s.scale`.
pub struct Scale {
    w: Workload,
    replicas: u32,
    over: Override,
}

impl Scale {
    pub fn build(p: &ScaleParams, config: &Config) -> Result<Self, BuildError> {
        let over = Override::new(&p.workload, &p.namespace);
        let (name, ns) = over.literal();
        let w = Workload::build(config, &p.target)?.named(name, ns);
        if w.target.kind == "DaemonSet" {
            return Err(BuildError::Invalid(format!(
                "k8s.scale: target {:?} is a DaemonSet, which has no replica count",
                p.target
            )));
        }
        Ok(Scale {
            w,
            replicas: p.replicas,
            over,
        })
    }

    pub fn new(w: Workload, replicas: u32) -> Self {
        Scale {
            w,
            replicas,
            over: Override::default(),
        }
    }
}

#[async_trait::async_trait]
impl Action for Scale {
    fn describe(&self) -> String {
        format!(
            "kubectl scale {} to {} replicas",
            self.w.shown(),
            self.replicas
        )
    }

    fn inputs(&self) -> Value {
        let mut v = self.w.inputs();
        v["replicas"] = json!(self.replicas);
        v
    }

    fn for_labels(&self, values: &Values) -> Result<Option<Arc<dyn Action>>, TemplateError> {
        Ok(self.over.apply(&self.w, values)?.map(|w| {
            let a: Arc<dyn Action> = Arc::new(Scale::new(w, self.replicas));
            a
        }))
    }

    async fn preflight(&self, _ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        match self.w.get(&format!("{}/scale", self.w.path())).await {
            Ok(s) => {
                let now = s.pointer("/spec/replicas").and_then(Value::as_u64);
                pre.gate(Gate::pass(
                    "exists",
                    format!("{} has {} replica(s)", self.w.shown(), now.unwrap_or(0)),
                ));
                pre.data = json!({ "replicas_before": now });
            }
            Err(e) => {
                pre.gate(Gate::fail("exists", e));
            }
        }
        pre
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        bounded(ctx, async {
            let body = json!({ "spec": { "replicas": self.replicas } });
            self.w
                .patch(&format!("{}/scale", self.w.path()), MERGE, &body)
                .await?;
            Ok(ActionResult::ok(
                format!("{} scaled to {} replicas", self.w.shown(), self.replicas),
                json!({ "replicas": self.replicas }),
            ))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(uid: &str, revision: &str, image: &str, extra: Value) -> Value {
        json!({
            "metadata": {
                "name": format!("backend-{revision}"),
                "annotations": { REVISION: revision, "note": extra },
                "ownerReferences": [{ "uid": uid, "controller": true, "kind": "Deployment", "name": "backend" }],
            },
            "spec": { "template": {
                "metadata": { "labels": { "app": "backend", "pod-template-hash": format!("h{revision}") } },
                "spec": { "containers": [{ "name": "backend", "image": image }] },
            } },
        })
    }

    fn deployment(image: &str) -> Value {
        json!({
            "metadata": { "name": "backend", "uid": "u1", "annotations": { REVISION: "3", "team": "x" } },
            "spec": { "template": {
                "metadata": { "labels": { "app": "backend" } },
                "spec": { "containers": [{ "name": "backend", "image": image }] },
            } },
        })
    }

    #[test]
    fn undo_goes_to_the_second_highest_revision_of_owned_replica_sets() {
        let sets = vec![
            rs("u1", "1", "app:1", json!("one")),
            rs("u1", "3", "app:3", json!("three")),
            rs("u1", "2", "app:2", json!("two")),
            // Not ours: ignored even with a higher revision.
            rs("other", "9", "app:9", json!("nine")),
        ];
        let plan = RolloutUndo::plan(&deployment("app:3"), &sets).unwrap();
        let UndoPlan::Patch { revision, body } = plan else {
            panic!("{plan:?}")
        };
        assert_eq!(revision, 2);
        assert_eq!(
            body,
            json!([
                { "op": "replace", "path": "/spec/template", "value": {
                    "metadata": { "labels": { "app": "backend" } },
                    "spec": { "containers": [{ "name": "backend", "image": "app:2" }] },
                } },
                { "op": "replace", "path": "/metadata/annotations", "value": {
                    REVISION: "3", "note": "two",
                } },
            ])
        );
    }

    #[test]
    fn undo_skips_when_the_template_already_matches_and_needs_history() {
        let sets = vec![
            rs("u1", "1", "app:1", json!(1)),
            rs("u1", "2", "app:2", json!(2)),
        ];
        assert_eq!(
            RolloutUndo::plan(&deployment("app:1"), &sets).unwrap(),
            UndoPlan::Skip { revision: 1 }
        );
        let e = RolloutUndo::plan(&deployment("app:2"), &sets[1..]).unwrap_err();
        assert_eq!(e, "no rollout history found: there is no previous revision");
    }

    #[test]
    fn restart_patch_is_kubectls() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            serde_json::to_string(&RolloutRestart::patch_body(at)).unwrap(),
            r#"{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-01-02T03:04:05Z"}}}}}"#
        );
    }

    #[test]
    fn selectors_are_encoded() {
        assert_eq!(
            urlencode("app=backend,tier=web"),
            "app%3Dbackend%2Ctier%3Dweb"
        );
    }
}
