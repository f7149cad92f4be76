//! `POST /-/reload`: reload config and rules, answer with the outcome.
//!
//! 200 with the outcome when the new set runs; 422 with every problem
//! (`path:line:col: message`) when it was rejected and the old set keeps
//! running; 503 when reload is not available (or medic is stopping).
//! It needs the API token ([`super::auth::api`]): a reload restarts check
//! loops, so an open one would let anyone keep medic from noticing
//! failures. Requests are handled one at a time.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::post;
use serde_json::json;

use super::AppState;

/// The reload route.
pub fn router() -> Router<AppState> {
    Router::new().route("/-/reload", post(reload))
}

async fn reload(State(st): State<AppState>) -> impl IntoResponse {
    let Some(handle) = &st.reload else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ok": false, "errors": ["reload is not available in this run"] })),
        );
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
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ok": false, "errors": ["medic is stopping"] })),
        ),
    }
}
