//! The peer harness (ignored by `cargo test`; `scripts/peers.sh` runs it
//! with a release build): medic and a peer that users run for the same job,
//! side by side on this machine, measured the same way.
//!
//! Redis, the pair users compare first: medic against Monit (Debian's
//! `monit`), each watching a redis-server of its own, both running for the
//! whole harness. Two like-for-like pairs:
//! - *the process is gone*: medic's `redis` check (every 1 s, and its held
//!   connection, which sees the close at once) against Monit's
//!   `check process ... with pidfile` (cycle 1 s);
//! - *a port check every 1 s*: medic's `tcp` check against Monit's
//!   `check host ... if failed port` (cycle 1 s).
//!
//! Both act on the first failure and restart with the same command. Trials
//! alternate (A B A B ...): each kills its side's redis-server with SIGKILL
//! and measures the time until it answers PING again. The kills land at
//! stratified random phases of the 1 s cycle (one in each tenth of the
//! cycle per ten trials, in shuffled order), so neither side is always hit
//! just before or after its check. Printed per pair: every trial, min,
//! median, p95 and max for each side, and the ratio medic / peer of the
//! medians.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A small xorshift generator seeded from the clock (printed, and taken
/// from `MEDIC_PEERS_SEED` when set, so a run can be repeated).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("MEDIC_PEERS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("seed {seed} (MEDIC_PEERS_SEED)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// In [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` delays within `cycle`, one in each of `n` equal strata, shuffled.
fn stratified(rng: &mut Rng, n: usize, cycle: Duration) -> Vec<Duration> {
    let mut v: Vec<Duration> = (0..n)
        .map(|k| cycle.mul_f64((k as f64 + rng.unit()) / n as f64))
        .collect();
    for i in (1..v.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// min, median, p95, max.
fn summary(times: &[f64]) -> (f64, f64, f64, f64) {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    let p95 = t[((t.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)];
    (t[0], t[t.len() / 2], p95, t[t.len() - 1])
}

/// A redis-server started as both sides restart it (daemonized, with a
/// pidfile), so every kill and restart is the same.
fn redis_daemon_argv(port: u16, pidfile: &Path) -> Vec<String> {
    redis_argv(port)
        .into_iter()
        .chain(["--daemonize", "yes", "--pidfile"].map(String::from))
        .chain([pidfile.display().to_string()])
        .collect()
}

/// The script both sides restart redis with (`/bin/sh SCRIPT`: Monit
/// wants an absolute program path and splits its command on spaces).
fn start_script(dir: &Path, argv: &[String]) -> String {
    let quoted: Vec<String> = argv
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let script = dir.join("start-redis.sh");
    std::fs::write(&script, format!("exec {}\n", quoted.join(" "))).unwrap();
    format!("/bin/sh {}", script.display())
}

fn start_redis(argv: &[String], port: u16) {
    let status = Command::new(&argv[0]).args(&argv[1..]).status().unwrap();
    assert!(status.success(), "redis-server {argv:?} did not start");
    wait_until(Duration::from_secs(10), "redis", || redis_ping(port));
}

/// One side of a pair: a redis-server and what watches it.
trait Side {
    fn name(&self) -> String;
    fn port(&self) -> u16;
    fn pidfile(&self) -> &Path;
    /// Waits until the side has settled after a recovery (medic: the
    /// incident resolved), so the next kill starts from a quiet state.
    fn settle(&mut self, trial: usize);
}

struct MedicSide {
    label: &'static str,
    port: u16,
    pidfile: PathBuf,
    db: PathBuf,
    medic: Option<Medic>,
    _dir: tempfile::TempDir,
}

impl MedicSide {
    fn start(label: &'static str, check: &str) -> MedicSide {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let pidfile = dir.path().join("redis.pid");
        let argv = redis_daemon_argv(port, &pidfile);
        let start = start_script(dir.path(), &argv);
        let config = redis_setup(
            dir.path(),
            port,
            &format!("check: {check}\nevery: 1s\ntimeout: 1s\nfor: 0s\nclear_for: 1s"),
            &format!(
                "  - name: restart-redis
    action: exec
    args: {}
    timeout: 10s
    verify: {{ clears: redis_down, within: 10s }}
    limit: {{ attempts: 1000, per: 1h }}
limit: {{ attempts: 1000, per: 1h }}
",
                serde_json::to_string(&start.split(' ').collect::<Vec<_>>()).unwrap()
            ),
        );
        start_redis(&argv, port);
        let medic = Medic::start(&config, &dir.path().join("medic.log"));
        MedicSide {
            label,
            port,
            pidfile,
            db: dir.path().join("state/medic.db"),
            medic: Some(medic),
            _dir: dir,
        }
    }
}

impl Side for MedicSide {
    fn name(&self) -> String {
        format!("medic, {}", self.label)
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn pidfile(&self) -> &Path {
        &self.pidfile
    }
    fn settle(&mut self, trial: usize) {
        let db = self.db.clone();
        wait_until(
            Duration::from_secs(30),
            "medic's incident to resolve",
            || resolved_incidents(&db) >= trial,
        );
    }
}

impl Drop for MedicSide {
    fn drop(&mut self) {
        if let Some(mut m) = self.medic.take() {
            let _ = m.stop();
        }
        kill_pidfile(&self.pidfile);
    }
}

struct MonitSide {
    label: &'static str,
    port: u16,
    pidfile: PathBuf,
    monit: Child,
    dir: tempfile::TempDir,
}

impl MonitSide {
    /// Monit (`monit -I`, cycle 1 s, no start delay) with `check`, a
    /// function of the redis port, pidfile and start command.
    fn start(label: &'static str, check: impl Fn(u16, &Path, &str) -> String) -> MonitSide {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let pidfile = dir.path().join("redis.pid");
        let argv = redis_daemon_argv(port, &pidfile);
        let start = start_script(dir.path(), &argv);
        let d = dir.path().display();
        let rc = dir.path().join("monitrc");
        std::fs::write(
            &rc,
            format!(
                "set daemon 1 with start delay 0\n\
                 set logfile {d}/monit.log\n\
                 set pidfile {d}/monit.pid\n\
                 set idfile {d}/monit.id\n\
                 set statefile {d}/monit.state\n\
                 {}\n",
                check(port, &pidfile, &start)
            ),
        )
        .unwrap();
        // Monit refuses a control file others can read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
        start_redis(&argv, port);
        let monit = Command::new("monit")
            .args(["-I", "-c"])
            .arg(&rc)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start monit ({e}): apt-get install monit"));
        let log = dir.path().join("monit.log");
        wait_until(Duration::from_secs(10), "monit to start", || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains(" started"))
        });
        // Let its first cycle see the service up.
        std::thread::sleep(Duration::from_millis(1500));
        MonitSide {
            label,
            port,
            pidfile,
            monit,
            dir,
        }
    }
}

impl Side for MonitSide {
    fn name(&self) -> String {
        format!("Monit 5.33, {}", self.label)
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn pidfile(&self) -> &Path {
        &self.pidfile
    }
    fn settle(&mut self, _trial: usize) {
        // Monit has no incident to close; one quiet cycle.
        std::thread::sleep(Duration::from_millis(1000));
        assert!(
            self.monit.try_wait().unwrap().is_none(),
            "monit exited: {}",
            log_tail(&self.dir.path().join("monit.log"), 0, 20)
        );
    }
}

impl Drop for MonitSide {
    fn drop(&mut self) {
        let _ = self.monit.kill();
        let _ = self.monit.wait();
        kill_pidfile(&self.pidfile);
    }
}

/// SIGKILL the side's redis-server; seconds until it answers PING again.
/// The harness is the daemons' subreaper and reaps the killed one at
/// once, as a host's init does (this machine's pid 1 reaps late, and a
/// zombie still "runs" for Monit's pidfile check).
fn trial(side: &dyn Side) -> f64 {
    let pid = std::fs::read_to_string(side.pidfile())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .expect("the redis pidfile");
    let killed = Instant::now();
    kill_pidfile(side.pidfile());
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    while redis_ping(side.port()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    while !redis_ping(side.port()) {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "{}: redis not restarted within 60 s",
            side.name()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    killed.elapsed().as_secs_f64()
}

/// Alternating trials of `a` (medic) and `b` (the peer); prints the pair.
fn pair(title: &str, rng: &mut Rng, runs: usize, a: &mut dyn Side, b: &mut dyn Side) {
    let phases_a = stratified(rng, runs, Duration::from_secs(1));
    let phases_b = stratified(rng, runs, Duration::from_secs(1));
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for i in 0..runs {
        std::thread::sleep(phases_a[i]);
        let t = trial(a);
        eprintln!("  trial {:2} {}: {:.0} ms", i + 1, a.name(), t * 1000.0);
        ta.push(t);
        a.settle(i + 1);
        std::thread::sleep(phases_b[i]);
        let t = trial(b);
        eprintln!("  trial {:2} {}: {:.0} ms", i + 1, b.name(), t * 1000.0);
        tb.push(t);
        b.settle(i + 1);
    }
    let ms = |x: f64| format!("{:.0}", x * 1000.0);
    println!("{title} ({runs} trials each, alternating):");
    for (side, t) in [(a.name(), &ta), (b.name(), &tb)] {
        let (min, med, p95, max) = summary(t);
        println!(
            "  {side}: min {} ms, median {} ms, p95 {} ms, max {} ms",
            ms(min),
            ms(med),
            ms(p95),
            ms(max)
        );
    }
    println!(
        "  ratio medic / peer of the medians: {:.3}",
        summary(&ta).1 / summary(&tb).1
    );
}

#[test]
#[ignore = "harness: scripts/peers.sh"]
fn redis_medic_against_monit() {
    let runs: usize = std::env::var("MEDIC_PEERS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut rng = Rng::new();
    // Daemonized redis-servers (both sides restart them so) become the
    // harness's children, for trial() to reap.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    {
        let mut a = MedicSide::start(
            "redis check every 1s + held connection",
            "{ redis: { target: cache, ping: true } }",
        );
        let mut b = MonitSide::start("process check by pidfile, cycle 1s", |_, pidfile, start| {
            format!(
                "check process redis with pidfile {}\n  start program = \"{start}\" with timeout 10 seconds",
                pidfile.display()
            )
        });
        pair(
            "Redis SIGKILL -> answering PING again, the process is gone",
            &mut rng,
            runs,
            &mut a,
            &mut b,
        );
    }
    {
        let mut a = MedicSide::start("tcp check every 1s", "{ tcp: { target: cache } }");
        let mut b = MonitSide::start("port check, cycle 1s", |port, _, start| {
            format!(
                "check host redis-port with address 127.0.0.1\n  start program = \"{start}\" with timeout 10 seconds\n  if failed port {port} type tcp with timeout 1 seconds then exec \"{start}\""
            )
        });
        pair(
            "Redis SIGKILL -> answering PING again, a port check every 1 s",
            &mut rng,
            runs,
            &mut a,
            &mut b,
        );
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL: Patroni after node loss. medic's side of the pair is
// `tests/pg_failover.rs`'s `failover_benchmark` (one fresh cluster per
// trial, as here); `scripts/peers.sh` alternates the two, one trial each.

/// psql against 127.0.0.1:`port` as postgres; the output or the error.
fn psql(port: u16, sql: &str) -> Result<String, String> {
    let out = Command::new(common::pg::pg_bin().join("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-p", &port.to_string(), "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "2")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// `GET http://127.0.0.1:port/path` → the status code (Patroni's REST API:
/// `/primary` and `/replica` answer 200 only on a member in that role).
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// Patroni's timing settings for a trial: `PATRONI_TIMING` = `aggressive`
/// (the lowest Patroni accepts: ttl 20, loop_wait 1, retry_timeout 3) or
/// `default` (30, 10, 10).
fn patroni_timing() -> (&'static str, u32, u32, u32) {
    match std::env::var("PATRONI_TIMING").as_deref() {
        Ok("default") => ("defaults", 30, 10, 10),
        _ => ("most aggressive", 20, 1, 3),
    }
}

struct Patroni {
    etcd: Child,
    nodes: Vec<(Child, u16, u16, PathBuf)>,
    dir: tempfile::TempDir,
}

impl Drop for Patroni {
    fn drop(&mut self) {
        for (p, _, _, data) in &mut self.nodes {
            common::pg::signal_tree(p.id() as i32, nix::sys::signal::Signal::SIGKILL);
            let _ = p.wait();
            if let Some(pid) = std::fs::read_to_string(data.join("postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok())
            {
                common::pg::signal_tree(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
        let _ = &self.dir;
    }
}

/// etcd and two Patroni members (`node1` the leader, `node2` its streaming
/// replica), every port private, as the `postgres` user when root.
fn patroni_cluster() -> Patroni {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let (client, peer) = (free_port(), free_port());
    let etcd = Command::new("etcd")
        .args(["--name", "peers", "--data-dir"])
        .arg(d.join("etcd"))
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("peers=http://127.0.0.1:{peer}"),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("etcd.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start etcd ({e}): apt-get install etcd-server"));
    wait_until(Duration::from_secs(20), "etcd", || {
        http_status(client, "/health") == Some(200)
    });
    let (_, ttl, loop_wait, retry) = patroni_timing();
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let mut nodes = Vec::new();
    for n in 1..=2 {
        let (pg, api) = (free_port(), free_port());
        let data = d.join(format!("node{n}"));
        let cfg = d.join(format!("node{n}.yml"));
        std::fs::write(
            &cfg,
            format!(
                "scope: peers
name: node{n}
restapi: {{ listen: '127.0.0.1:{api}', connect_address: '127.0.0.1:{api}' }}
etcd3: {{ hosts: '127.0.0.1:{client}' }}
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: {retry}
    maximum_lag_on_failover: 1048576
    postgresql: {{ use_pg_rewind: false, parameters: {{ fsync: 'off', wal_level: replica, hot_standby: 'on' }} }}
  initdb: [{{ encoding: UTF8 }}, {{ locale: C.UTF-8 }}]
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: '127.0.0.1:{pg}'
  connect_address: '127.0.0.1:{pg}'
  data_dir: {data}
  bin_dir: {bin}
  pgpass: {d}/pgpass{n}
  authentication:
    superuser: {{ username: postgres }}
    replication: {{ username: postgres }}
  parameters: {{ unix_socket_directories: '{d}' }}
",
                data = data.display(),
                bin = common::pg::pg_bin().display(),
                d = d.display(),
            ),
        )
        .unwrap();
        if root {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&d)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let mut c = if root {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
                "patroni",
            ]);
            c
        } else {
            Command::new("patroni")
        };
        let log = std::fs::File::create(d.join(format!("node{n}.log"))).unwrap();
        let child = c
            .arg(&cfg)
            .env("HOME", &d)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start patroni ({e}): apt-get install patroni"));
        nodes.push((child, pg, api, data));
        if n == 1 {
            wait_until(Duration::from_secs(60), "node1 to lead", || {
                http_status(api, "/primary") == Some(200)
            });
        }
    }
    let (api2, pg1) = (nodes[1].2, nodes[0].1);
    wait_until(
        Duration::from_secs(90),
        "node2 to stream from node1",
        || http_status(api2, "/replica") == Some(200),
    );
    psql(pg1, "CREATE TABLE t (x int)").unwrap();
    Patroni { etcd, nodes, dir }
}

/// One trial: node1 lost (Patroni and PostgreSQL SIGKILLed at once, as a
/// host that dies) at a random phase of loop_wait; seconds until node2
/// accepts an INSERT.
fn patroni_trial(rng: &mut Rng) -> f64 {
    let p = patroni_cluster();
    let (_, _, loop_wait, _) = patroni_timing();
    std::thread::sleep(Duration::from_secs(loop_wait as u64).mul_f64(rng.unit()));
    let pg2 = p.nodes[1].1;
    let postmaster: i32 = std::fs::read_to_string(p.nodes[0].3.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let lost = Instant::now();
    common::pg::signal_tree(p.nodes[0].0.id() as i32, nix::sys::signal::Signal::SIGKILL);
    common::pg::signal_tree(postmaster, nix::sys::signal::Signal::SIGKILL);
    loop {
        if psql(pg2, "INSERT INTO t VALUES (1)").is_ok() {
            break;
        }
        assert!(
            lost.elapsed() < Duration::from_secs(120),
            "node2 not writable within 120 s: {}",
            log_tail(&p.dir.path().join("node2.log"), 0, 30)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    lost.elapsed().as_secs_f64()
}

/// `MEDIC_PEERS_RUNS` Patroni trials, each printed as `patroni trial: X s`
/// for `scripts/peers.sh` to pair with medic's.
#[test]
#[ignore = "harness: scripts/peers.sh"]
fn patroni_node_loss() {
    let runs: usize = std::env::var("MEDIC_PEERS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut rng = Rng::new();
    let (what, ttl, loop_wait, retry) = patroni_timing();
    for _ in 0..runs {
        let t = patroni_trial(&mut rng);
        println!(
            "patroni trial ({what}: ttl {ttl}, loop_wait {loop_wait}, retry_timeout {retry}): {t:.3} s"
        );
    }
}
