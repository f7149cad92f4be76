//! Acceptance (issue 18): medic fits the tools operators already run.
//! A real medic (an incident that escalates and pages) serves `/metrics`
//! that `promtool check metrics` passes in the Prometheus text format and
//! prometheus_client's OpenMetrics parser passes in OpenMetrics; what it
//! serves is the table in `docs/operations.md`, no more, no less.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";
const PROMETHEUS_TEXT: &str = "text/plain;version=0.0.4";

/// `/metrics` with `accept`: its content type and body.
fn scrape(base: &str, accept: Option<&str>) -> (String, String) {
    block_on(async {
        let mut req = reqwest::Client::new().get(format!("{base}/metrics"));
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        (ct, r.text().await.unwrap())
    })
}

/// Runs `argv` with `input` on stdin; its exit status and stdout + stderr.
fn run_with_stdin(argv: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/test.sh installs it)", argv[0]));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A running medic with one scenario (`port-closed`, nothing listening) whose
/// incident opens, spends its one attempt, escalates and pages (the log
/// notifier).
fn medic_with_an_escalated_incident(dir: &Path) -> (Medic, String) {
    let (http, port) = (free_port(), free_port());
    let config = enforce_config(dir, http, "2s");
    std::fs::write(
        dir.join("rules/port.yaml"),
        port_closed_rule("port-closed", "Port closed", port, 1),
    )
    .unwrap();
    let medic = Medic::start(&config, &dir.join("medic.log"));
    let base = format!("http://127.0.0.1:{http}");
    wait_until(
        Duration::from_secs(20),
        "an escalated, paged incident",
        || {
            let text = scrape(&base, None).1;
            text.contains("medic_open_incidents{scenario=\"port-closed\",state=\"escalated\"} 1")
                && text.contains("medic_notifications_total{notifier=\"log\",result=\"success\"}")
        },
    );
    (medic, base)
}

/// The metrics table of `docs/operations.md`: name → (type, labels).
fn documented() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .unwrap();
    let section = doc
        .split("\n## Metrics\n")
        .nth(1)
        .expect("docs/operations.md has a ## Metrics section");
    let section = section.split("\n## ").next().unwrap();
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `medic_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_string();
        let kind = cells[2].split_whitespace().next().unwrap().to_string();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        assert!(
            out.insert(name.clone(), (kind, labels)).is_none(),
            "{name} twice"
        );
    }
    out
}

/// What the Prometheus text format serves: name → (type, label names seen).
fn served(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.insert(name.into(), (kind.into(), BTreeSet::new()));
        }
    }
    let label = regex::Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*""#).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = out
            .keys()
            .find(|f| {
                name == f.as_str()
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(f.as_str()))
            })
            .unwrap_or_else(|| panic!("sample of no family: {line}"))
            .clone();
        let labels = line.split_once('{').map_or("", |(_, l)| l);
        for c in label.captures_iter(labels) {
            if &c[1] != "le" {
                out.get_mut(&family).unwrap().1.insert(c[1].to_string());
            }
        }
    }
    out
}

#[test]
fn metrics_pass_promtool_and_the_openmetrics_parser_and_match_the_docs() {
    let dir = tempfile::tempdir().unwrap();
    let (_medic, base) = medic_with_an_escalated_incident(dir.path());

    // The Prometheus text format: asked for, and without an Accept header.
    for accept in [Some(PROMETHEUS_TEXT), None] {
        let (ct, text) = scrape(&base, accept);
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8", "{accept:?}");
        let (ok, out) = run_with_stdin(&["promtool", "check", "metrics"], &text);
        assert!(ok && out.trim().is_empty(), "promtool: {out}\n{text}");
    }

    // OpenMetrics, as Prometheus asks for it.
    let (ct, om) = scrape(
        &base,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(ct, format!("{OPENMETRICS}; charset=utf-8"));
    assert!(om.ends_with("# EOF\n"), "{om}");
    let parse = "import sys\n\
                 from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
                 for f in p(sys.stdin.read()): print(f.name, f.type)\n";
    let (ok, out) = run_with_stdin(&["python3", "-c", parse], &om);
    assert!(ok, "prometheus_client's OpenMetrics parser: {out}\n{om}");
    assert!(out.contains("medic_checks counter\n"), "{out}");
    assert!(out.contains("medic_build info\n"), "{out}");

    // Build info: the version and a commit.
    let text = scrape(&base, None).1;
    let build = text
        .lines()
        .find(|l| l.starts_with("medic_build_info{"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        build.starts_with(&format!(
            "medic_build_info{{version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        )) && build.ends_with("} 1"),
        "{build}"
    );

    // Served = documented: every family with its type; every label served
    // is documented, and every documented label is served (this run has a
    // sample of every family with labels).
    let docs = documented();
    let served = served(&text);
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        docs.keys().collect::<Vec<_>>(),
        "families served vs docs/operations.md"
    );
    for (name, (kind, labels)) in &served {
        let (doc_kind, doc_labels) = &docs[name];
        assert_eq!(kind, doc_kind, "{name}'s type");
        assert_eq!(labels, doc_labels, "{name}'s labels");
    }
    // And the library's own list agrees.
    for f in medic::metrics::FAMILIES {
        let doc_labels: BTreeSet<String> = f.labels.iter().map(|l| l.to_string()).collect();
        assert_eq!(docs[f.name].1, doc_labels, "{}", f.name);
    }
}
