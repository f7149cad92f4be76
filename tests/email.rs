//! The email notifier against a real SMTP server (aiosmtpd, started by the
//! test on an ephemeral port) that requires STARTTLS and AUTH: the exact
//! messages it receives for each notice type; label text that tries to add
//! a header stays in the subject; a wrong password fails visibly (outbox,
//! timeline), is retried, loses nothing and never shows the password; a
//! fixed password delivers what waited, once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::smtp::Smtp;
use medic::clock::Clock;
use medic::config::{Config, NotifierConfig};
use medic::page::email::EmailNotifier;
use medic::page::{Notice, NoticeKind, Notifier, NotifyError, Pager, View};
use medic::store::{Incident, IncidentState, MemoryStore, NewIncident, OutboxState, prelude::*};
use tokio_util::sync::CancellationToken;

const USER: &str = "medic@example.com";
const PASSWORD: &str = "s3cret-Pa55";

fn at(s: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + chrono::Duration::seconds(s)
}

/// A config whose notifier `mail` sends through `smtp`, its password read
/// from `pw` (a file), with a communication plan whose channel is `mail`.
fn config(smtp: &Smtp, pw: &std::path::Path) -> Config {
    let text = format!(
        "notifiers:\n  oncall: {{ log: {{}} }}\n  mail:\n    email:\n      server: 127.0.0.1\n      port: {}\n      tls: starttls\n      ca: {}\n      from: \"medic <medic@example.com>\"\n      username: {USER}\n      password: {{ file: {} }}\n      to: [ops@example.com, \"Lead <lead@example.com>\"]\n      bcc: [user1@example.org]\n\
         escalation:\n  default:\n    levels: [{{ after: 0s, notify: [oncall], name: primary on-call }}]\n    communication: {{ channel: [mail] }}\n",
        smtp.port,
        smtp.ca.display(),
        pw.display()
    );
    medic::config::load_str("medic.yaml", &text).unwrap()
}

fn notifier(config: &Config) -> EmailNotifier {
    match &config.notifiers["mail"] {
        NotifierConfig::Email(c) => EmailNotifier::new("mail", c),
        other => panic!("not an email notifier: {other:?}"),
    }
}

fn view(state: IncidentState, summary: &str, now: i64) -> View {
    View {
        incident: Incident {
            id: 7,
            scenario: "redis-cache-failure".into(),
            instance: String::new(),
            state,
            severity: "high".into(),
            summary: summary.into(),
            opened_at: at(0),
            updated_at: at(now),
            resolved_at: (state == IncidentState::Resolved).then(|| at(now)),
            cause: None,
        },
        rto: Some(Duration::from_secs(300)),
        targets: vec!["cache".into()],
        observed: vec![
            "symptom redis_down: failing at detection (failing: connection refused)".into(),
        ],
        done: Vec::new(),
        next: None,
        awaiting: None,
        decisions: Vec::new(),
        dependents: Vec::new(),
        public: false,
        checklist: Vec::new(),
        now: at(now),
    }
}

fn notice(kind: NoticeKind, event: &str, key: &str, text: &str, view: View) -> Notice {
    Notice {
        kind,
        key: key.into(),
        level: usize::from(kind == NoticeKind::Page),
        level_name: (kind == NoticeKind::Page).then(|| "primary on-call".into()),
        text: text.into(),
        entries: Vec::new(),
        more: 0,
        view,
        reference: None,
        maybe_sent: false,
        event: event.into(),
        mention: false,
        ping: Vec::new(),
        public: None,
    }
}

fn field<'a>(m: &'a serde_json::Value, k: &str) -> &'a str {
    m[k].as_str().unwrap_or_default()
}

/// Each notice type has its template; the server receives exactly these
/// messages, over STARTTLS, authenticated, to the `to` and `bcc` lists
/// (the Bcc header itself is not sent).
#[tokio::test]
async fn the_exact_messages_arrive_over_starttls_with_auth() {
    let smtp = Smtp::start(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let mail = notifier(&config(&smtp, &pw));
    let open = view(IncidentState::Open, "Redis down", 30);
    let notices = [
        notice(
            NoticeKind::Notice,
            "open",
            "7:notice:open:mail",
            "Redis down: detected; medic is working on it: it will try restart-redis; pages on-call if it cannot",
            open.clone(),
        ),
        notice(
            NoticeKind::Page,
            "",
            "7:page:e0:r0:l1:mail",
            "primary on-call paged: Redis down (the plan gave up)",
            view(IncidentState::Escalated, "Redis down", 120),
        ),
        notice(
            NoticeKind::Status,
            "",
            "7:status:1:mail",
            "status update 1: Redis down is escalated (30m since detection); nothing changed since the last update",
            view(IncidentState::Escalated, "Redis down", 1800),
        ),
        notice(
            NoticeKind::Resolution,
            "",
            "7:resolution:mail",
            "resolved: every symptom clear for 5s",
            view(IncidentState::Resolved, "Redis down", 2000),
        ),
        notice(
            NoticeKind::Notice,
            "fyi",
            "7:notice:fyi:mail",
            "FYI: Redis down — medic fixed it alone (every symptom clear for 5s); nobody was paged. Timeline: `medic report 7`",
            view(IncidentState::Resolved, "Redis down", 40),
        ),
        notice(
            NoticeKind::Notice,
            "postmortem",
            "7:notice:postmortem:mail",
            "Post-mortem due: Redis down (incident #7) was resolved at 2026-03-01 10:33 UTC (acknowledged by alice)",
            view(IncidentState::Resolved, "Redis down", 2000 + 86400),
        ),
    ];
    for n in &notices {
        let d = mail
            .send(n)
            .await
            .unwrap_or_else(|e| panic!("{} not sent: {e}; server log:\n{}", n.key, smtp.log()));
        assert_eq!(d.detail, "SMTP 250: sent to 3 recipient(s)");
    }
    // An update that only redraws a Slack message is not mailed.
    let redraw = notice(NoticeKind::Update, "approval", "7:update:4:mail", "x", open);
    assert_eq!(
        mail.send(&redraw).await.unwrap().detail,
        "nothing for email"
    );

    let got = smtp.messages();
    let subjects: Vec<&str> = got.iter().map(|m| field(m, "subject")).collect();
    assert_eq!(
        subjects,
        [
            "[medic] [high] Opened: Redis down (incident #7)",
            "[medic] [high] Escalated: Redis down (incident #7) — primary on-call",
            "[medic] [high] Update: Redis down (incident #7)",
            "[medic] [high] Resolved: Redis down (incident #7)",
            "[medic] [high] FYI, fixed by medic: Redis down (incident #7)",
            "[medic] [high] Post-mortem due: Redis down (incident #7)",
        ]
    );
    for m in &got {
        assert_eq!(field(m, "mail_from"), "medic@example.com");
        assert_eq!(
            m["rcpt_tos"],
            serde_json::json!(["ops@example.com", "lead@example.com", "user1@example.org"])
        );
        assert_eq!(field(m, "from"), "medic <medic@example.com>");
        assert_eq!(field(m, "to"), "ops@example.com, Lead <lead@example.com>");
        assert!(m["bcc"].is_null(), "the Bcc header is not sent: {m}");
        assert_eq!(field(m, "content_type"), "text/plain");
        assert_eq!(m["tls"], true, "STARTTLS before the message: {m}");
        assert_eq!(m["authenticated"], true);
    }
    assert_eq!(
        field(&got[0], "message_id"),
        "<medic.7.notice.open.mail@medic>"
    );
    assert_eq!(
        field(&got[0], "body"),
        "Redis down: detected; medic is working on it: it will try restart-redis; pages on-call if it cannot\n\
         \n\
         Incident:  #7 redis-cache-failure (high)\n\
         Summary:   Redis down\n\
         State:     open\n\
         Targets:   cache\n\
         Opened:    2026-03-01 10:00:00 UTC\n\
         RTO clock: 30s of 5m used\n\
         \n\
         Observed:\n  \
         - symptom redis_down: failing at detection (failing: connection refused)\n\
         \n\
         -- \n\
         medic, incident #7\n"
    );
    assert_eq!(
        field(&got[3], "body"),
        "resolved: every symptom clear for 5s\n\
         \n\
         Incident:  #7 redis-cache-failure (high)\n\
         Summary:   Redis down\n\
         State:     resolved\n\
         Targets:   cache\n\
         Opened:    2026-03-01 10:00:00 UTC\n\
         Resolved:  2026-03-01 10:33:20 UTC\n\
         RTO clock: RTO 5m missed by 28m 20s\n\
         \n\
         Observed:\n  \
         - symptom redis_down: failing at detection (failing: connection refused)\n\
         \n\
         -- \n\
         medic, incident #7\n"
    );
    // The reminder is about the post-mortem: no Observed list.
    assert!(!field(&got[5], "body").contains("Observed"), "{}", got[5]);
    let logins = smtp.logins();
    assert_eq!(logins.len(), 6, "one login per message: {logins:?}");
    assert!(
        logins
            .iter()
            .all(|l| l["ok"] == true && l["tls"] == true && l["login"] == USER),
        "{logins:?}"
    );
}

/// A label value with CR LF and a header in it is data: the subject keeps
/// it on one line and no recipient is added.
#[tokio::test]
async fn label_text_cannot_add_a_header_or_a_recipient() {
    let smtp = Smtp::start(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let mail = notifier(&config(&smtp, &pw));
    let evil = "Redis down on x\r\nBcc: evil@attacker.example\r\n\r\nfake body";
    let n = notice(
        NoticeKind::Notice,
        "open",
        "9:notice:open:mail",
        &format!("{evil}: detected"),
        view(IncidentState::Open, evil, 1),
    );
    mail.send(&n).await.unwrap();
    let got = smtp.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(
        field(&got[0], "subject"),
        "[medic] [high] Opened: Redis down on x Bcc: evil@attacker.example fake body (incident #7)"
    );
    assert_eq!(
        got[0]["rcpt_tos"],
        serde_json::json!(["ops@example.com", "lead@example.com", "user1@example.org"])
    );
    assert!(got[0]["bcc"].is_null());
    // In the text/plain body the same text is just text.
    assert!(
        field(&got[0], "body")
            .starts_with("Redis down on x\nBcc: evil@attacker.example\n\nfake body: detected\n"),
        "{}",
        got[0]
    );
}

/// A wrong password: the delivery fails visibly (the outbox entry's
/// detail, a timeline note), is retried with backoff, and never shows the
/// password; once the password is fixed (a reload re-reads it), the
/// waiting notice is delivered, once.
#[tokio::test]
async fn a_wrong_password_fails_visibly_is_retried_and_loses_nothing() {
    let smtp = Smtp::start(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    let wrong = "not-the-Pa55word";
    std::fs::write(&pw, wrong).unwrap();
    let config = config(&smtp, &pw);
    let sc = medic::rules::load_str(
        "rules/redis.yaml",
        "scenario: redis-cache-failure\nsummary: Redis down\nseverity: high\nrto: 5m\n\
         symptoms:\n  redis_down:\n    check: { tcp: { address: \"127.0.0.1:1\" } }\n\
         when: { any: [redis_down] }\nescalation: default\n",
        &config,
    )
    .unwrap();
    let store = Arc::new(MemoryStore::new());
    let clock = Clock::tokio(at(0));
    let pager = Arc::new(Pager::new(&config, store.clone(), clock.clone()));
    pager.register(&sc);
    let stop = CancellationToken::new();
    tokio::spawn(pager.clone().run(stop.clone()));
    let (inc, _) = store
        .open_incident(NewIncident {
            scenario: "redis-cache-failure".into(),
            instance: String::new(),
            severity: "high".into(),
            summary: "Redis down".into(),
            at: clock.now(),
        })
        .await
        .unwrap();
    pager.opened(&inc).await.unwrap();

    let entry = || async {
        store
            .outbox_of(inc.id)
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.key == format!("{}:notice:open:mail", inc.id))
            .unwrap()
    };
    // Seen between attempts (not while one is `sending`): two have failed.
    let seen = std::sync::Mutex::new(None);
    common::eventually(Duration::from_secs(60), "two failed attempts", || async {
        let e = entry().await;
        let failed = e.attempts >= 2 && e.detail != "sending";
        if failed {
            *seen.lock().unwrap() = Some(e);
        }
        failed
    })
    .await;
    let e = seen.lock().unwrap().take().unwrap();
    assert_eq!(e.state, OutboxState::Pending, "still waiting: {e:?}");
    assert!(
        e.detail.starts_with("SMTP: permanent error (535)")
            && e.detail.contains("Authentication credentials invalid"),
        "{}",
        e.detail
    );
    let timeline = store.timeline(inc.id).await.unwrap();
    let notes: Vec<&str> = timeline
        .iter()
        .filter(|t| t.kind == "note")
        .map(|t| t.message.as_str())
        .collect();
    assert_eq!(notes.len(), 1, "the first failure only: {notes:?}");
    assert!(
        notes[0].starts_with("notice via mail failed, retrying: SMTP: permanent error (535)"),
        "{notes:?}"
    );
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let everything = format!("{:?}{:?}", store.outbox_of(inc.id).await.unwrap(), timeline);
    for secret in [
        wrong.to_string(),
        b64(wrong),
        b64(&format!("\0{USER}\0{wrong}")),
    ] {
        assert!(
            !everything.contains(&secret),
            "the password leaked: {everything}"
        );
    }
    assert!(smtp.messages().is_empty());
    let failed = smtp.logins();
    assert!(
        failed.len() >= 2 && failed.iter().all(|l| l["ok"] == false && l["tls"] == true),
        "{failed:?}"
    );

    // The password is fixed; a reload re-reads it: what waited is sent.
    std::fs::write(&pw, PASSWORD).unwrap();
    pager.reconfigure(&config);
    common::eventually(Duration::from_secs(60), "the notice delivered", || async {
        entry().await.state == OutboxState::Sent
    })
    .await;
    let got = smtp.messages();
    assert_eq!(got.len(), 1, "once: {got:?}");
    assert_eq!(
        field(&got[0], "subject"),
        "[medic] [high] Opened: Redis down (incident #1)"
    );
    assert!(
        field(&got[0], "body").starts_with(
            "Redis down: detected; medic has no plan for it; pages on-call if it cannot\n"
        ),
        "{}",
        got[0]
    );
    let timeline = store.timeline(inc.id).await.unwrap();
    assert!(
        timeline.iter().any(
            |t| t.kind == "page" && t.message.starts_with("notice (open) via mail: Redis down")
        ),
        "{timeline:?}"
    );
    stop.cancel();
}

/// Errors from a relay that is not there are worth retrying, and name no
/// secret.
#[tokio::test]
async fn a_relay_that_is_down_is_retried() {
    let smtp = Smtp::start(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let mut config = config(&smtp, &pw);
    if let Some(NotifierConfig::Email(c)) = config.notifiers.get_mut("mail") {
        c.port = Some(common::free_port());
    }
    let mail = notifier(&config);
    let n = notice(
        NoticeKind::Notice,
        "open",
        "1:notice:open:mail",
        "x",
        view(IncidentState::Open, "x", 1),
    );
    match mail.send(&n).await {
        Err(NotifyError::Retry { reason, .. }) => {
            assert!(reason.starts_with("SMTP: "), "{reason}");
            assert!(!reason.contains(PASSWORD), "{reason}");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
}

/// The affected users' two messages (told, then resolved) use the public
/// template: exactly what the public status page shows, and none of the
/// internals the view carries (scenario, summary built from labels, the
/// target, the host and port, the check's output, the step).
#[tokio::test]
async fn affected_users_get_the_public_template_and_nothing_internal() {
    use medic::page::PublicNotice;
    use medic::page::public::{ComponentState, PublicIncident, PublicUpdate};
    use medic::page::statuspage::Status;
    let smtp = Smtp::start(USER, PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let mail = notifier(&config(&smtp, &pw));
    let mut open = view(
        IncidentState::Escalated,
        "Redis down on host=cache-7.internal:6379",
        3600,
    );
    open.done = vec!["step restart-redis: failed".into()];
    let update = PublicUpdate {
        at: at(1200),
        status: Status::Identified,
        body: "We found the cause; a fix is rolling out.".into(),
        default: false,
    };
    let default = PublicUpdate {
        at: at(0),
        status: Status::Investigating,
        body: "We are investigating an issue affecting Logins.".into(),
        default: true,
    };
    let public = |status, resolved: Option<i64>, ups: Vec<PublicUpdate>, state| PublicNotice {
        title: "KeneyApp status".into(),
        incident: PublicIncident {
            name: "Partial outage: Logins".into(),
            components: vec!["Logins".into()],
            state: ComponentState::PartialOutage,
            status,
            started_at: at(0),
            resolved_at: resolved.map(at),
            updates: ups,
        },
        components: vec![("Logins".into(), state)],
    };
    let mut told = notice(
        NoticeKind::Notice,
        "users",
        "7:notice:users:mail",
        "affected users told (within 1h): Logins",
        open.clone(),
    );
    told.public = Some(public(
        Status::Identified,
        None,
        vec![update.clone(), default.clone()],
        ComponentState::PartialOutage,
    ));
    let mut over = notice(
        NoticeKind::Resolution,
        "users",
        "7:resolution:users:mail",
        "resolved",
        view(
            IncidentState::Resolved,
            "Redis down on host=cache-7.internal:6379",
            4000,
        ),
    );
    let done = PublicUpdate {
        at: at(4000),
        status: Status::Resolved,
        body: "This incident has been resolved: Logins is operating normally.".into(),
        default: true,
    };
    over.public = Some(public(
        Status::Resolved,
        Some(4000),
        vec![done, update, default],
        ComponentState::Operational,
    ));
    // Without its public incident, a users' notice is refused, not
    // rendered with the internal template.
    let mut bare = told.clone();
    bare.public = None;
    assert!(matches!(
        mail.send(&bare).await,
        Err(NotifyError::Permanent(_))
    ));
    for n in [&told, &over] {
        mail.send(n).await.unwrap();
    }
    let got = smtp.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(field(&got[0], "subject"), "[medic] Partial outage: Logins");
    assert_eq!(
        field(&got[0], "body"),
        "Partial outage: Logins\n\
         ======================\n\
         Status:   Identified\n\
         Started:  2026-03-01 10:00 UTC\n\
         \n\
         Components:\n  \
         - Logins: Partial outage\n\
         \n\
         Updates:\n  \
         2026-03-01 10:20 UTC — Identified: We found the cause; a fix is rolling out.\n  \
         2026-03-01 10:00 UTC — Investigating: We are investigating an issue affecting Logins.\n\
         \n\
         -- \n\
         KeneyApp status\n"
    );
    assert_eq!(
        field(&got[1], "subject"),
        "[medic] Resolved: Partial outage: Logins"
    );
    assert_eq!(
        field(&got[1], "body"),
        "Partial outage: Logins\n\
         ======================\n\
         Status:   Resolved\n\
         Started:  2026-03-01 10:00 UTC\n\
         Resolved: 2026-03-01 11:06 UTC\n\
         \n\
         Components:\n  \
         - Logins: Operational\n\
         \n\
         Updates:\n  \
         2026-03-01 11:06 UTC — Resolved: This incident has been resolved: Logins is operating normally.\n  \
         2026-03-01 10:20 UTC — Identified: We found the cause; a fix is rolling out.\n  \
         2026-03-01 10:00 UTC — Investigating: We are investigating an issue affecting Logins.\n\
         \n\
         -- \n\
         KeneyApp status\n"
    );
    for m in &got {
        let text = format!("{} {}", field(m, "subject"), field(m, "body"));
        for internal in [
            "redis-cache-failure",
            "Redis down",
            "cache-7.internal",
            "6379",
            "connection refused",
            "redis_down",
            "restart-redis",
            "cache\n",
            "Targets",
            "Timeline",
            "#7",
            "high",
        ] {
            assert!(!text.contains(internal), "{internal:?} in {text}");
        }
        assert_eq!(
            m["rcpt_tos"],
            serde_json::json!(["ops@example.com", "lead@example.com", "user1@example.org"])
        );
        assert!(m["bcc"].is_null());
    }
}
