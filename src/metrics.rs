//! medic's own Prometheus metrics (prometheus-client), served on `/metrics`.
//!
//! One process-wide registry; modules record through the small functions
//! below (names are constants here, labels stay low-cardinality: scenario,
//! symptom, action kind, notifier, outcome). Values that live in the store
//! (open incidents, remaining budgets) are refreshed when scraped, so they
//! are right on every replica, leader or follower.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Metric names (without the `_total` suffix counters get on the wire).
pub mod names {
    pub const CHECKS: &str = "medic_checks";
    pub const CHECK_DURATION: &str = "medic_check_duration_seconds";
    pub const SYMPTOM_STATE: &str = "medic_symptom_state";
    pub const OPEN_INCIDENTS: &str = "medic_open_incidents";
    pub const ACTIONS: &str = "medic_actions";
    pub const BUDGET_REMAINING: &str = "medic_budget_remaining_attempts";
    pub const NOTIFICATIONS: &str = "medic_notifications";
    pub const NOTIFICATION_DURATION: &str = "medic_notification_duration_seconds";
    pub const IS_LEADER: &str = "medic_is_leader";
    pub const TERM: &str = "medic_leader_term";
    pub const TRANSITIONS: &str = "medic_leadership_transitions";
    pub const FENCED: &str = "medic_fenced_writes";
    pub const OBSERVER_BLIND: &str = "medic_observer_blind";
    pub const RELOAD_OK: &str = "medic_config_last_reload_successful";
    pub const RELOAD_TIME: &str = "medic_config_last_reload_success_timestamp_seconds";
    pub const RELOADS: &str = "medic_config_reloads";
    pub const ACK_MISSED: &str = "medic_ack_missed";
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    scenario: String,
    symptom: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SymptomLabels {
    scenario: String,
    symptom: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    scenario: String,
    symptom: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScenarioLabels {
    scenario: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    scenario: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifierLabels {
    notifier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    notifier: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    check_duration: Family<SymptomLabels, Histogram, fn() -> Histogram>,
    symptom_state: Family<StateLabels, Gauge>,
    open_incidents: Family<ScenarioLabels, Gauge>,
    actions: Family<ActionLabels, Counter>,
    budget: Family<StepLabels, Gauge>,
    notifications: Family<NotifyLabels, Counter>,
    notification_duration: Family<NotifierLabels, Histogram, fn() -> Histogram>,
    is_leader: Gauge,
    term: Gauge,
    transitions: Counter,
    fenced: Counter,
    observer_blind: Gauge,
    reload_ok: Gauge,
    reload_time: Gauge,
    reloads: Family<ResultLabels, Gauge>,
    ack_missed: Family<ScenarioLabels, Counter>,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        use names::*;
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            checks: Family::default(),
            check_duration: Family::new_with_constructor(latency_histogram),
            symptom_state: Family::default(),
            open_incidents: Family::default(),
            actions: Family::default(),
            budget: Family::default(),
            notifications: Family::default(),
            notification_duration: Family::new_with_constructor(latency_histogram),
            is_leader: Gauge::default(),
            term: Gauge::default(),
            transitions: Counter::default(),
            fenced: Counter::default(),
            observer_blind: Gauge::default(),
            reload_ok: Gauge::default(),
            reload_time: Gauge::default(),
            reloads: Family::default(),
            ack_missed: Family::default(),
        };
        registry.register(
            ACK_MISSED,
            "First pages nobody acknowledged within the policy's ack_within, by scenario",
            m.ack_missed.clone(),
        );
        registry.register(CHECKS, "Check runs, by outcome", m.checks.clone());
        registry.register(
            CHECK_DURATION,
            "How long check runs took",
            m.check_duration.clone(),
        );
        registry.register(
            SYMPTOM_STATE,
            "Symptom state machines: 1 for the current state",
            m.symptom_state.clone(),
        );
        registry.register(
            OPEN_INCIDENTS,
            "Incidents not yet resolved, by scenario",
            m.open_incidents.clone(),
        );
        registry.register(
            ACTIONS,
            "Remediation attempts ended, by action kind and outcome",
            m.actions.clone(),
        );
        registry.register(
            BUDGET_REMAINING,
            "Attempts a step may still make in its current limit window",
            m.budget.clone(),
        );
        registry.register(
            NOTIFICATIONS,
            "Notifications sent, by notifier and result",
            m.notifications.clone(),
        );
        registry.register(
            NOTIFICATION_DURATION,
            "How long sending a notification took",
            m.notification_duration.clone(),
        );
        registry.register(
            IS_LEADER,
            "1 when this replica is the leader",
            m.is_leader.clone(),
        );
        registry.register(
            TERM,
            "The leadership term this replica holds (0: none)",
            m.term.clone(),
        );
        registry.register(
            TRANSITIONS,
            "Times this replica became leader",
            m.transitions.clone(),
        );
        registry.register(
            FENCED,
            "Writes refused because a newer leader exists",
            m.fenced.clone(),
        );
        registry.register(
            OBSERVER_BLIND,
            "1 when this replica cannot write its observations to the store (it counts no observer and acts on nothing)",
            m.observer_blind.clone(),
        );
        registry.register(
            RELOAD_OK,
            "Whether the last config and rules reload succeeded",
            m.reload_ok.clone(),
        );
        registry.register(
            RELOAD_TIME,
            "When the config and rules last loaded successfully",
            m.reload_time.clone(),
        );
        registry.register(
            RELOADS,
            "Config and rules reloads, by result",
            m.reloads.clone(),
        );
        Metrics { registry, ..m }
    })
}

/// A check run ended with `outcome` (`ok`, `failing`, `unknown`) after `took`.
pub fn check(scenario: &str, symptom: &str, outcome: &str, took: Duration) {
    let m = metrics();
    m.checks
        .get_or_create(&CheckLabels {
            scenario: scenario.into(),
            symptom: symptom.into(),
            outcome: outcome.into(),
        })
        .inc();
    m.check_duration
        .get_or_create(&SymptomLabels {
            scenario: scenario.into(),
            symptom: symptom.into(),
        })
        .observe(took.as_secs_f64());
}

/// Every state a symptom can be in (the label values of `medic_symptom_state`).
const STATES: [&str; 4] = ["ok", "pending", "firing", "clearing"];

/// A symptom's state machine is now in `state`.
pub fn symptom_state(scenario: &str, symptom: &str, state: &str) {
    let m = metrics();
    for s in STATES {
        m.symptom_state
            .get_or_create(&StateLabels {
                scenario: scenario.into(),
                symptom: symptom.into(),
                state: s.into(),
            })
            .set(i64::from(s == state));
    }
}

/// A remediation attempt of `action` ended with `outcome`.
pub fn action(action: &str, outcome: &str) {
    metrics()
        .actions
        .get_or_create(&ActionLabels {
            action: action.into(),
            outcome: outcome.into(),
        })
        .inc();
}

/// A notification via `notifier` was sent (`ok`) or failed, after `took`.
pub fn notification(notifier: &str, ok: bool, took: Duration) {
    let m = metrics();
    m.notifications
        .get_or_create(&NotifyLabels {
            notifier: notifier.into(),
            result: if ok { "success" } else { "failure" }.into(),
        })
        .inc();
    m.notification_duration
        .get_or_create(&NotifierLabels {
            notifier: notifier.into(),
        })
        .observe(took.as_secs_f64());
}

/// Nobody acknowledged a first page of `scenario` within `ack_within`.
pub fn ack_missed(scenario: &str) {
    metrics()
        .ack_missed
        .get_or_create(&ScenarioLabels {
            scenario: scenario.into(),
        })
        .inc();
}

/// This replica's role: leader of `term`, or a follower (`None`).
pub fn leadership(term: Option<u64>) {
    let m = metrics();
    let was = m.is_leader.get() == 1;
    m.is_leader.set(i64::from(term.is_some()));
    m.term.set(term.map_or(0, |t| t as i64));
    if term.is_some() && !was {
        m.transitions.inc();
    }
}

/// Whether this replica's last observation write to the store failed.
pub fn observer_blind(blind: bool) {
    metrics().observer_blind.set(i64::from(blind));
}

/// A write was refused as fenced.
pub fn fenced_write() {
    metrics().fenced.inc();
}

/// Reload counters: reloads that succeeded and failed, whether the newest
/// load succeeded, and when (Unix seconds) the newest successful one was.
pub fn reloads(succeeded: u64, failed: u64, last_ok: bool, last_success_unix: i64) {
    let m = metrics();
    m.reload_ok.set(i64::from(last_ok));
    m.reload_time.set(last_success_unix);
    for (result, n) in [("success", succeeded), ("failure", failed)] {
        m.reloads
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .set(n as i64);
    }
}

/// Open incidents per scenario: every scenario in `scenarios` (0 when none)
/// and every scenario with an open incident (`open`: the scenario of each
/// open incident).
pub fn open_incidents<'a>(scenarios: &[String], open: impl IntoIterator<Item = &'a str>) {
    let m = metrics();
    m.open_incidents.clear();
    for s in scenarios {
        m.open_incidents
            .get_or_create(&ScenarioLabels {
                scenario: s.clone(),
            })
            .set(0);
    }
    for scenario in open {
        m.open_incidents
            .get_or_create(&ScenarioLabels {
                scenario: scenario.to_string(),
            })
            .inc();
    }
}

/// Attempts a step may still make in its current window.
pub fn budget(scenario: &str, step: &str, remaining: i64) {
    metrics()
        .budget
        .get_or_create(&StepLabels {
            scenario: scenario.into(),
            step: step.into(),
        })
        .set(remaining);
}

/// Everything, in the OpenMetrics text format.
pub fn encode() -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut s, &metrics().registry);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_show_in_the_text() {
        check("redis", "down", "failing", Duration::from_millis(3));
        symptom_state("redis", "down", "firing");
        action("exec", "succeeded");
        notification("log", false, Duration::from_millis(1));
        let text = encode();
        assert!(text.contains(
            "medic_checks_total{scenario=\"redis\",symptom=\"down\",outcome=\"failing\"} "
        ));
        assert!(text.contains(
            "medic_symptom_state{scenario=\"redis\",symptom=\"down\",state=\"firing\"} 1"
        ));
        assert!(
            text.contains(
                "medic_symptom_state{scenario=\"redis\",symptom=\"down\",state=\"ok\"} 0"
            )
        );
        assert!(text.contains("medic_actions_total{action=\"exec\",outcome=\"succeeded\"} "));
        assert!(text.contains("medic_notifications_total{notifier=\"log\",result=\"failure\"} "));
        assert!(text.contains("medic_check_duration_seconds_bucket{"));
        assert!(text.ends_with("# EOF\n"));
    }
}
