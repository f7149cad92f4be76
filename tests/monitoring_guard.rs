//! The monitoring-outage guard with real components: a real Prometheus
//! (scraping a real redis exporter) is killed while the redis it watches
//! dies too. The promql symptom goes unknown, not failing: no incident, no
//! remediation on it. The monitoring scenario's `source` check sees the
//! blindness and pages.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Redis;
use common::prom::{Exporter, PASSWORD, Prometheus, USER};
use medic::clock::Clock;
use medic::store::{MemoryStore, prelude::*};
use tokio_util::sync::CancellationToken;

const APP_RULE: &str = r#"
scenario: redis-cache-failure
summary: Redis down
severity: high
rto: 5m
symptoms:
  redis_down:
    check: { promql: 'redis_up == 0' }
    every: 250ms
    timeout: 250ms
    for: 0s
    clear_for: 0s
when: { any: [redis_down] }
plan:
  - action: exec
    args: ["sh", "-c", "echo restarted >> \"$1\"", "sh", "OUT"]
    verify: { within: 2s }
escalation: default
"#;

const MONITORING_RULE: &str = r#"
scenario: monitoring-system-failure
summary: medic is blind
severity: high
rto: 30m
symptoms:
  prometheus_unreachable:
    check: { source: prom }
    every: 250ms
    timeout: 250ms
    for: 600ms
    clear_for: 1s
when: { any: [prometheus_unreachable] }
plan: []
escalation: default
"#;

async fn messages(store: &MemoryStore, id: i64) -> Vec<String> {
    store
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{}: {}", e.kind, e.message))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_lost_means_unknown_no_action_and_a_page_about_blindness() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start_free();
    let exporter = Exporter::start(redis.port, dir.path());
    let mut prom = Prometheus::start(&[format!("127.0.0.1:{}", exporter.port)], dir.path());
    let pw = dir.path().join("password");
    std::fs::write(&pw, PASSWORD).unwrap();
    let out = dir.path().join("restarted");
    let config_text = format!(
        "mode: enforce\n\
         targets:\n  prom:\n    prometheus:\n      url: {url}\n      basic_auth: {{ username: {USER}, password: {{ file: {pw} }} }}\n\
         notifiers:\n  log: {{ log: {{}} }}\n\
         escalation:\n  default:\n    levels:\n      - {{ after: 0m, notify: [log] }}\n",
        url = prom.url(),
        pw = pw.display()
    );
    let config = medic::config::load_str("medic.yaml", &config_text).unwrap();
    let app = APP_RULE.replace("OUT", out.to_str().unwrap());
    let scenarios = vec![
        medic::rules::load_str("rules/app.yaml", &app, &config).unwrap(),
        medic::rules::load_str("rules/monitoring.yaml", MONITORING_RULE, &config).unwrap(),
    ];
    let (runtimes, refused) = medic::daemon::build_runtimes(&config, scenarios);
    assert!(
        refused.is_empty(),
        "{:?}",
        refused.iter().map(|r| &r.reason).collect::<Vec<_>>()
    );

    // Wait for the first scrapes, so redis_up exists.
    let mut seen = false;
    for _ in 0..150 {
        if let Some((200, body)) =
            common::prom::http_get(prom.port, "/api/v1/query?query=redis_up", true)
            && body.contains("\"redis_up\"")
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen, "no scrape: {}", prom.log());

    let store = Arc::new(MemoryStore::new());
    let shutdown = CancellationToken::new();
    let (st, sd): (Arc<dyn Store>, _) = (store.clone(), shutdown.clone());
    let handle = tokio::spawn(async move {
        medic::daemon::run_with(&config, runtimes, 0, st, Clock::system(), sd).await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        store.open_incidents().await.unwrap().is_empty(),
        "all healthy"
    );

    // Prometheus and redis die together: redis is really down, but medic
    // cannot see it.
    prom.kill();
    redis.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let blind = loop {
        let open = store.open_incidents().await.unwrap();
        if let Some(i) = open
            .iter()
            .find(|i| i.scenario == "monitoring-system-failure")
        {
            let tl = messages(&store, i.id).await;
            if tl.iter().any(|m| m == "page: paged level 1 via log") {
                break tl;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no page: {open:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Stay a while: the promql symptom must never fire.
    tokio::time::sleep(Duration::from_secs(3)).await;
    shutdown.cancel();
    handle.await.unwrap().unwrap();

    let all = store.recent_incidents(10).await.unwrap();
    assert_eq!(all.len(), 1, "only the blindness incident: {all:#?}");
    assert!(
        blind[0].starts_with("state: opened: prometheus_unreachable firing"),
        "{blind:#?}"
    );
    let opened = store.timeline(all[0].id).await.unwrap();
    let detail = opened[0].data.to_string();
    assert!(
        detail.contains(&format!(
            "medic is blind: prometheus prom at {} unreachable",
            prom.url()
        )),
        "{detail}"
    );
    assert!(
        blind
            .iter()
            .any(|m| m.starts_with("escalate: escalated: the scenario has no remediation plan")),
        "{blind:#?}"
    );
    assert!(!out.exists(), "no remediation may run while medic is blind");
}

/// The kube API as a source: `GET /version` answers, then the API is gone.
/// (No cluster here: a local fake API server, its requests recorded.)
#[tokio::test]
async fn a_lost_kubernetes_api_is_failing_for_the_source_check() {
    let api = common::fake_kube::FakeKube::start().await;
    api.put(
        "/version",
        serde_json::json!({
            "major": "1", "minor": "31", "gitVersion": "v1.31.2", "gitCommit": "x",
            "gitTreeState": "clean", "buildDate": "2024-10-22T20:28:14Z",
            "goVersion": "go1.22.8", "compiler": "gc", "platform": "linux/amd64"
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path(), "keneyapp");
    let text = format!(
        "targets:\n  backend:\n    kubernetes: {{ kind: Deployment, name: backend, namespace: keneyapp, kubeconfig: {} }}\n",
        kc.display()
    );
    let config = medic::config::load_str("medic.yaml", &text).unwrap();
    let spec = medic::check::CheckSpec::Source(medic::check::source::SourceParams {
        target: "backend".into(),
    });
    let check = medic::check::build(&spec, Duration::from_secs(2), &config).unwrap();
    assert_eq!(check.run().await, medic::observe::Outcome::Ok);
    let seen = api.take_seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("GET", "/version")
    );
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {}", common::fake_kube::TOKEN).as_str())
    );

    api.stop();
    drop(api);
    tokio::time::sleep(Duration::from_millis(100)).await;
    match check.run().await {
        medic::observe::Outcome::Failing(m) => assert!(
            m.starts_with("medic is blind: the Kubernetes API of target backend is unreachable"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}
