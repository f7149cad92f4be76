//! The plan executor: runs an incident's remediation plan, step by step.
//!
//! For every attempt of a step: guards (visibility, maintenance window,
//! blast radius, mode, approval, attempt budget, cooldown, incidents of the
//! scenario acting at once, actions in flight, the scenario's limit over
//! all instances, its blast radius over time), then the action's own
//! preconditions ([`crate::remedy::Action::preflight`], every gate on the timeline),
//! then the action under its timeout, then verification (the step's
//! symptoms must clear within its deadline, or, for a step with no
//! `verify.clears`, the action's own check). A failed step is retried while
//! its budget allows. What comes next follows the step's `then`: after a
//! `then: stop` step that worked the plan is done and after one that failed
//! the next step runs; after a `then: continue` step that worked the next
//! step runs and after one that failed the plan ends (no follow-up runs
//! after a failed promotion). A step that failed and says `else: STEP`
//! goes on at STEP instead; a step named by an `else` runs only that way
//! (the steps before it end there). When the plan ends without a fix, the
//! caller escalates.
//!
//! Every decision lands on the incident's timeline and every attempt
//! (refusals and dry-runs too) in the ledger with its inputs (parameters,
//! what medic saw, every gate), *before* the action runs, so a crash leaves
//! an attempt "in flight" that is verified on restart rather than blindly
//! run again. dry-run evaluates and reports every guard and precondition of
//! every step and executes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bounds::Bounds;
use super::depend::HoldRx;
use super::quorum::{Observers, SymptomQuorum};
use crate::clock::Clock;
use crate::config::Mode;
use crate::observe::{Phase, QuorumView, Seen, SymptomObservation, SymptomView};
use crate::page::decision::Approval as Decision;
use crate::remedy::template;
use crate::remedy::{Action, ActionContext, ActionResult, Gate, Preflight};
use crate::rules::model::{
    Approval, ApprovalPolicy, BlastWindow, OnTimeout, ScenarioLimit, Step, Then,
};
use crate::store::{
    Attempt, AttemptId, AttemptOutcome, IncidentId, NewAttempt, Store, StoreError, TimelineEntry,
};

/// Where `approval: required` steps are asked for and decided. The engine
/// wires the pager in ([`super::incident`]); the executor knows only this.
#[async_trait::async_trait]
pub trait Approvals: Send + Sync {
    /// Asks for approval of `step` of `incident` (or finds the request or
    /// decision made before a restart) and waits for the decision, at most
    /// `policy`'s timeout, or until `stop`.
    async fn approval(
        &self,
        incident: IncidentId,
        step: &str,
        policy: ApprovalPolicy,
        stop: &CancellationToken,
    ) -> Result<Decision, StoreError>;
}

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
    /// Per symptom: the config target its check observes and the check's
    /// kind, so actions can read what medic saw of their targets.
    pub observed: HashMap<String, (Option<String>, &'static str)>,
    /// Per symptom: its quorum, freshness and whether it is per-series.
    pub quorum: HashMap<String, SymptomQuorum>,
    /// Who observes: a step acts only when a quorum of them sees its
    /// trigger symptoms failing (the objective view).
    pub observers: Arc<Observers>,
    /// How many incidents of this scenario may act at once.
    pub max_acting: u32,
    /// Attempts of the whole scenario, over all instances.
    pub limit: ScenarioLimit,
    /// Distinct instances of the scenario acted on within a window.
    pub blast_window: BlastWindow,
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    /// Global bound on actions in flight.
    pub actions: Arc<Semaphore>,
    /// Maintenance windows, blast radius, admission.
    pub bounds: Arc<Bounds>,
    /// Stop at the next safe point (incident resolved, daemon stopping).
    pub stop: CancellationToken,
    /// Where approvals are asked for and decided (`approval: required`);
    /// without one, such steps are refused.
    pub approvals: Option<Arc<dyn Approvals>>,
    /// The daemon is stopping: an attempt being verified stays in flight in
    /// the ledger, to be verified after the restart.
    pub shutdown: CancellationToken,
    /// Abort a running action now (shutdown grace period over).
    pub kill: CancellationToken,
    /// What the incident waits on ([`super::depend`]): checked before
    /// every attempt, so an in-flight step finishes and no new one starts.
    pub hold: HoldRx,
    /// How long symptoms must outlive a released hold before acting.
    pub grace: Duration,
    /// The scenario's RPO, for actions that restore from a backup.
    pub rpo: Option<Duration>,
    /// When the incident opened (its first detection).
    pub opened_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Waits while `hold` holds incident `id` (saying so on its timeline);
/// once released, waits `grace` more. True to go on, false when `stop`
/// came first.
pub async fn wait_hold(
    store: &dyn Store,
    clock: &Clock,
    id: IncidentId,
    hold: &HoldRx,
    grace: Duration,
    stop: &CancellationToken,
) -> Result<bool, StoreError> {
    let mut rx = hold.clone();
    let mut said: Option<String> = None;
    loop {
        let now = rx.borrow_and_update().clone();
        match now {
            None if said.is_none() => return Ok(true),
            None => {
                let msg = format!(
                    "no longer waiting ({}); acting on its own only if its symptoms outlive a grace of {}",
                    said.take().unwrap_or_default(),
                    humantime::format_duration(grace)
                );
                tracing::info!(incident = id, "{msg}");
                store
                    .append(
                        id,
                        TimelineEntry::new(clock.now(), "wait", msg)
                            .with_data(json!({ "grace_ms": grace.as_millis() as u64 })),
                    )
                    .await?;
                tokio::select! {
                    _ = tokio::time::sleep(grace) => {}
                    _ = stop.cancelled() => return Ok(false),
                }
                if rx.borrow().is_none() {
                    store
                        .append(
                            id,
                            TimelineEntry::new(
                                clock.now(),
                                "wait",
                                "symptoms outlived the grace period: running its own plan",
                            ),
                        )
                        .await?;
                    return Ok(true);
                }
            }
            Some(h) => {
                if said.as_deref() != Some(h.text.as_str()) {
                    tracing::info!(incident = id, cause = ?h.cause, "{}", h.text);
                    store
                        .append(
                            id,
                            TimelineEntry::new(clock.now(), "wait", h.text.clone())
                                .with_data(json!({ "cause": h.cause })),
                        )
                        .await?;
                    said = Some(h.text);
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() {
                        // No engine any more: wait to be stopped.
                        stop.cancelled().await;
                        return Ok(false);
                    },
                    _ = stop.cancelled() => return Ok(false),
                }
            }
        }
    }
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

    /// Ends an attempt in the ledger and says why on the timeline (kind
    /// `verify`): the one way a verified, failed or abandoned attempt ends.
    async fn conclude(
        &self,
        attempt: crate::store::AttemptId,
        outcome: AttemptOutcome,
        step: &str,
        reason: &str,
        data: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.store
            .finish_attempt(attempt, outcome, reason, self.clock.now())
            .await?;
        self.note("verify", format!("step {step}: {reason}"), data)
            .await
    }

    fn view(&self, name: &str) -> SymptomView {
        self.symptoms
            .get(name)
            .map(|rx| *rx.borrow())
            .unwrap_or(SymptomView::new(Phase::Ok, Seen::Nothing))
    }

    /// What medic sees now of every symptom of the scenario, by name.
    fn observations(&self) -> Vec<SymptomObservation> {
        let mut names: Vec<&String> = self.symptoms.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let (target, check) = self.observed.get(n).cloned().unwrap_or((None, ""));
                SymptomObservation {
                    symptom: n.clone(),
                    target,
                    check,
                    view: self.view(n),
                    quorum: None,
                }
            })
            .collect()
    }

    /// The objective view of symptom `name` for this incident's instance.
    async fn quorum_of(&self, name: &str) -> QuorumView {
        let q = self.quorum.get(name).copied().unwrap_or_default();
        let instance = if q.per_series {
            self.instance.as_str()
        } else {
            ""
        };
        self.observers
            .count(&self.scenario, name, instance, q, self.view(name).seen)
            .await
    }

    /// The objective view of every active trigger symptom.
    async fn objective(&self) -> Vec<(String, QuorumView)> {
        let mut out = Vec::new();
        for n in &self.when {
            if self.view(n).phase.is_active() {
                out.push((n.clone(), self.quorum_of(n).await));
            }
        }
        out
    }

    /// [`PlanContext::observations`] with the objective view of every
    /// symptom that observes a target (what actions read).
    async fn observations_counted(&self) -> Vec<SymptomObservation> {
        let mut all = self.observations();
        for o in &mut all {
            if o.target.is_some() {
                o.quorum = Some(self.quorum_of(&o.symptom).await);
            }
        }
        all
    }

    /// How long to wait before counting observers again: the shortest
    /// interval among the trigger symptoms (within 100 ms and 5 s).
    fn recount_after(&self) -> Duration {
        self.when
            .iter()
            .filter_map(|n| self.quorum.get(n).map(|q| q.every))
            .min()
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    fn visibility_now(&self) -> Result<(), Visibility> {
        let active: Vec<_> = self
            .when
            .iter()
            .map(|n| (n, self.view(n)))
            .filter(|(_, v)| v.phase.is_active())
            .collect();
        if active.is_empty() {
            return Err(Visibility::Healthy);
        }
        let blind: Vec<String> = active
            .iter()
            .filter(|(_, v)| v.seen != Seen::Failing)
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
                .filter(|n| self.view(n).phase != Phase::Ok)
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

    fn key(&self, idx: usize, n: usize) -> String {
        format!("{}:{}:{}", self.incident, idx, n)
    }

    /// Writes an attempt to the ledger with everything that led to it.
    async fn ledger(
        &self,
        idx: usize,
        ps: &PlannedStep,
        n: usize,
        extra: serde_json::Value,
    ) -> Result<AttemptId, StoreError> {
        let mut inputs = json!({
            "params": ps.action.inputs(),
            "observed": self.observations().iter().map(SymptomObservation::to_json).collect::<Vec<_>>(),
            "targets": ps.step.action.targets(),
        });
        if let (Some(obj), serde_json::Value::Object(more)) = (inputs.as_object_mut(), extra) {
            obj.extend(more);
        }
        self.store
            .begin_attempt(NewAttempt {
                incident_id: self.incident,
                scenario: self.scenario.clone(),
                instance: self.instance.clone(),
                step: ps.step.name.clone(),
                step_index: idx as u32,
                action: ps.step.action.kind().to_string(),
                key: self.key(idx, n),
                started_at: self.clock.now(),
                inputs,
            })
            .await
    }

    /// Records a decision that executes nothing (refusal or dry-run).
    /// A refusal: the next attempt number taken, the attempt recorded as
    /// refused without running (with `extra`, e.g. the gates); the reason back.
    async fn refuse(
        &self,
        idx: usize,
        ps: &PlannedStep,
        n: &mut usize,
        reason: String,
        extra: serde_json::Value,
    ) -> Result<String, StoreError> {
        *n += 1;
        self.record_without_running(idx, ps, *n, AttemptOutcome::Refused, reason.clone(), extra)
            .await?;
        Ok(reason)
    }

    async fn record_without_running(
        &self,
        idx: usize,
        ps: &PlannedStep,
        n: usize,
        outcome: AttemptOutcome,
        reason: String,
        extra: serde_json::Value,
    ) -> Result<(), StoreError> {
        let id = self.ledger(idx, ps, n, extra.clone()).await?;
        self.store
            .finish_attempt(id, outcome, &reason, self.clock.now())
            .await?;
        let kind = if outcome == AttemptOutcome::DryRun {
            "step"
        } else {
            "guard"
        };
        let mut data = json!({ "step": ps.step.name, "outcome": outcome.as_str(), "inputs": ps.action.inputs() });
        if let (Some(obj), serde_json::Value::Object(more)) = (data.as_object_mut(), extra) {
            obj.extend(more);
        }
        self.note(kind, format!("step {}: {}", ps.step.name, reason), data)
            .await
    }

    /// Puts every gate of a preflight on the timeline.
    async fn note_gates(&self, step: &str, pre: &Preflight, dry: bool) -> Result<(), StoreError> {
        for g in &pre.gates {
            let verdict = match (g.passed, g.wait.is_some(), dry) {
                (true, _, _) => "passed",
                _ if g.advisory => "rejected",
                (false, true, _) => "not yet",
                (false, false, true) => "would refuse",
                (false, false, false) => "refused",
            };
            self.note(
                "gate",
                format!("step {step}: gate {} {verdict}: {}", g.name, g.detail),
                json!({ "step": step, "gate": g }),
            )
            .await?;
        }
        Ok(())
    }

    /// The action's context for one attempt.
    fn action_context(&self, key: String, step: &Step) -> ActionContext {
        ActionContext {
            key,
            cancel: self.kill.clone(),
            timeout: step.timeout.get(),
            observations: self.observations(),
            ledger: Some(self.store.clone()),
            now: self.clock.now(),
            preflight: serde_json::Value::Null,
            rpo: self.rpo,
            detected_at: self.opened_at,
        }
    }

    /// Runs the action's preflight, bounded by the step's timeout.
    async fn preflight(&self, ps: &PlannedStep, actx: &ActionContext) -> Preflight {
        let limit = ps.step.timeout.get();
        match tokio::time::timeout(limit, ps.action.preflight(actx)).await {
            Ok(p) => p,
            Err(_) => Preflight {
                gates: vec![Gate::fail(
                    "preflight",
                    format!(
                        "the preconditions could not be checked within {}",
                        humantime::format_duration(limit)
                    ),
                )],
                data: serde_json::Value::Null,
            },
        }
    }
}

/// Resolves when any receiver sees a change (or all senders are gone).
pub(super) async fn any_changed(rxs: &mut [watch::Receiver<SymptomView>]) {
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
    // Resume: steps before the last one tried are done with; a chained step
    // that worked hands over to its follow-up; an attempt left in flight by
    // a crash is verified, never blindly run again.
    if let Some(last) = history.iter().max_by_key(|a| (a.step_index, a.id)) {
        start = last.step_index as usize;
        if last.outcome == Some(AttemptOutcome::Succeeded) && then_of(ctx, start) == Then::Continue
        {
            start += 1;
        }
    }
    for a in history.iter().filter(|a| a.outcome.is_none()) {
        match resume_in_flight(ctx, a).await? {
            Resumed::Worked(idx) if then_of(ctx, idx) == Then::Continue => start = idx + 1,
            Resumed::Worked(idx) => {
                return Ok(PlanOutcome::Recovered {
                    step: ctx.steps[idx].step.name.clone(),
                });
            }
            Resumed::Stopped => return Ok(PlanOutcome::Stopped),
            Resumed::NotVerified => {}
        }
    }
    let mut reasons = Vec::new();
    let mut idx = start;
    while let Some(ps) = ctx.steps.get(idx) {
        let end = run_step(ctx, idx, ps, &mut n).await?;
        match end {
            StepEnd::Worked if ps.step.then == Then::Continue => {
                let next = &ctx.steps.get(idx + 1).map_or("", |s| s.step.name.as_str());
                ctx.note(
                    "step",
                    format!("step {} worked; continuing with step {next}", ps.step.name),
                    json!({ "step": ps.step.name, "then": "continue" }),
                )
                .await?;
                idx += 1;
            }
            StepEnd::Worked => {
                return Ok(PlanOutcome::Recovered {
                    step: ps.step.name.clone(),
                });
            }
            StepEnd::Stopped => return Ok(PlanOutcome::Stopped),
            StepEnd::Escalate(reason) => return Ok(PlanOutcome::Exhausted { reason }),
            // dry-run reports every step, chained or not.
            StepEnd::DryRun(reason) => {
                reasons.push(format!("{}: {}", ps.step.name, reason));
                idx += 1;
            }
            StepEnd::Failed(reason) if let Some(target) = &ps.step.otherwise => {
                let Some(j) = ctx.steps.iter().position(|s| s.step.name == *target) else {
                    // The loader resolves every `else`; a plan built
                    // otherwise ends here rather than guess.
                    reasons.push(format!("{}: {}", ps.step.name, reason));
                    return Ok(PlanOutcome::Exhausted {
                        reason: format!(
                            "plan ended ({}); step {target:?} named by `else` of {} is not in the plan",
                            reasons.join("; "),
                            ps.step.name
                        ),
                    });
                };
                ctx.note(
                    "step",
                    format!(
                        "step {} did not work; its `else` goes on with step {target}",
                        ps.step.name
                    ),
                    json!({ "step": ps.step.name, "else": target, "reason": reason }),
                )
                .await?;
                reasons.push(format!("{}: {}", ps.step.name, reason));
                idx = j;
            }
            StepEnd::Failed(reason) if ps.step.then == Then::Continue => {
                let skipped: Vec<&str> = ctx.steps[idx + 1..]
                    .iter()
                    .map(|s| s.step.name.as_str())
                    .collect();
                let msg = format!(
                    "step {} did not work, so its follow-up steps ({}) do not run",
                    ps.step.name,
                    skipped.join(", ")
                );
                ctx.note(
                    "step",
                    msg.clone(),
                    json!({ "step": ps.step.name, "skipped": skipped, "reason": reason }),
                )
                .await?;
                reasons.push(format!("{}: {}", ps.step.name, reason));
                return Ok(PlanOutcome::Exhausted {
                    reason: format!("plan ended ({}); {msg}", reasons.join("; ")),
                });
            }
            StepEnd::Failed(reason) => {
                reasons.push(format!("{}: {}", ps.step.name, reason));
                idx += 1;
                // A step named by an `else` runs only as that fallback.
                if let Some(next) = ctx.steps.get(idx)
                    && let Some(from) = else_of(ctx, &next.step.name)
                {
                    return Ok(PlanOutcome::Exhausted {
                        reason: format!(
                            "plan exhausted ({}); step {} runs only as the `else` of step {from}",
                            reasons.join("; "),
                            next.step.name
                        ),
                    });
                }
            }
        }
    }
    let reason = if ctx.steps.is_empty() {
        "the scenario has no remediation plan".to_string()
    } else {
        format!("plan exhausted ({})", reasons.join("; "))
    };
    Ok(PlanOutcome::Exhausted { reason })
}

/// The step whose `else` names step `name`, if any.
fn else_of<'a>(ctx: &'a PlanContext, name: &str) -> Option<&'a str> {
    ctx.steps
        .iter()
        .find(|s| s.step.otherwise.as_deref() == Some(name))
        .map(|s| s.step.name.as_str())
}

fn then_of(ctx: &PlanContext, idx: usize) -> Then {
    ctx.steps.get(idx).map_or(Then::Stop, |s| s.step.then)
}

enum Resumed {
    /// The attempt of step `idx` turned out to have worked.
    Worked(usize),
    NotVerified,
    Stopped,
}

async fn resume_in_flight(ctx: &PlanContext, a: &Attempt) -> Result<Resumed, StoreError> {
    let idx = a.step_index as usize;
    let Some(ps) = ctx.steps.get(idx) else {
        ctx.store
            .finish_attempt(
                a.id,
                AttemptOutcome::Abandoned,
                "step no longer in the plan",
                ctx.clock.now(),
            )
            .await?;
        return Ok(Resumed::NotVerified);
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
    let verdict = if clears.is_empty() {
        // The action verifies itself: ask it whether its effect is there.
        let actx = ctx.action_context(a.key.clone(), &ps.step);
        match ps.action.reconcile(&actx).await {
            Some(r) if r.ok => Ok(format!("verified after restart: {}", r.detail)),
            Some(r) => Err(format!("in flight at restart; {}", r.detail)),
            None => Err(
                "in flight at restart; the action cannot tell whether it took effect".to_string(),
            ),
        }
    } else {
        match ctx.verify(clears, ps.step.verify.within.get()).await {
            Ok(took) => Ok(format!(
                "verified after restart: {} cleared in {:.1}s",
                clears.join(", "),
                took.as_secs_f64()
            )),
            Err(pending) => Err(format!(
                "in flight at restart; {} still not ok",
                pending.join(", ")
            )),
        }
    };
    match verdict {
        Ok(reason) => {
            ctx.conclude(
                a.id,
                AttemptOutcome::Succeeded,
                &ps.step.name,
                &reason,
                json!({}),
            )
            .await?;
            Ok(Resumed::Worked(idx))
        }
        Err(reason) => {
            ctx.conclude(
                a.id,
                AttemptOutcome::Abandoned,
                &ps.step.name,
                &reason,
                json!({}),
            )
            .await?;
            Ok(if ctx.stop.is_cancelled() {
                Resumed::Stopped
            } else {
                Resumed::NotVerified
            })
        }
    }
}

enum StepEnd {
    /// The step's verification held.
    Worked,
    Stopped,
    /// The step did not work (failed, refused, budget spent).
    Failed(String),
    /// dry-run: reported, not executed.
    DryRun(String),
    /// A bound says: act on nothing, page humans now.
    Escalate(String),
}

/// The attempt budget of a step: attempts that executed something within
/// the window, oldest first. Counted from the ledger: restarts reset nothing.
async fn budget(ctx: &PlanContext, step: &Step) -> Result<Vec<Attempt>, StoreError> {
    let since = budget_since(step, ctx.clock.now());
    Ok(ctx
        .store
        .attempts_since(&ctx.scenario, &step.name, &ctx.instance, since)
        .await?
        .into_iter()
        .filter(spends_budget)
        .collect())
}

/// Where `step`'s budget window starts at `now` (attempts started since
/// count). Shown budgets (`/metrics`, the status page) use it too.
pub fn budget_since(
    step: &Step,
    now: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    let window = chrono::Duration::from_std(step.limit.per.get()).unwrap_or(chrono::Duration::MAX);
    now.checked_sub_signed(window)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// Whether an attempt in the window used up its step's budget: it ended
/// having executed something. Budgets are per scenario, step and instance
/// (a per-series incident spends its own label set's).
pub fn spends_budget(a: &Attempt) -> bool {
    a.outcome.is_some_and(|o| o.counts_against_limit())
}

/// How many other incidents of this scenario have an attempt in flight.
async fn acting(ctx: &PlanContext) -> Result<usize, StoreError> {
    let mut ids: Vec<IncidentId> = ctx
        .store
        .attempts_in_flight()
        .await?
        .into_iter()
        .filter(|a| a.scenario == ctx.scenario && a.incident_id != ctx.incident)
        .map(|a| a.incident_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids.len())
}

/// The scenario-wide bounds kept in the ledger (its `limit` over every
/// instance, its blast radius over time), as gates for this instance.
async fn scenario_gates(ctx: &PlanContext) -> Result<[Gate; 2], StoreError> {
    let now = ctx.clock.now();
    let since = super::bounds::ledger_since(now, ctx.limit, ctx.blast_window);
    let attempts = ctx
        .store
        .scenario_attempts_since(&ctx.scenario, since)
        .await?;
    Ok([
        super::bounds::scenario_limit(&attempts, ctx.limit, now),
        super::bounds::blast_window(&attempts, &ctx.instance, ctx.blast_window, now),
    ])
}

/// A step refused by a scenario-wide budget: recorded (it uses no budget)
/// and the incident escalates, since more instances will not help.
async fn refuse_for_budget(
    ctx: &PlanContext,
    idx: usize,
    ps: &PlannedStep,
    n: &mut usize,
    g: Gate,
) -> Result<StepEnd, StoreError> {
    let reason = format!("refused: {}: {}", g.name, g.detail);
    let reason = ctx
        .refuse(idx, ps, n, reason, json!({ "gates": [g] }))
        .await?;
    Ok(StepEnd::Escalate(reason))
}

/// Sleeps `d` unless stopped first; false when stopped.
async fn pause(ctx: &PlanContext, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = ctx.stop.cancelled() => false,
    }
}

async fn run_step(
    ctx: &PlanContext,
    idx: usize,
    ps: &PlannedStep,
    n: &mut usize,
) -> Result<StepEnd, StoreError> {
    let step = &ps.step;
    let mut last_failure = String::from("not attempted");
    let targets = step.action.targets();
    let mut noted_window = false;
    let mut noted_acting = false;
    let mut noted_not_yet = false;
    // The last "waiting for a quorum" noted (noted again only when it changes).
    let mut noted_quorum: Option<String> = None;
    // Until when the step waits for a quorum before it is refused.
    let mut quorum_deadline: Option<Instant> = None;
    // Who approved this step (approval: required), once approved.
    let mut approved: Option<String> = None;
    // "Not yet" gates are re-evaluated until this deadline.
    let mut not_yet_deadline: Option<Instant> = None;
    if !step.only_if.is_empty() && !step.only_if.iter().any(|n| ctx.view(n).phase.is_active()) {
        let reason = format!(
            "skipped: it runs only while {} is active",
            step.only_if.join(" or ")
        );
        ctx.note(
            "step",
            format!("step {}: {reason}", step.name),
            json!({ "step": step.name, "only_if": step.only_if }),
        )
        .await?;
        return Ok(StepEnd::Failed(reason));
    }
    // Configured to do nothing (no restart method...): skipped, as a step
    // that did not work, so its fallback runs.
    if let Some(why) = ps.action.skip() {
        let reason = format!("skipped: {why}");
        ctx.note(
            "step",
            format!("step {}: {reason}", step.name),
            json!({ "step": step.name, "skipped": why }),
        )
        .await?;
        return Ok(StepEnd::Failed(reason));
    }
    // Who holds this step's targets while it acts, and since when it waits.
    let holder = format!(
        "incident #{} ({}) step {}",
        ctx.incident, ctx.scenario, step.name
    );
    let mut lock_wait: Option<(Instant, String)> = None;
    loop {
        if ctx.stop.is_cancelled() {
            return Ok(StepEnd::Stopped);
        }
        // A dependent or superseded incident starts no new step.
        if !wait_hold(
            ctx.store.as_ref(),
            &ctx.clock,
            ctx.incident,
            &ctx.hold,
            ctx.grace,
            &ctx.stop,
        )
        .await?
        {
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
                let reason = ctx.refuse(idx, ps, n, reason, json!({})).await?;
                return Ok(StepEnd::Failed(reason));
            }
        }
        let mode = step.mode.unwrap_or(ctx.mode);
        let dry = mode == Mode::DryRun;
        // Subjective is not enough: a quorum of observers must see the
        // trigger symptoms failing (dry-run reports it as a gate).
        if !dry {
            let views = ctx.objective().await;
            let short: Vec<String> = views
                .iter()
                .filter(|(_, v)| !v.met())
                .map(|(n, v)| format!("{n} {}", v.describe()))
                .collect();
            if !short.is_empty() {
                // Waited as long as a blind step would: refused (the plan
                // moves on and, in the end, humans are paged).
                let deadline = *quorum_deadline
                    .get_or_insert_with(|| Instant::now() + step.verify.within.get());
                if Instant::now() >= deadline {
                    let reason = format!(
                        "refused: {} for {} (no quorum: one replica's view is not enough)",
                        short.join("; "),
                        step.verify.within
                    );
                    let data = json!({ "quorum": quorum_json(&views) });
                    let reason = ctx.refuse(idx, ps, n, reason, data).await?;
                    return Ok(StepEnd::Failed(reason));
                }
                let msg = format!("step {}: {}: waiting", step.name, short.join("; "));
                if noted_quorum.as_deref() != Some(msg.as_str()) {
                    ctx.note(
                        "guard",
                        msg.clone(),
                        json!({ "step": step.name, "quorum": quorum_json(&views) }),
                    )
                    .await?;
                    noted_quorum = Some(msg);
                }
                if !pause(ctx, ctx.recount_after()).await {
                    return Ok(StepEnd::Stopped);
                }
                continue;
            }
            quorum_deadline = None;
            if noted_quorum.take().is_some() {
                let met: Vec<String> = views
                    .iter()
                    .map(|(n, v)| format!("{n} {}", v.describe()))
                    .collect();
                ctx.note(
                    "guard",
                    format!("step {}: {}: acting", step.name, met.join("; ")),
                    json!({ "step": step.name, "quorum": quorum_json(&views) }),
                )
                .await?;
            }
        }
        // Maintenance windows block actions, not observation: wait them out.
        let now = ctx.clock.now();
        if let Some(w) = ctx.bounds.maintenance(&ctx.scenario, &targets, now) {
            let end = w.end;
            if dry {
                let reason = format!(
                    "dry-run: would wait for the maintenance window ({}) until {}",
                    w.reason,
                    end.to_rfc3339()
                );
                *n += 1;
                ctx.record_without_running(
                    idx,
                    ps,
                    *n,
                    AttemptOutcome::DryRun,
                    reason.clone(),
                    json!({}),
                )
                .await?;
                return Ok(StepEnd::DryRun(reason));
            }
            if !noted_window {
                noted_window = true;
                ctx.note(
                    "guard",
                    format!(
                        "step {}: blocked by a maintenance window ({}) until {}; observation goes on",
                        step.name,
                        w.reason,
                        end.to_rfc3339()
                    ),
                    json!({ "window": { "scenario": w.scenario, "target": w.target, "start": w.start, "end": end, "reason": w.reason } }),
                )
                .await?;
            }
            let wait = (end - now).to_std().unwrap_or_default();
            if !pause(ctx, wait.min(Duration::from_secs(60))).await {
                return Ok(StepEnd::Stopped);
            }
            continue;
        }
        // Blast radius: most targets failing at once is more likely the
        // network or medic's own view: act on none, page humans.
        if let Some(why) = ctx.bounds.blast_radius(&ctx.scenario) {
            let reason = format!("refused: {why}");
            *n += 1;
            let outcome = if dry {
                AttemptOutcome::DryRun
            } else {
                AttemptOutcome::Refused
            };
            ctx.record_without_running(idx, ps, *n, outcome, reason.clone(), json!({}))
                .await?;
            return Ok(if dry {
                StepEnd::DryRun(reason)
            } else {
                StepEnd::Escalate(reason)
            });
        }
        let past = budget(ctx, step).await?;
        if dry {
            return dry_run(ctx, idx, ps, n, &past).await;
        }
        // A step the scenario's budgets refuse is not put to a human: the
        // same check runs again under the admission lock before it acts.
        if let Approval::Required(_) = step.approval
            && approved.is_none()
            && let Some(g) = scenario_gates(ctx).await?.into_iter().find(|g| !g.passed)
        {
            return refuse_for_budget(ctx, idx, ps, n, g).await;
        }
        if let Approval::Required(policy) = step.approval
            && approved.is_none()
        {
            let decision = match &ctx.approvals {
                Some(approvals) => {
                    approvals
                        .approval(ctx.incident, &step.name, policy, &ctx.stop)
                        .await?
                }
                None => Decision::Rejected(String::new()),
            };
            let (reason, end): (String, fn(String) -> StepEnd) = match decision {
                Decision::Approved(by) => {
                    approved = Some(by);
                    continue;
                }
                Decision::Stopped => return Ok(StepEnd::Stopped),
                Decision::Rejected(by) if by.is_empty() => (
                    "refused: approval required, and no approval interface is running".into(),
                    StepEnd::Failed,
                ),
                Decision::Rejected(by) => (
                    format!("refused: approval required; rejected by {by}"),
                    StepEnd::Failed,
                ),
                Decision::TimedOut => {
                    let reason = format!(
                        "refused: approval required; nobody approved within {}",
                        policy.timeout
                    );
                    match policy.on_timeout {
                        OnTimeout::Reject => (reason, StepEnd::Failed),
                        OnTimeout::Escalate => (reason, StepEnd::Escalate),
                    }
                }
            };
            let reason = ctx.refuse(idx, ps, n, reason, json!({})).await?;
            return Ok(end(reason));
        }
        if past.len() as u32 >= step.limit.attempts {
            let reason = format!(
                "refused: limit of {} attempts per {} reached (last failure: {})",
                step.limit.attempts, step.limit.per, last_failure
            );
            let reason = ctx.refuse(idx, ps, n, reason, json!({})).await?;
            return Ok(StepEnd::Failed(reason));
        }
        if let Some(ready_at) = cooldown_until(step, &past)
            && ready_at > now
        {
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
            if !pause(ctx, wait).await {
                return Ok(StepEnd::Stopped);
            }
            continue;
        }
        // Global bound on actions running at once.
        let _permit = tokio::select! {
            p = ctx.actions.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(StepEnd::Stopped),
            },
            _ = ctx.stop.cancelled() => return Ok(StepEnd::Stopped),
        };
        // Incidents of this scenario acting at once: checked and the attempt
        // written under the scenario's admission lock.
        let admission = ctx.bounds.admission(&ctx.scenario);
        let admitted = admission.lock().await;
        let others = acting(ctx).await?;
        if others >= ctx.max_acting as usize {
            drop(admitted);
            if !noted_acting {
                noted_acting = true;
                ctx.note(
                    "guard",
                    format!(
                        "step {}: waiting: {others} other incident(s) of this scenario are acting (at most {} at once)",
                        step.name, ctx.max_acting
                    ),
                    json!({ "acting": others, "max_acting": ctx.max_acting }),
                )
                .await?;
            }
            drop(_permit);
            if !pause(ctx, Duration::from_secs(1)).await {
                return Ok(StepEnd::Stopped);
            }
            continue;
        }
        // Budgets over the whole scenario: an instance is a label set, and
        // label sets come from outside; new ones must not buy new attempts.
        if let Some(g) = scenario_gates(ctx).await?.into_iter().find(|g| !g.passed) {
            drop(admitted);
            drop(_permit);
            return refuse_for_budget(ctx, idx, ps, n, g).await;
        }
        // One actor per target: this step's targets are its own until it
        // ends (released below on every way out).
        let now = ctx.clock.now();
        if let Some((target, by)) = lock_targets(ctx, &targets, &holder, step).await? {
            drop(admitted);
            drop(_permit);
            if lock_wait.as_ref().is_none_or(|(_, b)| *b != by) {
                ctx.note(
                    "lock",
                    format!(
                        "step {}: waiting for target {target}: {by} is acting on it",
                        step.name
                    ),
                    json!({ "step": step.name, "target": target, "held_by": by }),
                )
                .await?;
                let since = lock_wait.map_or_else(Instant::now, |(t, _)| t);
                lock_wait = Some((since, by));
            }
            if !pause(ctx, Duration::from_secs(1)).await {
                return Ok(StepEnd::Stopped);
            }
            continue;
        }
        if let Some((since, by)) = lock_wait.take() {
            let waited = since.elapsed();
            ctx.note(
                "lock",
                format!(
                    "step {}: targets {} are free after waiting {:.1}s for {by}",
                    step.name,
                    targets.join(", "),
                    waited.as_secs_f64()
                ),
                json!({ "step": step.name, "targets": targets, "waited_ms": waited.as_millis() as u64 }),
            )
            .await?;
        }
        // A target's own budget, whoever asks.
        if let Some(g) = target_budget(ctx, &targets, now).await? {
            unlock_targets(ctx, &targets, &holder).await?;
            drop(admitted);
            drop(_permit);
            let reason = format!("refused: {}: {}", g.name, g.detail);
            let reason = ctx
                .refuse(idx, ps, n, reason, json!({ "gates": [g] }))
                .await?;
            return Ok(StepEnd::Failed(reason));
        }
        // The action's own preconditions.
        *n += 1;
        let key = ctx.key(idx, *n);
        let mut actx = ctx.action_context(key.clone(), step);
        actx.observations = ctx.observations_counted().await;
        let pre = ctx.preflight(ps, &actx).await;
        let not_yet = pre.refusal().is_some_and(|g| g.wait.is_some());
        if !(not_yet && noted_not_yet) {
            ctx.note_gates(&step.name, &pre, false).await?;
        }
        noted_not_yet |= not_yet;
        let gates = json!({ "gates": pre.gates, "preflight": pre.data });
        if let Some(g) = pre.refusal() {
            if let Some(wait) = g.wait {
                let deadline =
                    *not_yet_deadline.get_or_insert_with(|| Instant::now() + step.timeout.get());
                if Instant::now() + wait <= deadline {
                    *n -= 1;
                    unlock_targets(ctx, &targets, &holder).await?;
                    drop(admitted);
                    drop(_permit);
                    if !pause(ctx, wait).await {
                        return Ok(StepEnd::Stopped);
                    }
                    continue;
                }
            }
            let reason = format!("refused: {}: {}", g.name, g.detail);
            // A label value refused where it lands came from outside:
            // nothing of the plan runs with it; humans are paged now.
            let hostile = g.name == template::VALUE_GATE;
            unlock_targets(ctx, &targets, &holder).await?;
            ctx.record_without_running(idx, ps, *n, AttemptOutcome::Refused, reason.clone(), gates)
                .await?;
            return Ok(if hostile {
                StepEnd::Escalate(reason)
            } else {
                StepEnd::Failed(reason)
            });
        }
        let id = ctx.ledger(idx, ps, *n, gates).await?;
        drop(admitted);
        ctx.note(
            "action",
            format!("step {}: running {}", step.name, ps.action.describe()),
            json!({ "step": step.name, "attempt": past.len() + 1, "key": key, "inputs": ps.action.inputs() }),
        )
        .await?;
        actx.preflight = pre.data.clone();
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
            unlock_targets(ctx, &targets, &holder).await?;
            ctx.note(
                "action",
                format!("step {}: action failed: {}", step.name, result.detail),
                result.data.clone(),
            )
            .await?;
            last_failure = result.detail;
            continue;
        }
        if step.verify.clears.is_empty() {
            // The action verified its own effect (e.g. a promotion checks
            // pg_is_in_recovery() = false and a new timeline).
            let reason = format!("verified by the action: {}", result.detail);
            unlock_targets(ctx, &targets, &holder).await?;
            ctx.conclude(
                id,
                AttemptOutcome::Succeeded,
                &step.name,
                &reason,
                result.data.clone(),
            )
            .await?;
            return Ok(StepEnd::Worked);
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
        let verdict = ctx
            .verify(&step.verify.clears, step.verify.within.get())
            .await;
        // The step has ended (verified or not): its targets are free.
        unlock_targets(ctx, &targets, &holder).await?;
        match verdict {
            Ok(took) => {
                let reason = format!(
                    "verified: {} cleared {:.2}s after the action",
                    step.verify.clears.join(", "),
                    took.as_secs_f64()
                );
                ctx.conclude(
                    id,
                    AttemptOutcome::Succeeded,
                    &step.name,
                    &reason,
                    json!({}),
                )
                .await?;
                return Ok(StepEnd::Worked);
            }
            Err(_) if ctx.shutdown.is_cancelled() => return Ok(StepEnd::Stopped),
            Err(pending) => {
                let reason = format!(
                    "verification failed: {} not ok within {}",
                    pending.join(", "),
                    step.verify.within
                );
                ctx.conclude(id, AttemptOutcome::Failed, &step.name, &reason, json!({}))
                    .await?;
                if ctx.stop.is_cancelled() {
                    return Ok(StepEnd::Stopped);
                }
                last_failure = reason;
            }
        }
    }
}

/// The objective views, for the timeline's data.
fn quorum_json(views: &[(String, QuorumView)]) -> serde_json::Value {
    views
        .iter()
        .map(|(n, v)| (n.clone(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Takes the lock of every target of `step` for `holder` (in name order),
/// until the step's timeout and verification could have run out; on the
/// first one held by another, gives back those taken and returns it with
/// its holder.
async fn lock_targets(
    ctx: &PlanContext,
    targets: &[String],
    holder: &str,
    step: &Step,
) -> Result<Option<(String, String)>, StoreError> {
    let mut sorted: Vec<&String> = targets.iter().collect();
    sorted.sort();
    sorted.dedup();
    let now = ctx.clock.now();
    let hold_for = step.timeout.get() + step.verify.within.get() + Duration::from_secs(60);
    let until = now + chrono::Duration::from_std(hold_for).unwrap_or(chrono::Duration::MAX);
    let mut taken = Vec::new();
    for t in sorted {
        match ctx.store.lock_target(t, holder, now, until).await? {
            None => taken.push(t.clone()),
            Some(by) => {
                unlock_targets(ctx, &taken, holder).await?;
                return Ok(Some((t.clone(), by)));
            }
        }
    }
    Ok(None)
}

/// Releases `holder`'s locks of `targets`.
async fn unlock_targets(
    ctx: &PlanContext,
    targets: &[String],
    holder: &str,
) -> Result<(), StoreError> {
    for t in targets {
        ctx.store.unlock_target(t, holder).await?;
    }
    Ok(())
}

/// The first target whose own budget (`budget:` in the config) is spent:
/// changes counted from the ledger over every scenario.
async fn target_budget(
    ctx: &PlanContext,
    targets: &[String],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Gate>, StoreError> {
    for t in targets {
        let budget = ctx.bounds.topology().links(t).budget;
        let window = chrono::Duration::from_std(budget.per.get()).unwrap_or(chrono::Duration::MAX);
        let since = now
            .checked_sub_signed(window)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let used: Vec<Attempt> = ctx
            .store
            .target_attempts_since(t, since)
            .await?
            .into_iter()
            .filter(|a| a.outcome.is_none_or(|o| o.counts_against_limit()))
            .collect();
        if used.len() as u32 >= budget.changes {
            let mut by: Vec<String> = Vec::new();
            for a in &used {
                let who = format!("{}/{}", a.scenario, a.step);
                if !by.contains(&who) {
                    by.push(who);
                }
            }
            return Ok(Some(Gate::fail(
                "target budget",
                format!(
                    "target {t} was changed {} times in the last {} (budget {} per {}; by {})",
                    used.len(),
                    budget.per,
                    budget.changes,
                    budget.per,
                    by.join(", ")
                ),
            )));
        }
    }
    Ok(None)
}

/// When the step's cooldown after its last attempt ends, if it has one.
fn cooldown_until(step: &Step, past: &[Attempt]) -> Option<chrono::DateTime<chrono::Utc>> {
    let last = past.last()?;
    let cooldown =
        chrono::Duration::from_std(step.limit.cooldown.get()).unwrap_or(chrono::Duration::MAX);
    Some(last.ended_at.unwrap_or(last.started_at) + cooldown)
}

/// dry-run: evaluates every guard and precondition, reports them, runs
/// nothing.
async fn dry_run(
    ctx: &PlanContext,
    idx: usize,
    ps: &PlannedStep,
    n: &mut usize,
    past: &[Attempt],
) -> Result<StepEnd, StoreError> {
    let step = &ps.step;
    let now = ctx.clock.now();
    let mut guards = Vec::new();
    guards.push(if step.approval.required() {
        Gate::fail("approval", "approval required")
    } else {
        Gate::pass("approval", "not required")
    });
    guards.push(if past.len() as u32 >= step.limit.attempts {
        Gate::fail(
            "limit",
            format!(
                "{} of {} attempts per {} used",
                past.len(),
                step.limit.attempts,
                step.limit.per
            ),
        )
    } else {
        Gate::pass(
            "limit",
            format!(
                "{} of {} attempts per {} used",
                past.len(),
                step.limit.attempts,
                step.limit.per
            ),
        )
    });
    if let Some(ready_at) = cooldown_until(step, past)
        && ready_at > now
    {
        guards.push(Gate::fail(
            "cooldown",
            format!("cooling down until {}", ready_at.to_rfc3339()),
        ));
    }
    guards.extend(scenario_gates(ctx).await?);
    // The targets' own budgets (the lock is not taken: nothing runs).
    if let Some(g) = target_budget(ctx, &step.action.targets(), now).await? {
        guards.push(g);
    }
    let others = acting(ctx).await?;
    guards.push(if others >= ctx.max_acting as usize {
        Gate::fail(
            "acting",
            format!("{others} other incident(s) of this scenario are acting"),
        )
    } else {
        Gate::pass("acting", format!("{others} other incident(s) acting"))
    });
    for (name, v) in ctx.objective().await {
        guards.push(if v.met() {
            Gate::pass("quorum", format!("{name} {}", v.describe()))
        } else {
            Gate::fail("quorum", format!("{name} {}", v.describe()))
        });
    }
    *n += 1;
    let mut actx = ctx.action_context(ctx.key(idx, *n), step);
    actx.observations = ctx.observations_counted().await;
    let pre = ctx.preflight(ps, &actx).await;
    let mut all = Preflight {
        gates: guards,
        data: pre.data.clone(),
    };
    all.gates.extend(pre.gates);
    ctx.note_gates(&step.name, &all, true).await?;
    let reason = match all.refusal() {
        None => format!("dry-run: would run {}", ps.action.describe()),
        Some(g) => format!(
            "dry-run: would refuse {} ({}: {})",
            ps.action.describe(),
            g.name,
            g.detail
        ),
    };
    ctx.record_without_running(
        idx,
        ps,
        *n,
        AttemptOutcome::DryRun,
        reason.clone(),
        json!({ "gates": all.gates, "preflight": all.data }),
    )
    .await?;
    Ok(StepEnd::DryRun(reason))
}
