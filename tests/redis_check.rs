//! The `redis` check against real redis-server instances on ephemeral
//! ports: plain, password-protected (secret by reference) and TLS.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use medic::check::Check;
use medic::check::redis::{RedisCheck, RedisParams};
use medic::config::{Config, RedisTarget, TargetConfig, TlsConfig};
use medic::observe::Outcome;
use medic::secret::SecretRef;

fn check_for(target: RedisTarget) -> RedisCheck {
    check_with(
        target,
        RedisParams {
            target: "cache".into(),
            ping: true,
            role: None,
            roundtrip: false,
            persistence: None,
        },
    )
}

fn check_with(target: RedisTarget, params: RedisParams) -> RedisCheck {
    let mut config = Config::default();
    config
        .targets
        .insert("cache".into(), TargetConfig::Redis(target));
    RedisCheck::build(&params, &config).unwrap()
}

fn role(r: &str) -> RedisParams {
    RedisParams {
        target: "cache".into(),
        ping: false,
        role: Some(r.into()),
        roundtrip: false,
        persistence: None,
    }
}

fn roundtrip() -> RedisParams {
    RedisParams {
        target: "cache".into(),
        ping: true,
        role: None,
        roundtrip: true,
        persistence: None,
    }
}

/// Sends one command over a raw socket and returns the first reply line.
fn raw(port: u16, cmd: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// A MONITOR connection: every command the server receives, as text.
struct Monitor {
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        use std::io::{BufRead, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"MONITOR\r\n").unwrap();
        let mut reader = std::io::BufReader::new(s);
        let mut ok = String::new();
        reader.read_line(&mut ok).unwrap();
        assert_eq!(ok, "+OK\r\n");
        Monitor { reader }
    }

    /// The next `n` commands, without MONITOR's timestamp and client.
    fn next(&mut self, n: usize) -> Vec<String> {
        use std::io::BufRead;
        (0..n)
            .map(|_| {
                let mut line = String::new();
                self.reader.read_line(&mut line).unwrap();
                // +1700000000.123456 [0 127.0.0.1:5555] "SET" "k" ...
                line.split_once("] ")
                    .map(|(_, c)| c.trim_end().to_string())
                    .unwrap_or(line)
            })
            .collect()
    }
}

#[tokio::test]
async fn role_of_master_and_replica() {
    let (mp, rp) = (free_port(), free_port());
    let _m = Redis::start(mp);
    let _r = Reaped(spawn_redis(&[
        "--port",
        &rp.to_string(),
        "--replicaof",
        "127.0.0.1",
        &mp.to_string(),
    ]));
    wait_until(Duration::from_secs(10), "the replica to sync", || {
        std::net::TcpStream::connect(("127.0.0.1", rp)).is_ok() && raw(rp, "ROLE").starts_with('*')
    });
    assert_eq!(
        check_with(plain(mp), role("master")).run().await,
        Outcome::Ok
    );
    assert_eq!(
        check_with(plain(rp), role("slave")).run().await,
        Outcome::Ok
    );
    assert_eq!(
        check_with(plain(mp), role("slave")).run().await,
        Outcome::Failing(format!("127.0.0.1:{mp}: role is master, expected slave"))
    );
    assert_eq!(
        check_with(plain(rp), role("master")).run().await,
        Outcome::Failing(format!("127.0.0.1:{rp}: role is slave, expected master"))
    );
    // The runbook's round-trip writes: a read-only replica fails it.
    let o = check_with(plain(rp), roundtrip()).run().await;
    assert!(
        matches!(&o, Outcome::Failing(d) if d.contains("READONLY")),
        "{o:?}"
    );
}

#[tokio::test]
async fn roundtrip_sets_gets_and_deletes_its_own_key_with_a_ttl() {
    let port = free_port();
    let _redis = Redis::start(port);
    let check = check_with(plain(port), roundtrip());
    let key = check.roundtrip_key().to_string();
    assert!(key.starts_with("medic:roundtrip:"), "{key}");
    let mut monitor = Monitor::start(port);
    assert_eq!(check.run().await, Outcome::Ok);
    assert_eq!(check.run().await, Outcome::Ok);
    let seen = monitor.next(8);
    assert_eq!(
        seen,
        [
            "\"PING\"".to_string(),
            format!("\"SET\" \"{key}\" \"0\" \"PX\" \"60000\""),
            format!("\"GET\" \"{key}\""),
            format!("\"DEL\" \"{key}\""),
            "\"PING\"".to_string(),
            format!("\"SET\" \"{key}\" \"1\" \"PX\" \"60000\""),
            format!("\"GET\" \"{key}\""),
            format!("\"DEL\" \"{key}\""),
        ]
    );
    assert_eq!(raw(port, &format!("EXISTS {key}")), ":0", "nothing left");
    // Another check (another medic) owns another key.
    assert_ne!(check_with(plain(port), roundtrip()).roundtrip_key(), key);
}

#[tokio::test]
async fn roundtrip_denied_by_acl_is_unknown_and_oom_is_failing() {
    let port = free_port();
    let _redis = Redis::start(port);
    assert_eq!(
        raw(port, "ACL SETUSER watcher on >pw ~* +ping +info"),
        "+OK"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    let watcher = RedisTarget {
        username: Some("watcher".into()),
        password: Some(SecretRef::File(dir.path().join("pw"))),
        ..plain(port)
    };
    assert_eq!(
        check_with(watcher.clone(), role("master")).run().await,
        Outcome::Ok
    );
    let o = check_with(watcher, roundtrip()).run().await;
    assert!(
        matches!(&o, Outcome::Unknown(d) if d.contains("NOPERM")),
        "{o:?}"
    );
    // A full cache refuses writes: broken.
    assert_eq!(raw(port, "CONFIG SET maxmemory 1"), "+OK");
    let o = check_with(plain(port), roundtrip()).run().await;
    assert!(
        matches!(&o, Outcome::Failing(d) if d.contains("OOM")),
        "{o:?}"
    );
}

fn plain(port: u16) -> RedisTarget {
    RedisTarget {
        address: format!("127.0.0.1:{port}"),
        username: None,
        password: None,
        db: 0,
        tls: None,
        members: Vec::new(),
    }
}

#[tokio::test]
async fn ping_ok_then_refused_after_kill_then_ok_after_restart() {
    let port = free_port();
    let mut redis = Redis::start(port);
    let check = check_for(plain(port));
    assert_eq!(check.run().await, Outcome::Ok);
    redis.kill();
    // The held connection is dead; the check re-opens and judges by that.
    assert_eq!(
        check.run().await,
        Outcome::Failing(format!("127.0.0.1:{port}: connection refused"))
    );
    let _redis = Redis::start(port);
    assert_eq!(check.run().await, Outcome::Ok);
}

/// Starts redis-server with extra arguments; returns the child (killed on drop by the caller).
fn spawn_redis(args: &[&str]) -> std::process::Child {
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        // A replica's full sync loads from the socket: no dump.rdb in the
        // working directory (the crate's root).
        .args(["--repl-diskless-load", "on-empty-db"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

struct Reaped(std::process::Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn password_from_a_secret_file_and_wrong_password_is_unknown() {
    let port = free_port();
    let _r = Reaped(spawn_redis(&[
        "--port",
        &port.to_string(),
        "--requirepass",
        "s3cret",
    ]));
    wait_until(Duration::from_secs(10), "redis to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    std::fs::write(&good, "s3cret\n").unwrap();
    std::fs::write(&bad, "nope\n").unwrap();
    let mut t = plain(port);
    t.password = Some(SecretRef::File(good));
    assert_eq!(check_for(t.clone()).run().await, Outcome::Ok);
    t.password = Some(SecretRef::File(bad));
    let o = check_for(t).run().await;
    assert_eq!(o.label(), "unknown", "{o:?}");
    assert!(
        !format!("{o:?}").contains("nope"),
        "the secret must not leak: {o:?}"
    );
    // No password at all against a protected server: NOAUTH is an answer
    // from a live server that medic cannot use, i.e. blindness, not an outage.
    let o = check_for(plain(port)).run().await;
    assert!(
        matches!(&o, Outcome::Unknown(d) if d.contains("NOAUTH")),
        "{o:?}"
    );
}

fn make_cert(dir: &Path) {
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl must be able to make a self-signed certificate");
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path());
    let port = free_port();
    let cert = dir.path().join("cert.pem").display().to_string();
    let key = dir.path().join("key.pem").display().to_string();
    let _r = Reaped(spawn_redis(&[
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &cert,
        "--tls-auth-clients",
        "no",
    ]));
    wait_until(Duration::from_secs(10), "redis TLS port", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut t = plain(port);
    t.tls = Some(TlsConfig { insecure: true });
    assert_eq!(check_for(t).run().await, Outcome::Ok);
    // Plain text against a TLS port is not a healthy answer.
    assert_ne!(check_for(plain(port)).run().await, Outcome::Ok);
}

#[tokio::test]
async fn a_dropped_held_connection_is_noticed_at_once() {
    let port = free_port();
    let mut redis = Redis::start(port);
    let check = check_for(plain(port));
    // Nothing seen yet: nothing to lose.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), check.lost())
            .await
            .is_err()
    );
    assert_eq!(check.run().await, Outcome::Ok);
    // Healthy and idle: lost() waits.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), check.lost())
            .await
            .is_err(),
        "lost() fired while redis was up"
    );
    redis.kill();
    tokio::time::timeout(Duration::from_secs(2), check.lost())
        .await
        .expect("the kill was not noticed");
    assert_eq!(
        check.run().await,
        Outcome::Failing(format!("127.0.0.1:{port}: connection refused"))
    );
}

/// `calls` of one command in `INFO commandstats` (0 before the first).
fn calls(port: u16, cmd: &str) -> u64 {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|r| r.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Issue 17: a redis target made of members follows its roles (`ROLE`):
/// `cache` is the current master, `cache/replicas` the replicas. After the
/// replica is promoted with REPLICAOF NO ONE (the old master still up, then
/// killed), the round-trip on `cache` writes to the new master.
#[tokio::test]
async fn a_cluster_check_follows_the_master_after_a_promotion() {
    use medic::check::redis::ClusterCheck;
    let (ap, bp) = (free_port(), free_port());
    let mut a = Redis::start(ap);
    let _b = Reaped(spawn_redis(&[
        "--port",
        &bp.to_string(),
        "--replicaof",
        "127.0.0.1",
        &ap.to_string(),
    ]));
    wait_until(Duration::from_secs(10), "the replica to sync", || {
        std::net::TcpStream::connect(("127.0.0.1", bp)).is_ok()
            && redis::Client::open(format!("redis://127.0.0.1:{bp}"))
                .and_then(|c| c.get_connection())
                .and_then(|mut c| {
                    redis::cmd("INFO")
                        .arg("replication")
                        .query::<String>(&mut c)
                })
                .is_ok_and(|i| i.contains("master_link_status:up"))
    });
    let mut config = Config::default();
    config
        .targets
        .insert("cache-a".into(), TargetConfig::Redis(plain(ap)));
    config
        .targets
        .insert("cache-b".into(), TargetConfig::Redis(plain(bp)));
    config.targets.insert(
        "cache".into(),
        TargetConfig::Redis(RedisTarget {
            members: vec!["cache-a".into(), "cache-b".into()],
            ..RedisTarget::default()
        }),
    );
    let t = Duration::from_secs(2);
    let master = ClusterCheck::build(&roundtrip(), t, &config).unwrap();
    let replicas = ClusterCheck::build(
        &RedisParams {
            target: "cache/replicas".into(),
            ..role("slave")
        },
        t,
        &config,
    )
    .unwrap();

    assert_eq!(master.run().await, Outcome::Ok);
    assert_eq!(master.current_master().as_deref(), Some("cache-a"));
    assert_eq!(replicas.run().await, Outcome::Ok);
    let on_a = calls(ap, "set");
    assert!(on_a >= 1, "the round-trip wrote to the master cache-a");

    // The replica is promoted beside the live old master.
    assert_eq!(raw(bp, "REPLICAOF NO ONE"), "+OK");
    let on_b = calls(bp, "set");
    assert_eq!(master.run().await, Outcome::Ok);
    assert_eq!(master.current_master().as_deref(), Some("cache-b"));
    assert_eq!(calls(bp, "set"), on_b + 1, "the round-trip follows cache-b");
    // (cache-a's own count now includes what it replicates from cache-b.)
    // cache-a, a master beside the promoted one, was fenced on sight
    // (Sentinel's way): a replica of cache-b now, refusing writes.
    let info = |port: u16| -> String {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("INFO").arg("replication").query(&mut c))
            .unwrap_or_default()
    };
    let a_info = info(ap);
    assert!(
        a_info.contains("role:slave") && a_info.contains(&format!("master_port:{bp}")),
        "cache-a was not made a replica of cache-b: {a_info}"
    );
    assert!(
        raw(ap, "SET patient:2 split-brain").starts_with("-READONLY"),
        "the fenced old master took a write"
    );
    wait_until(
        Duration::from_secs(10),
        "cache-a to sync from cache-b",
        || info(ap).contains("master_link_status:up"),
    );
    assert_eq!(replicas.run().await, Outcome::Ok);

    // redis.flush on `cache` flushes the master, cache-b; its replica follows.
    assert_eq!(raw(bp, "SET patient:1 new"), "+OK");
    {
        use medic::remedy::redis_flush::{RedisFlush, RedisFlushParams};
        use medic::remedy::{Action, ActionContext};
        let flush = RedisFlush::build(
            &RedisFlushParams {
                target: "cache".into(),
                pattern: Some("patient:*".into()),
            },
            &config,
        )
        .unwrap();
        let ctx = ActionContext::new("t:0:1", Duration::from_secs(10));
        let pre = flush.preflight(&ctx).await;
        assert!(pre.refusal().is_none(), "{pre:#?}");
        let r = flush.run(&ctx).await;
        assert!(r.ok && r.data["deleted"] == 1, "{r:#?}");
    }
    assert_eq!(raw(bp, "EXISTS patient:1"), ":0");
    assert!(
        calls(bp, "scan") >= 1 && calls(ap, "scan") == 0,
        "the flush scanned the master only"
    );
    wait_until(
        Duration::from_secs(10),
        "the flush to reach cache-a",
        || raw(ap, "EXISTS patient:1") == ":0",
    );

    // The old master dies: `cache` stays on cache-b.
    let on_b = calls(bp, "set");
    a.kill();
    assert_eq!(master.run().await, Outcome::Ok);
    assert_eq!(calls(bp, "set"), on_b + 1);
    drop(_b);
    let o = master.run().await;
    assert!(
        matches!(&o, Outcome::Failing(d) if d.starts_with("cache: no member answers as master (cache-a: ")),
        "{o:?}"
    );
}
