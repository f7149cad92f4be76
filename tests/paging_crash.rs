//! kill -9 at random points: the real binary runs 50 incident life cycles
//! (a TCP target goes down, remediation fails, medic pages Slack and
//! PagerDuty, the target comes back, medic sends the resolution) while the
//! test kills it with SIGKILL and restarts it 20 times. At the recording
//! fakes: no page lost (every page and resolution in the outbox arrived),
//! none posted twice (one Slack message per incident, one thread reply per
//! notice); PagerDuty events may repeat after a kill only with the same
//! dedup_key and action (PagerDuty folds them into one alert), and the test
//! reports how many did.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Medic;
use common::fake_paging::Fakes;
use medic::store::{OutboxState, SqliteStore, prelude::*};
use nix::sys::signal::Signal;

const CYCLES: usize = 50;
const KILLS: usize = 20;
const DOWN: Duration = Duration::from_millis(450);
const UP: Duration = Duration::from_millis(350);

/// A small deterministic PRNG (the seed is printed, runs are repeatable).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn running_count(m: &Medic) -> usize {
    m.log_text().matches("medic running").count()
}

fn restart(m: Medic, config: &Path, log: &Path) -> Medic {
    let before = running_count(&m);
    m.signal(Signal::SIGKILL);
    drop(m); // reaps the child
    let m = Medic::start(config, log);
    common::wait_until(Duration::from_secs(20), "medic to restart", || {
        running_count(&m) > before
    });
    m
}

#[test]
fn kill_9_at_random_points_loses_no_page_and_sends_none_twice() {
    let (fakes, base) = Fakes::start();
    let dir = tempfile::tempdir().unwrap();
    let app_port = common::free_port();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    write(
        &dir.path().join("rules"),
        "app.yaml",
        &common::app_down_rule(app_port, "5m", "50ms", ""),
    );
    let slack = write(dir.path(), "slack", "xoxb-test");
    let pd = write(dir.path(), "pd", "R0UTINGKEY");
    let db = dir.path().join("medic.db");
    let config = write(
        dir.path(),
        "medic.yaml",
        &format!(
            r#"
mode: enforce
rules: [rules]
store: {{ sqlite: {{ path: {db} }} }}
notifiers:
  chat:
    slack: {{ token: {{ file: {slack} }}, channel: C1, api_url: "{base}/api" }}
  pd:
    pagerduty: {{ routing_key: {{ file: {pd} }}, url: "{base}/v2/enqueue" }}
escalation:
  default:
    levels:
      - {{ after: 0s, notify: [chat, pd] }}
shutdown_grace: 2s
"#,
            db = db.display()
        ),
    );
    let config = Path::new(&config).to_path_buf();
    let log = dir.path().join("medic.log");

    let seed = 0x5eed_u64;
    let mut rng = Lcg(seed);
    let cycle = DOWN + UP;
    let total = cycle * CYCLES as u32;
    let mut kills: Vec<Duration> = (0..KILLS)
        .map(|_| Duration::from_millis(rng.next() % total.as_millis() as u64))
        .collect();
    kills.sort();

    let mut app = Some(TcpListener::bind(("127.0.0.1", app_port)).unwrap());
    let mut m = Medic::start(&config, &log);
    let start = Instant::now();
    let mut next_kill = 0;
    for c in 0..CYCLES {
        for (up, len) in [(false, DOWN), (true, UP)] {
            app = if up {
                Some(TcpListener::bind(("127.0.0.1", app_port)).unwrap())
            } else {
                None
            };
            let phase_end = start + cycle * c as u32 + if up { DOWN + UP } else { DOWN };
            let _ = len;
            while Instant::now() < phase_end {
                if next_kill < kills.len() && start + kills[next_kill] <= Instant::now() {
                    m = restart(m, &config, &log);
                    next_kill += 1;
                    continue;
                }
                let until = kills
                    .get(next_kill)
                    .map_or(phase_end, |k| (start + *k).min(phase_end));
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
            }
        }
    }
    // Any kill left (timing slack): do it now, then let everything settle.
    while next_kill < kills.len() {
        m = restart(m, &config, &log);
        next_kill += 1;
    }
    assert!(app.is_some());
    std::thread::sleep(Duration::from_secs(3));
    m.stop();
    let elapsed = start.elapsed();

    let (incidents, outbox) = common::block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        let incidents = store.recent_incidents(10_000).await.unwrap();
        let mut outbox = Vec::new();
        for i in &incidents {
            outbox.extend(store.outbox_of(i.id).await.unwrap());
        }
        (incidents, outbox)
    });
    let reqs = fakes.requests();

    // Slack: one message per incident, one thread reply per notice.
    let mut top: HashMap<i64, usize> = HashMap::new();
    let mut replies: HashMap<String, usize> = HashMap::new();
    for r in reqs.iter().filter(|r| r.what == "chat.postMessage") {
        if r.body["thread_ts"].is_null() {
            let id = r.body["metadata"]["event_payload"]["incident"]
                .as_i64()
                .unwrap();
            *top.entry(id).or_default() += 1;
        } else {
            let key = r.body["metadata"]["event_payload"]["key"].as_str().unwrap();
            *replies.entry(key.to_string()).or_default() += 1;
        }
    }
    let twice: Vec<_> = top.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "incident messages posted twice: {twice:?}"
    );
    let twice: Vec<_> = replies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "thread replies posted twice: {twice:?}");

    // PagerDuty: every event of an incident with its dedup_key.
    let mut pd: HashMap<(String, String), usize> = HashMap::new();
    for r in reqs.iter().filter(|r| r.what == "pagerduty") {
        let k = (
            r.body["dedup_key"].as_str().unwrap().to_string(),
            r.body["event_action"].as_str().unwrap().to_string(),
        );
        *pd.entry(k).or_default() += 1;
    }
    let pd_repeats: usize = pd.values().map(|n| n - 1).sum();

    // Nothing left behind, nothing failed; everything sent arrived.
    let pending: Vec<_> = outbox
        .iter()
        .filter(|e| e.state == OutboxState::Pending)
        .collect();
    assert!(pending.is_empty(), "left pending: {pending:#?}");
    let failed: Vec<_> = outbox
        .iter()
        .filter(|e| e.state == OutboxState::Failed)
        .collect();
    assert!(failed.is_empty(), "failed: {failed:#?}");
    let mut paged = 0;
    for e in outbox.iter().filter(|e| e.state == OutboxState::Sent) {
        let dedup = format!("medic-{}-app-down", e.incident_id);
        match (e.kind.as_str(), e.notifier.as_str()) {
            ("page", "chat") => {
                paged += 1;
                assert_eq!(top.get(&e.incident_id), Some(&1), "{}", e.key);
                assert_eq!(replies.get(&e.key), Some(&1), "{}", e.key);
            }
            ("resolution", "chat") => assert_eq!(replies.get(&e.key), Some(&1), "{}", e.key),
            ("page", "pd") => assert!(pd.contains_key(&(dedup, "trigger".into())), "{}", e.key),
            ("resolution", "pd") => {
                assert!(pd.contains_key(&(dedup, "resolve".into())), "{}", e.key)
            }
            _ => {}
        }
    }
    // Every page has its resolution (incidents resolved by the end).
    let resolved = incidents.iter().filter(|i| !i.state.is_open()).count();
    for e in outbox
        .iter()
        .filter(|e| e.kind == "page" && e.state == OutboxState::Sent)
    {
        let inc = incidents.iter().find(|i| i.id == e.incident_id).unwrap();
        if !inc.state.is_open() {
            let key = format!("{}:resolution:{}", e.incident_id, e.notifier);
            assert!(
                outbox
                    .iter()
                    .any(|o| o.key == key && o.state == OutboxState::Sent),
                "resolution {key} missing"
            );
        }
    }
    println!(
        "crash test (seed {seed:#x}): {CYCLES} life cycles, {KILLS} kill -9 + restart in {:.1}s; \
         {} incidents ({resolved} resolved), {paged} paged; Slack: {} messages, {} thread replies, \
         0 duplicates; PagerDuty: {} events, {pd_repeats} repeated after a kill (same dedup_key)",
        elapsed.as_secs_f64(),
        incidents.len(),
        top.len(),
        replies.len(),
        pd.values().sum::<usize>(),
    );
    assert!(
        paged >= CYCLES / 2,
        "too few life cycles paged ({paged}) to mean anything"
    );
}
