//! Alertmanager intake over real HTTP: every shared fixture payload
//! replayed against medic's server with a SQLite store, duplicate (HA)
//! deliveries, malformed bodies, and firing alerts surviving a restart of
//! the real binary (the `alert` check then still sees them).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use medic::check::Check;
use medic::check::alert::AlertCheck;
use medic::clock::Clock;
use medic::observe::{Observation, Outcome};
use medic::secret::Secret;
use medic::server;
use medic::server::auth::{Access, Intake};
use medic::store::{IncidentState, SqliteStore, prelude::*};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The shared fixtures (`MEDIC_FIXTURES`, default `/work/shared/fixtures`).
fn fixture(rel: &str) -> Vec<u8> {
    let dir = std::env::var_os("MEDIC_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/fixtures"));
    std::fs::read(dir.join("alertmanager").join(rel)).unwrap()
}

/// medic's HTTP server on an ephemeral port over `store`.
struct Server {
    url: String,
    stop: CancellationToken,
}

impl Server {
    async fn start(store: Arc<dyn Store>) -> Server {
        let access = Access {
            intake: Intake::Checked {
                bearer: Some(Secret::new(TEST_INTAKE_TOKEN)),
                basic: None,
            },
            ..Access::default()
        };
        let app = server::router(app_state(store, Clock::system(), access));
        let stop = CancellationToken::new();
        let (addr, _) = server::serve("127.0.0.1:0".parse().unwrap(), app, stop.clone())
            .await
            .unwrap();
        Server {
            url: format!("http://{addr}{}", server::alertmanager::PATH),
            stop,
        }
    }

    async fn post(&self, body: Vec<u8>) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(&self.url)
            .header("content-type", "application/json")
            .bearer_auth(TEST_INTAKE_TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn alert_names(v: &[medic::store::AlertRecord]) -> Vec<String> {
    v.iter().map(|a| a.labels["alertname"].clone()).collect()
}

#[tokio::test]
async fn every_fixture_payload_is_recorded_once_and_resolved_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("m.db")).await.unwrap());
    let srv = Server::start(store.clone()).await;

    let (code, body) = srv
        .post(fixture("metalmatze-alertmanager-bot/firing.json"))
        .await;
    assert_eq!((code, &body["recorded"]), (200, &Value::from(1)), "{body}");
    assert_eq!(alert_names(&store.firing_alerts().await.unwrap()), ["Fire"]);

    // Trimmed payloads: no per-alert status, fingerprint or generatorURL.
    let single = fixture("prometheus-msteams/prom_post_request.json");
    let twelve = fixture("prometheus-msteams/prom_post_request_12_alerts.json");
    let in_twelve = serde_json::from_slice::<Value>(&twelve).unwrap()["alerts"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(srv.post(single.clone()).await.0, 200);
    let (code, body) = srv.post(twelve.clone()).await;
    assert_eq!(
        (code, body["recorded"].as_u64()),
        (200, Some(in_twelve as u64))
    );
    let firing = store.firing_alerts().await.unwrap();
    assert_eq!(firing.len(), 1 + 1 + in_twelve);
    let one = firing
        .iter()
        .find(|a| {
            a.labels.get("instance").map(String::as_str)
                == Some("instance-with-hyphen_and_underscore")
        })
        .unwrap();
    assert_eq!(one.annotations["summary"], "Server High Memory usage");
    assert_eq!(one.ends_at, None, "the zero endsAt is no end");

    // Duplicate deliveries, also concurrent (both members of an HA pair).
    let mut both = Vec::new();
    for _ in 0..2 {
        let (s, t) = (
            Server {
                url: srv.url.clone(),
                stop: CancellationToken::new(),
            },
            twelve.clone(),
        );
        both.push(tokio::spawn(async move { s.post(t).await.0 }));
    }
    for b in both {
        assert_eq!(b.await.unwrap(), 200);
    }
    assert_eq!(srv.post(single).await.0, 200);
    assert_eq!(
        store.firing_alerts().await.unwrap().len(),
        1 + 1 + in_twelve
    );

    // Resolved ends "Fire"; replaying its firing afterwards does not revive it.
    assert_eq!(
        srv.post(fixture("metalmatze-alertmanager-bot/resolved.json"))
            .await
            .0,
        200
    );
    assert_eq!(
        srv.post(fixture("metalmatze-alertmanager-bot/firing.json"))
            .await
            .0,
        200
    );
    let names = alert_names(&store.firing_alerts().await.unwrap());
    assert!(!names.contains(&"Fire".to_string()), "{names:?}");
    assert_eq!(names.len(), 1 + in_twelve);
}

#[tokio::test]
async fn malformed_bodies_get_400_with_the_reason_and_record_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("m.db")).await.unwrap());
    let srv = Server::start(store.clone()).await;
    let firing = fixture("metalmatze-alertmanager-bot/firing.json");
    let text = String::from_utf8(firing.clone()).unwrap();

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            firing[..firing.len() / 2].to_vec(),
            "invalid webhook JSON: EOF while parsing",
        ),
        (
            b"not json".to_vec(),
            "invalid webhook JSON: expected ident at line 1 column 2",
        ),
        (
            text.replace(r#""version":"4""#, r#""version":"3""#)
                .into_bytes(),
            "unsupported webhook version \"3\"",
        ),
        (
            text.replace(r#""startsAt":"2018"#, r#""startsAt":"yesterday"#)
                .into_bytes(),
            "invalid webhook JSON: ",
        ),
        (
            text.replace(
                r#"{"status":"firing","labels""#,
                r#"{"status":"smouldering","labels""#,
            )
            .into_bytes(),
            "alerts[0]: unknown status \"smouldering\"",
        ),
    ];
    for (body, want) in cases {
        let (code, reply) = srv.post(body).await;
        let why = reply["error"].as_str().unwrap_or_default();
        assert_eq!(code, 400, "{reply}");
        assert!(
            why.starts_with(want),
            "{why:?} does not start with {want:?}"
        );
    }
    assert!(
        store.firing_alerts().await.unwrap().is_empty(),
        "nothing recorded"
    );
    // A good delivery after the bad ones goes through.
    assert_eq!(srv.post(firing).await.0, 200);
    assert_eq!(store.firing_alerts().await.unwrap().len(), 1);
    // A group over `alerts.max_per_delivery` (1000) is 413 with the
    // reason, and none of it is recorded; a group within it goes through
    // whole (beyond axum's default 2 MB body limit too).
    let (code, reply) = srv.post(payload(0, 10_000)).await;
    assert_eq!(code, 413, "{reply}");
    assert_eq!(
        reply["error"],
        "delivery has 10000 alerts, over the limit of 1000 (alerts.max_per_delivery; set Alertmanager's webhook_configs max_alerts to at most that)"
    );
    assert_eq!(store.firing_alerts().await.unwrap().len(), 1);
    let (code, reply) = srv.post(big_body(4 << 20)).await;
    assert_eq!(code, 413, "{reply}");
    assert_eq!(
        reply["error"],
        format!(
            "delivery of {} bytes is over the limit of 4194304 bytes (alerts.max_delivery_bytes)",
            big_body(4 << 20).len()
        )
    );
    let within = payload(0, 1000);
    assert!(within.len() < 2 << 20);
    assert_eq!(srv.post(within).await.0, 200);
    assert_eq!(store.firing_alerts().await.unwrap().len(), 1001);
}

/// A well-formed one-alert delivery padded (with an annotation) to more
/// than `min` bytes.
fn big_body(min: usize) -> Vec<u8> {
    let text = String::from_utf8(payload(0, 1)).unwrap();
    text.replace("p99 above 500ms", &"x".repeat(min + 1024))
        .into_bytes()
}

fn rule() -> &'static str {
    "scenario: fire-alert\n\
     summary: Alertmanager says something is on fire\n\
     severity: high\n\
     rto: 5m\n\
     symptoms:\n\
     \x20 on_fire:\n\
     \x20   check: { alert: { matchers: { alertname: Fire, severity: critical } } }\n\
     \x20   every: 100ms\n\
     when: { any: [on_fire] }\n\
     escalation: default\n"
}

fn setup(dir: &Path, http: u16) -> PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/fire.yaml"), rule()).unwrap();
    std::fs::write(
        dir.join("medic.yaml"),
        format!(
            "mode: dry-run\n\
             store: {{ sqlite: {{ path: medic.db }} }}\n\
             rules: [rules]\n\
             shutdown_grace: 5s\n\
             http: {{ listen: \"127.0.0.1:{http}\", {} }}\n",
            http_credentials(dir)
        ),
    )
    .unwrap();
    dir.join("medic.yaml")
}

/// The real binary: an alert pushed to it opens the scenario's incident;
/// after a restart the alert is still firing (from the store) and the
/// incident stays open; the resolved notification resolves it.
#[test]
fn firing_alerts_survive_a_restart_of_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = setup(dir.path(), http);
    let db = dir.path().join("medic.db");
    let url = format!("http://127.0.0.1:{http}{}", server::alertmanager::PATH);
    let post = |body: Vec<u8>| {
        block_on(async {
            reqwest::Client::new()
                .post(&url)
                .header("content-type", "application/json")
                .bearer_auth(TEST_INTAKE_TOKEN)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let open = |db: &Path| {
        block_on(async {
            let s = SqliteStore::open(db).await.unwrap();
            s.open_incidents().await.unwrap()
        })
    };

    let mut medic = Medic::start(&config, &dir.path().join("medic.log"));
    assert_eq!(
        post(fixture("metalmatze-alertmanager-bot/firing.json")),
        200
    );
    wait_until(Duration::from_secs(10), "the incident to open", || {
        open(&db).iter().any(|i| i.scenario == "fire-alert")
    });
    assert!(medic.stop().success());

    let firing = block_on(async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
        let check = AlertCheck::new([("alertname".to_string(), "Fire".to_string())].into());
        check.attach_store(&store);
        check.observe().await
    });
    assert!(
        matches!(&firing, Observation::Series(s) if s.len() == 1),
        "{firing:?}"
    );

    let mut medic = Medic::start(&config, &dir.path().join("medic.log"));
    // Still firing after the restart: the incident is not resolved.
    std::thread::sleep(Duration::from_millis(500));
    let incidents = open(&db);
    assert_eq!(incidents.len(), 1);
    assert_ne!(incidents[0].state, IncidentState::Resolved);
    assert_eq!(
        post(fixture("metalmatze-alertmanager-bot/resolved.json")),
        200
    );
    wait_until(Duration::from_secs(10), "the incident to resolve", || {
        open(&db).is_empty()
    });
    assert!(medic.stop().success());
    let check = AlertCheck::new([("alertname".to_string(), "Fire".to_string())].into());
    let ok = block_on(async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
        check.attach_store(&store);
        check.run().await
    });
    assert_eq!(ok, Outcome::Ok);
}

/// A delivery as Alertmanager sends it (JSON, the intake's bearer token).
fn post_to(url: &str, body: Vec<u8>) -> (u16, Value) {
    block_on(async {
        let r = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .bearer_auth(TEST_INTAKE_TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or_default())
    })
}

fn open_incidents(db: &Path) -> Vec<medic::store::Incident> {
    block_on(async {
        let s = SqliteStore::open(db).await.unwrap();
        s.open_incidents().await.unwrap()
    })
}

/// How many runs of fire-alert's `alert` checks (`on_fire`, its only one)
/// came out failing (from `/metrics`).
fn failing_runs(base: &str) -> f64 {
    let text = block_on(async {
        let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
        r.text().await.unwrap()
    });
    let key = "medic_checks_total{scenario=\"fire-alert\",check=\"alert\",outcome=\"failing\"} ";
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Attack (issue 13): a forged `resolved` delivery of the firing alert's
/// label set with a far-future `startsAt` resolves nothing (it used to end
/// every earlier firing: `starts_at <= ?`); the incident stays open while
/// the check keeps seeing the alert; the real resolution (the same
/// `startsAt`) still ends it.
#[test]
fn a_forged_far_future_resolution_resolves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = setup(dir.path(), http);
    let db = dir.path().join("medic.db");
    let base = format!("http://127.0.0.1:{http}");
    let url = format!("{base}{}", server::alertmanager::PATH);
    let mut medic = Medic::start(&config, &dir.path().join("medic.log"));
    let firing = fixture("metalmatze-alertmanager-bot/firing.json");
    assert_eq!(post_to(&url, firing).0, 200);
    wait_until(Duration::from_secs(10), "the incident to open", || {
        open_incidents(&db).len() == 1
    });
    let resolved = fixture("metalmatze-alertmanager-bot/resolved.json");
    let forged = String::from_utf8(resolved.clone()).unwrap().replace(
        "2018-11-04T22:43:58.283995108+01:00",
        "2099-01-01T00:00:00Z",
    );
    assert!(forged.contains("2099-01-01"));
    assert_eq!(post_to(&url, forged.into_bytes()).0, 200, "well-formed");
    let runs = failing_runs(&base);
    wait_until(
        Duration::from_secs(10),
        "ten more failing runs of the check after the forged delivery",
        || failing_runs(&base) >= runs + 10.0,
    );
    let open = open_incidents(&db);
    assert_eq!(open.len(), 1, "the forged resolution resolved the incident");
    let still = block_on(async {
        let s = SqliteStore::open(&db).await.unwrap();
        s.firing_alerts().await.unwrap()
    });
    assert_eq!(alert_names(&still), ["Fire"], "the firing record is intact");
    // The genuine resolution names the firing's startsAt: it ends it.
    assert_eq!(post_to(&url, resolved).0, 200);
    wait_until(Duration::from_secs(10), "the incident to resolve", || {
        open_incidents(&db).is_empty()
    });
    assert!(medic.stop().success());
}

/// medic's resident memory, from /proc (kB).
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Attack (issue 13): one delivery of 12,000 alerts matching no rule (it
/// took medic from 62 MB to 2.5 GB and /readyz to 503) is refused with 413
/// and the reason, recording nothing. Deliveries within the per-delivery
/// cap fill the firing alerts up to `alerts.max_firing` (10,000), then get
/// 429 with the reason; a resolution still passes at the cap, after which
/// a real alert opens its incident. /readyz answers 200 throughout and
/// medic's RSS stays under 200 MB.
#[test]
fn a_12000_alert_flood_is_bounded_and_readyz_stays_200() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = setup(dir.path(), http);
    let db = dir.path().join("medic.db");
    let base = format!("http://127.0.0.1:{http}");
    let url = format!("{base}{}", server::alertmanager::PATH);
    let mut medic = Medic::start(&config, &dir.path().join("medic.log"));
    let ready = || {
        block_on(async {
            reqwest::get(format!("{base}/readyz"))
                .await
                .map(|r| r.status().as_u16())
        })
    };
    wait_until(Duration::from_secs(10), "medic to be ready", || {
        ready().is_ok_and(|c| c == 200)
    });

    let flood = payload(0, 12_000);
    assert!(flood.len() > 3_000_000, "{} bytes", flood.len());
    let (code, reply) = post_to(&url, flood);
    assert_eq!(code, 413, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .starts_with("delivery has 12000 alerts, over the limit of 1000"),
        "{reply}"
    );
    assert_eq!(ready().unwrap(), 200);
    for k in 0..10 {
        let (code, reply) = post_to(&url, payload(k * 1000, 1000));
        assert_eq!(code, 200, "delivery {k}: {reply}");
    }
    let (code, reply) = post_to(&url, payload(10_000, 1000));
    assert_eq!(code, 429, "{reply}");
    assert_eq!(
        reply["error"],
        "not recorded: too many firing alerts: recording this delivery would make 11000, over the cap of 10000 (alerts.max_firing)"
    );
    assert_eq!(ready().unwrap(), 200);
    // At the cap a resolution passes, and frees room for a real alert.
    let resolve_one = String::from_utf8(payload(0, 1))
        .unwrap()
        .replace("\"firing\"", "\"resolved\"");
    assert_eq!(post_to(&url, resolve_one.into_bytes()).0, 200);
    let firing = fixture("metalmatze-alertmanager-bot/firing.json");
    assert_eq!(post_to(&url, firing).0, 200);
    wait_until(Duration::from_secs(10), "the Fire incident to open", || {
        open_incidents(&db).len() == 1
    });
    assert_eq!(ready().unwrap(), 200);
    let rss = rss_kb(medic.pid());
    assert!(rss < 200 * 1024, "RSS {rss} kB");
    eprintln!("medic RSS after the flood: {} MB", rss / 1024);
    assert!(medic.stop().success());
}

/// One webhook body with `n` distinct firing alerts starting at `seq`.
fn payload(seq: usize, n: usize) -> Vec<u8> {
    delivery(seq, n, "firing")
}

/// One webhook body with `n` distinct alerts starting at `seq`, all in
/// `status` (`firing` or `resolved`, as Alertmanager sends each).
fn delivery(seq: usize, n: usize, status: &str) -> Vec<u8> {
    let ends_at = if status == "firing" {
        "0001-01-01T00:00:00Z"
    } else {
        "2026-03-01T00:05:00Z"
    };
    let alerts: Vec<Value> = (seq..seq + n)
        .map(|i| {
            serde_json::json!({
                "status": status,
                "labels": { "alertname": "HighLatency", "instance": format!("app-{i}"), "severity": "warning" },
                "annotations": { "summary": "p99 above 500ms" },
                "startsAt": "2026-03-01T00:00:00.123456789Z",
                "endsAt": ends_at,
                "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
                "fingerprint": "0000000000000000"
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "version": "4", "status": status, "receiver": "medic", "groupKey": "{}:{}",
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "alerts": alerts
    }))
    .unwrap()
}

/// Intake at a fixed offered load (open loop: requests leave on schedule,
/// whatever the answers' latency), with the intake's bearer token checked
/// and the default bounds (`alerts.max_firing` 10,000 included), into a
/// file-backed SQLite store (`synchronous=FULL`) and a private PostgreSQL
/// server. Alerts fire and resolve as in a real outage wave: delivery `k`
/// carries batch `k/2` firing when `k` is even and, when odd, resolves the
/// batch that fired `LAG` deliveries earlier, so about 5,000 are firing at
/// any time. Shapes: 1 alert per delivery at 10,000 deliveries/s, 10 at
/// 1,000/s and 100 at 100/s (10,000 alerts/s each), then the 1,000
/// alerts/s of the first measurements. Prints alerts/s achieved and
/// response-time percentiles per store and shape. Run:
/// `cargo test --release --test alertmanager -- --ignored --nocapture intake_throughput`
/// (`MEDIC_INTAKE_SECS`, default 10, is each load's length;
/// `MEDIC_INTAKE_STORE=sqlite` or `postgres` runs one store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn intake_throughput_and_latency() {
    let secs: u64 = std::env::var("MEDIC_INTAKE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let only = std::env::var("MEDIC_INTAKE_STORE").ok();
    let mut short = Vec::new();
    for backend in ["sqlite", "postgres"] {
        if only.as_deref().is_some_and(|o| o != backend) {
            continue;
        }
        for (per_request, requests_per_s) in
            [(1usize, 10_000u64), (10, 1_000), (100, 100), (1, 1_000)]
        {
            if let Err(e) = intake_load(backend, per_request, requests_per_s, secs).await {
                short.push(e);
            }
        }
    }
    assert!(
        short.is_empty(),
        "loads not answered 200 throughout:\n{}",
        short.join("\n")
    );
}

/// One load; `Err` (after printing its figures) when some deliveries were
/// not answered 200, with the count per status (0: no answer, the
/// connection refused or reset).
async fn intake_load(
    backend: &str,
    per_request: usize,
    requests_per_s: u64,
    secs: u64,
) -> Result<(), String> {
    /// Deliveries between a batch firing and its resolution.
    const LAG: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let mut _pg = None;
    let store: Arc<dyn Store> = match backend {
        "sqlite" => Arc::new(SqliteStore::open(&dir.path().join("m.db")).await.unwrap()),
        _ => {
            let pg = common::pg::Pg::primary();
            let target = medic::config::PostgresTarget {
                host: "127.0.0.1".into(),
                port: pg.primary.port,
                user: "postgres".into(),
                dbname: "postgres".into(),
                ..Default::default()
            };
            let store = medic::store::PostgresStore::open(&target).await.unwrap();
            _pg = Some(pg);
            Arc::new(store)
        }
    };
    let srv = Server::start(store.clone()).await;
    let client = reqwest::Client::new();
    let total = (requests_per_s * secs) as usize;
    let lag = (LAG / per_request).max(2) & !1;
    let mut firing = std::collections::BTreeSet::new();
    let bodies: Vec<Vec<u8>> = (0..total)
        .map(|k| {
            if k % 2 == 0 {
                let batch = k / 2;
                firing.insert(batch);
                delivery(batch * per_request, per_request, "firing")
            } else if k >= lag {
                let batch = (k - lag) / 2;
                firing.remove(&batch);
                delivery(batch * per_request, per_request, "resolved")
            } else {
                // Before the first resolutions are due: more firing ones.
                let fresh = total + k;
                firing.insert(fresh);
                delivery(fresh * per_request, per_request, "firing")
            }
        })
        .collect();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / requests_per_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = std::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for body in bodies {
        tick.tick().await;
        let (c, url) = (client.clone(), srv.url.clone());
        tasks.push(tokio::spawn(async move {
            let t = std::time::Instant::now();
            let req = c.post(url).header("content-type", "application/json");
            let req = req.bearer_auth(TEST_INTAKE_TOKEN).body(body);
            let code = match req.send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            (code, t.elapsed())
        }));
    }
    let mut lat = Vec::with_capacity(total);
    let mut codes = std::collections::BTreeMap::<u16, usize>::new();
    for t in tasks {
        let (code, d) = t.await.unwrap();
        *codes.entry(code).or_default() += 1;
        lat.push(d);
    }
    let wall = start.elapsed();
    let answered = codes.get(&200).copied().unwrap_or(0);
    if answered < total {
        let e = format!(
            "{backend}: {per_request} alert(s)/delivery at {requests_per_s} deliveries/s: \
             {answered} of {total} answered 200 in {:.1} s; answers by status {codes:?}",
            wall.as_secs_f64()
        );
        println!("{e}");
        return Err(e);
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    let still = store.firing_alerts().await.unwrap().len();
    assert_eq!(
        still,
        firing.len() * per_request,
        "{backend}: the firing alerts left"
    );
    println!(
        "{backend}: {per_request} alert(s)/delivery at {requests_per_s} deliveries/s: {:.0} alerts/s \
         over {:.1} s ({} firing at the end); response p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        (total * per_request) as f64 / wall.as_secs_f64(),
        wall.as_secs_f64(),
        still,
        p(0.50),
        p(0.99),
        lat.last().unwrap().as_secs_f64() * 1e3
    );
    Ok(())
}

/// What an `alert` check's read costs with 10,000 firing alerts that match
/// no rule: the indexed read (what the check runs) against reading every
/// firing alert (what it ran before). Prints both. Run:
/// `cargo test --release --test alertmanager -- --ignored --nocapture alert_check_read_cost`.
#[tokio::test]
#[ignore]
async fn alert_check_read_cost() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("m.db")).await.unwrap();
    let flood =
        medic::server::alertmanager::parse(&payload(0, 10_000), chrono::Utc::now()).unwrap();
    store.record_alerts(&flood).await.unwrap();
    let fire = fixture("metalmatze-alertmanager-bot/firing.json");
    let fire = medic::server::alertmanager::parse(&fire, chrono::Utc::now()).unwrap();
    store.record_alerts(&fire).await.unwrap();
    let matchers = [("alertname".to_string(), "Fire".to_string())].into();
    let runs = 50;
    let started = std::time::Instant::now();
    for _ in 0..runs {
        let all = store.firing_alerts().await.unwrap();
        assert_eq!(all.len(), 10_001);
    }
    let all = started.elapsed() / runs;
    let started = std::time::Instant::now();
    for _ in 0..runs {
        let some = store.firing_alerts_matching(&matchers).await.unwrap();
        assert_eq!(alert_names(&some), ["Fire"]);
    }
    let indexed = started.elapsed() / runs;
    eprintln!(
        "10,001 firing alerts: every firing alert {all:?} per read, indexed {indexed:?} per read"
    );
}
