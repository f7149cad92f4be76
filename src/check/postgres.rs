//! `postgres`: readiness, role, replica lag, and read-only SQL checks.

use serde::Deserialize;

/// `check: { postgres: { target: db, ready: true } }` and friends.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresParams {
    /// A config target of kind `postgres`.
    pub target: String,
    /// Reachable and answering `SELECT 1` (the runbook's pg_isready).
    #[serde(default)]
    pub ready: bool,
    /// Expected role: `primary` or `replica`.
    pub role: Option<String>,
    /// Failing when replay lag exceeds this many bytes.
    pub max_lag_bytes: Option<u64>,
    /// Failing when replay lag exceeds this many seconds.
    pub max_lag_seconds: Option<f64>,
    /// A read-only query returning one number.
    pub sql: Option<String>,
    /// With `sql`: failing when the number is above this.
    pub above: Option<f64>,
    /// With `sql`: failing when the number is below this.
    pub below: Option<f64>,
}
