//! `GET /api/v1/jobs/{name}/runs`: a scheduled job's newest runs (backups,
//! verifications, restore tests), newest first, each with its timeline.
//!
//! `?limit=N` (1-100, default 20); 400 with the reason for a bad limit;
//! 503 with the reason when the store does not answer. An unknown job has
//! no runs: `[]`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::AppState;

/// The job-runs route.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/jobs/{name}/runs", get(runs))
}

#[derive(Deserialize)]
struct Params {
    limit: Option<String>,
}

async fn runs(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<Params>,
) -> impl IntoResponse {
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 20,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": "limit must be a whole number from 1 to 100" })),
            );
        }
    };
    let unavailable = |e: crate::store::StoreError| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": format!("store: {e}") })),
        )
    };
    let runs = match st.store.job_runs(&name, limit).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        let events = match st.store.job_events(r.id).await {
            Ok(e) => e,
            Err(e) => return unavailable(e),
        };
        out.push(json!({ "run": r, "timeline": events }));
    }
    (StatusCode::OK, Json(json!(out)))
}
