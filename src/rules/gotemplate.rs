//! The syntax of Go's `text/template` as Prometheus parses rule labels and
//! annotations (`{{ $labels.instance }}`, `{{ $value | humanize }}`):
//! enough to report what `promtool check rules` reports (an unclosed
//! action or string, an unknown function, `{{ end }}` without a block, a
//! block without `{{ end }}`, unbalanced parentheses), without running it.

/// Functions a Prometheus alert template may call: Go's built-ins and
/// Prometheus's own (`template.go`'s `FuncMap`).
const FUNCTIONS: &[&str] = &[
    // Go text/template built-ins.
    "and",
    "call",
    "html",
    "index",
    "slice",
    "js",
    "len",
    "not",
    "or",
    "print",
    "printf",
    "println",
    "urlquery",
    "eq",
    "ge",
    "gt",
    "le",
    "lt",
    "ne",
    // Prometheus.
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "safeHtml",
    "match",
    "title",
    "toUpper",
    "toLower",
    "graphLink",
    "tableLink",
    "sortByLabel",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "toDuration",
    "pathPrefix",
    "externalURL",
    "parseDuration",
    "stripPort",
    "stripDomain",
    "now",
];

/// Words with a meaning of their own inside an action.
const KEYWORDS: &[&str] = &[
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
    "nil", "true", "false",
];

/// Checks `text`; the first problem, as Go's parser words it.
pub fn check(text: &str) -> Result<(), String> {
    let mut blocks: Vec<&str> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let body_start = open + 2;
        let close = find_close(&rest[body_start..])?;
        let mut body = &rest[body_start..body_start + close];
        rest = &rest[body_start + close + 2..];
        if let Some(b) = body.strip_prefix('-')
            && b.starts_with([' ', '\t', '\n', '\r'])
        {
            body = b;
        }
        if let Some(b) = body.strip_suffix('-')
            && b.ends_with([' ', '\t', '\n', '\r'])
        {
            body = b;
        }
        let body = body.trim();
        if body.starts_with("/*") {
            if !body.ends_with("*/") {
                return Err("comment ends before closing delimiter".into());
            }
            continue;
        }
        action(body, &mut blocks)?;
    }
    match blocks.last() {
        Some(b) => Err(format!("unexpected EOF: {{{{{b}}}}} has no {{{{end}}}}")),
        None => Ok(()),
    }
}

/// Where the action starting at `s` closes (`}}` outside strings).
fn find_close(s: &str) -> Result<usize, String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    match b.get(i) {
                        None | Some(b'\n') => return Err("unterminated quoted string".into()),
                        Some(b'\\') => i += 2,
                        Some(&c) if c == q => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'`' => match s[i + 1..].find('`') {
                Some(n) => i += n + 1,
                None => return Err("unterminated raw quoted string".into()),
            },
            b'}' if b.get(i + 1) == Some(&b'}') => return Ok(i),
            _ => {}
        }
        i += 1;
    }
    Err("unclosed action".into())
}

/// One action's words: blocks opened and closed, functions known,
/// parentheses balanced.
fn action<'a>(body: &'a str, blocks: &mut Vec<&'a str>) -> Result<(), String> {
    if body.is_empty() {
        return Err("missing value for command".into());
    }
    let first = body
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    match first {
        "if" | "range" | "with" | "define" | "block" => blocks.push(first),
        "else" if !matches!(blocks.last(), Some(&("if" | "range" | "with"))) => {
            return Err("unexpected {{else}}".into());
        }
        "end" if blocks.pop().is_none() => return Err("unexpected {{end}}".into()),
        _ => {}
    }
    let mut depth = 0i32;
    let b = body.as_bytes();
    let mut i = 0;
    let mut prev = b' ';
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unexpected right paren".into());
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &body[start..i];
                // A field (`.Foo`), a variable (`$x`) or part of a number.
                let bare = !(prev == b'.' || prev == b'$' || prev.is_ascii_digit());
                if bare && !KEYWORDS.contains(&word) && !FUNCTIONS.contains(&word) {
                    return Err(format!("function {word:?} not defined"));
                }
                prev = b[i - 1];
                continue;
            }
            _ => {}
        }
        prev = c;
        i += 1;
    }
    if depth > 0 {
        return Err("unclosed left paren".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn what_prometheus_templates_look_like_passes() {
        for ok in [
            "plain text, with } and }} outside actions",
            "{{ $labels.instance }} is down",
            "{{ $value | humanize }}% of {{ $labels.job }}",
            "{{- if gt $value 1.5 -}}high{{ else if eq $value 0.0 }}zero{{ else }}low{{ end }}",
            "{{ range query \"up == 0\" }}{{ .Labels.instance }} {{ end }}",
            "{{ with $x := $labels.a }}{{ $x }}{{ end }}",
            "{{/* a comment */}}",
            "{{ printf \"%.2f\" (humanizePercentage $value) }}",
            "{{ reReplaceAll \"(.+):.*\" \"$1\" $labels.instance | toUpper }}",
            "{{ `raw }} string` }}",
            "{{ 1e3 }} {{ 0x1F }}",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_promtool_refuses_is_refused() {
        for (bad, why) in [
            ("{{ $labels.instance }", "unclosed action"),
            (
                "{{ $labels.instance | humanise }}",
                "function \"humanise\" not defined",
            ),
            ("{{ if $value }}x", "unexpected EOF: {{if}} has no {{end}}"),
            ("x{{ end }}", "unexpected {{end}}"),
            ("{{ else }}", "unexpected {{else}}"),
            ("{{ printf \"%s }}", "unterminated quoted string"),
            ("{{ (len $labels }}", "unclosed left paren"),
            ("{{ len $labels) }}", "unexpected right paren"),
            ("{{ }}", "missing value for command"),
            ("{{/* open }}", "comment ends before closing delimiter"),
        ] {
            assert_eq!(check(bad), Err(why.to_string()), "{bad}");
        }
    }
}
