//! Several observers before a dangerous act (Redis Sentinel's SDOWN/ODOWN).
//!
//! With several replicas, every replica (leader or not) runs the checks of
//! the scenarios that can act (those with a plan) and shares its latest
//! observation of each symptom instance through the store
//! ([`crate::store::SharedObservation`]), with a heartbeat. A replica's own
//! view is *subjective*: it moves the leader's symptom state machines and
//! opens incidents. The *objective* view counts every replica's fresh
//! observations: the leader runs a step only when a quorum of observers
//! sees the symptom failing ([`QuorumView`]); otherwise the incident's
//! timeline says `failing on 1 of 3 observers, quorum 2: waiting`.
//!
//! - An **observer** of a symptom instance is a replica whose latest
//!   observation of it is fresh: made within two intervals (`every`) of the
//!   symptom. An observation says failing when its outcome is `failing` or
//!   `unreachable`, never `unknown`.
//! - A **live replica** is one whose heartbeat is younger than the
//!   leadership lease (at least [`MIN_LIVE_FOR`]). Each replica beats every
//!   [`HEARTBEAT`], with its observations or without.
//! - The **quorum** is the symptom's `quorum:` (else its scenario's), by
//!   default a majority of the live replicas (1 with a single replica).
//! - A replica that cannot reach the store is **blind**: it counts nobody,
//!   itself included, and acts on nothing.
//!
//! With a single replica (`leadership: single`) nothing is shared: the one
//! observer is the replica itself, and the count comes from its own view.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{ScenarioRuntime, Update};
use crate::clock::Clock;
use crate::observe::{Observation, Outcome, QuorumView, Seen, kind_is_failing, labels_key};
use crate::store::{RUN_MARKER, ReplicaBeat, SharedObservation, Store};

/// How often a replica writes its heartbeat (with whatever observations
/// are pending; observations are written as soon as they are made).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// The least time a heartbeat keeps a replica live.
pub const MIN_LIVE_FOR: Duration = Duration::from_secs(3);
/// The longest a store write or count may take before the replica counts
/// itself blind.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the quorum of one symptom is: its rule (`quorum:` of the symptom,
/// else of the scenario; `None` for a majority of live replicas), how
/// fresh an observation must be, and whether its check is per-series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymptomQuorum {
    pub rule: Option<u32>,
    /// The symptom's `every`: observations older than two of them are stale.
    pub every: Duration,
    pub per_series: bool,
}

impl Default for SymptomQuorum {
    /// A symptom the plan does not know: a majority, at the default `every`.
    fn default() -> Self {
        SymptomQuorum {
            rule: None,
            every: Duration::from_secs(10),
            per_series: false,
        }
    }
}

impl SymptomQuorum {
    /// Symptom `j` of `rt`.
    pub fn of(rt: &ScenarioRuntime, j: usize) -> Self {
        let s = &rt.scenario.symptoms[j];
        SymptomQuorum {
            rule: s.quorum.or(rt.scenario.quorum),
            every: s.every.get(),
            per_series: rt.checks.get(j).is_some_and(|c| c.per_series()),
        }
    }

    /// How old an observation may be and still count.
    pub fn fresh_for(&self) -> Duration {
        self.every.saturating_mul(2)
    }
}

/// Whether a scenario can act (has a plan): only those share observations.
pub fn can_act(rt: &ScenarioRuntime) -> bool {
    !rt.steps.is_empty()
}

/// Who observes, and how to count them.
pub struct Observers {
    replica: String,
    shared: Option<SharedState>,
}

struct SharedState {
    /// The unfenced store: every replica writes its own observations.
    store: Arc<dyn Store>,
    clock: Clock,
    live_for: Duration,
    pending: std::sync::Mutex<HashMap<(String, String, String), SharedObservation>>,
    wake: Notify,
    /// The last write to the store failed or timed out.
    blind: AtomicBool,
}

/// Which replicas see one symptom instance failing, among those observing it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub failing: BTreeSet<String>,
    pub observers: BTreeSet<String>,
}

impl Observers {
    /// A single replica: nothing shared; it is the only observer.
    pub fn single() -> Arc<Self> {
        Arc::new(Observers {
            replica: String::new(),
            shared: None,
        })
    }

    /// Several replicas sharing observations through `store` (unfenced);
    /// a heartbeat keeps a replica live for `lease` (at least
    /// [`MIN_LIVE_FOR`]).
    pub fn shared(
        store: Arc<dyn Store>,
        clock: Clock,
        replica: String,
        lease: Duration,
    ) -> Arc<Self> {
        Arc::new(Observers {
            replica,
            shared: Some(SharedState {
                store,
                clock,
                live_for: lease.max(MIN_LIVE_FOR),
                pending: Default::default(),
                wake: Notify::new(),
                blind: AtomicBool::new(false),
            }),
        })
    }

    /// Whether observations are shared (several replicas).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether this replica could not reach the store on its last write.
    pub fn is_blind(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.blind.load(Ordering::Relaxed))
    }

    /// Queues this replica's observation of a symptom for the store (a
    /// newer one of the same instance replaces it before it is written).
    pub fn record(
        &self,
        scenario: &str,
        symptom: &str,
        per_series: bool,
        observation: &Observation,
    ) {
        let Some(s) = &self.shared else {
            return;
        };
        let at = s.clock.now();
        let rows = rows_of(
            &self.replica,
            scenario,
            symptom,
            per_series,
            observation,
            at,
        );
        let mut pending = s.pending.lock().unwrap_or_else(|p| p.into_inner());
        for r in rows {
            pending.insert(
                (r.scenario.clone(), r.symptom.clone(), r.instance.clone()),
                r,
            );
        }
        drop(pending);
        s.wake.notify_one();
    }

    /// Writes queued observations as soon as they come (batched while a
    /// write is in flight) and a heartbeat every [`HEARTBEAT`], until
    /// `stop`. A write that fails or takes longer than [`STORE_TIMEOUT`]
    /// makes this replica blind until one succeeds.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let Some(s) = &self.shared else {
            return;
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = s.wake.notified() => {}
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
            let batch: Vec<SharedObservation> = {
                let mut p = s.pending.lock().unwrap_or_else(|p| p.into_inner());
                p.drain().map(|(_, v)| v).collect()
            };
            let beat = ReplicaBeat {
                replica: self.replica.clone(),
                seen_at: s.clock.now(),
            };
            let n = batch.len();
            let written = tokio::time::timeout(STORE_TIMEOUT, s.store.observe(beat, batch)).await;
            let error = match written {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!(
                    "no answer within {}",
                    humantime::format_duration(STORE_TIMEOUT)
                )),
            };
            match error {
                None => {
                    if s.blind.swap(false, Ordering::Relaxed) {
                        tracing::info!("store reachable again: observations shared");
                    }
                }
                Some(e) => {
                    if !s.blind.swap(true, Ordering::Relaxed) {
                        tracing::error!(error = %e, dropped = n, "cannot write observations to the store: this replica is blind (it counts no observer and acts on nothing)");
                    }
                }
            }
            crate::metrics::observer_blind(self.is_blind());
        }
    }

    /// The objective view of one instance of a symptom: every replica's
    /// fresh observation of it, against its quorum. `local` is this
    /// replica's own last observation (the whole count with one replica).
    pub async fn count(
        &self,
        scenario: &str,
        symptom: &str,
        instance: &str,
        q: SymptomQuorum,
        local: Seen,
    ) -> QuorumView {
        let Some(s) = &self.shared else {
            return QuorumView {
                failing: u32::from(local.is_failing()),
                observers: u32::from(local != Seen::Nothing),
                need: q.rule.unwrap_or(1),
                blind: false,
            };
        };
        let blind = |need: u32| QuorumView {
            failing: 0,
            observers: 0,
            need,
            blind: true,
        };
        if s.blind.load(Ordering::Relaxed) {
            return blind(q.rule.unwrap_or(1));
        }
        let now = s.clock.now();
        let since =
            |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let read = async {
            let live = s.store.replicas_since(since(s.live_for)).await?;
            let rows = s
                .store
                .observations(scenario, symptom, since(q.fresh_for()))
                .await?;
            Ok::<_, crate::store::StoreError>((live, rows))
        };
        match tokio::time::timeout(STORE_TIMEOUT, read).await {
            Ok(Ok((live, rows))) => {
                let t = tally(&rows, instance, q.per_series);
                view(&t, live.len(), q.rule)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot count observers: blind");
                blind(q.rule.unwrap_or(1))
            }
            Err(_) => {
                tracing::warn!("cannot count observers: the store did not answer; blind");
                blind(q.rule.unwrap_or(1))
            }
        }
    }
}

/// The quorum view of a tally, with `live` replicas heartbeating: the
/// rule, or a majority of the live replicas (every observer counts as live:
/// it wrote just now).
pub fn view(t: &Tally, live: usize, rule: Option<u32>) -> QuorumView {
    let live = live.max(t.observers.len()).max(1);
    let majority = (live / 2 + 1) as u32;
    QuorumView {
        failing: t.failing.len() as u32,
        observers: t.observers.len() as u32,
        need: rule.unwrap_or(majority),
        blind: false,
    }
}

/// Which replicas see instance `instance` failing, from fresh `rows` of one
/// symptom. A whole-target symptom has one row per replica (instance `""`).
/// A per-series one has a [`RUN_MARKER`] row per replica (its latest run)
/// and a row per series it found failing: an instance is failing for that
/// replica only if its row is as new as the run (it was in that result),
/// and a run that was unknown sees nothing failing.
pub fn tally(rows: &[SharedObservation], instance: &str, per_series: bool) -> Tally {
    let mut t = Tally::default();
    if !per_series {
        for r in rows.iter().filter(|r| r.instance == instance) {
            t.observers.insert(r.replica.clone());
            if kind_is_failing(&r.outcome) {
                t.failing.insert(r.replica.clone());
            }
        }
        return t;
    }
    let runs: BTreeMap<&str, &SharedObservation> = rows
        .iter()
        .filter(|r| r.instance == RUN_MARKER)
        .map(|r| (r.replica.as_str(), r))
        .collect();
    for (replica, run) in &runs {
        t.observers.insert(replica.to_string());
        if run.outcome == "unknown" {
            continue;
        }
        let failing = rows.iter().any(|r| {
            r.replica == *replica
                && r.instance == instance
                && r.observed_at >= run.observed_at
                && kind_is_failing(&r.outcome)
        });
        if failing {
            t.failing.insert(replica.to_string());
        }
    }
    t
}

/// The rows one observation of a symptom makes (see [`tally`]).
pub fn rows_of(
    replica: &str,
    scenario: &str,
    symptom: &str,
    per_series: bool,
    observation: &Observation,
    at: chrono::DateTime<chrono::Utc>,
) -> Vec<SharedObservation> {
    let row = |instance: &str, outcome: &Outcome| SharedObservation {
        replica: replica.to_string(),
        scenario: scenario.to_string(),
        symptom: symptom.to_string(),
        instance: instance.to_string(),
        outcome: outcome.label().to_string(),
        detail: outcome.detail().chars().take(500).collect(),
        observed_at: at,
    };
    if !per_series {
        return vec![row("", &observation.outcome())];
    }
    let mut rows = vec![row(RUN_MARKER, &observation.outcome())];
    match observation {
        Observation::Whole(o @ Outcome::Failing(_)) => rows.push(row("", o)),
        Observation::Whole(_) => {}
        Observation::Series(list) => {
            for s in list {
                rows.push(row(
                    &labels_key(&s.labels),
                    &Outcome::Failing(s.detail.clone()),
                ));
            }
        }
    }
    rows
}

/// Check loops to run: `(slot, scenario, symptom index)`.
pub type Schedule = Vec<(usize, Arc<ScenarioRuntime>, usize)>;
/// What a slot records under: scenario, symptom, whether per-series.
pub type SlotName = (String, String, bool);

/// What a follower runs: the check of every symptom of the scenarios that
/// can act, as `(slot, scenario, symptom index)` (the daemon's check
/// loops), with what each slot records under.
pub fn observe_only(runtimes: &[Arc<ScenarioRuntime>]) -> (Schedule, Vec<SlotName>) {
    let mut schedule = Vec::new();
    let mut slots = Vec::new();
    for rt in runtimes.iter().filter(|rt| can_act(rt)) {
        for (j, s) in rt.scenario.symptoms.iter().enumerate() {
            let per_series = rt.checks.get(j).is_some_and(|c| c.per_series());
            schedule.push((slots.len(), rt.clone(), j));
            slots.push((rt.scenario.name.clone(), s.name.clone(), per_series));
        }
    }
    (schedule, slots)
}

/// A follower's observations: every update of its check loops, recorded
/// for the store, until the loops stop (the channel closes).
pub async fn record_all(
    mut rx: mpsc::Receiver<Update>,
    slots: Vec<SlotName>,
    observers: Arc<Observers>,
) {
    while let Some(u) = rx.recv().await {
        if let Some((scenario, symptom, per_series)) = slots.get(u.slot) {
            observers.record(scenario, symptom, *per_series, &u.observation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{Labels, Series};
    use crate::store::MemoryStore;

    const EVERY: Duration = Duration::from_secs(1);

    /// Wall time that follows the paused clock (the same for every replica).
    fn clock() -> Clock {
        Clock::tokio(chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000))
    }

    fn q(rule: Option<u32>) -> SymptomQuorum {
        SymptomQuorum {
            rule,
            every: EVERY,
            per_series: false,
        }
    }

    fn failing() -> Observation {
        Observation::Whole(Outcome::Failing("connection refused".into()))
    }

    fn ok() -> Observation {
        Observation::Whole(Outcome::Ok)
    }

    /// Replicas `names` over one store, each with its writer running.
    fn replicas(
        store: &Arc<MemoryStore>,
        names: &[&str],
        stop: &CancellationToken,
    ) -> Vec<Arc<Observers>> {
        names
            .iter()
            .map(|n| {
                let o = Observers::shared(
                    store.clone(),
                    clock(),
                    n.to_string(),
                    Duration::from_secs(3),
                );
                tokio::spawn(o.clone().run(stop.clone()));
                o
            })
            .collect()
    }

    async fn settle() {
        // Let the writers run (the store is in memory: no real time passes).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_replica_counts_itself() {
        let o = Observers::single();
        let v = o.count("s", "down", "", q(None), Seen::Failing).await;
        assert_eq!((v.failing, v.observers, v.need, v.met()), (1, 1, 1, true));
        let v = o.count("s", "down", "", q(Some(2)), Seen::Failing).await;
        assert!(!v.met(), "quorum 2 with one observer never acts");
        assert_eq!(v.describe(), "failing on 1 of 1 observers, quorum 2");
        let v = o.count("s", "down", "", q(None), Seen::Unknown).await;
        assert_eq!((v.failing, v.met()), (0, false), "unknown is not failing");
    }

    #[tokio::test(start_paused = true)]
    async fn one_of_three_is_subjective_two_of_three_objective() {
        let store = Arc::new(MemoryStore::new());
        let stop = CancellationToken::new();
        let r = replicas(&store, &["a", "b", "c"], &stop);
        r[0].record("s", "down", false, &failing());
        r[1].record("s", "down", false, &ok());
        r[2].record("s", "down", false, &ok());
        settle().await;
        let v = r[0].count("s", "down", "", q(Some(2)), Seen::Failing).await;
        assert_eq!(v.describe(), "failing on 1 of 3 observers, quorum 2");
        assert!(!v.met());
        // Default: a majority of the three live replicas.
        let v = r[0].count("s", "down", "", q(None), Seen::Failing).await;
        assert_eq!((v.need, v.met()), (2, false));
        r[1].record("s", "down", false, &failing());
        settle().await;
        let v = r[0].count("s", "down", "", q(Some(2)), Seen::Failing).await;
        assert_eq!(v.describe(), "failing on 2 of 3 observers, quorum 2");
        assert!(v.met());
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn stale_observations_do_not_count() {
        let store = Arc::new(MemoryStore::new());
        let stop = CancellationToken::new();
        let r = replicas(&store, &["a", "b"], &stop);
        r[0].record("s", "down", false, &failing());
        r[1].record("s", "down", false, &failing());
        settle().await;
        assert!(
            r[0].count("s", "down", "", q(Some(2)), Seen::Failing)
                .await
                .met()
        );
        // b stops observing: two intervals later its failing no longer counts.
        tokio::time::advance(EVERY).await;
        r[0].record("s", "down", false, &failing());
        settle().await;
        let v = r[0].count("s", "down", "", q(Some(2)), Seen::Failing).await;
        assert_eq!(
            (v.failing, v.observers),
            (2, 2),
            "one interval old still counts"
        );
        tokio::time::advance(EVERY + Duration::from_millis(1)).await;
        r[0].record("s", "down", false, &failing());
        settle().await;
        let v = r[0].count("s", "down", "", q(Some(2)), Seen::Failing).await;
        assert_eq!(v.describe(), "failing on 1 of 1 observers, quorum 2");
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn the_majority_follows_live_replicas() {
        let store = Arc::new(MemoryStore::new());
        let stop = CancellationToken::new();
        let r = replicas(&store, &["a", "b"], &stop);
        // c and d lose the store later (their writers stop).
        let gone = CancellationToken::new();
        let cd = replicas(&store, &["c", "d"], &gone);
        for o in r.iter().chain(&cd) {
            o.record("s", "down", false, &failing());
        }
        settle().await;
        let v = r[0].count("s", "down", "", q(None), Seen::Failing).await;
        assert_eq!(
            (v.failing, v.need, v.met()),
            (4, 3, true),
            "a majority of 4"
        );
        gone.cancel();
        // Past the live window (3 s) c's and d's heartbeats are stale; a and
        // b beat every second and keep observing.
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(1)).await;
            r[0].record("s", "down", false, &failing());
            r[1].record("s", "down", false, &ok());
            settle().await;
        }
        let v = r[0].count("s", "down", "", q(None), Seen::Failing).await;
        assert_eq!(v.describe(), "failing on 1 of 2 observers, quorum 2");
        r[1].record("s", "down", false, &failing());
        settle().await;
        assert!(
            r[0].count("s", "down", "", q(None), Seen::Failing)
                .await
                .met()
        );
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_cannot_write_is_blind() {
        /// A store whose writes all fail.
        struct Broken(MemoryStore);
        impl crate::store::ReadThrough for Broken {
            fn reads(&self) -> &dyn Store {
                &self.0
            }
        }
        #[async_trait::async_trait]
        impl Store for Broken {
            async fn write(
                &self,
                _: Option<u64>,
                _: crate::store::Write,
            ) -> Result<crate::store::Written, crate::store::StoreError> {
                Err(crate::store::StoreError::Backend(
                    "connection refused".into(),
                ))
            }
        }
        let stop = CancellationToken::new();
        let o = Observers::shared(
            Arc::new(Broken(MemoryStore::new())),
            clock(),
            "a".into(),
            Duration::from_secs(3),
        );
        tokio::spawn(o.clone().run(stop.clone()));
        o.record("s", "down", false, &failing());
        settle().await;
        assert!(o.is_blind());
        let v = o.count("s", "down", "", q(Some(1)), Seen::Failing).await;
        assert!(v.blind && !v.met(), "{v:?}");
        assert!(
            v.describe()
                .starts_with("blind: this replica cannot reach the store")
        );
        stop.cancel();
    }

    #[test]
    fn per_series_instances_count_only_from_the_latest_run() {
        let t0 = chrono::Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let labels: Labels = [("pod".to_string(), "a".to_string())].into();
        let key = labels_key(&labels);
        let series = Observation::Series(vec![Series {
            labels: labels.clone(),
            value: 1.0,
            detail: "pod a errors".into(),
        }]);
        // x saw pod a failing at t0, then nothing failing at t1: its old
        // row stays behind but is older than its run.
        let mut rows = rows_of("x", "s", "errors", true, &series, t0);
        rows.retain(|r| r.instance != RUN_MARKER);
        rows.extend(rows_of(
            "x",
            "s",
            "errors",
            true,
            &Observation::Series(vec![]),
            t1,
        ));
        rows.extend(rows_of("y", "s", "errors", true, &series, t1));
        rows.extend(rows_of(
            "z",
            "s",
            "errors",
            true,
            &Observation::Whole(Outcome::Unknown("prometheus down".into())),
            t1,
        ));
        let t = tally(&rows, &key, true);
        assert_eq!(t.failing, BTreeSet::from(["y".to_string()]));
        assert_eq!(t.observers.len(), 3, "x, y and the blind z observe");
        assert_eq!(
            view(&t, 3, None).describe(),
            "failing on 1 of 3 observers, quorum 2"
        );
        assert!(tally(&rows, "{pod=\"b\"}", true).failing.is_empty());
    }

    #[test]
    fn unreachable_is_failing_unknown_is_not() {
        let row = |r: &str, outcome: &str| SharedObservation {
            replica: r.into(),
            scenario: "s".into(),
            symptom: "down".into(),
            instance: String::new(),
            outcome: outcome.into(),
            detail: String::new(),
            observed_at: chrono::Utc::now(),
        };
        let rows = [
            row("a", "unreachable"),
            row("b", "unknown"),
            row("c", "failing"),
        ];
        let t = tally(&rows, "", false);
        assert_eq!(t.failing.len(), 2);
        assert_eq!(t.observers.len(), 3);
    }
}
