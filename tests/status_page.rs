//! The status page in a real headless Chromium (driven over WebDriver by
//! chromedriver, JavaScript disabled): open and recent incidents, RTO
//! clocks, timelines and budgets of a running medic. The screenshot is kept
//! as a test artifact: `target/artifacts/status-page.png`.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::browser::Driver;
use common::*;
use serde_json::Value;

fn setup(dir: &Path, http: u16, port: u16) -> std::path::PathBuf {
    let config = enforce_config(dir, http, "2s");
    std::fs::write(
        dir.join("rules/port.yaml"),
        port_closed_rule("port-closed", "Port closed", port, 3),
    )
    .unwrap();
    config
}

#[test]
fn status_page_renders_incidents_rto_clocks_and_budgets_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (http, port) = (free_port(), free_port());
    let config = setup(dir.path(), http, port);
    let base = format!("http://127.0.0.1:{http}");
    let _medic = Medic::start(&config, &dir.path().join("medic.log"));
    let incidents = || -> Value {
        block_on(async {
            reqwest::Client::new()
                .get(format!("{base}/api/v1/incidents"))
                .bearer_auth(TEST_READ_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    };

    // One incident recovers (the port opens), a second one stays open.
    wait_until(Duration::from_secs(20), "a first incident", || {
        incidents()["open"][0]["state"] == "escalated"
    });
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    wait_until(Duration::from_secs(20), "it to resolve", || {
        incidents()["open"].as_array().unwrap().is_empty()
    });
    drop(listener);
    wait_until(Duration::from_secs(20), "a second incident", || {
        incidents()["open"][0]["state"] == "escalated"
    });
    let open = incidents()["open"][0]["id"].as_i64().unwrap();
    let resolved = incidents()["recent"][1]["id"].as_i64().unwrap();

    // The raw page: one document, nothing external, no script.
    let html = block_on(async {
        reqwest::Client::new()
            .get(format!("{base}/"))
            .basic_auth("anyone", Some(TEST_READ_TOKEN))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(!html.contains("<script"), "no JavaScript");
    assert!(!html.contains("src="), "no external assets");
    assert!(!html.contains("href=\"http"), "no external links");
    assert!(!html.contains("<link"), "no stylesheets to fetch");

    let driver = Driver::start();
    let session = driver.session();
    // A browser sends the read token as the password of Basic auth.
    let page = format!("http://operator:{TEST_READ_TOKEN}@127.0.0.1:{http}");
    session.goto(&format!("{page}/status"));
    assert_eq!(session.title(), "medic status");
    let text_of = |css: &str| session.text_of(css);
    let role = text_of("#role");
    assert!(
        role.contains("This replica is the leader (term 1)"),
        "{role}"
    );
    let body = text_of("body");
    assert!(body.contains("Open incidents (1)"), "{body}");
    assert!(body.contains("port-closed"), "{body}");
    assert!(body.contains("of 5m"), "an RTO clock: {body}");
    assert!(body.contains("left)"), "time left on the RTO: {body}");
    assert!(
        body.contains("recovered in"),
        "the resolved one's recovery: {body}"
    );
    assert!(body.contains("RTO 5m: met"), "{body}");
    let timeline = text_of(&format!("#incident-{open} + p + h3 + table"));
    assert!(timeline.contains("opened: closed firing"), "{timeline}");
    let budgets = text_of("#budgets + table");
    assert!(budgets.contains("port-closed poke"), "{budgets}");
    assert!(budgets.contains("of 3"), "{budgets}");

    session.screenshot("status-page.png");

    // A resolved incident's timeline is one link away.
    session.goto(&format!("{page}/status?incident={resolved}"));
    let section = text_of(&format!("#incident-{resolved}"));
    assert!(section.contains("(resolved)"), "{section}");
}
