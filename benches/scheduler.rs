//! Scheduler load: the real `medic` binary runs 10,000 checks (8,000 http
//! and 2,000 tcp) at a 10 s interval against a local fake target server in
//! this process. The target records when each http check's request arrives;
//! the scheduling jitter of a check is how far the gap between two of its
//! requests strays from 10 s. medic's CPU and RSS come from /proc.
//!
//! `cargo bench --bench scheduler` runs the full load (about 80 s) and
//! prints the figures (or run the harness binary with `--bench` and
//! `MEDIC_BIN=target/release/medic`); under `cargo test` (no `--bench`) it runs a small
//! load for a few seconds, to keep the harness itself working.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::get;

type Arrivals = Arc<Mutex<HashMap<u32, Vec<Instant>>>>;

struct Load {
    http: u32,
    tcp: u32,
    every: Duration,
    /// How long medic runs in all.
    run: Duration,
    /// CPU is measured after this much time (start-up excluded).
    warm_up: Duration,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let load = if full {
        Load {
            http: 8_000,
            tcp: 2_000,
            every: Duration::from_secs(10),
            run: Duration::from_secs(80),
            warm_up: Duration::from_secs(25),
        }
    } else {
        Load {
            http: 150,
            tcp: 50,
            every: Duration::from_secs(2),
            run: Duration::from_secs(9),
            warm_up: Duration::from_secs(3),
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let arrivals: Arrivals = Arc::default();
    let (http_port, tcp_port) = rt.block_on(serve(arrivals.clone()));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &load, http_port, tcp_port);

    // MEDIC_BIN: measure another build of medic (e.g. target/release/medic
    // from a debug harness) without rebuilding the harness.
    let bin = std::env::var("MEDIC_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_medic").into());
    let mut medic = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("medic.log")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let pid = medic.id();
    let mut max_rss_kb = 0u64;
    let mut cpu_at_warm_up = None;
    while started.elapsed() < load.run {
        std::thread::sleep(Duration::from_millis(500));
        assert_alive(&mut medic, dir.path());
        max_rss_kb = max_rss_kb.max(rss_kb(pid));
        if cpu_at_warm_up.is_none() && started.elapsed() >= load.warm_up {
            cpu_at_warm_up = Some((Instant::now(), cpu_ticks(pid)));
        }
    }
    let (t0, c0) = cpu_at_warm_up.unwrap();
    let cpu_share = (cpu_ticks(pid) - c0) as f64 / clock_ticks() / t0.elapsed().as_secs_f64();
    medic.kill().unwrap();
    medic.wait().unwrap();

    // Jitter: every gap between consecutive requests of one check, from its
    // second request on (the first is placed by the start-up spread).
    let arrivals = arrivals.lock().unwrap();
    let mut jitter_ms: Vec<f64> = arrivals
        .values()
        .flat_map(|times| {
            times
                .windows(2)
                .map(|w| (w[1].duration_since(w[0]).as_secs_f64() - load.every.as_secs_f64()).abs())
                .map(|d| d * 1000.0)
                .collect::<Vec<_>>()
        })
        .collect();
    jitter_ms.sort_by(f64::total_cmp);
    let checked = arrivals.len();
    assert_eq!(
        checked, load.http as usize,
        "every http check must have run (saw {checked} of {})",
        load.http
    );
    assert!(!jitter_ms.is_empty(), "no check ran twice");
    let pct = |p: f64| jitter_ms[((jitter_ms.len() - 1) as f64 * p).round() as usize];
    println!(
        "scheduler: {} http + {} tcp checks every {:?}: jitter p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         over {} intervals; medic CPU {:.1} % of one core; max RSS {} MB",
        load.http,
        load.tcp,
        load.every,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        jitter_ms.len(),
        cpu_share * 100.0,
        max_rss_kb / 1024
    );
}

/// The fake targets: an HTTP server recording arrivals per path, and a TCP
/// listener accepting and closing connections.
async fn serve(arrivals: Arrivals) -> (u16, u16) {
    async fn hit(State(a): State<Arrivals>, UrlPath(n): UrlPath<u32>) -> &'static str {
        a.lock().unwrap().entry(n).or_default().push(Instant::now());
        "ok"
    }
    let app = Router::new().route("/c/{n}", get(hit)).with_state(arrivals);
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_port = http.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(http, app).await.unwrap() });
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = tcp.accept().await {
            drop(s);
        }
    });
    (http_port, tcp_port)
}

/// A dry-run config and rule files: 100 checks per scenario file.
fn write_config(dir: &Path, load: &Load, http_port: u16, tcp_port: u16) -> std::path::PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let every = format!("{}s", load.every.as_secs());
    let checks: Vec<String> = (0..load.http)
        .map(|i| format!("{{ http: {{ url: \"http://127.0.0.1:{http_port}/c/{i}\" }} }}"))
        .chain((0..load.tcp).map(|_| format!("{{ tcp: {{ address: \"127.0.0.1:{tcp_port}\" }} }}")))
        .collect();
    for (file, chunk) in checks.chunks(100).enumerate() {
        let mut y =
            format!("scenario: bench-{file}\nsummary: load\nseverity: info\nrto: 5m\nsymptoms:\n");
        for (i, check) in chunk.iter().enumerate() {
            writeln!(
                y,
                "  c{i}:\n    check: {check}\n    every: {every}\n    timeout: 1s\n    for: 30s"
            )
            .unwrap();
        }
        let names: Vec<String> = (0..chunk.len()).map(|i| format!("c{i}")).collect();
        writeln!(
            y,
            "when: {{ any: [{}] }}\nplan:\n  - name: noop\n    action: exec\n    args: [\"true\"]\n    \
             verify: {{ within: 1m }}\n    limit: {{ attempts: 1, per: 1h }}\nescalation: default",
            names.join(", ")
        )
        .unwrap();
        std::fs::write(rules.join(format!("bench-{file}.yaml")), y).unwrap();
    }
    let config = dir.join("medic.yaml");
    std::fs::write(
        &config,
        "mode: dry-run\n\
         rules: [rules]\n\
         store: { sqlite: { path: medic.db } }\n\
         limits: { concurrent_checks: 1024 }\n\
         notifiers: { log: { log: {} } }\n\
         escalation: { default: { levels: [ { after: 0m, notify: [log] } ] } }\n",
    )
    .unwrap();
    config
}

fn assert_alive(medic: &mut Child, dir: &Path) {
    if let Some(status) = medic.try_wait().unwrap() {
        let log = std::fs::read_to_string(dir.join("medic.log")).unwrap_or_default();
        panic!("medic exited early ({status}):\n{log}");
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) in parens.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
