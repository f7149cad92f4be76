//! The mutating incidents API:
//! `POST /api/v1/incidents/{id}/{acknowledge|approve|reject|escalate|resolve}`
//! with a JSON body `{"by": "name", "step": "STEP" (optional), "note": "..."}`
//! and `Authorization: Bearer TOKEN` (config `http.api_token`, checked by
//! [`super::auth::api`] before the body is read: 401 without the right
//! token, 415 for a body that is not JSON); 400 for a malformed body
//! or id; 404 for an unknown incident or action; 409 for a step that is not
//! awaiting approval. Each decision is written on the incident's timeline
//! with who made it; repeating one changes nothing (`"first": false`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::page::{DecideError, Decision, DecisionKind};

/// The decision routes, and ticking the post-recovery checklist:
/// `POST /api/v1/incidents/{id}/checklist/{item}` with
/// `{"by": "name", "done": true}` (`done` defaults to true; false unticks).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/incidents/{id}/{action}", post(decide))
        .route("/api/v1/incidents/{id}/checklist/{item}", post(tick))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TickBody {
    by: String,
    #[serde(default = "yes")]
    done: bool,
}

fn yes() -> bool {
    true
}

async fn tick(
    State(st): State<AppState>,
    Path((id, item)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("incident id {id:?} is not a number"),
        );
    };
    let body: TickBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body: {e}; expected {{\"by\": \"name\", \"done\": true}}"),
            );
        }
    };
    let Some(pager) = st.pager.borrow().clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this replica is not the leader (or is starting): ask the leader",
        );
    };
    match pager.tick(id, &item, body.done, &body.by, "api").await {
        Ok(o) => (
            StatusCode::OK,
            Json(json!({ "ok": true, "first": o.first, "message": o.message })),
        )
            .into_response(),
        Err(e @ DecideError::NotFound(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(DecideError::BadRequest(m)) if m.starts_with("unknown checklist item") => {
            error(StatusCode::NOT_FOUND, m)
        }
        Err(DecideError::BadRequest(m)) | Err(DecideError::NotAwaiting(m)) => {
            error(StatusCode::BAD_REQUEST, m)
        }
        Err(e @ DecideError::Store(_)) => {
            tracing::error!(incident = id, error = %e, "checklist tick failed: store");
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    by: String,
    #[serde(default)]
    step: Option<String>,
    #[serde(default)]
    note: String,
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({ "ok": false, "error": msg.into() }))).into_response()
}

async fn decide(
    State(st): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some(kind) = DecisionKind::parse(&action) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown action {action:?}; one of: {}",
                DecisionKind::ALL.join(", ")
            ),
        );
    };
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("incident id {id:?} is not a number"),
        );
    };
    let body: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body: {e}; expected {{\"by\": \"name\", \"step\": \"STEP\" (optional), \"note\": \"...\"}}"
                ),
            );
        }
    };
    let Some(pager) = st.pager.borrow().clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this replica is not the leader (or is starting): ask the leader",
        );
    };
    let d = Decision {
        kind,
        by: body.by,
        step: body.step.filter(|s| !s.is_empty()),
        note: body.note,
        via: "api".into(),
    };
    match pager.decide(id, d).await {
        Ok(o) => (
            StatusCode::OK,
            Json(json!({ "ok": true, "first": o.first, "message": o.message })),
        )
            .into_response(),
        Err(e @ DecideError::NotFound(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(DecideError::NotAwaiting(m)) => error(StatusCode::CONFLICT, m),
        Err(DecideError::BadRequest(m)) => error(StatusCode::BAD_REQUEST, m),
        Err(e @ DecideError::Store(_)) => {
            tracing::error!(incident = id, error = %e, "decision failed: store");
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}
