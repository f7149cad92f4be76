//! The outbox dispatcher: fires escalation, status and acknowledgement
//! timers and delivers notices, one entry at a time, oldest due first.
//!
//! Per entry: the attempt is counted in the store *before* the notifier is
//! called (so a crash leaves `attempts > 0`: the notifier looks before it
//! posts again), then the outcome is written. Failures worth retrying are
//! rescheduled in the store with a capped, jittered exponential backoff (or
//! the receiver's Retry-After, if longer): a restart keeps the schedule.

use std::hash::BuildHasher;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::decision;
use super::{Notice, NoticeKind, NotifyError, Pager, View, human};
use crate::store::{IncidentId, IncidentState, OutboxEntry, OutboxMark, OutboxState, StoreError};

/// Delivery attempts before a notice is given up on.
pub(super) const MAX_ATTEMPTS: u32 = 12;
/// First retry delay; doubles per attempt up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// One delivery may take this long.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest sleep with nothing due (enqueues wake the dispatcher anyway).
const IDLE: Duration = Duration::from_secs(3600);

/// Capped exponential backoff with jitter: a random delay in the upper half
/// of `min(cap, base * 2^(attempts-1))`, so retries of many entries spread.
pub fn backoff(attempts: u32, key: &str) -> Duration {
    let exp = BACKOFF_BASE
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(BACKOFF_CAP);
    let r = std::collections::hash_map::RandomState::new().hash_one((key, attempts));
    let half = exp / 2;
    half + Duration::from_millis(r % (half.as_millis() as u64 + 1))
}

pub(super) async fn run(p: &Pager, stop: CancellationToken) {
    loop {
        let wait = match drain(p, &stop).await {
            Ok(Some(next)) => (next - p.clock.now())
                .to_std()
                .unwrap_or_default()
                .min(IDLE),
            Ok(None) => IDLE,
            Err(e) => {
                tracing::error!(error = %e, "pager: store failure; retrying in 5s");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = p.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Processes every due entry; returns when the next one is due.
async fn drain(p: &Pager, stop: &CancellationToken) -> Result<Option<DateTime<Utc>>, StoreError> {
    loop {
        let pending = p.store.outbox_pending().await?;
        let now = p.clock.now();
        let due: Vec<OutboxEntry> = pending
            .iter()
            .filter(|e| e.due_at <= now)
            .cloned()
            .collect();
        if due.is_empty() {
            return Ok(pending.first().map(|e| e.due_at));
        }
        for e in due {
            if stop.is_cancelled() {
                return Ok(None);
            }
            process(p, e).await?;
        }
    }
}

pub(super) async fn mark(
    p: &Pager,
    e: &OutboxEntry,
    state: OutboxState,
    detail: &str,
) -> Result<(), StoreError> {
    let now = p.clock.now();
    p.store
        .outbox_mark(
            e.id,
            OutboxMark {
                state,
                attempts: e.attempts,
                due_at: e.due_at,
                detail: detail.to_string(),
                at: now,
            },
        )
        .await
}

/// Why an incident's clocks page nobody now: it waits on an open cause
/// (dependents are named in their cause's pages, once).
async fn dependent(p: &Pager, id: IncidentId) -> Result<Option<String>, StoreError> {
    let Some(cause) = p.store.incident(id).await?.and_then(|i| i.cause) else {
        return Ok(None);
    };
    Ok(match p.store.incident(cause).await? {
        Some(c) if c.state != IncidentState::Resolved => Some(format!(
            "not paged: waits on incident #{cause} ({}), whose pages name it",
            c.scenario
        )),
        _ => None,
    })
}

async fn process(p: &Pager, e: OutboxEntry) -> Result<(), StoreError> {
    if matches!(
        e.kind.as_str(),
        "timer" | "status-timer" | "ack-timer" | "rto-timer" | "ack-deadline"
    ) && let Some(why) = dependent(p, e.incident_id).await?
    {
        return mark(p, &e, OutboxState::Cancelled, &why).await;
    }
    match e.kind.as_str() {
        "timer" => fire_level(p, &e).await,
        "status-timer" => fire_status(p, &e).await,
        "ack-timer" => fire_ack(p, &e).await,
        "rto-timer" => super::comms::fire_rto(p, &e).await,
        "ack-deadline" => super::comms::fire_ack_deadline(p, &e).await,
        "users-timer" => super::comms::fire_users(p, &e).await,
        "public" => super::public::deliver(p, &e).await,
        k => match NoticeKind::parse(k) {
            Some(kind) => deliver(p, &e, kind).await,
            None => {
                mark(
                    p,
                    &e,
                    OutboxState::Failed,
                    &format!("unknown outbox kind {k:?}"),
                )
                .await
            }
        },
    }
}

pub(super) fn text(e: &OutboxEntry, field: &str) -> String {
    e.payload[field].as_str().unwrap_or_default().to_string()
}

pub(super) fn num(e: &OutboxEntry, field: &str) -> u64 {
    e.payload[field].as_u64().unwrap_or_default()
}

/// A timeline position in the payload, when there is one.
fn pos(e: &OutboxEntry, field: &str) -> Option<usize> {
    e.payload[field].as_u64().map(|n| n as usize)
}

fn time(e: &OutboxEntry, field: &str) -> Option<DateTime<Utc>> {
    e.payload[field]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

pub(super) fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// One escalation level comes due.
async fn fire_level(p: &Pager, e: &OutboxEntry) -> Result<(), StoreError> {
    let id = e.incident_id;
    let Some(inc) = p.store.incident(id).await? else {
        return mark(p, e, OutboxState::Failed, "incident not found").await;
    };
    // A chain timed from detection runs while medic still remediates.
    let detection = e.payload["detection"] == true;
    let live = match detection {
        true => !matches!(
            inc.state,
            IncidentState::Acknowledged | IncidentState::Resolved
        ),
        false => inc.state == IncidentState::Escalated,
    };
    if !live {
        let why = format!("not paged: the incident is {}", inc.state.as_str());
        return mark(p, e, OutboxState::Cancelled, &why).await;
    }
    let epoch = p.epoch(id).await?;
    if num(e, "epoch") != epoch {
        return mark(
            p,
            e,
            OutboxState::Cancelled,
            "superseded by a reopened chain",
        )
        .await;
    }
    let policy_name = text(e, "policy");
    let Some(policy) = p.policy(&policy_name) else {
        let why = format!("escalation policy {policy_name:?} is not configured");
        tracing::error!(incident = id, "{why}");
        return mark(p, e, OutboxState::Failed, &why).await;
    };
    let (round, level) = (num(e, "round") as u32, num(e, "level") as usize);
    let Some(def) = policy.levels.get(level.wrapping_sub(1)) else {
        return mark(p, e, OutboxState::Failed, "no such level").await;
    };
    let reason = p
        .store
        .timeline_kinds(id, &["escalate", "approval", "reopen"], Some(1))
        .await?
        .pop()
        .map(|t| t.message)
        .or_else(|| e.payload["why"].as_str().map(String::from))
        .unwrap_or_else(|| {
            let since = (p.clock.now() - inc.opened_at).to_std().unwrap_or_default();
            format!("not acknowledged {} after detection", human(since))
        });
    let who = def.name.clone().unwrap_or_else(|| format!("level {level}"));
    let now = p.clock.now();
    let seq = p.store.timeline_len(id).await?;
    for n in &def.notify {
        p.enqueue(
            id,
            format!("{id}:page:e{epoch}:r{round}:l{level}:{n}"),
            n,
            "page",
            now,
            json!({
                "level": level,
                "round": round,
                "name": def.name,
                "seq": seq,
                "text": format!("{who} paged: {} ({reason})", inc.summary),
            }),
        )
        .await?;
    }
    if level == 1 && round == 0 && epoch == 0 {
        p.ack_deadline(id, &inc.scenario, now).await?;
    }
    let base = time(e, "base").unwrap_or(e.due_at);
    let next = if let Some(nd) = policy.levels.get(level) {
        Some((round, level + 1, base, base + chrono(nd.after.get())))
    } else if round < policy.repeat {
        // The next round starts one gap later: the gap between the last two
        // levels (or the only level's delay), at least a minute.
        let n = policy.levels.len();
        let last = policy.levels[n - 1].after.get();
        let prev = if n > 1 {
            policy.levels[n - 2].after.get()
        } else {
            Duration::ZERO
        };
        let gap = last.saturating_sub(prev).max(Duration::from_secs(60));
        let nb = e.due_at + chrono(gap);
        Some((round + 1, 1, nb, nb + chrono(policy.levels[0].after.get())))
    } else {
        None
    };
    match next {
        Some((r, l, b, due)) => {
            p.enqueue(
                id,
                format!("{id}:timer:e{epoch}:r{r}:l{l}"),
                "",
                "timer",
                due,
                json!({ "policy": policy_name, "epoch": epoch, "round": r, "level": l, "base": b, "detection": detection }),
            )
            .await?;
        }
        None => {
            let msg = format!(
                "escalation ended: all {} level(s) paged{}, nobody acknowledged; no further pages (status updates go on)",
                policy.levels.len(),
                if policy.repeat > 0 {
                    format!(" {} time(s)", policy.repeat + 1)
                } else {
                    String::new()
                }
            );
            p.note(
                id,
                "escalate",
                msg,
                json!({ "ended": true, "rounds": policy.repeat + 1 }),
            )
            .await?;
        }
    }
    mark(p, e, OutboxState::Sent, &format!("level {level} paged")).await
}

/// A status update comes due.
async fn fire_status(p: &Pager, e: &OutboxEntry) -> Result<(), StoreError> {
    let id = e.incident_id;
    let Some(inc) = p.store.incident(id).await? else {
        return mark(p, e, OutboxState::Failed, "incident not found").await;
    };
    if inc.state == IncidentState::Resolved {
        return mark(p, e, OutboxState::Cancelled, "resolved").await;
    }
    let n = num(e, "n");
    let since = time(e, "since").unwrap_or(inc.opened_at);
    // The update carries the entries written since the previous one, by
    // position (a timer queued without one starts at the incident's first).
    let from = pos(e, "from").unwrap_or(0);
    let to = p.store.timeline_len(id).await?;
    for notifier in p.paged(id).await? {
        p.enqueue(
            id,
            format!("{id}:status:{n}:{notifier}"),
            &notifier,
            "status",
            e.due_at,
            json!({ "n": n, "since": since, "until": e.due_at, "from": from, "to": to }),
        )
        .await?;
    }
    let policy = p.info(&inc.scenario).map(|i| i.policy);
    let every = policy
        .and_then(|name| p.policy(&name))
        .and_then(|pol| pol.status_every);
    if let Some(every) = every {
        p.enqueue(
            id,
            format!("{id}:status-timer:{}", n + 1),
            "",
            "status-timer",
            e.due_at + chrono(every.get()),
            json!({ "n": n + 1, "since": e.due_at, "from": to }),
        )
        .await?;
    }
    mark(p, e, OutboxState::Sent, "status update sent").await
}

/// An acknowledgement's timeout comes due.
async fn fire_ack(p: &Pager, e: &OutboxEntry) -> Result<(), StoreError> {
    let id = e.incident_id;
    let Some(inc) = p.store.incident(id).await? else {
        return mark(p, e, OutboxState::Failed, "incident not found").await;
    };
    let acks = decision::count(
        &p.store.timeline_kinds(id, &["decision"], None).await?,
        "acknowledge",
    );
    if inc.state != IncidentState::Acknowledged || acks != num(e, "ack") as usize {
        return mark(p, e, OutboxState::Cancelled, "no longer acknowledged").await;
    }
    let policy = p
        .info(&inc.scenario)
        .map_or_else(|| "default".into(), |i| i.policy);
    p.store
        .set_state(id, IncidentState::Escalated, p.clock.now())
        .await?;
    let by = text(e, "by");
    reopen(
        p,
        id,
        &policy,
        &format!(
            "the acknowledgement by {by} is older than its timeout and the incident is still open"
        ),
    )
    .await?;
    mark(p, e, OutboxState::Sent, "reopened").await?;
    p.changed(
        id,
        "reopen",
        "acknowledgement timed out: escalation resumes",
    )
    .await
}

/// Restarts a stopped chain at the level after the last one paged (the
/// last level again if all were), now.
pub(super) async fn reopen(
    p: &Pager,
    id: IncidentId,
    policy_name: &str,
    why: &str,
) -> Result<(), StoreError> {
    let Some(policy) = p.policy(policy_name) else {
        return Ok(());
    };
    if policy.levels.is_empty() {
        return Ok(());
    }
    let epoch = p.epoch(id).await? + 1;
    let last = p
        .store
        .outbox_of(id)
        .await?
        .iter()
        .filter(|e| e.kind == "page")
        .map(|e| num(e, "level") as usize)
        .max()
        .unwrap_or(0);
    let level = (last + 1).min(policy.levels.len());
    let now = p.clock.now();
    p.note(
        id,
        "reopen",
        format!("{why}; escalation resumes at level {level}"),
        json!({ "epoch": epoch, "level": level }),
    )
    .await?;
    let base = now - chrono(policy.levels[level - 1].after.get());
    p.enqueue(
        id,
        format!("{id}:timer:e{epoch}:r0:l{level}"),
        "",
        "timer",
        now,
        json!({ "policy": policy_name, "epoch": epoch, "round": 0, "level": level, "base": base }),
    )
    .await?;
    p.wake.notify_one();
    Ok(())
}

/// What the incident looks like now, for rendering. Only the kinds it
/// shows are read, and of symptoms and steps only the newest: a
/// long-open incident's timeline is mostly symptom transitions.
async fn view(p: &Pager, id: IncidentId) -> Result<Option<View>, StoreError> {
    let Some(incident) = p.store.incident(id).await? else {
        return Ok(None);
    };
    let story = p
        .store
        .timeline_kinds(
            id,
            &["state", "approval", "decision", "dependent", "checklist"],
            None,
        )
        .await?;
    let last = |entries: Vec<crate::store::TimelineEntry>| -> Vec<String> {
        entries.into_iter().map(|e| e.message).collect()
    };
    let symptoms = last(p.store.timeline_kinds(id, &["symptom"], Some(3)).await?);
    let done = last(
        p.store
            .timeline_kinds(
                id,
                &["step", "action", "verify", "guard", "escalate", "reopen"],
                Some(4),
            )
            .await?,
    );
    let info = p.info(&incident.scenario);
    let next = p
        .store
        .outbox_pending()
        .await?
        .into_iter()
        .find(|e| e.incident_id == id && e.kind == "timer")
        .map(|e| {
            format!(
                "level {} is paged at {} unless acknowledged",
                num(&e, "level"),
                e.due_at.format("%H:%M UTC")
            )
        });
    let awaiting = decision::awaiting(&story).map(|(step, _)| step);
    let next = match (&awaiting, next) {
        (Some(step), _) => Some(format!("step {step} runs once approved")),
        (None, n) => n,
    };
    // What the checks saw when the incident opened: with `for: 0s` the
    // symptom fires before the incident exists, so no `symptom` entry
    // carries it.
    let mut observed = detection(&story);
    observed.extend(symptoms);
    let public = !p.public_components(&incident.scenario).is_empty();
    Ok(Some(View {
        public,
        rto: info.as_ref().map(|i| i.rto),
        targets: info.map(|i| i.targets).unwrap_or_default(),
        observed,
        done,
        next,
        awaiting,
        decisions: decision::firsts(&story),
        dependents: story
            .iter()
            .filter(|e| e.kind == "dependent")
            .map(|e| e.message.clone())
            .collect(),
        checklist: super::checklist::state(&story),
        now: p.clock.now(),
        incident,
    }))
}

/// The entries at positions `from..to` for a notice's thread (pages
/// left out: they are the notices themselves), at most
/// [`super::NOTICE_ENTRIES`] of them, and how many more the range holds.
async fn thread(
    p: &Pager,
    id: IncidentId,
    from: usize,
    to: usize,
) -> Result<(Vec<crate::store::TimelineEntry>, usize), StoreError> {
    let n = to.saturating_sub(from);
    let read = p
        .store
        .timeline_range(id, from, n.min(super::NOTICE_ENTRIES))
        .await?;
    let more = n - read.len().min(n);
    let entries = read.into_iter().filter(|t| t.kind != "page").collect();
    Ok((entries, more))
}

/// `symptom NAME: firing at detection (failing: DETAIL)` for each symptom
/// failing in the incident's opening entry.
fn detection(timeline: &[crate::store::TimelineEntry]) -> Vec<String> {
    let Some(open) = timeline
        .iter()
        .find(|e| e.kind == "state" && e.data["symptoms"].is_object())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(m) = open.data["symptoms"].as_object() {
        for (name, s) in m {
            let phase = s["phase"].as_str().unwrap_or_default();
            if phase == "ok" {
                continue;
            }
            let o = &s["observation"];
            let seen = match (o["outcome"].as_str(), o["detail"].as_str()) {
                (Some(k), Some(d)) => format!(" ({k}: {d})"),
                (Some(k), None) => format!(" ({k})"),
                _ => String::new(),
            };
            out.push(format!("symptom {name}: {phase} at detection{seen}"));
        }
    }
    out
}

async fn deliver(p: &Pager, e: &OutboxEntry, kind: NoticeKind) -> Result<(), StoreError> {
    let id = e.incident_id;
    let notifier = p.settings().notifiers.get(&e.notifier).cloned();
    let Some(notifier) = notifier else {
        let why = format!("notifier {:?} is not configured", e.notifier);
        tracing::error!(incident = id, "{why}");
        return fail(p, e, kind, &why).await;
    };
    let Some(view) = view(p, id).await? else {
        return mark(p, e, OutboxState::Failed, "incident not found").await;
    };
    if kind == NoticeKind::Resolution
        && !p.store.outbox_of(id).await?.iter().any(|o| {
            (o.kind == "page" || o.kind == "notice")
                && o.notifier == e.notifier
                && o.state == OutboxState::Sent
        })
    {
        // Its page never went out (resolved first): nothing to resolve.
        return mark(p, e, OutboxState::Cancelled, "never paged").await;
    }
    // The RTO at 100 % pages the top level even when acknowledged.
    let acked_ok = e.payload["rto"] == true;
    if kind == NoticeKind::Page
        && (view.incident.state == IncidentState::Resolved
            || (view.incident.state == IncidentState::Acknowledged && !acked_ok))
    {
        let why = format!(
            "not paged: the incident is {}",
            view.incident.state.as_str()
        );
        return mark(p, e, OutboxState::Cancelled, &why).await;
    }
    // What goes to the thread: timeline entries since this notifier's
    // previous notice (pages and updates), or since the last status update.
    let (entries, more) = match kind {
        NoticeKind::Status => match (pos(e, "from"), pos(e, "to")) {
            (Some(from), Some(to)) => thread(p, id, from, to).await?,
            _ => {
                // Queued by a medic that recorded no positions: by time.
                let since = time(e, "since").unwrap_or(view.incident.opened_at);
                let until = time(e, "until").unwrap_or(e.due_at);
                let entries: Vec<_> = p
                    .store
                    .timeline(id)
                    .await?
                    .into_iter()
                    .filter(|t| t.at > since && t.at <= until && t.kind != "page")
                    .collect();
                let more = entries.len().saturating_sub(super::NOTICE_ENTRIES);
                (
                    entries.into_iter().take(super::NOTICE_ENTRIES).collect(),
                    more,
                )
            }
        },
        NoticeKind::Page | NoticeKind::Update | NoticeKind::Notice => {
            let seq = num(e, "seq") as usize;
            let prev = p
                .store
                .outbox_of(id)
                .await?
                .iter()
                .filter(|o| o.notifier == e.notifier && o.id < e.id)
                .filter(|o| o.kind == "page" || o.kind == "update" || o.kind == "notice")
                .map(|o| num(o, "seq") as usize)
                .max();
            // A first page carries the story so far (its start, and how
            // much more there is).
            let from = prev.unwrap_or(0).min(seq);
            thread(p, id, from, seq).await?
        }
        NoticeKind::Resolution => (Vec::new(), 0),
    };
    let status_text = || {
        // What changed since the last update, in words (the entries
        // themselves go to the thread).
        let changed: Vec<&str> = entries
            .iter()
            .filter(|t| t.kind != "symptom" && t.kind != "status")
            .map(|t| t.message.as_str())
            .collect();
        let what = match changed.len() {
            0 => "nothing changed since the last update".to_string(),
            n if n <= 3 => format!("since the last update: {}", changed.join("; ")),
            n => format!(
                "since the last update: {}; and {} more",
                changed[n - 3..].join("; "),
                n - 3
            ),
        };
        format!(
            "status update {}: {} is {} ({} since detection); {what}",
            num(e, "n"),
            view.incident.summary,
            view.incident.state.as_str(),
            human(
                (view.now - view.incident.opened_at)
                    .to_std()
                    .unwrap_or_default()
            ),
        )
    };
    let body = match kind {
        NoticeKind::Status => status_text(),
        _ => text(e, "text"),
    };
    // The affected users read the public incident, nothing else.
    let users = text(e, "event") == super::comms::USERS;
    let public = match users {
        true => match p.public_notice(&view.incident).await? {
            Some(n) => Some(n),
            None => {
                let why = "affects no public component: affected users are told only what the public status page shows";
                return fail(p, e, kind, why).await;
            }
        },
        false => None,
    };
    let (entries, more) = if users {
        (Vec::new(), 0)
    } else {
        (entries, more)
    };
    let reference = p.store.page_refs(id).await?.remove(&e.notifier);
    let notice = Notice {
        public,
        kind,
        key: e.key.clone(),
        level: num(e, "level") as usize,
        level_name: e.payload["name"].as_str().map(String::from),
        text: body,
        entries,
        more,
        view,
        reference,
        maybe_sent: e.attempts > 0,
        event: text(e, "event"),
        mention: match kind {
            NoticeKind::Page | NoticeKind::Resolution => true,
            NoticeKind::Notice => e.payload["mention"] == true,
            _ => false,
        },
        ping: e.payload["ping"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str())
                    .filter(|u| super::comms::slack_user(u))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let e = begin(p, e).await?;
    let attempts = e.attempts;
    let started = std::time::Instant::now();
    let result = match tokio::time::timeout(SEND_TIMEOUT, notifier.send(&notice)).await {
        Ok(r) => r,
        Err(_) => Err(NotifyError::Retry {
            reason: format!("no answer within {}", human(SEND_TIMEOUT)),
            after: None,
        }),
    };
    crate::metrics::notification(&e.notifier, result.is_ok(), started.elapsed());
    match result {
        Ok(d) => {
            if let Some(r) = d.reference {
                p.store.set_page_ref(id, &e.notifier, r).await?;
            }
            page_entry(p, &e, kind, notice.level, true, &d.detail).await?;
            mark(p, &e, OutboxState::Sent, &d.detail).await
        }
        Err(NotifyError::Retry { reason, after }) if attempts < MAX_ATTEMPTS => {
            if attempts == 1 {
                // The first failure is on the timeline too (a wrong
                // password, a relay down), not only in the outbox.
                p.note(
                    id,
                    "note",
                    format!(
                        "{} via {} failed, retrying: {reason}",
                        kind.as_str(),
                        e.notifier
                    ),
                    json!({ "notifier": e.notifier, "key": e.key, "retry": true }),
                )
                .await?;
            }
            reschedule(p, &e, reason, after).await
        }
        Err(err) => {
            tracing::error!(incident = id, notifier = %e.notifier, attempts, "delivery failed for good: {err}");
            fail(p, &e, kind, &format!("{err} (after {attempts} attempt(s))")).await
        }
    }
}

/// One delivery attempt starts: counted in the store before the receiver
/// is called, so a crash from here on leaves `attempts > 0` (the next
/// attempt looks before it posts again). Returns the entry as counted.
pub(super) async fn begin(p: &Pager, e: &OutboxEntry) -> Result<OutboxEntry, StoreError> {
    let attempts = e.attempts + 1;
    p.store
        .outbox_mark(
            e.id,
            OutboxMark {
                state: OutboxState::Pending,
                attempts,
                due_at: e.due_at,
                detail: "sending".into(),
                at: p.clock.now(),
            },
        )
        .await?;
    Ok(OutboxEntry {
        attempts,
        ..e.clone()
    })
}

/// A failed attempt worth retrying (`e.attempts < MAX_ATTEMPTS`, as
/// [`begin`] counted it): due again after the capped, jittered backoff,
/// or the receiver's Retry-After if longer; the schedule is in the store.
pub(super) async fn reschedule(
    p: &Pager,
    e: &OutboxEntry,
    reason: String,
    after: Option<Duration>,
) -> Result<(), StoreError> {
    let wait = backoff(e.attempts, &e.key).max(after.unwrap_or_default());
    tracing::warn!(incident = e.incident_id, notifier = %e.notifier, attempts = e.attempts, retry_in = %human(wait), "delivery failed, will retry: {reason}");
    p.store
        .outbox_mark(
            e.id,
            OutboxMark {
                state: OutboxState::Pending,
                attempts: e.attempts,
                due_at: p.clock.now() + chrono(wait),
                detail: reason,
                at: p.clock.now(),
            },
        )
        .await
}

async fn fail(p: &Pager, e: &OutboxEntry, kind: NoticeKind, why: &str) -> Result<(), StoreError> {
    page_entry(p, e, kind, num(e, "level") as usize, false, why).await?;
    mark(p, e, OutboxState::Failed, why).await
}

/// Pages and resolution notices go on the timeline (kind `page`).
async fn page_entry(
    p: &Pager,
    e: &OutboxEntry,
    kind: NoticeKind,
    level: usize,
    ok: bool,
    detail: &str,
) -> Result<(), StoreError> {
    let n = &e.notifier;
    let (page, msg) = match (kind, ok) {
        (NoticeKind::Page, true) => ("escalation", format!("paged level {level} via {n}")),
        (NoticeKind::Page, false) => (
            "escalation",
            format!("paging level {level} via {n} failed: {detail}"),
        ),
        (NoticeKind::Resolution, true) => ("resolution", format!("resolution notice via {n}")),
        (NoticeKind::Resolution, false) => (
            "resolution",
            format!("resolution notice via {n} failed: {detail}"),
        ),
        (NoticeKind::Notice, ok) => {
            let event = text(e, "event");
            let msg = match ok {
                true => format!("notice ({event}) via {n}: {}", text(e, "text")),
                false => format!("notice ({event}) via {n} failed: {detail}"),
            };
            return p
                .note(
                    e.incident_id,
                    "page",
                    msg,
                    json!({ "page": "notice", "event": event, "notifier": n, "delivered": ok, "key": e.key }),
                )
                .await;
        }
        (NoticeKind::Status, true) => {
            return p
                .note(
                    e.incident_id,
                    "page",
                    format!("status update {} via {n}", num(e, "n")),
                    json!({ "page": "status", "n": num(e, "n"), "notifier": n, "delivered": true, "key": e.key }),
                )
                .await;
        }
        (_, true) => return Ok(()),
        (_, false) => {
            return p
                .note(
                    e.incident_id,
                    "note",
                    format!("{} via {n} failed: {detail}", kind.as_str()),
                    json!({ "notifier": n, "key": e.key }),
                )
                .await;
        }
    };
    p.note(
        e.incident_id,
        "page",
        msg,
        json!({ "page": page, "level": level, "notifier": n, "delivered": ok, "key": e.key }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        for attempts in 1..30 {
            let d = backoff(attempts, "k");
            let exp = BACKOFF_BASE
                .saturating_mul(1u32 << (attempts - 1).min(20))
                .min(BACKOFF_CAP);
            assert!(
                d >= exp / 2 && d <= exp,
                "attempt {attempts}: {d:?} vs {exp:?}"
            );
        }
        assert!(backoff(40, "k") <= BACKOFF_CAP);
    }
}
