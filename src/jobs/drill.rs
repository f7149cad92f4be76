//! Scheduled drills: the runbook's DR drills (quarterly in the example
//! config), their reports stored on the job's runs and sent to the
//! `notify` notifiers (the team's channel) as messages of their own
//! (event `drill`), tied to none of the daemon's incidents. A run succeeds
//! when the drill recovered within the scenario's RTO and every report was
//! delivered.
//!
//! - `drill.sandbox`: a sandbox drill of one shipped scenario (`medic drill
//!   --sandbox SCENARIO`, [`crate::drill::sandbox`]) in a child medic
//!   process, so its private services, its engine and its metrics stay
//!   apart from the daemon's. When the job's `timeout` passes first, the
//!   child is asked to stop (SIGTERM: it stops its services and deletes
//!   its directory), and its process group is killed [`STOP_GRACE`] later.
//! - `drill.target`: a drill against a real target marked for drills
//!   (`drills:`), built by [`crate::drill`] (it follows the daemon's own
//!   engine): the target's `inject` command breaks it, the daemon detects
//!   and remediates, the run follows the incident.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{JobContext, JobError, Report};
use crate::config::{Config, DrillJobConfig, DrillTargetJobConfig};

/// Where a drill's report goes: one notifier. `page`, a layer above jobs,
/// implements it for its notifiers and registers them at start-up
/// ([`register_notifiers`]), so this module never imports it.
#[async_trait::async_trait]
pub trait ReportSink: Send + Sync {
    /// Sends the report (`title`, `text`, its figures as `data`) as a
    /// message of its own, tied to no incident (key `key`); the
    /// delivery's detail, or why it failed.
    async fn report(
        &self,
        key: String,
        title: String,
        text: String,
        data: Value,
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

/// Builds `drill.target` jobs. Such a drill follows the daemon's own
/// engine, rules and incidents, which live above this layer: `drill`
/// registers the builder at start-up ([`register_target_drills`]).
pub type TargetBuilder =
    fn(&str, &DrillTargetJobConfig, &Config) -> Result<Arc<dyn super::Job>, JobError>;

static TARGET: OnceLock<TargetBuilder> = OnceLock::new();

/// Registers the `drill.target` builder; the first registration stays.
pub fn register_target_drills(b: TargetBuilder) {
    let _ = TARGET.set(b);
}

/// Builds the `drill.target` job `name` with the registered builder.
pub fn build_target(
    name: &str,
    d: &DrillTargetJobConfig,
    config: &Config,
) -> Result<Arc<dyn super::Job>, JobError> {
    match TARGET.get() {
        Some(b) => b(name, d, config),
        None => Err(JobError::Invalid(format!(
            "job {name}: drill.target jobs run in `medic run`"
        ))),
    }
}

/// Named report sinks: a drill job's `notify` list, built.
pub type Named = Vec<(String, Arc<dyn ReportSink>)>;

/// The report sinks of job `name`'s `notify` list.
pub fn sinks(name: &str, notify: &[String], config: &Config) -> Result<Named, JobError> {
    let mut built = match SINKS.get() {
        Some(sinks) => sinks(config),
        None if notify.is_empty() => HashMap::new(),
        None => {
            return Err(JobError::Invalid(format!(
                "job {name}: notifiers are not available in this process (drill jobs run in `medic run`)"
            )));
        }
    };
    notify
        .iter()
        .map(|n| match built.remove(n) {
            Some(x) => Ok((n.clone(), x)),
            None => Err(JobError::Invalid(format!(
                "job {name}: unknown notifier {n:?}"
            ))),
        })
        .collect()
}

/// Sends a drill's report to every sink, each delivery on the run's
/// timeline; records who took it in `data.notified`; returns the sinks
/// that did not take it.
pub async fn send(
    cx: &JobContext,
    sinks: &[(String, Arc<dyn ReportSink>)],
    title: &str,
    text: &str,
    data: &mut Value,
) -> Vec<String> {
    let now = cx.clock.now();
    let mut failed = Vec::new();
    let mut sent = Vec::new();
    for (name, n) in sinks {
        let key = format!("drill:{}:{}", cx.job, cx.run);
        let r = n
            .report(key, title.to_string(), text.to_string(), data.clone(), now)
            .await;
        match r {
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

/// A drill run's outcome: succeeded when the drill recovered within the
/// RTO (`ok`) and every sink took the report.
pub fn outcome(summary: String, ok: bool, failed: Vec<String>, data: Value) -> Report {
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

/// The run's summary from a report's text: `drill SCENARIO: detection
/// ...; recovery ...`.
pub fn summary(scenario: &str, report: &str) -> String {
    let first = |prefix: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or("?")
            .trim()
            .to_string()
    };
    format!(
        "drill {scenario}: detection {}; recovery {}",
        first("  detection  "),
        first("  recovery   ")
    )
}

/// A built `drill.sandbox` job.
pub struct DrillJob {
    scenario: String,
    /// Where the scenario's rule file is (`--rules`).
    rules: Result<PathBuf, String>,
    notify: Named,
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
        Ok(DrillJob {
            scenario: d.scenario.clone(),
            rules,
            notify: sinks(name, &d.notify, config)?,
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
        let out = async {
            let child = tokio::process::Command::new(&exe)
                .args(["drill", "--sandbox", &self.scenario, "--rules"])
                .arg(rules)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .process_group(0)
                .spawn()?;
            // If the run is dropped (its timeout, shutdown) the drill is
            // stopped so that it cleans up its private services.
            let mut group = ProcessGroup(child.id());
            let out = child.wait_with_output().await;
            group.0 = None;
            out
        }
        .await;
        match out {
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
                        let title = format!("drill report: {} (sandbox)", self.scenario);
                        let failed = send(cx, &self.notify, &title, t, &mut data).await;
                        outcome(summary(&self.scenario, t), ok, failed, data)
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
        }
    }
}

/// The process group of a drill's child medic while the run waits for it.
/// Dropped before the child ended (the job's timeout passed, medic shuts
/// down), it asks the drill to stop (SIGTERM: the drill stops its private
/// services, deletes its directory and exits), and SIGKILLs whatever of
/// the group is left [`STOP_GRACE`] later.
struct ProcessGroup(Option<u32>);

/// How long a stopped drill has to clean up before its group is killed.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, killpg};
        let Some(pid) = self.0.take() else { return };
        let group = nix::unistd::Pid::from_raw(pid as i32);
        tracing::warn!(
            pid,
            "stopping the drill before it ended: it cleans up its services"
        );
        if killpg(group, Signal::SIGTERM).is_err() {
            return;
        }
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + STOP_GRACE;
            // The group exists while any member lives (its leader, once
            // reaped by the runtime, no longer counts).
            while std::time::Instant::now() < deadline {
                if killpg(group, None).is_err() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = killpg(group, Signal::SIGKILL);
        });
    }
}

/// `1.505` from the report line starting `prefix` (`  detection  1.505 s
/// after the injection`).
pub fn seconds(report: &str, prefix: &str) -> Option<f64> {
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
