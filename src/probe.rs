//! `medic probe [--config PATH] NAME`: run one symptom's check once, now,
//! and show what it saw: how SREs tune a rule against the real system.
//!
//! NAME is a symptom's name, or `scenario/symptom` when several scenarios
//! have a symptom of that name. The check runs exactly as the daemon runs
//! it (same config, same timeout), once; nothing is remediated, nothing is
//! written. For per-series checks (`promql`, ...) every failing series is
//! shown with its labels and value: each would be its own incident.
//!
//! Exit codes: 0 ok, 1 failing or unreachable (the check's candidate: no
//! vantage judgement here), 3 unknown (medic could not see), 4 the
//! symptom cannot be probed (invalid config or rules, no such symptom, an
//! ambiguous name, a check that cannot be built); 2 is a usage error.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::diag::Diagnostics;
use crate::observe::{Observation, Outcome, labels_key};
use crate::rules::Scenario;

/// Why a symptom could not be probed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Load(Diagnostics),
    #[error("no symptom {name:?}; symptoms: {known}")]
    NotFound { name: String, known: String },
    #[error("symptom {name:?} is in several scenarios; name one of: {candidates}")]
    Ambiguous { name: String, candidates: String },
    #[error("{0}")]
    Build(String),
}

/// What one probe saw.
#[derive(Debug)]
pub struct Probed {
    pub scenario: String,
    pub symptom: String,
    /// The check's kind.
    pub kind: &'static str,
    pub per_series: bool,
    pub observation: Observation,
    pub took: Duration,
}

impl Probed {
    /// The process exit code (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self.observation.outcome() {
            Outcome::Ok => 0,
            Outcome::Failing(_) | Outcome::Unreachable(_) => 1,
            Outcome::Unknown(_) => 3,
        }
    }

    /// The probe as one JSON object (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "scenario": self.scenario,
            "symptom": self.symptom,
            "check": self.kind,
            "outcome": self.observation.outcome().label(),
            "observation": self.observation,
            "took_ms": self.took.as_secs_f64() * 1000.0,
        })
    }
}

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}/{} ({} check, {:.0} ms)",
            self.scenario,
            self.symptom,
            self.kind,
            self.took.as_secs_f64() * 1000.0
        )?;
        match &self.observation {
            Observation::Series(s) if s.is_empty() => writeln!(f, "ok: no series matched"),
            Observation::Series(s) => {
                writeln!(f, "failing: {} series", s.len())?;
                for series in s {
                    let labels = labels_key(&series.labels);
                    let labels = if labels.is_empty() { "{}" } else { &labels };
                    writeln!(f, "  {labels} {}", series.value)?;
                }
                Ok(())
            }
            Observation::Whole(Outcome::Ok) => writeln!(f, "ok"),
            Observation::Whole(Outcome::Failing(d)) => writeln!(f, "failing: {d}"),
            Observation::Whole(Outcome::Unreachable(d)) => writeln!(f, "unreachable: {d}"),
            Observation::Whole(Outcome::Unknown(d)) => writeln!(f, "unknown: {d}"),
        }
    }
}

/// The one symptom `name` names (`symptom` or `scenario/symptom`).
pub fn find(scenarios: &[Scenario], name: &str) -> Result<(usize, usize), ProbeError> {
    let (want_sc, want_sy) = match name.split_once('/') {
        Some((sc, sy)) => (Some(sc), sy),
        None => (None, name),
    };
    let hits: Vec<(usize, usize)> = scenarios
        .iter()
        .enumerate()
        .filter(|(_, sc)| want_sc.is_none_or(|w| sc.name == w))
        .flat_map(|(k, sc)| {
            sc.symptoms
                .iter()
                .enumerate()
                .filter(|(_, s)| s.name == want_sy)
                .map(move |(j, _)| (k, j))
        })
        .collect();
    match hits.as_slice() {
        [one] => Ok(*one),
        [] => {
            let mut known: Vec<String> = scenarios
                .iter()
                .flat_map(|sc| {
                    sc.symptoms
                        .iter()
                        .map(move |s| format!("{}/{}", sc.name, s.name))
                })
                .collect();
            known.sort();
            Err(ProbeError::NotFound {
                name: name.to_string(),
                known: known.join(", "),
            })
        }
        many => Err(ProbeError::Ambiguous {
            name: name.to_string(),
            candidates: many
                .iter()
                .map(|&(k, j)| format!("{}/{}", scenarios[k].name, scenarios[k].symptoms[j].name))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Loads the config and its rules, and probes `name` once.
pub async fn probe(config_path: &Path, name: &str) -> Result<Probed, ProbeError> {
    let config = crate::config::load(config_path).map_err(ProbeError::Load)?;
    let scenarios = crate::rules::load_configured(&config).map_err(ProbeError::Load)?;
    let (k, j) = find(&scenarios, name)?;
    let (sc, s) = (&scenarios[k], &scenarios[k].symptoms[j]);
    let timeout = s.timeout.get();
    let check = crate::check::build(&s.check, timeout, &config)
        .map_err(|e| ProbeError::Build(format!("{}/{}: {e}", sc.name, s.name)))?;
    let start = tokio::time::Instant::now();
    let observation = tokio::time::timeout(timeout, check.observe())
        .await
        .unwrap_or_else(|_| {
            Observation::Whole(Outcome::Unknown(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            )))
        });
    Ok(Probed {
        scenario: sc.name.clone(),
        symptom: s.name.clone(),
        kind: s.check.kind(),
        per_series: check.per_series(),
        observation,
        took: start.elapsed(),
    })
}
