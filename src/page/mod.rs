//! Paging humans: escalation policies, notifiers and human decisions.
//!
//! Everything the pager will do is first written to the store's *outbox*
//! ([`crate::store::NewOutbox`]) under a deterministic key, then done by one
//! dispatcher task ([`Pager::run`]): escalation timers, pages, status
//! updates, state-change updates and resolution notices. A kill -9 at any
//! point loses nothing (the entry is still pending after the restart) and
//! sends nothing twice (keys are unique; an entry whose delivery may have
//! reached the receiver is delivered idempotently: Slack looks its message
//! up before posting, PagerDuty reuses the incident's `dedup_key`, webhooks
//! carry an `Idempotency-Key`).
//!
//! Escalation: when an incident escalates, the timer of level 1 is
//! enqueued. A level fires only if the incident is still unacknowledged and
//! unresolved; firing pages the level's notifiers and enqueues the next
//! level's timer (after the last level, the chain repeats `repeat` times,
//! then stops and says so). An acknowledgement stops the chain; with
//! `ack_timeout` a stale acknowledgement reopens the incident and the chain
//! resumes. Status updates every `status_every` carry the timeline since
//! the previous one; the resolution notice reaches every notifier paged,
//! with the time to recovery against the scenario's RTO.
//!
//! With a policy's communication plan ([`crate::config::Communication`],
//! `comms.rs`) everything is timed from detection instead: an opening
//! incident pages level 1 or notifies the channel (by severity), tells the
//! executives of a P1, starts the RTO clock (shares of the RTO escalate one
//! level, 100 % pages the top level), the status updates and, after the
//! first page, the acknowledgement deadline; an incident medic fixed alone
//! ends with an FYI to the channel instead of a resolution notice; the
//! affected users (`users`) get the public template `users_within` (1h)
//! after detection, and their resolution once told.
//!
//! Every page delivered is on the incident's timeline (kind `page`, with the
//! level and notifier), as are decisions (kind `decision`, with who made
//! them).

pub mod checklist;
mod comms;
pub mod decision;
mod dispatch;
pub mod email;
pub mod log;
pub mod pagerduty;
pub mod public;
pub mod slack;
pub mod statuspage;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, EscalationPolicy, NotifierConfig, SlackApp};
use crate::rules::model::Scenario;
use crate::store::{
    Incident, IncidentId, IncidentState, NewOutbox, OutboxState, Store, StoreError, TimelineEntry,
};

pub use decision::{DecideError, Decision, DecisionKind, DecisionOutcome};

/// What a notice is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// An escalation level pages: medic needs a human.
    Page,
    /// The incident changed (acknowledged, a step awaits approval, a
    /// decision): messages are updated in place.
    Update,
    /// The periodic status update, with the timeline since the last one.
    Status,
    /// It is over, with the time to recovery against the RTO.
    Resolution,
    /// Not a page: the channel (or the executives) hear that something
    /// happened (opened, medic fixed it alone, the RTO clock).
    Notice,
}

impl NoticeKind {
    /// The outbox kind.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Page => "page",
            NoticeKind::Update => "update",
            NoticeKind::Status => "status",
            NoticeKind::Resolution => "resolution",
            NoticeKind::Notice => "notice",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "page" => NoticeKind::Page,
            "update" => NoticeKind::Update,
            "status" => NoticeKind::Status,
            "resolution" => NoticeKind::Resolution,
            "notice" => NoticeKind::Notice,
            _ => return None,
        })
    }
}

/// What a notifier renders: the incident as medic knows it now.
#[derive(Clone, Debug, Serialize)]
pub struct View {
    pub incident: Incident,
    /// The scenario's recovery time objective.
    pub rto: Option<Duration>,
    /// Config targets the scenario watches.
    pub targets: Vec<String>,
    /// What medic observed (newest last).
    pub observed: Vec<String>,
    /// What medic did (newest last).
    pub done: Vec<String>,
    /// What happens next, if anything is scheduled.
    pub next: Option<String>,
    /// The step waiting for a human's approval.
    pub awaiting: Option<String>,
    /// Who acted, first actor of each decision (`acknowledged by <@U1>`).
    pub decisions: Vec<String>,
    /// Incidents waiting on this one, the root cause
    /// (`incident #2 (application-service-failure) waits on this one`);
    /// `incident.cause` names this one's own cause. Dependents page no one:
    /// their cause's pages list them.
    pub dependents: Vec<String>,
    /// The incident affects a public component (`public_status:`): Slack
    /// offers *Post status update*.
    pub public: bool,
    /// The post-recovery checklist as ticked so far.
    pub checklist: Vec<checklist::State>,
    pub now: DateTime<Utc>,
}

/// The most timeline entries one notice carries; the rest are counted
/// ([`Notice::more`]) and stay in the store, the API and the console.
pub const NOTICE_ENTRIES: usize = 100;

/// One message to deliver, built from an outbox entry.
#[derive(Clone, Debug)]
pub struct Notice {
    pub kind: NoticeKind,
    /// The outbox key: an idempotency key receivers may use.
    pub key: String,
    /// 1-based escalation level (0 when not a page).
    pub level: usize,
    /// Who the level is (`technical lead`), when configured.
    pub level_name: Option<String>,
    /// What this notice says, for humans.
    pub text: String,
    /// Timeline entries it carries (Slack posts them to the thread).
    pub entries: Vec<TimelineEntry>,
    /// Entries of the same stretch of the timeline not carried (beyond
    /// [`NOTICE_ENTRIES`]): a notice says how many.
    pub more: usize,
    pub view: View,
    /// What this notifier stored for the incident (a Slack message ts).
    pub reference: Option<serde_json::Value>,
    /// An earlier delivery attempt may have reached the receiver (medic
    /// crashed or lost the reply): look before posting again.
    pub maybe_sent: bool,
    /// What changed (updates), see [`Notice::event`]; what a notice is
    /// about (`open`, `executives`, `fyi`, `rto`).
    pub event: String,
    /// The on-call should be pinged (pages, resolutions, `notify`
    /// notices); otherwise the message only informs.
    pub mention: bool,
    /// Slack users to mention besides the notifier's own (the engineer
    /// who acknowledged, from a verified click): IDs only.
    pub ping: Vec<String>,
    /// For the affected users (event `users`): the incident as the public
    /// status page shows it, all their template may show.
    pub public: Option<PublicNotice>,
}

/// What the affected users may read of an incident: the public page's
/// title, the incident's public name, status, times and human-written
/// updates, and its components' states now.
#[derive(Clone, Debug, Serialize)]
pub struct PublicNotice {
    pub title: String,
    pub incident: public::PublicIncident,
    /// The incident's components and their state on the page now (the
    /// worst open incident on each).
    pub components: Vec<(String, public::ComponentState)>,
}

impl Notice {
    /// What changed, for updates (`acknowledge`, `approval`, `reopen`...).
    pub fn event(&self) -> &str {
        &self.event
    }
}

/// What a delivery returned.
#[derive(Clone, Debug, Default)]
pub struct Delivered {
    /// Stored for the next notices of the incident (see [`Notice::reference`]).
    pub reference: Option<serde_json::Value>,
    pub detail: String,
}

/// Why a notice was not delivered. The variant names double as metric labels.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Worth trying again (HTTP 429, 5xx, network), at the earliest after
    /// `after` when the receiver said so (Retry-After).
    #[error("{reason}")]
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Trying again would fail the same way (HTTP 400, bad token).
    #[error("{0}")]
    Permanent(String),
}

impl NotifyError {
    /// The error with every occurrence of `secret` (a webhook URL) cut
    /// out: a receiver may echo its URL in an error body.
    pub fn scrubbed(self, secret: &str) -> Self {
        let cut = |s: String| {
            if secret.is_empty() {
                s
            } else {
                s.replace(secret, "<url>")
            }
        };
        match self {
            NotifyError::Retry { reason, after } => NotifyError::Retry {
                reason: cut(reason),
                after,
            },
            NotifyError::Permanent(reason) => NotifyError::Permanent(cut(reason)),
        }
    }
}

/// A request error as words, without the URL (`reqwest`'s `without_url`):
/// webhook URLs are secrets. Its causes follow (`connection refused`);
/// they never carry the URL.
pub(crate) fn request_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Delivers notices somewhere humans look.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    async fn send(&self, notice: &Notice) -> Result<Delivered, NotifyError>;

    /// Delivers a report that belongs to no incident of this medic (a
    /// scheduled drill's report): a message of its own, never threaded
    /// under or updating an incident's message. Notifiers that only page
    /// (PagerDuty) take none.
    async fn report(&self, report: &Report) -> Result<Delivered, NotifyError> {
        Err(NotifyError::Permanent(format!(
            "this notifier takes no reports ({}): send them to a channel (slack, email, webhook, log)",
            report.title
        )))
    }
}

/// A report for people that is not about one of this medic's incidents.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Unique per report (the outbox-style key: receivers drop copies).
    pub key: String,
    /// What it reports (`drill`).
    pub event: String,
    /// What it is, one line (`drill report: redis-cache-failure`).
    pub title: String,
    /// The report, plain text (preformatted: keep its lines).
    pub text: String,
    /// Its figures as data (webhooks get them).
    pub data: serde_json::Value,
    pub now: DateTime<Utc>,
}

/// Facts about a scenario the pager needs for its incidents.
#[derive(Clone, Debug)]
struct ScenarioInfo {
    rto: Duration,
    policy: String,
    targets: Vec<String>,
    /// The plan, for humans: `restart-redis, then flush-patient-cache
    /// (approval)`.
    plan: String,
}

/// The configured notifiers, and the Slack ones by name (for buttons).
struct Built {
    notifiers: HashMap<String, Arc<dyn Notifier>>,
    slack: Vec<Arc<slack::SlackNotifier>>,
}

/// Builds the configured notifiers. A secret that cannot be read makes that
/// notifier fail every delivery, loudly, instead of stopping medic.
fn build(config: &Config) -> Built {
    let mut notifiers: HashMap<String, Arc<dyn Notifier>> = HashMap::new();
    let mut slack = Vec::new();
    for (name, n) in &config.notifiers {
        let built: Arc<dyn Notifier> = match n {
            NotifierConfig::Log(_) => Arc::new(log::LogNotifier),
            NotifierConfig::Slack(c) => {
                let s = Arc::new(slack::SlackNotifier::new(name, c));
                slack.push(s.clone());
                s
            }
            NotifierConfig::PagerDuty(c) => Arc::new(pagerduty::PagerDutyNotifier::new(name, c)),
            NotifierConfig::Webhook(c) => Arc::new(webhook::WebhookNotifier::new(name, c)),
            NotifierConfig::Email(c) => Arc::new(email::EmailNotifier::new(name, c)),
        };
        notifiers.insert(name.clone(), built);
    }
    Built { notifiers, slack }
}

/// The Statuspage client of `public_status.statuspage`, if configured.
fn statuspage_of(config: &Config) -> Option<Arc<statuspage::Client>> {
    let sp = config.public_status.as_ref()?.statuspage.as_ref()?;
    Some(Arc::new(statuspage::Client::new(sp)))
}

/// Builds the configured notifiers (by name).
pub fn build_notifiers(config: &Config) -> HashMap<String, Arc<dyn Notifier>> {
    build(config).notifiers
}

/// A notifier as the sink of scheduled drills' reports
/// ([`crate::jobs::drill`]): the report goes out as a message of its own
/// ([`Notifier::report`]).
struct ReportTo(Arc<dyn Notifier>);

#[async_trait::async_trait]
impl crate::jobs::drill::ReportSink for ReportTo {
    async fn report(
        &self,
        key: String,
        title: String,
        text: String,
        data: serde_json::Value,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, String> {
        let r = Report {
            key,
            event: "drill".into(),
            title,
            text,
            data,
            now,
        };
        self.0
            .report(&r)
            .await
            .map(|d| d.detail)
            .map_err(|e| e.to_string())
    }
}

/// Lets drill jobs send their reports to the config's notifiers (jobs sit
/// below this module and cannot build them); called at start-up.
pub fn register_report_sinks() {
    crate::jobs::drill::register_notifiers(|config| {
        build_notifiers(config)
            .into_iter()
            .map(|(name, n)| {
                let sink: Arc<dyn crate::jobs::drill::ReportSink> = Arc::new(ReportTo(n));
                (name, sink)
            })
            .collect()
    });
}

/// What reloads replace.
struct Settings {
    notifiers: HashMap<String, Arc<dyn Notifier>>,
    slack: Vec<Arc<slack::SlackNotifier>>,
    policies: BTreeMap<String, EscalationPolicy>,
    app: Option<SlackApp>,
    /// `public_status:` and its Statuspage client ([`public`]).
    public: Option<crate::config::PublicStatus>,
    statuspage: Option<Arc<statuspage::Client>>,
}

/// Runs escalation policies, delivers notices and takes human decisions.
/// One per daemon; [`Pager::run`] is its dispatcher.
pub struct Pager {
    store: Arc<dyn Store>,
    clock: Clock,
    settings: RwLock<Settings>,
    scenarios: Mutex<HashMap<String, ScenarioInfo>>,
    /// Notifiers were injected (`medic test`): reloads keep them.
    injected: bool,
    /// Wakes the dispatcher (something was enqueued).
    wake: Notify,
    /// Bumped on every decision: approval waits re-read the timeline.
    decided: watch::Sender<u64>,
    /// Incident tasks running here, by incident: cancelling one stops its
    /// plan at a safe point and resolves it (a human's Resolve).
    live: Mutex<HashMap<IncidentId, CancellationToken>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pager {
    pub fn new(config: &Config, store: Arc<dyn Store>, clock: Clock) -> Self {
        let b = build(config);
        Self::assemble(config, b.notifiers, b.slack, store, clock, false)
    }

    /// A pager that pages `notifiers` instead of the configured ones
    /// (`medic test` records pages instead of sending them).
    pub fn with_notifiers(
        config: &Config,
        notifiers: HashMap<String, Arc<dyn Notifier>>,
        store: Arc<dyn Store>,
        clock: Clock,
    ) -> Self {
        Self::assemble(config, notifiers, Vec::new(), store, clock, true)
    }

    fn assemble(
        config: &Config,
        notifiers: HashMap<String, Arc<dyn Notifier>>,
        slack: Vec<Arc<slack::SlackNotifier>>,
        store: Arc<dyn Store>,
        clock: Clock,
        injected: bool,
    ) -> Self {
        Pager {
            injected,
            store,
            clock,
            settings: RwLock::new(Settings {
                notifiers,
                slack,
                policies: config.escalation.clone(),
                app: config.slack.clone(),
                public: config.public_status.clone(),
                statuspage: statuspage_of(config),
            }),
            scenarios: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            decided: watch::channel(0).0,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a reloaded config's notifiers and policies (entries already in
    /// the outbox are delivered with the new ones).
    pub fn reconfigure(&self, config: &Config) {
        let mut s = self.settings.write().unwrap_or_else(|p| p.into_inner());
        if !self.injected {
            let b = build(config);
            s.notifiers = b.notifiers;
            s.slack = b.slack;
        }
        s.policies = config.escalation.clone();
        s.app = config.slack.clone();
        s.public = config.public_status.clone();
        s.statuspage = statuspage_of(config);
        drop(s);
        self.wake.notify_one();
    }

    fn settings(&self) -> std::sync::RwLockReadGuard<'_, Settings> {
        self.settings.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The Slack app settings (signing secret, approvers), if configured.
    pub fn slack_app(&self) -> Option<SlackApp> {
        self.settings().app.clone()
    }

    /// The first Slack notifier (user group look-ups).
    pub fn slack_client(&self) -> Option<Arc<slack::SlackNotifier>> {
        self.settings().slack.first().cloned()
    }

    fn policy(&self, name: &str) -> Option<EscalationPolicy> {
        self.settings().policies.get(name).cloned()
    }

    /// Remembers what the pager needs of `scenario` for its incidents.
    pub fn register(&self, scenario: &Scenario) {
        let targets = public::scenario_targets(scenario);
        let plan = scenario
            .plan
            .iter()
            .map(|s| match s.approval {
                crate::rules::model::Approval::Required(_) => format!("{} (with approval)", s.name),
                _ => s.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", then ");
        lock(&self.scenarios).insert(
            scenario.name.clone(),
            ScenarioInfo {
                rto: scenario.rto.get(),
                policy: scenario.escalation.clone(),
                targets,
                plan,
            },
        );
    }

    fn info(&self, scenario: &str) -> Option<ScenarioInfo> {
        lock(&self.scenarios).get(scenario).cloned()
    }

    /// An incident task runs here: `token` resolves it (a human's Resolve).
    pub fn attach(&self, id: IncidentId, token: CancellationToken) {
        lock(&self.live).insert(id, token);
    }

    /// The incident task ended.
    pub fn detach(&self, id: IncidentId) {
        lock(&self.live).remove(&id);
    }

    /// A receiver that changes on every decision (approval waits).
    pub fn decisions(&self) -> watch::Receiver<u64> {
        self.decided.subscribe()
    }

    async fn enqueue(
        &self,
        id: IncidentId,
        key: String,
        notifier: &str,
        kind: &str,
        due_at: DateTime<Utc>,
        payload: serde_json::Value,
    ) -> Result<bool, StoreError> {
        let (_, created) = self
            .store
            .outbox_enqueue(NewOutbox {
                incident_id: id,
                key,
                notifier: notifier.to_string(),
                kind: kind.to_string(),
                due_at,
                payload,
            })
            .await?;
        Ok(created)
    }

    /// The escalation epoch: bumped each time a stopped chain restarts
    /// (stale acknowledgement, Escalate now on a finished chain).
    async fn epoch(&self, id: IncidentId) -> Result<u64, StoreError> {
        Ok(self
            .store
            .timeline_kinds(id, &["reopen"], None)
            .await?
            .len() as u64)
    }

    /// Starts `policy`'s chain for `incident`, measured from `since`. While
    /// a chain runs, escalating again changes nothing; after a chain stopped
    /// (acknowledged, approved, ended), a `fresh` escalation (the plan gave
    /// up anew) reopens it at the level after the last one paged. An
    /// incident that is not escalated pages nobody.
    pub async fn escalate(
        &self,
        incident: &Incident,
        policy: &str,
        since: DateTime<Utc>,
        fresh: bool,
    ) -> Result<(), StoreError> {
        let Some(p) = self.policy(policy) else {
            tracing::error!(
                incident = incident.id,
                policy,
                "escalation policy missing; paging nobody"
            );
            return Ok(());
        };
        let current = self.store.incident(incident.id).await?;
        if current.is_some_and(|i| i.state != IncidentState::Escalated) {
            return Ok(());
        }
        let outbox = self.store.outbox_of(incident.id).await?;
        let comm = p.communication.is_some();
        if comm && fresh && !self.paged(incident.id).await?.is_empty() {
            // Whoever heard of it already (a page at detection, the RTO
            // clock, a notice) hears that the plan gave up (a step waiting
            // for approval has told them already).
            let last = self
                .store
                .timeline_kinds(incident.id, &["escalate", "approval"], Some(1))
                .await?
                .pop();
            if let Some(e) = last.filter(|e| e.kind == "escalate") {
                self.changed(incident.id, "escalate", &e.message).await?;
            }
        }
        let timers = outbox.iter().filter(|e| e.kind == "timer");
        if timers.clone().any(|e| e.state == OutboxState::Pending) {
            return Ok(());
        }
        if timers.count() > 0 {
            if fresh {
                dispatch::reopen(self, incident.id, policy, "the plan gave up again").await?;
            }
            return Ok(());
        }
        let first = p.levels.first().map_or(Duration::ZERO, |l| l.after.get());
        // With a communication plan the levels are timed from detection
        // (the runbook's 0/15/30/60 min); level 1 pages now if that is later.
        let base = if comm { incident.opened_at } else { since };
        let due =
            (base + chrono::Duration::from_std(first).unwrap_or(chrono::Duration::MAX)).max(since);
        self.enqueue(
            incident.id,
            format!("{}:timer:e0:r0:l1", incident.id),
            "",
            "timer",
            due,
            json!({ "policy": policy, "epoch": 0, "round": 0, "level": 1, "base": base, "detection": comm }),
        )
        .await?;
        if let Some(every) = p.status_every {
            let due = since + chrono::Duration::from_std(every.get()).unwrap_or_default();
            // The first update carries what is written from now on.
            let from = self.store.timeline_len(incident.id).await?;
            self.enqueue(
                incident.id,
                format!("{}:status-timer:1", incident.id),
                "",
                "status-timer",
                due,
                json!({ "n": 1, "since": since, "from": from }),
            )
            .await?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Notifiers that were paged or notified about `id` (sent or on their
    /// way). In the order first reached.
    async fn paged(&self, id: IncidentId) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = Vec::new();
        for e in self.store.outbox_of(id).await? {
            // The FYI and the post-mortem reminder (due a day after the
            // end) make nobody a recipient of the incident's updates.
            // Nor do the affected users' notices: they hear the public
            // template only, never an internal notice.
            let closing = e.payload["event"] == "fyi"
                || e.payload["event"] == "postmortem"
                || e.payload["event"] == comms::USERS;
            if (e.kind == "page" || (e.kind == "notice" && !closing))
                && matches!(e.state, OutboxState::Sent | OutboxState::Pending)
                && !out.contains(&e.notifier)
            {
                out.push(e.notifier);
            }
        }
        Ok(out)
    }

    /// Tells everyone paged about `id` that it changed (messages updated in
    /// place; PagerDuty hears acknowledgements), carrying `text`. `event`
    /// names the change (`acknowledge`, `approval`, `reopen`, `decision`).
    pub async fn changed(&self, id: IncidentId, event: &str, text: &str) -> Result<(), StoreError> {
        let seq = self.store.timeline_len(id).await?;
        let now = self.clock.now();
        for n in self.paged(id).await? {
            self.enqueue(
                id,
                format!("{id}:update:{seq}:{n}"),
                &n,
                "update",
                now,
                json!({ "text": text, "seq": seq, "event": event }),
            )
            .await?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Tells everyone who was paged about `incident` that it is over.
    /// Escalation timers still pending are cancelled when they come due.
    pub async fn resolved(&self, incident: &Incident, message: &str) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.cancel_pending(
            incident.id,
            &["rto-timer", "ack-deadline", "users-timer"],
            "resolved",
        )
        .await?;
        self.public_resolved(incident).await?;
        // With a communication plan, `resolution_after` later (default at
        // once); the post-mortem reminder follows.
        let comm = self.comm(&incident.scenario).map(|(_, _, c)| c);
        let due = now
            + comm.as_ref().map_or(chrono::Duration::zero(), |c| {
                dispatch::chrono(c.resolution_after.get())
            });
        // Affected users who were told hear the end, whoever else does.
        comms::users_resolved(self, incident, due).await?;
        if comms::self_healed(self, incident, message).await? {
            self.wake.notify_one();
            return Ok(());
        }
        for n in self.paged(incident.id).await? {
            self.enqueue(
                incident.id,
                format!("{}:resolution:{n}", incident.id),
                &n,
                "resolution",
                due,
                json!({ "text": message }),
            )
            .await?;
        }
        if let Some(c) = comm {
            comms::postmortem(self, incident, &c, now).await?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Resolves once nothing is due in the outbox (shutdown lets pending
    /// notices out first).
    pub async fn idle(&self) {
        loop {
            let now = self.clock.now();
            match self.store.outbox_pending().await {
                Ok(p) if p.iter().all(|e| e.due_at > now) => return,
                Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Runs the dispatcher until `stop`: delivers every due outbox entry,
    /// oldest first, and sleeps until the next one comes due.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        dispatch::run(&self, stop).await
    }

    async fn note(
        &self,
        id: IncidentId,
        kind: &str,
        msg: String,
        data: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.store
            .append(
                id,
                TimelineEntry::new(self.clock.now(), kind, msg).with_data(data),
            )
            .await
    }
}

/// Every notifier's HTTP client: bounded, no redirects to elsewhere.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// `Retry-After` in seconds, if the receiver sent one.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Sorts an HTTP outcome: 2xx is fine; 429, 5xx and network errors are
/// worth retrying (after Retry-After, if given); any other status is not.
pub(crate) async fn checked(
    what: &str,
    r: Result<reqwest::Response, reqwest::Error>,
) -> Result<reqwest::Response, NotifyError> {
    let resp = match r {
        Ok(resp) => resp,
        Err(e) => {
            return Err(NotifyError::Retry {
                reason: format!("{what}: {}", request_error(e)),
                after: None,
            });
        }
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let after = retry_after(resp.headers());
    let body: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    let reason = format!("{what}: HTTP {status}: {body}");
    if status.as_u16() == 429 || status.is_server_error() {
        Err(NotifyError::Retry { reason, after })
    } else {
        Err(NotifyError::Permanent(reason))
    }
}

/// `1h 5m` for humans.
pub fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// reqwest puts the URL in its errors; a webhook URL is a secret.
    #[tokio::test]
    async fn request_errors_keep_their_cause_but_not_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/hook/SEKRET?token=SEKRET2");
        let r = http_client().post(&url).send().await;
        let raw = r
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(
            raw.contains("SEKRET"),
            "reqwest's own text has the URL: {raw}"
        );
        let Err(NotifyError::Retry { reason, .. }) = checked("webhook", r).await else {
            panic!("a refused connection is worth retrying");
        };
        assert!(!reason.contains("SEKRET"), "{reason}");
        assert!(
            reason.starts_with("webhook: error sending request"),
            "{reason}"
        );
        assert!(reason.to_lowercase().contains("connect"), "{reason}");
        // An echo of the URL in a receiver's answer is cut out too.
        let e = NotifyError::Permanent(format!("webhook: HTTP 400: bad {url}"));
        assert_eq!(e.scrubbed(&url).to_string(), "webhook: HTTP 400: bad <url>");
    }
}
