//! `drill.sandbox`: the runbook's scheduled DR drill (quarterly in the
//! example config). Each run is a sandbox drill of one shipped scenario
//! (`medic drill --sandbox SCENARIO`, [`crate::drill::sandbox`]) in a child
//! medic process, so its private services, its engine and its metrics stay
//! apart from the daemon's. The report is the run's record (its summary,
//! the full text and the measured seconds in its data) and goes to the
//! `notify` notifiers (the team's channel) as a notice with the drill's
//! incident (event `drill`). The run succeeds when the drill recovered
//! within the scenario's RTO and every notice was delivered.
//!
//! The child is killed if the job's `timeout` passes first: give the job a
//! timeout beyond the drill's own wait (the default is ample).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{JobContext, JobError, Report};
use crate::config::{Config, DrillJobConfig};
use crate::store::{Incident, IncidentState};

/// Where a drill's report goes: one notifier. `page`, a layer above jobs,
/// implements it for its notifiers and registers them at start-up
/// ([`register_notifiers`]), so this module never imports it.
#[async_trait::async_trait]
pub trait ReportSink: Send + Sync {
    /// Sends `text` about `incident` as a notice (event `drill`, dedup key
    /// `key`); the delivery's detail, or why it failed.
    async fn report(
        &self,
        key: String,
        text: String,
        incident: Incident,
        now: DateTime<Utc>,
    ) -> Result<String, String>;
}

/// The config's notifiers, by name, as report sinks.
pub type Sinks = fn(&Config) -> HashMap<String, Arc<dyn ReportSink>>;

static SINKS: OnceLock<Sinks> = OnceLock::new();

/// Registers how notifiers are built (`page::register_report_sinks`, at
/// start-up); the first registration stays.
pub fn register_notifiers(sinks: Sinks) {
    let _ = SINKS.set(sinks);
}

/// A built `drill.sandbox` job.
pub struct DrillJob {
    scenario: String,
    /// Where the scenario's rule file is (`--rules`).
    rules: Result<PathBuf, String>,
    notify: Vec<(String, Arc<dyn ReportSink>)>,
}

impl DrillJob {
    /// Builds job `name` from its config: the rule directory holding the
    /// scenario's file, and the notifiers.
    pub fn build(name: &str, d: &DrillJobConfig, config: &Config) -> Result<Self, JobError> {
        let file = format!("{}.yaml", d.scenario);
        let dirs: Vec<PathBuf> = match &d.rules {
            Some(r) => vec![config.resolve_path(r)],
            None => config
                .rules
                .iter()
                .map(|p| config.resolve_path(p))
                .collect(),
        };
        let rules = dirs
            .iter()
            .find(|d| d.join(&file).is_file())
            .cloned()
            .ok_or_else(|| {
                format!(
                    "no rule file {file} in {}",
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        let mut built = match SINKS.get() {
            Some(sinks) => sinks(config),
            None if d.notify.is_empty() => HashMap::new(),
            None => {
                return Err(JobError::Invalid(format!(
                    "job {name}: notifiers are not available in this process (drill jobs run in `medic run`)"
                )));
            }
        };
        let mut notify = Vec::new();
        for n in &d.notify {
            let Some(x) = built.remove(n) else {
                return Err(JobError::Invalid(format!(
                    "job {name}: unknown notifier {n:?}"
                )));
            };
            notify.push((n.clone(), x));
        }
        Ok(DrillJob {
            scenario: d.scenario.clone(),
            rules,
            notify,
        })
    }
}

#[async_trait::async_trait]
impl super::Job for DrillJob {
    fn kind(&self) -> &'static str {
        "drill.sandbox"
    }

    async fn run(&self, cx: &JobContext) -> Report {
        let rules = match &self.rules {
            Ok(r) => r,
            Err(e) => return Report::failed(e.clone(), json!({ "scenario": self.scenario })),
        };
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                return Report::failed(
                    format!("cannot find medic's own program to run the drill: {e}"),
                    json!({ "scenario": self.scenario }),
                );
            }
        };
        let scratch = match super::backup::scratch_dir("drill") {
            Ok(d) => d,
            Err(e) => return Report::failed(e, json!({ "scenario": self.scenario })),
        };
        let db = scratch.join("drill.db");
        cx.event(
            "drill",
            format!(
                "medic drill --sandbox {} (rules {})",
                self.scenario,
                rules.display()
            ),
            Value::Null,
        )
        .await;
        let out = tokio::process::Command::new(&exe)
            .args(["drill", "--sandbox", &self.scenario, "--rules"])
            .arg(rules)
            .arg("--store")
            .arg(&db)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await;
        let mut report = match out {
            Ok(o) => {
                let stdout = String::from_utf8_lossy(&o.stdout);
                let text = stdout
                    .find("drill report: ")
                    .map(|i| stdout[i..].trim_end().to_string());
                let mut data = json!({
                    "scenario": self.scenario,
                    "exit": o.status.code(),
                    "report": text,
                    "detection_s": text.as_deref().and_then(|t| seconds(t, "  detection  ")),
                    "recovery_s": text.as_deref().and_then(|t| seconds(t, "  recovery   ")),
                });
                match (&text, o.status.success()) {
                    (Some(t), ok) => {
                        let first = |prefix: &str| {
                            t.lines()
                                .find_map(|l| l.strip_prefix(prefix))
                                .unwrap_or("?")
                                .trim()
                                .to_string()
                        };
                        let summary = format!(
                            "drill {}: detection {}; recovery {}",
                            self.scenario,
                            first("  detection  "),
                            first("  recovery   ")
                        );
                        let incident = drill_incident(&db).await;
                        if let Err(e) = &incident {
                            cx.event("notice", format!("the drill's incident: {e}"), Value::Null)
                                .await;
                        }
                        let failed = self.send(cx, t, incident.ok().flatten(), &mut data).await;
                        match (ok, failed.is_empty()) {
                            (true, true) => Report::ok(summary, data),
                            (true, false) => Report::failed(
                                format!(
                                    "{summary}; the report was not delivered to {}",
                                    failed.join(", ")
                                ),
                                data,
                            ),
                            (false, _) => Report::failed(summary, data),
                        }
                    }
                    (None, _) => {
                        let stderr = String::from_utf8_lossy(&o.stderr);
                        let why = [stdout.trim(), stderr.trim()]
                            .into_iter()
                            .filter(|s| !s.is_empty())
                            .collect::<Vec<_>>()
                            .join("\n");
                        let tail: Vec<&str> = why.lines().rev().take(5).collect();
                        if let Value::Object(m) = &mut data {
                            m.insert("output".into(), why.clone().into());
                        }
                        Report::failed(
                            format!(
                                "the drill of {} ended without a report ({}): {}",
                                self.scenario,
                                o.status,
                                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                            ),
                            data,
                        )
                    }
                }
            }
            Err(e) => Report::failed(
                format!("cannot run {}: {e}", exe.display()),
                json!({ "scenario": self.scenario }),
            ),
        };
        if let Err(e) = tokio::fs::remove_dir_all(&scratch).await {
            report.summary = format!(
                "{}; (the scratch dir {} stays: {e})",
                report.summary,
                scratch.display()
            );
        }
        report
    }
}

impl DrillJob {
    /// Sends the report to every `notify` notifier, each delivery on the
    /// run's timeline; returns the notifiers that did not take it.
    async fn send(
        &self,
        cx: &JobContext,
        text: &str,
        incident: Option<Incident>,
        data: &mut Value,
    ) -> Vec<String> {
        let now = cx.clock.now();
        // A drill that opened no incident (not detected) is still reported:
        // the notice then carries a stand-in, numbered 0.
        let incident = incident.unwrap_or_else(|| Incident {
            id: 0,
            scenario: self.scenario.clone(),
            instance: String::new(),
            state: IncidentState::Open,
            severity: String::new(),
            summary: format!("drill of {}: no incident opened", self.scenario),
            opened_at: now,
            updated_at: now,
            resolved_at: None,
            cause: None,
        });
        let mut failed = Vec::new();
        let mut sent = Vec::new();
        for (name, n) in &self.notify {
            let key = format!("drill:{}:{}", cx.job, cx.run);
            match n.report(key, text.to_string(), incident.clone(), now).await {
                Ok(detail) => {
                    cx.event(
                        "notice",
                        format!("report sent to {name} ({detail})"),
                        Value::Null,
                    )
                    .await;
                    sent.push(name.clone());
                }
                Err(e) => {
                    cx.event(
                        "notice",
                        format!("the report could not be sent to {name}: {e}"),
                        Value::Null,
                    )
                    .await;
                    failed.push(name.clone());
                }
            }
        }
        if let Value::Object(m) = data {
            m.insert("notified".into(), sent.into());
        }
        failed
    }
}

/// The drill's incident in its store at `db` (none if it opened none).
async fn drill_incident(db: &std::path::Path) -> Result<Option<Incident>, String> {
    let yaml = format!(
        "store: {{ sqlite: {{ path: {} }} }}\n",
        serde_json::Value::from(db.display().to_string())
    );
    let config = crate::config::load_str("drill-store.yaml", &yaml)
        .map_err(|d| format!("the drill's store {}: {d:?}", db.display()))?;
    let store = crate::store::open(&config)
        .await
        .map_err(|e| format!("the drill's store {}: {e}", db.display()))?;
    let found = store
        .recent_incidents(1)
        .await
        .map_err(|e| format!("the drill's store {}: {e}", db.display()))?;
    Ok(found.into_iter().next())
}

/// `1.505` from the report line starting `prefix` (`  detection  1.505 s
/// after the injection`).
fn seconds(report: &str, prefix: &str) -> Option<f64> {
    report
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_once(" s after"))
        .and_then(|(n, _)| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::seconds;

    #[test]
    fn the_measured_seconds_are_read_from_the_report() {
        let r = "drill report: x on y\n  detection  1.505 s after the injection\n  recovery   NOT RECOVERED (incident open; RTO 1h: MISSED)\n";
        assert_eq!(seconds(r, "  detection  "), Some(1.505));
        assert_eq!(seconds(r, "  recovery   "), None);
    }
}
