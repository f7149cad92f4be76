//! The engine: symptom state machines, scenario matching and the incident
//! life cycle.
//!
//! One task owns every symptom's state ([`Symptoms`]) and consumes check
//! observations from a channel. A phase change may open an incident (exactly
//! one per scenario and instance while it is open: the store enforces it) or
//! resolve one.
//!
//! Per-series symptoms (checks whose [`Check::per_series`] is true: `promql`,
//! `scrape`, `alert`) keep one state machine per label set, the *instance*
//! (its [`crate::observe::labels_key`] text). A series in the result is failing
//! for its instance; an instance missing from the result is ok; a
//! `Whole(Unknown)` makes every instance of the symptom unknown. A scenario
//! is evaluated per instance: a per-series symptom counts with its own
//! instance; a symptom over the whole target counts for the instance `""`
//! under `when: any` and for every instance under `when: all` (it is then a
//! condition of each). So a per-deployment 5xx ratio opens one incident per
//! deployment, and its plan reads the deployment's labels as
//! `${labels.NAME}` (see [`crate::remedy::template`]). Instances are kept
//! for medic's lifetime (a few hundred bytes each): they are the population
//! the blast radius counts. Each open incident has its own task ([`incident`]) that runs
//! the plan and, when the plan is exhausted, escalates. Checks know nothing
//! of incidents; the incident is where they meet.
//!
//! With several replicas, the engine's own view is subjective: it opens
//! incidents, but a step acts only when a quorum of replicas sees its
//! symptoms failing ([`quorum`]); the engine shares each observation of a
//! scenario that can act through the store.

pub mod bounds;
pub mod depend;
pub mod incident;
pub mod plan;
pub mod quorum;
pub mod reload;
pub mod symptom;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::check::Check;
use crate::check::vantage::Vantage;
use crate::clock::Clock;
use crate::config::Mode;
use crate::observe::{Labels, Observation, Outcome, Phase, Seen, SymptomView};
use crate::page::Pager;
use crate::rules::model::{Scenario, When};
use crate::store::{Incident, IncidentId, NewIncident, StoreError, TimelineEntry, prelude::*};
use bounds::{Bounds, Health};
use depend::Hold;
use plan::PlannedStep;
use symptom::{SymptomState, Timing, Transition};

/// A scenario ready to run: its rule, its checks and its actions.
pub struct ScenarioRuntime {
    pub scenario: Scenario,
    /// One per symptom, in `scenario.symptoms` order.
    pub checks: Vec<Arc<dyn Check>>,
    pub steps: Vec<PlannedStep>,
    /// The scenario's effective mode (its own, else the global one).
    pub mode: Mode,
}

/// One check observation for one symptom (its schedule slot).
#[derive(Debug)]
pub struct Update {
    pub slot: usize,
    pub observation: Observation,
    /// When the check run was due (its scheduled tick; see the daemon's
    /// check loop): what `for:` and `clear_for:` are measured between.
    pub at: Instant,
}

/// Every symptom's state machine, in one flat table (the hot path).
pub struct Symptoms {
    states: Vec<SymptomState>,
    timings: Vec<Timing>,
    views: Vec<watch::Sender<SymptomView>>,
    /// Per slot: the current streak (what actions such as a promotion
    /// need: "unreachable for N checks over T").
    streaks: Vec<Streak>,
}

/// One slot's run of equal observations.
#[derive(Clone, Copy, Debug)]
struct Streak {
    /// How many consecutive observations were the same as the last one.
    n: u32,
    /// When the first of them was due.
    since: Instant,
    /// When the target was last heard well before them: the arrival of
    /// the ok observation right before the streak, else `since`.
    quiet_since: Instant,
    /// When the last ok observation arrived (`None` before any).
    heard: Option<Instant>,
}

impl Streak {
    fn new(now: Instant) -> Self {
        Streak {
            n: 0,
            since: now,
            quiet_since: now,
            heard: None,
        }
    }
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
            streaks: vec![Streak::new(now); n],
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
        if before == seen && streak.n > 0 {
            streak.n = streak.n.saturating_add(1);
        } else {
            // A target silent from the moment of its last good answer: as
            // Sentinel's down-after, the silence is counted from that
            // answer's arrival (never later than this streak's start).
            streak.quiet_since = match streak.heard {
                Some(h) if before == Seen::Ok && streak.n > 0 => h.min(at),
                _ => at,
            };
            streak.n = 1;
            streak.since = at;
        }
        if seen == Seen::Ok {
            // When the answer was taken in: at or after its arrival.
            streak.heard = Some(Instant::now().max(at));
        }
        let view = SymptomView {
            phase: state.phase,
            seen,
            streak: streak.n,
            streak_since: Some(streak.since),
            quiet_since: Some(streak.quiet_since),
        };
        self.views[slot].send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
        tr
    }

    /// Appends a slot (a new per-series instance), not observed yet;
    /// returns its index.
    pub fn push(&mut self, timing: Timing, now: Instant) -> usize {
        self.states.push(SymptomState::new(now));
        self.timings.push(timing);
        self.views
            .push(watch::channel(SymptomView::new(Phase::Ok, Seen::Nothing)).0);
        self.streaks.push(Streak::new(now));
        self.states.len() - 1
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
        self.streaks[slot] = Streak::new(now);
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
    /// Who observes (this replica, or every replica through the store):
    /// the objective view a step needs before it acts.
    pub observers: Arc<quorum::Observers>,
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
    /// What it waits on, if anything (see [`depend`]).
    hold: watch::Sender<Option<Hold>>,
}

/// An open incident's key: scenario index and instance.
type OpenKey = (usize, String);

/// Every symptom state of a set of scenarios. Table slots `0..owner.len()`
/// are the symptoms themselves (one check loop each, the schedule's
/// slots); per-series instances are appended after them as they appear.
struct Table {
    symptoms: Symptoms,
    /// Last observation per table slot, for timelines.
    details: Vec<Outcome>,
    /// Symptom slot → (scenario index, symptom index).
    owner: Vec<(usize, usize)>,
    /// Scenario index → symptom slot of each of its symptoms, by name.
    slots: Vec<HashMap<String, usize>>,
    /// Symptom slot → its instances (instance key → table slot) when its
    /// check is per-series; `None` for a check over the whole target.
    series: Vec<Option<HashMap<String, usize>>>,
    /// Scenario index → every instance seen, with its labels.
    instances: Vec<BTreeMap<String, Labels>>,
    /// Scenario index → its name (for metrics).
    names: Vec<String>,
    /// Scenario index → its symptoms' names (for metrics).
    symptom_names: Vec<Vec<String>>,
}

impl Table {
    fn new(scenarios: &[Arc<ScenarioRuntime>], now: Instant) -> Self {
        let mut timings = Vec::new();
        let mut owner = Vec::new();
        let mut slots = Vec::new();
        let mut series = Vec::new();
        for (k, rt) in scenarios.iter().enumerate() {
            let mut by_name = HashMap::new();
            for (j, s) in rt.scenario.symptoms.iter().enumerate() {
                by_name.insert(s.name.clone(), timings.len());
                owner.push((k, j));
                let per_series = rt.checks.get(j).is_some_and(|c| c.per_series());
                series.push(per_series.then(HashMap::new));
                timings.push(Timing {
                    for_: s.for_.get(),
                    clear_for: s.clear_for.get(),
                });
            }
            slots.push(by_name);
        }
        let n = timings.len();
        Table {
            symptoms: Symptoms::new(timings, now),
            details: vec![Outcome::Unknown("not observed yet".into()); n],
            owner,
            slots,
            series,
            instances: vec![BTreeMap::new(); scenarios.len()],
            names: scenarios
                .iter()
                .map(|rt| rt.scenario.name.clone())
                .collect(),
            symptom_names: scenarios
                .iter()
                .map(|rt| {
                    rt.scenario
                        .symptoms
                        .iter()
                        .map(|s| s.name.clone())
                        .collect()
                })
                .collect(),
        }
    }

    /// How many instances of each symptom (by symptom slot) are in each
    /// phase (in [`crate::metrics::STATES`] order): a whole-target symptom
    /// is one, a per-series one has one per label set.
    fn phase_counts(&self) -> Vec<[u64; 4]> {
        (0..self.owner.len())
            .map(|base| {
                let mut counts = [0u64; 4];
                let mut count = |slot: usize| counts[phase_index(self.symptoms.phase(slot))] += 1;
                match &self.series[base] {
                    None => count(base),
                    Some(m) => m.values().for_each(|&t| count(t)),
                }
                counts
            })
            .collect()
    }

    /// Publishes [`Table::phase_counts`] as `medic_symptoms` (and
    /// `medic_symptom_state` for symptoms that opted in).
    fn publish_phase_counts(&self) {
        let by_symptom: Vec<(&str, &str, [u64; 4])> = self
            .owner
            .iter()
            .zip(self.phase_counts())
            .map(|(&(k, j), c)| (self.names[k].as_str(), self.symptom_names[k][j].as_str(), c))
            .collect();
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        crate::metrics::symptom_counts(&names, &by_symptom);
    }

    /// The table slot of instance `key` of per-series symptom slot `base`,
    /// made (not observed yet) if new.
    fn instance_slot(&mut self, base: usize, key: &str, labels: impl FnOnce() -> Labels) -> usize {
        if let Some(&t) = self.series[base].as_ref().and_then(|m| m.get(key)) {
            return t;
        }
        let timing = self.symptoms.timings[base];
        let t = self.symptoms.push(timing, Instant::now());
        self.details
            .push(Outcome::Unknown("not observed yet".into()));
        if let Some(m) = self.series[base].as_mut() {
            m.insert(key.to_string(), t);
        }
        let (k, j) = self.owner[base];
        crate::metrics::symptom_moved(
            &self.names[k],
            &self.symptom_names[k][j],
            None,
            Some(Phase::Ok.as_str()),
        );
        if !self.instances[k].contains_key(key) {
            self.instances[k].insert(key.to_string(), labels());
        }
        t
    }

    /// The table slot symptom `name` of scenario `k` has for instance
    /// `inst`: its own for a whole-target check, the instance's (made if
    /// `make`) for a per-series one.
    fn slot(&mut self, k: usize, name: &str, inst: &str, make: bool) -> Option<usize> {
        let base = *self.slots[k].get(name)?;
        match &self.series[base] {
            None => Some(base),
            Some(m) => match m.get(inst) {
                Some(&t) => Some(t),
                None if make => Some(self.instance_slot(base, inst, || labels_of(inst))),
                None => None,
            },
        }
    }
}

/// A phase's index in [`crate::metrics::STATES`].
fn phase_index(p: Phase) -> usize {
    match p {
        Phase::Ok => 0,
        Phase::Pending => 1,
        Phase::Firing => 2,
        Phase::Clearing => 3,
    }
}

/// The labels of an instance key (empty if it is not one).
fn labels_of(inst: &str) -> Labels {
    crate::observe::parse_labels_key(inst).unwrap_or_default()
}

/// The engine. Build it with [`Engine::new`], resume with [`Engine::resume`],
/// then drive it with [`Engine::run`].
pub struct Engine {
    scenarios: Vec<Arc<ScenarioRuntime>>,
    table: Table,
    /// Scenario index → instances whose `when` holds now (blast radius).
    triggered: Vec<HashSet<String>>,
    open: HashMap<OpenKey, OpenIncident>,
    shared: Shared,
    /// Incident tasks report their incident's id here once resolved.
    done_tx: mpsc::UnboundedSender<IncidentId>,
    done_rx: mpsc::UnboundedReceiver<IncidentId>,
    /// medic's vantage: every target check's word is recorded there, and
    /// a candidate unreachable becomes unreachable or unknown by its
    /// judgement. Without one (rule tests), outcomes stand as checks give
    /// them.
    vantage: Option<Arc<Vantage>>,
}

impl Engine {
    /// Lays out every symptom of every scenario in one table.
    pub fn new(scenarios: Vec<Arc<ScenarioRuntime>>, shared: Shared) -> Self {
        let table = Table::new(&scenarios, Instant::now());
        table.publish_phase_counts();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Engine {
            done_tx,
            done_rx,
            triggered: vec![HashSet::new(); scenarios.len()],
            scenarios,
            table,
            open: HashMap::new(),
            shared,
            vantage: None,
        }
    }

    /// Judges candidate unreachable outcomes with `vantage` (see
    /// [`crate::check::vantage`]).
    pub fn with_vantage(mut self, vantage: Arc<Vantage>) -> Self {
        self.vantage = Some(vantage);
        self
    }

    /// Records a target check's word with the vantage and turns a
    /// candidate unreachable into the verdict: unreachable (the target is
    /// silent, or its zone is out) or unknown (medic is blind).
    fn judged(&self, base: usize, obs: Observation, at: Instant) -> Observation {
        let (Some(v), Observation::Whole(o)) = (&self.vantage, &obs) else {
            return obs;
        };
        let Some(&(k, j)) = self.table.owner.get(base) else {
            return obs;
        };
        let s = &self.scenarios[k].scenario.symptoms[j];
        let target = s
            .check
            .target()
            .filter(|_| crate::check::vantage::is_evidence(s.check.kind()));
        if let Some(t) = target {
            v.heard_target(t, o, at, s.every.get() * 2 + s.timeout.get());
        }
        match o {
            Outcome::Unreachable(d) => Observation::Whole(v.judge(target, d, at)),
            _ => obs,
        }
    }

    /// Every (slot, scenario, symptom) to schedule checks for.
    pub fn schedule(&self) -> Vec<(usize, Arc<ScenarioRuntime>, usize)> {
        self.table
            .owner
            .iter()
            .enumerate()
            .map(|(slot, &(k, j))| (slot, self.scenarios[k].clone(), j))
            .collect()
    }

    /// Picks up incidents left open by a previous run: no duplicate, none
    /// forgotten. Their trigger symptoms (for their instance) start as
    /// firing, so they resolve only once medic *sees* them clear.
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
            let all = matches!(self.scenarios[k].scenario.when, When::All(_));
            for name in self.scenarios[k].scenario.when.symptoms().to_vec() {
                let base = self.table.slots[k].get(&name).copied();
                let whole = base.is_some_and(|b| self.table.series[b].is_none());
                // A whole-target symptom belongs to instance "" under `any`.
                if whole && !all && !inc.instance.is_empty() {
                    continue;
                }
                if let Some(slot) = self.table.slot(k, &name, &inc.instance, true) {
                    self.table.symptoms.presume_firing(slot, now);
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
            tracing::info!(incident = inc.id, scenario = %inc.scenario, instance = %inc.instance, state = inc.state.as_str(), "resumed incident");
            let key = (k, inc.instance.clone());
            let open = self.spawn_incident(k, inc, true);
            self.open.insert(key.clone(), open);
            // Its scenario may no longer see that instance at all.
            self.evaluate(k, &key.1).await?;
        }
        // Presumed-firing symptoms (and, after a reload, carried states)
        // changed phase without a transition.
        self.table.publish_phase_counts();
        self.reconcile().await
    }

    /// Consumes check observations until `stop` or the channel closes.
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
                    let key = self.open.iter().find(|(_, o)| o.incident.id == id).map(|(k, _)| k.clone());
                    if let Some(key) = key {
                        self.open.remove(&key);
                        // It may have fired again while the old one was closing.
                        self.evaluate(key.0, &key.1).await?;
                        // Its dependents are free now.
                        self.reconcile().await?;
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

    async fn handle(&mut self, mut u: Update) -> Result<(), StoreError> {
        let base = u.slot;
        u.observation = self.judged(base, u.observation, u.at);
        if self.shared.observers.is_shared()
            && let Some(&(k, j)) = self.table.owner.get(base)
            && quorum::can_act(&self.scenarios[k])
        {
            let rt = &self.scenarios[k];
            self.shared.observers.record(
                &rt.scenario.name,
                &rt.scenario.symptoms[j].name,
                self.table.series[base].is_some(),
                &u.observation,
            );
        }
        if self.table.series[base].is_none() {
            return self
                .observe(base, base, "", u.observation.into_outcome(), u.at)
                .await;
        }
        let existing: Vec<(String, usize)> = self.table.series[base]
            .iter()
            .flatten()
            .map(|(key, &t)| (key.clone(), t))
            .collect();
        match u.observation {
            // medic is blind: every instance is unknown.
            Observation::Whole(Outcome::Unknown(why)) => {
                for (key, t) in existing {
                    self.observe(base, t, &key, Outcome::Unknown(why.clone()), u.at)
                        .await?;
                }
            }
            Observation::Whole(Outcome::Ok) => {
                for (key, t) in existing {
                    self.observe(base, t, &key, Outcome::Ok, u.at).await?;
                }
            }
            // Failing as a whole: the instance with no labels.
            Observation::Whole(o @ (Outcome::Failing(_) | Outcome::Unreachable(_))) => {
                let t = self.table.instance_slot(base, "", Labels::new);
                self.observe(base, t, "", o, u.at).await?;
                for (key, t) in existing.into_iter().filter(|(k, _)| !k.is_empty()) {
                    self.observe(base, t, &key, Outcome::Ok, u.at).await?;
                }
            }
            Observation::Series(list) => {
                let mut failing = HashSet::with_capacity(list.len());
                for s in list {
                    let key = crate::observe::labels_key(&s.labels);
                    if !failing.insert(key.clone()) {
                        continue; // the same label set twice: once is enough
                    }
                    let labels = s.labels;
                    let t = self.table.instance_slot(base, &key, || labels);
                    self.observe(base, t, &key, Outcome::Failing(s.detail), u.at)
                        .await?;
                }
                // A series gone from the result is ok for its instance.
                for (key, t) in existing {
                    if !failing.contains(&key) {
                        self.observe(base, t, &key, Outcome::Ok, u.at).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Feeds one outcome to table slot `t` (instance `inst` of symptom slot
    /// `base`); notes and evaluates what changed.
    async fn observe(
        &mut self,
        base: usize,
        t: usize,
        inst: &str,
        outcome: Outcome,
        at: Instant,
    ) -> Result<(), StoreError> {
        let seen = Seen::from(&outcome);
        let before = Seen::from(&self.table.details[t]);
        let tr = self.table.symptoms.observe(t, seen, at);
        self.table.details[t] = outcome;
        if tr.is_none() && (seen == before || seen != Seen::Unknown) {
            return Ok(());
        }
        let (k, j) = self.table.owner[base];
        let name = self.scenarios[k].scenario.symptoms[j].name.clone();
        let shown = if inst.is_empty() {
            name.clone()
        } else {
            format!("{name}{inst}")
        };
        let detail = match &self.table.details[t] {
            Outcome::Ok => "ok".to_string(),
            Outcome::Failing(d) => format!("failing: {d}"),
            Outcome::Unreachable(d) => format!("unreachable: {d}"),
            Outcome::Unknown(d) => format!("unknown: {d}"),
        };
        let open = self.open.get(&(k, inst.to_string())).map(|o| o.incident.id);
        if let Some(tr) = tr {
            crate::metrics::symptom_moved(
                &self.scenarios[k].scenario.name,
                &name,
                Some(tr.from.as_str()),
                Some(tr.to.as_str()),
            );
            tracing::info!(
                scenario = %self.scenarios[k].scenario.name,
                symptom = %name,
                instance = %inst,
                from = tr.from.as_str(),
                to = tr.to.as_str(),
                "{detail}"
            );
            if let Some(id) = open {
                self.note(
                    id,
                    "symptom",
                    format!("symptom {shown}: {} → {} ({detail})", tr.from.as_str(), tr.to.as_str()),
                    json!({ "symptom": name, "instance": inst, "from": tr.from, "to": tr.to, "observation": self.table.details[t] }),
                )
                .await?;
            }
            if self.table.series[base].is_some() {
                self.evaluate(k, inst).await?;
            } else {
                self.evaluate(k, "").await?;
                // Under `all`, a whole-target symptom is a condition of
                // every instance.
                if matches!(self.scenarios[k].scenario.when, When::All(_)) {
                    let insts: Vec<String> = self.table.instances[k].keys().cloned().collect();
                    for i in insts.iter().filter(|i| !i.is_empty()) {
                        self.evaluate(k, i).await?;
                    }
                }
            }
        } else if let Some(id) = open {
            self.note(
                id,
                "symptom",
                format!("symptom {shown}: cannot observe ({detail})"),
                json!({ "symptom": name, "instance": inst }),
            )
            .await?;
        }
        Ok(())
    }

    /// The phase of each `when` symptom of scenario `k` for instance `inst`.
    fn phases(&self, k: usize, inst: &str) -> Vec<(String, Phase)> {
        let when = &self.scenarios[k].scenario.when;
        let all = matches!(when, When::All(_));
        when.symptoms()
            .iter()
            .map(|n| {
                let phase = match self.table.slots[k].get(n) {
                    None => Phase::Ok,
                    Some(&b) => match &self.table.series[b] {
                        Some(m) => m
                            .get(inst)
                            .map_or(Phase::Ok, |&t| self.table.symptoms.phase(t)),
                        None if inst.is_empty() || all => self.table.symptoms.phase(b),
                        None => Phase::Ok,
                    },
                };
                (n.clone(), phase)
            })
            .collect()
    }

    /// How many instances scenario `k` has: every instance seen, plus the
    /// whole target when a `when` symptom observes it.
    fn population(&self, k: usize) -> usize {
        let whole = self.scenarios[k].scenario.when.symptoms().iter().any(|n| {
            self.table.slots[k]
                .get(n)
                .is_some_and(|&b| self.table.series[b].is_none())
        });
        let seen = self.table.instances[k].len();
        let extra = usize::from(whole && !self.table.instances[k].contains_key(""));
        (seen + extra).max(1)
    }

    async fn evaluate(&mut self, k: usize, inst: &str) -> Result<(), StoreError> {
        let phases = self.phases(k, inst);
        let firing = |p: &Phase| *p == Phase::Firing;
        let triggered = match &self.scenarios[k].scenario.when {
            When::Any(_) => phases.iter().any(|(_, p)| firing(p)),
            When::All(_) => !phases.is_empty() && phases.iter().all(|(_, p)| firing(p)),
        };
        let quiet = phases.iter().all(|(_, p)| *p == Phase::Ok);
        if triggered {
            self.triggered[k].insert(inst.to_string());
        } else {
            self.triggered[k].remove(inst);
        }
        // The blast radius counts instances: how many fail of all seen.
        self.shared.bounds.set_health(
            &self.scenarios[k].scenario.name,
            Health {
                failing: self.triggered[k].len(),
                total: self.population(k),
            },
        );
        let key = (k, inst.to_string());
        if triggered && !self.open.contains_key(&key) {
            self.open_incident(k, inst, &phases).await?;
        } else if quiet
            && let Some(open) = self.open.get_mut(&key)
            && !open.resolving
        {
            open.resolving = true;
            open.token.cancel();
        }
        self.reconcile().await
    }

    /// Whether scenario `x` is about to trigger (every `when` symptom
    /// failing under `all`, one under `any`), for the whole target.
    fn pending(&self, x: usize) -> bool {
        let phases = self.phases(x, "");
        let failing = |p: &Phase| *p != Phase::Ok;
        match &self.scenarios[x].scenario.when {
            When::Any(_) => phases.iter().any(|(_, p)| failing(p)),
            When::All(_) => !phases.is_empty() && phases.iter().all(|(_, p)| failing(p)),
        }
    }

    /// The open, not resolving, incident of `key`'s hold: its cause id.
    fn cause_of(&self, id: IncidentId) -> Option<IncidentId> {
        self.open
            .values()
            .find(|o| o.incident.id == id)
            .and_then(|o| o.hold.borrow().as_ref().and_then(|h| h.cause))
    }

    /// What incident `id` of scenario `k` waits on now (see [`depend`]).
    fn desired_hold(&self, k: usize, id: IncidentId) -> Option<Hold> {
        let topo = self.shared.bounds.topology();
        let sc = &self.scenarios[k].scenario;
        for (x, rx) in self.scenarios.iter().enumerate() {
            if x == k {
                continue;
            }
            let on = depend::superseded_targets(sc, &rx.scenario, topo);
            if on.is_empty() {
                continue;
            }
            let open = self
                .open
                .iter()
                .filter(|((kx, _), o)| *kx == x && !o.resolving && o.incident.id != id)
                .map(|(_, o)| o.incident.id)
                .min();
            if let Some(c) = open {
                return Some(Hold {
                    cause: Some(c),
                    text: format!(
                        "waiting on incident #{c} ({} on {}), which supersedes this scenario",
                        rx.scenario.name,
                        on.join(", ")
                    ),
                });
            }
            if self.pending(x) {
                return Some(Hold {
                    cause: None,
                    text: format!(
                        "waiting: {}, which supersedes this scenario, is pending on {}",
                        rx.scenario.name,
                        on.join(", ")
                    ),
                });
            }
        }
        // The oldest open incident this one's targets depend on, then the
        // root of its own chain.
        let mut best: Option<(IncidentId, usize, Vec<String>)> = None;
        for ((kx, _), o) in &self.open {
            if *kx == k || o.resolving || o.incident.id == id {
                continue;
            }
            // A scenario never waits on one it supersedes: that one waits
            // on it (the region outage is the cause, not the app failure).
            let other = &self.scenarios[*kx].scenario;
            if sc.supersedes.contains(&other.name) {
                continue;
            }
            let on = depend::dependency_targets(sc, other, topo);
            if on.is_empty() || self.cause_of(o.incident.id) == Some(id) {
                continue;
            }
            if best.as_ref().is_none_or(|(b, _, _)| o.incident.id < *b) {
                best = Some((o.incident.id, *kx, on));
            }
        }
        let (mut c, mut kc, mut on) = best?;
        for _ in 0..self.open.len() {
            let Some(up) = self.cause_of(c).filter(|&u| u != id) else {
                break;
            };
            let Some(((ku, _), _)) = self.open.iter().find(|(_, o)| o.incident.id == up) else {
                break;
            };
            (c, kc) = (up, *ku);
            on = self.scenarios[kc]
                .scenario
                .observed_targets()
                .into_iter()
                .collect();
        }
        Some(Hold {
            cause: Some(c),
            text: format!(
                "waiting on incident #{c} ({} on {})",
                self.scenarios[kc].scenario.name,
                on.join(", ")
            ),
        })
    }

    /// Brings every open incident's hold up to date; links a new cause in
    /// the store and tells it (its timeline, whoever it paged) once.
    async fn reconcile(&mut self) -> Result<(), StoreError> {
        let mut ids: Vec<(IncidentId, usize, OpenKey)> = self
            .open
            .iter()
            .filter(|(_, o)| !o.resolving)
            .map(|(key, o)| (o.incident.id, key.0, key.clone()))
            .collect();
        ids.sort_unstable_by_key(|(id, _, _)| *id);
        for (id, k, key) in ids {
            let desired = self.desired_hold(k, id);
            let Some(o) = self.open.get(&key) else {
                continue;
            };
            let before = o.hold.borrow().clone();
            if before == desired {
                continue;
            }
            o.hold.send_replace(desired.clone());
            self.link(id, k, before.as_ref(), desired.as_ref()).await?;
        }
        Ok(())
    }

    /// Writes a new cause of incident `id` (scenario `k`) to the store and
    /// tells the cause about its dependent.
    async fn link(
        &self,
        id: IncidentId,
        k: usize,
        before: Option<&Hold>,
        now: Option<&Hold>,
    ) -> Result<(), StoreError> {
        let Some((cause, hold)) = now.and_then(|h| Some((h.cause?, h))) else {
            return Ok(());
        };
        if before.and_then(|h| h.cause) == Some(cause) {
            return Ok(());
        }
        match self
            .shared
            .store
            .set_cause(id, Some(cause), self.shared.clock.now())
            .await
        {
            // Resolved meanwhile: nothing waits any more.
            Err(StoreError::Conflict(_)) => return Ok(()),
            r => r?,
        }
        // On its own timeline at once: a step in flight may still run.
        self.note(
            id,
            "dependent",
            format!(
                "now a dependent of incident #{cause} ({}): a step in flight finishes, no new one starts",
                hold.text
            ),
            json!({ "cause": cause }),
        )
        .await?;
        let name = &self.scenarios[k].scenario.name;
        let msg = format!("incident #{id} ({name}) waits on this one");
        self.note(
            cause,
            "dependent",
            msg.clone(),
            json!({ "dependent": id, "scenario": name, "why": hold.text }),
        )
        .await?;
        self.shared.pager.changed(cause, "dependent", &msg).await
    }

    async fn open_incident(
        &mut self,
        k: usize,
        inst: &str,
        phases: &[(String, Phase)],
    ) -> Result<(), StoreError> {
        let sc = &self.scenarios[k].scenario;
        let now = self.shared.clock.now();
        let (inc, created) = self
            .shared
            .store
            .open_incident(NewIncident {
                scenario: sc.name.clone(),
                instance: inst.to_string(),
                severity: sc.severity.as_str().to_string(),
                summary: sc.summary.clone(),
                at: now,
            })
            .await?;
        let mut observed = serde_json::Map::new();
        for (n, p) in phases {
            let detail = self.table.slots[k].get(n).and_then(|&b| {
                let t = match &self.table.series[b] {
                    None => Some(b),
                    Some(m) => m.get(inst).copied(),
                }?;
                Some(self.table.details[t].clone())
            });
            observed.insert(n.clone(), json!({ "phase": p, "observation": detail }));
        }
        let firing: Vec<&str> = phases
            .iter()
            .filter(|(_, p)| *p == Phase::Firing)
            .map(|(n, _)| n.as_str())
            .collect();
        let on = if inst.is_empty() {
            String::new()
        } else {
            format!(" on {inst}")
        };
        let msg = if created {
            format!(
                "opened{on}: {} firing (severity {}, RTO {})",
                firing.join(", "),
                sc.severity.as_str(),
                sc.rto
            )
        } else {
            "scenario triggered again while this incident is open".to_string()
        };
        tracing::warn!(incident = inc.id, scenario = %sc.name, instance = %inst, "{msg}");
        let mut data = json!({ "symptoms": observed });
        if !inst.is_empty() {
            data["labels"] = json!(self.table.instances[k].get(inst));
        }
        self.note(inc.id, "state", msg, data).await?;
        let id = inc.id;
        let open = self.spawn_incident(k, inc, !created);
        let hold = open.hold.borrow().clone();
        self.open.insert((k, inst.to_string()), open);
        self.link(id, k, None, hold.as_ref()).await
    }

    fn spawn_incident(&mut self, k: usize, inc: Incident, resumed: bool) -> OpenIncident {
        let rt = self.scenarios[k].clone();
        let inst = inc.instance.clone();
        let names: Vec<String> = self.table.slots[k].keys().cloned().collect();
        let symptoms = names
            .into_iter()
            .filter_map(|n| {
                let t = self.table.slot(k, &n, &inst, true)?;
                Some((n, self.table.symptoms.watch(t)))
            })
            .collect();
        let labels = self.table.instances[k]
            .get(&inst)
            .cloned()
            .unwrap_or_else(|| labels_of(&inst));
        let halt = self.shared.stop.child_token();
        let token = halt.child_token();
        let mut shared = self.shared.clone();
        shared.stop = halt.clone();
        let done = self.done_tx.clone();
        let (incident, t) = (inc.clone(), token.clone());
        // Its hold is known before its task runs a step.
        let (hold, hold_rx) = watch::channel(self.desired_hold(k, inc.id));
        let task = self.shared.tasks.spawn(async move {
            let id = inc.id;
            if incident::drive(rt, inc, labels, symptoms, shared, t, resumed, hold_rx).await {
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
            hold,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn timing() -> Timing {
        Timing {
            for_: Duration::from_secs(6),
            clear_for: Duration::from_secs(30),
        }
    }

    /// A failing streak right after an ok answer counts its silence from
    /// that answer's arrival; after blindness (unknown), from its own
    /// first check: blindness is never silence.
    #[tokio::test(start_paused = true)]
    async fn a_failing_streak_is_quiet_since_the_last_ok_answer_never_since_blindness() {
        let t0 = Instant::now();
        let mut s = Symptoms::new(vec![timing()], t0);
        let view = s.watch(0);
        s.observe(0, Seen::Ok, t0);
        tokio::time::advance(Duration::from_millis(30)).await; // the answer's arrival
        s.observe(0, Seen::Ok, t0);
        let heard = Instant::now();
        tokio::time::advance(Duration::from_secs(2)).await;
        let t1 = Instant::now();
        s.observe(0, Seen::Failing, t1);
        let v = *view.borrow();
        assert_eq!(
            (v.streak, v.streak_since, v.quiet_since),
            (1, Some(t1), Some(heard))
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        s.observe(0, Seen::Failing, Instant::now());
        let v = *view.borrow();
        assert_eq!(
            (v.streak, v.streak_since, v.quiet_since),
            (2, Some(t1), Some(heard))
        );
        // Blind, then failing: the silence starts at the failing check.
        s.observe(0, Seen::Unknown, Instant::now());
        tokio::time::advance(Duration::from_secs(2)).await;
        let t2 = Instant::now();
        s.observe(0, Seen::Failing, t2);
        let v = *view.borrow();
        assert_eq!((v.streak, v.quiet_since), (1, Some(t2)));
        // Never heard at all: the same.
        let mut fresh = Symptoms::new(vec![timing()], t2);
        let v2 = fresh.watch(0);
        fresh.observe(0, Seen::Failing, t2);
        assert_eq!(v2.borrow().quiet_since, Some(t2));
    }
}
