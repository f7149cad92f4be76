//! A real Prometheus scraping a real prometheus-redis-exporter (Debian
//! packages `prometheus`, `prometheus-redis-exporter`), both private: own
//! config, data directory and ephemeral ports, 1 s scrapes, killed and
//! reaped when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use super::start_service;

/// The user and password Prometheus asks for (basic auth).
pub const USER: &str = "medic";
pub const PASSWORD: &str = "medic-secret";
/// bcrypt of [`PASSWORD`] (cost 4), for Prometheus's web config.
const PASSWORD_BCRYPT: &str = "$2b$04$pUsqh8VCqimJ/h3Pv5sTz.P10gMjUaOUCOlV7JwkQ2qAp/OunmuOu";

/// One plain HTTP/1.0 GET on 127.0.0.1; the status and body.
pub fn http_get(port: u16, path: &str, auth: bool) -> Option<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    if auth {
        let token = base64(format!("{USER}:{PASSWORD}").as_bytes());
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// Standard base64 with padding (for the Authorization header).
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A command for `argv`.
fn command(argv: &[String]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

/// A prometheus-redis-exporter watching one redis-server.
pub struct Exporter {
    pub port: u16,
    child: Option<Child>,
}

impl Exporter {
    pub fn start(redis_port: u16, dir: &std::path::Path) -> Exporter {
        let (child, port) = start_service(
            "prometheus-redis-exporter",
            None,
            &dir.join("exporter.log"),
            Duration::from_secs(20),
            |port| {
                command(&[
                    "prometheus-redis-exporter".into(),
                    format!("-redis.addr=redis://127.0.0.1:{redis_port}"),
                    format!("-web.listen-address=127.0.0.1:{port}"),
                ])
            },
            |_, port| http_get(port, "/metrics", false).is_some_and(|(s, _)| s == 200),
        );
        Exporter {
            port,
            child: Some(child),
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Prometheus that asks for basic auth ([`USER`], [`PASSWORD`]) and
/// scrapes `targets` every second, each under two jobs (`redis-a`,
/// `redis-b`), so one query gives several series told apart by labels.
pub struct Prometheus {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Prometheus {
    pub fn start(targets: &[String], dir: &std::path::Path) -> Prometheus {
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global: {{ scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s }}\n\
             scrape_configs:\n\
             - job_name: redis-a\n  static_configs: [{{ targets: [{list}] }}]\n\
             - job_name: redis-b\n  static_configs: [{{ targets: [{list}] }}]\n"
        );
        Prometheus::start_config(&config, dir)
    }

    /// A Prometheus with config `config` (`prometheus.yml`, written into
    /// `dir`; relative paths in it are relative to `dir`), behind the same
    /// basic auth.
    pub fn start_config(config: &str, dir: &std::path::Path) -> Prometheus {
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        std::fs::write(
            dir.join("web.yml"),
            format!("basic_auth_users:\n  {USER}: {PASSWORD_BCRYPT}\n"),
        )
        .unwrap();
        let (child, port) = start_service(
            "prometheus",
            None,
            &dir.join("prometheus.log"),
            Duration::from_secs(30),
            |port| {
                command(&[
                    "prometheus".into(),
                    format!("--config.file={}", dir.join("prometheus.yml").display()),
                    format!("--web.config.file={}", dir.join("web.yml").display()),
                    format!("--storage.tsdb.path={}", dir.join("data").display()),
                    format!("--web.listen-address=127.0.0.1:{port}"),
                ])
            },
            |_, port| http_get(port, "/-/ready", true).is_some_and(|(s, _)| s == 200),
        );
        Prometheus {
            port,
            dir: dir.to_path_buf(),
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}
