//! `drill.target`: the scheduled drill against a real target marked for
//! drills (`drills: { TARGET: { drill: allowed, inject: [...] } }`).
//!
//! Unlike `medic drill --target`, which runs an engine of its own, a
//! scheduled drill runs inside the daemon and drills the daemon itself:
//! the run injects the failure with the target's command, and the
//! daemon's own checks, engine and plan detect and remediate it (one actor
//! on the target, never two). The run follows that incident in the store
//! and reports like every drill: detection, recovery against the RTO, the
//! steps. It refuses, and breaks nothing, while the scenario has an open
//! incident (the target is not healthy) and, at start-up, for a scenario
//! in dry-run (nobody would repair what the drill breaks).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{DrillError, command_injection, find_scenario, follow, measure, open_of};
use crate::config::{Config, DrillTargetJobConfig, Mode};
use crate::jobs::drill::{Named, outcome, send, sinks, summary};
use crate::jobs::{Job, JobContext, JobError, Report};
use crate::rules::model::Scenario;

/// Registers the `drill.target` builder with the jobs (at start-up).
pub fn register() {
    crate::jobs::drill::register_target_drills(build);
}

/// A built `drill.target` job.
struct TargetDrill {
    scenario: Scenario,
    target: String,
    inject: Vec<String>,
    wait: Duration,
    notify: Named,
}

fn build(name: &str, d: &DrillTargetJobConfig, config: &Config) -> Result<Arc<dyn Job>, JobError> {
    let invalid = |e: String| JobError::Invalid(format!("job {name}: {e}"));
    let Some(m) = config.drills.get(&d.target) else {
        return Err(invalid(format!(
            "target {:?} is not marked for drills",
            d.target
        )));
    };
    let scenarios = crate::rules::load_configured(config).map_err(|d| {
        invalid(format!(
            "the rules do not load: {}",
            d.0.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })?;
    let scenario = find_scenario(scenarios, &d.scenario).map_err(|e| invalid(e.to_string()))?;
    if scenario.mode.unwrap_or(config.mode) == Mode::DryRun {
        return Err(invalid(format!(
            "scenario {} runs in dry-run: a drill would break {} and medic would not repair it (set mode: enforce)",
            scenario.name, d.target
        )));
    }
    Ok(Arc::new(TargetDrill {
        scenario,
        target: d.target.clone(),
        inject: m.inject.clone(),
        wait: m.wait.get(),
        notify: sinks(name, &d.notify, config)?,
    }))
}

#[async_trait::async_trait]
impl Job for TargetDrill {
    fn kind(&self) -> &'static str {
        "drill.target"
    }

    async fn run(&self, cx: &JobContext) -> Report {
        let name = &self.scenario.name;
        let mut data = json!({ "scenario": name, "target": self.target });
        match open_of(&*cx.store, name).await {
            Ok(open) if !open.is_empty() => {
                let ids: Vec<String> = open.iter().map(|i| i.id.to_string()).collect();
                return Report::failed(
                    format!(
                        "not run: scenario {name} has an open incident ({}): the target is not healthy; nothing was injected",
                        ids.join(", ")
                    ),
                    data,
                );
            }
            Ok(_) => {}
            Err(e) => return Report::failed(format!("not run: {e}"), data),
        }
        cx.event(
            "drill",
            format!(
                "drill of {name} on {}: injecting `{}`",
                self.target,
                self.inject.join(" ")
            ),
            Value::Null,
        )
        .await;
        let injected_at = chrono::Utc::now();
        let mut out = Vec::new();
        let r: Result<_, DrillError> = async {
            let incident = follow(
                &*cx.store,
                self.wait,
                command_injection(self.inject.clone()),
                None,
                name,
                injected_at,
                &mut out,
            )
            .await?;
            measure(
                &*cx.store,
                &self.scenario,
                self.target.clone(),
                Vec::new(),
                incident,
                injected_at,
                None,
            )
            .await
        }
        .await;
        let log = String::from_utf8_lossy(&out).into_owned();
        if let Value::Object(m) = &mut data {
            m.insert("log".into(), log.into());
        }
        let report = match r {
            Ok(report) => report,
            Err(e) => return Report::failed(format!("the drill of {name} failed: {e}"), data),
        };
        let text = report.to_string();
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        if let Value::Object(m) = &mut data {
            m.insert("report".into(), text.clone().into());
            m.insert("incident".into(), json!(report.incident));
            m.insert("detection_s".into(), json!(secs(report.detected_after)));
            m.insert("recovery_s".into(), json!(secs(report.recovered_after)));
        }
        let title = format!("drill report: {name} on {}", self.target);
        let failed = send(cx, &self.notify, &title, &text, &mut data).await;
        outcome(summary(name, &text), report.rto_met(), failed, data)
    }
}
