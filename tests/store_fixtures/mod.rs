//! Inputs shared by the store suites (`store_conformance.rs`,
//! `store_sqlite.rs`): times in milliseconds and a Redis incident's
//! incident and attempt.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use medic::store::{NewAttempt, NewIncident};
use serde_json::json;

/// A wall-clock time `ms` milliseconds after a fixed base.
pub fn at_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
}

pub fn incident_at(scenario: &str, instance: &str, at: DateTime<Utc>) -> NewIncident {
    NewIncident {
        scenario: scenario.into(),
        instance: instance.into(),
        severity: "high".into(),
        summary: format!("{scenario} on {instance:?}"),
        at,
    }
}

pub fn attempt_at(incident_id: i64, step: &str, key: &str, at: DateTime<Utc>) -> NewAttempt {
    NewAttempt {
        incident_id,
        scenario: "redis-cache-failure".into(),
        instance: "cache".into(),
        step: step.into(),
        step_index: 0,
        action: "exec".into(),
        key: key.into(),
        started_at: at,
        inputs: json!({"args": ["docker-compose", "restart", "redis"]}),
    }
}
