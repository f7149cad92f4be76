//! `redis.flush` against real redis-servers the test starts: a selective
//! flush of 100,000 keys deletes exactly the matching ones; a flush aimed
//! at a replica is refused by its preflight; FLUSHALL ASYNC empties a master.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Redis, free_port, redis_argv, redis_ping, wait_until};
use medic::remedy::redis_flush::{RedisFlush, RedisFlushParams};
use medic::remedy::{Action, ActionContext};

fn config(targets: &[(&str, u16)]) -> medic::config::Config {
    let mut y = String::from("targets:\n");
    for (name, port) in targets {
        y.push_str(&format!(
            "  {name}: {{ redis: {{ address: \"127.0.0.1:{port}\" }} }}\n"
        ));
    }
    medic::config::load_str("medic.yaml", &y).unwrap()
}

fn flush(target: &str, pattern: Option<&str>, config: &medic::config::Config) -> RedisFlush {
    RedisFlush::build(
        &RedisFlushParams {
            target: target.into(),
            pattern: pattern.map(str::to_string),
        },
        config,
    )
    .unwrap()
}

async fn conn(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// 100,000 keys: every third one a `patient:` key.
async fn seed(port: u16) -> (u64, u64) {
    let mut c = conn(port).await;
    let mut patients = 0;
    for chunk in (0..100_000u32).collect::<Vec<_>>().chunks(1000) {
        let mut cmd = redis::cmd("MSET");
        for i in chunk {
            if i % 3 == 0 {
                patients += 1;
                cmd.arg(format!("patient:{i}")).arg("cached");
            } else {
                cmd.arg(format!("session:{i}")).arg("keep");
            }
        }
        let _: () = cmd.query_async(&mut c).await.unwrap();
    }
    (patients, 100_000 - patients)
}

async fn count_matching(port: u16, pattern: &str) -> u64 {
    let mut c = conn(port).await;
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .unwrap();
        n += keys.len() as u64;
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

async fn dbsize(port: u16) -> u64 {
    redis::cmd("DBSIZE")
        .query_async(&mut conn(port).await)
        .await
        .unwrap()
}

fn ctx() -> ActionContext {
    ActionContext::new("t:0:1", Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selective_flush_of_100k_keys_deletes_exactly_the_matching_keys() {
    let redis = Redis::start_free();
    let (patients, sessions) = seed(redis.port).await;
    assert_eq!(dbsize(redis.port).await, 100_000);
    let cfg = config(&[("cache", redis.port)]);
    let a = flush("cache", Some("patient:*"), &cfg);
    let pre = a.preflight(&ctx()).await;
    assert!(pre.refusal().is_none(), "{pre:#?}");
    assert_eq!(pre.gates[0].detail, "role:master");
    assert_eq!(pre.data["dbsize"], 100_000);
    let r = a.run(&ctx()).await;
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.data["deleted"], patients);
    assert_eq!(count_matching(redis.port, "patient:*").await, 0);
    assert_eq!(count_matching(redis.port, "session:*").await, sessions);
    assert_eq!(dbsize(redis.port).await, sessions);
}

/// A replica of `master_port`, killed and reaped on drop.
struct Replica {
    port: u16,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replica_of(master_port: u16) -> Replica {
    let port = free_port();
    let argv = redis_argv(port);
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .args(["--replicaof", "127.0.0.1", &master_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the replica to answer", || {
        redis_ping(port)
    });
    Replica { port, child }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_aimed_at_a_replica_is_refused() {
    let master = Redis::start_free();
    let mut c = conn(master.port).await;
    let _: () = redis::cmd("SET")
        .arg("patient:1")
        .arg("x")
        .query_async(&mut c)
        .await
        .unwrap();
    let replica = replica_of(master.port);
    let cfg = config(&[("cache-replica", replica.port)]);
    for pattern in [None, Some("patient:*")] {
        let a = flush("cache-replica", pattern, &cfg);
        let pre = a.preflight(&ctx()).await;
        let g = pre.refusal().expect("refused");
        assert_eq!(g.name, "role-is-master");
        assert_eq!(
            g.detail,
            format!(
                "127.0.0.1:{} answers role:slave; flush the master, not a replica",
                replica.port
            )
        );
    }
    assert_eq!(dbsize(master.port).await, 1, "nothing flushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_async_empties_the_master() {
    let redis = Redis::start_free();
    let mut c = conn(redis.port).await;
    let _: () = redis::cmd("MSET")
        .arg("a")
        .arg(1)
        .arg("b")
        .arg(2)
        .query_async(&mut c)
        .await
        .unwrap();
    let cfg = config(&[("cache", redis.port)]);
    let r = flush("cache", None, &cfg).run(&ctx()).await;
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.detail, "FLUSHALL ASYNC: 2 keys in the db before");
    // FLUSHALL ASYNC frees memory in the background; the keyspace is
    // empty at once.
    assert_eq!(dbsize(redis.port).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_is_refused_not_flushed() {
    let cfg = config(&[("cache", free_port())]);
    let pre = flush("cache", None, &cfg).preflight(&ctx()).await;
    let g = pre.refusal().expect("refused");
    assert_eq!(g.name, "reachable");
}
