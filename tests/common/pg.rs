//! Private PostgreSQL for tests: a primary and any number of streaming
//! replicas, each a `postgres` process that is this test's own child, on
//! ephemeral ports on 127.0.0.1, with data and sockets in a temp dir.
//! Dropping a [`Pg`] stops every server with an immediate shutdown and
//! reaps it; [`PgNode::kill9`] is a real SIGKILL of the postmaster.
//!
//! Speed: `initdb` runs once per machine (a template cached under
//! `CARGO_TARGET_TMPDIR`, rebuilt when missing); each primary is a copy of
//! it. Test servers run with `fsync = off`. A primary starts in about
//! 0.3 s, a replica (pg_basebackup + start + streaming) in about 1 s more.
//!
//! As root (CI, these machines) every PostgreSQL program runs as the
//! `postgres` user (PostgreSQL refuses root) through `setpriv`, which
//! execs: the postmaster is our child, not a wrapper's. The binaries are
//! the newest under `/usr/lib/postgresql/N/bin`, or `$MEDIC_PG_BIN`.
//!
//! Authentication: trust on 127.0.0.1 and the socket, except the role
//! [`PASSWORD_ROLE`], which must give a password (scram-sha-256), so tests
//! can cover authentication failures.
//!
//! [`Pg::start_in`] puts the primary in a network namespace
//! ([`super::netns::Netns`], root only), listening on its veth address, so
//! a test can drop its packets; its replicas stay on 127.0.0.1 and stream
//! from that address.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::netns::Netns;
use super::{start_service, wait_until};

/// The role that must authenticate with a password (all others: trust).
pub const PASSWORD_ROLE: &str = "medic_pw";

/// Where the PostgreSQL server programs are: `$MEDIC_PG_BIN`, or the
/// newest installed version's bin directory.
pub fn pg_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(dir) = std::env::var_os("MEDIC_PG_BIN") {
            return PathBuf::from(dir);
        }
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
            .expect("a PostgreSQL server in /usr/lib/postgresql/N/bin")
            .1
    })
    .clone()
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A command for a PostgreSQL program, run as `postgres` when we are root.
fn pg_command(program: &str) -> Command {
    let path = pg_bin().join(program);
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(path);
        c
    } else {
        Command::new(path)
    };
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
    if is_root() {
        let mut c = Command::new("chown");
        c.arg("-R").arg("postgres:postgres").arg(path);
        run(c, "chown");
    }
}

/// Settings every test server shares (appended to postgresql.conf).
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
wal_retrieve_retry_interval = 1s
log_min_messages = warning
";

/// The template data directory, made once per machine by initdb.
fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let version = pg_bin()
            .parent()
            .and_then(|p| p.file_name())
            .map_or_else(|| "pg".into(), |v| v.to_string_lossy().into_owned());
        let dir = cache.join(format!("pg{version}-template-v2"));
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
        let staged = cache.join(format!("pg-template-tmp-{}", std::process::id()));
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

/// One PostgreSQL server process (the primary or a replica).
pub struct PgNode {
    /// `primary`, `replica1`, `replica2`, ... (a replica's name is also
    /// its replication slot's).
    pub name: String,
    /// Chosen at the first start (retried if taken), kept on restarts.
    pub port: u16,
    pub data: PathBuf,
    /// Where its server log goes.
    pub log: PathBuf,
    /// The address it listens on (127.0.0.1, or its namespace's).
    pub host: String,
    /// The network namespace it runs in, if not the test's own.
    netns: Option<String>,
    socket_dir: PathBuf,
    child: Option<Child>,
    started: bool,
    /// Started by someone else (`pg_ctl start` from [`PgNode::pg_ctl_start`]):
    /// stopped with `pg_ctl stop` on drop.
    outside: bool,
}

impl PgNode {
    fn new(name: &str, root: &Path) -> PgNode {
        PgNode {
            name: name.to_string(),
            port: 0,
            data: root.join(name),
            log: root.join(format!("{name}.log")),
            host: "127.0.0.1".into(),
            netns: None,
            socket_dir: root.to_path_buf(),
            child: None,
            started: false,
            outside: false,
        }
    }

    /// The argv that starts this server again the way its host's service
    /// manager would: `pg_ctl start -w` on its data directory, port and
    /// socket directory (as `postgres` when we are root), its log in
    /// `restart.log` of the data directory. For an `exec` restart method;
    /// the server it starts is not our child, so it is stopped with
    /// `pg_ctl stop` on drop.
    pub fn pg_ctl_start(&mut self) -> Vec<String> {
        assert!(self.started, "{} never started: no port yet", self.name);
        assert!(
            self.netns.is_none(),
            "pg_ctl_start runs in the test's namespace"
        );
        self.outside = true;
        let mut argv: Vec<String> = if is_root() {
            [
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]
            .map(String::from)
            .to_vec()
        } else {
            Vec::new()
        };
        argv.push(pg_bin().join("pg_ctl").display().to_string());
        argv.extend(["start", "-w", "-t", "20", "-D"].map(String::from));
        argv.push(self.data.display().to_string());
        argv.push("-l".into());
        argv.push(self.data.join("restart.log").display().to_string());
        argv.push("-o".into());
        argv.push(format!(
            "-p {} -c listen_addresses={} -k {}",
            self.port,
            self.host,
            self.socket_dir.display()
        ));
        argv
    }

    /// Starts the server and waits until it accepts connections: on a free
    /// port the first time (a new one if that is taken meanwhile), on the
    /// same port again after a stop. Panics with its exit status and log
    /// when it does not come up.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let data = self.data.clone();
        let host = self.host.clone();
        let netns = self.netns.clone();
        let (child, port) = start_service(
            &format!("postgres ({})", self.name),
            self.started.then_some(self.port),
            &self.log,
            Duration::from_secs(30),
            |port| {
                let mut c = pg_command("postgres");
                c.arg("-D")
                    .arg(&data)
                    .args(["-p", &port.to_string()])
                    .args(["-c", &format!("listen_addresses={host}")])
                    .arg("-k")
                    .arg(&self.socket_dir);
                // `ip netns exec` execs: the postmaster stays our child.
                match &netns {
                    Some(ns) => {
                        let mut w = Command::new("ip");
                        w.args(["netns", "exec", ns]).arg(c.get_program());
                        w.args(c.get_args());
                        for (k, v) in c.get_envs() {
                            match v {
                                Some(v) => w.env(k, v),
                                None => w.env_remove(k),
                            };
                        }
                        w
                    }
                    None => c,
                }
            },
            // Ours (its pid in postmaster.pid) and accepting connections:
            // not another server that took the port meanwhile.
            |pid, port| postmaster_ready(&data, pid) && is_ready(&host, port),
        );
        self.port = port;
        self.child = Some(child);
        self.started = true;
    }

    /// `pg_isready`: accepting connections.
    pub fn is_ready(&self) -> bool {
        is_ready(&self.host, self.port)
    }

    /// The postmaster's pid, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Sends `sig` to the postmaster *and* every process it started (its
    /// backends, WAL sender, checkpointer...): SIGSTOP freezes the whole
    /// server as a hung VM would, SIGCONT thaws it.
    pub fn signal_all(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            signal_tree(pid, sig);
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `sig` to the postmaster without reaping it (SIGSTOP and
    /// SIGCONT freeze and thaw it; its backends keep running).
    pub fn signal(&self, sig: Signal) {
        if let Some(c) = &self.child {
            kill(Pid::from_raw(c.id() as i32), sig).unwrap();
        }
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

    /// SIGKILL to the postmaster (a crash), then reap. Its backends notice
    /// their postmaster's death and exit by themselves shortly after.
    pub fn kill9(&mut self) {
        self.signal_and_reap(Signal::SIGKILL);
    }

    /// Runs SQL with psql as `postgres` in database `postgres`; returns the
    /// unaligned, tuples-only output. Panics on error.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("postgres", sql)
    }

    /// [`PgNode::psql`] in another database.
    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        self.try_psql_db(db, sql)
            .unwrap_or_else(|e| panic!("psql on {}: {sql}: {e}", self.name))
    }

    /// [`PgNode::psql`] that may fail: the error is psql's stderr.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.try_psql_db("postgres", sql)
    }

    fn try_psql_db(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(pg_bin().join("psql"))
            .args(["-h", &self.host, "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-X", "-A", "-t", "-q"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot start psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// `pg_is_in_recovery()`: a replica (or a fenced old primary).
    pub fn in_recovery(&self) -> bool {
        self.psql("SELECT pg_is_in_recovery()") == "t"
    }

    /// The config target for medic.
    pub fn target_yaml(&self) -> String {
        format!(
            "{{ postgres: {{ host: {}, port: {}, user: postgres, dbname: postgres }} }}",
            self.host, self.port
        )
    }

    /// The last lines of the server log (for failure messages).
    pub fn log_tail(&self) -> String {
        super::log_tail(&self.log, 0, 30)
    }
}

impl Drop for PgNode {
    fn drop(&mut self) {
        self.stop_immediate();
        if self.outside {
            let mut c = pg_command("pg_ctl");
            c.args(["stop", "-m", "immediate", "-D"])
                .arg(&self.data)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = c.status();
        }
    }
}

/// Sends `sig` to every process `pid` started, then to `pid`.
pub fn signal_tree(pid: i32, sig: Signal) {
    for child in children_of(pid) {
        let _ = kill(Pid::from_raw(child), sig);
    }
    let _ = kill(Pid::from_raw(pid), sig);
}

/// Every process whose parent is `pid` (from /proc).
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            // `PID (comm) STATE PPID ...`: comm may hold spaces; split after it.
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// `pg_isready` on `host`:`port`.
fn is_ready(host: &str, port: u16) -> bool {
    TcpStream::connect((host, port)).is_ok()
        && Command::new(pg_bin().join("pg_isready"))
            .args(["-q", "-h", host, "-p", &port.to_string()])
            .args(["-U", "postgres", "-t", "2"])
            .status()
            .is_ok_and(|s| s.success())
}

/// `data/postmaster.pid` names `pid` and says `ready` (line 8).
fn postmaster_ready(data: &Path, pid: u32) -> bool {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines.first() == Some(&pid.to_string().as_str())
        && lines.get(7).is_some_and(|s| s.trim() == "ready")
}

/// Where a cluster's servers run and listen.
#[derive(Clone, Copy)]
enum Place<'a> {
    /// All on 127.0.0.1 in the test's namespace.
    Local,
    /// The primary in this namespace, on its address.
    PrimaryIn(&'a Netns),
    /// All in the test's namespace, on the host end of this one's link.
    ReachableFrom(&'a Netns),
}

/// A private cluster: a primary and its streaming replicas.
pub struct Pg {
    pub primary: PgNode,
    pub replicas: Vec<PgNode>,
    /// Where new replicas listen, when not on 127.0.0.1.
    replica_host: Option<String>,
    // Last: removed after every server stopped (fields drop in order).
    dir: tempfile::TempDir,
}

impl Pg {
    /// A running primary.
    pub fn primary() -> Pg {
        Pg::start(0)
    }

    /// A running primary and one replica streaming from it.
    pub fn with_replica() -> Pg {
        Pg::start(1)
    }

    /// A running primary and `replicas` replicas streaming from it.
    pub fn start(replicas: usize) -> Pg {
        Pg::start_on(Place::Local, replicas)
    }

    /// [`Pg::start`] with the primary inside `ns`, listening on its
    /// address, and the replicas in the test's namespace streaming from
    /// that address: drop the namespace's packets and the primary is silent
    /// to medic and to its replicas alike.
    pub fn start_in(ns: &Netns, replicas: usize) -> Pg {
        Pg::start_on(Place::PrimaryIn(ns), replicas)
    }

    /// [`Pg::start`] with every server in the test's namespace listening
    /// on the host end of `ns`'s link, so a medic inside `ns` reaches them
    /// (and reaches nothing once that link is down).
    pub fn start_reachable_from(ns: &Netns, replicas: usize) -> Pg {
        Pg::start_on(Place::ReachableFrom(ns), replicas)
    }

    fn start_on(place: Place, replicas: usize) -> Pg {
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
        let replica_host = match place {
            Place::Local => None,
            Place::PrimaryIn(ns) => {
                primary.host = ns.ns_addr.clone();
                primary.netns = Some(ns.name.clone());
                None
            }
            Place::ReachableFrom(ns) => {
                primary.host = ns.host_addr.clone();
                Some(ns.host_addr.clone())
            }
        };
        if !matches!(place, Place::Local) {
            // Clients (and replication) from the namespaces' /15; copied
            // to the replicas by pg_basebackup.
            let hba = primary.data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).unwrap();
            text.push_str(
                "host all all 198.18.0.0/15 trust\nhost replication all 198.18.0.0/15 trust\n",
            );
            std::fs::write(&hba, text).unwrap();
        }
        give_to_pg(dir.path());
        primary.start();
        let mut pg = Pg {
            primary,
            replicas: Vec::new(),
            replica_host,
            dir,
        };
        for _ in 0..replicas {
            pg.add_replica();
        }
        pg
    }

    /// Clones the primary into a new replica `replicaN` with its own
    /// physical slot of that name (pg_basebackup -R -C -S), starts it, and
    /// waits until it streams.
    pub fn add_replica(&mut self) -> &mut PgNode {
        let name = format!("replica{}", self.replicas.len() + 1);
        let mut replica = PgNode::new(&name, self.dir.path());
        if let Some(h) = &self.replica_host {
            replica.host = h.clone();
        }
        let mut c = pg_command("pg_basebackup");
        c.args([
            "-h",
            &self.primary.host,
            "-p",
            &self.primary.port.to_string(),
        ])
        .args(["-U", "postgres", "-D"])
        .arg(&replica.data)
        .args(["-R", "-X", "stream", "-C", "-S", &name, "-c", "fast"])
        .arg("--no-sync");
        run(c, "pg_basebackup");
        replica.start();
        wait_streaming(&replica);
        self.replicas.push(replica);
        self.replicas.last_mut().unwrap()
    }

    /// The first replica.
    pub fn replica(&self) -> &PgNode {
        self.replicas.first().expect("no replica")
    }

    pub fn replica_mut(&mut self) -> &mut PgNode {
        self.replicas.first_mut().expect("no replica")
    }

    /// Waits (up to `limit` each) until every running replica has
    /// replayed what the primary has written so far.
    pub fn wait_caught_up(&self, limit: Duration) {
        for r in self.replicas.iter().filter(|r| r.is_running()) {
            wait_replayed(&self.primary, r, limit);
        }
    }

    /// The temp dir holding data dirs, logs and sockets.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Waits until `replica`'s WAL receiver reports `streaming`.
pub fn wait_streaming(replica: &PgNode) {
    wait_until(Duration::from_secs(30), "the replica to stream", || {
        replica.psql("SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')")
            == "streaming"
    });
}

/// Waits (up to 30 s) until `replica` has replayed everything `primary`
/// has written so far.
pub fn wait_caught_up(primary: &PgNode, replica: &PgNode) {
    wait_replayed(primary, replica, Duration::from_secs(30));
}

fn wait_replayed(primary: &PgNode, replica: &PgNode, limit: Duration) {
    let lsn = primary.psql("SELECT pg_current_wal_lsn()");
    wait_until(
        limit,
        &format!("{} to catch up to {lsn}", replica.name),
        || {
            replica.psql(&format!(
                "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '{lsn}') >= 0"
            )) == "t"
        },
    );
}
