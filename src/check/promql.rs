//! `promql`: an instant query against the Prometheus HTTP API.

use serde::Deserialize;

/// `check: { promql: 'EXPR' }` or `{ promql: { query: EXPR, source: prom } }`.
/// Each series of the result is failing; an empty result is ok.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromqlParams {
    pub query: String,
    /// A config target of kind `prometheus`; default: the only one.
    pub source: Option<String>,
}
