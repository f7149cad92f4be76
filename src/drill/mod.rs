//! `medic drill`: the runbook's quarterly DR drill, measured.
//!
//! A drill breaks one thing on purpose (the injection), lets medic detect
//! and remediate it for real (the engine, checks and actions of one
//! scenario, in-process), and reports how long detection and recovery took
//! and how much data was lost, against the scenario's RTO and RPO.
//!
//! - `medic drill SCENARIO --target NAME`: against a real target, which the
//!   config must mark `drill: allowed` (section `drills:`), with the
//!   configured injection command. Asks for confirmation unless `--yes`.
//! - `medic drill --sandbox SCENARIO` ([`sandbox`]): against private
//!   throwaway services medic starts itself.
//! - `drill.target` jobs ([`scheduled`]): on a schedule, against a marked
//!   target, drilling the running daemon itself.

pub mod sandbox;
pub mod scheduled;

use std::future::Future;
use std::io::{BufRead, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Mode;
use crate::config::{Config, DrillPermission};
use crate::diag::Diagnostics;
use crate::rules::model::Scenario;
use crate::store::{Incident, IncidentState, prelude::*};

/// Why a drill could not run.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// A boxed future (injections and data-loss probes).
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a drill measured.
#[derive(Clone, Debug, PartialEq)]
pub struct DrillReport {
    pub scenario: String,
    pub target: String,
    pub injected_at: DateTime<Utc>,
    /// The drill's incident (its id in the drill's store), if it opened.
    pub incident: Option<i64>,
    /// Injection → incident opened.
    pub detected_after: Option<Duration>,
    /// Injection → incident resolved (its symptoms verified clear).
    pub recovered_after: Option<Duration>,
    /// The incident's final state (escalated: medic paged humans).
    pub state: Option<IncidentState>,
    pub rto: Duration,
    pub rpo: Option<Duration>,
    /// What the data-loss probe found, for humans.
    pub data_loss: String,
    /// The data lost measured as a time window, when the probe can.
    pub data_loss_window: Option<Duration>,
    /// The steps medic ran, `name: outcome`.
    pub steps: Vec<String>,
    /// What the drill changed about the scenario to run it here.
    pub notes: Vec<String>,
}

impl DrillReport {
    /// Recovered within the RTO.
    pub fn rto_met(&self) -> bool {
        self.recovered_after.is_some_and(|r| r <= self.rto)
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

impl std::fmt::Display for DrillReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rto = humantime::format_duration(self.rto);
        writeln!(f, "drill report: {} on {}", self.scenario, self.target)?;
        writeln!(
            f,
            "  injected   {}",
            self.injected_at.format("%Y-%m-%d %H:%M:%S%.3f UTC")
        )?;
        match self.detected_after {
            Some(d) => writeln!(f, "  detection  {} after the injection", secs(d))?,
            None => writeln!(f, "  detection  NOT DETECTED")?,
        }
        match self.recovered_after {
            Some(r) => writeln!(
                f,
                "  recovery   {} after the injection (RTO {rto}: {})",
                secs(r),
                if self.rto_met() { "met" } else { "MISSED" }
            )?,
            None => writeln!(
                f,
                "  recovery   NOT RECOVERED (incident {}; RTO {rto}: MISSED)",
                self.state.map_or("never opened", |s| s.as_str())
            )?,
        }
        let rpo = match (self.rpo, self.data_loss_window) {
            (Some(rpo), Some(w)) => format!(
                " (RPO {}: {})",
                humantime::format_duration(rpo),
                if w <= rpo { "met" } else { "MISSED" }
            ),
            (Some(rpo), None) => format!(" (RPO {})", humantime::format_duration(rpo)),
            (None, _) => " (no RPO: nothing durable at stake)".to_string(),
        };
        writeln!(f, "  data loss  {}{rpo}", self.data_loss)?;
        if !self.steps.is_empty() {
            writeln!(f, "  steps      {}", self.steps.join(", "))?;
        }
        for n in &self.notes {
            writeln!(f, "  note       {n}")?;
        }
        Ok(())
    }
}

/// One drill, ready to run.
pub struct Drill {
    pub config: Config,
    pub scenario: Scenario,
    pub target: String,
    pub store: Arc<dyn Store>,
    /// How long to wait for detection, then for recovery.
    pub wait: Duration,
    /// Adaptations to say in the report.
    pub notes: Vec<String>,
    /// What the paged human does when the incident escalates (a plan that
    /// leaves the fix to people: the sandbox's backup drill takes a fresh
    /// backup by hand). The drill then follows the incident on until it
    /// resolves; without one, an escalation ends the drill.
    pub responder: Option<BoxFut<Result<String, String>>>,
}

/// Measures data loss after the drill: (for humans, lost window).
pub type LossProbe = Box<dyn FnOnce() -> BoxFut<(String, Option<Duration>)> + Send>;

impl Drill {
    /// Runs medic on the scenario, injects, follows the incident (printing
    /// its timeline to `out` as it grows), and measures.
    pub async fn run(
        mut self,
        inject: BoxFut<Result<String, String>>,
        loss: Option<LossProbe>,
        out: &mut (dyn Write + Send),
    ) -> Result<DrillReport, DrillError> {
        let name = self.scenario.name.clone();
        let (runtimes, refused) =
            crate::daemon::build_runtimes(&self.config, vec![self.scenario.clone()]);
        if let Some(r) = refused.first() {
            return Err(DrillError::Refused(format!(
                "medic cannot run scenario {name} here: {}",
                r.reason
            )));
        }
        let before: Vec<i64> = open_of(&*self.store, &name)
            .await?
            .iter()
            .map(|i| i.id)
            .collect();
        if !before.is_empty() {
            return Err(DrillError::Refused(format!(
                "scenario {name} already has an open incident ({before:?}): the target is not healthy; no drill"
            )));
        }
        let shutdown = CancellationToken::new();
        let daemon = {
            let (config, store, shutdown) =
                (self.config.clone(), self.store.clone(), shutdown.clone());
            tokio::spawn(async move {
                crate::daemon::run_with_options(
                    &config,
                    runtimes,
                    0,
                    store,
                    Clock::system(),
                    shutdown,
                    crate::daemon::RunOptions {
                        no_jobs: true,
                        ..Default::default()
                    },
                )
                .await
            })
        };
        // Let every check observe the healthy target once.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if let Some(i) = open_of(&*self.store, &name).await?.first() {
            shutdown.cancel();
            let _ = daemon.await;
            return Err(DrillError::Refused(format!(
                "incident {} of {name} opened before the injection: the target is not healthy; no drill",
                i.id
            )));
        }
        let injected_at = Utc::now();
        let _ = writeln!(
            out,
            "[{}] injecting the failure into {}",
            stamp(injected_at),
            self.target
        );
        let responder = self.responder.take();
        let result = self
            .follow(inject, responder, &name, injected_at, out)
            .await;
        shutdown.cancel();
        match daemon.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(DrillError::Failed(format!(
                    "medic failed during the drill: {e:#}"
                )));
            }
            Err(e) => {
                return Err(DrillError::Failed(format!(
                    "medic failed during the drill: {e}"
                )));
            }
        }
        let incident = result?;
        measure(
            &*self.store,
            &self.scenario,
            self.target,
            self.notes,
            incident,
            injected_at,
            loss,
        )
        .await
    }

    /// Injects, then follows the incident (see [`follow`]).
    async fn follow(
        &self,
        inject: BoxFut<Result<String, String>>,
        responder: Option<BoxFut<Result<String, String>>>,
        name: &str,
        injected_at: DateTime<Utc>,
        out: &mut (dyn Write + Send),
    ) -> Result<Option<Incident>, DrillError> {
        follow(
            &*self.store,
            self.wait,
            inject,
            responder,
            name,
            injected_at,
            out,
        )
        .await
    }
}

/// Injects, then follows the incident of scenario `name` opened since
/// `injected_at` in `store` until it resolves, escalates (with a
/// `responder`: until it resolves after the responder acted) or `wait`
/// runs out; prints its timeline as it grows.
async fn follow(
    store: &dyn Store,
    wait: Duration,
    inject: BoxFut<Result<String, String>>,
    mut responder: Option<BoxFut<Result<String, String>>>,
    name: &str,
    injected_at: DateTime<Utc>,
    out: &mut (dyn Write + Send),
) -> Result<Option<Incident>, DrillError> {
    let said = inject
        .await
        .map_err(|e| DrillError::Failed(format!("the injection failed: {e}")))?;
    if !said.is_empty() {
        let _ = writeln!(out, "[{}] {said}", stamp(Utc::now()));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let responds = responder.is_some();
    let mut shown = 0;
    let mut incident: Option<Incident> = None;
    loop {
        if incident.is_none() {
            incident = store
                .recent_incidents(20)
                .await
                .map_err(store_err)?
                .into_iter()
                .find(|i| i.scenario == name && i.opened_at >= injected_at);
        } else if let Some(i) = &incident {
            incident = store.incident(i.id).await.map_err(store_err)?;
        }
        if let Some(i) = &incident {
            let timeline = store.timeline(i.id).await.map_err(store_err)?;
            for e in timeline.iter().skip(shown) {
                let _ = writeln!(out, "[{}] {:<8} {}", stamp(e.at), e.kind, e.message);
            }
            shown = timeline.len();
            if i.state == IncidentState::Escalated
                && let Some(act) = responder.take()
            {
                let said = act.await.map_err(|e| {
                    DrillError::Failed(format!("the drill's operator, paged, could not act: {e}"))
                })?;
                let _ = writeln!(out, "[{}] paged operator: {said}", stamp(Utc::now()));
                continue;
            }
            if i.state == IncidentState::Resolved
                || (i.state == IncidentState::Escalated && !responds)
            {
                return Ok(incident);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = writeln!(
                out,
                "[{}] gave up waiting after {}",
                stamp(Utc::now()),
                humantime::format_duration(wait)
            );
            return Ok(incident);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a drill measured: the incident's times and steps against the
/// scenario's RTO and RPO, and the data-loss probe's findings.
async fn measure(
    store: &dyn Store,
    scenario: &Scenario,
    target: String,
    notes: Vec<String>,
    incident: Option<Incident>,
    injected_at: DateTime<Utc>,
    loss: Option<LossProbe>,
) -> Result<DrillReport, DrillError> {
    let (data_loss, data_loss_window) = match loss {
        Some(probe) => probe().await,
        None => ("not measured for this target".to_string(), None),
    };
    let mut steps = Vec::new();
    if let Some(i) = &incident {
        for a in store.incident_attempts(i.id).await.map_err(store_err)? {
            steps.push(format!(
                "{}: {}",
                a.step,
                a.outcome.map_or("in flight", |o| o.as_str())
            ));
        }
    }
    let since = |t: DateTime<Utc>| (t - injected_at).to_std().ok();
    Ok(DrillReport {
        scenario: scenario.name.clone(),
        target,
        injected_at,
        incident: incident.as_ref().map(|i| i.id),
        detected_after: incident.as_ref().and_then(|i| since(i.opened_at)),
        recovered_after: incident
            .as_ref()
            .and_then(|i| i.resolved_at)
            .and_then(since),
        state: incident.as_ref().map(|i| i.state),
        rto: scenario.rto.get(),
        rpo: scenario.rpo.map(|d| d.get()),
        data_loss,
        data_loss_window,
        steps,
        notes,
    })
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S%.3f").to_string()
}

fn store_err(e: crate::store::StoreError) -> DrillError {
    DrillError::Failed(format!("store: {e}"))
}

async fn open_of(store: &dyn Store, scenario: &str) -> Result<Vec<Incident>, DrillError> {
    Ok(store
        .open_incidents()
        .await
        .map_err(store_err)?
        .into_iter()
        .filter(|i| i.scenario == scenario)
        .collect())
}

/// `medic drill SCENARIO --target NAME`: loads the config at `config_path`
/// and its rules, says on `out` what will be broken and, unless `yes`,
/// runs only once the target's name is typed on `input`.
pub async fn real(
    config_path: &Path,
    scenario: &str,
    target: &str,
    yes: bool,
    out: &mut (dyn Write + Send),
    input: &mut dyn BufRead,
) -> Result<DrillReport, DrillError> {
    let refused = |d: Diagnostics| {
        DrillError::Refused(
            d.0.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    let config = crate::config::load(config_path).map_err(refused)?;
    let scenarios = crate::rules::load_configured(&config).map_err(refused)?;
    let store = crate::store::open(&config)
        .await
        .map_err(|e| DrillError::Failed(e.to_string()))?;
    let (d, inject) = prepare_real(&config, scenarios, scenario, target, store)?;
    let _ = writeln!(
        out,
        "drill: {scenario} on target {target}: medic will run `{}` (a REAL failure), then detect and remediate it",
        inject.join(" ")
    );
    for n in &d.notes {
        let _ = writeln!(out, "note: {n}");
    }
    if !yes {
        let _ = write!(out, "type the target's name ({target}) to go on: ");
        let _ = out.flush();
        let mut line = String::new();
        let _ = input.read_line(&mut line);
        if line.trim() != target {
            return Err(DrillError::Refused(
                "not confirmed; nothing was done".into(),
            ));
        }
    }
    d.run(command_injection(inject), None, out).await
}

/// Prepares a drill against a real target of `config`: the target must be
/// marked `drill: allowed` (and list the scenario, if it lists any).
/// Returns the drill and its injection command.
pub fn prepare_real(
    config: &Config,
    scenarios: Vec<Scenario>,
    scenario: &str,
    target: &str,
    store: Arc<dyn Store>,
) -> Result<(Drill, Vec<String>), DrillError> {
    let Some(d) = config.drills.get(target) else {
        return Err(DrillError::Refused(format!(
            "target {target:?} is not marked for drills: add `drills: {{ {target}: {{ drill: allowed, inject: [...] }} }}` to the config"
        )));
    };
    if d.drill != DrillPermission::Allowed {
        return Err(DrillError::Refused(format!(
            "target {target:?} is marked `drill: forbidden`"
        )));
    }
    if !d.scenarios.is_empty() && !d.scenarios.iter().any(|s| s == scenario) {
        return Err(DrillError::Refused(format!(
            "target {target:?} allows drills of {} only",
            d.scenarios.join(", ")
        )));
    }
    let sc = find_scenario(scenarios, scenario)?;
    let mut notes = Vec::new();
    if sc.mode.unwrap_or(config.mode) == Mode::DryRun {
        notes.push("the scenario runs in dry-run: medic detects but does not remediate (set mode: enforce to drill recovery)".into());
    }
    Ok((
        Drill {
            config: config.clone(),
            scenario: sc,
            target: target.to_string(),
            store,
            wait: d.wait.get(),
            notes,
            responder: None,
        },
        d.inject.clone(),
    ))
}

/// The scenario named `name`, or an error listing the known ones.
pub fn find_scenario(scenarios: Vec<Scenario>, name: &str) -> Result<Scenario, DrillError> {
    let known: Vec<String> = scenarios.iter().map(|s| s.name.clone()).collect();
    scenarios
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            DrillError::Refused(format!(
                "unknown scenario {name:?} (known: {})",
                known.join(", ")
            ))
        })
}

/// Runs an injection command (no shell), bounded by a minute.
pub fn command_injection(argv: Vec<String>) -> BoxFut<Result<String, String>> {
    Box::pin(async move {
        let Some((program, args)) = argv.split_first() else {
            return Err("empty injection command".into());
        };
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| "the injection command did not finish within 60 s".to_string())?
        .map_err(|e| format!("cannot run {program}: {e}"))?;
        if out.status.success() {
            Ok(format!("injected: {} ({})", argv.join(" "), out.status))
        } else {
            Err(format!(
                "{} failed ({}): {}",
                argv.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })
}
