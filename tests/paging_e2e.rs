//! Paging end to end, in real time: the real daemon (engine, plan, pager,
//! HTTP server) with a TCP check the test controls, against local fakes of
//! the Slack Web API and PagerDuty that record every request.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::fake_paging::{Fakes, click_body};
use medic::clock::Clock;
use medic::server::slack::sign;
use medic::store::{IncidentState, MemoryStore, OutboxState, prelude::*};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
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

async fn start() -> Medic {
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
    slack: {{ token: {{ file: {slack} }}, channel: C0INCIDENT, mention: [U0ONCALL], api_url: "{base}/api" }}
  pd:
    pagerduty: {{ routing_key: {{ file: {pd} }}, url: "{base}/v2/enqueue" }}
escalation:
  default:
    levels:
      - {{ after: 0s, notify: [oncall, pd], name: primary on-call }}
      - {{ after: 10m, notify: [oncall], name: technical lead }}
slack:
  signing_secret: {{ file: {signing} }}
  approvers: [U0APPROVER]
  approver_groups: [S0LEADS]
"#,
        api = secret_file(dir.path(), "api", API_TOKEN),
        slack = secret_file(dir.path(), "slack", "xoxb-test"),
        pd = secret_file(dir.path(), "pd", "R0UTINGKEY"),
        signing = secret_file(dir.path(), "signing", SECRET),
    );
    let config = medic::config::load_str("medic.yaml", &config).unwrap();
    let rule = common::app_down_rule(
        app_port,
        "15m",
        "200ms",
        r#"  - name: failover
    action: exec
    args: ["true"]
    approval: required
    approval_timeout: 10m
    verify: { clears: app_down, within: 2m }
"#,
    );
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
    async fn wait_requests(&self, n: usize) {
        let f = self.fakes.clone();
        common::eventually(
            Duration::from_secs(20),
            &format!("{n} requests at the fakes"),
            || {
                let f = f.clone();
                async move { f.requests().len() >= n }
            },
        )
        .await;
        // Nothing more arrives right behind them.
        tokio::time::sleep(Duration::from_millis(300)).await;
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

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

async fn post_signed(url: &str, body: &str, secret: &str, ts: i64) -> (u16, String) {
    let ts = ts.to_string();
    let sig = sign(secret, &ts, body.as_bytes());
    post_raw(url, body, &ts, &sig).await
}

async fn post_raw(url: &str, body: &str, ts: &str, sig: &str) -> (u16, String) {
    common::fake_paging::post_click(url, body, ts, sig).await
}

async fn click(m: &Medic, user: &str, action: &str, value: &str) -> u16 {
    let now = chrono::Utc::now().timestamp();
    post_signed(&m.url, &click_body(user, action, value), SECRET, now)
        .await
        .0
}

async fn api(m: &Medic, id: &str, action: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/v1/incidents/{id}/{action}", m.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn blocks_text(v: &Value) -> String {
    v["blocks"].to_string()
}

/// The whole life cycle: open, remediation fails, escalation (a step
/// awaits approval), approval click, acknowledgement, resolution: exactly
/// these requests, in this order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_life_cycle_makes_exactly_the_expected_requests_in_order() {
    let m = start().await;
    let id = m.incident_id().await;
    m.wait_requests(3).await;
    assert_eq!(
        m.fakes.shorts(),
        [
            "chat.postMessage",
            "chat.postMessage(thread)",
            "pagerduty:trigger"
        ]
    );
    let reqs = m.fakes.requests();
    let top = &reqs[0].body;
    assert_eq!(top["channel"], "C0INCIDENT");
    assert_eq!(top["metadata"]["event_payload"]["incident"], id);
    let blocks = blocks_text(top);
    for want in [
        "App unreachable",
        "*Severity*\\ncritical",
        "*Scenario*\\napp-down",
        "\"action_id\":\"acknowledge\"",
        "\"action_id\":\"approve\"",
        "\"action_id\":\"reject\"",
        "\"action_id\":\"escalate\"",
        "\"action_id\":\"resolve\"",
        "\"confirm\"",
        "RTO clock",
        "restart-app",
    ] {
        assert!(blocks.contains(want), "{want} missing from {blocks}");
    }
    assert_eq!(reqs[0].headers["authorization"], "Bearer xoxb-test");
    let thread = reqs[1].body["text"].as_str().unwrap();
    assert!(
        thread.starts_with("<@U0ONCALL> primary on-call paged: App unreachable"),
        "{thread}"
    );
    assert!(thread.contains("awaits a human's approval"), "{thread}");
    let trigger = &reqs[2].body;
    assert_eq!(trigger["routing_key"], "R0UTINGKEY");
    assert_eq!(trigger["dedup_key"], format!("medic-{id}-app-down"));
    assert_eq!(trigger["payload"]["severity"], "critical");
    let inc = m.store.incident(id).await.unwrap().unwrap();
    assert_eq!(inc.state, IncidentState::Escalated);

    // Approve (a member of the approvers' user group).
    m.fakes.group("S0LEADS", &["U0LEAD"]);
    assert_eq!(
        click(&m, "U0LEAD", "approve", &format!("{id}:failover")).await,
        200
    );
    m.wait_requests(6).await;
    assert_eq!(
        m.fakes.shorts()[3..],
        [
            "usergroups.users.list",
            "chat.update",
            "chat.postMessage(thread)"
        ]
    );
    let reqs = m.fakes.requests();
    assert!(blocks_text(&reqs[4].body).contains("step failover approved by <@U0LEAD>"));
    assert!(!blocks_text(&reqs[4].body).contains("\"action_id\":\"approve\""));

    // Acknowledge (anyone in the channel may).
    assert_eq!(
        click(&m, "U0SOMEONE", "acknowledge", &id.to_string()).await,
        200
    );
    m.wait_requests(9).await;
    assert_eq!(
        m.fakes.shorts()[6..],
        [
            "chat.update",
            "chat.postMessage(thread)",
            "pagerduty:acknowledge"
        ]
    );
    // A second click: nothing changes, the clicker hears who was first.
    assert_eq!(
        click(&m, "U0OTHER", "acknowledge", &id.to_string()).await,
        200
    );
    m.wait_requests(10).await;
    let reqs = m.fakes.requests();
    assert_eq!(reqs[9].what, "chat.postEphemeral");
    let text = reqs[9].body["text"].as_str().unwrap();
    assert!(
        text.starts_with("Nothing changed: already acknowledged by <@U0SOMEONE>"),
        "{text}"
    );

    // The app comes back: the approved step's verification holds, the
    // incident resolves, everyone paged hears it.
    let _app = std::net::TcpListener::bind(("127.0.0.1", m.app_port)).unwrap();
    m.wait_requests(13).await;
    assert_eq!(
        m.fakes.shorts()[10..],
        [
            "chat.update",
            "chat.postMessage(thread)",
            "pagerduty:resolve"
        ]
    );
    let reqs = m.fakes.requests();
    let last = reqs[11].body["text"].as_str().unwrap();
    assert!(
        last.contains("resolved: all symptoms clear; recovered in"),
        "{last}"
    );
    assert!(last.contains("within RTO 15m"), "{last}");
    // Once resolved, no decision buttons: only the checklist's.
    let resolved = blocks_text(&reqs[10].body);
    for gone in ["acknowledge", "approve", "reject", "escalate", "resolve"] {
        assert!(
            !resolved.contains(&format!("\"action_id\":\"{gone}\"")),
            "no {gone} button once resolved: {resolved}"
        );
    }
    assert_eq!(resolved.matches("\"action_id\":\"tick:").count(), 22);
    for r in reqs.iter().filter(|r| r.what == "pagerduty") {
        assert_eq!(r.body["dedup_key"], format!("medic-{id}-app-down"));
    }
    for r in reqs.iter().filter(|r| r.what == "chat.update") {
        assert_eq!(
            r.body["ts"], "1700000000.000001",
            "the first message, updated in place"
        );
    }
    let timeline = m.store.timeline(id).await.unwrap();
    let decisions: Vec<&str> = timeline
        .iter()
        .filter(|e| e.kind == "decision")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        decisions,
        [
            "step failover approved by <@U0LEAD> via slack",
            "acknowledged by <@U0SOMEONE> via slack; escalation stops"
        ]
    );
    let attempts = m.store.incident_attempts(id).await.unwrap();
    let steps: Vec<(&str, &str)> = attempts
        .iter()
        .map(|a| {
            (
                a.step.as_str(),
                a.outcome.map_or("in flight", |o| o.as_str()),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("restart-app", "failed"),
            ("restart-app", "refused"), // its limit: 1 attempt per hour
            ("failover", "succeeded"),
        ]
    );
    m.stop().await;
}

/// Bad input: forged, expired and replayed signatures, malformed payloads,
/// unknown action ids, clicks by unauthorised users, API calls without or
/// with a wrong token, unknown incidents and steps: each refused with a
/// clear answer, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let m = start().await;
    let id = m.incident_id().await;
    m.wait_requests(3).await;
    let before = (
        m.store.timeline(id).await.unwrap(),
        m.store.outbox_of(id).await.unwrap(),
        m.store.incident(id).await.unwrap(),
    );
    let now = chrono::Utc::now().timestamp();
    let approve = click_body("U0APPROVER", "approve", &format!("{id}:failover"));

    // Forged: signed with another secret.
    let (code, body) = post_signed(&m.url, &approve, "not-the-secret", now).await;
    assert_eq!((code, body.as_str()), (401, "signature does not match\n"));
    // Tampered: the body changed after signing.
    let sig = sign(SECRET, &now.to_string(), approve.as_bytes());
    let (code, _) = post_raw(
        &m.url,
        &approve.replace("approve", "reject"),
        &now.to_string(),
        &sig,
    )
    .await;
    assert_eq!(code, 401);
    // Expired: correctly signed 301 s ago.
    let (code, body) = post_signed(&m.url, &approve, SECRET, now - 301).await;
    assert_eq!(code, 401);
    assert!(body.contains("window: 300 s"), "{body}");
    // Missing headers.
    let r = reqwest::Client::new()
        .post(format!("{}/slack/interactions", m.url))
        .body(approve.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.text().await.unwrap(),
        "missing header X-Slack-Request-Timestamp\n"
    );
    // Malformed payloads (correctly signed): not a form, no payload, not
    // JSON, the SDK's empty sample (no user), an unknown action id, a value
    // naming no incident.
    let fixture = std::fs::read_to_string(
        "/work/shared/fixtures/slack/java-slack-sdk/BlockActionPayload.json",
    )
    .unwrap();
    let sample = serde_urlencoded::to_string([("payload", fixture)]).unwrap();
    let unknown = click_body("U0APPROVER", "delete-everything", &id.to_string());
    let no_incident = click_body("U0APPROVER", "acknowledge", "abc");
    let cases = [
        ("token=x", "body has no `payload` field"),
        ("payload=%7Bnot+json", "payload is not JSON"),
        (sample.as_str(), "payload has no user.id"),
        (unknown.as_str(), "unknown action id \"delete-everything\""),
        (
            no_incident.as_str(),
            "action value \"abc\" does not name an incident",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let (code, text) = post_signed(&m.url, body, SECRET, now + i as i64).await;
        assert_eq!(code, 400, "{want}: {text}");
        assert!(text.starts_with(want), "{want}: {text}");
    }
    // Replayed: the very same signed request twice.
    let (code, _) = post_signed(&m.url, &unknown, SECRET, now - 5).await;
    assert_eq!(code, 400);
    let (code, body) = post_signed(&m.url, &unknown, SECRET, now - 5).await;
    assert_eq!(
        (code, body.as_str()),
        (401, "signature already used (replayed request)\n")
    );

    // An unauthorised user: answered (Slack needs 200), refused in an
    // ephemeral message, nothing decided.
    m.fakes.clear();
    assert_eq!(
        click(&m, "U0INTRUDER", "approve", &format!("{id}:failover")).await,
        200
    );
    assert_eq!(
        click(&m, "U0INTRUDER", "resolve", &id.to_string()).await,
        200
    );
    m.wait_requests(4).await;
    let mut eph: Vec<String> = m
        .fakes
        .requests()
        .iter()
        .filter(|r| r.what == "chat.postEphemeral")
        .map(|r| format!("{} {}", r.body["user"], r.body["text"]))
        .collect();
    eph.sort();
    assert_eq!(
        eph,
        [
            "\"U0INTRUDER\" \"Sorry <@U0INTRUDER>, only approvers may approve incidents. Nothing was changed.\"",
            "\"U0INTRUDER\" \"Sorry <@U0INTRUDER>, only approvers may resolve incidents. Nothing was changed.\"",
        ]
    );

    // The incidents API.
    let ok_body = r#"{"by": "carol", "step": "failover", "note": "go"}"#;
    let (code, v) = api(&m, &id.to_string(), "approve", None, ok_body).await;
    assert_eq!(code, 401, "{v}");
    let (code, _) = api(&m, &id.to_string(), "approve", Some("wrong"), ok_body).await;
    assert_eq!(code, 401);
    let t = Some(API_TOKEN);
    let (code, v) = api(&m, &id.to_string(), "approve", t, "{\"by\": 3}").await;
    assert_eq!(code, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("body: invalid type"),
        "{v}"
    );
    let (code, v) = api(
        &m,
        &id.to_string(),
        "approve",
        t,
        r#"{"by": "carol", "stp": "x"}"#,
    )
    .await;
    assert_eq!(code, 400, "unknown fields are refused: {v}");
    let (code, v) = api(&m, "999999", "approve", t, ok_body).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (404, Some("incident 999999 not found"))
    );
    let (code, _) = api(&m, "seven", "approve", t, ok_body).await;
    assert_eq!(code, 400);
    let (code, v) = api(&m, &id.to_string(), "delete", t, ok_body).await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = api(
        &m,
        &id.to_string(),
        "approve",
        t,
        r#"{"by": "carol", "step": "restart-app"}"#,
    )
    .await;
    assert_eq!(code, 409);
    assert_eq!(
        v["error"],
        "step \"restart-app\" is not awaiting approval (step \"failover\" is)"
    );
    let (code, _) = api(&m, &id.to_string(), "approve", t, r#"{"by": "  "}"#).await;
    assert_eq!(code, 400);

    // Nothing changed.
    let after = (
        m.store.timeline(id).await.unwrap(),
        m.store.outbox_of(id).await.unwrap(),
        m.store.incident(id).await.unwrap(),
    );
    assert_eq!(before, after);

    // A good call, then the same again.
    let (code, v) = api(&m, &id.to_string(), "approve", t, ok_body).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v,
        json!({ "ok": true, "first": true, "message": "step failover approved by carol via api: go" })
    );
    let (code, v) = api(&m, &id.to_string(), "approve", t, ok_body).await;
    assert_eq!(code, 200);
    assert_eq!(v["first"], false);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("step failover already approved by carol"),
        "{v}"
    );
    m.stop().await;
}

/// Both signing vectors of the shared fixture verify (and fail once a
/// byte changes or the window has passed).
#[test]
fn the_fixture_signing_vectors_verify() {
    use medic::server::slack::verify;
    let text = std::fs::read_to_string("/work/shared/fixtures/slack/signing-vectors.json").unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let vectors = v["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    for vec in vectors {
        let s = |k: &str| vec[k].as_str().unwrap();
        let ts: i64 = s("timestamp").parse().unwrap();
        assert_eq!(
            sign(s("signing_secret"), s("timestamp"), s("body").as_bytes()),
            s("expected_signature")
        );
        let ok = verify(
            s("signing_secret"),
            Some(s("timestamp")),
            Some(s("expected_signature")),
            s("body").as_bytes(),
            ts + 2,
        );
        assert_eq!(ok, Ok(()), "{}", s("name"));
        let tampered = format!("{}x", s("body"));
        assert!(
            verify(
                s("signing_secret"),
                Some(s("timestamp")),
                Some(s("expected_signature")),
                tampered.as_bytes(),
                ts
            )
            .is_err()
        );
        assert!(
            verify(
                s("signing_secret"),
                Some(s("timestamp")),
                Some(s("expected_signature")),
                s("body").as_bytes(),
                ts + 301
            )
            .is_err()
        );
    }
}

/// PagerDuty: 500 and 429 are retried (the 429 after its Retry-After),
/// with the same dedup_key; a 400 is never retried. Slack: a 429 is
/// retried after Retry-After. Webhooks carry the outbox key as
/// Idempotency-Key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_status_codes_and_retry_after() {
    let (fakes, base) = Fakes::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
notifiers:
  pd:
    pagerduty: {{ routing_key: {{ file: {pd} }}, url: "{base}/v2/enqueue" }}
  pd-bad:
    pagerduty: {{ routing_key: {{ file: {pd} }}, url: "{base}/v2/enqueue" }}
  chat:
    slack: {{ token: {{ file: {slack} }}, channel: C1, api_url: "{base}/api" }}
  hook:
    webhook: {{ url: "{base}/hook" }}
escalation:
  default:
    levels:
      - {{ after: 0s, notify: [pd, chat, hook] }}
      - {{ after: 6s, notify: [pd-bad] }}
"#,
        pd = secret_file(dir.path(), "pd", "R0UTINGKEY"),
        slack = secret_file(dir.path(), "slack", "xoxb-test"),
    );
    let config = medic::config::load_str("medic.yaml", &config).unwrap();
    let store = Arc::new(MemoryStore::new());
    let pager = Arc::new(medic::page::Pager::new(
        &config,
        store.clone(),
        Clock::system(),
    ));
    let stop = CancellationToken::new();
    tokio::spawn(pager.clone().run(stop.clone()));
    fakes.script("pagerduty", &[(500, None), (429, Some(2))]);
    fakes.script("chat.postMessage", &[(429, Some(1))]);
    let (inc, _) = store
        .open_incident(medic::store::NewIncident {
            scenario: "x".into(),
            instance: String::new(),
            severity: "warning".into(),
            summary: "X down".into(),
            at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    store
        .set_state(inc.id, IncidentState::Escalated, chrono::Utc::now())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    pager
        .escalate(&inc, "default", chrono::Utc::now(), true)
        .await
        .unwrap();
    // The second level's PagerDuty answers 400: after the first level's
    // three tries (500, 429, 202).
    let f = fakes.clone();
    common::eventually(Duration::from_secs(20), "three PagerDuty tries", || {
        let f = f.clone();
        async move {
            f.requests()
                .iter()
                .filter(|r| r.what == "pagerduty")
                .count()
                >= 3
        }
    })
    .await;
    fakes.script("pagerduty", &[(400, None)]);
    let s = store.clone();
    common::eventually(Duration::from_secs(20), "every page settled", || {
        let s = s.clone();
        async move {
            let o = s.outbox_of(1).await.unwrap();
            o.iter().filter(|e| e.kind == "page").count() == 4
                && o.iter().all(|e| e.state != OutboxState::Pending)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reqs = fakes.requests();
    let pd: Vec<_> = reqs.iter().filter(|r| r.what == "pagerduty").collect();
    assert_eq!(pd.len(), 4, "500, 429, 202, then one 400 never retried");
    assert!(
        pd.iter()
            .all(|r| r.body["dedup_key"] == format!("medic-{}-x", inc.id))
    );
    assert_eq!(pd[0].body["payload"]["severity"], "warning");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 2 respected"
    );
    let posts = reqs
        .iter()
        .filter(|r| r.what == "chat.postMessage" && r.body["thread_ts"].is_null())
        .count();
    assert_eq!(posts, 2, "one 429, then the message (once)");
    let hook = reqs.iter().find(|r| r.what == "hook").unwrap();
    assert_eq!(
        hook.headers["idempotency-key"],
        format!("{}:page:e0:r0:l1:hook", inc.id)
    );
    assert_eq!(hook.body["kind"], "page");
    let outbox = store.outbox_of(inc.id).await.unwrap();
    let bad = outbox.iter().find(|e| e.notifier == "pd-bad").unwrap();
    assert_eq!(bad.state, OutboxState::Failed);
    assert_eq!(bad.attempts, 1);
    assert!(bad.detail.contains("HTTP 400"), "{}", bad.detail);
    let good = outbox
        .iter()
        .find(|e| e.notifier == "pd" && e.kind == "page")
        .unwrap();
    assert_eq!((good.state, good.attempts), (OutboxState::Sent, 3));
    let timeline = store.timeline(inc.id).await.unwrap();
    assert!(
        timeline.iter().any(|e| e
            .message
            .starts_with("paging level 2 via pd-bad failed: PagerDuty: HTTP 400")),
        "{timeline:#?}"
    );
    stop.cancel();
}

/// Benchmark (run with `--ignored --nocapture`): 200 concurrent, correctly
/// signed button clicks on one incident; the time until each is answered
/// (the decision itself runs after the answer). Three rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_slack_interaction_ack_latency_under_200_concurrent_clicks() {
    let m = start().await;
    let id = m.incident_id().await;
    m.wait_requests(3).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let mut all = Vec::new();
    // Round 0 opens the connections (Slack keeps them alive too); rounds
    // 1-3 are measured.
    for round in 0..4 {
        let now = chrono::Utc::now().timestamp();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let body = click_body(&format!("U{round}X{i:04}"), "acknowledge", &id.to_string());
            let sig = sign(SECRET, &now.to_string(), body.as_bytes());
            let (client, url) = (client.clone(), m.url.clone());
            tasks.push(tokio::spawn(async move {
                let t = std::time::Instant::now();
                let r = client
                    .post(format!("{url}/slack/interactions"))
                    .header("x-slack-request-timestamp", now.to_string())
                    .header("x-slack-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                t.elapsed()
            }));
        }
        for t in tasks {
            let took = t.await.unwrap();
            if round > 0 {
                all.push(took);
            }
        }
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "slack interaction ack latency, 3 rounds x 200 concurrent clicks: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all.last().unwrap().as_secs_f64() * 1e3
    );
    // The same clicks one at a time: the cost of one answer.
    let mut one = Vec::new();
    for i in 0..100 {
        let now = chrono::Utc::now().timestamp();
        let body = click_body(&format!("U9S{i:04}"), "acknowledge", &id.to_string());
        let sig = sign(SECRET, &now.to_string(), body.as_bytes());
        let t = std::time::Instant::now();
        let r = client
            .post(format!("{}/slack/interactions", m.url))
            .header("x-slack-request-timestamp", now.to_string())
            .header("x-slack-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        one.push(t.elapsed());
    }
    one.sort();
    println!(
        "one click at a time: p50 {:.2} ms, p99 {:.2} ms",
        one[50].as_secs_f64() * 1e3,
        one[99].as_secs_f64() * 1e3
    );
    // Exactly one acknowledgement was recorded, by the first clicker.
    let timeline = m.store.timeline(id).await.unwrap();
    assert_eq!(timeline.iter().filter(|e| e.kind == "decision").count(), 1);
    m.stop().await;
}

/// A crash right after Slack took a post but before medic stored its ts:
/// the retried page finds the message (and its thread reply) by their
/// metadata and posts neither again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_reply_was_lost_is_found_not_posted_again() {
    let (fakes, base) = Fakes::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "notifiers:\n  chat:\n    slack: {{ token: {{ file: {} }}, channel: C1, api_url: \"{base}/api\" }}\n\
         escalation:\n  default:\n    levels:\n      - {{ after: 0s, notify: [chat] }}\n",
        secret_file(dir.path(), "slack", "xoxb-test"),
    );
    let config = medic::config::load_str("medic.yaml", &config).unwrap();
    let store = Arc::new(MemoryStore::new());
    let (inc, _) = store
        .open_incident(medic::store::NewIncident {
            scenario: "x".into(),
            instance: String::new(),
            severity: "high".into(),
            summary: "X down".into(),
            at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    // What the crashed run left: the page entry, one attempt started...
    let (page, _) = store
        .outbox_enqueue(medic::store::NewOutbox {
            incident_id: inc.id,
            key: format!("{}:page:e0:r0:l1:chat", inc.id),
            notifier: "chat".into(),
            kind: "page".into(),
            due_at: chrono::Utc::now(),
            payload: json!({ "level": 1, "round": 0, "seq": 0, "text": "level 1 paged" }),
        })
        .await
        .unwrap();
    store
        .outbox_mark(
            page.id,
            medic::store::OutboxMark {
                state: OutboxState::Pending,
                attempts: 1,
                due_at: page.due_at,
                detail: "sending".into(),
                at: chrono::Utc::now(),
            },
        )
        .await
        .unwrap();
    // ...and what Slack got before the crash: the message and its reply.
    let c = reqwest::Client::new();
    let top: Value = c
        .post(format!("{base}/api/chat.postMessage"))
        .bearer_auth("xoxb-test")
        .json(&json!({ "channel": "C1", "text": "x", "metadata": { "event_type": "medic_incident", "event_payload": { "incident": inc.id } } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    c.post(format!("{base}/api/chat.postMessage"))
        .bearer_auth("xoxb-test")
        .json(&json!({ "channel": "C1", "thread_ts": top["ts"], "text": "x", "metadata": { "event_type": "medic_notice", "event_payload": { "key": page.key } } }))
        .send()
        .await
        .unwrap();
    fakes.clear();
    let pager = Arc::new(medic::page::Pager::new(
        &config,
        store.clone(),
        Clock::system(),
    ));
    let stop = CancellationToken::new();
    tokio::spawn(pager.clone().run(stop.clone()));
    let s = store.clone();
    common::eventually(Duration::from_secs(10), "the page settled", || {
        let s = s.clone();
        async move { s.outbox_pending().await.unwrap().is_empty() }
    })
    .await;
    assert_eq!(
        fakes.shorts(),
        [
            "conversations.history",
            "chat.update",
            "conversations.replies"
        ],
        "found, updated in place, reply already there: nothing posted"
    );
    let refs = store.page_refs(inc.id).await.unwrap();
    assert_eq!(refs["chat"]["ts"], top["ts"]);
    let entry = &store.outbox_of(inc.id).await.unwrap()[0];
    assert_eq!((entry.state, entry.attempts), (OutboxState::Sent, 2));
    stop.cancel();
}

/// The post-recovery checklist of a resolved incident: its items are
/// ticked through the API (the API token, like every mutating route) and
/// with the Slack message's buttons (anyone in the channel), shown in the
/// incidents API's JSON and in the updated Slack message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checklist_is_ticked_through_the_api_and_slack_buttons() {
    let m = start().await;
    let id = m.incident_id().await;
    m.wait_requests(3).await;
    // The app comes back: the incident resolves.
    let _app = std::net::TcpListener::bind(("127.0.0.1", m.app_port)).unwrap();
    let s = m.store.clone();
    common::eventually(Duration::from_secs(20), "the incident resolved", || {
        let s = s.clone();
        async move { s.incident(id).await.unwrap().unwrap().state == IncidentState::Resolved }
    })
    .await;
    let body = r#"{"by": "alice"}"#;
    let sid = id.to_string();
    assert_eq!(api(&m, &sid, "checklist/1.2", None, body).await.0, 401);
    assert_eq!(
        api(&m, &sid, "checklist/1.2", Some("wrong"), body).await.0,
        401
    );
    let (code, v) = api(&m, &sid, "checklist/9.9", Some(API_TOKEN), body).await;
    assert_eq!(code, 404, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("unknown checklist item \"9.9\""),
        "{v}"
    );
    let (code, v) = api(
        &m,
        &sid,
        "checklist/1.2",
        Some(API_TOKEN),
        r#"{"done": true}"#,
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(
        api(&m, "999", "checklist/1.2", Some(API_TOKEN), body)
            .await
            .0,
        404
    );
    let (code, v) = api(&m, &sid, "checklist/1.2", Some(API_TOKEN), body).await;
    assert_eq!((code, &v["first"]), (200, &Value::Bool(true)), "{v}");
    assert_eq!(
        v["message"],
        "checklist 1.2 Database queries responding normally ticked by alice via api"
    );
    let (_, again) = api(
        &m,
        &sid,
        "checklist/1.2",
        Some(API_TOKEN),
        r#"{"by": "bob"}"#,
    )
    .await;
    assert_eq!(again["first"], false, "{again}");

    // A button of the resolved incident's message, clicked by someone who
    // is not an approver.
    assert_eq!(
        click(&m, "U0SOMEONE", "tick:2.2", &format!("{id}:2.2")).await,
        200
    );
    // Decided off the request path: wait for the redrawn message.
    let f = m.fakes.clone();
    common::eventually(
        Duration::from_secs(20),
        "the message redrawn with 2.2 ticked",
        || {
            let f = f.clone();
            async move {
                f.requests().iter().any(|r| {
                    r.what == "chat.update"
                        && blocks_text(&r.body).contains("☑ 2.2 Root cause identified")
                })
            }
        },
    )
    .await;
    let f = m.fakes.clone();
    common::eventually(Duration::from_secs(20), "the tick in the thread", || {
        let f = f.clone();
        async move {
            f.requests().iter().any(|r| {
                r.what == "chat.postMessage"
                    && r.body["text"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("checklist 2.2"))
            })
        }
    })
    .await;
    // A button whose value names another item is refused.
    assert_eq!(
        click(&m, "U0SOMEONE", "tick:2.2", &format!("{id}:2.3")).await,
        400
    );

    let detail: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/incidents/{id}", m.url))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticked: Vec<(String, String)> = detail["checklist"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["done"] == true)
        .map(|i| {
            (
                i["id"].as_str().unwrap().into(),
                i["by"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        ticked,
        [
            ("1.2".into(), "alice".into()),
            ("2.2".into(), "<@U0SOMEONE>".into())
        ]
    );
    assert_eq!(detail["checklist"].as_array().unwrap().len(), 22);

    // The message was redrawn with the checklist: ticked items say who,
    // open ones keep their buttons.
    let reqs = m.fakes.requests();
    let last = reqs.iter().rev().find(|r| r.what == "chat.update").unwrap();
    let blocks = blocks_text(&last.body);
    assert!(blocks.contains("Post-recovery checklist"), "{blocks}");
    assert!(
        blocks.contains("☑ 2.2 Root cause identified — by <@U0SOMEONE>"),
        "{blocks}"
    );
    assert!(
        blocks.contains("☑ 1.2 Database queries responding normally — by alice"),
        "{blocks}"
    );
    assert!(blocks.contains("\"action_id\":\"tick:1.1\""), "{blocks}");
    assert!(!blocks.contains("\"action_id\":\"tick:2.2\""), "{blocks}");
    assert!(
        !blocks.contains("\"action_id\":\"acknowledge\""),
        "resolved: {blocks}"
    );
    let thread = reqs
        .iter()
        .rev()
        .find(|r| {
            r.what == "chat.postMessage"
                && r.body["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("checklist 2.2"))
        })
        .unwrap();
    let text = thread.body["text"].as_str().unwrap();
    let (first, entry) = text.split_once('\n').unwrap();
    assert_eq!(
        first,
        "checklist 2.2 Root cause identified ticked by &lt;@U0SOMEONE&gt; via slack"
    );
    assert!(
        entry.ends_with(
            " checklist: checklist 2.2 Root cause identified ticked by &lt;@U0SOMEONE&gt; via slack"
        ),
        "the tick's timeline entry goes to the thread: {text}"
    );
    m.stop().await;
}
