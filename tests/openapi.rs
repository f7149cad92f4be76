//! The OpenAPI document against a running medic: served open at
//! `/api/v1/openapi.json`, and schemathesis (`st run`, PyPI; installed by
//! scripts/test.sh) exercises every route it describes with generated
//! requests, with every check on: no 5xx, every status code, content type,
//! header and body as documented, schema-valid requests accepted and
//! invalid ones refused, credentials enforced, undocumented methods 405.
//!
//! The medic under test has one incident open (incident 1: nothing listens
//! on a closed port; its one step runs `true`), so the decision and
//! status-update routes reach the pager, not only 404s. Nothing is
//! excluded: no route acts outside medic here. The decisions change that
//! incident (acknowledge, escalate, resolve), `POST /-/reload` reloads the
//! same rules, the intake records generated alerts that no rule watches,
//! and Slack's route refuses every request (unsigned; Slack is not
//! configured).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// How many requests schemathesis generates per operation and phase:
/// enough to walk every parameter and body field, bounded so one run takes
/// well under a minute on a loaded 2-core machine.
const MAX_EXAMPLES: &str = "25";
/// A fixed seed: a failure reproduces with the same requests.
const SEED: &str = "20261202";

fn setup(dir: &Path, http: u16) -> std::path::PathBuf {
    let config = enforce_config(dir, http, "2s");
    let closed = free_port();
    std::fs::write(
        dir.join("rules/down.yaml"),
        port_closed_rule("down", "nothing listens", closed, 1),
    )
    .unwrap();
    config
}

fn get(url: &str, auth: Option<&str>) -> (u16, String) {
    block_on(async {
        let mut req = reqwest::Client::new().get(url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

/// `st run` on the document at `base` with `auth` as the Authorization
/// header and `filter` (`--include-path`/`--exclude-path` ...); panics
/// with schemathesis's whole output unless every check passed.
fn schemathesis(base: &str, auth: &str, filter: &[&str], dir: &Path) {
    let out = Command::new("st")
        .args(["run", &format!("{base}/api/v1/openapi.json")])
        .args(["--checks", "all"])
        .args(["--header", &format!("Authorization: {auth}")])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        // One worker: Python 3.11's ast module is not thread-safe, and
        // hypothesis parses lambdas with it (a "recursion depth mismatch"
        // error with two).
        .args(["--workers", "1"])
        .args(["--request-timeout", "20"])
        .args(["--no-color", "--generation-database", "none"])
        .args(filter)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run schemathesis (`st`; scripts/test.sh installs it from PyPI): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{text}",
        out.status
    );
    assert!(
        text.contains(" generated, ") && text.contains(" passed"),
        "schemathesis ran no test:\n{text}"
    );
}

#[test]
fn the_document_is_served_open_and_every_route_passes_schemathesis() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = setup(dir.path(), http);
    let base = format!("http://127.0.0.1:{http}");
    let _medic = Medic::start(&config, &dir.path().join("medic.log"));

    // Open: no credential asked, and it describes this listener.
    let (code, text) = get(&format!("{base}/api/v1/openapi.json"), None);
    assert_eq!(code, 200, "{text}");
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/-/reload",
        "/api/v1/incidents",
        "/api/v1/incidents/{id}",
        "/api/v1/incidents/{id}/{action}",
        "/api/v1/incidents/{id}/status-update",
        "/api/v1/jobs/{name}/runs",
        "/api/v1/jobs/{name}/run",
        "/api/v1/alerts/alertmanager",
        "/slack/interactions",
        "/",
        "/status",
        "/console",
        "/console/incidents/{id}",
        "/console/login",
        "/console/logout",
        "/console/incidents/{id}/{action}",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }

    // Incident 1 is open before schemathesis starts.
    let read = format!("Bearer {TEST_READ_TOKEN}");
    wait_until(Duration::from_secs(30), "incident 1 to open", || {
        get(&format!("{base}/api/v1/incidents/1"), Some(&read)).0 == 200
    });

    // Every route but the intake with the API token (which the read
    // routes take too); the intake with its own token.
    let intake = "/api/v1/alerts/alertmanager";
    schemathesis(
        &base,
        &format!("Bearer {TEST_API_TOKEN}"),
        &["--exclude-path", intake],
        dir.path(),
    );
    schemathesis(
        &base,
        &format!("Bearer {TEST_INTAKE_TOKEN}"),
        &["--include-path", intake],
        dir.path(),
    );
}
