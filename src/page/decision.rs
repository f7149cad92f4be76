//! Human decisions on an incident: acknowledge, approve or reject a step
//! awaiting approval, escalate now, resolve. The HTTP API and Slack's
//! buttons both come here. Every decision is written on the timeline (kind
//! `decision`, with who made it and through what) before anything acts on
//! it; repeating a decision changes nothing and names who made it first.
//!
//! Approval waits live on the timeline too (kind `approval`): a request
//! `{step, request, awaiting: true}`, then a decision naming the request,
//! or `{request, timed_out: true}`. A restarted medic finds both.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Pager, dispatch};
use crate::rules::model::ApprovalPolicy;
use crate::store::{IncidentId, IncidentState, OutboxMark, OutboxState, StoreError, TimelineEntry};

/// What a human decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionKind {
    Acknowledge,
    Approve,
    Reject,
    Escalate,
    Resolve,
}

impl DecisionKind {
    /// Every kind, as written in URLs and action ids.
    pub const ALL: &'static [&'static str] =
        &["acknowledge", "approve", "reject", "escalate", "resolve"];

    /// The name in URLs, action ids and timelines.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Acknowledge => "acknowledge",
            DecisionKind::Approve => "approve",
            DecisionKind::Reject => "reject",
            DecisionKind::Escalate => "escalate",
            DecisionKind::Resolve => "resolve",
        }
    }

    /// Parses [`DecisionKind::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "acknowledge" => DecisionKind::Acknowledge,
            "approve" => DecisionKind::Approve,
            "reject" => DecisionKind::Reject,
            "escalate" => DecisionKind::Escalate,
            "resolve" => DecisionKind::Resolve,
            _ => return None,
        })
    }

    fn past(self) -> &'static str {
        match self {
            DecisionKind::Acknowledge => "acknowledged",
            DecisionKind::Approve => "approved",
            DecisionKind::Reject => "rejected",
            DecisionKind::Escalate => "escalated",
            DecisionKind::Resolve => "resolved",
        }
    }

    /// Whether only configured approvers may make it (Slack).
    pub fn needs_approver(self) -> bool {
        matches!(
            self,
            DecisionKind::Approve | DecisionKind::Reject | DecisionKind::Resolve
        )
    }
}

/// One decision, as received.
#[derive(Clone, Debug)]
pub struct Decision {
    pub kind: DecisionKind,
    /// Who: a name (API) or `<@U123>` (Slack).
    pub by: String,
    /// The step (approve, reject); optional when exactly one step waits.
    pub step: Option<String>,
    pub note: String,
    /// `api` or `slack`.
    pub via: String,
}

/// What came of a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionOutcome {
    /// False when it was already made (by someone else, or before).
    pub first: bool,
    /// For humans: what happened, naming who acted first.
    pub message: String,
}

/// Why a decision was refused. The variant names double as metric labels.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("incident {0} not found")]
    NotFound(IncidentId),
    #[error("{0}")]
    BadRequest(String),
    /// A well-formed request that the incident's state or medic's config
    /// does not allow now (the named step, or any, is not awaiting
    /// approval; no public page shows the incident): 409, not a malformed
    /// request.
    #[error("{0}")]
    NotAwaiting(String),
    /// Something else the request names does not exist (a checklist
    /// item): 404, like an unknown incident.
    #[error("{0}")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn data_str<'a>(e: &'a TimelineEntry, field: &str) -> &'a str {
    e.data[field].as_str().unwrap_or_default()
}

/// How many decisions of `kind` are on the timeline.
pub fn count(timeline: &[TimelineEntry], kind: &str) -> usize {
    timeline
        .iter()
        .filter(|e| e.kind == "decision" && data_str(e, "decision") == kind)
        .count()
}

/// The step awaiting approval now, and its request id.
pub fn awaiting(timeline: &[TimelineEntry]) -> Option<(String, String)> {
    let req = timeline
        .iter()
        .rev()
        .find(|e| e.kind == "approval" && e.data["awaiting"] == true)?;
    let request = data_str(req, "request");
    let settled = timeline.iter().any(|e| {
        data_str(e, "request") == request
            && ((e.kind == "decision") || (e.kind == "approval" && e.data["timed_out"] == true))
    });
    (!settled).then(|| (data_str(req, "step").to_string(), request.to_string()))
}

/// Who made each decision, oldest first (the message names who acted first).
pub fn firsts(timeline: &[TimelineEntry]) -> Vec<String> {
    timeline
        .iter()
        .filter(|e| e.kind == "decision")
        .map(|e| {
            let step = data_str(e, "step");
            let what = DecisionKind::parse(data_str(e, "decision")).map_or("decided", |k| k.past());
            if step.is_empty() {
                format!("{what} by {}", data_str(e, "by"))
            } else {
                format!("step {step} {what} by {}", data_str(e, "by"))
            }
        })
        .collect()
}

fn last_decision(
    timeline: &[TimelineEntry],
    pred: impl Fn(&TimelineEntry) -> bool,
) -> Option<&TimelineEntry> {
    timeline
        .iter()
        .rev()
        .find(|e| e.kind == "decision" && pred(e))
}

fn already(e: &TimelineEntry, msg: String) -> Result<DecisionOutcome, DecideError> {
    Ok(DecisionOutcome {
        first: false,
        message: format!(
            "{msg} by {} at {}",
            data_str(e, "by"),
            e.at.format("%H:%M:%S UTC")
        ),
    })
}

impl Pager {
    /// Applies a human decision (see the module docs).
    pub async fn decide(
        &self,
        id: IncidentId,
        d: Decision,
    ) -> Result<DecisionOutcome, DecideError> {
        let inc = self
            .store
            .incident(id)
            .await?
            .ok_or(DecideError::NotFound(id))?;
        if crate::page::public::blank(&d.by) {
            return Err(DecideError::BadRequest("`by` must name who decides".into()));
        }
        // Decisions and approval requests are all a decision looks at.
        let timeline = self
            .store
            .timeline_kinds(id, &["decision", "approval"], None)
            .await?;
        if inc.state == IncidentState::Resolved {
            if let Some(e) = last_decision(&timeline, |e| data_str(e, "decision") == "resolve") {
                return already(e, "already resolved".into());
            }
            return Ok(DecisionOutcome {
                first: false,
                message: format!(
                    "already resolved at {}",
                    inc.resolved_at
                        .unwrap_or(inc.updated_at)
                        .format("%H:%M:%S UTC")
                ),
            });
        }
        let now = self.clock.now();
        let mut data = json!({
            "decision": d.kind.as_str(),
            "by": d.by,
            "note": d.note,
            "via": d.via,
        });
        let note_suffix = if d.note.is_empty() {
            String::new()
        } else {
            format!(": {}", d.note)
        };
        let message = match d.kind {
            DecisionKind::Acknowledge => {
                if inc.state == IncidentState::Acknowledged
                    && let Some(e) =
                        last_decision(&timeline, |e| data_str(e, "decision") == "acknowledge")
                {
                    return already(e, "already acknowledged".into());
                }
                let n = count(&timeline, "acknowledge") + 1;
                self.store
                    .set_state(id, IncidentState::Acknowledged, now)
                    .await?;
                let msg = format!(
                    "acknowledged by {} via {}{note_suffix}; escalation stops",
                    d.by, d.via
                );
                self.write(id, &msg, data).await?;
                self.cancel_pending(id, &["timer"], "acknowledged").await?;
                let policy = self
                    .info(&inc.scenario)
                    .and_then(|i| self.policy(&i.policy));
                if let Some(t) = policy.and_then(|p| p.ack_timeout) {
                    self.enqueue(
                        id,
                        format!("{id}:ack-timer:{n}"),
                        "",
                        "ack-timer",
                        now + chrono::Duration::from_std(t.get()).unwrap_or_default(),
                        json!({ "ack": n, "by": d.by }),
                    )
                    .await?;
                }
                msg
            }
            DecisionKind::Approve | DecisionKind::Reject => {
                let waiting = awaiting(&timeline);
                let target = match (&d.step, &waiting) {
                    (Some(s), Some((w, req))) if s == w => Some((w.clone(), req.clone())),
                    (None, Some((w, req))) => Some((w.clone(), req.clone())),
                    _ => None,
                };
                let Some((step, request)) = target else {
                    let step = d.step.clone().or_else(|| {
                        last_decision(&timeline, |e| !data_str(e, "request").is_empty())
                            .map(|e| data_str(e, "step").to_string())
                    });
                    if let Some(step) = &step
                        && let Some(e) = last_decision(&timeline, |e| {
                            data_str(e, "step") == step && !data_str(e, "request").is_empty()
                        })
                    {
                        let verb = DecisionKind::parse(data_str(e, "decision"))
                            .map_or("decided", |k| k.past());
                        return already(e, format!("step {step} already {verb}"));
                    }
                    return Err(match (&d.step, waiting) {
                        (Some(s), Some((w, _))) => DecideError::NotAwaiting(format!(
                            "step {s:?} is not awaiting approval (step {w:?} is)"
                        )),
                        (Some(s), None) => {
                            DecideError::NotAwaiting(format!("step {s:?} is not awaiting approval"))
                        }
                        (None, _) => DecideError::NotAwaiting(
                            "no step of this incident is awaiting approval".into(),
                        ),
                    });
                };
                data["step"] = json!(step);
                data["request"] = json!(request);
                let msg = format!(
                    "step {step} {} by {} via {}{note_suffix}",
                    d.kind.past(),
                    d.by,
                    d.via
                );
                if d.kind == DecisionKind::Approve && inc.state == IncidentState::Escalated {
                    // A human is on it: escalation stops, as with an
                    // acknowledgement; the plan goes on.
                    self.store
                        .set_state(id, IncidentState::Remediating, now)
                        .await?;
                    self.write(id, &msg, data).await?;
                    self.cancel_pending(id, &["timer"], "approved").await?;
                } else {
                    self.write(id, &msg, data).await?;
                }
                msg
            }
            DecisionKind::Escalate => {
                if let Some(e) = last_decision(&timeline, |e| data_str(e, "decision") == "escalate")
                    && now - e.at < chrono::Duration::seconds(60)
                {
                    return already(e, "already escalated a moment ago".into());
                }
                let msg = format!("escalated now by {} via {}{note_suffix}", d.by, d.via);
                let policy = self
                    .info(&inc.scenario)
                    .map_or_else(|| "default".to_string(), |i| i.policy);
                if inc.state != IncidentState::Escalated {
                    self.store
                        .set_state(id, IncidentState::Escalated, now)
                        .await?;
                }
                self.write(id, &msg, data).await?;
                let outbox = self.store.outbox_of(id).await?;
                let pending = outbox
                    .iter()
                    .find(|e| e.kind == "timer" && e.state == OutboxState::Pending);
                match pending {
                    Some(t) => {
                        self.store
                            .outbox_mark(
                                t.id,
                                OutboxMark {
                                    state: OutboxState::Pending,
                                    attempts: t.attempts,
                                    due_at: now,
                                    detail: format!("escalated now by {}", d.by),
                                    at: now,
                                },
                            )
                            .await?;
                    }
                    None if outbox.iter().any(|e| e.kind == "timer") => {
                        dispatch::reopen(self, id, &policy, &format!("escalated by {}", d.by))
                            .await?;
                    }
                    None => {
                        let inc = self.store.incident(id).await?.unwrap_or(inc);
                        self.escalate(&inc, &policy, now, true).await?;
                    }
                }
                self.wake.notify_one();
                msg
            }
            DecisionKind::Resolve => {
                let msg = format!("resolved by {} via {}{note_suffix}", d.by, d.via);
                self.write(id, &msg, data).await?;
                let live = super::lock(&self.live).get(&id).cloned();
                match live {
                    // The incident task stops its plan at a safe point and
                    // writes the resolution (one writer per incident).
                    Some(token) => token.cancel(),
                    None => {
                        self.store
                            .set_state(id, IncidentState::Resolved, now)
                            .await?;
                        self.note(id, "state", format!("resolved: {msg}"), json!({}))
                            .await?;
                        self.resolved(&inc, &format!("resolved: {msg}")).await?;
                    }
                }
                msg
            }
        };
        self.decided.send_modify(|n| *n += 1);
        if d.kind != DecisionKind::Resolve {
            self.changed(id, d.kind.as_str(), &message).await?;
        }
        Ok(DecisionOutcome {
            first: true,
            message,
        })
    }

    async fn write(
        &self,
        id: IncidentId,
        msg: &str,
        data: serde_json::Value,
    ) -> Result<(), StoreError> {
        tracing::info!(incident = id, "{msg}");
        self.note(id, "decision", msg.to_string(), data).await
    }

    /// A human resolved `id` (`by`: the decision's words) while its
    /// symptoms still fail. Resolving now would open a new incident, and
    /// page again, in the same second: it stays open, acknowledged (nobody
    /// new is paged; PagerDuty hears `acknowledge`), until every symptom is
    /// clear, and says so.
    pub async fn held(&self, id: IncidentId, by: &str) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.store
            .set_state(id, IncidentState::Acknowledged, now)
            .await?;
        self.cancel_pending(id, &["timer"], "resolved by a human")
            .await?;
        let msg = format!(
            "resolved by a human, symptom still failing ({by}): kept open, acknowledged, until every symptom is clear; nobody new is paged"
        );
        tracing::warn!(incident = id, "{msg}");
        self.note(id, "state", msg, json!({ "held": true })).await?;
        self.changed(
            id,
            "acknowledge",
            "resolved by a human, symptom still failing: kept open until the symptoms clear",
        )
        .await
    }

    /// Cancels incident `id`'s pending outbox entries of these `kinds`
    /// (escalation `timer`s, the communication plan's clocks), saying why.
    pub(super) async fn cancel_pending(
        &self,
        id: IncidentId,
        kinds: &[&str],
        why: &str,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        for t in self.store.outbox_of(id).await? {
            if t.state == OutboxState::Pending && kinds.contains(&t.kind.as_str()) {
                self.store
                    .outbox_mark(
                        t.id,
                        OutboxMark {
                            state: OutboxState::Cancelled,
                            attempts: t.attempts,
                            due_at: t.due_at,
                            detail: why.to_string(),
                            at: now,
                        },
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// A step needs approval: says so on the timeline (once; a restarted
    /// medic finds the request), pages humans (the page shows Approve /
    /// Reject), and waits for a decision, the timeout, or `stop`.
    pub async fn approval(
        &self,
        id: IncidentId,
        step: &str,
        policy: ApprovalPolicy,
        stop: &CancellationToken,
    ) -> Result<Approval, StoreError> {
        let timeline = self.store.timeline_kinds(id, &["approval"], None).await?;
        // The latest request for this step, unless it timed out: pending, it
        // is waited on; decided (before a restart), the decision stands.
        let latest = timeline
            .iter()
            .rev()
            .find(|e| {
                e.kind == "approval" && e.data["awaiting"] == true && data_str(e, "step") == step
            })
            .filter(|e| {
                let r = data_str(e, "request");
                !timeline.iter().any(|t| {
                    t.kind == "approval"
                        && t.data["timed_out"] == true
                        && data_str(t, "request") == r
                })
            });
        let (request, asked_at) = match latest {
            Some(e) => (data_str(e, "request").to_string(), e.at),
            _ => {
                let n = timeline
                    .iter()
                    .filter(|e| e.kind == "approval" && e.data["awaiting"] == true)
                    .count()
                    + 1;
                let request = format!("{id}:{step}:{n}");
                let now = self.clock.now();
                let msg = format!(
                    "step {step} awaits a human's approval (Approve / Reject); after {} without a decision: {}",
                    super::human(policy.timeout.get()),
                    match policy.on_timeout {
                        crate::rules::model::OnTimeout::Reject => "rejected",
                        crate::rules::model::OnTimeout::Escalate => "escalated",
                    }
                );
                self.note(
                    id,
                    "approval",
                    msg,
                    json!({ "step": step, "request": request, "awaiting": true, "timeout": policy.timeout.to_string() }),
                )
                .await?;
                // Updates first (to whoever was paged before), then the
                // chain: its first page already shows the buttons.
                self.changed(id, "approval", &format!("step {step} awaits approval"))
                    .await?;
                if let Some(inc) = self.store.incident(id).await? {
                    if !matches!(
                        inc.state,
                        IncidentState::Acknowledged | IncidentState::Resolved
                    ) {
                        self.store
                            .set_state(id, IncidentState::Escalated, now)
                            .await?;
                    }
                    let policy = self
                        .info(&inc.scenario)
                        .map_or_else(|| "default".to_string(), |i| i.policy);
                    let inc = self.store.incident(id).await?.unwrap_or(inc);
                    self.escalate(&inc, &policy, now, true).await?;
                }
                (request, now)
            }
        };
        let deadline: DateTime<Utc> =
            asked_at + chrono::Duration::from_std(policy.timeout.get()).unwrap_or_default();
        let mut rx = self.decisions();
        loop {
            let decisions = self.store.timeline_kinds(id, &["decision"], None).await?;
            if let Some(e) = decisions.iter().find(|e| data_str(e, "request") == request) {
                let by = data_str(e, "by").to_string();
                return Ok(match data_str(e, "decision") {
                    "approve" => Approval::Approved(by),
                    _ => Approval::Rejected(by),
                });
            }
            let left = (deadline - self.clock.now()).to_std().unwrap_or_default();
            if left.is_zero() {
                self.note(
                    id,
                    "approval",
                    format!(
                        "step {step}: nobody approved within {}",
                        super::human(policy.timeout.get())
                    ),
                    json!({ "step": step, "request": request, "timed_out": true }),
                )
                .await?;
                self.changed(
                    id,
                    "approval",
                    &format!("approval of step {step} timed out"),
                )
                .await?;
                return Ok(Approval::TimedOut);
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(Approval::Stopped),
                _ = rx.changed() => {}
                _ = tokio::time::sleep(left.min(Duration::from_secs(3600))) => {}
            }
        }
    }
}

/// How an approval wait ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Approval {
    Approved(String),
    Rejected(String),
    TimedOut,
    Stopped,
}
