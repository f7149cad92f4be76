//! `GET /metrics`: medic's own metrics ([`crate::metrics`]) in the format
//! the scraper's `Accept` asks for (Prometheus text 0.0.4 unless OpenMetrics
//! is preferred). Values kept in the store (open incidents, remaining
//! budgets) and the reload counters are refreshed per scrape.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::metrics::Format;

/// The metrics route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// medic's own metrics, in the format `Accept` asks for.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus text 0.0.4, or OpenMetrics 1.0.0 when preferred.",
            content(
                (String = "text/plain; version=0.0.4; charset=utf-8"),
                (String = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
            )),
        (status = 503, description = "Too many requests in flight, or not answered in time.",
            body = super::openapi::Refusal),
    )
)]
async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let scenarios = st.scenarios.borrow().clone();
    let names: Vec<String> = scenarios.iter().map(|r| r.scenario.name.clone()).collect();
    match st.store.open_incidents().await {
        Ok(open) => crate::metrics::open_incidents(
            &names,
            open.iter().map(|i| (i.scenario.as_str(), i.state.as_str())),
        ),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read open incidents"),
    }
    match super::budgets(&*st.store, &scenarios, st.clock.now()).await {
        Ok(budgets) => {
            // Per step, the instance with the fewest attempts left.
            let mut least = std::collections::BTreeMap::<(&str, &str), u32>::new();
            for b in &budgets {
                let e = least
                    .entry((b.scenario.as_str(), b.step.as_str()))
                    .or_insert(b.remaining);
                *e = (*e).min(b.remaining);
            }
            crate::metrics::budgets(least.into_iter().map(|((sc, st), n)| (sc, st, n)));
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read budgets"),
    }
    st.readiness.borrow().reloads.export();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        crate::metrics::encode(format),
    )
}
