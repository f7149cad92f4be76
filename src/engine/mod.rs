//! The engine: symptom state machines, scenario matching and the incident
//! life cycle.
//!
//! One task owns every symptom's state ([`Symptoms`]) and consumes check
//! outcomes from a channel. A phase change may open an incident (exactly one
//! per scenario and instance while it is open: the store enforces it) or
//! resolve one. Each open incident has its own task ([`incident`]) that runs
//! the plan and, when the plan is exhausted, escalates. Checks know nothing
//! of incidents; the incident is where they meet.

pub mod incident;
pub mod reload;
pub mod symptom;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::check::{Check, Outcome};
use crate::clock::Clock;
use crate::page::Pager;
use crate::remedy::bounds::{Bounds, Health};
use crate::remedy::plan::{PlannedStep, SymptomView};
use crate::rules::model::{Mode, Scenario, When};
use crate::store::{Incident, IncidentId, NewIncident, Store, StoreError, TimelineEntry};
use symptom::{Phase, Seen, SymptomState, Timing, Transition};

/// A scenario ready to run: its rule, its checks and its actions.
pub struct ScenarioRuntime {
    pub scenario: Scenario,
    /// One per symptom, in `scenario.symptoms` order.
    pub checks: Vec<Arc<dyn Check>>,
    pub steps: Vec<PlannedStep>,
    /// The scenario's effective mode (its own, else the global one).
    pub mode: Mode,
}

/// One check outcome for one symptom slot.
#[derive(Debug)]
pub struct Update {
    pub slot: usize,
    pub outcome: Outcome,
    pub at: Instant,
}

/// Every symptom's state machine, in one flat table (the hot path).
pub struct Symptoms {
    states: Vec<SymptomState>,
    timings: Vec<Timing>,
    views: Vec<watch::Sender<SymptomView>>,
    /// Per slot: how many consecutive observations were the same as the
    /// last one, and when the first of them was made (what actions such as
    /// a promotion need: "unreachable for N checks over T").
    streaks: Vec<(u32, Instant)>,
}

impl Symptoms {
    /// A table of symptoms with these timings, none observed yet.
    pub fn new(timings: Vec<Timing>, now: Instant) -> Self {
        let n = timings.len();
        Symptoms {
            states: vec![SymptomState::new(now); n],
            timings,
            views: (0..n)
                .map(|_| watch::channel(SymptomView::new(Phase::Ok, Seen::Nothing)).0)
                .collect(),
            streaks: vec![(0, now); n],
        }
    }

    /// How many symptoms.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Feeds one observation; publishes the new view to watchers when it
    /// changed; returns the phase change, if any.
    #[inline]
    pub fn observe(&mut self, slot: usize, seen: Seen, at: Instant) -> Option<Transition> {
        let state = &mut self.states[slot];
        let before = state.seen;
        let tr = state.update(seen, at, self.timings[slot]);
        let streak = &mut self.streaks[slot];
        if before == seen && streak.0 > 0 {
            streak.0 = streak.0.saturating_add(1);
        } else {
            *streak = (1, at);
        }
        let view = SymptomView {
            phase: state.phase,
            seen,
            streak: streak.0,
            streak_since: Some(streak.1),
        };
        self.views[slot].send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
        tr
    }

    /// The current phase of a slot.
    pub fn phase(&self, slot: usize) -> Phase {
        self.states[slot].phase
    }

    /// A live view of a slot, for verification.
    pub fn watch(&self, slot: usize) -> watch::Receiver<SymptomView> {
        self.views[slot].subscribe()
    }

    /// Marks a slot firing (an incident was open when medic stopped).
    pub fn presume_firing(&mut self, slot: usize, now: Instant) {
        self.states[slot] = SymptomState::presumed_firing(now);
        self.streaks[slot] = (0, now);
        self.views[slot].send_replace(SymptomView::new(Phase::Firing, Seen::Nothing));
    }
}

/// What the engine shares with incident tasks.
#[derive(Clone)]
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub pager: Arc<Pager>,
    /// Global bound on actions in flight.
    pub actions: Arc<Semaphore>,
    /// Maintenance windows, blast radius, admission of acting incidents.
    pub bounds: Arc<Bounds>,
    /// Stop at a safe point (shutdown requested).
    pub stop: CancellationToken,
    /// Abort running actions (shutdown grace period over).
    pub kill: CancellationToken,
    pub tasks: TaskTracker,
}

struct OpenIncident {
    incident: Incident,
    /// Cancelled once its symptoms are quiet (or medic stops): the plan
    /// stops at a safe point, escalation stops, and the incident task
    /// writes the resolution. One writer per incident keeps its timeline
    /// in causal order.
    token: CancellationToken,
    /// The incident task's own "medic is stopping": cancelled with medic,
    /// or alone when a reload removes its scenario (the task then stops at
    /// a safe point without resolving, and the reload closes the incident).
    halt: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    resolving: bool,
    /// Views of symptoms a reload removed from the scenario, kept alive
    /// (marked unknown) for the incident task that still watches them.
    retired: Vec<watch::Sender<SymptomView>>,
}

/// The engine. Build it with [`Engine::new`], resume with [`Engine::resume`],
/// then drive it with [`Engine::run`].
pub struct Engine {
    scenarios: Vec<Arc<ScenarioRuntime>>,
    symptoms: Symptoms,
    /// Slot → (scenario index, symptom index).
    owner: Vec<(usize, usize)>,
    /// Scenario index → slot of each of its symptoms, by name.
    slots: Vec<HashMap<String, usize>>,
    /// Last detail seen per slot, for timelines.
    details: Vec<Outcome>,
    open: HashMap<usize, OpenIncident>,
    shared: Shared,
    /// Incident tasks report their incident's id here once resolved.
    done_tx: mpsc::UnboundedSender<IncidentId>,
    done_rx: mpsc::UnboundedReceiver<IncidentId>,
}

/// Where every symptom of `scenarios` sits in the flat table.
struct Layout {
    timings: Vec<Timing>,
    /// Slot → (scenario index, symptom index).
    owner: Vec<(usize, usize)>,
    /// Scenario index → slot of each of its symptoms, by name.
    slots: Vec<HashMap<String, usize>>,
}

impl Layout {
    fn new(scenarios: &[Arc<ScenarioRuntime>]) -> Self {
        let mut timings = Vec::new();
        let mut owner = Vec::new();
        let mut slots = Vec::new();
        for (k, rt) in scenarios.iter().enumerate() {
            let mut by_name = HashMap::new();
            for (j, s) in rt.scenario.symptoms.iter().enumerate() {
                by_name.insert(s.name.clone(), timings.len());
                owner.push((k, j));
                timings.push(Timing {
                    for_: s.for_.get(),
                    clear_for: s.clear_for.get(),
                });
            }
            slots.push(by_name);
        }
        Layout {
            timings,
            owner,
            slots,
        }
    }
}

impl Engine {
    /// Lays out every symptom of every scenario in one table.
    pub fn new(scenarios: Vec<Arc<ScenarioRuntime>>, shared: Shared) -> Self {
        let Layout {
            timings,
            owner,
            slots,
        } = Layout::new(&scenarios);
        let n = timings.len();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Engine {
            done_tx,
            done_rx,
            scenarios,
            symptoms: Symptoms::new(timings, Instant::now()),
            owner,
            slots,
            details: vec![Outcome::Unknown("not observed yet".into()); n],
            open: HashMap::new(),
            shared,
        }
    }

    /// Every (slot, scenario, symptom) to schedule checks for.
    pub fn schedule(&self) -> Vec<(usize, Arc<ScenarioRuntime>, usize)> {
        self.owner
            .iter()
            .enumerate()
            .map(|(slot, &(k, j))| (slot, self.scenarios[k].clone(), j))
            .collect()
    }

    /// Picks up incidents left open by a previous run: no duplicate, none
    /// forgotten. Their trigger symptoms start as firing, so they resolve
    /// only once medic *sees* them clear.
    pub async fn resume(&mut self) -> Result<(), StoreError> {
        self.resume_except(&[]).await
    }

    /// [`Engine::resume`], skipping incidents already tracked and `skip`.
    async fn resume_except(&mut self, skip: &[IncidentId]) -> Result<(), StoreError> {
        let open = self.shared.store.open_incidents().await?;
        for inc in open {
            if skip.contains(&inc.id) || self.open.values().any(|o| o.incident.id == inc.id) {
                continue;
            }
            let Some(k) = self
                .scenarios
                .iter()
                .position(|s| s.scenario.name == inc.scenario)
            else {
                tracing::warn!(
                    incident = inc.id,
                    scenario = %inc.scenario,
                    "open incident of a scenario that is not running; left as it is"
                );
                continue;
            };
            let now = Instant::now();
            for name in self.scenarios[k].scenario.when.symptoms() {
                if let Some(&slot) = self.slots[k].get(name) {
                    self.symptoms.presume_firing(slot, now);
                }
            }
            self.note(
                inc.id,
                "state",
                format!(
                    "medic restarted; resuming this {} incident",
                    inc.state.as_str()
                ),
                json!({}),
            )
            .await?;
            tracing::info!(incident = inc.id, scenario = %inc.scenario, state = inc.state.as_str(), "resumed incident");
            let open = self.spawn_incident(k, inc, true);
            self.open.insert(k, open);
        }
        Ok(())
    }

    /// Consumes check outcomes until `stop` or the channel closes.
    pub async fn run(self, rx: mpsc::Receiver<Update>) -> Result<(), StoreError> {
        self.run_controlled(rx, mpsc::channel(1).1).await
    }

    /// [`Engine::run`], also taking control requests (reloads) between
    /// two updates.
    pub async fn run_controlled(
        mut self,
        mut rx: mpsc::Receiver<Update>,
        mut control: mpsc::Receiver<reload::Control>,
    ) -> Result<(), StoreError> {
        loop {
            tokio::select! {
                biased;
                _ = self.shared.stop.cancelled() => break,
                Some(id) = self.done_rx.recv() => {
                    let k = self.open.iter().find(|(_, o)| o.incident.id == id).map(|(k, _)| *k);
                    if let Some(k) = k {
                        self.open.remove(&k);
                        // It may have fired again while the old one was closing.
                        self.evaluate(k).await?;
                    }
                }
                Some(c) = control.recv() => {
                    // Updates already queued belong to the old table: the
                    // reload hands back a fresh channel for the new one.
                    if let Some(new_rx) = self.control(c).await? {
                        rx = new_rx;
                    }
                }
                u = rx.recv() => match u {
                    Some(u) => self.handle(u).await?,
                    // No checks at all (every scenario refused): idle until told to stop.
                    None => {
                        self.shared.stop.cancelled().await;
                        break;
                    }
                },
            }
        }
        Ok(())
    }

    async fn handle(&mut self, u: Update) -> Result<(), StoreError> {
        let seen = Seen::from(&u.outcome);
        let before = Seen::from(&self.details[u.slot]);
        let tr = self.symptoms.observe(u.slot, seen, u.at);
        let (k, j) = self.owner[u.slot];
        let name = self.scenarios[k].scenario.symptoms[j].name.clone();
        let detail = match &u.outcome {
            Outcome::Ok => "ok".to_string(),
            Outcome::Failing(d) => format!("failing: {d}"),
            Outcome::Unknown(d) => format!("unknown: {d}"),
        };
        self.details[u.slot] = u.outcome;
        if let Some(tr) = tr {
            crate::metrics::symptom_state(&self.scenarios[k].scenario.name, &name, tr.to.as_str());
            tracing::info!(
                scenario = %self.scenarios[k].scenario.name,
                symptom = %name,
                from = tr.from.as_str(),
                to = tr.to.as_str(),
                "{detail}"
            );
            if let Some(open) = self.open.get(&k) {
                let id = open.incident.id;
                self.note(
                    id,
                    "symptom",
                    format!("symptom {name}: {} → {} ({detail})", tr.from.as_str(), tr.to.as_str()),
                    json!({ "symptom": name, "from": tr.from, "to": tr.to, "observation": self.details[u.slot] }),
                )
                .await?;
            }
            self.evaluate(k).await?;
        } else if seen != before
            && seen == Seen::Unknown
            && let Some(open) = self.open.get(&k)
        {
            let id = open.incident.id;
            self.note(
                id,
                "symptom",
                format!("symptom {name}: cannot observe ({detail})"),
                json!({ "symptom": name }),
            )
            .await?;
        }
        Ok(())
    }

    fn phases(&self, k: usize) -> Vec<(String, Phase)> {
        self.scenarios[k]
            .scenario
            .when
            .symptoms()
            .iter()
            .map(|n| {
                let phase = self.slots[k]
                    .get(n)
                    .map_or(Phase::Ok, |&s| self.symptoms.phase(s));
                (n.clone(), phase)
            })
            .collect()
    }

    async fn evaluate(&mut self, k: usize) -> Result<(), StoreError> {
        let phases = self.phases(k);
        let firing = |p: &Phase| *p == Phase::Firing;
        let triggered = match &self.scenarios[k].scenario.when {
            When::Any(_) => phases.iter().any(|(_, p)| firing(p)),
            When::All(_) => !phases.is_empty() && phases.iter().all(|(_, p)| firing(p)),
        };
        let quiet = phases.iter().all(|(_, p)| *p == Phase::Ok);
        // One instance per scenario for now: with per-series instances this
        // reports how many of them fail.
        self.shared.bounds.set_health(
            &self.scenarios[k].scenario.name,
            Health {
                failing: usize::from(triggered),
                total: 1,
            },
        );
        if triggered && !self.open.contains_key(&k) {
            self.open_incident(k, &phases).await?;
        } else if quiet
            && let Some(open) = self.open.get_mut(&k)
            && !open.resolving
        {
            open.resolving = true;
            open.token.cancel();
        }
        Ok(())
    }

    async fn open_incident(
        &mut self,
        k: usize,
        phases: &[(String, Phase)],
    ) -> Result<(), StoreError> {
        let sc = &self.scenarios[k].scenario;
        let now = self.shared.clock.now();
        let (inc, created) = self
            .shared
            .store
            .open_incident(NewIncident {
                scenario: sc.name.clone(),
                instance: String::new(),
                severity: sc.severity.as_str().to_string(),
                summary: sc.summary.clone(),
                at: now,
            })
            .await?;
        let observed: serde_json::Map<String, serde_json::Value> = phases
            .iter()
            .map(|(n, p)| {
                let slot = self.slots[k][n];
                (
                    n.clone(),
                    json!({ "phase": p, "observation": self.details[slot] }),
                )
            })
            .collect();
        let firing: Vec<&str> = phases
            .iter()
            .filter(|(_, p)| *p == Phase::Firing)
            .map(|(n, _)| n.as_str())
            .collect();
        let msg = if created {
            format!(
                "opened: {} firing (severity {}, RTO {})",
                firing.join(", "),
                sc.severity.as_str(),
                sc.rto
            )
        } else {
            "scenario triggered again while this incident is open".to_string()
        };
        tracing::warn!(incident = inc.id, scenario = %sc.name, "{msg}");
        self.note(inc.id, "state", msg, json!({ "symptoms": observed }))
            .await?;
        let open = self.spawn_incident(k, inc, !created);
        self.open.insert(k, open);
        Ok(())
    }

    fn spawn_incident(&self, k: usize, inc: Incident, resumed: bool) -> OpenIncident {
        let rt = self.scenarios[k].clone();
        let symptoms = self.slots[k]
            .iter()
            .map(|(n, &slot)| (n.clone(), self.symptoms.watch(slot)))
            .collect();
        let halt = self.shared.stop.child_token();
        let token = halt.child_token();
        let mut shared = self.shared.clone();
        shared.stop = halt.clone();
        let done = self.done_tx.clone();
        let (incident, t) = (inc.clone(), token.clone());
        let task = self.shared.tasks.spawn(async move {
            let id = inc.id;
            if incident::drive(rt, inc, symptoms, shared, t, resumed).await {
                let _ = done.send(id);
            }
        });
        OpenIncident {
            incident,
            token,
            halt,
            task,
            resolving: false,
            retired: Vec::new(),
        }
    }

    async fn note(
        &self,
        id: IncidentId,
        kind: &str,
        msg: String,
        data: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.shared
            .store
            .append(
                id,
                TimelineEntry::new(self.shared.clock.now(), kind, msg).with_data(data),
            )
            .await
    }
}
