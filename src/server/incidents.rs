//! The read-only incidents API (JSON):
//! - `GET /api/v1/incidents[?limit=N]`: open incidents and the `N` most
//!   recent ones (default 50, at most 1000);
//! - `GET /api/v1/incidents/{id}`: one incident with its timeline, its
//!   attempts and its scenario's RTO.
//!
//! Malformed input answers 400 and an unknown incident 404, each with the
//! reason as `{"error": ...}`; a store failure is 503.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

use super::AppState;
use crate::store::{IncidentId, StoreError};

/// Recent incidents listed by default.
const DEFAULT_LIMIT: usize = 50;
/// Most incidents one request may list.
const MAX_LIMIT: usize = 1000;

/// The incidents routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/incidents", get(list))
        .route("/api/v1/incidents/{id}", get(show))
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
    Json(json!({ "open": open, "recent": recent })).into_response()
}

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
    Json(json!({
        "incident": incident,
        "rto": rto,
        "rpo": rpo,
        "runbook": runbook,
        "checklist": crate::page::checklist::state(&timeline),
        "timeline": timeline,
        "attempts": attempts,
    }))
    .into_response()
}
