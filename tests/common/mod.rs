//! Shared test harness: private services on ephemeral ports, the real
//! medic binary, and polling helpers. Everything stays on 127.0.0.1 and is
//! killed *and waited on* (no zombies) when the test ends.
#![allow(dead_code)]

pub mod fake_kube;
pub mod fake_paging;
pub mod pg;
pub mod prom;
pub mod scripted;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends PING over a raw socket; true on +PONG.
pub fn redis_ping(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// The argv that starts a throwaway redis-server on `port`.
pub fn redis_argv(port: u16) -> Vec<String> {
    [
        "redis-server",
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A redis-server the test owns.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start(port: u16) -> Redis {
        let argv = redis_argv(port);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the README's test command installs it)");
        let r = Redis {
            port,
            child: Some(child),
        };
        wait_until(
            Duration::from_secs(10),
            "redis-server to answer PING",
            || redis_ping(port),
        );
        r
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills the process whose pid is in `pidfile` (daemons medic started).
pub fn kill_pidfile(pidfile: &Path) {
    if let Ok(s) = std::fs::read_to_string(pidfile)
        && let Ok(pid) = s.trim().parse::<i32>()
    {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// The real medic binary, running `medic run --config PATH`.
pub struct Medic {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Medic {
    pub fn start(config: &Path, log: &Path) -> Medic {
        Self::start_with_env(config, log, &[])
    }

    /// [`Medic::start`] with extra environment variables.
    pub fn start_with_env(config: &Path, log: &Path, env: &[(&str, String)]) -> Medic {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_medic"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let m = Medic {
            child: Some(child),
            log: log.to_path_buf(),
        };
        wait_until(Duration::from_secs(20), "medic to start", || {
            m.log_text().contains("medic running")
        });
        m
    }

    /// Sends `sig` (SIGHUP to reload).
    pub fn signal(&self, sig: Signal) {
        let c = self.child.as_ref().expect("running");
        kill(Pid::from_raw(c.id() as i32), sig).unwrap();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9, and reap it.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("running");
        let _ = c.kill();
        let _ = c.wait();
    }

    /// SIGTERM, then wait (bounded) for a graceful exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = c.kill();
                let _ = c.wait();
                panic!("medic did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Medic {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a future to completion on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Async [`wait_until`]: polls `cond` every 50 ms until it holds or
/// `limit` passes (for conditions that await, inside a tokio test).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A scenario whose one symptom is "nothing listens on 127.0.0.1:`port`"
/// (checked every 200 ms, firing after 400 ms) and whose one step runs
/// `true`, at most `attempts` times an hour: an incident that opens and
/// stays open while the port is closed.
pub fn port_closed_rule(name: &str, summary: &str, port: u16, attempts: u32) -> String {
    format!(
        "scenario: {name}\n\
         summary: {summary}\n\
         severity: high\n\
         rto: 5m\n\
         symptoms:\n\
         \x20 closed:\n\
         \x20   check: {{ tcp: {{ address: \"127.0.0.1:{port}\" }} }}\n\
         \x20   every: 200ms\n\
         \x20   timeout: 200ms\n\
         \x20   for: 400ms\n\
         \x20   clear_for: 400ms\n\
         when: {{ any: [closed] }}\n\
         plan:\n\
         \x20 - name: poke\n\
         \x20   action: exec\n\
         \x20   args: [\"true\"]\n\
         \x20   verify: {{ within: 500ms }}\n\
         \x20   limit: {{ attempts: {attempts}, per: 1h }}\n\
         escalation: default\n"
    )
}

/// `dir/medic.yaml`: enforce mode, SQLite under `dir/state`, rules from
/// `dir/rules` (created), the HTTP server on 127.0.0.1:`http`.
pub fn enforce_config(dir: &Path, http: u16, grace: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    let config = dir.join("medic.yaml");
    std::fs::write(
        &config,
        format!(
            "mode: enforce\n\
             store: {{ sqlite: {{ path: state/medic.db }} }}\n\
             rules: [rules]\n\
             shutdown_grace: {grace}\n\
             http: {{ listen: \"127.0.0.1:{http}\" }}\n"
        ),
    )
    .unwrap();
    config
}
