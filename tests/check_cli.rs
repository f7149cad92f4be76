//! `medic check` through the library: the shipped config and rules pass,
//! broken inputs give exact `path:line:col: message` lines, and no input,
//! however mangled, makes the loaders panic.

use std::collections::HashMap;
use std::path::PathBuf;

use medic::config::{self, Config, TargetConfig};
use medic::rules::{self, check_with_env};

const SHIPPED_CONFIG: &str = include_str!("../medic.yaml");
const SHIPPED_RULES: &[(&str, &str)] = &[
    (
        "rules/application-service-failure.yaml",
        include_str!("../rules/application-service-failure.yaml"),
    ),
    (
        "rules/backup-failure.yaml",
        include_str!("../rules/backup-failure.yaml"),
    ),
    (
        "rules/complete-infrastructure-failure.yaml",
        include_str!("../rules/complete-infrastructure-failure.yaml"),
    ),
    (
        "rules/data-corruption.yaml",
        include_str!("../rules/data-corruption.yaml"),
    ),
    (
        "rules/database-failure.yaml",
        include_str!("../rules/database-failure.yaml"),
    ),
    (
        "rules/database-old-primary.yaml",
        include_str!("../rules/database-old-primary.yaml"),
    ),
    (
        "rules/monitoring-system-failure.yaml",
        include_str!("../rules/monitoring-system-failure.yaml"),
    ),
    (
        "rules/redis-cache-failure.yaml",
        include_str!("../rules/redis-cache-failure.yaml"),
    ),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn no_env() -> HashMap<String, String> {
    HashMap::new()
}

fn shipped_config() -> Config {
    config::load_str("medic.yaml", SHIPPED_CONFIG).unwrap()
}

/// A valid rule file against the shipped config, to break one piece at a time.
const RULE: &str = "\
scenario: cache
summary: Cache down
severity: high
rto: 5m
symptoms:
  redis_down:
    check: { redis: { target: cache } }
    every: 1s
when: { any: [redis_down] }
plan:
  - action: exec
    args: [docker-compose, restart, redis]
escalation: default
";

fn rule_errors(text: &str) -> Vec<String> {
    rules::load_str("rules/cache.yaml", text, &shipped_config())
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn shipped_config_and_rules_check_clean() {
    let summary = check_with_env(Some(&root().join("medic.yaml")), &[], no_env()).unwrap();
    assert_eq!(
        summary.to_string(),
        "ok: 8 scenarios, 19 symptoms, 21 steps in 8 files"
    );
}

#[test]
fn shipped_config_and_rules_have_no_warnings() {
    let summary = check_with_env(Some(&root().join("medic.yaml")), &[], no_env()).unwrap();
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
}

/// The shipped config with `rules/cache.yaml` (`rule`) beside it, in a
/// temporary directory; `edit` changes the config text.
fn setup_with(rule: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("medic.yaml"),
        edit(SHIPPED_CONFIG.to_string()),
    )
    .unwrap();
    std::fs::write(dir.path().join("rules/cache.yaml"), rule).unwrap();
    dir
}

/// A NUL (or any control character but tab, CR and LF) is an error at its
/// position: it used to end the file there, silently ignoring the rest.
#[test]
fn control_characters_in_rule_and_config_files_are_errors_at_their_position() {
    let rule = RULE.replace("rto: 5m", "rto: 5m\0\nmode: enforce");
    let dir = setup_with(&rule, |c| c);
    let errs = check_with_env(Some(&dir.path().join("medic.yaml")), &[], no_env())
        .unwrap_err()
        .to_string();
    assert_eq!(
        errs,
        format!(
            "{}/rules/cache.yaml:4:8: control character U+0000 (NUL) is not allowed in YAML (write it as an escape, such as \\x00, inside double quotes)",
            dir.path().display()
        )
    );
    let dir = setup_with(RULE, |c| c.replace("notifiers:", "notifiers:\u{1b}"));
    let line = 1 + SHIPPED_CONFIG
        .lines()
        .position(|l| l.starts_with("notifiers:"))
        .unwrap();
    let errs = check_with_env(Some(&dir.path().join("medic.yaml")), &[], no_env())
        .unwrap_err()
        .to_string();
    assert!(
        errs.starts_with(&format!(
            "{}/medic.yaml:{line}:11: control character U+001B (escape) is not allowed",
            dir.path().display()
        )),
        "{errs}"
    );
}

/// Allowed but risky: an inline webhook URL (often its own credential) and
/// a medic secret written into a workload as a plain env value. `medic
/// check` passes, with a warning at each.
#[test]
fn check_warns_about_inline_webhook_urls_and_secrets_written_as_plain_env() {
    let rule = format!(
        "{}  - action: k8s.set-env\n    target: backend\n    env:\n      DATABASE_URL: {{ env: REPLICA_DATABASE_URL }}\n      FROM_K8S: {{ valueFrom: {{ secretKeyRef: {{ name: db, key: url }} }} }}\n      PLAIN: \"1\"\nescalation: default\n",
        RULE.trim_end_matches("escalation: default\n")
    );
    let dir = setup_with(&rule, |c| {
        c.replace(
            "  log: { log: {} }\n",
            "  log: { log: {} }\n  hook: { webhook: { url: \"https://hooks.example.com/T0/SEKRET\" } }\n  hook2: { webhook: { url: { env: HOOK_URL } } }\n",
        )
    });
    let summary = check_with_env(Some(&dir.path().join("medic.yaml")), &[], no_env())
        .unwrap_or_else(|e| panic!("{e}"));
    let line = 1
        + SHIPPED_CONFIG
            .lines()
            .position(|l| l.starts_with("  log: { log: {} }"))
            .unwrap()
        + 1;
    let d = dir.path().display();
    let got: Vec<String> = summary.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            format!(
                "{d}/medic.yaml:{line}:27: warning: the webhook URL is written inline; a webhook URL often is its credential: write it as {{ env: NAME }} or {{ file: PATH }} (it is never printed either way)"
            ),
            format!(
                "{d}/rules/cache.yaml:16:21: warning: env DATABASE_URL: medic's secret {{ env: REPLICA_DATABASE_URL }} would be written into the workload as a plain `value` (readable by anyone who can read its spec, and kept in its ReplicaSet history); reference a Kubernetes Secret instead: `DATABASE_URL: {{ valueFrom: {{ secretKeyRef: {{ name: SECRET, key: KEY }} }} }}`"
            ),
        ]
    );
    assert!(!got.concat().contains("SEKRET"));
}

/// `metrics.per_symptom` naming nothing loaded adds no series: a warning
/// at the entry, not silence.
#[test]
fn per_symptom_metrics_naming_nothing_is_a_warning() {
    let dir = setup_with(RULE, |c| {
        format!("{c}metrics: {{ per_symptom: [cache/redis_down, cache, cache/nope, cahce] }}\n")
    });
    let summary = check_with_env(Some(&dir.path().join("medic.yaml")), &[], no_env())
        .unwrap_or_else(|e| panic!("{e}"));
    let line = SHIPPED_CONFIG.lines().count() + 1;
    let d = dir.path().display();
    let got: Vec<String> = summary.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            format!(
                "{d}/medic.yaml:{line}:51: warning: metrics.per_symptom: \"cache/nope\" names no loaded scenario or SCENARIO/SYMPTOM: it adds no series"
            ),
            format!(
                "{d}/medic.yaml:{line}:63: warning: metrics.per_symptom: \"cahce\" names no loaded scenario or SCENARIO/SYMPTOM: it adds no series"
            ),
        ]
    );
}

#[test]
fn rule_paths_given_replace_the_configs() {
    let one = root().join("rules/redis-cache-failure.yaml");
    let summary = check_with_env(Some(&root().join("medic.yaml")), &[one], no_env()).unwrap();
    assert_eq!(
        summary.to_string(),
        "ok: 1 scenarios, 2 symptoms, 2 steps in 1 files"
    );
}

#[test]
fn shipped_files_are_listed_here() {
    // Keeps SHIPPED_RULES (the garbage corpus) in step with rules/.
    // Rule files only: `rules/tests/` holds the rule unit tests.
    let mut names: Vec<String> = std::fs::read_dir(root().join("rules"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| format!("rules/{}", e.file_name().to_string_lossy()))
        .collect();
    names.sort();
    let listed: Vec<&str> = SHIPPED_RULES.iter().map(|(p, _)| *p).collect();
    assert_eq!(names, listed);
}

#[test]
fn shipped_config_is_safe_anywhere() {
    // Regression guard: the default config must never act or reach off-box.
    let c = shipped_config();
    assert_eq!(c.mode, medic::config::Mode::DryRun);
    for (name, t) in &c.targets {
        match t {
            TargetConfig::Kubernetes(_) => {}
            // The Docker Engine on medic's own host, by its unix socket.
            TargetConfig::Docker(d) => assert!(d.socket.starts_with('/'), "{name}: {}", d.socket),
            // A cluster has no address; its members are checked here.
            TargetConfig::Postgres(p) if p.is_cluster() => {}
            TargetConfig::Route53(r) => assert_eq!(
                r.endpoint_url.as_deref(),
                Some("http://127.0.0.1:5000"),
                "{name}"
            ),
            other => {
                let addr = other.address().unwrap();
                assert!(addr.starts_with("127.0.0.1:"), "{name}: {addr}");
            }
        }
    }
    let levels: Vec<String> = c.escalation["default"]
        .levels
        .iter()
        .map(|l| format!("{} {:?}", l.after, l.notify))
        .collect();
    assert_eq!(
        levels,
        [
            "0s [\"log\"]",
            "15m [\"log\"]",
            "30m [\"log\"]",
            "1h [\"log\"]"
        ]
    );
}

#[test]
fn environment_switches_to_enforce() {
    let env = HashMap::from([
        ("MEDIC_MODE".to_string(), "enforce".to_string()),
        (
            "MEDIC_STORE__SQLITE__PATH".to_string(),
            "/var/lib/medic/medic.db".to_string(),
        ),
    ]);
    let c = config::load_with_env(&root().join("medic.yaml"), env).unwrap();
    assert_eq!(c.mode, medic::config::Mode::Enforce);
    assert_eq!(c.base_dir, root());
    assert_eq!(
        c.store,
        config::StoreConfig::Sqlite {
            path: "/var/lib/medic/medic.db".into()
        }
    );
}

#[test]
fn bad_yaml() {
    assert_eq!(
        rule_errors(&RULE.replace("{ any: [redis_down] }", "{ any: [redis_down }")),
        ["rules/cache.yaml:9:26: while parsing a flow sequence, expected ',' or ']'"]
    );
}

#[test]
fn unknown_field() {
    assert_eq!(
        rule_errors(&RULE.replace("    every: 1s", "    evry: 1s")),
        ["rules/cache.yaml:8:5: unknown field \"evry\" (did you mean \"every\"?)"]
    );
}

#[test]
fn unknown_action() {
    assert_eq!(
        rule_errors(&RULE.replace("action: exec", "action: exce")),
        ["rules/cache.yaml:11:13: unknown action \"exce\" (did you mean \"exec\"?)"]
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        rule_errors(&RULE.replace("every: 1s", "every: 1")),
        [
            "rules/cache.yaml:8:12: duration \"1\" has no unit (write e.g. \"1s\", \"1m\" or \"1ms\")"
        ]
    );
}

#[test]
fn undefined_symptom_in_when() {
    assert_eq!(
        rule_errors(&RULE.replace("[redis_down]", "[redis_dwn]")),
        ["rules/cache.yaml:9:15: undefined symptom \"redis_dwn\" (did you mean \"redis_down\"?)"]
    );
}

#[test]
fn wrong_target_kind() {
    assert_eq!(
        rule_errors(&RULE.replace("target: cache", "target: db")),
        [
            "rules/cache.yaml:7:31: target \"db\" is a postgres target, but a redis check needs a redis target"
        ]
    );
}

#[test]
fn plain_string_secret_in_config() {
    let text = SHIPPED_CONFIG.replace(
        "postgres: { host: 127.0.0.1, port: 5432, user: postgres, dbname: postgres, peer_timeout: 2s }",
        "postgres: { host: 127.0.0.1, port: 5432, password: hunter2 }",
    );
    let errs = config::load_str("medic.yaml", &text)
        .unwrap_err()
        .to_string();
    // The line of the shipped config the test changed (it moves as the
    // shipped config grows).
    let line = 1 + text
        .lines()
        .position(|l| l.contains("password: hunter2"))
        .unwrap();
    assert_eq!(
        errs,
        format!(
            "medic.yaml:{line}:56: secrets must reference an environment variable or a file: {{env: NAME}} or {{file: PATH}}"
        )
    );
}

#[test]
fn several_errors_in_one_file_are_all_reported() {
    let text = "\
scenario: cache
summary: Cache down
severity: hihg
rto: 5
symptoms:
  redis_down:
    check: { redis: { target: db, png: true } }
    every: 1s
  slow:
    check: { htp: { target: app } }
when: { any: [redis_down, sloow] }
plan:
  - action: exec
    args: []
  - action: redis.flsh
    target: cache
    verify: { clears: gone }
escalation: pager
";
    assert_eq!(
        rule_errors(text),
        [
            "rules/cache.yaml:3:11: unknown severity \"hihg\" (did you mean \"high\"?)",
            "rules/cache.yaml:4:6: duration \"5\" has no unit (write e.g. \"5s\", \"5m\" or \"5ms\")",
            "rules/cache.yaml:7:31: target \"db\" is a postgres target, but a redis check needs a redis target",
            "rules/cache.yaml:7:35: unknown field \"png\" (did you mean \"ping\"?)",
            "rules/cache.yaml:10:14: unknown check \"htp\" (did you mean \"http\"?)",
            "rules/cache.yaml:11:27: undefined symptom \"sloow\" (did you mean \"slow\"?)",
            "rules/cache.yaml:14:11: exec needs a program: args: [PROGRAM, ARG...]",
            "rules/cache.yaml:15:13: unknown action \"redis.flsh\" (did you mean \"redis.flush\"?)",
            "rules/cache.yaml:17:23: undefined symptom \"gone\"",
            "rules/cache.yaml:18:13: unknown escalation policy \"pager\" (expected one of: default)",
        ]
    );
}

#[test]
fn config_and_rule_problems_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("rules")).unwrap();
    std::fs::write(
        d.join("medic.yaml"),
        "mode: enforcing\ntargets:\n  cache: { redis: { address: 127.0.0.1:6379 } }\n",
    )
    .unwrap();
    std::fs::write(
        d.join("rules/cache.yaml"),
        RULE.replace("every: 1s", "every: soon"),
    )
    .unwrap();
    let errs = check_with_env(Some(&d.join("medic.yaml")), &[], no_env())
        .unwrap_err()
        .to_string();
    let d = d.display();
    assert_eq!(
        errs,
        format!(
            "{d}/medic.yaml:1:7: unknown mode \"enforcing\" (did you mean \"enforce\"?)\n\
             {d}/rules/cache.yaml:8:12: invalid duration \"soon\": expected number at 0"
        )
    );
}

#[test]
fn missing_config_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("medic.yaml");
    let errs = check_with_env(Some(&cfg), &[], no_env()).unwrap_err();
    assert_eq!(
        errs.0[0].to_string(),
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            cfg.display()
        )
    );
}

/// Every prefix (at every 7th byte), every line deleted, and a sprinkle of
/// YAML punctuation over every shipped file: the loaders must answer, not
/// panic, whatever they get.
#[test]
fn garbage_never_panics() {
    let config = shipped_config();
    let mut corpus: Vec<String> = Vec::new();
    let files = SHIPPED_RULES
        .iter()
        .map(|(_, t)| *t)
        .chain([SHIPPED_CONFIG]);
    for text in files {
        corpus.extend(
            (0..text.len())
                .step_by(7)
                .filter(|&i| text.is_char_boundary(i))
                .map(|i| text[..i].to_string()),
        );
        let lines: Vec<&str> = text.lines().collect();
        corpus.extend((0..lines.len()).map(|skip| {
            let mut v = lines.clone();
            v.remove(skip);
            v.join("\n")
        }));
        for (n, punct) in [
            "{", "[", ":", "- ", "'", "\"", "&a ", "*a", "!!", "\t", "~", "0",
        ]
        .iter()
        .enumerate()
        {
            corpus.extend(
                (n..text.len())
                    .step_by(53)
                    .filter(|&i| text.is_char_boundary(i))
                    .map(|i| format!("{}{punct}{}", &text[..i], &text[i..])),
            );
        }
    }
    assert!(corpus.len() > 1000, "{}", corpus.len());
    for text in &corpus {
        let _ = rules::load_str("garbage.yaml", text, &config);
        let _ = config::load_str("garbage.yaml", text);
    }
}

#[test]
fn backup_checks_name_a_verify_job_of_the_config() {
    let rule = |job: &str| {
        format!(
            "scenario: b\nsummary: s\nseverity: high\nrto: 1h\nsymptoms:\n  stale:\n    check: {{ backup: {{ job: {job} }} }}\n    every: 5m\nwhen: {{ any: [stale] }}\nplan: []\nescalation: default\n"
        )
    };
    assert_eq!(
        rule_errors(&rule("nope")),
        [
            "rules/cache.yaml:7:29: unknown job \"nope\" (backup.verify jobs in the config: backup-verify)"
        ]
    );
    assert_eq!(
        rule_errors(&rule("db-backup")),
        ["rules/cache.yaml:7:29: job \"db-backup\" is not a backup.verify job"]
    );
}

/// Two shipped scenarios that act on the same target (`backend`) with
/// nothing ordering them are warned about once `depends_on` is gone; a
/// cycle in `depends_on` fails the check. Why: issue 17, where the app and
/// database scenarios both restarted the backend for one database outage.
#[test]
fn overlapping_scenarios_are_warned_about_and_cycles_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    for f in [
        "database-failure.yaml",
        "application-service-failure.yaml",
        "data-corruption.yaml",
    ] {
        std::fs::copy(root().join("rules").join(f), rules.join(f)).unwrap();
    }
    let shipped = SHIPPED_CONFIG.to_string();
    let unordered = shipped
        .replace("    depends_on: [db, cache, backend]\n", "")
        .replace("    depends_on: [db, cache]\n", "");
    assert_ne!(unordered, shipped, "the shipped config has depends_on");
    std::fs::write(dir.path().join("medic.yaml"), &unordered).unwrap();
    let summary = check_with_env(Some(&dir.path().join("medic.yaml")), &[], no_env()).unwrap();
    let got: Vec<String> = summary.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("application-service-failure.yaml:")
            && got[0].contains(": warning: scenarios \"application-service-failure\" and \"database-failure\" can both act on target \"backend\""),
        "{got:#?}"
    );
    // With the shipped depends_on: ordered, no warning.
    std::fs::write(dir.path().join("medic.yaml"), &shipped).unwrap();
    let summary = check_with_env(Some(&dir.path().join("medic.yaml")), &[], no_env()).unwrap();
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    // A cycle is an error at its position.
    let cyclic = shipped.replace(
        "  db:\n    postgres:",
        "  db:\n    depends_on: [app]\n    postgres:",
    );
    assert_ne!(cyclic, shipped);
    std::fs::write(dir.path().join("medic.yaml"), &cyclic).unwrap();
    let errs = check_with_env(Some(&dir.path().join("medic.yaml")), &[], no_env())
        .unwrap_err()
        .0;
    assert!(
        errs.iter()
            .any(|d| d.to_string().contains("dependency cycle: app → db → app") && d.line > 0),
        "{errs:?}"
    );
}

/// A public component naming a scenario no rule file has would never
/// degrade: a warning at the name, with a suggestion.
#[test]
fn a_public_component_naming_no_loaded_scenario_is_a_warning() {
    let dir = setup_with(RULE, |c| {
        format!(
            "{c}public_status:\n  listen: 127.0.0.1:0\n  components:\n    Portal: {{ scenarios: [cache, cachee] }}\n"
        )
    });
    let summary = check_with_env(Some(&dir.path().join("medic.yaml")), &[], no_env())
        .unwrap_or_else(|e| panic!("{e}"));
    let line = SHIPPED_CONFIG.lines().count() + 4;
    let got: Vec<String> = summary.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [format!(
            "{}/medic.yaml:{line}:34: warning: public component names scenario \"cachee\", which is not among the rule files loaded (did you mean \"cache\"?)",
            dir.path().display()
        )]
    );
}
