//! The public status page and its hosted mirror, on a running daemon: a
//! component degraded as soon as an incident opens on it (with the default
//! message), on-call's update posted through the API or Slack's modal,
//! the exact Atlassian Statuspage requests for open → update → resolve
//! (recording fake), a creation whose answer was lost (dropped, or medic
//! killed waiting for it) adopted rather than made twice, and the page in
//! headless Chromium with nothing internal on it (screenshot:
//! `target/artifacts/public-status-page.png`).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::browser::Driver;
use common::fake_paging::{Fakes, Lost, Req, post_click};
use medic::clock::Clock;
use medic::store::{MemoryStore, OutboxState, SqliteStore, Store};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const API_TOKEN: &str = "public-api-token-0123456789";
const SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const ONCALL: &str = "U0ONCALL";
/// The Statuspage creation, as [`Req::short`] names it (for scripts).
const CREATE: &str = "statuspage:POST /v1/pages/page1/incidents";

struct Medic {
    store: Arc<dyn Store>,
    config: medic::config::Config,
    rule: String,
    fakes: Fakes,
    url: String,
    public: String,
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

/// The daemon with the app-down rule (critical, `for: 0s`, a restart that
/// fails), its component `Patient portal` on Statuspage as `cmpPortal`,
/// and `Records` (nothing open on it); Slack (with its app) when `slack`.
async fn start(slack: bool) -> Medic {
    start_with(slack, "critical", Arc::new(MemoryStore::new()), |_| {}).await
}

/// [`start`] with the rule's severity set to `severity`, on `store`, the
/// fakes prepared by `prepare` (scripted answers, lost answers) before
/// the incident can open.
async fn start_with(
    slack: bool,
    severity: &str,
    store: Arc<dyn Store>,
    prepare: impl FnOnce(&Fakes),
) -> Medic {
    let (fakes, base) = Fakes::start();
    prepare(&fakes);
    let dir = tempfile::tempdir().unwrap();
    let (port, public) = (common::free_port(), common::free_port());
    let app_port = common::free_port();
    let slack_config = if slack {
        format!(
            "  oncall:\n    slack: {{ token: {{ file: {} }}, channel: C0INCIDENT, api_url: \"{base}/api\" }}\n\
             slack: {{ signing_secret: {{ file: {} }}, approvers: [{ONCALL}] }}\n",
            secret_file(dir.path(), "slack", "xoxb-test"),
            secret_file(dir.path(), "signing", SIGNING),
        )
    } else {
        String::new()
    };
    let notify = if slack { "[log, oncall]" } else { "[log]" };
    let config = format!(
        r#"
mode: enforce
http:
  listen: 127.0.0.1:{port}
  api_token: {{ file: {api} }}
public_status:
  listen: 127.0.0.1:{public}
  title: KeneyApp status
  components:
    Patient portal: {{ scenarios: [app-down] }}
    Records: {{ scenarios: [records-down] }}
  statuspage:
    page_id: page1
    api_key: {{ file: {sp} }}
    url: "{base}"
    components: {{ Patient portal: cmpPortal, Records: cmpRecords }}
escalation:
  default:
    levels:
      - {{ after: 0s, notify: {notify}, name: primary on-call }}
notifiers:
  log: {{ log: {{}} }}
{slack_config}"#,
        api = secret_file(dir.path(), "api", API_TOKEN),
        sp = secret_file(dir.path(), "sp", "SPKEY-0123"),
    );
    let config = medic::config::load_str("medic.yaml", &config).unwrap();
    let rule = common::app_down_rule(app_port, "15m", "200ms", "")
        .replace("severity: critical", &format!("severity: {severity}"));
    let (shutdown, task) = run(&config, &rule, store.clone());
    let url = format!("http://127.0.0.1:{port}");
    common::eventually(Duration::from_secs(10), "medic's HTTP server", || async {
        reqwest::get(format!("{url}/healthz")).await.is_ok()
    })
    .await;
    Medic {
        store,
        config,
        rule,
        fakes,
        url,
        public: format!("http://127.0.0.1:{public}"),
        app_port,
        shutdown,
        task,
        _dir: dir,
    }
}

/// Runs the daemon on `config` with the one rule `rule` until the token
/// is cancelled.
fn run(
    config: &medic::config::Config,
    rule: &str,
    store: Arc<dyn Store>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let sc = medic::rules::load_str("rules/app.yaml", rule, config).unwrap();
    let (runtimes, refused) = medic::daemon::build_runtimes(config, vec![sc]);
    assert!(refused.is_empty());
    let shutdown = CancellationToken::new();
    let (st, c) = (shutdown.clone(), config.clone());
    let task = tokio::spawn(async move {
        medic::daemon::run_with(&c, runtimes, 0, store, Clock::system(), st).await
    });
    (shutdown, task)
}

impl Medic {
    async fn incident_id(&self) -> i64 {
        let s = self.store.clone();
        common::eventually(Duration::from_secs(10), "an open incident", || {
            let s = s.clone();
            async move { !s.open_incidents().await.unwrap().is_empty() }
        })
        .await;
        self.store.open_incidents().await.unwrap()[0].id
    }

    /// medic's reference on incident `id`'s Statuspage incident: its
    /// `metadata`, as Statuspage's API shapes it.
    async fn reference(&self, id: i64) -> Value {
        let opened = self.store.incident(id).await.unwrap().unwrap().opened_at;
        json!({ "medic": {
            "incident": id.to_string(),
            "opened_at": opened.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }})
    }

    /// Incident `id`'s Statuspage outbox entry for `event`, once sent.
    async fn public_entry(&self, id: i64, event: &str) -> medic::store::OutboxEntry {
        let (s, key) = (self.store.clone(), format!("{id}:public:{event}"));
        common::eventually(Duration::from_secs(20), &key, || {
            let (s, key) = (s.clone(), key.clone());
            async move {
                s.outbox_of(id)
                    .await
                    .unwrap()
                    .iter()
                    .any(|e| e.key == key && e.state == OutboxState::Sent)
            }
        })
        .await;
        let all = self.store.outbox_of(id).await.unwrap();
        all.into_iter().find(|e| e.key == key).unwrap()
    }

    fn statuspage(&self) -> Vec<Req> {
        self.fakes
            .requests()
            .into_iter()
            .filter(|r| r.what == "statuspage")
            .collect()
    }

    async fn wait_statuspage(&self, n: usize) -> Vec<Req> {
        let f = self.fakes.clone();
        common::eventually(
            Duration::from_secs(20),
            &format!("{n} Statuspage requests (so far: {:?})", f.shorts()),
            || {
                let f = f.clone();
                async move {
                    f.requests()
                        .iter()
                        .filter(|r| r.what == "statuspage")
                        .count()
                        >= n
                }
            },
        )
        .await;
        self.statuspage()
    }

    async fn page(&self) -> (u16, String) {
        let r = reqwest::get(format!("{}/", self.public)).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post_update(&self, id: i64, token: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/incidents/{id}/status-update", self.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// Stops the daemon and starts it again on `store` (the same file,
    /// opened anew), with the same config and fakes.
    async fn restart(mut self, store: Arc<dyn Store>) -> Medic {
        self.shutdown.cancel();
        (&mut self.task).await.unwrap().unwrap();
        let (shutdown, task) = run(&self.config, &self.rule, store.clone());
        let url = self.public.clone();
        common::eventually(Duration::from_secs(10), "the public page again", || {
            let url = url.clone();
            async move { reqwest::get(format!("{url}/")).await.is_ok() }
        })
        .await;
        Medic {
            store,
            shutdown,
            task,
            ..self
        }
    }
}

/// What must never be on the public page: the scenario, its summary, the
/// step, hosts and ports, the timeline's words, who wrote the update.
fn assert_nothing_internal(text: &str, app_port: u16) {
    for internal in [
        "app-down",
        "App unreachable",
        "restart-app",
        "127.0.0.1",
        &app_port.to_string(),
        "escalat",
        "timeline",
        "symptom",
        "app_down",
        "critical",
        "alice",
        "U0ONCALL",
        "remediat",
        "medic",
    ] {
        assert!(
            !text.to_lowercase().contains(&internal.to_lowercase()),
            "{internal:?} on the public page: {text}"
        );
    }
}

/// The update body every test posts: markup in it must arrive as text.
const UPDATE: &str = "We found the cause: <b>a bad deploy</b>. A fix is rolling out.";

/// Open → update → resolve reach Statuspage as exactly these requests,
/// with the key as `OAuth`, through the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuspage_hears_open_update_and_resolve_as_exact_requests() {
    let m = start(false).await;
    let id = m.incident_id().await;

    // Degraded at once, with the default words, before anyone wrote any.
    let (code, html) = m.page().await;
    assert_eq!(code, 200);
    assert!(
        html.contains("Patient portal</span><span class=\"state\">Major outage"),
        "{html}"
    );
    assert!(
        html.contains("Records</span><span class=\"state\">Operational"),
        "{html}"
    );
    assert!(
        html.contains("We are investigating an issue affecting Patient portal."),
        "{html}"
    );

    let reqs = m.wait_statuspage(1).await;
    assert_eq!(reqs[0].path, "POST /v1/pages/page1/incidents");
    assert_eq!(reqs[0].headers["authorization"], "OAuth SPKEY-0123");
    assert!(reqs[0].headers["content-type"].starts_with("application/json"));
    assert_eq!(
        reqs[0].body,
        json!({ "incident": {
            "name": "Major outage: Patient portal",
            "status": "investigating",
            "body": "We are investigating an issue affecting Patient portal. The next update will follow here.",
            "component_ids": ["cmpPortal"],
            "components": { "cmpPortal": "major_outage" },
            "metadata": m.reference(id).await,
        }})
    );

    // Only the API token posts; the body is checked.
    let update = json!({ "by": "alice", "status": "identified", "body": UPDATE });
    assert_eq!(m.post_update(id, "wrong", update.clone()).await.0, 401);
    let (code, v) = m
        .post_update(
            id,
            API_TOKEN,
            json!({ "by": "alice", "status": "resolved", "body": "x" }),
        )
        .await;
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("investigating, identified, monitoring"),
        "{v}"
    );
    // A padded status is refused, as the schema's pattern refuses it.
    let (code, v) = m
        .post_update(
            id,
            API_TOKEN,
            json!({ "by": "alice", "status": " identified\n", "body": "x" }),
        )
        .await;
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("is not one of"),
        "{v}"
    );
    assert_eq!(
        m.post_update(id + 100, API_TOKEN, update.clone()).await.0,
        404
    );
    let (code, v) = m.post_update(id, API_TOKEN, update).await;
    assert_eq!((code, &v), (200, &json!({ "ok": true })));

    let reqs = m.wait_statuspage(2).await;
    assert_eq!(reqs[1].path, "PATCH /v1/pages/page1/incidents/sp1");
    assert_eq!(reqs[1].headers["authorization"], "OAuth SPKEY-0123");
    assert_eq!(
        reqs[1].body,
        json!({ "incident": {
            "name": "Major outage: Patient portal",
            "status": "identified",
            "body": UPDATE,
            "component_ids": ["cmpPortal"],
            "components": { "cmpPortal": "major_outage" },
        }})
    );
    // On the timeline, with who wrote it; on the page, escaped, without.
    let timeline = m.store.timeline(id).await.unwrap();
    let entry = timeline.iter().find(|e| e.kind == "public-update").unwrap();
    assert_eq!(entry.data["by"], "alice");
    assert_eq!(entry.data["body"], UPDATE);
    let (_, html) = m.page().await;
    assert!(html.contains("Identified</span> — <span class=\"body\">We found the cause: &lt;b&gt;a bad deploy&lt;/b&gt;."), "{html}");
    assert_nothing_internal(&html, m.app_port);

    // The app comes back: resolved, operational again.
    let listener = std::net::TcpListener::bind(("127.0.0.1", m.app_port)).unwrap();
    let reqs = m.wait_statuspage(3).await;
    assert_eq!(reqs[2].path, "PATCH /v1/pages/page1/incidents/sp1");
    assert_eq!(
        reqs[2].body,
        json!({ "incident": {
            "name": "Major outage: Patient portal",
            "status": "resolved",
            "body": "This incident has been resolved: Patient portal is operating normally.",
            "component_ids": ["cmpPortal"],
            "components": { "cmpPortal": "operational" },
        }})
    );
    let (_, html) = m.page().await;
    assert!(
        html.contains("Patient portal</span><span class=\"state\">Operational"),
        "{html}"
    );
    assert!(html.contains("Recently resolved"), "{html}");
    // A resolved incident takes no more updates.
    let again = json!({ "by": "alice", "status": "monitoring", "body": "late" });
    assert_eq!(m.post_update(id, API_TOKEN, again).await.0, 409);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A first attempt looks for nothing: no GET on the happy path.
    assert_eq!(
        m.fakes.shorts(),
        [
            "statuspage:POST /v1/pages/page1/incidents",
            "statuspage:PATCH /v1/pages/page1/incidents/sp1",
            "statuspage:PATCH /v1/pages/page1/incidents/sp1",
        ]
    );
    assert_eq!(m.fakes.statuspage_incidents().len(), 1);
    drop(listener);
    m.stop().await;
}

/// Statuspage answers 503 twice: the outbox retries the creation, and the
/// update waits behind it (one incident, never a PATCH before its POST).
/// Each retry first looks among the unresolved incidents for the one a
/// lost answer may hide (there is none: a 503 created nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_statuspage_is_retried_and_the_update_waits_for_the_creation() {
    let failing = [(503, Some(1)), (503, Some(1))];
    let m = start_with(false, "critical", Arc::new(MemoryStore::new()), |f| {
        f.script(CREATE, &failing)
    })
    .await;
    let id = m.incident_id().await;
    let update =
        json!({ "by": "alice", "status": "monitoring", "body": "A fix is out; we are watching." });
    assert_eq!(m.post_update(id, API_TOKEN, update).await.0, 200);
    let reqs = m.wait_statuspage(6).await;
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "POST /v1/pages/page1/incidents",
            "GET /v1/pages/page1/incidents/unresolved",
            "POST /v1/pages/page1/incidents",
            "GET /v1/pages/page1/incidents/unresolved",
            "POST /v1/pages/page1/incidents",
            "PATCH /v1/pages/page1/incidents/sp1",
        ]
    );
    assert_eq!(reqs[5].body["incident"]["status"], "monitoring");
    assert_eq!(m.fakes.statuspage_incidents().len(), 1);
    m.stop().await;
}

/// Regression: Statuspage created the incident but the answer was lost
/// (201, then the connection dropped), and the retry created a second
/// public incident. The retry now finds it by medic's reference among the
/// unresolved incidents and adopts it: one incident at Statuspage, and the
/// update and the resolution go to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_whose_answer_was_lost_is_adopted_not_made_twice() {
    let m = start_with(false, "critical", Arc::new(MemoryStore::new()), |f| {
        f.lose_statuspage_creations(&[Lost::Dropped])
    })
    .await;
    let id = m.incident_id().await;
    let reqs = m.wait_statuspage(2).await;
    assert_eq!(reqs[0].path, "POST /v1/pages/page1/incidents");
    assert_eq!(reqs[1].path, "GET /v1/pages/page1/incidents/unresolved");
    assert_eq!(reqs[1].headers["authorization"], "OAuth SPKEY-0123");
    let open = m.public_entry(id, "open").await;
    assert_eq!(open.detail, "adopted sp1");
    assert_eq!(open.attempts, 2);
    let timeline = m.store.timeline(id).await.unwrap();
    let note = timeline.iter().find(|t| t.kind == "public").unwrap();
    assert_eq!(
        note.message,
        "Statuspage incident sp1 adopted (investigating); an earlier attempt created it and its answer was lost"
    );

    let update = json!({ "by": "alice", "status": "identified", "body": UPDATE });
    assert_eq!(m.post_update(id, API_TOKEN, update).await.0, 200);
    let reqs = m.wait_statuspage(3).await;
    assert_eq!(reqs[2].path, "PATCH /v1/pages/page1/incidents/sp1");
    assert_eq!(reqs[2].body["incident"]["body"], UPDATE);
    let listener = std::net::TcpListener::bind(("127.0.0.1", m.app_port)).unwrap();
    let reqs = m.wait_statuspage(4).await;
    assert_eq!(reqs[3].path, "PATCH /v1/pages/page1/incidents/sp1");
    assert_eq!(reqs[3].body["incident"]["status"], "resolved");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(m.statuspage().len(), 4, "{:?}", m.fakes.shorts());

    let incidents = m.fakes.statuspage_incidents();
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    assert_eq!(incidents[0]["id"], "sp1");
    assert_eq!(incidents[0]["status"], "resolved");
    assert_eq!(incidents[0]["metadata"], m.reference(id).await);
    assert_eq!(
        incidents[0]["incident_updates"].as_array().unwrap().len(),
        3
    );
    drop(listener);
    m.stop().await;
}

/// The acceptance: the public page in a real browser shows the component
/// degraded and on-call's update, and nothing internal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_page_in_headless_chromium_shows_the_degraded_component_and_the_update_only() {
    let m = start_with(false, "warning", Arc::new(MemoryStore::new()), |_| {}).await;
    let id = m.incident_id().await;
    let update = json!({ "by": "alice", "status": "identified", "body": UPDATE });
    assert_eq!(m.post_update(id, API_TOKEN, update).await.0, 200);
    // Nothing else is served on the public listener.
    for path in [
        "/status",
        "/api/v1/incidents",
        "/metrics",
        "/healthz",
        "/slack/interactions",
    ] {
        let r = reqwest::get(format!("{}{path}", m.public)).await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    let public = m.public.clone();
    let app_port = m.app_port;
    let shot = tokio::task::spawn_blocking(move || {
        let driver = Driver::start();
        let session = driver.session();
        session.goto(&format!("{public}/"));
        assert_eq!(session.title(), "KeneyApp status");
        let components = session.text_of("#components");
        assert!(
            components.contains("Patient portal\nDegraded performance"),
            "{components}"
        );
        assert!(components.contains("Records\nOperational"), "{components}");
        assert_eq!(
            session.text_of("#summary"),
            "Some systems have degraded performance"
        );
        let current = session.text_of("#current + article");
        assert!(
            current.contains("Degraded performance: Patient portal"),
            "{current}"
        );
        assert!(
            current.contains(
                "Identified — We found the cause: <b>a bad deploy</b>. A fix is rolling out."
            ),
            "the update, as text: {current}"
        );
        let body = session.text_of("body");
        assert_nothing_internal(&body, app_port);
        session.screenshot("public-status-page.png")
    })
    .await
    .unwrap();
    println!("screenshot: {}", shot.display());
    let (_, html) = m.page().await;
    assert_nothing_internal(&html, m.app_port);
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("<link"));
    m.stop().await;
}

/// A signed interaction request, as Slack sends it.
async fn signed(url: &str, payload: Value) -> (u16, String) {
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = medic::server::slack::sign(SIGNING, &ts, body.as_bytes());
    post_click(url, &body, &ts, &sig).await
}

fn submission(user: &str, id: i64, status: &str, text: &str) -> Value {
    json!({
        "type": "view_submission",
        "user": { "id": user },
        "view": {
            "callback_id": "medic_status_update",
            "private_metadata": format!("{id}:C0INCIDENT"),
            "state": { "values": {
                "status": { "status": { "type": "static_select", "selected_option": { "value": status } } },
                "body": { "body": { "type": "plain_text_input", "value": text } },
            }},
        },
    })
}

/// Slack: *Post status update* on the incident message opens the modal
/// for an approver; its submission is the update (timeline, page,
/// Statuspage); others are refused; an empty body keeps the modal open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_post_status_update_opens_a_modal_whose_submission_is_posted() {
    let m = start(true).await;
    let id = m.incident_id().await;
    let f = m.fakes.clone();
    common::eventually(Duration::from_secs(20), "the incident message", || {
        let f = f.clone();
        async move {
            f.requests().iter().any(|r| {
                r.what == "chat.postMessage"
                    && r.body["blocks"]
                        .to_string()
                        .contains("\"action_id\":\"status_update\"")
            })
        }
    })
    .await;

    let click = |user: &str| {
        json!({
            "type": "block_actions",
            "user": { "id": user },
            "trigger_id": "13345224609.738474920.8088930838d88f008e0",
            "channel": { "id": "C0INCIDENT" },
            "actions": [{ "type": "button", "action_id": "status_update", "value": id.to_string() }],
        })
    };
    assert_eq!(signed(&m.url, click("U0OTHER")).await.0, 200);
    assert_eq!(signed(&m.url, click(ONCALL)).await.0, 200);
    common::eventually(Duration::from_secs(10), "views.open", || {
        let f = f.clone();
        async move { f.requests().iter().any(|r| r.what == "views.open") }
    })
    .await;
    let reqs = m.fakes.requests();
    let refusal = reqs
        .iter()
        .find(|r| r.what == "chat.postEphemeral")
        .unwrap();
    assert_eq!(refusal.body["user"], "U0OTHER");
    assert!(
        refusal.body["text"]
            .as_str()
            .unwrap()
            .contains("only approvers")
    );
    let open = reqs
        .iter()
        .filter(|r| r.what == "views.open")
        .collect::<Vec<_>>();
    assert_eq!(open.len(), 1, "the modal opens for the approver only");
    assert_eq!(
        open[0].body["trigger_id"],
        "13345224609.738474920.8088930838d88f008e0"
    );
    let view = &open[0].body["view"];
    assert_eq!(view["callback_id"], "medic_status_update");
    assert_eq!(view["private_metadata"], format!("{id}:C0INCIDENT"));
    assert!(
        view["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("Patient portal")
    );

    // An empty body: the modal says so and stays open; nothing posted.
    let (code, answer) = signed(&m.url, submission(ONCALL, id, "identified", "  ")).await;
    assert_eq!(code, 200);
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["response_action"], "errors");
    assert_eq!(answer["errors"]["body"], "the update's body is empty");

    let (code, _) = signed(&m.url, submission(ONCALL, id, "identified", UPDATE)).await;
    assert_eq!(code, 200);
    let s = m.store.clone();
    common::eventually(
        Duration::from_secs(10),
        "the update on the timeline",
        || {
            let s = s.clone();
            async move {
                s.timeline(id)
                    .await
                    .unwrap()
                    .iter()
                    .any(|e| e.kind == "public-update")
            }
        },
    )
    .await;
    let timeline = m.store.timeline(id).await.unwrap();
    let updates: Vec<&medic::store::TimelineEntry> = timeline
        .iter()
        .filter(|e| e.kind == "public-update")
        .collect();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].data["by"], format!("<@{ONCALL}>"));
    assert_eq!(updates[0].data["via"], "slack");
    assert_eq!(updates[0].data["status"], "identified");
    let (_, html) = m.page().await;
    assert!(
        html.contains("We found the cause: &lt;b&gt;a bad deploy&lt;/b&gt;."),
        "{html}"
    );
    let reqs = m.wait_statuspage(2).await;
    assert_eq!(reqs[1].body["incident"]["body"], UPDATE);

    // A non-approver's submission (a stale modal) posts nothing.
    let (code, _) = signed(&m.url, submission("U0OTHER", id, "monitoring", "nope")).await;
    assert_eq!(code, 200);
    common::eventually(Duration::from_secs(10), "a second refusal", || {
        let f = f.clone();
        async move {
            f.requests()
                .iter()
                .filter(|r| r.what == "chat.postEphemeral")
                .count()
                >= 2
        }
    })
    .await;
    let n = m
        .store
        .timeline(id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "public-update")
        .count();
    assert_eq!(n, 1);
    m.stop().await;
}

/// An update and the Statuspage incident id are in the store: after a
/// restart (SQLite, opened anew) the page still shows the update and the
/// resolution PATCHes the same Statuspage incident (no second one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_the_statuspage_incident_survive_a_restart() {
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("medic.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let m = start_with(false, "high", store, |_| {}).await;
    let id = m.incident_id().await;
    let update =
        json!({ "by": "alice", "status": "monitoring", "body": "A fix is out; we are watching." });
    assert_eq!(m.post_update(id, API_TOKEN, update).await.0, 200);
    m.wait_statuspage(2).await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let m = m.restart(store).await;
    let (_, html) = m.page().await;
    assert!(
        html.contains("Patient portal</span><span class=\"state\">Partial outage"),
        "{html}"
    );
    assert!(
        html.contains("Monitoring</span> — <span class=\"body\">A fix is out; we are watching."),
        "{html}"
    );
    let listener = std::net::TcpListener::bind(("127.0.0.1", m.app_port)).unwrap();
    let reqs = m.wait_statuspage(3).await;
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "POST /v1/pages/page1/incidents",
            "PATCH /v1/pages/page1/incidents/sp1",
            "PATCH /v1/pages/page1/incidents/sp1",
        ]
    );
    assert_eq!(reqs[2].body["incident"]["status"], "resolved");
    assert_eq!(
        reqs[2].body["incident"]["components"],
        json!({ "cmpPortal": "operational" })
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(m.statuspage().len(), 3, "{:?}", m.fakes.shorts());
    drop(listener);
    m.stop().await;
}

/// Regression: medic was killed (SIGKILL) after sending the creation and
/// before storing Statuspage's id; the restarted medic created a second
/// public incident. The real binary on SQLite: Statuspage creates the
/// incident and never answers, medic is killed waiting, and the restarted
/// medic finds the incident among the unresolved ones and adopts it; the
/// resolution goes to it.
#[test]
fn medic_killed_after_sending_the_creation_adopts_it_after_the_restart() {
    let (fakes, base) = Fakes::start();
    fakes.lose_statuspage_creations(&[Lost::Never]);
    let dir = tempfile::tempdir().unwrap();
    let app_port = common::free_port();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/app.yaml"),
        common::app_down_rule(app_port, "15m", "100ms", ""),
    )
    .unwrap();
    let db = dir.path().join("medic.db");
    let config = dir.path().join("medic.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
mode: enforce
rules: [rules]
store: {{ sqlite: {{ path: {db} }} }}
public_status:
  listen: 127.0.0.1:{public}
  components:
    Patient portal: {{ scenarios: [app-down] }}
  statuspage:
    page_id: page1
    api_key: {{ file: {sp} }}
    url: "{base}"
    components: {{ Patient portal: cmpPortal }}
escalation:
  default:
    levels:
      - {{ after: 0s, notify: [log] }}
notifiers:
  log: {{ log: {{}} }}
shutdown_grace: 2s
"#,
            db = db.display(),
            public = common::free_port(),
            sp = secret_file(dir.path(), "sp", "SPKEY-0123"),
        ),
    )
    .unwrap();
    let log = dir.path().join("medic.log");
    let shorts = || fakes.shorts();

    let mut m = common::Medic::start(&config, &log);
    common::wait_until(
        Duration::from_secs(20),
        "the creation, accepted and unanswered",
        || fakes.statuspage_incidents().len() == 1,
    );
    assert_eq!(shorts(), ["statuspage:POST /v1/pages/page1/incidents"]);
    m.kill9();

    let mut m = common::Medic::start(&config, &log);
    common::wait_until(Duration::from_secs(20), "the look-up", || {
        shorts().len() >= 2
    });
    let app = std::net::TcpListener::bind(("127.0.0.1", app_port)).unwrap();
    common::wait_until(Duration::from_secs(20), "the resolution", || {
        shorts().len() >= 3
    });
    std::thread::sleep(Duration::from_millis(500));
    m.stop();
    drop(app);
    assert_eq!(
        shorts(),
        [
            "statuspage:POST /v1/pages/page1/incidents",
            "statuspage:GET /v1/pages/page1/incidents/unresolved",
            "statuspage:PATCH /v1/pages/page1/incidents/sp1",
        ]
    );
    let incidents = fakes.statuspage_incidents();
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    assert_eq!(incidents[0]["status"], "resolved");
    assert_eq!(incidents[0]["metadata"]["medic"]["incident"], "1");

    let outbox = common::block_on(async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
        store.outbox_of(1).await.unwrap()
    });
    let open = outbox.iter().find(|e| e.key == "1:public:open").unwrap();
    assert_eq!(
        (open.state, open.attempts, open.detail.as_str()),
        (OutboxState::Sent, 2, "adopted sp1")
    );
}
