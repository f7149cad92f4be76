//! Bounds that span steps and incidents: maintenance windows, the blast
//! radius, and how many incidents of a scenario may act at once.
//!
//! Attempt budgets and cooldowns are per step and live in the ledger (see
//! [`super::plan`]); the bounds here are shared by every incident task.
//! "Acting at once" is counted from the ledger's attempts in flight, so a
//! restart resets nothing; the blast radius is computed from what the engine
//! sees now; maintenance windows come from the config.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::config::{BlastRadius, Config, MaintenanceWindow};

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
}

impl Bounds {
    pub fn new(config: &Config) -> Self {
        Bounds {
            maintenance: config.maintenance.clone(),
            blast: config.limits.blast_radius,
            health: Mutex::new(HashMap::new()),
            admission: Mutex::new(HashMap::new()),
        }
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
