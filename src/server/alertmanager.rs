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
//! `startsAt`, and a resolved alert ends exactly the firing with its
//! fingerprint and `startsAt`.
//!
//! Bounded (`alerts:` in the config): a body over `max_delivery_bytes` or
//! with more than `max_per_delivery` alerts is 413, and one that would take
//! the firing alerts over `max_firing` is 429, each with the reason and
//! nothing recorded. A store that does not answer within [`STORE_TIMEOUT`]
//! is 503 (Alertmanager retries) and the queued write is dropped. Resolved
//! alerts are pruned after `resolved_retention` ([`prune_loop`]).

use std::collections::BTreeMap;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Datelike, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::AppState;
use crate::clock::Clock;
use crate::config::AlertLimits;
use crate::observe::fingerprint;
use crate::store::{AlertRecord, AlertStatus, Store, StoreError};

/// The path Alertmanager's `webhook_configs.url` points at.
pub const PATH: &str = "/api/v1/alerts/alertmanager";

/// How long a delivery waits for the store before it is answered 503 (and
/// its queued write dropped): a store that slow is overloaded, and waiting
/// callers would only pile up behind it.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often resolved alerts past their retention are pruned, and how many
/// at most each time (so one prune never holds the store for long).
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_BATCH: usize = 5000;

/// The receiver's route. The body limit is `alerts.max_delivery_bytes`,
/// applied in [`receive`] (to answer 413 with the reason).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive).layer(axum::extract::DefaultBodyLimit::disable()))
}

/// The webhook body, version 4. Fields medic does not use are not listed
/// (and so ignored).
#[derive(Deserialize, ToSchema)]
pub struct Webhook {
    /// The webhook format's version: medic reads `"4"`.
    #[schema(pattern = "^4$", example = "4")]
    version: String,
    /// `firing` when any alert of the group fires, else `resolved`.
    #[schema(pattern = "^(firing|resolved)$")]
    status: Option<String>,
    alerts: Vec<WebhookAlert>,
}

/// One alert of a delivery.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    /// Absent in payloads from old Alertmanagers (and trimmed samples).
    #[schema(pattern = "^(firing|resolved)$")]
    status: Option<String>,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: DateTime<FixedOffset>,
    /// No end: absent, `null`, empty, or the zero time Alertmanager sends.
    #[serde(default, deserialize_with = "no_end_when_empty")]
    ends_at: Option<DateTime<FixedOffset>>,
    #[serde(rename = "generatorURL", default)]
    generator_url: String,
}

/// `endsAt`: an empty string is no end, like `null` (RFC 3339 otherwise).
fn no_end_when_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => s
            .parse::<DateTime<FixedOffset>>()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("endsAt {s:?}: {e}"))),
    }
}

/// A delivery recorded.
#[derive(Serialize, ToSchema)]
pub struct Recorded {
    /// Alerts in the delivery, all recorded.
    pub recorded: usize,
    /// How many of them fire.
    pub firing: usize,
}

fn refuse(code: StatusCode, why: String) -> Response {
    tracing::warn!(status = code.as_u16(), error = %why, "alertmanager webhook refused");
    (code, Json(json!({ "error": why }))).into_response()
}

/// Reads at most `max` bytes of the body; over it, why (for a 413).
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Vec<u8>, Response> {
    use futures_util::StreamExt;
    let too_large = |n: String| {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "delivery of {n} bytes is over the limit of {max} bytes (alerts.max_delivery_bytes)"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > max as u64) {
        return Err(too_large(n.to_string()));
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("reading the delivery failed: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > max {
            return Err(too_large("more than that".into()));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Alertmanager's webhook receiver (`webhook_configs.url`).
#[utoipa::path(
    post,
    path = "/api/v1/alerts/alertmanager",
    tag = "alerts",
    security(("bearer" = []), ("basic" = [])),
    request_body(content = Webhook, content_type = "application/json"),
    responses(
        (status = 200, description = "Every alert of the delivery is in the store.", body = Recorded),
        (status = 400, description = "A malformed delivery; nothing of it recorded.", body = super::openapi::Error),
        (status = 401, description = "Missing or wrong intake credentials (or the intake is off).",
            body = super::openapi::Refusal),
        (status = 413, description = "Over alerts.max_delivery_bytes or alerts.max_per_delivery.",
            body = super::openapi::Error),
        (status = 415, description = "A body that is not `application/json`.", body = super::openapi::Refusal),
        (status = 429, description = "It would take the firing alerts over alerts.max_firing; nothing recorded.",
            body = super::openapi::Error),
        (status = 500, description = "The parse task failed (a bug).", body = super::openapi::Error),
        (status = 503, description = "The store failed or did not answer in time, or the listener is busy; \
            Alertmanager retries.", body = super::openapi::Error),
    )
)]
async fn receive(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let limits = &st.alerts;
    let body = match read_body(&headers, body, limits.max_delivery_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = st.clock.now();
    // A delivery of thousands of alerts takes milliseconds to parse: on the
    // blocking pool, so a flood of deliveries cannot hold the runtime's
    // workers that run the checks and the engine.
    let alerts = match tokio::task::spawn_blocking(move || parse(&body, now)).await {
        Ok(Ok(a)) => a,
        Ok(Err(why)) => return refuse(StatusCode::BAD_REQUEST, why),
        Err(e) => {
            tracing::error!(error = %e, "alertmanager webhook: the parse task failed");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the delivery could not be parsed (internal error)".into(),
            );
        }
    };
    if alerts.len() > limits.max_per_delivery {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "delivery has {} alerts, over the limit of {} (alerts.max_per_delivery; set Alertmanager's webhook_configs max_alerts to at most that)",
                alerts.len(),
                limits.max_per_delivery
            ),
        );
    }
    let write = st
        .store
        .record_alerts_capped(&alerts, Some(limits.max_firing));
    match tokio::time::timeout(STORE_TIMEOUT, write).await {
        Ok(Ok(())) => {
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
                Json(Recorded {
                    recorded: alerts.len(),
                    firing,
                }),
            )
                .into_response()
        }
        Ok(Err(e @ StoreError::TooManyFiring { .. })) => {
            refuse(StatusCode::TOO_MANY_REQUESTS, format!("not recorded: {e}"))
        }
        // Alertmanager retries 5xx: the delivery is not lost.
        Ok(Err(e)) => {
            tracing::error!(error = %e, "alertmanager webhook not recorded: store failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": format!("not recorded: {e}") })),
            )
                .into_response()
        }
        Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not recorded: the store did not answer within {}s",
                STORE_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// Retention: every [`PRUNE_EVERY`], deletes resolved alerts older than
/// `alerts.resolved_retention` (in batches), until `stop`.
pub async fn prune_loop(
    store: Arc<dyn Store>,
    limits: AlertLimits,
    clock: Clock,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(age) = chrono::Duration::from_std(limits.resolved_retention.get()) else {
            return;
        };
        let before = clock.now() - age;
        loop {
            match store.prune_alerts(before, PRUNE_BATCH).await {
                Ok(n) if n == PRUNE_BATCH => continue,
                Ok(0) => break,
                Ok(n) => {
                    tracing::debug!(pruned = n, "resolved alerts pruned");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning resolved alerts failed");
                    break;
                }
            }
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
        let a = &parse(body("firing", "").as_bytes(), now()).unwrap()[0];
        assert_eq!(a.ends_at, None, "an empty endsAt is no end");
        assert!(parse(body("firing", "soon").as_bytes(), now()).is_err());
    }
}
