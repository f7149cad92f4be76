//! Kubernetes actions against a fake API server (no cluster can run here):
//! a local HTTP server that serves canned objects and records every request,
//! reached through a real kubeconfig, so the test asserts the exact method,
//! path, content type and body kubectl would send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use medic::remedy::{self, ActionContext, ActionSpec};
use serde_json::{Value, json};

/// One request the fake API server received.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Value,
}

#[derive(Clone, Default)]
struct Fake {
    /// "METHOD /path" (without query) → answer.
    answers: Arc<Mutex<HashMap<String, Value>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn answer(&self, method: &str, path: &str, v: Value) {
        self.answers
            .lock()
            .unwrap()
            .insert(format!("{method} {path}"), v);
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(
    axum::extract::State(fake): axum::extract::State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let body_json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or(Value::String(String::from_utf8_lossy(&body).into()))
    };
    fake.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: body_json,
    });
    let key = format!("{method} {}", uri.path());
    match fake.answers.lock().unwrap().get(&key) {
        Some(v) => (StatusCode::OK, axum::Json(v.clone())),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("{} not found", uri.path()), "reason": "NotFound", "code": 404
            })),
        ),
    }
}

struct Api {
    fake: Fake,
    config: medic::config::Config,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

/// Starts the fake API server and a config whose `backend` target reaches
/// it through a kubeconfig file.
async fn api(kind: &str) -> Api {
    let fake = Fake::default();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{ server: \"http://127.0.0.1:{port}\" }}
contexts:
- name: fake
  context: {{ cluster: fake, user: medic, namespace: keneyapp }}
current-context: fake
users:
- name: medic
  user: {{ token: test-token }}
"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("db-url"),
        "postgres://db-replica:5432/app\n",
    )
    .unwrap();
    let config = medic::config::load_str(
        "medic.yaml",
        &format!(
            "targets:\n  backend: {{ kubernetes: {{ kind: {kind}, name: backend, namespace: keneyapp, kubeconfig: {} }} }}\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    Api {
        fake,
        config,
        _dir: dir,
        _server: server,
    }
}

const DEPLOY: &str = "/apis/apps/v1/namespaces/keneyapp/deployments/backend";

fn deployment(paused: bool, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "backend", "namespace": "keneyapp", "uid": "d-1",
                      "annotations": { "deployment.kubernetes.io/revision": "2" } },
        "spec": {
            "paused": paused,
            "selector": { "matchLabels": { "app": "backend" } },
            "template": {
                "metadata": { "labels": { "app": "backend" } },
                "spec": { "containers": [
                    { "name": "backend", "image": image },
                    { "name": "sidecar", "image": "proxy:1" },
                ] },
            },
        },
    })
}

fn ctx() -> ActionContext {
    let mut c = ActionContext::new("9:1:1", Duration::from_secs(10));
    c.now = chrono::DateTime::parse_from_rfc3339("2026-03-01T12:30:45.123Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    c
}

fn action(api: &Api, yaml_params: Value, kind: &str) -> Arc<dyn remedy::Action> {
    let spec = match kind {
        "k8s.rollout-restart" => {
            ActionSpec::K8sRolloutRestart(serde_json::from_value(yaml_params).unwrap())
        }
        "k8s.rollout-undo" => {
            ActionSpec::K8sRolloutUndo(serde_json::from_value(yaml_params).unwrap())
        }
        "k8s.set-env" => ActionSpec::K8sSetEnv(serde_json::from_value(yaml_params).unwrap()),
        "k8s.scale" => ActionSpec::K8sScale(serde_json::from_value(yaml_params).unwrap()),
        _ => unreachable!(),
    };
    remedy::build(&spec, &api.config).unwrap()
}

fn get(path: &str) -> Seen {
    Seen {
        method: "GET".into(),
        path: path.into(),
        content_type: None,
        body: Value::Null,
    }
}

#[tokio::test]
async fn rollout_restart_patches_restarted_at_like_kubectl() {
    let api = api("Deployment").await;
    api.fake.answer("GET", DEPLOY, deployment(false, "app:2"));
    api.fake.answer("PATCH", DEPLOY, deployment(false, "app:2"));
    let a = action(&api, json!({ "target": "backend" }), "k8s.rollout-restart");
    let pre = a.preflight(&ctx()).await;
    assert!(pre.refusal().is_none(), "{pre:#?}");
    let r = a.run(&ctx()).await;
    assert!(r.ok, "{r:#?}");
    assert_eq!(
        api.fake.seen(),
        [
            get(DEPLOY),
            Seen {
                method: "PATCH".into(),
                path: format!("{DEPLOY}?fieldManager=medic"),
                content_type: Some("application/strategic-merge-patch+json".into()),
                body: json!({ "spec": { "template": { "metadata": { "annotations": {
                    "kubectl.kubernetes.io/restartedAt": "2026-03-01T12:30:45Z"
                } } } } }),
            }
        ]
    );
}

#[tokio::test]
async fn rollout_restart_refuses_a_paused_deployment() {
    let api = api("Deployment").await;
    api.fake.answer("GET", DEPLOY, deployment(true, "app:2"));
    let a = action(&api, json!({ "target": "backend" }), "k8s.rollout-restart");
    let pre = a.preflight(&ctx()).await;
    let g = pre.refusal().expect("refused");
    assert_eq!(g.name, "not-paused");
    assert_eq!(
        g.detail,
        "the Deployment is paused (kubectl rollout resume first)"
    );
    assert_eq!(api.fake.seen(), [get(DEPLOY)], "no PATCH was sent");
}

#[tokio::test]
async fn rollout_restart_of_a_statefulset_and_an_on_delete_daemonset() {
    let api = api("StatefulSet").await;
    let path = "/apis/apps/v1/namespaces/keneyapp/statefulsets/backend";
    api.fake.answer(
        "GET",
        path,
        json!({ "spec": { "updateStrategy": { "type": "RollingUpdate" } } }),
    );
    api.fake.answer("PATCH", path, json!({}));
    let a = action(&api, json!({ "target": "backend" }), "k8s.rollout-restart");
    assert!(a.preflight(&ctx()).await.refusal().is_none());
    assert!(a.run(&ctx()).await.ok);
    assert_eq!(
        api.fake.seen()[1].path,
        format!("{path}?fieldManager=medic")
    );

    let api = api_daemonset_on_delete().await;
    let a = action(&api, json!({ "target": "backend" }), "k8s.rollout-restart");
    let g = a
        .preflight(&ctx())
        .await
        .refusal()
        .cloned()
        .expect("refused");
    assert_eq!(g.name, "rolling-update");
}

async fn api_daemonset_on_delete() -> Api {
    let api = api("DaemonSet").await;
    api.fake.answer(
        "GET",
        "/apis/apps/v1/namespaces/keneyapp/daemonsets/backend",
        json!({ "spec": { "updateStrategy": { "type": "OnDelete" } } }),
    );
    api
}

fn replica_set(revision: &str, image: &str) -> Value {
    json!({
        "metadata": {
            "name": format!("backend-{revision}"),
            "annotations": { "deployment.kubernetes.io/revision": revision, "app.kubernetes.io/version": image },
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "Deployment", "name": "backend", "uid": "d-1", "controller": true }],
        },
        "spec": { "template": {
            "metadata": { "labels": { "app": "backend", "pod-template-hash": format!("hash{revision}") } },
            "spec": { "containers": [
                { "name": "backend", "image": image },
                { "name": "sidecar", "image": "proxy:1" },
            ] },
        } },
    })
}

const RS_LIST: &str = "/apis/apps/v1/namespaces/keneyapp/replicasets";

#[tokio::test]
async fn rollout_undo_writes_back_the_previous_revision_like_kubectl() {
    let api = api("Deployment").await;
    api.fake.answer("GET", DEPLOY, deployment(false, "app:2"));
    api.fake.answer(
        "GET",
        RS_LIST,
        json!({ "items": [replica_set("1", "app:1"), replica_set("2", "app:2")] }),
    );
    api.fake.answer("PATCH", DEPLOY, deployment(false, "app:1"));
    let a = action(&api, json!({ "target": "backend" }), "k8s.rollout-undo");
    let pre = a.preflight(&ctx()).await;
    assert!(pre.refusal().is_none(), "{pre:#?}");
    assert_eq!(pre.data["to_revision"], 1);
    let r = a.run(&ctx()).await;
    assert!(r.ok, "{r:#?}");
    assert_eq!(
        r.detail,
        "Deployment keneyapp/backend rolled back to revision 1"
    );
    let seen = api.fake.seen();
    let list = format!("{RS_LIST}?labelSelector=app%3Dbackend");
    assert_eq!(
        seen,
        [
            get(DEPLOY),
            get(&list),
            get(DEPLOY),
            get(&list),
            Seen {
                method: "PATCH".into(),
                path: format!("{DEPLOY}?fieldManager=medic"),
                content_type: Some("application/json-patch+json".into()),
                body: json!([
                    { "op": "replace", "path": "/spec/template", "value": {
                        "metadata": { "labels": { "app": "backend" } },
                        "spec": { "containers": [
                            { "name": "backend", "image": "app:1" },
                            { "name": "sidecar", "image": "proxy:1" },
                        ] },
                    } },
                    { "op": "replace", "path": "/metadata/annotations", "value": {
                        "deployment.kubernetes.io/revision": "2",
                        "app.kubernetes.io/version": "app:1",
                    } },
                ]),
            }
        ]
    );
}

#[tokio::test]
async fn rollout_undo_skips_when_the_template_matches_and_refuses_without_history() {
    let api = api("Deployment").await;
    // Current template is revision 1's: nothing to undo, no PATCH.
    api.fake.answer("GET", DEPLOY, deployment(false, "app:1"));
    api.fake.answer(
        "GET",
        RS_LIST,
        json!({ "items": [replica_set("1", "app:1"), replica_set("2", "app:2")] }),
    );
    let a = action(&api, json!({ "target": "backend" }), "k8s.rollout-undo");
    let r = a.run(&ctx()).await;
    assert!(r.ok);
    assert_eq!(
        r.detail,
        "skipped rollback (current template already matches revision 1)"
    );
    assert!(api.fake.seen().iter().all(|s| s.method == "GET"));

    api.fake.answer(
        "GET",
        RS_LIST,
        json!({ "items": [replica_set("2", "app:2")] }),
    );
    let pre = a.preflight(&ctx()).await;
    let g = pre.refusal().expect("refused");
    assert_eq!(g.name, "previous-revision");
    assert_eq!(
        g.detail,
        "no rollout history found: there is no previous revision"
    );
}

#[tokio::test]
async fn set_env_patches_the_named_container_with_secret_values_never_shown() {
    let api = api("Deployment").await;
    api.fake.answer("GET", DEPLOY, deployment(false, "app:2"));
    api.fake.answer("PATCH", DEPLOY, deployment(false, "app:2"));
    let secret = api._dir.path().join("db-url");
    let a = action(
        &api,
        json!({
            "target": "backend",
            "container": "backend",
            "env": {
                "DATABASE_URL": { "file": secret },
                "DB_PASSWORD": { "secret_key_ref": { "name": "db", "key": "password" } },
                "READ_ONLY": "false",
            },
        }),
        "k8s.set-env",
    );
    let pre = a.preflight(&ctx()).await;
    assert!(pre.refusal().is_none(), "{pre:#?}");
    let r = a.run(&ctx()).await;
    assert!(r.ok, "{r:#?}");
    let patch = api.fake.seen().pop().unwrap();
    assert_eq!(
        patch,
        Seen {
            method: "PATCH".into(),
            path: format!("{DEPLOY}?fieldManager=medic"),
            content_type: Some("application/strategic-merge-patch+json".into()),
            body: json!({ "spec": { "template": { "spec": { "containers": [{
                "name": "backend",
                "env": [
                    { "name": "DATABASE_URL", "value": "postgres://db-replica:5432/app", "valueFrom": null },
                    { "name": "DB_PASSWORD", "value": null, "valueFrom": { "secretKeyRef": { "name": "db", "key": "password" } } },
                    { "name": "READ_ONLY", "value": "false", "valueFrom": null },
                ],
            }] } } } }),
        }
    );
    let shown = format!("{} {} {:?} {:?}", a.inputs(), a.describe(), r, pre);
    assert!(!shown.contains("db-replica:5432"), "secret leaked: {shown}");

    // Every container when none is named; an unknown one is refused.
    let all = action(
        &api,
        json!({ "target": "backend", "env": { "X": "1" } }),
        "k8s.set-env",
    );
    assert!(all.run(&ctx()).await.ok);
    let body = api.fake.seen().pop().unwrap().body;
    let names: Vec<&str> = body["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["backend", "sidecar"]);
    let wrong = action(
        &api,
        json!({ "target": "backend", "container": "web", "env": { "X": "1" } }),
        "k8s.set-env",
    );
    let g = wrong
        .preflight(&ctx())
        .await
        .refusal()
        .cloned()
        .expect("refused");
    assert_eq!(
        g.detail,
        "no container \"web\" in Deployment keneyapp/backend (containers: backend, sidecar)"
    );
}

/// The shipped database rule repoints the backend with a Kubernetes
/// Secret reference: the patch carries `valueFrom.secretKeyRef`, never the
/// URL as a plain `value` (which would sit in the Deployment's spec and
/// its ReplicaSet history).
#[tokio::test]
async fn the_shipped_database_rule_sets_env_by_secret_key_ref() {
    let api = api("Deployment").await;
    api.fake.answer("GET", DEPLOY, deployment(false, "app:2"));
    api.fake.answer("PATCH", DEPLOY, deployment(false, "app:2"));
    let kubeconfig = api._dir.path().join("kubeconfig");
    let config = medic::config::load_str(
        "medic.yaml",
        &format!(
            "targets:\n  \
             backend: {{ kubernetes: {{ kind: Deployment, name: backend, namespace: keneyapp, kubeconfig: {} }} }}\n  \
             db: {{ postgres: {{ host: 127.0.0.1, port: 5432, user: medic }} }}\n  \
             db-replica: {{ postgres: {{ host: 127.0.0.1, port: 5433, user: medic }} }}\n  \
             db-restore: {{ postgres: {{ host: 127.0.0.1, port: 5435, user: medic }} }}\n  \
             app: {{ http: {{ url: \"http://127.0.0.1:1/healthz\" }} }}\n\
             jobs:\n  db-backup: {{ schedule: '0 2 * * *', postgres.backup: {{ target: db-replica, directory: /tmp/b }} }}\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/database-failure.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let sc = medic::rules::load_str(path, &text, &config).unwrap_or_else(|d| panic!("{d}"));
    let step = sc
        .plan
        .iter()
        .find(|s| s.name == "repoint-backend")
        .expect("the step");
    let a = remedy::build(&step.action, &config).unwrap();
    let r = a.run(&ctx()).await;
    assert!(r.ok, "{r:#?}");
    let patch = api.fake.seen().pop().unwrap();
    assert_eq!(patch.method, "PATCH");
    assert_eq!(
        patch.body,
        json!({ "spec": { "template": { "spec": { "containers": [
            { "name": "backend", "env": [{ "name": "DATABASE_URL", "value": null, "valueFrom": { "secretKeyRef": { "name": "backend-database", "key": "replica-url" } } }] },
            { "name": "sidecar", "env": [{ "name": "DATABASE_URL", "value": null, "valueFrom": { "secretKeyRef": { "name": "backend-database", "key": "replica-url" } } }] },
        ] } } } })
    );
}

#[tokio::test]
async fn scale_patches_the_scale_subresource() {
    let api = api("Deployment").await;
    let scale = format!("{DEPLOY}/scale");
    api.fake
        .answer("GET", &scale, json!({ "spec": { "replicas": 2 } }));
    api.fake
        .answer("PATCH", &scale, json!({ "spec": { "replicas": 5 } }));
    let a = action(
        &api,
        json!({ "target": "backend", "replicas": 5 }),
        "k8s.scale",
    );
    let pre = a.preflight(&ctx()).await;
    assert_eq!(pre.data["replicas_before"], 2);
    assert!(a.run(&ctx()).await.ok);
    assert_eq!(
        api.fake.seen().pop().unwrap(),
        Seen {
            method: "PATCH".into(),
            path: format!("{scale}?fieldManager=medic"),
            content_type: Some("application/merge-patch+json".into()),
            body: json!({ "spec": { "replicas": 5 } }),
        }
    );
}

#[tokio::test]
async fn an_api_error_is_a_clear_refusal() {
    let api = api("Deployment").await;
    let a = action(&api, json!({ "target": "backend" }), "k8s.rollout-restart");
    let g = a
        .preflight(&ctx())
        .await
        .refusal()
        .cloned()
        .expect("refused");
    assert_eq!(g.name, "exists");
    assert!(g.detail.contains("not found"), "{}", g.detail);
}

/// One incident per deployment: `workload` and `namespace` from the
/// series' labels pick the object (DNS-1123 names only, so a label such as
/// `../../api/v1/secrets` can never turn into another API path).
#[tokio::test]
async fn workload_and_namespace_from_labels_pick_the_object_and_only_dns_1123_names() {
    use medic::remedy::template::{LabelPatterns, Values};
    let api = api("Deployment").await;
    let prod_api = "/apis/apps/v1/namespaces/prod/deployments/api";
    api.fake.answer("GET", prod_api, deployment(false, "app:2"));
    api.fake
        .answer("PATCH", prod_api, deployment(false, "app:2"));
    let a = action(
        &api,
        json!({ "target": "backend", "workload": "${labels.deployment}", "namespace": "${labels.namespace}" }),
        "k8s.rollout-restart",
    );
    let patterns = LabelPatterns::new();
    let labels = |d: &str, ns: &str| -> medic::observe::Labels {
        [("deployment", d), ("namespace", ns)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    for (d, ns) in [
        ("../../api/v1/secrets", "prod"),
        ("API", "prod"),
        ("api", "kube-system/x"),
        ("api_v2", "prod"),
    ] {
        let l = labels(d, ns);
        let e = match a.for_labels(&Values::new(&l, &patterns)) {
            Err(e) => e,
            Ok(_) => panic!("{d:?} in {ns:?} was accepted"),
        };
        assert_eq!(e.gate(), medic::remedy::template::VALUE_GATE, "{e}");
    }
    assert!(api.fake.seen().is_empty(), "nothing was sent");
    let l = labels("api", "prod");
    let per = a
        .for_labels(&Values::new(&l, &patterns))
        .unwrap()
        .expect("expanded");
    assert_eq!(
        per.describe(),
        "kubectl rollout restart of Deployment prod/api"
    );
    assert!(per.preflight(&ctx()).await.refusal().is_none());
    assert!(per.run(&ctx()).await.ok);
    let paths: Vec<String> = api.fake.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        [
            prod_api.to_string(),
            format!("{prod_api}?fieldManager=medic")
        ]
    );
    // Written without labels, the override applies as it is.
    let scale = action(
        &api,
        json!({ "target": "backend", "replicas": 3, "workload": "worker" }),
        "k8s.scale",
    );
    assert_eq!(
        scale.describe(),
        "kubectl scale Deployment keneyapp/worker to 3 replicas"
    );
}
