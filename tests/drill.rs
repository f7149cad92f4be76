//! `medic drill`, the real binary: sandbox drills of the shipped
//! scenarios end to end, and drills against a configured target (refused
//! unless marked `drill: allowed`, confirmed unless `--yes`).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{free_port, kill_pidfile, redis_argv, redis_ping, wait_until};

fn medic(args: &[&str], dir: &Path, stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the sandbox drill of `scenario` and checks its report.
fn sandbox(scenario: &str) -> String {
    let out = medic(
        &["drill", "--sandbox", scenario],
        Path::new(env!("CARGO_MANIFEST_DIR")),
        "",
    );
    let t = text(&out);
    println!("{t}");
    assert!(out.status.success(), "{t}");
    assert!(t.contains(&format!("drill report: {scenario} on")), "{t}");
    assert!(t.contains("s after the injection (RTO"), "{t}");
    assert!(t.contains(": met)"), "{t}");
    assert!(t.contains("resolved: all symptoms clear"), "{t}");
    t
}

#[test]
fn sandbox_drill_redis_cache_failure() {
    let t = sandbox("redis-cache-failure");
    assert!(t.contains("restart-redis: succeeded"), "{t}");
    assert!(t.contains("100 of 100 cached keys gone"), "{t}");
}

#[test]
fn sandbox_drill_application_service_failure() {
    let t = sandbox("application-service-failure");
    assert!(t.contains("restart-backend: succeeded"), "{t}");
    assert!(
        t.contains("rollback-backend (k8s.rollout-undo) is skipped"),
        "{t}"
    );
    assert!(
        t.contains("no data at stake: a stateless backend, which answers again"),
        "{t}"
    );
    // The Kubernetes symptoms have nothing to watch in the sandbox.
    assert!(t.contains("backend_unavailable (kubernetes)"), "{t}");
}

#[test]
fn sandbox_drill_database_failure() {
    let t = sandbox("database-failure");
    assert!(
        t.contains("promote-replica: succeeded, repoint-backend: succeeded"),
        "{t}"
    );
    assert!(t.contains("timeline 1 → 2"), "{t}");
    // The restart in place comes first in the shipped rule; the sandbox
    // configures no restart method, so it is skipped and the failover drilled.
    assert!(
        t.contains("step restart-in-place (postgres.restart) is skipped: the sandbox configures no restart method"),
        "{t}"
    );
    // Streaming replication, promotion after a crash: nothing acknowledged
    // may be lost beyond the RPO (here: nothing at all, idle replica).
    assert!(t.contains("acknowledged writes lost"), "{t}");
    assert!(t.contains("(RPO 1day: met)"), "{t}");
}

#[test]
fn sandbox_drill_data_corruption() {
    let t = sandbox("data-corruption");
    assert!(
        t.contains("0 of 500 good appointments lost; 25 corrupted rows moved"),
        "{t}"
    );
    assert!(
        t.contains("quarantine-orphaned-appointments: succeeded"),
        "{t}"
    );
}

#[test]
fn sandbox_drill_monitoring_system_failure() {
    let t = sandbox("monitoring-system-failure");
    assert!(t.contains("killed Prometheus (SIGKILL) holding "), "{t}");
    assert!(
        !t.contains("holding 0 samples"),
        "scrapes stored first: {t}"
    );
    assert!(t.contains("restart-prometheus: succeeded"), "{t}");
    // The restarted Prometheus answered the probe with what it kept.
    assert!(
        t.contains("samples scraped before the kill kept (WAL replayed)"),
        "{t}"
    );
    assert!(
        t.contains("step restart-prometheus: starts the sandbox's Prometheus again instead (systemd-restart)"),
        "{t}"
    );
    // The Kubernetes API and the scrape targets have nothing to watch here.
    assert!(t.contains("kube_api_unreachable (source)"), "{t}");
    assert!(t.contains("scrapes_failing (promql)"), "{t}");
}

#[test]
fn sandbox_drill_backup_failure() {
    let t = sandbox("backup-failure");
    assert!(t.contains("inverted 64 bytes at offset "), "{t}");
    // backup.verify found the damage by its checksum, and the incident
    // paged people (the rule's plan is empty).
    assert!(t.contains("differs from the recorded"), "{t}");
    assert!(t.contains("escalated"), "{t}");
    assert!(
        t.contains("and took a fresh backup by hand (medic backup run db-backup)"),
        "{t}"
    );
    assert!(
        t.contains("no data lost (the database was never touched)"),
        "{t}"
    );
    assert!(t.contains("is verified intact"), "{t}");
    assert!(t.contains("(RPO 1day: met)"), "{t}");
}

/// Two regions, a Route 53 (moto_server) and fronts that follow its
/// record: the whole primary region goes down, the replica in the
/// secondary is promoted, DNS fails over, and the incident resolves.
#[test]
fn sandbox_drill_complete_infrastructure_failure() {
    let t = sandbox("complete-infrastructure-failure");
    assert!(
        t.contains("promote-secondary-db: succeeded, dns-failover: succeeded"),
        "{t}"
    );
    assert!(t.contains("the primary region went down at once"), "{t}");
    // The promotion after the crash, its own verification.
    assert!(t.contains("timeline 1 → 2"), "{t}");
    assert!(t.contains("acknowledged writes lost"), "{t}");
    assert!(t.contains("(RPO 1h: met)"), "{t}");
    // It ends on the secondary region: DNS there, the database writable.
    assert!(
        t.contains("DNS app.sandbox.example. A = 127.0.0.2 (the secondary region)"),
        "{t}"
    );
    assert!(
        t.contains(
            "the secondary (db-secondary) is writable: not in recovery, an INSERT committed"
        ),
        "{t}"
    );
    // The shipped minutes, shortened and said.
    assert!(
        t.contains("fires after 3s failing and clears after 3s healthy instead of the shipped minutes: app_down (for 2m, clear_for 5m)"),
        "{t}"
    );
    assert!(
        t.contains("step promote-secondary-db promotes once the primary was unreachable for 4 checks over 5s instead of 12 checks over 2m"),
        "{t}"
    );
    assert!(
        t.contains("app_down checks every 1s instead of every 10s"),
        "{t}"
    );
    for step in ["promote-secondary-db", "dns-failover"] {
        assert!(
            t.contains(&format!(
                "step {step} needs approval: running the drill gives it"
            )),
            "{t}"
        );
    }
}

#[test]
fn sandbox_refuses_scenarios_it_cannot_stage() {
    let out = medic(
        &["drill", "--sandbox", "no-such-scenario"],
        Path::new(env!("CARGO_MANIFEST_DIR")),
        "",
    );
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("the sandbox drills redis-cache-failure, database-failure, data-corruption, application-service-failure, monitoring-system-failure, backup-failure, complete-infrastructure-failure; not \"no-such-scenario\""),
        "{t}"
    );
}

const RULE: &str = "
scenario: redis-cache-failure
summary: Redis down
severity: high
rto: 5m
symptoms:
  redis_down:
    check: { redis: { target: cache, ping: true } }
    every: 1s
    timeout: 1s
    for: 0s
    clear_for: 2s
when: { any: [redis_down] }
plan:
  - name: restart-redis
    action: exec
    args: ARGS
    verify: { clears: redis_down, within: 1m }
escalation: default
";

/// A config with a Redis target (marked for drills or not) and a rule
/// whose restart starts redis-server again as a daemon.
fn setup(dir: &Path, port: u16, drills: &str) {
    let mut args = redis_argv(port);
    args.extend(
        [
            "--daemonize",
            "yes",
            "--pidfile",
            &dir.join("redis.pid").display().to_string(),
        ]
        .map(String::from),
    );
    std::fs::create_dir(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("rules/redis.yaml"),
        RULE.replace("ARGS", &serde_json::to_string(&args).unwrap()),
    )
    .unwrap();
    std::fs::write(
        dir.join("medic.yaml"),
        format!(
            "mode: enforce\nrules: [rules]\nstore: {{ sqlite: {{ path: medic.db }} }}\n\
             targets:\n  cache: {{ redis: {{ address: \"127.0.0.1:{port}\" }} }}\n{drills}"
        ),
    )
    .unwrap();
}

#[test]
fn drill_refuses_targets_not_marked_for_drills() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), free_port(), "");
    let out = medic(
        &["drill", "redis-cache-failure", "--target", "cache", "--yes"],
        dir.path(),
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("target \"cache\" is not marked for drills"),
        "{}",
        text(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    setup(
        dir.path(),
        free_port(),
        "drills:\n  cache: { drill: forbidden, inject: [\"true\"] }\n",
    );
    let out = medic(
        &["drill", "redis-cache-failure", "--target", "cache", "--yes"],
        dir.path(),
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("marked `drill: forbidden`"),
        "{}",
        text(&out)
    );
}

#[test]
fn drill_on_a_marked_target_injects_detects_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let argv = redis_argv(port);
    let mut redis = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "redis", || redis_ping(port));
    let pid = redis.id().to_string();
    setup(
        dir.path(),
        port,
        &format!("drills:\n  cache: {{ drill: allowed, inject: [kill, \"-9\", \"{pid}\"] }}\n"),
    );

    // Without --yes it asks, and a wrong answer does nothing.
    let out = medic(
        &["drill", "redis-cache-failure", "--target", "cache"],
        dir.path(),
        "no\n",
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not confirmed; nothing was done"),
        "{}",
        text(&out)
    );
    assert!(redis_ping(port), "nothing was injected");

    // Confirmed by typing the target's name: real injection, real restart.
    let out = medic(
        &["drill", "redis-cache-failure", "--target", "cache"],
        dir.path(),
        "cache\n",
    );
    let _ = redis.wait(); // the killed original
    let t = text(&out);
    println!("{t}");
    kill_pidfile(&dir.path().join("redis.pid"));
    assert!(out.status.success(), "{t}");
    assert!(t.contains(&format!("injected: kill -9 {pid}")), "{t}");
    assert!(t.contains("recovery") && t.contains("(RTO 5m: met)"), "{t}");
    assert!(t.contains("restart-redis: succeeded"), "{t}");
}

/// A webhook receiver on a free port: every POST body, in order.
fn receiver() -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if tx
                .send(String::from_utf8_lossy(&body).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    (port, rx)
}

/// The scheduled DR drill: a `drill.sandbox` job of a running medic, run
/// now by hand (`medic backup run`, as its schedule would), runs the
/// sandbox drill in a child medic, stores the report on the run and sends
/// it to the channel (a webhook).
#[test]
fn a_drill_job_runs_the_sandbox_drill_stores_the_report_and_notifies_the_channel() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let (hook, bodies) = receiver();
    let config = common::enforce_config(dir.path(), http, "2s");
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str(&format!(
        "notifiers:\n  log: {{ log: {{}} }}\n  channel: {{ webhook: {{ url: \"http://127.0.0.1:{hook}/drills\" }} }}\n\
         jobs:\n  quarterly-drill:\n    schedule: \"0 9 1 1,4,7,10 *\"\n    \
         drill.sandbox: {{ scenario: redis-cache-failure, rules: {}, notify: [channel] }}\n",
        serde_json::Value::from(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("rules")
                .display()
                .to_string()
        )
    ));
    std::fs::write(&config, yaml).unwrap();
    // The daemon's own scenario: its HTTP port, open while it runs.
    std::fs::write(
        dir.path().join("rules/self.yaml"),
        common::port_closed_rule("self", "medic's port closed", http, 1),
    )
    .unwrap();
    let log = dir.path().join("medic.log");
    let mut medic = common::Medic::start(&config, &log);
    let base = format!("http://127.0.0.1:{http}");
    wait_ready(&base);
    let out = run_job(&base, "quarterly-drill");
    let t = text(&out);
    println!("{t}");
    assert!(out.status.success(), "{t}\n{}", medic.log_text());
    assert!(t.contains("succeeded"), "{t}");

    let (code, body) = get(&format!("{base}/api/v1/jobs/quarterly-drill/runs"));
    assert_eq!(code, 200, "{body}");
    let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
    let run = &runs[0]["run"];
    assert_eq!(run["kind"], "drill.sandbox", "{body}");
    assert_eq!(run["outcome"], "succeeded", "{body}");
    let report = run["data"]["report"].as_str().unwrap_or_default();
    assert!(
        report.starts_with("drill report: redis-cache-failure on cache (sandbox)"),
        "{body}"
    );
    assert!(report.contains("restart-redis: succeeded"), "{body}");
    assert!(run["data"]["detection_s"].as_f64().is_some(), "{body}");
    let recovery = run["data"]["recovery_s"].as_f64().unwrap_or(f64::MAX);
    assert!(recovery < 300.0, "within the RTO of 5m: {body}");
    assert_eq!(
        run["data"]["notified"],
        serde_json::json!(["channel"]),
        "{body}"
    );

    let notice = bodies.recv_timeout(Duration::from_secs(10)).unwrap();
    let n: serde_json::Value = serde_json::from_str(&notice).unwrap();
    // A report of its own: the sandbox's incident lives in the child's
    // store, so the message names none of the daemon's incidents.
    assert_eq!(n["kind"], "report", "{notice}");
    assert_eq!(n["event"], "drill", "{notice}");
    assert_eq!(
        n["title"], "drill report: redis-cache-failure (sandbox)",
        "{notice}"
    );
    assert_eq!(n["text"].as_str(), Some(report), "{notice}");
    assert_eq!(n["data"]["scenario"], "redis-cache-failure", "{notice}");
    assert!(n.get("incident").is_none(), "{notice}");
    medic.stop();
}

/// GET `url` with the read token: (status, body).
fn get(url: &str) -> (u16, String) {
    common::block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .bearer_auth(common::TEST_READ_TOKEN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

/// Waits until the medic at `base` is ready.
fn wait_ready(base: &str) {
    wait_until(Duration::from_secs(30), "medic ready", || {
        get(&format!("{base}/readyz")).0 == 200
    });
}

/// Runs job `job` of the medic at `base` now (`medic backup run`), once
/// it leads: jobs run on the leader, and `/readyz` can answer before the
/// first term is taken.
fn run_job(base: &str, job: &str) -> Output {
    wait_until(Duration::from_secs(30), "medic to lead", || {
        common::block_on(async {
            match reqwest::get(format!("{base}/metrics")).await {
                Ok(r) => r
                    .text()
                    .await
                    .is_ok_and(|t| t.lines().any(|l| l == "medic_is_leader 1")),
                Err(_) => false,
            }
        })
    });
    Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["backup", "run", job, "--url", base, "--token"])
        .arg(common::TEST_API_TOKEN)
        .args(["--by", "the test"])
        .output()
        .unwrap()
}

/// The scheduled drill of a real target: a `drill.target` job breaks the
/// marked Redis with its `inject` command, and the daemon's own engine
/// (not a second one) detects and restarts it; the run follows that
/// incident, stores the report and sends it to the channel. While the
/// scenario has an open incident the job injects nothing.
#[test]
fn a_target_drill_job_breaks_the_marked_target_and_reports_the_daemons_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (http, port) = (free_port(), free_port());
    let (hook, bodies) = receiver();
    let argv = redis_argv(port);
    let mut redis = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "redis", || redis_ping(port));
    let config = common::enforce_config(dir.path(), http, "2s");
    let mut args = redis_argv(port);
    let pidfile = dir.path().join("redis.pid");
    args.extend(
        [
            "--daemonize",
            "yes",
            "--pidfile",
            &pidfile.display().to_string(),
        ]
        .map(String::from),
    );
    // clear_for 10s: the incident stays open long enough to try the job
    // again while it is.
    std::fs::write(
        dir.path().join("rules/redis.yaml"),
        RULE.replace("ARGS", &serde_json::to_string(&args).unwrap())
            .replace("clear_for: 2s", "clear_for: 10s"),
    )
    .unwrap();
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str(&format!(
        "targets:\n  cache: {{ redis: {{ address: \"127.0.0.1:{port}\" }} }}\n\
         drills:\n  cache: {{ drill: allowed, inject: [kill, \"-9\", \"{}\"], wait: 2m }}\n\
         notifiers:\n  log: {{ log: {{}} }}\n  channel: {{ webhook: {{ url: \"http://127.0.0.1:{hook}/drills\" }} }}\n\
         jobs:\n  cache-drill:\n    schedule: \"0 9 1 1,4,7,10 *\"\n    \
         drill.target: {{ scenario: redis-cache-failure, target: cache, notify: [channel] }}\n",
        redis.id()
    ));
    std::fs::write(&config, yaml).unwrap();
    let log = dir.path().join("medic.log");
    let mut medic = common::Medic::start(&config, &log);
    let base = format!("http://127.0.0.1:{http}");
    wait_ready(&base);

    let out = run_job(&base, "cache-drill");
    let _ = redis.wait(); // the original, killed by the injection
    let t = text(&out);
    println!("{t}");
    assert!(out.status.success(), "{t}\n{}", medic.log_text());
    assert!(t.contains("succeeded"), "{t}");
    let (code, body) = get(&format!("{base}/api/v1/jobs/cache-drill/runs"));
    assert_eq!(code, 200, "{body}");
    let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
    let run = &runs[0]["run"];
    assert_eq!(run["kind"], "drill.target", "{body}");
    assert_eq!(run["outcome"], "succeeded", "{body}");
    let report = run["data"]["report"].as_str().unwrap_or_default();
    assert!(
        report.starts_with("drill report: redis-cache-failure on cache\n"),
        "{body}"
    );
    assert!(report.contains("restart-redis: succeeded"), "{body}");
    assert!(report.contains("(RTO 5m: met)"), "{body}");
    // The incident is the daemon's own, resolved by its own plan.
    let id = run["data"]["incident"]
        .as_i64()
        .expect("the daemon's incident");
    let (code, inc) = get(&format!("{base}/api/v1/incidents/{id}"));
    assert_eq!(code, 200, "{inc}");
    let inc: serde_json::Value = serde_json::from_str(&inc).unwrap();
    assert_eq!(inc["incident"]["scenario"], "redis-cache-failure", "{inc}");
    assert_eq!(inc["incident"]["state"], "resolved", "{inc}");
    assert!(redis_ping(port), "the restarted redis-server answers");
    let notice = bodies.recv_timeout(Duration::from_secs(10)).unwrap();
    let n: serde_json::Value = serde_json::from_str(&notice).unwrap();
    assert_eq!(n["kind"], "report", "{notice}");
    assert_eq!(
        n["title"], "drill report: redis-cache-failure on cache",
        "{notice}"
    );
    assert_eq!(n["text"].as_str(), Some(report), "{notice}");
    assert_eq!(n["data"]["incident"], id, "{notice}");

    // Broken again (by hand, not by the job): while its incident is open,
    // the job refuses and injects nothing.
    kill_pidfile(&pidfile);
    let open = || {
        let (_, b) = get(&format!("{base}/api/v1/incidents"));
        let v: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
        v["open"].as_array().map_or(0, |o| o.len())
    };
    wait_until(Duration::from_secs(30), "a new incident open", || {
        open() == 1
    });
    let out = run_job(&base, "cache-drill");
    let t = text(&out);
    let (_, body) = get(&format!("{base}/api/v1/jobs/cache-drill/runs"));
    assert!(!out.status.success(), "{t}");
    assert!(
        body.contains("has an open incident") && body.contains("nothing was injected"),
        "{t}\n{body}"
    );
    wait_until(
        Duration::from_secs(60),
        "the second incident resolved",
        || open() == 0,
    );
    kill_pidfile(&pidfile);
    medic.stop();
}

/// The sandbox directories (`medic-sandbox-*`) under `tmp`.
fn sandboxes(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("medic-sandbox-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose command line mentions `needle` (the sandbox's services
/// run with their data and pid files under its directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{name}: {cmd}"));
            }
        }
    }
    found
}

/// SIGTERM (or Ctrl-C) stops a sandbox drill before it ends: its private
/// services are stopped and its directory deleted before medic exits.
#[test]
fn a_stopped_sandbox_drill_stops_its_services_and_deletes_its_directory() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["drill", "--sandbox", "redis-cache-failure"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut port = None;
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if let Some(rest) = line.strip_prefix("sandbox: redis-server on 127.0.0.1:") {
            port = rest
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok());
            break;
        }
    }
    let port = port.unwrap_or_else(|| {
        panic!(
            "the sandbox never started redis-server:\n{}",
            seen.join("\n")
        )
    });
    assert!(redis_ping(port));
    assert_eq!(sandboxes(tmp.path()).len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(
            "stopped by SIGTERM before the drill ended; the sandbox's services were stopped"
        ),
        "{stderr}\n{}",
        rest.join("\n")
    );
    assert!(
        !redis_ping(port),
        "the sandbox's redis-server still answers"
    );
    assert_eq!(sandboxes(tmp.path()), Vec::<String>::new());
    assert_eq!(
        processes_mentioning(&tmp.path().display().to_string()),
        Vec::<String>::new()
    );
}

/// A `drill.sandbox` job whose timeout passes before the drill ends stops
/// the drill's child medic, which stops its services: nothing of the
/// sandbox outlives the run.
#[test]
fn a_drill_job_that_times_out_leaves_no_sandbox_behind() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let http = free_port();
    let config = common::enforce_config(dir.path(), http, "2s");
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    // The database drill takes far longer than 8 s (two PostgreSQL
    // servers, a failover).
    yaml.push_str(&format!(
        "jobs:\n  quarterly-drill:\n    schedule: \"0 9 1 1,4,7,10 *\"\n    timeout: 8s\n    \
         drill.sandbox: {{ scenario: database-failure, rules: {} }}\n",
        serde_json::Value::from(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("rules")
                .display()
                .to_string()
        )
    ));
    std::fs::write(&config, yaml).unwrap();
    std::fs::write(
        dir.path().join("rules/self.yaml"),
        common::port_closed_rule("self", "medic's port closed", http, 1),
    )
    .unwrap();
    let log = dir.path().join("medic.log");
    let mut medic =
        common::Medic::start_with_env(&config, &log, &[("TMPDIR", tmp.display().to_string())]);
    let base = format!("http://127.0.0.1:{http}");
    wait_ready(&base);
    let job = {
        let base = base.clone();
        std::thread::spawn(move || run_job(&base, "quarterly-drill"))
    };
    // The drill is under way (its sandbox exists) before the timeout.
    wait_until(Duration::from_secs(8), "the drill's sandbox", || {
        !sandboxes(&tmp).is_empty()
    });
    let out = job.join().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("timed out") || t.contains("timeout"), "{t}");
    // The child got SIGTERM; within its grace everything is gone.
    let needle = tmp.display().to_string();
    wait_until(
        Duration::from_secs(20),
        "the sandbox cleaned up after the job's timeout",
        || sandboxes(&tmp).is_empty() && processes_mentioning(&needle).is_empty(),
    );
    assert!(
        medic
            .log_text()
            .contains("stopping the drill before it ended"),
        "{}",
        medic.log_text()
    );
    medic.stop();
}
