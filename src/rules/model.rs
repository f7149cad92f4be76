//! The validated form of a scenario rule file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::check::CheckSpec;
use crate::config::Mode;
use crate::duration::Dur;
use crate::remedy::ActionSpec;

/// How bad an incident of a scenario is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Warning,
    Info,
}

impl Severity {
    /// The name as written in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One scenario: one rule file.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Unique name across all rule files.
    pub name: String,
    pub summary: String,
    pub severity: Severity,
    /// Recovery time objective.
    pub rto: Dur,
    /// Recovery point objective, where the scenario can lose data.
    pub rpo: Option<Dur>,
    /// Link to the runbook section this scenario automates.
    pub runbook: Option<String>,
    /// Overrides the global mode for this scenario.
    pub mode: Option<Mode>,
    /// In file order.
    pub symptoms: Vec<Symptom>,
    pub when: When,
    /// Ordered. After a step that failed, the next step runs (a fallback),
    /// or the step its `else` names; after one that worked, the plan is
    /// done, unless the step says `then: continue` (see [`Then`]).
    pub plan: Vec<Step>,
    /// How many incidents of this scenario may run an action at once
    /// (counted from the ledger's attempts in flight). Default 1.
    pub max_acting: u32,
    /// How many observers (replicas) must see a symptom failing before a
    /// step acts on it, unless the symptom says; `None`: a majority of the
    /// live replicas (1 with one replica).
    pub quorum: Option<u32>,
    /// Attempts of the whole scenario, over every instance and step.
    pub limit: ScenarioLimit,
    /// Distinct instances acted on within a window.
    pub blast_radius: BlastWindow,
    /// Name of an escalation policy in the config.
    pub escalation: String,
    /// Scenarios this one replaces where they meet: while this one is
    /// pending or open, they do not act on its targets (and their zones),
    /// and their incidents become its dependents.
    pub supersedes: Vec<String>,
    /// The file it came from.
    pub path: PathBuf,
}

impl Scenario {
    /// The symptom with this name.
    pub fn symptom(&self, name: &str) -> Option<&Symptom> {
        self.symptoms.iter().find(|s| s.name == name)
    }

    /// Config targets its `when` symptoms observe: where its incidents are.
    pub fn observed_targets(&self) -> std::collections::BTreeSet<String> {
        self.when
            .symptoms()
            .iter()
            .filter_map(|n| self.symptom(n)?.check.target().map(str::to_string))
            .collect()
    }

    /// Config targets its plan's steps act on.
    pub fn acted_targets(&self) -> std::collections::BTreeSet<String> {
        self.plan.iter().flat_map(|s| s.action.targets()).collect()
    }
}

/// A named check with timing.
#[derive(Clone, Debug, PartialEq)]
pub struct Symptom {
    pub name: String,
    pub check: CheckSpec,
    /// How often the check runs.
    pub every: Dur,
    /// How long one run may take before it counts as unknown.
    pub timeout: Dur,
    /// How long it must fail before it fires.
    pub for_: Dur,
    /// How long it must be ok before it clears.
    pub clear_for: Dur,
    /// Observers that must see it failing before a step acts on it
    /// (overrides the scenario's `quorum`).
    pub quorum: Option<u32>,
}

/// When a scenario triggers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum When {
    /// Any of these symptoms firing.
    Any(Vec<String>),
    /// All of these symptoms firing.
    All(Vec<String>),
}

impl When {
    /// The symptom names it refers to.
    pub fn symptoms(&self) -> &[String] {
        match self {
            When::Any(v) | When::All(v) => v,
        }
    }
}

/// One step of a remediation plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Unique within the scenario; defaults to `{index}-{action kind}`.
    pub name: String,
    pub action: ActionSpec,
    pub verify: Verify,
    pub limit: Limit,
    /// How long the action itself may run.
    pub timeout: Dur,
    pub approval: Approval,
    /// Overrides the scenario's mode for this step.
    pub mode: Option<Mode>,
    /// What follows this step when it worked.
    pub then: Then,
    /// `else: STEP`: when this step did not work, the plan goes on at
    /// STEP (later in the plan) instead of the next step or its end. A
    /// step named by an `else` is reached only that way: the steps before
    /// it end there (e.g. a restore from backup after a promotion that
    /// could not be done, never after the promotion's follow-ups).
    pub otherwise: Option<String>,
    /// Runs only while one of these symptoms is active (firing or
    /// clearing); otherwise it is skipped, on the timeline, as a step that
    /// did not work. Empty: always. E.g. the monitoring scenario restarts
    /// Prometheus only when Prometheus is the source medic lost, and pages
    /// for a lost Kubernetes API.
    pub only_if: Vec<String>,
    /// What each label's values may be where this step substitutes them
    /// (`label_patterns: { NAME: REGEX }`, a full match); a label without
    /// one keeps to [`crate::remedy::template::DEFAULT_CLASS`].
    pub label_patterns: crate::remedy::template::LabelPatterns,
}

/// What the plan does after a step that worked.
///
/// A chain such as promote → repoint → restart is written as steps with
/// `then: continue`: each follow-up runs only after the step before it
/// *worked*, and when a chained step fails, its follow-ups do not run (a
/// failed promotion must not repoint clients); the incident escalates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Then {
    /// The plan is done: the incident is remediated. A failure of this step
    /// lets the next step run as a fallback.
    #[default]
    Stop,
    /// Run the next step. A failure of this step ends the plan.
    Continue,
}

impl Then {
    /// The name as written in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            Then::Stop => "stop",
            Then::Continue => "continue",
        }
    }
}

/// When a step counts as having worked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verify {
    /// Symptoms that must all clear. Defaults to the scenario's `when` list
    /// (for `then: stop` steps). Empty: the action's own verification is
    /// the step's (the default of `then: continue` steps, e.g. a promotion
    /// checks `pg_is_in_recovery() = false` and a new timeline itself).
    pub clears: Vec<String>,
    /// Deadline after the action finished.
    pub within: Dur,
}

/// Attempt budget of a step, per scenario, step and instance. Kept in the
/// store's ledger, so restarts reset nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// At most this many attempts...
    pub attempts: u32,
    /// ...in any window this long.
    pub per: Dur,
    /// Minimum time between two attempts.
    pub cooldown: Dur,
}

impl Default for Limit {
    fn default() -> Self {
        Limit {
            attempts: 3,
            per: Dur::secs(3600),
            cooldown: Dur::secs(0),
        }
    }
}

/// The attempt budget of a whole scenario: every attempt that executed
/// something, of any step, on any instance, counts. Per-step limits are
/// per instance, so a stream of new label sets (one alert each) would get
/// a fresh budget each; this one they share. Kept in the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScenarioLimit {
    /// At most this many attempts...
    pub attempts: u32,
    /// ...in any window this long.
    pub per: Dur,
}

impl Default for ScenarioLimit {
    fn default() -> Self {
        ScenarioLimit {
            attempts: 10,
            per: Dur::secs(3600),
        }
    }
}

/// The blast radius over time: at most this many distinct instances of a
/// scenario acted on within the window; a new instance beyond them is
/// refused and escalates. The config's `limits.blast_radius` counts
/// instances failing at one moment; this one also catches them one at a
/// time. Counted from the ledger, so restarts reset nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlastWindow {
    pub instances: u32,
    pub per: Dur,
}

impl Default for BlastWindow {
    fn default() -> Self {
        BlastWindow {
            instances: 3,
            per: Dur::secs(600),
        }
    }
}

/// Whether a human must approve a step first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    #[default]
    None,
    /// The incident waits (saying so on its timeline, with Approve / Reject
    /// on its page) until a human decides or the wait times out.
    Required(ApprovalPolicy),
}

impl Approval {
    /// Whether a human must approve.
    pub fn required(&self) -> bool {
        matches!(self, Approval::Required(_))
    }
}

/// How long an approval is waited for, and what then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalPolicy {
    /// `approval_timeout`, default 30m.
    pub timeout: Dur,
    /// `on_timeout`, default `escalate`.
    pub on_timeout: OnTimeout,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        ApprovalPolicy {
            timeout: Dur::secs(1800),
            on_timeout: OnTimeout::Escalate,
        }
    }
}

/// What an approval that nobody gave within its timeout means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// As a rejection: the step does not run; the next step may (fallback).
    Reject,
    /// The plan ends and the incident escalates.
    #[default]
    Escalate,
}
