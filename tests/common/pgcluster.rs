//! (Used by the remediation tests through `#[path]`; not part of `common`.)
//! A real PostgreSQL primary with streaming replicas, private to one test:
//! its own data directories, ephemeral ports on 127.0.0.1, trust auth.
//!
//! Each server is `postgres -D DIR` run directly as a child of the test
//! (through `setpriv` to the `postgres` user when the test runs as root), so
//! the test can SIGKILL it and reap it: nothing lingers as a zombie, and
//! `kill -9` of the primary is exactly that. Everything is stopped and
//! waited on when the cluster is dropped.
//!
//! Self-contained on purpose (include it with `#[path]`); the lead merges
//! it with the other harnesses.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The newest installed PostgreSQL's bin directory.
pub fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL must be installed (scripts/test.sh installs it)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server in /usr/lib/postgresql")
        .1
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A command run as the `postgres` user when the test runs as root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One server.
pub struct PgNode {
    pub name: String,
    pub port: u16,
    pub data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl PgNode {
    /// Starts `postgres -D data` and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = as_postgres(&bin_dir().join("postgres"));
        c.arg("-D")
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(c.spawn().expect("start postgres"));
        self.wait_ready(Duration::from_secs(30));
    }

    fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            let ok = Command::new(bin_dir().join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                panic!(
                    "{} exited ({status}) while starting:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < limit,
                "{} not ready within {limit:?}:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL the postmaster, then reap it. Its backends notice their
    /// postmaster's death and exit on their own.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A fast shutdown (SIGINT), waited on.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Runs SQL with psql; the unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(bin_dir().join("psql"))
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// psql that must work.
    pub fn sql(&self, sql: &str) -> String {
        self.psql(sql)
            .unwrap_or_else(|e| panic!("{} on {}: {e}", sql, self.name))
    }

    pub fn in_recovery(&self) -> bool {
        self.sql("SELECT pg_is_in_recovery()") == "t"
    }

    /// Appends settings to postgresql.auto.conf (read at the next start or
    /// reload).
    pub fn configure(&self, lines: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.auto.conf"))
            .unwrap();
        writeln!(f, "{lines}").unwrap();
    }

    /// The config target for medic.
    pub fn target_yaml(&self) -> String {
        format!(
            "{{ postgres: {{ host: 127.0.0.1, port: {}, user: postgres, dbname: postgres }} }}",
            self.port
        )
    }
}

impl Drop for PgNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A primary and its streaming replicas.
pub struct PgCluster {
    pub dir: tempfile::TempDir,
    pub primary: PgNode,
    pub replicas: Vec<PgNode>,
}

impl PgCluster {
    /// initdb a primary, start it, and add `replicas` streaming replicas
    /// (each with its own replication slot), all started.
    pub fn start(replicas: usize) -> PgCluster {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(dir.path());
                    c
                },
                "chown the cluster directory",
            );
        }
        let bin = bin_dir();
        let primary_dir = dir.path().join("primary");
        let mut c = as_postgres(&bin.join("initdb"));
        c.arg("-D")
            .arg(&primary_dir)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--data-checksums",
                "-E",
                "UTF8",
            ])
            .args(["--locale=C"]);
        run(c, "initdb");
        let port = free_port();
        let mut primary = PgNode {
            name: "primary".into(),
            port,
            data: primary_dir,
            log: dir.path().join("primary.log"),
            child: None,
        };
        primary.configure(&format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 10\nmax_replication_slots = 10\n\
             wal_log_hints = on\nhot_standby = on\nfsync = off\n\
             wal_receiver_status_interval = 1s\nwal_retrieve_retry_interval = 1s",
            dir.path().display()
        ));
        primary.start();
        let mut cluster = PgCluster {
            dir,
            primary,
            replicas: Vec::new(),
        };
        for i in 0..replicas {
            cluster.add_replica(&format!("replica{}", i + 1));
        }
        cluster
    }

    /// pg_basebackup -R with a slot, then start it streaming.
    pub fn add_replica(&mut self, name: &str) -> &mut PgNode {
        let data = self.dir.path().join(name);
        let mut c = as_postgres(&bin_dir().join("pg_basebackup"));
        c.args(["-h", "127.0.0.1", "-p", &self.primary.port.to_string()])
            .args(["-U", "postgres", "-D"])
            .arg(&data)
            .args(["-R", "-X", "stream", "-C", "-S", name, "-c", "fast"]);
        run(c, "pg_basebackup");
        let port = free_port();
        let mut node = PgNode {
            name: name.into(),
            port,
            data,
            log: self.dir.path().join(format!("{name}.log")),
            child: None,
        };
        node.configure(&format!("port = {port}"));
        node.start();
        self.replicas.push(node);
        self.replicas.last_mut().unwrap()
    }

    /// Waits until every running replica has replayed the primary's
    /// current WAL position.
    pub fn wait_caught_up(&self, limit: Duration) {
        let target = self.primary.sql("SELECT pg_current_wal_lsn()");
        let start = Instant::now();
        for r in self.replicas.iter().filter(|r| r.running()) {
            loop {
                let behind = r.sql(&format!(
                    "SELECT pg_wal_lsn_diff('{target}', pg_last_wal_replay_lsn()) > 0"
                ));
                if behind == "f" {
                    break;
                }
                assert!(
                    start.elapsed() < limit,
                    "{} did not catch up to {target}",
                    r.name
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn replica(&self, name: &str) -> &PgNode {
        self.replicas.iter().find(|r| r.name == name).unwrap()
    }
}
