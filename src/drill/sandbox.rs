//! `medic drill --sandbox SCENARIO`: a drill against private throwaway
//! services medic starts itself, so a new user can watch detection →
//! remediation → verification → report on a fresh machine, and the
//! project's tests can run shipped scenarios end to end.
//!
//! Everything lives in a temp dir, listens on ephemeral ports on
//! 127.0.0.1, and is stopped, reaped and deleted at the end:
//! - `redis-cache-failure`: a `redis-server`; the injection kills it.
//! - `database-failure`: a PostgreSQL primary (`initdb`) and a streaming
//!   replica (`pg_basebackup -R`); clients reach the database through a
//!   small TCP front (the `db` target, standing for the Service or DNS name
//!   applications use); the injection stops the primary the way a crash
//!   does (immediate shutdown), while a writer commits a row every 20 ms.
//! - `data-corruption`: a PostgreSQL primary with the runbook's tables;
//!   the injection inserts orphaned appointments.
//! - `application-service-failure`: a backend (busybox's `httpd` serving a
//!   health file, the `app` target); the injection kills it, the plan's
//!   restart starts it again.
//! - `monitoring-system-failure`: a Prometheus (the Debian `prometheus`
//!   binary, a minimal config scraping itself every second, its own data
//!   dir); the injection kills it (SIGKILL), the plan's restart starts it
//!   again on the same port and data dir; the data-loss probe asks it how
//!   many of the samples from before the kill it kept.
//! - `backup-failure`: a PostgreSQL with the runbook's tables, a real
//!   `postgres.backup` job into the sandbox and its `backup.verify`, run by
//!   the sandbox every 2 s; the injection inverts 64 bytes of the newest
//!   copy. The rule's plan is empty (people fix broken backups): when the
//!   incident escalates, the drill plays the paged human and takes a fresh
//!   backup by hand (a manual run, as `medic backup run`); the next
//!   verification finds it intact.
//! - `complete-infrastructure-failure`: two regions, as two sets of ports
//!   on 127.0.0.1. The primary region has a PostgreSQL primary, an app
//!   (busybox `httpd`) and a `redis-server`; the secondary region a
//!   streaming replica of that primary (the `db-secondary` target), an app
//!   and a `redis-server`. A Route 53 (`moto_server`, `pip install
//!   'moto[server]'`) holds the hosted zone `sandbox.example.` whose record
//!   `app.sandbox.example.` names the serving region: `127.0.0.1` the
//!   primary, `127.0.0.2` the secondary (the `app-dns` target). Users reach
//!   the app, the database and the cache by that name: a resolver reads
//!   the record every 250 ms, and one front per service (the `app`, `db`
//!   and `cache` targets) forwards each connection to the service of the
//!   region the record names, and refuses connections (does not listen)
//!   while that service is down. So `app_down` clears only when DNS points
//!   at a region whose app answers. The injection takes the whole primary
//!   region down at once: its PostgreSQL the way a crash does (immediate
//!   shutdown) under a writer committing every 20 ms, its app and redis
//!   SIGKILLed. The plan promotes the replica, then fails DNS over; the
//!   data-loss probe counts the acknowledged writes missing through the
//!   front, reads the record (now `127.0.0.2`) and INSERTs into the
//!   promoted secondary (not in recovery). The rule's minutes (`for: 2m`,
//!   `clear_for: 5m`, the promotion's 12 checks over 2m) become seconds.
//!
//! The shipped rule file runs in enforce mode with a generated config. What
//! the sandbox cannot have is adapted, and every adaptation is printed in
//! the report: symptoms on systems the sandbox lacks (Prometheus, the app,
//! the Kubernetes API) are dropped; `exec`/Kubernetes restarts of the broken service become an
//! `exec` that restarts the sandbox's; repointing the backend becomes
//! repointing the TCP front; checks slower than 5 s run every second;
//! `approval: required` steps are approved by the drill's operator.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::NoTls;

use super::{BoxFut, Drill, DrillError, DrillReport, LossProbe};
use crate::check::CheckSpec;
use crate::duration::Dur;
use crate::remedy::ActionSpec;
use crate::remedy::exec::ExecParams;
use crate::rules::model::{Approval, Scenario, Then};
use crate::store::Store;

#[cfg(feature = "aws")]
mod infra;

/// The scenarios the sandbox can drill.
pub const SCENARIOS: &[&str] = crate::config::SANDBOX_SCENARIOS;
/// Throwaway services: children killed and reaped, pidfiles' processes
/// killed, the directory deleted, on drop.
struct Sandbox {
    dir: PathBuf,
    children: Vec<(String, Child)>,
    pidfiles: Vec<PathBuf>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for p in &self.pidfiles {
            if let Some(pid) = std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for (_, c) in &mut self.children {
            // SIGQUIT: PostgreSQL's immediate shutdown (its children go too);
            // then SIGKILL whatever is left, and reap.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGQUIT,
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fail(e: impl std::fmt::Display) -> DrillError {
    DrillError::Failed(e.to_string())
}

fn free_port() -> Result<u16, DrillError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| fail(format!("no free port: {e}")))
}

impl Sandbox {
    fn new() -> Result<Self, DrillError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("medic-sandbox-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| fail(format!("create {}: {e}", dir.display())))?;
        Ok(Sandbox {
            dir,
            children: Vec::new(),
            pidfiles: Vec::new(),
            tasks: Vec::new(),
        })
    }

    /// Starts `name` (`command(port)`, output appended to `name.log`) on a
    /// free port and waits until `ready(port)`; returns the port. Another
    /// process may take the port between choosing and binding it: the
    /// service is then started again on a new port, at most [`PORT_TRIES`]
    /// times. When it does not come up, the error says why: it could not be
    /// spawned, or it exited (with its status), or it is still not ready
    /// after `limit`; each with the tail of its log.
    async fn start_service(
        &mut self,
        name: &str,
        limit: Duration,
        mut command: impl FnMut(u16) -> Result<Command, DrillError>,
        mut ready: impl AsyncFnMut(u16) -> bool,
    ) -> Result<u16, DrillError> {
        let path = self.dir.join(format!("{name}.log"));
        let mut taken = Vec::new();
        for _ in 0..PORT_TRIES {
            let port = free_port()?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| fail(format!("open {}: {e}", path.display())))?;
            let from = log.metadata().map_or(0, |m| m.len());
            let mut cmd = command(port)?;
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(fail)?)
                .stderr(log)
                .spawn()
                .map_err(|e| {
                    fail(format!(
                        "cannot start {name} ({:?}): {e}",
                        cmd.get_program()
                    ))
                })?;
            let pid = child.id();
            self.children.push((name.to_string(), child));
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                if let Some(status) = self.exited(pid) {
                    let tail = log_tail(&path, from);
                    if tail.to_lowercase().contains("address already in use") {
                        taken.push(port.to_string());
                        break;
                    }
                    return Err(fail(format!(
                        "{name} exited while starting on port {port} ({status}); {}",
                        says(&path, &tail)
                    )));
                }
                if ready(port).await {
                    return Ok(port);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(fail(format!(
                        "timed out after {limit:?} waiting for {name} on port {port} (still running, pid {pid}); {}",
                        says(&path, &log_tail(&path, from))
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Err(fail(format!(
            "{name} could not bind a port: {} taken by other processes in turn; {}",
            taken.join(", "),
            says(&path, &log_tail(&path, 0))
        )))
    }

    /// The exit status of our child `pid` if it has exited (then reaped and
    /// forgotten, so the drop does not signal a pid that may be reused).
    fn exited(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        let i = self.children.iter().position(|(_, c)| c.id() == pid)?;
        let status = self.children[i].1.try_wait().ok().flatten()?;
        self.children.remove(i);
        Some(status)
    }

    /// The pid of our running child `name`.
    fn pid(&self, name: &str) -> Result<u32, DrillError> {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
            .ok_or_else(|| fail(format!("the sandbox's {name} is not running")))
    }

    /// A `redis-server` (no persistence) on a free port; returns the port.
    async fn redis(&mut self, name: &str) -> Result<u16, DrillError> {
        let dir = self.dir.clone();
        self.start_service(
            name,
            Duration::from_secs(10),
            |port| {
                let argv = redis_argv(&dir, port, None);
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                Ok(c)
            },
            async |port| redis_ping(port).await,
        )
        .await
    }

    /// A backend: busybox's `httpd` on a free port serving `/health` from
    /// its own directory (`www-NAME`); returns the port and the directory.
    async fn httpd(&mut self, name: &str) -> Result<(u16, PathBuf), DrillError> {
        let busybox = busybox()?;
        let www = self.dir.join(format!("www-{name}"));
        std::fs::create_dir_all(&www).map_err(fail)?;
        std::fs::write(www.join("health"), format!("ok ({name})\n")).map_err(fail)?;
        let port = self
            .start_service(
                name,
                Duration::from_secs(10),
                |port| {
                    let mut c = Command::new(busybox);
                    c.args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
                        .arg(&www);
                    Ok(c)
                },
                async |port| http_ok(port).await,
            )
            .await?;
        Ok((port, www))
    }
}

/// `redis-server` serving `port` (no persistence, files in `dir`), as a
/// daemon writing `pidfile` when given.
fn redis_argv(dir: &Path, port: u16, pidfile: Option<&Path>) -> Vec<String> {
    let mut v: Vec<String> = [
        "redis-server",
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    if let Some(p) = pidfile {
        v.extend([
            "--daemonize".into(),
            "yes".into(),
            "--pidfile".into(),
            p.display().to_string(),
        ]);
    }
    v
}

/// busybox (its `httpd` is the sandbox's backend).
fn busybox() -> Result<&'static str, DrillError> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| fail("the sandbox's backend is busybox's httpd: install busybox-static"))
}

/// How many times a service is started again on a new port when another
/// process took its port between choosing and binding it.
const PORT_TRIES: usize = 5;

/// The last lines `path` got from byte `from` on.
fn log_tail(path: &Path, from: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// "its log (PATH) ends: ..." or "its log (PATH) is empty".
fn says(path: &Path, tail: &str) -> String {
    if tail.trim().is_empty() {
        format!("its log ({}) is empty", path.display())
    } else {
        format!("its log ({}) ends:\n{tail}", path.display())
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL

/// The uid/gid PostgreSQL runs as: `postgres` when we are root (it refuses
/// root), ourselves otherwise.
fn pg_user() -> Result<Option<(u32, u32)>, DrillError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    let u = nix::unistd::User::from_name("postgres")
        .map_err(fail)?
        .ok_or_else(|| fail("running as root needs a `postgres` user to run PostgreSQL as"))?;
    Ok(Some((u.uid.as_raw(), u.gid.as_raw())))
}

fn pg_cmd(bin: &Path, program: &str) -> Result<Command, DrillError> {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(bin.join(program));
    if let Some((uid, gid)) = pg_user()? {
        c.uid(uid).gid(gid);
    }
    c.env_remove("PGDATA").env("LC_ALL", "C.UTF-8");
    Ok(c)
}

fn run_ok(mut c: Command, what: &str) -> Result<(), DrillError> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(format!("{what}: cannot start {:?}: {e}", c.get_program())))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn chown_to_pg(path: &Path) -> Result<(), DrillError> {
    if let Some((uid, gid)) = pg_user()? {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(fail)?;
    }
    Ok(())
}

async fn pg_connect(port: u16) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2))
        .connect(NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

impl Sandbox {
    /// A PostgreSQL primary on a free port; returns the port.
    async fn pg_primary(&mut self, bin: &Path) -> Result<u16, DrillError> {
        let pgdir = self.dir.join("pg");
        std::fs::create_dir_all(&pgdir).map_err(fail)?;
        chown_to_pg(&pgdir)?;
        let data = pgdir.join("primary");
        let mut c = pg_cmd(bin, "initdb")?;
        c.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        run_ok(c, "initdb")?;
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 10\nmax_replication_slots = 10\nwal_log_hints = on\n\
             hot_standby = on\nfsync = off\nshared_buffers = 16MB\nmax_connections = 40\n\
             wal_sender_timeout = 5s\nwal_receiver_status_interval = 1s\n",
            pgdir.display()
        );
        append(&data.join("postgresql.conf"), &conf)?;
        self.start_service(
            "primary",
            Duration::from_secs(30),
            |port| {
                let mut c = pg_cmd(bin, "postgres")?;
                c.arg("-D").arg(&data).args(["-p", &port.to_string()]);
                Ok(c)
            },
            async |port| pg_connect(port).await.is_ok(),
        )
        .await
    }

    /// A streaming replica of the primary on `primary`; returns its port.
    async fn pg_replica(&mut self, bin: &Path, primary: u16) -> Result<u16, DrillError> {
        let data = self.dir.join("pg").join("replica");
        let mut c = pg_cmd(bin, "pg_basebackup")?;
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &primary.to_string(),
            "-U",
            "postgres",
            "-D",
        ])
        .arg(&data)
        .args(["-R", "-X", "stream", "-C", "-S", "replica1", "-c", "fast"]);
        run_ok(c, "pg_basebackup")?;
        self.start_service(
            "replica",
            Duration::from_secs(30),
            |port| {
                let mut c = pg_cmd(bin, "postgres")?;
                c.arg("-D").arg(&data).args(["-p", &port.to_string()]);
                Ok(c)
            },
            async |port| match pg_connect(port).await {
                Ok(c) => c
                    .query_opt(
                        "SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'",
                        &[],
                    )
                    .await
                    .ok()
                    .flatten()
                    .is_some(),
                Err(_) => false,
            },
        )
        .await
    }

    /// A TCP front on a free port forwarding to the port written in
    /// `upstream` (read on every new connection); returns its port.
    async fn front(&mut self, upstream: PathBuf) -> Result<u16, DrillError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
        let port = listener.local_addr().map_err(fail)?.port();
        self.tasks.push(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let to = std::fs::read_to_string(&upstream)
                    .ok()
                    .and_then(|s| s.trim().parse::<u16>().ok());
                tokio::spawn(async move {
                    let Some(to) = to else { return };
                    // Upstream down: close at once, as a dead server would.
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
        Ok(port)
    }
}

fn append(path: &Path, text: &str) -> Result<(), DrillError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| fail(format!("write {}: {e}", path.display())))
}

const CORRUPTION_SEED: &str = "
CREATE TABLE patients (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE appointments (id serial PRIMARY KEY, patient_id int NOT NULL,
    status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE prescriptions (id serial PRIMARY KEY, patient_id int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO patients (name) SELECT 'patient ' || g FROM generate_series(1, 200) g;
INSERT INTO appointments (patient_id, status)
    SELECT 1 + g % 200, 'scheduled' FROM generate_series(1, 500) g;
INSERT INTO prescriptions (patient_id) SELECT 1 + g % 200 FROM generate_series(1, 300) g;
";

// ---------------------------------------------------------------------------
// Adapting the shipped scenario to the sandbox

/// Adapts `sc` to the sandbox: keeps symptoms on `real` targets (and
/// target-less checks of kinds the sandbox can run), swaps steps with
/// `swap` (None drops the step), and says every change in the notes.
fn adapt(
    sc: &mut Scenario,
    real: &[&str],
    mut swap: impl FnMut(&crate::rules::model::Step) -> Option<Option<(ActionSpec, String)>>,
    notes: &mut Vec<String>,
) -> Result<(), DrillError> {
    let mut dropped = Vec::new();
    sc.symptoms.retain(|s| {
        let keep = !matches!(
            s.check,
            CheckSpec::Promql(_) | CheckSpec::Scrape(_) | CheckSpec::Alert(_)
        ) && s.check.target().is_none_or(|t| real.contains(&t));
        if !keep {
            dropped.push(format!("{} ({})", s.name, s.check.kind()));
        }
        keep
    });
    if !dropped.is_empty() {
        notes.push(format!(
            "symptoms on systems the sandbox lacks are not watched: {}",
            dropped.join(", ")
        ));
    }
    let names: Vec<String> = sc.symptoms.iter().map(|s| s.name.clone()).collect();
    let keep_known = |v: &mut Vec<String>| v.retain(|n| names.contains(n));
    match &mut sc.when {
        crate::rules::model::When::Any(v) | crate::rules::model::When::All(v) => keep_known(v),
    }
    if sc.when.symptoms().is_empty() {
        return Err(fail(format!(
            "the sandbox can watch none of {}'s symptoms",
            sc.name
        )));
    }
    for s in &mut sc.symptoms {
        if s.every.get() > Duration::from_secs(5) {
            notes.push(format!(
                "{} checks every 1s instead of every {}",
                s.name, s.every
            ));
            s.every = Dur::secs(1);
            s.timeout = s.timeout.min(Dur::secs(5));
        }
    }
    // The steps only an `else` reaches (from the first of them on: the
    // restore from backup) are not drilled: the sandbox has no backup.
    let branch = sc.plan.iter().position(|t| {
        sc.plan
            .iter()
            .any(|s| s.otherwise.as_deref() == Some(&*t.name))
    });
    if let Some(i) = branch {
        let gone: Vec<String> = sc.plan.drain(i..).map(|s| s.name).collect();
        notes.push(format!(
            "steps {} run only as an `else` (a restore from backup): the sandbox drills the plan before them",
            gone.join(", ")
        ));
        for st in &mut sc.plan {
            st.otherwise = None;
        }
    }
    let mut plan = Vec::new();
    for mut st in std::mem::take(&mut sc.plan) {
        match swap(&st) {
            Some(None) => notes.push(format!(
                "step {} ({}) is skipped: nothing like it in the sandbox",
                st.name,
                st.action.kind()
            )),
            Some(Some((action, why))) => {
                notes.push(format!("step {}: {why}", st.name));
                st.action = action;
                plan.push(st);
            }
            None => plan.push(st),
        }
    }
    for st in &mut plan {
        keep_known(&mut st.verify.clears);
        if st.approval.required() {
            st.approval = Approval::None;
            notes.push(format!(
                "step {} needs approval: running the drill gives it (if the step runs)",
                st.name
            ));
        }
    }
    sc.plan = plan;
    Ok(())
}

/// The injection that SIGKILLs the sandbox's process `pid`, saying `what`.
fn sigkill(pid: u32, what: &'static str) -> BoxFut<Result<String, String>> {
    Box::pin(async move {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| e.to_string())?;
        Ok(what.to_string())
    })
}

fn exec(args: Vec<String>) -> ActionSpec {
    ActionSpec::Exec(ExecParams {
        args,
        env: Default::default(),
        cwd: None,
    })
}

// ---------------------------------------------------------------------------
// The drills

/// Runs the sandbox drill of `scenario` with the rule file from
/// `rules_dir`, printing progress and the report to `out`. The drill's
/// store is `store` when given (kept), else in the sandbox (deleted).
pub async fn run(
    scenario: &str,
    rules_dir: &Path,
    store: Option<&Path>,
    out: &mut (dyn std::io::Write + Send),
) -> Result<DrillReport, DrillError> {
    if !SCENARIOS.contains(&scenario) {
        return Err(DrillError::Refused(format!(
            "the sandbox drills {}; not {scenario:?}",
            SCENARIOS.join(", ")
        )));
    }
    let rule_path = rules_dir.join(format!("{scenario}.yaml"));
    let rule_text = std::fs::read_to_string(&rule_path)
        .map_err(|e| fail(format!("read {}: {e}", rule_path.display())))?;
    let mut sb = Sandbox::new()?;
    let _ = writeln!(
        out,
        "sandbox: starting private services in {}",
        sb.dir.display()
    );
    let started = tokio::time::Instant::now();
    let bin =
        crate::jobs::pg_bin(None).unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    let mut notes = Vec::new();
    let (targets, real, inject, loss): (
        String,
        Vec<&str>,
        BoxFut<Result<String, String>>,
        LossProbe,
    );
    let dir = sb.dir.clone();
    let db = store.map_or_else(|| dir.join("medic.db"), Path::to_path_buf);
    match scenario {
        "redis-cache-failure" => {
            let port = sb.redis("redis-server").await?;
            sb.pidfiles.push(dir.join("redis.pid"));
            targets = format!("cache: {{ redis: {{ address: \"127.0.0.1:{port}\" }} }}\n");
            real = vec!["cache"];
            let restart = redis_argv(&dir, port, Some(&dir.join("redis.pid")));
            let swap_restart = move |st: &crate::rules::model::Step| match &st.action {
                ActionSpec::Exec(_)
                | ActionSpec::SystemdRestart(_)
                | ActionSpec::K8sRolloutRestart(_) => Some(Some((
                    exec(restart.clone()),
                    format!(
                        "restarts the sandbox's redis-server instead ({})",
                        st.action.kind()
                    ),
                ))),
                ActionSpec::RedisFlush(_) => None,
                _ => Some(None),
            };
            let sc = load(&rule_path, &rule_text, &targets, &dir, &db, "")?;
            let (mut sc, config) = sc;
            adapt(&mut sc, &real, swap_restart, &mut notes)?;
            redis_fill(port, 100).await.map_err(fail)?;
            inject = sigkill(
                sb.pid("redis-server")?,
                "killed redis-server (SIGKILL) holding 100 cached keys",
            );
            loss = Box::new(move || -> BoxFut<(String, Option<Duration>)> {
                Box::pin(async move {
                    match redis_count(port).await {
                        Ok(n) => (
                            format!(
                                "{} of 100 cached keys gone (a cache: the app refills it)",
                                100 - n.min(100)
                            ),
                            None,
                        ),
                        Err(e) => (format!("not measured: {e}"), None),
                    }
                })
            });
            let _ = writeln!(
                out,
                "sandbox: redis-server on 127.0.0.1:{port} ({} ms)",
                started.elapsed().as_millis()
            );
            return finish(sb, sc, config, "cache", notes, inject, loss, out).await;
        }
        "database-failure" => {
            let p1 = sb.pg_primary(&bin).await?;
            let p2 = sb.pg_replica(&bin, p1).await?;
            let upstream = dir.join("db.upstream");
            std::fs::write(&upstream, p1.to_string()).map_err(fail)?;
            std::fs::write(dir.join("replica.port"), p2.to_string()).map_err(fail)?;
            let front = sb.front(upstream.clone()).await?;
            targets = format!(
                "db: {{ postgres: {{ host: 127.0.0.1, port: {front}, user: postgres, dbname: postgres }} }}\n  \
                 db-replica: {{ postgres: {{ host: 127.0.0.1, port: {p2}, user: postgres, dbname: postgres }} }}\n"
            );
            real = vec!["db", "db-replica"];
            let repoint = vec![
                "cp".to_string(),
                dir.join("replica.port").display().to_string(),
                upstream.display().to_string(),
            ];
            let swap = move |st: &crate::rules::model::Step| {
                match &st.action {
                ActionSpec::K8sSetEnv(_) => Some(Some((
                    exec(repoint.clone()),
                    "repoints the sandbox's database front (the `db` target) at the promoted replica instead of setting DATABASE_URL".to_string(),
                ))),
                // Kept: the sandbox configures no restart method, so the
                // step is skipped on the timeline and the failover is drilled.
                ActionSpec::PostgresPromoteReplica(_) | ActionSpec::PostgresRestart(_) => None,
                _ => Some(None),
            }
            };
            let (mut sc, config) = load(&rule_path, &rule_text, &targets, &dir, &db, "")?;
            adapt(&mut sc, &real, swap, &mut notes)?;
            for st in &sc.plan {
                if let ActionSpec::PostgresRestart(_) = st.action {
                    notes.push(format!(
                        "step {} (postgres.restart) is skipped: the sandbox configures no restart method (targets.db.postgres.restart), so the drill is of the failover",
                        st.name
                    ));
                }
            }
            // The repoint ends the chain now: verified by the database
            // answering through the front again.
            if let Some(last) = sc.plan.last_mut() {
                last.then = Then::Stop;
                last.verify.clears = sc.when.symptoms().to_vec();
                last.verify.within = Dur::secs(120);
            }
            let writer = Writer::start(p1).await?;
            let w2 = writer.clone();
            let primary_pid = sb.pid("primary")? as i32;
            inject = Box::pin(async move {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(primary_pid),
                    nix::sys::signal::Signal::SIGQUIT,
                )
                .map_err(|e| e.to_string())?;
                Ok("stopped the primary the way a crash does (immediate shutdown, no checkpoint) under a writer committing every 20 ms".to_string())
            });
            loss = Box::new(move || -> BoxFut<(String, Option<Duration>)> {
                Box::pin(async move { w2.loss(front).await })
            });
            let _ = writeln!(
                out,
                "sandbox: PostgreSQL primary 127.0.0.1:{p1}, streaming replica 127.0.0.1:{p2}, front (the db target) 127.0.0.1:{front} ({} ms)",
                started.elapsed().as_millis()
            );
            let r = finish(sb, sc, config, "db", notes, inject, loss, out).await;
            writer.stop();
            r
        }
        "application-service-failure" => {
            // The backend: busybox's httpd serving a health file. Its
            // restart runs it again in a session of its own (the exec
            // action's process group ends with the action), its pid kept.
            let busybox = busybox()?;
            let (port, www) = sb.httpd("backend").await?;
            let pidfile = dir.join("backend.pid");
            sb.pidfiles.push(pidfile.clone());
            targets = format!("app: {{ http: {{ url: \"http://127.0.0.1:{port}/health\" }} }}\n");
            real = vec!["app"];
            let restart = vec![
                "setsid".to_string(),
                "sh".to_string(),
                "-c".to_string(),
                format!(
                    "{busybox} httpd -f -p 127.0.0.1:{port} -h '{}' </dev/null >/dev/null 2>&1 & echo $! > '{}'",
                    www.display(),
                    pidfile.display()
                ),
            ];
            let swap = move |st: &crate::rules::model::Step| match &st.action {
                ActionSpec::Exec(_)
                | ActionSpec::SystemdRestart(_)
                | ActionSpec::K8sRolloutRestart(_)
                | ActionSpec::DockerRestart(_) => Some(Some((
                    exec(restart.clone()),
                    format!(
                        "starts the sandbox's backend (busybox httpd) again instead ({})",
                        st.action.kind()
                    ),
                ))),
                _ => Some(None),
            };
            let (mut sc, config) = load(&rule_path, &rule_text, &targets, &dir, &db, "")?;
            adapt(&mut sc, &real, swap, &mut notes)?;
            inject = sigkill(
                sb.pid("backend")?,
                "killed the backend (SIGKILL): its health URL refuses connections",
            );
            loss = Box::new(move || -> BoxFut<(String, Option<Duration>)> {
                Box::pin(async move {
                    let back = if http_ok(port).await {
                        "answers again"
                    } else {
                        "does not answer"
                    };
                    (
                        format!("no data at stake: a stateless backend, which {back}"),
                        None,
                    )
                })
            });
            let _ = writeln!(
                out,
                "sandbox: backend (busybox httpd) on 127.0.0.1:{port} ({} ms)",
                started.elapsed().as_millis()
            );
            return finish(sb, sc, config, "app", notes, inject, loss, out).await;
        }
        "monitoring-system-failure" => {
            // A private Prometheus scraping itself every second. Its
            // restart runs it again, same port and data directory (the
            // TSDB replays its WAL), in a session of its own, pid kept.
            let prometheus = on_path("prometheus").ok_or_else(|| {
                fail("the monitoring drill runs a private Prometheus: `prometheus` is not on PATH (install the Debian package `prometheus`)")
            })?;
            let conf = dir.join("prometheus.yml");
            let data = dir.join("prometheus-data");
            let args = |port: u16| -> Vec<String> {
                vec![
                    format!("--config.file={}", conf.display()),
                    format!("--storage.tsdb.path={}", data.display()),
                    format!("--web.listen-address=127.0.0.1:{port}"),
                ]
            };
            let port = sb
                .start_service(
                    "prometheus",
                    Duration::from_secs(30),
                    |port| {
                        std::fs::write(
                            &conf,
                            format!(
                                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                                 scrape_configs:\n  - job_name: self\n    static_configs: [{{ targets: [\"127.0.0.1:{port}\"] }}]\n"
                            ),
                        )
                        .map_err(|e| fail(format!("write {}: {e}", conf.display())))?;
                        let mut c = Command::new(&prometheus);
                        c.args(args(port));
                        Ok(c)
                    },
                    async |port| prometheus_ready(port).await,
                )
                .await?;
            let pidfile = dir.join("prometheus.pid");
            sb.pidfiles.push(pidfile.clone());
            targets =
                format!("prometheus: {{ prometheus: {{ url: \"http://127.0.0.1:{port}\" }} }}\n");
            real = vec!["prometheus"];
            let log = dir.join("prometheus.log");
            let restart = vec![
                "setsid".to_string(),
                "sh".to_string(),
                "-c".to_string(),
                format!(
                    "'{}' {} </dev/null >>'{}' 2>&1 & echo $! > '{}'",
                    prometheus.display(),
                    args(port)
                        .iter()
                        .map(|a| format!("'{a}'"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    log.display(),
                    pidfile.display()
                ),
            ];
            let swap = move |st: &crate::rules::model::Step| match &st.action {
                ActionSpec::Exec(_)
                | ActionSpec::SystemdRestart(_)
                | ActionSpec::K8sRolloutRestart(_)
                | ActionSpec::DockerRestart(_) => Some(Some((
                    exec(restart.clone()),
                    format!(
                        "starts the sandbox's Prometheus again instead ({}), same port and data directory",
                        st.action.kind()
                    ),
                ))),
                _ => Some(None),
            };
            let (mut sc, config) = load(&rule_path, &rule_text, &targets, &dir, &db, "")?;
            adapt(&mut sc, &real, swap, &mut notes)?;
            let pid = sb.pid("prometheus")? as i32;
            // Some scrapes stored first, so the kill has something to lose.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let now = Utc::now().timestamp_millis() as f64 / 1000.0;
                match prometheus_samples(port, now).await {
                    Ok(n) if n >= 3 => break,
                    Ok(n) if tokio::time::Instant::now() >= deadline => {
                        return Err(fail(format!(
                            "the sandbox's Prometheus on 127.0.0.1:{port} stored {n} scrapes of itself in 20 s (scraping every second); {}",
                            says(&log, &log_tail(&log, 0))
                        )));
                    }
                    Err(e) if tokio::time::Instant::now() >= deadline => return Err(fail(e)),
                    _ => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
            // What Prometheus held before the kill, to compare after.
            let before = Arc::new(std::sync::Mutex::new(None::<(f64, u64)>));
            let b2 = before.clone();
            inject = Box::pin(async move {
                let at = Utc::now().timestamp_millis() as f64 / 1000.0;
                let n = prometheus_samples(port, at).await?;
                *b2.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, n));
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .map_err(|e| e.to_string())?;
                Ok(format!(
                    "killed Prometheus (SIGKILL) holding {n} samples of its own `up`: /-/ready refuses connections"
                ))
            });
            loss = Box::new(move || -> BoxFut<(String, Option<Duration>)> {
                Box::pin(async move {
                    let Some((at, n)) = *before.lock().unwrap_or_else(|p| p.into_inner()) else {
                        return ("not measured: the injection did not run".to_string(), None);
                    };
                    match prometheus_samples(port, at).await {
                        Ok(kept) if kept >= n => (
                            format!(
                                "all {n} samples scraped before the kill kept (WAL replayed); no scrapes while it was down: a gap in the metrics"
                            ),
                            None,
                        ),
                        Ok(kept) => (
                            format!(
                                "{} of {n} samples scraped before the kill lost; no scrapes while it was down: a gap in the metrics",
                                n - kept
                            ),
                            None,
                        ),
                        Err(e) => (format!("not measured: {e}"), None),
                    }
                })
            });
            let _ = writeln!(
                out,
                "sandbox: Prometheus on 127.0.0.1:{port}, scraping itself every second ({} ms)",
                started.elapsed().as_millis()
            );
            return finish(sb, sc, config, "prometheus", notes, inject, loss, out).await;
        }
        "backup-failure" => {
            // A PostgreSQL with the runbook's tables, a real nightly
            // `postgres.backup` into the sandbox and the `backup.verify`
            // job the rule's `backup` check reads, run every 2 s.
            let p1 = sb.pg_primary(&bin).await?;
            let c = pg_connect(p1).await.map_err(fail)?;
            c.batch_execute(CORRUPTION_SEED).await.map_err(fail)?;
            let backups = dir.join("backups");
            let state = dir.join("backup-verify.json");
            let js = |p: &Path| serde_json::Value::from(p.display().to_string());
            let jobs = format!(
                "jobs:\n  db-backup:\n    schedule: \"0 2 * * *\"\n    \
                 postgres.backup: {{ target: db, directory: {}, pg_bin: {} }}\n  \
                 backup-verify:\n    schedule: \"0 3 * * SUN\"\n    \
                 backup.verify: {{ backup: db-backup, rpo: 24h, state: {} }}\n",
                js(&backups),
                js(&bin),
                js(&state)
            );
            targets = format!(
                "db: {{ postgres: {{ host: 127.0.0.1, port: {p1}, user: postgres, dbname: postgres }} }}\n"
            );
            real = vec!["db"];
            let (mut sc, config) = load(&rule_path, &rule_text, &targets, &dir, &db, &jobs)?;
            adapt(&mut sc, &real, |_| None, &mut notes)?;
            notes.push(
                "backup-verify runs every 2s instead of weekly (its schedule 0 3 * * SUN)"
                    .to_string(),
            );
            if sc.plan.is_empty() {
                notes.push("the plan is empty (the rule leaves the fix to people): paged, the drill's operator takes a fresh backup by hand, as `medic backup run db-backup` does".to_string());
            }
            let store = open_store(&config).await?;
            let clock = crate::clock::Clock::system();
            let job = |name: &str| -> Result<Arc<dyn crate::jobs::Job>, DrillError> {
                let jc = config
                    .jobs
                    .get(name)
                    .ok_or_else(|| fail(format!("no job {name} in the sandbox's config")))?;
                crate::jobs::build(name, jc, &config).map_err(|e| fail(format!("job {name}: {e}")))
            };
            let (backup, verify) = (job("db-backup")?, job("backup-verify")?);
            for (name, j) in [("db-backup", &backup), ("backup-verify", &verify)] {
                let r = crate::jobs::run_once(
                    &store,
                    &clock,
                    name,
                    j,
                    clock.now(),
                    Duration::from_secs(120),
                )
                .await
                .map_err(|e| fail(format!("job {name}: {e}")))?;
                if r.outcome != Some(crate::store::JobOutcome::Succeeded) {
                    return Err(fail(format!(
                        "the sandbox's first {name} run failed: {}",
                        r.summary
                    )));
                }
            }
            let newest = newest_copy(&store).await?;
            let _ = writeln!(
                out,
                "sandbox: nightly backup taken and verified: {}",
                newest.display()
            );
            {
                let (store, clock) = (store.clone(), clock.clone());
                sb.tasks.push(tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        if let Err(e) = crate::jobs::run_once(&store, &clock, "backup-verify", &verify, clock.now(), Duration::from_secs(60)).await {
                            tracing::warn!(error = %e, "the sandbox's backup-verify run could not be recorded");
                        }
                    }
                }));
            }
            let file = backups.join(&newest);
            inject = Box::pin(async move { flip_bytes(&file) });
            let manual = Arc::new(crate::jobs::Manual::default());
            manual.set(&config);
            let responder: BoxFut<Result<String, String>> = {
                let (store, clock, state) = (store.clone(), clock.clone(), state.clone());
                Box::pin(async move {
                    // What the page sends people to: the verification's finding.
                    let found = read_verify_state(&state)?;
                    let started = manual
                        .start("db-backup", "the drill's operator (paged)", &store, &clock)
                        .await
                        .map_err(|e| e.to_string())?;
                    let run = started
                        .task
                        .await
                        .map_err(|e| format!("the backup run stopped: {e}"))?
                        .map_err(|e| e.to_string())?;
                    match run.outcome {
                        Some(crate::store::JobOutcome::Succeeded) => Ok(format!(
                            "read backup-verify's finding ({}) and took a fresh backup by hand (medic backup run db-backup): {}",
                            if found.problems.is_empty() {
                                "no problem".to_string()
                            } else {
                                found.problems.join("; ")
                            },
                            run.summary
                        )),
                        _ => Err(format!("the fresh backup failed: {}", run.summary)),
                    }
                })
            };
            let damaged = newest.clone();
            let damaged_path = backups.join(&newest);
            loss = Box::new(move || -> BoxFut<(String, Option<Duration>)> {
                Box::pin(async move {
                    let st = match read_verify_state(&state) {
                        Ok(st) => st,
                        Err(e) => return (format!("not measured: {e}"), None),
                    };
                    match (st.problems.is_empty(), st.newest_taken_at) {
                        (true, Some(at)) => {
                            let window = (Utc::now() - at).to_std().unwrap_or(Duration::ZERO);
                            (
                                format!(
                                    "no data lost (the database was never touched); the damaged copy {} {}, the newest copy {} is verified intact: a restore now would lose the last {:.3} s of writes",
                                    damaged.display(),
                                    if damaged_path.exists() {
                                        "stays for people to look at"
                                    } else {
                                        "was deleted"
                                    },
                                    st.newest.as_deref().unwrap_or("?"),
                                    window.as_secs_f64()
                                ),
                                Some(window),
                            )
                        }
                        _ => (
                            format!("no intact backup at the end: {}", st.problems.join("; ")),
                            None,
                        ),
                    }
                })
            });
            let _ = writeln!(
                out,
                "sandbox: PostgreSQL 127.0.0.1:{p1} with patients, appointments, prescriptions; backups in {} ({} ms)",
                backups.display(),
                started.elapsed().as_millis()
            );
            return finish_with(
                sb,
                sc,
                config,
                "db-backup",
                notes,
                inject,
                loss,
                out,
                store,
                Some(responder),
            )
            .await;
        }
        "complete-infrastructure-failure" => {
            #[cfg(feature = "aws")]
            return infra::run(sb, &rule_path, &rule_text, &bin, &db, out).await;
            #[cfg(not(feature = "aws"))]
            return Err(DrillError::Refused(
                crate::features::Feature::Aws
                    .needed_by("the sandbox's complete-infrastructure-failure drill (Route 53)"),
            ));
        }
        _ => {
            let p1 = sb.pg_primary(&bin).await?;
            let c = pg_connect(p1).await.map_err(fail)?;
            c.batch_execute(CORRUPTION_SEED).await.map_err(fail)?;
            targets = format!(
                "db: {{ postgres: {{ host: 127.0.0.1, port: {p1}, user: postgres, dbname: postgres }} }}\n"
            );
            real = vec!["db"];
            let (mut sc, config) = load(&rule_path, &rule_text, &targets, &dir, &db, "")?;
            adapt(&mut sc, &real, |_| None, &mut notes)?;
            inject = Box::pin(async move {
                let c = pg_connect(p1).await?;
                c.batch_execute(
                    "INSERT INTO appointments (patient_id, status) SELECT 100000 + g, 'scheduled' FROM generate_series(1, 25) g",
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok(
                    "inserted 25 appointments of patients that do not exist (orphaned rows)"
                        .to_string(),
                )
            });
            loss = Box::new(move || -> BoxFut<(String, Option<Duration>)> {
                Box::pin(async move {
                    let r: Result<(i64, i64), String> = async {
                        let c = pg_connect(p1).await?;
                        let good = c
                            .query_one("SELECT count(*) FROM appointments", &[])
                            .await
                            .map_err(|e| e.to_string())?
                            .get(0);
                        let kept = c
                            .query_one("SELECT count(*) FROM corrupted_appointments", &[])
                            .await
                            .map_err(|e| e.to_string())?
                            .get(0);
                        Ok((good, kept))
                    }
                    .await;
                    match r {
                        Ok((good, kept)) => (
                            format!(
                                "{} of 500 good appointments lost; {kept} corrupted rows moved to corrupted_appointments (kept for review)",
                                500 - good.min(500)
                            ),
                            Some(Duration::ZERO).filter(|_| good >= 500),
                        ),
                        Err(e) => (format!("not measured: {e}"), None),
                    }
                })
            });
            let _ = writeln!(
                out,
                "sandbox: PostgreSQL 127.0.0.1:{p1} with patients, appointments, prescriptions ({} ms)",
                started.elapsed().as_millis()
            );
            return finish(sb, sc, config, "db", notes, inject, loss, out).await;
        }
    }
}

/// Loads the rule file with a generated enforce-mode config around the
/// sandbox's targets (placeholders for the targets the rule names but the
/// sandbox lacks: never contacted, their symptoms and steps are dropped).
fn load(
    path: &Path,
    text: &str,
    targets: &str,
    dir: &Path,
    db: &Path,
    extra: &str,
) -> Result<(Scenario, crate::config::Config), DrillError> {
    // Placeholders for the targets the rule names and the sandbox lacks.
    let placeholders: String = [
        ("app", "{ http: { url: \"http://127.0.0.1:9/health\" } }"),
        (
            "prometheus",
            "{ prometheus: { url: \"http://127.0.0.1:9\" } }",
        ),
        (
            "backend",
            "{ kubernetes: { kind: Deployment, name: backend, namespace: sandbox } }",
        ),
        (
            "db-restore",
            "{ postgres: { host: 127.0.0.1, port: 9, user: postgres, dbname: postgres } }",
        ),
    ]
    .into_iter()
    .filter(|(name, _)| {
        !targets
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{name}:")))
    })
    .map(|(name, t)| format!("  {name}: {t}\n"))
    .collect();
    // The drill's own jobs (`extra`: the backup-failure drill's real
    // backup), else the backup job the restore steps name (never run:
    // those drills run no jobs), where the sandbox has a database.
    let jobs = if !extra.is_empty() {
        extra
    } else if targets.lines().any(|l| l.trim_start().starts_with("db:")) {
        "jobs:\n  db-backup:\n    schedule: '0 2 * * *'\n    postgres.backup: { target: db, directory: backups }\n"
    } else {
        ""
    };
    let yaml = format!(
        "mode: enforce\nrules: [rules]\nstore: {{ sqlite: {{ path: {} }} }}\nshutdown_grace: 5s\ntargets:\n  {targets}{placeholders}{jobs}",
        // A JSON string is a YAML string: any path stays one scalar.
        serde_json::Value::from(db.display().to_string())
    );
    let mut config = crate::config::load_str("sandbox.yaml", &yaml)
        .map_err(|d| fail(format!("sandbox config: {d:?}")))?;
    config.base_dir = dir.to_path_buf();
    let sc = crate::rules::load_str(&path.display().to_string(), text, &config).map_err(|d| {
        fail(
            d.0.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    Ok((sc, config))
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    sb: Sandbox,
    sc: Scenario,
    config: crate::config::Config,
    target: &str,
    notes: Vec<String>,
    inject: BoxFut<Result<String, String>>,
    loss: LossProbe,
    out: &mut (dyn std::io::Write + Send),
) -> Result<DrillReport, DrillError> {
    let store = open_store(&config).await?;
    finish_with(
        sb, sc, config, target, notes, inject, loss, out, store, None,
    )
    .await
}

async fn open_store(config: &crate::config::Config) -> Result<Arc<dyn Store>, DrillError> {
    crate::daemon::open_store(config)
        .await
        .map_err(|e| fail(format!("the drill's store: {e:#}")))
}

/// [`finish`] with the store opened already (the sandbox's jobs record
/// their runs in it) and a `responder`: what the paged human does when
/// the incident escalates.
#[allow(clippy::too_many_arguments)]
async fn finish_with(
    sb: Sandbox,
    sc: Scenario,
    config: crate::config::Config,
    target: &str,
    notes: Vec<String>,
    inject: BoxFut<Result<String, String>>,
    loss: LossProbe,
    out: &mut (dyn std::io::Write + Send),
    store: Arc<dyn Store>,
    responder: Option<BoxFut<Result<String, String>>>,
) -> Result<DrillReport, DrillError> {
    let drill = Drill {
        config,
        scenario: sc,
        target: format!("{target} (sandbox)"),
        store,
        wait: Duration::from_secs(180),
        notes,
        responder,
    };
    let r = drill.run(inject, Some(loss), out).await;
    drop(sb);
    r
}

// ---------------------------------------------------------------------------
// Probes

async fn redis_client(port: u16) -> Result<redis::aio::MultiplexedConnection, String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| "timeout".to_string())?
    .map_err(|e| e.to_string())
}

/// `name` found in a directory of `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Whether the sandbox's Prometheus says it is ready.
async fn prometheus_ready(port: u16) -> bool {
    get_ok(&format!("http://127.0.0.1:{port}/-/ready")).await
}

/// How many samples of its own `up` the sandbox's Prometheus holds from
/// the hour before unix time `at`.
async fn prometheus_samples(port: u16, at: f64) -> Result<u64, String> {
    let url = reqwest::Url::parse_with_params(
        &format!("http://127.0.0.1:{port}/api/v1/query"),
        &[
            ("query", "count_over_time(up{job=\"self\"}[1h])"),
            ("time", &format!("{at:.3}")),
        ],
    )
    .map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let body: serde_json::Value = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("Prometheus on 127.0.0.1:{port}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("Prometheus on 127.0.0.1:{port}: {e}"))?;
    let value = &body["data"]["result"][0]["value"][1];
    match value.as_str().and_then(|v| v.parse::<f64>().ok()) {
        Some(n) => Ok(n as u64),
        // No series: nothing scraped in that hour.
        None if body["data"]["result"]
            .as_array()
            .is_some_and(|r| r.is_empty()) =>
        {
            Ok(0)
        }
        None => Err(format!(
            "Prometheus on 127.0.0.1:{port} answered the sample count with {body}"
        )),
    }
}

/// The file of the newest successful `db-backup` run the store recorded.
async fn newest_copy(store: &Arc<dyn Store>) -> Result<PathBuf, DrillError> {
    let runs = store
        .job_runs("db-backup", 10)
        .await
        .map_err(|e| fail(format!("store: {e}")))?;
    runs.iter()
        .filter(|r| r.outcome == Some(crate::store::JobOutcome::Succeeded))
        .find_map(|r| {
            r.data
                .get("file")
                .and_then(|f| f.as_str())
                .map(PathBuf::from)
        })
        .ok_or_else(|| fail("the sandbox's db-backup recorded no file"))
}

/// The state the sandbox's `backup.verify` job wrote at `path`.
fn read_verify_state(path: &Path) -> Result<crate::check::backup::VerifyState, String> {
    let text = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The backup-failure injection: inverts 64 bytes in the middle of the
/// copy at `path` (its size stays; its sha256 and its archive do not).
fn flip_bytes(path: &Path) -> Result<String, String> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let size = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let at = size / 2;
    let mut buf = vec![0u8; 64.min(size.saturating_sub(at)) as usize];
    let io = |e: std::io::Error| format!("corrupt {}: {e}", path.display());
    f.seek(SeekFrom::Start(at)).map_err(io)?;
    f.read_exact(&mut buf).map_err(io)?;
    for b in &mut buf {
        *b = !*b;
    }
    f.seek(SeekFrom::Start(at)).map_err(io)?;
    f.write_all(&buf).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(format!(
        "inverted {} bytes at offset {at} of the newest backup {} ({size} bytes)",
        buf.len(),
        path.display()
    ))
}

/// Whether the sandbox's backend answers its health URL with a success.
async fn http_ok(port: u16) -> bool {
    get_ok(&format!("http://127.0.0.1:{port}/health")).await
}

/// Whether `url` answers a GET with a success.
async fn get_ok(url: &str) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return false;
    };
    client
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn redis_ping(port: u16) -> bool {
    match redis_client(port).await {
        Ok(mut c) => redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok(),
        Err(_) => false,
    }
}

async fn redis_fill(port: u16, n: usize) -> Result<(), String> {
    let mut c = redis_client(port).await?;
    for i in 0..n {
        redis::cmd("SET")
            .arg(format!("patient:{i}"))
            .arg("cached")
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn redis_count(port: u16) -> Result<usize, String> {
    let mut c = redis_client(port).await?;
    redis::cmd("DBSIZE")
        .query_async::<usize>(&mut c)
        .await
        .map_err(|e| e.to_string())
}

/// The newest acknowledged write: its id and commit time.
type Acked = (i64, DateTime<Utc>);

/// Commits a timestamped row every 20 ms on the primary until it fails:
/// what a client saw acknowledged, to compare with what survived.
#[derive(Clone)]
struct Writer {
    last_acked: Arc<std::sync::Mutex<Option<Acked>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Writer {
    async fn start(port: u16) -> Result<Writer, DrillError> {
        let c = pg_connect(port).await.map_err(fail)?;
        c.batch_execute("CREATE TABLE drill_writes (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
            .await
            .map_err(fail)?;
        let last_acked = Arc::new(std::sync::Mutex::new(None));
        let acked = last_acked.clone();
        let task = tokio::spawn(async move {
            loop {
                match c
                    .query_one(
                        "INSERT INTO drill_writes DEFAULT VALUES RETURNING id, at",
                        &[],
                    )
                    .await
                {
                    Ok(r) => {
                        *acked.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((r.get(0), r.get(1)))
                    }
                    Err(_) => return,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Ok(Writer {
            last_acked,
            task: Arc::new(task),
        })
    }

    fn stop(&self) {
        self.task.abort();
    }

    /// What the database behind `front` kept of what was acknowledged.
    async fn loss(&self, front: u16) -> (String, Option<Duration>) {
        let acked = *self.last_acked.lock().unwrap_or_else(|p| p.into_inner());
        let Some((acked_id, acked_at)) = acked else {
            return ("not measured: no write was acknowledged".into(), None);
        };
        let row = match pg_connect(front).await {
            Ok(c) => {
                c.query_one(
                    "SELECT count(*), max(id), max(at) FROM drill_writes WHERE id <= $1",
                    &[&acked_id],
                )
                .await
            }
            Err(e) => return (format!("not measured: {e}"), None),
        };
        match row {
            Ok(r) => {
                let kept: i64 = r.get(0);
                let newest: Option<DateTime<Utc>> = r.get(2);
                let window = newest.map_or(Duration::MAX, |n| {
                    (acked_at - n).to_std().unwrap_or(Duration::ZERO)
                });
                (
                    format!(
                        "{} of {acked_id} acknowledged writes lost (window {:.3} s)",
                        acked_id - kept,
                        window.as_secs_f64()
                    ),
                    Some(window),
                )
            }
            Err(e) => (format!("not measured: {e}"), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[tokio::test]
    async fn a_service_that_exits_at_start_says_its_status_and_its_last_words() {
        let mut sb = Sandbox::new().unwrap();
        let e = sb
            .start_service(
                "broken",
                Duration::from_secs(5),
                |_| Ok(sh("echo starting; echo 'FATAL: no such file' >&2; exit 3")),
                async |_| false,
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("broken exited while starting on port "), "{e}");
        assert!(e.contains("(exit status: 3)"), "{e}");
        assert!(e.contains("ends:\nstarting\nFATAL: no such file"), "{e}");
        assert!(sb.children.is_empty(), "the dead child is forgotten");
    }

    #[tokio::test]
    async fn a_service_not_ready_in_time_says_so_with_its_log() {
        let mut sb = Sandbox::new().unwrap();
        let e = sb
            .start_service(
                "slow",
                Duration::from_millis(300),
                |_| Ok(sh("echo still loading >&2; exec sleep 30")),
                async |_| false,
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("timed out after 300ms waiting for slow on port "),
            "{e}"
        );
        assert!(e.contains("(still running, pid "), "{e}");
        assert!(e.contains("ends:\nstill loading"), "{e}");
    }

    #[tokio::test]
    async fn a_port_taken_between_choosing_and_binding_is_retried_on_a_new_one() {
        let mut sb = Sandbox::new().unwrap();
        let up = sb.dir.join("up");
        let mut ports = Vec::new();
        let port = sb
            .start_service(
                "racy",
                Duration::from_secs(5),
                |port| {
                    ports.push(port);
                    Ok(if ports.len() < 3 {
                        sh("echo 'bind: Address already in use' >&2; exit 1")
                    } else {
                        sh(&format!("touch {}; exec sleep 30", up.display()))
                    })
                },
                async |_| up.exists(),
            )
            .await
            .unwrap();
        assert_eq!(ports.len(), 3, "{ports:?}");
        assert_eq!(port, ports[2]);
        assert_eq!(sb.children.len(), 1);

        // Always taken: it gives up after PORT_TRIES, naming the ports.
        let e = sb
            .start_service(
                "unlucky",
                Duration::from_secs(5),
                |_| Ok(sh("echo 'Address already in use' >&2; exit 1")),
                async |_| false,
            )
            .await
            .unwrap_err()
            .to_string();
        let taken = e
            .strip_prefix("unlucky could not bind a port: ")
            .and_then(|rest| rest.split_once(" taken by other processes in turn;"))
            .unwrap_or_else(|| panic!("{e}"))
            .0;
        assert_eq!(taken.split(", ").count(), PORT_TRIES, "{e}");
    }
}
