//! medic's own Prometheus metrics, served on `/metrics`.
//!
//! One process-wide [`Registry`]; modules record through the small functions
//! below. Every family is listed once in [`FAMILIES`] (name, type, labels,
//! help), which is also what `docs/operations.md` documents and a test
//! compares with what is served. Labels stay low-cardinality: scenario,
//! check kind, symptom state, step, action kind, notifier, outcome; nothing
//! is labelled per symptom or per series instance, so a scrape stays small
//! with 100,000 checks. Values that live in the store (open incidents,
//! remaining budgets) are refreshed when scraped, so they are right on every
//! replica, leader or follower.
//!
//! Two exposition formats, negotiated from `Accept` ([`Format::negotiate`]):
//! Prometheus text 0.0.4 (what `promtool check metrics` reads) and
//! OpenMetrics 1.0.0 (what Prometheus asks for first).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// A constant 1 whose labels carry the information (`*_info`): an
    /// OpenMetrics `info`, a gauge in the Prometheus text format.
    Info,
}

impl Kind {
    /// The type as the Prometheus text format's `# TYPE` line names it.
    pub fn prometheus(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge | Kind::Info => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: its full name as Prometheus queries it (counters end
/// in `_total`, an info in `_info`), its labels and its help.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    /// The unit the name ends with (`seconds`), empty when unitless.
    pub unit: &'static str,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

impl Family {
    /// The OpenMetrics family name: without the `_total` of a counter or
    /// the `_info` of an info.
    fn openmetrics_name(&self) -> &'static str {
        match self.kind {
            Kind::Counter => self.name.strip_suffix("_total").unwrap_or(self.name),
            Kind::Info => self.name.strip_suffix("_info").unwrap_or(self.name),
            _ => self.name,
        }
    }
}

/// Indices into [`FAMILIES`].
#[derive(Clone, Copy, Debug)]
enum Id {
    BuildInfo,
    Checks,
    CheckDuration,
    Symptoms,
    SymptomState,
    OpenIncidents,
    Actions,
    Budget,
    Notifications,
    NotificationDuration,
    IsLeader,
    Term,
    Transitions,
    Fenced,
    ObserverBlind,
    AckMissed,
    ReloadOk,
    ReloadTime,
    Reloads,
}

/// Every metric medic serves, in the order it serves them.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "medic_build_info",
        kind: Kind::Info,
        unit: "",
        labels: &["version", "commit"],
        help: "The running medic's version and git commit (always 1).",
    },
    Family {
        name: "medic_checks_total",
        kind: Kind::Counter,
        unit: "",
        labels: &["scenario", "check", "outcome"],
        help: "Check runs ended, by scenario, check kind and outcome (ok, failing, unknown).",
    },
    Family {
        name: "medic_check_duration_seconds",
        kind: Kind::Histogram,
        unit: "seconds",
        labels: &["scenario", "check"],
        help: "How long check runs took, by scenario and check kind.",
    },
    Family {
        name: "medic_symptoms",
        kind: Kind::Gauge,
        unit: "",
        labels: &["scenario", "state"],
        help: "Symptoms (per-series instances counted one each) in each state, by scenario.",
    },
    Family {
        name: "medic_symptom_state",
        kind: Kind::Gauge,
        unit: "",
        labels: &["scenario", "symptom", "state"],
        help: "Instances of a symptom in each state (a whole-target symptom: 1 for its state); only symptoms opted in with metrics.per_symptom.",
    },
    Family {
        name: "medic_open_incidents",
        kind: Kind::Gauge,
        unit: "",
        labels: &["scenario", "state"],
        help: "Incidents not yet resolved, by scenario and incident state.",
    },
    Family {
        name: "medic_actions_total",
        kind: Kind::Counter,
        unit: "",
        labels: &["action", "outcome"],
        help: "Remediation attempts ended, by action kind and outcome.",
    },
    Family {
        name: "medic_budget_remaining_attempts",
        kind: Kind::Gauge,
        unit: "attempts",
        labels: &["scenario", "step"],
        help: "Attempts a step may still make in its limit window (per-series scenarios: the instance with the fewest left).",
    },
    Family {
        name: "medic_notifications_total",
        kind: Kind::Counter,
        unit: "",
        labels: &["notifier", "result"],
        help: "Notifications sent, by notifier and result (success, failure).",
    },
    Family {
        name: "medic_notification_duration_seconds",
        kind: Kind::Histogram,
        unit: "seconds",
        labels: &["notifier"],
        help: "How long sending a notification took, by notifier.",
    },
    Family {
        name: "medic_is_leader",
        kind: Kind::Gauge,
        unit: "",
        labels: &[],
        help: "1 when this replica is the leader, else 0.",
    },
    Family {
        name: "medic_leader_term",
        kind: Kind::Gauge,
        unit: "",
        labels: &[],
        help: "The leadership term this replica holds (0: none).",
    },
    Family {
        name: "medic_leadership_transitions_total",
        kind: Kind::Counter,
        unit: "",
        labels: &[],
        help: "Times this replica became leader.",
    },
    Family {
        name: "medic_fenced_writes_total",
        kind: Kind::Counter,
        unit: "",
        labels: &[],
        help: "Writes refused because a newer leader exists.",
    },
    Family {
        name: "medic_observer_blind",
        kind: Kind::Gauge,
        unit: "",
        labels: &[],
        help: "1 when this replica cannot share its observations through the store (it counts nobody and acts on nothing), else 0.",
    },
    Family {
        name: "medic_ack_missed_total",
        kind: Kind::Counter,
        unit: "",
        labels: &["scenario"],
        help: "First pages nobody acknowledged within ack_within, by scenario.",
    },
    Family {
        name: "medic_config_last_reload_successful",
        kind: Kind::Gauge,
        unit: "",
        labels: &[],
        help: "Whether the last config and rules load succeeded (1) or not (0).",
    },
    Family {
        name: "medic_config_last_reload_success_timestamp_seconds",
        kind: Kind::Gauge,
        unit: "seconds",
        labels: &[],
        help: "When the config and rules last loaded successfully, in Unix seconds.",
    },
    Family {
        name: "medic_config_reloads_total",
        kind: Kind::Counter,
        unit: "",
        labels: &["result"],
        help: "Config and rules reloads, by result (success, failure).",
    },
];

/// The histogram buckets of every latency (seconds).
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug)]
enum Value {
    Number(f64),
    /// Per bucket (not cumulative), then the sum and the count.
    Histogram {
        counts: [u64; LATENCY_BUCKETS.len()],
        sum: f64,
        count: u64,
    },
}

/// Label values, in the family's label order.
type Series = BTreeMap<Vec<String>, Value>;

/// A set of metric families and their series.
pub struct Registry {
    families: Vec<Mutex<Series>>,
    /// `metrics.per_symptom`: `SCENARIO/SYMPTOM` or `SCENARIO` entries.
    per_symptom: std::sync::RwLock<Vec<String>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            families: FAMILIES.iter().map(|_| Mutex::new(Series::new())).collect(),
            per_symptom: Default::default(),
        }
    }
}

fn key(labels: &[&str]) -> Vec<String> {
    labels.iter().map(|s| s.to_string()).collect()
}

impl Registry {
    fn series(&self, id: Id) -> std::sync::MutexGuard<'_, Series> {
        self.families[id as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, id: Id, labels: &[&str], by: f64) {
        let mut s = self.series(id);
        match s.entry(key(labels)).or_insert(Value::Number(0.0)) {
            Value::Number(v) => *v += by,
            Value::Histogram { .. } => {}
        }
    }

    fn set(&self, id: Id, labels: &[&str], to: f64) {
        self.series(id).insert(key(labels), Value::Number(to));
    }

    fn observe(&self, id: Id, labels: &[&str], v: f64) {
        let mut s = self.series(id);
        let entry = s.entry(key(labels)).or_insert(Value::Histogram {
            counts: [0; LATENCY_BUCKETS.len()],
            sum: 0.0,
            count: 0,
        });
        if let Value::Histogram { counts, sum, count } = entry {
            if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| v <= b) {
                counts[i] += 1;
            }
            *sum += v;
            *count += 1;
        }
    }

    /// Whether `scenario`'s `symptom` opted in to per-symptom series.
    fn detailed(&self, scenario: &str, symptom: &str) -> bool {
        let list = self.per_symptom.read().unwrap_or_else(|p| p.into_inner());
        !list.is_empty()
            && list.iter().any(|e| match e.split_once('/') {
                Some((sc, sy)) => sc == scenario && sy == symptom,
                None => e == scenario,
            })
    }

    fn symptom_counts(&self, scenarios: &[&str], symptoms: &[(&str, &str, [u64; 4])]) {
        let mut totals: BTreeMap<&str, [u64; 4]> = scenarios.iter().map(|s| (*s, [0; 4])).collect();
        let mut detail = Series::new();
        for (scenario, symptom, counts) in symptoms {
            let t = totals.entry(scenario).or_insert([0; 4]);
            for (t, c) in t.iter_mut().zip(counts) {
                *t += c;
            }
            if self.detailed(scenario, symptom) {
                for (state, n) in STATES.iter().zip(counts) {
                    detail.insert(key(&[scenario, symptom, state]), Value::Number(*n as f64));
                }
            }
        }
        *self.series(Id::SymptomState) = detail;
        let mut s = self.series(Id::Symptoms);
        s.clear();
        for (scenario, counts) in totals {
            for (state, n) in STATES.iter().zip(counts) {
                s.insert(key(&[scenario, state]), Value::Number(n as f64));
            }
        }
    }

    fn symptom_moved(&self, scenario: &str, symptom: &str, from: Option<&str>, to: Option<&str>) {
        let detailed = self.detailed(scenario, symptom);
        if let Some(from) = from {
            self.add(Id::Symptoms, &[scenario, from], -1.0);
            if detailed {
                self.add(Id::SymptomState, &[scenario, symptom, from], -1.0);
            }
        }
        if let Some(to) = to {
            self.add(Id::Symptoms, &[scenario, to], 1.0);
            if detailed {
                self.add(Id::SymptomState, &[scenario, symptom, to], 1.0);
            }
        }
    }

    fn get(&self, id: Id, labels: &[&str]) -> Option<f64> {
        match self.series(id).get(&key(labels)) {
            Some(Value::Number(v)) => Some(*v),
            _ => None,
        }
    }

    /// Every family in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        for (f, series) in FAMILIES.iter().zip(&self.families) {
            let series = series.lock().unwrap_or_else(|p| p.into_inner());
            encode_family(&mut out, f, &series, format);
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

fn encode_family(out: &mut String, f: &Family, series: &Series, format: Format) {
    // Writing to a String cannot fail.
    match format {
        Format::Prometheus => {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.prometheus());
        }
        Format::OpenMetrics => {
            let name = f.openmetrics_name();
            let kind = match f.kind {
                Kind::Info => "info",
                k => k.prometheus(),
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            if !f.unit.is_empty() && f.kind != Kind::Counter {
                let _ = writeln!(out, "# UNIT {name} {}", f.unit);
            }
            let _ = writeln!(out, "# HELP {name} {}", escape_help(f.help));
        }
    }
    for (values, v) in series {
        let labels: Vec<(&str, &str)> = f
            .labels
            .iter()
            .copied()
            .zip(values.iter().map(String::as_str))
            .collect();
        match v {
            Value::Number(n) => {
                let _ = writeln!(out, "{}{} {}", f.name, label_set(&labels), number(*n));
            }
            Value::Histogram { counts, sum, count } => {
                let mut cumulative = 0;
                for (b, c) in LATENCY_BUCKETS.iter().zip(counts) {
                    cumulative += c;
                    let le = format!("{b:?}");
                    let mut l = labels.clone();
                    l.push(("le", &le));
                    let _ = writeln!(out, "{}_bucket{} {cumulative}", f.name, label_set(&l));
                }
                let mut l = labels.clone();
                l.push(("le", "+Inf"));
                let _ = writeln!(out, "{}_bucket{} {count}", f.name, label_set(&l));
                let _ = writeln!(out, "{}_sum{} {}", f.name, label_set(&labels), number(*sum));
                let _ = writeln!(out, "{}_count{} {count}", f.name, label_set(&labels));
            }
        }
    }
}

fn label_set(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

fn escape_help(h: &str) -> String {
    h.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value: integers without a fraction, infinities and NaN as the
/// formats spell them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics text, version 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for, as Prometheus's client
    /// libraries choose it: the acceptable media type with the highest
    /// `q` (the first of equals) among OpenMetrics (versions 1.0.0 and
    /// 0.0.1, or none named) and text/plain (0.0.4 or none); anything else,
    /// or no header, is the Prometheus text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let mut best: Option<(f64, Format)> = None;
        for item in accept.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0;
            let mut version = None;
            for p in parts {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.parse().unwrap_or(0.0),
                    "version" => version = Some(v.to_string()),
                    _ => {}
                }
            }
            let format = match (media.as_str(), version.as_deref()) {
                ("application/openmetrics-text", None | Some("1.0.0" | "0.0.1")) => {
                    Format::OpenMetrics
                }
                ("text/plain", None | Some("0.0.4")) | ("text/*" | "*/*", _) => Format::Prometheus,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, format));
            }
        }
        best.map_or(Format::Prometheus, |(_, f)| f)
    }
}

/// The running binary's git commit (`unknown` when built without git).
pub const GIT_COMMIT: &str = env!("MEDIC_GIT_COMMIT");

fn metrics() -> &'static Registry {
    static M: OnceLock<Registry> = OnceLock::new();
    M.get_or_init(|| {
        let r = Registry::default();
        r.set(Id::BuildInfo, &[env!("CARGO_PKG_VERSION"), GIT_COMMIT], 1.0);
        r.set(Id::IsLeader, &[], 0.0);
        r.set(Id::Term, &[], 0.0);
        r.set(Id::Transitions, &[], 0.0);
        r.set(Id::Fenced, &[], 0.0);
        r.set(Id::ObserverBlind, &[], 0.0);
        r
    })
}

/// A check run of kind `check` ended with `outcome` (`ok`, `failing`,
/// `unknown`) after `took`.
pub fn check(scenario: &str, check: &str, outcome: &str, took: Duration) {
    let m = metrics();
    m.add(Id::Checks, &[scenario, check, outcome], 1.0);
    m.observe(Id::CheckDuration, &[scenario, check], took.as_secs_f64());
}

/// Every state a symptom can be in (the `state` values of `medic_symptoms`).
pub const STATES: [&str; 4] = ["ok", "pending", "firing", "clearing"];

/// Which symptoms get per-symptom series (`metrics.per_symptom`:
/// `SCENARIO/SYMPTOM` or `SCENARIO`); the engine's next recount shows them.
pub fn per_symptom(list: &[String]) {
    *metrics()
        .per_symptom
        .write()
        .unwrap_or_else(|p| p.into_inner()) = list.to_vec();
}

/// The whole picture of symptom states, replacing what was there: how many
/// instances of each symptom (scenario, symptom) are in each state, in
/// [`STATES`] order; `scenarios` are every scenario the engine runs (each
/// shown, with zeros when it has no symptom counted).
pub fn symptom_counts(scenarios: &[&str], symptoms: &[(&str, &str, [u64; 4])]) {
    metrics().symptom_counts(scenarios, symptoms);
}

/// An instance of `scenario`'s `symptom` moved from state `from` to `to`
/// (`None`: a new per-series instance appeared, or one went away).
pub fn symptom_moved(scenario: &str, symptom: &str, from: Option<&str>, to: Option<&str>) {
    metrics().symptom_moved(scenario, symptom, from, to);
}

/// A remediation attempt of `action` ended with `outcome`.
pub fn action(action: &str, outcome: &str) {
    metrics().add(Id::Actions, &[action, outcome], 1.0);
}

/// A notification via `notifier` was sent (`ok`) or failed, after `took`.
pub fn notification(notifier: &str, ok: bool, took: Duration) {
    let m = metrics();
    let result = if ok { "success" } else { "failure" };
    m.add(Id::Notifications, &[notifier, result], 1.0);
    m.observe(Id::NotificationDuration, &[notifier], took.as_secs_f64());
}

/// This replica's role: leader of `term`, or a follower (`None`). A
/// follower runs no engine: its symptom series go (they would be the last
/// term's, stale, beside the leader's).
pub fn leadership(term: Option<u64>) {
    metrics().leadership(term);
}

impl Registry {
    fn leadership(&self, term: Option<u64>) {
        let m = self;
        if term.is_none() {
            m.series(Id::Symptoms).clear();
            m.series(Id::SymptomState).clear();
        }
        let was = m.get(Id::IsLeader, &[]) == Some(1.0);
        m.set(Id::IsLeader, &[], f64::from(u8::from(term.is_some())));
        m.set(Id::Term, &[], term.map_or(0.0, |t| t as f64));
        if term.is_some() && !was {
            m.add(Id::Transitions, &[], 1.0);
        }
    }
}

/// A write was refused as fenced.
pub fn fenced_write() {
    metrics().add(Id::Fenced, &[], 1.0);
}

/// Whether this replica is blind as an observer (its observations cannot
/// reach the store).
pub fn observer_blind(blind: bool) {
    metrics().set(Id::ObserverBlind, &[], f64::from(u8::from(blind)));
}

/// A first page of `scenario` was not acknowledged within `ack_within`.
pub fn ack_missed(scenario: &str) {
    metrics().add(Id::AckMissed, &[scenario], 1.0);
}

/// Reload counters: reloads that succeeded and failed, whether the newest
/// load succeeded, and when (Unix seconds) the newest successful one was.
pub fn reloads(succeeded: u64, failed: u64, last_ok: bool, last_success_unix: i64) {
    let m = metrics();
    m.set(Id::ReloadOk, &[], f64::from(u8::from(last_ok)));
    m.set(Id::ReloadTime, &[], last_success_unix as f64);
    m.set(Id::Reloads, &["success"], succeeded as f64);
    m.set(Id::Reloads, &["failure"], failed as f64);
}

/// Open incidents: every scenario in `scenarios` (0 `open` when none) and
/// every open incident (`open`: the scenario and state of each).
pub fn open_incidents<'a>(
    scenarios: &[String],
    open: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let m = metrics();
    let mut s = m.series(Id::OpenIncidents);
    s.clear();
    for scenario in scenarios {
        s.insert(key(&[scenario, "open"]), Value::Number(0.0));
    }
    for (scenario, state) in open {
        if let Value::Number(n) = s
            .entry(key(&[scenario, state]))
            .or_insert(Value::Number(0.0))
        {
            *n += 1.0;
        }
    }
    drop(s);
    // Counters per scenario start at 0, so `rate()` and `increase()` see
    // their first increment.
    for scenario in scenarios {
        m.add(Id::AckMissed, &[scenario], 0.0);
    }
}

/// Attempts each step may still make in its window: the whole picture,
/// replacing what was there (steps of removed scenarios go away).
pub fn budgets<'a>(remaining: impl IntoIterator<Item = (&'a str, &'a str, u32)>) {
    let m = metrics();
    let mut s = m.series(Id::Budget);
    s.clear();
    for (scenario, step, n) in remaining {
        s.insert(key(&[scenario, step]), Value::Number(f64::from(n)));
    }
}

/// Everything, in `format`.
pub fn encode(format: Format) -> String {
    metrics().encode(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Registry {
        let r = Registry::default();
        r.set(Id::BuildInfo, &["0.1.0", "abc"], 1.0);
        r.add(Id::Checks, &["redis", "tcp", "failing"], 1.0);
        r.observe(Id::CheckDuration, &["redis", "tcp"], 0.003);
        r.observe(Id::CheckDuration, &["redis", "tcp"], 20.0);
        r.set(Id::Reloads, &["success"], 2.0);
        r.set(Id::Symptoms, &["a \"quoted\"\\name\n", "ok"], 3.0);
        r
    }

    #[test]
    fn prometheus_text_names_counters_with_total_in_help_and_type() {
        let text = sample().encode(Format::Prometheus);
        assert!(text.contains(
            "# HELP medic_checks_total Check runs ended, by scenario, check kind and outcome (ok, failing, unknown).\n\
             # TYPE medic_checks_total counter\n\
             medic_checks_total{scenario=\"redis\",check=\"tcp\",outcome=\"failing\"} 1\n"
        ));
        assert!(text.contains("# TYPE medic_config_reloads_total counter\n"));
        assert!(text.contains(
            "# TYPE medic_build_info gauge\nmedic_build_info{version=\"0.1.0\",commit=\"abc\"} 1\n"
        ));
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
    }

    #[test]
    fn openmetrics_names_families_without_total_and_ends_with_eof() {
        let text = sample().encode(Format::OpenMetrics);
        assert!(text.contains("# TYPE medic_checks counter\n# HELP medic_checks "));
        assert!(text.contains("\nmedic_checks_total{scenario=\"redis\""));
        assert!(text.contains("# TYPE medic_build info\n"));
        assert!(text.contains(
            "# TYPE medic_check_duration_seconds histogram\n# UNIT medic_check_duration_seconds seconds\n"
        ));
        assert!(text.ends_with("\n# EOF\n"));
    }

    #[test]
    fn histograms_are_cumulative_with_canonical_le() {
        let text = sample().encode(Format::Prometheus);
        let l = "scenario=\"redis\",check=\"tcp\"";
        assert!(text.contains(&format!(
            "medic_check_duration_seconds_bucket{{{l},le=\"0.001\"}} 0\n"
        )));
        assert!(text.contains(&format!(
            "medic_check_duration_seconds_bucket{{{l},le=\"0.005\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "medic_check_duration_seconds_bucket{{{l},le=\"10.0\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "medic_check_duration_seconds_bucket{{{l},le=\"+Inf\"}} 2\n"
        )));
        assert!(text.contains(&format!("medic_check_duration_seconds_sum{{{l}}} 20.003\n")));
        assert!(text.contains(&format!("medic_check_duration_seconds_count{{{l}}} 2\n")));
    }

    #[test]
    fn label_values_are_escaped() {
        let text = sample().encode(Format::Prometheus);
        assert!(
            text.contains(
                "medic_symptoms{scenario=\"a \\\"quoted\\\"\\\\name\\n\",state=\"ok\"} 3\n"
            )
        );
    }

    #[test]
    fn per_symptom_series_only_for_symptoms_that_opted_in() {
        let r = Registry::default();
        *r.per_symptom.write().unwrap() = vec!["db/lag".into(), "cache".into()];
        r.symptom_counts(
            &["db", "cache", "web"],
            &[
                ("db", "lag", [1, 0, 0, 0]),
                ("db", "down", [1, 0, 0, 0]),
                ("cache", "down", [0, 0, 2, 0]),
            ],
        );
        r.symptom_moved("db", "lag", Some("ok"), Some("pending"));
        r.symptom_moved("db", "down", Some("ok"), Some("firing"));
        let text = r.encode(Format::Prometheus);
        let has = |l: &str| text.contains(&format!("\n{l}\n"));
        assert!(has(
            r#"medic_symptom_state{scenario="db",symptom="lag",state="pending"} 1"#
        ));
        assert!(has(
            r#"medic_symptom_state{scenario="db",symptom="lag",state="ok"} 0"#
        ));
        assert!(has(
            r#"medic_symptom_state{scenario="cache",symptom="down",state="firing"} 2"#
        ));
        assert!(
            !text.contains(r#"symptom="down",state="firing"} 1"#),
            "{text}"
        );
        assert!(has(r#"medic_symptoms{scenario="db",state="ok"} 0"#));
        assert!(has(r#"medic_symptoms{scenario="db",state="firing"} 1"#));
        assert!(has(r#"medic_symptoms{scenario="web",state="ok"} 0"#));
    }

    #[test]
    fn a_follower_serves_no_stale_symptom_series() {
        let r = Registry::default();
        *r.per_symptom.write().unwrap() = vec!["db".into()];
        r.leadership(Some(3));
        r.symptom_counts(&["db"], &[("db", "down", [0, 0, 1, 0])]);
        assert!(r.encode(Format::Prometheus).contains("medic_symptoms{"));
        r.leadership(None);
        let text = r.encode(Format::Prometheus);
        assert!(!text.contains("medic_symptoms{"), "{text}");
        assert!(!text.contains("medic_symptom_state{"), "{text}");
        assert!(text.contains("\nmedic_is_leader 0\n"), "{text}");
        assert!(
            text.contains("\nmedic_leadership_transitions_total 1\n"),
            "{text}"
        );
    }

    #[test]
    fn every_family_is_served_even_without_series() {
        let text = Registry::default().encode(Format::Prometheus);
        for f in FAMILIES {
            assert!(text.contains(&format!("# TYPE {} ", f.name)), "{}", f.name);
        }
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for f in FAMILIES {
            assert!(f.name.starts_with("medic_"), "{}", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
            assert_eq!(
                f.kind == Kind::Info,
                f.name.ends_with("_info"),
                "{}",
                f.name
            );
            if !f.unit.is_empty() {
                let base = f.name.strip_suffix("_total").unwrap_or(f.name);
                assert!(base.ends_with(&format!("_{}", f.unit)), "{}", f.name);
            }
        }
    }

    #[test]
    fn negotiation_follows_accept() {
        use Format::*;
        assert_eq!(Format::negotiate(None), Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Prometheus
        );
        assert_eq!(Format::negotiate(Some("*/*")), Prometheus);
        assert_eq!(Format::negotiate(Some("application/json")), Prometheus);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=1.0.0")),
            OpenMetrics
        );
        // What Prometheus 2.x sends.
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;q=0.5,text/plain;version=0.0.4"
            )),
            Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;version=2.0.0")),
            Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Prometheus
        );
    }

    #[test]
    fn number_spellings() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(-2.0), "-2");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
