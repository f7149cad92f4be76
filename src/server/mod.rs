//! medic's HTTP surface (axum), bound to 127.0.0.1 unless configured
//! otherwise: `/healthz`, `/readyz`, and the routes later modules add
//! (webhooks, API, metrics). Each feature adds one sub-router in its own file
//! and one line in [`router`], in the group whose credential it needs
//! ([`auth`]); [`listener`] serves the whole with timeouts, caps and TLS.

pub mod alertmanager;
pub mod auth;
pub mod console;
pub mod decisions;
pub mod incidents;
pub mod jobs;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod public;
pub mod reload;
pub mod slack;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clock::Clock;
use crate::config::HttpConfig;
use crate::engine::ScenarioRuntime;
use crate::page::Pager;
use crate::reload::{ReloadHandle, ReloadStats};
use crate::store::prelude::*;

/// What `/readyz` reports besides store reachability.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Readiness {
    /// Rules loaded and scenarios running.
    pub rules_loaded: bool,
    /// Scenarios running / refused.
    pub scenarios: usize,
    pub refused: usize,
    /// `leader` or `follower` (a single replica is always the leader).
    pub role: String,
    /// The leadership term held, when leading.
    pub term: Option<u64>,
    /// The last failed reload, if the newest one failed.
    pub reload_error: Option<String>,
    /// Reload counters (also exported as metrics).
    pub reloads: ReloadStats,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub readiness: watch::Receiver<Readiness>,
    /// Queues reloads (`POST /-/reload`); `None` when reload is off.
    pub reload: Option<ReloadHandle>,
    /// The scenarios loaded now (rules, limits, RTOs).
    pub scenarios: watch::Receiver<Vec<Arc<ScenarioRuntime>>>,
    /// The leader's pager (decisions from the incident API and Slack);
    /// `None` on a follower or before leadership: such calls get 503.
    pub pager: watch::Receiver<Option<Arc<Pager>>>,
    /// The credentials of `http:`, resolved, swapped on reload
    /// ([`auth::Credentials`]).
    pub access: Arc<auth::Credentials>,
    /// `alerts:`, the bounds of the Alertmanager intake.
    pub alerts: crate::config::AlertLimits,
    /// The console's sessions ([`console`]).
    pub console: Arc<console::Console>,
    /// The config's jobs, for runs by hand (`POST /api/v1/jobs/{name}/run`).
    pub jobs: Arc<crate::jobs::Manual>,
}

/// Every route medic serves, each group behind its credential
/// ([`auth`]): health, readiness, metrics and the OpenAPI document are
/// open; Slack's requests are signed ([`slack`]). Every route is
/// registered with [`routes!`], so it is in the document
/// ([`openapi`]) too.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    use axum::middleware::from_fn_with_state as with;
    let api = OpenApiRouter::new()
        .merge(reload::router())
        .merge(jobs::run_router().route_layer(axum::middleware::from_fn(auth::json_body)))
        .merge(decisions::router().route_layer(axum::middleware::from_fn(auth::json_body)))
        .merge(public::api_router().route_layer(axum::middleware::from_fn(auth::json_body)))
        .route_layer(with(state.clone(), auth::api));
    let read = OpenApiRouter::new()
        .merge(jobs::router())
        .merge(incidents::router())
        .merge(status::router())
        .route_layer(with(state.clone(), auth::read));
    let console = console::read_router().route_layer(with(state.clone(), console::read));
    let intake = alertmanager::router().route_layer(with(state.clone(), auth::intake));
    OpenApiRouter::with_openapi(<openapi::Frame as utoipa::OpenApi>::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi::document))
        .merge(api)
        .merge(read)
        .merge(intake)
        .merge(console)
        .merge(console::session_router())
        .merge(metrics::router())
        .merge(slack::router())
}

/// The router of the main listener, serving [`routes`] and their document.
pub fn router(state: AppState) -> Router {
    let (router, doc) = routes(&state).split_for_parts();
    router
        .fallback(not_found)
        .layer(axum::Extension(openapi::Document::new(&doc)))
        .with_state(state)
}

/// Any path no route serves: 404 with why, as JSON.
async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(openapi::Error {
            error: format!(
                "no route {:?} (the routes: {})",
                uri.path().chars().take(100).collect::<String>(),
                openapi::PATH
            ),
        }),
    )
}

/// Alive: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "The process answers.", body = String, content_type = "text/plain",
            example = "ok\n"),
    )
)]
async fn healthz() -> &'static str {
    "ok\n"
}

/// What `/readyz` answers.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// Rules loaded and the store reachable.
    pub ready: bool,
    /// `ok`, or what is wrong with the store.
    pub store: String,
    pub status: Readiness,
}

/// `/readyz`'s 503: not ready, or the listener's refusal.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only: both are serialized as themselves
#[serde(untagged)]
pub enum NotReady {
    NotReady(Ready),
    Busy(openapi::Refusal),
}

/// Ready: rules loaded and the store reachable. 503 otherwise, with why.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Rules loaded and the store reachable.", body = Ready),
        (status = 503, description = "Not ready (rules not loaded, or the store does not answer within 2 s), \
            or the request was not answered within http.request_timeout.",
            body = NotReady),
    )
)]
async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    let r = st.readiness.borrow().clone();
    let store =
        match tokio::time::timeout(Duration::from_secs(2), st.store.recent_incidents(1)).await {
            Ok(Ok(_)) => "ok".to_string(),
            Ok(Err(e)) => format!("error: {e}"),
            Err(_) => "timed out".to_string(),
        };
    let ready = r.rules_loaded && store == "ok";
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Ready {
            ready,
            store,
            status: r,
        }),
    )
}

/// A step's attempt budget in its current limit window, for one instance
/// (the label set of a per-series incident; empty for a whole target).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub scenario: String,
    pub step: String,
    pub instance: String,
    /// The step's `limit.attempts`...
    pub limit: u32,
    /// ...per this window.
    pub per: String,
    /// Attempts that counted against the limit in the window.
    pub used: u32,
    pub remaining: u32,
}

/// Every step's budget now, from the ledger, counted as the plan counts it
/// ([`crate::engine::plan::spends_budget`], per scenario, step and
/// instance): one row per instance with attempts in the window, or one for
/// instance `""` when there are none (a fresh instance's full budget).
pub async fn budgets(
    store: &dyn Store,
    scenarios: &[Arc<ScenarioRuntime>],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Budget>, crate::store::StoreError> {
    use crate::engine::plan::{budget_since, spends_budget};
    let mut out = Vec::new();
    for rt in scenarios {
        let plan = &rt.scenario.plan;
        let Some(earliest) = plan.iter().map(|step| budget_since(step, now)).min() else {
            continue;
        };
        let attempts = store
            .scenario_attempts_since(&rt.scenario.name, earliest)
            .await?;
        for step in plan {
            let since = budget_since(step, now);
            let mut used: std::collections::BTreeMap<&str, u32> = Default::default();
            for a in &attempts {
                if a.step == step.name && a.started_at >= since && spends_budget(a) {
                    *used.entry(a.instance.as_str()).or_default() += 1;
                }
            }
            if used.is_empty() {
                used.insert("", 0);
            }
            for (instance, used) in used {
                out.push(Budget {
                    scenario: rt.scenario.name.clone(),
                    step: step.name.clone(),
                    instance: instance.to_string(),
                    limit: step.limit.attempts,
                    per: step.limit.per.to_string(),
                    used,
                    remaining: step.limit.attempts.saturating_sub(used),
                });
            }
        }
    }
    Ok(out)
}

/// Serves `app` on `listen` with the default bounds and no TLS until
/// `shutdown` ([`listener::serve`] with [`HttpConfig::on`]); returns the
/// bound address (port 0 picks a free one).
pub async fn serve(
    listen: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    listener::serve(&HttpConfig::on(listen), app, shutdown).await
}
