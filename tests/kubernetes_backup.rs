//! `kubernetes.backup` against the fake API server (real response shapes:
//! discovery's `APIVersions`, `APIGroupList` and `APIResourceList`, and
//! list responses whose items carry no `kind`), with copies read back by
//! the real `age` CLI (Debian's `age`):
//! - an encrypted copy holds every namespaced manifest, ConfigMap and
//!   Secret, server-set fields dropped, owned objects, events and
//!   cluster-scoped resources left out; only the age identity reads it,
//!   and `backup.verify` counts its objects;
//! - without `encrypt`, Secrets are left out and named: no Secret value is
//!   ever stored in clear;
//! - only GETs reach the API.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::fake_kube::FakeKube;
use medic::clock::Clock;
use medic::config::Config;
use medic::jobs;
use medic::store::{JobOutcome, JobRun, MemoryStore, prelude::*};
use serde_json::{Value, json};

const NS: &str = "keneyapp";
const PASSWORD: &str = "s3cr3t-db-passw0rd";

fn resource(name: &str, kind: &str, namespaced: bool) -> Value {
    json!({
        "name": name,
        "singularName": kind.to_lowercase(),
        "namespaced": namespaced,
        "kind": kind,
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        "storageVersionHash": "qFsyl6wFWjQ="
    })
}

/// Discovery as a 1.33 API server answers it (a subset of its resources).
fn discovery(k: &FakeKube) {
    k.put(
        "/api",
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.1:6443" }]
        }),
    );
    k.put(
        "/api/v1",
        json!({
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [
                resource("configmaps", "ConfigMap", true),
                resource("events", "Event", true),
                resource("namespaces", "Namespace", false),
                resource("nodes", "Node", false),
                resource("pods", "Pod", true),
                { "name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"] },
                resource("secrets", "Secret", true),
                resource("services", "Service", true),
                { "name": "services/status", "singularName": "", "namespaced": true, "kind": "Service", "verbs": ["get", "patch", "update"] }
            ]
        }),
    );
    k.put(
        "/apis",
        json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [{
                "name": "apps",
                "versions": [{ "groupVersion": "apps/v1", "version": "v1" }],
                "preferredVersion": { "groupVersion": "apps/v1", "version": "v1" }
            }]
        }),
    );
    k.put(
        "/apis/apps/v1",
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": "apps/v1",
            "resources": [
                resource("controllerrevisions", "ControllerRevision", true),
                resource("deployments", "Deployment", true),
                { "name": "deployments/scale", "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"] },
                resource("replicasets", "ReplicaSet", true)
            ]
        }),
    );
}

fn meta(name: &str, extra: Value) -> Value {
    let mut m = json!({
        "name": name,
        "namespace": NS,
        "uid": format!("uid-{name}"),
        "resourceVersion": "81234",
        "creationTimestamp": "2026-10-01T08:00:00Z",
        "managedFields": [{ "manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1" }]
    });
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    m
}

/// A list response: items without `kind`/`apiVersion`, as the API sends.
fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": format!("{kind}List"),
        "apiVersion": api_version,
        "metadata": { "resourceVersion": "81240" },
        "items": items
    })
}

/// The namespace's objects.
fn namespace(k: &FakeKube) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    k.put(
        &format!("/api/v1/namespaces/{NS}/configmaps"),
        list(
            "ConfigMap",
            "v1",
            vec![json!({
                "metadata": meta("keneyapp-config", json!({
                    "annotations": { "kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"ConfigMap\"}" }
                })),
                "data": { "LOG_LEVEL": "info", "CACHE_URL": "redis://redis:6379/0" }
            })],
        ),
    );
    k.put(
        &format!("/api/v1/namespaces/{NS}/secrets"),
        list(
            "Secret",
            "v1",
            vec![json!({
                "metadata": meta("keneyapp-secret", json!({})),
                "type": "Opaque",
                "data": { "DATABASE_PASSWORD": b64 }
            })],
        ),
    );
    k.put(
        &format!("/api/v1/namespaces/{NS}/services"),
        list(
            "Service",
            "v1",
            vec![json!({
                "metadata": meta("backend", json!({})),
                "spec": {
                    "selector": { "app": "backend" },
                    "ports": [{ "port": 8000, "targetPort": 8000, "protocol": "TCP" }],
                    "clusterIP": "10.96.0.12",
                    "clusterIPs": ["10.96.0.12"],
                    "type": "ClusterIP"
                },
                "status": { "loadBalancer": {} }
            })],
        ),
    );
    k.put(
        &format!("/api/v1/namespaces/{NS}/pods"),
        list(
            "Pod",
            "v1",
            vec![json!({
                "metadata": meta("backend-6f7c9-x2x4z", json!({
                    "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "backend-6f7c9", "uid": "uid-rs", "controller": true }]
                })),
                "spec": { "containers": [{ "name": "backend", "image": "keneyapp/backend:1.4.2" }] },
                "status": { "phase": "Running" }
            })],
        ),
    );
    k.put(
        &format!("/apis/apps/v1/namespaces/{NS}/deployments"),
        list(
            "Deployment",
            "apps/v1",
            vec![json!({
                "metadata": meta("backend", json!({
                    "generation": 7,
                    "annotations": { "deployment.kubernetes.io/revision": "7" }
                })),
                "spec": {
                    "replicas": 3,
                    "selector": { "matchLabels": { "app": "backend" } },
                    "template": {
                        "metadata": { "labels": { "app": "backend" } },
                        "spec": { "containers": [{
                            "name": "backend",
                            "image": "keneyapp/backend:1.4.2",
                            "env": [{ "name": "DATABASE_PASSWORD", "valueFrom": { "secretKeyRef": { "name": "keneyapp-secret", "key": "DATABASE_PASSWORD" } } }]
                        }] }
                    }
                },
                "status": { "replicas": 3, "availableReplicas": 3, "observedGeneration": 7 }
            })],
        ),
    );
    k.put(
        &format!("/apis/apps/v1/namespaces/{NS}/replicasets"),
        list(
            "ReplicaSet",
            "apps/v1",
            vec![json!({
                "metadata": meta("backend-6f7c9", json!({
                    "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "Deployment", "name": "backend", "uid": "uid-backend", "controller": true }]
                })),
                "spec": { "replicas": 3 }
            })],
        ),
    );
}

fn config(kube: &FakeKube, dir: &Path, encrypt: &str) -> Config {
    let kubeconfig = kube.kubeconfig(dir, NS);
    let yaml = format!(
        "
rules: [rules]
targets:
  backend:
    kubernetes: {{ kind: Deployment, name: backend, namespace: {NS}, kubeconfig: '{}' }}
jobs:
  k8s-backup:
    schedule: '0 3 * * *'
    kubernetes.backup: {{ target: backend, directory: backups, retention: 30d{encrypt} }}
  k8s-verify:
    schedule: '0 4 * * SUN'
    backup.verify: {{ backup: k8s-backup, rpo: 24h }}
",
        kubeconfig.display()
    );
    let mut c = medic::config::load_str("medic.yaml", &yaml).unwrap_or_else(|d| panic!("{d:?}"));
    c.base_dir = dir.to_path_buf();
    c
}

async fn run(config: &Config, store: &Arc<dyn Store>, name: &str) -> JobRun {
    let clock = Clock::system();
    let job = jobs::build(name, &config.jobs[name], config).unwrap();
    jobs::run_once(
        store,
        &clock,
        name,
        &job,
        clock.now(),
        Duration::from_secs(60),
    )
    .await
    .unwrap()
}

/// `age-keygen`'s identity file and its public key.
fn keygen(dir: &Path) -> (std::path::PathBuf, String) {
    let key = dir.join("backup.agekey");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen must be installed (scripts/test.sh installs Debian's age)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&key).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("age-keygen writes the public key")
        .to_string();
    (key, public)
}

/// Each object of a YAML stream, by `Kind/name`.
fn objects(yaml: &str) -> BTreeMap<String, Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap();
    docs.into_iter()
        .filter(|d| !d.is_null())
        .map(|d| {
            (
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                ),
                d,
            )
        })
        .collect()
}

fn copy_path(dir: &Path, r: &JobRun) -> std::path::PathBuf {
    dir.join("backups").join(r.data["file"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_copy_has_every_manifest_and_only_the_age_identity_reads_it() {
    let kube = FakeKube::start().await;
    discovery(&kube);
    namespace(&kube);
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let encrypt = format!(
        ", encrypt: {{ recipients: ['{public}'], identity: {{ file: '{}' }} }}",
        key.display()
    );
    let config = config(&kube, dir.path(), &encrypt);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());

    let r = run(&config, &store, "k8s-backup").await;
    assert_eq!(r.outcome, Some(JobOutcome::Succeeded), "{:?}", r.data);
    assert_eq!(r.data["objects"], 4, "{:?}", r.data);
    assert_eq!(r.data["owned_left_out"], 2, "the Pod and the ReplicaSet");
    assert_eq!(r.data["encrypted"], true);
    assert_eq!(
        r.data["resources"],
        json!([
            "configmaps",
            "pods",
            "secrets",
            "services",
            "deployments.apps",
            "replicasets.apps"
        ])
    );

    // Encrypted at rest: neither the password nor its base64 is there.
    let copy = copy_path(dir.path(), &r);
    let stored = std::fs::read_to_string(&copy).unwrap();
    assert!(
        stored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
        "{stored:.80}"
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    assert!(!stored.contains(PASSWORD) && !stored.contains(&b64));
    assert!(
        !stored.contains("keneyapp-config"),
        "manifests are encrypted too"
    );

    // The real age CLI reads it back with the identity.
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .arg(&copy)
        .output()
        .expect("age must be installed (scripts/test.sh installs Debian's age)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objs = objects(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(
        objs.keys().collect::<Vec<_>>(),
        [
            "ConfigMap/keneyapp-config",
            "Deployment/backend",
            "Secret/keneyapp-secret",
            "Service/backend"
        ]
        .iter()
        .collect::<Vec<_>>(),
        "owned objects and events are left out; the deployment has one entry"
    );
    let d = &objs["Deployment/backend"];
    assert_eq!(d["apiVersion"], "apps/v1");
    assert_eq!(d["spec"]["replicas"], 3);
    assert!(d.get("status").is_none());
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "generation",
        "annotations",
    ] {
        assert!(d["metadata"].get(k).is_none(), "{k} is server-set: {d}");
    }
    assert_eq!(d["metadata"]["namespace"], NS);
    let s = &objs["Secret/keneyapp-secret"];
    assert_eq!(s["data"]["DATABASE_PASSWORD"], json!(b64));
    let svc = &objs["Service/backend"];
    assert!(svc["spec"].get("clusterIP").is_none() && svc["spec"].get("clusterIPs").is_none());
    assert_eq!(svc["spec"]["ports"][0]["port"], 8000);
    let cm = &objs["ConfigMap/keneyapp-config"];
    assert_eq!(cm["data"]["LOG_LEVEL"], "info");
    assert!(cm["metadata"].get("annotations").is_none());

    // backup.verify decrypts it with the identity and counts its objects.
    let v = run(&config, &store, "k8s-verify").await;
    assert_eq!(v.outcome, Some(JobOutcome::Succeeded), "{:?}", v.data);
    assert_eq!(v.data["checked"][0]["objects"], 4, "{:?}", v.data);

    // A truncated copy is caught.
    std::fs::write(&copy, &stored[..stored.len() / 2]).unwrap();
    let v = run(&config, &store, "k8s-verify").await;
    assert_eq!(v.outcome, Some(JobOutcome::Failed));

    // The API only saw reads: discovery and one list per resource.
    let seen = kube.take_seen();
    assert!(seen.iter().all(|s| s.method == "GET"), "{seen:?}");
    assert!(seen.iter().all(|s| !s.uri.contains("/events")), "{seen:?}");
    assert!(seen.iter().all(|s| !s.uri.contains("/nodes")), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_encryption_secrets_are_left_out_and_named() {
    let kube = FakeKube::start().await;
    discovery(&kube);
    namespace(&kube);
    let dir = tempfile::tempdir().unwrap();
    let config = config(&kube, dir.path(), "");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());

    let r = run(&config, &store, "k8s-backup").await;
    assert_eq!(r.outcome, Some(JobOutcome::Succeeded), "{:?}", r.data);
    assert_eq!(r.data["secrets_left_out"], json!(["keneyapp-secret"]));
    assert_eq!(r.data["encrypted"], false);
    let text = std::fs::read_to_string(copy_path(dir.path(), &r)).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    assert!(!text.contains(PASSWORD) && !text.contains(&b64));
    let objs = objects(&text);
    assert_eq!(objs.len(), 3, "{:?}", objs.keys());
    assert!(!objs.contains_key("Secret/keneyapp-secret"));
    let timeline = store.job_events(r.id).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.message.contains("1 Secrets left out")
                && e.message.contains("keneyapp-secret")),
        "{timeline:?}"
    );

    // A resource the API refuses fails the run, naming it and the way out.
    kube.fail(
        &format!("/apis/apps/v1/namespaces/{NS}/deployments"),
        403,
        "Forbidden",
        "deployments.apps is forbidden: User \"system:serviceaccount:medic:medic\" cannot list resource \"deployments\"",
    );
    let r = run(&config, &store, "k8s-backup").await;
    assert_eq!(r.outcome, Some(JobOutcome::Failed));
    let why = r.summary.clone();
    assert!(
        why.contains("list deployments.apps in namespace keneyapp") && why.contains("exclude"),
        "{why}"
    );
}
