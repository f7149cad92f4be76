//! `medic probe`, the real binary, against a real Prometheus scraping a
//! real redis exporter: the matched series with their labels and values,
//! and the documented exit codes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Redis;
use common::prom::{Exporter, PASSWORD, Prometheus, USER};

const RULE: &str = r#"
scenario: redis-cache-failure
summary: Redis down
severity: high
rto: 5m
symptoms:
  redis_up:
    check: { promql: 'redis_up == 1' }
    every: 10s
  redis_gone:
    check: { promql: 'redis_up == 0' }
    every: 10s
  ambiguous:
    check: { promql: 'redis_up == 0' }
    every: 10s
when: { any: [redis_gone] }
plan: []
escalation: default
"#;

const OTHER: &str = r#"
scenario: other
summary: other
severity: info
rto: 5m
symptoms:
  ambiguous:
    check: { promql: 'vector(1)' }
    every: 10s
when: { any: [ambiguous] }
plan: []
escalation: default
"#;

fn probe(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .arg("probe")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn probe_prints_series_and_exits_by_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start_free();
    let exporter = Exporter::start(redis.port, dir.path());
    let mut prom = Prometheus::start(&[format!("127.0.0.1:{}", exporter.port)], dir.path());
    std::fs::write(dir.path().join("password"), PASSWORD).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/redis.yaml"), RULE).unwrap();
    std::fs::write(dir.path().join("rules/other.yaml"), OTHER).unwrap();
    let config = dir.path().join("medic.yaml");
    std::fs::write(
        &config,
        format!(
            "rules: [rules]\n\
             targets:\n  prom:\n    prometheus:\n      url: {}\n      basic_auth: {{ username: {USER}, password: {{ file: {pw} }} }}\n\
             notifiers:\n  log: {{ log: {{}} }}\n\
             escalation:\n  default:\n    levels:\n      - {{ after: 0m, notify: [log] }}\n",
            prom.url(),
            pw = dir.path().join("password").display()
        ),
    )
    .unwrap();

    // Both jobs scraped: two series, each with its labels and value.
    let instance = format!("127.0.0.1:{}", exporter.port);
    let mut last = (0, String::new(), String::new());
    for _ in 0..150 {
        last = probe(&config, &["redis_up"]);
        if last.0 == 1 && last.1.contains("2 series") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out, err) = last;
    assert_eq!(code, 1, "failing exits 1: {out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("redis-cache-failure/redis_up (promql check, "),
        "{out}"
    );
    assert_eq!(lines[1], "failing: 2 series");
    assert_eq!(
        lines[2],
        format!(r#"  {{__name__="redis_up",instance="{instance}",job="redis-a"}} 1"#)
    );
    assert_eq!(
        lines[3],
        format!(r#"  {{__name__="redis_up",instance="{instance}",job="redis-b"}} 1"#)
    );

    // An empty result: ok, exit 0.
    let (code, out, _) = probe(&config, &["redis-cache-failure/redis_gone"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("ok: no series matched\n"), "{out}");

    // JSON, for scripts.
    let (code, out, _) = probe(&config, &["--json", "redis_up"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"], "failing");
    assert_eq!(v["observation"]["series"][0]["labels"]["job"], "redis-a");
    assert_eq!(v["observation"]["series"][1]["value"], 1.0);

    // Names that do not pick one symptom: exit 4, saying why.
    let (code, _, err) = probe(&config, &["ambiguous"]);
    assert_eq!(code, 4);
    assert!(
        err.contains(r#"symptom "ambiguous" is in several scenarios; name one of: redis-cache-failure/ambiguous, other/ambiguous"#)
            || err.contains("other/ambiguous, redis-cache-failure/ambiguous"),
        "{err}"
    );
    let (code, _, err) = probe(&config, &["redis_upp"]);
    assert_eq!(code, 4);
    assert!(
        err.contains(r#"no symptom "redis_upp"; symptoms: "#),
        "{err}"
    );
    let (code, out, _) = probe(&config, &["other/ambiguous"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("failing: 1 series\n  {} 1\n"), "{out}");

    // Prometheus gone: unknown, exit 3, with the reason.
    prom.kill();
    let (code, out, _) = probe(&config, &["redis_up"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!(
            "unknown: prometheus prom at {} unreachable: ",
            prom.url()
        )),
        "{out}"
    );
}
