//! Prometheus alerting rule files as symptoms: every shared fixture file
//! (awesome-prometheus-alerts) loads, broken copies give exact
//! `path:line:col` errors through `medic check` (library and binary), and
//! `from_prometheus_rule` turns a rule into an `alert` or `promql` check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use medic::check::CheckSpec;
use medic::rules::prometheus;

/// The shared fixtures (`MEDIC_FIXTURES`, default `/work/shared/fixtures`).
fn rules_dir() -> PathBuf {
    std::env::var_os("MEDIC_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/fixtures"))
        .join("prometheus-rules/awesome-prometheus-alerts")
}

fn fixture_files() -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out)
            } else {
                out.push(p)
            }
        }
    }
    let mut v = Vec::new();
    walk(&rules_dir(), &mut v);
    v.sort();
    assert_eq!(v.len(), 13, "fixtures moved? {v:?}");
    v
}

/// `line:col` (1-based) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[test]
fn every_fixture_file_loads_every_alert() {
    let mut total = 0;
    for f in fixture_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        let (rules, diags) = prometheus::load_str(&f.display().to_string(), &text);
        assert!(diags.is_empty(), "{}: {diags:?}", f.display());
        let written = text
            .lines()
            .filter(|l| l.trim_start().starts_with("- alert:"))
            .count();
        assert_eq!(rules.alerts.len(), written, "{}", f.display());
        for a in &rules.alerts {
            assert!(!a.expr.trim().is_empty() && !a.group.is_empty(), "{a:?}");
        }
        total += written;
    }
    let (all, diags) = prometheus::load_paths(&[rules_dir()]);
    assert!(diags.is_empty());
    assert_eq!(all.alerts.len(), total);
    // A multi-line expression and a `for` read right.
    let down = all.find("RedisDown", None);
    assert_eq!(down.len(), 1);
    assert_eq!(down[0].expr, "redis_up == 0");
    assert_eq!(down[0].for_.get().as_secs(), 60);
}

/// Breaks the first `what` in `file` into `into`; the one error must be
/// exactly where `points_at` (inside `into`) is, with `message`.
fn broken(file: &str, what: &str, into: &str, points_at: &str, message: &str) {
    let src = rules_dir().join(file);
    let text = std::fs::read_to_string(&src).unwrap();
    let at = text
        .find(what)
        .unwrap_or_else(|| panic!("{what:?} not in {file}"));
    let bad = format!("{}{into}{}", &text[..at], &text[at + what.len()..]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.yml");
    std::fs::write(&path, &bad).unwrap();
    let (line, col) = line_col(&bad, at + into.find(points_at).unwrap());
    let (_, diags) = prometheus::load_paths(std::slice::from_ref(&path));
    let got: Vec<String> = diags.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [format!("{}:{line}:{col}: {message}", path.display())],
        "breaking {what:?} in {file}"
    );
}

#[test]
fn broken_copies_give_exact_positions() {
    let redis = "redis/oliver006-redis-exporter.yml";
    let durations = "(Prometheus durations look like 30s, 5m, 1h30m, 1d)";
    broken(
        redis,
        "for: 1m",
        "for: 1 minute",
        "1 minute",
        &format!("for: invalid duration \"1 minute\" {durations}"),
    );
    broken(
        redis,
        "for: 1m",
        "fr: 1m",
        "fr",
        "unknown field \"fr\" (expected one of: alert, record, expr, for, keep_firing_for, labels, annotations)",
    );
    broken(
        redis,
        "      labels:\n        severity: critical",
        "      labels:\n        0severity: critical",
        "0severity",
        "invalid label name \"0severity\": use letters, digits and \"_\", not starting with a digit",
    );
    broken(
        "postgresql/postgres-exporter.yml",
        "- alert: PostgresqlDown",
        "- alrt: PostgresqlDown",
        "alrt",
        "unknown field \"alrt\" (did you mean \"alert\"?)",
    );
    broken(
        "kubernetes/kubestate-exporter.yml",
        "  rules:",
        "  rulez:",
        "rulez",
        "unknown field \"rulez\" (did you mean \"rules\"?)",
    );
    broken(
        "etcd/embedded-exporter.yml",
        "- name: EmbeddedExporter",
        "- name: [EmbeddedExporter]",
        "[",
        "name: expected a string, found a list",
    );
}

fn write_config(dir: &Path, rule: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/redis.yaml"), rule).unwrap();
    let config = format!(
        "prometheus_rules: [\"{}\"]\n\
         targets:\n\
         \x20 prom: {{ prometheus: {{ url: \"http://127.0.0.1:9090\" }} }}\n\
         http: {{ listen: \"127.0.0.1:0\" }}\n",
        rules_dir().display()
    );
    std::fs::write(dir.join("medic.yaml"), config).unwrap();
    dir.join("medic.yaml")
}

const RULE: &str = "\
scenario: redis
summary: Redis
severity: high
rto: 5m
symptoms:
  down:
    from_prometheus_rule: RedisDown
  rejecting:
    from_prometheus_rule: { alert: RedisRejectedConnections, as: promql }
    every: 15s
when: { any: [down, rejecting] }
escalation: default
";

#[test]
fn rules_become_alert_and_promql_symptoms() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), RULE);
    let config = medic::config::load(&config_path).unwrap();
    let s = medic::rules::load_paths(&[dir.path().join("rules")], &config).unwrap();
    let down = &s[0].symptoms[0];
    match &down.check {
        CheckSpec::Alert(a) => assert_eq!(
            a.matchers,
            [("alertname", "RedisDown"), ("severity", "critical")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        ),
        other => panic!("{other:?}"),
    }
    assert!(
        down.for_.get().is_zero(),
        "Alertmanager already waited for `for`"
    );
    let rejecting = &s[0].symptoms[1];
    let (all, _) = prometheus::load_paths(&[rules_dir()]);
    let rule = all.find("RedisRejectedConnections", None)[0];
    match &rejecting.check {
        CheckSpec::Promql(q) => assert_eq!(q.query, rule.expr),
        other => panic!("{other:?}"),
    }
    assert_eq!(rejecting.for_, rule.for_);
}

#[test]
fn medic_check_reports_bad_references_and_bad_rule_files() {
    let dir = tempfile::tempdir().unwrap();
    let bad_rule = RULE
        .replace("RedisDown", "RedisDwn")
        .replace("as: promql", "as: pql");
    let config_path = write_config(dir.path(), &bad_rule);
    let rule_path = dir.path().join("rules/redis.yaml");
    let err = medic::rules::check_with_env(Some(&config_path), &[], HashMap::new()).unwrap_err();
    let got: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    let r = rule_path.display();
    assert_eq!(
        got,
        [
            format!(
                "{r}:7:27: unknown Prometheus alert \"RedisDwn\" (did you mean \"RedisDown\"?)"
            ),
            format!("{r}:9:66: unknown `as` \"pql\" (expected one of: alert, promql)"),
        ]
    );

    // A broken Prometheus rule file is reported by `medic check` too, from
    // the real binary, with its position.
    let broken = dir.path().join("broken.yml");
    std::fs::write(
        &broken,
        "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: up == 0\n    for: 5 mins\n",
    )
    .unwrap();
    std::fs::write(
        &config_path,
        "prometheus_rules: [broken.yml]\nhttp: { listen: \"127.0.0.1:0\" }\nrules: [rules]\n",
    )
    .unwrap();
    std::fs::write(
        &rule_path,
        RULE.replace("RedisRejectedConnections", "X")
            .replace("RedisDown", "X")
            .replace(", as: promql", ""),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["check", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:6:10: for: invalid duration \"5 mins\" (Prometheus durations look like 30s, 5m, 1h30m, 1d)",
            broken.display()
        )),
        "{stderr}"
    );
}
