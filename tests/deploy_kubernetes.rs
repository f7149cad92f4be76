//! The Kubernetes manifests (`deploy/kubernetes/`, a kustomize base) and
//! the container image, without a cluster: `kubectl kustomize` renders the
//! base (no API server needed; `kubectl apply --dry-run=client` would need
//! one for discovery), every object is parsed into its k8s-openapi type and
//! must survive a round trip unchanged (a misspelt field is lost, so it
//! fails), then the invariants the issue asks for are checked, and every
//! kube API call found in `src/` must be allowed by the Role.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use regex::Regex;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rendered base, one JSON value per object.
fn rendered() -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join("deploy/kubernetes"))
        .output()
        .expect("kubectl must be installed (scripts/test.sh installs kubernetes-client)");
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_saphyr::from_multiple::<Value>(&text).unwrap()
}

fn one<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> T {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    serde_json::from_value(found[0].clone()).unwrap()
}

/// Drops JSON nulls and empty objects, which typed serialization omits.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), normalize(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", doc["kind"], doc["metadata"]["name"]));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        normalize(&back),
        normalize(doc),
        "{} {} has fields its type does not know (misspelt?)",
        doc["kind"],
        doc["metadata"]["name"]
    );
}

#[test]
fn every_object_is_valid_for_its_type() {
    let docs = rendered();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ])
    );
    for d in &docs {
        match d["kind"].as_str().unwrap() {
            "ConfigMap" => roundtrip::<ConfigMap>(d),
            "Deployment" => roundtrip::<Deployment>(d),
            "PodDisruptionBudget" => roundtrip::<PodDisruptionBudget>(d),
            "Role" => roundtrip::<Role>(d),
            "RoleBinding" => roundtrip::<RoleBinding>(d),
            "Service" => roundtrip::<Service>(d),
            "ServiceAccount" => roundtrip::<ServiceAccount>(d),
            other => panic!("unexpected kind {other}"),
        }
        assert_eq!(d["metadata"]["namespace"], "keneyapp", "{d}");
    }
}

#[test]
fn deployment_is_replicated_probed_bounded_and_locked_down() {
    let docs = rendered();
    let dep: Deployment = one(&docs, "Deployment");
    let spec = dep.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("medic"));
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert!(psc.run_as_user.is_some_and(|u| u != 0));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    assert!(sc.privileged.is_none_or(|p| !p));

    let res = c.resources.clone().unwrap();
    for (what, q) in [("requests", res.requests), ("limits", res.limits)] {
        let q = q.unwrap_or_default();
        assert!(
            q.contains_key("cpu") && q.contains_key("memory"),
            "{what}: {q:?}"
        );
    }
    let probe_path = |p: Option<k8s_openapi::api::core::v1::Probe>| {
        let g = p.unwrap().http_get.unwrap();
        (g.path.unwrap(), format!("{:?}", g.port))
    };
    let (live, live_port) = probe_path(c.liveness_probe.clone());
    let (ready, ready_port) = probe_path(c.readiness_probe.clone());
    assert_eq!(live, "/healthz");
    assert_eq!(ready, "/readyz");
    let port = &c.ports.as_ref().unwrap()[0];
    assert_eq!(port.name.as_deref(), Some("http"));
    assert!(live_port.contains("http") && ready_port.contains("http"));

    // The config medic reads listens where the probes and Service look.
    let config = config_map(&docs, "medic-config");
    let listen = format!("0.0.0.0:{}", port.container_port);
    assert!(
        config["medic.yaml"].contains(&format!("listen: {listen}")),
        "http.listen must be {listen}"
    );
    // Secrets by reference only: every variable comes from a Secret.
    for e in c.env.as_deref().unwrap_or_default() {
        assert!(e.value.is_none(), "{} is written inline", e.name);
        assert!(
            e.value_from
                .as_ref()
                .is_some_and(|v| v.secret_key_ref.is_some()),
            "{} is not a secret reference",
            e.name
        );
    }
    // Mounted: config and rules read-only, state writable (read-only root).
    let mounts: BTreeMap<String, bool> = c
        .volume_mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|m| (m.mount_path.clone(), m.read_only.unwrap_or(false)))
        .collect();
    assert_eq!(mounts.get("/etc/medic"), Some(&true));
    assert_eq!(mounts.get("/etc/medic/rules"), Some(&true));
    assert_eq!(mounts.get("/var/lib/medic"), Some(&false));
    assert!(
        config["medic.yaml"].contains("/var/lib/medic/"),
        "the store lives on the writable volume"
    );
    // Above shutdown_grace (30s): a running action may finish.
    assert!(pod.termination_grace_period_seconds.unwrap() > 30);
}

fn config_map(docs: &[Value], prefix: &str) -> BTreeMap<String, String> {
    let cm: Vec<ConfigMap> = docs
        .iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .map(|d| serde_json::from_value(d.clone()).unwrap())
        .filter(|c: &ConfigMap| {
            c.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    assert_eq!(cm.len(), 1, "one ConfigMap {prefix}-*");
    cm[0].data.clone().unwrap_or_default()
}

#[test]
fn service_and_budget_select_the_pods() {
    let docs = rendered();
    let dep: Deployment = one(&docs, "Deployment");
    let labels = dep.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    let svc: Service = one(&docs, "Service");
    let spec = svc.spec.unwrap();
    for (k, v) in spec.selector.unwrap() {
        assert_eq!(labels.get(&k), Some(&v));
    }
    assert_eq!(spec.ports.unwrap()[0].name.as_deref(), Some("http"));
    let pdb: PodDisruptionBudget = one(&docs, "PodDisruptionBudget");
    let spec = pdb.spec.unwrap();
    assert_eq!(
        spec.min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    for (k, v) in spec.selector.unwrap().match_labels.unwrap() {
        assert_eq!(labels.get(&k), Some(&v));
    }
    let rb: RoleBinding = one(&docs, "RoleBinding");
    assert_eq!(rb.role_ref.kind, "Role");
    assert_eq!(rb.role_ref.name, "medic");
    let subjects = rb.subjects.unwrap();
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(subjects[0].name, "medic");
}

#[test]
fn configmaps_hold_a_config_and_rules_that_pass_medic_check() {
    let docs = rendered();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let config = config_map(&docs, "medic-config");
    std::fs::write(dir.path().join("medic.yaml"), &config["medic.yaml"]).unwrap();
    let rules = config_map(&docs, "medic-rules");
    for (name, text) in &rules {
        std::fs::write(dir.path().join("rules").join(name), text).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["check", "--config"])
        .arg(dir.path().join("medic.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every kubernetes target lives where the (namespaced) Role applies.
    let ns = Regex::new(r"kubernetes:\s*\{[^}]*namespace:\s*([\w-]+)").unwrap();
    let found: Vec<&str> = ns
        .captures_iter(&config["medic.yaml"])
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert!(!found.is_empty());
    assert!(found.iter().all(|n| *n == "keneyapp"), "{found:?}");
}

#[test]
fn kubernetes_rules_are_the_shipped_rules() {
    let mut shipped = BTreeMap::new();
    for e in std::fs::read_dir(root().join("rules")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            shipped.insert(
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            );
        }
    }
    let rules = config_map(&rendered(), "medic-rules");
    let rules: BTreeMap<String, String> = rules.into_iter().collect();
    assert!(
        rules == shipped,
        "deploy/kubernetes/rules/ differs from rules/: run\n  cp rules/*.yaml deploy/kubernetes/rules/\nand list every file in deploy/kubernetes/kustomization.yaml"
    );
}

#[test]
fn image_runs_as_the_user_the_pods_require() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage build");
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the final stage sets USER");
    let uid: i64 = user.split(':').next().unwrap().parse().unwrap();
    assert_ne!(uid, 0);
    assert!(text.contains("cargo build --release --locked"));
    let dep: Deployment = one(&rendered(), "Deployment");
    let psc = dep
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .security_context
        .unwrap();
    assert_eq!(psc.run_as_user, Some(uid));
}

// ---------------------------------------------------------------------------
// Every kube API call the code makes must be allowed by the Role.

/// (API group, resource or resource/subresource, verb).
type Call = (String, String, String);

fn call(g: &str, r: &str, v: &str) -> Call {
    (g.to_string(), r.to_string(), v.to_string())
}

/// What the design says medic calls, before (and besides) what the code
/// shows: checks read workloads and pods, actions patch workloads,
/// rollout undo lists ReplicaSets, leader election keeps a Lease.
fn design_calls() -> BTreeSet<Call> {
    let mut s = BTreeSet::new();
    for r in ["deployments", "statefulsets", "daemonsets", "replicasets"] {
        for v in ["get", "list", "watch", "patch"] {
            s.insert(call("apps", r, v));
        }
    }
    for v in ["get", "list", "watch"] {
        s.insert(call("", "pods", v));
    }
    for v in ["get", "create", "update"] {
        s.insert(call("coordination.k8s.io", "leases", v));
    }
    s
}

/// Crates that keep a Lease for leader election (get, create, update).
const LEASE_CRATES: &[&str] = &[
    "kube-leader-election",
    "kube-lease-manager",
    "kube-coordinate",
];

fn plural(kind: &str) -> String {
    let k = kind.to_lowercase();
    if k == "endpoints" {
        k
    } else if k.ends_with('s') || k.ends_with("ch") || k.ends_with('x') {
        format!("{k}es")
    } else if let Some(stem) = k.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{k}s")
    }
}

/// Kube API calls in one source file, found from its text: `Api<Kind>`
/// bindings, the kinds' groups from their `k8s_openapi::api::GROUP` imports,
/// and method calls on those bindings (a call on a receiver the scan cannot
/// tie to one kind counts for every kind the file uses). Problems (a kind
/// whose group is unknown) come back as errors.
fn scan(file: &str, text: &str) -> (BTreeSet<Call>, Vec<String>) {
    let mut calls = BTreeSet::new();
    let mut errors = Vec::new();
    if !text.contains("Api<") && !text.contains("Api::<") {
        return (calls, errors);
    }
    // Kind -> group, from k8s_openapi paths.
    let mut group: BTreeMap<String, String> = BTreeMap::new();
    let path = Regex::new(r"k8s_openapi::api::(\w+)::\w+::(\{[^}]*\}|\w+)").unwrap();
    for c in path.captures_iter(text) {
        let g = match &c[1] {
            "core" => String::new(),
            "coordination" => "coordination.k8s.io".to_string(),
            "networking" => "networking.k8s.io".to_string(),
            "policy" => "policy".to_string(),
            "rbac" => "rbac.authorization.k8s.io".to_string(),
            other => other.to_string(),
        };
        for kind in c[2].trim_matches(['{', '}']).split(',') {
            let kind = kind.split(" as ").next().unwrap_or_default().trim();
            if !kind.is_empty() && kind != "self" {
                group.insert(kind.to_string(), g.clone());
            }
        }
    }
    // Bindings: `x: Api<K>`, `x: &Api<K>`, `x = Api::<K>::...`.
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let typed = Regex::new(r"(\w+)\s*:\s*&?\s*(?:kube::)?Api<\s*(\w+)\s*>").unwrap();
    let built = Regex::new(r"(\w+)\s*=\s*(?:kube::)?Api::<\s*(\w+)\s*>").unwrap();
    let used = Regex::new(r"Api(?:::)?<\s*(\w+)\s*>").unwrap();
    for c in typed.captures_iter(text).chain(built.captures_iter(text)) {
        vars.insert(c[1].to_string(), c[2].to_string());
    }
    let mut kinds: BTreeSet<String> = used.captures_iter(text).map(|c| c[1].to_string()).collect();
    // A generic `Api<K>` stands for every API kind the file imports.
    let concrete: BTreeSet<String> = kinds
        .iter()
        .filter(|k| group.contains_key(*k))
        .cloned()
        .collect();
    let resolve = |kind: &str| -> Vec<String> {
        if group.contains_key(kind) {
            vec![kind.to_string()]
        } else {
            group.keys().cloned().collect()
        }
    };
    // `Api<DynamicObject>` (kubernetes.backup's discovery-driven lists):
    // any resource of any group, which only the opt-in backup Role grants.
    // Anything but get and list on it could touch any resource: an error.
    if kinds.remove("DynamicObject") {
        let lists = Regex::new(r"\.\s*list\s*\(").unwrap();
        if lists.is_match(text) {
            calls.insert(call("*", "*", "list"));
        }
        let writes = Regex::new(
            r"\.\s*(watch|patch|create|replace|delete|delete_collection|patch_scale|replace_scale|patch_status|replace_status|evict)\s*\(",
        )
        .unwrap();
        for c in writes.captures_iter(text) {
            errors.push(format!(
                "{file}: Api<DynamicObject> with .{}(): dynamic objects are only listed (the backup Role grants get and list)",
                &c[1]
            ));
        }
    }
    for k in kinds.clone() {
        if !group.contains_key(&k) && group.is_empty() {
            errors.push(format!(
                "{file}: Api<{k}>: its API group is unknown (import it from k8s_openapi::api::GROUP::VERSION)"
            ));
        }
    }
    kinds.extend(concrete);
    let method = Regex::new(
        r"(\w+)\s*\.\s*(get|get_opt|get_metadata|list|list_metadata|watch|patch|create|replace|delete|delete_collection|patch_scale|get_scale|replace_scale|patch_status|replace_status|get_status|evict|logs|log_stream)\s*\(",
    )
    .unwrap();
    let distinctive = [
        "get_opt",
        "get_metadata",
        "list_metadata",
        "patch",
        "delete_collection",
        "patch_scale",
        "get_scale",
        "replace_scale",
        "patch_status",
        "replace_status",
        "get_status",
        "evict",
        "logs",
        "log_stream",
    ];
    let needs = |m: &str| match m {
        "create" | "replace" => text.contains("PostParams"),
        "delete" => text.contains("DeleteParams"),
        "list" => text.contains("ListParams"),
        "watch" => text.contains("WatchParams"),
        _ => false,
    };
    let verb = |m: &str| -> (&'static str, &'static str) {
        match m {
            "get" | "get_opt" | "get_metadata" => ("get", ""),
            "list" | "list_metadata" => ("list", ""),
            "watch" => ("watch", ""),
            "patch" => ("patch", ""),
            "create" => ("create", ""),
            "replace" => ("update", ""),
            "delete" => ("delete", ""),
            "delete_collection" => ("deletecollection", ""),
            "patch_scale" => ("patch", "/scale"),
            "get_scale" => ("get", "/scale"),
            "replace_scale" => ("update", "/scale"),
            "patch_status" => ("patch", "/status"),
            "replace_status" => ("update", "/status"),
            "get_status" => ("get", "/status"),
            "evict" => ("create", "/eviction"),
            _ => ("get", "/log"),
        }
    };
    let mut add = |kind: &str, m: &str| {
        let (v, sub) = verb(m);
        for k in resolve(kind) {
            let g = group.get(&k).cloned().unwrap_or_default();
            calls.insert((g, format!("{}{sub}", plural(&k)), v.to_string()));
        }
    };
    for c in method.captures_iter(text) {
        let (recv, m) = (&c[1], &c[2]);
        if let Some(kind) = vars.get(recv) {
            add(kind, m);
        } else if distinctive.contains(&m) || needs(m) {
            for k in &kinds {
                add(k, m);
            }
        }
    }
    // kube::runtime watchers list and watch their Api's kind.
    let watcher = Regex::new(r"(?:metadata_)?watcher\(\s*(\w+)").unwrap();
    for c in watcher.captures_iter(text) {
        if let Some(kind) = vars.get(&c[1]).cloned() {
            add(&kind, "list");
            add(&kind, "watch");
        }
    }
    (calls, errors)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every call the code makes, by file.
fn code_calls() -> (BTreeMap<Call, Vec<String>>, Vec<String>) {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut calls: BTreeMap<Call, Vec<String>> = BTreeMap::new();
    let mut errors = Vec::new();
    for f in files {
        let name = f.strip_prefix(root()).unwrap().display().to_string();
        let (c, mut e) = scan(&name, &std::fs::read_to_string(&f).unwrap());
        for c in c {
            calls.entry(c).or_default().push(name.clone());
        }
        errors.append(&mut e);
    }
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    for krate in LEASE_CRATES {
        if cargo.contains(krate) {
            for v in ["get", "create", "update"] {
                calls
                    .entry(call("coordination.k8s.io", "leases", v))
                    .or_default()
                    .push(format!("Cargo.toml ({krate})"));
            }
        }
    }
    (calls, errors)
}

fn allowed(role: &Role, c: &Call) -> bool {
    role.rules.as_deref().unwrap_or_default().iter().any(|r| {
        let has = |list: &Option<Vec<String>>, x: &str| {
            list.as_deref()
                .unwrap_or_default()
                .iter()
                .any(|y| y == x || y == "*")
        };
        has(&r.api_groups, &c.0)
            && r.resources.iter().flatten().any(|y| y == &c.1)
            && r.verbs.iter().any(|v| v == &c.2)
    })
}

#[test]
fn every_kube_call_in_the_code_is_allowed_by_the_role() {
    let role: Role = one(&rendered(), "Role");
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/backup/role.yaml")).unwrap();
    let backup: Role = serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "Role")
        .map(|d| serde_json::from_value(d).unwrap())
        .expect("deploy/kubernetes/backup/role.yaml has a Role");
    let (calls, errors) = code_calls();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(
        calls.contains_key(&call("*", "*", "list")),
        "the scan finds kubernetes.backup's dynamic lists"
    );
    let denied: Vec<String> = calls
        .iter()
        // Dynamic lists are kubernetes.backup's, granted by its own Role.
        .filter(|(c, _)| {
            if c.1 == "*" {
                !allowed(&backup, c)
            } else {
                !allowed(&role, c)
            }
        })
        .map(|(c, files)| format!("{} {} {:?} (in {})", c.2, c.1, c.0, files.join(", ")))
        .collect();
    assert!(
        denied.is_empty(),
        "the Role (deploy/kubernetes/role.yaml) does not allow:\n{}",
        denied.join("\n")
    );
    for c in design_calls() {
        assert!(allowed(&role, &c), "the design's {c:?} is not allowed");
    }
}

#[test]
fn role_grants_only_what_the_design_and_the_code_use() {
    let role: Role = one(&rendered(), "Role");
    let (calls, _) = code_calls();
    let needed: BTreeSet<Call> = design_calls()
        .into_iter()
        .chain(calls.into_keys())
        .collect();
    for r in role.rules.unwrap() {
        for g in r.api_groups.unwrap_or_default() {
            for res in r.resources.clone().unwrap_or_default() {
                for v in &r.verbs {
                    let c = call(&g, &res, v);
                    assert!(
                        needed.contains(&c),
                        "the Role grants {c:?}, which nothing uses"
                    );
                }
            }
        }
        assert!(
            r.resource_names.is_none() && r.non_resource_urls.is_none(),
            "unexpected rule shape"
        );
    }
}

#[test]
fn scan_finds_calls_in_kube_code() {
    // What an action module might look like: bindings, a generic helper,
    // a watcher, and calls the Role does not allow.
    let code = r#"
        use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::{Api, ListParams, Patch, PatchParams, DeleteParams};
        async fn restart(client: Client, ns: &str) {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns);
            deployments.patch("backend", &PatchParams::default(), &Patch::Merge(&p)).await?;
            rs.list(&ListParams::default()).await?;
            let s = "a".replace("a", "b");
        }
        async fn kill(pods: &Api<Pod>) { pods.delete("x", &DeleteParams::default()).await?; }
        async fn scale(d: &Api<Deployment>) { d.patch_scale("x", &pp, &patch).await?; }
        fn w(pods: Api<Pod>) { watcher(pods, Default::default()); }
    "#;
    let (calls, errors) = scan("x.rs", code);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        calls,
        BTreeSet::from([
            call("", "pods", "delete"),
            call("", "pods", "list"),
            call("", "pods", "watch"),
            call("apps", "deployments", "patch"),
            call("apps", "deployments/scale", "patch"),
            call("apps", "replicasets", "list"),
        ])
    );
    let role: Role = one(&rendered(), "Role");
    let denied: Vec<&Call> = calls.iter().filter(|c| !allowed(&role, c)).collect();
    assert_eq!(
        denied,
        vec![
            &call("", "pods", "delete"),
            &call("apps", "deployments/scale", "patch")
        ],
        "the Role must refuse what medic does not do"
    );
    // A kind whose group the scan cannot tell is an error, not a pass.
    let (_, errors) = scan(
        "y.rs",
        "fn f(a: Api<DynamicObject>) { a.patch(\"x\", &pp, &p); }",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    // Code without kube is skipped.
    assert_eq!(scan("z.rs", "x.patch(1); y.get(2);").0, BTreeSet::new());
}
