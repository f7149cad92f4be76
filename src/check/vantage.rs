//! The vantage judgement: a silent target, a zone outage, or a blind medic?
//!
//! A check that gets no answer from its target reports a *candidate*
//! [`Outcome::Unreachable`]. Whether the target really is silent or medic
//! itself cannot see is judged here, from what medic heard last (each word
//! counts while it is fresh: two intervals of the check that said it, plus
//! its timeout):
//! - every target check's last word: an answer (ok, or failing with the
//!   target's own words: refused, an error reply) or silence;
//! - the vantage probes of each zone (`zones.NAME.vantage`: a gateway, a
//!   resolver, a peer), where any answer counts;
//! - medic's store, asked every few seconds.
//!
//! Only answers heard since the target went silent (its first silent word
//! since it last answered) count as evidence: an older one may predate a
//! cut-off of medic itself.
//!
//! The verdicts, in order:
//! 1. The store does not answer: **blind** (unknown).
//! 2. A probe of the target's zone answers: **unreachable** (the path into
//!    the zone works; the target is silent).
//! 3. Most fresh targets of the zone are silent (a zone of one included)
//!    while something else answers (another zone, an unzoned target, a
//!    probe elsewhere): **unreachable, "zone NAME outage"**.
//! 4. Other targets of the zone answer: **unreachable**.
//! 5. Nothing answers anywhere: **blind** (unknown, "medic is blind: ...").
//!
//! A target in no zone is judged against everything medic watches: it is
//! unreachable while anything else answers, and medic is blind otherwise.
//! The `vantage` check kind ([`VantageCheck`]) is failing while medic is
//! blind: the monitoring-system scenario pages about it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{BuildError, Check};
use crate::config::Config;
use crate::config::zones::VantageProbe;
use crate::observe::Outcome;

/// How often the store is asked (and how long it may take).
const STORE_EVERY: Duration = Duration::from_secs(5);
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// The check kinds whose words are evidence about a target's reachability.
const TARGET_KINDS: &[&str] = &["tcp", "http", "postgres", "redis"];

/// Whether a check of `kind` on a target says something about whether the
/// target answers (sources, such as Prometheus or the Kubernetes API, do
/// not: their silence is medic's own blindness).
pub fn is_evidence(kind: &str) -> bool {
    TARGET_KINDS.contains(&kind)
}

/// One word medic heard: an answer or silence, and until when it counts.
#[derive(Clone, Debug)]
struct Heard {
    answered: bool,
    at: Instant,
    fresh_for: Duration,
}

impl Heard {
    fn fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.at) <= self.fresh_for
    }
}

#[derive(Debug, Default)]
struct State {
    targets: HashMap<String, Heard>,
    /// Target → when its current silence began (its first silent word
    /// since it last answered).
    silent_since: HashMap<String, Instant>,
    /// (zone, probe index) → last word.
    probes: HashMap<(String, usize), Heard>,
    /// The store's last word and what it said when it failed.
    store: Option<(Heard, String)>,
}

/// What medic knows of its own vantage: zones, their probes, and the last
/// word of every target, probe and the store. Shared by the engine (which
/// records every target check and judges candidates), the probe loops and
/// the `vantage` checks.
#[derive(Debug, Default)]
pub struct Vantage {
    zone_of: HashMap<String, String>,
    /// Zone → the description of each of its probes.
    probes: BTreeMap<String, Vec<String>>,
    state: Mutex<State>,
}

/// Shows at most three names, then how many more.
fn names(mut v: Vec<String>) -> String {
    v.sort();
    let n = v.len();
    if n > 3 {
        v.truncate(3);
        format!("{} and {} more", v.join(", "), n - 3)
    } else {
        v.join(", ")
    }
}

impl Vantage {
    /// The zones of `config`, nothing heard yet.
    pub fn new(config: &Config) -> Self {
        let mut zone_of = HashMap::new();
        let mut probes = BTreeMap::new();
        for (name, z) in &config.zones {
            for t in &z.targets {
                zone_of.insert(t.clone(), name.clone());
            }
            probes.insert(
                name.clone(),
                z.vantage.iter().map(VantageProbe::describe).collect(),
            );
        }
        Vantage {
            zone_of,
            probes,
            state: Mutex::new(State::default()),
        }
    }

    /// The zone of a target, if it is in one.
    pub fn zone_of(&self, target: &str) -> Option<&str> {
        self.zone_of.get(target).map(String::as_str)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a target check's word: ok and failing are answers, an
    /// unreachable is silence, unknown says nothing.
    pub fn heard_target(&self, target: &str, outcome: &Outcome, at: Instant, fresh_for: Duration) {
        let answered = match outcome {
            Outcome::Ok | Outcome::Failing(_) => true,
            Outcome::Unreachable(_) => false,
            Outcome::Unknown(_) => return,
        };
        let mut st = self.state();
        if answered {
            st.silent_since.remove(target);
        } else {
            st.silent_since.entry(target.to_string()).or_insert(at);
        }
        st.targets.insert(
            target.to_string(),
            Heard {
                answered,
                at,
                fresh_for,
            },
        );
    }

    /// Records a vantage probe's word (probe `index` of `zone`).
    pub fn heard_probe(
        &self,
        zone: &str,
        index: usize,
        answered: bool,
        at: Instant,
        fresh_for: Duration,
    ) {
        self.state().probes.insert(
            (zone.to_string(), index),
            Heard {
                answered,
                at,
                fresh_for,
            },
        );
    }

    /// Records whether the store answered (`Err`: what it said instead).
    pub fn heard_store(&self, answer: Result<(), String>, at: Instant, fresh_for: Duration) {
        let answered = answer.is_ok();
        let why = answer.err().unwrap_or_default();
        self.state().store = Some((
            Heard {
                answered,
                at,
                fresh_for,
            },
            why,
        ));
    }

    /// The verdict on a candidate unreachable of `target` (a config target,
    /// `None` for an inline address), `candidate` being what the check saw:
    /// [`Outcome::Unreachable`] with why medic trusts its vantage, or
    /// [`Outcome::Unknown`] with why it does not. Record the target's own
    /// silence ([`Vantage::heard_target`]) first.
    pub fn judge(&self, target: Option<&str>, candidate: &str, now: Instant) -> Outcome {
        let st = self.state();
        if let Some((h, why)) = &st.store
            && !h.answered
        {
            return Outcome::Unknown(format!(
                "medic is blind: {candidate}, and its own store does not answer ({why})"
            ));
        }
        let zone = target.and_then(|t| self.zone_of(t));
        // Only an answer heard since the target went silent proves medic's
        // vantage: one from before may predate medic's own cut-off (a
        // check every 15s keeps its last answer fresh for 30s).
        let since = target.and_then(|t| st.silent_since.get(t)).copied();
        let after = |h: &Heard| since.is_none_or(|s| h.at >= s);
        // What answers, inside the target's zone and outside it.
        let (mut inside, mut outside) = (Vec::new(), Vec::new());
        let (mut silent, mut observed) = (0usize, 0usize);
        for (name, h) in st.targets.iter().filter(|(_, h)| h.fresh(now)) {
            let same = zone.is_some() && self.zone_of(name) == zone;
            if same {
                observed += 1;
                silent += usize::from(!h.answered);
            }
            if !h.answered || !after(h) || Some(name.as_str()) == target {
                continue;
            }
            let shown = match self.zone_of(name) {
                Some(z) if !same => format!("{name} (zone {z})"),
                _ => name.clone(),
            };
            if same { &mut inside } else { &mut outside }.push(shown);
        }
        let mut zone_probes = Vec::new();
        for ((z, i), h) in st.probes.iter() {
            if !h.fresh(now) || !h.answered || !after(h) {
                continue;
            }
            let what = self
                .probes
                .get(z)
                .and_then(|p| p.get(*i))
                .cloned()
                .unwrap_or_default();
            if Some(z.as_str()) == zone {
                zone_probes.push(what);
            } else {
                outside.push(format!("{what} (zone {z} probe)"));
            }
        }
        let Some(zone) = zone else {
            // No zone: anything else answering proves medic's network.
            let mut all = inside;
            all.append(&mut outside);
            return if all.is_empty() {
                Outcome::Unknown(format!(
                    "medic is blind: {candidate}, and nothing else it watches answers either"
                ))
            } else {
                Outcome::Unreachable(format!(
                    "{candidate}; medic's vantage is healthy: it still reaches {}",
                    names(all)
                ))
            };
        };
        // The target's own silence counts even if not recorded.
        let observed = observed.max(1);
        let silent = silent.max(1);
        let most_silent = silent * 2 > observed;
        if !zone_probes.is_empty() {
            let share = if most_silent {
                format!(" ({silent} of {observed} targets of zone {zone} are silent)")
            } else {
                String::new()
            };
            return Outcome::Unreachable(format!(
                "{candidate}; medic's vantage is healthy: zone {zone}'s vantage probe {} answers{share}",
                names(zone_probes)
            ));
        }
        if most_silent && !outside.is_empty() {
            return Outcome::Unreachable(format!(
                "zone {zone} outage: {candidate}; {silent} of {observed} targets of zone {zone} \
                 are silent and no vantage probe of it answers, while medic still reaches {} \
                 and its store",
                names(outside)
            ));
        }
        if !inside.is_empty() {
            return Outcome::Unreachable(format!(
                "{candidate}; medic's vantage is healthy: zone {zone} still answers ({})",
                names(inside)
            ));
        }
        Outcome::Unknown(format!(
            "medic is blind: {candidate}, and nothing it watches answers, in zone {zone} or elsewhere"
        ))
    }

    /// Why medic is blind now, if it is: its store does not answer, or it
    /// heard silence and no answer at all (no target, no vantage probe).
    pub fn blind(&self, now: Instant) -> Option<String> {
        let st = self.state();
        if let Some((h, why)) = &st.store
            && !h.answered
        {
            return Some(format!("medic is blind: its store does not answer ({why})"));
        }
        let fresh_targets = st.targets.iter().filter(|(_, h)| h.fresh(now));
        let fresh_probes = st.probes.values().filter(|h| h.fresh(now));
        let mut silent = Vec::new();
        for (name, h) in fresh_targets {
            if h.answered {
                return None;
            }
            silent.push(name.clone());
        }
        let mut silent_probes = 0;
        for h in fresh_probes {
            if h.answered {
                return None;
            }
            silent_probes += 1;
        }
        if silent.is_empty() && silent_probes == 0 {
            return None;
        }
        let probes = match silent_probes {
            0 => "no vantage probe heard from".to_string(),
            n => format!("none of its {n} vantage probes answers"),
        };
        let targets = if silent.is_empty() {
            "no target observed".to_string()
        } else {
            format!("{} silent target(s): {}", silent.len(), names(silent))
        };
        Some(format!(
            "medic is blind: it reaches nothing ({targets}; {probes})"
        ))
    }

    /// Runs every vantage probe of `config` and asks `store` every few
    /// seconds, recording what they say, until `stop`.
    pub fn start(
        self: &Arc<Self>,
        config: &Config,
        store: Arc<dyn crate::store::Store>,
        tasks: &tokio_util::task::TaskTracker,
        stop: CancellationToken,
    ) {
        for (zone, z) in &config.zones {
            for (i, p) in z.vantage.iter().enumerate() {
                let check: Arc<dyn Check> = match build_probe(p, z.timeout.get()) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(zone = %zone, probe = %p.describe(), "vantage probe not started: {e}");
                        continue;
                    }
                };
                let (every, timeout) = (z.every.get(), z.timeout.get());
                let (v, zone, stop) = (self.clone(), zone.clone(), stop.clone());
                tasks.spawn(async move {
                    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tick.tick() => {}
                        }
                        let answered = tokio::time::timeout(timeout, check.run())
                            .await
                            .is_ok_and(|o| matches!(o, Outcome::Ok | Outcome::Failing(_)));
                        v.heard_probe(&zone, i, answered, Instant::now(), every * 2 + timeout);
                    }
                });
            }
        }
        let (v, stop) = (self.clone(), stop.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(STORE_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let answer =
                    match tokio::time::timeout(STORE_TIMEOUT, store.recent_incidents(1)).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!(
                            "no answer within {}",
                            humantime::format_duration(STORE_TIMEOUT)
                        )),
                    };
                v.heard_store(answer, Instant::now(), STORE_EVERY * 2 + STORE_TIMEOUT);
            }
        });
    }
}

/// The runnable check behind a vantage probe.
fn build_probe(p: &VantageProbe, timeout: Duration) -> Result<Arc<dyn Check>, BuildError> {
    Ok(match p {
        VantageProbe::Tcp(a) => Arc::new(super::tcp::TcpCheck::build(
            &super::tcp::TcpParams {
                target: None,
                address: Some(a.clone()),
            },
            &Config::default(),
        )?),
        VantageProbe::Dns(d) => Arc::new(super::dns::DnsCheck::build(
            &super::dns::DnsParams {
                name: d.name.clone(),
                expect: Vec::new(),
                server: Some(d.server.clone()),
            },
            timeout,
        )?),
    })
}

/// `check: { vantage: {} }`: failing while medic is blind (it reaches
/// nothing, or its store does not answer), the monitoring-system
/// scenario's page about medic's own blindness.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VantageParams {}

/// A runnable `vantage` check: reads the judgement the daemon attaches.
#[derive(Debug, Default)]
pub struct VantageCheck {
    vantage: OnceLock<Arc<Vantage>>,
}

#[async_trait::async_trait]
impl Check for VantageCheck {
    async fn run(&self) -> Outcome {
        let Some(v) = self.vantage.get() else {
            return Outcome::Unknown("no vantage judgement here (only `medic run` has one)".into());
        };
        match v.blind(Instant::now()) {
            Some(why) => Outcome::Failing(why),
            None => Outcome::Ok,
        }
    }

    fn attach_vantage(&self, vantage: &Arc<Vantage>) {
        let _ = self.vantage.set(vantage.clone());
    }
}

impl super::CheckKind for VantageParams {
    fn validate(&self, _v: &mut crate::config::refs::Refs, _p: &marked_yaml::Node) {}

    fn build(&self, _timeout: Duration, _config: &Config) -> Result<Arc<dyn Check>, BuildError> {
        Ok(Arc::new(VantageCheck::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const FRESH: Duration = Duration::from_secs(3);

    /// Zone a: db, replica, cache; zone b: db2; `web` in no zone; one
    /// probe in zone b.
    fn vantage() -> Vantage {
        let config = crate::config::load_str(
            "medic.yaml",
            "targets:\n\
             \x20 db: { tcp: { address: \"192.0.2.1:5432\" } }\n\
             \x20 replica: { tcp: { address: \"192.0.2.2:5432\" } }\n\
             \x20 cache: { tcp: { address: \"192.0.2.3:6379\" } }\n\
             \x20 db2: { tcp: { address: \"198.51.100.1:5432\" } }\n\
             \x20 web: { tcp: { address: \"203.0.113.1:80\" } }\n\
             zones:\n\
             \x20 a: { targets: [db, replica, cache] }\n\
             \x20 b: { targets: [db2], vantage: [{ tcp: \"198.51.100.254:22\" }] }\n",
        )
        .unwrap();
        Vantage::new(&config)
    }

    fn ok() -> Outcome {
        Outcome::Ok
    }

    fn silent() -> Outcome {
        Outcome::Unreachable("timed out".into())
    }

    fn hear(v: &Vantage, t: &str, o: Outcome) {
        v.heard_target(t, &o, Instant::now(), FRESH);
    }

    fn judge(v: &Vantage, t: &str) -> Outcome {
        hear(v, t, silent());
        v.judge(Some(t), "db: connect timed out", Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_target_with_answering_neighbours_is_unreachable() {
        let v = vantage();
        hear(&v, "replica", ok());
        hear(&v, "cache", Outcome::Failing("refused".into()));
        let o = judge(&v, "db");
        assert_eq!(
            o,
            Outcome::Unreachable(
                "db: connect timed out; medic's vantage is healthy: zone a still answers (cache, replica)"
                    .into()
            )
        );
        assert_eq!(v.blind(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn most_of_a_zone_silent_while_another_answers_is_a_zone_outage() {
        let v = vantage();
        hear(&v, "replica", silent());
        hear(&v, "cache", ok());
        hear(&v, "db2", ok());
        let o = judge(&v, "db");
        assert_eq!(
            o,
            Outcome::Unreachable(
                "zone a outage: db: connect timed out; 2 of 3 targets of zone a are silent and no \
                 vantage probe of it answers, while medic still reaches db2 (zone b) and its store"
                    .into()
            )
        );
        assert!(o.is_failing());
    }

    #[tokio::test(start_paused = true)]
    async fn a_zone_probe_answering_makes_it_the_target_not_the_path() {
        let v = vantage();
        v.heard_probe("b", 0, true, Instant::now(), FRESH);
        let o = judge(&v, "db2");
        assert_eq!(
            o,
            Outcome::Unreachable(
                "db: connect timed out; medic's vantage is healthy: zone b's vantage probe tcp \
                 198.51.100.254:22 answers (1 of 1 targets of zone b are silent)"
                    .into()
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_answering_is_blindness_and_stale_answers_do_not_count() {
        let v = vantage();
        hear(&v, "replica", ok());
        hear(&v, "db2", ok());
        hear(&v, "web", ok());
        // Fresh answers: a neighbour answers.
        assert_eq!(judge(&v, "db").label(), "unreachable");
        advance(FRESH + Duration::from_millis(1)).await;
        for t in ["replica", "cache", "db2", "web"] {
            hear(&v, t, silent());
        }
        let o = judge(&v, "db");
        assert_eq!(
            o,
            Outcome::Unknown(
                "medic is blind: db: connect timed out, and nothing it watches answers, in zone a or elsewhere"
                    .into()
            )
        );
        assert!(!o.is_failing());
        let blind = v.blind(Instant::now()).expect("blind");
        assert!(
            blind.starts_with("medic is blind: it reaches nothing (5 silent target(s)"),
            "{blind}"
        );
        // An unzoned target, with nothing else answering: blind too.
        assert_eq!(judge(&v, "web").label(), "unknown");
        // Old silence goes stale as well: then medic knows nothing, not blindness.
        advance(FRESH + Duration::from_millis(1)).await;
        assert_eq!(v.blind(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_from_before_the_silence_began_proves_nothing() {
        let v = vantage();
        // web answered; then medic is cut off and db2 goes silent: web's
        // answer is still fresh, but older than db2's silence.
        hear(&v, "web", ok());
        advance(Duration::from_millis(500)).await;
        assert_eq!(
            judge(&v, "db2"),
            Outcome::Unknown(
                "medic is blind: db: connect timed out, and nothing it watches answers, in zone b or elsewhere"
                    .into()
            )
        );
        // web answers again, after db2 went silent: medic can see.
        advance(Duration::from_millis(500)).await;
        hear(&v, "web", ok());
        let o = judge(&v, "db2");
        assert_eq!(o.label(), "unreachable", "{o:?}");
        assert!(
            o.detail().contains("while medic still reaches web"),
            "{o:?}"
        );
        // db2 answers: its next silence starts afresh.
        hear(&v, "db2", ok());
        advance(Duration::from_millis(500)).await;
        assert_eq!(judge(&v, "db2").label(), "unknown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_does_not_answer_is_blindness() {
        let v = vantage();
        hear(&v, "replica", ok());
        v.heard_store(Err("disk I/O error".into()), Instant::now(), FRESH);
        let o = judge(&v, "db");
        assert_eq!(
            o,
            Outcome::Unknown(
                "medic is blind: db: connect timed out, and its own store does not answer (disk I/O error)"
                    .into()
            )
        );
        assert!(v.blind(Instant::now()).is_some());
        v.heard_store(Ok(()), Instant::now(), FRESH);
        assert_eq!(judge(&v, "db").label(), "unreachable");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unzoned_target_is_judged_against_everything_else() {
        let v = vantage();
        hear(&v, "db2", ok());
        v.heard_probe("b", 0, false, Instant::now(), FRESH);
        let o = judge(&v, "web");
        assert_eq!(
            o,
            Outcome::Unreachable(
                "db: connect timed out; medic's vantage is healthy: it still reaches db2 (zone b)"
                    .into()
            )
        );
        // Unknown says nothing: it neither answers nor stays silent.
        hear(&v, "db2", Outcome::Unknown("auth".into()));
        assert_eq!(judge(&v, "web").label(), "unreachable");
    }

    #[tokio::test(start_paused = true)]
    async fn the_vantage_check_is_failing_only_while_blind() {
        let v = Arc::new(vantage());
        let c = VantageCheck::default();
        assert_eq!(c.run().await.label(), "unknown");
        c.attach_vantage(&v);
        assert_eq!(c.run().await, Outcome::Ok);
        hear(&v, "db", silent());
        let o = c.run().await;
        assert_eq!(
            o,
            Outcome::Failing(
                "medic is blind: it reaches nothing (1 silent target(s): db; no vantage probe heard from)"
                    .into()
            )
        );
        hear(&v, "cache", ok());
        assert_eq!(c.run().await, Outcome::Ok);
    }
}
