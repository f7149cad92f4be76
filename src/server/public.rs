//! The public status page, on a listener of its own (`public_status.listen`):
//! `GET /` only, without credentials, showing each public component's
//! state and the human-written updates of the incidents that affect them
//! ([`crate::page::public::board`]); nothing else is routed there, and
//! every word shown is escaped. It reads the store on every request, so a
//! component is degraded as soon as an incident opens on it.
//!
//! On the main listener, behind the API token:
//! `POST /api/v1/incidents/{id}/status-update` with
//! `{"by": "name", "status": "investigating|identified|monitoring", "body": "..."}`
//! posts an update (on the timeline, on the page, to Statuspage).

use super::decisions::error;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::status::esc;
use crate::clock::Clock;
use crate::config::{HttpConfig, PublicStatus};
use crate::engine::ScenarioRuntime;
use crate::page::public::{Board, ComponentState, PostUpdate, board, scenario_targets};
use crate::store::Store;

/// What the public page reads: the store, the scenarios running (for
/// their targets) and `public_status:` (swapped on reload).
#[derive(Clone)]
pub struct PublicState {
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub scenarios: watch::Receiver<Vec<Arc<ScenarioRuntime>>>,
    pub config: watch::Receiver<Option<Arc<PublicStatus>>>,
}

/// The public listener's only route.
pub fn router(state: PublicState) -> Router {
    Router::new()
        .route("/", get(page))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// Serves the public page on `cfg.listen` (with `cfg.tls`, the default
/// bounds) until `stop`; returns the bound address.
pub async fn serve(
    cfg: &PublicStatus,
    state: PublicState,
    stop: CancellationToken,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let mut http = HttpConfig::on(cfg.listen);
    http.tls = cfg.tls.clone();
    super::listener::serve(&http, router(state), stop).await
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#f6f7f9}\
main{max-width:46em;margin:0 auto;padding:1.5em}h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em}\
.summary{padding:1em;border-radius:6px;color:#fff;font-weight:bold;background:#2e8540}\
.summary.degraded_performance{background:#c9a400}.summary.partial_outage{background:#e07000}\
.summary.major_outage{background:#c62828}\
ul.components{list-style:none;padding:0;background:#fff;border:1px solid #ddd;border-radius:6px}\
ul.components li{display:flex;justify-content:space-between;padding:.7em 1em;border-top:1px solid #eee}\
ul.components li:first-child{border-top:0}.state{font-weight:bold}\
.operational .state{color:#2e8540}.degraded_performance .state{color:#a07f00}\
.partial_outage .state{color:#c05f00}.major_outage .state{color:#c62828}\
article{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.2em 1em 1em;margin:1em 0}\
.update{margin:.8em 0}.update .status{font-weight:bold}.meta{color:#666;font-size:.9em}\
.body{white-space:pre-wrap}";

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn status_word(s: crate::page::statuspage::Status) -> &'static str {
    use crate::page::statuspage::Status::*;
    match s {
        Investigating => "Investigating",
        Identified => "Identified",
        Monitoring => "Monitoring",
        Resolved => "Resolved",
    }
}

/// The page's HTML: nothing but the board's words, each escaped.
pub fn render(cfg: &PublicStatus, b: &Board, now: chrono::DateTime<chrono::Utc>) -> String {
    let worst = b
        .components
        .iter()
        .map(|(_, s)| *s)
        .max()
        .unwrap_or(ComponentState::Operational);
    let summary = match worst {
        ComponentState::Operational => "All systems operational",
        ComponentState::DegradedPerformance => "Some systems have degraded performance",
        ComponentState::PartialOutage => "Partial outage",
        ComponentState::MajorOutage => "Major outage",
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>\
         <h1>{}</h1><p class=\"summary {}\" id=\"summary\">{summary}</p>\
         <h2>Components</h2><ul class=\"components\" id=\"components\">",
        cfg.refresh.get().as_secs().max(1),
        esc(&cfg.title),
        esc(&cfg.title),
        worst.as_str(),
    );
    for (name, state) in &b.components {
        let _ = write!(
            h,
            "<li class=\"{}\"><span class=\"name\">{}</span><span class=\"state\">{}</span></li>",
            state.as_str(),
            esc(name),
            state.label()
        );
    }
    h.push_str("</ul>");
    let (open, past): (Vec<_>, Vec<_>) = b.incidents.iter().partition(|i| i.resolved_at.is_none());
    for (title, list, id) in [
        ("Current incidents", open, "current"),
        ("Recently resolved", past, "resolved"),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = write!(h, "<h2 id=\"{id}\">{title}</h2>");
        for i in list {
            let _ = write!(
                h,
                "<article class=\"incident {}\"><h3>{}</h3><p class=\"meta\">Started {}{}</p>",
                i.state.as_str(),
                esc(&i.name),
                time(i.started_at),
                i.resolved_at
                    .map(|r| format!(" · resolved {}", time(r)))
                    .unwrap_or_default(),
            );
            for u in &i.updates {
                let _ = write!(
                    h,
                    "<div class=\"update{}\"><span class=\"status\">{}</span> — <span class=\"body\">{}</span><div class=\"meta\">{}</div></div>",
                    if u.default { " default" } else { "" },
                    status_word(u.status),
                    esc(&u.body),
                    time(u.at),
                );
            }
            h.push_str("</article>");
        }
    }
    let _ = write!(
        h,
        "<p class=\"meta\">Updated {}.</p></main></body></html>",
        time(now)
    );
    h
}

async fn page(State(st): State<PublicState>) -> Response {
    let Some(cfg) = st.config.borrow().clone() else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let scenarios = st.scenarios.borrow().clone();
    let targets = |name: &str| {
        scenarios
            .iter()
            .find(|r| r.scenario.name == name)
            .map(|r| scenario_targets(&r.scenario))
            .unwrap_or_default()
    };
    let now = st.clock.now();
    let mut r = match board(&*st.store, &cfg, targets, now).await {
        Ok(b) => Html(render(&cfg, &b, now)).into_response(),
        Err(e) => {
            // The reason stays in medic's log: the public hears only that
            // the page is unavailable.
            tracing::error!(error = %e, "public status page: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(format!(
                    "<!DOCTYPE html><title>{}</title><p>The status page is unavailable; try again in a minute.</p>",
                    esc(&cfg.title)
                )),
            )
                .into_response()
        }
    };
    let h = r.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

/// The status update route (main listener, API token).
pub fn api_router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(post_update))
}

/// A public status update.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusUpdateBody {
    /// Who writes it (on the timeline).
    #[schema(
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
    )]
    by: String,
    #[serde(default = "investigating")]
    #[schema(pattern = "^(investigating|identified|monitoring)$")]
    status: String,
    /// The words shown on the public page.
    #[schema(
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]",
        max_length = 2000
    )]
    body: String,
}

/// An update posted.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Posted {
    /// Always `true`.
    pub ok: bool,
}

fn investigating() -> String {
    "investigating".into()
}

/// Posts a public status update (timeline, public page, Statuspage).
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/status-update",
    tag = "incidents",
    security(("bearer" = [])),
    params(("id" = i64, Path, example = 1, description = "The incident's id.")),
    request_body(content = StatusUpdateBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Posted.", body = Posted),
        (status = 400, description = "A malformed id or body.", body = super::openapi::Refusal),
        (status = 401, description = "Missing or wrong API token (or none configured).", body = super::openapi::Refusal),
        (status = 404, description = "No such incident.", body = super::openapi::Refusal),
        (status = 409, description = "The incident is resolved, there is no public page (`public_status:`), \
            or the incident affects none of its components.", body = super::openapi::Refusal),
        (status = 413, description = "A body over 2 MB.", body = String, content_type = "text/plain"),
        (status = 415, description = "A body that is not `application/json`.", body = super::openapi::Refusal),
        (status = 503, description = "Not the leader, the store failed, or the listener is busy.",
            body = super::openapi::Refusal),
    )
)]
async fn post_update(State(st): State<AppState>, Path(id): Path<String>, body: Bytes) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("incident id {id:?} is not a number"),
        );
    };
    let b: StatusUpdateBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body: {e}; expected {{\"by\": \"name\", \"status\": \"investigating|identified|monitoring\", \"body\": \"...\"}}"
                ),
            );
        }
    };
    let update = match PostUpdate::new(&b.by, &b.status, &b.body, "api") {
        Ok(u) => u,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(pager) = st.pager.borrow().clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this replica is not the leader (or is starting): ask the leader",
        );
    };
    match pager.post_update(id, update).await {
        Ok(()) => (StatusCode::OK, Json(Posted { ok: true })).into_response(),
        Err(e) => super::decisions::refused(e, id, "status update"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::public::{PublicIncident, PublicUpdate};
    use crate::page::statuspage::Status;

    #[test]
    fn everything_shown_is_escaped() {
        let cfg = crate::config::load_str(
            "medic.yaml",
            "public_status:\n  listen: 127.0.0.1:0\n  title: \"A<b>&\"\n  components:\n    \"<i>Portal</i>\": { scenarios: [x] }\n",
        )
        .unwrap()
        .public_status
        .unwrap();
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let bad = "<script>alert(1)</script>\"'&";
        let b = Board {
            components: vec![("<i>Portal</i>".into(), ComponentState::PartialOutage)],
            incidents: vec![PublicIncident {
                name: format!("Partial outage: {bad}"),
                components: vec!["<i>Portal</i>".into()],
                state: ComponentState::PartialOutage,
                status: Status::Identified,
                started_at: at,
                resolved_at: None,
                updates: vec![PublicUpdate {
                    at,
                    status: Status::Identified,
                    body: bad.into(),
                    default: false,
                }],
            }],
        };
        let h = render(&cfg, &b, at);
        assert!(
            !h.contains("<script>") && !h.contains("<i>") && !h.contains("<b>"),
            "{h}"
        );
        assert!(
            h.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"),
            "{h}"
        );
        assert!(h.contains("<title>A&lt;b&gt;&amp;</title>"), "{h}");
        assert!(h.contains("Partial outage</span>"), "{h}");
    }
}
