//! One incident's task: run (or resume) the plan, escalate when it is
//! exhausted, keep escalating until the incident is resolved.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::depend::HoldRx;
use super::plan::{self, Approvals, PlanContext, PlanOutcome, PlannedStep};
use super::{ScenarioRuntime, Shared};
use crate::observe::{Labels, Phase, SymptomView};
use crate::page::Pager;
use crate::page::decision::Approval;
use crate::remedy::template::Values;
use crate::remedy::{Action, Unexpanded};
use crate::rules::model::ApprovalPolicy;
use crate::store::{Incident, IncidentId, IncidentState, StoreError, TimelineEntry};

/// The pager decides the plan's approvals: it pages humans with Approve /
/// Reject and waits for a decision (see [`Pager::approval`]).
#[async_trait::async_trait]
impl Approvals for Pager {
    async fn approval(
        &self,
        incident: IncidentId,
        step: &str,
        policy: ApprovalPolicy,
        stop: &CancellationToken,
    ) -> Result<Approval, StoreError> {
        Pager::approval(self, incident, step, policy, stop).await
    }
}

/// Drives one incident until its symptoms are quiet (then resolves it and
/// returns true) or medic stops (returns false). `token` is cancelled in
/// both cases; `shared.stop` tells them apart. While `hold` says so, it
/// waits on another incident instead of acting ([`super::depend`]).
#[allow(clippy::too_many_arguments)]
pub async fn drive(
    rt: Arc<ScenarioRuntime>,
    incident: Incident,
    labels: Labels,
    symptoms: HashMap<String, watch::Receiver<SymptomView>>,
    shared: Shared,
    token: CancellationToken,
    resumed: bool,
    hold: HoldRx,
) -> bool {
    let id = incident.id;
    shared.pager.register(&rt.scenario);
    shared.pager.attach(id, token.clone());
    // The `when` symptoms, watched after the plan (a human's Resolve).
    let mut when: Vec<watch::Receiver<SymptomView>> = rt
        .scenario
        .when
        .symptoms()
        .iter()
        .filter_map(|n| symptoms.get(n).cloned())
        .collect();
    // A dependent from its first moment tells nobody: its cause's pages
    // name it. Its own communication plan starts only if it comes to act
    // on its own (its symptoms outlived the cause), timed from then.
    let dependent_at_open = hold.borrow().is_some();
    let result = async {
        if !resumed && !dependent_at_open {
            // The communication plan starts at detection.
            shared.pager.opened(&incident).await?;
        }
        drive_inner(
            &rt,
            &incident,
            &labels,
            symptoms,
            &shared,
            token.clone(),
            resumed,
            hold,
            !resumed && dependent_at_open,
        )
        .await?;
        // Wait until quiet (or shutdown), then resolve.
        token.cancelled().await;
        if shared.stop.is_cancelled() {
            return Ok(false);
        }
        let mut held = false;
        if let Some(by) = human_resolve(&shared, id).await?
            && still_failing(&when)
        {
            // Resolving now would open a new incident (and page) in the
            // same second: the incident stays, acknowledged, until its
            // symptoms clear.
            shared.pager.held(id, &by).await?;
            held = true;
            while still_failing(&when) {
                tokio::select! {
                    _ = shared.stop.cancelled() => return Ok(false),
                    _ = plan::any_changed(&mut when) => {}
                }
            }
        }
        resolve(&rt, &incident, &shared, held).await?;
        Ok::<_, StoreError>(true)
    }
    .await;
    shared.pager.detach(id);
    match result {
        Ok(resolved) => resolved,
        Err(e) => {
            // The store is where every decision is written first; without it
            // medic must not act. An operator must look.
            tracing::error!(incident = id, error = %e, "incident task stopped: store failure");
            false
        }
    }
}

/// The plan with `${labels.NAME}` expanded for this incident's series,
/// every value checked for where it lands (and the step's
/// `label_patterns`); a step that cannot be expanded refuses (its
/// preflight says why).
fn for_labels(steps: &[PlannedStep], labels: &Labels) -> Vec<PlannedStep> {
    steps
        .iter()
        .map(|ps| {
            let values = Values::new(labels, &ps.step.label_patterns);
            let action: Arc<dyn Action> = match ps.action.for_labels(&values) {
                Ok(None) => ps.action.clone(),
                Ok(Some(a)) => a,
                Err(error) => Arc::new(Unexpanded {
                    action: ps.action.clone(),
                    error,
                }),
            };
            PlannedStep {
                step: ps.step.clone(),
                action,
            }
        })
        .collect()
}

/// The latest human Resolve on the timeline (its message), if any.
async fn human_resolve(shared: &Shared, id: IncidentId) -> Result<Option<String>, StoreError> {
    Ok(shared
        .store
        .timeline_kinds(id, &["decision"], None)
        .await?
        .into_iter()
        .rev()
        .find(|e| e.data["decision"] == "resolve")
        .map(|e| e.message))
}

/// Whether any `when` symptom is not back to ok.
fn still_failing(when: &[watch::Receiver<SymptomView>]) -> bool {
    when.iter().any(|rx| rx.borrow().phase != Phase::Ok)
}

/// Writes the resolution with the measured time to recovery against the
/// RTO, and tells everyone who was paged. `held`: a human's Resolve came
/// while the symptoms still failed; they cleared since.
async fn resolve(
    rt: &ScenarioRuntime,
    incident: &Incident,
    shared: &Shared,
    held: bool,
) -> Result<(), StoreError> {
    let sc = &rt.scenario;
    let now = shared.clock.now();
    let took = (now - incident.opened_at).to_std().unwrap_or_default();
    let met = took <= sc.rto.get();
    // A human's Resolve, or the symptoms clearing.
    let by = match held {
        true => Some("all symptoms clear after a human's Resolve".to_string()),
        false => human_resolve(shared, incident.id).await?,
    };
    let msg = format!(
        "resolved: {}; recovered in {} ({} RTO {})",
        by.as_deref().unwrap_or("all symptoms clear"),
        humantime::format_duration(std::time::Duration::from_secs(took.as_secs())),
        if met { "within" } else { "MISSED" },
        sc.rto
    );
    // The entry first: whoever reads a resolved incident (the API, a
    // drill following it) finds why on its timeline. A crash between the
    // two leaves the incident open, to be resolved again on restart.
    shared
        .store
        .append(
            incident.id,
            TimelineEntry::new(now, "state", msg.clone()).with_data(json!({
                "time_to_recovery_ms": took.as_millis() as u64,
                "rto_ms": sc.rto.get().as_millis() as u64,
                "rto_met": met,
            })),
        )
        .await?;
    shared
        .store
        .set_state(incident.id, IncidentState::Resolved, now)
        .await?;
    tracing::info!(incident = incident.id, scenario = %sc.name, "{msg}");
    shared.pager.resolved(incident, &msg).await
}

#[allow(clippy::too_many_arguments)]
async fn drive_inner(
    rt: &ScenarioRuntime,
    incident: &Incident,
    labels: &Labels,
    symptoms: HashMap<String, watch::Receiver<SymptomView>>,
    shared: &Shared,
    token: CancellationToken,
    resumed: bool,
    hold: HoldRx,
    open_when_free: bool,
) -> Result<(), StoreError> {
    let store = &shared.store;
    let sc = &rt.scenario;
    // A resumed incident whose plan had not ended (it may wait for an
    // approval, escalated or acknowledged meanwhile) runs its plan again.
    let plan_done = resumed
        && store
            .timeline_kinds(incident.id, &["escalate", "state"], None)
            .await?
            .iter()
            .any(|e| {
                (e.kind == "escalate" && e.data["reason"].is_string())
                    || (e.kind == "state" && e.message.starts_with("remediated by step"))
            });
    let state = match incident.state {
        IncidentState::Escalated | IncidentState::Acknowledged if !plan_done => {
            IncidentState::Remediating
        }
        s => s,
    };
    match state {
        IncidentState::Open | IncidentState::Remediating => {
            // A dependent stays open, acting on nothing, while it waits.
            if !plan::wait_hold(
                store.as_ref(),
                &shared.clock,
                incident.id,
                &hold,
                shared.bounds.grace(),
                &token,
            )
            .await?
            {
                return Ok(());
            }
            if open_when_free {
                // No longer a dependent: its own notices start now.
                let mut now = incident.clone();
                now.opened_at = shared.clock.now();
                shared.pager.opened(&now).await?;
            }
            if matches!(
                incident.state,
                IncidentState::Open | IncidentState::Remediating
            ) {
                store
                    .set_state(incident.id, IncidentState::Remediating, shared.clock.now())
                    .await?;
            }
            if !resumed || incident.state == IncidentState::Open {
                store
                    .append(
                        incident.id,
                        TimelineEntry::new(
                            shared.clock.now(),
                            "state",
                            format!(
                                "remediating: plan of {} step(s), mode {:?}",
                                rt.steps.len(),
                                rt.mode
                            ),
                        ),
                    )
                    .await?;
            }
            let ctx = PlanContext {
                incident: incident.id,
                scenario: sc.name.clone(),
                instance: incident.instance.clone(),
                steps: for_labels(&rt.steps, labels),
                mode: rt.mode,
                when: sc.when.symptoms().to_vec(),
                symptoms,
                observed: sc
                    .symptoms
                    .iter()
                    .map(|s| {
                        let target = s.check.target().map(str::to_string);
                        (s.name.clone(), (target, s.check.kind()))
                    })
                    .collect(),
                quorum: (0..sc.symptoms.len())
                    .map(|j| {
                        (
                            sc.symptoms[j].name.clone(),
                            super::quorum::SymptomQuorum::of(rt, j),
                        )
                    })
                    .collect(),
                observers: shared.observers.clone(),
                max_acting: sc.max_acting,
                limit: sc.limit,
                blast_window: sc.blast_radius,
                store: store.clone(),
                clock: shared.clock.clone(),
                actions: shared.actions.clone(),
                bounds: shared.bounds.clone(),
                stop: token.clone(),
                approvals: Some(shared.pager.clone()),
                shutdown: shared.stop.clone(),
                kill: shared.kill.clone(),
                hold,
                grace: shared.bounds.grace(),
                rpo: sc.rpo.map(|r| r.get()),
                opened_at: Some(incident.opened_at),
            };
            match plan::execute(&ctx).await? {
                PlanOutcome::Recovered { step } => {
                    store
                        .append(
                            incident.id,
                            TimelineEntry::new(
                                shared.clock.now(),
                                "state",
                                format!("remediated by step {step}; resolves once every symptom is clear"),
                            ),
                        )
                        .await?;
                    Ok(())
                }
                PlanOutcome::Stopped => Ok(()),
                PlanOutcome::Exhausted { reason } => {
                    if token.is_cancelled() {
                        return Ok(());
                    }
                    let now = shared.clock.now();
                    let acked = store
                        .incident(incident.id)
                        .await?
                        .is_some_and(|i| i.state == IncidentState::Acknowledged);
                    if acked {
                        // A human has it: tell them, page nobody new.
                        store
                            .append(
                                incident.id,
                                TimelineEntry::new(now, "escalate", format!("plan gave up: {reason}; acknowledged, so nobody new is paged"))
                                    .with_data(json!({ "policy": sc.escalation, "reason": reason })),
                            )
                            .await?;
                        shared
                            .pager
                            .changed(incident.id, "escalate", &format!("plan gave up: {reason}"))
                            .await?;
                        return Ok(());
                    }
                    store
                        .set_state(incident.id, IncidentState::Escalated, now)
                        .await?;
                    store
                        .append(
                            incident.id,
                            TimelineEntry::new(now, "escalate", format!("escalated: {reason}"))
                                .with_data(json!({ "policy": sc.escalation, "reason": reason })),
                        )
                        .await?;
                    tracing::warn!(incident = incident.id, scenario = %sc.name, "escalated: {reason}");
                    shared
                        .pager
                        .escalate(incident, &sc.escalation, now, true)
                        .await
                }
            }
        }
        IncidentState::Escalated => {
            // Resumed: the chain lives in the outbox; start it only if the
            // crash came before it was written.
            let last = store
                .timeline_kinds(incident.id, &["escalate"], Some(1))
                .await?
                .pop();
            let since = last.map_or(incident.updated_at, |e| e.at);
            shared
                .pager
                .escalate(incident, &sc.escalation, since, false)
                .await
        }
        IncidentState::Acknowledged | IncidentState::Resolved => Ok(()),
    }
}
