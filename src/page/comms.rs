//! The communication plan of a policy ([`crate::config::Communication`]):
//! what happens when an incident opens (a page, a notice to the channel,
//! the executives for P1), the RTO as a clock (escalate one level at each
//! share, the top level at 100 %), a missed acknowledgement, and the FYI
//! when medic fixed it alone, and the affected users' email an hour after
//! detection (the public template: only what the public status page
//! shows). Everything goes through the outbox, like every other notice
//! (see [`super`]).

use chrono::{DateTime, Utc};
use serde_json::json;

use super::dispatch::{chrono, mark, num, text};
use super::{Pager, human};
use crate::config::{Communication, EscalationPolicy, OnOpen, OnSelfHealed};
use crate::store::{Incident, IncidentId, IncidentState, OutboxEntry, OutboxState, StoreError};

impl Pager {
    /// The policy and communication plan of `scenario`, if it has one.
    pub(super) fn comm(&self, scenario: &str) -> Option<(String, EscalationPolicy, Communication)> {
        let info = self.info(scenario)?;
        let p = self.policy(&info.policy)?;
        let c = p.communication.clone()?;
        Some((info.policy, p, c))
    }

    /// A new incident opened: the plan's first notices and its clocks
    /// (RTO shares, status updates), all timed from detection. Without a
    /// communication plan nothing happens until the plan gives up.
    pub async fn opened(&self, inc: &Incident) -> Result<(), StoreError> {
        self.public_opened(inc).await?;
        let Some((name, policy, c)) = self.comm(&inc.scenario) else {
            return Ok(());
        };
        let info = self.info(&inc.scenario);
        let plan = info.as_ref().map(|i| i.plan.clone()).unwrap_or_default();
        let working = if plan.is_empty() {
            "medic has no plan for it".to_string()
        } else {
            format!("medic is working on it: it will try {plan}")
        };
        let id = inc.id;
        let sev = c.for_severity(&inc.severity);
        match sev.open {
            OnOpen::Page => {
                let first = policy
                    .levels
                    .first()
                    .map_or(Default::default(), |l| l.after.get());
                self.enqueue(
                    id,
                    format!("{id}:timer:e0:r0:l1"),
                    "",
                    "timer",
                    inc.opened_at + chrono(first),
                    json!({
                        "policy": name, "epoch": 0, "round": 0, "level": 1,
                        "base": inc.opened_at, "detection": true,
                        "why": format!("detected; {working}"),
                    }),
                )
                .await?;
            }
            OnOpen::Notify | OnOpen::Channel => {
                let text = format!(
                    "{}: detected; {working}; pages on-call if it cannot",
                    inc.summary
                );
                self.notice(id, &c.channel, "open", &text, sev.open == OnOpen::Notify)
                    .await?;
            }
            OnOpen::None => {}
        }
        if inc.severity == "critical" && !c.executives.is_empty() {
            let text = format!(
                "P1: {} (detected {}); {working}; on-call is paged",
                inc.summary,
                inc.opened_at.format("%H:%M UTC")
            );
            self.notice(id, &c.executives, "executives", &text, true)
                .await?;
        }
        if matches!(inc.severity.as_str(), "critical" | "high") && !c.stakeholders.is_empty() {
            let text = format!(
                "{} (detected {}); {working}",
                inc.summary,
                inc.opened_at.format("%H:%M UTC")
            );
            self.notice(id, &c.stakeholders, "stakeholders", &text, false)
                .await?;
        }
        if !c.users.is_empty() && sev.users && !self.public_components(&inc.scenario).is_empty() {
            // The affected users hear of it `users_within` after detection
            // if it is still open then (see `fire_users`).
            self.enqueue(
                id,
                format!("{id}:users-timer"),
                "",
                "users-timer",
                inc.opened_at + chrono(sev.users_within.get()),
                json!({ "policy": name, "within": sev.users_within.to_string() }),
            )
            .await?;
        }
        if let Some(rto) = info.map(|i| i.rto).filter(|r| !r.is_zero()) {
            let mut shares = c.rto_shares.clone();
            shares.push(100);
            for share in shares {
                let at = inc.opened_at + chrono(rto.mul_f64(f64::from(share) / 100.0));
                self.enqueue(
                    id,
                    format!("{id}:rto-timer:{share}"),
                    "",
                    "rto-timer",
                    at,
                    json!({ "policy": name, "share": share }),
                )
                .await?;
            }
        }
        if let Some(every) = policy.status_every {
            self.enqueue(
                id,
                format!("{id}:status-timer:1"),
                "",
                "status-timer",
                inc.opened_at + chrono(every.get()),
                json!({ "n": 1, "since": inc.opened_at, "from": 0 }),
            )
            .await?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// One notice (`event`) to each of `notifiers`, once per incident.
    async fn notice(
        &self,
        id: IncidentId,
        notifiers: &[String],
        event: &str,
        text: &str,
        mention: bool,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.notice_at(
            id,
            notifiers,
            event,
            text,
            json!({ "mention": mention }),
            now,
        )
        .await
    }

    /// [`Pager::notice`] due at `due`, with `extra` in its payload
    /// (`mention`, `ping`).
    async fn notice_at(
        &self,
        id: IncidentId,
        notifiers: &[String],
        event: &str,
        text: &str,
        extra: serde_json::Value,
        due: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let seq = self.store.timeline_len(id).await?;
        let mut payload = json!({ "text": text, "event": event, "seq": seq, "mention": false });
        if let (Some(p), Some(x)) = (payload.as_object_mut(), extra.as_object()) {
            p.extend(x.clone());
        }
        for n in notifiers {
            self.enqueue(
                id,
                format!("{id}:notice:{event}:{n}"),
                n,
                "notice",
                due,
                payload.clone(),
            )
            .await?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The acknowledgement deadline after a first page (once per incident).
    pub(super) async fn ack_deadline(
        &self,
        id: IncidentId,
        scenario: &str,
        paged_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Some((_, _, c)) = self.comm(scenario) else {
            return Ok(());
        };
        self.enqueue(
            id,
            format!("{id}:ack-deadline"),
            "",
            "ack-deadline",
            paged_at + chrono(c.ack_within.get()),
            json!({ "within": c.ack_within.to_string() }),
        )
        .await?;
        Ok(())
    }
}

/// Nobody paged a human and the policy says `self_healed: fyi`: a short FYI
/// with the timeline link to the channel and everyone notified, instead
/// of the resolution notice. Returns whether it did.
pub(super) async fn self_healed(
    p: &Pager,
    inc: &Incident,
    message: &str,
) -> Result<bool, StoreError> {
    let Some((_, _, c)) = p.comm(&inc.scenario) else {
        return Ok(false);
    };
    if c.for_severity(&inc.severity).self_healed != OnSelfHealed::Fyi {
        return Ok(false);
    }
    let outbox = p.store.outbox_of(inc.id).await?;
    if outbox.iter().any(|e| e.kind == "page") {
        return Ok(false);
    }
    // A dependent that told nobody resolves quietly: its cause's notices
    // named it.
    if !outbox.iter().any(|e| e.kind == "notice")
        && (inc.cause.is_some()
            || !p
                .store
                .timeline_kinds(inc.id, &["wait"], Some(1))
                .await?
                .is_empty())
    {
        return Ok(true);
    }
    let mut to = p.paged(inc.id).await?;
    for n in &c.channel {
        if !to.contains(n) {
            to.push(n.clone());
        }
    }
    let what = message.strip_prefix("resolved: ").unwrap_or(message);
    let text = format!(
        "FYI: {} — medic fixed it alone ({what}); nobody was paged. Timeline: {}",
        inc.summary,
        c.timeline_link(inc.id)
    );
    let due = p.clock.now() + chrono(c.resolution_after.get());
    p.notice_at(inc.id, &to, "fyi", &text, json!({}), due)
        .await?;
    Ok(true)
}

/// A Slack user ID (`U...`, `W...`): the only thing a `ping` may hold.
pub(super) fn slack_user(s: &str) -> bool {
    s.len() > 1
        && s.len() <= 24
        && (s.starts_with('U') || s.starts_with('W'))
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// The post-mortem reminder, `postmortem_after` after the resolution of
/// an incident that paged someone: to the channel and to the notifiers
/// of the level the acknowledging engineer answered (level 1 when nobody
/// acknowledged), naming (and on Slack mentioning) that engineer, with
/// the link to the `medic report` draft and the checklist's state.
pub(super) async fn postmortem(
    p: &Pager,
    inc: &Incident,
    c: &Communication,
    resolved: DateTime<Utc>,
) -> Result<(), StoreError> {
    let id = inc.id;
    let outbox = p.store.outbox_of(id).await?;
    let pages: Vec<&OutboxEntry> = outbox
        .iter()
        .filter(|e| e.kind == "page" && e.state != OutboxState::Cancelled)
        .collect();
    if pages.is_empty() {
        return Ok(());
    }
    let decisions = p.store.timeline_kinds(id, &["decision"], None).await?;
    let ack = decisions
        .iter()
        .find(|e| e.data["decision"] == "acknowledge");
    // The level the engineer answered: the highest paged before the
    // acknowledgement (the first level when nobody acknowledged).
    let level = match ack {
        Some(a) => pages
            .iter()
            .filter(|e| e.due_at <= a.at)
            .map(|e| num(e, "level"))
            .max()
            .unwrap_or(1),
        None => 1,
    };
    let mut to: Vec<String> = c.channel.clone();
    for e in pages.iter().filter(|e| num(e, "level") == level) {
        if !to.contains(&e.notifier) {
            to.push(e.notifier.clone());
        }
    }
    let by = ack.and_then(|a| a.data["by"].as_str()).unwrap_or_default();
    // Only a verified click's user is mentioned (an API caller's `by` is
    // a name, shown as text).
    let clicked = ack.is_some_and(|a| a.data["via"] == "slack");
    let ping: Vec<String> = by
        .strip_prefix("<@")
        .filter(|_| clicked)
        .and_then(|r| r.strip_suffix('>'))
        .filter(|u| slack_user(u))
        .map(|u| vec![u.to_string()])
        .unwrap_or_default();
    let who = if by.is_empty() {
        "nobody acknowledged it".to_string()
    } else {
        format!("acknowledged by {by}")
    };
    let text = format!(
        "Post-mortem due: {} (incident #{id}) was resolved at {} ({who}); the runbook asks for a post-mortem within 24 hours of resolution. Draft: {}. Post-recovery checklist: tick its items with the Slack buttons or POST /api/v1/incidents/{id}/checklist/ITEM.",
        inc.summary,
        resolved.format("%Y-%m-%d %H:%M UTC"),
        c.report_link(id),
    );
    let due = resolved + chrono(c.postmortem_after.get());
    p.notice_at(
        id,
        &to,
        "postmortem",
        &text,
        json!({ "mention": true, "ping": ping }),
        due,
    )
    .await
}

/// A share of the RTO has passed: escalate one level saying how much is
/// left (or, acknowledged, tell everyone notified); at 100 % page the top
/// level.
pub(super) async fn fire_rto(p: &Pager, e: &OutboxEntry) -> Result<(), StoreError> {
    let id = e.incident_id;
    let Some(inc) = p.store.incident(id).await? else {
        return mark(p, e, OutboxState::Failed, "incident not found").await;
    };
    if inc.state == IncidentState::Resolved {
        return mark(p, e, OutboxState::Cancelled, "resolved").await;
    }
    let Some(policy) = p.policy(&text(e, "policy")) else {
        return mark(p, e, OutboxState::Failed, "policy not configured").await;
    };
    let rto = p.info(&inc.scenario).map(|i| i.rto).unwrap_or_default();
    let share = num(e, "share");
    let used = (e.due_at - inc.opened_at).to_std().unwrap_or_default();
    let left = rto.saturating_sub(used);
    let n = policy.levels.len();
    let outbox = p.store.outbox_of(id).await?;
    let last = outbox
        .iter()
        .filter(|o| o.kind == "page")
        .map(|o| num(o, "level") as usize)
        .max()
        .unwrap_or(0);
    let acked = inc.state == IncidentState::Acknowledged;
    let clock = if share >= 100 {
        format!("the RTO of {} is used up", human(rto))
    } else {
        format!(
            "{share}% of the RTO {} used, {} left",
            human(rto),
            human(left)
        )
    };
    let level = if share >= 100 { n } else { (last + 1).min(n) };
    if n == 0 || (acked && share < 100) || level <= last {
        // Everyone who should be is paged (or a human has it): they hear
        // the clock.
        p.note(
            id,
            "rto",
            format!("RTO clock: {clock}"),
            json!({ "share": share }),
        )
        .await?;
        p.changed(id, "rto", &format!("RTO clock: {clock}")).await?;
        return mark(p, e, OutboxState::Sent, "told everyone notified").await;
    }
    let def = &policy.levels[level - 1];
    let who = def.name.clone().unwrap_or_else(|| format!("level {level}"));
    p.note(
        id,
        "rto",
        format!("RTO clock: {clock}; paging {who}"),
        json!({ "share": share, "level": level }),
    )
    .await?;
    let epoch = p.epoch(id).await?;
    let seq = p.store.timeline_len(id).await?;
    let now = p.clock.now();
    for notifier in &def.notify {
        p.enqueue(
            id,
            format!("{id}:page:e{epoch}:r0:l{level}:{notifier}"),
            notifier,
            "page",
            now,
            json!({
                "level": level, "round": 0, "name": def.name, "seq": seq,
                "rto": true,
                "text": format!("{who} paged: {} ({clock})", inc.summary),
            }),
        )
        .await?;
    }
    if last == 0 {
        p.ack_deadline(id, &inc.scenario, now).await?;
    }
    p.wake.notify_one();
    mark(p, e, OutboxState::Sent, &format!("level {level} paged")).await
}

/// The acknowledgement deadline after the first page passed: missed,
/// unless someone acknowledged (or it is over).
pub(super) async fn fire_ack_deadline(p: &Pager, e: &OutboxEntry) -> Result<(), StoreError> {
    let id = e.incident_id;
    let Some(inc) = p.store.incident(id).await? else {
        return mark(p, e, OutboxState::Failed, "incident not found").await;
    };
    let decisions = p.store.timeline_kinds(id, &["decision"], None).await?;
    if inc.state == IncidentState::Resolved || super::decision::count(&decisions, "acknowledge") > 0
    {
        return mark(p, e, OutboxState::Cancelled, "acknowledged or resolved").await;
    }
    let within = text(e, "within");
    crate::metrics::ack_missed(&inc.scenario);
    tracing::warn!(incident = id, scenario = %inc.scenario, "acknowledgement missed: nobody acknowledged the first page within {within}");
    p.note(
        id,
        "ack-missed",
        format!("acknowledgement missed: nobody acknowledged the first page within {within}"),
        json!({ "within": within }),
    )
    .await?;
    mark(p, e, OutboxState::Sent, "acknowledgement missed").await
}

/// The event of the affected users' notices (and of their resolution).
pub(super) const USERS: &str = "users";

/// `users_within` after detection: the affected users are told, by the
/// public template, of an incident still open (one notice per list, once:
/// the outbox key). An incident resolved before tells them nothing (the
/// public page said it all; an email about something over would only
/// alarm), so they get no resolution notice either.
pub(super) async fn fire_users(p: &Pager, e: &OutboxEntry) -> Result<(), StoreError> {
    let id = e.incident_id;
    let Some(inc) = p.store.incident(id).await? else {
        return mark(p, e, OutboxState::Failed, "incident not found").await;
    };
    if inc.state == IncidentState::Resolved {
        return mark(
            p,
            e,
            OutboxState::Cancelled,
            "resolved before users were told",
        )
        .await;
    }
    let Some(c) = p
        .policy(&text(e, "policy"))
        .and_then(|pol| pol.communication)
    else {
        return mark(
            p,
            e,
            OutboxState::Cancelled,
            "no communication plan any more",
        )
        .await;
    };
    let components = p.public_components(&inc.scenario);
    if components.is_empty() {
        return mark(p, e, OutboxState::Cancelled, "affects no public component").await;
    }
    let text = format!(
        "affected users told (within {}): {}",
        text(e, "within"),
        components.join(", ")
    );
    p.notice_at(id, &c.users, USERS, &text, json!({}), p.clock.now())
        .await?;
    mark(p, e, OutboxState::Sent, "affected users told").await
}

/// The resolution to the affected users' lists that were told (their
/// notice sent or on its way; one still on its way then carries the
/// resolution itself, and this one is dropped as never told).
pub(super) async fn users_resolved(
    p: &Pager,
    inc: &Incident,
    due: DateTime<Utc>,
) -> Result<(), StoreError> {
    let told: Vec<String> = p
        .store
        .outbox_of(inc.id)
        .await?
        .into_iter()
        .filter(|o| o.kind == "notice" && o.payload["event"] == USERS)
        .filter(|o| matches!(o.state, OutboxState::Sent | OutboxState::Pending))
        .map(|o| o.notifier)
        .collect();
    for n in told {
        p.enqueue(
            inc.id,
            format!("{}:resolution:{USERS}:{n}", inc.id),
            &n,
            "resolution",
            due,
            json!({ "text": "resolved", "event": USERS }),
        )
        .await?;
    }
    Ok(())
}
