//! Loading the daemon config (file + `MEDIC_` environment), with positions.
//!
//! The `config` crate merges the YAML file with environment overrides:
//! `MEDIC_` prefix, `__` between levels, keys lower-cased, values parsed as
//! booleans and numbers where they look like them, and `MEDIC_RULES` split
//! on commas (`MEDIC_MODE=enforce`, `MEDIC_STORE__SQLITE__PATH=/x.db`,
//! `MEDIC_RULES=rules,extra-rules`). Only variables whose first level is a
//! config field are taken, so the CLI's own (`MEDIC_CONFIG`, `MEDIC_LOG`)
//! are left alone.
//!
//! The merged tree is then rebuilt as a `marked_yaml` node that keeps the
//! file's positions, and deserialized section by section so that every
//! problem is reported: at `path:line:col` when it comes from the file, or
//! under the variable's name when it comes from the environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat, Value, ValueKind};
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::{Node, Span};
use serde::de::DeserializeOwned;

use super::{
    Config, EscalationPolicy, GlobalLimits, LeadershipConfig, NotifierConfig, StoreConfig,
    TargetConfig,
};
use crate::config::Mode;
use crate::diag::{Diagnostic, Diagnostics, did_you_mean};
use crate::duration::Dur;
use crate::features::Feature;
use crate::secret::SecretOrInline;
use crate::yaml::{self, Cursor, Pos, describe, key_pos, unknown_field};

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "MEDIC_";
/// What the `config` crate names values that came from the environment.
const ENV_ORIGIN: &str = "the environment";

/// Loads `path` and applies `MEDIC_`-prefixed environment overrides.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let config = load_with_env(path, process_env())?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    Ok(config)
}

/// Loads `path` with `env` standing in for the process environment (tests).
pub fn load_with_env(path: &Path, env: HashMap<String, String>) -> Result<Config, Diagnostics> {
    finish(load_checked(path, env))
}

/// Parses config text (no environment overrides); `origin` names it in errors.
/// Relative paths in it resolve against `origin`'s directory.
pub fn load_str(origin: &str, text: &str) -> Result<Config, Diagnostics> {
    load_str_with_env(origin, text, HashMap::new())
}

/// Parses config text with `env` as the environment.
pub fn load_str_with_env(
    origin: &str,
    text: &str,
    env: HashMap<String, String>,
) -> Result<Config, Diagnostics> {
    finish(load_str_checked(origin, text, env))
}

/// The process environment's `MEDIC_` variables (non-Unicode ones skipped).
pub fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| has_prefix(k))
        .collect()
}

fn finish((config, diags): (Option<Config>, Vec<Diagnostic>)) -> Result<Config, Diagnostics> {
    match config {
        Some(c) if diags.is_empty() => Ok(c),
        _ => Err(Diagnostics(diags)),
    }
}

/// Loads and validates; the config is `Some` when it parsed, even if
/// validation found problems (so rules can still be checked against it).
pub(crate) fn load_checked(
    path: &Path,
    env: HashMap<String, String>,
) -> (Option<Config>, Vec<Diagnostic>) {
    let origin = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => load_str_checked(&origin, &text, env),
            Err(_) => (None, vec![Diagnostic::new(origin, 0, 0, "not valid UTF-8")]),
        },
        Err(e) => (
            None,
            vec![Diagnostic::new(origin, 0, 0, format!("cannot read: {e}"))],
        ),
    }
}

pub(crate) fn load_str_checked(
    origin: &str,
    text: &str,
    env: HashMap<String, String>,
) -> (Option<Config>, Vec<Diagnostic>) {
    let file = match yaml::parse(origin, text) {
        Ok(n) => n,
        Err(d) => return (None, vec![d]),
    };
    let fields = yaml::field_names::<Config>();
    let mut cx = Cx {
        y: Cursor::new(origin),
        env: Vec::new(),
        warnings: Vec::new(),
    };
    if let Some(m) = file.as_mapping() {
        cx.y.unknown_keys(m, fields);
    }

    let mut overrides = config::Map::new();
    for (name, value) in env {
        if !has_prefix(&name) {
            continue;
        }
        let dotted = name[ENV_PREFIX.len()..].to_lowercase().replace("__", ".");
        let top = dotted.split('.').next().unwrap_or_default();
        if fields.contains(&top) {
            cx.env.push((dotted, name.clone()));
            overrides.insert(name, value);
        }
    }
    cx.env.sort();

    let built = config::Config::builder()
        .add_source(File::from_str(text, FileFormat::Yaml))
        .add_source(
            Environment::with_prefix(ENV_PREFIX.trim_end_matches('_'))
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("rules")
                .source(Some(overrides)),
        )
        .build();
    let mut merged = match built {
        Ok(c) => to_node(&c.cache, Some(&file), &|k| fields.contains(&k)),
        Err(e) => {
            cx.y.out.push(Diagnostic::new(origin, 0, 0, e.to_string()));
            return (None, cx.y.out);
        }
    };
    // `depends_on`, `zone`, `budget` sit beside a target's kind: read them
    // (with positions from the whole tree), then take them out so the
    // kind reads alone.
    let whole = merged.clone();
    let links = cx.take_links(&whole, &mut merged);

    cx.sections(&merged);
    if !cx.y.out.is_empty() {
        return (None, sorted(cx.y.out));
    }
    let mut config = match marked_yaml::from_node::<Config>(&merged) {
        Ok(c) => c,
        Err(e) => {
            let d = cx.at_error("", &merged, &e);
            cx.y.out.push(d);
            return (None, cx.y.out);
        }
    };
    config.base_dir = match Path::new(origin).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut links = links;
    // The `zones:` section and a target's `zone:` say the same thing: the
    // section fills in what a target leaves out (a disagreement is
    // reported by the zones' validation).
    for (zone, z) in &config.zones {
        for t in &z.targets {
            let l = links.entry(t.clone()).or_default();
            if l.zone.is_none() {
                l.zone = Some(zone.clone());
            }
        }
    }
    config.topology = super::Topology::new(links);
    cx.validate(&config, &merged);
    cx.validate_topology(&config, &whole);
    if let Some(p) = config.public_status.as_mut() {
        // Where each component's scenario names sit: the rules, loaded
        // later, say which are unknown (`rules::overlap`).
        let mut refs = Vec::new();
        for (name, c) in &p.components {
            for (i, s) in c.scenarios.iter().enumerate() {
                let at = format!("public_status.components.{name}.scenarios[{i}]");
                refs.push((s.clone(), cx.at_path(&merged, &at, false, String::new())));
            }
        }
        p.scenario_refs = refs;
    }
    config.warnings = sorted(std::mem::take(&mut cx.warnings));
    (Some(config), sorted(cx.y.out))
}

fn has_prefix(name: &str) -> bool {
    name.len() > ENV_PREFIX.len()
        && name.is_char_boundary(ENV_PREFIX.len())
        && name[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX)
}

/// File diagnostics in position order; environment ones after them.
fn sorted(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort_by_key(|d| (d.line == 0, d.line, d.col));
    diags
}

/// Rebuilds a merged `config` value as a marked node: file values keep
/// their node (position, quoting), environment values get a blank span.
/// File keys come first in file order, then added keys by name, so errors
/// are reported in a stable order.
fn to_node(v: &Value, file: Option<&Node>, keep: &dyn Fn(&str) -> bool) -> Node {
    let from_env = v.origin() == Some(ENV_ORIGIN);
    match &v.kind {
        ValueKind::Table(t) => {
            let fm = file.and_then(Node::as_mapping);
            let span = fm.map_or_else(Span::new_blank, |m| *m.span());
            let mut out = MarkedMappingNode::new_empty(span);
            let present = |v: &&Value| !matches!(v.kind, ValueKind::Nil);
            if let Some(fm) = fm {
                for (k, fv) in fm.iter() {
                    if let Some(cv) = t.get(k.as_str()).filter(present)
                        && keep(k.as_str())
                    {
                        out.insert(k.clone(), to_node(cv, Some(fv), &|_| true));
                    }
                }
            }
            let mut added: Vec<(&String, &Value)> = t
                .iter()
                .filter(|(k, v)| {
                    keep(k) && present(v) && fm.is_none_or(|m| !m.contains_key(k.as_str()))
                })
                .collect();
            added.sort_by(|a, b| a.0.cmp(b.0));
            for (k, cv) in added {
                let key = MarkedScalarNode::new(Span::new_blank(), k.clone());
                out.insert(key, to_node(cv, None, &|_| true));
            }
            Node::Mapping(out)
        }
        ValueKind::Array(items) => {
            let fs = file.and_then(Node::as_sequence);
            let span = fs.map_or_else(Span::new_blank, |s| *s.span());
            let nodes: Vec<Node> = items
                .iter()
                .enumerate()
                .map(|(i, item)| to_node(item, fs.and_then(|s| s.get(i)), &|_| true))
                .collect();
            Node::Sequence(MarkedSequenceNode::new(span, nodes))
        }
        kind => {
            if !from_env && let Some(Node::Scalar(s)) = file {
                return Node::Scalar(s.clone());
            }
            let text = match kind {
                ValueKind::Nil => String::new(),
                ValueKind::Boolean(b) => b.to_string(),
                ValueKind::I64(i) => i.to_string(),
                ValueKind::I128(i) => i.to_string(),
                ValueKind::U64(i) => i.to_string(),
                ValueKind::U128(i) => i.to_string(),
                ValueKind::Float(f) => f.to_string(),
                ValueKind::String(s) => s.clone(),
                ValueKind::Table(_) | ValueKind::Array(_) => String::new(),
            };
            Node::Scalar(MarkedScalarNode::new(Span::new_blank(), text))
        }
    }
}

/// The cursor (the file's origin, the problems found), and where the
/// environment overrides came from.
struct Cx<'a> {
    y: Cursor<'a>,
    /// Environment overrides taken: (dotted lower-case key, variable name).
    env: Vec<(String, String)>,
    /// Warnings (see [`Config::warnings`]).
    warnings: Vec<Diagnostic>,
}

impl Cx<'_> {
    /// A diagnostic for the value at `path` of the merged tree: at its
    /// position in the file, or under the environment variable that set it.
    fn at_path(&self, root: &Node, path: &str, on_key: bool, msg: String) -> Diagnostic {
        if let Some(p) = find(root, path, on_key) {
            return Diagnostic::new(self.y.origin, p.0, p.1, msg);
        }
        let var = self
            .env
            .iter()
            .find(|(k, _)| k == path)
            .or_else(|| {
                self.env
                    .iter()
                    .find(|(k, _)| k.starts_with(&format!("{path}.")))
            })
            .or_else(|| {
                self.env
                    .iter()
                    .find(|(k, _)| path.starts_with(&format!("{k}.")))
            });
        match var {
            Some((_, name)) => Diagnostic::new(name.clone(), 0, 0, msg),
            None => Diagnostic::new(self.y.origin, 0, 0, msg),
        }
    }

    /// A serde error from deserializing the node at `prefix`.
    fn at_error(&self, prefix: &str, root: &Node, e: &marked_yaml::FromNodeError) -> Diagnostic {
        let rel = e.path().unwrap_or_default();
        let path = join(prefix, rel);
        let msg = yaml::serde_message(e);
        let on_key = msg.starts_with("unknown field");
        self.at_path(root, &path, on_key, msg)
    }

    fn section<T: DeserializeOwned>(&mut self, root: &Node, path: &str, node: &Node) {
        if let Err(e) = marked_yaml::from_node::<T>(node) {
            let mut d = self.at_error(path, root, &e);
            if path == "mode" {
                d.message = d.message.replace("unknown value", "unknown mode");
            }
            self.y.out.push(d);
        }
    }

    /// `NAME: { KIND: {...} }` entries of a map section, each on its own.
    fn named_kinds(
        &mut self,
        root: &Node,
        section: &str,
        node: &Node,
        kinds: &[&str],
        what: &str,
        check: impl Fn(&mut Self, &str, &Node),
    ) {
        let Some(m) = node.as_mapping() else {
            let msg = format!(
                "expected a mapping of names to {what}s, found {}",
                describe(node)
            );
            let d = self.at_path(root, section, false, msg);
            self.y.out.push(d);
            return;
        };
        for (name, entry) in m.iter() {
            let path = format!("{section}.{}", name.as_str());
            let kind = match entry.as_mapping().map(|em| em.iter().collect::<Vec<_>>()) {
                Some(v) if v.len() == 1 => v[0].0,
                _ => {
                    let msg = format!(
                        "a {what} is `{{ KIND: {{...}} }}` with KIND one of: {}",
                        kinds.join(", ")
                    );
                    let d = self.at_path(root, &path, false, msg);
                    self.y.out.push(d);
                    continue;
                }
            };
            if !kinds.contains(&kind.as_str()) {
                let msg = unknown_field(&format!("{what} kind"), kind.as_str(), kinds);
                let d = self.at_path(root, &format!("{path}.{}", kind.as_str()), true, msg);
                self.y.out.push(d);
                continue;
            }
            check(self, &path, entry);
        }
    }

    /// Takes [`super::topology::LINK_KEYS`] out of every target of
    /// `merged` and reads them; problems point into `whole`.
    fn take_links(
        &mut self,
        whole: &Node,
        merged: &mut Node,
    ) -> std::collections::BTreeMap<String, super::TargetLinks> {
        use super::topology::LINK_KEYS;
        let mut out = std::collections::BTreeMap::new();
        let Some(targets) = merged
            .as_mapping_mut()
            .and_then(|m| m.get_mut("targets"))
            .and_then(Node::as_mapping_mut)
        else {
            return out;
        };
        for (name, entry) in targets.iter_mut() {
            let Some(em) = entry.as_mapping_mut() else {
                continue;
            };
            let mut links = MarkedMappingNode::new_empty(*em.span());
            for key in LINK_KEYS {
                if let Some((k, v)) = em.remove_entry(*key) {
                    links.insert(k, v);
                }
            }
            if links.is_empty() {
                continue;
            }
            let path = format!("targets.{}", name.as_str());
            match marked_yaml::from_node::<super::TargetLinks>(&Node::Mapping(links)) {
                Ok(l) => {
                    out.insert(name.as_str().to_string(), l);
                }
                Err(e) => {
                    let d = self.at_error(&path, whole, &e);
                    self.y.out.push(d);
                }
            }
        }
        out
    }

    /// `depends_on` names known targets, never the target itself, and
    /// makes no cycle; budgets allow at least one change.
    fn validate_topology(&mut self, config: &Config, whole: &Node) {
        let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
        for (name, links) in config.topology.iter() {
            for (i, d) in links.depends_on.iter().enumerate() {
                let at = format!("targets.{name}.depends_on[{i}]");
                if !config.targets.contains_key(d) {
                    let mut msg = format!("unknown target {d:?} in depends_on");
                    if let Some(hint) = did_you_mean(d, known.iter().copied()) {
                        msg = format!("{msg} ({hint})");
                    }
                    self.err(whole, &at, msg);
                }
            }
            if links.budget.changes == 0 || links.budget.per.get().is_zero() {
                self.err(
                    whole,
                    &format!("targets.{name}.budget"),
                    "a target's budget allows at least 1 change over a period longer than 0s",
                );
            }
        }
        for cycle in config.topology.cycles() {
            let at = format!("targets.{}.depends_on", cycle[0]);
            let msg = format!(
                "dependency cycle: {} (a dependent waits on its cause; a cycle would wait forever)",
                cycle.join(" → ")
            );
            self.err(whole, &at, msg);
        }
    }

    fn sections(&mut self, root: &Node) {
        let Some(m) = root.as_mapping() else { return };
        for (k, v) in m.iter() {
            let key = k.as_str();
            match key {
                "mode" => self.section::<Mode>(root, key, v),
                "rules" => self.section::<Vec<PathBuf>>(root, key, v),
                "store" => self.section::<StoreConfig>(root, key, v),
                "limits" => self.section::<GlobalLimits>(root, key, v),
                "alerts" => self.section::<super::AlertLimits>(root, key, v),
                "metrics" => self.section::<super::MetricsConfig>(root, key, v),
                "shutdown_grace" => self.section::<Dur>(root, key, v),
                "http" => self.section::<super::HttpConfig>(root, key, v),
                "slack" => self.section::<super::SlackApp>(root, key, v),
                "public_status" => self.section::<super::PublicStatus>(root, key, v),
                "maintenance" => self.section::<Vec<super::MaintenanceWindow>>(root, key, v),
                "jobs" | "drills" => match v.as_mapping() {
                    Some(m) => {
                        for (name, entry) in m.iter() {
                            let path = format!("{key}.{}", name.as_str());
                            if key == "jobs" {
                                self.section::<super::JobConfig>(root, &path, entry);
                            } else {
                                self.section::<super::DrillConfig>(root, &path, entry);
                            }
                        }
                    }
                    None => {
                        let msg = format!("expected a mapping of names, found {}", describe(v));
                        let d = self.at_path(root, key, false, msg);
                        self.y.out.push(d);
                    }
                },
                "leadership" => self.section::<LeadershipConfig>(root, key, v),
                "zones" => match v.as_mapping() {
                    Some(m) => {
                        for (name, entry) in m.iter() {
                            let path = format!("zones.{}", name.as_str());
                            self.section::<super::zones::ZoneConfig>(root, &path, entry);
                        }
                    }
                    None => {
                        let msg =
                            format!("expected a mapping of zone names, found {}", describe(v));
                        let d = self.at_path(root, key, false, msg);
                        self.y.out.push(d);
                    }
                },
                "targets" => self.named_kinds(
                    root,
                    key,
                    v,
                    TargetConfig::KINDS,
                    "target",
                    |cx, path, entry| cx.section::<TargetConfig>(root, path, entry),
                ),
                "notifiers" => self.named_kinds(
                    root,
                    key,
                    v,
                    NotifierConfig::KINDS,
                    "notifier",
                    |cx, path, entry| cx.section::<NotifierConfig>(root, path, entry),
                ),
                "escalation" => match v.as_mapping() {
                    Some(pm) => {
                        for (name, policy) in pm.iter() {
                            let path = format!("escalation.{}", name.as_str());
                            self.section::<EscalationPolicy>(root, &path, policy);
                        }
                    }
                    None => {
                        let msg = format!(
                            "expected a mapping of names to escalation policies, found {}",
                            describe(v)
                        );
                        let d = self.at_path(root, key, false, msg);
                        self.y.out.push(d);
                    }
                },
                // Unknown top-level keys were reported from the file already;
                // a field added to Config but not here is caught by the final
                // whole-config pass.
                _ => {}
            }
        }
    }

    fn err(&mut self, root: &Node, path: &str, msg: impl Into<String>) {
        let d = self.at_path(root, path, false, msg.into());
        self.y.out.push(d);
    }

    /// A drill job's `notify`: known notifiers that take reports (not
    /// PagerDuty: a report is not a page).
    fn validate_report_notifiers(
        &mut self,
        root: &Node,
        config: &super::Config,
        at: &str,
        notify: &[String],
    ) {
        for (i, n) in notify.iter().enumerate() {
            match config.notifiers.get(n) {
                None => {
                    let names: Vec<&str> = config.notifiers.keys().map(String::as_str).collect();
                    let mut msg = format!("unknown notifier {n:?}");
                    if let Some(hint) = did_you_mean(n, names.iter().copied()) {
                        msg = format!("{msg} ({hint})");
                    }
                    self.err(root, &format!("{at}.notify[{i}]"), msg);
                }
                Some(super::NotifierConfig::PagerDuty(_)) => self.err(
                    root,
                    &format!("{at}.notify[{i}]"),
                    format!(
                        "notifier {n:?} is PagerDuty, which takes pages, not reports: send drill reports to a channel (slack, email, webhook, log)"
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    /// A backup job's places (at least one, names unique, exactly one kind
    /// each, each kind's own fields) and its retention (`retention` or
    /// `keep`, not both).
    fn validate_backup_storage(&mut self, root: &Node, at: &str, st: &super::BackupStorage<'_>) {
        if st.directory.is_none() && st.s3.is_none() && st.places.is_empty() {
            self.err(
                root,
                at,
                "a backup needs at least one place: `directory`, `s3` or `places`",
            );
        }
        if let Some(s3) = st.s3 {
            self.validate_s3(root, &format!("{at}.s3"), s3);
        }
        // The old keys' places are named `directory` and `s3`.
        let mut seen: Vec<String> = Vec::new();
        if st.directory.is_some() {
            seen.push("directory".into());
        }
        if st.s3.is_some() {
            seen.push("s3".into());
        }
        for (i, p) in st.places.iter().enumerate() {
            let pat = format!("{at}.places[{i}]");
            if p.name.is_empty()
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                self.err(
                    root,
                    &format!("{pat}.name"),
                    format!(
                        "{:?} is not a place name (letters, digits, - and _)",
                        p.name
                    ),
                );
            } else if seen.contains(&p.name) {
                self.err(
                    root,
                    &format!("{pat}.name"),
                    format!("the place name {:?} is used twice in this job", p.name),
                );
            }
            seen.push(p.name.clone());
            if p.kinds() != 1 {
                self.err(
                    root,
                    &pat,
                    "a place needs exactly one of `directory`, `s3`, `azure`",
                );
            }
            if let Some(s3) = &p.s3 {
                self.validate_s3(root, &format!("{pat}.s3"), s3);
            }
            if let Some(az) = &p.azure {
                self.validate_azure(root, &format!("{pat}.azure"), az);
            }
        }
        if let Some(k) = st.keep {
            if st.retention.is_some() {
                self.err(
                    root,
                    &format!("{at}.keep"),
                    "use `keep` (tiers) or `retention`, not both",
                );
            }
            if k.tiers().is_empty() {
                self.err(
                    root,
                    &format!("{at}.keep"),
                    "`keep` needs at least one tier: daily, weekly, monthly, yearly",
                );
            }
            for (tier, d) in k.tiers() {
                if d.get().is_zero() {
                    self.err(
                        root,
                        &format!("{at}.keep.{tier}"),
                        format!("{tier} must be longer than 0s"),
                    );
                }
            }
        }
    }

    fn validate_s3(&mut self, root: &Node, at: &str, s3: &super::S3Config) {
        if let Some(why) = Feature::Aws.missing_for("backup storage `s3`") {
            self.err(root, at, why);
        }
        if s3.bucket.is_empty() {
            self.err(
                root,
                &format!("{at}.bucket"),
                "the bucket must not be empty",
            );
        }
    }

    /// Azure's naming rules (so a typo fails here, not at 02:00), one
    /// credential, a usable endpoint.
    fn validate_azure(&mut self, root: &Node, at: &str, az: &super::AzureConfig) {
        let a = &az.account;
        if !(3..=24).contains(&a.len())
            || !a
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            self.err(
                root,
                &format!("{at}.account"),
                format!("{a:?} is not a storage account name (3-24 lowercase letters and digits)"),
            );
        }
        let c = &az.container;
        if !(3..=63).contains(&c.len())
            || !c
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
            || c.starts_with('-')
            || c.ends_with('-')
            || c.contains("--")
        {
            self.err(
                root,
                &format!("{at}.container"),
                format!(
                    "{c:?} is not a container name (3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit)"
                ),
            );
        }
        match (&az.key, &az.sas) {
            (Some(_), Some(_)) => self.err(root, at, "use `key` or `sas`, not both"),
            (None, None) => self.err(
                root,
                at,
                "azure needs a credential: `key` (the account key) or `sas` (a SAS token)",
            ),
            _ => {}
        }
        if let Some(u) = &az.endpoint_url {
            match reqwest::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.query().is_none() => {}
                _ => self.err(
                    root,
                    &format!("{at}.endpoint_url"),
                    format!("{u:?} is not an http(s) URL without a query"),
                ),
            }
        }
    }

    /// The intake bounds: each at least 1 and within what one process
    /// can hold (a bound that high is no bound).
    fn validate_alert_limits(&mut self, a: &super::AlertLimits, root: &Node) {
        const MIB: usize = 1 << 20;
        if !(1024..=64 * MIB).contains(&a.max_delivery_bytes) {
            self.err(
                root,
                "alerts.max_delivery_bytes",
                "max_delivery_bytes must be between 1024 and 67108864 (64 MiB)",
            );
        }
        if !(1..=100_000).contains(&a.max_per_delivery) {
            self.err(
                root,
                "alerts.max_per_delivery",
                "max_per_delivery must be between 1 and 100000",
            );
        }
        if !(1..=1_000_000).contains(&a.max_firing) {
            self.err(
                root,
                "alerts.max_firing",
                "max_firing must be between 1 and 1000000",
            );
        }
        if a.resolved_retention.get() < std::time::Duration::from_secs(60) {
            self.err(
                root,
                "alerts.resolved_retention",
                "resolved_retention must be at least 1m (a resolved alert must outlive Alertmanager's re-deliveries)",
            );
        }
    }

    fn warn(&mut self, root: &Node, path: &str, msg: impl AsRef<str>) {
        let d = self.at_path(root, path, false, format!("warning: {}", msg.as_ref()));
        self.warnings.push(d);
    }

    /// `http:`: credentials that can be used, bounds, and warnings for
    /// what a non-loopback listener exposes.
    fn validate_http(&mut self, config: &Config, root: &Node) {
        let Some(http) = &config.http else { return };
        if let Some(intake) = &http.intake {
            let creds = intake.bearer.is_some() || intake.basic.is_some();
            if intake.open && creds {
                self.err(
                    root,
                    "http.intake.open",
                    "`open: true` takes no credentials: remove `bearer`/`basic`, or `open`",
                );
            } else if !intake.open && !creds {
                self.err(
                    root,
                    "http.intake",
                    "the intake needs `bearer: {env: NAME}`, `basic: {username, password}` or `open: true`",
                );
            }
            if let Some(b) = &intake.basic
                && (b.username.is_empty() || b.username.contains(':'))
            {
                self.err(
                    root,
                    "http.intake.basic.username",
                    "the username must not be empty or contain `:`",
                );
            }
        }
        for (field, d) in [
            ("header_timeout", http.header_timeout),
            ("request_timeout", http.request_timeout),
        ] {
            if d.get() < std::time::Duration::from_millis(100) {
                self.err(
                    root,
                    &format!("http.{field}"),
                    format!("{field} must be at least 100ms"),
                );
            }
        }
        for (field, n) in [
            ("max_in_flight", http.max_in_flight),
            ("max_connections", http.max_connections),
        ] {
            if n == 0 {
                self.err(
                    root,
                    &format!("http.{field}"),
                    format!("{field} must be at least 1"),
                );
            }
        }
        if let Some(tls) = &http.tls {
            for (field, p) in [("cert", &tls.cert), ("key", &tls.key)] {
                if p.as_os_str().is_empty() {
                    self.err(
                        root,
                        &format!("http.tls.{field}"),
                        format!("the {field} path must not be empty"),
                    );
                }
            }
        }
        if !http.listen.ip().is_loopback() {
            let at = http.listen;
            if http.open_reads {
                self.warn(
                    root,
                    "http.open_reads",
                    format!(
                        "open reads on {at}, not a loopback address: anyone who reaches it reads incidents, timelines and job runs"
                    ),
                );
            }
            if http.intake_is_open() {
                self.warn(
                    root,
                    "http.intake.open",
                    format!(
                        "an open intake on {at}, not a loopback address: anyone who reaches it can post alerts"
                    ),
                );
            }
        }
    }

    /// Checks what serde cannot: references between sections, bounds.
    fn validate(&mut self, config: &Config, root: &Node) {
        if config.rules.is_empty() {
            self.err(root, "rules", "name at least one rule file or directory");
        }
        match &config.leadership {
            Some(LeadershipConfig::Postgres(l)) => {
                if !matches!(config.store, StoreConfig::Postgres(_)) {
                    self.err(
                        root,
                        "leadership.postgres",
                        "an advisory lock needs the PostgreSQL store (store: {postgres: ...})",
                    );
                }
                if l.lease_duration.get() < std::time::Duration::from_secs(1) {
                    self.err(
                        root,
                        "leadership.postgres.lease_duration",
                        "lease_duration must be at least 1s",
                    );
                }
            }
            Some(LeadershipConfig::Kubernetes(l)) => {
                if let Some(why) = Feature::Kubernetes.missing_for("leadership `kubernetes`") {
                    self.err(root, "leadership.kubernetes", why);
                }
                if l.lease_duration.get() < std::time::Duration::from_secs(1) {
                    self.err(
                        root,
                        "leadership.kubernetes.lease_duration",
                        "lease_duration must be at least 1s",
                    );
                }
                if l.name.is_empty() {
                    self.err(root, "leadership.kubernetes.name", "name must not be empty");
                }
            }
            _ => {}
        }
        if config.limits.concurrent_checks == 0 {
            self.err(
                root,
                "limits.concurrent_checks",
                "concurrent_checks must be at least 1",
            );
        }
        if config.limits.actions_in_flight == 0 {
            self.err(
                root,
                "limits.actions_in_flight",
                "actions_in_flight must be at least 1",
            );
        }
        if !(1..=100).contains(&config.limits.blast_radius.percent) {
            self.err(
                root,
                "limits.blast_radius.percent",
                "percent must be between 1 and 100",
            );
        }
        self.validate_alert_limits(&config.alerts, root);
        for (i, w) in config.maintenance.iter().enumerate() {
            let at = format!("maintenance[{i}]");
            if w.scenario.is_none() && w.target.is_none() {
                self.err(
                    root,
                    &at,
                    "a maintenance window needs `scenario` or `target`",
                );
            }
            if w.end <= w.start {
                self.err(
                    root,
                    &format!("{at}.end"),
                    "a maintenance window must end after it starts",
                );
            }
            if let Some(t) = &w.target
                && !config.targets.contains_key(t)
            {
                let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
                let mut msg = format!("unknown target {t:?}");
                if let Some(hint) = did_you_mean(t, known.iter().copied()) {
                    msg = format!("{msg} ({hint})");
                }
                self.err(root, &format!("{at}.target"), msg);
            }
        }
        if let StoreConfig::Sqlite { path } = &config.store
            && path.as_os_str().is_empty()
        {
            self.err(
                root,
                "store.sqlite.path",
                "the store path must not be empty",
            );
        }
        for (name, target) in &config.targets {
            self.validate_target(root, name, target, &config.targets);
        }
        self.validate_jobs(config, root);
        self.validate_zones(config, root);
        self.validate_notifiers(config, root);
        self.validate_http(config, root);
        self.validate_public(config, root);
        let notifiers: Vec<&str> = config.notifiers.keys().map(String::as_str).collect();
        for (name, policy) in &config.escalation {
            let at = format!("escalation.{name}");
            if policy.levels.is_empty() {
                self.err(
                    root,
                    &format!("{at}.levels"),
                    "an escalation policy needs at least one level",
                );
            }
            let mut previous: Option<Dur> = None;
            for (i, level) in policy.levels.iter().enumerate() {
                let lp = format!("{at}.levels[{i}]");
                if let Some(prev) = previous
                    && level.after < prev
                {
                    self.err(
                        root,
                        &format!("{lp}.after"),
                        format!(
                            "levels must be in order: {} comes after {prev}",
                            level.after
                        ),
                    );
                }
                previous = Some(level.after);
                if level.notify.is_empty() {
                    self.err(
                        root,
                        &format!("{lp}.notify"),
                        "a level needs at least one notifier",
                    );
                }
                for (j, n) in level.notify.iter().enumerate() {
                    if !config.notifiers.contains_key(n) {
                        let mut msg = format!("unknown notifier {n:?}");
                        match did_you_mean(n, notifiers.iter().copied()) {
                            Some(hint) => msg = format!("{msg} ({hint})"),
                            None => msg = format!("{msg} (defined: {})", notifiers.join(", ")),
                        }
                        self.err(root, &format!("{lp}.notify[{j}]"), msg);
                    }
                }
            }
        }
    }

    /// Jobs and drills: schedules parse, references resolve.
    fn validate_jobs(&mut self, config: &Config, root: &Node) {
        let postgres_target = |cx: &mut Self, at: &str, t: &str| match config.targets.get(t) {
            Some(TargetConfig::Postgres(pt)) if pt.is_cluster() => cx.err(
                root,
                at,
                format!(
                    "target {t:?} is a cluster ({}); a job runs against one server: name a member",
                    pt.members.join(", ")
                ),
            ),
            Some(TargetConfig::Postgres(_)) => {}
            Some(other) => cx.err(
                root,
                at,
                format!(
                    "target {t:?} is a {} target; a postgres one is needed",
                    other.kind()
                ),
            ),
            None => {
                let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
                let mut msg = format!("unknown target {t:?}");
                if let Some(hint) = did_you_mean(t, known.iter().copied()) {
                    msg = format!("{msg} ({hint})");
                }
                cx.err(root, at, msg);
            }
        };
        let redis_target = |cx: &mut Self, at: &str, t: &str| match config.targets.get(t) {
            Some(TargetConfig::Redis(rt)) if rt.is_cluster() => cx.err(
                root,
                at,
                format!(
                    "target {t:?} is a cluster ({}); a job runs against one server: name a member",
                    rt.members.join(", ")
                ),
            ),
            Some(TargetConfig::Redis(_)) => {}
            Some(other) => cx.err(
                root,
                at,
                format!(
                    "target {t:?} is a {} target; a redis one is needed",
                    other.kind()
                ),
            ),
            None => {
                let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
                let mut msg = format!("unknown target {t:?}");
                if let Some(hint) = did_you_mean(t, known.iter().copied()) {
                    msg = format!("{msg} ({hint})");
                }
                cx.err(root, at, msg);
            }
        };
        let backup_job = |cx: &mut Self, at: &str, b: &str| match config.jobs.get(b) {
            Some(j) if j.backup.is_some() => {}
            Some(_) => cx.err(root, at, format!("job {b:?} is not a postgres.backup job")),
            None => cx.err(root, at, format!("unknown job {b:?}")),
        };
        let any_backup_job = |cx: &mut Self, at: &str, b: &str| match config.jobs.get(b) {
            Some(j) if j.backup_storage().is_some() => {}
            Some(_) => cx.err(
                root,
                at,
                format!("job {b:?} is not a postgres.backup or redis.backup job"),
            ),
            None => cx.err(root, at, format!("unknown job {b:?}")),
        };
        for (name, job) in &config.jobs {
            let at = format!("jobs.{name}");
            if let Err(e) = crate::schedule::Schedule::parse(&job.schedule, &job.timezone) {
                let field = if matches!(e, crate::schedule::ScheduleError::TimeZone(_)) {
                    "timezone"
                } else {
                    "schedule"
                };
                self.err(root, &format!("{at}.{field}"), e.to_string());
            }
            if job.kind().is_none() {
                self.err(
                    root,
                    &at,
                    format!(
                        "a job needs exactly one kind: {}",
                        super::JobConfig::KINDS.join(", ")
                    ),
                );
            }
            if let Some(b) = &job.backup {
                let at = format!("{at}.postgres.backup");
                postgres_target(self, &format!("{at}.target"), &b.target);
                if b.compress > 9 {
                    self.err(root, &format!("{at}.compress"), "compress must be 0 to 9");
                }
                if let Some(st) = job.backup_storage() {
                    self.validate_backup_storage(root, &at, &st);
                }
            }
            if let Some(r) = &job.redis_backup {
                let at = format!("{at}.redis.backup");
                redis_target(self, &format!("{at}.target"), &r.target);
                if let Some(st) = job.backup_storage() {
                    self.validate_backup_storage(root, &at, &st);
                }
                if r.save_timeout.get().is_zero() {
                    self.err(
                        root,
                        &format!("{at}.save_timeout"),
                        "save_timeout must be longer than 0s",
                    );
                }
            }
            if let Some(d) = &job.drill {
                let at = format!("{at}.drill.sandbox");
                let known = super::SANDBOX_SCENARIOS;
                if !known.contains(&d.scenario.as_str()) {
                    self.err(
                        root,
                        &format!("{at}.scenario"),
                        format!(
                            "the sandbox drills {}; not {:?}",
                            known.join(", "),
                            d.scenario
                        ),
                    );
                }
                self.validate_report_notifiers(root, config, &at, &d.notify);
            }
            if let Some(d) = &job.drill_target {
                let at = format!("{at}.drill.target");
                match config.drills.get(&d.target) {
                    None => self.err(
                        root,
                        &format!("{at}.target"),
                        format!(
                            "target {:?} is not marked for drills: add it under `drills:` with `drill: allowed` and its `inject` command",
                            d.target
                        ),
                    ),
                    Some(m) if m.drill != super::DrillPermission::Allowed => self.err(
                        root,
                        &format!("{at}.target"),
                        format!("target {:?} is marked `drill: forbidden`", d.target),
                    ),
                    Some(m) if !m.scenarios.is_empty() && !m.scenarios.contains(&d.scenario) => {
                        self.err(
                            root,
                            &format!("{at}.scenario"),
                            format!(
                                "target {:?} allows drills of {} only",
                                d.target,
                                m.scenarios.join(", ")
                            ),
                        )
                    }
                    Some(_) => {}
                }
                self.validate_report_notifiers(root, config, &at, &d.notify);
            }
            if let Some(k) = &job.kubernetes_backup {
                let at = format!("{at}.kubernetes.backup");
                match config.targets.get(&k.target) {
                    Some(TargetConfig::Kubernetes(_)) => {}
                    Some(other) => self.err(
                        root,
                        &format!("{at}.target"),
                        format!(
                            "target {:?} is a {} target; a kubernetes one is needed",
                            k.target,
                            other.kind()
                        ),
                    ),
                    None => {
                        let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
                        let mut msg = format!("unknown target {:?}", k.target);
                        if let Some(hint) = did_you_mean(&k.target, known.iter().copied()) {
                            msg = format!("{msg} ({hint})");
                        }
                        self.err(root, &format!("{at}.target"), msg);
                    }
                }
                if let Some(why) = Feature::Kubernetes.missing_for("job `kubernetes.backup`") {
                    self.err(root, &at, why);
                }
                if let Some(st) = job.backup_storage() {
                    self.validate_backup_storage(root, &at, &st);
                }
                if let Some(ns) = &k.namespace
                    && (ns.is_empty()
                        || ns.len() > 63
                        || ns.starts_with('-')
                        || ns.ends_with('-')
                        || !ns
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
                {
                    self.err(
                        root,
                        &format!("{at}.namespace"),
                        format!("{ns:?} is not a namespace name (DNS-1123 label)"),
                    );
                }
                if let Some(e) = &k.encrypt {
                    if e.recipients.is_empty() && e.recipients_file.is_none() {
                        self.err(
                            root,
                            &format!("{at}.encrypt"),
                            "`encrypt` needs `recipients`, `recipients_file` or both",
                        );
                    }
                    for (i, r) in e.recipients.iter().enumerate() {
                        if !r.starts_with("age1") {
                            self.err(
                                root,
                                &format!("{at}.encrypt.recipients[{i}]"),
                                format!("{r:?} is not an age public key (age1...)"),
                            );
                        }
                    }
                }
            }
            if let Some(v) = &job.verify {
                any_backup_job(self, &format!("{at}.backup.verify.backup"), &v.backup);
            }
            if let Some(r) = &job.restore_test {
                let at = format!("{at}.postgres.restore-test");
                backup_job(self, &format!("{at}.backup"), &r.backup);
                if let Some(t) = &r.target {
                    postgres_target(self, &format!("{at}.target"), t);
                }
                for (i, t) in r.count.iter().enumerate() {
                    if t.is_empty()
                        || !t
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                    {
                        self.err(
                            root,
                            &format!("{at}.count[{i}]"),
                            format!("{t:?} is not a table name"),
                        );
                    }
                }
            }
        }
        for (name, d) in &config.drills {
            let at = format!("drills.{name}");
            if !config.targets.contains_key(name) {
                let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
                let mut msg = format!("unknown target {name:?}");
                if let Some(hint) = did_you_mean(name, known.iter().copied()) {
                    msg = format!("{msg} ({hint})");
                }
                self.err(root, &at, msg);
            }
            if d.inject.is_empty() {
                self.err(
                    root,
                    &format!("{at}.inject"),
                    "name the command that injects the failure",
                );
            }
        }
    }

    /// Zone targets exist and are in one zone each; probes are well formed.
    fn validate_zones(&mut self, config: &Config, root: &Node) {
        let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (zone, z) in &config.zones {
            for (i, t) in z.targets.iter().enumerate() {
                let at = format!("zones.{zone}.targets[{i}]");
                if !config.targets.contains_key(t) {
                    let mut msg = format!("unknown target {t:?}");
                    if let Some(hint) = did_you_mean(t, known.iter().copied()) {
                        msg = format!("{msg} ({hint})");
                    }
                    self.err(root, &at, msg);
                } else if let Some(other) = seen.insert(t, zone) {
                    self.err(
                        root,
                        &at,
                        format!(
                            "target {t:?} is already in zone {other:?}; a target is in one zone"
                        ),
                    );
                } else if let Some(own) = config.topology.links(t).zone.filter(|z| z != zone) {
                    self.err(
                        root,
                        &at,
                        format!(
                            "target {t:?} says zone: {own:?} on the target; a target is in one zone"
                        ),
                    );
                }
            }
            for (i, p) in z.vantage.iter().enumerate() {
                let at = format!("zones.{zone}.vantage[{i}]");
                match p {
                    super::zones::VantageProbe::Tcp(a) => {
                        let ok = a.rsplit_once(':').is_some_and(|(h, port)| {
                            !h.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                        });
                        if !ok {
                            self.err(
                                root,
                                &format!("{at}.tcp"),
                                format!("{a:?} must be HOST:PORT"),
                            );
                        }
                    }
                    super::zones::VantageProbe::Dns(d) => {
                        let ip = d.server.parse::<std::net::SocketAddr>().is_ok()
                            || d.server.parse::<std::net::IpAddr>().is_ok();
                        if !ip {
                            self.err(
                                root,
                                &format!("{at}.dns.server"),
                                format!("{:?} must be IP or IP:PORT", d.server),
                            );
                        }
                    }
                }
            }
            if z.every.get().is_zero() {
                self.err(
                    root,
                    &format!("zones.{zone}.every"),
                    "every must be above 0s",
                );
            }
            if z.timeout.get().is_zero() {
                self.err(
                    root,
                    &format!("zones.{zone}.timeout"),
                    "timeout must be above 0s",
                );
            }
        }
    }

    /// `public_status:`: components that name known targets, a
    /// Statuspage mapping of declared components, a listener of its own.
    fn validate_public(&mut self, config: &Config, root: &Node) {
        let Some(p) = &config.public_status else {
            return;
        };
        if p.components.is_empty() {
            self.err(
                root,
                "public_status.components",
                "declare at least one component (`NAME: { scenarios: [...], targets: [...] }`)",
            );
        }
        if let Some(http) = &config.http
            && http.listen == p.listen
            && p.listen.port() != 0
        {
            self.err(
                root,
                "public_status.listen",
                format!(
                    "{} is http.listen too: the public page needs a listener of its own",
                    p.listen
                ),
            );
        }
        let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
        for (name, c) in &p.components {
            let at = format!("public_status.components.{name}");
            if name.trim().is_empty() {
                self.err(root, &at, "a component needs a name");
            }
            if c.scenarios.is_empty() && c.targets.is_empty() {
                self.err(
                    root,
                    &at,
                    "a component needs `scenarios` or `targets` (what affects it)",
                );
            }
            for (i, t) in c.targets.iter().enumerate() {
                if !config.targets.contains_key(t) {
                    let mut msg = format!("unknown target {t:?}");
                    if let Some(hint) = did_you_mean(t, known.iter().copied()) {
                        msg = format!("{msg} ({hint})");
                    }
                    self.err(root, &format!("{at}.targets[{i}]"), msg);
                }
            }
        }
        if let Some(sp) = &p.statuspage {
            if !(sp.url.starts_with("http://") || sp.url.starts_with("https://")) {
                self.err(
                    root,
                    "public_status.statuspage.url",
                    format!("{:?} must start with http:// or https://", sp.url),
                );
            }
            let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if sp.page_id.is_empty() || !sp.page_id.chars().all(ok) {
                self.err(
                    root,
                    "public_status.statuspage.page_id",
                    "page_id must be Statuspage's page id (letters and digits)",
                );
            }
            let names: Vec<&str> = p.components.keys().map(String::as_str).collect();
            for (name, id) in &sp.components {
                let at = format!("public_status.statuspage.components.{name}");
                if !p.components.contains_key(name) {
                    let mut msg = format!("unknown component {name:?}");
                    if let Some(hint) = did_you_mean(name, names.iter().copied()) {
                        msg = format!("{msg} ({hint})");
                    }
                    self.err(root, &at, msg);
                }
                if id.is_empty() || !id.chars().all(ok) {
                    self.err(root, &at, "a Statuspage component id is letters and digits");
                }
            }
        }
    }

    fn validate_notifiers(&mut self, config: &Config, root: &Node) {
        let url = |cx: &mut Self, at: String, v: &str| {
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                cx.err(
                    root,
                    &at,
                    format!("{v:?} must start with http:// or https://"),
                );
            }
        };
        for (name, n) in &config.notifiers {
            match n {
                NotifierConfig::Log(_) => {}
                NotifierConfig::Slack(s) => {
                    let at = format!("notifiers.{name}.slack");
                    url(self, format!("{at}.api_url"), &s.api_url);
                    if s.channel.trim().is_empty() {
                        self.err(root, &format!("{at}.channel"), "channel must not be empty");
                    }
                }
                NotifierConfig::PagerDuty(p) => {
                    url(self, format!("notifiers.{name}.pagerduty.url"), &p.url);
                }
                NotifierConfig::Email(m) => self.validate_email(root, name, m),
                NotifierConfig::Webhook(w) => {
                    let at = format!("notifiers.{name}.webhook.url");
                    if let SecretOrInline::Inline(v) = &w.url {
                        if !(v.starts_with("http://") || v.starts_with("https://")) {
                            self.err(
                                root,
                                &at,
                                "the webhook URL must start with http:// or https://",
                            );
                        }
                        let d = self.at_path(
                            root,
                            &at,
                            false,
                            "warning: the webhook URL is written inline; a webhook URL often is its credential: write it as { env: NAME } or { file: PATH } (it is never printed either way)".into(),
                        );
                        self.warnings.push(d);
                    }
                }
            }
        }
        if let Some(app) = &config.slack {
            if config.http.is_none() {
                self.err(
                    root,
                    "slack",
                    "Slack buttons need medic's HTTP server: add `http: { listen: ... }`",
                );
            }
            if app.approvers.is_empty() && app.approver_groups.is_empty() {
                self.err(
                    root,
                    "slack.approvers",
                    "name at least one approver (user ID) or approver group, or nobody may approve",
                );
            }
            let has_slack = config
                .notifiers
                .values()
                .any(|n| matches!(n, NotifierConfig::Slack(_)));
            if !app.approver_groups.is_empty() && !has_slack {
                self.err(
                    root,
                    "slack.approver_groups",
                    "approver groups are resolved through a Slack notifier's token; define one",
                );
            }
        }
        for (name, policy) in &config.escalation {
            if let Some(c) = &policy.communication {
                let at = format!("escalation.{name}.communication");
                let notifiers: Vec<&str> = config.notifiers.keys().map(String::as_str).collect();
                for (field, list) in [
                    ("channel", &c.channel),
                    ("executives", &c.executives),
                    ("stakeholders", &c.stakeholders),
                    ("users", &c.users),
                ] {
                    for (j, n) in list.iter().enumerate() {
                        if !config.notifiers.contains_key(n) {
                            let hint = did_you_mean(n, notifiers.iter().copied()).map_or_else(
                                || format!("defined: {}", notifiers.join(", ")),
                                |h| h.to_string(),
                            );
                            self.err(
                                root,
                                &format!("{at}.{field}[{j}]"),
                                format!("unknown notifier {n:?} ({hint})"),
                            );
                        }
                    }
                }
                // Affected users hear only the public template: an email
                // list, on no other list (where internal notices go), of
                // a config with a public page to speak for.
                for (j, n) in c.users.iter().enumerate() {
                    let path = format!("{at}.users[{j}]");
                    match config.notifiers.get(n) {
                        Some(NotifierConfig::Email(_)) | None => {}
                        Some(_) => self.err(
                            root,
                            &path,
                            format!("{n:?} is not an email notifier: affected users are told by email, with the public template"),
                        ),
                    }
                    let internal = c
                        .channel
                        .iter()
                        .chain(&c.executives)
                        .chain(&c.stakeholders)
                        .chain(policy.levels.iter().flat_map(|l| &l.notify))
                        .any(|m| m == n);
                    if internal {
                        self.err(
                            root,
                            &path,
                            format!("{n:?} also gets internal notices (a level, channel, executives or stakeholders): the affected users' list must be one of its own"),
                        );
                    }
                    if j == 0 && config.public_status.is_none() {
                        self.err(
                            root,
                            &path,
                            "affected users are told what the public status page shows: configure `public_status:`",
                        );
                    }
                }
                if c.postmortem_after.get().is_zero() {
                    self.err(
                        root,
                        &format!("{at}.postmortem_after"),
                        "postmortem_after must be longer than 0s",
                    );
                }
                if c.ack_within.get().is_zero() {
                    self.err(
                        root,
                        &format!("{at}.ack_within"),
                        "ack_within must be longer than 0s",
                    );
                }
                let mut prev = 0;
                for (j, s) in c.rto_shares.iter().enumerate() {
                    if !(1..=99).contains(s) || *s <= prev {
                        self.err(
                            root,
                            &format!("{at}.rto_shares[{j}]"),
                            format!("rto_shares are percentages of the RTO, 1 to 99, rising (100 % always pages the top level); found {s}"),
                        );
                    }
                    prev = *s;
                }
            }
            for (field, d) in [
                ("ack_timeout", policy.ack_timeout),
                ("status_every", policy.status_every),
            ] {
                if d.is_some_and(|d| d.get().is_zero()) {
                    self.err(
                        root,
                        &format!("escalation.{name}.{field}"),
                        format!("{field} must be longer than 0s"),
                    );
                }
            }
        }
    }

    fn validate_email(&mut self, root: &Node, name: &str, m: &crate::config::EmailNotifier) {
        let at = format!("notifiers.{name}.email");
        if m.server.trim().is_empty() {
            self.err(
                root,
                &format!("{at}.server"),
                "server must name the SMTP host",
            );
        }
        if m.port == Some(0) {
            self.err(root, &format!("{at}.port"), "port must be 1 to 65535");
        }
        let mailbox = |v: &str| {
            v.parse::<lettre::message::Mailbox>()
                .map_err(|e| e.to_string())
        };
        if let Err(e) = mailbox(&m.from) {
            self.err(
                root,
                &format!("{at}.from"),
                format!("{:?} is not an address ({e}): write `medic@example.com` or `medic <medic@example.com>`", m.from),
            );
        }
        for (field, list) in [("to", &m.to), ("bcc", &m.bcc)] {
            for (j, v) in list.iter().enumerate() {
                if let Err(e) = mailbox(v) {
                    self.err(
                        root,
                        &format!("{at}.{field}[{j}]"),
                        format!("{v:?} is not an address ({e})"),
                    );
                }
            }
        }
        if m.to.is_empty() && m.bcc.is_empty() {
            self.err(
                root,
                &format!("{at}.to"),
                "name at least one recipient in `to` or `bcc`",
            );
        }
        match (&m.username, &m.password) {
            (Some(_), None) => self.err(
                root,
                &format!("{at}.username"),
                "a username needs a password: add `password: {env: NAME}`",
            ),
            (None, Some(_)) => self.err(
                root,
                &format!("{at}.password"),
                "a password needs a username",
            ),
            _ => {}
        }
        if m.tls == crate::config::EmailTls::None && m.password.is_some() {
            self.err(
                root,
                &format!("{at}.tls"),
                "`tls: none` would send the password in clear: use `starttls` or `tls`",
            );
        }
    }

    /// The `members` of cluster `name` (at `at`): each an existing
    /// target of the same `kind` that is one server, listed once, not the
    /// cluster itself.
    fn validate_members(
        &mut self,
        root: &Node,
        at: &str,
        name: &str,
        members: &[String],
        targets: &std::collections::BTreeMap<String, TargetConfig>,
        kind: &str,
    ) {
        let mut seen = std::collections::HashSet::new();
        for (i, m) in members.iter().enumerate() {
            let mat = format!("{at}.members[{i}]");
            let cluster = match targets.get(m) {
                Some(TargetConfig::Redis(t)) if kind == "redis" => Some(t.is_cluster()),
                Some(TargetConfig::Postgres(t)) if kind == "postgres" => Some(t.is_cluster()),
                _ => None,
            };
            match targets.get(m) {
                _ if m == name => self.err(root, &mat, "a cluster cannot be its own member"),
                _ if !seen.insert(m) => {
                    self.err(root, &mat, format!("member {m:?} is listed twice"))
                }
                Some(_) if cluster == Some(true) => self.err(
                    root,
                    &mat,
                    format!("member {m:?} is itself a cluster; members are servers"),
                ),
                Some(_) if cluster == Some(false) => {}
                Some(other) => self.err(
                    root,
                    &mat,
                    format!(
                        "member {m:?} is a {} target; members are {kind} targets",
                        other.kind()
                    ),
                ),
                None => self.err(root, &mat, format!("unknown target {m:?}")),
            }
        }
    }

    /// A postgres server's `restart:` method (at `at`).
    fn validate_pg_restart(
        &mut self,
        root: &Node,
        at: &str,
        r: &crate::config::PgRestart,
        targets: &std::collections::BTreeMap<String, TargetConfig>,
    ) {
        use crate::config::PgRestart;
        let here = format!("{at}.restart.{}", r.kind());
        match r {
            PgRestart::Systemd(unit) => {
                if let Err(e) = crate::unit::name(unit) {
                    self.err(root, &here, format!("not a unit name: {e}"));
                }
            }
            PgRestart::Docker(t) => match targets.get(t) {
                Some(TargetConfig::Docker(_)) => {}
                Some(other) => self.err(
                    root,
                    &here,
                    format!(
                        "target {t:?} is a {} target; restart: {{ docker: TARGET }} names a docker target (the server's container)",
                        other.kind()
                    ),
                ),
                None => {
                    let known: Vec<&str> = targets
                        .iter()
                        .filter(|(_, v)| matches!(v, TargetConfig::Docker(_)))
                        .map(|(k, _)| k.as_str())
                        .collect();
                    self.err(root, &here, unknown_field("docker target", t, &known));
                }
            },
            PgRestart::Exec(args) => {
                if args.first().is_none_or(|a| a.trim().is_empty()) {
                    self.err(
                        root,
                        &here,
                        "restart: { exec: [...] } needs a program: [PROGRAM, ARG...]",
                    );
                }
            }
        }
    }

    fn validate_target(
        &mut self,
        root: &Node,
        name: &str,
        target: &TargetConfig,
        targets: &std::collections::BTreeMap<String, TargetConfig>,
    ) {
        let at = format!("targets.{name}.{}", target.kind());
        let host_port = |cx: &mut Self, field: &str, v: &str| {
            let ok = v
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                cx.err(
                    root,
                    &format!("{at}.{field}"),
                    format!("{field} {v:?} must be HOST:PORT"),
                );
            }
        };
        let url = |cx: &mut Self, field: &str, v: &str| {
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                cx.err(
                    root,
                    &format!("{at}.{field}"),
                    format!("{field} {v:?} must start with http:// or https://"),
                );
            }
        };
        match target {
            TargetConfig::Tcp(t) => host_port(self, "address", &t.address),
            TargetConfig::Redis(t) if t.is_cluster() => {
                if !t.address.trim().is_empty() {
                    self.err(
                        root,
                        &format!("{at}.address"),
                        "a cluster (members) has no address of its own: each member has one",
                    );
                }
                self.validate_members(root, &at, name, &t.members, targets, "redis");
            }
            TargetConfig::Redis(t) => host_port(self, "address", &t.address),
            TargetConfig::Http(t) => url(self, "url", &t.url),
            TargetConfig::Prometheus(t) => url(self, "url", &t.url),
            TargetConfig::Postgres(t) if t.is_cluster() => {
                if !t.host.trim().is_empty() {
                    self.err(
                        root,
                        &format!("{at}.host"),
                        "a cluster (members) has no host of its own: each member has one",
                    );
                }
                if t.data_dir.is_some() {
                    self.err(
                        root,
                        &format!("{at}.data_dir"),
                        "data_dir belongs to a member (one server), not to the cluster",
                    );
                }
                if t.demote_command.is_some() {
                    self.err(
                        root,
                        &format!("{at}.demote_command"),
                        "demote_command belongs to a member (one server), not to the cluster",
                    );
                }
                if t.restart.is_some() {
                    self.err(
                        root,
                        &format!("{at}.restart"),
                        "restart belongs to a member (one server, on its host), not to the cluster",
                    );
                }
                self.validate_members(root, &at, name, &t.members, targets, "postgres");
            }
            TargetConfig::Postgres(t) => {
                if t.host.trim().is_empty() {
                    self.err(
                        root,
                        &format!("{at}.host"),
                        "host must not be empty (or name `members` for a cluster)",
                    );
                }
                if t.fence_on_sight.is_some() {
                    self.err(
                        root,
                        &format!("{at}.fence_on_sight"),
                        "fence_on_sight applies to a cluster (members)",
                    );
                }
                if let Some(c) = &t.demote_command {
                    if c.first().is_none_or(|a| a.trim().is_empty()) {
                        self.err(
                            root,
                            &format!("{at}.demote_command"),
                            "demote_command needs a program: [PROGRAM, ARG...]",
                        );
                    } else if t.data_dir.is_some() {
                        self.err(
                            root,
                            &format!("{at}.demote_command"),
                            "data_dir or demote_command: a member is demoted one way",
                        );
                    }
                }
                if let Some(d) = &t.data_dir
                    && !d.is_absolute()
                {
                    self.err(
                        root,
                        &format!("{at}.data_dir"),
                        format!(
                            "data_dir must be an absolute path (the member's data directory on medic's host), not {:?}",
                            d.display().to_string()
                        ),
                    );
                }
                if let Some(r) = &t.restart {
                    self.validate_pg_restart(root, &at, r, targets);
                }
                if t.port == 0 {
                    self.err(root, &format!("{at}.port"), "port must not be 0");
                }
            }
            TargetConfig::Kubernetes(t) => {
                const KINDS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet"];
                if !KINDS.contains(&t.kind.as_str()) {
                    self.err(
                        root,
                        &format!("{at}.kind"),
                        unknown_field("workload kind", &t.kind, KINDS),
                    );
                }
                if t.name.trim().is_empty() {
                    self.err(root, &format!("{at}.name"), "name must not be empty");
                }
            }
            TargetConfig::Docker(t) => self.validate_docker(root, &at, t),
            TargetConfig::Route53(t) => {
                if !(1..=t.max_ttl.max(1)).contains(&t.ttl) {
                    self.err(
                        root,
                        &format!("{at}.ttl"),
                        format!(
                            "ttl must be between 1 and {} seconds (max_ttl) so failover takes effect quickly",
                            t.max_ttl
                        ),
                    );
                }
                if t.primary.is_empty() {
                    self.err(
                        root,
                        &format!("{at}.primary"),
                        "primary needs at least one value",
                    );
                }
                if t.secondary.is_empty() {
                    self.err(
                        root,
                        &format!("{at}.secondary"),
                        "secondary needs at least one value",
                    );
                }
            }
        }
    }
}

impl Cx<'_> {
    /// A docker target names one container or one Compose service, on an
    /// absolute socket path.
    fn validate_docker(&mut self, root: &Node, at: &str, t: &super::DockerTarget) {
        let socket = t.socket.strip_prefix("unix://").unwrap_or(&t.socket);
        if !socket.starts_with('/') {
            self.err(
                root,
                &format!("{at}.socket"),
                format!(
                    "socket {:?} must be the absolute path of the Engine's unix socket (e.g. /var/run/docker.sock)",
                    t.socket
                ),
            );
        }
        match (&t.container, &t.compose) {
            (Some(name), None) => {
                if let Err(e) = crate::config::docker_name(name) {
                    self.err(root, &format!("{at}.container"), e);
                }
            }
            (None, Some(c)) => {
                for (field, v) in [("project", &c.project), ("service", &c.service)] {
                    if v.trim().is_empty() {
                        self.err(
                            root,
                            &format!("{at}.compose.{field}"),
                            format!("{field} must not be empty"),
                        );
                    }
                }
            }
            (None, None) => self.err(
                root,
                at,
                "a docker target names `container: NAME` or `compose: { project: P, service: S }`",
            ),
            (Some(_), Some(_)) => self.err(
                root,
                &format!("{at}.compose"),
                "a docker target names `container` or `compose`, not both",
            ),
        }
        if t.stop_timeout
            .is_some_and(|d| d.get().as_secs() > i32::MAX as u64)
        {
            self.err(
                root,
                &format!("{at}.stop_timeout"),
                "stop_timeout is too long",
            );
        }
    }
}

fn join(prefix: &str, rel: &str) -> String {
    match (prefix.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (_, true) => prefix.to_string(),
        _ if rel.starts_with('[') => format!("{prefix}{rel}"),
        _ => format!("{prefix}.{rel}"),
    }
}

/// The file position of the node at `path` (`a.b[2].c`) in the merged tree,
/// or of its key when `on_key`; `None` when that node came from the
/// environment. A path that does not go all the way down stops at the
/// deepest node it reached.
fn find(root: &Node, path: &str, on_key: bool) -> Option<Pos> {
    let mut node = root;
    let mut at = yaml::pos(root);
    let segments = path
        .split('.')
        .filter(|s| !s.is_empty())
        .flat_map(|s| {
            let (key, rest) = s.split_at(s.find('[').unwrap_or(s.len()));
            let key = (!key.is_empty()).then_some(Seg::Key(key));
            let idx = rest
                .split(['[', ']'])
                .filter(|i| !i.is_empty())
                .map(|i| Seg::Index(i.parse().unwrap_or(usize::MAX)));
            key.into_iter().chain(idx)
        })
        .collect::<Vec<_>>();
    let last = segments.len();
    let mut i = 0;
    while i < last {
        match (&segments[i], node) {
            (Seg::Key(k), Node::Mapping(m)) => {
                // A key with dots in it (`postgres.backup`) spans several
                // segments: the longest run of them that is a key.
                let mut found = None;
                let mut joined = k.to_string();
                for (j, seg) in segments.iter().enumerate().take(last).skip(i) {
                    if j > i {
                        let Seg::Key(next) = seg else { break };
                        joined = format!("{joined}.{next}");
                    }
                    if let Some(kv) = m.iter().find(|(key, _)| key.as_str() == joined) {
                        found = Some((kv, j));
                        break;
                    }
                }
                let Some(((key, value), j)) = found else {
                    break;
                };
                node = value;
                at = if on_key && j + 1 == last {
                    key_pos(key)
                } else {
                    yaml::pos(value)
                };
                i = j + 1;
            }
            (Seg::Index(n), Node::Sequence(s)) => {
                let Some(item) = s.get(*n) else { break };
                node = item;
                at = yaml::pos(item);
                i += 1;
            }
            _ => break,
        }
    }
    (at != (0, 0)).then_some(at)
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
mode: dry-run
targets:
  cache:
    redis: { address: 127.0.0.1:6379 }
  db:
    postgres: { host: 127.0.0.1, password: { env: PGPASSWORD } }
notifiers:
  log: { log: {} }
escalation:
  default:
    levels:
      - { after: 0m, notify: [log] }
";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn errors(text: &str, e: &[(&str, &str)]) -> Vec<String> {
        load_str_with_env("medic.yaml", text, env(e))
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn target_links_are_read_beside_the_kind() {
        let text = "\
targets:
  db:
    postgres: { host: 127.0.0.1, port: 5432, user: u, dbname: d }
    zone: eu
  app:
    http: { url: \"http://127.0.0.1:1/\" }
    depends_on: [db]
    budget: { changes: 2, per: 10m }
";
        let c = load_str("medic.yaml", text).unwrap();
        assert!(matches!(c.targets["app"], TargetConfig::Http(_)));
        let app = c.topology.links("app");
        assert_eq!(app.depends_on, ["db"]);
        assert_eq!(app.budget.changes, 2);
        assert_eq!(app.budget.per, Dur::secs(600));
        assert_eq!(c.topology.links("db").zone.as_deref(), Some("eu"));
        assert_eq!(
            c.topology.links("db").budget,
            crate::config::TargetBudget::default()
        );
        assert_eq!(c.limits.dependency_grace, Dur::secs(120));
    }

    #[test]
    fn unknown_dependencies_and_cycles_are_refused_where_written() {
        let text = "\
targets:
  a:
    tcp: { address: 127.0.0.1:1 }
    depends_on: [b]
  b:
    tcp: { address: 127.0.0.1:2 }
    depends_on: [a, dbb]
  db:
    tcp: { address: 127.0.0.1:3 }
    budget: { changes: 0, per: 1m }
";
        assert_eq!(
            errors(text, &[]),
            [
                "medic.yaml:4:17: dependency cycle: a → b → a (a dependent waits on its cause; a cycle would wait forever)",
                "medic.yaml:7:21: unknown target \"dbb\" in depends_on (did you mean \"db\"?)",
                "medic.yaml:10:13: a target's budget allows at least 1 change over a period longer than 0s",
            ]
        );
        let text = text.replace("per: 1m", "per: 1m, every: 2");
        assert_eq!(
            errors(&text, &[]),
            ["medic.yaml:10:36: unknown field \"every\" (expected one of: changes, per)"]
        );
    }

    #[test]
    fn jobs_and_drills_are_validated_where_they_are_written() {
        let text = format!(
            "{GOOD}jobs:
  nightly:
    schedule: '0 2 * *'
    postgres.backup: {{ target: cache }}
  weekly:
    schedule: '0 3 * * SUN'
    timezone: Mars/Olympus
    backup.verify: {{ backup: nope }}
  both:
    schedule: '0 3 * * *'
    backup.verify: {{ backup: nightly }}
    postgres.restore-test: {{ backup: nightly }}
drills:
  cahce: {{ drill: allowed, inject: [] }}
"
        );
        let errs = errors(&text, &[]);
        let expect = [
            "a job needs exactly one kind",
            "jobs.both",
            "invalid cron expression \"0 2 * *\"",
            "target \"cache\" is a redis target; a postgres one is needed",
            "a backup needs at least one place: `directory`, `s3` or `places`",
            "unknown time zone \"Mars/Olympus\"",
            "unknown job \"nope\"",
            "unknown target \"cahce\" (did you mean \"cache\"?)",
            "name the command that injects the failure",
        ];
        let all = errs.join("\n");
        for e in expect.iter().filter(|e| !e.starts_with("jobs.")) {
            assert!(all.contains(e), "missing {e:?} in:\n{all}");
        }
        // Each problem points into the file, at its job.
        assert!(
            errs.iter()
                .all(|e| e.starts_with("medic.yaml:") && !e.starts_with("medic.yaml:0:")),
            "{all}"
        );
        assert!(all.contains("medic.yaml:19:15: unknown time zone"), "{all}");
        assert!(
            all.contains("medic.yaml:15:15: invalid cron expression \"0 2 * *\": 4 fields"),
            "{all}"
        );
    }

    #[test]
    fn drill_jobs_name_a_sandbox_scenario_and_known_notifiers() {
        let text = format!(
            "{GOOD}jobs:
  drill:
    schedule: '0 9 1 1,4,7,10 *'
    drill.sandbox: {{ scenario: no-such-scenario, notify: [chanel] }}
"
        );
        let errs = errors(&text, &[]);
        let all = errs.join("\n");
        assert!(
            all.contains("the sandbox drills redis-cache-failure, database-failure"),
            "{all}"
        );
        assert!(all.contains("not \"no-such-scenario\""), "{all}");
        assert!(all.contains("unknown notifier \"chanel\""), "{all}");
        assert_eq!(errs.len(), 2, "{all}");
        let good = format!(
            "{GOOD}jobs:
  drill:
    schedule: '0 9 1 1,4,7,10 *'
    drill.sandbox: {{ scenario: backup-failure }}
"
        );
        let c = load_str("medic.yaml", &good).unwrap();
        assert_eq!(c.jobs["drill"].kind(), Some("drill.sandbox"));
        assert!(c.jobs["drill"].drill.as_ref().unwrap().notify.is_empty());
    }

    #[test]
    fn target_drill_jobs_name_a_target_marked_for_drills_and_channels() {
        let good = GOOD.replace(
            "  log: { log: {} }\n",
            "  log: { log: {} }\n  pd: { pagerduty: { routing_key: { env: PD_KEY } } }\n",
        );
        let text = format!(
            "{good}drills:
  cache: {{ drill: allowed, inject: [redis-cli, shutdown], scenarios: [redis-cache-failure] }}
  db: {{ drill: forbidden, inject: [\"true\"] }}
jobs:
  unmarked:
    schedule: '0 9 1 * *'
    drill.target: {{ scenario: redis-cache-failure, target: app }}
  forbidden:
    schedule: '0 9 1 * *'
    drill.target: {{ scenario: database-failure, target: db }}
  other-scenario:
    schedule: '0 9 1 * *'
    drill.target: {{ scenario: database-failure, target: cache, notify: [pd] }}
  good:
    schedule: '0 9 1 1,4,7,10 *'
    drill.target: {{ scenario: redis-cache-failure, target: cache, notify: [log] }}
"
        );
        let errs = errors(&text, &[("PD_KEY", "k")]);
        let all = errs.join("\n");
        // Each error at its job's `drill.target` line.
        let line = |job: &str| 3 + text.lines().position(|l| l == format!("  {job}:")).unwrap();
        for (job, e) in [
            ("unmarked", "target \"app\" is not marked for drills"),
            ("forbidden", "target \"db\" is marked `drill: forbidden`"),
            (
                "other-scenario",
                "target \"cache\" allows drills of redis-cache-failure only",
            ),
            (
                "other-scenario",
                "notifier \"pd\" is PagerDuty, which takes pages, not reports",
            ),
        ] {
            let line = line(job);
            assert!(
                errs.iter()
                    .any(|x| x.starts_with(&format!("medic.yaml:{line}:")) && x.contains(e)),
                "missing {e:?} at line {line} in:\n{all}"
            );
        }
        assert_eq!(errs.len(), 4, "{all}");
    }

    #[test]
    fn redis_backup_jobs_are_validated_where_they_are_written() {
        let text = format!(
            "{GOOD}jobs:
  rdb:
    schedule: '0 * * * *'
    redis.backup: {{ target: db, save_timeout: 0s }}
  ok:
    schedule: '0 * * * *'
    redis.backup: {{ target: cache, directory: /var/backups/redis }}
  verify-rdb:
    schedule: '0 3 * * *'
    backup.verify: {{ backup: ok }}
  restore-rdb:
    schedule: '0 4 1 * *'
    postgres.restore-test: {{ backup: ok }}
"
        );
        let errs = errors(&text, &[]);
        let all = errs.join("\n");
        for e in [
            "target \"db\" is a postgres target; a redis one is needed",
            "a backup needs at least one place: `directory`, `s3` or `places`",
            "save_timeout must be longer than 0s",
            "job \"ok\" is not a postgres.backup job",
        ] {
            assert!(all.contains(e), "missing {e:?} in:\n{all}");
        }
        assert!(
            errs.iter()
                .all(|e| e.starts_with("medic.yaml:") && !e.starts_with("medic.yaml:0:")),
            "{all}"
        );
        // A verification of a Redis backup is fine.
        assert!(!all.contains("verify-rdb"), "{all}");
        assert_eq!(errs.len(), 4, "{all}");
        let good = format!(
            "{GOOD}jobs:
  ok:
    schedule: '0 * * * *'
    redis.backup: {{ target: cache, directory: /var/backups/redis }}
"
        );
        let c = load_str("medic.yaml", &good).unwrap();
        let r = c.jobs["ok"].redis_backup.as_ref().unwrap();
        assert_eq!(r.save_timeout.get(), std::time::Duration::from_secs(600));
        assert_eq!(c.jobs["ok"].kind(), Some("redis.backup"));
    }

    #[test]
    fn backup_places_and_keep_tiers_are_validated_where_they_are_written() {
        let text = format!(
            "{GOOD}jobs:
  tiers:
    schedule: '0 2 * * *'
    postgres.backup:
      target: db
      directory: /var/backups
      retention: 30d
      keep: {{ daily: 0s }}
      places:
        - {{ name: directory, directory: /b }}
        - name: az
          azure: {{ account: Bad_Name, container: -x, key: {{ env: K }}, sas: {{ env: S }}, endpoint_url: 'ftp://x' }}
        - {{ name: 'two kinds', directory: /c, s3: {{ bucket: '' }} }}
        - {{ name: az, azure: {{ account: okaccount, container: backups }} }}
  none:
    schedule: '0 2 * * *'
    redis.backup: {{ target: cache, keep: {{}} }}
"
        );
        let errs = errors(&text, &[]);
        let all = errs.join("\n");
        for e in [
            ":20:13: use `keep` (tiers) or `retention`, not both",
            ":20:22: daily must be longer than 0s",
            ":22:19: the place name \"directory\" is used twice in this job",
            ":24:29: \"Bad_Name\" is not a storage account name",
            ":24:50: \"-x\" is not a container name",
            "use `key` or `sas`, not both",
            "\"ftp://x\" is not an http(s) URL without a query",
            "\"two kinds\" is not a place name",
            "a place needs exactly one of `directory`, `s3`, `azure`",
            "the bucket must not be empty",
            ":26:19: the place name \"az\" is used twice in this job",
            "azure needs a credential: `key` (the account key) or `sas` (a SAS token)",
            "`keep` needs at least one tier: daily, weekly, monthly, yearly",
            "a backup needs at least one place",
        ] {
            assert!(all.contains(e), "missing {e:?} in:\n{all}");
        }
        assert_eq!(errs.len(), 14, "{all}");

        // The old keys and the new ones load side by side.
        let good = format!(
            "{GOOD}jobs:
  old:
    schedule: '0 2 * * *'
    postgres.backup: {{ target: db, directory: backups, retention: 7d }}
  new:
    schedule: '0 2 * * *'
    postgres.backup:
      target: db
      s3: {{ bucket: b }}
      places:
        - {{ name: azure-copy, azure: {{ account: acct1, container: backups, sas: {{ env: SAS }} }} }}
        - {{ name: local, directory: /var/backups }}
      keep: {{ daily: 30d, monthly: 1y }}
"
        );
        let c = load_str("medic.yaml", &good).unwrap_or_else(|d| panic!("{d:?}"));
        let old = c.jobs["old"].backup_storage().unwrap();
        assert_eq!(
            old.retention_policy(),
            super::super::Retention::Within(Dur::secs(7 * 86_400))
        );
        let names: Vec<String> = old.places().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["directory"]);
        let new = c.jobs["new"].backup_storage().unwrap();
        let names: Vec<String> = new.places().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["s3", "azure-copy", "local"]);
        assert_eq!(new.work_directory(), Some(PathBuf::from("/var/backups")));
        let super::super::Retention::Tiers(k) = new.retention_policy() else {
            panic!("tiers");
        };
        assert_eq!(
            k.tiers(),
            [
                ("daily", Dur::secs(30 * 86_400)),
                ("monthly", Dur::secs(31_557_600))
            ]
        );
    }

    #[test]
    fn zones_are_validated_where_they_are_written() {
        let text = "targets:\n\
                    \x20 db: { tcp: { address: \"192.0.2.1:5432\" } }\n\
                    zones:\n\
                    \x20 a:\n\
                    \x20   targets: [db, dbb]\n\
                    \x20   vantage: [{ tcp: \"gateway\" }, { dns: { server: \"ns1\", name: x. } }]\n\
                    \x20 b: { targets: [db], every: 0s }\n";
        assert_eq!(
            errors(text, &[]),
            vec![
                "medic.yaml:5:19: unknown target \"dbb\" (did you mean \"db\"?)",
                "medic.yaml:6:22: \"gateway\" must be HOST:PORT",
                "medic.yaml:6:52: \"ns1\" must be IP or IP:PORT",
                "medic.yaml:7:18: target \"db\" is already in zone \"a\"; a target is in one zone",
                "medic.yaml:7:30: every must be above 0s",
            ]
        );
    }

    /// `zones.NAME.targets` and a target's own `zone:` are one membership:
    /// the section fills in the target's zone; a disagreement is an error.
    #[test]
    fn the_zones_section_and_a_targets_zone_agree() {
        let text = "targets:\n\
                    \x20 db: { tcp: { address: \"192.0.2.1:5432\" }, zone: east }\n\
                    \x20 app: { tcp: { address: \"192.0.2.2:80\" } }\n\
                    zones:\n\
                    \x20 west: { targets: [db, app] }\n";
        assert_eq!(
            errors(text, &[]),
            vec![
                "medic.yaml:5:21: target \"db\" says zone: \"east\" on the target; a target is in one zone"
            ]
        );
        let good = text.replace(", zone: east", "");
        let c = load_str("medic.yaml", &good).unwrap();
        assert_eq!(c.topology.links("app").zone.as_deref(), Some("west"));
        assert_eq!(c.topology.links("db").zone.as_deref(), Some("west"));
    }

    #[test]
    fn loads_and_defaults() {
        let c = load_str("etc/medic/medic.yaml", GOOD).unwrap();
        assert_eq!(c.mode, Mode::DryRun);
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.rules, vec![PathBuf::from("rules")]);
        assert_eq!(c.base_dir, PathBuf::from("etc/medic"));
        assert_eq!(c.shutdown_grace, Dur::secs(30));
        assert_eq!(
            load_str("medic.yaml", "").unwrap().base_dir,
            PathBuf::from(".")
        );
    }

    #[test]
    fn http_credentials_and_bounds_are_checked_where_written() {
        let text = "\
http:
  listen: 0.0.0.0:7460
  open_reads: true
  intake: { open: true, bearer: { env: T } }
  header_timeout: 0s
  max_connections: 0
";
        let errs = errors(text, &[]);
        assert_eq!(
            errs,
            [
                "medic.yaml:4:19: `open: true` takes no credentials: remove `bearer`/`basic`, or `open`",
                "medic.yaml:5:19: header_timeout must be at least 100ms",
                "medic.yaml:6:20: max_connections must be at least 1",
            ]
        );
        let errs = errors(
            "http: { listen: 127.0.0.1:1, intake: {}, tls: { cert: '', key: k } }\n",
            &[],
        );
        assert_eq!(
            errs,
            [
                "medic.yaml:1:38: the intake needs `bearer: {env: NAME}`, `basic: {username, password}` or `open: true`",
                "medic.yaml:1:55: the cert path must not be empty",
            ]
        );
        let errs = errors(
            "http: { listen: 127.0.0.1:1, intake: { basic: { username: 'a:b', password: { env: P } } } }\n",
            &[],
        );
        assert_eq!(
            errs,
            ["medic.yaml:1:59: the username must not be empty or contain `:`"]
        );
        let errs = errors("http: { listen: 127.0.0.1:1, api_token: hunter2 }\n", &[]);
        assert!(errs[0].contains(crate::secret::PLAIN_SECRET), "{errs:?}");
    }

    #[test]
    fn open_reads_and_an_open_intake_off_loopback_are_warned_about() {
        let c = load_str(
            "medic.yaml",
            "http:\n  listen: 0.0.0.0:7460\n  open_reads: true\n  intake: { open: true }\n",
        )
        .unwrap();
        let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            w,
            [
                "medic.yaml:3:15: warning: open reads on 0.0.0.0:7460, not a loopback address: anyone who reaches it reads incidents, timelines and job runs",
                "medic.yaml:4:19: warning: an open intake on 0.0.0.0:7460, not a loopback address: anyone who reaches it can post alerts",
            ]
        );
        let c = load_str(
            "medic.yaml",
            "http: { listen: 127.0.0.1:7460, open_reads: true, intake: { open: true } }\n",
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let h = c.http.unwrap();
        assert_eq!(h.header_timeout, Dur::secs(10));
        assert_eq!(h.request_timeout, Dur::secs(30));
        assert_eq!((h.max_in_flight, h.max_connections), (64, 512));
    }

    #[test]
    fn environment_overrides_file() {
        let c = load_str_with_env(
            "medic.yaml",
            GOOD,
            env(&[
                ("MEDIC_MODE", "enforce"),
                ("MEDIC_STORE__SQLITE__PATH", "/x.db"),
                ("MEDIC_TARGETS__CACHE__REDIS__DB", "2"),
                ("MEDIC_RULES", "rules,more"),
                ("MEDIC_CONFIG", "elsewhere.yaml"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Enforce);
        assert_eq!(
            c.store,
            StoreConfig::Sqlite {
                path: PathBuf::from("/x.db")
            }
        );
        let TargetConfig::Redis(r) = &c.targets["cache"] else {
            panic!("not redis")
        };
        assert_eq!(r.db, 2);
        assert_eq!(c.rules, vec![PathBuf::from("rules"), PathBuf::from("more")]);
    }

    #[test]
    fn environment_errors_name_the_variable() {
        assert_eq!(
            errors(GOOD, &[("MEDIC_MODE", "enforcing")]),
            ["MEDIC_MODE: unknown mode \"enforcing\" (did you mean \"enforce\"?)"]
        );
        assert_eq!(
            errors(GOOD, &[("MEDIC_STORE__SQLITE__PTH", "/x.db")]),
            ["MEDIC_STORE__SQLITE__PTH: unknown field \"pth\" (did you mean \"path\"?)"]
        );
        assert_eq!(
            errors(
                GOOD,
                &[("MEDIC_TARGETS__DB__POSTGRES__PASSWORD", "hunter2")]
            ),
            [format!(
                "MEDIC_TARGETS__DB__POSTGRES__PASSWORD: {}",
                crate::secret::PLAIN_SECRET
            )]
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let text = "\
mdoe: enforce
targets:
  cache:
    rediss: { address: 127.0.0.1:6379 }
  db:
    postgres: { host: 127.0.0.1, password: hunter2 }
  web:
    http: { url: 127.0.0.1:8000 }
escalation:
  default:
    levels:
      - { after: 15m, notify: [log] }
      - { after: 0m, notify: [logs, pager] }
";
        assert_eq!(
            errors(text, &[]),
            [
                "medic.yaml:1:1: unknown field \"mdoe\" (did you mean \"mode\"?)",
                "medic.yaml:4:5: unknown target kind \"rediss\" (did you mean \"redis\"?)",
                format!("medic.yaml:6:44: {}", crate::secret::PLAIN_SECRET).as_str(),
            ]
        );
        let text = text.replace("mdoe", "mode").replace("rediss", "redis");
        let text = text.replace("hunter2", "{ file: /run/secrets/pg }");
        assert_eq!(
            errors(&text, &[]),
            [
                "medic.yaml:8:18: url \"127.0.0.1:8000\" must start with http:// or https://",
                "medic.yaml:13:18: levels must be in order: 0s comes after 15m",
                "medic.yaml:13:31: unknown notifier \"logs\" (did you mean \"log\"?)",
                "medic.yaml:13:37: unknown notifier \"pager\" (defined: log)",
            ]
        );
    }

    #[test]
    fn an_email_notifier_is_checked_where_it_is_written() {
        let text = "\
notifiers:
  mail:
    email:
      server: ''
      port: 0
      tls: none
      from: medic
      username: medic
      password: { env: SMTP_PASSWORD }
      to: [ops@example.com, 'not an address']
escalation:
  default:
    levels: [{ after: 0s, notify: [mail] }]
    communication: { channel: [mail], stakeholders: [board], postmortem_after: 0s }
";
        assert_eq!(
            errors(text, &[]),
            [
                "medic.yaml:4:15: server must name the SMTP host",
                "medic.yaml:5:13: port must be 1 to 65535",
                "medic.yaml:6:12: `tls: none` would send the password in clear: use `starttls` or `tls`",
                "medic.yaml:7:13: \"medic\" is not an address (Invalid input): write `medic@example.com` or `medic <medic@example.com>`",
                "medic.yaml:10:29: \"not an address\" is not an address (Invalid input)",
                "medic.yaml:14:54: unknown notifier \"board\" (defined: mail)",
                "medic.yaml:14:80: postmortem_after must be longer than 0s",
            ]
        );
        let ok = text
            .replace("server: ''", "server: smtp.example.com")
            .replace("port: 0", "port: 587")
            .replace("tls: none", "tls: starttls")
            .replace("from: medic", "from: medic <medic@example.com>")
            .replace(", 'not an address'", "")
            .replace(
                "stakeholders: [board], postmortem_after: 0s",
                "stakeholders: [mail]",
            );
        let c = load_str_with_env("medic.yaml", &ok, env(&[])).unwrap();
        let NotifierConfig::Email(m) = &c.notifiers["mail"] else {
            panic!("an email notifier");
        };
        assert_eq!((m.port(), m.tls), (587, crate::config::EmailTls::Starttls));
        let no_pw = ok.replace("      password: { env: SMTP_PASSWORD }\n", "");
        assert_eq!(
            errors(&no_pw, &[]),
            ["medic.yaml:8:17: a username needs a password: add `password: {env: NAME}`"]
        );
    }

    #[test]
    fn a_communication_plan_is_checked_where_it_is_written() {
        let text = "\
escalation:
  default:
    levels: [{ after: 0s, notify: [log] }]
    communication:
      channel: [logs]
      executives: [log, ceo]
      ack_within: 0s
      rto_shares: [80, 50, 100]
      high: { open: shout }
";
        assert_eq!(
            errors(text, &[]),
            [
                "medic.yaml:9:21: unknown value \"shout\" (expected one of: page, notify, channel, none)"
            ]
        );
        let text = text.replace("high: { open: shout }", "high: { open: notify }");
        assert_eq!(
            errors(&text, &[]),
            [
                "medic.yaml:5:17: unknown notifier \"logs\" (did you mean \"log\"?)",
                "medic.yaml:6:25: unknown notifier \"ceo\" (defined: log)",
                "medic.yaml:7:19: ack_within must be longer than 0s",
                "medic.yaml:8:24: rto_shares are percentages of the RTO, 1 to 99, rising (100 % always pages the top level); found 50",
                "medic.yaml:8:28: rto_shares are percentages of the RTO, 1 to 99, rising (100 % always pages the top level); found 100",
            ]
        );
    }

    #[test]
    fn affected_users_are_an_email_list_of_their_own_with_a_public_page() {
        let text = "\
notifiers:
  log: { log: {} }
  users:
    email: { server: smtp.example.com, from: medic@example.com, bcc: [all@lists.example.com] }
escalation:
  default:
    levels: [{ after: 0s, notify: [log, users] }]
    communication: { channel: [log], users: [log, users, nobody], users_within: 45m }
";
        assert_eq!(
            errors(text, &[]),
            [
                "medic.yaml:8:46: \"log\" is not an email notifier: affected users are told by email, with the public template",
                "medic.yaml:8:46: \"log\" also gets internal notices (a level, channel, executives or stakeholders): the affected users' list must be one of its own",
                "medic.yaml:8:46: affected users are told what the public status page shows: configure `public_status:`",
                "medic.yaml:8:51: \"users\" also gets internal notices (a level, channel, executives or stakeholders): the affected users' list must be one of its own",
                "medic.yaml:8:58: unknown notifier \"nobody\" (defined: log, users)",
            ]
        );
        let ok = text
            .replace("notify: [log, users]", "notify: [log]")
            .replace("users: [log, users, nobody]", "users: [users]")
            + "public_status:\n  listen: 127.0.0.1:0\n  components: { Portal: { scenarios: [x] } }\n";
        let c = load_str_with_env("medic.yaml", &ok, env(&[])).unwrap();
        let plan = c.escalation["default"].communication.clone().unwrap();
        assert_eq!(plan.users, ["users"]);
        assert_eq!(
            plan.for_severity("high").users_within,
            crate::duration::Dur::secs(2700)
        );
    }

    #[test]
    fn alert_limits_are_bounded_where_they_are_written() {
        let text = "alerts:\n  max_delivery_bytes: 10\n  max_per_delivery: 0\n  max_firing: 5000000\n  resolved_retention: 5s\n";
        assert_eq!(
            errors(text, &[]),
            [
                "medic.yaml:2:23: max_delivery_bytes must be between 1024 and 67108864 (64 MiB)",
                "medic.yaml:3:21: max_per_delivery must be between 1 and 100000",
                "medic.yaml:4:15: max_firing must be between 1 and 1000000",
                "medic.yaml:5:23: resolved_retention must be at least 1m (a resolved alert must outlive Alertmanager's re-deliveries)",
            ]
        );
        assert_eq!(
            errors("alerts: { max_firings: 5 }\n", &[]),
            ["medic.yaml:1:11: unknown field \"max_firings\" (did you mean \"max_firing\"?)"]
        );
        let ok = load_str_with_env("medic.yaml", "alerts: { max_firing: 50 }\n", env(&[])).unwrap();
        assert_eq!(ok.alerts.max_firing, 50);
        assert_eq!(ok.alerts.max_per_delivery, 1000, "defaults kept");
    }

    #[test]
    fn type_errors_point_at_the_value() {
        assert_eq!(
            errors("limits: { concurrent_checks: lots }\n", &[]),
            ["medic.yaml:1:30: expected a whole number (invalid digit found in string)"]
        );
        assert_eq!(
            errors("shutdown_grace: 30\n", &[]),
            [
                "medic.yaml:1:17: duration \"30\" has no unit (write e.g. \"30s\", \"30m\" or \"30ms\")"
            ]
        );
        assert_eq!(
            errors("targets:\n  db:\n    postgres: { prot: 5432 }\n", &[]),
            ["medic.yaml:3:17: unknown field \"prot\" (did you mean \"port\"?)"]
        );
        assert_eq!(
            errors("targets:\n  db: postgres\n", &[]),
            [
                "medic.yaml:2:7: a target is `{ KIND: {...} }` with KIND one of: tcp, http, redis, postgres, prometheus, kubernetes, route53, docker"
            ]
        );
        assert_eq!(
            errors(
                "targets:\n  web:\n    docker: { socket: run/docker.sock, container: -web }\n  both:\n    docker: { container: web, compose: { project: p, service: s } }\n  none:\n    docker: { socket: /run/docker.sock }\n  blank:\n    docker: { compose: { project: \"\", service: s } }\n",
                &[]
            ),
            [
                "medic.yaml:3:23: socket \"run/docker.sock\" must be the absolute path of the Engine's unix socket (e.g. /var/run/docker.sock)",
                "medic.yaml:3:51: container \"-web\" is not a container name: [a-zA-Z0-9][a-zA-Z0-9_.-]+",
                "medic.yaml:5:40: a docker target names `container` or `compose`, not both",
                "medic.yaml:7:13: a docker target names `container: NAME` or `compose: { project: P, service: S }`",
                "medic.yaml:9:35: project must not be empty",
            ]
        );
        assert_eq!(
            errors("targets:\n  typo:\n    docker: { contianer: web }\n", &[]),
            ["medic.yaml:3:15: unknown field \"contianer\" (did you mean \"container\"?)"]
        );
        assert_eq!(
            errors("targets:\n  db:\n    postgres: { port: 5432 }\n", &[]),
            ["medic.yaml:3:15: host must not be empty (or name `members` for a cluster)"]
        );
        assert_eq!(
            errors(
                "targets:\n  db:\n    postgres: { members: [db-a, db, cache, nope], host: x }\n  db-a:\n    postgres: { host: h }\n  cache:\n    redis: { address: \"h:1\" }\n",
                &[]
            ),
            [
                "medic.yaml:3:33: a cluster cannot be its own member",
                "medic.yaml:3:37: member \"cache\" is a redis target; members are postgres targets",
                "medic.yaml:3:44: unknown target \"nope\"",
                "medic.yaml:3:57: a cluster (members) has no host of its own: each member has one",
            ]
        );
        assert_eq!(
            errors(
                "targets:\n  db:\n    postgres: { members: [db-a], data_dir: /x }\n  db-a:\n    postgres: { host: h, data_dir: pgdata }\n",
                &[]
            ),
            [
                "medic.yaml:3:44: data_dir belongs to a member (one server), not to the cluster",
                "medic.yaml:5:36: data_dir must be an absolute path (the member's data directory on medic's host), not \"pgdata\"",
            ]
        );
        assert_eq!(
            errors(
                "targets:\n  db-a:\n    postgres: { host: h, demote_command: [] }\n  db-b:\n    postgres: { host: h, data_dir: /x, demote_command: [ssh] }\n",
                &[]
            ),
            [
                "medic.yaml:3:42: demote_command needs a program: [PROGRAM, ARG...]",
                "medic.yaml:5:56: data_dir or demote_command: a member is demoted one way",
            ]
        );
        assert_eq!(
            errors(
                "targets:\n  db:\n    postgres: { members: [db-a], restart: { exec: [x] } }\n  db-a:\n    postgres: { host: h, restart: { exec: [] } }\n  db-b:\n    postgres: { host: h, restart: { docker: db-contianer } }\n  db-c:\n    postgres: { host: h, restart: { systemd: --now } }\n  db-d:\n    postgres: { host: h, restart: { docker: web } }\n  web:\n    http: { url: \"http://x\" }\n  db-container:\n    docker: { container: db }\n",
                &[]
            ),
            [
                "medic.yaml:3:43: restart belongs to a member (one server, on its host), not to the cluster",
                "medic.yaml:5:43: restart: { exec: [...] } needs a program: [PROGRAM, ARG...]",
                "medic.yaml:7:45: unknown docker target \"db-contianer\" (did you mean \"db-container\"?)",
                "medic.yaml:9:46: not a unit name: \"--now\" starts with \"-\"",
                "medic.yaml:11:45: target \"web\" is a http target; restart: { docker: TARGET } names a docker target (the server's container)",
            ]
        );
    }

    #[test]
    fn redis_clusters_name_redis_servers() {
        assert_eq!(
            errors(
                "targets:\n  cache:\n    redis: { members: [cache-a, db, cache-a], address: \"h:1\" }\n  cache-a:\n    redis: { address: \"h:1\" }\n  db:\n    postgres: { host: h }\n",
                &[]
            ),
            [
                "medic.yaml:3:33: member \"db\" is a postgres target; members are redis targets",
                "medic.yaml:3:37: member \"cache-a\" is listed twice",
                "medic.yaml:3:56: a cluster (members) has no address of its own: each member has one",
            ]
        );
    }

    #[test]
    fn syntax_error_stops_early() {
        assert_eq!(
            errors("mode: [\n", &[]),
            ["medic.yaml:2:1: while parsing a node, did not find expected node content"]
        );
    }
}
