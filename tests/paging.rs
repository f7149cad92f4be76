//! Paging: escalation timers on tokio's paused clock (hours in
//! milliseconds), with recording notifiers; then the HTTP surface (Slack
//! interactions, the incidents API) against local fakes of Slack and
//! PagerDuty that record every request.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use medic::clock::Clock;
use medic::config::Config;
use medic::page::{
    Decision, DecisionKind, Delivered, Notice, NoticeKind, Notifier, NotifyError, Pager,
};
use medic::rules::model::Scenario;
use medic::store::{Incident, IncidentState, MemoryStore, NewIncident, OutboxState, prelude::*};
use tokio_util::sync::CancellationToken;

fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// What a recording notifier got: minute (since `base`), notifier, kind, level.
type Log = Arc<Mutex<Vec<(i64, String, NoticeKind, usize, Notice)>>>;

struct Rec {
    name: String,
    log: Log,
    clock: Clock,
}

#[async_trait::async_trait]
impl Notifier for Rec {
    async fn send(&self, n: &Notice) -> Result<Delivered, NotifyError> {
        let min = (self.clock.now() - base()).num_minutes();
        self.log
            .lock()
            .unwrap()
            .push((min, self.name.clone(), n.kind, n.level, n.clone()));
        Ok(Delivered::default())
    }
}

fn config(policy: &str) -> Config {
    let text = format!(
        "notifiers: {{ oncall: {{ log: {{}} }}, lead: {{ log: {{}} }}, cto: {{ log: {{}} }} }}\n\
         escalation:\n  default:\n{policy}"
    );
    medic::config::load_str("medic.yaml", &text).unwrap()
}

fn scenario(config: &Config) -> Scenario {
    medic::rules::load_str(
        "rules/app.yaml",
        "scenario: app-down\nsummary: App down\nseverity: critical\nrto: 15m\n\
         symptoms:\n  app_down:\n    check: { tcp: { address: \"127.0.0.1:1\" } }\n\
         when: { any: [app_down] }\nescalation: default\n",
        config,
    )
    .unwrap()
}

struct Rig {
    store: Arc<MemoryStore>,
    pager: Arc<Pager>,
    log: Log,
    clock: Clock,
    stop: CancellationToken,
}

fn rig(policy: &str) -> (Rig, Scenario) {
    let config = config(policy);
    let sc = scenario(&config);
    let clock = Clock::tokio(base());
    let log: Log = Arc::default();
    let notifiers: HashMap<String, Arc<dyn Notifier>> = ["oncall", "lead", "cto"]
        .iter()
        .map(|n| {
            let r: Arc<dyn Notifier> = Arc::new(Rec {
                name: n.to_string(),
                log: log.clone(),
                clock: clock.clone(),
            });
            (n.to_string(), r)
        })
        .collect();
    let store = Arc::new(MemoryStore::new());
    let pager = Arc::new(Pager::with_notifiers(
        &config,
        notifiers,
        store.clone(),
        clock.clone(),
    ));
    pager.register(&sc);
    let stop = CancellationToken::new();
    tokio::spawn(pager.clone().run(stop.clone()));
    (
        Rig {
            store,
            pager,
            log,
            clock,
            stop,
        },
        sc,
    )
}

impl Rig {
    async fn escalated_incident(&self) -> Incident {
        let inc = self.open_incident().await;
        self.escalate(&inc).await;
        inc
    }

    async fn open_incident(&self) -> Incident {
        let (inc, _) = self
            .store
            .open_incident(NewIncident {
                scenario: "app-down".into(),
                instance: String::new(),
                severity: "critical".into(),
                summary: "App down".into(),
                at: self.clock.now(),
            })
            .await
            .unwrap();
        inc
    }

    async fn escalate(&self, inc: &Incident) {
        self.store
            .set_state(inc.id, IncidentState::Escalated, self.clock.now())
            .await
            .unwrap();
        self.pager
            .escalate(inc, "default", self.clock.now(), true)
            .await
            .unwrap();
    }

    /// (minute, notifier, kind, level) of every notice so far.
    fn seen(&self) -> Vec<(i64, String, NoticeKind, usize)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(m, n, k, l, _)| (*m, n.clone(), *k, *l))
            .collect()
    }

    async fn until_minute(&self, m: i64) {
        let target = base() + chrono::Duration::minutes(m);
        let left = (target - self.clock.now()).to_std().unwrap_or_default();
        tokio::time::sleep(left).await;
        // Let the dispatcher finish what came due.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    async fn decide(&self, id: i64, kind: DecisionKind, by: &str) -> medic::page::DecisionOutcome {
        self.pager
            .decide(
                id,
                Decision {
                    kind,
                    by: by.into(),
                    step: None,
                    note: String::new(),
                    via: "api".into(),
                },
            )
            .await
            .unwrap()
    }
}

fn row(m: i64, n: &str, k: NoticeKind, l: usize) -> (i64, String, NoticeKind, usize) {
    (m, n.to_string(), k, l)
}

const RUNBOOK: &str = "    status_every: 30m\n    levels:\n      - { after: 0m, notify: [oncall], name: primary on-call }\n      - { after: 15m, notify: [lead], name: technical lead }\n      - { after: 30m, notify: [cto], name: CTO }\n";

/// The acceptance scenario: levels at 0, 15 and 30 min; an acknowledgement
/// at 20 min stops level 3; status updates go on every 30 min with the
/// timeline since the last; the resolution reaches everyone paged.
#[tokio::test(start_paused = true)]
async fn ack_at_20_minutes_stops_level_3_and_resolution_reaches_everyone_paged() {
    let (r, _) = rig(RUNBOOK);
    let inc = r.escalated_incident().await;
    r.until_minute(14).await;
    assert_eq!(r.seen(), [row(0, "oncall", NoticeKind::Page, 1)]);
    r.until_minute(15).await;
    assert_eq!(r.seen().len(), 2, "{:?}", r.seen());
    assert_eq!(r.seen()[1], row(15, "lead", NoticeKind::Page, 2));

    r.until_minute(20).await;
    let o = r.decide(inc.id, DecisionKind::Acknowledge, "alice").await;
    assert!(o.first, "{o:?}");
    assert_eq!(o.message, "acknowledged by alice via api; escalation stops");
    // A second acknowledgement changes nothing and names the first.
    let again = r.decide(inc.id, DecisionKind::Acknowledge, "bob").await;
    assert!(!again.first);
    assert!(
        again.message.starts_with("already acknowledged by alice"),
        "{again:?}"
    );

    r.until_minute(59).await;
    let resolved_at = r.clock.now();
    r.store
        .set_state(inc.id, IncidentState::Resolved, resolved_at)
        .await
        .unwrap();
    r.pager
        .resolved(
            &inc,
            "resolved: all symptoms clear; recovered in 59m (MISSED RTO 15m)",
        )
        .await
        .unwrap();
    r.until_minute(90).await;
    assert_eq!(
        r.seen(),
        [
            row(0, "oncall", NoticeKind::Page, 1),
            row(15, "lead", NoticeKind::Page, 2),
            row(20, "oncall", NoticeKind::Update, 0),
            row(20, "lead", NoticeKind::Update, 0),
            row(30, "oncall", NoticeKind::Status, 0),
            row(30, "lead", NoticeKind::Status, 0),
            row(59, "oncall", NoticeKind::Resolution, 0),
            row(59, "lead", NoticeKind::Resolution, 0),
        ],
        "no CTO page after the acknowledgement; nothing after the resolution"
    );
    let log = r.log.lock().unwrap().clone();
    // Level names reach the notifiers; the status update carries the
    // timeline since the escalation started (the acknowledgement).
    assert_eq!(log[1].4.level_name.as_deref(), Some("technical lead"));
    assert!(log[1].4.text.starts_with("technical lead paged: App down"));
    let status = &log[4].4;
    assert!(
        status
            .entries
            .iter()
            .any(|e| e.message.starts_with("acknowledged by alice")),
        "{:?}",
        status.entries
    );
    assert!(
        status
            .text
            .starts_with("status update 1: App down is acknowledged")
    );
    assert!(log[6].4.text.contains("MISSED RTO 15m"));
    // The level 3 timer was cancelled by the acknowledgement.
    let outbox = r.store.outbox_of(inc.id).await.unwrap();
    let l3 = outbox
        .iter()
        .find(|e| e.key.ends_with(":timer:e0:r0:l3"))
        .unwrap();
    assert_eq!(l3.state, OutboxState::Cancelled);
    let timeline = r.store.timeline(inc.id).await.unwrap();
    let decisions: Vec<&str> = timeline
        .iter()
        .filter(|e| e.kind == "decision")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        decisions,
        ["acknowledged by alice via api; escalation stops"]
    );
    r.stop.cancel();
}

/// A long-open incident: its first page carries the start of the story,
/// at most `NOTICE_ENTRIES` entries, and counts the rest; a status update
/// carries what was written since the previous one, by position, not the
/// story again.
#[tokio::test(start_paused = true)]
async fn a_long_timeline_is_carried_in_bounded_notices() {
    let (r, _) = rig(RUNBOOK);
    let inc = r.open_incident().await;
    let flaps = medic::page::NOTICE_ENTRIES + 150;
    for i in 0..flaps {
        r.store
            .append(
                inc.id,
                medic::store::TimelineEntry::new(r.clock.now(), "symptom", format!("flap {i}")),
            )
            .await
            .unwrap();
    }
    r.escalate(&inc).await;
    r.until_minute(1).await;
    let page = r.log.lock().unwrap()[0].4.clone();
    assert_eq!(page.kind, NoticeKind::Page);
    assert_eq!(page.entries.len(), medic::page::NOTICE_ENTRIES);
    assert_eq!(page.entries[0].message, "flap 0");
    // The rest of the story up to the page is counted: the page was
    // queued when the timeline held `seq` entries.
    let outbox = r.store.outbox_of(inc.id).await.unwrap();
    let queued = outbox.iter().find(|o| o.kind == "page").unwrap();
    let seq = queued.payload["seq"].as_u64().unwrap() as usize;
    assert!(seq >= flaps, "{seq}");
    assert_eq!(page.entries.len() + page.more, seq);
    // The view shows the newest symptoms, not the oldest.
    assert_eq!(
        page.view.observed.last().map(String::as_str),
        Some(format!("flap {}", flaps - 1).as_str())
    );
    for i in 0..3 {
        r.store
            .append(
                inc.id,
                medic::store::TimelineEntry::new(r.clock.now(), "note", format!("later {i}")),
            )
            .await
            .unwrap();
    }
    r.until_minute(31).await;
    let log = r.log.lock().unwrap().clone();
    let status = log
        .iter()
        .map(|l| &l.4)
        .find(|n| n.kind == NoticeKind::Status)
        .expect("a status update at 30 minutes");
    let said: Vec<&str> = status.entries.iter().map(|e| e.message.as_str()).collect();
    assert!(said.iter().all(|m| !m.starts_with("flap")), "{said:?}");
    assert!(
        said.starts_with(&["later 0", "later 1", "later 2"]),
        "{said:?}"
    );
    assert_eq!(status.more, 0);
    r.stop.cancel();
}

/// After the last level the chain repeats `repeat` times, then stops and
/// says so on the timeline.
#[tokio::test(start_paused = true)]
async fn the_chain_repeats_then_stops_and_says_so() {
    let (r, _) = rig(
        "    repeat: 1\n    levels:\n      - { after: 0m, notify: [oncall] }\n      - { after: 5m, notify: [lead] }\n",
    );
    let inc = r.escalated_incident().await;
    r.until_minute(120).await;
    assert_eq!(
        r.seen(),
        [
            row(0, "oncall", NoticeKind::Page, 1),
            row(5, "lead", NoticeKind::Page, 2),
            row(10, "oncall", NoticeKind::Page, 1),
            row(15, "lead", NoticeKind::Page, 2),
        ]
    );
    let timeline = r.store.timeline(inc.id).await.unwrap();
    let ended: Vec<&str> = timeline
        .iter()
        .filter(|e| e.kind == "escalate")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        ended,
        [
            "escalation ended: all 2 level(s) paged 2 time(s), nobody acknowledged; no further pages (status updates go on)"
        ]
    );
    assert!(r.store.outbox_pending().await.unwrap().is_empty());
    r.stop.cancel();
}

/// An acknowledgement older than `ack_timeout` on an open incident reopens
/// it: the chain resumes at the next level; "Escalate now" pages the next
/// level at once.
#[tokio::test(start_paused = true)]
async fn a_stale_acknowledgement_reopens_and_escalate_now_pages_at_once() {
    let (r, _) = rig(
        "    ack_timeout: 10m\n    levels:\n      - { after: 0m, notify: [oncall] }\n      - { after: 30m, notify: [lead] }\n      - { after: 60m, notify: [cto] }\n",
    );
    let inc = r.escalated_incident().await;
    r.until_minute(2).await;
    r.decide(inc.id, DecisionKind::Acknowledge, "alice").await;
    r.until_minute(11).await;
    assert!(!r.seen().iter().any(|x| x.1 == "lead"), "{:?}", r.seen());
    r.until_minute(12).await;
    let st = r.store.incident(inc.id).await.unwrap().unwrap().state;
    assert_eq!(st, IncidentState::Escalated, "reopened");
    assert!(
        r.seen().contains(&row(12, "lead", NoticeKind::Page, 2)),
        "{:?}",
        r.seen()
    );
    let timeline = r.store.timeline(inc.id).await.unwrap();
    let reopen = timeline.iter().find(|e| e.kind == "reopen").unwrap();
    assert_eq!(
        reopen.message,
        "the acknowledgement by alice is older than its timeout and the incident is still open; escalation resumes at level 2"
    );
    r.until_minute(13).await;
    let o = r.decide(inc.id, DecisionKind::Escalate, "bob").await;
    assert!(o.first);
    // A second click right away changes nothing.
    let again = r.decide(inc.id, DecisionKind::Escalate, "carol").await;
    assert!(!again.first, "{again:?}");
    assert!(
        again
            .message
            .starts_with("already escalated a moment ago by bob"),
        "{again:?}"
    );
    r.until_minute(14).await;
    assert!(
        r.seen().contains(&row(13, "cto", NoticeKind::Page, 3)),
        "{:?}",
        r.seen()
    );
    assert_eq!(r.seen().iter().filter(|x| x.1 == "cto").count(), 1);
    r.stop.cancel();
}

/// A human's Resolve on an incident no task is driving here: it is
/// resolved, with who did it, and everyone paged hears it; clicking again
/// changes nothing.
#[tokio::test(start_paused = true)]
async fn a_human_resolve_reaches_everyone_paged() {
    let (r, _) = rig(RUNBOOK);
    let inc = r.escalated_incident().await;
    r.until_minute(16).await;
    let o = r.decide(inc.id, DecisionKind::Resolve, "dana").await;
    assert_eq!(o.message, "resolved by dana via api");
    r.until_minute(17).await;
    let inc2 = r.store.incident(inc.id).await.unwrap().unwrap();
    assert_eq!(inc2.state, IncidentState::Resolved);
    let seen = r.seen();
    assert_eq!(
        seen[2..],
        [
            row(16, "oncall", NoticeKind::Resolution, 0),
            row(16, "lead", NoticeKind::Resolution, 0)
        ]
    );
    let again = r.decide(inc.id, DecisionKind::Resolve, "erin").await;
    assert!(
        !again.first && again.message.starts_with("already resolved by dana"),
        "{again:?}"
    );
    r.until_minute(40).await;
    assert_eq!(
        r.seen().len(),
        4,
        "no CTO page, no status update once resolved"
    );
    r.stop.cancel();
}

const PLAN: &str = "    status_every: 10m\n    levels:\n      - { after: 0m, notify: [oncall], name: primary on-call }\n      - { after: 15m, notify: [lead], name: technical lead }\n    communication: { channel: [lead], executives: [cto], ack_within: 5m }\n";

/// The communication plan for a critical (P1) incident with an RTO of
/// 15m, nobody acknowledging: on-call paged and the executives told at
/// detection, the missed acknowledgement at 5m, the next level at 50 % of
/// the RTO (saying what is left), progress at 10m with what changed, the
/// RTO clock to everyone once every level is paged, the level-2 timer
/// pages nobody twice, and the resolution reaches everyone notified
/// (after the second progress update, due the same minute).
#[tokio::test(start_paused = true)]
async fn a_p1_pages_at_detection_and_follows_the_rto_clock() {
    let (r, sc) = rig(PLAN);
    let (inc, _) = r
        .store
        .open_incident(NewIncident {
            scenario: sc.name.clone(),
            instance: String::new(),
            severity: "critical".into(),
            summary: "App down".into(),
            at: r.clock.now(),
        })
        .await
        .unwrap();
    r.pager.opened(&inc).await.unwrap();
    r.until_minute(0).await;
    assert_eq!(
        r.seen(),
        [
            row(0, "cto", NoticeKind::Notice, 0),
            row(0, "oncall", NoticeKind::Page, 1),
        ]
    );
    r.until_minute(20).await;
    r.store
        .set_state(inc.id, IncidentState::Resolved, r.clock.now())
        .await
        .unwrap();
    r.pager
        .resolved(
            &inc,
            "resolved: all symptoms clear; recovered in 20m (MISSED RTO 15m)",
        )
        .await
        .unwrap();
    r.until_minute(30).await;
    assert_eq!(
        r.seen(),
        [
            row(0, "cto", NoticeKind::Notice, 0),
            row(0, "oncall", NoticeKind::Page, 1),
            row(7, "lead", NoticeKind::Page, 2),
            row(10, "cto", NoticeKind::Status, 0),
            row(10, "oncall", NoticeKind::Status, 0),
            row(10, "lead", NoticeKind::Status, 0),
            row(12, "cto", NoticeKind::Update, 0),
            row(12, "oncall", NoticeKind::Update, 0),
            row(12, "lead", NoticeKind::Update, 0),
            row(15, "cto", NoticeKind::Update, 0),
            row(15, "oncall", NoticeKind::Update, 0),
            row(15, "lead", NoticeKind::Update, 0),
            row(20, "cto", NoticeKind::Status, 0),
            row(20, "oncall", NoticeKind::Status, 0),
            row(20, "lead", NoticeKind::Status, 0),
            row(20, "cto", NoticeKind::Resolution, 0),
            row(20, "oncall", NoticeKind::Resolution, 0),
            row(20, "lead", NoticeKind::Resolution, 0),
        ]
    );
    let log = r.log.lock().unwrap().clone();
    let texts: Vec<&str> = log.iter().map(|l| l.4.text.as_str()).collect();
    assert_eq!(
        texts[..4],
        [
            "P1: App down (detected 00:00 UTC); medic has no plan for it; on-call is paged",
            "primary on-call paged: App down (detected; medic has no plan for it)",
            "technical lead paged: App down (50% of the RTO 15m used, 7m 30s left)",
            "status update 1: App down is open (10m since detection); since the last update: acknowledgement missed: nobody acknowledged the first page within 5m; RTO clock: 50% of the RTO 15m used, 7m 30s left; paging technical lead",
        ]
    );
    assert_eq!(texts[6], "RTO clock: 80% of the RTO 15m used, 3m left");
    assert_eq!(texts[9], "RTO clock: the RTO of 15m is used up");
    // The on-call's page mentions; the executives' notice too; status does not.
    assert!(log[0].4.mention && log[1].4.mention && !log[3].4.mention);
    let timeline = r.store.timeline(inc.id).await.unwrap();
    let missed: Vec<_> = timeline.iter().filter(|e| e.kind == "ack-missed").collect();
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].at, base() + chrono::Duration::minutes(5));
    r.stop.cancel();
}

/// Closing the loop: on-call paged at detection, the RTO's top level at
/// 100 %, nobody else.
const LOOP: &str = "    levels:\n      - { after: 0m, notify: [oncall], name: primary on-call }\n      - { after: 15m, notify: [lead], name: technical lead }\n    communication: { channel: [cto], rto_shares: [50] }\n";

impl Rig {
    async fn opened_incident(&self, sc: &Scenario) -> Incident {
        let (inc, _) = self
            .store
            .open_incident(NewIncident {
                scenario: sc.name.clone(),
                instance: String::new(),
                severity: "critical".into(),
                summary: "App down".into(),
                at: self.clock.now(),
            })
            .await
            .unwrap();
        self.pager.opened(&inc).await.unwrap();
        inc
    }

    async fn resolve(&self, inc: &Incident) {
        self.store
            .set_state(inc.id, IncidentState::Resolved, self.clock.now())
            .await
            .unwrap();
        self.pager
            .resolved(inc, "resolved: all symptoms clear")
            .await
            .unwrap();
    }

    /// (minute, notifier, kind) of the resolutions and closing notices.
    fn closing(&self) -> Vec<(i64, String, NoticeKind, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| {
                l.2 == NoticeKind::Resolution
                    || (l.2 == NoticeKind::Notice
                        && l.4.event != "open"
                        && l.4.event != "executives")
            })
            .map(|l| (l.0, l.1.clone(), l.2, l.4.event.clone()))
            .collect()
    }
}

fn closing(m: i64, n: &str, k: NoticeKind, event: &str) -> (i64, String, NoticeKind, String) {
    (m, n.into(), k, event.into())
}

/// The defaults: the resolution notice at resolution (right after
/// `clear_for`) to everyone notified; the post-mortem reminder 24 h later
/// to the channel and the level the engineer acknowledged, mentioning
/// them, with the report's link; checklist ticks in between update the
/// incident's messages and show in the reminder.
#[tokio::test(start_paused = true)]
async fn the_resolution_at_once_and_the_post_mortem_reminder_at_24_hours() {
    let (r, sc) = rig(LOOP);
    let inc = r.opened_incident(&sc).await;
    r.until_minute(2).await;
    r.pager
        .decide(
            inc.id,
            Decision {
                kind: DecisionKind::Acknowledge,
                by: "<@U0ALICE>".into(),
                step: None,
                note: String::new(),
                via: "slack".into(),
            },
        )
        .await
        .unwrap();
    r.until_minute(20).await;
    r.resolve(&inc).await;
    r.until_minute(20).await;
    assert_eq!(
        r.closing(),
        [
            closing(20, "oncall", NoticeKind::Resolution, ""),
            closing(20, "lead", NoticeKind::Resolution, ""),
        ],
        "the RTO's 100 % paged the top level (lead); both hear the resolution at once"
    );

    // People tick the runbook's checklist.
    r.until_minute(100).await;
    let o = r
        .pager
        .tick(inc.id, "1.1", true, "bob", "api")
        .await
        .unwrap();
    assert!(o.first);
    assert_eq!(
        o.message,
        "checklist 1.1 All services operational ticked by bob via api"
    );
    let again = r
        .pager
        .tick(inc.id, "1.1", true, "carol", "api")
        .await
        .unwrap();
    assert!(!again.first);
    assert_eq!(
        again.message,
        "checklist 1.1 \"All services operational\" already ticked by bob at 01:40:00 UTC"
    );
    r.pager
        .tick(inc.id, "2.2", true, "<@U0ALICE>", "slack")
        .await
        .unwrap();
    r.pager
        .tick(inc.id, "3.1", true, "bob", "api")
        .await
        .unwrap();
    r.pager
        .tick(inc.id, "3.1", false, "bob", "api")
        .await
        .unwrap();
    let e = r
        .pager
        .tick(inc.id, "9.9", true, "bob", "api")
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with("unknown checklist item \"9.9\""),
        "{e}"
    );
    r.until_minute(101).await;
    let updates: Vec<(i64, String, String)> = r
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.2 == NoticeKind::Update && l.4.event == "checklist")
        .map(|l| (l.0, l.1.clone(), l.4.text.clone()))
        .collect();
    assert_eq!(
        updates.len(),
        8,
        "4 ticks to the 2 notified (not the reminder's channel yet): {updates:?}"
    );
    assert_eq!(
        updates[0],
        (
            100,
            "oncall".into(),
            "checklist 1.1 All services operational ticked by bob via api".into()
        )
    );
    let timeline = r.store.timeline(inc.id).await.unwrap();
    let state = medic::page::checklist::state(&timeline);
    let done: Vec<&str> = state.iter().filter(|s| s.done).map(|s| s.id).collect();
    assert_eq!(done, ["1.1", "2.2"]);

    r.until_minute(20 + 24 * 60 - 1).await;
    assert_eq!(
        r.closing().len(),
        2,
        "no reminder before 24 h: {:?}",
        r.closing()
    );
    r.until_minute(20 + 24 * 60).await;
    assert_eq!(
        r.closing()[2..],
        [
            closing(1460, "cto", NoticeKind::Notice, "postmortem"),
            closing(1460, "oncall", NoticeKind::Notice, "postmortem"),
        ]
    );
    let log = r.log.lock().unwrap().clone();
    let reminder = &log.iter().rev().find(|l| l.1 == "oncall").unwrap().4;
    assert_eq!(
        reminder.text,
        "Post-mortem due: App down (incident #1) was resolved at 2026-01-01 00:20 UTC (acknowledged by <@U0ALICE>); the runbook asks for a post-mortem within 24 hours of resolution. Draft: `medic report 1`. Post-recovery checklist: tick its items with the Slack buttons or POST /api/v1/incidents/1/checklist/ITEM."
    );
    assert!(reminder.mention);
    assert_eq!(reminder.ping, ["U0ALICE"]);
    let ticked: Vec<&str> = reminder
        .view
        .checklist
        .iter()
        .filter(|s| s.done)
        .map(|s| s.id)
        .collect();
    assert_eq!(
        ticked,
        ["1.1", "2.2"],
        "the reminder shows the checklist as it is when sent"
    );
    r.until_minute(5000).await;
    assert_eq!(r.closing().len(), 4, "one reminder: {:?}", r.closing());
    r.stop.cancel();
}

/// `resolution_after` and `postmortem_after` move the two closing
/// notices; nobody acknowledged: the reminder goes to the channel and
/// level 1, and says so.
#[tokio::test(start_paused = true)]
async fn the_closing_notices_follow_their_configured_delays() {
    let (r, sc) = rig(&LOOP.replace(
        "rto_shares: [50] }",
        "rto_shares: [50], resolution_after: 10m, postmortem_after: 2h, report_url: \"https://medic.example.com/report/{id}\" }",
    ));
    let inc = r.opened_incident(&sc).await;
    r.until_minute(20).await;
    r.resolve(&inc).await;
    r.until_minute(29).await;
    assert!(r.closing().is_empty(), "{:?}", r.closing());
    r.until_minute(30).await;
    r.until_minute(20 + 119).await;
    assert_eq!(
        r.closing(),
        [
            closing(30, "oncall", NoticeKind::Resolution, ""),
            closing(30, "lead", NoticeKind::Resolution, ""),
        ]
    );
    r.until_minute(20 + 120).await;
    assert_eq!(
        r.closing()[2..],
        [
            closing(140, "cto", NoticeKind::Notice, "postmortem"),
            closing(140, "oncall", NoticeKind::Notice, "postmortem"),
        ]
    );
    let log = r.log.lock().unwrap().clone();
    let reminder = &log.last().unwrap().4;
    assert!(
        reminder.text.contains("(nobody acknowledged it)")
            && reminder
                .text
                .contains("Draft: https://medic.example.com/report/1."),
        "{}",
        reminder.text
    );
    assert!(reminder.ping.is_empty());
    r.stop.cancel();
}

/// An incident medic fixed alone: the FYI waits `resolution_after` too,
/// and there is no post-mortem reminder (nobody was paged).
#[tokio::test(start_paused = true)]
async fn a_self_healed_incident_gets_its_fyi_late_and_no_reminder() {
    let (r, sc) = rig(&LOOP.replace(
        "rto_shares: [50] }",
        "rto_shares: [50], resolution_after: 5m, critical: { open: channel } }",
    ));
    let inc = r.opened_incident(&sc).await;
    r.until_minute(3).await;
    r.resolve(&inc).await;
    r.until_minute(3 * 24 * 60).await;
    assert_eq!(r.closing(), [closing(8, "cto", NoticeKind::Notice, "fyi")]);
    r.stop.cancel();
}

/// The affected users' email: `users_within` (1h) after detection, not
/// before, once, through the outbox (a restart of the pager at 30 min on
/// the same store keeps the timer); their resolution notice once told; an
/// incident resolved before the hour tells them nothing.
#[tokio::test(start_paused = true)]
async fn affected_users_are_told_at_one_hour_once_and_hear_the_end() {
    let text = "notifiers:\n  oncall: { log: {} }\n  users:\n    email: { server: smtp.example.com, from: medic@example.com, bcc: [all@lists.example.com] }\n\
         escalation:\n  default:\n    status_every: 30m\n    levels: [{ after: 0m, notify: [oncall] }]\n    communication: { channel: [oncall], users: [users] }\n\
         public_status:\n  listen: 127.0.0.1:0\n  components: { Portal: { scenarios: [app-down] } }\n";
    let config = medic::config::load_str("medic.yaml", text).unwrap();
    let sc = scenario(&config);
    let clock = Clock::tokio(base());
    let log: Log = Arc::default();
    let store = Arc::new(MemoryStore::new());
    let start = || {
        let notifiers: HashMap<String, Arc<dyn Notifier>> = ["oncall", "users"]
            .iter()
            .map(|n| {
                let r: Arc<dyn Notifier> = Arc::new(Rec {
                    name: n.to_string(),
                    log: log.clone(),
                    clock: clock.clone(),
                });
                (n.to_string(), r)
            })
            .collect();
        let pager = Arc::new(Pager::with_notifiers(
            &config,
            notifiers,
            store.clone(),
            clock.clone(),
        ));
        pager.register(&sc);
        let stop = CancellationToken::new();
        tokio::spawn(pager.clone().run(stop.clone()));
        (pager, stop)
    };
    let (pager, stop) = start();
    let r = Rig {
        store: store.clone(),
        pager,
        log: log.clone(),
        clock: clock.clone(),
        stop,
    };
    let users = || {
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| l.1 == "users")
            .map(|l| (l.0, l.2, l.4.event.clone(), l.4.public.clone()))
            .collect::<Vec<_>>()
    };
    let inc = r.opened_incident(&sc).await;
    r.until_minute(30).await;
    assert!(users().is_empty(), "{:?}", users());
    // A restart: the dispatcher stops, a new pager on the same store.
    r.stop.cancel();
    let (pager, stop) = start();
    let r = Rig { pager, stop, ..r };
    r.until_minute(59).await;
    assert!(users().is_empty(), "not before the hour: {:?}", users());
    r.until_minute(60).await;
    let told = users();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        (told[0].0, told[0].1, told[0].2.as_str()),
        (60, NoticeKind::Notice, "users")
    );
    let public = told[0].3.clone().expect("the public incident");
    assert_eq!(public.incident.name, "Major outage: Portal");
    assert_eq!(
        public.components,
        [(
            "Portal".to_string(),
            medic::page::public::ComponentState::MajorOutage
        )]
    );
    // Not among everyone notified: no status updates, no internal notice.
    r.until_minute(150).await;
    assert_eq!(users().len(), 1, "once: {:?}", users());
    let timeline = r.store.timeline(inc.id).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|t| t.kind == "page" && t.message.starts_with("notice (users) via users")),
        "on the timeline: {timeline:?}"
    );
    r.resolve(&inc).await;
    r.until_minute(151).await;
    let end = users();
    assert_eq!(end.len(), 2, "{end:?}");
    assert_eq!(
        (end[1].1, end[1].2.as_str()),
        (NoticeKind::Resolution, "users")
    );
    let public = end[1].3.clone().unwrap();
    assert_eq!(
        public.incident.status,
        medic::page::statuspage::Status::Resolved
    );

    // Resolved at 20 min: the users were never told, and hear nothing.
    let second = r.opened_incident(&sc).await;
    r.until_minute(171).await;
    r.resolve(&second).await;
    r.until_minute(151 + 120).await;
    assert_eq!(users().len(), 2, "{:?}", users());
    let timer = r
        .store
        .outbox_of(second.id)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "users-timer")
        .unwrap();
    assert_eq!(timer.state, OutboxState::Cancelled);
    r.stop.cancel();
}
