//! Fixes found while testing paging against the recording fakes of Slack
//! and PagerDuty (issue 15), each pinned by the requests medic makes: the
//! real daemon in real time with a TCP check the test controls.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::fake_paging::{Fakes, Req};
use medic::clock::Clock;
use medic::store::{IncidentState, MemoryStore, prelude::*};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const API_TOKEN: &str = "t0ken-for-tests";

struct Medic {
    store: Arc<MemoryStore>,
    fakes: Fakes,
    url: String,
    app_port: u16,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

fn secret_file(dir: &Path, name: &str, value: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    p.display().to_string()
}

/// The daemon with the app-down rule (`for: 0s`, a restart that fails)
/// plus `more_steps`, paging Slack and PagerDuty at level 1.
async fn start(more_steps: &str) -> Medic {
    let (fakes, base) = Fakes::start();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let app_port = common::free_port();
    let config = format!(
        r#"
mode: enforce
http:
  listen: 127.0.0.1:{port}
  api_token: {{ file: {api} }}
notifiers:
  oncall:
    slack: {{ token: {{ file: {slack} }}, channel: C0INCIDENT, api_url: "{base}/api" }}
  pd:
    pagerduty: {{ routing_key: {{ file: {pd} }}, url: "{base}/v2/enqueue" }}
escalation:
  default:
    levels:
      - {{ after: 0s, notify: [oncall, pd], name: primary on-call }}
      - {{ after: 10m, notify: [oncall], name: technical lead }}
"#,
        api = secret_file(dir.path(), "api", API_TOKEN),
        slack = secret_file(dir.path(), "slack", "xoxb-test"),
        pd = secret_file(dir.path(), "pd", "R0UTINGKEY"),
    );
    let config = medic::config::load_str("medic.yaml", &config).unwrap();
    let rule = common::app_down_rule(app_port, "15m", "200ms", more_steps);
    let sc = medic::rules::load_str("rules/app.yaml", &rule, &config).unwrap();
    let (runtimes, refused) = medic::daemon::build_runtimes(&config, vec![sc]);
    assert!(refused.is_empty());
    let store = Arc::new(MemoryStore::new());
    let shutdown = CancellationToken::new();
    let (s, st, c) = (store.clone(), shutdown.clone(), config.clone());
    let task = tokio::spawn(async move {
        medic::daemon::run_with(&c, runtimes, 0, s, Clock::system(), st).await
    });
    let url = format!("http://127.0.0.1:{port}");
    common::eventually(Duration::from_secs(10), "medic's HTTP server", || async {
        reqwest::get(format!("{url}/healthz")).await.is_ok()
    })
    .await;
    Medic {
        store,
        fakes,
        url,
        app_port,
        shutdown,
        task,
        _dir: dir,
    }
}

impl Medic {
    /// Waits for `n` requests, then a moment in which nothing more comes.
    async fn wait_requests(&self, n: usize) {
        let f = self.fakes.clone();
        common::eventually(
            Duration::from_secs(20),
            &format!("{n} requests at the fakes (so far: {:?})", f.shorts()),
            || {
                let f = f.clone();
                async move { f.requests().len() >= n }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    async fn timeline_has(&self, id: i64, text: &str) {
        let s = self.store.clone();
        common::eventually(
            Duration::from_secs(20),
            &format!("{text:?} on the timeline"),
            || {
                let s = s.clone();
                async move {
                    s.timeline(id)
                        .await
                        .unwrap()
                        .iter()
                        .any(|e| e.message.contains(text))
                }
            },
        )
        .await;
    }

    async fn incident_id(&self) -> i64 {
        let s = self.store.clone();
        common::eventually(Duration::from_secs(10), "an open incident", || {
            let s = s.clone();
            async move { !s.open_incidents().await.unwrap().is_empty() }
        })
        .await;
        self.store.open_incidents().await.unwrap()[0].id
    }

    async fn api(&self, id: i64, action: &str) -> u16 {
        reqwest::Client::new()
            .post(format!("{}/api/v1/incidents/{id}/{action}", self.url))
            .bearer_auth(API_TOKEN)
            .header("content-type", "application/json")
            .body(r#"{"by": "alice"}"#)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn pagerduty(&self) -> Vec<String> {
        self.fakes
            .shorts()
            .into_iter()
            .filter(|s| s.starts_with("pagerduty"))
            .collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// A step that waits for approval for 2s, then escalates (the plan gives up).
const APPROVAL: &str = r#"  - name: failover
    action: exec
    args: ["true"]
    approval: required
    approval_timeout: 2s
"#;

fn first_message(reqs: &[Req]) -> &Value {
    &reqs
        .iter()
        .find(|r| r.what == "chat.postMessage" && !r.body["thread_ts"].is_string())
        .expect("an incident message")
        .body
}

/// PagerDuty re-alerted whoever had acknowledged: the plan's give-up after
/// an acknowledgement went out as a new `trigger`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pagerduty_trigger_after_an_acknowledgement() {
    let m = start(APPROVAL).await;
    let id = m.incident_id().await;
    m.wait_requests(3).await;
    assert_eq!(m.pagerduty(), ["pagerduty:trigger"]);
    assert_eq!(m.api(id, "acknowledge").await, 200);
    // The approval times out, the plan gives up: the timeline says so.
    m.timeline_has(id, "acknowledged, so nobody new is paged")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        m.pagerduty(),
        ["pagerduty:trigger", "pagerduty:acknowledge"]
    );
    // Slack heard every change (acknowledged, timed out, gave up).
    let shorts = m.fakes.shorts();
    assert_eq!(
        shorts
            .iter()
            .filter(|s| *s == "chat.postMessage(thread)")
            .count(),
        4,
        "{shorts:?}"
    );
    m.stop().await;
}

/// A Slack/API Resolve while the check still failed resolved the incident,
/// and the engine opened a new one (and paged) in the same second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_human_resolve_while_the_symptom_fails_keeps_the_incident_open() {
    let m = start("").await;
    let id = m.incident_id().await;
    m.wait_requests(3).await;
    assert_eq!(m.api(id, "resolve").await, 200);
    m.timeline_has(id, "resolved by a human, symptom still failing")
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = m.store.recent_incidents(10).await.unwrap();
    assert_eq!(all.len(), 1, "no second incident: {all:?}");
    assert_eq!(all[0].state, IncidentState::Acknowledged);
    let tops = m
        .fakes
        .shorts()
        .iter()
        .filter(|s| *s == "chat.postMessage")
        .count();
    assert_eq!(tops, 1, "one incident message: {:?}", m.fakes.shorts());
    assert_eq!(
        m.pagerduty(),
        ["pagerduty:trigger", "pagerduty:acknowledge"]
    );
    // The app comes back: now it resolves, and everyone paged hears it.
    let _app = std::net::TcpListener::bind(("127.0.0.1", m.app_port)).unwrap();
    m.timeline_has(id, "all symptoms clear after a human's Resolve")
        .await;
    m.wait_requests(9).await;
    assert_eq!(
        m.pagerduty(),
        [
            "pagerduty:trigger",
            "pagerduty:acknowledge",
            "pagerduty:resolve"
        ]
    );
    assert_eq!(m.store.recent_incidents(10).await.unwrap().len(), 1);
    m.stop().await;
}

/// With `for: 0s` the symptom fires before the incident exists: the page's
/// "Observed" said "—".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observed_field_carries_what_the_check_saw_with_for_0s() {
    let m = start("").await;
    m.wait_requests(3).await;
    let blocks = first_message(&m.fakes.requests())["blocks"].to_string();
    assert!(
        blocks.contains("*Observed*\\n• symptom app_down: firing at detection (failing: "),
        "{blocks}"
    );
    assert!(
        blocks.contains("connect"),
        "the check's own words: {blocks}"
    );
    m.stop().await;
}

/// Acknowledge and Approve were both `primary` while a step waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_primary_button_per_actions_block() {
    let m = start(APPROVAL).await;
    m.wait_requests(3).await;
    let reqs = m.fakes.requests();
    let mut seen = 0;
    for r in reqs
        .iter()
        .filter(|r| r.what == "chat.postMessage" || r.what == "chat.update")
    {
        for b in r.body["blocks"].as_array().into_iter().flatten() {
            if b["type"] == "actions" {
                let primaries: Vec<&Value> = b["elements"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| e["style"] == "primary")
                    .collect();
                assert_eq!(primaries.len(), 1, "{b}");
                seen += 1;
            }
        }
    }
    let top = first_message(&reqs)["blocks"].to_string();
    assert!(
        top.contains(r#""action_id":"approve""#),
        "the step waits: {top}"
    );
    assert!(seen >= 1);
    m.stop().await;
}

/// Slack warns `missing_charset` without it; PagerDuty showed an empty
/// `component` as a blank field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_gets_a_charset_and_pagerduty_no_empty_component() {
    let m = start("").await;
    m.wait_requests(3).await;
    let reqs = m.fakes.requests();
    let posts: Vec<&Req> = reqs
        .iter()
        .filter(|r| r.what.starts_with("chat."))
        .collect();
    assert!(!posts.is_empty());
    for r in posts {
        assert_eq!(
            r.headers["content-type"], "application/json; charset=utf-8",
            "{}",
            r.what
        );
    }
    let trigger = &reqs.iter().find(|r| r.what == "pagerduty").unwrap().body;
    assert_eq!(trigger["event_action"], "trigger");
    assert!(
        trigger["payload"].get("component").is_none(),
        "the tcp check names no target: {trigger}"
    );
    assert_eq!(trigger["payload"]["source"], "medic");
    m.stop().await;
}
