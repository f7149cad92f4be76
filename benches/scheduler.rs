//! Scheduler load: the real `medic` binary runs N checks (four in five
//! http, one in five tcp) at a 10 s interval, in rule files of 1,000
//! symptoms each as a user would write them, against a local fake target
//! server in this process. The target records when each http check's
//! request arrives; the scheduling jitter of a check is how far the gap
//! between two of its requests strays from 10 s. medic's CPU and RSS come
//! from /proc; at the end of a run the harness scrapes medic's `/metrics`
//! and counts its bytes and lines.
//!
//! `cargo bench --bench scheduler` runs 10,000 checks once (about 60 s);
//! `cargo bench --bench scheduler -- --checks 1000,10000,50000,100000
//! --runs 5 --csv scheduler.csv` runs every size five times (sizes
//! alternate: 1k 10k 50k 100k 1k …) and prints min, median and max per
//! size and the memory per check (the slope of RSS against checks).
//! `MEDIC_BIN=target/release/medic` measures that build (or run the harness
//! binary with `--bench`). Under `cargo test` (no `--bench`) it runs a
//! small load for a few seconds, to keep the harness itself working.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::get;

type Arrivals = Arc<Mutex<HashMap<u32, Vec<Instant>>>>;

/// Symptoms per rule file, as a user with many targets would group them.
const PER_FILE: usize = 1_000;

struct Load {
    checks: u32,
    every: Duration,
    /// How long medic runs in all.
    run: Duration,
    /// CPU is measured after this much time (start-up excluded).
    warm_up: Duration,
}

impl Load {
    fn http(&self) -> u32 {
        self.checks - self.tcp()
    }
    fn tcp(&self) -> u32 {
        self.checks / 5
    }
}

/// What one run measured.
struct Run {
    checks: u32,
    jitter_p50_ms: f64,
    jitter_p99_ms: f64,
    jitter_max_ms: f64,
    intervals: usize,
    cpu_pct: f64,
    max_rss_kb: u64,
    /// From spawn to the HTTP listener answering (rule files loaded).
    ready_s: f64,
    metrics_bytes: usize,
    metrics_lines: usize,
}

struct Args {
    full: bool,
    sizes: Vec<u32>,
    runs: usize,
    secs: Option<u64>,
    csv: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        full: false,
        sizes: vec![],
        runs: 1,
        secs: None,
        csv: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => a.full = true,
            "--checks" => {
                a.sizes = value("--checks")
                    .split(',')
                    .map(|s| s.trim().replace('_', "").parse().expect("--checks N[,N…]"))
                    .collect()
            }
            "--runs" => a.runs = value("--runs").parse().expect("--runs N"),
            "--secs" => a.secs = Some(value("--secs").parse().expect("--secs N")),
            "--csv" => a.csv = Some(value("--csv").into()),
            // cargo's own harness flags, and test-name filters.
            _ => {}
        }
    }
    a
}

fn main() {
    let a = args();
    let loads: Vec<Load> = if a.full {
        let secs = a.secs.unwrap_or(60);
        let sizes = if a.sizes.is_empty() {
            vec![10_000]
        } else {
            a.sizes.clone()
        };
        sizes
            .iter()
            .map(|&checks| Load {
                checks,
                every: Duration::from_secs(10),
                run: Duration::from_secs(secs),
                warm_up: Duration::from_secs(secs / 3),
            })
            .collect()
    } else {
        vec![Load {
            checks: 200,
            every: Duration::from_secs(2),
            run: Duration::from_secs(9),
            warm_up: Duration::from_secs(3),
        }]
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let arrivals: Arrivals = Arc::default();
    let (http_port, tcp_port) = rt.block_on(serve(arrivals.clone()));
    // MEDIC_BIN: measure another build of medic (e.g. target/release/medic
    // from a debug harness) without rebuilding the harness.
    let bin = std::env::var("MEDIC_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_medic").into());
    // medic runs in its run's directory: a relative MEDIC_BIN is from here.
    let bin = std::fs::canonicalize(&bin)
        .unwrap_or_else(|e| panic!("MEDIC_BIN {bin}: {e}"))
        .display()
        .to_string();

    let mut runs: Vec<Run> = vec![];
    for round in 0..a.runs {
        for load in &loads {
            arrivals.lock().unwrap().clear();
            let r = run(&bin, load, &arrivals, http_port, tcp_port);
            println!(
                "scheduler run {}: {} checks ({} http + {} tcp) every {:?}: jitter p50 {:.1} ms, \
                 p99 {:.1} ms, max {:.1} ms over {} intervals; medic CPU {:.1} % of one core; \
                 max RSS {} MB; ready after {:.1} s; /metrics {} bytes, {} lines",
                round + 1,
                load.checks,
                load.http(),
                load.tcp(),
                load.every,
                r.jitter_p50_ms,
                r.jitter_p99_ms,
                r.jitter_max_ms,
                r.intervals,
                r.cpu_pct,
                r.max_rss_kb / 1024,
                r.ready_s,
                r.metrics_bytes,
                r.metrics_lines
            );
            runs.push(r);
        }
    }
    summarize(&runs);
    if let Some(path) = &a.csv {
        let mut csv = String::from(
            "checks,jitter_p50_ms,jitter_p99_ms,jitter_max_ms,intervals,cpu_pct,max_rss_kb,ready_s,metrics_bytes,metrics_lines\n",
        );
        for r in &runs {
            writeln!(
                csv,
                "{},{:.2},{:.2},{:.2},{},{:.2},{},{:.2},{},{}",
                r.checks,
                r.jitter_p50_ms,
                r.jitter_p99_ms,
                r.jitter_max_ms,
                r.intervals,
                r.cpu_pct,
                r.max_rss_kb,
                r.ready_s,
                r.metrics_bytes,
                r.metrics_lines
            )
            .unwrap();
        }
        std::fs::write(path, csv).unwrap();
        println!("wrote {}", path.display());
    }
}

/// One run of medic against the fake target.
fn run(bin: &str, load: &Load, arrivals: &Arrivals, http_port: u16, tcp_port: u16) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let config = write_config(dir.path(), load, http_port, tcp_port, listen);
    let mut medic = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("medic.log")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let pid = medic.id();
    let mut max_rss_kb = 0u64;
    let mut cpu_at_warm_up = None;
    let mut ready = None;
    while started.elapsed() < load.run {
        std::thread::sleep(Duration::from_millis(if ready.is_none() {
            50
        } else {
            500
        }));
        assert_alive(&mut medic, dir.path());
        max_rss_kb = max_rss_kb.max(rss_kb(pid));
        if ready.is_none() && std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok() {
            ready = Some(started.elapsed());
        }
        if cpu_at_warm_up.is_none() && started.elapsed() >= load.warm_up {
            cpu_at_warm_up = Some((Instant::now(), cpu_ticks(pid)));
        }
    }
    let (t0, c0) = cpu_at_warm_up.unwrap();
    let cpu_share = (cpu_ticks(pid) - c0) as f64 / clock_ticks() / t0.elapsed().as_secs_f64();
    let ready = ready.unwrap_or_else(|| {
        let log = std::fs::read_to_string(dir.path().join("medic.log")).unwrap_or_default();
        panic!(
            "medic's HTTP listener on port {listen} never answered in {:?}:\n{log}",
            load.run
        )
    });
    let metrics = scrape(listen, dir.path());
    max_rss_kb = max_rss_kb.max(rss_kb(pid));
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
        checked,
        load.http() as usize,
        "every http check must have run (saw {checked} of {})",
        load.http()
    );
    assert!(!jitter_ms.is_empty(), "no check ran twice");
    let pct = |p: f64| jitter_ms[((jitter_ms.len() - 1) as f64 * p).round() as usize];
    Run {
        checks: load.checks,
        jitter_p50_ms: pct(0.5),
        jitter_p99_ms: pct(0.99),
        jitter_max_ms: pct(1.0),
        intervals: jitter_ms.len(),
        cpu_pct: cpu_share * 100.0,
        max_rss_kb,
        ready_s: ready.as_secs_f64(),
        metrics_bytes: metrics.len(),
        metrics_lines: metrics.lines().count(),
    }
}

/// Min, median and max per size, and the memory per check.
fn summarize(runs: &[Run]) {
    let mut sizes: Vec<u32> = runs.iter().map(|r| r.checks).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let stats = |size: u32, f: &dyn Fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().filter(|r| r.checks == size).map(f).collect();
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1], v.len())
    };
    println!("summary (min / median / max):");
    for &size in &sizes {
        let (c0, c1, c2, n) = stats(size, &|r| r.cpu_pct);
        let (m0, m1, m2, _) = stats(size, &|r| r.max_rss_kb as f64 / 1024.0);
        let (j0, j1, j2, _) = stats(size, &|r| r.jitter_p99_ms);
        let (r0, r1, r2, _) = stats(size, &|r| r.ready_s);
        let (_, b1, _, _) = stats(size, &|r| r.metrics_bytes as f64);
        println!(
            "  {size} checks, {n} runs: CPU {c0:.1} / {c1:.1} / {c2:.1} % of a core; max RSS \
             {m0:.0} / {m1:.0} / {m2:.0} MB; p99 jitter {j0:.1} / {j1:.1} / {j2:.1} ms; ready \
             {r0:.1} / {r1:.1} / {r2:.1} s; /metrics {b1:.0} bytes"
        );
    }
    if sizes.len() >= 2 {
        let (lo, hi) = (sizes[0], sizes[sizes.len() - 1]);
        let rss = |s| stats(s, &|r| r.max_rss_kb as f64 * 1024.0).1;
        let per_check = (rss(hi) - rss(lo)) / f64::from(hi - lo);
        println!(
            "  memory per check (median RSS, {lo} → {hi} checks): {:.0} bytes",
            per_check
        );
    }
}

/// A port nobody listens on now (medic binds it a moment later).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `GET /metrics` over a plain socket: the body.
fn scrape(port: u16, dir: &Path) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| {
        let log = std::fs::read_to_string(dir.join("medic.log")).unwrap_or_default();
        panic!("cannot reach medic's /metrics on port {port}: {e}\n{log}")
    });
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer from /metrics: {answer:?}"));
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_string()
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

/// A dry-run config and rule files of [`PER_FILE`] symptoms each.
fn write_config(dir: &Path, load: &Load, http_port: u16, tcp_port: u16, listen: u16) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let every = format!("{}s", load.every.as_secs());
    let checks: Vec<String> = (0..load.http())
        .map(|i| format!("{{ http: {{ url: \"http://127.0.0.1:{http_port}/c/{i}\" }} }}"))
        .chain(
            (0..load.tcp()).map(|_| format!("{{ tcp: {{ address: \"127.0.0.1:{tcp_port}\" }} }}")),
        )
        .collect();
    for (file, chunk) in checks.chunks(PER_FILE).enumerate() {
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
        format!(
            "mode: dry-run\n\
             rules: [rules]\n\
             store: {{ sqlite: {{ path: medic.db }} }}\n\
             limits: {{ concurrent_checks: 1024 }}\n\
             http: {{ listen: \"127.0.0.1:{listen}\", open_reads: true }}\n\
             notifiers: {{ log: {{ log: {{}} }} }}\n\
             escalation: {{ default: {{ levels: [ {{ after: 0m, notify: [log] }} ] }} }}\n"
        ),
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
