//! `kubernetes.backup`: the runbook's "Kubernetes manifests, ConfigMaps and
//! Secrets" backup procedure.
//!
//! Every namespaced resource of the namespace that the API lists (found by
//! discovery, so custom resources too) is read and written as one YAML
//! stream that `kubectl apply -f` takes back:
//! - server-set fields are dropped (`status`, `metadata.uid`,
//!   `resourceVersion`, `generation`, `creationTimestamp`, `managedFields`,
//!   `selfLink`, the last-applied annotation, a Service's `clusterIP`s), so
//!   the manifests apply to a new cluster;
//! - objects a controller owns (`ownerReferences`: a Deployment's
//!   ReplicaSets and Pods, a Job's Pods) are left out: restoring the owner
//!   recreates them; so are events, endpoints, endpoint slices and leases,
//!   which the cluster writes itself;
//! - with `encrypt`, the whole copy is encrypted to the age recipients
//!   (ASCII-armored; `age -d -i KEY COPY | kubectl apply -f -` restores it)
//!   and Secrets are included; without it Secrets are left out and only
//!   named in the run's report: a Secret's value is never stored in clear.
//!
//! The copy is re-read before it counts (the YAML parses back to the same
//! number of objects; an encrypted copy carries the age armor), then
//! checksummed, stored and retained like the other backups.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{Discovery, Scope, verbs};
use serde_json::{Value, json};

use super::backup::Copies;
use super::storage;
use super::{JobContext, JobError, Report};
use crate::config::{AgeEncryption, Config, KubernetesBackupJobConfig, TargetConfig};

/// The first line of an ASCII-armored age file.
pub const AGE_ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
/// Its last line.
pub const AGE_ARMOR_END: &str = "-----END AGE ENCRYPTED FILE-----";

/// Resources the cluster writes itself: never backed up.
const CLUSTER_WRITTEN: &[&str] = &[
    "events",
    "events.events.k8s.io",
    "endpoints",
    "endpointslices.discovery.k8s.io",
    "leases.coordination.k8s.io",
    "controllerrevisions.apps",
    "pods.metrics.k8s.io",
];

/// A built `kubernetes.backup` job.
pub struct KubernetesBackupJob {
    namespace: String,
    kubeconfig: Option<PathBuf>,
    exclude: Vec<String>,
    recipients: Option<Vec<age::x25519::Recipient>>,
    copies: Copies,
}

/// The recipients of an `encrypt` block: inline and from its file.
pub fn recipients(
    e: &AgeEncryption,
    config: &Config,
) -> Result<Vec<age::x25519::Recipient>, String> {
    let mut keys: Vec<(String, String)> = e
        .recipients
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("encrypt.recipients[{i}]"), r.clone()))
        .collect();
    if let Some(f) = &e.recipients_file {
        let path = config.resolve_path(f);
        let text = std::fs::read_to_string(&path)
            .map_err(|err| format!("recipients_file {}: {err}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                keys.push((format!("{}:{}", path.display(), n + 1), line.to_string()));
            }
        }
    }
    if keys.is_empty() {
        return Err("encrypt: no age recipient".into());
    }
    keys.iter()
        .map(|(at, k)| {
            age::x25519::Recipient::from_str(k)
                .map_err(|err| format!("{at}: {k:?} is not an age public key: {err}"))
        })
        .collect()
}

impl KubernetesBackupJob {
    /// Builds job `name` from its config.
    pub fn build(
        name: &str,
        c: &KubernetesBackupJobConfig,
        config: &Config,
    ) -> Result<Self, JobError> {
        let t = match config.targets.get(&c.target) {
            Some(TargetConfig::Kubernetes(t)) => t,
            Some(_) => {
                return Err(JobError::Invalid(format!(
                    "target {:?} is not a kubernetes target",
                    c.target
                )));
            }
            None => return Err(JobError::Invalid(format!("unknown target {:?}", c.target))),
        };
        let recipients = c
            .encrypt
            .as_ref()
            .map(|e| recipients(e, config))
            .transpose()
            .map_err(JobError::Invalid)?;
        Ok(KubernetesBackupJob {
            namespace: c.namespace.clone().unwrap_or_else(|| t.namespace.clone()),
            kubeconfig: t.kubeconfig.as_ref().map(|k| config.resolve_path(k)),
            exclude: c.exclude.clone(),
            recipients,
            copies: Copies::of(config, name)?,
        })
    }
}

#[async_trait::async_trait]
impl super::Job for KubernetesBackupJob {
    fn kind(&self) -> &'static str {
        "kubernetes.backup"
    }

    async fn run(&self, cx: &JobContext) -> Report {
        self.copies
            .run(cx, "kubernetes-backup", |name, partial, work| async move {
                let data = self.backup_into(cx, &name, &partial, &work).await?;
                let summary = format!(
                    "kubernetes backup {name} of namespace {} taken, verified and stored ({} objects, {} bytes{})",
                    self.namespace,
                    data["objects"],
                    data["size"],
                    if self.recipients.is_some() { ", encrypted" } else { "" }
                );
                Ok((summary, data))
            })
            .await
    }
}

/// What was read from the API.
struct Export {
    /// The YAML stream.
    yaml: String,
    /// Objects written, by `Kind` (`Deployment`: 2).
    kinds: BTreeMap<String, u64>,
    /// Objects written.
    objects: u64,
    /// Secrets left out (no encryption), by name.
    secrets_left_out: Vec<String>,
    /// Objects left out because a controller owns them.
    owned: u64,
    /// Resource types read (`deployments.apps`).
    resources: Vec<String>,
}

impl KubernetesBackupJob {
    async fn backup_into(
        &self,
        cx: &JobContext,
        name: &str,
        partial: &Path,
        work: &Path,
    ) -> Result<Value, String> {
        let client = crate::connect::kubernetes(self.kubeconfig.as_deref()).await?;
        let export = self.export(cx, &client).await?;
        // Read back before it counts: the stream parses to as many objects.
        let parsed = count_documents(&export.yaml)?;
        if parsed != export.objects {
            return Err(format!(
                "the manifests read back as {parsed} objects, {} were written",
                export.objects
            ));
        }
        let bytes = match &self.recipients {
            Some(r) => encrypt(r, export.yaml.as_bytes())?,
            None => export.yaml.clone().into_bytes(),
        };
        tokio::fs::write(partial, &bytes)
            .await
            .map_err(|e| format!("write {}: {e}", partial.display()))?;
        let (sha256, size) = storage::sha256_file(partial).await?;
        cx.event(
            "verify",
            format!(
                "{} objects read back from the manifests{}; sha256 {sha256}, {size} bytes",
                export.objects,
                if self.recipients.is_some() {
                    ", encrypted to the age recipients"
                } else {
                    ""
                }
            ),
            json!({ "objects": export.objects, "sha256": sha256, "size": size }),
        )
        .await;
        let stored = self.copies.store(cx, work, partial, name).await?;
        Ok(json!({
            "file": name,
            "sha256": sha256,
            "size": size,
            "namespace": self.namespace,
            "objects": export.objects,
            "kinds": export.kinds,
            "resources": export.resources,
            "owned_left_out": export.owned,
            "secrets_left_out": export.secrets_left_out,
            "encrypted": self.recipients.is_some(),
            "stored": stored,
        }))
    }

    /// Discovery, then a list of every namespaced, listable resource.
    async fn export(&self, cx: &JobContext, client: &kube::Client) -> Result<Export, String> {
        let discovery = Discovery::new(client.clone())
            .run()
            .await
            .map_err(|e| format!("API discovery: {e}"))?;
        let mut out = Export {
            yaml: String::new(),
            kinds: BTreeMap::new(),
            objects: 0,
            secrets_left_out: Vec::new(),
            owned: 0,
            resources: Vec::new(),
        };
        let mut types = Vec::new();
        for group in discovery.groups_alphabetical() {
            for (ar, caps) in group.recommended_resources() {
                let full = if ar.group.is_empty() {
                    ar.plural.clone()
                } else {
                    format!("{}.{}", ar.plural, ar.group)
                };
                if caps.scope != Scope::Namespaced
                    || !caps.supports_operation(verbs::LIST)
                    || CLUSTER_WRITTEN.contains(&full.as_str())
                    || self
                        .exclude
                        .iter()
                        .any(|x| *x == full || (ar.group.is_empty() && *x == ar.plural))
                {
                    continue;
                }
                types.push((full, ar));
            }
        }
        cx.event(
            "discover",
            format!(
                "{} namespaced resource types to read in namespace {}",
                types.len(),
                self.namespace
            ),
            json!({ "resources": types.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>() }),
        )
        .await;
        for (full, ar) in types {
            let secrets = ar.group.is_empty() && ar.plural == "secrets";
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &self.namespace, &ar);
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("list {full} in namespace {}: {e} (to leave this resource out, add it to `exclude`)", self.namespace))?;
            out.resources.push(full.clone());
            let mut items: Vec<DynamicObject> = list.items;
            items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            for obj in items {
                if obj
                    .metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| !o.is_empty())
                {
                    out.owned += 1;
                    continue;
                }
                if secrets && self.recipients.is_none() {
                    out.secrets_left_out
                        .push(obj.metadata.name.clone().unwrap_or_default());
                    continue;
                }
                let mut v = serde_json::to_value(&obj)
                    .map_err(|e| format!("{full}: cannot serialise an object: {e}"))?;
                v["apiVersion"] = json!(ar.api_version);
                v["kind"] = json!(ar.kind);
                clean(&mut v);
                let doc = serde_saphyr::to_string(&v)
                    .map_err(|e| format!("{full}: cannot write YAML: {e}"))?;
                out.yaml.push_str("---\n");
                out.yaml.push_str(&doc);
                if !doc.ends_with('\n') {
                    out.yaml.push('\n');
                }
                out.objects += 1;
                *out.kinds.entry(ar.kind.clone()).or_default() += 1;
            }
        }
        if !out.secrets_left_out.is_empty() {
            cx.event(
                "secrets",
                format!(
                    "{} Secrets left out (no `encrypt` recipients: a Secret is only backed up encrypted): {}",
                    out.secrets_left_out.len(),
                    out.secrets_left_out.join(", ")
                ),
                json!({ "secrets_left_out": out.secrets_left_out }),
            )
            .await;
        }
        Ok(out)
    }
}

/// Drops what the API server sets, so the manifest applies elsewhere.
fn clean(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            m.remove(k);
        }
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            a.remove("deployment.kubernetes.io/revision");
            if a.is_empty() {
                m.remove("annotations");
            }
        }
    }
    if v.get("kind").and_then(Value::as_str) == Some("Service")
        && let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
}

/// The number of objects in a YAML stream (empty documents aside).
pub fn count_documents(yaml: &str) -> Result<u64, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)
        .map_err(|e| format!("the manifests do not parse back: {e}"))?;
    Ok(docs.iter().filter(|d| !d.is_null()).count() as u64)
}

/// `plain` encrypted to `recipients`, ASCII-armored.
pub fn encrypt(recipients: &[age::x25519::Recipient], plain: &[u8]) -> Result<Vec<u8>, String> {
    let e = |e: std::io::Error| format!("age encryption: {e}");
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|err| format!("age encryption: {err}"))?;
    let mut out = Vec::with_capacity(plain.len() * 4 / 3 + 1024);
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(e)?;
    let mut w = encryptor.wrap_output(armor).map_err(e)?;
    w.write_all(plain).map_err(e)?;
    w.finish().and_then(|armor| armor.finish()).map_err(e)?;
    Ok(out)
}

/// Reads a stored copy back: armored age (decrypted with `identity` when
/// given) or plain YAML; the number of objects when it could read them.
pub fn read_copy(bytes: &[u8], identity: Option<&str>) -> Result<Option<u64>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the copy is not text".to_string())?;
    if text.starts_with(AGE_ARMOR_BEGIN) {
        if !text.trim_end().ends_with(AGE_ARMOR_END) {
            return Err("the age armor has no end line (truncated)".into());
        }
        let Some(key) = identity else { return Ok(None) };
        // An identity file as age-keygen writes it: `#` comments, then the key.
        let line = key
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or_default();
        let id =
            age::x25519::Identity::from_str(line).map_err(|e| format!("the age identity: {e}"))?;
        let plain = age::decrypt(&id, bytes).map_err(|e| format!("age decryption: {e}"))?;
        let plain =
            String::from_utf8(plain).map_err(|_| "the decrypted copy is not text".to_string())?;
        return count_documents(&plain).map(Some);
    }
    count_documents(text).map(Some)
}
