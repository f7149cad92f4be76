//! Private PostgreSQL clusters for tests: a primary and, optionally, a
//! streaming replica, each a `postgres` process that is this test's own
//! child, on ephemeral ports on 127.0.0.1, with data and sockets in a temp
//! dir. Dropping a [`Pg`] stops both with an immediate shutdown and reaps
//! them.
//!
//! Speed: `initdb` runs once per machine (a template cached under
//! `CARGO_TARGET_TMPDIR`, rebuilt when missing); each cluster is a copy of
//! it. Test clusters run with `fsync = off`. A primary starts in about
//! 0.3 s, a replica (pg_basebackup + start + streaming) in about 1 s more.
//!
//! As root (CI, these machines) every PostgreSQL program runs as the
//! `postgres` user (PostgreSQL refuses root): the child is started with
//! that uid directly, so the postmaster is our child and not a wrapper's.
//! The binaries come from `/usr/lib/postgresql/15/bin`, or from
//! `$MEDIC_PG_BIN` when set.
//!
//! Authentication: trust on 127.0.0.1 and the socket, except the role
//! [`PASSWORD_ROLE`], which must give a password (scram-sha-256), so tests
//! can cover authentication failures.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::free_port;

/// The role that must authenticate with a password (all others: trust).
pub const PASSWORD_ROLE: &str = "medic_pw";

/// Where the PostgreSQL server programs are.
pub fn pg_bin() -> PathBuf {
    std::env::var_os("MEDIC_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// The uid and gid to run PostgreSQL as: `postgres` when we are root,
/// nobody else (None) otherwise.
fn run_as() -> Option<(u32, u32)> {
    static IDS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *IDS.get_or_init(|| {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the effective user.
        if std::fs::metadata("/proc/self").ok()?.uid() != 0 {
            return None;
        }
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, "postgres"]).output().ok();
            out.filter(|o| o.status.success())
                .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                .expect(
                    "running as root needs a `postgres` user (the postgresql package creates it)",
                )
        };
        Some((id("-u"), id("-g")))
    })
}

/// A command for a PostgreSQL program, as the right user.
fn pg_command(program: &str) -> Command {
    let mut c = Command::new(pg_bin().join(program));
    if let Some((uid, gid)) = run_as() {
        c.uid(uid).gid(gid);
    }
    c.env_remove("PGDATA").env("LC_ALL", "C.UTF-8");
    c
}

/// Runs a command to completion; panics with its output on failure.
fn run(mut c: Command, what: &str) -> String {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {:?}: {e}", c.get_program()));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Hands `path` (recursively) to the user PostgreSQL runs as.
fn give_to_pg(path: &Path) {
    if let Some((uid, gid)) = run_as() {
        let mut c = Command::new("chown");
        c.arg("-R").arg(format!("{uid}:{gid}")).arg(path);
        run(c, "chown");
    }
}

/// Settings every test cluster shares (appended to postgresql.conf).
const COMMON_CONF: &str = "
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_log_hints = on
hot_standby = on
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 40
wal_sender_timeout = 5s
wal_receiver_status_interval = 1s
log_min_messages = warning
";

/// The template data directory, made once per machine by initdb.
fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = cache.join("pg15-template-v1");
        if dir.join("medic-template-complete").exists() {
            return dir;
        }
        // Build in a private temp dir the postgres user can write, then
        // move into the cache in one rename (other test binaries may race).
        let work = tempfile::Builder::new()
            .prefix("medic-pg-initdb")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = work.path().join("data");
        give_to_pg(work.path());
        let mut c = pg_command("initdb");
        c.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--data-checksums"])
            .args(["--no-sync", "--encoding=UTF8", "--locale=C.UTF-8"]);
        run(c, "initdb");
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(COMMON_CONF);
        std::fs::write(&conf, text).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n\
                 host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n\
                 host all all 127.0.0.1/32 trust\n\
                 host replication all 127.0.0.1/32 trust\n"
            ),
        )
        .unwrap();
        std::fs::write(data.join("medic-template-complete"), "").unwrap();
        std::fs::create_dir_all(&cache).unwrap();
        let staged = cache.join(format!("pg15-template-tmp-{}", std::process::id()));
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(&data).arg(&staged);
        run(cp, "copying the template");
        if std::fs::rename(&staged, &dir).is_err() {
            // Another process won the race; use its copy.
            let _ = std::fs::remove_dir_all(&staged);
        }
        dir
    })
}

/// One PostgreSQL server process (a primary or a replica).
pub struct PgNode {
    /// `primary` or `replica`.
    pub name: &'static str,
    pub port: u16,
    pub data: PathBuf,
    /// Where its server log goes.
    pub log: PathBuf,
    socket_dir: PathBuf,
    child: Option<Child>,
}

impl PgNode {
    fn new(name: &'static str, root: &Path) -> PgNode {
        PgNode {
            name,
            port: free_port(),
            data: root.join(name),
            log: root.join(format!("{name}.log")),
            socket_dir: root.to_path_buf(),
            child: None,
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = pg_command("postgres");
        c.arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(&self.socket_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(c.spawn().expect("cannot start postgres"));
        let start = Instant::now();
        loop {
            if self.is_ready() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "{} exited at start ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("{} not ready after 30 s:\n{}", self.name, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `pg_isready`: accepting connections.
    pub fn is_ready(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Command::new(pg_bin().join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", "-t", "2"])
                .status()
                .is_ok_and(|s| s.success())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn signal_and_reap(&mut self, sig: Signal) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
            let _ = c.wait();
        }
    }

    /// `pg_ctl stop -m immediate`: SIGQUIT, then reap.
    pub fn stop_immediate(&mut self) {
        self.signal_and_reap(Signal::SIGQUIT);
    }

    /// `pg_ctl stop -m fast`: SIGINT, then reap.
    pub fn stop_fast(&mut self) {
        self.signal_and_reap(Signal::SIGINT);
    }

    /// SIGKILL to the postmaster (a crash), then reap. Its backends exit by
    /// themselves shortly after.
    pub fn kill(&mut self) {
        self.signal_and_reap(Signal::SIGKILL);
    }

    /// Runs SQL with psql as `postgres` in database `postgres`; returns the
    /// unaligned, tuples-only output. Panics on error.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("postgres", sql)
    }

    /// [`PgNode::psql`] in another database.
    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        let mut c = Command::new(pg_bin().join("psql"));
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-X", "-A", "-t", "-q"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql]);
        run(c, &format!("psql on {}", self.name))
            .trim_end()
            .to_string()
    }

    /// The last lines of the server log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PgNode {
    fn drop(&mut self) {
        self.stop_immediate();
    }
}

/// A private cluster: a primary and maybe a streaming replica.
pub struct Pg {
    pub primary: PgNode,
    pub replica: Option<PgNode>,
    // Last: removed after both servers stopped (fields drop in order).
    dir: tempfile::TempDir,
}

impl Pg {
    /// A running primary.
    pub fn primary() -> Pg {
        let dir = tempfile::Builder::new()
            .prefix("medic-pg")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut primary = PgNode::new("primary", dir.path());
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(template()).arg(&primary.data);
        run(cp, "copying the template cluster");
        let _ = std::fs::remove_file(primary.data.join("medic-template-complete"));
        give_to_pg(dir.path());
        primary.start();
        Pg {
            primary,
            replica: None,
            dir,
        }
    }

    /// A running primary and a replica streaming from it through the
    /// physical slot `replica1` (pg_basebackup -R -C -S replica1).
    pub fn with_replica() -> Pg {
        let mut pg = Pg::primary();
        pg.add_replica();
        pg
    }

    /// Clones the primary into a replica, starts it, and waits until it
    /// streams.
    pub fn add_replica(&mut self) {
        assert!(self.replica.is_none(), "one replica per cluster");
        let mut replica = PgNode::new("replica", self.dir.path());
        let mut c = pg_command("pg_basebackup");
        c.args(["-h", "127.0.0.1", "-p", &self.primary.port.to_string()])
            .args(["-U", "postgres", "-D"])
            .arg(&replica.data)
            .args(["-R", "-X", "stream", "-C", "-S", "replica1", "-c", "fast"])
            .arg("--no-sync");
        run(c, "pg_basebackup");
        replica.start();
        wait_streaming(&replica);
        self.replica = Some(replica);
    }

    pub fn replica(&self) -> &PgNode {
        self.replica.as_ref().expect("no replica")
    }

    pub fn replica_mut(&mut self) -> &mut PgNode {
        self.replica.as_mut().expect("no replica")
    }

    /// The temp dir holding data dirs, logs and sockets.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Waits until `replica`'s WAL receiver reports `streaming`.
pub fn wait_streaming(replica: &PgNode) {
    super::wait_until(Duration::from_secs(30), "the replica to stream", || {
        replica.psql("SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')")
            == "streaming"
    });
}

/// Waits until `replica` has replayed everything `primary` has written so
/// far.
pub fn wait_caught_up(primary: &PgNode, replica: &PgNode) {
    let lsn = primary.psql("SELECT pg_current_wal_lsn()");
    super::wait_until(Duration::from_secs(30), "the replica to catch up", || {
        replica.psql(&format!(
            "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '{lsn}') >= 0"
        )) == "t"
    });
}
