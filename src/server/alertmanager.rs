//! `POST /api/v1/alerts/alertmanager`: Alertmanager's webhook receiver
//! (webhook JSON version 4). Only deliveries with the intake's credentials
//! and a JSON body reach it ([`super::auth::intake`]).
//!
//! The answer is 2xx only once every alert of the delivery is in the store
//! (durably, for SQLite and PostgreSQL): Alertmanager retries anything
//! else, so nothing is lost. A malformed body is 400 with the reason, and
//! nothing of it is recorded. Unknown fields are ignored (Alertmanager adds
//! fields over time). Duplicate deliveries (an HA pair sends each group from
//! both members) are recorded once: alerts are keyed by fingerprint and
//! `startsAt`.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use chrono::{DateTime, Datelike, FixedOffset, Utc};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::observe::fingerprint;
use crate::store::{AlertRecord, AlertStatus};

/// The path Alertmanager's `webhook_configs.url` points at.
pub const PATH: &str = "/api/v1/alerts/alertmanager";

/// The largest delivery accepted (axum's default is 2 MB; a group of a few
/// thousand alerts with long annotations is larger, and a 413 would not be
/// retried by Alertmanager).
const MAX_BODY: usize = 32 << 20;

/// The receiver's route.
pub fn router() -> Router<AppState> {
    Router::new().route(
        PATH,
        post(receive).layer(axum::extract::DefaultBodyLimit::max(MAX_BODY)),
    )
}

/// The webhook body, version 4. Fields medic does not use are not listed
/// (and so ignored).
#[derive(Deserialize)]
struct Webhook {
    version: String,
    /// `firing` when any alert of the group fires, else `resolved`.
    status: Option<String>,
    alerts: Vec<WebhookAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert {
    /// Absent in payloads from old Alertmanagers (and trimmed samples).
    status: Option<String>,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: DateTime<FixedOffset>,
    ends_at: Option<DateTime<FixedOffset>>,
    #[serde(rename = "generatorURL", default)]
    generator_url: String,
}

async fn receive(State(st): State<AppState>, body: Bytes) -> Response {
    let now = st.clock.now();
    let alerts = match parse(&body, now) {
        Ok(a) => a,
        Err(why) => {
            tracing::warn!(error = %why, "alertmanager webhook refused");
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": why }))).into_response();
        }
    };
    match st.store.record_alerts(&alerts).await {
        Ok(()) => {
            let firing = alerts
                .iter()
                .filter(|a| a.status == AlertStatus::Firing)
                .count();
            tracing::info!(
                alerts = alerts.len(),
                firing,
                "alertmanager webhook recorded"
            );
            (
                StatusCode::OK,
                Json(json!({ "recorded": alerts.len(), "firing": firing })),
            )
                .into_response()
        }
        // Alertmanager retries 5xx: the delivery is not lost.
        Err(e) => {
            tracing::error!(error = %e, "alertmanager webhook not recorded: store failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": format!("not recorded: {e}") })),
            )
                .into_response()
        }
    }
}

/// Reads a webhook body into alerts to record, or says what is wrong.
pub fn parse(body: &[u8], now: DateTime<Utc>) -> Result<Vec<AlertRecord>, String> {
    let hook: Webhook =
        serde_json::from_slice(body).map_err(|e| format!("invalid webhook JSON: {e}"))?;
    if hook.version != "4" {
        return Err(format!(
            "unsupported webhook version {:?} (medic reads version \"4\")",
            hook.version
        ));
    }
    let group = match hook.status.as_deref() {
        None => None,
        Some(s) => Some(status(s).ok_or_else(|| format!("unknown group status {s:?}"))?),
    };
    hook.alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let ends_at = a
                .ends_at
                .map(|t| t.with_timezone(&Utc))
                .filter(|t| t.year() > 1);
            let status = match a.status.as_deref() {
                Some(s) => status(s).ok_or_else(|| format!("alerts[{i}]: unknown status {s:?}"))?,
                // Without a per-alert status: a resolved group is all
                // resolved; otherwise an end in the past means resolved.
                None if group == Some(AlertStatus::Resolved) => AlertStatus::Resolved,
                None if ends_at.is_some_and(|e| e <= now) => AlertStatus::Resolved,
                None => AlertStatus::Firing,
            };
            Ok(AlertRecord {
                fingerprint: fingerprint(&a.labels),
                starts_at: a.starts_at.with_timezone(&Utc),
                status,
                labels: a.labels,
                annotations: a.annotations,
                ends_at,
                generator_url: a.generator_url,
                received_at: now,
            })
        })
        .collect()
}

fn status(s: &str) -> Option<AlertStatus> {
    AlertStatus::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-03-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let err = |b: &str| parse(b.as_bytes(), now()).unwrap_err();
        assert!(err("{").starts_with("invalid webhook JSON: EOF while parsing"));
        assert_eq!(
            err(r#"{"version":"3","alerts":[]}"#),
            "unsupported webhook version \"3\" (medic reads version \"4\")"
        );
        assert!(err(r#"{"version":"4"}"#).contains("missing field `alerts`"));
        assert!(
            err(r#"{"version":"4","alerts":[{"labels":{}}]}"#).contains("missing field `startsAt`")
        );
        assert_eq!(
            err(
                r#"{"version":"4","alerts":[{"status":"burning","labels":{},"startsAt":"2026-01-01T00:00:00Z"}]}"#
            ),
            "alerts[0]: unknown status \"burning\""
        );
    }

    #[test]
    fn status_without_a_per_alert_field() {
        let body = |group: &str, ends: &str| {
            format!(
                r#"{{"version":"4","status":"{group}","alerts":[{{"labels":{{"a":"b"}},"startsAt":"2025-01-01T00:00:00Z","endsAt":"{ends}","extra":1}}],"new":true}}"#
            )
        };
        let st = |g: &str, e: &str| parse(body(g, e).as_bytes(), now()).unwrap()[0].status;
        assert_eq!(st("firing", "0001-01-01T00:00:00Z"), AlertStatus::Firing);
        assert_eq!(st("firing", "2030-01-01T00:00:00Z"), AlertStatus::Firing);
        assert_eq!(st("firing", "2025-06-01T00:00:00Z"), AlertStatus::Resolved);
        assert_eq!(
            st("resolved", "2030-01-01T00:00:00Z"),
            AlertStatus::Resolved
        );
        let a = &parse(body("firing", "0001-01-01T00:00:00Z").as_bytes(), now()).unwrap()[0];
        assert_eq!(a.ends_at, None, "the zero time is no end");
    }
}
