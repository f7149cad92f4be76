//! Bounds that span steps and incidents: maintenance windows, the blast
//! radius (now and over time), the scenario-wide attempt limit, and how
//! many incidents of a scenario may act at once.
//!
//! Attempt budgets and cooldowns per step and instance live in the ledger
//! (see [`super::plan`]); the bounds here are shared by every incident
//! task. "Acting at once", the scenario's limit and its blast radius over
//! time are counted from the ledger, so a restart resets nothing; the
//! blast radius now is computed from what the engine sees; maintenance
//! windows come from the config.
//!
//! Why two budgets beside the per-step one: instances are label sets, and
//! label sets come from outside. Each new one would get a fresh per-step
//! budget, so the scenario's `limit` caps attempts over all of them, and
//! its `blast_radius` caps how many distinct instances are acted on within
//! a window (one alert at a time never trips the "failing at once" bound).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::config::{BlastRadius, Config, MaintenanceWindow, Topology};
use crate::remedy::Gate;
use crate::rules::model::{BlastWindow, ScenarioLimit};
use crate::store::Attempt;

/// How many of a scenario's targets (instances) the engine sees failing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub failing: usize,
    pub total: usize,
}

/// Shared by the engine (which reports health) and every plan run.
#[derive(Debug, Default)]
pub struct Bounds {
    maintenance: Vec<MaintenanceWindow>,
    blast: BlastRadius,
    health: Mutex<HashMap<String, Health>>,
    /// Per scenario: held while a plan run checks "how many act at once"
    /// and writes its attempt to the ledger, so two incidents cannot both
    /// pass the check.
    admission: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Targets' `depends_on`, zones and budgets.
    topology: Topology,
    /// How long a dependent's symptoms must outlive its cause's
    /// resolution before it runs its own plan.
    grace: std::time::Duration,
}

impl Bounds {
    pub fn new(config: &Config) -> Self {
        Bounds {
            maintenance: config.maintenance.clone(),
            blast: config.limits.blast_radius,
            health: Mutex::new(HashMap::new()),
            admission: Mutex::new(HashMap::new()),
            topology: config.topology.clone(),
            grace: config.limits.dependency_grace.get(),
        }
    }

    /// Targets' `depends_on`, zones and budgets.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The dependency grace period (`limits.dependency_grace`).
    pub fn grace(&self) -> std::time::Duration {
        self.grace
    }

    /// The admission lock of one scenario.
    pub fn admission(&self, scenario: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut g = self.admission.lock().unwrap_or_else(|p| p.into_inner());
        g.entry(scenario.to_string()).or_default().clone()
    }

    /// The engine reports how many of a scenario's targets fail right now.
    pub fn set_health(&self, scenario: &str, health: Health) {
        let mut g = self.health.lock().unwrap_or_else(|p| p.into_inner());
        g.insert(scenario.to_string(), health);
    }

    /// The scenario's last reported health.
    pub fn health(&self, scenario: &str) -> Health {
        let g = self.health.lock().unwrap_or_else(|p| p.into_inner());
        g.get(scenario).copied().unwrap_or_default()
    }

    /// `Some(why)` when more than the allowed share of the scenario's
    /// targets fail at once: medic then acts on none of them.
    pub fn blast_radius(&self, scenario: &str) -> Option<String> {
        let h = self.health(scenario);
        exceeds(h, self.blast).then(|| {
            format!(
                "blast radius: {} of {} targets of this scenario fail at once (more than {}%); the cause is more likely the network or medic's own view, so medic acts on none of them",
                h.failing, h.total, self.blast.percent
            )
        })
    }

    /// The window blocking actions of `scenario` on any of `targets` at
    /// `now`, the one ending last when several do.
    pub fn maintenance(
        &self,
        scenario: &str,
        targets: &[String],
        now: DateTime<Utc>,
    ) -> Option<&MaintenanceWindow> {
        self.maintenance
            .iter()
            .filter(|w| w.start <= now && now < w.end)
            .filter(|w| {
                w.scenario.as_deref() == Some(scenario)
                    || w.target.as_ref().is_some_and(|t| targets.contains(t))
            })
            .max_by_key(|w| w.end)
    }
}

/// The earliest start an attempt needs to count for either ledger bound.
pub fn ledger_since(now: DateTime<Utc>, limit: ScenarioLimit, blast: BlastWindow) -> DateTime<Utc> {
    let longest = limit.per.get().max(blast.per.get());
    let window = chrono::Duration::from_std(longest).unwrap_or(chrono::Duration::MAX);
    now.checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Attempts that acted (in flight, or ended having executed something)
/// and started within `per` of `now`.
fn acted(
    attempts: &[Attempt],
    per: std::time::Duration,
    now: DateTime<Utc>,
) -> impl Iterator<Item = &Attempt> {
    let window = chrono::Duration::from_std(per).unwrap_or(chrono::Duration::MAX);
    let since = now
        .checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    attempts.iter().filter(move |a| {
        a.started_at >= since && a.outcome.is_none_or(|o| o.counts_against_limit())
    })
}

/// The scenario-wide limit, from the scenario's attempts (any step, any
/// instance): refuses once `limit.attempts` acted within `limit.per`.
pub fn scenario_limit(attempts: &[Attempt], limit: ScenarioLimit, now: DateTime<Utc>) -> Gate {
    let used: Vec<&Attempt> = acted(attempts, limit.per.get(), now).collect();
    let instances: BTreeSet<&str> = used.iter().map(|a| a.instance.as_str()).collect();
    let detail = format!(
        "{} of {} attempts per {} used by this scenario (over {} instance(s))",
        used.len(),
        limit.attempts,
        limit.per,
        instances.len()
    );
    if used.len() as u64 >= u64::from(limit.attempts) {
        Gate::fail(
            "scenario-limit",
            format!(
                "{detail}: new instances do not buy new attempts, so medic acts on none and pages"
            ),
        )
    } else {
        Gate::pass("scenario-limit", detail)
    }
}

/// The blast radius over time: refuses acting on `instance` when it would
/// be one more than `blast.instances` distinct instances acted on within
/// `blast.per` (an instance already acted on keeps its own budget).
pub fn blast_window(
    attempts: &[Attempt],
    instance: &str,
    blast: BlastWindow,
    now: DateTime<Utc>,
) -> Gate {
    let seen: BTreeSet<&str> = acted(attempts, blast.per.get(), now)
        .map(|a| a.instance.as_str())
        .collect();
    let shown = |set: &BTreeSet<&str>| {
        let mut v: Vec<String> = set
            .iter()
            .take(5)
            .map(|i| {
                if i.is_empty() {
                    "(the target)".into()
                } else {
                    i.to_string()
                }
            })
            .collect();
        if set.len() > 5 {
            v.push(format!("and {} more", set.len() - 5));
        }
        v.join(", ")
    };
    let detail = format!(
        "{} of at most {} distinct instances acted on in the last {}",
        seen.len(),
        blast.instances,
        blast.per
    );
    if !seen.contains(instance) && seen.len() as u64 >= u64::from(blast.instances) {
        Gate::fail(
            "blast-radius-window",
            format!(
                "blast radius over time: {detail} ({}); {instance} would be one more, so medic acts on none and pages",
                shown(&seen)
            ),
        )
    } else {
        Gate::pass("blast-radius-window", detail)
    }
}

fn exceeds(h: Health, b: BlastRadius) -> bool {
    h.total >= b.min_targets.max(1) && h.failing * 100 > h.total * b.percent as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn blast_radius_is_more_than_the_share_of_enough_targets() {
        let b = BlastRadius::default();
        let h = |failing, total| Health { failing, total };
        assert!(!exceeds(h(1, 1), b), "one target: the incident itself");
        assert!(!exceeds(h(1, 2), b), "exactly half is not more than half");
        assert!(exceeds(h(2, 2), b));
        assert!(exceeds(h(6, 10), b));
        assert!(!exceeds(h(5, 10), b));
        let strict = BlastRadius {
            percent: 20,
            min_targets: 5,
        };
        assert!(!exceeds(h(4, 4), strict), "below min_targets");
        assert!(exceeds(h(2, 5), strict));
    }

    fn attempt(instance: &str, at: &str, outcome: Option<AttemptOutcome>) -> Attempt {
        Attempt {
            id: 0,
            incident_id: 0,
            scenario: "s".into(),
            instance: instance.into(),
            step: "restart".into(),
            step_index: 0,
            action: "exec".into(),
            key: String::new(),
            started_at: at_(at),
            ended_at: None,
            outcome,
            reason: String::new(),
            inputs: serde_json::Value::Null,
        }
    }

    fn at_(s: &str) -> DateTime<Utc> {
        at(&format!("2026-01-01T{s}Z"))
    }

    use crate::duration::Dur;
    use crate::store::AttemptOutcome;
    const FAILED: Option<AttemptOutcome> = Some(AttemptOutcome::Failed);

    #[test]
    fn scenario_limit_counts_every_instance_and_only_what_acted() {
        let limit = ScenarioLimit {
            attempts: 3,
            per: Dur::secs(3600),
        };
        let now = at_("02:00:00");
        let mut ledger = vec![
            attempt("a", "00:30:00", FAILED), // outside the hour
            attempt("b", "01:10:00", FAILED),
            attempt("c", "01:20:00", Some(AttemptOutcome::Refused)),
            attempt("d", "01:30:00", Some(AttemptOutcome::DryRun)),
            attempt("e", "01:40:00", Some(AttemptOutcome::Succeeded)),
        ];
        let g = scenario_limit(&ledger, limit, now);
        assert!(g.passed, "{g:?}");
        assert_eq!(
            g.detail,
            "2 of 3 attempts per 1h used by this scenario (over 2 instance(s))"
        );
        ledger.push(attempt("f", "01:50:00", None)); // in flight counts
        let g = scenario_limit(&ledger, limit, now);
        assert!(!g.passed);
        assert!(
            g.detail.starts_with("3 of 3 attempts per 1h"),
            "{}",
            g.detail
        );
    }

    #[test]
    fn blast_window_counts_distinct_instances_acted_on_within_the_window() {
        let w = BlastWindow {
            instances: 2,
            per: Dur::secs(600),
        };
        let now = at_("01:00:00");
        let ledger = vec![
            attempt("old", "00:40:00", FAILED),
            attempt("a", "00:52:00", FAILED),
            attempt("a", "00:53:00", FAILED),
            attempt("b", "00:55:00", Some(AttemptOutcome::Succeeded)),
            attempt("r", "00:56:00", Some(AttemptOutcome::Refused)),
        ];
        assert!(
            blast_window(&ledger, "a", w, now).passed,
            "a keeps its budget"
        );
        assert!(blast_window(&ledger, "b", w, now).passed);
        let g = blast_window(&ledger, "c", w, now);
        assert!(!g.passed);
        assert_eq!(
            g.detail,
            "blast radius over time: 2 of at most 2 distinct instances acted on in the last 10m (a, b); c would be one more, so medic acts on none and pages"
        );
        // Ten minutes later the window has moved on.
        assert!(blast_window(&ledger, "c", w, at_("01:06:00")).passed);
        assert_eq!(
            ledger_since(now, ScenarioLimit::default(), w),
            at_("00:00:00")
        );
    }

    #[test]
    fn maintenance_matches_scenario_or_target_while_it_lasts() {
        let config = Config {
            maintenance: vec![
                MaintenanceWindow {
                    scenario: Some("db".into()),
                    target: None,
                    start: at("2026-01-01T00:00:00Z"),
                    end: at("2026-01-01T02:00:00Z"),
                    reason: "upgrade".into(),
                },
                MaintenanceWindow {
                    scenario: None,
                    target: Some("cache".into()),
                    start: at("2026-01-01T01:00:00Z"),
                    end: at("2026-01-01T03:00:00Z"),
                    reason: "resize".into(),
                },
            ],
            ..Config::default()
        };
        let b = Bounds::new(&config);
        let cache = vec!["cache".to_string()];
        assert_eq!(
            b.maintenance("db", &[], at("2026-01-01T00:30:00Z"))
                .map(|w| w.reason.as_str()),
            Some("upgrade")
        );
        assert!(
            b.maintenance("db", &[], at("2026-01-01T02:00:00Z"))
                .is_none()
        );
        assert!(
            b.maintenance("other", &[], at("2026-01-01T01:30:00Z"))
                .is_none()
        );
        assert_eq!(
            b.maintenance("db", &cache, at("2026-01-01T01:30:00Z"))
                .map(|w| w.reason.as_str()),
            Some("resize"),
            "the window ending last"
        );
    }
}
