//! `medic test` through the real binary: the shipped rules' tests pass, and
//! wrong expectations or broken test files fail with readable output.

use std::path::Path;
use std::process::Command;

fn medic_test(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .arg("test")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn shipped(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(name)
        .display()
        .to_string()
}

#[test]
fn shipped_rules_tests_pass() {
    let (code, out) = medic_test(&["rules/tests/"]);
    assert_eq!(code, 0, "{out}");
    let last = out.lines().last().unwrap();
    assert!(last.ends_with(" passed, 0 failed"), "{out}");
    // Every shipped scenario has a test file.
    for f in std::fs::read_dir(shipped("rules")).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let name = p.file_name().unwrap().to_str().unwrap();
            assert!(
                out.contains(&format!("rules/tests/{name}: ")),
                "no test file for rules/{name}:\n{out}"
            );
        }
    }
}

#[test]
fn wrong_expectation_fails_with_a_readable_diff() {
    let dir = tempfile::tempdir().unwrap();
    let test = write(
        dir.path(),
        "wrong.yaml",
        &format!(
            "rule_files: [{}]\nconfig: {}\ntests:\n\
             \x20 - name: restart fixes it\n\
             \x20   mode: enforce\n\
             \x20   checks: {{ redis_down: ok x10 fail x5 ok }}\n\
             \x20   expect:\n\
             \x20     - at: 30s\n\
             \x20       incidents:\n\
             \x20         - scenario: redis-cache-failure\n\
             \x20           state: resolved\n\
             \x20           steps: [\"restart-redis: failed\", \"flush-patient-cache: refused\"]\n\
             \x20           pages: [level 1 via log at 0s]\n\
             \x20     - at: 1m\n\
             \x20       incidents: []\n",
            shipped("rules/redis-cache-failure.yaml"),
            shipped("medic.yaml"),
        ),
    );
    let (code, out) = medic_test(&[&test]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        format!(
            "{test}: 0 passed, 1 FAILED\n\
             {test}:12:20: test \"restart fixes it\" at 30s: incident 1 (redis-cache-failure): steps differ\n\
             \x20 (- expected, + got)\n\
             \x20 - restart-redis: failed\n\
             \x20 - flush-patient-cache: refused\n\
             \x20 + restart-redis: succeeded (verified: redis_down, cache_errors cleared 10.00s after the action)\n\
             {test}:13:20: test \"restart fixes it\" at 30s: incident 1 (redis-cache-failure): pages differ\n\
             \x20 (- expected, + got)\n\
             \x20 - level 1 via log at 0s\n\
             \x20 + notice open via incident-channel at 0s\n\
             \x20 + notice fyi via incident-channel at 10s\n\
             {test}:14:9: test \"restart fixes it\" at 1m: incidents differ\n\
             \x20 (- expected, + got)\n\
             \x20 + redis-cache-failure (resolved)\n\
             0 passed, 1 failed\n"
        )
    );
}

#[test]
fn broken_test_files_report_path_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let test = write(
        dir.path(),
        "broken.yaml",
        &format!(
            "rule_files: [{}]\nconfig: {}\ntests:\n\
             \x20 - checks: {{ redis_dwn: fail, cache_errors: fail x }}\n\
             \x20   actions: {{ flush-patient-cache: [explode] }}\n\
             \x20   expect: [{{ at: 1m, incidents: [{{ scenario: redis }}] }}]\n",
            shipped("rules/redis-cache-failure.yaml"),
            shipped("medic.yaml"),
        ),
    );
    let (code, out) = medic_test(&[&test]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        format!(
            "{test}: FAILED to load\n\
             \x20 {test}:4:46: \"x\" needs a count, as in \"fail x5\"\n\
             \x20 {test}:5:38: unknown action outcome \"explode\" (expected one of: ok, fail, timeout)\n\
             0 passed, 1 failed\n"
        )
    );
    // Names that match nothing in the rules are caught before running.
    let test = write(
        dir.path(),
        "names.yaml",
        &format!(
            "rule_files: [{}]\nconfig: {}\ntests:\n\
             \x20 - checks: {{ redis_dwn: fail }}\n\
             \x20   expect: [{{ at: 1m, incidents: [{{ scenario: redis }}] }}]\n",
            shipped("rules/redis-cache-failure.yaml"),
            shipped("medic.yaml"),
        ),
    );
    let (code, out) = medic_test(&[&test]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        format!(
            "{test}: FAILED to load\n\
             \x20 {test}:4:15: no symptom \"redis_dwn\" in the rule files (did you mean \"redis_down\"?)\n\
             \x20 {test}:5:36: no scenario \"redis\" in the rule files (did you mean \"redis-cache-failure\"?)\n\
             0 passed, 1 failed\n"
        )
    );
    // A scripted decision names a step of its scenario, and only an
    // approval or a rejection names one.
    let decisions = |d: &str| {
        format!(
            "rule_files: [{}]\nconfig: {}\ntests:\n\
             \x20 - checks: {{ redis_down: fail }}\n\
             \x20   decisions: [{d}]\n\
             \x20   expect: [{{ at: 1m, incidents: [] }}]\n",
            shipped("rules/redis-cache-failure.yaml"),
            shipped("medic.yaml"),
        )
    };
    let test = write(
        dir.path(),
        "step.yaml",
        &decisions(
            "{ at: 1m, decide: approve, scenario: redis-cache-failure, step: flush-patient-cach }",
        ),
    );
    let (code, out) = medic_test(&[&test]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        format!(
            "{test}: FAILED to load\n\
             \x20 {test}:5:81: scenario \"redis-cache-failure\" has no step \"flush-patient-cach\" (did you mean \"flush-patient-cache\"?)\n\
             0 passed, 1 failed\n"
        )
    );
    let test = write(
        dir.path(),
        "ack-step.yaml",
        &decisions(
            "{ at: 1m, decide: acknowledge, scenario: redis-cache-failure, step: flush-patient-cache }",
        ),
    );
    let (code, out) = medic_test(&[&test]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out,
        format!(
            "{test}: FAILED to load\n\
             \x20 {test}:5:85: only approve and reject name a step, not acknowledge\n\
             0 passed, 1 failed\n"
        )
    );
}

#[test]
fn broken_rule_files_fail_the_test_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "rule.yaml",
        "scenario: x\nsummary: x\nseverity: high\nrto: 1m\nsymptoms:\n  s: { check: { tcp: { address: \"127.0.0.1:1\" } }, for: soon }\nwhen: { any: [s] }\nescalation: default\n",
    );
    let test = write(
        dir.path(),
        "t.yaml",
        "rule_files: [rule.yaml]\ntests:\n  - expect: [{ at: 1m, incidents: [] }]\n",
    );
    let (code, out) = medic_test(&["--config", &shipped("medic.yaml"), &test]);
    assert_eq!(code, 1, "{out}");
    let rule = dir.path().join("rule.yaml").display().to_string();
    assert!(
        out.contains(&format!("  {rule}:6:57: invalid duration \"soon\"")),
        "{out}"
    );
}

/// The rule tutorial in docs/rules.md, as written: its rule checks, its test passes, and
/// the failure it shows is the failure a wrong expectation prints.
#[test]
fn readme_tutorial_runs_as_written() {
    let readme = std::fs::read_to_string(shipped("docs/rules.md")).unwrap();
    let block = |start: &str, fence: &str| {
        let from = readme
            .find(&format!("```{fence}\n{start}"))
            .expect("tutorial block");
        let text = &readme[from + 4 + fence.len()..];
        text[..text.find("```").unwrap()].to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules/tests")).unwrap();
    write(
        &dir.path().join("rules"),
        "worker-failure.yaml",
        &block("scenario: worker-failure", "yaml"),
    );
    let test = block("rule_files: [../worker-failure.yaml]", "yaml")
        .replace("../../medic.yaml", &shipped("medic.yaml"));
    let path = write(
        &dir.path().join("rules/tests"),
        "worker-failure.yaml",
        &test,
    );
    let (code, out) = medic_test(&[&path]);
    assert_eq!(code, 0, "{out}");
    let wrong = test.replace("- restart-worker: succeeded", "- restart-worker: failed");
    std::fs::write(&path, wrong).unwrap();
    let (code, out) = medic_test(&[&path]);
    assert_eq!(code, 1);
    let shown = block("rules/tests/worker-failure.yaml: 0 passed", "")
        .replace("rules/tests/worker-failure.yaml", &path);
    assert_eq!(out, shown);
}
