//! `medic test`: unit tests for rule files, the way `promtool test rules`
//! tests alerting rules.
//!
//! A test file names rule files, scripts each symptom's check outcomes over
//! time (see [`series`]) and each step's action outcomes, and states what
//! must have happened at given times: which incidents exist and in which
//! state, which steps ran or were refused (and why), which pages went out.
//! Nothing real runs: the real engine, plan executor and pager run on
//! tokio's paused clock with an in-memory store, scripted checks and
//! actions, and notifiers that only record. A day of simulated time takes
//! milliseconds. The format is documented in docs/rules.md ("Writing and
//! testing a rule") and in [`parse`].

pub mod parse;
pub mod series;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::check::Check;
use crate::clock::Clock;
use crate::config::Config;
use crate::diag::{Diagnostic, did_you_mean};
use crate::engine::ScenarioRuntime;
use crate::engine::plan::PlannedStep;
use crate::observe::Outcome;
use crate::page::{Delivered, Notice, Notifier, NotifyError};
use crate::remedy::{Action, ActionContext, ActionResult};
use crate::rules::model::Scenario;
use crate::store::{MemoryStore, prelude::*};
use crate::yaml::Pos;
use parse::{ActionEnd, ActionScript, ExpIncident, ExpPage, ExpStep, TestCase, TestFile};
use series::Value;

/// One failed expectation (or a problem running a test).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// `path:line:col: test "NAME" at T: what` (first line).
    pub headline: String,
    /// Expected vs got, indented.
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.headline)?;
        if !self.detail.is_empty() {
            write!(f, "\n{}", self.detail)?;
        }
        Ok(())
    }
}

/// The outcome of one test file.
#[derive(Debug, Default)]
pub struct FileReport {
    pub path: String,
    /// Problems loading the file, its rules or its config: nothing ran.
    pub errors: Vec<Diagnostic>,
    pub passed: usize,
    /// (test name, its failures)
    pub failed: Vec<(String, Vec<Failure>)>,
}

/// Every test file named by `paths` (files, or directories of `*.yaml` /
/// `*.yml`, not recursed), with `config` as the config unless a file names
/// its own.
pub fn run_paths(paths: &[PathBuf], config: &Path) -> Vec<FileReport> {
    let mut files = Vec::new();
    let mut reports = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|f| {
                            f.is_file() && f.extension().is_some_and(|x| x == "yaml" || x == "yml")
                        })
                        .collect()
                })
                .unwrap_or_default();
            if found.is_empty() {
                reports.push(FileReport {
                    path: p.display().to_string(),
                    errors: vec![Diagnostic::new(
                        p.display().to_string(),
                        0,
                        0,
                        "no test files (*.yaml, *.yml) here",
                    )],
                    ..Default::default()
                });
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    reports.extend(files.iter().map(|f| run_file(f, config)));
    reports
}

/// Loads and runs one test file.
pub fn run_file(path: &Path, default_config: &Path) -> FileReport {
    let mut report = FileReport {
        path: path.display().to_string(),
        ..Default::default()
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            report.errors.push(Diagnostic::new(
                report.path.clone(),
                0,
                0,
                format!("cannot read: {e}"),
            ));
            return report;
        }
    };
    let file = match parse::parse(path, &text) {
        Ok(f) => f,
        Err(d) => {
            report.errors = d;
            return report;
        }
    };
    let config_path = file.config.clone().unwrap_or(default_config.to_path_buf());
    // The environment is left out: a test means the same everywhere.
    let config = match crate::config::load_with_env(&config_path, HashMap::new()) {
        Ok(c) => c,
        Err(d) => {
            report.errors = d.0;
            return report;
        }
    };
    let scenarios = match crate::rules::load_paths(&file.rule_files, &config) {
        Ok(s) => s,
        Err(d) => {
            report.errors = d.0;
            return report;
        }
    };
    for case in &file.tests {
        match run_case(&file, case, &config, &scenarios) {
            Ok(f) if f.is_empty() => report.passed += 1,
            Ok(f) => report.failed.push((case.name.clone(), f)),
            Err(mut d) => report.errors.append(&mut d),
        }
    }
    report
}

/// Where every simulated run starts, so timelines are reproducible.
fn epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_default()
}

/// Finds `key` (`name` or `scenario/name`) among `items(scenario)`.
fn resolve<'a>(
    file: &TestFile,
    at: Pos,
    key: &str,
    what: &str,
    scenarios: &'a [Scenario],
    items: impl Fn(&'a Scenario) -> Vec<&'a str>,
) -> Result<(usize, usize), Diagnostic> {
    let d = |msg: String| Diagnostic::new(file.path.clone(), at.0, at.1, msg);
    let (scenario, name) = match key.split_once('/') {
        Some((s, n)) => (Some(s), n),
        None => (None, key),
    };
    let mut found = Vec::new();
    let mut all = Vec::new();
    for (k, sc) in scenarios.iter().enumerate() {
        if scenario.is_some_and(|s| s != sc.name) {
            continue;
        }
        for (j, n) in items(sc).into_iter().enumerate() {
            all.push(n);
            if n == name {
                found.push((k, j));
            }
        }
    }
    if let Some(s) = scenario
        && !scenarios.iter().any(|sc| sc.name == s)
    {
        let names = scenarios.iter().map(|sc| sc.name.as_str());
        let hint = did_you_mean(s, names).map_or_else(String::new, |h| format!(" ({h})"));
        return Err(d(format!("no scenario {s:?} in the rule files{hint}")));
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] => {
            let hint = did_you_mean(name, all.iter().copied())
                .map_or_else(String::new, |h| format!(" ({h})"));
            Err(d(format!("no {what} {name:?} in the rule files{hint}")))
        }
        many => {
            let names: Vec<&str> = many
                .iter()
                .map(|(k, _)| scenarios[*k].name.as_str())
                .collect();
            Err(d(format!(
                "{what} {name:?} is in several scenarios ({}): write SCENARIO/{name}",
                names.join(", ")
            )))
        }
    }
}

/// A check that replays a series on the simulated clock.
struct ScriptedCheck {
    values: Vec<Value>,
    start: Instant,
    interval: Duration,
}

#[async_trait::async_trait]
impl Check for ScriptedCheck {
    async fn run(&self) -> Outcome {
        let i = (Instant::now()
            .saturating_duration_since(self.start)
            .as_nanos()
            / self.interval.as_nanos().max(1)) as usize;
        let v = self
            .values
            .get(i)
            .or(self.values.last())
            .copied()
            .unwrap_or(Value::Ok);
        match v {
            Value::Ok => Outcome::Ok,
            Value::Fail => Outcome::Failing("scripted: fail".into()),
            Value::Unreachable => Outcome::Unreachable("scripted: unreachable".into()),
            Value::Unknown => Outcome::Unknown("scripted: unknown".into()),
        }
    }
}

/// An action that plays its scripted outcomes, one per attempt (the last
/// repeats).
struct ScriptedAction {
    kind: &'static str,
    script: Vec<ActionScript>,
    runs: AtomicUsize,
    /// The config lets the real action do nothing (no restart method...):
    /// the step is skipped, whatever its script.
    skip: Option<String>,
}

#[async_trait::async_trait]
impl Action for ScriptedAction {
    fn describe(&self) -> String {
        format!("{} (scripted)", self.kind)
    }
    fn inputs(&self) -> serde_json::Value {
        json!({ "scripted": true })
    }
    fn skip(&self) -> Option<String> {
        self.skip.clone()
    }
    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        let s = self
            .script
            .get(n)
            .or(self.script.last())
            .copied()
            .unwrap_or(ActionScript {
                end: ActionEnd::Ok,
                after: Duration::ZERO,
            });
        let wait = if s.end == ActionEnd::Timeout {
            ctx.timeout
        } else {
            s.after.min(ctx.timeout)
        };
        tokio::time::sleep(wait).await;
        match s.end {
            ActionEnd::Ok if s.after <= ctx.timeout => ActionResult {
                ok: true,
                detail: "scripted: ok".into(),
                data: json!({}),
            },
            ActionEnd::Fail if s.after <= ctx.timeout => ActionResult {
                ok: false,
                detail: "scripted: fail".into(),
                data: json!({}),
            },
            _ => ActionResult {
                ok: false,
                detail: format!(
                    "scripted: timed out after {}",
                    humantime::format_duration(ctx.timeout)
                ),
                data: json!({ "timed_out": true }),
            },
        }
    }
}

/// A notifier that delivers nothing: the pager's timeline entries are the
/// record of what was paged.
struct Recorder;

#[async_trait::async_trait]
impl Notifier for Recorder {
    async fn send(&self, _notice: &Notice) -> Result<Delivered, NotifyError> {
        Ok(Delivered::default())
    }
}

/// What one incident looked like at one time.
struct Seen {
    scenario: String,
    state: String,
    steps: Vec<(String, String, String)>,
    /// Pages and notices, with their time since detection.
    pages: Vec<(String, Duration)>,
    timeline: Vec<String>,
}

async fn snapshot(store: &MemoryStore) -> Vec<Seen> {
    let mut incidents = store.recent_incidents(usize::MAX).await.unwrap_or_default();
    incidents.reverse();
    let mut out = Vec::new();
    for inc in incidents {
        let steps = store
            .incident_attempts(inc.id)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                let outcome = a.outcome.map_or("in_flight", |o| o.as_str());
                (a.step, outcome.to_string(), a.reason)
            })
            .collect();
        let timeline = store.timeline(inc.id).await.unwrap_or_default();
        let pages = timeline
            .iter()
            .filter(|e| e.kind == "page")
            .map(|e| {
                let via = e.data["notifier"].as_str().unwrap_or("?");
                let what = match e.data["page"].as_str() {
                    Some("resolution") => format!("resolution via {via}"),
                    Some("notice") => format!(
                        "notice {} via {via}",
                        e.data["event"].as_str().unwrap_or("?")
                    ),
                    Some("status") => format!("status {} via {via}", e.data["n"]),
                    _ => format!("level {} via {via}", e.data["level"]),
                };
                (what, (e.at - inc.opened_at).to_std().unwrap_or_default())
            })
            .collect();
        out.push(Seen {
            scenario: inc.scenario,
            state: inc.state.as_str().to_string(),
            steps,
            pages,
            timeline: timeline
                .into_iter()
                .map(|e| format!("{}: {}", e.kind, e.message))
                .collect(),
        });
    }
    out
}

/// Runs one test case: `Err` for problems in the test itself (names that
/// match nothing), `Ok` with the failed expectations.
fn run_case(
    file: &TestFile,
    case: &TestCase,
    config: &Config,
    scenarios: &[Scenario],
) -> Result<Vec<Failure>, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut series: HashMap<(usize, usize), Vec<Value>> = HashMap::new();
    for c in &case.checks {
        match resolve(file, c.at, &c.key, "symptom", scenarios, |sc| {
            sc.symptoms.iter().map(|s| s.name.as_str()).collect()
        }) {
            Ok(kj) => {
                series.insert(kj, c.value.clone());
            }
            Err(d) => errors.push(d),
        }
    }
    let mut scripts: HashMap<(usize, usize), Vec<ActionScript>> = HashMap::new();
    for a in &case.actions {
        match resolve(file, a.at, &a.key, "step", scenarios, |sc| {
            sc.plan.iter().map(|s| s.name.as_str()).collect()
        }) {
            Ok(kj) => {
                scripts.insert(kj, a.value.clone());
            }
            Err(d) => errors.push(d),
        }
    }
    for e in &case.expect {
        for i in &e.incidents {
            if !scenarios.iter().any(|s| s.name == i.scenario) {
                let names = scenarios.iter().map(|s| s.name.as_str());
                let hint = did_you_mean(&i.scenario, names)
                    .map_or_else(String::new, |h| format!(" ({h})"));
                errors.push(Diagnostic::new(
                    file.path.clone(),
                    i.at.0,
                    i.at.1,
                    format!("no scenario {:?} in the rule files{hint}", i.scenario),
                ));
            }
        }
    }
    for d in &case.decisions {
        if let (Some(sc), Some((at, step))) =
            (scenarios.iter().find(|s| s.name == d.scenario), &d.step)
            && !sc.plan.iter().any(|s| s.name == *step)
        {
            let names = sc.plan.iter().map(|s| s.name.as_str());
            let hint = did_you_mean(step, names).map_or_else(String::new, |h| format!(" ({h})"));
            errors.push(Diagnostic::new(
                file.path.clone(),
                at.0,
                at.1,
                format!("scenario {:?} has no step {step:?}{hint}", d.scenario),
            ));
        }
        if !scenarios.iter().any(|s| s.name == d.scenario) {
            let names = scenarios.iter().map(|s| s.name.as_str());
            let hint =
                did_you_mean(&d.scenario, names).map_or_else(String::new, |h| format!(" ({h})"));
            errors.push(Diagnostic::new(
                file.path.clone(),
                d.at.0,
                d.at.1,
                format!("no scenario {:?} in the rule files{hint}", d.scenario),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Err(vec![Diagnostic::new(
                file.path.clone(),
                case.at.0,
                case.at.1,
                format!("cannot start a simulated runtime: {e}"),
            )]);
        }
    };
    let mut config = config.clone();
    config.http = None;
    // A test's series start at 0 for every symptom.
    config.limits.spread_first_checks = false;
    if let Some(m) = case.mode {
        config.mode = m;
    }
    Ok(rt.block_on(simulate(file, case, &config, scenarios, series, scripts)))
}

async fn simulate(
    file: &TestFile,
    case: &TestCase,
    config: &Config,
    scenarios: &[Scenario],
    mut series: HashMap<(usize, usize), Vec<Value>>,
    mut scripts: HashMap<(usize, usize), Vec<ActionScript>>,
) -> Vec<Failure> {
    let start = Instant::now();
    let runtimes = scenarios
        .iter()
        .enumerate()
        .map(|(k, sc)| {
            let checks = (0..sc.symptoms.len())
                .map(|j| {
                    let c: Arc<dyn Check> = Arc::new(ScriptedCheck {
                        values: series.remove(&(k, j)).unwrap_or_else(|| vec![Value::Ok]),
                        start,
                        interval: case.interval,
                    });
                    c
                })
                .collect();
            let steps = sc
                .plan
                .iter()
                .enumerate()
                .map(|(j, st)| PlannedStep {
                    step: st.clone(),
                    action: Arc::new(ScriptedAction {
                        kind: st.action.kind(),
                        script: scripts.remove(&(k, j)).unwrap_or_default(),
                        runs: AtomicUsize::new(0),
                        skip: st.action.unconfigured(config),
                    }),
                })
                .collect();
            Arc::new(ScenarioRuntime {
                scenario: sc.clone(),
                checks,
                steps,
                mode: sc.mode.unwrap_or(config.mode),
            })
        })
        .collect();
    let store = Arc::new(MemoryStore::new());
    let shutdown = CancellationToken::new();
    let notifiers: HashMap<String, Arc<dyn Notifier>> = config
        .notifiers
        .keys()
        .map(|n| (n.clone(), Arc::new(Recorder) as Arc<dyn Notifier>))
        .collect();
    let (pager_tx, pager_rx) = tokio::sync::watch::channel(None);
    let daemon = {
        let (config, store, shutdown) = (config.clone(), store.clone(), shutdown.clone());
        tokio::spawn(async move {
            let options = crate::daemon::RunOptions {
                notifiers: Some(notifiers),
                no_jobs: true,
                pager: Some(pager_tx),
                no_vantage: true,
                ..Default::default()
            };
            crate::daemon::run_with_options(
                &config,
                runtimes,
                0,
                store,
                Clock::tokio(epoch()),
                shutdown,
                options,
            )
            .await
        })
    };
    let mut failures = Vec::new();
    let mut decisions = case.decisions.iter().peekable();
    for e in &case.expect {
        // Decisions due by then are made first, at their time.
        while let Some(d) = decisions.next_if(|d| d.time <= e.time) {
            tokio::time::sleep_until(start + d.time).await;
            if let Err(why) = decide(&store, &pager_rx, d).await {
                failures.push(failure(file, case, d.at, d.time, &why, String::new()));
            }
        }
        // Everything due at `at` has happened once the simulated clock
        // moves past it (it only moves when every task is idle).
        tokio::time::sleep_until(start + e.time + Duration::from_millis(1)).await;
        if daemon.is_finished() {
            failures.push(failure(
                file,
                case,
                e.at,
                e.time,
                "medic stopped early (store failure)",
                String::new(),
            ));
            break;
        }
        let seen = snapshot(&store).await;
        compare(file, case, e, &seen, &mut failures);
    }
    shutdown.cancel();
    let _ = daemon.await;
    failures
}

/// A scripted human decision on the scenario's latest incident.
async fn decide(
    store: &MemoryStore,
    pager: &tokio::sync::watch::Receiver<Option<Arc<crate::page::Pager>>>,
    d: &parse::ScriptedDecision,
) -> Result<(), String> {
    let Some(pager) = pager.borrow().clone() else {
        return Err("no pager to decide through (medic is not leading)".into());
    };
    let incidents = store.recent_incidents(usize::MAX).await.unwrap_or_default();
    let Some(inc) = incidents.iter().find(|i| i.scenario == d.scenario) else {
        return Err(format!(
            "cannot {}: no incident of {} yet",
            d.kind.as_str(),
            d.scenario
        ));
    };
    pager
        .decide(
            inc.id,
            crate::page::Decision {
                kind: d.kind,
                by: d.by.clone(),
                step: d.step.as_ref().map(|(_, s)| s.clone()),
                note: String::new(),
                via: "test".into(),
            },
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot {}: {e}", d.kind.as_str()))
}

fn failure(
    file: &TestFile,
    case: &TestCase,
    at: Pos,
    time: Duration,
    what: &str,
    detail: String,
) -> Failure {
    Failure {
        headline: format!(
            "{}:{}:{}: test {:?} at {}: {what}",
            file.path,
            at.0,
            at.1,
            case.name,
            humantime::format_duration(time)
        ),
        detail,
    }
}

fn compare(
    file: &TestFile,
    case: &TestCase,
    e: &parse::Expect,
    seen: &[Seen],
    out: &mut Vec<Failure>,
) {
    let fail = |at: Pos, what: &str, detail: String| failure(file, case, at, e.time, what, detail);
    let summary = |scenario: &str, state: Option<&str>| match state {
        Some(s) => format!("{scenario} ({s})"),
        None => scenario.to_string(),
    };
    let want: Vec<String> = e
        .incidents
        .iter()
        .map(|i| summary(&i.scenario, i.state.map(|s| s.as_str())))
        .collect();
    let got: Vec<String> = seen
        .iter()
        .map(|s| summary(&s.scenario, Some(&s.state)))
        .collect();
    let same_shape = e.incidents.len() == seen.len()
        && e.incidents.iter().zip(seen).all(|(w, g)| {
            w.scenario == g.scenario && w.state.is_none_or(|s| s.as_str() == g.state)
        });
    if !same_shape {
        let matches = |w: &String, g: &String| {
            g == w || (!w.contains('(') && g.split(" (").next() == Some(w.as_str()))
        };
        out.push(fail(e.at, "incidents differ", diff(&want, &got, matches)));
        return;
    }
    for (n, (w, g)) in e.incidents.iter().zip(seen).enumerate() {
        compare_incident(n + 1, w, g, &fail, out);
    }
}

fn compare_incident(
    n: usize,
    w: &ExpIncident,
    g: &Seen,
    fail: &dyn Fn(Pos, &str, String) -> Failure,
    out: &mut Vec<Failure>,
) {
    let label = format!("incident {n} ({})", w.scenario);
    if let Some((at, steps)) = &w.steps {
        let want: Vec<String> = steps.iter().map(step_text).collect();
        let got: Vec<String> = g
            .steps
            .iter()
            .map(|(s, o, r)| {
                if r.is_empty() {
                    format!("{s}: {o}")
                } else {
                    format!("{s}: {o} ({r})")
                }
            })
            .collect();
        let ok = steps.len() == g.steps.len()
            && steps.iter().zip(&g.steps).all(|(w, g)| step_matches(w, g));
        if !ok {
            let matches = |wt: &String, gt: &String| {
                steps
                    .iter()
                    .zip(&want)
                    .find(|(_, t)| *t == wt)
                    .zip(g.steps.iter().zip(&got).find(|(_, t)| *t == gt))
                    .is_some_and(|((ws, _), (gs, _))| step_matches(ws, gs))
            };
            out.push(fail(
                *at,
                &format!("{label}: steps differ"),
                diff(&want, &got, matches),
            ));
        }
    }
    if let Some((at, pages)) = &w.pages {
        let want: Vec<String> = pages.iter().map(ExpPage::to_string).collect();
        // Times (since detection) are compared when the test gives them.
        let timed = pages.iter().any(|p| p.at.is_some());
        let got: Vec<String> = g
            .pages
            .iter()
            .map(|(what, at)| match timed {
                true => format!("{what} at {}", parse::since(*at)),
                false => what.clone(),
            })
            .collect();
        if want != got {
            out.push(fail(
                *at,
                &format!("{label}: pages differ"),
                diff(&want, &got, |a, b| a == b),
            ));
        }
    }
    if let Some((at, texts)) = &w.timeline {
        let mut rest = g.timeline.iter();
        for t in texts {
            if !rest.any(|line| line.contains(t.as_str())) {
                let mut detail = format!("  missing (in this order): {t:?}\n  timeline:");
                for line in &g.timeline {
                    detail.push_str(&format!("\n    {line}"));
                }
                out.push(fail(*at, &format!("{label}: timeline differs"), detail));
                break;
            }
        }
    }
}

fn outcome_name(o: Option<crate::store::AttemptOutcome>) -> &'static str {
    o.map_or("in_flight", |o| o.as_str())
}

fn step_text(s: &ExpStep) -> String {
    match &s.reason {
        Some(r) => format!("{}: {} ({r})", s.step, outcome_name(s.outcome)),
        None => format!("{}: {}", s.step, outcome_name(s.outcome)),
    }
}

fn step_matches(w: &ExpStep, g: &(String, String, String)) -> bool {
    w.step == g.0
        && outcome_name(w.outcome) == g.1
        && w.reason.as_ref().is_none_or(|r| g.2.contains(r.as_str()))
}

/// A line diff of two short lists: `  ` both, `- ` expected only, `+ ` got
/// only (longest common subsequence under `matches`).
fn diff(want: &[String], got: &[String], matches: impl Fn(&String, &String) -> bool) -> String {
    let (n, m) = (want.len(), got.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if matches(&want[i], &got[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut lines = vec!["  (- expected, + got)".to_string()];
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && matches(&want[i], &got[j]) {
            lines.push(format!("    {}", got[j]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            lines.push(format!("  - {}", want[i]));
            i += 1;
        } else {
            lines.push(format!("  + {}", got[j]));
            j += 1;
        }
    }
    if n == 0 && m == 0 {
        lines.push("    (none)".into());
    }
    lines.join("\n")
}

/// Prints reports the way `medic test` does; returns (passed, failed).
pub fn print(reports: &[FileReport], out: &mut impl std::io::Write) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for r in reports {
        passed += r.passed;
        failed += r.failed.len();
        if !r.errors.is_empty() {
            failed += 1;
            let _ = writeln!(out, "{}: FAILED to load", r.path);
            for d in &r.errors {
                let _ = writeln!(out, "  {d}");
            }
            continue;
        }
        if r.failed.is_empty() {
            let _ = writeln!(out, "{}: {} passed", r.path, r.passed);
            continue;
        }
        let _ = writeln!(
            out,
            "{}: {} passed, {} FAILED",
            r.path,
            r.passed,
            r.failed.len()
        );
        for (_, failures) in &r.failed {
            for f in failures {
                let _ = writeln!(out, "{f}");
            }
        }
    }
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    (passed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_what_differs() {
        let w = vec!["a: succeeded".to_string()];
        let g = vec!["a: failed (x)".to_string(), "a: succeeded (y)".to_string()];
        let d = diff(&w, &g, |w, g| g.starts_with(w.as_str()));
        assert_eq!(
            d,
            "  (- expected, + got)\n  + a: failed (x)\n    a: succeeded (y)"
        );
    }
}
