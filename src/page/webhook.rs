//! The webhook notifier: one JSON POST per notice, for status pages and chat
//! tools without a dedicated integration. Same durability as every
//! notifier (the outbox); each request carries `Idempotency-Key` (the
//! outbox key), so a receiver can drop the copy a crash may cause.

use serde_json::json;

use super::{Delivered, Notice, Notifier, NotifyError, Report, checked, http_client};
use crate::config::WebhookNotifier as Config;
use crate::secret::Secret;

/// POSTs notices to one URL. The URL is a secret: it is never in an
/// error (see [`super::checked`]), so never in logs, the outbox or the
/// timeline.
pub struct WebhookNotifier {
    name: String,
    url: Result<Secret, String>,
    token: Option<Result<Secret, String>>,
    client: reqwest::Client,
}

impl WebhookNotifier {
    pub fn new(name: &str, c: &Config) -> Self {
        WebhookNotifier {
            name: name.to_string(),
            url: c.url.resolve().map_err(|e| e.to_string()),
            token: c
                .bearer_token
                .as_ref()
                .map(|t| t.resolve().map_err(|e| e.to_string())),
            client: http_client(),
        }
    }
}

#[async_trait::async_trait]
impl Notifier for WebhookNotifier {
    async fn send(&self, n: &Notice) -> Result<Delivered, NotifyError> {
        let body = json!({
            "kind": n.kind,
            "key": n.key,
            "event": n.event(),
            "level": n.level,
            "level_name": n.level_name,
            "text": n.text,
            "incident": n.view.incident,
            "view": n.view,
            "entries": n.entries,
            "more": n.more,
        });
        self.post(&n.key, &body).await
    }

    /// A report: `{"kind": "report", key, event, title, text, data, at}`.
    async fn report(&self, r: &Report) -> Result<Delivered, NotifyError> {
        let body = json!({
            "kind": "report",
            "key": r.key,
            "event": r.event,
            "title": r.title,
            "text": r.text,
            "data": r.data,
            "at": r.now,
        });
        self.post(&r.key, &body).await
    }
}

impl WebhookNotifier {
    async fn post(&self, key: &str, body: &serde_json::Value) -> Result<Delivered, NotifyError> {
        let url = self
            .url
            .as_ref()
            .map_err(|e| NotifyError::Permanent(format!("{}: url: {e}", self.name)))?;
        let mut req = self
            .client
            .post(url.expose())
            .header("Idempotency-Key", key)
            .json(body);
        if let Some(t) = &self.token {
            let t = t
                .as_ref()
                .map_err(|e| NotifyError::Permanent(format!("{}: bearer token: {e}", self.name)))?;
            req = req.bearer_auth(t.expose());
        }
        let resp = checked("webhook", req.send().await)
            .await
            .map_err(|e| e.scrubbed(url.expose()))?;
        Ok(Delivered {
            reference: None,
            detail: format!("HTTP {}", resp.status().as_u16()),
        })
    }
}
