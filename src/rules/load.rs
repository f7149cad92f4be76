//! Parsing and validating rule files.
//!
//! One YAML file per scenario:
//!
//! ```yaml
//! scenario: redis-cache-failure          # required; unique across files
//! summary: Redis cache unreachable       # required
//! severity: high                         # required: critical | high | warning | info
//! rto: 5m                                # required: recovery time objective
//! rpo: 1h                                # optional: recovery point objective
//! runbook: reference/disaster-recovery-plan.md#3-redis-cache-failure   # optional
//! mode: dry-run                          # optional: enforce | dry-run (overrides config)
//! symptoms:                              # required, at least one
//!   redis_down:                          # name: letters, digits, "-", "_", "."
//!     check: { redis: { target: cache } }   # exactly one kind key (see below)
//!     every: 1s                          # default 10s; how often the check runs
//!     timeout: 1s                        # default min(every, 10s); at most `every`
//!     for: 3s                            # default 0s; failing this long to fire
//!     clear_for: 5s                      # default 0s; ok this long to clear
//!     quorum: 2                          # default: the scenario's; observers that must see it failing
//!   cache_errors:
//!     check: { promql: 'sum(rate(app_cache_errors_total[1m])) > 5' }
//! when: { any: [redis_down, cache_errors] }   # or { all: [...] }; not empty
//! plan:                                  # optional; may be empty
//!   - name: restart-redis                # default "{1-based index}-{action}"
//!     action: exec                       # the action's parameters sit beside it
//!     args: ["docker-compose", "restart", "redis"]
//!     timeout: 30s                       # default 60s
//!     verify: { clears: redis_down, within: 60s }  # default: the `when` symptoms, 5m
//!     limit: { attempts: 2, per: 1h, cooldown: 2m } # default 3 per 1h, no cooldown
//!     approval: required                 # default none
//!     approval_timeout: 30m              # default 30m; then on_timeout:
//!     on_timeout: escalate               # default escalate; or reject (next step)
//!     mode: dry-run                      # optional: overrides the scenario's
//!     then: stop                         # default stop; or continue (see below)
//!     label_patterns: { deployment: '[a-z0-9-]{1,63}' }  # what ${labels.NAME} may be (full match)
//! max_acting: 1                          # default 1: incidents of this scenario acting at once
//! quorum: 2                              # default: a majority of live replicas (1 with one replica)
//! limit: { attempts: 10, per: 1h }       # default: attempts of the whole scenario, all instances
//! blast_radius: { instances: 3, per: 10m }  # default: distinct instances acted on per window
//! escalation: default                    # required: a policy in the config
//! supersedes: [database-failure]         # optional: scenarios this one replaces where they meet
//! ```
//!
//! Plan steps run in order. A step *fails* when its action fails, a guard
//! refuses it, or its `verify` symptoms do not clear in time; it *works*
//! when they do. After a `then: stop` step (the default) that worked, the
//! plan is done; after one that failed, the next step runs as a fallback.
//! After a `then: continue` step that worked, the next step runs (a chain:
//! promote → repoint → restart); after one that failed, the plan ends, so
//! no follow-up runs after a failed promotion. A `then: continue` step
//! verifies by its action's own check unless it has `verify.clears`; it
//! cannot be the last step. When the plan runs out, the escalation policy
//! takes over.
//!
//! Check kinds and their parameters are [`CheckSpec`]'s; action kinds are
//! [`ActionSpec`]'s. Shorthands: `{promql: EXPR}` is `{promql: {query: EXPR}}`
//! and `{alert: NAME}` is `{alert: {matchers: {alertname: NAME}}}`. A key
//! whose value is YAML null (`~`, or nothing) counts as absent.
//!
//! Validation collects every problem in every file, each at the exact
//! `line:col` of the offending key (unknown fields) or value (bad values).
//! Besides the shapes above it checks what a typo would break at 3 a.m.:
//! targets exist in the config and have the right kind, symptom names in
//! `when` and `verify.clears` exist, step and scenario names are unique,
//! regular expressions compile, SQL checks are read-only, quarantines are
//! bounded by `max_rows`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{Node, Span};

use super::model::{
    Approval, ApprovalPolicy, BlastWindow, Limit, OnTimeout, Scenario, ScenarioLimit, Severity,
    Step, Symptom, Then, Verify, When,
};
use super::prometheus::{self, PromRules};
use crate::check::CheckSpec;
use crate::config::refs::Refs;
use crate::config::{Config, Mode};
use crate::diag::{Diagnostic, Diagnostics, did_you_mean};
use crate::duration::Dur;
use crate::remedy::ActionSpec;
use crate::yaml::{
    self, Cursor, Pos, describe, diag, field_pos, is_null, key_pos, pos, unknown_field,
};

const SCENARIO_FIELDS: &[&str] = &[
    "scenario",
    "summary",
    "severity",
    "rto",
    "rpo",
    "runbook",
    "mode",
    "symptoms",
    "when",
    "plan",
    "max_acting",
    "quorum",
    "limit",
    "blast_radius",
    "escalation",
    "supersedes",
];
const SYMPTOM_FIELDS: &[&str] = &[
    "check",
    "from_prometheus_rule",
    "every",
    "timeout",
    "for",
    "clear_for",
    "quorum",
];
const FROM_RULE_FIELDS: &[&str] = &["alert", "group", "as", "source"];
const STEP_FIELDS: &[&str] = &[
    "name",
    "action",
    "timeout",
    "verify",
    "limit",
    "approval",
    "approval_timeout",
    "on_timeout",
    "mode",
    "then",
    "else",
    "only_if",
    "label_patterns",
];
const VERIFY_FIELDS: &[&str] = &["clears", "within"];
const LIMIT_FIELDS: &[&str] = &["attempts", "per", "cooldown"];
const SCENARIO_LIMIT_FIELDS: &[&str] = &["attempts", "per"];
const BLAST_FIELDS: &[&str] = &["instances", "per"];

/// How often a symptom's check runs when `every` is not given.
pub const DEFAULT_EVERY: Dur = Dur::secs(10);
/// The longest default check timeout (the default is `min(every, this)`).
pub const MAX_DEFAULT_TIMEOUT: Dur = Dur::secs(10);
/// How long a step's action may run when `timeout` is not given.
pub const DEFAULT_STEP_TIMEOUT: Dur = Dur::secs(60);
/// How long a step's symptoms have to clear when `verify.within` is not given.
pub const DEFAULT_VERIFY_WITHIN: Dur = Dur::secs(300);

/// Loads every rule file named by `paths` (files, or directories of
/// `*.yaml`/`*.yml`), validated against `config`. Either every scenario, or
/// every problem found in any of them.
///
/// Directories are read in file-name order and not recursed into, so a
/// `tests/` folder of rule tests beside the rules is left alone.
pub fn load_paths(paths: &[PathBuf], config: &Config) -> Result<Vec<Scenario>, Diagnostics> {
    let (scenarios, diags, warnings) = load_paths_warned(paths, Some(config));
    for w in &warnings {
        tracing::warn!("{w}");
    }
    if diags.is_empty() {
        Ok(scenarios)
    } else {
        Err(Diagnostics(diags))
    }
}

/// Parses and validates one rule file's text; `path` names it in errors.
pub fn load_str(path: &str, text: &str, config: &Config) -> Result<Scenario, Diagnostics> {
    let (prom, mut diags) = prometheus_rules(config);
    let loaded = load_one(path, text, Some(config), Some(&prom));
    diags.extend(loaded.diags);
    let loaded = Loaded { diags, ..loaded };
    match loaded.scenario {
        Some(s) if loaded.diags.is_empty() => Ok(s),
        _ => Err(Diagnostics(loaded.diags)),
    }
}

/// Like [`load_paths`], but returns what loaded alongside every problem,
/// and the warnings found (`medic check`).
/// Without a config (it failed to load), references to targets and
/// escalation policies are not checked, so its errors are not repeated
/// as a cascade of rule errors.
pub(crate) fn load_paths_warned(
    paths: &[PathBuf],
    config: Option<&Config>,
) -> (Vec<Scenario>, Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut warnings = Vec::new();
    let (prom, mut diags) = match config {
        Some(c) => {
            let (p, d) = prometheus_rules(c);
            (Some(p), d)
        }
        None => (None, Vec::new()),
    };
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files, &mut diags);
    }
    let mut scenarios = Vec::new();
    // Per scenario loaded: its file, where `supersedes` names sit, where its steps sit.
    let mut meta: Vec<super::overlap::Meta> = Vec::new();
    let mut seen: HashMap<String, (String, Pos)> = HashMap::new();
    for file in files {
        let origin = file.display().to_string();
        let text = match fs::read(&file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    diags.push(diag(&origin, (0, 0), "not valid UTF-8"));
                    continue;
                }
            },
            Err(e) => {
                diags.push(diag(&origin, (0, 0), format!("cannot read: {e}")));
                continue;
            }
        };
        let mut loaded = load_one(&origin, &text, config, prom.as_ref());
        if let Some((name, at)) = &loaded.name {
            if let Some((first, (l, c))) = seen.get(name) {
                loaded.diags.push(diag(
                    &origin,
                    *at,
                    format!("scenario {name:?} is already defined at {first}:{l}:{c}"),
                ));
                loaded.diags.sort_by_key(|d| (d.line, d.col));
            } else {
                seen.insert(name.clone(), (origin.clone(), *at));
            }
        }
        diags.append(&mut loaded.diags);
        warnings.append(&mut loaded.warnings);
        if let Some(s) = loaded.scenario {
            meta.push((origin.clone(), loaded.supersedes, loaded.steps));
            scenarios.push(s);
        }
    }
    super::overlap::across(&scenarios, &meta, config, &mut diags, &mut warnings);
    (scenarios, diags, warnings)
}

/// The config's Prometheus rule files (`prometheus_rules`), validated.
fn prometheus_rules(config: &Config) -> (PromRules, Vec<Diagnostic>) {
    let paths: Vec<PathBuf> = config
        .prometheus_rules
        .iter()
        .map(|p| config.resolve_path(p))
        .collect();
    prometheus::load_paths(&paths)
}

fn collect_files(p: &Path, files: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) {
    let origin = p.display().to_string();
    let meta = match fs::metadata(p) {
        Ok(m) => m,
        Err(e) => {
            diags.push(diag(&origin, (0, 0), format!("cannot read: {e}")));
            return;
        }
    };
    if !meta.is_dir() {
        files.push(p.to_path_buf());
        return;
    }
    let entries = match fs::read_dir(p) {
        Ok(e) => e,
        Err(e) => {
            diags.push(diag(&origin, (0, 0), format!("cannot read: {e}")));
            return;
        }
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    if found.is_empty() {
        diags.push(diag(&origin, (0, 0), "no rule files (*.yaml, *.yml) here"));
    }
    found.sort();
    files.append(&mut found);
}

/// One file's outcome: the scenario if it is valid, its name (for the
/// cross-file uniqueness check, even when the rest is broken) and problems.
struct Loaded {
    scenario: Option<Scenario>,
    name: Option<(String, Pos)>,
    diags: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// Where each `supersedes` name is written (checked across files).
    supersedes: Vec<(String, Pos)>,
    /// Each plan step's position (for warnings across scenarios).
    steps: Vec<Pos>,
}

fn load_one(origin: &str, text: &str, config: Option<&Config>, prom: Option<&PromRules>) -> Loaded {
    let root = match yaml::parse(origin, text) {
        Ok(n) => n,
        Err(d) => {
            return Loaded {
                scenario: None,
                name: None,
                diags: vec![d],
                warnings: Vec::new(),
                supersedes: Vec::new(),
                steps: Vec::new(),
            };
        }
    };
    let mut cx = Cx {
        y: Cursor::new(origin),
        config,
        prom,
    };
    let (scenario, name) = cx.scenario(&root);
    let m = root.as_mapping();
    let supersedes = match m.and_then(|m| m.get_node("supersedes")) {
        Some(n) => cx.names(n).unwrap_or_default(),
        None => Vec::new(),
    };
    let steps = m
        .and_then(|m| m.get_node("plan"))
        .and_then(Node::as_sequence)
        .map(|s| s.iter().map(pos).collect())
        .unwrap_or_default();
    let warnings = std::mem::take(&mut cx.y.warnings);
    let diags = cx.y.finish();
    Loaded {
        scenario: scenario.filter(|_| diags.is_empty()),
        name,
        diags,
        warnings,
        supersedes,
        steps,
    }
}

/// Validation context for one file: the cursor, and what the file is
/// checked against.
struct Cx<'a> {
    y: Cursor<'a>,
    /// `None`: the config did not load; skip reference checks.
    config: Option<&'a Config>,
    /// The config's Prometheus alerting rules (`None` without a config).
    prom: Option<&'a PromRules>,
}

impl<'a> Deref for Cx<'a> {
    type Target = Cursor<'a>;
    fn deref(&self) -> &Cursor<'a> {
        &self.y
    }
}

impl DerefMut for Cx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.y
    }
}

impl<'a> Cx<'a> {
    fn name(&mut self, node: &Node, what: &str) -> Option<String> {
        let s = self.string(node)?;
        if valid_name(&s) {
            Some(s)
        } else {
            self.err(
                pos(node),
                format!("invalid {what} name {s:?}: use letters, digits, \"-\", \"_\" and \".\""),
            );
            None
        }
    }

    fn mode(&mut self, node: &Node) -> Option<Mode> {
        self.choice(
            node,
            "mode",
            &[("enforce", Mode::Enforce), ("dry-run", Mode::DryRun)],
        )
    }

    /// A symptom name or a list of them, each with its position.
    fn names(&mut self, node: &Node) -> Option<Vec<(String, Pos)>> {
        match node {
            Node::Scalar(s) => Some(vec![(s.as_str().to_string(), pos(node))]),
            Node::Sequence(items) => {
                let mut v = Vec::new();
                for item in items.iter() {
                    v.push((self.string(item)?, pos(item)));
                }
                Some(v)
            }
            Node::Mapping(_) => {
                self.err(
                    pos(node),
                    "expected a symptom name or a list of symptom names, found a mapping",
                );
                None
            }
        }
    }

    /// Symptom references must name symptoms of this scenario, once each.
    fn resolve(&mut self, refs: &[(String, Pos)], defined: &[String]) -> bool {
        let mut ok = true;
        let mut seen = HashSet::new();
        for (name, at) in refs {
            if !defined.contains(name) {
                let mut msg = format!("undefined symptom {name:?}");
                if let Some(hint) = did_you_mean(name, defined.iter().map(String::as_str)) {
                    msg = format!("{msg} ({hint})");
                }
                self.err(*at, msg);
                ok = false;
            } else if !seen.insert(name.as_str()) {
                self.err(*at, format!("symptom {name:?} is listed twice"));
                ok = false;
            }
        }
        ok
    }

    fn scenario(&mut self, root: &Node) -> (Option<Scenario>, Option<(String, Pos)>) {
        let Some(m) = self.mapping(root, "a mapping") else {
            return (None, None);
        };
        self.unknown_keys(m, SCENARIO_FIELDS);

        let name_node = self.required(m, "scenario");
        let name = name_node.and_then(|n| self.name(n, "scenario"));
        let named = name.clone().zip(name_node.map(pos));
        let summary = self.required(m, "summary").and_then(|n| self.string(n));
        let severity = self.required(m, "severity").and_then(|n| {
            self.choice(
                n,
                "severity",
                &[
                    ("critical", Severity::Critical),
                    ("high", Severity::High),
                    ("warning", Severity::Warning),
                    ("info", Severity::Info),
                ],
            )
        });
        let rto = self
            .required(m, "rto")
            .and_then(|n| self.positive_dur(n, "rto"));
        let rpo = match self.optional(m, "rpo") {
            Some(n) => self.dur(n).map(Some),
            None => Some(None),
        };
        let runbook = match self.optional(m, "runbook") {
            Some(n) => self.string(n).map(Some),
            None => Some(None),
        };
        let mode = match self.optional(m, "mode") {
            Some(n) => self.mode(n).map(Some),
            None => Some(None),
        };

        let (symptoms, symptom_names) = self.symptoms(m);
        let when = self.when(m, &symptom_names);
        let observed: Option<Vec<String>> = symptoms.as_ref().map(|ss| {
            ss.iter()
                .filter_map(|s| s.check.target().map(str::to_string))
                .collect()
        });
        let plan = self.plan(m, &symptom_names, when.as_ref(), observed.as_deref());
        let max_acting = match self.optional(m, "max_acting") {
            Some(n) => self.count(n, "max_acting"),
            None => Some(1),
        };
        let quorum = match self.optional(m, "quorum") {
            Some(n) => self.count(n, "quorum").map(Some),
            None => Some(None),
        };
        let limit = self.scenario_limit(m);
        let blast_radius = self.blast_window(m);
        let supersedes = match self.optional(m, "supersedes") {
            Some(n) => self.names(n).map(|v| {
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                for (s, at) in v {
                    if name.as_deref() == Some(s.as_str()) {
                        self.err(at, "a scenario cannot supersede itself");
                    } else if !seen.insert(s.clone()) {
                        self.err(at, format!("{s:?} is named twice in supersedes"));
                    } else {
                        out.push(s);
                    }
                }
                out
            }),
            None => Some(Vec::new()),
        };
        let escalation = self
            .required(m, "escalation")
            .and_then(|n| Some((self.string(n)?, pos(n))))
            .and_then(|(policy, at)| {
                if let Some(cfg) = self.config
                    && !cfg.escalation.contains_key(&policy)
                {
                    let known: Vec<&str> = cfg.escalation.keys().map(String::as_str).collect();
                    self.err(at, unknown_field("escalation policy", &policy, &known));
                    return None;
                }
                Some(policy)
            });

        let scenario = (|| {
            Some(Scenario {
                name: name?,
                summary: summary?,
                severity: severity?,
                rto: rto?,
                rpo: rpo?,
                runbook: runbook?,
                mode: mode?,
                symptoms: symptoms?,
                when: when?,
                plan: plan?,
                max_acting: max_acting?,
                quorum: quorum?,
                limit: limit?,
                blast_radius: blast_radius?,
                escalation: escalation?,
                supersedes: supersedes?,
                path: PathBuf::from(self.origin),
            })
        })();
        if let (Some(s), Some(cfg)) = (&scenario, self.config) {
            self.unauthenticated_alerts(m, s, cfg);
        }
        (scenario, named)
    }

    /// A scenario that acts (enforce-mode steps) on what Alertmanager
    /// pushes must not take it from anyone: its `alert` symptoms are
    /// refused unless the intake checks credentials.
    fn unauthenticated_alerts(&mut self, m: &MarkedMappingNode, s: &Scenario, cfg: &Config) {
        if cfg
            .http
            .as_ref()
            .is_some_and(|h| h.intake_is_authenticated())
        {
            return;
        }
        let mode = s.mode.unwrap_or(cfg.mode);
        if !s
            .plan
            .iter()
            .any(|st| st.mode.unwrap_or(mode) == Mode::Enforce)
        {
            return;
        }
        let intake = match cfg.http.as_ref().and_then(|h| h.intake.as_ref()) {
            Some(_) => "is open (http.intake.open)",
            None => "is off (no http.intake)",
        };
        let symptoms = m.get_node("symptoms").and_then(Node::as_mapping);
        for sym in &s.symptoms {
            if !matches!(sym.check, CheckSpec::Alert(_)) {
                continue;
            }
            let at = symptoms
                .and_then(|sm| sm.get_node(&sym.name))
                .map_or((0, 0), pos);
            self.err(
                at,
                format!(
                    "symptom {:?} reads Alertmanager alerts and this scenario runs enforce-mode steps, but the intake {intake}: set http.intake.bearer or http.intake.basic, or run the scenario in dry-run",
                    sym.name
                ),
            );
        }
    }

    /// The symptoms, and every name written (valid or not, so references
    /// to a broken symptom do not cascade into "undefined symptom").
    fn symptoms(&mut self, m: &MarkedMappingNode) -> (Option<Vec<Symptom>>, Vec<String>) {
        let Some(node) = self.required(m, "symptoms") else {
            return (None, Vec::new());
        };
        let Some(sm) = self.mapping(node, "a mapping of symptom names to symptoms") else {
            return (None, Vec::new());
        };
        let names: Vec<String> = sm.keys().map(|k| k.as_str().to_string()).collect();
        if sm.is_empty() {
            self.err(pos(node), "a scenario needs at least one symptom");
            return (None, names);
        }
        let mut out = Some(Vec::new());
        for (k, v) in sm.iter() {
            let s = self.symptom(k, v);
            out = out.zip(s).map(|(mut all, s)| {
                all.push(s);
                all
            });
        }
        (out, names)
    }

    fn symptom(&mut self, key: &MarkedScalarNode, node: &Node) -> Option<Symptom> {
        let name = if valid_name(key.as_str()) {
            Some(key.as_str().to_string())
        } else {
            self.err(
                key_pos(key),
                format!(
                    "invalid symptom name {:?}: use letters, digits, \"-\", \"_\" and \".\"",
                    key.as_str()
                ),
            );
            None
        };
        let m = self.mapping(node, "a symptom: a mapping with `check:`")?;
        self.unknown_keys(m, SYMPTOM_FIELDS);
        let (check, rule_for) = match (
            self.optional(m, "check"),
            self.optional(m, "from_prometheus_rule"),
        ) {
            (Some(c), None) => (self.check(c), None),
            (None, Some(f)) => match self.prometheus_rule_check(f) {
                Some((c, d)) => (Some(c), d),
                None => (None, None),
            },
            (Some(_), Some(f)) => {
                self.err(
                    pos(f),
                    "a symptom takes `check` or `from_prometheus_rule`, not both",
                );
                (None, None)
            }
            (None, None) => (self.required(m, "check").and_then(|n| self.check(n)), None),
        };
        let every = match self.optional(m, "every") {
            Some(n) => self.positive_dur(n, "every"),
            None => Some(DEFAULT_EVERY),
        };
        let timeout = match self.optional(m, "timeout") {
            Some(n) => {
                let t = self.positive_dur(n, "timeout");
                match (t, every) {
                    (Some(t), Some(e)) if t > e => {
                        self.err(
                            pos(n),
                            format!("timeout ({t}) must not be longer than every ({e})"),
                        );
                        None
                    }
                    _ => t,
                }
            }
            None => every.map(|e| e.min(MAX_DEFAULT_TIMEOUT)),
        };
        let for_ = match self.optional(m, "for") {
            Some(n) => self.dur(n),
            None => Some(rule_for.unwrap_or_default()),
        };
        let clear_for = match self.optional(m, "clear_for") {
            Some(n) => self.dur(n),
            None => Some(Dur::default()),
        };
        let quorum = match self.optional(m, "quorum") {
            Some(n) => self.count(n, "quorum").map(Some),
            None => Some(None),
        };
        Some(Symptom {
            name: name?,
            check: check?,
            every: every?,
            timeout: timeout?,
            for_: for_?,
            clear_for: clear_for?,
            quorum: quorum?,
        })
    }

    fn when(&mut self, m: &MarkedMappingNode, defined: &[String]) -> Option<When> {
        let node = self.required(m, "when")?;
        let wm = self.mapping(node, "`{ any: [SYMPTOM, ...] }` or `{ all: [...] }`")?;
        self.unknown_keys(wm, &["any", "all"]);
        let mut found = wm
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "any" | "all"));
        let Some((k, list)) = found.next() else {
            self.err(
                pos(node),
                "`when` needs `any:` or `all:` with symptom names",
            );
            return None;
        };
        if let Some((k2, _)) = found.next() {
            self.err(
                key_pos(k2),
                "`when` takes either `any:` or `all:`, not both",
            );
            return None;
        }
        let refs = if is_null(list) {
            Vec::new()
        } else {
            self.names(list)?
        };
        if refs.is_empty() {
            self.err(pos(list), "`when` needs at least one symptom");
            return None;
        }
        if !self.resolve(&refs, defined) {
            return None;
        }
        let names = refs.into_iter().map(|(n, _)| n).collect();
        Some(if k.as_str() == "any" {
            When::Any(names)
        } else {
            When::All(names)
        })
    }

    /// A whole number of at least 1.
    fn count(&mut self, n: &Node, key: &str) -> Option<u32> {
        let v = self.string(n)?;
        match v.parse::<u32>() {
            Ok(0) => {
                self.err(pos(n), format!("{key} must be at least 1"));
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                self.err(pos(n), format!("expected a whole number, found {v:?}"));
                None
            }
        }
    }

    /// `observed`: the targets the scenario's symptoms check (`None` when
    /// the symptoms are broken, to avoid cascading errors).
    fn plan(
        &mut self,
        m: &MarkedMappingNode,
        defined: &[String],
        when: Option<&When>,
        observed: Option<&[String]>,
    ) -> Option<Vec<Step>> {
        let Some(node) = self.optional(m, "plan") else {
            return Some(Vec::new());
        };
        let Node::Sequence(items) = node else {
            self.err(
                pos(node),
                format!("expected a list of steps, found {}", describe(node)),
            );
            return None;
        };
        let mut steps = Some(Vec::new());
        let mut names: HashMap<String, Pos> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let (step, name) = self.step(i, item, defined, when);
            if let Some((name, at)) = name {
                if let Some((l, c)) = names.get(&name) {
                    self.err(at, format!("step name {name:?} is already used at {l}:{c}"));
                    steps = None;
                } else {
                    names.insert(name, at);
                }
            }
            if let (Some(s), Some(observed)) = (&step, observed)
                && let ActionSpec::PostgresPromoteReplica(r) = &s.action
                && !observed.contains(&r.primary)
            {
                // The "unreachable for N checks over T" gate counts what a
                // symptom of this scenario saw of the primary.
                self.err(
                    field_pos(item, "primary"),
                    format!(
                        "no symptom of this scenario checks the primary {:?}: its unreachable-for gate counts that symptom's failed checks",
                        r.primary
                    ),
                );
                steps = None;
            }
            if i + 1 == items.len()
                && let Some(s) = &step
                && s.then == Then::Continue
            {
                self.err(
                    field_pos(item, "then"),
                    "the last step cannot say `then: continue`: there is no next step",
                );
                steps = None;
            }
            steps = steps.zip(step).map(|(mut all, s)| {
                all.push(s);
                all
            });
        }
        let steps = steps?;
        let mut ok = true;
        for (i, s) in steps.iter().enumerate() {
            let Some(target) = &s.otherwise else { continue };
            let at = field_pos(&items[i], "else");
            match steps.iter().position(|t| t.name == *target) {
                Some(j) if j > i => {
                    if steps[j - 1].then == Then::Continue {
                        self.err(
                            field_pos(&items[j - 1], "then"),
                            format!(
                                "step {:?} says `then: continue`, but the next step {target:?} runs only as the `else` of {:?}",
                                steps[j - 1].name, s.name
                            ),
                        );
                        ok = false;
                    }
                }
                Some(_) => {
                    self.err(
                        at,
                        format!("`else: {target}` must name a later step (a plan never goes back)"),
                    );
                    ok = false;
                }
                None => {
                    let known: Vec<&str> = steps[i + 1..].iter().map(|t| t.name.as_str()).collect();
                    self.err(at, unknown_field("step", target, &known));
                    ok = false;
                }
            }
        }
        ok.then_some(steps)
    }

    /// One step, and its name with where it is written (or the step's start,
    /// for default names), known even when the rest of the step is broken.
    fn step(
        &mut self,
        index: usize,
        node: &Node,
        defined: &[String],
        when: Option<&When>,
    ) -> (Option<Step>, Option<(String, Pos)>) {
        let Some(m) = self.mapping(node, "a step: a mapping with `action:`") else {
            return (None, None);
        };
        let action_node = self.required(m, "action");
        let kind = action_node.and_then(|n| {
            let kind = self.string(n)?;
            if ActionSpec::KINDS.contains(&kind.as_str()) {
                // Refused in a build without the kind's feature; the
                // step is still read, so every other mistake shows too.
                if let Some(why) = ActionSpec::feature(&kind)
                    .and_then(|f| f.missing_for(&format!("action `{kind}`")))
                {
                    self.err(pos(n), why);
                }
                Some(kind)
            } else {
                self.err(pos(n), unknown_field("action", &kind, ActionSpec::KINDS));
                None
            }
        });
        // The action's parameters: every key that is not a step field. The
        // block starts where the step does, for "missing field" errors.
        let (line, col) = yaml::mapping_pos(m);
        let start = marked_yaml::Marker::new(0, 0, line, col);
        let mut params = MarkedMappingNode::new_empty(Span::new_start(start));
        for (k, v) in m.iter() {
            if !STEP_FIELDS.contains(&k.as_str()) {
                params.insert(k.clone(), v.clone());
            }
        }
        let params = Node::Mapping(params);
        if let Some(kind) = &kind {
            self.templates(kind, &params);
        }
        let action = match &kind {
            Some(kind) => self.action(kind, &params),
            None => {
                // Still flag fields no action or step has.
                for k in m.keys() {
                    if !STEP_FIELDS.contains(&k.as_str()) && !ActionSpec::any_field(k.as_str()) {
                        self.err(key_pos(k), unknown_field("field", k.as_str(), STEP_FIELDS));
                    }
                }
                None
            }
        };

        let name = match self.optional(m, "name") {
            Some(n) => self.name(n, "step").map(|s| (s, pos(n))),
            None => kind
                .as_ref()
                .map(|k| (format!("{}-{k}", index + 1), pos(node))),
        };
        let timeout = match self.optional(m, "timeout") {
            Some(n) => self.positive_dur(n, "timeout"),
            None => Some(DEFAULT_STEP_TIMEOUT),
        };
        let then = match self.optional(m, "then") {
            Some(n) => self.choice(
                n,
                "then",
                &[("stop", Then::Stop), ("continue", Then::Continue)],
            ),
            None => Some(Then::Stop),
        };
        let verify = self.verify(m, defined, when, then);
        // Resolved against the other steps' names by `plan`.
        let otherwise = match self.optional(m, "else") {
            Some(n) => self.name(n, "step").map(Some),
            None => Some(None),
        };
        let only_if = match self.optional(m, "only_if") {
            Some(n) => match self.names(n) {
                Some(refs) if refs.is_empty() => {
                    self.err(pos(n), "`only_if` needs at least one symptom");
                    None
                }
                Some(refs) => self
                    .resolve(&refs, defined)
                    .then(|| refs.into_iter().map(|(n, _)| n).collect()),
                None => None,
            },
            None => Some(Vec::new()),
        };
        let label_patterns = self.label_patterns(m);
        let limit = self.limit(m);
        let mut approval = match self.optional(m, "approval") {
            Some(n) => self.choice(
                n,
                "approval",
                &[
                    ("none", Approval::None),
                    ("required", Approval::Required(ApprovalPolicy::default())),
                ],
            ),
            None => Some(Approval::None),
        };
        for field in ["approval_timeout", "on_timeout"] {
            let Some(n) = self.optional(m, field) else {
                continue;
            };
            match &mut approval {
                Some(Approval::Required(policy)) if field == "approval_timeout" => {
                    match self.positive_dur(n, field) {
                        Some(d) => policy.timeout = d,
                        None => approval = None,
                    }
                }
                Some(Approval::Required(policy)) => {
                    match self.choice(
                        n,
                        field,
                        &[
                            ("reject", OnTimeout::Reject),
                            ("escalate", OnTimeout::Escalate),
                        ],
                    ) {
                        Some(t) => policy.on_timeout = t,
                        None => approval = None,
                    }
                }
                Some(Approval::None) => {
                    self.err(pos(n), format!("{field} needs `approval: required`"));
                    approval = None;
                }
                None => {}
            }
        }
        // The last resorts (a restore from backup) only with a human.
        if let (Some(a), Some(ap)) = (&action, &approval)
            && !ap.required()
            && let Some(why) = a.requires_approval()
        {
            let at = self
                .optional(m, "approval")
                .or(action_node)
                .map_or_else(|| pos(node), pos);
            self.err(at, why);
            approval = None;
        }
        let mode = match self.optional(m, "mode") {
            Some(n) => self.mode(n).map(Some),
            None => Some(None),
        };
        let step = (|| {
            Some(Step {
                name: name.clone()?.0,
                action: action?,
                verify: verify?,
                limit: limit?,
                timeout: timeout?,
                approval: approval?,
                mode: mode?,
                then: then?,
                otherwise: otherwise?,
                only_if: only_if?,
                label_patterns: label_patterns?,
            })
        })();
        (step, name)
    }

    fn verify(
        &mut self,
        m: &MarkedMappingNode,
        defined: &[String],
        when: Option<&When>,
        then: Option<Then>,
    ) -> Option<Verify> {
        // A chained step verifies by its action's own check by default.
        let default_clears = || match then {
            Some(Then::Continue) => Some(Vec::new()),
            _ => when.map(|w| w.symptoms().to_vec()),
        };
        let Some(node) = self.optional(m, "verify") else {
            return Some(Verify {
                clears: default_clears()?,
                within: DEFAULT_VERIFY_WITHIN,
            });
        };
        let vm = self.mapping(node, "`{ clears: SYMPTOM, within: DURATION }`")?;
        self.unknown_keys(vm, VERIFY_FIELDS);
        let clears = match self.optional(vm, "clears") {
            Some(n) => {
                let refs = self.names(n);
                match refs {
                    // `clears: []`: the action's own verification, as the
                    // model documents (a `then: continue` step's default).
                    Some(refs) if refs.is_empty() => Some(Vec::new()),
                    Some(refs) => self
                        .resolve(&refs, defined)
                        .then(|| refs.into_iter().map(|(n, _)| n).collect()),
                    None => None,
                }
            }
            None => default_clears(),
        };
        let within = match self.optional(vm, "within") {
            Some(n) => self.positive_dur(n, "within"),
            None => Some(DEFAULT_VERIFY_WITHIN),
        };
        Some(Verify {
            clears: clears?,
            within: within?,
        })
    }

    fn limit(&mut self, m: &MarkedMappingNode) -> Option<Limit> {
        let default = Limit::default();
        let Some(node) = self.optional(m, "limit") else {
            return Some(default);
        };
        let lm = self.mapping(node, "`{ attempts: N, per: DURATION, cooldown: DURATION }`")?;
        self.unknown_keys(lm, LIMIT_FIELDS);
        let attempts = match self.optional(lm, "attempts") {
            Some(n) => {
                let v = self.string(n)?;
                match v.parse::<u32>() {
                    Ok(0) => {
                        self.err(pos(n), "attempts must be at least 1");
                        None
                    }
                    Ok(a) => Some(a),
                    Err(_) => {
                        self.err(pos(n), format!("expected a whole number, found {v:?}"));
                        None
                    }
                }
            }
            None => Some(default.attempts),
        };
        let per = match self.optional(lm, "per") {
            Some(n) => self.positive_dur(n, "per"),
            None => Some(default.per),
        };
        let cooldown = match self.optional(lm, "cooldown") {
            Some(n) => self.dur(n),
            None => Some(default.cooldown),
        };
        Some(Limit {
            attempts: attempts?,
            per: per?,
            cooldown: cooldown?,
        })
    }

    /// `from_prometheus_rule: NAME` (an `alert` check on the alert's name
    /// and its rule's static labels) or `{ alert: NAME, group: G, as:
    /// alert|promql, source: PROM }`: as `promql`, the rule's `expr` is the
    /// query and its `for` the symptom's default `for`.
    fn prometheus_rule_check(&mut self, node: &Node) -> Option<(CheckSpec, Option<Dur>)> {
        let (name, name_at, group, as_promql, source, m) = match node {
            Node::Scalar(s) => (s.as_str().to_string(), pos(node), None, false, None, None),
            Node::Mapping(m) => {
                self.unknown_keys(m, FROM_RULE_FIELDS);
                let n = self.required(m, "alert")?;
                let name = self.string(n)?;
                let group = match self.optional(m, "group") {
                    Some(g) => Some(self.string(g)?),
                    None => None,
                };
                let as_promql = match self.optional(m, "as") {
                    Some(a) => self.choice(a, "`as`", &[("alert", false), ("promql", true)])?,
                    None => false,
                };
                let source = match self.optional(m, "source") {
                    Some(s) => Some(self.string(s)?),
                    None => None,
                };
                (name, pos(n), group, as_promql, source, Some(m))
            }
            Node::Sequence(_) => {
                self.err(
                    pos(node),
                    "expected an alert name or `{ alert: NAME, group: GROUP, as: alert|promql }`, found a list",
                );
                return None;
            }
        };
        // Without a config the rule files are unknown: nothing to check.
        let prom = self.prom?;
        let found = prom.find(&name, group.as_deref());
        if found.is_empty() {
            let msg = match (prom.alerts.is_empty(), &group) {
                (true, _) => format!(
                    "unknown Prometheus alert {name:?} (the config's `prometheus_rules` define no alerts)"
                ),
                (false, Some(g)) => format!("no Prometheus alert {name:?} in group {g:?}"),
                (false, None) => unknown_field("Prometheus alert", &name, &prom.names()),
            };
            self.err(name_at, msg);
            return None;
        }
        if !as_promql {
            if source.is_some() {
                let at = m.and_then(|m| m.keys().find(|k| k.as_str() == "source"));
                self.err(
                    at.map_or(name_at, key_pos),
                    "`source` is for `as: promql` (an alert check reads what Alertmanager pushes)",
                );
                return None;
            }
            // Labels every rule of that name carries alike.
            let mut matchers = found[0].static_labels();
            for r in &found[1..] {
                let other = r.static_labels();
                matchers.retain(|k, v| other.get(k) == Some(v));
            }
            let spec = CheckSpec::Alert(crate::check::alert::AlertParams { matchers });
            return spec
                .validate(&mut self.refs(), node)
                .then_some((spec, None));
        }
        if found.len() > 1 {
            let at: Vec<&str> = found.iter().map(|r| r.at.as_str()).collect();
            self.err(
                name_at,
                format!(
                    "Prometheus alert {name:?} is defined {} times ({}): name its `group:`",
                    found.len(),
                    at.join(", ")
                ),
            );
            return None;
        }
        let rule = found[0];
        let spec = CheckSpec::Promql(crate::check::promql::PromqlParams {
            query: rule.expr.clone(),
            source,
        });
        spec.validate(&mut self.refs(), node)
            .then_some((spec, Some(rule.for_)))
    }

    /// The rule file's cursor with the config, for a kind's validation.
    fn refs(&mut self) -> Refs<'_, 'a> {
        Refs {
            y: &mut self.y,
            config: self.config,
        }
    }

    fn check(&mut self, node: &Node) -> Option<CheckSpec> {
        CheckSpec::parse(&mut self.refs(), node)
    }

    fn action(&mut self, kind: &str, p: &Node) -> Option<ActionSpec> {
        ActionSpec::parse(&mut self.refs(), kind, p, STEP_FIELDS)
    }

    /// Every `${...}` in a step's parameters must be `${labels.NAME}`.
    /// `${labels.NAME}` in a step's parameters: its syntax where the
    /// action expands it, refused anywhere else (a field that does not
    /// expand would take `${...}` literally, or a stranger's value later).
    fn templates(&mut self, action: &str, params: &Node) {
        let Node::Mapping(m) = params else { return };
        let expands = ActionSpec::expands(action);
        for (k, v) in m.iter() {
            if expands.contains(&k.as_str()) {
                self.expanding(v, action, expands);
            } else {
                self.no_templates(v, k.as_str(), action, expands);
            }
        }
    }

    /// An expanding field's value: strings (list items, mapping values)
    /// expand; mapping keys and nested mappings (secret references) do not.
    fn expanding(&mut self, n: &Node, action: &str, expands: &[&str]) {
        match n {
            Node::Scalar(s) => {
                if let Err(e) = crate::remedy::template::check(s.as_str()) {
                    self.err(pos(n), e.to_string());
                }
            }
            Node::Sequence(items) => {
                for v in items.iter() {
                    self.expanding(v, action, expands);
                }
            }
            Node::Mapping(m) => {
                for (k, v) in m.iter() {
                    if k.as_str().contains("${") {
                        self.err(
                            key_pos(k),
                            format!(
                                "a name ({:?}) does not expand `${{labels.NAME}}`: only values do",
                                k.as_str()
                            ),
                        );
                    }
                    match v {
                        Node::Mapping(_) => self.no_templates(v, k.as_str(), action, expands),
                        _ => self.expanding(v, action, expands),
                    }
                }
            }
        }
    }

    fn no_templates(&mut self, n: &Node, field: &str, action: &str, expands: &[&str]) {
        match n {
            Node::Scalar(s) => {
                if s.as_str().contains("${") {
                    let which = if expands.is_empty() {
                        format!("{action} expands no field")
                    } else {
                        format!("{action} expands only {}", expands.join(", "))
                    };
                    self.err(
                        pos(n),
                        format!(
                            "`{field}` does not expand `${{labels.NAME}}` ({which}); a label's value cannot go here"
                        ),
                    );
                }
            }
            Node::Sequence(items) => {
                for v in items.iter() {
                    self.no_templates(v, field, action, expands);
                }
            }
            Node::Mapping(m) => {
                for (k, v) in m.iter() {
                    if k.as_str().contains("${") {
                        self.err(
                            key_pos(k),
                            format!("`{field}`: a name does not expand `${{labels.NAME}}`"),
                        );
                    }
                    self.no_templates(v, field, action, expands);
                }
            }
        }
    }

    /// `label_patterns: { NAME: REGEX }`: each a label name and a regular
    /// expression that compiles.
    fn label_patterns(
        &mut self,
        m: &MarkedMappingNode,
    ) -> Option<crate::remedy::template::LabelPatterns> {
        let mut out = crate::remedy::template::LabelPatterns::new();
        let Some(node) = self.optional(m, "label_patterns") else {
            return Some(out);
        };
        let pm = self.mapping(node, "a mapping of label names to regular expressions")?;
        let mut ok = true;
        for (k, v) in pm.iter() {
            let name = k.as_str();
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.err(key_pos(k), format!("{name:?} is not a label name"));
                ok = false;
                continue;
            }
            let Some(src) = self.string(v) else {
                ok = false;
                continue;
            };
            match crate::remedy::template::LabelPattern::new(&src) {
                Ok(p) => {
                    out.insert(name.to_string(), p);
                }
                Err(e) => {
                    self.err(pos(v), format!("invalid regular expression: {e}"));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// The scenario's `limit: { attempts: N, per: DURATION }`.
    fn scenario_limit(&mut self, m: &MarkedMappingNode) -> Option<ScenarioLimit> {
        let default = ScenarioLimit::default();
        let Some(node) = self.optional(m, "limit") else {
            return Some(default);
        };
        let lm = self.mapping(
            node,
            "`{ attempts: N, per: DURATION }` (attempts of the whole scenario)",
        )?;
        self.unknown_keys(lm, SCENARIO_LIMIT_FIELDS);
        let attempts = match self.optional(lm, "attempts") {
            Some(n) => self.count(n, "attempts"),
            None => Some(default.attempts),
        };
        let per = match self.optional(lm, "per") {
            Some(n) => self.positive_dur(n, "per"),
            None => Some(default.per),
        };
        Some(ScenarioLimit {
            attempts: attempts?,
            per: per?,
        })
    }

    /// The scenario's `blast_radius: { instances: N, per: DURATION }`.
    fn blast_window(&mut self, m: &MarkedMappingNode) -> Option<BlastWindow> {
        let default = BlastWindow::default();
        let Some(node) = self.optional(m, "blast_radius") else {
            return Some(default);
        };
        let bm = self.mapping(
            node,
            "`{ instances: N, per: DURATION }` (distinct instances acted on per window)",
        )?;
        self.unknown_keys(bm, BLAST_FIELDS);
        let instances = match self.optional(bm, "instances") {
            Some(n) => self.count(n, "instances"),
            None => Some(default.instances),
        };
        let per = match self.optional(bm, "per") {
            Some(n) => self.positive_dur(n, "per"),
            None => Some(default.per),
        };
        Some(BlastWindow {
            instances: instances?,
            per: per?,
        })
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{alert::AlertParams, promql::PromqlParams};

    const CONFIG: &str = "\
http: { listen: 127.0.0.1:0 }
targets:
  cache: { redis: { address: 127.0.0.1:6379 } }
  db: { postgres: { host: 127.0.0.1 } }
  prom: { prometheus: { url: http://127.0.0.1:9090 } }
  backend: { kubernetes: { kind: Deployment, name: backend } }
";

    fn config() -> Config {
        crate::config::load_str("medic.yaml", CONFIG).unwrap()
    }

    fn ok(text: &str) -> Scenario {
        load_str("r.yaml", text, &config()).unwrap_or_else(|d| panic!("{d}"))
    }

    fn errors(text: &str) -> Vec<String> {
        errors_with(text, &config())
    }

    fn errors_with(text: &str, config: &Config) -> Vec<String> {
        load_str("r.yaml", text, config)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn approval_timeout_and_on_timeout_go_with_approval_required() {
        let step = |extra: &str| {
            MINIMAL.replace("    args: [true]\n", &format!("    args: [true]\n{extra}"))
        };
        let s = ok(&step("    approval: required\n"));
        assert_eq!(
            s.plan[0].approval,
            Approval::Required(ApprovalPolicy::default())
        );
        let s = ok(&step(
            "    approval: required\n    approval_timeout: 10m\n    on_timeout: reject\n",
        ));
        assert_eq!(
            s.plan[0].approval,
            Approval::Required(ApprovalPolicy {
                timeout: Dur::secs(600),
                on_timeout: OnTimeout::Reject
            })
        );
        assert_eq!(
            errors(&step("    approval_timeout: 10m\n")),
            ["r.yaml:12:23: approval_timeout needs `approval: required`"]
        );
        let e = errors(&step("    approval: required\n    on_timeout: ignore\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("r.yaml:13:17: "), "{e:?}");
    }

    /// `else:` names a later step, and no chain runs into it.
    #[test]
    fn else_names_a_later_step_that_only_it_reaches() {
        let rule = |steps: &str| MINIMAL.replace("  - action: exec\n    args: [true]\n", steps);
        let s = ok(&rule(
            "  - { name: a, action: exec, args: [a], else: c }\n  - { name: b, action: exec, args: [b] }\n  - { name: c, action: exec, args: [c] }\n",
        ));
        assert_eq!(s.plan[0].otherwise.as_deref(), Some("c"));
        assert_eq!(s.plan[1].otherwise, None);
        assert_eq!(
            errors(&rule(
                "  - { name: a, action: exec, args: [a], else: d }\n  - { name: c, action: exec, args: [c] }\n"
            )),
            ["r.yaml:10:47: unknown step \"d\" (expected one of: c)"]
        );
        assert_eq!(
            errors(&rule(
                "  - { name: a, action: exec, args: [a] }\n  - { name: b, action: exec, args: [b], else: a }\n"
            )),
            ["r.yaml:11:47: `else: a` must name a later step (a plan never goes back)"]
        );
        assert_eq!(
            errors(&rule(
                "  - { name: a, action: exec, args: [a], then: continue, else: b }\n  - { name: b, action: exec, args: [b] }\n"
            )),
            [
                "r.yaml:10:47: step \"a\" says `then: continue`, but the next step \"b\" runs only as the `else` of \"a\""
            ]
        );
    }

    /// The restores from backup are last resorts: a human approves them,
    /// or the rule file does not load (a diff-only table restore writes
    /// only its own side schema and may run alone).
    #[test]
    fn restores_from_backup_need_approval_required() {
        let config = crate::config::load_str(
            "medic.yaml",
            &format!(
                "{CONFIG}  standby: {{ postgres: {{ host: 127.0.0.2 }} }}
jobs:
  db-backup:
    schedule: '0 2 * * *'
    postgres.backup: {{ target: db, directory: /tmp/b }}
"
            ),
        )
        .unwrap();
        let rule = |step: &str| MINIMAL.replace("  - action: exec\n    args: [true]\n", step);
        let restore = "  - action: postgres.restore\n    backup: db-backup\n    target: standby\n    database: keneyapp_restored\n";
        assert_eq!(
            errors_with(&rule(restore), &config),
            [
                "r.yaml:10:13: postgres.restore replaces the database clients use with a backup: it needs `approval: required`"
            ]
        );
        assert_eq!(
            errors_with(&rule(&format!("{restore}    approval: none\n")), &config),
            [
                "r.yaml:14:15: postgres.restore replaces the database clients use with a backup: it needs `approval: required`"
            ]
        );
        let s = load_str(
            "r.yaml",
            &rule(&format!("{restore}    approval: required\n")),
            &config,
        )
        .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(s.plan[0].action.kind(), "postgres.restore");
        let tables = "  - action: postgres.restore-tables\n    backup: db-backup\n    tables: [appointments]\n";
        let e = errors_with(&rule(tables), &config);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("r.yaml:10:13: postgres.restore-tables copies rows back"),
            "{e:?}"
        );
        load_str(
            "r.yaml",
            &rule(&format!("{tables}    copy_back: false\n")),
            &config,
        )
        .unwrap_or_else(|d| panic!("{d}"));
        // Parameters, each at its place.
        let bad = "  - action: postgres.restore\n    backup: nightly\n    target: cache\n    database: \"x; DROP\"\n    before: yesterday\n    approval: required\n";
        assert_eq!(
            errors_with(&rule(bad), &config),
            [
                "r.yaml:11:13: unknown postgres.backup job \"nightly\" (expected one of: db-backup)",
                "r.yaml:12:13: target \"cache\" is a redis target, but postgres.restore needs a postgres target",
                "r.yaml:13:15: \"x; DROP\" is not a database name (letters, digits, _)",
                "r.yaml:14:13: \"yesterday\" is not an RFC 3339 time (e.g. 2026-03-01T02:00:00Z)",
            ]
        );
    }

    /// `persistence:` of a redis check: each mistake at its place.
    #[test]
    fn redis_persistence_parameters_are_validated_where_written() {
        let rule = |check: &str| MINIMAL.replace("{ redis: { target: cache } }", check);
        let s = ok(&rule(
            "{ redis: { target: cache, persistence: { appendonly: true, save: required, max_last_save_age: 1h } } }",
        ));
        let crate::check::CheckSpec::Redis(p) = &s.symptoms[0].check else {
            panic!("a redis check");
        };
        let pp = p.persistence.as_ref().unwrap();
        assert_eq!(pp.appendonly, Some(true));
        assert_eq!(pp.max_last_save_age, Some(Dur::secs(3600)));
        assert_eq!(
            errors(&rule(
                "{ redis: { target: cache, persistence: { save: always, appendonly: false, max_last_save_age: 0s } } }"
            )),
            [
                "r.yaml:7:59: unknown save \"always\" (expected one of: required)",
                "r.yaml:7:79: appendonly: false requires nothing; write true (AOF must be on) or leave it out",
                "r.yaml:7:105: max_last_save_age must be longer than 0s",
            ]
        );
        let e = errors(&rule(
            "{ redis: { target: cache, persistence: { appendonly: yes please } } }",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("r.yaml:7:"), "{e:?}");
        let e = errors(&rule(
            "{ redis: { target: cache, persistence: { aof: true } } }",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("r.yaml:7:") && e[0].contains("unknown field"),
            "{e:?}"
        );
        // Persistence alone is something to test.
        ok(&rule(
            "{ redis: { target: cache, ping: false, persistence: { save: required } } }",
        ));
    }

    /// The docker kinds name a docker target; `tag` is a tag, and `tag` or
    /// `previous`; `window` goes with `max_restarts`: each at its place.
    #[test]
    fn docker_checks_and_actions_are_validated_where_written() {
        let config = crate::config::load_str(
            "medic.yaml",
            &format!("{CONFIG}  web: {{ docker: {{ container: web }} }}\n"),
        )
        .unwrap();
        let rule = |check: &str, step: &str| {
            MINIMAL
                .replace("{ redis: { target: cache } }", check)
                .replace("  - action: exec\n    args: [true]\n", step)
        };
        let s = load_str(
            "r.yaml",
            &rule(
                "{ docker: web }",
                "  - action: docker.recreate\n    target: web\n    previous: true\n",
            ),
            &config,
        )
        .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(s.symptoms[0].check.target(), Some("web"));
        assert_eq!(s.plan[0].action.targets(), ["web"]);
        assert_eq!(
            errors_with(
                &rule(
                    "{ docker: { target: cache, window: 5m } }",
                    "  - action: docker.recreate\n    target: web\n    tag: \"v2:latest\"\n    previous: true\n",
                ),
                &config
            ),
            [
                "r.yaml:7:32: target \"cache\" is a redis target, but a docker check needs a docker target",
                "r.yaml:7:47: `window` applies to `max_restarts`, which is missing",
                "r.yaml:12:10: tag \"v2:latest\" is not an image tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
                "r.yaml:13:15: docker.recreate takes `tag` or `previous`, not both",
            ]
        );
        assert_eq!(
            errors_with(
                &rule(
                    "{ docker: web }",
                    "  - action: docker.restart\n    target: cache\n"
                ),
                &config
            ),
            [
                "r.yaml:11:13: target \"cache\" is a redis target, but docker.restart needs a docker target"
            ]
        );
    }

    /// A valid file with `{}` standing for extra lines of the first step.
    const MINIMAL: &str = "\
scenario: s
summary: S
severity: info
rto: 5m
symptoms:
  down:
    check: { redis: { target: cache } }
when: { any: [down] }
plan:
  - action: exec
    args: [true]
escalation: default
";

    #[test]
    fn defaults_fill_what_is_left_out() {
        let s = ok(MINIMAL);
        let sym = &s.symptoms[0];
        assert_eq!(
            (sym.every, sym.timeout, sym.for_, sym.clear_for),
            (Dur::secs(10), Dur::secs(10), Dur::secs(0), Dur::secs(0))
        );
        let step = &s.plan[0];
        assert_eq!(step.name, "1-exec");
        assert_eq!(step.timeout, Dur::secs(60));
        assert_eq!(
            step.verify,
            Verify {
                clears: vec!["down".into()],
                within: Dur::secs(300)
            }
        );
        assert_eq!(step.limit, Limit::default());
        assert_eq!(step.approval, Approval::None);
        assert_eq!(
            (s.mode, step.mode, s.rpo, s.runbook.as_deref()),
            (None, None, None, None)
        );
        assert_eq!(s.path, PathBuf::from("r.yaml"));
    }

    #[test]
    fn timeout_defaults_to_the_interval_when_shorter() {
        let s = ok(&MINIMAL.replace(
            "check: { redis: { target: cache } }",
            "check: { redis: { target: cache } }\n    every: 1s",
        ));
        assert_eq!(s.symptoms[0].timeout, Dur::secs(1));
    }

    #[test]
    fn step_parameters_take_only_label_variables() {
        let text = MINIMAL.replace(
            "args: [true]",
            "args: [echo, \"${labels.deployment}\", \"${env.HOME}\"]",
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0]
                .contains("unknown variable `${env.HOME}`: the only variables are ${labels.NAME}"),
            "{errs:?}"
        );
    }

    /// A field that does not expand would take `${...}` literally (or a
    /// stranger's value, if it ever did): refused at its position.
    #[test]
    fn fields_that_do_not_expand_refuse_label_variables_at_their_position() {
        let text = MINIMAL.replace(
            "  - action: exec\n    args: [true]\n",
            "  - action: redis.flush\n    target: \"${labels.target}\"\n    pattern: \"t:${labels.tenant}:*\"\n  - action: exec\n    args: [echo, \"${labels.a}\"]\n    env:\n      \"${labels.k}\": x\n      PW: { env: \"${labels.v}\" }\n  - action: k8s.set-env\n    target: backend\n    container: \"${labels.c}\"\n    env: { A: b }\n",
        );
        let errs = errors(&text);
        assert_eq!(
            errs,
            [
                "r.yaml:11:13: `target` does not expand `${labels.NAME}` (redis.flush expands only pattern); a label's value cannot go here",
                "r.yaml:11:13: unknown target \"${labels.target}\" (expected one of: backend, cache, db, prom)",
                "r.yaml:16:7: a name (\"${labels.k}\") does not expand `${labels.NAME}`: only values do",
                "r.yaml:17:18: `PW` does not expand `${labels.NAME}` (exec expands only args, env, cwd); a label's value cannot go here",
                "r.yaml:20:16: `container` does not expand `${labels.NAME}` (k8s.set-env expands no field); a label's value cannot go here",
            ],
        );
    }

    #[test]
    fn systemd_units_written_in_the_rule_must_be_unit_names_without_globs() {
        let text = MINIMAL.replace(
            "  - action: exec\n    args: [true]\n",
            "  - action: systemd-restart\n    unit: \"*.service\"\n  - action: systemd-restart\n    unit: \"app-${labels.x}*\"\n  - action: systemd-restart\n    unit: \"app-${labels.x}.service\"\n",
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "r.yaml:11:11: not a unit name: \"*.service\" has the glob character '*'"
            ),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("r.yaml:13:11: not a unit name:"),
            "{errs:?}"
        );
    }

    #[test]
    fn kubernetes_overrides_written_in_the_rule_must_be_dns_1123() {
        let text = MINIMAL.replace(
            "  - action: exec\n    args: [true]\n",
            "  - action: k8s.rollout-restart\n    target: backend\n    workload: Backend\n    namespace: a.b\n  - action: k8s.scale\n    target: backend\n    replicas: 1\n    workload: \"${labels.deployment}\"\n",
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with("r.yaml:12:15: \"Backend\" is not a DNS-1123 subdomain"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("r.yaml:13:16: \"a.b\" is not a DNS-1123 label"),
            "{errs:?}"
        );
    }

    #[test]
    fn label_patterns_and_scenario_budgets_load_with_their_defaults() {
        let s = ok(MINIMAL);
        assert_eq!(s.limit, ScenarioLimit::default());
        assert_eq!(s.blast_radius, BlastWindow::default());
        assert!(s.plan[0].label_patterns.is_empty());
        let text = MINIMAL
            .replace(
                "    args: [true]\n",
                "    args: [echo, \"${labels.deployment}\"]\n    label_patterns: { deployment: '[a-z]+' }\n",
            )
            .replace(
                "escalation: default",
                "limit: { attempts: 4, per: 30m }\nblast_radius: { instances: 2, per: 5m }\nescalation: default",
            );
        let s = ok(&text);
        assert_eq!(
            s.limit,
            ScenarioLimit {
                attempts: 4,
                per: Dur::secs(1800)
            }
        );
        assert_eq!(
            s.blast_radius,
            BlastWindow {
                instances: 2,
                per: Dur::secs(300)
            }
        );
        assert_eq!(s.plan[0].label_patterns["deployment"].as_str(), "[a-z]+");
        let bad = MINIMAL
            .replace(
                "    args: [true]\n",
                "    args: [true]\n    label_patterns: { \"1x\": a, ok: \"(\" }\n",
            )
            .replace(
                "escalation: default",
                "limit: { attempts: 0, every: 1h }\nblast_radius: { instances: x }\nescalation: default",
            );
        let errs = errors(&bad);
        assert_eq!(errs.len(), 5, "{errs:?}");
        assert!(
            errs[0].starts_with("r.yaml:12:23: \"1x\" is not a label name"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("r.yaml:12:36: invalid regular expression"),
            "{errs:?}"
        );
        assert!(errs[2].contains("attempts must be at least 1"), "{errs:?}");
        assert!(errs[3].contains("every"), "{errs:?}");
        assert!(errs[4].contains("expected a whole number"), "{errs:?}");
    }

    #[test]
    fn shorthands_expand() {
        let text = MINIMAL.replace(
            "    check: { redis: { target: cache } }",
            "    check: { promql: 'up == 0' }\n  fired:\n    check: { alert: RedisDown }",
        );
        let s = ok(&text);
        assert_eq!(
            s.symptoms[0].check,
            CheckSpec::Promql(PromqlParams {
                query: "up == 0".into(),
                source: None
            })
        );
        assert_eq!(
            s.symptoms[1].check,
            CheckSpec::Alert(AlertParams {
                matchers: [("alertname".to_string(), "RedisDown".to_string())].into()
            })
        );
    }

    #[test]
    fn empty_plan_is_allowed_empty_when_is_not() {
        let s = ok(&MINIMAL
            .replace("  - action: exec\n    args: [true]\n", "")
            .replace("plan:\n", "plan: []\n"));
        assert!(s.plan.is_empty());
        let no_plan = MINIMAL.replace("plan:\n  - action: exec\n    args: [true]\n", "");
        assert!(ok(&no_plan).plan.is_empty());
        assert_eq!(
            errors(&MINIMAL.replace("{ any: [down] }", "{ any: [] }")),
            ["r.yaml:8:14: `when` needs at least one symptom"]
        );
        assert_eq!(
            errors(&MINIMAL.replace("{ any: [down] }", "{}")),
            ["r.yaml:8:7: `when` needs `any:` or `all:` with symptom names"]
        );
    }

    #[test]
    fn every_problem_in_a_file_is_reported_in_order() {
        let text = "\
scenario: s
summary: S
severity: severe
rto: 5 parsecs
symptoms:
  down:
    check: { redis: { target: db, pnig: true } }
    evry: 1s
  slow:
    check: { promql: { query: x, source: cache } }
when: { all: [down, sloow] }
plan:
  - action: restart
    args: [x]
  - name: again
    action: exec
    args: []
    verify: { clears: [slow, gone] }
  - name: again
    action: k8s.rollout-restart
    target: cache
escalation: pager
";
        assert_eq!(
            errors(text),
            [
                "r.yaml:3:11: unknown severity \"severe\" (expected one of: critical, high, warning, info)",
                "r.yaml:4:6: invalid duration \"5 parsecs\": unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)",
                "r.yaml:7:31: target \"db\" is a postgres target, but a redis check needs a redis target",
                "r.yaml:7:35: unknown field \"pnig\" (did you mean \"ping\"?)",
                "r.yaml:8:5: unknown field \"evry\" (did you mean \"every\"?)",
                "r.yaml:10:42: target \"cache\" is a redis target, but a promql check needs a prometheus target",
                "r.yaml:11:21: undefined symptom \"sloow\" (did you mean \"slow\"?)",
                "r.yaml:13:13: unknown action \"restart\" (expected one of: exec, systemd-restart, k8s.rollout-restart, k8s.rollout-undo, k8s.set-env, k8s.scale, redis.flush, postgres.promote-replica, postgres.restart, postgres.quarantine, postgres.fence, postgres.restore, postgres.restore-tables, route53.failover, docker.restart, docker.recreate)",
                "r.yaml:17:11: exec needs a program: args: [PROGRAM, ARG...]",
                "r.yaml:18:30: undefined symptom \"gone\"",
                "r.yaml:19:11: step name \"again\" is already used at 15:11",
                "r.yaml:21:13: target \"cache\" is a redis target, but k8s.rollout-restart needs a kubernetes target",
                "r.yaml:22:13: unknown escalation policy \"pager\" (expected one of: default)",
            ]
        );
    }

    #[test]
    fn default_step_names_must_be_unique_too() {
        let text = MINIMAL.replace(
            "    args: [true]\n",
            "    args: [true]\n  - name: 1-exec\n    action: exec\n    args: [false]\n",
        );
        assert_eq!(
            errors(&text),
            ["r.yaml:12:11: step name \"1-exec\" is already used at 10:5"]
        );
    }

    #[test]
    fn enforce_mode_alert_symptoms_need_an_authenticated_intake() {
        let rule = MINIMAL.replace("{ redis: { target: cache } }", "{ alert: Down }");
        let cfg = |http: &str| crate::config::load_str("medic.yaml", http).unwrap();
        let msg = |intake: &str| {
            format!(
                "r.yaml:7:5: symptom \"down\" reads Alertmanager alerts and this scenario runs enforce-mode steps, but the intake {intake}: set http.intake.bearer or http.intake.basic, or run the scenario in dry-run"
            )
        };
        let enforce = "mode: enforce\nhttp: { listen: 127.0.0.1:0 }\n";
        assert_eq!(
            errors_with(&rule, &cfg(enforce)),
            [msg("is off (no http.intake)")]
        );
        let open = "mode: enforce\nhttp: { listen: 127.0.0.1:0, intake: { open: true } }\n";
        assert_eq!(
            errors_with(&rule, &cfg(open)),
            [msg("is open (http.intake.open)")]
        );
        // A step in enforce mode is enough.
        let step = rule.replace(
            "    args: [true]\n",
            "    args: [true]\n    mode: enforce\n",
        );
        assert_eq!(
            errors_with(&step, &cfg("http: { listen: 127.0.0.1:0 }\n")),
            [msg("is off (no http.intake)")]
        );
        // Dry-run, or an authenticated intake: accepted.
        load_str("r.yaml", &rule, &cfg("http: { listen: 127.0.0.1:0 }\n")).unwrap();
        let bearer =
            "mode: enforce\nhttp: { listen: 127.0.0.1:0, intake: { bearer: { env: T } } }\n";
        load_str("r.yaml", &rule, &cfg(bearer)).unwrap();
    }

    #[test]
    fn targets_are_checked_against_the_config() {
        let e = |check: &str| errors(&MINIMAL.replace("{ redis: { target: cache } }", check));
        assert_eq!(
            e("{ redis: { target: cahce } }"),
            ["r.yaml:7:31: unknown target \"cahce\" (did you mean \"cache\"?)"]
        );
        assert_eq!(
            e("{ tcp: { target: backend } }"),
            [
                "r.yaml:7:29: target \"backend\" is a kubernetes target, but a tcp check needs a tcp, redis, postgres, http or prometheus target"
            ]
        );
        assert!(
            ok(&MINIMAL.replace("redis: { target: cache }", "tcp: { target: db }"))
                .plan
                .len()
                == 1
        );
        let none = crate::config::load_str("medic.yaml", "").unwrap();
        assert_eq!(
            errors_with(MINIMAL, &none),
            ["r.yaml:7:31: unknown target \"cache\" (the config defines no targets)"]
        );
    }

    #[test]
    fn promql_needs_exactly_one_default_source() {
        let text = MINIMAL.replace("{ redis: { target: cache } }", "{ promql: 'up == 0' }");
        let two = crate::config::load_str(
            "medic.yaml",
            &format!("{CONFIG}  prom2: {{ prometheus: {{ url: http://127.0.0.1:9091 }} }}\n"),
        )
        .unwrap();
        assert_eq!(
            errors_with(&text, &two),
            ["r.yaml:7:22: several prometheus targets (prom, prom2): name one with `source:`"]
        );
        let none = crate::config::load_str("medic.yaml", "").unwrap();
        assert_eq!(
            errors_with(&text, &none),
            [
                "r.yaml:7:22: a promql check needs a prometheus target in the config (none is defined)"
            ]
        );
    }

    #[test]
    fn thresholds_take_yamls_special_floats() {
        // Regression (issue 18): `.inf` could not be written as a threshold.
        let thresholds = |check: &str| {
            let s = ok(&MINIMAL.replace("{ redis: { target: cache } }", check));
            match &s.symptoms[0].check {
                CheckSpec::Scrape(p) => (p.above, p.below),
                CheckSpec::Postgres(p) => (p.above, p.below),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            thresholds("{ scrape: { target: prom, metric: up, above: .inf } }"),
            (Some(f64::INFINITY), None)
        );
        assert_eq!(
            thresholds("{ scrape: { target: prom, metric: up, below: -.Inf, above: +.INF } }"),
            (Some(f64::INFINITY), Some(f64::NEG_INFINITY))
        );
        assert_eq!(
            thresholds("{ postgres: { target: db, sql: 'SELECT 1', above: 1e3, below: -2 } }"),
            (Some(1000.0), Some(-2.0))
        );
        let (above, _) = thresholds("{ scrape: { target: prom, metric: up, above: .nan } }");
        assert!(above.is_some_and(f64::is_nan));
        let e = errors(&MINIMAL.replace(
            "{ redis: { target: cache } }",
            "{ scrape: { target: prom, metric: up, above: lots } }",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("r.yaml:7:"), "{e:?}");
        assert!(e[0].contains("a number (or .inf, -.inf, .nan)"), "{e:?}");
    }

    #[test]
    fn kind_specific_rules() {
        let e = |check: &str| errors(&MINIMAL.replace("{ redis: { target: cache } }", check));
        assert_eq!(
            e("{ postgres: { target: db, sql: 'DELETE FROM x', above: 0 } }"),
            ["r.yaml:7:43: sql checks must be read-only: start with SELECT or WITH"]
        );
        assert_eq!(
            e("{ postgres: { target: db, sql: 'SELECT 1' } }"),
            ["r.yaml:7:43: an sql check needs `above` or `below`"]
        );
        assert_eq!(
            e("{ http: { url: 'http://x', body: '(' } }"),
            ["r.yaml:7:45: invalid regular expression: unclosed group"]
        );
        assert_eq!(
            e("{ tcp: { address: localhost } }"),
            ["r.yaml:7:30: address \"localhost\" must be HOST:PORT"]
        );
        assert_eq!(
            e("{ dns: { name: x, expect: [1.2.3.4, nope] } }"),
            ["r.yaml:7:48: \"nope\" is not an IP address"]
        );
        assert_eq!(
            e("{ dns: { name: x, server: dns.example } }"),
            ["r.yaml:7:38: server \"dns.example\" must be IP or IP:PORT"]
        );
        assert_eq!(
            e("{ redis: { target: cache, ping: yes } }"),
            ["r.yaml:7:44: expected true or false"]
        );
        let step =
            |extra: &str| errors(&MINIMAL.replace("  - action: exec\n    args: [true]\n", extra));
        assert_eq!(
            step("  - action: postgres.quarantine\n    target: db\n    table: t\n    where: x\n"),
            ["r.yaml:10:5: postgres.quarantine needs `max_rows`: the most rows it may move"]
        );
        assert_eq!(
            step("  - action: exec\n"),
            ["r.yaml:10:5: missing field \"args\""]
        );
        assert_eq!(
            step("  - action: k8s.scale\n    target: backend\n    replicas: -1\n"),
            ["r.yaml:12:15: expected a whole number (invalid digit found in string)"]
        );
    }

    #[test]
    fn quorum_per_symptom_or_scenario_is_a_positive_count() {
        assert_eq!(
            ok(MINIMAL).quorum,
            None,
            "default: a majority of live replicas"
        );
        assert_eq!(ok(MINIMAL).symptoms[0].quorum, None);
        let text = MINIMAL
            .replace(
                "    check: { redis: { target: cache } }\n",
                "    check: { redis: { target: cache } }\n    quorum: 3\n",
            )
            .replace("escalation: default\n", "escalation: default\nquorum: 2\n");
        let s = ok(&text);
        assert_eq!((s.quorum, s.symptoms[0].quorum), (Some(2), Some(3)));
        assert_eq!(
            errors(&MINIMAL.replace("escalation: default\n", "escalation: default\nquorum: 0\n")),
            ["r.yaml:13:9: quorum must be at least 1"]
        );
        assert_eq!(
            errors(&MINIMAL.replace(
                "    check: { redis: { target: cache } }\n",
                "    check: { redis: { target: cache } }\n    quorum: most\n",
            )),
            ["r.yaml:8:13: expected a whole number, found \"most\""]
        );
        assert_eq!(
            errors(&MINIMAL.replace(
                "    check: { redis: { target: cache } }\n",
                "    check: { redis: { target: cache } }\n    qorum: 2\n",
            )),
            ["r.yaml:8:5: unknown field \"qorum\" (did you mean \"quorum\"?)"]
        );
    }

    #[test]
    fn then_continue_chains_verify_by_the_action_and_cannot_end_the_plan() {
        let text = MINIMAL.replace(
            "    args: [true]\n",
            "    args: [true]\n    then: continue\n  - action: exec\n    args: [false]\nmax_acting: 3\n",
        );
        let s = ok(&text);
        assert_eq!(s.plan[0].then, Then::Continue);
        assert!(
            s.plan[0].verify.clears.is_empty(),
            "the action verifies itself"
        );
        assert_eq!(s.plan[1].then, Then::Stop);
        assert_eq!(s.plan[1].verify.clears, ["down"]);
        // Regression (issue 18): `clears: []` was refused ("needs at least
        // one symptom") though the model documents it as the action's own
        // verification; a `then: stop` step may ask for it too.
        let own = ok(&MINIMAL.replace(
            "    args: [true]\n",
            "    args: [true]\n    verify: { clears: [], within: 30s }\n",
        ));
        assert!(own.plan[0].verify.clears.is_empty());
        assert_eq!(own.plan[0].verify.within, Dur::secs(30));
        assert_eq!(s.max_acting, 3);
        assert_eq!(ok(MINIMAL).max_acting, 1);
        assert_eq!(
            errors(&MINIMAL.replace(
                "    args: [true]\n",
                "    args: [true]\n    then: continue\n"
            )),
            ["r.yaml:12:11: the last step cannot say `then: continue`: there is no next step"]
        );
        assert_eq!(
            errors(&MINIMAL.replace("    args: [true]\n", "    args: [true]\n    then: go\n")),
            ["r.yaml:12:11: unknown then \"go\" (expected one of: stop, continue)"]
        );
    }

    #[test]
    fn a_promotion_needs_a_symptom_watching_its_primary() {
        let cfg = crate::config::load_str(
            "medic.yaml",
            &format!("{CONFIG}  db2: {{ postgres: {{ host: 127.0.0.1, port: 5433 }} }}\n"),
        )
        .unwrap();
        let step = "  - action: postgres.promote-replica\n    primary: db\n    replicas: [db2]\n";
        let text = MINIMAL.replace("  - action: exec\n    args: [true]\n", step);
        assert_eq!(
            errors_with(&text, &cfg),
            [
                "r.yaml:11:14: no symptom of this scenario checks the primary \"db\": its unreachable-for gate counts that symptom's failed checks"
            ]
        );
        let watched = text.replace("{ redis: { target: cache } }", "{ tcp: { target: db } }");
        let s = load_str("r.yaml", &watched, &cfg).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(s.plan.len(), 1);
    }

    #[test]
    fn null_values_count_as_absent() {
        let s = ok(&MINIMAL.replace("rto: 5m\n", "rto: 5m\nrpo: ~\nmode:\n"));
        assert_eq!((s.rpo, s.mode), (None, None));
        assert_eq!(
            errors(&MINIMAL.replace("rto: 5m", "rto: ~")),
            ["r.yaml:4:1: \"rto\" needs a value"]
        );
    }

    #[test]
    fn odd_documents_do_not_panic() {
        for text in [
            "",
            "[]",
            "- a\n",
            "42\n",
            "~\n",
            "scenario: [1]\nsymptoms: 5\nwhen: x\nplan: {}\n",
            "symptoms: { a: 1, b: [1], c: { check: 1 } }\nwhen: { any: { a: b } }\n",
            "symptoms: { a: { check: { redis: [1] } } }\nplan: [1, [2], { action: {} }]\n",
            "plan: [{ action: exec, args: [[1]], env: 5, verify: 1, limit: [1] }]\n",
            "plan: [{ action: k8s.scale, target: backend, replicas: 99999999999999999999 }]\n",
            "rto: 99999999999999999999999h\nsymptoms: { a: { check: { http: { status: [-1] } } } }\n",
            "\u{0}: \u{feff}\n",
        ] {
            assert!(load_str("r.yaml", text, &config()).is_err(), "{text:?}");
        }
    }

    #[test]
    fn loads_directories_in_name_order_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("b.yaml"),
            MINIMAL.replace("scenario: s", "scenario: b"),
        )
        .unwrap();
        std::fs::write(
            d.join("a.yml"),
            MINIMAL.replace("scenario: s", "scenario: a"),
        )
        .unwrap();
        std::fs::write(d.join("notes.txt"), "not a rule").unwrap();
        std::fs::create_dir(d.join("tests")).unwrap();
        std::fs::write(d.join("tests/t.yaml"), "garbage: [").unwrap();
        let names: Vec<String> = load_paths(&[d.to_path_buf()], &config())
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["a", "b"]);

        std::fs::write(
            d.join("c.yaml"),
            MINIMAL.replace("scenario: s", "scenario: a"),
        )
        .unwrap();
        let errs = load_paths(&[d.to_path_buf()], &config())
            .unwrap_err()
            .to_string();
        assert_eq!(
            errs,
            format!(
                "{c}:1:11: scenario \"a\" is already defined at {a}:1:11",
                c = d.join("c.yaml").display(),
                a = d.join("a.yml").display()
            )
        );

        let empty = tempfile::tempdir().unwrap();
        let errs = load_paths(&[empty.path().to_path_buf()], &config()).unwrap_err();
        assert_eq!(
            errs.to_string(),
            format!(
                "{}: no rule files (*.yaml, *.yml) here",
                empty.path().display()
            )
        );
    }
}
