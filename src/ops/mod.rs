//! Operator tools behind the CLI: a client of a running medic's API
//! (`medic incidents`, `ack`, `approve`, `reject`, `resolve`) and the
//! post-mortem draft (`medic report`, [`report`]).

mod command;
pub mod report;

use serde::{Deserialize, Serialize};

pub use command::{OpsError, Remote, Request, run};

use crate::store::{Attempt, Incident, TimelineEntry};

/// One incident with everything a report needs, as
/// `GET /api/v1/incidents/{id}` answers it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IncidentDetail {
    pub incident: Incident,
    /// The scenario's RTO (`30m`), when its rules are loaded.
    pub rto: Option<String>,
    pub rpo: Option<String>,
    pub runbook: Option<String>,
    pub timeline: Vec<TimelineEntry>,
    pub attempts: Vec<Attempt>,
}

/// `GET /api/v1/incidents`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IncidentList {
    pub open: Vec<Incident>,
    pub recent: Vec<Incident>,
}

/// Client errors, for the CLI.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status (and its reason).
    #[error("{url}: {status}: {reason}")]
    Status {
        url: String,
        status: u16,
        reason: String,
    },
}

/// A running medic's API.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// A mutating call on an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Acknowledge,
    Approve,
    Reject,
    Resolve,
}

impl Verb {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Acknowledge => "acknowledge",
            Verb::Approve => "approve",
            Verb::Reject => "reject",
            Verb::Resolve => "resolve",
        }
    }
}

impl Client {
    /// A client of the API at `base` (`http://127.0.0.1:9185`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn answer(url: String, r: reqwest::RequestBuilder) -> Result<String, ClientError> {
        let resp = r.send().await.map_err(|source| ClientError::Http {
            url: url.clone(),
            source,
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|source| ClientError::Http {
            url: url.clone(),
            source,
        })?;
        if status.is_success() {
            return Ok(text);
        }
        let reason = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or(text);
        Err(ClientError::Status {
            url,
            status: status.as_u16(),
            reason,
        })
    }

    fn parse<T: serde::de::DeserializeOwned>(url: &str, text: &str) -> Result<T, ClientError> {
        serde_json::from_str(text).map_err(|e| ClientError::Status {
            url: url.to_string(),
            status: 200,
            reason: format!("unexpected answer: {e}"),
        })
    }

    /// A GET with the token (the API token also reads; so does a read token).
    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.get(url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Open and recent incidents.
    pub async fn list(&self) -> Result<IncidentList, ClientError> {
        let url = format!("{}/api/v1/incidents", self.base);
        let text = Self::answer(url.clone(), self.get(&url)).await?;
        Self::parse(&url, &text)
    }

    /// One incident with its timeline and attempts.
    pub async fn show(&self, id: &str) -> Result<IncidentDetail, ClientError> {
        let url = format!("{}/api/v1/incidents/{id}", self.base);
        let text = Self::answer(url.clone(), self.get(&url)).await?;
        Self::parse(&url, &text)
    }

    /// `POST /api/v1/incidents/{id}/{verb}` with `{"by": by, "step": step}`
    /// and the bearer token; the server's answer as text.
    pub async fn post(
        &self,
        id: &str,
        verb: Verb,
        by: &str,
        step: Option<&str>,
    ) -> Result<String, ClientError> {
        let url = format!("{}/api/v1/incidents/{id}/{}", self.base, verb.as_str());
        let mut body = serde_json::json!({ "by": by });
        if let Some(step) = step {
            body["step"] = step.into();
        }
        let mut r = self.http.post(&url).json(&body);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        Self::answer(url, r).await
    }

    /// `POST /api/v1/jobs/{job}/run` with `{"by": by}`: the run's id.
    pub async fn run_job(&self, job: &str, by: &str) -> Result<i64, ClientError> {
        let url = format!("{}/api/v1/jobs/{job}/run", self.base);
        let mut r = self.http.post(&url).json(&serde_json::json!({ "by": by }));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        let text = Self::answer(url.clone(), r).await?;
        let v: serde_json::Value = Self::parse(&url, &text)?;
        v["run"].as_i64().ok_or_else(|| ClientError::Status {
            url,
            status: 202,
            reason: format!("unexpected answer: no run id in {text}"),
        })
    }

    /// Polls `GET /api/v1/jobs/{job}/runs` until run `run` has an outcome
    /// (every 500 ms; the job's own timeout bounds the run on the server):
    /// the run as JSON.
    pub async fn wait_for_run(
        &self,
        job: &str,
        run: i64,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}/api/v1/jobs/{job}/runs?limit=100", self.base);
        loop {
            let text = Self::answer(url.clone(), self.get(&url)).await?;
            let runs: Vec<serde_json::Value> = Self::parse(&url, &text)?;
            match runs.iter().find(|r| r["run"]["id"].as_i64() == Some(run)) {
                Some(r) if !r["run"]["outcome"].is_null() => return Ok(r["run"].clone()),
                Some(_) => {}
                None => {
                    return Err(ClientError::Status {
                        url,
                        status: 200,
                        reason: format!("run {run} is not among the job's newest runs"),
                    });
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

/// A table of incidents for a terminal.
pub fn format_list(list: &IncidentList) -> String {
    let mut out = String::new();
    let row = |i: &Incident| {
        format!(
            "{:>6}  {:<13} {:<9} {:<28} {}\n",
            i.id,
            i.state.as_str(),
            i.severity,
            i.scenario,
            i.opened_at.format("%Y-%m-%d %H:%M:%S")
        )
    };
    out.push_str(&format!("open incidents: {}\n", list.open.len()));
    out.push_str(&format!(
        "{:>6}  {:<13} {:<9} {:<28} {}\n",
        "ID", "STATE", "SEVERITY", "SCENARIO", "OPENED (UTC)"
    ));
    // Dependents under their cause (they wait on it instead of acting).
    for (depth, i) in crate::store::tree::order(&list.open) {
        if depth == 0 {
            out.push_str(&row(i));
            continue;
        }
        let waits = format!(
            "{}└ {} (waits on #{})",
            "  ".repeat(depth - 1),
            i.scenario,
            i.cause.unwrap_or_default()
        );
        out.push_str(&format!(
            "{:>6}  {:<13} {:<9} {:<28} {}\n",
            i.id,
            i.state.as_str(),
            i.severity,
            waits,
            i.opened_at.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    out.push_str("\nrecent incidents:\n");
    for i in &list.recent {
        out.push_str(&row(i));
    }
    out
}

/// One incident, its timeline and attempts, for a terminal.
pub fn format_detail(d: &IncidentDetail) -> String {
    let i = &d.incident;
    let mut out = format!(
        "incident {} · {} · {} · severity {}\n{}\nopened {}{}\nRTO {}\n\ntimeline:\n",
        i.id,
        i.scenario,
        i.state.as_str(),
        i.severity,
        i.summary,
        i.opened_at.format("%Y-%m-%d %H:%M:%S UTC"),
        i.resolved_at
            .map(|t| format!(", resolved {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default(),
        d.rto.as_deref().unwrap_or("unknown"),
    );
    for e in &d.timeline {
        out.push_str(&format!(
            "  {}  {:<8} {}\n",
            e.at.format("%H:%M:%S%.3f"),
            e.kind,
            e.message
        ));
    }
    out.push_str("\nattempts:\n");
    if d.attempts.is_empty() {
        out.push_str("  (none)\n");
    }
    for a in &d.attempts {
        out.push_str(&format!(
            "  {} {} ({}): {} {}\n",
            a.started_at.format("%H:%M:%S%.3f"),
            a.step,
            a.action,
            a.outcome.map_or("in flight", |o| o.as_str()),
            a.reason
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::IncidentState;

    fn inc(id: i64, scenario: &str, cause: Option<i64>) -> Incident {
        let at = chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        Incident {
            id,
            scenario: scenario.into(),
            instance: String::new(),
            state: IncidentState::Open,
            severity: "high".into(),
            summary: String::new(),
            opened_at: at,
            updated_at: at,
            resolved_at: None,
            cause,
        }
    }

    #[test]
    fn open_incidents_are_listed_as_a_tree() {
        let list = IncidentList {
            open: vec![
                inc(1, "database-failure", None),
                inc(2, "redis-cache-failure", None),
                inc(3, "application-service-failure", Some(1)),
            ],
            recent: Vec::new(),
        };
        let text = format_list(&list);
        let rows: Vec<&str> = text.lines().skip(2).take(3).collect();
        assert!(
            rows[0].trim_start().starts_with("1  open") && rows[0].contains("database-failure")
        );
        assert!(
            rows[1].trim_start().starts_with("3  open")
                && rows[1].contains("└ application-service-failure (waits on #1)"),
            "{text}"
        );
        assert!(rows[2].contains("redis-cache-failure"), "{text}");
    }
}
