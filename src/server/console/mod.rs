//! The on-call console: server-rendered HTML, no JavaScript, every outside
//! word escaped ([`super::status::esc`]).
//!
//! - `GET /console`: every target and symptom with its state (ok,
//!   pending, firing, clearing, unknown) and why ([`board`]), and the open
//!   incidents, each linking to its page.
//! - `GET /console/incidents/{id}`: the incident, its swimlane
//!   ([`swimlane`]) and, for a logged-in session, the forms that act.
//! - `GET`/`POST /console/login`, `POST /console/logout`: a session made
//!   with the API token ([`session`]).
//! - `POST /console/incidents/{id}/{action}`: acknowledge, approve, reject,
//!   escalate or resolve through the pager's one decision path
//!   ([`crate::page::Pager::decide`], as the API does), with the session's
//!   CSRF token; then back to the page (POST-redirect-GET).
//!
//! The pages read with the read token, the API token or a session (or
//! nothing with `open_reads`); acting needs a session, which only the API
//! token makes: the read token alone can look, never act.

pub mod board;
pub mod session;
pub mod swimlane;

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::status::{esc, human};
use crate::page::{Decision, DecisionKind};
use crate::store::IncidentId;
use session::{Session, Sessions};

/// The console's own state: its sessions, and whether its cookies are
/// `Secure` (the listener serves TLS).
#[derive(Default)]
pub struct Console {
    pub sessions: Sessions,
    pub secure: bool,
}

impl Console {
    /// A console whose cookies are `Secure` when `tls`.
    pub fn new(tls: bool) -> Self {
        Console {
            sessions: Sessions::default(),
            secure: tls,
        }
    }
}

/// The pages that read (behind [`read`]).
pub fn read_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(overview))
        .routes(routes!(incident_page))
}

/// Login (open: it checks the token it is given) and the session's posts
/// (each checks its session and CSRF token).
pub fn session_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login_form, login))
        .routes(routes!(logout))
        .routes(routes!(act))
}

/// The live session of a request, with its id.
fn session_of(st: &AppState, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = session::cookie(headers)?;
    let access = st.access.current();
    let s = st.console.sessions.get(&id, access.api_token.as_ref())?;
    Some((id, s))
}

/// The console's reads: a session, else what [`super::auth::read`] takes
/// (open reads, the read or API token). A browser with neither gets a 401
/// page that leads to the login form.
pub async fn read(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if session_of(&st, req.headers()).is_some() {
        return next.run(req).await;
    }
    if !st.access.current().open_reads && !req.headers().contains_key(header::AUTHORIZATION) {
        return page(
            StatusCode::UNAUTHORIZED,
            "log in",
            "",
            "<h1>medic console</h1><p>Log in to see the console: \
             <a href=\"/console/login\">log in with the API token</a> \
             (or send the read token as a bearer token).</p>",
        );
    }
    super::auth::read(State(st), req, next).await
}

/// Timeline entries one incident page draws and lists: the newest, or a
/// window from `?from=P` (a long-open incident's whole timeline stays in
/// the store).
const PAGE_ENTRIES: usize = 2000;

/// `?from=P` of an incident page.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Window {
    from: Option<usize>,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f4f5f7}\
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;justify-content:space-between;align-items:center}\
header a{color:#cde}header form{display:inline}main{padding:1em 1.5em;max-width:72em}\
h1{font-size:1.4em;margin:.3em 0}h2{font-size:1.15em;margin-top:1.4em}\
table{border-collapse:collapse;background:#fff;margin:.4em 0;width:100%}\
th,td{border-bottom:1px solid #e2e4e8;padding:.35em .6em;text-align:left;vertical-align:top}\
th{background:#eceef2;font-weight:600}.meta{color:#5a6270}\
.badge{display:inline-block;padding:.1em .55em;border-radius:1em;font-weight:600;font-size:.9em;color:#fff}\
.ok{background:#2e8540}.pending{background:#c99700}.firing{background:#c62828}\
.clearing{background:#6a9a3a}.unknown{background:#777}\
.tiles{display:flex;flex-wrap:wrap;gap:.6em}.tile{background:#fff;border-left:.5em solid #2e8540;padding:.5em .8em;min-width:12em}\
.tile.firing{border-color:#c62828;background:#fff}.tile.pending{border-color:#c99700;background:#fff}\
.tile.clearing{border-color:#6a9a3a;background:#fff}.tile.unknown{border-color:#777;background:#fff}.tile.ok{background:#fff}\
.flash{padding:.6em 1em;border-radius:4px;background:#e6f4ea}.flash.err{background:#fde7e7}\
.actions form{display:inline-block;margin:.2em .6em .2em 0;background:#fff;padding:.5em;border:1px solid #ddd}\
button{font-size:1em;padding:.3em .9em}code{font-size:.9em;word-break:break-all}";

/// A whole HTML document with the console's header.
fn page(code: StatusCode, title: &str, nav: &str, body: &str) -> Response {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} · medic console</title><style>{STYLE}</style></head><body>\
         <header><span><b>medic</b> console · <a href=\"/console\">overview</a></span><span>{nav}</span></header>\
         <main>{body}</main></body></html>",
        esc(title)
    );
    let mut r = (code, Html(h)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The header's right side: who is logged in and the logout form, or
/// the login link.
fn nav(s: Option<&Session>) -> String {
    match s {
        Some(s) => format!(
            "logged in as <b id=\"who\">{}</b> <form method=\"post\" action=\"/console/logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">log out</button></form>",
            esc(&s.name),
            esc(&s.csrf)
        ),
        None => "<a href=\"/console/login\" id=\"login\">log in to act</a>".into(),
    }
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn badge(state: &str) -> String {
    format!("<span class=\"badge {state}\">{state}</span>")
}

fn store_failed(e: crate::store::StoreError) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "store unavailable",
        "",
        &format!("<p>store unavailable: {}</p>", esc(&e.to_string())),
    )
}

/// The overview.
#[utoipa::path(
    get,
    path = "/console",
    tag = "console",
    security(("bearer" = []), ("basic" = []), ("session" = [])),
    responses(
        (status = 200, description = "Every target and symptom with its state, and the open incidents.",
            body = String, content_type = "text/html"),
        (status = 401, description = "No session and no read token: a page leading to the login form \
            (HTML), or a wrong token (JSON).",
            content((String = "text/html"), (super::openapi::Refusal = "application/json"))),
        (status = 503, description = "The store failed, or the listener is busy.",
            content((String = "text/html"), (super::openapi::Refusal = "application/json"))),
    )
)]
async fn overview(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let s = session_of(&st, &headers).map(|(_, s)| s);
    let open = match st.store.open_incidents().await {
        Ok(o) => o,
        Err(e) => return store_failed(e),
    };
    let scenarios = st.scenarios.borrow().clone();
    let loaded: std::collections::HashSet<(&str, &str)> = scenarios
        .iter()
        .flat_map(|r| {
            r.scenario
                .symptoms
                .iter()
                .map(move |s| (r.scenario.name.as_str(), s.name.as_str()))
        })
        .collect();
    let seen = board::board().snapshot();
    let seen_keys: std::collections::HashSet<(String, String)> = seen
        .iter()
        .map(|r| (r.scenario.clone(), r.symptom.clone()))
        .collect();
    // Loaded symptoms this replica does not check (a follower's).
    let mut rows: Vec<board::SymptomRow> = seen
        .into_iter()
        .filter(|r| loaded.contains(&(r.scenario.as_str(), r.symptom.as_str())))
        .collect();
    for rt in &scenarios {
        for sy in &rt.scenario.symptoms {
            if !seen_keys.contains(&(rt.scenario.name.clone(), sy.name.clone())) {
                rows.push(board::SymptomRow {
                    scenario: rt.scenario.name.clone(),
                    symptom: sy.name.clone(),
                    target: sy.check.target().map(str::to_string),
                    check: sy.check.kind(),
                    shown: board::Shown {
                        state: "unknown",
                        why: "not checked on this replica".into(),
                    },
                    instances: Vec::new(),
                    observed_at: None,
                });
            }
        }
    }
    rows.sort_by(|a, b| (&a.scenario, &a.symptom).cmp(&(&b.scenario, &b.symptom)));
    let ready = st.readiness.borrow().clone();
    let now = st.clock.now();

    let mut h = String::new();
    let firing = rows.iter().filter(|r| r.shown.state == "firing").count();
    let _ = write!(
        h,
        "<meta http-equiv=\"refresh\" content=\"10\"><h1>Overview</h1><p class=\"meta\">This replica is the <b>{}</b>. \
         {} symptom{}, {firing} firing; {} open incident{}. {}.</p>",
        esc(&ready.role),
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        open.len(),
        if open.len() == 1 { "" } else { "s" },
        time(now)
    );

    // Targets: the worst state of the symptoms that observe each.
    let mut targets: std::collections::BTreeMap<String, (&'static str, usize, Vec<String>)> =
        Default::default();
    for r in &rows {
        // A check on an address of its own (no config target): its scenario.
        let name = r
            .target
            .clone()
            .unwrap_or_else(|| format!("scenario {}", r.scenario));
        let t = targets.entry(name).or_insert(("ok", 0, Vec::new()));
        if board::rank(r.shown.state) > board::rank(t.0) {
            t.0 = r.shown.state;
        }
        t.1 += 1;
        if r.shown.state != "ok" {
            t.2.push(format!("{}/{}: {}", r.scenario, r.symptom, r.shown.state));
        }
    }
    h.push_str("<h2 id=\"targets\">Targets</h2><div class=\"tiles\">");
    for (name, (state, n, bad)) in &targets {
        let _ = write!(
            h,
            "<div class=\"tile {state}\" data-target=\"{}\"><b>{}</b> {}<br><span class=\"meta\">{n} symptom{}{}</span></div>",
            esc(name),
            esc(name),
            badge(state),
            if *n == 1 { "" } else { "s" },
            if bad.is_empty() {
                String::new()
            } else {
                format!(": {}", esc(&bad.join(", ")))
            }
        );
    }
    if targets.is_empty() {
        h.push_str("<p>No symptoms loaded.</p>");
    }
    h.push_str("</div>");

    let _ = write!(
        h,
        "<h2 id=\"incidents\">Open incidents ({})</h2>",
        open.len()
    );
    if open.is_empty() {
        h.push_str("<p>No open incidents.</p>");
    } else {
        h.push_str("<table><tr><th>#</th><th>scenario</th><th>instance</th><th>state</th><th>severity</th><th>open for</th><th>summary</th></tr>");
        for i in &open {
            let _ = write!(
                h,
                "<tr class=\"incident\"><td><a href=\"/console/incidents/{id}\">#{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&i.scenario),
                esc(&i.instance),
                esc(i.state.as_str()),
                esc(&i.severity),
                human(now - i.opened_at),
                esc(&i.summary),
                id = i.id
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2 id=\"symptoms\">Symptoms</h2><table><tr><th>scenario</th><th>symptom</th><th>target</th><th>check</th><th>state</th><th>why</th><th>last checked</th></tr>");
    for r in &rows {
        let mut why = esc(&r.shown.why);
        for (labels, s) in r.instances.iter().take(20) {
            let _ = write!(
                why,
                "<br><code>{}</code> {} {}",
                esc(labels),
                badge(s.state),
                esc(&s.why)
            );
        }
        let _ = write!(
            h,
            "<tr class=\"symptom\" data-state=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{why}</td><td>{}</td></tr>",
            r.shown.state,
            esc(&r.scenario),
            esc(&r.symptom),
            esc(r.target.as_deref().unwrap_or("—")),
            esc(r.check),
            badge(r.shown.state),
            r.observed_at
                .map(|t| format!("{} ago", human(now - t)))
                .unwrap_or_else(|| "—".into()),
        );
    }
    h.push_str("</table>");
    page(StatusCode::OK, "overview", &nav(s.as_ref()), &h)
}

/// One incident: its swimlane, and the forms that act for a session.
#[utoipa::path(
    get,
    path = "/console/incidents/{id}",
    tag = "console",
    security(("bearer" = []), ("basic" = []), ("session" = [])),
    params(("id" = i64, Path, minimum = 1, example = 1, description = "The incident's id."),
        ("from" = Option<u32>, Query, minimum = 0, maximum = 1000000000,
            description = "The position of the first timeline entry shown (0 is the first written; default: the newest 2000).")),
    responses(
        (status = 200, description = "The incident's page.", body = String, content_type = "text/html"),
        (status = 400, description = "An id that is not a positive integer, or a bad window.", body = String, content_type = "text/html"),
        (status = 401, description = "No session and no read token (HTML), or a wrong token (JSON).",
            content((String = "text/html"), (super::openapi::Refusal = "application/json"))),
        (status = 404, description = "No such incident.", body = String, content_type = "text/html"),
        (status = 503, description = "The store failed, or the listener is busy.",
            content((String = "text/html"), (super::openapi::Refusal = "application/json"))),
    )
)]
async fn incident_page(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    window: Result<Query<Window>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let session = session_of(&st, &headers);
    let id = match super::incidents::parse_id(&raw) {
        Ok(id) => id,
        Err(why) => return page(StatusCode::BAD_REQUEST, "bad id", "", &esc(&why)),
    };
    let Ok(Query(window)) = window.map_err(drop).and_then(|w| {
        match w.from.is_some_and(|f| f > super::incidents::MAX_POSITION) {
            true => Err(()),
            false => Ok(w),
        }
    }) else {
        let why = "the query takes only from=P, a timeline position (0 to 1000000000)";
        return page(StatusCode::BAD_REQUEST, "bad window", "", why);
    };
    let loaded = async {
        let Some(i) = st.store.incident(id).await? else {
            return Ok(None);
        };
        let total = st.store.timeline_len(id).await?;
        let from = window
            .from
            .unwrap_or(total.saturating_sub(PAGE_ENTRIES))
            .min(total);
        let t = st.store.timeline_range(id, from, PAGE_ENTRIES).await?;
        let a = st.store.incident_attempts(id).await?;
        Ok(Some((i, (from, total), t, a)))
    }
    .await;
    let (inc, (from, total), timeline, attempts) = match loaded {
        Ok(Some(v)) => v,
        Ok(None) => {
            return page(
                StatusCode::NOT_FOUND,
                "not found",
                &nav(session.as_ref().map(|(_, s)| s)),
                &format!("<p>incident {id} not found</p>"),
            );
        }
        Err(e) => return store_failed(e),
    };
    let now = st.clock.now();
    let rto = st
        .scenarios
        .borrow()
        .iter()
        .find(|r| r.scenario.name == inc.scenario)
        .map(|r| r.scenario.rto.get());
    let mut h = String::new();
    let _ = write!(
        h,
        "<h1>Incident {id}: {}</h1><p class=\"meta\">state <b id=\"state\">{}</b> · severity {} · opened {}{}{} · {}</p>",
        esc(&inc.scenario),
        esc(inc.state.as_str()),
        esc(&inc.severity),
        time(inc.opened_at),
        if inc.instance.is_empty() {
            String::new()
        } else {
            format!(" · instance <code>{}</code>", esc(&inc.instance))
        },
        inc.resolved_at
            .map(|r| format!(" · resolved {}", time(r)))
            .unwrap_or_default(),
        super::status::rto_clock(&inc, rto, now),
    );
    let _ = write!(h, "<p>{}</p>", esc(&inc.summary));
    if let Some((sid, _)) = &session
        && let Some((ok, msg)) = st.console.sessions.take_flash(sid)
    {
        let _ = write!(
            h,
            "<p class=\"flash{}\" id=\"flash\">{}</p>",
            if ok { "" } else { " err" },
            esc(&msg)
        );
    }
    h.push_str("<h2>Swimlane</h2>");
    if timeline.len() < total {
        // A window of a long timeline: say which, and link the others.
        let to = from + timeline.len();
        let _ = write!(
            h,
            "<p class=\"meta\" id=\"window\">Entries {} to {to} of {total}",
            from + 1
        );
        if from > 0 {
            let _ = write!(
                h,
                " · <a href=\"/console/incidents/{id}?from={}\" id=\"earlier\">earlier</a>",
                from.saturating_sub(PAGE_ENTRIES)
            );
        }
        if to < total {
            let _ = write!(
                h,
                " · <a href=\"/console/incidents/{id}?from={to}\" id=\"later\">later</a>"
            );
        }
        h.push_str("</p>");
    }
    h.push_str(&swimlane::render(&swimlane::Input {
        incident: &inc,
        timeline: &timeline,
        attempts: &attempts,
        rto,
        now,
    }));
    h.push_str("<h2>Act</h2>");
    match &session {
        Some((_, s)) if inc.resolved_at.is_none() => {
            h.push_str("<div class=\"actions\">");
            for (action, label, step) in [
                ("acknowledge", "Acknowledge", false),
                ("approve", "Approve step", true),
                ("reject", "Reject step", true),
                ("resolve", "Resolve", false),
            ] {
                let _ = write!(
                    h,
                    "<form method=\"post\" action=\"/console/incidents/{id}/{action}\" id=\"form-{action}\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{}\">{}\
                     <input name=\"note\" placeholder=\"note (optional)\" size=\"18\"> \
                     <button type=\"submit\" id=\"do-{action}\">{label}</button></form>",
                    esc(&s.csrf),
                    if step {
                        "<input name=\"step\" placeholder=\"step (the one waiting)\" size=\"16\"> "
                    } else {
                        ""
                    },
                );
            }
            h.push_str("</div>");
        }
        Some(_) => h.push_str("<p>Resolved: nothing to do.</p>"),
        None => h.push_str(
            "<p><a href=\"/console/login\">Log in with the API token</a> to acknowledge, approve, reject or resolve.</p>",
        ),
    }
    h.push_str("<h2>Timeline</h2><table><tr><th>at</th><th>kind</th><th>what</th></tr>");
    for e in &timeline {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(e.at),
            esc(&e.kind),
            esc(&e.message)
        );
    }
    h.push_str("</table>");
    page(
        StatusCode::OK,
        &format!("incident {id}"),
        &nav(session.as_ref().map(|(_, s)| s)),
        &h,
    )
}

fn login_page(code: StatusCode, error: Option<&str>) -> Response {
    let mut h = String::from("<h1>Log in</h1>");
    if let Some(e) = error {
        let _ = write!(h, "<p class=\"flash err\" id=\"error\">{}</p>", esc(e));
    }
    h.push_str(
        "<form method=\"post\" action=\"/console/login\" id=\"login-form\">\
         <p><label>Your name (written on the timeline)<br><input name=\"name\" id=\"name\" required></label></p>\
         <p><label>API token (<code>http.api_token</code>)<br><input name=\"token\" id=\"token\" type=\"password\" required></label></p>\
         <p><button type=\"submit\" id=\"submit\">Log in</button></p></form>\
         <p class=\"meta\">The read token shows the console but cannot act. A session lasts 8 hours \
         and ends when medic restarts.</p>",
    );
    page(code, "log in", "", &h)
}

/// The login form.
#[utoipa::path(
    get,
    path = "/console/login",
    tag = "console",
    responses(
        (status = 200, description = "The form.", body = String, content_type = "text/html"),
        (status = 503, description = "The listener is busy.", body = super::openapi::Refusal),
    )
)]
async fn login_form() -> Response {
    login_page(StatusCode::OK, None)
}

/// The login form's fields.
#[derive(Deserialize, utoipa::ToSchema)]
struct LoginForm {
    /// Who logs in (written on the timeline with each decision): not
    /// blank, at most 100 characters.
    #[schema(
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]",
        max_length = 100
    )]
    name: String,
    /// The API token.
    token: String,
}

/// Whether a request's body is a form.
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim())
        .is_some_and(|t| t.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

fn not_a_form() -> Response {
    page(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "not a form",
        "",
        "<p>The body must be a form (application/x-www-form-urlencoded).</p>",
    )
}

/// Where a browser goes next (303: GET it).
fn see_other(to: &str, cookie: Option<String>) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response();
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

fn set_cookie(console: &Console, id: &str, max_age: u64) -> String {
    format!(
        "{}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        session::COOKIE,
        if console.secure { "; Secure" } else { "" }
    )
}

/// Logs in with the API token: a session cookie, then the overview.
#[utoipa::path(
    post,
    path = "/console/login",
    tag = "console",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Logged in: the session cookie is set; on to /console."),
        (status = 400, description = "A form without a name or a token.", body = String, content_type = "text/html"),
        (status = 401, description = "Not the API token (the read token cannot act), or no API token configured.",
            body = String, content_type = "text/html"),
        (status = 413, description = "A body over 2 MB.", body = String, content_type = "text/plain"),
        (status = 415, description = "A body that is not a form.", body = String, content_type = "text/html"),
        (status = 503, description = "No random session id could be made, or the listener is busy.",
            content((String = "text/html"), (super::openapi::Refusal = "application/json"))),
    )
)]
async fn login(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_form(&headers) {
        return not_a_form();
    }
    let form: LoginForm = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => {
            return login_page(
                StatusCode::BAD_REQUEST,
                Some(&format!("the form needs a name and a token: {e}")),
            );
        }
    };
    let name = form.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return login_page(
            StatusCode::BAD_REQUEST,
            Some("give your name (1 to 100 characters): it is written on the timeline"),
        );
    }
    let access = st.access.current();
    let Some(api) = &access.api_token else {
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("acting is disabled: set http.api_token in the config"),
        );
    };
    if !session::same(form.token.trim(), api.expose()) {
        let read = access
            .read_token
            .as_ref()
            .is_some_and(|r| session::same(form.token.trim(), r.expose()));
        tracing::warn!("console login refused: not the API token");
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some(if read {
                "that is the read token: it shows the console but cannot act; log in with the API token"
            } else {
                "wrong token"
            }),
        );
    }
    let Some(id) = st.console.sessions.create(name, api) else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "no session",
            "",
            "<p>no random session id could be made; try again</p>",
        );
    };
    tracing::info!(by = name, "console login");
    see_other(
        "/console",
        Some(set_cookie(&st.console, &id, session::TTL.as_secs())),
    )
}

/// The fields of a session's post: its CSRF token, and for decisions the
/// step (approve, reject) and a note.
#[derive(Deserialize, utoipa::ToSchema)]
struct ActForm {
    /// The session's CSRF token (in every form of its pages).
    csrf: String,
    /// The step (approve, reject); empty for the one awaiting approval.
    #[serde(default)]
    step: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// The session and its checked form, or the refusal: no session 401, a
/// body that is not a form 415, a malformed one 400, a missing or wrong
/// CSRF token 403.
fn checked(
    st: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(String, Session, ActForm), Box<Response>> {
    let Some((id, s)) = session_of(st, headers) else {
        return Err(Box::new(page(
            StatusCode::UNAUTHORIZED,
            "log in",
            "",
            "<p>No session (or it expired): <a href=\"/console/login\">log in</a> with the API token.</p>",
        )));
    };
    if !is_form(headers) {
        return Err(Box::new(not_a_form()));
    }
    let form: ActForm = match serde_urlencoded::from_bytes(body) {
        Ok(f) => f,
        Err(e) => {
            if !String::from_utf8_lossy(body).contains("csrf=") {
                return Err(Box::new(page(
                    StatusCode::FORBIDDEN,
                    "refused",
                    "",
                    "<p>missing CSRF token: nothing was done</p>",
                )));
            }
            return Err(Box::new(page(
                StatusCode::BAD_REQUEST,
                "bad form",
                "",
                &format!("<p>malformed form: {}</p>", esc(&e.to_string())),
            )));
        }
    };
    if !session::same(&form.csrf, &s.csrf) {
        tracing::warn!(by = %s.name, "console post refused: wrong CSRF token");
        return Err(Box::new(page(
            StatusCode::FORBIDDEN,
            "refused",
            "",
            "<p>wrong CSRF token: nothing was done</p>",
        )));
    }
    Ok((id, s, form))
}

/// Ends the session.
#[utoipa::path(
    post,
    path = "/console/logout",
    tag = "console",
    security(("session" = [])),
    request_body(content = ActForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Logged out: the cookie is cleared; on to the login form."),
        (status = 400, description = "A malformed form.", body = String, content_type = "text/html"),
        (status = 401, description = "No session.", body = String, content_type = "text/html"),
        (status = 403, description = "A missing or wrong CSRF token.", body = String, content_type = "text/html"),
        (status = 413, description = "A body over 2 MB.", body = String, content_type = "text/plain"),
        (status = 415, description = "A body that is not a form.", body = String, content_type = "text/html"),
        (status = 503, description = "The listener is busy.", body = super::openapi::Refusal),
    )
)]
async fn logout(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (id, _, _) = match checked(&st, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    st.console.sessions.remove(&id);
    see_other("/console/login", Some(set_cookie(&st.console, "", 0)))
}

/// Acknowledges, approves, rejects, escalates or resolves an incident
/// (the pager's decision, as `POST /api/v1/incidents/{id}/{action}`
/// takes it), then back to its page with what came of it.
#[utoipa::path(
    post,
    path = "/console/incidents/{id}/{action}",
    tag = "console",
    security(("session" = [])),
    params(
        ("id" = i64, Path, example = 1, description = "The incident's id."),
        ("action" = inline(super::decisions::Action), Path, description = "The decision."),
    ),
    request_body(content = ActForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Decided, or refused by the incident's state: what came of it is shown \
            on the incident's page."),
        (status = 400, description = "A malformed id or form.", body = String, content_type = "text/html"),
        (status = 401, description = "No session (the read token cannot act).", body = String, content_type = "text/html"),
        (status = 403, description = "A missing or wrong CSRF token: nothing recorded.", body = String, content_type = "text/html"),
        (status = 404, description = "An unknown action.", body = String, content_type = "text/html"),
        (status = 413, description = "A body over 2 MB.", body = String, content_type = "text/plain"),
        (status = 415, description = "A body that is not a form.", body = String, content_type = "text/html"),
        (status = 503, description = "Not the leader, or the listener is busy.",
            content((String = "text/html"), (super::openapi::Refusal = "application/json"))),
    )
)]
async fn act(
    State(st): State<AppState>,
    Path((raw, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (sid, s, form) = match checked(&st, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(kind) = DecisionKind::parse(&action) else {
        return page(
            StatusCode::NOT_FOUND,
            "unknown action",
            "",
            &format!(
                "<p>unknown action {}; one of: {}</p>",
                esc(&format!(
                    "{:?}",
                    action.chars().take(40).collect::<String>()
                )),
                DecisionKind::ALL.join(", ")
            ),
        );
    };
    let id: IncidentId = match raw.parse() {
        Ok(id) => id,
        Err(_) => {
            return page(
                StatusCode::BAD_REQUEST,
                "bad id",
                "",
                &format!(
                    "<p>incident id {} is not a number</p>",
                    esc(&format!("{:?}", raw.chars().take(40).collect::<String>()))
                ),
            );
        }
    };
    let Some(pager) = st.pager.borrow().clone() else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "not the leader",
            "",
            "<p>this replica is not the leader (or is starting): use the leader's console</p>",
        );
    };
    let d = Decision {
        kind,
        by: s.name.clone(),
        step: form.step.filter(|x| !x.trim().is_empty()),
        note: form.note.unwrap_or_default(),
        via: "console".into(),
    };
    let (ok, msg) = match pager.decide(id, d).await {
        Ok(o) => (true, o.message),
        Err(e) => {
            if matches!(e, crate::page::DecideError::Store(_)) {
                tracing::error!(incident = id, error = %e, "console decision failed: store");
            }
            (false, format!("refused: {e}"))
        }
    };
    st.console.sessions.flash(&sid, ok, msg);
    see_other(&format!("/console/incidents/{id}"), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_under_tls() {
        let plain = set_cookie(&Console::new(false), "abc", 60);
        assert_eq!(
            plain,
            "medic_session=abc; Path=/console; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        let tls = set_cookie(&Console::new(true), "abc", 60);
        assert!(tls.ends_with("; Secure"), "{tls}");
    }

    #[test]
    fn only_forms_are_forms() {
        let form = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            is_form(&h)
        };
        assert!(form("application/x-www-form-urlencoded"));
        assert!(form("Application/X-WWW-Form-Urlencoded; charset=utf-8"));
        assert!(!form("application/json"));
        assert!(!form("text/plain"));
        assert!(!is_form(&HeaderMap::new()));
    }
}
