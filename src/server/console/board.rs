//! What the console shows of every symptom: fed by this replica's check
//! loops (the daemon records each observation here as it hands it to the
//! engine), folded with the engine's own state machine
//! ([`crate::engine::symptom::SymptomState`]) and the symptom's `for` and
//! `clear_for`, so the phase shown is the one the same observations give.
//! Process-wide, like the metrics registry ([`board`]): the check loops
//! and the HTTP server meet here without either knowing the other.
//!
//! It is this replica's view: a follower checks only the symptoms that can
//! act (their quorum), so it shows the others as not observed; the checks'
//! outcomes are recorded as the check gave them, before the engine's
//! vantage judgement may turn a candidate `unreachable` into `unknown`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::engine::ScenarioRuntime;
use crate::engine::symptom::{SymptomState, Timing};
use crate::observe::{Observation, Outcome, Phase, Seen, labels_key};

/// One instance's state: the machine and its last outcome.
#[derive(Clone, Debug)]
struct Inst {
    state: SymptomState,
    last: Outcome,
}

impl Inst {
    fn new(now: Instant) -> Self {
        Inst {
            state: SymptomState::new(now),
            last: Outcome::Unknown("not observed yet".into()),
        }
    }

    fn feed(&mut self, o: Outcome, at: Instant, t: Timing) {
        self.state.update(Seen::from(&o), at, t);
        self.last = o;
    }
}

/// One symptom as scheduled.
#[derive(Clone, Debug)]
struct Row {
    target: Option<String>,
    check: &'static str,
    timing: Timing,
    per_series: bool,
    whole: Inst,
    series: BTreeMap<String, Inst>,
    observed_at: Option<DateTime<Utc>>,
}

/// The state shown: a phase, or unknown (medic cannot see it now).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    /// `ok`, `pending`, `firing`, `clearing` or `unknown`.
    pub state: &'static str,
    /// Why, for humans (the check's detail, or what is not known).
    pub why: String,
}

/// One symptom's row on the overview.
#[derive(Clone, Debug)]
pub struct SymptomRow {
    pub scenario: String,
    pub symptom: String,
    pub target: Option<String>,
    pub check: &'static str,
    pub shown: Shown,
    /// Per-series instances not ok (labels text and their state).
    pub instances: Vec<(String, Shown)>,
    pub observed_at: Option<DateTime<Utc>>,
}

fn shown(i: &Inst) -> Shown {
    match i.state.seen {
        Seen::Nothing => Shown {
            state: if i.state.phase == Phase::Ok {
                "unknown"
            } else {
                i.state.phase.as_str()
            },
            why: "not observed yet on this replica".into(),
        },
        Seen::Unknown => Shown {
            state: "unknown",
            why: format!(
                "cannot observe: {} (last phase {})",
                i.last.detail(),
                i.state.phase.as_str()
            ),
        },
        _ => Shown {
            state: i.state.phase.as_str(),
            why: match &i.last {
                Outcome::Ok => "ok".to_string(),
                o => format!("{}: {}", o.label(), o.detail()),
            },
        },
    }
}

/// How bad a shown state is, for the worst of several.
pub fn rank(state: &str) -> u8 {
    match state {
        "firing" => 4,
        "pending" => 3,
        "clearing" => 2,
        "unknown" => 1,
        _ => 0,
    }
}

/// Every symptom this replica checks, by scenario and symptom name.
#[derive(Default)]
pub struct Board {
    rows: Mutex<BTreeMap<(String, String), Row>>,
}

/// The process's board.
pub fn board() -> &'static Board {
    static BOARD: OnceLock<Board> = OnceLock::new();
    BOARD.get_or_init(Board::default)
}

impl Board {
    fn rows(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Row>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The symptoms checked from now on (a term's start, a reload): new
    /// ones start not observed, kept ones keep their state (their timing
    /// updated), and the rest are dropped.
    pub fn schedule(&self, schedule: &[(usize, Arc<ScenarioRuntime>, usize)]) {
        let now = Instant::now();
        let mut rows = self.rows();
        let mut next = BTreeMap::new();
        for (_, rt, j) in schedule {
            let s = &rt.scenario.symptoms[*j];
            let key = (rt.scenario.name.clone(), s.name.clone());
            let timing = Timing {
                for_: s.for_.get(),
                clear_for: s.clear_for.get(),
            };
            let per_series = rt.checks.get(*j).is_some_and(|c| c.per_series());
            let mut row = rows.remove(&key).unwrap_or_else(|| Row {
                target: None,
                check: "",
                timing,
                per_series,
                whole: Inst::new(now),
                series: BTreeMap::new(),
                observed_at: None,
            });
            row.target = s.check.target().map(str::to_string);
            row.check = s.check.kind();
            row.timing = timing;
            row.per_series = per_series;
            next.insert(key, row);
        }
        *rows = next;
    }

    /// One observation of `scenario`'s `symptom`, due at `due`.
    pub fn record(&self, scenario: &str, symptom: &str, obs: &Observation, due: Instant) {
        let mut rows = self.rows();
        let Some(row) = rows.get_mut(&(scenario.to_string(), symptom.to_string())) else {
            return;
        };
        row.observed_at = Some(Utc::now());
        let t = row.timing;
        if !row.per_series {
            row.whole.feed(obs.outcome(), due, t);
            return;
        }
        match obs {
            // Every instance is unknown (or, oddly, whole-ok / failing).
            Observation::Whole(o) => {
                row.whole.feed(o.clone(), due, t);
                for i in row.series.values_mut() {
                    i.feed(o.clone(), due, t);
                }
            }
            Observation::Series(list) => {
                row.whole.feed(obs.outcome(), due, t);
                let failing: BTreeMap<String, &crate::observe::Series> =
                    list.iter().map(|s| (labels_key(&s.labels), s)).collect();
                for (k, i) in row.series.iter_mut() {
                    if !failing.contains_key(k) {
                        i.feed(Outcome::Ok, due, t);
                    }
                }
                for (k, s) in failing {
                    row.series.entry(k).or_insert_with(|| Inst::new(due)).feed(
                        Outcome::Failing(s.detail.clone()),
                        due,
                        t,
                    );
                }
            }
        }
    }

    /// Every symptom now, by scenario then symptom.
    pub fn snapshot(&self) -> Vec<SymptomRow> {
        self.rows()
            .iter()
            .map(|((scenario, symptom), row)| {
                let instances: Vec<(String, Shown)> = row
                    .series
                    .iter()
                    .map(|(k, i)| (k.clone(), shown(i)))
                    .filter(|(_, s)| s.state != "ok")
                    .collect();
                let mut whole = shown(&row.whole);
                if row.per_series
                    && let Some((_, worst)) = instances.iter().max_by_key(|(_, s)| rank(s.state))
                    && rank(worst.state) > rank(whole.state)
                {
                    whole = Shown {
                        state: worst.state,
                        why: format!("{} of its series not ok", instances.len()),
                    };
                }
                SymptomRow {
                    scenario: scenario.clone(),
                    symptom: symptom.clone(),
                    target: row.target.clone(),
                    check: row.check,
                    shown: whole,
                    instances,
                    observed_at: row.observed_at,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst() -> Inst {
        Inst::new(Instant::now())
    }

    #[test]
    fn states_follow_the_engines_machine_with_why() {
        let t = Timing {
            for_: std::time::Duration::from_secs(10),
            clear_for: std::time::Duration::from_secs(10),
        };
        let mut i = inst();
        assert_eq!(shown(&i).state, "unknown");
        let t0 = Instant::now();
        i.feed(Outcome::Failing("refused".into()), t0, t);
        assert_eq!(
            shown(&i),
            Shown {
                state: "pending",
                why: "failing: refused".into()
            }
        );
        i.feed(
            Outcome::Failing("refused".into()),
            t0 + std::time::Duration::from_secs(10),
            t,
        );
        assert_eq!(shown(&i).state, "firing");
        i.feed(
            Outcome::Unknown("prometheus down".into()),
            t0 + std::time::Duration::from_secs(11),
            t,
        );
        let s = shown(&i);
        assert_eq!(s.state, "unknown");
        assert!(s.why.contains("prometheus down") && s.why.contains("firing"));
        i.feed(Outcome::Ok, t0 + std::time::Duration::from_secs(12), t);
        assert_eq!(shown(&i).state, "clearing");
    }
}
