//! Outside text is data, wherever it is shown, and secrets stay secret,
//! against the real binary: alert labels that are Slack
//! markup (`<!channel>`, a disguised `<https://...|text>` link) reach Slack
//! escaped (the requests recorded by the fake Slack) and `medic report`
//! as escaped Markdown; webhook URLs (by reference and inline) never
//! appear in the log, the outbox or the timeline when the webhook fails;
//! and a captured Slack click does not replay after a restart (the replay
//! cache is in the store).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::fake_paging::{Fakes, click_body, post_click};
use common::{Medic, TEST_INTAKE_TOKEN, block_on, free_port, http_credentials, wait_until};
use medic::store::{OutboxEntry, OutboxState, SqliteStore, TimelineEntry, prelude::*};
use serde_json::json;

const SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// Part of the webhook URL given by reference (a file).
const HOOK_SECRET: &str = "SEKRET-PATH-7f3a";
/// Part of the webhook URL written inline.
const INLINE_SECRET: &str = "SEKRET-QUERY-91c2";
const CHANNEL: &str = "<!channel>";
const LINK: &str = "<https://evil.example/login|Click to fix> & more";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// medic.yaml and rules/fire.yaml in `dir`: an `alert` scenario without a
/// plan (it escalates at once), paging Slack (the fake), a webhook whose
/// URL (a file reference) points at a closed port, and one whose inline URL
/// answers 400.
fn setup(dir: &Path, http: u16, base: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    let closed = free_port();
    let hook_url = write(
        dir,
        "hook-url",
        &format!("http://127.0.0.1:{closed}/hook/{HOOK_SECRET}\n"),
    );
    let config = format!(
        r#"mode: enforce
store: {{ sqlite: {{ path: medic.db }} }}
rules: [rules]
shutdown_grace: 5s
http: {{ listen: "127.0.0.1:{http}", {creds} }}
notifiers:
  oncall:
    slack: {{ token: {{ file: {slack} }}, channel: C0INCIDENT, mention: [U0ONCALL], api_url: "{base}/api" }}
  hook:
    webhook: {{ url: {{ file: {hook_url} }} }}
  hook400:
    webhook: {{ url: "{base}/hook?token={INLINE_SECRET}" }}
escalation:
  default:
    levels:
      - {{ after: 0s, notify: [oncall, hook, hook400] }}
slack:
  signing_secret: {{ file: {signing} }}
  approvers: [U0APPROVER]
"#,
        slack = write(dir, "slack-token", "xoxb-test"),
        signing = write(dir, "signing", SIGNING),
        creds = http_credentials(dir),
    );
    std::fs::write(dir.join("medic.yaml"), config).unwrap();
    std::fs::write(
        dir.join("rules/fire.yaml"),
        "scenario: fire-alert\n\
         summary: Alertmanager says something is on fire\n\
         severity: high\n\
         rto: 5m\n\
         symptoms:\n\
         \x20 on_fire:\n\
         \x20   check: { alert: { matchers: { alertname: Fire } } }\n\
         \x20   every: 100ms\n\
         when: { any: [on_fire] }\n\
         escalation: default\n",
    )
    .unwrap();
    dir.join("medic.yaml")
}

fn alert_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": "4", "status": "firing", "receiver": "medic", "groupKey": "{}:{}",
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing",
            "labels": { "alertname": "Fire", "team": CHANNEL, "link": LINK },
            "annotations": { "summary": LINK },
            "startsAt": "2026-03-01T00:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": "00000000000000aa"
        }]
    }))
    .unwrap()
}

/// The incident, its outbox and its timeline, read from the SQLite file.
fn stored(db: &Path) -> Option<(i64, Vec<OutboxEntry>, Vec<TimelineEntry>)> {
    block_on(async {
        let s = SqliteStore::open(db).await.unwrap();
        let id = s.recent_incidents(1).await.unwrap().first()?.id;
        Some((
            id,
            s.outbox_of(id).await.unwrap(),
            s.timeline(id).await.unwrap(),
        ))
    })
}

fn signed_click(url: &str, body: &str, ts: &str) -> (u16, String) {
    let sig = medic::server::slack::sign(SIGNING, ts, body.as_bytes());
    block_on(post_click(url, body, ts, &sig))
}

#[test]
fn outside_text_is_escaped_secrets_stay_out_and_clicks_do_not_replay_after_a_restart() {
    let (fakes, base) = Fakes::start();
    fakes.script("hook", &[(400, None)]);
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = setup(dir.path(), http, &base);
    let db = dir.path().join("medic.db");
    let log = dir.path().join("medic.log");
    let url = format!("http://127.0.0.1:{http}");
    let mut medic = Medic::start(&config, &log);

    let status = block_on(async {
        reqwest::Client::new()
            .post(format!("{url}{}", medic::server::alertmanager::PATH))
            .header("content-type", "application/json")
            .bearer_auth(TEST_INTAKE_TOKEN)
            .body(alert_body())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);

    // Paged: Slack posted, the closed-port webhook failed and will retry,
    // the 400 webhook failed for good (on the timeline).
    wait_until(Duration::from_secs(30), "the pages to be tried", || {
        stored(&db).is_some_and(|(_, outbox, timeline)| {
            let entry = |n: &str| {
                outbox
                    .iter()
                    .find(|e| e.kind == "page" && e.notifier == n)
                    .cloned()
            };
            entry("oncall").is_some_and(|e| e.state == OutboxState::Sent)
                && entry("hook")
                    .is_some_and(|e| e.attempts >= 1 && e.detail.starts_with("webhook:"))
                && entry("hook400").is_some_and(|e| e.state == OutboxState::Failed)
                && timeline
                    .iter()
                    .any(|t| t.message.contains("via hook400 failed"))
        })
    });

    // Slack: the label and the annotation arrive as text, escaped; the
    // configured mention is still a mention.
    let reqs = fakes.requests();
    let slack: Vec<String> = reqs
        .iter()
        .filter(|r| r.what.starts_with("chat."))
        .map(|r| r.body.to_string())
        .collect();
    assert!(!slack.is_empty());
    let all = slack.concat();
    assert!(!all.contains(CHANNEL), "unescaped label in {all}");
    assert!(!all.contains("<https://evil"), "unescaped link in {all}");
    assert!(all.contains("&lt;!channel&gt;"), "{all}");
    assert!(
        all.contains("&lt;https://evil.example/login|Click to fix&gt; &amp; more"),
        "{all}"
    );
    assert!(all.contains("<@U0ONCALL>"), "{all}");
    // The inline-URL webhook was called (its secret is in its own request
    // line, nowhere else).
    assert!(
        reqs.iter()
            .any(|r| r.what == "hook" && r.query.contains(INLINE_SECRET))
    );

    // The webhook URLs: not in the log, the outbox, the timeline, nor
    // anywhere in the store's files.
    let (id, outbox, timeline) = stored(&db).unwrap();
    let hook = outbox
        .iter()
        .find(|e| e.notifier == "hook" && e.kind == "page")
        .unwrap();
    assert!(
        hook.detail.contains("error sending request") && hook.detail.contains("onnect"),
        "the reason is kept, without the URL: {}",
        hook.detail
    );
    let text = format!(
        "{}\n{}\n{}",
        medic.log_text(),
        serde_json::to_string(&outbox).unwrap(),
        serde_json::to_string(&timeline).unwrap()
    );
    assert!(text.contains("delivery failed, will retry"), "{text}");
    for secret in [HOOK_SECRET, INLINE_SECRET] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
        for f in ["medic.db", "medic.db-wal"] {
            let bytes = std::fs::read(dir.path().join(f)).unwrap_or_default();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is in {f}"
            );
        }
    }

    // medic report: the label and annotation as escaped Markdown.
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .args(["report", "--config"])
        .arg(&config)
        .arg(id.to_string())
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(md.contains(r"\<\!channel\>"), "{md}");
    assert!(
        md.contains(r"\<https\://evil.example/login\|Click to fix\> \& more"),
        "{md}"
    );
    assert!(!md.contains(CHANNEL) && !md.contains("<https://"), "{md}");

    // A click, captured and replayed: refused before and after a restart.
    let body = click_body("U0ONCALL", "acknowledge", &id.to_string());
    let ts = chrono::Utc::now().timestamp().to_string();
    assert_eq!(signed_click(&url, &body, &ts).0, 200);
    let again = signed_click(&url, &body, &ts);
    assert_eq!(again.0, 401, "{again:?}");
    assert!(medic.stop().success());
    let _medic = Medic::start(&config, &log);
    let mut replay = (0, String::new());
    wait_until(
        Duration::from_secs(20),
        "the pager after the restart",
        || {
            replay = signed_click(&url, &body, &ts);
            // 0: not listening yet; 503: listening, no pager yet.
            replay.0 != 0 && replay.0 != 503
        },
    );
    assert_eq!(replay.0, 401, "{replay:?}");
    assert!(replay.1.contains("replayed"), "{replay:?}");
}
