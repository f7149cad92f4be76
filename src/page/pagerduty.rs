//! PagerDuty Events API v2: `trigger` when an incident pages, `acknowledge`
//! on acknowledgement, `resolve` on resolution, all with one deterministic
//! `dedup_key` per incident, so a notice delivered again after a crash is
//! the same PagerDuty alert, never a second one. 429, 5xx and network
//! errors are retried by the dispatcher (capped, jittered backoff); a 400
//! is never retried and its reason is logged.

use serde_json::json;

use super::{Delivered, Notice, NoticeKind, Notifier, NotifyError, checked, http_client};
use crate::config::PagerDutyNotifier as Config;
use crate::secret::Secret;
use crate::store::{Incident, IncidentState};

/// Sends events to one PagerDuty service integration.
pub struct PagerDutyNotifier {
    name: String,
    url: String,
    routing_key: Result<Secret, String>,
    client: reqwest::Client,
}

/// The incident's `dedup_key`: `medic-{id}-{scenario}`, at most 255 bytes.
pub fn dedup_key(incident: &Incident) -> String {
    let mut key = format!("medic-{}-{}", incident.id, incident.scenario);
    if key.len() > 255 {
        let mut cut = 255;
        while !key.is_char_boundary(cut) {
            cut -= 1;
        }
        key.truncate(cut);
    }
    key
}

/// PagerDuty's severity for a scenario's.
pub fn severity(s: &str) -> &'static str {
    match s {
        "critical" => "critical",
        "high" => "error",
        "warning" => "warning",
        _ => "info",
    }
}

impl PagerDutyNotifier {
    pub fn new(name: &str, c: &Config) -> Self {
        PagerDutyNotifier {
            name: name.to_string(),
            url: c.url.clone(),
            routing_key: c.routing_key.resolve().map_err(|e| e.to_string()),
            client: http_client(),
        }
    }

    /// The event for a notice, if it is one PagerDuty hears about.
    fn event(&self, n: &Notice, key: &str) -> Option<serde_json::Value> {
        let inc = &n.view.incident;
        // Once acknowledged, PagerDuty hears only `acknowledge` and
        // `resolve`: a `trigger` would re-alert whoever already has it.
        let acked = inc.state == IncidentState::Acknowledged;
        let action = match n.kind {
            NoticeKind::Page if !acked => "trigger",
            NoticeKind::Resolution => "resolve",
            NoticeKind::Update => match n.event() {
                "acknowledge" if acked => "acknowledge",
                "reopen" | "escalate" if !acked => "trigger",
                _ => return None,
            },
            _ => return None,
        };
        let mut ev = json!({
            "routing_key": key,
            "event_action": action,
            "dedup_key": dedup_key(inc),
        });
        if action == "trigger" {
            let summary: String = format!("[{}] {}", inc.severity, n.text)
                .chars()
                .take(1024)
                .collect();
            ev["payload"] = json!({
                "summary": summary,
                "source": n.view.targets.first().cloned().unwrap_or_else(|| "medic".into()),
                "severity": severity(&inc.severity),
                "group": inc.scenario,
                "class": "medic incident",
                "custom_details": {
                    "incident": inc.id,
                    "state": inc.state.as_str(),
                    "level": n.level,
                    "observed": n.view.observed,
                    "done": n.view.done,
                    "next": n.view.next,
                },
            });
            // PagerDuty shows an empty `component` as a blank field.
            if !n.view.targets.is_empty() {
                ev["payload"]["component"] = json!(n.view.targets.join(","));
            }
        }
        Some(ev)
    }
}

#[async_trait::async_trait]
impl Notifier for PagerDutyNotifier {
    async fn send(&self, n: &Notice) -> Result<Delivered, NotifyError> {
        let key = self
            .routing_key
            .as_ref()
            .map_err(|e| NotifyError::Permanent(format!("{}: routing key: {e}", self.name)))?;
        let Some(ev) = self.event(n, key.expose()) else {
            return Ok(Delivered {
                reference: None,
                detail: "nothing for PagerDuty".into(),
            });
        };
        let action = ev["event_action"].as_str().unwrap_or_default().to_string();
        let r = self.client.post(&self.url).json(&ev).send().await;
        let resp = checked("PagerDuty", r).await.inspect_err(|e| {
            if let NotifyError::Permanent(reason) = e {
                tracing::error!(notifier = %self.name, "PagerDuty refused the event (not retried): {reason}");
            }
        })?;
        let _ = resp.bytes().await;
        Ok(Delivered {
            reference: None,
            detail: format!("{action} {}", dedup_key(&n.view.incident)),
        })
    }
}
