//! Reading rule-test files, with `path:line:col` for every problem.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;

use super::series::{self, Value};
use crate::config::Mode;
use crate::diag::Diagnostic;
use crate::duration::Dur;
use crate::store::{AttemptOutcome, IncidentState};
use crate::yaml::{self, Cursor, Pos, key_pos, pos, unknown_field};

const FILE_FIELDS: &[&str] = &["rule_files", "config", "tests"];
const TEST_FIELDS: &[&str] = &[
    "name",
    "interval",
    "mode",
    "checks",
    "actions",
    "decisions",
    "expect",
];
const DECISION_FIELDS: &[&str] = &["at", "decide", "scenario", "step", "by"];
const EXPECT_FIELDS: &[&str] = &["at", "incidents"];
const INCIDENT_FIELDS: &[&str] = &["scenario", "state", "steps", "pages", "timeline"];

/// One test file.
#[derive(Clone, Debug)]
pub struct TestFile {
    /// As named on the command line (for messages).
    pub path: String,
    /// Rule files and directories, resolved against the test file.
    pub rule_files: Vec<PathBuf>,
    /// The config, resolved against the test file; default: `--config`.
    pub config: Option<PathBuf>,
    pub tests: Vec<TestCase>,
}

/// One test: inputs over time, and what must have happened when.
#[derive(Clone, Debug)]
pub struct TestCase {
    pub name: String,
    pub at: Pos,
    /// How long one series value lasts.
    pub interval: Duration,
    /// Overrides the config's global mode (scenarios and steps that set
    /// their own keep it, as in production).
    pub mode: Option<Mode>,
    /// `symptom` or `scenario/symptom` → its series.
    pub checks: Vec<Keyed<Vec<Value>>>,
    /// `step` or `scenario/step` → outcome of each attempt (the last repeats).
    pub actions: Vec<Keyed<Vec<ActionScript>>>,
    /// Human decisions at given times, in time order.
    pub decisions: Vec<ScriptedDecision>,
    /// In time order.
    pub expect: Vec<Expect>,
}

/// `{ at: 10m, decide: acknowledge, scenario: NAME, by: alice }`: a human
/// decides on the scenario's latest incident at `at`; `approve` and
/// `reject` may name the `step` (needed when several steps wait).
#[derive(Clone, Debug)]
pub struct ScriptedDecision {
    pub time: Duration,
    pub at: Pos,
    pub kind: crate::page::DecisionKind,
    pub scenario: String,
    /// The step approved or rejected, and where it is written.
    pub step: Option<(Pos, String)>,
    pub by: String,
}

/// A value under a `name` or `scenario/name` key.
#[derive(Clone, Debug)]
pub struct Keyed<T> {
    pub key: String,
    pub at: Pos,
    pub value: T,
}

/// How one scripted attempt ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionEnd {
    Ok,
    Fail,
    /// Runs until the step's timeout.
    Timeout,
}

/// One scripted attempt: `ok`, `fail`, `timeout`, optionally `after 5s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionScript {
    pub end: ActionEnd,
    pub after: Duration,
}

/// What must hold at one time.
#[derive(Clone, Debug)]
pub struct Expect {
    pub time: Duration,
    pub at: Pos,
    /// Every incident so far, oldest first.
    pub incidents: Vec<ExpIncident>,
}

/// One expected incident; unset fields are not checked.
#[derive(Clone, Debug)]
pub struct ExpIncident {
    pub at: Pos,
    pub scenario: String,
    pub state: Option<IncidentState>,
    /// The incident's ledger, in order (exact).
    pub steps: Option<(Pos, Vec<ExpStep>)>,
    /// Pages sent about it, in order (exact).
    pub pages: Option<(Pos, Vec<ExpPage>)>,
    /// Texts that must appear on its timeline, in this order.
    pub timeline: Option<(Pos, Vec<String>)>,
}

/// `STEP: OUTCOME` or `STEP: OUTCOME (TEXT IN THE REASON)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpStep {
    pub step: String,
    /// `None`: `in_flight` (started, not finished).
    pub outcome: Option<AttemptOutcome>,
    pub reason: Option<String>,
}

/// `level N via NOTIFIER`, `resolution via NOTIFIER`, `notice EVENT via
/// NOTIFIER` or `status N via NOTIFIER`, each optionally followed by `at
/// DURATION` (since detection: then the time is checked too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpPage {
    pub what: ExpPageKind,
    pub at: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpPageKind {
    Level(usize, String),
    Resolution(String),
    Notice(String, String),
    Status(u64, String),
}

impl std::fmt::Display for ExpPageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpPageKind::Level(n, via) => write!(f, "level {n} via {via}"),
            ExpPageKind::Resolution(via) => write!(f, "resolution via {via}"),
            ExpPageKind::Notice(event, via) => write!(f, "notice {event} via {via}"),
            ExpPageKind::Status(n, via) => write!(f, "status {n} via {via}"),
        }
    }
}

/// A time since detection as tests write it (`2m30s`, `0s`).
pub fn since(d: Duration) -> String {
    Dur(d).to_string().replace(' ', "")
}

impl std::fmt::Display for ExpPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at {
            Some(at) => write!(f, "{} at {}", self.what, since(at)),
            None => write!(f, "{}", self.what),
        }
    }
}

/// Parses a test file's text; `path` names it and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<TestFile, Vec<Diagnostic>> {
    let origin = path.display().to_string();
    let root = yaml::parse(&origin, text).map_err(|d| vec![d])?;
    let mut cx = Cx(Cursor::new(&origin));
    let dir = path.parent().unwrap_or(Path::new(""));
    let file = cx.file(&root, dir);
    let diags = cx.0.finish();
    match file {
        Some(f) if diags.is_empty() => Ok(f),
        _ => Err(diags),
    }
}

/// The cursor, with this file format's readers on top.
struct Cx<'a>(Cursor<'a>);

impl<'a> Deref for Cx<'a> {
    type Target = Cursor<'a>;
    fn deref(&self) -> &Cursor<'a> {
        &self.0
    }
}

impl DerefMut for Cx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Cx<'_> {
    fn file(&mut self, root: &Node, dir: &Path) -> Option<TestFile> {
        let m = self.mapping(root, "a mapping")?;
        self.unknown_keys(m, FILE_FIELDS);
        let rule_files = self.required(m, "rule_files").and_then(|n| {
            let items = match n {
                Node::Scalar(_) => vec![n],
                other => self.list(other, "rule files")?,
            };
            let mut v = Vec::new();
            for item in items {
                v.push(dir.join(self.string(item)?));
            }
            if v.is_empty() {
                self.err(pos(n), "`rule_files` needs at least one file or directory");
                return None;
            }
            Some(v)
        });
        let config = match self.optional(m, "config") {
            Some(n) => self.string(n).map(|s| Some(dir.join(s))),
            None => Some(None),
        };
        let tests = self.required(m, "tests").and_then(|n| {
            let items = self.list(n, "tests")?;
            if items.is_empty() {
                self.err(pos(n), "`tests` needs at least one test");
            }
            let mut v = Some(Vec::new());
            for (i, item) in items.into_iter().enumerate() {
                let t = self.test(i, item);
                v = v.zip(t).map(|(mut all, t)| {
                    all.push(t);
                    all
                });
            }
            v
        });
        Some(TestFile {
            path: self.origin.to_string(),
            rule_files: rule_files?,
            config: config?,
            tests: tests?,
        })
    }

    fn test(&mut self, index: usize, node: &Node) -> Option<TestCase> {
        let m = self.mapping(node, "a test: a mapping with `expect:`")?;
        self.unknown_keys(m, TEST_FIELDS);
        let name = match self.optional(m, "name") {
            Some(n) => self.string(n),
            None => Some(format!("test {}", index + 1)),
        };
        let interval = match self.optional(m, "interval") {
            Some(n) => self.positive_dur(n, "interval").map(Dur::get),
            None => Some(Duration::from_secs(1)),
        };
        let mode = match self.optional(m, "mode") {
            Some(n) => self
                .choice(
                    n,
                    "mode",
                    &[("enforce", Mode::Enforce), ("dry-run", Mode::DryRun)],
                )
                .map(Some),
            None => Some(None),
        };
        let checks = self.keyed(m, "checks", |cx, n| {
            let s = cx.string(n)?;
            match series::parse(&s) {
                Ok(v) => Some(v),
                Err(e) => {
                    cx.err(pos(n), e);
                    None
                }
            }
        });
        let actions = self.keyed(m, "actions", |cx, n| {
            let items = match n {
                Node::Scalar(_) => vec![n],
                other => cx.list(other, "attempt outcomes")?,
            };
            let mut v = Vec::new();
            for item in items {
                v.push(cx.action(item)?);
            }
            if v.is_empty() {
                cx.err(pos(n), "give at least one outcome: ok, fail or timeout");
                return None;
            }
            Some(v)
        });
        let decisions = match self.optional(m, "decisions") {
            None => Some(Vec::new()),
            Some(n) => self.list(n, "decisions").and_then(|items| {
                let mut v = Some(Vec::new());
                for item in items {
                    let d = self.decision(item);
                    v = v.zip(d).map(|(mut all, d)| {
                        all.push(d);
                        all
                    });
                }
                let mut v = v?;
                v.sort_by_key(|d| d.time);
                Some(v)
            }),
        };
        let expect = self.required(m, "expect").and_then(|n| {
            let items = self.list(n, "expectations")?;
            let mut v = Some(Vec::new());
            for item in items {
                let e = self.expect(item);
                v = v.zip(e).map(|(mut all, e)| {
                    all.push(e);
                    all
                });
            }
            let mut v = v?;
            v.sort_by_key(|e| e.time);
            Some(v)
        });
        Some(TestCase {
            name: name?,
            at: pos(node),
            interval: interval?,
            mode: mode?,
            checks: checks?,
            actions: actions?,
            decisions: decisions?,
            expect: expect?,
        })
    }

    fn decision(&mut self, node: &Node) -> Option<ScriptedDecision> {
        let m = self.mapping(
            node,
            "a decision: `{ at: DURATION, decide: acknowledge, scenario: NAME }`",
        )?;
        self.unknown_keys(m, DECISION_FIELDS);
        let time = self
            .required(m, "at")
            .and_then(|n| self.dur(n))
            .map(Dur::get);
        let kind = self.required(m, "decide").and_then(|n| {
            let s = self.string(n)?;
            match crate::page::DecisionKind::parse(&s) {
                Some(k) => Some(k),
                None => {
                    self.err(
                        pos(n),
                        unknown_field("decision", &s, crate::page::DecisionKind::ALL),
                    );
                    None
                }
            }
        });
        let scenario = self.required(m, "scenario").and_then(|n| self.string(n));
        let step = match self.optional(m, "step") {
            Some(n) => {
                let name = self.string(n);
                if let (Some(k), Some(_)) = (kind, &name)
                    && !matches!(
                        k,
                        crate::page::DecisionKind::Approve | crate::page::DecisionKind::Reject
                    )
                {
                    self.err(
                        pos(n),
                        format!("only approve and reject name a step, not {}", k.as_str()),
                    );
                }
                name.map(|s| Some((pos(n), s)))
            }
            None => Some(None),
        };
        let by = match self.optional(m, "by") {
            Some(n) => self.string(n),
            None => Some("on-call".to_string()),
        };
        Some(ScriptedDecision {
            time: time?,
            at: pos(node),
            kind: kind?,
            scenario: scenario?,
            step: step?,
            by: by?,
        })
    }

    /// A mapping of names to values parsed by `f`; absent is empty.
    fn keyed<T>(
        &mut self,
        m: &MarkedMappingNode,
        key: &str,
        mut f: impl FnMut(&mut Self, &Node) -> Option<T>,
    ) -> Option<Vec<Keyed<T>>> {
        let Some(node) = self.optional(m, key) else {
            return Some(Vec::new());
        };
        let km = self.mapping(node, &format!("a mapping of names to {key}"))?;
        let mut v = Some(Vec::new());
        for (k, n) in km.iter() {
            let value = f(self, n);
            v = v.zip(value).map(|(mut all, value)| {
                all.push(Keyed {
                    key: k.as_str().to_string(),
                    at: key_pos(k),
                    value,
                });
                all
            });
        }
        v
    }

    fn action(&mut self, node: &Node) -> Option<ActionScript> {
        let s = self.string(node)?;
        let words: Vec<&str> = s.split_whitespace().collect();
        let end = match words.first().copied() {
            Some("ok") => ActionEnd::Ok,
            Some("fail") => ActionEnd::Fail,
            Some("timeout") => ActionEnd::Timeout,
            other => {
                self.err(
                    pos(node),
                    unknown_field(
                        "action outcome",
                        other.unwrap_or(""),
                        &["ok", "fail", "timeout"],
                    ),
                );
                return None;
            }
        };
        let after = match &words[1..] {
            [] => Duration::ZERO,
            ["after", d] => match d.parse::<Dur>() {
                Ok(d) => d.get(),
                Err(e) => {
                    self.err(pos(node), e);
                    return None;
                }
            },
            _ => {
                self.err(
                    pos(node),
                    format!("expected OUTCOME or \"OUTCOME after DURATION\" (e.g. \"ok after 5s\"), found {s:?}"),
                );
                return None;
            }
        };
        Some(ActionScript { end, after })
    }

    fn expect(&mut self, node: &Node) -> Option<Expect> {
        let m = self.mapping(node, "an expectation: `{ at: DURATION, incidents: [...] }`")?;
        self.unknown_keys(m, EXPECT_FIELDS);
        let time = self
            .required(m, "at")
            .and_then(|n| self.dur(n))
            .map(Dur::get);
        let incidents = self.required(m, "incidents").and_then(|n| {
            let items = self.list(n, "incidents")?;
            let mut v = Some(Vec::new());
            for item in items {
                let i = self.incident(item);
                v = v.zip(i).map(|(mut all, i)| {
                    all.push(i);
                    all
                });
            }
            v
        });
        Some(Expect {
            time: time?,
            at: pos(node),
            incidents: incidents?,
        })
    }

    fn incident(&mut self, node: &Node) -> Option<ExpIncident> {
        let m = self.mapping(node, "an incident: `{ scenario: NAME, ... }`")?;
        self.unknown_keys(m, INCIDENT_FIELDS);
        let scenario = self.required(m, "scenario").and_then(|n| self.string(n));
        let state = match self.optional(m, "state") {
            Some(n) => self.string(n).and_then(|s| match IncidentState::parse(&s) {
                Some(st) => Some(Some(st)),
                None => {
                    self.err(
                        pos(n),
                        unknown_field(
                            "state",
                            &s,
                            &[
                                "open",
                                "remediating",
                                "escalated",
                                "acknowledged",
                                "resolved",
                            ],
                        ),
                    );
                    None
                }
            }),
            None => Some(None),
        };
        let steps = match self.optional(m, "steps") {
            Some(n) => self.steps(n).map(|v| Some((pos(n), v))),
            None => Some(None),
        };
        let pages = match self.optional(m, "pages") {
            Some(n) => self.pages(n).map(|v| Some((pos(n), v))),
            None => Some(None),
        };
        let timeline = match self.optional(m, "timeline") {
            Some(n) => {
                let items = self.list(n, "texts")?;
                let mut v = Vec::new();
                for item in items {
                    v.push(self.string(item)?);
                }
                Some(Some((pos(n), v)))
            }
            None => Some(None),
        };
        Some(ExpIncident {
            at: pos(node),
            scenario: scenario?,
            state: state?,
            steps: steps?,
            pages: pages?,
            timeline: timeline?,
        })
    }

    fn steps(&mut self, node: &Node) -> Option<Vec<ExpStep>> {
        let items = self.list(node, "steps (`- STEP: OUTCOME`)")?;
        let mut out = Some(Vec::new());
        for item in items {
            let step = (|| {
                // `{ STEP: OUTCOME }`, or the same as one quoted string.
                let (step, text, v) = match item {
                    Node::Scalar(s) => match s.as_str().split_once(": ") {
                        Some((k, t)) => (k.trim().to_string(), t.to_string(), item),
                        None => {
                            self.err(
                                pos(item),
                                "expected `STEP: OUTCOME` or `STEP: OUTCOME (REASON)`",
                            );
                            return None;
                        }
                    },
                    _ => {
                        let m =
                            self.mapping(item, "`STEP: OUTCOME` or `STEP: OUTCOME (REASON)`")?;
                        let mut it = m.iter();
                        let (k, v) = it.next()?;
                        if let Some((k2, _)) = it.next() {
                            self.err(key_pos(k2), "one step per list item");
                            return None;
                        }
                        (k.as_str().to_string(), self.string(v)?, v)
                    }
                };
                let (word, reason) = match text.split_once('(') {
                    Some((w, r)) => {
                        let Some(r) = r.trim_end().strip_suffix(')') else {
                            self.err(
                                pos(v),
                                "a reason is written in parentheses: `refused (approval required)`",
                            );
                            return None;
                        };
                        (w.trim(), Some(r.trim().to_string()))
                    }
                    None => (text.trim(), None),
                };
                let outcome = match AttemptOutcome::parse(word) {
                    Some(o) => Some(o),
                    None if word == "in_flight" => None,
                    None => {
                        self.err(
                            pos(v),
                            unknown_field(
                                "outcome",
                                word,
                                &[
                                    "succeeded",
                                    "failed",
                                    "timed_out",
                                    "refused",
                                    "dry_run",
                                    "abandoned",
                                    "in_flight",
                                ],
                            ),
                        );
                        return None;
                    }
                };
                Some(ExpStep {
                    step,
                    outcome,
                    reason,
                })
            })();
            out = out.zip(step).map(|(mut all, s)| {
                all.push(s);
                all
            });
        }
        out
    }

    fn pages(&mut self, node: &Node) -> Option<Vec<ExpPage>> {
        let items = self.list(node, "pages (`level N via NOTIFIER`)")?;
        let mut out = Vec::new();
        for item in items {
            let s = self.string(item)?;
            let mut words: Vec<&str> = s.split_whitespace().collect();
            let mut at = None;
            if words.len() >= 2 && words[words.len() - 2] == "at" {
                match words[words.len() - 1].parse::<Dur>() {
                    Ok(d) => at = Some(d.get()),
                    Err(e) => {
                        self.err(pos(item), format!("{s:?}: after `at`: {e}"));
                        return None;
                    }
                }
                words.truncate(words.len() - 2);
            }
            let what = match words.as_slice() {
                ["level", n, "via", via] => match n.parse::<usize>() {
                    Ok(n) if n >= 1 => ExpPageKind::Level(n, via.to_string()),
                    _ => {
                        self.err(pos(item), format!("{n:?} is not a level (1, 2, ...)"));
                        return None;
                    }
                },
                ["status", n, "via", via] => match n.parse::<u64>() {
                    Ok(n) if n >= 1 => ExpPageKind::Status(n, via.to_string()),
                    _ => {
                        self.err(
                            pos(item),
                            format!("{n:?} is not a status update number (1, 2, ...)"),
                        );
                        return None;
                    }
                },
                ["notice", event, "via", via] => {
                    ExpPageKind::Notice(event.to_string(), via.to_string())
                }
                ["resolution", "via", via] => ExpPageKind::Resolution(via.to_string()),
                _ => {
                    self.err(
                        pos(item),
                        format!("expected \"level N via NOTIFIER\", \"notice EVENT via NOTIFIER\", \"status N via NOTIFIER\" or \"resolution via NOTIFIER\" (optionally \"... at DURATION\"), found {s:?}"),
                    );
                    return None;
                }
            };
            out.push(ExpPage { what, at });
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        parse(Path::new("t.yaml"), text)
            .unwrap_err()
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn parses_a_full_test() {
        let f = parse(
            Path::new("rules/tests/r.yaml"),
            "rule_files: [../r.yaml]\n\
             tests:\n\
             \x20 - name: n\n\
             \x20   interval: 10s\n\
             \x20   mode: enforce\n\
             \x20   checks: { down: fail x3 ok }\n\
             \x20   actions: { restart: [fail, ok after 2s] }\n\
             \x20   expect:\n\
             \x20     - at: 1m\n\
             \x20       incidents:\n\
             \x20         - scenario: r\n\
             \x20           state: resolved\n\
             \x20           steps: [{ restart: failed }, { restart: \"refused (approval required)\" }]\n\
             \x20           pages: [level 1 via log, resolution via log]\n\
             \x20     - at: 5s\n\
             \x20       incidents: []\n",
        )
        .unwrap();
        assert_eq!(f.rule_files, vec![PathBuf::from("rules/tests/../r.yaml")]);
        let t = &f.tests[0];
        assert_eq!(t.interval, Duration::from_secs(10));
        assert_eq!(t.checks[0].value.len(), 4);
        assert_eq!(
            t.actions[0].value[1],
            ActionScript {
                end: ActionEnd::Ok,
                after: Duration::from_secs(2)
            }
        );
        assert_eq!(t.expect[0].time, Duration::from_secs(5), "sorted by time");
        let inc = &t.expect[1].incidents[0];
        let steps = &inc.steps.as_ref().unwrap().1;
        assert_eq!(steps[1].outcome, Some(AttemptOutcome::Refused));
        assert_eq!(steps[1].reason.as_deref(), Some("approval required"));
        assert_eq!(
            inc.pages.as_ref().unwrap().1,
            vec![
                ExpPage {
                    what: ExpPageKind::Level(1, "log".into()),
                    at: None
                },
                ExpPage {
                    what: ExpPageKind::Resolution("log".into()),
                    at: None
                }
            ]
        );
    }

    #[test]
    fn every_problem_has_a_position() {
        assert_eq!(
            errs(
                "rule_files: [a.yaml]\ntests:\n  - checks: { down: fial x3 }\n    expect: [{ at: 5, incidents: [{ scenario: x, state: gone, steps: [{ s: winning }], pages: [level one via log] }] }]\n    colour: red\n"
            ),
            vec![
                "t.yaml:3:21: unknown outcome \"fial\" in series (expected ok, fail, unreachable or unknown, each optionally followed by xN)",
                "t.yaml:4:20: duration \"5\" has no unit (write e.g. \"5s\", \"5m\" or \"5ms\")",
                "t.yaml:4:57: unknown state \"gone\" (expected one of: open, remediating, escalated, acknowledged, resolved)",
                "t.yaml:4:76: unknown outcome \"winning\" (expected one of: succeeded, failed, timed_out, refused, dry_run, abandoned, in_flight)",
                "t.yaml:4:96: \"one\" is not a level (1, 2, ...)",
                "t.yaml:5:5: unknown field \"colour\" (expected one of: name, interval, mode, checks, actions, decisions, expect)",
            ]
        );
        assert_eq!(
            errs("tests: []\n"),
            vec![
                "t.yaml:1:1: missing field \"rule_files\"",
                "t.yaml:1:8: `tests` needs at least one test"
            ]
        );
    }
}
