//! The status page (`GET /` and `GET /status`): read-only HTML, one
//! document with inline CSS, no external assets and no JavaScript (it
//! refreshes itself with a meta tag). Open and recent incidents with their
//! RTO clocks, the timelines and attempts of open incidents (and of the one
//! named by `?incident=ID`), and every step's remaining budget.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::store::{Attempt, Incident, IncidentId, TimelineEntry};

/// Recent incidents shown.
const RECENT: usize = 25;
/// Timeline entries shown per incident (the newest).
const PAGE_ENTRIES: usize = 200;

/// The status page routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(root))
        .routes(routes!(status))
}

/// The status page.
#[utoipa::path(
    get,
    path = "/",
    tag = "status page",
    security(("bearer" = []), ("basic" = [])),
    params(("incident" = Option<i64>, Query, minimum = 1,
        description = "Also show this incident's timeline and attempts.")),
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 400, description = "An incident id that is not a positive integer.", body = String, content_type = "text/html"),
        (status = 401, description = "Missing or wrong read token (or reads disabled).", body = super::openapi::Refusal),
        (status = 404, description = "No such incident.", body = String, content_type = "text/html"),
        (status = 503, description = "The store failed, or the listener is busy.",
            content((String = "text/html"), (super::openapi::Refusal = "application/json"))),
    )
)]
async fn root(st: State<AppState>, q: Query<HashMap<String, String>>) -> Response {
    page(st, q).await
}

/// The status page (the same as `/`).
#[utoipa::path(
    get,
    path = "/status",
    tag = "status page",
    security(("bearer" = []), ("basic" = [])),
    params(("incident" = Option<i64>, Query, minimum = 1,
        description = "Also show this incident's timeline and attempts.")),
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 400, description = "An incident id that is not a positive integer.", body = String, content_type = "text/html"),
        (status = 401, description = "Missing or wrong read token (or reads disabled).", body = super::openapi::Refusal),
        (status = 404, description = "No such incident.", body = String, content_type = "text/html"),
        (status = 503, description = "The store failed, or the listener is busy.",
            content((String = "text/html"), (super::openapi::Refusal = "application/json"))),
    )
)]
async fn status(st: State<AppState>, q: Query<HashMap<String, String>>) -> Response {
    page(st, q).await
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A duration for humans, to the second.
pub fn human(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.5em 0;background:#fff}\
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#eee}.meta{color:#555}.over{color:#b00;font-weight:bold}.ok{color:#070}\
.bar{display:inline-block;width:10em;height:.8em;background:#ddd;vertical-align:middle}\
.bar span{display:block;height:100%;background:#4a4}.bar span.over{background:#c33}\
code{font-size:.9em}td code{display:block;max-width:40em;word-break:break-all}";

async fn page(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let now = st.clock.now();
    let selected = match q.get("incident").map(|raw| super::incidents::parse_id(raw)) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(why)) => {
            return (
                StatusCode::BAD_REQUEST,
                Html(format!(
                    "<!DOCTYPE html><title>medic</title><p>{}</p>",
                    esc(&why)
                )),
            )
                .into_response();
        }
    };
    let scenarios = st.scenarios.borrow().clone();
    let rto: HashMap<String, std::time::Duration> = scenarios
        .iter()
        .map(|r| (r.scenario.name.clone(), r.scenario.rto.get()))
        .collect();
    let ready = st.readiness.borrow().clone();
    let loaded = async {
        let open = st.store.open_incidents().await?;
        let recent = st.store.recent_incidents(RECENT).await?;
        let budgets = super::budgets(&*st.store, &scenarios, now).await?;
        let mut shown: Vec<Incident> = open.clone();
        if let Some(id) = selected
            && !shown.iter().any(|i| i.id == id)
        {
            match st.store.incident(id).await? {
                Some(i) => shown.push(i),
                None => return Err(crate::store::StoreError::NotFound(id)),
            }
        }
        let mut details = Vec::new();
        for i in shown {
            // The newest entries only: a long-open incident's full
            // timeline is paged by the API and the console.
            let total = st.store.timeline_len(i.id).await?;
            let earlier = total.saturating_sub(PAGE_ENTRIES);
            let timeline = st.store.timeline_range(i.id, earlier, PAGE_ENTRIES).await?;
            let attempts = st.store.incident_attempts(i.id).await?;
            details.push((i, (earlier, timeline), attempts));
        }
        Ok((open, recent, budgets, details))
    }
    .await;
    let (open, recent, budgets, details) = match loaded {
        Ok(v) => v,
        Err(crate::store::StoreError::NotFound(id)) => {
            return (
                StatusCode::NOT_FOUND,
                Html(format!(
                    "<!DOCTYPE html><title>medic</title><p>incident {id} not found</p>"
                )),
            )
                .into_response();
        }
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(format!(
                    "<!DOCTYPE html><title>medic</title><p>store unavailable: {}</p>",
                    esc(&e.to_string())
                )),
            )
                .into_response();
        }
    };

    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>medic status</title><style>{STYLE}</style></head><body>\
         <h1>medic status</h1><p class=\"meta\" id=\"role\">This replica is the <b>{}</b>{}. \
         {} scenarios loaded{}. Page generated {}.</p>",
        esc(&ready.role),
        ready
            .term
            .map(|t| format!(" (term {t})"))
            .unwrap_or_default(),
        ready.scenarios,
        if ready.reloads.last_ok {
            ""
        } else {
            "; <span class=\"over\">the last reload FAILED</span>"
        },
        time(now),
    );

    let _ = write!(h, "<h2 id=\"open\">Open incidents ({})</h2>", open.len());
    if open.is_empty() {
        h.push_str("<p class=\"ok\">No open incidents.</p>");
    } else {
        h.push_str("<table><tr><th>#</th><th>scenario</th><th>state</th><th>severity</th><th>opened</th><th>RTO clock</th><th>summary</th></tr>");
        // A tree: each cause, its dependents indented under it.
        for (depth, i) in crate::store::tree::order(&open) {
            let scenario = if depth == 0 {
                esc(&i.scenario)
            } else {
                format!(
                    "<span class=\"dep\" style=\"padding-left:{}em\">└ {} <span class=\"meta\">waits on <a href=\"#incident-{c}\">#{c}</a></span></span>",
                    depth,
                    esc(&i.scenario),
                    c = i.cause.unwrap_or_default()
                )
            };
            let _ = write!(
                h,
                "<tr><td><a href=\"#incident-{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                scenario,
                i.state.as_str(),
                esc(&i.severity),
                time(i.opened_at),
                rto_clock(i, rto.get(&i.scenario).copied(), now),
                esc(&i.summary),
                id = i.id,
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2 id=\"budgets\">Budgets</h2>");
    if budgets.is_empty() {
        h.push_str("<p>No remediation steps loaded.</p>");
    } else {
        h.push_str("<table><tr><th>scenario</th><th>step</th><th>instance</th><th>used</th><th>remaining</th><th>window</th></tr>");
        for b in &budgets {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} of {}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                esc(&b.scenario),
                esc(&b.step),
                if b.instance.is_empty() {
                    "—".to_string()
                } else {
                    esc(&b.instance)
                },
                b.used,
                b.limit,
                if b.remaining == 0 { "over" } else { "ok" },
                b.remaining,
                esc(&b.per),
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2 id=\"recent\">Recent incidents</h2>");
    if recent.is_empty() {
        h.push_str("<p>None yet.</p>");
    } else {
        h.push_str("<table><tr><th>#</th><th>scenario</th><th>state</th><th>opened</th><th>resolved</th><th>recovery vs RTO</th></tr>");
        for i in &recent {
            let _ = write!(
                h,
                "<tr><td><a href=\"/status?incident={id}#incident-{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&i.scenario),
                i.state.as_str(),
                time(i.opened_at),
                i.resolved_at.map(time).unwrap_or_else(|| "—".into()),
                rto_clock(i, rto.get(&i.scenario).copied(), now),
                id = i.id,
            );
        }
        h.push_str("</table>");
    }

    for (i, (earlier, timeline), attempts) in &details {
        let dependents: Vec<IncidentId> = details
            .iter()
            .filter(|(d, _, _)| d.cause == Some(i.id))
            .map(|(d, _, _)| d.id)
            .collect();
        incident_section(&mut h, i, (*earlier, timeline), attempts, &dependents);
    }
    h.push_str("</body></html>");
    Html(h).into_response()
}

/// Elapsed time against the RTO: a bar and words. Resolved incidents show
/// their recovery time.
pub fn rto_clock(i: &Incident, rto: Option<std::time::Duration>, now: DateTime<Utc>) -> String {
    let end = i.resolved_at.unwrap_or(now);
    let elapsed = end - i.opened_at;
    let Some(rto) = rto.filter(|r| !r.is_zero()) else {
        return format!("{} (no RTO loaded)", human(elapsed));
    };
    let rto_c = chrono::Duration::from_std(rto).unwrap_or(chrono::Duration::MAX);
    let pct = (elapsed.num_milliseconds() as f64 / rto.as_millis().max(1) as f64 * 100.0)
        .clamp(0.0, 100.0);
    let over = elapsed > rto_c;
    let words = match (i.resolved_at.is_some(), over) {
        (true, false) => format!(
            "recovered in {} (RTO {}: met)",
            human(elapsed),
            human(rto_c)
        ),
        (true, true) => format!(
            "recovered in {} (RTO {}: <span class=\"over\">missed</span>)",
            human(elapsed),
            human(rto_c)
        ),
        (false, false) => format!(
            "{} of {} ({} left)",
            human(elapsed),
            human(rto_c),
            human(rto_c - elapsed)
        ),
        (false, true) => format!(
            "<span class=\"over\">RTO exceeded by {}</span> ({} of {})",
            human(elapsed - rto_c),
            human(elapsed),
            human(rto_c)
        ),
    };
    format!(
        "<span class=\"bar\"><span{} style=\"width:{pct:.0}%\"></span></span> {words}",
        if over { " class=\"over\"" } else { "" }
    )
}

fn incident_section(
    h: &mut String,
    i: &Incident,
    (earlier, timeline): (usize, &[TimelineEntry]),
    attempts: &[Attempt],
    dependents: &[IncidentId],
) {
    let _ = write!(
        h,
        "<h2 id=\"incident-{id}\">Incident {id}: {} ({})</h2><p class=\"meta\">{} · opened {}</p>",
        esc(&i.scenario),
        i.state.as_str(),
        esc(&i.summary),
        time(i.opened_at),
        id = i.id,
    );
    if let Some(c) = i.cause {
        let _ = write!(
            h,
            "<p class=\"cause\">Caused by <a href=\"#incident-{c}\">incident {c}</a>: it waits on it instead of acting.</p>"
        );
    }
    if !dependents.is_empty() {
        let links: Vec<String> = dependents
            .iter()
            .map(|d| format!("<a href=\"#incident-{d}\">{d}</a>"))
            .collect();
        let _ = write!(
            h,
            "<p class=\"dependents\">Dependents (waiting on this one): {}</p>",
            links.join(", ")
        );
    }
    h.push_str("<h3>Timeline</h3>");
    if earlier > 0 {
        let _ = write!(
            h,
            "<p class=\"meta earlier\">The newest {} entries; {earlier} earlier ones are in the \
             <a href=\"/console/incidents/{id}?from=0\">console</a> and the API \
             (<code>/api/v1/incidents/{id}?from=0</code>).</p>",
            timeline.len(),
            id = i.id,
        );
    }
    h.push_str("<table><tr><th>at</th><th>kind</th><th>what</th></tr>");
    for e in timeline {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(e.at),
            esc(&e.kind),
            esc(&e.message)
        );
    }
    h.push_str("</table>");
    if !attempts.is_empty() {
        h.push_str("<h3>Attempts</h3><table><tr><th>step</th><th>action</th><th>started</th><th>outcome</th><th>why</th><th>inputs</th></tr>");
        for a in attempts {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(&a.step),
                esc(&a.action),
                time(a.started_at),
                a.outcome.map_or("in flight", |o| o.as_str()),
                esc(&a.reason),
                esc(&a.inputs.to_string()),
            );
        }
        h.push_str("</table>");
    }
}
