//! Shared test harness: private services on ephemeral ports, the real
//! medic binary, and polling helpers. Everything stays on 127.0.0.1 and is
//! killed *and waited on* (no zombies) when the test ends.
#![allow(dead_code)]

pub mod azurite;
pub mod browser;
pub mod docker;
pub mod fake_kube;
pub mod fake_paging;
pub mod moto;
pub mod netns;
pub mod pg;
pub mod prom;
pub mod scripted;
pub mod smtp;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768-60999 here): a port the
    // kernel hands out itself (every client connection's source port,
    // every `bind(0)`) can land on a server's port while a test has that
    // server stopped, and the restarted server then finds it taken, or a
    // test's client reaches another test's server. Picked at random among
    // 12,000, free when checked.
    use std::hash::{BuildHasher, Hasher};
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for _ in 0..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999 after 1000 tries")
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
        // A replica's full sync loads from the socket: nothing is written
        // to the working directory (the crate's root when tests run).
        "--repl-diskless-load",
        "on-empty-db",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// How many times a service on a port of its own choosing is started again
/// on a new port when another process took the port between
/// [`free_port`] and the service binding it.
const PORT_TRIES: usize = 5;

/// The last `n` lines of the file at `path` from byte `from` on (what a
/// child wrote since it was started), for failure messages.
pub fn log_tail(path: &Path, from: u64, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// SIGKILL, then reap.
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts a service and waits until `ready(pid, port)` holds, with its
/// stdout and stderr appended to `log`. `port: None` chooses a free port
/// and, should the service find it taken ("address already in use"),
/// starts it again on a new one (a bounded number of times). When the
/// service does not come up, panics with why: that it could not be
/// spawned, or its exit status, or that it is still not ready after
/// `limit`, each with the tail of what it wrote.
pub fn start_service(
    what: &str,
    port: Option<u16>,
    log: &Path,
    limit: Duration,
    mut command: impl FnMut(u16) -> Command,
    mut ready: impl FnMut(u32, u16) -> bool,
) -> (Child, u16) {
    let tries = if port.is_some() { 1 } else { PORT_TRIES };
    let mut last = String::new();
    for _ in 0..tries {
        let port = port.unwrap_or_else(free_port);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{what}: cannot open its log {}: {e}", log.display()));
        let from = out.metadata().map_or(0, |m| m.len());
        let mut cmd = command(port);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {what} ({:?}): {e} (scripts/test.sh installs what the tests need)",
                    cmd.get_program()
                )
            });
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let tail = log_tail(log, from, 30);
                if tail.to_lowercase().contains("address already in use") {
                    last = format!("port {port} was taken ({status}):\n{tail}");
                    break;
                }
                panic!(
                    "{what} exited while starting on port {port} ({status}); its output ends:\n{tail}"
                );
            }
            if ready(child.id(), port) {
                return (child, port);
            }
            if start.elapsed() > limit {
                kill_and_reap(&mut child);
                panic!(
                    "{what} not ready on port {port} after {limit:?} (still running; killed); its output ends:\n{}",
                    log_tail(log, from, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("{what} found its port taken {tries} times; the last: {last}")
}

/// A redis-server the test owns.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// Its output (for failure messages); deleted on drop.
    log: tempfile::NamedTempFile,
}

impl Redis {
    /// A redis-server on `port` (the caller's choice, so not retried).
    pub fn start(port: u16) -> Redis {
        Self::start_on(Some(port))
    }

    /// A redis-server on a free port of its own ([`Redis::port`]), retried
    /// on a new one if the port is taken meanwhile.
    pub fn start_free() -> Redis {
        Self::start_on(None)
    }

    fn start_on(port: Option<u16>) -> Redis {
        let log = tempfile::NamedTempFile::new().unwrap();
        let (child, port) = start_service(
            "redis-server",
            port,
            log.path(),
            Duration::from_secs(10),
            |port| {
                let argv = redis_argv(port);
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            },
            |_, port| redis_ping(port),
        );
        Redis {
            port,
            child: Some(child),
            log,
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How many incidents in the SQLite store at `db` are resolved.
pub fn resolved_incidents(db: &Path) -> usize {
    use medic::store::{IncidentState, SqliteStore, prelude::*};
    block_on(async {
        let store = SqliteStore::open(db).await.unwrap();
        store
            .recent_incidents(1000)
            .await
            .unwrap()
            .iter()
            .filter(|i| i.state == IncidentState::Resolved)
            .count()
    })
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
        Self::start_command(Command::new(env!("CARGO_BIN_EXE_medic")), config, log, env)
    }

    /// [`Medic::start`] inside the network namespace `ns` (`ip netns exec`
    /// execs: the child is medic itself).
    pub fn start_in(ns: &netns::Netns, config: &Path, log: &Path) -> Medic {
        Self::start_command(ns.command(&[env!("CARGO_BIN_EXE_medic")]), config, log, &[])
    }

    fn start_command(
        mut command: Command,
        config: &Path,
        log: &Path,
        env: &[(&str, String)],
    ) -> Medic {
        // A restart appends to the same log: wait for this run's line, not
        // an earlier run's.
        let before = std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("medic running")
            .count();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = command
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
            m.log_text().matches("medic running").count() > before
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
    port_closed_rule_with_plan(
        name,
        summary,
        port,
        &format!(
            "\x20 - name: poke\n\
             \x20   action: exec\n\
             \x20   args: [\"true\"]\n\
             \x20   verify: {{ within: 500ms }}\n\
             \x20   limit: {{ attempts: {attempts}, per: 1h }}\n"
        ),
    )
}

/// [`port_closed_rule`] with the plan `plan` (the YAML list, indented by
/// two).
pub fn port_closed_rule_with_plan(name: &str, summary: &str, port: u16, plan: &str) -> String {
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
         {plan}\
         escalation: default\n"
    )
}

/// The API token of test configs made with [`http_credentials`].
pub const TEST_API_TOKEN: &str = "test-api-token-0123456789";
/// Their read token.
pub const TEST_READ_TOKEN: &str = "test-read-token-0123456789";
/// Their Alertmanager intake's bearer token.
pub const TEST_INTAKE_TOKEN: &str = "test-intake-token-0123456789";

/// Writes the test tokens into files under `dir/secrets` and returns the
/// `http:` keys that reference them, as flow-mapping entries to put after
/// `listen` (`api_token: {file: ...}, read_token: ..., intake: {bearer: ...}`).
pub fn http_credentials(dir: &Path) -> String {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let file = |name: &str, value: &str| {
        let p = secrets.join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        format!("{{ file: \"{}\" }}", p.display())
    };
    format!(
        "api_token: {}, read_token: {}, intake: {{ bearer: {} }}",
        file("api", TEST_API_TOKEN),
        file("read", TEST_READ_TOKEN),
        file("intake", TEST_INTAKE_TOKEN)
    )
}

/// `dir/medic.yaml`: enforce mode, SQLite under `dir/state`, rules from
/// `dir/rules` (created), the HTTP server on 127.0.0.1:`http` with the
/// test credentials ([`http_credentials`]).
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
             http: {{ listen: \"127.0.0.1:{http}\", {} }}\n",
            http_credentials(dir)
        ),
    )
    .unwrap();
    config
}

/// A redis-cache-failure setup in `dir`: `medic.yaml` (enforce mode, SQLite
/// under `dir/state`, rules from `dir/rules`, 5 s shutdown grace, one
/// target `cache`: the redis-server on 127.0.0.1:`port`) and
/// `rules/redis.yaml`, whose one symptom `redis_down` is `symptom` (YAML
/// lines such as `check: ...` and `every: 1s`) and whose plan is `plan`
/// (the YAML list, indented by two). Returns the config's path.
pub fn redis_setup(dir: &Path, port: u16, symptom: &str, plan: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("medic.yaml"),
        format!(
            "mode: enforce\n\
             store: {{ sqlite: {{ path: state/medic.db }} }}\n\
             rules: [rules]\n\
             shutdown_grace: 5s\n\
             targets:\n  cache: {{ redis: {{ address: \"127.0.0.1:{port}\" }} }}\n"
        ),
    )
    .unwrap();
    let symptom: String = symptom.lines().map(|l| format!("    {l}\n")).collect();
    std::fs::write(
        dir.join("rules/redis.yaml"),
        format!(
            "scenario: redis-cache-failure\n\
             summary: Redis cache unreachable\n\
             severity: high\n\
             rto: 5m\n\
             symptoms:\n\
             \x20 redis_down:\n\
             {symptom}\
             when: {{ any: [redis_down] }}\n\
             plan:\n{plan}\
             escalation: default\n"
        ),
    )
    .unwrap();
    dir.join("medic.yaml")
}

/// A critical scenario `app-down` whose one symptom `app_down` is "nothing
/// listens on 127.0.0.1:`port`" (checked every `every`, firing and clearing
/// at once) and whose first step `restart-app` runs `false` once an hour
/// (it never helps); `more_steps` (YAML list items, indented by two)
/// follow it.
pub fn app_down_rule(port: u16, rto: &str, every: &str, more_steps: &str) -> String {
    format!(
        r#"
scenario: app-down
summary: App unreachable
severity: critical
rto: {rto}
symptoms:
  app_down:
    check: {{ tcp: {{ address: "127.0.0.1:{port}" }} }}
    every: {every}
    timeout: {every}
    for: 0s
    clear_for: 0s
when: {{ any: [app_down] }}
plan:
  - name: restart-app
    action: exec
    args: ["false"]
    limit: {{ attempts: 1, per: 1h }}
{more_steps}escalation: default
"#
    )
}

/// The HTTP server's state over `store` for a router-level test: no
/// reload, no scenarios, no pager, default bounds, the given `access`.
pub fn app_state(
    store: std::sync::Arc<dyn medic::store::Store>,
    clock: medic::clock::Clock,
    access: medic::server::auth::Access,
) -> medic::server::AppState {
    let (_tx, readiness) = tokio::sync::watch::channel(medic::server::Readiness::default());
    medic::server::AppState {
        store,
        clock,
        readiness,
        reload: None,
        scenarios: tokio::sync::watch::channel(Vec::new()).1,
        pager: tokio::sync::watch::channel(None).1,
        access: std::sync::Arc::new(access.into()),
        alerts: Default::default(),
        jobs: Default::default(),
        console: Default::default(),
    }
}

/// [`app_state`] with reads open (no token).
pub fn open_reads_state(
    store: std::sync::Arc<dyn medic::store::Store>,
    clock: medic::clock::Clock,
) -> medic::server::AppState {
    let access = medic::server::auth::Access {
        open_reads: true,
        ..Default::default()
    };
    app_state(store, clock, access)
}
