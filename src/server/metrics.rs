//! `GET /metrics`: medic's own metrics ([`crate::metrics`]) in the
//! OpenMetrics text format. Values kept in the store (open incidents,
//! remaining budgets) and the reload counters are refreshed per scrape.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

/// The metrics route.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let scenarios = st.scenarios.borrow().clone();
    let names: Vec<String> = scenarios.iter().map(|r| r.scenario.name.clone()).collect();
    match st.store.open_incidents().await {
        Ok(open) => {
            crate::metrics::open_incidents(&names, open.iter().map(|i| i.scenario.as_str()))
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read open incidents"),
    }
    match super::budgets(&*st.store, &scenarios, st.clock.now()).await {
        Ok(budgets) => {
            for b in budgets {
                crate::metrics::budget(&b.scenario, &b.step, i64::from(b.remaining));
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read budgets"),
    }
    st.readiness.borrow().reloads.export();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::encode(),
    )
}
