//! `GET /api/v1/jobs/{name}/runs`: a scheduled job's newest runs (backups,
//! verifications, restore tests), newest first, each with its timeline.
//!
//! `?limit=N` (1-100, default 20); 400 with the reason for a bad limit;
//! 503 with the reason when the store does not answer. An unknown job has
//! no runs: `[]`.
//!
//! `POST /api/v1/jobs/{name}/run` with `{"by": "name"}` and the API token:
//! runs the job now, by hand (the runbook's manual backup before a major
//! change). The run is recorded like a scheduled one, its slot now, marked
//! `manual` with `requested_by`; the answer (202) is the run's id once it
//! is recorded as begun, and `GET .../runs` shows it finish (the CLI's
//! `medic backup run JOB` waits for it). 404 for an unknown job, 409 for a
//! job in dry-run (nothing is run) or one already running by hand, 503 on a
//! replica that is not the leader (jobs run on the leader only).

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

/// The manual-run route (behind the API token).
pub fn run_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(run_now))
}

/// A manual run's body.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// Who asks for the run (recorded on the run).
    #[schema(
        pattern = r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
    )]
    by: String,
}

/// A manual run that started.
#[derive(Serialize, ToSchema)]
pub struct RunStarted {
    /// Always `true`.
    pub ok: bool,
    /// The run's id (in `GET /api/v1/jobs/{name}/runs`).
    pub run: i64,
    pub job: String,
    /// The job's kind, e.g. `redis.backup`.
    pub kind: String,
    pub message: String,
}

/// Runs a job now, by hand (recorded like a scheduled run, marked manual).
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{name}/run",
    tag = "jobs",
    security(("bearer" = [])),
    params(
        ("name" = String, Path, description = "The job's name in config (`jobs:`)."),
    ),
    request_body(content = RunBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The run began; it finishes in the background.", body = RunStarted),
        (status = 400, description = "A malformed body.", body = Refusal),
        (status = 401, description = "Missing or wrong API token (or none configured).", body = Refusal),
        (status = 404, description = "No such job.", body = Refusal),
        (status = 409, description = "The job is in dry-run (nothing was run), or a manual run of it is going on.", body = Refusal),
        (status = 413, description = "A body over 2 MB.", body = String, content_type = "text/plain"),
        (status = 415, description = "A body that is not `application/json`.", body = Refusal),
        (status = 503, description = "Not the leader, the store failed, or the listener is busy.", body = Refusal),
    )
)]
async fn run_now(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use crate::jobs::ManualError;
    let refuse = |code: StatusCode, msg: String| {
        (code, Json(json!({ "ok": false, "error": msg }))).into_response()
    };
    let body: RunBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("body: {e}; expected {{\"by\": \"name\"}}"),
            );
        }
    };
    if body.by.trim().is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "`by` must name who asks".into());
    }
    if st.pager.borrow().is_none() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "this replica is not the leader (or is starting): jobs run on the leader, ask it"
                .into(),
        );
    }
    match st.jobs.start(&name, &body.by, &st.store, &st.clock).await {
        Ok(s) => {
            tracing::info!(job = %name, by = %body.by, run = s.run, "manual run started");
            (
                StatusCode::ACCEPTED,
                Json(json!(RunStarted {
                    ok: true,
                    run: s.run,
                    job: name.clone(),
                    kind: s.kind.to_string(),
                    message: format!("{} {name} started by hand (run {})", s.kind, s.run),
                })),
            )
                .into_response()
        }
        Err(e) => {
            let code = match &e {
                ManualError::Unknown(..) => StatusCode::NOT_FOUND,
                ManualError::DryRun(_) | ManualError::Busy(_) | ManualError::Invalid(..) => {
                    StatusCode::CONFLICT
                }
                ManualError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            refuse(code, e.to_string())
        }
    }
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
