//! YAML that keeps positions, and the one cursor that walks it: shared by
//! the config, rule, Prometheus rule and rule-test loaders.
//!
//! `marked_yaml` gives every node its `line:col`; this module adds what a
//! loader facing hand-written files needs on top: one document per file,
//! a nesting limit (deep trees would overflow the stack when dropped or
//! deserialized), no panics escaping from the parser, and serde errors turned
//! into [`Diagnostic`]s that point at the offending key or value.
//!
//! [`Cursor`] collects every problem of one file, each at its position, with
//! the readers every loader needs (`required`, `string`, `dur`, `choice`, a
//! kind's `params`); a loader with per-file context of its own (the config
//! and targets a rule file is checked against) holds a cursor beside it.

use std::panic::{AssertUnwindSafe, catch_unwind};

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Node, Span};
use serde::de::DeserializeOwned;

use crate::diag::{Diagnostic, did_you_mean};
use crate::duration::Dur;

/// Deeper nesting is refused: no real config or rule file comes close.
pub(crate) const MAX_DEPTH: usize = 32;

/// The YAML parser recurses once per nesting level, so block nesting is
/// bounded from the text before parsing (flow nesting it bounds itself, at
/// 255): no line may start deeper than this many columns plus compact
/// indicators (`- - - x`).
const MAX_INDENT: usize = 200;

/// A `line:col` (1-based; `(0, 0)` when unknown).
pub(crate) type Pos = (usize, usize);

/// The start of a span.
pub(crate) fn span_pos(span: &Span) -> Pos {
    span.start().map_or((0, 0), |m| (m.line(), m.column()))
}

/// Where a node starts.
pub(crate) fn pos(node: &Node) -> Pos {
    match node {
        Node::Mapping(m) => mapping_pos(m),
        other => span_pos(other.span()),
    }
}

/// Where a mapping starts: its `{`, or its first key (the parser marks a
/// block mapping at its first `:`).
pub(crate) fn mapping_pos(m: &MarkedMappingNode) -> Pos {
    let start = span_pos(m.span());
    match m.keys().next().map(key_pos) {
        Some(k) if k != (0, 0) && (start == (0, 0) || k < start) => k,
        _ => start,
    }
}

/// Where a mapping key starts.
pub(crate) fn key_pos(key: &MarkedScalarNode) -> Pos {
    span_pos(key.span())
}

/// A diagnostic at `pos` in `origin`.
pub(crate) fn diag(origin: &str, pos: Pos, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::new(origin, pos.0, pos.1, msg)
}

/// A plain (unquoted) `~`, `null` or empty scalar: YAML's "nothing".
pub(crate) fn is_null(node: &Node) -> bool {
    match node {
        Node::Scalar(s) => {
            s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
        }
        _ => false,
    }
}

/// What kind of node this is, for "expected X, found Y" messages.
pub(crate) fn describe(node: &Node) -> &'static str {
    match node {
        Node::Scalar(_) if is_null(node) => "nothing",
        Node::Scalar(_) => "a scalar",
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
    }
}

/// Parses one YAML document whose top level is a mapping.
///
/// Scalars keep their quoting: a quoted `"5"` is a string, not a number.
pub(crate) fn parse(origin: &str, text: &str) -> Result<Node, Diagnostic> {
    if let Some((p, c)) = control_char(text) {
        return Err(diag(
            origin,
            p,
            format!(
                "control character U+{:04X}{} is not allowed in YAML (write it as an escape, such as \\x{:02x}, inside double quotes)",
                c as u32,
                control_name(c).map_or_else(String::new, |n| format!(" ({n})")),
                c as u32,
            ),
        ));
    }
    if let Some(line) = second_document(text) {
        return Err(diag(
            origin,
            (line, 1),
            "only one YAML document per file is supported",
        ));
    }
    if let Some(line) = too_indented(text) {
        return Err(diag(
            origin,
            (line, 1),
            format!("indentation is deeper than {MAX_INDENT} levels"),
        ));
    }
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    // marked_yaml asserts on parser states it does not expect; an input
    // that trips one is a bad input, not a reason to bring medic down.
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        marked_yaml::parse_yaml_with_options(0, text, options)
    }));
    let node = match parsed {
        Ok(Ok(node)) => node,
        Ok(Err(e)) => return Err(load_error(origin, e)),
        Err(_) => return Err(diag(origin, (0, 0), "cannot parse this YAML")),
    };
    if let Some(p) = too_deep(&node) {
        dismantle(node);
        return Err(diag(
            origin,
            p,
            format!("nesting is deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(node)
}

fn load_error(origin: &str, e: LoadError) -> Diagnostic {
    let at = |m: &marked_yaml::Marker| (m.line(), m.column());
    match e {
        LoadError::TopLevelMustBeMapping(m) | LoadError::TopLevelMustBeSequence(m) => {
            diag(origin, at(&m), "expected a mapping (`key: value` lines)")
        }
        LoadError::UnexpectedAnchor(m) => {
            diag(origin, at(&m), "YAML anchors and aliases are not supported")
        }
        LoadError::MappingKeyMustBeScalar(m) => {
            diag(origin, at(&m), "mapping keys must be plain strings")
        }
        LoadError::UnexpectedTag(m) => diag(
            origin,
            at(&m),
            "YAML tags (such as `!!str`) are not supported",
        ),
        LoadError::ScanError(m, e) => diag(origin, at(&m), e.info().to_string()),
        LoadError::DuplicateKey(d) => {
            let (l, c) = key_pos(&d.prev_key);
            diag(
                origin,
                key_pos(&d.key),
                format!(
                    "duplicate key {:?} (first defined at {l}:{c})",
                    d.key.as_str()
                ),
            )
        }
    }
}

/// The first control character that YAML does not allow in a file (C0
/// but tab, line feed and carriage return; DEL; C1), with its position.
/// Checked on the text before parsing: the parser stops quietly at some
/// (a NUL used to end the file there, ignoring what follows it).
fn control_char(text: &str) -> Option<(Pos, char)> {
    let bad = |c: char| c.is_control() && !matches!(c, '\t' | '\n' | '\r');
    for (i, line) in text.split('\n').enumerate() {
        if let Some((col, c)) = line.chars().enumerate().find(|&(_, c)| bad(c)) {
            return Some(((i + 1, col + 1), c));
        }
    }
    None
}

/// The short name of a C0 control character people meet in files.
fn control_name(c: char) -> Option<&'static str> {
    Some(match c {
        '\0' => "NUL",
        '\u{8}' => "backspace",
        '\u{b}' => "vertical tab",
        '\u{c}' => "form feed",
        '\u{1b}' => "escape",
        '\u{7f}' => "DEL",
        _ => return None,
    })
}

/// The line of a document marker that starts a second document, if any.
/// Markers must start at column 1, so a line scan is exact enough.
fn second_document(text: &str) -> Option<usize> {
    let marker = |line: &str, m: &str| {
        line.strip_prefix(m)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
    };
    let (mut content, mut started, mut ended) = (false, false, false);
    for (i, line) in text.lines().enumerate() {
        let blank = {
            let t = line.trim_start();
            t.is_empty() || t.starts_with('#')
        };
        if marker(line, "---") {
            if content || started || ended {
                return Some(i + 1);
            }
            started = true;
            let rest = line[3..].trim_start();
            content = !rest.is_empty() && !rest.starts_with('#');
        } else if marker(line, "...") {
            ended = true;
        } else if !blank {
            if ended {
                return Some(i + 1);
            }
            if started || !line.starts_with('%') {
                content = true;
            }
        }
    }
    None
}

/// The first line that starts deeper than [`MAX_INDENT`].
fn too_indented(text: &str) -> Option<usize> {
    for (i, line) in text.lines().enumerate() {
        let mut rest = line.trim_start_matches([' ', '\t']);
        let mut depth = line.len() - rest.len();
        while let Some(r) = ["-", "?", ":"].iter().find_map(|ind| {
            rest.strip_prefix(ind)
                .filter(|r| r.starts_with([' ', '\t']))
        }) {
            let trimmed = r.trim_start_matches([' ', '\t']);
            depth += 1 + (r.len() - trimmed.len());
            rest = trimmed;
        }
        if depth > MAX_INDENT {
            return Some(i + 1);
        }
    }
    None
}

/// Where the tree first gets deeper than [`MAX_DEPTH`], without recursing.
fn too_deep(root: &Node) -> Option<Pos> {
    let mut stack = vec![(root, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Some(pos(node));
        }
        match node {
            Node::Scalar(_) => {}
            Node::Mapping(m) => stack.extend(m.values().map(|v| (v, depth + 1))),
            Node::Sequence(s) => stack.extend(s.iter().map(|v| (v, depth + 1))),
        }
    }
    None
}

/// Drops a tree of any depth without recursing.
fn dismantle(root: Node) {
    let mut stack = vec![root];
    while let Some(mut node) = stack.pop() {
        match &mut node {
            Node::Scalar(_) => {}
            Node::Mapping(m) => {
                let keys: Vec<MarkedScalarNode> = m.keys().cloned().collect();
                for k in keys {
                    if let Some(v) = m.remove(&k) {
                        stack.push(v);
                    }
                }
            }
            Node::Sequence(s) => stack.append(s),
        }
    }
}

/// The field names a `deny_unknown_fields` struct accepts, learnt from serde
/// itself (it lists them when it meets an unknown one), so they cannot drift.
pub(crate) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let probe: MarkedMappingNode = [("\u{0}", "")].into_iter().collect();
    match marked_yaml::from_node::<T>(&Node::Mapping(probe)) {
        Err(e) => match e.into_inner() {
            marked_yaml::Error::UnknownFieldError(_, fields, _) => fields,
            _ => &[],
        },
        Ok(_) => &[],
    }
}

/// `unknown field "x" (did you mean "y"?)`, or the list of allowed fields.
pub(crate) fn unknown_field(what: &str, got: &str, allowed: &[&str]) -> String {
    match did_you_mean(got, allowed.iter().copied()) {
        Some(hint) => format!("unknown {what} {got:?} ({hint})"),
        None if allowed.is_empty() => format!("unknown {what} {got:?}"),
        None => format!(
            "unknown {what} {got:?} (expected one of: {})",
            allowed.join(", ")
        ),
    }
}

/// Deserializes `node` into a param struct, reporting every unknown key
/// (with a suggestion from the struct's fields plus `also_allowed`) and the
/// first other problem, each at its exact position. Keys whose value is YAML
/// null count as absent.
pub(crate) fn params<T: DeserializeOwned>(
    origin: &str,
    node: &Node,
    also_allowed: &[&str],
    out: &mut Vec<Diagnostic>,
) -> Option<T> {
    let fields = field_names::<T>();
    let start = pos(node);
    let cleaned;
    let node = match node {
        Node::Mapping(m) => {
            let mut keep = MarkedMappingNode::new_empty(*m.span());
            for (k, v) in m.iter() {
                if !fields.contains(&k.as_str()) {
                    let mut allowed: Vec<&str> = fields.to_vec();
                    allowed.extend_from_slice(also_allowed);
                    out.push(diag(
                        origin,
                        key_pos(k),
                        unknown_field("field", k.as_str(), &allowed),
                    ));
                } else if !is_null(v) {
                    keep.insert(k.clone(), v.clone());
                }
            }
            // Unknown keys are reported and dropped: the rest is still checked.
            cleaned = Node::Mapping(keep);
            &cleaned
        }
        other => other,
    };
    match marked_yaml::from_node::<T>(node) {
        Ok(v) => Some(v),
        Err(e) => {
            let at = e.start_mark().map_or((0, 0), |m| (m.line(), m.column()));
            // A struct's own span starts at its first `:`; prefer its start.
            let at = if at == (0, 0) || at == span_pos(node.span()) {
                start
            } else {
                at
            };
            out.push(diag(origin, at, serde_message(&e)));
            None
        }
    }
}

/// A serde error from `marked_yaml`, worded for people.
pub(crate) fn serde_message(e: &marked_yaml::Error) -> String {
    use marked_yaml::Error as E;
    match e {
        E::NotBoolean(_) => "expected true or false".into(),
        E::IntegerParseFailure(e, _) => format!("expected a whole number ({e})"),
        E::FloatParseFailure(e, _) => format!("expected a number ({e})"),
        E::UnknownFieldError(f, allowed, _) => unknown_field("field", f, allowed),
        E::Other(msg, _) => tidy(msg),
    }
}

/// Rewords serde's stock messages (backticks, "variant") for rule authors.
pub(crate) fn tidy(msg: &str) -> String {
    let quoted: Vec<&str> = msg.split('`').skip(1).step_by(2).collect();
    if let Some(rest) = msg.strip_prefix("missing field `") {
        return format!("missing field {:?}", rest.trim_end_matches('`'));
    }
    if msg.starts_with("unknown variant `")
        && let Some((got, allowed)) = quoted.split_first()
    {
        return unknown_field("value", got, allowed);
    }
    if msg.starts_with("unknown field `")
        && let Some((got, allowed)) = quoted.split_first()
    {
        return unknown_field("field", got, allowed);
    }
    if msg.starts_with("data did not match any variant of untagged enum EnvValue") {
        return "expected a string or a secret reference: {env: NAME} or {file: PATH}".into();
    }
    msg.replace('`', "\"")
        .replace("expected a sequence", "expected a list")
        .replace("invalid type: map,", "invalid type: mapping,")
}

/// Where a parameter's value is, or the parameter block when it is absent.
pub(crate) fn field_pos(p: &Node, field: &str) -> Pos {
    p.as_mapping()
        .and_then(|m| m.get(field))
        .map_or_else(|| pos(p), pos)
}

/// Where item `i` of a list parameter is.
pub(crate) fn item_pos(p: &Node, field: &str, i: usize) -> Pos {
    p.as_mapping()
        .and_then(|m| m.get(field))
        .and_then(|l| l.as_sequence().and_then(|s| s.get(i)))
        .map_or_else(|| field_pos(p, field), pos)
}

/// A number as YAML writes it, for thresholds (`above`, `below`, ...):
/// decimals and exponents, and YAML's special floats `.inf`, `+.inf`,
/// `-.inf` and `.nan` (each also as `.Inf`/`.INF`, `.NaN`/`.NAN`), which
/// Rust's parser does not know. `~`/`null` is no threshold. Use with
/// `#[serde(default, deserialize_with = "crate::yaml::threshold")]`.
pub(crate) fn threshold<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number (or .inf, -.inf, .nan)")
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            if matches!(s, "~" | "null" | "Null" | "NULL" | "") {
                return Ok(None);
            }
            yaml_float(s)
                .map(Some)
                .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(s), &self))
        }
    }
    d.deserialize_any(V)
}

/// A number in YAML 1.2's core schema spellings.
fn yaml_float(s: &str) -> Option<f64> {
    let (sign, body) = match s.as_bytes().first() {
        Some(b'-') => (-1.0, &s[1..]),
        Some(b'+') => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return Some(sign * f64::INFINITY);
    }
    if matches!(s, ".nan" | ".NaN" | ".NAN") {
        return Some(f64::NAN);
    }
    // Digits, signs, points and exponents only: Rust's parser would also
    // take `inf` and `nan` spelt any way, which YAML reads as strings.
    let numeric = s
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.' | b'e' | b'E'))
        && body.bytes().any(|c| c.is_ascii_digit());
    if numeric { s.parse().ok() } else { None }
}

/// `{key: value}`, placed where `value` is (shorthands expand to this).
pub(crate) fn wrap(key: &str, value: Node) -> Node {
    let span = *value.span();
    let mut m = MarkedMappingNode::new_empty(span);
    m.insert(MarkedScalarNode::new(span, key.to_string()), value);
    Node::Mapping(m)
}

/// Reads one file's YAML tree and collects every problem found in it, each
/// at its position in `origin`. Readers return `None` after reporting, so
/// callers combine results with `?` and keep going elsewhere.
pub(crate) struct Cursor<'a> {
    /// Names the file in every diagnostic.
    pub origin: &'a str,
    /// What was found so far, in the order found.
    pub out: Vec<Diagnostic>,
    /// What is allowed but probably not meant (`medic check` prints them;
    /// they do not fail a load).
    pub warnings: Vec<Diagnostic>,
}

impl<'a> Cursor<'a> {
    pub fn new(origin: &'a str) -> Self {
        Cursor {
            origin,
            out: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// A warning at `at` (`warning: ` is prefixed).
    pub fn warn(&mut self, at: Pos, msg: impl AsRef<str>) {
        let msg = format!("warning: {}", msg.as_ref());
        self.warnings.push(diag(self.origin, at, msg));
    }

    /// The diagnostics, in position order.
    pub fn finish(mut self) -> Vec<Diagnostic> {
        self.out.sort_by_key(|d| (d.line, d.col));
        self.out
    }

    pub fn err(&mut self, at: Pos, msg: impl Into<String>) {
        self.out.push(diag(self.origin, at, msg));
    }

    /// The node as a mapping; `what` says what was expected.
    pub fn mapping<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n MarkedMappingNode> {
        match node {
            Node::Mapping(m) => Some(m),
            other => {
                self.err(
                    pos(other),
                    format!("expected {what}, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// Reports every key not in `allowed`; returns the did-you-mean hints
    /// given (so "missing field" need not repeat a misspelt one).
    pub fn unknown_keys(&mut self, m: &MarkedMappingNode, allowed: &[&str]) -> Vec<String> {
        let mut hints = Vec::new();
        for k in m.keys() {
            if !allowed.contains(&k.as_str()) {
                self.err(key_pos(k), unknown_field("field", k.as_str(), allowed));
                hints.extend(did_you_mean(k.as_str(), allowed.iter().copied()));
            }
        }
        hints
    }

    /// A present, non-null value.
    pub fn optional<'n>(&self, m: &'n MarkedMappingNode, key: &str) -> Option<&'n Node> {
        m.get(key).filter(|v| !is_null(v))
    }

    /// A required value; reports it missing at the mapping that lacks it,
    /// or at the key when the key is there without a value.
    pub fn required<'n>(&mut self, m: &'n MarkedMappingNode, key: &str) -> Option<&'n Node> {
        match m.get(key) {
            Some(v) if !is_null(v) => Some(v),
            Some(_) => {
                let at = m
                    .keys()
                    .find(|k| k.as_str() == key)
                    .map_or_else(|| mapping_pos(m), key_pos);
                self.err(at, format!("{key:?} needs a value"));
                None
            }
            None => {
                self.err(mapping_pos(m), format!("missing field {key:?}"));
                None
            }
        }
    }

    pub fn string(&mut self, node: &Node) -> Option<String> {
        match node {
            Node::Scalar(s) => Some(s.as_str().to_string()),
            other => {
                self.err(
                    pos(other),
                    format!("expected a string, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// A list's items; null is the empty list.
    pub fn list<'n>(&mut self, node: &'n Node, what: &str) -> Option<Vec<&'n Node>> {
        match node {
            Node::Sequence(s) => Some(s.iter().collect()),
            other if is_null(other) => Some(Vec::new()),
            other => {
                self.err(
                    pos(other),
                    format!("expected a list of {what}, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// A medic duration (`90s`, `5m`, `1h30m`).
    pub fn dur(&mut self, node: &Node) -> Option<Dur> {
        match node {
            Node::Scalar(s) => match s.as_str().parse::<Dur>() {
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(pos(node), e);
                    None
                }
            },
            other => {
                self.err(
                    pos(other),
                    format!(
                        "expected a duration such as \"30s\", found {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    /// A duration longer than zero.
    pub fn positive_dur(&mut self, node: &Node, key: &str) -> Option<Dur> {
        let d = self.dur(node)?;
        if d.get().is_zero() {
            self.err(pos(node), format!("{key} must be longer than 0s"));
            return None;
        }
        Some(d)
    }

    /// One of `options` by name; an unknown one is reported with the names.
    pub fn choice<T: Copy>(&mut self, node: &Node, what: &str, options: &[(&str, T)]) -> Option<T> {
        let s = self.string(node)?;
        if let Some((_, v)) = options.iter().find(|(n, _)| *n == s) {
            return Some(*v);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        self.err(pos(node), unknown_field(what, &s, &names));
        None
    }

    /// Deserializes a kind's parameters (see [`params`]).
    pub fn params<T: DeserializeOwned>(&mut self, node: &Node, also: &[&str]) -> Option<T> {
        params(self.origin, node, also, &mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse("t.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn syntax_errors_have_positions() {
        assert_eq!(
            err("a: b: c\n"),
            "t.yaml:1:5: mapping values are not allowed in this context"
        );
        assert_eq!(
            err("- a\n"),
            "t.yaml:1:1: expected a mapping (`key: value` lines)"
        );
        assert_eq!(
            err("a: 1\nb: 2\na: 3\n"),
            "t.yaml:3:1: duplicate key \"a\" (first defined at 1:1)"
        );
        assert_eq!(
            err("a: &x 1\n"),
            "t.yaml:1:7: YAML anchors and aliases are not supported"
        );
    }

    #[test]
    fn control_characters_are_refused_at_their_position() {
        // Regression: a NUL ended the file there; what followed was ignored.
        assert_eq!(
            err("a: 1\nb: x\0\nc: 3\n"),
            "t.yaml:2:5: control character U+0000 (NUL) is not allowed in YAML (write it as an escape, such as \\x00, inside double quotes)"
        );
        assert!(
            err("a: \"\u{1b}[31m\"\n").starts_with("t.yaml:1:5: control character U+001B (escape)")
        );
        assert!(err("# \u{7f}\na: 1\n").starts_with("t.yaml:1:3: control character U+007F (DEL)"));
        assert!(err("a: é\u{85}\n").starts_with("t.yaml:1:5: control character U+0085 is"));
        // Tabs, CRLF line ends, a BOM and escapes are fine.
        assert!(parse("t", "\u{feff}a: \"x\\0y\"\r\nb: \"\t\"\r\n").is_ok());
    }

    #[test]
    fn second_document_is_refused() {
        // marked_yaml would silently drop it.
        assert_eq!(
            err("a: 1\n---\nb: 2\n"),
            "t.yaml:2:1: only one YAML document per file is supported"
        );
        assert_eq!(
            err("a: 1\n...\nb: 2\n"),
            "t.yaml:3:1: only one YAML document per file is supported"
        );
        assert!(parse("t", "%YAML 1.2\n---\na: 1\n...\n").is_ok());
        assert!(parse("t", "# c\n--- # c\na: 1\n").is_ok());
        assert!(parse("t", "a: |\n  ---\n  x\n").is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        // Regression: 100k nested sequences used to be a stack overflow risk.
        let text = format!("a:\n{}x\n", "- ".repeat(100_000));
        assert_eq!(
            err(&text),
            "t.yaml:2:1: indentation is deeper than 200 levels"
        );
        let text = format!("a:\n{}x\n", " ".repeat(100_000));
        assert_eq!(
            err(&text),
            "t.yaml:2:1: indentation is deeper than 200 levels"
        );
        let text = format!("a:\n{}x\n", "- ".repeat(40));
        assert_eq!(err(&text), "t.yaml:2:63: nesting is deeper than 32 levels");
        let flow = format!("a: {}\n", "[".repeat(100_000));
        assert!(parse("t", &flow).is_err());
        let flow = format!("a: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert!(err(&flow).ends_with("nesting is deeper than 32 levels"));
    }

    #[test]
    fn empty_text_is_an_empty_mapping() {
        let n = parse("t", "").unwrap();
        assert!(n.as_mapping().is_some_and(|m| m.is_empty()));
        let n = parse("t", "# nothing\n").unwrap();
        assert!(n.as_mapping().is_some_and(|m| m.is_empty()));
    }

    #[test]
    fn field_names_come_from_serde() {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Params {
            target: Option<String>,
            address: Option<String>,
        }
        assert_eq!(field_names::<Params>(), &["target", "address"]);
    }

    #[test]
    fn required_points_at_the_mapping_or_the_empty_key() {
        // The four copies of this cursor reported a null value at different
        // places; one cursor, one rule: absent at the mapping that lacks
        // the key, present without a value at the key.
        let root = parse("t.yaml", "a: 1\nb:\n  c: ~\n").unwrap();
        let mut y = Cursor::new("t.yaml");
        let m = root.as_mapping().unwrap();
        assert!(y.required(m, "a").is_some());
        assert!(y.required(m, "x").is_none());
        let b = y.mapping(m.get("b").unwrap(), "a mapping").unwrap();
        assert!(y.required(b, "c").is_none());
        let got: Vec<String> = y.finish().iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "t.yaml:1:1: missing field \"x\"",
                "t.yaml:3:3: \"c\" needs a value"
            ]
        );
    }

    #[test]
    fn tidies_serde_messages() {
        assert_eq!(tidy("missing field `args`"), "missing field \"args\"");
        assert_eq!(
            tidy("unknown variant `enforcing`, expected `enforce` or `dry-run`"),
            "unknown value \"enforcing\" (did you mean \"enforce\"?)"
        );
        assert_eq!(
            tidy("invalid type: string \"x\", expected a sequence"),
            "invalid type: string \"x\", expected a list"
        );
    }
}
