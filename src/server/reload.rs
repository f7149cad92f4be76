//! `POST /-/reload`: reload config and rules, answer with the outcome.
//!
//! 200 with the outcome when the new set runs; 422 with every problem
//! (`path:line:col: message`) when it was rejected and the old set keeps
//! running; 503 when reload is not available (or medic is stopping).
//! It needs the API token ([`super::auth::api`]): a reload restarts check
//! loops, so an open one would let anyone keep medic from noticing
//! failures. Requests are handled one at a time.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::openapi::Refusal;
use crate::reload::ReloadOutcome;

/// The reload route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(reload))
}

/// 503 with why (also as `errors`, the list a rejected reload gives).
fn unavailable(why: &str) -> (StatusCode, Json<serde_json::Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "ok": false, "error": why, "errors": [why] })),
    )
}

/// Reloads config and rules now.
#[utoipa::path(
    post,
    path = "/-/reload",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new set runs.", body = ReloadOutcome),
        (status = 401, description = "Missing or wrong API token (or none configured).", body = Refusal),
        (status = 422, description = "Rejected: every problem as `path:line:col: message`; the old set keeps running.",
            body = ReloadOutcome),
        (status = 503, description = "Reload is not available in this run, medic is stopping, \
            or the listener is busy.", body = Refusal),
    )
)]
async fn reload(State(st): State<AppState>) -> impl IntoResponse {
    let Some(handle) = &st.reload else {
        return unavailable("reload is not available in this run");
    };
    match handle.reload("POST /-/reload").await {
        Some(outcome) => {
            let code = if outcome.ok {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            (code, Json(json!(outcome)))
        }
        None => unavailable("medic is stopping"),
    }
}
