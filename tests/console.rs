//! The on-call console (`/console`) against a running medic: in a real
//! headless Chromium (WebDriver, JavaScript off) an engineer opens the
//! overview, logs in with the API token, opens an incident's page with its
//! swimlane and acknowledges it through the form; the API then says it is
//! acknowledged. Screenshots: `target/artifacts/console-overview.png` and
//! `target/artifacts/console-swimlane.png`. Over plain HTTP: no session is
//! a 401 leading to the login form, a wrong or missing CSRF token is 403
//! and records nothing, the read token can look but never act, and a
//! hostile label value is escaped everywhere it is shown. After a sandbox
//! drill of the shipped redis-cache-failure scenario, its incident drawn
//! as a swimlane (`target/artifacts/console-drill-swimlane.png`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::browser::{Driver, Session};
use common::*;
use serde_json::{Value, json};

/// A hostile label value, as an Alertmanager delivery may carry.
const EVIL: &str = "<script>alert(1)</script>\"'&";

/// `medic.yaml` with the test credentials, the port-closed scenario on
/// `port` and a per-series scenario on the alert `Broken`.
fn setup(dir: &Path, http: u16, port: u16) -> std::path::PathBuf {
    let config = enforce_config(dir, http, "2s");
    std::fs::write(
        dir.join("rules/port.yaml"),
        port_closed_rule("port-closed", "Port closed", port, 3),
    )
    .unwrap();
    std::fs::write(
        dir.join("rules/broken.yaml"),
        "scenario: broken\n\
         summary: something is broken\n\
         severity: high\n\
         rto: 5m\n\
         symptoms:\n\
         \x20 broken:\n\
         \x20   check: { alert: Broken }\n\
         \x20   every: 100ms\n\
         when: { any: [broken] }\n\
         plan:\n\
         \x20 - name: look\n\
         \x20   action: exec\n\
         \x20   args: [\"true\"]\n\
         \x20   limit: { attempts: 1, per: 1h }\n\
         escalation: default\n",
    )
    .unwrap();
    config
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn incident(base: &str, id: i64) -> Value {
    block_on(async {
        client()
            .get(format!("{base}/api/v1/incidents/{id}"))
            .bearer_auth(TEST_READ_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

fn open_incidents(base: &str) -> Vec<Value> {
    block_on(async {
        let v: Value = client()
            .get(format!("{base}/api/v1/incidents"))
            .bearer_auth(TEST_READ_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["open"].as_array().cloned().unwrap_or_default()
    })
}

/// The open incident of `scenario`, once there is one.
fn wait_open(base: &str, scenario: &str) -> i64 {
    let mut id = 0;
    wait_until(Duration::from_secs(30), "an incident to open", || {
        id = open_incidents(base)
            .iter()
            .find(|i| i["scenario"] == scenario)
            .and_then(|i| i["id"].as_i64())
            .unwrap_or(0);
        id > 0
    });
    id
}

/// `GET url` with `auth` (a full Authorization value) and `cookie`:
/// status, Set-Cookie, Location and body.
fn get(url: &str, auth: Option<&str>, cookie: Option<&str>) -> (u16, String) {
    block_on(async {
        let mut r = client().get(url);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

/// A form post: status, headers and body.
fn post(
    url: &str,
    form: &[(&str, &str)],
    auth: Option<&str>,
    cookie: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    block_on(async {
        let mut r = client()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        let r = r.send().await.unwrap();
        let (code, headers) = (r.status().as_u16(), r.headers().clone());
        (code, headers, r.text().await.unwrap())
    })
}

/// The value of the first `name="csrf" value="..."` in a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

fn post_alert(http: u16, labels: Value) {
    let mut labels = labels;
    labels["alertname"] = json!("Broken");
    let body = json!({
        "version": "4", "status": "firing", "receiver": "medic", "groupKey": "{}:{}",
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing", "labels": labels, "annotations": {},
            "startsAt": "2026-03-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": ""
        }]
    });
    let code = block_on(async {
        client()
            .post(format!(
                "http://127.0.0.1:{http}/api/v1/alerts/alertmanager"
            ))
            .header("content-type", "application/json")
            .bearer_auth(TEST_INTAKE_TOKEN)
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(code, 200, "delivery refused");
}

/// Types `text` into the element `css`.
fn type_into(s: &Session, css: &str, text: &str) {
    let id = element(s, css);
    s.call(
        "POST",
        &format!("/element/{id}/value"),
        Some(json!({ "text": text })),
    );
}

fn click(s: &Session, css: &str) {
    let id = element(s, css);
    s.call("POST", &format!("/element/{id}/click"), Some(json!({})));
}

fn element(s: &Session, css: &str) -> String {
    let el = s.call(
        "POST",
        "/element",
        Some(json!({ "using": "css selector", "value": css })),
    );
    el.as_object()
        .and_then(|o| o.values().next())
        .and_then(Value::as_str)
        .unwrap()
        .to_string()
}

fn url_of(s: &Session) -> String {
    s.call("GET", "/url", None).as_str().unwrap().to_string()
}

#[test]
fn an_engineer_logs_in_reads_the_swimlane_and_acknowledges_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (http, port) = (free_port(), free_port());
    let config = setup(dir.path(), http, port);
    let base = format!("http://127.0.0.1:{http}");
    let _medic = Medic::start(&config, &dir.path().join("medic.log"));
    let id = wait_open(&base, "port-closed");
    // Its step ran and did not help: escalated, a page sent.
    wait_until(Duration::from_secs(30), "the incident to escalate", || {
        incident(&base, id)["incident"]["state"] == "escalated"
    });

    let driver = Driver::start();
    let s = driver.session();
    // No session: the console leads to the login form.
    s.goto(&format!("{base}/console"));
    let body = s.text_of("body");
    assert!(body.contains("Log in to see the console"), "{body}");
    click(&s, "main a");
    assert!(url_of(&s).ends_with("/console/login"), "{}", url_of(&s));
    type_into(&s, "#name", "ann");
    type_into(&s, "#token", TEST_API_TOKEN);
    click(&s, "#submit");
    // Logged in: on to the overview.
    assert!(url_of(&s).ends_with("/console"), "{}", url_of(&s));
    assert_eq!(s.text_of("#who"), "ann");
    wait_until(Duration::from_secs(10), "the symptom firing", || {
        s.goto(&format!("{base}/console"));
        s.text_of("#symptoms + table").contains("firing")
    });
    let symptoms = s.text_of("#symptoms + table");
    assert!(symptoms.contains("port-closed closed"), "{symptoms}");
    assert!(symptoms.contains("tcp"), "{symptoms}");
    assert!(symptoms.contains("failing:"), "why: {symptoms}");
    let incidents = s.text_of("#incidents + table");
    assert!(incidents.contains(&format!("#{id}")), "{incidents}");
    s.screenshot("console-overview.png");

    // The incident's page: its swimlane, then the acknowledgement.
    click(&s, &format!("a[href=\"/console/incidents/{id}\"]"));
    assert!(url_of(&s).ends_with(&format!("/console/incidents/{id}")));
    assert_eq!(s.text_of("#state"), "escalated");
    let svg = s.text_of("#swimlane");
    assert!(svg.contains("symptom closed"), "{svg}");
    assert!(svg.contains("steps") && svg.contains("RTO"), "{svg}");
    s.screenshot("console-swimlane.png");
    type_into(&s, "#form-acknowledge input[name=note]", "looking");
    click(&s, "#do-acknowledge");
    // POST-redirect-GET: back on the page, with what came of it.
    assert!(url_of(&s).ends_with(&format!("/console/incidents/{id}")));
    let flash = s.text_of("#flash");
    assert!(flash.contains("acknowledged by ann via console"), "{flash}");
    assert_eq!(s.text_of("#state"), "acknowledged");

    // The API says so too, with who and how.
    let shown = incident(&base, id);
    assert_eq!(shown["incident"]["state"], "acknowledged", "{shown}");
    let ack = shown["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "decision")
        .cloned()
        .unwrap();
    assert_eq!(ack["data"]["by"], "ann", "{ack}");
    assert_eq!(ack["data"]["via"], "console", "{ack}");

    // Logging out ends the session: the forms are gone.
    click(&s, "header button");
    assert!(url_of(&s).ends_with("/console/login"), "{}", url_of(&s));
    s.goto(&format!("{base}/console/incidents/{id}"));
    assert!(s.text_of("body").contains("Log in to see the console"));
}

#[test]
fn sessions_csrf_read_token_and_escaping_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (http, port) = (free_port(), free_port());
    let config = setup(dir.path(), http, port);
    let base = format!("http://127.0.0.1:{http}");
    let _medic = Medic::start(&config, &dir.path().join("medic.log"));
    let id = wait_open(&base, "port-closed");
    let read = format!("Bearer {TEST_READ_TOKEN}");
    let act = format!("{base}/console/incidents/{id}/acknowledge");
    let decisions = || {
        incident(&base, id)["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "decision")
            .count()
    };

    // No session, no token: 401, leading to the login form.
    let (code, body) = get(&format!("{base}/console"), None, None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("href=\"/console/login\""), "{body}");
    let (code, _) = get(&format!("{base}/console/incidents/{id}"), None, None);
    assert_eq!(code, 401);
    // A wrong token is refused as on every read route.
    let (code, _) = get(&format!("{base}/console"), Some("Bearer nope"), None);
    assert_eq!(code, 401);

    // The read token looks, with no form to act.
    let (code, body) = get(&format!("{base}/console/incidents/{id}"), Some(&read), None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("<svg") && body.contains("id=\"swimlane\""));
    assert!(
        !body.contains("do-acknowledge"),
        "no form for the read token"
    );
    assert!(!body.contains("<script"), "no JavaScript");
    // A short timeline is drawn whole, with no window; a bad window is 400.
    assert!(!body.contains("id=\"window\""), "{body}");
    let (code, _) = get(
        &format!("{base}/console/incidents/{id}?from=x"),
        Some(&read),
        None,
    );
    assert_eq!(code, 400);
    let (code, body) = get(
        &format!("{base}/console/incidents/{id}?from=1"),
        Some(&read),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("id=\"window\"") && body.contains("id=\"earlier\""),
        "{body}"
    );
    // ...but cannot act: not as a bearer token, nor by logging in.
    let (code, headers, _) = post(&act, &[("csrf", "x")], Some(&read), None);
    assert_eq!(code, 401);
    assert!(headers.get("set-cookie").is_none());
    let (code, headers, body) = post(
        &format!("{base}/console/login"),
        &[("name", "eve"), ("token", TEST_READ_TOKEN)],
        None,
        None,
    );
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("that is the read token"), "{body}");
    assert!(headers.get("set-cookie").is_none());
    let (code, _, _) = post(
        &format!("{base}/console/login"),
        &[("name", "eve"), ("token", "wrong")],
        None,
        None,
    );
    assert_eq!(code, 401);
    assert_eq!(decisions(), 0);

    // The API token makes a session: the cookie is HttpOnly, SameSite=Strict
    // (and not Secure on a plain listener).
    let (code, headers, _) = post(
        &format!("{base}/console/login"),
        &[("name", "ann"), ("token", TEST_API_TOKEN)],
        None,
        None,
    );
    assert_eq!(code, 303);
    assert_eq!(headers["location"], "/console");
    let set = headers["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("medic_session="), "{set}");
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let (code, page) = get(
        &format!("{base}/console/incidents/{id}"),
        None,
        Some(&cookie),
    );
    assert_eq!(code, 200);
    let csrf = csrf_of(&page);
    assert_eq!(csrf.len(), 64);

    // A missing or wrong CSRF token: 403, nothing recorded.
    let zeros = "0".repeat(64);
    for form in [
        vec![("note", "no token")],
        vec![("csrf", zeros.as_str())],
        vec![("csrf", "")],
    ] {
        let (code, _, body) = post(&act, &form, None, Some(&cookie));
        assert_eq!(code, 403, "{form:?}: {body}");
        assert!(body.contains("nothing was done"), "{body}");
    }
    // Nor does another session's token work, nor a forged cookie.
    let (code, _, _) = post(&act, &[("csrf", &csrf)], None, Some("medic_session=forged"));
    assert_eq!(code, 401);
    assert_eq!(decisions(), 0, "nothing recorded");
    assert_ne!(incident(&base, id)["incident"]["state"], "acknowledged");

    // The right one acts, then back to the page (POST-redirect-GET).
    let (code, headers, _) = post(
        &act,
        &[("csrf", &csrf), ("note", "on it")],
        None,
        Some(&cookie),
    );
    assert_eq!(code, 303);
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("/console/incidents/{id}")
    );
    assert_eq!(decisions(), 1);
    assert_eq!(incident(&base, id)["incident"]["state"], "acknowledged");
    let (_, page) = get(
        &format!("{base}/console/incidents/{id}"),
        None,
        Some(&cookie),
    );
    assert!(page.contains("acknowledged by ann via console"), "{page}");
    // A refusal (no step awaits approval) is shown the same way.
    let (code, _, _) = post(
        &format!("{base}/console/incidents/{id}/approve"),
        &[("csrf", &csrf)],
        None,
        Some(&cookie),
    );
    assert_eq!(code, 303);
    let (_, page) = get(
        &format!("{base}/console/incidents/{id}"),
        None,
        Some(&cookie),
    );
    assert!(page.contains("class=\"flash err\""), "{page}");
    assert_eq!(decisions(), 1);

    // Logged out: the cookie no longer acts.
    let (code, headers, _) = post(
        &format!("{base}/console/logout"),
        &[("csrf", &csrf)],
        None,
        Some(&cookie),
    );
    assert_eq!(code, 303);
    assert!(
        headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (code, _, _) = post(&act, &[("csrf", &csrf)], None, Some(&cookie));
    assert_eq!(code, 401);

    // A hostile label value: escaped on the overview and its incident page.
    post_alert(http, json!({ "deployment": EVIL }));
    let evil_id = wait_open(&base, "broken");
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;";
    let (code, overview) = get(&format!("{base}/console"), Some(&read), None);
    assert_eq!(code, 200);
    assert!(!overview.contains("<script"), "{overview}");
    assert!(overview.contains(escaped), "{overview}");
    let (_, page) = get(
        &format!("{base}/console/incidents/{evil_id}"),
        Some(&read),
        None,
    );
    assert!(!page.contains("<script"), "{page}");
    assert!(page.contains(escaped), "{page}");
}

/// `medic drill --sandbox redis-cache-failure` keeps its store; a medic
/// serving that store (the shipped rule loaded, its cache a private
/// redis-server that answers) draws the drill's incident: the symptom's
/// lane, the plan's steps, the RTO line; and lists it resolved.
#[test]
fn a_sandbox_drills_incident_is_drawn_as_a_swimlane_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let db = dir.path().join("state/medic.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medic"))
        .arg("drill")
        .arg("--sandbox")
        .arg("redis-cache-failure")
        .arg("--rules")
        .arg(root.join("rules"))
        .arg("--store")
        .arg(&db)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the drill failed: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("resolved: all symptoms clear"), "{report}");

    let redis = Redis::start_free();
    let http = free_port();
    let config = enforce_config(dir.path(), http, "2s");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace("mode: enforce", "mode: dry-run");
    text.push_str(&format!(
        "targets:\n  cache: {{ redis: {{ address: \"127.0.0.1:{}\" }} }}\n  \
         prometheus: {{ prometheus: {{ url: \"http://127.0.0.1:9\" }} }}\n",
        redis.port
    ));
    std::fs::write(&config, text).unwrap();
    std::fs::copy(
        root.join("rules/redis-cache-failure.yaml"),
        dir.path().join("rules/redis-cache-failure.yaml"),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{http}");
    let _medic = Medic::start(&config, &dir.path().join("medic.log"));
    let drilled = wait_for_incident(&base, "redis-cache-failure");
    assert_eq!(drilled["state"], "resolved", "{drilled}");
    let id = drilled["id"].as_i64().unwrap();

    let driver = Driver::start();
    let s = driver.session();
    s.goto(&format!("{base}/console/login"));
    type_into(&s, "#name", "ann");
    type_into(&s, "#token", TEST_API_TOKEN);
    click(&s, "#submit");
    assert!(url_of(&s).ends_with("/console"), "{}", url_of(&s));
    s.goto(&format!("{base}/console/incidents/{id}"));
    assert_eq!(s.text_of("#state"), "resolved");
    let svg = s.text_of("#swimlane");
    assert!(svg.contains("symptom redis_down"), "{svg}");
    assert!(svg.contains("steps") && svg.contains("RTO"), "{svg}");
    let timeline = s.text_of("body");
    assert!(timeline.contains("restart-redis"), "{timeline}");
    s.screenshot("console-drill-swimlane.png");
}

/// The incident of `scenario` among the API's recent incidents, waiting
/// up to 10 s for medic to answer.
fn wait_for_incident(base: &str, scenario: &str) -> Value {
    let mut found = None;
    wait_until(
        Duration::from_secs(10),
        "the drill's incident listed",
        || {
            found = block_on(async {
                let v: Value = client()
                    .get(format!("{base}/api/v1/incidents"))
                    .bearer_auth(TEST_READ_TOKEN)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                v["recent"]
                    .as_array()?
                    .iter()
                    .find(|i| i["scenario"] == scenario)
                    .cloned()
            });
            found.is_some()
        },
    );
    found.unwrap()
}
