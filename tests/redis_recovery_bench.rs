//! Benchmark (ignored by `cargo test`; run it with
//! `cargo test --release --test redis_recovery_bench -- --ignored --nocapture`):
//! Redis killed with SIGKILL → restarted by the real medic binary and
//! answering PING again, with 1 s checks acting on the first failure (as
//! Monit is configured for the comparison in docs/performance.md). Each kill lands
//! at a different point of the check interval; the test prints every run,
//! the median and the p95.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
#[ignore = "benchmark: cargo test --release --test redis_recovery_bench -- --ignored --nocapture"]
fn redis_sigkill_to_ping_benchmark() {
    let runs: usize = std::env::var("MEDIC_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // A plain port check each second (what Monit is configured with), then
    // the redis check, whose held connection notices the kill at once.
    bench(
        runs,
        "tcp port check every 1s",
        "{ tcp: { target: cache } }",
    );
    bench(
        runs,
        "redis check every 1s + held connection",
        "{ redis: { target: cache, ping: true } }",
    );
}

fn bench(runs: usize, label: &str, check: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pidfile = dir.path().join("redis.pid");
    let argv: Vec<String> = redis_argv(port)
        .into_iter()
        .chain(["--daemonize", "yes", "--pidfile"].map(String::from))
        .chain([pidfile.display().to_string()])
        .collect();
    let config = redis_setup(
        dir.path(),
        port,
        &format!(
            "check: {check}\n\
             every: 1s\n\
             timeout: 1s\n\
             for: 0s\n\
             clear_for: 1s"
        ),
        &format!(
            "  - name: restart-redis
    action: exec
    args: {}
    timeout: 10s
    verify: {{ clears: redis_down, within: 10s }}
    limit: {{ attempts: 1000, per: 1h }}
limit: {{ attempts: 1000, per: 1h }}
",
            serde_json::to_string(&argv).unwrap()
        ),
    );
    let db = dir.path().join("state/medic.db");
    // Started as medic would start it, so the kill is the same every time.
    let status = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until(Duration::from_secs(10), "redis", || redis_ping(port));
    let mut medic = Medic::start(&config, &dir.path().join("medic.log"));
    std::thread::sleep(Duration::from_millis(1500));
    let mut times = Vec::new();
    for i in 0..runs {
        // Land the kill at a different phase of the 1 s check interval.
        std::thread::sleep(Duration::from_millis(137 * i as u64 % 1000));
        let killed = Instant::now();
        kill_pidfile(&pidfile);
        while redis_ping(port) {
            std::thread::sleep(Duration::from_millis(1));
        }
        while !redis_ping(port) {
            assert!(killed.elapsed() < Duration::from_secs(30), "not restarted");
            std::thread::sleep(Duration::from_millis(2));
        }
        let took = killed.elapsed().as_secs_f64();
        eprintln!("run {}: {:.0} ms", i + 1, took * 1000.0);
        times.push(took);
        wait_until(Duration::from_secs(30), "the incident to resolve", || {
            resolved_incidents(&db) == i + 1
        });
    }
    assert!(medic.stop().success());
    kill_pidfile(&pidfile);
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let p95 = times[((times.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)];
    eprintln!(
        "Redis SIGKILL → restarted and answering PING, {label} ({runs} runs): median {:.0} ms, p95 {:.0} ms",
        median * 1000.0,
        p95 * 1000.0
    );
}
