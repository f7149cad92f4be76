//! The mutating incidents API:
//! `POST /api/v1/incidents/{id}/{acknowledge|approve|reject|escalate|resolve}`
//! with a JSON body `{"by": "name", "step": "STEP" (optional), "note": "..."}`
//! and `Authorization: Bearer TOKEN` (config `http.api_token`, checked by
//! [`super::auth::api`] before the body is read: 401 without the right
//! token, 415 for a body that is not JSON); 400 for a malformed body
//! or id; 404 for an unknown incident or action; 409 for a step that is not
//! awaiting approval. Each decision is written on the incident's timeline
//! with who made it; repeating one changes nothing (`"first": false`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::openapi::Refusal;
use crate::page::{DecideError, Decision, DecisionKind};

/// The decision routes, and ticking the post-recovery checklist:
/// `POST /api/v1/incidents/{id}/checklist/{item}` with
/// `{"by": "name", "done": true}` (`done` defaults to true; false unticks).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(decide))
        .routes(routes!(tick))
}

/// Who ticks (or unticks) a checklist item.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TickBody {
    /// Who did the item.
    #[schema(
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
    )]
    by: String,
    /// `true` ticks (the default), `false` unticks.
    #[serde(default = "yes")]
    #[schema(default = true)]
    done: bool,
}

/// A tick taken: `first: false` when the item already was in that state.
#[derive(Serialize, ToSchema)]
struct Ticked {
    ok: bool,
    first: bool,
    message: String,
}

fn yes() -> bool {
    true
}

/// Ticks or unticks an item of the incident's post-recovery checklist.
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/checklist/{item}",
    tag = "incidents",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, example = 1, description = "The incident's id."),
        ("item" = String, Path, example = "1.1", description = "The checklist item's id."),
    ),
    request_body(content = TickBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Ticked (`first: false` when it already was).", body = Ticked),
        (status = 400, description = "A malformed id or body.", body = Refusal),
        (status = 401, description = "Missing or wrong API token (or none configured).", body = Refusal),
        (status = 404, description = "No such incident, or an unknown checklist item.", body = Refusal),
        (status = 413, description = "A body over 2 MB.", body = String, content_type = "text/plain"),
        (status = 415, description = "A body that is not `application/json`.", body = Refusal),
        (status = 503, description = "Not the leader, the store failed, or the listener is busy.", body = Refusal),
    )
)]
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
            Json(Ticked {
                ok: true,
                first: o.first,
                message: o.message,
            }),
        )
            .into_response(),
        Err(e) => refused(e, id, "checklist tick"),
    }
}

/// A decision (`DecisionKind::ALL`), as the path names it.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: the path is parsed by DecisionKind::parse
pub enum Action {
    Acknowledge,
    Approve,
    Reject,
    Escalate,
    Resolve,
}

/// A decision's body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Who decides (written on the timeline).
    #[schema(
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
    )]
    by: String,
    /// The step it is about (approve, reject); empty or absent for the
    /// step awaiting approval.
    #[serde(default)]
    step: Option<String>,
    #[serde(default)]
    note: String,
}

/// A decision taken (or already taken: `first` is false, nothing changed).
#[derive(Serialize, ToSchema)]
pub struct Decided {
    /// Always `true`.
    pub ok: bool,
    pub first: bool,
    pub message: String,
}

pub(super) fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({ "ok": false, "error": msg.into() }))).into_response()
}

/// The answer to a refused decision, tick or status update (`what`): an
/// unknown incident or item 404, a malformed request 400, one the
/// incident's state does not allow 409, the store 503 (logged).
pub(super) fn refused(e: DecideError, id: i64, what: &str) -> Response {
    let code = match &e {
        DecideError::NotFound(_) | DecideError::Unknown(_) => StatusCode::NOT_FOUND,
        DecideError::BadRequest(_) => StatusCode::BAD_REQUEST,
        DecideError::NotAwaiting(_) => StatusCode::CONFLICT,
        DecideError::Store(_) => {
            tracing::error!(incident = id, error = %e, "{what} failed: store");
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    error(code, e.to_string())
}

/// Acknowledges, approves, rejects, escalates or resolves an incident.
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/{action}",
    tag = "incidents",
    security(("bearer" = [])),
    params(
        ("id" = i64, Path, example = 1, description = "The incident's id."),
        ("action" = inline(Action), Path, description = "The decision."),
    ),
    request_body(content = DecisionBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Decided (`first: false` when it already was).", body = Decided),
        (status = 400, description = "A malformed id or body.", body = Refusal),
        (status = 401, description = "Missing or wrong API token (or none configured).", body = Refusal),
        (status = 404, description = "No such incident, or an unknown action.", body = Refusal),
        (status = 409, description = "The named step (or, without `step`, any step) is not awaiting approval.", body = Refusal),
        (status = 413, description = "A body over 2 MB.", body = String, content_type = "text/plain"),
        (status = 415, description = "A body that is not `application/json`.", body = Refusal),
        (status = 503, description = "Not the leader, the store failed, or the listener is busy.", body = Refusal),
    )
)]
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
    let body: DecisionBody = match serde_json::from_slice(&body) {
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
            Json(Decided {
                ok: true,
                first: o.first,
                message: o.message,
            }),
        )
            .into_response(),
        Err(e) => refused(e, id, "decision"),
    }
}
