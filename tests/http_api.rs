//! Acceptance: medic's HTTP surface and the operator CLI against the real
//! binary: `/metrics` scraped and parsed, the read-only incidents API (and
//! its answers to malformed input), `medic incidents`, `medic report`, and
//! the mutating commands against a local server that records requests.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn setup(dir: &Path, http: u16, port: u16) -> std::path::PathBuf {
    let config = enforce_config(dir, http, "2s");
    std::fs::write(
        dir.join("rules/port.yaml"),
        // With a runbook link: the post-mortem report names it.
        port_closed_rule("port-closed", "Port closed", port, 1).replace(
            "rto: 5m\n",
            "rto: 5m\nrunbook: reference/disaster-recovery-plan.md#1\n",
        ),
    )
    .unwrap();
    config
}

/// Parses the Prometheus text format (what `/metrics` answers a client that
/// asks for no format): `name{labels}` → value. Panics on a line that is
/// neither a comment nor a sample.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    assert!(!text.contains("# EOF"), "{text}");
    let sample = regex::Regex::new(
        r#"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})?) (\S+)$"#,
    )
    .unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let c = sample
            .captures(line)
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let v: f64 = c[2]
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line:?}"));
        out.insert(c[1].to_string(), v);
    }
    out
}

/// A GET with the read token.
fn get(url: &str) -> (u16, String) {
    block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .bearer_auth(TEST_READ_TOKEN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

fn medic_cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .env_remove("MEDIC_API_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn metrics_api_status_and_cli_against_a_running_medic() {
    let dir = tempfile::tempdir().unwrap();
    let (http, port) = (free_port(), free_port());
    let config = setup(dir.path(), http, port);
    let base = format!("http://127.0.0.1:{http}");
    let _medic = Medic::start(&config, &dir.path().join("medic.log"));

    // Nothing listens: an incident opens, its one step fails verification,
    // it escalates (the log notifier pages).
    wait_until(Duration::from_secs(20), "an escalated incident", || {
        let (_, body) = get(&format!("{base}/api/v1/incidents"));
        let v: Value = serde_json::from_str(&body).unwrap();
        v["open"][0]["state"] == "escalated"
    });
    let (code, body) = get(&format!("{base}/api/v1/incidents"));
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    let id = list["open"][0]["id"].as_i64().unwrap();
    assert_eq!(list["recent"][0]["id"], id);

    // /metrics: parsed, with every family this run touched.
    let (code, text) = get(&format!("{base}/metrics"));
    assert_eq!(code, 200);
    let m = parse_metrics(&text);
    let labels = r#"scenario="port-closed",check="tcp""#;
    assert!(m[&format!("medic_checks_total{{{labels},outcome=\"failing\"}}")] >= 2.0);
    assert!(m[&format!("medic_check_duration_seconds_count{{{labels}}}")] >= 2.0);
    assert_eq!(
        m[r#"medic_symptoms{scenario="port-closed",state="firing"}"#],
        1.0
    );
    assert_eq!(
        m[r#"medic_symptoms{scenario="port-closed",state="ok"}"#],
        0.0
    );
    assert_eq!(
        m[r#"medic_open_incidents{scenario="port-closed",state="escalated"}"#],
        1.0
    );
    assert_eq!(
        m[r#"medic_actions_total{action="exec",outcome="failed"}"#],
        1.0
    );
    assert_eq!(
        m[r#"medic_budget_remaining_attempts{scenario="port-closed",step="poke"}"#],
        0.0
    );
    assert!(m[r#"medic_notifications_total{notifier="log",result="success"}"#] >= 1.0);
    assert!(m[r#"medic_notification_duration_seconds_count{notifier="log"}"#] >= 1.0);
    assert_eq!(m["medic_is_leader"], 1.0);
    assert_eq!(m["medic_leader_term"], 1.0);
    assert_eq!(m["medic_config_last_reload_successful"], 1.0);

    // The incident in full.
    let (code, body) = get(&format!("{base}/api/v1/incidents/{id}"));
    assert_eq!(code, 200, "{body}");
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["incident"]["scenario"], "port-closed");
    assert_eq!(d["rto"], "5m");
    // The one attempt, then the limit refusing a second (on the ledger too).
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["outcome"], "failed", "{body}");
    assert!(
        attempts[1..].iter().all(|a| a["outcome"] == "refused"),
        "{body}"
    );
    let whole = d["timeline"].as_array().unwrap().clone();
    assert!(whole.len() >= 3, "{body}");
    assert_eq!(d["timeline_from"], 0);
    let total = d["timeline_total"].as_u64().unwrap() as usize;
    assert!(total >= whole.len(), "{body}");
    // The timeline by pages: two entries from position 1 are the whole
    // timeline's second and third (the total read at its own moment).
    let (code, body) = get(&format!("{base}/api/v1/incidents/{id}?from=1&limit=2"));
    assert_eq!(code, 200, "{body}");
    let p: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["timeline_from"], 1);
    assert_eq!(p["timeline"].as_array().unwrap()[..], whole[1..3], "{body}");
    let (_, body) = get(&format!("{base}/api/v1/incidents/{id}?from=100000"));
    let p: Value = serde_json::from_str(&body).unwrap();
    assert!(p["timeline"].as_array().unwrap().is_empty(), "{body}");

    // Malformed input: 4xx with a reason, never 5xx.
    for (path, want) in [
        ("/api/v1/incidents/abc", 400),
        ("/api/v1/incidents/-1", 400),
        ("/api/v1/incidents/0", 400),
        ("/api/v1/incidents/99999999999999999999999", 400),
        ("/api/v1/incidents/%FF%FE", 400),
        ("/api/v1/incidents/424242", 404),
        ("/api/v1/incidents/1?from=-1", 400),
        ("/api/v1/incidents/1?limit=0", 400),
        ("/api/v1/incidents/1?limit=10001", 400),
        ("/api/v1/incidents/1?bogus=1", 400),
        ("/api/v1/incidents?limit=x", 400),
        ("/api/v1/incidents?limit=0", 400),
        ("/api/v1/incidents?limit=1000000", 400),
        ("/api/v1/incidents?bogus=1", 400),
        ("/api/v1/incidents?limit=%FF", 400),
        ("/status?incident=x", 400),
        ("/status?incident=424242", 404),
    ] {
        let (code, body) = get(&format!("{base}{path}"));
        assert_eq!(code, want, "{path}: {body}");
        assert!(!body.is_empty(), "{path}: a reason");
    }
    let (code, body) = get(&format!("{base}/api/v1/incidents/abc"));
    assert_eq!(code, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "incident id \"abc\" is not a positive integer"
    );

    // The status page names the incident, its RTO clock and budgets.
    let (code, html) = get(&format!("{base}/status"));
    assert_eq!(code, 200);
    assert!(
        html.contains("port-closed") && html.contains("of 5m"),
        "{html}"
    );
    assert!(html.contains(&format!("id=\"incident-{id}\"")), "{html}");

    // CLI: list (URL from --url), show (URL from the config's http.listen).
    let read = [("MEDIC_API_TOKEN", TEST_READ_TOKEN)];
    let (ok, _, err) = medic_cli(&["incidents", "--url", &base], &[]);
    assert!(!ok && err.contains("401"), "reads need a token: {err}");
    let (ok, out, err) = medic_cli(&["incidents", "--url", &base], &read);
    assert!(ok, "{err}");
    assert!(
        out.contains("open incidents: 1") && out.contains("port-closed"),
        "{out}"
    );
    let cfg = config.to_str().unwrap();
    let (ok, out, err) = medic_cli(
        &["incidents", "--config", cfg, "show", &id.to_string()],
        &read,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("incident {id} · port-closed · escalated")),
        "{out}"
    );
    assert!(out.contains("poke (exec): failed"), "{out}");
    let (ok, _, err) = medic_cli(&["incidents", "--url", &base, "show", "abc"], &read);
    assert!(!ok);
    assert!(
        err.contains("400") && err.contains("not a positive integer"),
        "{err}"
    );

    // Report: from the API, and from the store directly.
    for args in [
        vec!["report", "--url", &base, &*id.to_string()],
        vec!["report", "--config", cfg, &*id.to_string()],
    ] {
        let (ok, md, err) = medic_cli(&args, &read);
        assert!(ok, "{args:?}: {err}");
        assert!(
            md.starts_with(&format!("# Post-mortem draft: incident {id} (port-closed)")),
            "{md}"
        );
        assert!(md.contains("- **RTO:** 5m"), "{md}");
        assert!(
            md.contains("- **Runbook:** reference/disaster-recovery-plan.md#1"),
            "{md}"
        );
        assert!(
            md.contains("| mitigation | no action was verified |"),
            "{md}"
        );
        assert!(md.contains("| recovery | not yet ("), "{md}");
        assert!(md.contains("### poke (`exec`): failed"), "{md}");
        assert!(md.contains("\"true\""), "{md}");
        assert!(
            md.contains(
                "- [ ] Deviations from plan noted — steps that did not work: poke (failed)"
            ),
            "{md}"
        );
        assert!(md.contains("paged via: log"), "{md}");
    }
    let (ok, _, err) = medic_cli(&["report", "--config", cfg, "424242"], &[]);
    assert!(!ok);
    assert!(err.contains("incident 424242 not found"), "{err}");

    // A failed reload shows in the metrics.
    std::fs::write(dir.path().join("rules/broken.yaml"), "scenario: [\n").unwrap();
    let code = block_on(async {
        reqwest::Client::new()
            .post(format!("{base}/-/reload"))
            .bearer_auth(TEST_API_TOKEN)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(code, 422);
    let m = parse_metrics(&get(&format!("{base}/metrics")).1);
    assert_eq!(m["medic_config_last_reload_successful"], 0.0);
    assert_eq!(m[r#"medic_config_reloads_total{result="failure"}"#], 1.0);
}

#[derive(Clone, Debug, PartialEq)]
struct Recorded {
    method: String,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
}

/// A local server that records every request and answers `status`.
async fn recorder(status: u16) -> (String, Arc<Mutex<Vec<Recorded>>>) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, Uri};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from)
                };
                s.lock().unwrap().push(Recorded {
                    method: method.to_string(),
                    path: uri.to_string(),
                    authorization: h("authorization"),
                    content_type: h("content-type"),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                let code = axum::http::StatusCode::from_u16(status).unwrap();
                let body = if status == 200 {
                    serde_json::json!({"ok": true})
                } else {
                    serde_json::json!({"error": "missing or wrong bearer token"})
                };
                (code, axum::Json(body))
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn mutating_commands_send_exact_requests() {
    let (url, seen) = recorder(200).await;
    let run = |args: Vec<&str>, env: Vec<(&str, &str)>| {
        let url = url.clone();
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut full = args.clone();
            full.extend(["--url".to_string(), url]);
            let refs: Vec<&str> = full.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            medic_cli(&refs, &env)
        })
    };
    let (ok, _, err) = run(
        vec!["ack", "7", "--by", "alice", "--token", "s3cret"],
        vec![],
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        vec!["approve", "7", "promote", "--by", "bob"],
        vec![("MEDIC_API_TOKEN", "from-env")],
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        vec!["reject", "7", "flush-cache", "--by", "carol"],
        vec![("MEDIC_API_TOKEN", "from-env")],
    )
    .await
    .unwrap();
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        vec!["resolve", "7", "--by", "dave"],
        vec![("MEDIC_API_TOKEN", "from-env")],
    )
    .await
    .unwrap();
    assert!(ok, "{err}");

    let want = |verb: &str, token: &str, body: Value| Recorded {
        method: "POST".into(),
        path: format!("/api/v1/incidents/7/{verb}"),
        authorization: Some(format!("Bearer {token}")),
        content_type: Some("application/json".into()),
        body,
    };
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            want("acknowledge", "s3cret", serde_json::json!({"by": "alice"})),
            want(
                "approve",
                "from-env",
                serde_json::json!({"by": "bob", "step": "promote"})
            ),
            want(
                "reject",
                "from-env",
                serde_json::json!({"by": "carol", "step": "flush-cache"})
            ),
            want("resolve", "from-env", serde_json::json!({"by": "dave"})),
        ]
    );

    // A refusal (401) is an error with the server's reason.
    let (url, _) = recorder(401).await;
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        medic_cli(&["ack", "7", "--url", &url, "--by", "eve"], &[])
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(
        err.contains("401") && err.contains("missing or wrong bearer token"),
        "{err}"
    );
}

/// A rule whose one symptom is a tcp check on the config target `target`,
/// firing after `for_` closed; its plan pokes once and runs out.
fn target_closed_rule(name: &str, target: &str, for_: &str) -> String {
    format!(
        "scenario: {name}\n\
         summary: {target} closed\n\
         severity: high\n\
         rto: 5m\n\
         symptoms:\n\
         \x20 closed:\n\
         \x20   check: {{ tcp: {{ target: {target} }} }}\n\
         \x20   every: 200ms\n\
         \x20   timeout: 200ms\n\
         \x20   for: {for_}\n\
         \x20   clear_for: 400ms\n\
         when: {{ any: [closed] }}\n\
         plan:\n\
         \x20 - name: poke\n\
         \x20   action: exec\n\
         \x20   args: [\"true\"]\n\
         \x20   verify: {{ within: 500ms }}\n\
         \x20   limit: {{ attempts: 1, per: 1h }}\n\
         escalation: default\n"
    )
}

/// Issue 17: the status page and `medic incidents` show the incident tree.
/// `app` depends on `db`; both are down, the database first: the app's
/// incident opens as a dependent of the database's, is listed under it
/// (`└ app-down (waits on #1)`), and each incident's section names its
/// cause or its dependents.
#[test]
fn the_status_page_and_medic_incidents_show_the_incident_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (http, db, app) = (free_port(), free_port(), free_port());
    let config = enforce_config(dir.path(), http, "2s");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "targets:\n  db: {{ tcp: {{ address: \"127.0.0.1:{db}\" }} }}\n  app:\n    tcp: {{ address: \"127.0.0.1:{app}\" }}\n    depends_on: [db]\n"
    ));
    std::fs::write(&config, text).unwrap();
    std::fs::write(
        dir.path().join("rules/db.yaml"),
        target_closed_rule("db-down", "db", "400ms"),
    )
    .unwrap();
    // Later than the database's: its cause is open by then.
    std::fs::write(
        dir.path().join("rules/app.yaml"),
        target_closed_rule("app-down", "app", "2s"),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{http}");
    let _medic = Medic::start(&config, &dir.path().join("medic.log"));
    let incidents =
        || -> Value { serde_json::from_str(&get(&format!("{base}/api/v1/incidents")).1).unwrap() };
    wait_until(Duration::from_secs(30), "two open incidents", || {
        incidents()["open"].as_array().is_some_and(|a| a.len() == 2)
    });
    let open = incidents()["open"].as_array().unwrap().clone();
    let id_of = |s: &str| {
        open.iter()
            .find(|i| i["scenario"] == s)
            .and_then(|i| i["id"].as_i64())
            .unwrap_or_else(|| panic!("no {s} in {open:?}"))
    };
    let (cause, dependent) = (id_of("db-down"), id_of("app-down"));

    let (code, html) = get(&format!("{base}/status"));
    assert_eq!(code, 200);
    assert!(
        html.contains(&format!(
            "└ app-down <span class=\"meta\">waits on <a href=\"#incident-{cause}\">#{cause}</a></span>"
        )),
        "{html}"
    );
    let row = |id: i64| {
        html.find(&format!("<tr><td><a href=\"#incident-{id}\">{id}</a></td>"))
            .unwrap_or_else(|| panic!("no row for {id}: {html}"))
    };
    assert!(row(cause) < row(dependent), "the cause first: {html}");
    assert!(
        html.contains(&format!(
            "<p class=\"dependents\">Dependents (waiting on this one): <a href=\"#incident-{dependent}\">{dependent}</a></p>"
        )),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            "<p class=\"cause\">Caused by <a href=\"#incident-{cause}\">incident {cause}</a>"
        )),
        "{html}"
    );

    let read = [("MEDIC_API_TOKEN", TEST_READ_TOKEN)];
    let (ok, out, err) = medic_cli(&["incidents", "--url", &base], &read);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let at = |p: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .position(|l| p(l))
            .unwrap_or_else(|| panic!("{out}"))
    };
    let c = at(&|l| l.trim_start().starts_with(&format!("{cause} ")) && l.contains("db-down"));
    let d = at(&|l| {
        l.trim_start().starts_with(&format!("{dependent} "))
            && l.contains(&format!("└ app-down (waits on #{cause})"))
    });
    assert_eq!(d, c + 1, "the dependent right under its cause: {out}");
}

/// A long-open incident on the status page: the newest 200 entries, and a
/// line saying how many earlier ones there are and where they are (the
/// router over a store holding 250 entries; a running medic would take
/// minutes to write them).
#[tokio::test]
async fn the_status_page_shows_the_newest_200_entries_and_says_where_the_rest_are() {
    use medic::store::{MemoryStore, NewIncident, Store, TimelineEntry};
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let now = chrono::Utc::now();
    let (inc, _) = store
        .open_incident(NewIncident {
            scenario: "long-one".into(),
            instance: String::new(),
            severity: "critical".into(),
            summary: "A long-open incident".into(),
            at: now,
        })
        .await
        .unwrap();
    for n in 0..250 {
        let entry = TimelineEntry::new(now, "note", format!("entry number {n}."));
        store.append(inc.id, entry).await.unwrap();
    }
    let total = store.timeline(inc.id).await.unwrap().len();
    assert!(total >= 250, "{total}");
    let app = medic::server::router(open_reads_state(store, medic::clock::Clock::system()));
    let stop = tokio_util::sync::CancellationToken::new();
    let (addr, _) = medic::server::serve("127.0.0.1:0".parse().unwrap(), app, stop.clone())
        .await
        .unwrap();
    let r = reqwest::get(format!("http://{addr}/status")).await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    stop.cancel();
    let earlier = total - 200;
    let id = inc.id;
    assert!(
        html.contains(&format!(
            "The newest 200 entries; {earlier} earlier ones are in the \
             <a href=\"/console/incidents/{id}?from=0\">console</a>"
        )),
        "{html}"
    );
    assert!(
        html.contains(&format!("/api/v1/incidents/{id}?from=0")),
        "{html}"
    );
    // Exactly the newest 200: the last entry shown, the 200th from the end
    // shown, the one before it not.
    assert!(html.contains("entry number 249."), "{html}");
    assert!(
        html.contains(&format!("entry number {}.", 250 - 200)),
        "{html}"
    );
    assert!(
        !html.contains(&format!("entry number {}.", 250 - 201)),
        "{html}"
    );
    // The incident's timeline table holds exactly those 200 rows.
    let from = html.find("The newest 200 entries;").unwrap();
    let table = &html[from..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(table.matches("<tr><td>").count(), 200, "{table}");
}
