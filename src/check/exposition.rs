//! A streaming parser for the Prometheus text exposition format (0.0.4),
//! and metric selectors (`name{label="v", other!="x", re=~"a.*"}`) to
//! match its samples.
//!
//! Why not the `prometheus-parse` crate the design named: measured on
//! tricky but valid input it drops or mangles samples. Its sample regex
//! takes `\w+` names, so `job:requests:rate5m` (recording-rule names with
//! colons) is silently skipped; it splits labels on `,` and `=` and cuts at
//! the first `}`, so a label value containing any of them loses the label
//! or the sample; it never unescapes `\"`, `\\` or `\n`; and it folds
//! histogram buckets and summary quantiles into one value, so a selector
//! on `le` or `quantile` cannot be answered. The README has the figures.
//!
//! This parser is a pull iterator over the body's lines: it holds no
//! more than the sample it returns, borrows names and label values from
//! the text (allocating only to unescape), and reports the first malformed
//! line as `line:col: what`, never guessing.

use std::borrow::Cow;
use std::fmt;

use regex::Regex;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample<'a> {
    /// The metric name, e.g. `http_requests_total` or `job:rate5m`.
    pub name: &'a str,
    /// Labels in the order written, values unescaped.
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    /// The value; NaN and ±Inf included.
    pub value: f64,
    /// Milliseconds since the epoch, when the exposition gives one.
    pub timestamp_ms: Option<i64>,
    /// 1-based line number.
    pub line: usize,
}

impl Sample<'_> {
    /// A label's value.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// The metric types `# TYPE` may declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// What one meaningful line holds (blank lines and plain comments are
/// skipped).
#[derive(Clone, Debug, PartialEq)]
pub enum Entry<'a> {
    Sample(Sample<'a>),
    /// `# HELP name text`, text unescaped (`\\` and `\n`).
    Help {
        name: &'a str,
        text: Cow<'a, str>,
    },
    /// `# TYPE name type`.
    Type {
        name: &'a str,
        kind: MetricType,
    },
}

/// A malformed line: where, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}:{col}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Pulls entries out of an exposition, line by line.
pub struct Parser<'a> {
    rest: &'a str,
    line: usize,
    failed: bool,
}

impl<'a> Parser<'a> {
    pub fn new(text: &'a str) -> Self {
        Parser {
            rest: text,
            line: 0,
            failed: false,
        }
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Entry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed && !self.rest.is_empty() {
            let (line, rest) = match self.rest.find('\n') {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, ""),
            };
            self.rest = rest;
            self.line += 1;
            let line = line.strip_suffix('\r').unwrap_or(line);
            match parse_line(line, self.line) {
                Ok(None) => continue,
                Ok(Some(e)) => return Some(Ok(e)),
                Err(e) => {
                    // A broken exposition is not guessed at past its error.
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// Every sample of `text`, or the first error.
pub fn samples(text: &str) -> impl Iterator<Item = Result<Sample<'_>, ParseError>> {
    Parser::new(text).filter_map(|e| match e {
        Ok(Entry::Sample(s)) => Some(Ok(s)),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    })
}

/// A cursor over one line, for errors with columns.
struct Cur<'a> {
    s: &'a str,
    i: usize,
    line: usize,
}

impl<'a> Cur<'a> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            col: self.s[..self.i].chars().count() + 1,
            message: message.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*` (metric) or without `:` (label).
    fn name(&mut self, colons: bool, what: &str) -> Result<&'a str, ParseError> {
        let start = self.i;
        let ok = |b: u8, first: bool| {
            b.is_ascii_alphabetic()
                || b == b'_'
                || (colons && b == b':')
                || (!first && b.is_ascii_digit())
        };
        while let Some(b) = self.peek() {
            if !ok(b, self.i == start) {
                break;
            }
            self.i += 1;
        }
        if self.i == start {
            return self.err(format!("expected a {what}"));
        }
        Ok(&self.s[start..self.i])
    }

    /// A token up to whitespace.
    fn word(&mut self) -> &'a str {
        let start = self.i;
        while let Some(b) = self.peek() {
            if b == b' ' || b == b'\t' {
                break;
            }
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// A double-quoted string with `\\`, `\"` and `\n` escapes (any other
    /// escaped character is kept as written, as Prometheus does).
    fn quoted(&mut self) -> Result<Cow<'a, str>, ParseError> {
        if !self.eat(b'"') {
            return self.err("expected '\"' to open a label value");
        }
        let start = self.i;
        let bytes = self.s.as_bytes();
        let mut owned: Option<String> = None;
        let mut run = start;
        while self.i < bytes.len() {
            match bytes[self.i] {
                b'"' => {
                    let v = match owned {
                        Some(mut o) => {
                            o.push_str(&self.s[run..self.i]);
                            Cow::Owned(o)
                        }
                        None => Cow::Borrowed(&self.s[start..self.i]),
                    };
                    self.i += 1;
                    return Ok(v);
                }
                b'\\' => {
                    let o = owned.get_or_insert_with(String::new);
                    o.push_str(&self.s[run..self.i]);
                    match bytes.get(self.i + 1) {
                        Some(b'\\') => o.push('\\'),
                        Some(b'"') => o.push('"'),
                        Some(b'n') => o.push('\n'),
                        Some(_) => {
                            // Keep `\x` verbatim (a char boundary follows `\`).
                            let c = self.s[self.i + 1..].chars().next().unwrap_or('\\');
                            o.push('\\');
                            o.push(c);
                            self.i += c.len_utf8() + 1;
                            run = self.i;
                            continue;
                        }
                        None => {
                            self.i += 1;
                            return self.err("label value ends in a lone backslash");
                        }
                    }
                    self.i += 2;
                    run = self.i;
                }
                _ => self.i += 1,
            }
        }
        self.i = start - 1;
        self.err("label value is not closed with '\"'")
    }
}

/// A sample value as the reference parsers read it (Go's
/// `strconv.ParseFloat`, which Prometheus and promtool use; Python's
/// `float`, which prometheus_client uses): decimals with exponents, and the
/// special values spelt any case: `NaN`, `Inf` and `Infinity` with an
/// optional sign (`+Inf`, `-inf`, `+Infinity`, `-infinity`).
pub fn parse_value(s: &str) -> Option<f64> {
    if s.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    let (sign, body) = match s.as_bytes().first() {
        Some(b'-') => (-1.0, &s[1..]),
        Some(b'+') => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    if body.eq_ignore_ascii_case("inf") || body.eq_ignore_ascii_case("infinity") {
        return Some(sign * f64::INFINITY);
    }
    // Rust's parser would also take a signed "nan" and other spellings the
    // reference parsers refuse: only digits, signs, points and exponents.
    let b = s.as_bytes();
    let numeric = !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.' | b'e' | b'E'));
    if numeric { s.parse().ok() } else { None }
}

fn parse_line(line: &str, n: usize) -> Result<Option<Entry<'_>>, ParseError> {
    let mut c = Cur {
        s: line,
        i: 0,
        line: n,
    };
    c.skip_ws();
    match c.peek() {
        None => return Ok(None),
        Some(b'#') => return comment(c),
        _ => {}
    }
    let name = c.name(true, "metric name")?;
    let mut labels = Vec::new();
    c.skip_ws();
    if c.eat(b'{') {
        loop {
            c.skip_ws();
            if c.eat(b'}') {
                break;
            }
            let lname = c.name(false, "label name or '}'")?;
            c.skip_ws();
            if !c.eat(b'=') {
                return c.err(format!("expected '=' after label name {lname:?}"));
            }
            c.skip_ws();
            let value = c.quoted()?;
            if labels.iter().any(|(l, _)| *l == lname) {
                return c.err(format!("label {lname:?} appears twice"));
            }
            labels.push((lname, value));
            c.skip_ws();
            if c.eat(b',') {
                continue;
            }
            if c.eat(b'}') {
                break;
            }
            return c.err("expected ',' or '}' after a label value");
        }
    }
    c.skip_ws();
    let at = c.i;
    let v = c.word();
    if v.is_empty() {
        return c.err("expected a value");
    }
    let Some(value) = parse_value(v) else {
        c.i = at;
        return c.err(format!("invalid value {v:?}"));
    };
    c.skip_ws();
    let at = c.i;
    let ts = c.word();
    let timestamp_ms = if ts.is_empty() {
        None
    } else {
        match ts.parse::<i64>() {
            Ok(t) => Some(t),
            Err(_) => {
                c.i = at;
                return c.err(format!("invalid timestamp {ts:?} (milliseconds expected)"));
            }
        }
    };
    c.skip_ws();
    if c.peek().is_some() {
        return c.err("unexpected text after the sample");
    }
    Ok(Some(Entry::Sample(Sample {
        name,
        labels,
        value,
        timestamp_ms,
        line: n,
    })))
}

/// `# HELP name text`, `# TYPE name type`, or any other comment.
fn comment(mut c: Cur<'_>) -> Result<Option<Entry<'_>>, ParseError> {
    c.i += 1;
    c.skip_ws();
    let keyword = c.word();
    if keyword != "HELP" && keyword != "TYPE" {
        return Ok(None);
    }
    c.skip_ws();
    let name = c.name(true, "metric name")?;
    if !matches!(c.peek(), None | Some(b' ' | b'\t')) {
        return c.err("expected a space after the metric name");
    }
    c.skip_ws();
    let rest = &c.s[c.i..];
    if keyword == "HELP" {
        let text = if rest.contains('\\') {
            let mut o = String::with_capacity(rest.len());
            let mut chars = rest.chars();
            while let Some(ch) = chars.next() {
                match (ch, chars.clone().next()) {
                    ('\\', Some('\\')) => {
                        o.push('\\');
                        chars.next();
                    }
                    ('\\', Some('n')) => {
                        o.push('\n');
                        chars.next();
                    }
                    _ => o.push(ch),
                }
            }
            Cow::Owned(o)
        } else {
            Cow::Borrowed(rest)
        };
        return Ok(Some(Entry::Help { name, text }));
    }
    let kind = match rest.trim_end() {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        "summary" => MetricType::Summary,
        "untyped" => MetricType::Untyped,
        other => {
            return c.err(format!(
                "unknown metric type {other:?} (counter, gauge, histogram, summary or untyped)"
            ));
        }
    };
    Ok(Some(Entry::Type { name, kind }))
}

// ---------------------------------------------------------------------------
// Selectors.

/// How a label matcher compares.
#[derive(Clone, Debug)]
pub enum MatchOp {
    Eq(String),
    Ne(String),
    /// Anchored, as in PromQL.
    Re(Regex),
    NotRe(Regex),
}

/// A metric selector: `name{label="v", other!="x", re=~"a.*", n!~"b"}`.
/// A label that is absent matches as the empty string, as in PromQL.
#[derive(Clone, Debug)]
pub struct Selector {
    pub name: Option<String>,
    pub matchers: Vec<(String, MatchOp)>,
}

/// A selector that does not parse, with the 1-based column.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("column {col}: {message}")]
pub struct SelectorError {
    pub col: usize,
    pub message: String,
}

impl Selector {
    /// Parses a selector. A name, matchers in braces, or both.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut c = Cur {
            s: text,
            i: 0,
            line: 1,
        };
        let fail = |e: ParseError| SelectorError {
            col: e.col,
            message: e.message,
        };
        c.skip_ws();
        let name = if c.peek() == Some(b'{') {
            None
        } else {
            Some(
                c.name(true, "metric name or '{'")
                    .map_err(fail)?
                    .to_string(),
            )
        };
        let mut matchers = Vec::new();
        c.skip_ws();
        if c.eat(b'{') {
            loop {
                c.skip_ws();
                if c.eat(b'}') {
                    break;
                }
                let label = c.name(false, "label name or '}'").map_err(fail)?;
                c.skip_ws();
                let op = if c.eat(b'=') {
                    if c.eat(b'~') { "=~" } else { "=" }
                } else if c.eat(b'!') {
                    if c.eat(b'=') {
                        "!="
                    } else if c.eat(b'~') {
                        "!~"
                    } else {
                        return c.err("expected '=' or '~' after '!'").map_err(fail);
                    }
                } else {
                    return c
                        .err(format!("expected =, !=, =~ or !~ after {label:?}"))
                        .map_err(fail);
                };
                c.skip_ws();
                let at = c.i;
                let value = c.quoted().map_err(fail)?.into_owned();
                let regex = |v: &str| {
                    Regex::new(&format!("^(?:{v})$")).map_err(|e| SelectorError {
                        col: text[..at].chars().count() + 1,
                        message: format!("invalid regular expression: {e}"),
                    })
                };
                let m = match op {
                    "=" => MatchOp::Eq(value),
                    "!=" => MatchOp::Ne(value),
                    "=~" => MatchOp::Re(regex(&value)?),
                    _ => MatchOp::NotRe(regex(&value)?),
                };
                matchers.push((label.to_string(), m));
                c.skip_ws();
                if c.eat(b',') {
                    continue;
                }
                if c.eat(b'}') {
                    break;
                }
                return c.err("expected ',' or '}'").map_err(fail);
            }
        }
        c.skip_ws();
        if c.peek().is_some() {
            return c.err("unexpected text after the selector").map_err(fail);
        }
        if name.is_none() && matchers.is_empty() {
            return Err(SelectorError {
                col: 1,
                message: "a selector needs a metric name or at least one matcher".into(),
            });
        }
        Ok(Selector { name, matchers })
    }

    /// Whether `s` is selected.
    pub fn matches(&self, s: &Sample<'_>) -> bool {
        if let Some(n) = &self.name
            && n != s.name
        {
            return false;
        }
        self.matchers.iter().all(|(label, op)| {
            let v = if label == "__name__" {
                s.name
            } else {
                s.label(label).unwrap_or("")
            };
            match op {
                MatchOp::Eq(x) => v == x,
                MatchOp::Ne(x) => v != x,
                MatchOp::Re(r) => r.is_match(v),
                MatchOp::NotRe(r) => !r.is_match(v),
            }
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = &self.name {
            f.write_str(n)?;
        }
        if self.matchers.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = self
            .matchers
            .iter()
            .map(|(l, op)| {
                let q = |v: &str| serde_json::Value::String(v.to_string()).to_string();
                match op {
                    MatchOp::Eq(v) => format!("{l}={}", q(v)),
                    MatchOp::Ne(v) => format!("{l}!={}", q(v)),
                    MatchOp::Re(r) => format!("{l}=~{}", q(strip_anchor(r.as_str()))),
                    MatchOp::NotRe(r) => format!("{l}!~{}", q(strip_anchor(r.as_str()))),
                }
            })
            .collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}

fn strip_anchor(r: &str) -> &str {
    r.strip_prefix("^(?:")
        .and_then(|r| r.strip_suffix(")$"))
        .unwrap_or(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<Sample<'_>> {
        samples(text).collect::<Result<_, _>>().unwrap()
    }

    fn labels<'a>(s: &'a Sample<'a>) -> Vec<(&'a str, &'a str)> {
        s.labels.iter().map(|(k, v)| (*k, v.as_ref())).collect()
    }

    #[test]
    fn label_values_with_commas_equals_and_braces_are_kept_whole() {
        let s = all(r#"http_requests_total{path="/a,b=c}d",code="200"} 3"#);
        assert_eq!(s.len(), 1);
        assert_eq!(labels(&s[0]), [("path", "/a,b=c}d"), ("code", "200")]);
        assert_eq!(s[0].value, 3.0);
    }

    #[test]
    fn escaped_quotes_backslashes_and_newlines_are_unescaped() {
        let s = all(r#"m{msg="say \"hi\"\\now\nnext",other="\x"} 1"#);
        assert_eq!(
            labels(&s[0]),
            [("msg", "say \"hi\"\\now\nnext"), ("other", "\\x")]
        );
    }

    #[test]
    fn metric_names_with_colons_are_samples() {
        let s = all("job:http_requests:rate5m{job=\"api\"} 12.5\n:odd 1\n");
        assert_eq!(s[0].name, "job:http_requests:rate5m");
        assert_eq!(s[1].name, ":odd");
    }

    #[test]
    fn every_spelling_of_infinity_the_reference_parsers_accept() {
        // Regression (issue 18): `Infinity`, `+Infinity` and `-infinity`
        // rejected the whole scrape; promtool and prometheus_client take them.
        for (text, want) in [
            ("Inf", f64::INFINITY),
            ("+Inf", f64::INFINITY),
            ("-Inf", f64::NEG_INFINITY),
            ("inf", f64::INFINITY),
            ("INF", f64::INFINITY),
            ("Infinity", f64::INFINITY),
            ("+Infinity", f64::INFINITY),
            ("-infinity", f64::NEG_INFINITY),
            ("-INFINITY", f64::NEG_INFINITY),
        ] {
            assert_eq!(parse_value(text), Some(want), "{text}");
            let line = format!("m {text}\n");
            assert_eq!(all(&line)[0].value, want, "{text}");
        }
        for nan in ["NaN", "nan", "NAN"] {
            assert!(parse_value(nan).is_some_and(f64::is_nan), "{nan}");
        }
        // What Go's ParseFloat refuses stays refused.
        for bad in [
            "+NaN",
            "-nan",
            "infinit",
            "in",
            "Infinityy",
            "1.0f",
            "0x10",
            "",
        ] {
            assert_eq!(parse_value(bad).map(|v| v.to_string()), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_nan_and_infinities() {
        let s = all("a 1 1700000000000\nb NaN\nc +Inf -5\nd -Inf\ne 1.5e-3\n");
        assert_eq!(s[0].timestamp_ms, Some(1_700_000_000_000));
        assert!(s[1].value.is_nan());
        assert_eq!((s[2].value, s[2].timestamp_ms), (f64::INFINITY, Some(-5)));
        assert_eq!(s[3].value, f64::NEG_INFINITY);
        assert_eq!(s[4].value, 0.0015);
    }

    #[test]
    fn histograms_and_summaries_are_one_sample_per_line() {
        let text = "\
# HELP rpc_seconds RPC latency.
# TYPE rpc_seconds histogram
rpc_seconds_bucket{le=\"0.1\"} 2
rpc_seconds_bucket{le=\"+Inf\"} 5
rpc_seconds_sum 1.5
rpc_seconds_count 5
# TYPE q summary
q{quantile=\"0.99\"} 0.2
q_sum 3
q_count 9
";
        let s = all(text);
        assert_eq!(s.len(), 7);
        assert_eq!(s[1].label("le"), Some("+Inf"));
        assert_eq!(s[3].name, "rpc_seconds_count");
        assert_eq!(s[4].label("quantile"), Some("0.99"));
    }

    #[test]
    fn help_and_type_comments_with_escapes() {
        let e: Vec<Entry> = Parser::new(
            "# HELP m A \\\\ path\\nsecond line\n# TYPE m gauge\n# plain comment {\"x\n#\nm 1\n",
        )
        .collect::<Result<_, _>>()
        .unwrap();
        assert_eq!(
            e[0],
            Entry::Help {
                name: "m",
                text: Cow::Owned("A \\ path\nsecond line".into())
            }
        );
        assert_eq!(
            e[1],
            Entry::Type {
                name: "m",
                kind: MetricType::Gauge
            }
        );
        assert_eq!(e.len(), 3);
    }

    #[test]
    fn whitespace_trailing_commas_and_crlf() {
        let s = all("m { a = \"1\" , b=\"2\", }  7  \r\n\n   \nn{} 1\n");
        assert_eq!(labels(&s[0]), [("a", "1"), ("b", "2")]);
        assert_eq!(s[0].value, 7.0);
        assert_eq!((s[1].name, s[1].labels.len()), ("n", 0));
    }

    #[test]
    fn malformed_lines_say_where() {
        let err = |t: &str| samples(t).find_map(Result::err).unwrap().to_string();
        assert_eq!(
            err("ok 1\nm{a=\"1} 2\n"),
            "line 2:5: label value is not closed with '\"'"
        );
        assert_eq!(
            err("m{a=1} 2"),
            "line 1:5: expected '\"' to open a label value"
        );
        assert_eq!(err("m 1 2 3"), "line 1:7: unexpected text after the sample");
        assert_eq!(err("m abc"), "line 1:3: invalid value \"abc\"");
        assert_eq!(
            err("m 1 1.5"),
            "line 1:5: invalid timestamp \"1.5\" (milliseconds expected)"
        );
        assert_eq!(
            err("m{a=\"1\" b=\"2\"} 1"),
            "line 1:9: expected ',' or '}' after a label value"
        );
        assert_eq!(
            err("m{a=\"1\",a=\"2\"} 1"),
            "line 1:14: label \"a\" appears twice"
        );
        assert_eq!(err("m"), "line 1:2: expected a value");
        assert_eq!(
            err("# TYPE m gauges"),
            "line 1:10: unknown metric type \"gauges\" (counter, gauge, histogram, summary or untyped)"
        );
        assert_eq!(err("9m 1"), "line 1:1: expected a metric name");
        // Nothing after the first error is returned.
        assert_eq!(samples("x\ny 1\n").count(), 1);
    }

    #[test]
    fn selectors_match_like_promql() {
        let text = "\
up{job=\"api\",instance=\"a:1\"} 1
up{job=\"api\",instance=\"b:1\",env=\"prod\"} 0
up{job=\"db\",instance=\"c,d\"} 0
other{job=\"api\"} 0
";
        let pick = |sel: &str| -> Vec<String> {
            let sel = Selector::parse(sel).unwrap();
            all(text)
                .iter()
                .filter(|s| sel.matches(s))
                .map(|s| s.label("instance").unwrap().to_string())
                .collect()
        };
        assert_eq!(pick("up"), ["a:1", "b:1", "c,d"]);
        assert_eq!(pick(r#"up{job="api"}"#), ["a:1", "b:1"]);
        assert_eq!(pick(r#"up{job!="api"}"#), ["c,d"]);
        assert_eq!(pick(r#"up{instance=~"[ab]:.*"}"#), ["a:1", "b:1"]);
        assert_eq!(
            pick(r#"up{instance=~"a"}"#),
            Vec::<String>::new(),
            "anchored"
        );
        assert_eq!(pick(r#"up{instance!~"a.*", env=""}"#), ["c,d"]);
        let by_name = Selector::parse(r#"{__name__="other"}"#).unwrap();
        assert_eq!(all(text).iter().filter(|s| by_name.matches(s)).count(), 1);
    }

    #[test]
    fn selector_errors_and_display() {
        let e = |s: &str| Selector::parse(s).unwrap_err().to_string();
        assert_eq!(e("up{job=\"a\""), "column 11: expected ',' or '}'");
        assert!(e("up{job=~\"(\"}").starts_with("column 9: invalid regular expression: "));
        assert_eq!(
            e("up{job==\"a\"}"),
            "column 8: expected '\"' to open a label value"
        );
        assert_eq!(
            e("{}"),
            "column 1: a selector needs a metric name or at least one matcher"
        );
        let s = Selector::parse(r#" up { job = "a\"b", x!~"y.*" } "#).unwrap();
        assert_eq!(s.to_string(), r#"up{job="a\"b", x!~"y.*"}"#);
    }
}
