//! Prometheus alerting rule files (`groups: - rules: - alert:`), the files
//! SREs already have, read so that their alerts can be a scenario's
//! symptoms (config `prometheus_rules: [PATH, ...]`, symptom
//! `from_prometheus_rule: NAME`).
//!
//! Validation follows Prometheus' own rule-file checks (unknown fields,
//! exactly one of `alert`/`record`, `expr` present, durations, label names,
//! unique group names), each reported at `path:line:col`. PromQL
//! expressions are taken as written: medic has no PromQL parser, and the
//! Prometheus server that runs them (or `promtool check rules`) is where
//! their syntax is checked.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::Node;

use crate::diag::Diagnostic;
use crate::duration::Dur;
use crate::yaml::{self, Cursor, Pos, describe, diag, is_null, key_pos, pos};

const FILE_FIELDS: &[&str] = &["groups"];
const GROUP_FIELDS: &[&str] = &[
    "name",
    "interval",
    "query_offset",
    "limit",
    "labels",
    "rules",
];
const RULE_FIELDS: &[&str] = &[
    "alert",
    "record",
    "expr",
    "for",
    "keep_firing_for",
    "labels",
    "annotations",
];

/// One alerting rule (recording rules are validated, then left out).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRule {
    /// The `alert:` name (the `alertname` label of its alerts).
    pub name: String,
    pub group: String,
    /// The PromQL expression, as written.
    pub expr: String,
    /// How long `expr` must hold before the alert fires.
    pub for_: Dur,
    /// The rule's labels, templated ones included (`{{ ... }}`).
    pub labels: BTreeMap<String, String>,
    /// `path:line:col` of its `alert:`.
    pub at: String,
}

impl AlertRule {
    /// The labels every alert of this rule carries as written: `alertname`
    /// and the rule's untemplated labels (what an `alert` check matches).
    pub fn static_labels(&self) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = self
            .labels
            .iter()
            .filter(|(_, v)| !v.contains("{{"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        m.insert("alertname".into(), self.name.clone());
        m
    }
}

/// Every alerting rule of the configured files.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PromRules {
    pub alerts: Vec<AlertRule>,
}

impl PromRules {
    /// The rules named `name` (in `group`, when given).
    pub fn find(&self, name: &str, group: Option<&str>) -> Vec<&AlertRule> {
        self.alerts
            .iter()
            .filter(|r| r.name == name && group.is_none_or(|g| r.group == g))
            .collect()
    }

    /// Every alert name, for "did you mean".
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.alerts.iter().map(|r| r.name.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Loads every rule file of `paths` (files, or directories of `*.yml` /
/// `*.yaml`, recursively, since rule trees are often nested by exporter).
pub fn load_paths(paths: &[PathBuf]) -> (PromRules, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut diags = Vec::new();
    for p in paths {
        collect(p, &mut files, &mut diags);
    }
    let mut rules = PromRules::default();
    for f in files {
        let origin = f.display().to_string();
        match fs::read_to_string(&f) {
            Ok(text) => {
                let (mut r, mut d) = load_str(&origin, &text);
                rules.alerts.append(&mut r.alerts);
                diags.append(&mut d);
            }
            Err(e) => diags.push(diag(&origin, (0, 0), format!("cannot read: {e}"))),
        }
    }
    (rules, diags)
}

fn collect(p: &Path, files: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) {
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
    let mut entries: Vec<PathBuf> = match fs::read_dir(p) {
        Ok(e) => e.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) => {
            diags.push(diag(&origin, (0, 0), format!("cannot read: {e}")));
            return;
        }
    };
    entries.sort();
    for e in entries {
        if e.is_dir() {
            collect(&e, files, diags);
        } else if e.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            files.push(e);
        }
    }
}

/// Parses and validates one rule file's text; `origin` names it in errors.
pub fn load_str(origin: &str, text: &str) -> (PromRules, Vec<Diagnostic>) {
    let mut cx = Cx {
        y: Cursor::new(origin),
        rules: PromRules::default(),
    };
    // An empty file (or only comments) is no rules, as promtool sees it.
    let empty = text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    });
    if empty {
        return (cx.rules, cx.y.finish());
    }
    match yaml::parse(origin, text) {
        Ok(root) => cx.file(&root),
        Err(d) => cx.y.out.push(d),
    }
    (cx.rules, cx.y.finish())
}

/// The cursor, and the alerting rules read so far.
struct Cx<'a> {
    y: Cursor<'a>,
    rules: PromRules,
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

impl Cx<'_> {
    /// A string; problems are prefixed with `what` (the key it is under),
    /// as Prometheus' own messages are.
    fn text(&mut self, node: &Node, what: &str) -> Option<String> {
        match node {
            Node::Scalar(s) => Some(s.as_str().to_string()),
            other => {
                self.err(
                    pos(other),
                    format!("{what}: expected a string, found {}", describe(other)),
                );
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, key: &str) -> Option<Dur> {
        let s = self.text(node, key)?;
        match prom_duration(&s) {
            Some(d) => Some(Dur(d)),
            None => {
                self.err(
                    pos(node),
                    format!("{key}: invalid duration {s:?} (Prometheus durations look like 30s, 5m, 1h30m, 1d)"),
                );
                None
            }
        }
    }

    /// A map of label names to string values; `templated`: each value is a
    /// Go template (an alerting rule's labels and annotations), checked as
    /// promtool checks it.
    fn labels(&mut self, node: &Node, key: &str, templated: bool) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if is_null(node) {
            return out;
        }
        let Some(m) = self.mapping(node, &format!("`{key}`: a mapping of names to strings")) else {
            return out;
        };
        for (k, v) in m.iter() {
            if key == "labels" && !valid_label_name(k.as_str()) {
                self.err(
                    key_pos(k),
                    format!("invalid label name {:?}: use letters, digits and \"_\", not starting with a digit", k.as_str()),
                );
            }
            if let Some(text) = self.text(v, &format!("{key}.{}", k.as_str())) {
                if templated && let Err(why) = super::gotemplate::check(&text) {
                    self.err(pos(v), format!("{key}.{}: template: {why}", k.as_str()));
                }
                out.insert(k.as_str().to_string(), text);
            }
        }
        out
    }

    fn file(&mut self, root: &Node) {
        let Some(m) = self.mapping(root, "a mapping with `groups:`") else {
            return;
        };
        self.unknown_keys(m, FILE_FIELDS);
        // No `groups`, or nothing under it: no rules (promtool: fine).
        let Some(groups) = m.get("groups").filter(|g| !is_null(g)) else {
            return;
        };
        let Node::Sequence(groups) = groups else {
            self.err(
                pos(groups),
                format!("`groups`: expected a list, found {}", describe(groups)),
            );
            return;
        };
        let mut names: HashMap<String, Pos> = HashMap::new();
        for g in groups.iter() {
            self.group(g, &mut names);
        }
    }

    fn group(&mut self, node: &Node, names: &mut HashMap<String, Pos>) {
        let Some(m) = self.mapping(node, "a group: a mapping with `name:` and `rules:`") else {
            return;
        };
        self.unknown_keys(m, GROUP_FIELDS);
        let name = match self.optional(m, "name") {
            Some(n) => {
                let s = self.text(n, "name");
                if let Some(s) = &s {
                    if s.trim().is_empty() {
                        self.err(pos(n), "group name must not be empty");
                    } else if let Some((l, c)) = names.get(s) {
                        self.err(
                            pos(n),
                            format!("group name {s:?} is already used at {l}:{c}"),
                        );
                    } else {
                        names.insert(s.clone(), pos(n));
                    }
                }
                s.unwrap_or_default()
            }
            None => {
                self.required(m, "name");
                String::new()
            }
        };
        for key in ["interval", "query_offset"] {
            if let Some(n) = m.get(key).filter(|n| !is_null(n)) {
                self.duration(n, key);
            }
        }
        if let Some(n) = self.optional(m, "limit")
            && let Some(s) = self.text(n, "limit")
            && s.parse::<u64>().is_err()
        {
            self.err(
                pos(n),
                format!("limit: expected a whole number, found {s:?}"),
            );
        }
        if let Some(n) = m.get("labels") {
            self.labels(n, "labels", false);
        }
        let Some(rules) = self.optional(m, "rules") else {
            return;
        };
        let Node::Sequence(rules) = rules else {
            self.err(
                pos(rules),
                format!("`rules`: expected a list, found {}", describe(rules)),
            );
            return;
        };
        for r in rules.iter() {
            self.rule(r, &name);
        }
    }

    fn rule(&mut self, node: &Node, group: &str) {
        let Some(m) = self.mapping(
            node,
            "a rule: a mapping with `alert:` or `record:` and `expr:`",
        ) else {
            return;
        };
        let typos = self.unknown_keys(m, RULE_FIELDS);
        let misspelt = |f: &str| typos.iter().any(|h| h.contains(&format!("{f:?}")));
        let alert = self.optional(m, "alert");
        let record = self.optional(m, "record");
        let start = yaml::mapping_pos(m);
        let (kind_node, is_alert) = match (alert, record) {
            (Some(a), None) => (a, true),
            (None, Some(r)) => (r, false),
            (Some(_), Some(r)) => {
                self.err(pos(r), "a rule has either `alert:` or `record:`, not both");
                return;
            }
            (None, None) => {
                if !misspelt("alert") && !misspelt("record") {
                    self.err(start, "a rule needs `alert:` or `record:`");
                }
                return;
            }
        };
        let name = self.text(kind_node, if is_alert { "alert" } else { "record" });
        if let Some(n) = &name {
            if n.trim().is_empty() {
                self.err(pos(kind_node), "the rule's name must not be empty");
            } else if !is_alert && !valid_metric_name(n) {
                self.err(
                    pos(kind_node),
                    format!("invalid metric name {n:?} for `record`"),
                );
            }
        }
        let expr = match self.optional(m, "expr") {
            Some(e) => {
                let s = self.text(e, "expr");
                if s.as_deref().is_some_and(|s| s.trim().is_empty()) {
                    self.err(pos(e), "expr must not be empty");
                }
                s
            }
            None => {
                if !misspelt("expr") {
                    self.required(m, "expr");
                }
                None
            }
        };
        if !is_alert {
            for key in ["for", "keep_firing_for", "annotations"] {
                if let Some(k) = m.keys().find(|k| k.as_str() == key) {
                    self.err(
                        key_pos(k),
                        format!("`{key}` is only for alerting rules, not `record:`"),
                    );
                }
            }
        }
        let for_ = match self.optional(m, "for") {
            Some(n) => self.duration(n, "for"),
            None => Some(Dur::default()),
        };
        if let Some(n) = self.optional(m, "keep_firing_for") {
            self.duration(n, "keep_firing_for");
        }
        let labels = match m.get("labels") {
            Some(n) => self.labels(n, "labels", is_alert),
            None => BTreeMap::new(),
        };
        if let Some(n) = m.get("annotations") {
            self.labels(n, "annotations", is_alert);
        }
        if is_alert && let (Some(name), Some(expr), Some(for_)) = (name, expr, for_) {
            let (l, c) = pos(kind_node);
            self.rules.alerts.push(AlertRule {
                name,
                group: group.to_string(),
                expr,
                for_,
                labels,
                at: format!("{}:{l}:{c}", self.origin),
            });
        }
    }
}

/// Prometheus' duration syntax: units y, w, d, h, m, s, ms, each at most
/// once and in that order (`1h30m`, `5m`, `0s`; a bare `0` too).
pub fn prom_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    const UNITS: &[(&str, u64)] = &[
        ("y", 365 * 24 * 3600 * 1000),
        ("w", 7 * 24 * 3600 * 1000),
        ("d", 24 * 3600 * 1000),
        ("h", 3600 * 1000),
        ("m", 60 * 1000),
        ("s", 1000),
        ("ms", 1),
    ];
    let mut rest = s;
    let mut next_unit = 0;
    let mut ms: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let i = UNITS.iter().position(|(u, _)| *u == unit)?;
        if i < next_unit {
            return None;
        }
        next_unit = i + 1;
        ms = ms.checked_add(n.checked_mul(UNITS[i].1)?)?;
    }
    Some(Duration::from_millis(ms))
}

fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn valid_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_prometheus_writes_them() {
        let d = |s: &str| prom_duration(s).map(|d| d.as_millis());
        assert_eq!(d("5m"), Some(300_000));
        assert_eq!(d("1h30m"), Some(5_400_000));
        assert_eq!(d("0m"), Some(0));
        assert_eq!(d("0"), Some(0));
        assert_eq!(d("1d2h"), Some(93_600_000));
        assert_eq!(d("250ms"), Some(250));
        assert_eq!(d("30m1h"), None, "units out of order");
        assert_eq!(d("5"), None);
        assert_eq!(d("1.5h"), None);
        assert_eq!(d(""), None);
        assert_eq!(d("5 m"), None);
    }

    const GOOD: &str = "\
groups:
- name: redis
  rules:
  - alert: RedisDown
    expr: 'redis_up == 0'
    for: 1m
    labels:
      severity: critical
      instance: '{{ $labels.instance }}'
    annotations:
      summary: Redis down
  - record: job:redis_up:sum
    expr: sum by (job) (redis_up)
";

    #[test]
    fn alert_rules_load_with_their_static_labels() {
        let (r, d) = load_str("r.yml", GOOD);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(r.alerts.len(), 1);
        let a = &r.alerts[0];
        assert_eq!((a.name.as_str(), a.group.as_str()), ("RedisDown", "redis"));
        assert_eq!(a.expr, "redis_up == 0");
        assert_eq!(a.for_, Dur::secs(60));
        assert_eq!(a.at, "r.yml:4:12");
        assert_eq!(
            a.static_labels(),
            [("alertname", "RedisDown"), ("severity", "critical")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        );
    }

    #[test]
    fn an_empty_file_is_no_rules_as_promtool_sees_it() {
        // Regression (issue 18): an empty rule file was an error.
        for text in [
            "",
            "\n",
            "# nothing yet\n",
            "---\n",
            "{}\n",
            "groups:\n",
            "groups: []\n",
        ] {
            let (r, d) = load_str("r.yml", text);
            assert!(d.is_empty(), "{text:?}: {d:?}");
            assert!(r.alerts.is_empty());
        }
    }

    #[test]
    fn template_errors_in_alert_labels_and_annotations_are_reported() {
        // Regression (issue 18): they passed `medic check`; promtool
        // reports them.
        let text = "\
groups:
- name: a
  rules:
  - alert: X
    expr: up == 0
    labels:
      instance: '{{ $labels.instance'
    annotations:
      summary: '{{ $value | humanise }} down'
      ok: '{{ $labels.job }} {{ $value | humanize }}'
  - record: job:x
    expr: x
    labels:
      raw: '{{ not a template here'
";
        let (_, d) = load_str("r.yml", text);
        let got: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "r.yml:7:17: labels.instance: template: unclosed action",
                "r.yml:9:16: annotations.summary: template: function \"humanise\" not defined",
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_where_it_is() {
        let bad = "\
groups:
- name: a
  rules:
  - alert: X
    expr: up == 0
    for: 5 minutes
    lables: {}
  - record: job:x
    expr: x
    for: 1m
  - alert: Y
  - expr: z
- name: a
  interval: soon
  rules:
  - alert: Z
    record: z
    expr: z
    labels: { 9x: y }
";
        let (_, d) = load_str("r.yml", bad);
        let got: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "r.yml:6:10: for: invalid duration \"5 minutes\" (Prometheus durations look like 30s, 5m, 1h30m, 1d)",
                "r.yml:7:5: unknown field \"lables\" (did you mean \"labels\"?)",
                "r.yml:10:5: `for` is only for alerting rules, not `record:`",
                "r.yml:11:5: missing field \"expr\"",
                "r.yml:12:5: a rule needs `alert:` or `record:`",
                "r.yml:13:9: group name \"a\" is already used at 2:9",
                "r.yml:14:13: interval: invalid duration \"soon\" (Prometheus durations look like 30s, 5m, 1h30m, 1d)",
                "r.yml:17:13: a rule has either `alert:` or `record:`, not both",
            ]
        );
    }
}
