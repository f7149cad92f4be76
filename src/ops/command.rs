//! The operator commands, one call each: what `medic incidents`, `ack`,
//! `approve`, `reject`, `resolve` and `report` print, or why they cannot.

use std::path::PathBuf;

use super::report::{self, ReportError};
use super::{Client, ClientError, Verb, format_detail, format_list};
use crate::diag::Diagnostics;

/// How to reach a running medic (the CLI's `--config`, `--url`, `--token`,
/// `--by`).
#[derive(Clone, Debug)]
pub struct Remote {
    /// The config file: its `http.listen` is the default URL, and
    /// `report` without a URL reads its store.
    pub config: PathBuf,
    pub url: Option<String>,
    /// Bearer token: the API token (every call) or a read token (reads).
    pub token: Option<String>,
    /// Who is acting, written on the timeline.
    pub by: String,
}

/// One operator command.
#[derive(Clone, Debug)]
pub enum Request {
    /// Open and recent incidents.
    List,
    /// One incident with its timeline and attempts.
    Show(String),
    /// A mutating call on an incident (`step` for approve and reject).
    Post {
        id: String,
        verb: Verb,
        step: Option<String>,
    },
    /// A post-mortem draft: from the API with a URL, else from the store.
    Report(String),
    /// Run job NAME now, by hand, and wait for its result.
    RunJob(String),
}

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("no --url, and the config {} cannot be read:\n{diags}", config.display())]
    ConfigUnreadable { config: PathBuf, diags: Diagnostics },
    #[error("no --url, and {} has no http.listen", config.display())]
    NoListen { config: PathBuf },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The job ran and failed (the text says how).
    #[error("{0}")]
    JobFailed(String),
}

impl Remote {
    /// A client of `url`, or of the config's `http.listen`.
    pub fn client(&self) -> Result<Client, OpsError> {
        let url = match &self.url {
            Some(u) => u.clone(),
            None => {
                let config = crate::config::load(&self.config).map_err(|diags| {
                    OpsError::ConfigUnreadable {
                        config: self.config.clone(),
                        diags,
                    }
                })?;
                let http = config.http.ok_or_else(|| OpsError::NoListen {
                    config: self.config.clone(),
                })?;
                let scheme = if http.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", http.listen)
            }
        };
        Ok(Client::new(&url, self.token.clone()))
    }
}

/// Runs `request`; its output as text.
pub async fn run(remote: &Remote, request: Request) -> Result<String, OpsError> {
    match request {
        Request::List => Ok(format_list(&remote.client()?.list().await?)),
        Request::Show(id) => Ok(format_detail(&remote.client()?.show(&id).await?)),
        Request::Post { id, verb, step } => {
            let answer = remote
                .client()?
                .post(&id, verb, &remote.by, step.as_deref())
                .await?;
            Ok(format!("incident {id}: {} done\n{answer}\n", verb.as_str()))
        }
        Request::Report(id) if remote.url.is_some() => {
            let d = remote.client()?.show(&id).await?;
            Ok(report::render(&d, chrono::Utc::now()))
        }
        Request::Report(id) => Ok(report::from_store(&remote.config, &id).await?),
        Request::RunJob(job) => {
            let client = remote.client()?;
            let run = client.run_job(&job, &remote.by).await?;
            let done = client.wait_for_run(&job, run).await?;
            let outcome = done["outcome"].as_str().unwrap_or("unknown").to_string();
            let text = format!(
                "job {job}: run {run} (manual, by {}) {outcome}: {}\n{}\n",
                remote.by,
                done["summary"].as_str().unwrap_or(""),
                serde_json::to_string_pretty(&done["data"]).unwrap_or_default()
            );
            if outcome == "succeeded" {
                Ok(text)
            } else {
                Err(OpsError::JobFailed(text))
            }
        }
    }
}
