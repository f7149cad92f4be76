//! The status page in a real headless Chromium (driven over WebDriver by
//! chromedriver, JavaScript disabled): open and recent incidents, RTO
//! clocks, timelines and budgets of a running medic. The screenshot is kept
//! as a test artifact: `target/artifacts/status-page.png`.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn setup(dir: &Path, http: u16, port: u16) -> std::path::PathBuf {
    let config = enforce_config(dir, http, "2s");
    std::fs::write(
        dir.join("rules/port.yaml"),
        port_closed_rule("port-closed", "Port closed", port, 3),
    )
    .unwrap();
    config
}

/// A chromedriver child on an ephemeral port, killed and reaped on drop.
struct Driver {
    child: Child,
    base: String,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        wait_until(Duration::from_secs(20), "chromedriver to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Driver { child, base }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        block_on(async {
            let c = reqwest::Client::new();
            let url = format!("{}{path}", self.base);
            let r = match method {
                "GET" => c.get(&url),
                "DELETE" => c.delete(&url),
                _ => c.post(&url).json(&body.unwrap_or(json!({}))),
            };
            let v: Value = r.send().await.unwrap().json().await.unwrap();
            assert!(v["value"]["error"].is_null(), "{method} {path}: {v}");
            v["value"].clone()
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium (Debian package chromium)")
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
    let caps = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1400"],
            // The page must work without JavaScript.
            "prefs": { "profile.managed_default_content_settings.javascript": 2 }
        }
    }}});
    let session = driver.call("POST", "/session", Some(caps));
    // A browser sends the read token as the password of Basic auth.
    let page = format!("http://operator:{TEST_READ_TOKEN}@127.0.0.1:{http}");
    let id = session["sessionId"].as_str().unwrap().to_string();
    let s = |p: &str| format!("/session/{id}{p}");
    driver.call(
        "POST",
        &s("/url"),
        Some(json!({ "url": format!("{page}/status") })),
    );
    assert_eq!(driver.call("GET", &s("/title"), None), "medic status");
    let text_of = |css: &str| -> String {
        let el = driver.call(
            "POST",
            &s("/element"),
            Some(json!({ "using": "css selector", "value": css })),
        );
        let eid = el
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_string();
        driver
            .call("GET", &s(&format!("/element/{eid}/text")), None)
            .as_str()
            .unwrap()
            .to_string()
    };
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

    let png = driver.call("GET", &s("/screenshot"), None);
    let png = base64_decode(png.as_str().unwrap());
    assert_eq!(&png[1..4], b"PNG");
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("status-page.png"), &png).unwrap();

    // A resolved incident's timeline is one link away.
    driver.call(
        "POST",
        &s("/url"),
        Some(json!({ "url": format!("{page}/status?incident={resolved}") })),
    );
    let section = text_of(&format!("#incident-{resolved}"));
    assert!(section.contains("(resolved)"), "{section}");
    driver.call("DELETE", &s(""), None);
}

/// Standard base64 (the WebDriver screenshot encoding).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..chunk.len()]);
    }
    out
}
