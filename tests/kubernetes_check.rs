//! The `kubernetes` check (kube crate) against a local fake API server
//! that serves real response shapes and records every request: available
//! replicas, CrashLoopBackOff, restarts in a window, error codes, and
//! config from a kubeconfig file (named by the target, or `$KUBECONFIG`
//! when the real medic binary infers it).

mod common;

use std::time::Duration;

use common::fake_kube::{FakeKube, Seen, TOKEN};
use common::*;
use medic::check::kubernetes::{KubernetesCheck, KubernetesParams};
use medic::check::{BuildError, Check};
use medic::config::{Config, KubernetesTarget, TargetConfig};
use medic::observe::Outcome;
use serde_json::{Value, json};

const DEPLOY: &str = "/apis/apps/v1/namespaces/keneyapp/deployments/backend";
const STS: &str = "/apis/apps/v1/namespaces/keneyapp/statefulsets/redis";
const PODS: &str = "/api/v1/namespaces/keneyapp/pods";

/// A Deployment as `kubectl get deployment backend -o json` shows it.
fn deployment(desired: i32, available: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "backend",
            "namespace": "keneyapp",
            "uid": "5f1c2a8e-0d4b-4a57-9d1e-2b7c3f0a9e11",
            "resourceVersion": "48213",
            "generation": 4,
            "creationTimestamp": "2026-10-01T08:00:00Z",
            "labels": { "app": "backend" },
            "annotations": { "deployment.kubernetes.io/revision": "4" }
        },
        "spec": {
            "replicas": desired,
            "selector": { "matchLabels": { "app": "backend" } },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": { "maxUnavailable": "25%", "maxSurge": "25%" }
            },
            "template": {
                "metadata": { "labels": { "app": "backend" } },
                "spec": {
                    "containers": [{
                        "name": "backend",
                        "image": "isdataconsulting/keneyapp-backend:1.4.2",
                        "ports": [{ "containerPort": 8000, "protocol": "TCP" }]
                    }]
                }
            }
        },
        "status": {
            "observedGeneration": 4,
            "replicas": desired,
            "updatedReplicas": desired,
            "readyReplicas": available,
            "availableReplicas": available,
            "unavailableReplicas": desired - available,
            "conditions": [{
                "type": "Available",
                "status": if available >= desired { "True" } else { "False" },
                "reason": if available >= desired { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                "lastUpdateTime": "2026-11-25T10:00:00Z",
                "lastTransitionTime": "2026-11-25T10:00:00Z"
            }]
        }
    })
}

/// A StatefulSet with a selector using both labels and expressions.
fn statefulset() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": { "name": "redis", "namespace": "keneyapp", "uid": "a1b2", "generation": 1 },
        "spec": {
            "replicas": 2,
            "serviceName": "redis",
            "selector": {
                "matchLabels": { "app": "redis" },
                "matchExpressions": [{ "key": "tier", "operator": "In", "values": ["cache"] }]
            },
            "template": {
                "metadata": { "labels": { "app": "redis", "tier": "cache" } },
                "spec": { "containers": [{ "name": "redis", "image": "redis:7" }] }
            }
        },
        "status": {
            "observedGeneration": 1,
            "replicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "currentReplicas": 2,
            "updatedReplicas": 2
        }
    })
}

/// A pod as the API lists it, with one container in `state`.
fn pod(name: &str, uid: &str, started: &str, restarts: i32, state: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "keneyapp",
            "uid": uid,
            "labels": { "app": "redis", "tier": "cache" },
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "redis",
                "uid": "a1b2", "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": { "containers": [{ "name": "redis", "image": "redis:7" }] },
        "status": {
            "phase": "Running",
            "startTime": started,
            "containerStatuses": [{
                "name": "redis",
                "image": "redis:7",
                "imageID": "docker.io/library/redis@sha256:0123",
                "containerID": "containerd://abc",
                "ready": state.get("running").is_some(),
                "started": state.get("running").is_some(),
                "restartCount": restarts,
                "state": state,
                "lastState": if restarts > 0 { json!({ "terminated": {
                    "exitCode": 1, "reason": "Error",
                    "startedAt": "2026-11-25T10:00:00Z", "finishedAt": "2026-11-25T10:00:05Z"
                }}) } else { json!({}) }
            }]
        }
    })
}

fn running() -> Value {
    json!({ "running": { "startedAt": "2026-11-25T09:00:00Z" } })
}

fn crashlooping() -> Value {
    json!({ "waiting": {
        "reason": "CrashLoopBackOff",
        "message": "back-off 5m0s restarting failed container=redis pod=redis-1_keneyapp(c0ffee)"
    }})
}

fn pod_list(items: Vec<Value>) -> Value {
    json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": { "resourceVersion": "48250" },
        "items": items
    })
}

fn target(kind: &str, name: &str, kubeconfig: &std::path::Path) -> KubernetesTarget {
    KubernetesTarget {
        kind: kind.into(),
        name: name.into(),
        namespace: "keneyapp".into(),
        kubeconfig: Some(kubeconfig.to_path_buf()),
    }
}

fn params() -> KubernetesParams {
    KubernetesParams {
        target: "backend".into(),
        available: false,
        crashloop: false,
        max_restarts: None,
        window: None,
    }
}

fn build(t: KubernetesTarget, p: KubernetesParams) -> Result<KubernetesCheck, BuildError> {
    let mut config = Config::default();
    config
        .targets
        .insert("backend".into(), TargetConfig::Kubernetes(t));
    KubernetesCheck::build(&p, Duration::from_secs(2), &config)
}

/// A fake API server and a check, through a kubeconfig (in the returned
/// dir), that `Deployment keneyapp/backend` is available.
async fn backend_available() -> (FakeKube, tempfile::TempDir, KubernetesCheck) {
    let api = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path(), "keneyapp");
    let c = build(
        target("Deployment", "backend", &kc),
        KubernetesParams {
            available: true,
            ..params()
        },
    )
    .unwrap();
    (api, dir, c)
}

fn get(uri: &str) -> Seen {
    Seen {
        method: "GET".into(),
        uri: uri.into(),
        authorization: Some(format!("Bearer {TOKEN}")),
        body: String::new(),
    }
}

#[tokio::test]
async fn deployment_available_replicas_through_a_kubeconfig() {
    let (api, _dir, c) = backend_available().await;
    api.put(DEPLOY, deployment(3, 3));
    assert_eq!(c.run().await, Outcome::Ok);
    api.put(DEPLOY, deployment(3, 1));
    assert_eq!(
        c.run().await,
        Outcome::Failing("Deployment keneyapp/backend: 1 of 3 replicas available".into())
    );
    api.put(DEPLOY, deployment(0, 0));
    assert_eq!(c.run().await, Outcome::Ok, "scaled to zero on purpose");
    assert_eq!(api.take_seen(), vec![get(DEPLOY), get(DEPLOY), get(DEPLOY)]);
}

#[tokio::test]
async fn crashlooping_pod_of_a_statefulset_found_through_its_selector() {
    let api = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path(), "keneyapp");
    api.put(STS, statefulset());
    let c = build(
        target("StatefulSet", "redis", &kc),
        KubernetesParams {
            crashloop: true,
            ..params()
        },
    )
    .unwrap();
    let old = "2026-11-01T00:00:00Z";
    api.put(
        PODS,
        pod_list(vec![
            pod("redis-0", "u0", old, 0, running()),
            pod("redis-1", "u1", old, 0, running()),
        ]),
    );
    assert_eq!(c.run().await, Outcome::Ok);
    api.put(
        PODS,
        pod_list(vec![
            pod("redis-0", "u0", old, 0, running()),
            pod("redis-1", "u1", old, 6, crashlooping()),
        ]),
    );
    assert_eq!(
        c.run().await,
        Outcome::Failing(
            "StatefulSet keneyapp/redis: pod redis-1 container redis in CrashLoopBackOff (6 restarts)"
                .into()
        )
    );
    let pods = format!("{PODS}?&labelSelector=app%3Dredis%2Ctier+in+%28cache%29");
    assert_eq!(
        api.take_seen(),
        vec![get(STS), get(&pods), get(STS), get(&pods)]
    );
}

#[tokio::test]
async fn restarts_more_than_n_in_a_window() {
    let api = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path(), "keneyapp");
    api.put(STS, statefulset());
    let windowed = build(
        target("StatefulSet", "redis", &kc),
        KubernetesParams {
            max_restarts: Some(3),
            window: Some("10m".parse().unwrap()),
            ..params()
        },
    )
    .unwrap();
    let total = build(
        target("StatefulSet", "redis", &kc),
        KubernetesParams {
            max_restarts: Some(3),
            ..params()
        },
    )
    .unwrap();
    let old = "2026-01-01T00:00:00Z";
    // An old pod that restarted 7 times long ago.
    api.put(
        PODS,
        pod_list(vec![pod("redis-0", "u0", old, 7, running())]),
    );
    assert_eq!(
        windowed.run().await,
        Outcome::Ok,
        "old restarts don't count"
    );
    assert_eq!(
        total.run().await,
        Outcome::Failing(
            "StatefulSet keneyapp/redis: pod redis-0 container redis restarted 7 times since it started (limit 3)"
                .into()
        )
    );
    // Four more restarts while medic watches.
    api.put(
        PODS,
        pod_list(vec![pod("redis-0", "u0", old, 11, running())]),
    );
    assert_eq!(
        windowed.run().await,
        Outcome::Failing(
            "StatefulSet keneyapp/redis: pod redis-0 container redis restarted 4 times in 10m (limit 3)"
                .into()
        )
    );
    // A pod that started a minute ago: all its restarts are in the window.
    let recent = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    api.put(
        PODS,
        pod_list(vec![pod("redis-1", "u1", &recent, 5, crashlooping())]),
    );
    let fresh = build(
        target("StatefulSet", "redis", &kc),
        KubernetesParams {
            max_restarts: Some(3),
            window: Some("10m".parse().unwrap()),
            ..params()
        },
    )
    .unwrap();
    assert_eq!(
        fresh.run().await,
        Outcome::Failing(
            "StatefulSet keneyapp/redis: pod redis-1 container redis restarted 5 times in 10m (limit 3)"
                .into()
        )
    );
}

#[tokio::test]
async fn not_found_is_failing_refusals_errors_and_silence_are_unknown() {
    let (api, _dir, c) = backend_available().await;
    assert_eq!(
        c.run().await,
        Outcome::Failing("Deployment keneyapp/backend: not found".into())
    );
    api.fail(
        DEPLOY,
        403,
        "Forbidden",
        "deployments.apps \"backend\" is forbidden: User \"system:serviceaccount:medic:medic\" cannot get resource \"deployments\"",
    );
    let o = c.run().await;
    assert!(
        matches!(&o, Outcome::Unknown(d) if d.starts_with("Deployment keneyapp/backend: the API server refused medic (403: deployments.apps")),
        "{o:?}"
    );
    api.fail(
        DEPLOY,
        500,
        "InternalError",
        "etcdserver: request timed out",
    );
    assert_eq!(
        c.run().await,
        Outcome::Unknown(
            "Deployment keneyapp/backend: API server error 500: etcdserver: request timed out"
                .into()
        )
    );
    api.stop();
    let o = c.run().await;
    assert!(
        matches!(&o, Outcome::Unknown(d) if d.contains("API server unreachable")),
        "{o:?}"
    );
}

#[test]
fn missing_kubeconfig_refuses_the_check() {
    let e = build(
        target(
            "Deployment",
            "backend",
            std::path::Path::new("/nonexistent/kubeconfig"),
        ),
        KubernetesParams {
            available: true,
            ..params()
        },
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("target \"backend\": kubeconfig /nonexistent/kubeconfig:"),
        "{e}"
    );
}

/// The real binary, with no kubeconfig in the target: outside a cluster it
/// falls back to `$KUBECONFIG`, and its scheduler polls the workload.
#[test]
fn medic_run_infers_the_config_from_kubeconfig_env() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(FakeKube::start());
    api.put(DEPLOY, deployment(2, 2));
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path(), "keneyapp");
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("medic.yaml"),
        "targets:\n  backend: { kubernetes: { kind: Deployment, name: backend, namespace: keneyapp } }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/app.yaml"),
        "scenario: backend-down\n\
         summary: backend unavailable\n\
         severity: high\n\
         rto: 1h\n\
         symptoms:\n  unavailable:\n    check: { kubernetes: { target: backend, available: true } }\n    every: 100ms\n\
         when: { any: [unavailable] }\n\
         plan:\n  - action: exec\n    args: [\"true\"]\n\
         escalation: default\n",
    )
    .unwrap();
    let mut medic = Medic::start_with_env(
        &dir.path().join("medic.yaml"),
        &dir.path().join("medic.log"),
        &[
            ("KUBECONFIG", kc.to_str().unwrap().to_string()),
            ("KUBERNETES_SERVICE_HOST", String::new()),
        ],
    );
    wait_until(Duration::from_secs(10), "medic to poll the API", || {
        api.take_seen()
            .iter()
            .filter(|s| *s == &get(DEPLOY))
            .count()
            >= 1
    });
    let status = medic.stop();
    assert!(status.success(), "{status:?}\n{}", medic.log_text());
    assert!(
        !medic.log_text().contains("refused"),
        "{}",
        medic.log_text()
    );
}
