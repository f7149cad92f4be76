//! The read-only incidents API (JSON):
//! - `GET /api/v1/incidents[?limit=N]`: open incidents and the `N` most
//!   recent ones (default 50, at most 1000);
//! - `GET /api/v1/incidents/{id}`: one incident with its timeline, its
//!   attempts and its scenario's RTO.
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
    pub timeline: Vec<TimelineEntry>,
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
    params(("id" = i64, Path, minimum = 1, example = 1, description = "The incident's id.")),
    responses(
        (status = 200, description = "The incident.", body = Show),
        (status = 400, description = "An id that is not a positive integer.", body = Error),
        (status = 401, description = "Missing or wrong read token (or reads disabled).", body = super::openapi::Refusal),
        (status = 404, description = "No such incident.", body = Error),
        (status = 503, description = "The store failed, or the listener is busy.", body = Error),
    )
)]
async fn show(State(st): State<AppState>, Path(raw): Path<String>) -> Response {
    let id = match parse_id(&raw) {
        Ok(id) => id,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let incident = match st.store.incident(id).await {
        Ok(Some(i)) => i,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("incident {id} not found")),
        Err(e) => return store_error(e),
    };
    let timeline = match st.store.timeline(id).await {
        Ok(t) => t,
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
        checklist: crate::page::checklist::state(&timeline),
        timeline,
        attempts,
    })
    .into_response()
}
