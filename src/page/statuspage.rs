//! Atlassian Statuspage's incident API, the hosted mirror of the public
//! status page: `POST /v1/pages/{page_id}/incidents` when an incident opens
//! on a public component, `PATCH .../incidents/{incident_id}` for every
//! human-written update and for the resolution, with
//! `Authorization: OAuth KEY`. Only public words go out: the components'
//! Statuspage ids and states, the incident's public name, and the
//! update's body (see [`super::public`]). 429, 5xx and network errors are
//! retried by the outbox (capped, jittered backoff), like every notifier.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::{NotifyError, checked, http_client};
use crate::config::Statuspage as Config;
use crate::secret::Secret;

/// A Statuspage incident's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Investigating,
    Identified,
    Monitoring,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Investigating => "investigating",
            Status::Identified => "identified",
            Status::Monitoring => "monitoring",
            Status::Resolved => "resolved",
        }
    }

    /// What a human may post (`resolved` comes from the incident itself).
    pub fn parse_posted(s: &str) -> Option<Status> {
        Some(match s {
            "investigating" => Status::Investigating,
            "identified" => Status::Identified,
            "monitoring" => Status::Monitoring,
            _ => return None,
        })
    }

    /// Every status a human may post.
    pub const POSTED: &'static [&'static str] = &["investigating", "identified", "monitoring"];
}

/// One incident as Statuspage reads it (`{"incident": {...}}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    pub name: String,
    pub status: Status,
    pub body: String,
    /// Statuspage component id → its status (`degraded_performance`,
    /// `partial_outage`, `major_outage`, `operational`).
    pub components: BTreeMap<String, &'static str>,
}

impl Incident {
    /// The request body.
    pub fn body(&self) -> Value {
        json!({ "incident": {
            "name": self.name,
            "status": self.status.as_str(),
            "body": self.body,
            "component_ids": self.components.keys().collect::<Vec<_>>(),
            "components": self.components,
        }})
    }
}

/// A client of one Statuspage page.
pub struct Client {
    base: String,
    page: String,
    key: Result<Secret, String>,
    client: reqwest::Client,
}

impl Client {
    pub fn new(c: &Config) -> Self {
        Client {
            base: c.url.trim_end_matches('/').to_string(),
            page: c.page_id.clone(),
            key: c.api_key.resolve().map_err(|e| e.to_string()),
            client: http_client(),
        }
    }

    fn key(&self) -> Result<&str, NotifyError> {
        self.key
            .as_ref()
            .map(|k| k.expose())
            .map_err(|e| NotifyError::Permanent(format!("statuspage api_key: {e}")))
    }

    /// Creates the incident; returns Statuspage's id of it.
    pub async fn create(&self, i: &Incident) -> Result<String, NotifyError> {
        let url = format!("{}/v1/pages/{}/incidents", self.base, self.page);
        let r = self
            .client
            .post(&url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("OAuth {}", self.key()?),
            )
            .json(&i.body())
            .send()
            .await;
        let resp = checked("Statuspage POST incident", r).await?;
        let v: Value = resp.json().await.map_err(|e| NotifyError::Retry {
            reason: format!("Statuspage: bad answer: {}", super::request_error(e)),
            after: None,
        })?;
        v["id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from)
            .ok_or_else(|| {
                NotifyError::Permanent("Statuspage: the answer has no incident id".into())
            })
    }

    /// Updates incident `id` (a new update, or its resolution).
    pub async fn update(&self, id: &str, i: &Incident) -> Result<(), NotifyError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(NotifyError::Permanent(format!(
                "Statuspage incident id {id:?} is not an id"
            )));
        }
        let url = format!("{}/v1/pages/{}/incidents/{id}", self.base, self.page);
        let r = self
            .client
            .patch(&url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("OAuth {}", self.key()?),
            )
            .json(&i.body())
            .send()
            .await;
        let resp = checked("Statuspage PATCH incident", r).await?;
        let _ = resp.bytes().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_statuspages_incident_shape() {
        let i = Incident {
            name: "Degraded performance: Portal".into(),
            status: Status::Identified,
            body: "We found it.".into(),
            components: BTreeMap::from([("cmp1".into(), "partial_outage")]),
        };
        assert_eq!(
            i.body(),
            json!({ "incident": {
                "name": "Degraded performance: Portal",
                "status": "identified",
                "body": "We found it.",
                "component_ids": ["cmp1"],
                "components": { "cmp1": "partial_outage" },
            }})
        );
        assert_eq!(Status::parse_posted("resolved"), None);
        assert_eq!(Status::parse_posted("monitoring"), Some(Status::Monitoring));
    }
}
