//! The read-only incidents API (JSON):
//! - `GET /api/v1/incidents[?limit=N]`: open incidents and the `N` most
//!   recent ones (default 50, at most 1000);
//! - `GET /api/v1/incidents/{id}[?from=P&limit=N]`: one incident with its
//!   timeline (a page of it: `N` entries, default 1000, at most 10000,
//!   from position `P`, default 0), its attempts and its scenario's RTO.
//!
//! Malformed input answers 400 and an unknown incident 404, each with the
//! reason as `{"error": ...}`; a store failure is 503.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::openapi::Error;
use crate::store::{Attempt, Incident, IncidentId, StoreError, TimelineEntry};

/// Recent incidents listed by default.
const DEFAULT_LIMIT: usize = 50;
/// Most incidents one request may list.
const MAX_LIMIT: usize = 1000;
/// Timeline entries one incident answer carries by default.
const TIMELINE_PAGE: usize = 1000;
/// The highest timeline position a request may name.
pub const MAX_POSITION: usize = 1_000_000_000;
/// Most timeline entries one answer may carry.
const MAX_TIMELINE_PAGE: usize = 10_000;

/// The incidents routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

/// `GET /api/v1/incidents`.
#[derive(Serialize, ToSchema)]
pub struct List {
    /// Every open incident.
    pub open: Vec<Incident>,
    /// The most recent ones, open or not, newest first.
    pub recent: Vec<Incident>,
}

/// `GET /api/v1/incidents/{id}`.
#[derive(Serialize, ToSchema)]
pub struct Show {
    pub incident: Incident,
    /// The scenario's RTO (`null` when its rules are no longer loaded).
    pub rto: Option<String>,
    pub rpo: Option<String>,
    pub runbook: Option<String>,
    /// The post-recovery checklist as ticked so far.
    pub checklist: Vec<crate::page::checklist::State>,
    /// A page of the timeline: the entries from position `timeline_from`
    /// on (0 is the first written), in the order written.
    pub timeline: Vec<TimelineEntry>,
    /// The position of the page's first entry.
    pub timeline_from: usize,
    /// How many entries the whole timeline holds: the next page starts at
    /// `timeline_from` plus the page's length, while that is below it.
    pub timeline_total: usize,
    pub attempts: Vec<Attempt>,
}

/// An error answer: `code` with `{"error": why}`.
pub fn error(code: StatusCode, why: impl Into<String>) -> Response {
    (code, Json(json!({ "error": why.into() }))).into_response()
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(id) => {
            error(StatusCode::NOT_FOUND, format!("incident {id} not found"))
        }
        e => error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    }
}

/// Parses an incident id from a path segment: a positive integer; the
/// reason when it is not.
pub fn parse_id(raw: &str) -> Result<IncidentId, String> {
    match raw.parse::<IncidentId>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(format!(
            "incident id {:?} is not a positive integer",
            raw.chars().take(40).collect::<String>()
        )),
    }
}

/// Open incidents and the most recent ones.
#[utoipa::path(
    get,
    path = "/api/v1/incidents",
    tag = "incidents",
    security(("bearer" = []), ("basic" = [])),
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "How many recent incidents (default 50)."),
    ),
    responses(
        (status = 200, description = "Open and recent incidents.", body = List),
        (status = 400, description = "A bad limit or an unknown query parameter.", body = Error),
        (status = 401, description = "Missing or wrong read token (or reads disabled).", body = super::openapi::Refusal),
        (status = 503, description = "The store failed, or the listener is busy.", body = Error),
    )
)]
async fn list(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(k) = q.keys().find(|k| k.as_str() != "limit") {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown query parameter {:?} (known: limit)",
                k.chars().take(40).collect::<String>()
            ),
        );
    }
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit must be an integer from 1 to {MAX_LIMIT}"),
            );
        }
    };
    let open = match st.store.open_incidents().await {
        Ok(o) => o,
        Err(e) => return store_error(e),
    };
    let recent = match st.store.recent_incidents(limit).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    Json(List { open, recent }).into_response()
}

/// One incident with its timeline, its attempts and its scenario's RTO.
#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}",
    tag = "incidents",
    security(("bearer" = []), ("basic" = [])),
    params(
        ("id" = i64, Path, minimum = 1, example = 1, description = "The incident's id."),
        ("from" = Option<u32>, Query, minimum = 0, maximum = 1000000000,
            description = "The position of the first timeline entry (default 0, the first written)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000,
            description = "How many timeline entries (default 1000)."),
    ),
    responses(
        (status = 200, description = "The incident.", body = Show),
        (status = 400, description = "An id that is not a positive integer, a bad page or an unknown query parameter.", body = Error),
        (status = 401, description = "Missing or wrong read token (or reads disabled).", body = super::openapi::Refusal),
        (status = 404, description = "No such incident.", body = Error),
        (status = 503, description = "The store failed, or the listener is busy.", body = Error),
    )
)]
async fn show(
    State(st): State<AppState>,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let id = match parse_id(&raw) {
        Ok(id) => id,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let (from, limit) = match page_of(&q) {
        Ok(p) => p,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let incident = match st.store.incident(id).await {
        Ok(Some(i)) => i,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("incident {id} not found")),
        Err(e) => return store_error(e),
    };
    let timeline = match st.store.timeline_range(id, from, limit).await {
        Ok(t) => t,
        Err(e) => return store_error(e),
    };
    let total = match st.store.timeline_len(id).await {
        Ok(n) => n,
        Err(e) => return store_error(e),
    };
    let checklist = match st.store.timeline_kinds(id, &["checklist"], None).await {
        Ok(t) => crate::page::checklist::state(&t),
        Err(e) => return store_error(e),
    };
    let attempts = match st.store.incident_attempts(id).await {
        Ok(a) => a,
        Err(e) => return store_error(e),
    };
    let (rto, rpo, runbook) = st
        .scenarios
        .borrow()
        .iter()
        .find(|r| r.scenario.name == incident.scenario)
        .map(|r| {
            (
                Some(r.scenario.rto.to_string()),
                r.scenario.rpo.map(|d| d.to_string()),
                r.scenario.runbook.clone(),
            )
        })
        .unwrap_or_default();
    Json(Show {
        incident,
        rto,
        rpo,
        runbook,
        checklist,
        timeline,
        timeline_from: from,
        timeline_total: total,
        attempts,
    })
    .into_response()
}

/// The timeline page `?from=P&limit=N` asks for; the reason when it is bad.
fn page_of(q: &HashMap<String, String>) -> Result<(usize, usize), String> {
    if let Some(k) = q.keys().find(|k| !matches!(k.as_str(), "from" | "limit")) {
        return Err(format!(
            "unknown query parameter {:?} (known: from, limit)",
            k.chars().take(40).collect::<String>()
        ));
    }
    let cut = |v: &str| v.chars().take(40).collect::<String>();
    let from = match q.get("from").map(|v| (v, v.parse::<usize>())) {
        None => 0,
        Some((_, Ok(n))) if n <= MAX_POSITION => n,
        Some((v, _)) => {
            return Err(format!(
                "from {:?} is not a timeline position (0 to {MAX_POSITION})",
                cut(v)
            ));
        }
    };
    let limit = match q.get("limit").map(|v| (v, v.parse::<usize>())) {
        None => TIMELINE_PAGE,
        Some((_, Ok(n))) if (1..=MAX_TIMELINE_PAGE).contains(&n) => n,
        Some((v, _)) => {
            return Err(format!(
                "limit {:?} must be a whole number from 1 to {MAX_TIMELINE_PAGE}",
                cut(v)
            ));
        }
    };
    Ok((from, limit))
}
