//! The `config` check (the runbook's "verify configuration" step):
//! - on a kubernetes target, against the fake API server (real response
//!   shapes, every request recorded): a Deployment whose env reads a plain
//!   value, a ConfigMap key and a Secret key; the ConfigMaps and Secrets
//!   the rule names;
//! - on a docker target, against a real private dockerd: the container's
//!   env (the image's and its own).
//!
//! Present and as expected is ok; a missing variable, a wrong value, a
//! missing key or object, a Secret whose value changed are failing with
//! the reason (never a Secret's value); an API or Engine that does not
//! answer is unknown.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::docker::{BUSYBOX, Dockerd};
use common::fake_kube::{FakeKube, Seen, TOKEN};
use medic::check::Check;
use medic::check::config::{ConfigCheck, ConfigParams, Expect, Keys};
use medic::config::{Config, KubernetesTarget, TargetConfig};
use medic::observe::Outcome;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const DEPLOY: &str = "/apis/apps/v1/namespaces/keneyapp/deployments/backend";
const CM: &str = "/api/v1/namespaces/keneyapp/configmaps/backend-config";
const SECRET: &str = "/api/v1/namespaces/keneyapp/secrets/backend-database";

const DB_URL: &str = "postgres://keneyapp:db-s3cret-pw@db.keneyapp:5432/keneyapp";

fn sha256(v: &str) -> String {
    Sha256::digest(v.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn keys(list: &[(&str, Expect)]) -> Keys {
    Keys(
        list.iter()
            .map(|(k, e)| (k.to_string(), e.clone()))
            .collect(),
    )
}

fn equals(v: &str) -> Expect {
    Expect {
        equals: Some(v.into()),
        ..Default::default()
    }
}

fn matches(v: &str) -> Expect {
    Expect {
        matches: Some(v.into()),
        ..Default::default()
    }
}

fn hash(v: &str) -> Expect {
    Expect {
        sha256: Some(sha256(v)),
        ..Default::default()
    }
}

/// A Deployment as the API returns it, its container's env as given.
fn deployment(env: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "backend", "namespace": "keneyapp",
            "uid": "5f1c2a8e-0d4b-4a57-9d1e-2b7c3f0a9e11",
            "resourceVersion": "48213", "generation": 4,
            "creationTimestamp": "2026-10-01T08:00:00Z"
        },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "backend" } },
            "template": {
                "metadata": {
                    "labels": { "app": "backend" },
                    "annotations": { "kubectl.kubernetes.io/default-container": "backend" }
                },
                "spec": {
                    "containers": [
                        { "name": "log-shipper", "image": "fluent-bit:3" },
                        {
                            "name": "backend",
                            "image": "isdataconsulting/keneyapp-backend:1.4.2",
                            "env": env,
                            "ports": [{ "containerPort": 8000, "protocol": "TCP" }]
                        }
                    ]
                }
            }
        },
        "status": { "observedGeneration": 4, "replicas": 2, "availableReplicas": 2 }
    })
}

fn full_env() -> Value {
    json!([
        { "name": "APP_ENV", "value": "production" },
        { "name": "LOG_LEVEL", "valueFrom": { "configMapKeyRef": { "name": "backend-config", "key": "LOG_LEVEL" } } },
        { "name": "DATABASE_URL", "valueFrom": { "secretKeyRef": { "name": "backend-database", "key": "url" } } }
    ])
}

fn params() -> ConfigParams {
    ConfigParams {
        target: "backend".into(),
        container: None,
        env: keys(&[
            ("APP_ENV", equals("production")),
            ("LOG_LEVEL", matches("^(info|warn)$")),
            ("DATABASE_URL", hash(DB_URL)),
        ]),
        config_maps: BTreeMap::from([(
            "backend-config".to_string(),
            keys(&[("LOG_LEVEL", Expect::default())]),
        )]),
        secrets: BTreeMap::from([(
            "backend-database".to_string(),
            keys(&[("url", hash(DB_URL))]),
        )]),
    }
}

fn kube_check(kubeconfig: &std::path::Path, p: &ConfigParams) -> ConfigCheck {
    let mut config = Config::default();
    config.targets.insert(
        "backend".into(),
        TargetConfig::Kubernetes(KubernetesTarget {
            kind: "Deployment".into(),
            name: "backend".into(),
            namespace: "keneyapp".into(),
            kubeconfig: Some(kubeconfig.to_path_buf()),
        }),
    );
    ConfigCheck::build(p, Duration::from_secs(2), &config).unwrap()
}

fn get(uri: &str) -> Seen {
    Seen {
        method: "GET".into(),
        uri: uri.into(),
        authorization: Some(format!("Bearer {TOKEN}")),
        body: String::new(),
    }
}

fn failing(o: &Outcome) -> &str {
    match o {
        Outcome::Failing(d) => d,
        other => panic!("expected failing, got {other:?}"),
    }
}

#[tokio::test]
async fn kubernetes_env_config_maps_and_secrets_as_expected_then_each_problem_named() {
    let api = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path(), "keneyapp");
    api.put(DEPLOY, deployment(full_env()));
    api.config_map("keneyapp", "backend-config", &[("LOG_LEVEL", "info")]);
    api.secret("keneyapp", "backend-database", &[("url", DB_URL)]);
    let c = kube_check(&kc, &params());

    assert_eq!(c.run().await, Outcome::Ok);
    // The workload, then each object once, the env's in name order
    // (DATABASE_URL's Secret, LOG_LEVEL's ConfigMap); the rule's are the
    // same reads.
    assert_eq!(api.take_seen(), vec![get(DEPLOY), get(SECRET), get(CM)]);

    // A variable gone from the pod template.
    let env: Vec<Value> = full_env().as_array().unwrap()[1..].to_vec();
    api.put(DEPLOY, deployment(Value::Array(env)));
    assert_eq!(
        c.run().await,
        Outcome::Failing("Deployment keneyapp/backend: env APP_ENV is not set".into())
    );
    api.put(DEPLOY, deployment(full_env()));

    // A wrong value in the ConfigMap.
    api.config_map("keneyapp", "backend-config", &[("LOG_LEVEL", "debug")]);
    assert_eq!(
        c.run().await,
        Outcome::Failing(
            "Deployment keneyapp/backend: env LOG_LEVEL is \"debug\", which does not match \"^(info|warn)$\""
                .into()
        )
    );
    api.config_map("keneyapp", "backend-config", &[("LOG_LEVEL", "info")]);

    // The Secret lost its key.
    api.secret(
        "keneyapp",
        "backend-database",
        &[("password", "db-s3cret-pw")],
    );
    assert_eq!(
        c.run().await,
        Outcome::Failing(
            "Deployment keneyapp/backend: env DATABASE_URL: Secret backend-database has no key url; \
             Secret backend-database has no key url"
                .into()
        )
    );

    // The Secret's value changed: said by hash, never shown.
    let changed = "postgres://keneyapp:n3w-pw@db-restored.keneyapp:5432/keneyapp";
    api.secret("keneyapp", "backend-database", &[("url", changed)]);
    let o = c.run().await;
    let d = failing(&o);
    assert_eq!(
        d,
        "Deployment keneyapp/backend: env DATABASE_URL differs from the expected hash; \
         Secret backend-database key url differs from the expected hash"
    );
    for secret in [DB_URL, changed, "n3w-pw", "db-s3cret-pw", "db-restored"] {
        assert!(!d.contains(secret), "a Secret's value in the outcome: {d}");
    }
    api.secret("keneyapp", "backend-database", &[("url", DB_URL)]);

    // The ConfigMap deleted.
    api.respond(
        CM,
        404,
        common::fake_kube::status(404, "NotFound", "configmaps \"backend-config\" not found"),
    );
    assert_eq!(
        c.run().await,
        Outcome::Failing(
            "Deployment keneyapp/backend: env LOG_LEVEL: ConfigMap backend-config not found; \
             ConfigMap backend-config not found"
                .into()
        )
    );
    api.config_map("keneyapp", "backend-config", &[("LOG_LEVEL", "info")]);
    assert_eq!(c.run().await, Outcome::Ok);

    // medic may not read Secrets (RBAC): unknown, never failing.
    api.fail(
        SECRET,
        403,
        "Forbidden",
        "secrets \"backend-database\" is forbidden: User \"system:serviceaccount:medic:medic\" cannot get resource \"secrets\"",
    );
    let o = c.run().await;
    assert!(
        matches!(&o, Outcome::Unknown(d) if d.starts_with("Deployment keneyapp/backend: Secret keneyapp/backend-database: the API server refused medic (403")),
        "{o:?}"
    );

    // The API server gone: unknown.
    api.stop();
    let o = c.run().await;
    assert!(
        matches!(&o, Outcome::Unknown(d) if d.contains("API server unreachable")),
        "{o:?}"
    );
}

#[tokio::test]
async fn kubernetes_secret_values_compared_only_by_hash_and_named_containers() {
    let api = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path(), "keneyapp");
    api.put(DEPLOY, deployment(full_env()));
    api.secret("keneyapp", "backend-database", &[("url", DB_URL)]);
    // A regex on a variable that turns out to come from a Secret: medic
    // does not look (unknown), and says how to compare it.
    let p = ConfigParams {
        env: keys(&[("DATABASE_URL", matches("^postgres://"))]),
        config_maps: BTreeMap::new(),
        secrets: BTreeMap::new(),
        ..params()
    };
    let o = kube_check(&kc, &p).run().await;
    assert_eq!(
        o,
        Outcome::Unknown(
            "Deployment keneyapp/backend: env DATABASE_URL comes from a Secret: medic compares it only by `sha256`"
                .into()
        )
    );
    // The sidecar has no such variable; a missing container is named.
    let sidecar = ConfigParams {
        container: Some("log-shipper".into()),
        env: keys(&[("APP_ENV", Expect::default())]),
        ..p.clone()
    };
    assert_eq!(
        kube_check(&kc, &sidecar).run().await,
        Outcome::Failing("Deployment keneyapp/backend: env APP_ENV is not set".into())
    );
    let nowhere = ConfigParams {
        container: Some("api".into()),
        ..sidecar
    };
    assert_eq!(
        kube_check(&kc, &nowhere).run().await,
        Outcome::Failing(
            "Deployment keneyapp/backend: its pod template has no container api (containers: log-shipper, backend)"
                .into()
        )
    );
    // The workload itself missing.
    api.respond(
        DEPLOY,
        404,
        common::fake_kube::status(404, "NotFound", "deployments.apps \"backend\" not found"),
    );
    assert_eq!(
        kube_check(&kc, &p).run().await,
        Outcome::Failing("Deployment keneyapp/backend: not found".into())
    );
}

fn docker_check(d: &Dockerd, env: Keys) -> ConfigCheck {
    let config = medic::config::load_str(
        "medic.yaml",
        &format!(
            "targets:\n  backend:\n    docker: {{ socket: \"{}\", container: backend }}\n",
            d.socket_str()
        ),
    )
    .unwrap();
    let p = ConfigParams {
        target: "backend".into(),
        container: None,
        env,
        config_maps: BTreeMap::new(),
        secrets: BTreeMap::new(),
    };
    ConfigCheck::build(&p, Duration::from_secs(5), &config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_container_env_as_expected_then_problems_named_then_unknown_without_the_engine() {
    let d = Dockerd::start();
    d.import(
        "medic-test/backend",
        "v1",
        &[
            "ENV IMAGE_DEFAULT=from-image",
            &format!("CMD [\"{BUSYBOX}\", \"sleep\", \"3600\"]"),
        ],
    )
    .await;
    d.run(
        "backend",
        "medic-test/backend:v1",
        &[],
        &[
            "DATABASE_URL=postgres://app:hunter2@db:5432/keneyapp",
            "LOG_LEVEL=debug",
            "API_KEY=k3y-s3cret",
        ],
        None,
    )
    .await;
    let ok = docker_check(
        &d,
        keys(&[
            ("DATABASE_URL", matches("^postgres://")),
            ("IMAGE_DEFAULT", equals("from-image")),
            ("API_KEY", hash("k3y-s3cret")),
            ("LOG_LEVEL", Expect::default()),
        ]),
    );
    assert_eq!(ok.run().await, Outcome::Ok, "{}", d.log());

    let bad = docker_check(
        &d,
        keys(&[
            ("API_KEY", hash("the-old-key")),
            ("DATABASE_URL", matches("^mysql://")),
            ("LOG_LEVEL", equals("info")),
            ("REDIS_URL", Expect::default()),
        ]),
    );
    let o = bad.run().await;
    let detail = failing(&o);
    assert_eq!(
        detail,
        "container backend: env API_KEY differs from the expected hash; \
         env DATABASE_URL is \"postgres://app:***@db:5432/keneyapp\", which does not match \"^mysql://\"; \
         env LOG_LEVEL is \"debug\", expected \"info\"; env REDIS_URL is not set"
    );
    assert!(!detail.contains("k3y-s3cret") && !detail.contains("hunter2"));

    drop(d);
    let o = ok.run().await;
    assert!(
        matches!(&o, Outcome::Unknown(m) if m.contains("is unreachable")),
        "{o:?}"
    );
}
