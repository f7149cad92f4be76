//! What was observed: the one vocabulary checks, the engine, the plan
//! executor and actions share.
//!
//! A check run gives an [`Outcome`] (or, per series, an [`Observation`] of
//! [`Series`] keyed by their [`Labels`]). The engine folds outcomes into a
//! symptom's [`Phase`], remembering only what it last [`Seen`]; the plan
//! executor reads a [`SymptomView`] of each symptom, and actions read a
//! [`SymptomObservation`] (the view with the target the check observes).
//! A leaf: it imports no other module of medic.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::time::Instant;

/// The result of one check run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    /// The target looks healthy.
    Ok,
    /// The target is broken; the detail says how.
    Failing(String),
    /// The target stopped answering (a timeout, dropped packets, no
    /// route) while medic's own vantage is healthy; the detail says what
    /// timed out and why medic trusts its vantage. Failing for every
    /// purpose: symptoms fire on it, incidents open, promotion gates count
    /// it. A check reports it as a *candidate*; the engine's vantage
    /// judgement keeps it or turns it into [`Outcome::Unknown`] when medic
    /// itself is blind.
    Unreachable(String),
    /// medic could not observe; the detail says why. Never triggers action.
    Unknown(String),
}

impl Outcome {
    /// `ok`, `failing`, `unreachable` or `unknown` (metric label, timeline
    /// kind).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failing(_) => "failing",
            Outcome::Unreachable(_) => "unreachable",
            Outcome::Unknown(_) => "unknown",
        }
    }

    /// Whether it counts as failing (fires symptoms, opens incidents,
    /// counts for promotion gates): failing or unreachable.
    pub fn is_failing(&self) -> bool {
        matches!(self, Outcome::Failing(_) | Outcome::Unreachable(_))
    }

    /// The detail (empty for ok).
    pub fn detail(&self) -> &str {
        match self {
            Outcome::Ok => "",
            Outcome::Failing(d) | Outcome::Unreachable(d) | Outcome::Unknown(d) => d,
        }
    }
}

/// Whether an outcome kind ([`Outcome::label`], as shared between
/// replicas) says the target is broken: `failing` or `unreachable`, never
/// `unknown`.
pub fn kind_is_failing(kind: &str) -> bool {
    matches!(kind, "failing" | "unreachable")
}

/// The objective view of one symptom instance: how many observers (medic
/// replicas with a fresh observation of it) see it failing, against the
/// quorum acting on it needs. One replica's own view is subjective (Redis
/// Sentinel's SDOWN); a quorum of them is objective (ODOWN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct QuorumView {
    /// Observers whose latest fresh observation is failing (or unreachable).
    pub failing: u32,
    /// Observers with a fresh observation, whatever it says.
    pub observers: u32,
    /// How many must see it failing.
    pub need: u32,
    /// This replica cannot reach the store: it counts nobody, itself
    /// included, and acts on nothing.
    pub blind: bool,
}

impl QuorumView {
    /// Enough observers see it failing (and this replica can count them).
    pub fn met(&self) -> bool {
        !self.blind && self.failing >= self.need
    }

    /// `failing on 1 of 3 observers, quorum 2` (the timeline's words).
    pub fn describe(&self) -> String {
        if self.blind {
            format!(
                "blind: this replica cannot reach the store, so it counts no observer (quorum {})",
                self.need
            )
        } else {
            format!(
                "failing on {} of {} observers, quorum {}",
                self.failing, self.observers, self.need
            )
        }
    }
}

/// A series' labels, sorted by name: what keys a per-series symptom
/// instance (and its incident), and what `${labels.NAME}` reads in a plan.
pub type Labels = BTreeMap<String, String>;

/// A sample value in JSON: a number when finite, else `"+Inf"`, `"-Inf"`
/// or `"NaN"` (JSON has no such numbers; serde_json would write `null` for
/// all three).
pub fn sample_value<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_nan() {
        s.serialize_str("NaN")
    } else if *v == f64::INFINITY {
        s.serialize_str("+Inf")
    } else if *v == f64::NEG_INFINITY {
        s.serialize_str("-Inf")
    } else {
        s.serialize_f64(*v)
    }
}

/// One series a per-series check found failing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Series {
    pub labels: Labels,
    /// The sample's value (in JSON, ±Inf and NaN as the strings
    /// Prometheus's HTTP API writes: `"+Inf"`, `"-Inf"`, `"NaN"`).
    #[serde(serialize_with = "sample_value")]
    pub value: f64,
    /// Why it counts as failing, for humans.
    pub detail: String,
}

/// What one run of a check saw: one outcome for the whole target, or (for
/// checks over many series: `promql`, `scrape`, `alert`) every series that
/// is failing now. A series not listed is ok; `Whole(Unknown)` from a
/// per-series check means every instance is unknown (medic is blind).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Observation {
    Whole(Outcome),
    Series(Vec<Series>),
}

impl Observation {
    /// [`Observation::outcome`], by value (no clone for `Whole`).
    pub fn into_outcome(self) -> Outcome {
        match self {
            Observation::Whole(o) => o,
            other => other.outcome(),
        }
    }

    /// The observation folded into one outcome: failing if any series is.
    pub fn outcome(&self) -> Outcome {
        match self {
            Observation::Whole(o) => o.clone(),
            Observation::Series(s) if s.is_empty() => Outcome::Ok,
            Observation::Series(s) => Outcome::Failing(
                s.iter()
                    .map(|s| s.detail.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        }
    }
}

/// Canonical text of a label set (`{a="1",b="2"}`; empty for none): the
/// incident instance of a per-series symptom.
pub fn labels_key(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// The labels of a [`labels_key`] text, back (`None` when it is not one):
/// how medic recovers an open incident's labels after a restart.
pub fn parse_labels_key(key: &str) -> Option<Labels> {
    let mut labels = Labels::new();
    if key.is_empty() {
        return Some(labels);
    }
    let mut rest = key.strip_prefix('{')?.strip_suffix('}')?;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        // The value is a JSON string: find its end by decoding a prefix.
        let mut de = serde_json::Deserializer::from_str(after).into_iter::<String>();
        let value = de.next()?.ok()?;
        let used = de.byte_offset();
        labels.insert(name.to_string(), value);
        rest = &after[used..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.is_empty() {
            return None;
        }
    }
    Some(labels)
}

/// Alertmanager's own fingerprint of a label set (Prometheus
/// `model.LabelSet.Fingerprint`: FNV-1a 64 over the sorted names and
/// values, each followed by a 0xff byte), as 16 hex digits. Computed rather
/// than read, so payloads without `fingerprint` key the same way.
pub fn fingerprint(labels: &Labels) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(&[0xff]);
        add(v.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

/// Where a symptom is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Healthy (or never seen failing).
    Ok,
    /// Failing, but not yet for `for`.
    Pending,
    /// Failing for at least `for`.
    Firing,
    /// Was firing, now ok, but not yet for `clear_for`.
    Clearing,
}

impl Phase {
    /// The name shown on timelines and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Ok => "ok",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
            Phase::Clearing => "clearing",
        }
    }

    /// Firing or clearing: the symptom counts towards its scenario.
    pub fn is_active(self) -> bool {
        matches!(self, Phase::Firing | Phase::Clearing)
    }
}

/// What the last observation was, without its detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Seen {
    /// Nothing observed yet.
    Nothing,
    Ok,
    /// Failing or unreachable.
    Failing,
    Unknown,
}

impl Seen {
    /// The target was seen broken (failing or unreachable; never unknown).
    pub fn is_failing(self) -> bool {
        matches!(self, Seen::Failing)
    }
}

impl From<&Outcome> for Seen {
    fn from(o: &Outcome) -> Self {
        match o {
            Outcome::Ok => Seen::Ok,
            // Unreachable is failing for the symptom machine and for
            // streaks ("unreachable for N checks over T").
            Outcome::Failing(_) | Outcome::Unreachable(_) => Seen::Failing,
            Outcome::Unknown(_) => Seen::Unknown,
        }
    }
}

/// What the plan executor can see of one symptom: its phase and the
/// streak of its last observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymptomView {
    pub phase: Phase,
    /// The last observation (without its detail).
    pub seen: Seen,
    /// How many consecutive observations were `seen`, the last included
    /// (0 before any).
    pub streak: u32,
    /// When the first of them was due.
    pub streak_since: Option<Instant>,
    /// When the target was last heard well: the arrival of the ok
    /// observation right before this streak, else the streak's start.
    /// A failing streak's silence is counted from here ("unanswered for T
    /// since its last answer", as Sentinel's down-after).
    pub quiet_since: Option<Instant>,
}

impl SymptomView {
    /// A view with no streak (nothing observed since medic started).
    pub fn new(phase: Phase, seen: Seen) -> Self {
        SymptomView {
            phase,
            seen,
            streak: 0,
            streak_since: None,
            quiet_since: None,
        }
    }
}

/// What the engine saw of one symptom of the scenario, with the target its
/// check observes: how actions such as a promotion learn "the primary has
/// been unreachable for N checks over T" without probing it themselves.
#[derive(Clone, Debug, PartialEq)]
pub struct SymptomObservation {
    pub symptom: String,
    /// The config target the symptom's check observes, if it names one.
    pub target: Option<String>,
    /// The check's kind (`postgres`, `redis`, ...).
    pub check: &'static str,
    pub view: SymptomView,
    /// The objective view (every replica's fresh observations), when the
    /// plan counted it; `None` when it was not asked.
    pub quorum: Option<QuorumView>,
}

impl SymptomObservation {
    /// For ledgers and timelines: the view with its streak's age.
    pub fn to_json(&self) -> serde_json::Value {
        let now = tokio::time::Instant::now();
        let age = self
            .view
            .streak_since
            .map(|t| now.saturating_duration_since(t).as_secs_f64());
        let quiet = self
            .view
            .quiet_since
            .map(|t| now.saturating_duration_since(t).as_secs_f64());
        serde_json::json!({
            "symptom": self.symptom,
            "target": self.target,
            "check": self.check,
            "phase": self.view.phase,
            "seen": self.view.seen,
            "streak": self.view.streak,
            "streak_secs": age,
            "quiet_secs": quiet,
            "quorum": self.quorum,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_key_is_canonical_and_quoted() {
        let l: Labels = [("job", "api"), ("deployment", "a\"b")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(labels_key(&l), r#"{deployment="a\"b",job="api"}"#);
        assert_eq!(labels_key(&Labels::new()), "");
        assert_eq!(parse_labels_key(&labels_key(&l)), Some(l));
        assert_eq!(parse_labels_key(""), Some(Labels::new()));
        let tricky: Labels = [("a", "x,y=\"}z"), ("b", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(parse_labels_key(&labels_key(&tricky)), Some(tricky));
        assert_eq!(parse_labels_key("{a=1}"), None);
    }

    #[test]
    fn fingerprint_is_alertmanagers() {
        // Empty set: FNV-1a's offset basis, as in prometheus/common.
        assert_eq!(fingerprint(&Labels::new()), "cbf29ce484222325");
        let l: Labels = [("alertname", "Fire"), ("severity", "critical")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // prometheus/common's LabelsToSignature test vector.
        let vector: Labels = [("name", "garland, briggs"), ("fear", "love is not enough")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            fingerprint(&vector),
            format!("{:016x}", 5_799_056_148_416_392_346u64)
        );
        let mut other = l.clone();
        other.insert("severity".into(), "warning".into());
        assert_ne!(fingerprint(&l), fingerprint(&other));
    }

    #[test]
    fn infinities_and_nan_are_json_strings_as_prometheus_writes_them() {
        // Regression (issue 18): `medic probe --json` printed +Inf and -Inf
        // both as `null`.
        let json = |value: f64| {
            serde_json::to_value(Series {
                labels: Labels::new(),
                value,
                detail: String::new(),
            })
            .unwrap()["value"]
                .clone()
        };
        assert_eq!(json(f64::INFINITY), "+Inf");
        assert_eq!(json(f64::NEG_INFINITY), "-Inf");
        assert_eq!(json(f64::NAN), "NaN");
        assert_eq!(json(1.5), 1.5);
    }

    #[test]
    fn series_fold_into_one_outcome() {
        assert_eq!(Observation::Series(vec![]).outcome(), Outcome::Ok);
        let s = Series {
            labels: Labels::new(),
            value: 2.0,
            detail: "x = 2".into(),
        };
        assert_eq!(
            Observation::Series(vec![s.clone(), s]).outcome(),
            Outcome::Failing("x = 2; x = 2".into())
        );
    }
}
