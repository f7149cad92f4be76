//! Local fakes of the Slack Web API (`/api/METHOD`), the PagerDuty Events
//! API v2 (`/v2/enqueue`), Atlassian Statuspage's incident API
//! (`POST /v1/pages/{page}/incidents`, `PATCH .../incidents/{id}`,
//! `GET .../incidents/unresolved`, keeping the incidents it was given) and a
//! webhook receiver (`/hook`), in one HTTP server on 127.0.0.1 with its own
//! thread and runtime (so it answers whatever clock the test runs on).
//! Every request is recorded; answers can be scripted (HTTP 429 with
//! Retry-After, 5xx, 400) per path, and a Statuspage creation can be
//! accepted with its answer lost ([`Lost`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Req {
    /// `chat.postMessage`, `pagerduty`, `hook`...
    pub what: String,
    pub body: Value,
    pub query: String,
    pub headers: HashMap<String, String>,
    /// `METHOD /path` for Statuspage requests; empty for the others.
    pub path: String,
}

impl Req {
    /// A short form for asserting sequences: `chat.postMessage`,
    /// `chat.postMessage(thread)`, `pagerduty:trigger`.
    pub fn short(&self) -> String {
        match self.what.as_str() {
            "chat.postMessage" if self.body["thread_ts"].is_string() => {
                "chat.postMessage(thread)".into()
            }
            "pagerduty" => format!(
                "pagerduty:{}",
                self.body["event_action"].as_str().unwrap_or("?")
            ),
            "statuspage" => format!("statuspage:{}", self.path),
            w => w.to_string(),
        }
    }
}

/// How an accepted Statuspage creation's answer is lost: the incident
/// exists at the fake either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// `201 Created` is sent, then the connection drops mid-body.
    Dropped,
    /// No answer ever (the client times out, or is killed waiting).
    Never,
}

#[derive(Default)]
struct Inner {
    reqs: Vec<Req>,
    /// Slack messages: (ts, thread_ts, metadata).
    messages: Vec<(String, Option<String>, Value)>,
    next_ts: u64,
    /// Scripted answers by `what`: (status, Retry-After).
    script: HashMap<String, VecDeque<(u16, Option<u64>)>>,
    /// usergroups.users.list answers.
    groups: HashMap<String, Vec<String>>,
    /// Statuspage incidents, oldest first, as Statuspage shows them.
    incidents: Vec<Value>,
    /// The next Statuspage creations whose answer is lost.
    lost: VecDeque<Lost>,
}

/// The fakes. Clones share state.
#[derive(Clone, Default)]
pub struct Fakes(Arc<Mutex<Inner>>);

impl Fakes {
    /// Starts the server; returns the fakes and their base URL.
    pub fn start() -> (Fakes, String) {
        let fakes = Fakes::default();
        let f = fakes.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = Router::new()
                    .route("/api/{method}", post(slack).get(slack))
                    .route("/v2/enqueue", post(pagerduty))
                    .route("/hook", post(hook))
                    .route("/v1/pages/{page}/incidents", post(statuspage_create))
                    .route(
                        "/v1/pages/{page}/incidents/unresolved",
                        get(statuspage_unresolved),
                    )
                    .route(
                        "/v1/pages/{page}/incidents/{id}",
                        axum::routing::patch(statuspage_update),
                    )
                    .route("/healthz", get(|| async { "ok" }))
                    .with_state(f);
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                axum::serve(l, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        (fakes, format!("http://{addr}"))
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Req> {
        self.0.lock().unwrap().reqs.clone()
    }

    /// [`Req::short`] of every request so far.
    pub fn shorts(&self) -> Vec<String> {
        self.requests().iter().map(Req::short).collect()
    }

    /// The next answers to `what` (`chat.postMessage`, `pagerduty`, `hook`;
    /// `statuspage` for any Statuspage request, or one [`Req::short`] such
    /// as `statuspage:POST /v1/pages/page1/incidents`).
    pub fn script(&self, what: &str, answers: &[(u16, Option<u64>)]) {
        self.0
            .lock()
            .unwrap()
            .script
            .entry(what.into())
            .or_default()
            .extend(answers.iter().copied());
    }

    /// Members of a Slack user group.
    pub fn group(&self, id: &str, members: &[&str]) {
        self.0
            .lock()
            .unwrap()
            .groups
            .insert(id.into(), members.iter().map(|m| m.to_string()).collect());
    }

    /// The next Statuspage creations are accepted (the incident exists)
    /// but their answer is lost, as `how`.
    pub fn lose_statuspage_creations(&self, how: &[Lost]) {
        self.0.lock().unwrap().lost.extend(how.iter().copied());
    }

    /// The Statuspage incidents created so far, oldest first, as
    /// `GET .../incidents/{id}` would show them.
    pub fn statuspage_incidents(&self) -> Vec<Value> {
        self.0.lock().unwrap().incidents.clone()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().reqs.clear();
    }

    fn record(
        &self,
        what: &str,
        headers: &HeaderMap,
        query: String,
        body: Value,
    ) -> Option<Response> {
        self.record_path(what, headers, query, body, String::new())
    }

    /// [`Fakes::record`] with the request's `METHOD /path`; a script for
    /// its [`Req::short`] goes before one for `what`.
    fn record_path(
        &self,
        what: &str,
        headers: &HeaderMap,
        query: String,
        body: Value,
        path: String,
    ) -> Option<Response> {
        let mut g = self.0.lock().unwrap();
        let req = Req {
            what: what.into(),
            body,
            query,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect(),
            path,
        };
        let short = req.short();
        g.reqs.push(req);
        let scripted = match g.script.get_mut(&short).and_then(VecDeque::pop_front) {
            Some(a) => Some(a),
            None => g.script.get_mut(what).and_then(VecDeque::pop_front),
        };
        let (status, after) = scripted?;
        let mut resp = (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(json!({ "status": "invalid event", "message": "scripted", "errors": ["scripted failure"] })),
        )
            .into_response();
        if let Some(s) = after {
            resp.headers_mut()
                .insert("retry-after", s.to_string().parse().unwrap());
        }
        Some(resp)
    }
}

fn parse_body(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

async fn slack(
    State(f): State<Fakes>,
    Path(method): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = parse_body(&body);
    let query = q.unwrap_or_default();
    if let Some(r) = f.record(&method, &headers, query.clone(), body.clone()) {
        return r;
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer xoxb-test") {
        return axum::Json(json!({ "ok": false, "error": "invalid_auth" })).into_response();
    }
    let mut g = f.0.lock().unwrap();
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_string()
    };
    let v = match method.as_str() {
        "chat.postMessage" => {
            g.next_ts += 1;
            let ts = format!("1700000000.{:06}", g.next_ts);
            let thread = body["thread_ts"].as_str().map(String::from);
            g.messages
                .push((ts.clone(), thread, body["metadata"].clone()));
            json!({ "ok": true, "channel": body["channel"], "ts": ts })
        }
        "chat.update" => json!({ "ok": true, "channel": body["channel"], "ts": body["ts"] }),
        "chat.postEphemeral" => json!({ "ok": true, "message_ts": "1700000000.999999" }),
        "views.open" => json!({ "ok": true, "view": { "id": "V0MODAL" } }),
        "conversations.history" => {
            let ms: Vec<Value> = g
                .messages
                .iter()
                .filter(|(_, t, _)| t.is_none())
                .map(|(ts, _, m)| json!({ "ts": ts, "metadata": m }))
                .collect();
            json!({ "ok": true, "messages": ms })
        }
        "conversations.replies" => {
            let parent = param("ts");
            let ms: Vec<Value> = g
                .messages
                .iter()
                .filter(|(ts, t, _)| *ts == parent || t.as_deref() == Some(parent.as_str()))
                .map(|(ts, _, m)| json!({ "ts": ts, "metadata": m }))
                .collect();
            json!({ "ok": true, "messages": ms })
        }
        "usergroups.users.list" => {
            let users = g
                .groups
                .get(&param("usergroup"))
                .cloned()
                .unwrap_or_default();
            json!({ "ok": true, "users": users })
        }
        _ => json!({ "ok": false, "error": "unknown_method" }),
    };
    axum::Json(v).into_response()
}

async fn pagerduty(State(f): State<Fakes>, headers: HeaderMap, body: Bytes) -> Response {
    let body = parse_body(&body);
    if let Some(r) = f.record("pagerduty", &headers, String::new(), body.clone()) {
        return r;
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "status": "success", "message": "Event processed", "dedup_key": body["dedup_key"] })),
    )
        .into_response()
}

/// Records a Statuspage request (`what` is `statuspage`, `path` its
/// method and path); a scripted answer, if any.
fn statuspage_record(
    f: &Fakes,
    headers: &HeaderMap,
    path: String,
    body: &Bytes,
) -> Option<Response> {
    f.record_path("statuspage", headers, String::new(), parse_body(body), path)
}

/// Statuspage's answer to a request on an unknown incident id.
fn statuspage_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": "Record not found" })),
    )
        .into_response()
}

/// The components of a request (`components: {id: status}`) as Statuspage
/// lists them on an incident.
fn statuspage_components(incident: &Value) -> Vec<Value> {
    incident["components"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(id, st)| json!({ "id": id, "status": st }))
                .collect()
        })
        .unwrap_or_default()
}

async fn statuspage_create(
    State(f): State<Fakes>,
    Path(page): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("POST /v1/pages/{page}/incidents");
    if let Some(r) = statuspage_record(&f, &headers, path, &body) {
        return r;
    }
    let req = parse_body(&body)["incident"].clone();
    let (incident, lost) = {
        let mut g = f.0.lock().unwrap();
        g.next_ts += 1;
        let id = format!("sp{}", g.next_ts);
        let status = req["status"]
            .as_str()
            .unwrap_or("investigating")
            .to_string();
        let incident = json!({
            "id": id,
            "page_id": page,
            "name": req["name"],
            "status": status,
            "impact": "none",
            "created_at": format!("2026-12-01T10:00:{:02}Z", g.next_ts % 60),
            "resolved_at": null,
            "metadata": if req["metadata"].is_object() { req["metadata"].clone() } else { json!({}) },
            "components": statuspage_components(&req),
            "incident_updates": [{ "status": status, "body": req["body"] }],
        });
        g.incidents.push(incident.clone());
        (incident, g.lost.pop_front())
    };
    match lost {
        None => (StatusCode::CREATED, axum::Json(incident)).into_response(),
        Some(Lost::Dropped) => {
            // Headers out, then the body fails: the connection is cut.
            let cut = futures_util::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("connection lost"))
            });
            (StatusCode::CREATED, axum::body::Body::from_stream(cut)).into_response()
        }
        Some(Lost::Never) => std::future::pending().await,
    }
}

async fn statuspage_update(
    State(f): State<Fakes>,
    Path((page, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("PATCH /v1/pages/{page}/incidents/{id}");
    if let Some(r) = statuspage_record(&f, &headers, path, &body) {
        return r;
    }
    let req = parse_body(&body)["incident"].clone();
    let mut g = f.0.lock().unwrap();
    let Some(i) = g.incidents.iter_mut().find(|i| i["id"] == id.as_str()) else {
        return statuspage_not_found();
    };
    if req["name"].is_string() {
        i["name"] = req["name"].clone();
    }
    if let Some(status) = req["status"].as_str() {
        i["status"] = json!(status);
        if status == "resolved" {
            i["resolved_at"] = json!("2026-12-01T11:00:00Z");
        }
    }
    if req["components"].is_object() {
        i["components"] = json!(statuspage_components(&req));
    }
    let update = json!({ "status": i["status"], "body": req["body"] });
    if req["body"].is_string()
        && let Some(ups) = i["incident_updates"].as_array_mut()
    {
        ups.insert(0, update);
    }
    axum::Json(i.clone()).into_response()
}

/// `GET .../incidents/unresolved`: a JSON array of the incidents not
/// resolved, newest first, as Statuspage lists them.
async fn statuspage_unresolved(
    State(f): State<Fakes>,
    Path(page): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("GET /v1/pages/{page}/incidents/unresolved");
    if let Some(r) = statuspage_record(&f, &headers, path, &Bytes::new()) {
        return r;
    }
    let g = f.0.lock().unwrap();
    let open: Vec<Value> = g
        .incidents
        .iter()
        .rev()
        .filter(|i| i["page_id"] == page.as_str())
        .filter(|i| !matches!(i["status"].as_str(), Some("resolved" | "postmortem")))
        .cloned()
        .collect();
    axum::Json(open).into_response()
}

async fn hook(
    State(f): State<Fakes>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = parse_body(&body);
    if let Some(r) = f.record("hook", &headers, q.unwrap_or_default(), body) {
        return r;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A Slack interactivity request body (`payload=...`) for a button click,
/// as Slack sends it.
pub fn click_body(user: &str, action: &str, value: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user, "username": "someone" },
        "channel": { "id": "C0INCIDENT" },
        "container": { "type": "message", "channel_id": "C0INCIDENT", "message_ts": "1700000000.000001" },
        "actions": [{ "type": "button", "action_id": action, "value": value, "block_id": "medic:1" }],
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

/// POSTs `body` to medic's `/slack/interactions` at `url` with these
/// signature headers; the status and body of the answer, or status 0 and
/// the error when nothing answered (medic not listening yet, e.g. while
/// it restarts).
pub async fn post_click(url: &str, body: &str, ts: &str, sig: &str) -> (u16, String) {
    let sent = reqwest::Client::new()
        .post(format!("{url}/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body.to_string())
        .send()
        .await;
    match sent {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, format!("no answer: {e}")),
    }
}
