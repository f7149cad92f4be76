//! The plan executor: runs an incident's remediation plan, step by step.
//!
//! For every step: guards (visibility, mode, approval, attempt budget,
//! cooldown), then the action under its timeout, then verification (the
//! step's symptoms must clear within its deadline). A failed step is
//! retried while its budget allows, then the next step runs; when the plan
//! is exhausted the caller escalates. Every decision lands on the incident's
//! timeline and every attempt (refusals and dry-runs too) in the ledger,
//! *before* the action runs, so a crash leaves an attempt "in flight" that is
//! verified on restart rather than blindly run again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Action, ActionContext, ActionResult};
use crate::clock::Clock;
use crate::engine::symptom::{Phase, Seen};
use crate::rules::model::{Approval, Mode, Step};
use crate::store::{
    Attempt, AttemptOutcome, IncidentId, NewAttempt, Store, StoreError, TimelineEntry,
};

/// What the executor can see of one symptom: its phase and last observation.
pub type SymptomView = (Phase, Seen);

/// A plan step ready to run.
#[derive(Clone)]
pub struct PlannedStep {
    pub step: Step,
    pub action: Arc<dyn Action>,
}

/// Everything one plan run needs.
pub struct PlanContext {
    pub incident: IncidentId,
    pub scenario: String,
    pub instance: String,
    pub steps: Vec<PlannedStep>,
    /// The scenario's effective mode (a step may override it).
    pub mode: Mode,
    /// The scenario's `when` symptoms.
    pub when: Vec<String>,
    /// Live views of the scenario's symptoms, by name.
    pub symptoms: HashMap<String, watch::Receiver<SymptomView>>,
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    /// Global bound on actions in flight.
    pub actions: Arc<Semaphore>,
    /// Stop at the next safe point (incident resolved, daemon stopping).
    pub stop: CancellationToken,
    /// The daemon is stopping: an attempt being verified stays in flight in
    /// the ledger, to be verified after the restart.
    pub shutdown: CancellationToken,
    /// Abort a running action now (shutdown grace period over).
    pub kill: CancellationToken,
}

/// How a plan run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanOutcome {
    /// A step's verification held.
    Recovered { step: String },
    /// Every step failed or was refused: humans must take over.
    Exhausted { reason: String },
    /// Stopped at a safe point (resolved meanwhile, or shutting down).
    Stopped,
}

enum Visibility {
    /// Every active trigger symptom was last seen failing.
    Failing,
    /// No trigger symptom is active any more.
    Healthy,
    /// Some active symptom could not be observed within the wait.
    Blind(Vec<String>),
    Stopped,
}

impl PlanContext {
    async fn note(
        &self,
        kind: &str,
        msg: String,
        data: serde_json::Value,
    ) -> Result<(), StoreError> {
        tracing::info!(incident = self.incident, scenario = %self.scenario, kind, "{msg}");
        self.store
            .append(
                self.incident,
                TimelineEntry::new(self.clock.now(), kind, msg).with_data(data),
            )
            .await
    }

    fn view(&self, name: &str) -> SymptomView {
        self.symptoms
            .get(name)
            .map(|rx| *rx.borrow())
            .unwrap_or((Phase::Ok, Seen::Nothing))
    }

    fn visibility_now(&self) -> Result<(), Visibility> {
        let active: Vec<_> = self
            .when
            .iter()
            .map(|n| (n, self.view(n)))
            .filter(|(_, (phase, _))| phase.is_active())
            .collect();
        if active.is_empty() {
            return Err(Visibility::Healthy);
        }
        let blind: Vec<String> = active
            .iter()
            .filter(|(_, (_, seen))| *seen != Seen::Failing)
            .map(|(n, _)| (*n).clone())
            .collect();
        if blind.is_empty() {
            Ok(())
        } else {
            Err(Visibility::Blind(blind))
        }
    }

    /// Waits until medic sees the trigger symptoms failing (or healthy), at
    /// most `wait`. Unknown is not failing: medic does not act blind.
    async fn visibility(&self, wait: Duration) -> Visibility {
        let deadline = Instant::now() + wait;
        let mut rxs: Vec<_> = self.symptoms.values().cloned().collect();
        loop {
            match self.visibility_now() {
                Ok(()) => return Visibility::Failing,
                Err(Visibility::Healthy) => return Visibility::Healthy,
                Err(blind) if Instant::now() >= deadline => return blind,
                Err(_) => {}
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Visibility::Stopped,
                _ = tokio::time::sleep_until(deadline) => {}
                _ = any_changed(&mut rxs) => {}
            }
        }
    }

    /// Waits until all `names` are ok, at most `within`. Returns how long it took.
    async fn verify(&self, names: &[String], within: Duration) -> Result<Duration, Vec<String>> {
        let start = Instant::now();
        let deadline = start + within;
        let mut rxs: Vec<_> = names
            .iter()
            .filter_map(|n| self.symptoms.get(n).cloned())
            .collect();
        loop {
            let pending: Vec<String> = names
                .iter()
                .filter(|n| self.view(n).0 != Phase::Ok)
                .cloned()
                .collect();
            if pending.is_empty() {
                return Ok(start.elapsed());
            }
            if Instant::now() >= deadline || self.stop.is_cancelled() {
                return Err(pending);
            }
            tokio::select! {
                biased;
                _ = any_changed(&mut rxs) => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.stop.cancelled() => {}
            }
        }
    }

    async fn ledger(
        &self,
        idx: usize,
        ps: &PlannedStep,
        n: usize,
    ) -> Result<crate::store::AttemptId, StoreError> {
        self.store
            .begin_attempt(NewAttempt {
                incident_id: self.incident,
                scenario: self.scenario.clone(),
                instance: self.instance.clone(),
                step: ps.step.name.clone(),
                step_index: idx as u32,
                action: ps.step.action.kind().to_string(),
                key: format!("{}:{}:{}", self.incident, idx, n),
                started_at: self.clock.now(),
                inputs: ps.action.inputs(),
            })
            .await
    }

    /// Records a decision that executes nothing (refusal or dry-run).
    async fn record_without_running(
        &self,
        idx: usize,
        ps: &PlannedStep,
        n: usize,
        outcome: AttemptOutcome,
        reason: String,
    ) -> Result<(), StoreError> {
        let id = self.ledger(idx, ps, n).await?;
        self.store
            .finish_attempt(id, outcome, &reason, self.clock.now())
            .await?;
        let kind = if outcome == AttemptOutcome::DryRun {
            "step"
        } else {
            "guard"
        };
        self.note(
            kind,
            format!("step {}: {}", ps.step.name, reason),
            json!({ "step": ps.step.name, "outcome": outcome.as_str(), "inputs": ps.action.inputs() }),
        )
        .await
    }
}

/// Resolves when any receiver sees a change (or all senders are gone).
async fn any_changed(rxs: &mut [watch::Receiver<SymptomView>]) {
    if rxs.is_empty() {
        return std::future::pending().await;
    }
    let futs: Vec<_> = rxs.iter_mut().map(|rx| Box::pin(rx.changed())).collect();
    let (res, _, _) = futures_util::future::select_all(futs).await;
    if res.is_err() {
        // The engine is gone (shutting down): don't spin; the caller's
        // deadline or stop token ends the wait.
        std::future::pending::<()>().await;
    }
}

/// Runs (or resumes) the plan of one incident.
pub async fn execute(ctx: &PlanContext) -> Result<PlanOutcome, StoreError> {
    let history = ctx.store.incident_attempts(ctx.incident).await?;
    let mut start = 0;
    let mut n = history.len();
    // Resume: steps before the last one tried are done with; an attempt left
    // in flight by a crash is verified, never blindly run again.
    if let Some(last) = history.iter().max_by_key(|a| (a.step_index, a.id)) {
        start = last.step_index as usize;
    }
    for a in history.iter().filter(|a| a.outcome.is_none()) {
        if let Some(out) = resume_in_flight(ctx, a).await? {
            return Ok(out);
        }
    }
    let mut reasons = Vec::new();
    for (idx, ps) in ctx.steps.iter().enumerate().skip(start) {
        match run_step(ctx, idx, ps, &mut n).await? {
            StepEnd::Recovered => {
                return Ok(PlanOutcome::Recovered {
                    step: ps.step.name.clone(),
                });
            }
            StepEnd::Stopped => return Ok(PlanOutcome::Stopped),
            StepEnd::Next(reason) => reasons.push(format!("{}: {}", ps.step.name, reason)),
        }
    }
    let reason = if ctx.steps.is_empty() {
        "the scenario has no remediation plan".to_string()
    } else {
        format!("plan exhausted ({})", reasons.join("; "))
    };
    Ok(PlanOutcome::Exhausted { reason })
}

async fn resume_in_flight(
    ctx: &PlanContext,
    a: &Attempt,
) -> Result<Option<PlanOutcome>, StoreError> {
    let Some(ps) = ctx.steps.get(a.step_index as usize) else {
        ctx.store
            .finish_attempt(
                a.id,
                AttemptOutcome::Abandoned,
                "step no longer in the plan",
                ctx.clock.now(),
            )
            .await?;
        return Ok(None);
    };
    ctx.note(
        "verify",
        format!(
            "step {}: attempt {} was in flight when medic stopped; verifying instead of running it again",
            ps.step.name, a.key
        ),
        json!({ "attempt": a.key }),
    )
    .await?;
    let clears = &ps.step.verify.clears;
    match ctx.verify(clears, ps.step.verify.within.get()).await {
        Ok(took) => {
            let reason = format!(
                "verified after restart: {} cleared in {:.1}s",
                clears.join(", "),
                took.as_secs_f64()
            );
            ctx.store
                .finish_attempt(a.id, AttemptOutcome::Succeeded, &reason, ctx.clock.now())
                .await?;
            ctx.note(
                "verify",
                format!("step {}: {reason}", ps.step.name),
                json!({}),
            )
            .await?;
            Ok(Some(PlanOutcome::Recovered {
                step: ps.step.name.clone(),
            }))
        }
        Err(pending) => {
            let reason = format!("in flight at restart; {} still not ok", pending.join(", "));
            ctx.store
                .finish_attempt(a.id, AttemptOutcome::Abandoned, &reason, ctx.clock.now())
                .await?;
            ctx.note(
                "verify",
                format!("step {}: {reason}", ps.step.name),
                json!({}),
            )
            .await?;
            Ok(if ctx.stop.is_cancelled() {
                Some(PlanOutcome::Stopped)
            } else {
                None
            })
        }
    }
}

enum StepEnd {
    Recovered,
    Stopped,
    Next(String),
}

async fn run_step(
    ctx: &PlanContext,
    idx: usize,
    ps: &PlannedStep,
    n: &mut usize,
) -> Result<StepEnd, StoreError> {
    let step = &ps.step;
    let mut last_failure = String::from("not attempted");
    loop {
        if ctx.stop.is_cancelled() {
            return Ok(StepEnd::Stopped);
        }
        match ctx.visibility(step.verify.within.get()).await {
            Visibility::Failing => {}
            Visibility::Healthy => {
                ctx.note(
                    "step",
                    format!(
                        "step {}: symptoms no longer active; nothing to do",
                        step.name
                    ),
                    json!({}),
                )
                .await?;
                return Ok(StepEnd::Stopped);
            }
            Visibility::Stopped => return Ok(StepEnd::Stopped),
            Visibility::Blind(names) => {
                let reason = format!(
                    "refused: medic cannot see {} (unknown is not failing)",
                    names.join(", ")
                );
                *n += 1;
                ctx.record_without_running(idx, ps, *n, AttemptOutcome::Refused, reason.clone())
                    .await?;
                return Ok(StepEnd::Next(reason));
            }
        }
        let mode = step.mode.unwrap_or(ctx.mode);
        if mode == Mode::DryRun {
            let reason = format!("dry-run: would run {}", ps.action.describe());
            *n += 1;
            ctx.record_without_running(idx, ps, *n, AttemptOutcome::DryRun, reason.clone())
                .await?;
            return Ok(StepEnd::Next(reason));
        }
        if step.approval == Approval::Required {
            let reason = "refused: approval required, and no approval has been given".to_string();
            *n += 1;
            ctx.record_without_running(idx, ps, *n, AttemptOutcome::Refused, reason.clone())
                .await?;
            return Ok(StepEnd::Next(reason));
        }
        // Budget: counted from the ledger, so restarts reset nothing.
        let now = ctx.clock.now();
        let window =
            chrono::Duration::from_std(step.limit.per.get()).unwrap_or(chrono::Duration::MAX);
        let since = now
            .checked_sub_signed(window)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let past: Vec<Attempt> = ctx
            .store
            .attempts_since(&ctx.scenario, &step.name, &ctx.instance, since)
            .await?
            .into_iter()
            .filter(|a| a.outcome.is_some_and(|o| o.counts_against_limit()))
            .collect();
        if past.len() as u32 >= step.limit.attempts {
            let reason = format!(
                "refused: limit of {} attempts per {} reached (last failure: {})",
                step.limit.attempts, step.limit.per, last_failure
            );
            *n += 1;
            ctx.record_without_running(idx, ps, *n, AttemptOutcome::Refused, reason.clone())
                .await?;
            return Ok(StepEnd::Next(reason));
        }
        if let Some(last) = past.last() {
            let cooldown = chrono::Duration::from_std(step.limit.cooldown.get())
                .unwrap_or(chrono::Duration::MAX);
            let ready_at = last.ended_at.unwrap_or(last.started_at) + cooldown;
            if ready_at > now {
                let wait = (ready_at - now).to_std().unwrap_or_default();
                ctx.note(
                    "guard",
                    format!(
                        "step {}: cooling down until {}",
                        step.name,
                        ready_at.to_rfc3339()
                    ),
                    json!({ "cooldown": step.limit.cooldown.to_string() }),
                )
                .await?;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = ctx.stop.cancelled() => return Ok(StepEnd::Stopped),
                }
            }
        }
        // Run.
        let _permit = tokio::select! {
            p = ctx.actions.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = ctx.stop.cancelled() => return Ok(StepEnd::Stopped),
        };
        *n += 1;
        let id = ctx.ledger(idx, ps, *n).await?;
        ctx.note(
            "action",
            format!("step {}: running {}", step.name, ps.action.describe()),
            json!({ "step": step.name, "attempt": past.len() + 1, "inputs": ps.action.inputs() }),
        )
        .await?;
        let actx = ActionContext {
            key: format!("{}:{}:{}", ctx.incident, idx, n),
            cancel: ctx.kill.clone(),
            timeout: step.timeout.get(),
        };
        // The action enforces its own timeout; this outer bound is a backstop.
        let backstop = step.timeout.get() + Duration::from_secs(10);
        let result = match tokio::time::timeout(backstop, ps.action.run(&actx)).await {
            Ok(r) => r,
            Err(_) => ActionResult {
                ok: false,
                detail: format!(
                    "did not return within {}",
                    humantime::format_duration(backstop)
                ),
                data: json!({ "timed_out": true }),
            },
        };
        let timed_out = result.data.get("timed_out").and_then(|v| v.as_bool()) == Some(true);
        if !result.ok {
            let outcome = if timed_out {
                AttemptOutcome::TimedOut
            } else {
                AttemptOutcome::Failed
            };
            ctx.store
                .finish_attempt(id, outcome, &result.detail, ctx.clock.now())
                .await?;
            ctx.note(
                "action",
                format!("step {}: action failed: {}", step.name, result.detail),
                result.data.clone(),
            )
            .await?;
            last_failure = result.detail;
            continue;
        }
        ctx.note(
            "action",
            format!(
                "step {}: action done ({}); verifying that {} clear within {}",
                step.name,
                result.detail,
                step.verify.clears.join(", "),
                step.verify.within
            ),
            result.data.clone(),
        )
        .await?;
        match ctx
            .verify(&step.verify.clears, step.verify.within.get())
            .await
        {
            Ok(took) => {
                let reason = format!(
                    "verified: {} cleared {:.2}s after the action",
                    step.verify.clears.join(", "),
                    took.as_secs_f64()
                );
                ctx.store
                    .finish_attempt(id, AttemptOutcome::Succeeded, &reason, ctx.clock.now())
                    .await?;
                ctx.note("verify", format!("step {}: {reason}", step.name), json!({}))
                    .await?;
                return Ok(StepEnd::Recovered);
            }
            Err(_) if ctx.shutdown.is_cancelled() => return Ok(StepEnd::Stopped),
            Err(pending) => {
                let reason = format!(
                    "verification failed: {} not ok within {}",
                    pending.join(", "),
                    step.verify.within
                );
                ctx.store
                    .finish_attempt(id, AttemptOutcome::Failed, &reason, ctx.clock.now())
                    .await?;
                ctx.note("verify", format!("step {}: {reason}", step.name), json!({}))
                    .await?;
                if ctx.stop.is_cancelled() {
                    return Ok(StepEnd::Stopped);
                }
                last_failure = reason;
            }
        }
    }
}
