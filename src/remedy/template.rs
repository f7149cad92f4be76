//! `${labels.NAME}` in plan parameters: label values are data, never syntax.
//!
//! An incident of a per-series symptom (one per label set, e.g. one per
//! deployment) runs its scenario's plan with the series' labels: a step's
//! parameters may say `${labels.deployment}` and each incident's actions
//! get that label's value. What expands: `exec` args, env values written
//! inline and cwd; the `systemd-restart` unit; the `redis.flush` pattern;
//! the k8s actions' optional `name` and `namespace` (the workload's,
//! overriding the target's). Every other field refuses `${` when the rule
//! file is loaded (`medic check`). `$${` writes a literal `${`.
//!
//! Label values come from outside (Alertmanager deliveries, scraped
//! series), so every substituted value is checked for the [`Slot`] it
//! lands in before anything runs:
//! - it must match the step's declared pattern for that label
//!   (`label_patterns`, a full match), or else [`DEFAULT_CLASS`];
//! - then the slot's own rule: an argv element never starts with `-`; a
//!   systemd unit must be a valid unit name without globs; a Kubernetes
//!   name must be DNS-1123; a Redis glob gets its metacharacters escaped.
//!
//! A label the series does not have, or a value that fails, refuses the
//! step (on the timeline) rather than run it with a hole or a stranger's
//! syntax in its arguments.

use std::collections::BTreeMap;

use regex::Regex;

use crate::observe::Labels;

/// The default of what a substituted value may be (no declared pattern):
/// letters, digits, `_`, `.`, `:` and `-`, starting with a letter, digit
/// or `_`, at most [`MAX_VALUE`] bytes. No `/`, no spaces, no quotes, no
/// glob or shell metacharacters.
pub const DEFAULT_CLASS: &str = "[A-Za-z0-9_][A-Za-z0-9_.:-]*";

/// The longest value substituted anywhere (a DNS-1123 subdomain's limit).
pub const MAX_VALUE: usize = 253;

/// The gate that refuses a step whose label value is not valid where it
/// lands. Such a refusal escalates at once: the value came from outside.
pub const VALUE_GATE: &str = "label-value";

/// The gate that refuses a step whose series lacks a label it names.
pub const MISSING_GATE: &str = "labels";

/// Where a substituted value lands; each says what a value may be there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// An `exec` argv element, inline env value or cwd: never a leading
    /// `-` (no option injection).
    Arg,
    /// A systemd unit (`systemd-restart`): the expansion must be a valid
    /// unit name, and no glob (`systemctl restart '*.service'`).
    Unit,
    /// A Redis `SCAN MATCH` glob (`redis.flush` pattern): the value's
    /// `*`, `?`, `[`, `]` and `\` are escaped, so it matches itself only.
    RedisGlob,
    /// A Kubernetes object name: a DNS-1123 subdomain.
    KubeName,
    /// A Kubernetes namespace: a DNS-1123 label.
    KubeNamespace,
}

impl Slot {
    fn what(self) -> &'static str {
        match self {
            Slot::Arg => "an exec argument",
            Slot::Unit => "a systemd unit",
            Slot::RedisGlob => "a redis.flush pattern",
            Slot::KubeName => "a Kubernetes name",
            Slot::KubeNamespace => "a Kubernetes namespace",
        }
    }
}

/// A step's declared pattern for one label: what its values may be
/// (a full match), instead of [`DEFAULT_CLASS`].
#[derive(Clone, Debug)]
pub struct LabelPattern {
    source: String,
    re: Regex,
}

impl LabelPattern {
    /// Compiles `source`, anchored at both ends.
    pub fn new(source: &str) -> Result<Self, String> {
        let re = Regex::new(&format!("^(?:{source})$")).map_err(|e| e.to_string())?;
        Ok(LabelPattern {
            source: source.to_string(),
            re,
        })
    }

    /// As written in the rule file.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    fn matches(&self, v: &str) -> bool {
        self.re.is_match(v)
    }
}

impl PartialEq for LabelPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Per label name, the pattern a step declares (`label_patterns:`).
pub type LabelPatterns = BTreeMap<String, LabelPattern>;

/// Why a parameter could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Not `${labels.NAME}`.
    #[error("{0}")]
    Syntax(String),
    /// The series has no such label.
    #[error("the series has no label {name:?} (its labels: {have})")]
    Missing { name: String, have: String },
    /// A value is not valid where it lands (from outside: refused, paged).
    #[error("label {name:?} = {value:?} refused as {slot}: {why}")]
    Value {
        name: String,
        /// Shown escaped (`{:?}`), cut to [`MAX_VALUE`] bytes.
        value: String,
        slot: &'static str,
        why: String,
    },
    /// Expanded, the parameters are not valid (e.g. a unit named `-x`).
    #[error("with the series' labels: {0}")]
    Invalid(String),
}

impl TemplateError {
    /// The gate a step refused for this error is reported as.
    pub fn gate(&self) -> &'static str {
        match self {
            TemplateError::Value { .. } | TemplateError::Invalid(_) => VALUE_GATE,
            TemplateError::Syntax(_) | TemplateError::Missing { .. } => MISSING_GATE,
        }
    }
}

/// An incident's labels and its step's declared patterns: what every
/// expansion of that step reads.
#[derive(Clone, Copy, Debug)]
pub struct Values<'a> {
    pub labels: &'a Labels,
    pub patterns: &'a LabelPatterns,
}

impl<'a> Values<'a> {
    pub fn new(labels: &'a Labels, patterns: &'a LabelPatterns) -> Self {
        Values { labels, patterns }
    }

    /// `text` with every `${labels.NAME}` replaced by that label's value,
    /// each value checked (and, for a Redis glob, escaped) for `slot`; the
    /// whole expansion is then checked for `slot` too.
    pub fn expand(&self, text: &str, slot: Slot) -> Result<String, TemplateError> {
        let out = walk(text, &mut |name| {
            let value = self
                .labels
                .get(name)
                .ok_or_else(|| missing(name, self.labels))?;
            self.value(name, value, slot)
        })?;
        if has_vars(text) {
            whole(&out, slot)?;
        }
        Ok(out)
    }

    /// [`Values::expand`] over an optional value.
    pub fn expand_opt(
        &self,
        text: &Option<String>,
        slot: Slot,
    ) -> Result<Option<String>, TemplateError> {
        text.as_deref().map(|t| self.expand(t, slot)).transpose()
    }

    /// One label's value, checked for `slot`: what is substituted.
    fn value(&self, name: &str, value: &str, slot: Slot) -> Result<String, TemplateError> {
        let refuse = |why: String| TemplateError::Value {
            name: name.to_string(),
            value: value.chars().take(MAX_VALUE).collect(),
            slot: slot.what(),
            why,
        };
        if value.is_empty() {
            return Err(refuse("it is empty".into()));
        }
        if value.len() > MAX_VALUE {
            return Err(refuse(format!(
                "it is {} bytes long (at most {MAX_VALUE})",
                value.len()
            )));
        }
        match self.patterns.get(name) {
            Some(p) if !p.matches(value) => {
                return Err(refuse(format!(
                    "it does not match the step's label_patterns.{name} {:?}",
                    p.as_str()
                )));
            }
            Some(_) => {}
            None if !default_class(value) => {
                return Err(refuse(format!(
                    "only letters, digits, '_', '.', ':' and '-' (not first) are allowed without a label_patterns.{name} on the step"
                )));
            }
            None => {}
        }
        if value.starts_with('-') {
            return Err(refuse(
                "it starts with '-' (it would read as an option)".into(),
            ));
        }
        match slot {
            Slot::Arg => Ok(value.to_string()),
            Slot::RedisGlob => Ok(redis_escape(value)),
            Slot::Unit => {
                if let Some(c) = value.chars().find(|c| !crate::unit::value_char(*c)) {
                    return Err(refuse(format!(
                        "{c:?} is not allowed in a unit name's substituted part (letters, digits, ':', '_', '.', '-')"
                    )));
                }
                Ok(value.to_string())
            }
            Slot::KubeName => dns1123_subdomain(value)
                .map(|_| value.to_string())
                .map_err(refuse),
            Slot::KubeNamespace => dns1123_label(value)
                .map(|_| value.to_string())
                .map_err(refuse),
        }
    }
}

/// The whole expansion of a parameter, checked for its slot (the literal
/// parts are the rule author's, but a unit or a name must still be one).
fn whole(out: &str, slot: Slot) -> Result<(), TemplateError> {
    let invalid = |why: String| TemplateError::Invalid(format!("{}: {why}", slot.what()));
    match slot {
        Slot::Arg | Slot::RedisGlob => Ok(()),
        Slot::Unit => crate::unit::name(out).map_err(invalid),
        Slot::KubeName => dns1123_subdomain(out).map_err(invalid),
        Slot::KubeNamespace => dns1123_label(out).map_err(invalid),
    }
}

fn missing(name: &str, labels: &Labels) -> TemplateError {
    TemplateError::Missing {
        name: name.to_string(),
        have: if labels.is_empty() {
            "none".to_string()
        } else {
            labels.keys().cloned().collect::<Vec<_>>().join(", ")
        },
    }
}

fn default_class(v: &str) -> bool {
    let mut c = v.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphanumeric() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | ':' | '-'))
}

/// `*`, `?`, `[`, `]` and `\` escaped with `\`: in Redis' glob (SCAN
/// MATCH, KEYS) the value then matches only itself.
pub fn redis_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A DNS-1123 label (namespaces, most Kubernetes names): at most 63 of
/// `[a-z0-9-]`, starting and ending with a letter or digit.
pub fn dns1123_label(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a DNS-1123 label (at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)"
        ))
    }
}

/// A DNS-1123 subdomain (Deployment, StatefulSet, DaemonSet names): at
/// most 253 bytes of DNS-1123 labels joined by `.`.
pub fn dns1123_subdomain(v: &str) -> Result<(), String> {
    let ok = !v.is_empty() && v.len() <= 253 && v.split('.').all(|l| dns1123_label(l).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253, each part starting and ending with a letter or digit)"
        ))
    }
}

/// Whether `text` has anything to expand.
pub fn has_vars(text: &str) -> bool {
    text.contains("${")
}

/// Checks the syntax of every `${...}` in `text` (no labels needed):
/// what `medic check` runs on rule files.
pub fn check(text: &str) -> Result<(), TemplateError> {
    walk(text, &mut |_| Ok(String::new())).map(|_| ())
}

/// The label names `text` refers to (after [`check`] passed).
pub fn names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let _ = walk(text, &mut |n| {
        out.push(n.to_string());
        Ok(String::new())
    });
    out
}

fn walk(
    text: &str,
    value: &mut dyn FnMut(&str) -> Result<String, TemplateError>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            let Some(end) = r.find('}') else {
                return Err(TemplateError::Syntax(format!(
                    "{text:?}: `${{` without its closing `}}`"
                )));
            };
            let var = &r[..end];
            let Some(name) = var.strip_prefix("labels.").filter(|n| is_label_name(n)) else {
                return Err(TemplateError::Syntax(format!(
                    "{text:?}: unknown variable `${{{var}}}`: the only variables are ${{labels.NAME}} (a label of the incident's series); write $${{ for a literal ${{"
                )));
            };
            out.push_str(&value(name)?);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Prometheus label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels_of(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn labels() -> Labels {
        labels_of(&[("deployment", "api"), ("namespace", "prod")])
    }

    const NONE: &LabelPatterns = &BTreeMap::new();

    fn expand(text: &str, labels: &Labels) -> Result<String, TemplateError> {
        Values::new(labels, NONE).expand(text, Slot::Arg)
    }

    fn one(slot: Slot, value: &str, text: &str) -> Result<String, TemplateError> {
        Values::new(&labels_of(&[("x", value)]), NONE).expand(text, slot)
    }

    #[test]
    fn expands_labels() {
        assert_eq!(
            expand(
                "deployment/${labels.deployment} -n ${labels.namespace}",
                &labels()
            )
            .unwrap(),
            "deployment/api -n prod"
        );
        assert_eq!(
            expand("no vars, $HOME stays", &labels()).unwrap(),
            "no vars, $HOME stays"
        );
        assert_eq!(
            expand("$${labels.x} is literal", &labels()).unwrap(),
            "${labels.x} is literal"
        );
        assert_eq!(names("a ${labels.x} b ${labels.y}"), ["x", "y"]);
    }

    #[test]
    fn missing_label_says_which_and_what_there_is() {
        let e = expand("${labels.pod}", &labels()).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"the series has no label "pod" (its labels: deployment, namespace)"#
        );
        assert_eq!(e.gate(), MISSING_GATE);
        let e = expand("${labels.pod}", &Labels::new()).unwrap_err();
        assert!(e.to_string().ends_with("(its labels: none)"), "{e}");
    }

    #[test]
    fn bad_syntax_is_reported() {
        assert!(check("${labels.deployment}").is_ok());
        assert!(
            check("${env.HOME}")
                .unwrap_err()
                .to_string()
                .contains("unknown variable `${env.HOME}`")
        );
        assert!(
            check("${labels.deployment")
                .unwrap_err()
                .to_string()
                .contains("without its closing")
        );
        assert!(check("${labels.1x}").is_err());
    }

    /// The issue's argv attack: `--config=/etc/evil.conf` as a label.
    #[test]
    fn arg_values_never_start_with_a_dash_and_keep_to_the_default_class() {
        let e = one(Slot::Arg, "--config=/etc/evil.conf", "${labels.x}").unwrap_err();
        assert_eq!(e.gate(), VALUE_GATE);
        assert!(
            e.to_string().starts_with(
                r#"label "x" = "--config=/etc/evil.conf" refused as an exec argument: only letters"#
            ),
            "{e}"
        );
        // Also inside an argument: the value itself is what is checked.
        assert!(one(Slot::Arg, "-rf", "deployment/${labels.x}").is_err());
        for bad in [
            "a b", "a/b", "../etc", "$(id)", "a;b", "`id`", "*", "a\nb", "", "é",
        ] {
            assert!(one(Slot::Arg, bad, "${labels.x}").is_err(), "{bad:?}");
        }
        for good in ["api", "api-v2", "web_1", "10.0.0.1:8080", "_x", "a.b"] {
            assert_eq!(one(Slot::Arg, good, "${labels.x}").unwrap(), good);
        }
        let long = "a".repeat(MAX_VALUE + 1);
        assert!(
            one(Slot::Arg, &long, "${labels.x}")
                .unwrap_err()
                .to_string()
                .contains("254 bytes long")
        );
    }

    #[test]
    fn a_declared_pattern_replaces_the_default_class_but_never_allows_a_leading_dash() {
        let patterns: LabelPatterns =
            [("x".to_string(), LabelPattern::new("[a-z/]+|-.*").unwrap())].into();
        let v = |value: &str| {
            Values::new(&labels_of(&[("x", value)]), &patterns).expand("${labels.x}", Slot::Arg)
        };
        assert_eq!(v("a/b").unwrap(), "a/b", "the pattern allows '/'");
        let e = v("abc1").unwrap_err().to_string();
        assert!(
            e.contains(r#"does not match the step's label_patterns.x "[a-z/]+|-.*""#),
            "{e}"
        );
        let e = v("-x").unwrap_err().to_string();
        assert!(e.contains("starts with '-'"), "{e}");
        // Anchored: a partial match is not a match.
        let p = LabelPattern::new("prod|staging").unwrap();
        assert!(p.matches("prod") && !p.matches("production") && !p.matches("xprod"));
        assert!(LabelPattern::new("(").is_err());
    }

    /// The issue's Redis attack: `tenant="*"` in `tenant:${labels.tenant}:*`.
    #[test]
    fn redis_glob_values_are_refused_by_default_and_escaped_when_a_pattern_allows_them() {
        assert!(one(Slot::RedisGlob, "*", "tenant:${labels.x}:*").is_err());
        assert_eq!(
            one(Slot::RedisGlob, "acme", "tenant:${labels.x}:*").unwrap(),
            "tenant:acme:*",
            "the author's own glob stays a glob"
        );
        let patterns: LabelPatterns = [("x".to_string(), LabelPattern::new(".+").unwrap())].into();
        let l = labels_of(&[("x", r"a*b?[c]\")]);
        let v = Values::new(&l, &patterns);
        assert_eq!(
            v.expand("tenant:${labels.x}:*", Slot::RedisGlob).unwrap(),
            r"tenant:a\*b\?\[c\]\\:*"
        );
        assert_eq!(redis_escape("plain"), "plain");
    }

    /// The issue's systemd attack: a unit that became `*.service`.
    #[test]
    fn units_must_be_valid_unit_names_without_globs() {
        let e = one(Slot::Unit, "*", "${labels.x}.service").unwrap_err();
        assert_eq!(e.gate(), VALUE_GATE);
        let patterns: LabelPatterns = [("x".to_string(), LabelPattern::new(".+").unwrap())].into();
        let v = |value: &str, text: &str| {
            Values::new(&labels_of(&[("x", value)]), &patterns).expand(text, Slot::Unit)
        };
        for bad in ["*", "a?", "[ab]", "a b", "a/b", "x@y"] {
            assert!(v(bad, "app-${labels.x}.service").is_err(), "{bad:?}");
        }
        assert_eq!(
            v("eu-1", "app@${labels.x}.service").unwrap(),
            "app@eu-1.service"
        );
        assert_eq!(one(Slot::Unit, "nginx", "${labels.x}").unwrap(), "nginx");
        assert!(crate::unit::name("prometheus.service").is_ok());
        assert!(crate::unit::name("getty@tty1.service").is_ok());
        assert!(crate::unit::name("dev-disk-by\\x2duuid.device").is_ok());
        for bad in [
            "",
            "*.service",
            "-x",
            ".service",
            "a@b@c",
            "a b",
            "a;b",
            "x?",
        ] {
            assert!(crate::unit::name(bad).is_err(), "{bad:?}");
        }
        assert!(crate::unit::name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn kubernetes_names_are_dns_1123() {
        assert_eq!(
            one(Slot::KubeName, "api-v2", "${labels.x}").unwrap(),
            "api-v2"
        );
        assert_eq!(
            one(Slot::KubeName, "api", "${labels.x}.canary").unwrap(),
            "api.canary"
        );
        for bad in ["API", "api_v2", "api-", "a:b", "-api"] {
            assert!(one(Slot::KubeName, bad, "${labels.x}").is_err(), "{bad:?}");
        }
        assert!(one(Slot::KubeNamespace, "prod", "${labels.x}").is_ok());
        assert!(one(Slot::KubeNamespace, "a.b", "${labels.x}").is_err());
        assert!(dns1123_label(&"a".repeat(63)).is_ok());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_subdomain("a.b-c.d").is_ok());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(dns1123_subdomain(&"a.".repeat(127)).is_err());
    }
}
