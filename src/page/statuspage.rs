//! Atlassian Statuspage's incident API, the hosted mirror of the public
//! status page: `POST /v1/pages/{page_id}/incidents` when an incident opens
//! on a public component, `PATCH .../incidents/{incident_id}` for every
//! human-written update and for the resolution, with
//! `Authorization: OAuth KEY`. Only public words go out: the components'
//! Statuspage ids and states, the incident's public name, and the
//! update's body (see [`super::public`]). 429, 5xx and network errors are
//! retried by the outbox (capped, jittered backoff), like every notifier.
//!
//! Statuspage has no idempotency key, so the creation carries medic's
//! [`Reference`] in the incident's `metadata`; a retried creation first
//! looks for it among the page's unresolved incidents
//! (`GET .../incidents/unresolved`, [`Client::find`]) and adopts the one
//! an earlier attempt created, whose answer was lost.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
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

/// medic's mark on the Statuspage incident it creates, sent as the
/// incident's `metadata` (Statuspage: "all top-level values in the object
/// must also be objects"): `{"medic": {"incident": "42", "opened_at":
/// "2026-12-03T11:00:00.123Z"}}`. The opening time tells this incident 42
/// from another medic's (or an earlier store's) incident 42 on the same
/// page; both are public already (the page shows when it started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub incident: crate::store::IncidentId,
    pub opened_at: DateTime<Utc>,
}

impl Reference {
    /// The `metadata` object.
    pub fn metadata(&self) -> Value {
        json!({ "medic": {
            "incident": self.incident.to_string(),
            "opened_at": self.opened_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        }})
    }

    /// Whether Statuspage's incident object `v` carries this reference.
    pub fn carried_by(&self, v: &Value) -> bool {
        v["metadata"]["medic"] == self.metadata()["medic"]
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

    /// Creates the incident, marked with `mark` (its `metadata`); returns
    /// Statuspage's id of it.
    pub async fn create(&self, i: &Incident, mark: &Reference) -> Result<String, NotifyError> {
        let url = format!("{}/v1/pages/{}/incidents", self.base, self.page);
        let mut body = i.body();
        body["incident"]["metadata"] = mark.metadata();
        let r = self
            .client
            .post(&url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("OAuth {}", self.key()?),
            )
            .json(&body)
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

    /// The id of the unresolved incident carrying `r`, if any: what an
    /// earlier creation made when its answer was lost (a crash, a timeout,
    /// a dropped connection). The first found if several do.
    pub async fn find(&self, r: &Reference) -> Result<Option<String>, NotifyError> {
        let url = format!("{}/v1/pages/{}/incidents/unresolved", self.base, self.page);
        let resp = self
            .client
            .get(&url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("OAuth {}", self.key()?),
            )
            .send()
            .await;
        let resp = checked("Statuspage GET unresolved incidents", resp).await?;
        let v: Value = resp.json().await.map_err(|e| NotifyError::Retry {
            reason: format!(
                "Statuspage: bad answer to GET unresolved incidents: {}",
                super::request_error(e)
            ),
            after: None,
        })?;
        let Some(list) = v.as_array() else {
            return Err(NotifyError::Retry {
                reason: "Statuspage: GET unresolved incidents answered no list".into(),
                after: None,
            });
        };
        Ok(list
            .iter()
            .filter(|i| r.carried_by(i))
            .find_map(|i| i["id"].as_str().filter(|s| !s.is_empty()))
            .map(String::from))
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
        let r = Reference {
            incident: 42,
            opened_at: DateTime::parse_from_rfc3339("2026-12-03T11:00:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        assert_eq!(
            r.metadata(),
            json!({ "medic": { "incident": "42", "opened_at": "2026-12-03T11:00:00.123Z" } })
        );
        // Statuspage's incident object carries it back as sent; another
        // medic's (or an earlier store's) incident 42 is not it.
        let theirs = |m: Value| json!({ "id": "sp1", "name": "x", "status": "investigating", "metadata": m });
        assert!(r.carried_by(&theirs(r.metadata())));
        assert!(!r.carried_by(&theirs(
            json!({ "medic": { "incident": "42", "opened_at": "2026-11-01T08:00:00.000Z" } })
        )));
        assert!(!r.carried_by(&theirs(json!({}))));
        assert!(!r.carried_by(&json!({ "id": "sp2" })));
        assert_eq!(Status::parse_posted("resolved"), None);
        assert_eq!(Status::parse_posted("monitoring"), Some(Status::Monitoring));
    }
}
