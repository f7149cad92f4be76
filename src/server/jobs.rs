//! `GET /api/v1/jobs/{name}/runs`: a scheduled job's newest runs (backups,
//! verifications, restore tests), newest first, each with its timeline.
//!
//! `?limit=N` (1-100, default 20); 400 with the reason for a bad limit;
//! 503 with the reason when the store does not answer. An unknown job has
//! no runs: `[]`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::openapi::{Error, Refusal};
use crate::store::{JobRun, TimelineEntry};

/// The job-runs route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(runs))
}

/// One run with its timeline.
#[derive(Serialize, ToSchema)]
pub struct RunWithTimeline {
    pub run: JobRun,
    pub timeline: Vec<TimelineEntry>,
}

/// A scheduled job's newest runs, newest first, each with its timeline.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{name}/runs",
    tag = "jobs",
    security(("bearer" = []), ("basic" = [])),
    params(
        ("name" = String, Path, description = "The job's name in config (`jobs:`)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100,
            description = "How many runs (default 20)."),
    ),
    responses(
        (status = 200, description = "The runs (`[]` for an unknown job).", body = Vec<RunWithTimeline>),
        (status = 400, description = "A bad limit.", body = Error),
        (status = 401, description = "Missing or wrong read token (or reads disabled).", body = Refusal),
        (status = 503, description = "The store failed, or the listener is busy.", body = Error),
    )
)]
async fn runs(
    State(st): State<AppState>,
    Path(name): Path<String>,
    // A map, not a struct: a repeated or odd parameter is no rejection
    // (axum's is text/plain), the last `limit` counts.
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> impl IntoResponse {
    let limit = match q.get("limit").map(String::as_str).map(str::parse::<usize>) {
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
        out.push(RunWithTimeline {
            run: r,
            timeline: events,
        });
    }
    (StatusCode::OK, Json(json!(out)))
}
