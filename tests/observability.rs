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
    // One symptom opts in to its per-symptom series.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}metrics: {{ per_symptom: [port-closed/closed] }}\n"),
    )
    .unwrap();
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
                && text.contains(
                    "medic_symptom_state{scenario=\"port-closed\",symptom=\"closed\",state=\"firing\"} 1",
                )
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

fn monitoring(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/monitoring")
        .join(file)
}

fn yaml_file(path: &Path) -> serde_json::Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// medic's own alerts pass `promtool check rules` and their unit tests
/// (`promtool test rules`: every alert fires when it should, and not before);
/// the PrometheusRule ships the same groups; the ServiceMonitor selects the
/// Service's port.
#[test]
fn medic_alerts_pass_promtool_and_the_operator_manifests_match() {
    for args in [
        ["check", "rules", "medic-alerts.yaml"],
        ["test", "rules", "medic-alerts.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(monitoring(""))
            .output()
            .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert has a unit test.
    let rules = yaml_file(&monitoring("medic-alerts.yaml"));
    let tests = std::fs::read_to_string(monitoring("medic-alerts.test.yaml")).unwrap();
    let alerts: Vec<&str> = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(alerts.len(), 7);
    for a in &alerts {
        assert!(
            tests.contains(&format!("alertname: {a}\n")),
            "{a} has no promtool test"
        );
    }

    let pr = yaml_file(&monitoring("prometheusrule.yaml"));
    assert_eq!(pr["kind"], "PrometheusRule");
    assert_eq!(pr["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        pr["spec"]["groups"], rules["groups"],
        "prometheusrule.yaml drifted from medic-alerts.yaml"
    );

    let sm = yaml_file(&monitoring("servicemonitor.yaml"));
    let svc =
        yaml_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/service.yaml"));
    assert_eq!(sm["kind"], "ServiceMonitor");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"],
        svc["metadata"]["labels"]
    );
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    // The job label it gives is what the alerts and the dashboard select.
    let job_label = sm["spec"]["jobLabel"].as_str().unwrap();
    assert_eq!(svc["metadata"]["labels"][job_label], "medic");
}

/// A Prometheus API query: the `data.result` list (panics on an error).
fn query(prom: &prom::Prometheus, q: &str) -> Vec<serde_json::Value> {
    let path = format!(
        "/api/v1/query?{}",
        serde_urlencoded::to_string([("query", q)]).unwrap()
    );
    let (status, body) = prom::http_get(prom.port, &path, true)
        .unwrap_or_else(|| panic!("Prometheus did not answer {q}\n{}", prom.log()));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, &v["status"]),
        (200, &"success".into()),
        "{q}: {body}"
    );
    v["data"]["result"].as_array().unwrap().clone()
}

/// The Grafana dashboard against a real Prometheus scraping a real medic
/// (OpenMetrics, as Prometheus asks for it) and loading medic's alerts:
/// the scrape is healthy, every rule loads, and every panel's every query
/// runs without error and returns data.
#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let (_medic, base) = medic_with_an_escalated_incident(dir.path());
    let target = base.trim_start_matches("http://");
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let config = format!(
        "global: {{ scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s }}\n\
         rule_files: ['{}']\n\
         scrape_configs:\n\
         - job_name: medic\n  static_configs: [{{ targets: ['{target}'] }}]\n",
        monitoring("medic-alerts.yaml").display()
    );
    let prom = prom::Prometheus::start_config(&config, &prom_dir);
    wait_until(Duration::from_secs(30), "five scrapes of medic", || {
        query(&prom, "count_over_time(up{job=\"medic\"}[1m]) >= 5").len() == 1
    });

    // The scrape: up, in OpenMetrics, without errors.
    let (_, targets) = prom::http_get(prom.port, "/api/v1/targets", true).unwrap();
    let t: serde_json::Value = serde_json::from_str(&targets).unwrap();
    let active = &t["data"]["activeTargets"][0];
    assert_eq!(active["health"], "up", "{targets}");
    assert_eq!(active["lastError"], "", "{targets}");
    assert_eq!(query(&prom, "up{job=\"medic\"} == 1").len(), 1);

    // Every alerting rule loaded and evaluates.
    let (_, rules) = prom::http_get(prom.port, "/api/v1/rules", true).unwrap();
    let r: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let loaded = r["data"]["groups"][0]["rules"].as_array().unwrap();
    assert_eq!(loaded.len(), 7, "{rules}");
    wait_until(Duration::from_secs(10), "every rule evaluated", || {
        let (_, rules) = prom::http_get(prom.port, "/api/v1/rules", true).unwrap();
        let r: serde_json::Value = serde_json::from_str(&rules).unwrap();
        r["data"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|rule| rule["health"] == "ok")
    });

    // Every panel's queries, with Grafana's variables as it would fill them.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 12);
    let mut queried = 0;
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$job", "medic")
                .replace("$__rate_interval", "10s");
            let result = query(&prom, &expr);
            assert!(
                !result.is_empty(),
                "panel {} returned no data: {expr}",
                panel["title"]
            );
            queried += 1;
        }
    }
    assert!(queried >= panels.len());
}
