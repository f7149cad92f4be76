//! Swapping the engine's scenarios while it runs (a rule reload).
//!
//! The symptom table is rebuilt for the new scenarios. What survives, by
//! name:
//! - a symptom of a surviving scenario whose check is unchanged keeps its
//!   state (phase, streak, last observation) and its live view, so an
//!   incident task verifying it sees no gap; a per-series one keeps every
//!   instance's;
//! - an open incident of a surviving scenario carries on: its task keeps the
//!   plan and escalation it started with (a plan is not swapped under a
//!   running step); its trigger symptoms that are new, or whose check
//!   changed, start as firing, so it resolves only once medic *sees* them
//!   clear (as after a restart);
//! - an open incident of a removed scenario is closed: its task stops at the
//!   next safe point (a running action may finish), attempts left in flight
//!   are marked abandoned, and the timeline says why.
//!
//! New incidents use the new rules, pager and escalation policies.

use crate::observe::{Phase, Seen, SymptomView};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::symptom::SymptomState;
use super::{Engine, OpenKey, ScenarioRuntime, Shared, Table, Update};
use crate::page::Pager;
use crate::rules::model::When;
use crate::store::{AttemptOutcome, Incident, IncidentState, StoreError, TimelineEntry};

/// Capacity of the check-outcome channel the engine hands out.
pub const UPDATES_CAPACITY: usize = 4096;

/// A request to the running engine.
pub enum Control {
    /// Replace every scenario (and the pager for new incidents).
    Reload {
        scenarios: Vec<Arc<ScenarioRuntime>>,
        pager: Arc<Pager>,
        reply: oneshot::Sender<Reloaded>,
    },
}

/// What a reload changed, and what the caller must start.
pub struct Reloaded {
    /// Scenarios present before and after.
    pub kept: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Incidents of removed scenarios, being closed.
    pub closed: Vec<i64>,
    /// Every (slot, scenario, symptom index) to start a check loop for.
    pub schedule: Vec<(usize, Arc<ScenarioRuntime>, usize)>,
    /// Where those check loops send their outcomes.
    pub updates: mpsc::Sender<Update>,
}

impl Engine {
    /// Handles one control request; returns the new update channel when the
    /// symptom table was replaced.
    pub(super) async fn control(
        &mut self,
        c: Control,
    ) -> Result<Option<mpsc::Receiver<Update>>, StoreError> {
        match c {
            Control::Reload {
                scenarios,
                pager,
                reply,
            } => {
                let (tx, rx) = mpsc::channel(UPDATES_CAPACITY);
                let mut reloaded = self.reload(scenarios, pager).await?;
                reloaded.updates = tx;
                let _ = reply.send(reloaded);
                Ok(Some(rx))
            }
        }
    }

    /// Replaces the scenarios; see the module docs for what carries over.
    /// The caller must stop the old check loops and start the returned
    /// schedule (its `updates` sender is a placeholder here).
    pub async fn reload(
        &mut self,
        scenarios: Vec<Arc<ScenarioRuntime>>,
        pager: Arc<Pager>,
    ) -> Result<Reloaded, StoreError> {
        let now = Instant::now();
        let mut table = Table::new(&scenarios, now);
        // New table slots whose state was carried over (the rest are fresh).
        let mut carried: HashSet<usize> = HashSet::new();
        let old_k: HashMap<String, usize> = self
            .scenarios
            .iter()
            .enumerate()
            .map(|(k, rt)| (rt.scenario.name.clone(), k))
            .collect();

        // Symptoms of surviving scenarios: move their live views over (per
        // instance for per-series ones); keep their state where the check
        // is the same.
        let mut moved = vec![false; self.table.symptoms.len()];
        let old = &mut self.table;
        for (k2, rt) in scenarios.iter().enumerate() {
            let Some(&k1) = old_k.get(&rt.scenario.name) else {
                continue;
            };
            for s in &rt.scenario.symptoms {
                let (Some(&ns), Some(&os)) =
                    (table.slots[k2].get(&s.name), old.slots[k1].get(&s.name))
                else {
                    continue;
                };
                let (_, j1) = old.owner[os];
                let same = self.scenarios[k1].scenario.symptoms[j1].check == s.check;
                let mut pairs = vec![(ns, os)];
                if let (Some(m), true) = (&old.series[os], table.series[ns].is_some()) {
                    for (key, &ot) in m {
                        let labels = old.instances[k1].get(key).cloned().unwrap_or_default();
                        pairs.push((table.instance_slot(ns, key, || labels), ot));
                    }
                }
                for (nt, ot) in pairs {
                    std::mem::swap(&mut table.symptoms.views[nt], &mut old.symptoms.views[ot]);
                    moved[ot] = true;
                    if same {
                        table.symptoms.states[nt] = old.symptoms.states[ot];
                        table.symptoms.streaks[nt] = old.symptoms.streaks[ot];
                        table.details[nt] = old.details[ot].clone();
                        carried.insert(nt);
                    } else {
                        table.symptoms.views[nt]
                            .send_replace(SymptomView::new(Phase::Ok, Seen::Nothing));
                    }
                }
            }
        }

        // Open incidents: carry on (surviving scenario) or close (removed).
        let mut open = HashMap::new();
        let mut closed = Vec::new();
        let old_open: Vec<(OpenKey, super::OpenIncident)> = self.open.drain().collect();
        let new_k: HashMap<&str, usize> = scenarios
            .iter()
            .enumerate()
            .map(|(k, rt)| (rt.scenario.name.as_str(), k))
            .collect();
        for ((k1, inst), mut o) in old_open {
            let old_rt = &self.scenarios[k1];
            match new_k.get(old_rt.scenario.name.as_str()) {
                Some(&k2) => {
                    // Symptoms gone from the scenario stay visible to the
                    // incident task, as unknown: it must not act on them.
                    let names: Vec<String> = self.table.slots[k1].keys().cloned().collect();
                    for name in names {
                        let Some(ot) = self.table.slot(k1, &name, &inst, false) else {
                            continue;
                        };
                        if !moved[ot] {
                            let sender = std::mem::replace(
                                &mut self.table.symptoms.views[ot],
                                tokio::sync::watch::channel(SymptomView::new(
                                    Phase::Ok,
                                    Seen::Nothing,
                                ))
                                .0,
                            );
                            sender.send_modify(|v| v.seen = Seen::Unknown);
                            tracing::info!(incident = o.incident.id, symptom = %name, "symptom removed by reload");
                            o.retired.push(sender);
                        }
                    }
                    let all = matches!(scenarios[k2].scenario.when, When::All(_));
                    for name in scenarios[k2].scenario.when.symptoms() {
                        let whole = table.slots[k2]
                            .get(name)
                            .is_some_and(|&b| table.series[b].is_none());
                        if whole && !all && !inst.is_empty() {
                            continue;
                        }
                        if let Some(nt) = table.slot(k2, name, &inst, true)
                            && !carried.contains(&nt)
                        {
                            table.symptoms.states[nt] = SymptomState::presumed_firing(now);
                            table.symptoms.views[nt]
                                .send_replace(SymptomView::new(Phase::Firing, Seen::Nothing));
                        }
                    }
                    if old_rt.scenario != scenarios[k2].scenario {
                        self.note(
                            o.incident.id,
                            "note",
                            "rules reloaded: this incident carries on with the plan and escalation it started with; new incidents use the new rules".into(),
                            json!({ "rules": scenarios[k2].scenario.path }),
                        )
                        .await?;
                    }
                    open.insert((k2, inst), o);
                }
                None => {
                    let reason = format!(
                        "closed: scenario {} was removed from the rules by a reload",
                        old_rt.scenario.name
                    );
                    tracing::warn!(incident = o.incident.id, scenario = %old_rt.scenario.name, "{reason}");
                    closed.push(o.incident.id);
                    o.halt.cancel();
                    let shared = self.shared.clone();
                    self.shared.tasks.spawn(async move {
                        // It stops at its next safe point.
                        let _ = o.task.await;
                        if let Err(e) = close(&shared, &o.incident, &reason).await {
                            tracing::error!(incident = o.incident.id, error = %e, "cannot close the incident: store failure");
                        }
                    });
                }
            }
        }

        let kept: Vec<String> = scenarios
            .iter()
            .filter(|rt| old_k.contains_key(&rt.scenario.name))
            .map(|rt| rt.scenario.name.clone())
            .collect();
        let added = scenarios
            .iter()
            .filter(|rt| !old_k.contains_key(&rt.scenario.name))
            .map(|rt| rt.scenario.name.clone())
            .collect();
        let removed = self
            .scenarios
            .iter()
            .filter(|rt| !new_k.contains_key(rt.scenario.name.as_str()))
            .map(|rt| rt.scenario.name.clone())
            .collect();

        self.triggered = vec![HashSet::new(); scenarios.len()];
        self.scenarios = scenarios;
        self.table = table;
        self.open = open;
        self.shared.pager = pager;
        // Incidents of scenarios that were not running (refused before) and
        // now are: pick them up as after a restart.
        self.resume_except(&closed).await?;
        for k in 0..self.scenarios.len() {
            self.evaluate(k, "").await?;
            let insts: Vec<String> = self.table.instances[k].keys().cloned().collect();
            for i in insts.iter().filter(|i| !i.is_empty()) {
                self.evaluate(k, i).await?;
            }
        }
        Ok(Reloaded {
            kept,
            added,
            removed,
            closed,
            schedule: self.schedule(),
            updates: mpsc::channel(1).0,
        })
    }
}

/// Closes an incident whose scenario is gone: no plan, no symptoms left to
/// clear it. Attempts left in flight are abandoned (nobody will verify
/// them), the timeline says why, and whoever was paged is told.
async fn close(shared: &Shared, incident: &Incident, reason: &str) -> Result<(), StoreError> {
    let store = &shared.store;
    for a in store.incident_attempts(incident.id).await? {
        if a.outcome.is_none() {
            store
                .finish_attempt(
                    a.id,
                    AttemptOutcome::Abandoned,
                    "scenario removed by a rule reload while in flight",
                    shared.clock.now(),
                )
                .await?;
        }
    }
    let now = shared.clock.now();
    store
        .append(
            incident.id,
            TimelineEntry::new(now, "state", reason.to_string())
                .with_data(json!({ "closed_by": "reload" })),
        )
        .await?;
    store
        .set_state(incident.id, IncidentState::Resolved, now)
        .await?;
    shared.pager.resolved(incident, reason).await
}
