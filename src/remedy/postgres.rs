//! PostgreSQL actions: replica promotion and data quarantine.

use serde::Deserialize;

use crate::duration::Dur;

/// `postgres.promote-replica` under the promotion safety rules.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteReplicaParams {
    /// The primary (a config target of kind `postgres`).
    pub primary: String,
    /// Candidate replicas (config targets of kind `postgres`).
    pub replicas: Vec<String>,
    /// Refuse candidates lagging more than this (default 1 MiB).
    pub max_lag_bytes: Option<u64>,
    /// The primary must have been unreachable for this many checks...
    pub unreachable_checks: Option<u32>,
    /// ...over at least this long.
    pub unreachable_for: Option<Dur>,
    /// One failover per cluster per cooldown.
    pub cooldown: Option<Dur>,
}

/// `postgres.quarantine`: copy then delete affected rows, in one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineParams {
    pub target: String,
    /// The source table.
    pub table: String,
    /// The condition selecting corrupted rows.
    #[serde(rename = "where")]
    pub where_: String,
    /// Where the rows go; default `{table}_quarantine`.
    pub into: Option<String>,
    /// Refuse when more rows than this match.
    pub max_rows: Option<u64>,
}
