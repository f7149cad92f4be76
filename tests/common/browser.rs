//! A real headless Chromium driven over WebDriver (chromedriver), with
//! JavaScript disabled: the status pages must work without it. Debian's
//! `chromium` and `chromium-driver` (installed by scripts/test.sh).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{block_on, free_port, wait_until};

/// A chromedriver child on an ephemeral port, killed and reaped on drop.
pub struct Driver {
    child: Child,
    base: String,
}

impl Driver {
    pub fn start() -> Driver {
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

    /// One WebDriver call; its `value`, asserting it is no error.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
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

    /// A new browser session: headless, JavaScript off, 1280×1400.
    pub fn session(&self) -> Session<'_> {
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
        let s = self.call("POST", "/session", Some(caps));
        Session {
            driver: self,
            id: s["sessionId"].as_str().unwrap().to_string(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session; closed on drop.
pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    /// A call on this session (`p` after `/session/{id}`).
    pub fn call(&self, method: &str, p: &str, body: Option<Value>) -> Value {
        self.driver
            .call(method, &format!("/session/{}{p}", self.id), body)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn title(&self) -> Value {
        self.call("GET", "/title", None)
    }

    /// The rendered text of the first element matching `css`.
    pub fn text_of(&self, css: &str) -> String {
        let el = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        let eid = el
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_string();
        self.call("GET", &format!("/element/{eid}/text"), None)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A screenshot of the window, written as `target/artifacts/NAME`;
    /// returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call("GET", "/screenshot", None);
        let png = base64_decode(png.as_str().unwrap());
        assert_eq!(&png[1..4], b"PNG");
        let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let path = artifacts.join(name);
        std::fs::write(&path, &png).unwrap();
        path
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = block_on(
            reqwest::Client::new()
                .delete(format!("{}/session/{}", self.driver.base, self.id))
                .send(),
        );
    }
}

pub fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium (Debian package chromium)")
}

/// Standard base64 (the WebDriver screenshot encoding).
pub fn base64_decode(s: &str) -> Vec<u8> {
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
