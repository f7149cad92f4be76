//! What the public sees ([`crate::config::PublicStatus`]): each public
//! component's state, derived from the open incidents that affect it and
//! their severity, and the human-written updates of those incidents. An
//! update is a timeline entry of kind `public-update` (in the store, so it
//! survives restarts, and on the incident's timeline); [`board`] reads
//! nothing else of an incident but its severity and times, so labels,
//! targets, check output and the timeline never reach the page.
//!
//! The hosted mirror ([`super::statuspage`]) hears the same through the
//! outbox (kind `public`): the incident's opening (a default message until
//! a human writes one), every update, and its resolution. A creation
//! retried without a stored Statuspage id first adopts the incident an
//! earlier attempt made (found by medic's reference in its `metadata`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::dispatch::{begin, chrono, mark, reschedule, text};
use super::statuspage::{self, Status};
use super::{DecideError, NotifyError, Pager};
use crate::config::PublicStatus;
use crate::store::{
    Incident, IncidentId, IncidentState, OutboxEntry, OutboxMark, OutboxState, Store, StoreError,
};

/// The timeline kind of a human-written public update.
pub const UPDATE: &str = "public-update";
/// The outbox notifier name (and page ref key) of the Statuspage mirror.
pub const STATUSPAGE: &str = "statuspage";
/// The longest update accepted (Statuspage takes far more; a status page
/// is read by people in a hurry).
pub const MAX_BODY: usize = 2000;

/// A component's state, worst last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    Operational,
    DegradedPerformance,
    PartialOutage,
    MajorOutage,
}

impl ComponentState {
    /// An open incident's effect: critical is a major outage, high a
    /// partial one, warning and info degraded performance.
    pub fn of_severity(severity: &str) -> ComponentState {
        match severity {
            "critical" => ComponentState::MajorOutage,
            "high" => ComponentState::PartialOutage,
            _ => ComponentState::DegradedPerformance,
        }
    }

    /// Statuspage's word (`degraded_performance`).
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Operational => "operational",
            ComponentState::DegradedPerformance => "degraded_performance",
            ComponentState::PartialOutage => "partial_outage",
            ComponentState::MajorOutage => "major_outage",
        }
    }

    /// For people (`Degraded performance`).
    pub fn label(self) -> &'static str {
        match self {
            ComponentState::Operational => "Operational",
            ComponentState::DegradedPerformance => "Degraded performance",
            ComponentState::PartialOutage => "Partial outage",
            ComponentState::MajorOutage => "Major outage",
        }
    }
}

/// One update as the public reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicUpdate {
    pub at: DateTime<Utc>,
    pub status: Status,
    pub body: String,
    /// medic's default words (nobody wrote an update yet).
    pub default: bool,
}

/// One incident as the public reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicIncident {
    /// The public name: `Partial outage: Patient portal`.
    pub name: String,
    pub components: Vec<String>,
    pub state: ComponentState,
    /// The latest update's status (`resolved` once resolved).
    pub status: Status,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Newest first.
    pub updates: Vec<PublicUpdate>,
}

/// The whole public page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Board {
    /// Every declared component, in name order, with its state.
    pub components: Vec<(String, ComponentState)>,
    /// Open incidents first (newest first), then those resolved within
    /// `history`.
    pub incidents: Vec<PublicIncident>,
}

/// The config targets a scenario watches.
pub fn scenario_targets(s: &crate::rules::model::Scenario) -> Vec<String> {
    s.symptoms
        .iter()
        .filter_map(|s| s.check.target().map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The human-written updates on a timeline, oldest first.
pub fn updates(timeline: &[crate::store::TimelineEntry]) -> Vec<PublicUpdate> {
    timeline
        .iter()
        .filter(|e| e.kind == UPDATE)
        .map(|e| PublicUpdate {
            at: e.at,
            status: e.data["status"]
                .as_str()
                .and_then(Status::parse_posted)
                .unwrap_or(Status::Investigating),
            body: e.data["body"].as_str().unwrap_or_default().to_string(),
            default: false,
        })
        .collect()
}

/// The public incident of `inc` (affecting `components`, non-empty).
fn public_incident(
    cfg: &PublicStatus,
    inc: &Incident,
    components: Vec<String>,
    timeline: &[crate::store::TimelineEntry],
) -> PublicIncident {
    let state = ComponentState::of_severity(&inc.severity);
    let mut ups = updates(timeline);
    if ups.is_empty() {
        ups.push(PublicUpdate {
            at: inc.opened_at,
            status: Status::Investigating,
            body: cfg.default_text(&components),
            default: true,
        });
    }
    let mut status = ups.last().map_or(Status::Investigating, |u| u.status);
    if let Some(at) = inc.resolved_at {
        status = Status::Resolved;
        ups.push(PublicUpdate {
            at,
            status,
            body: cfg.resolved_text(&components),
            default: true,
        });
    }
    ups.reverse();
    PublicIncident {
        name: format!("{}: {}", state.label(), components.join(", ")),
        components,
        state,
        status,
        started_at: inc.opened_at,
        resolved_at: inc.resolved_at,
        updates: ups,
    }
}

/// The public page now: open incidents and those resolved within
/// `cfg.history`; `targets(scenario)` names the targets a scenario
/// watches.
pub async fn board(
    store: &dyn Store,
    cfg: &PublicStatus,
    targets: impl Fn(&str) -> Vec<String>,
    now: DateTime<Utc>,
) -> Result<Board, StoreError> {
    let mut incidents: Vec<Incident> = store.open_incidents().await?;
    incidents.sort_by_key(|i| std::cmp::Reverse(i.opened_at));
    let since = now - chrono(cfg.history.get());
    for i in store.recent_incidents(200).await? {
        if i.resolved_at.is_some_and(|r| r >= since) && !incidents.iter().any(|o| o.id == i.id) {
            incidents.push(i);
        }
    }
    let mut states: BTreeMap<String, ComponentState> = cfg
        .components
        .keys()
        .map(|k| (k.clone(), ComponentState::Operational))
        .collect();
    let mut out = Vec::new();
    for inc in incidents {
        let components = cfg.components_of(&inc.scenario, &targets(&inc.scenario));
        if components.is_empty() {
            continue;
        }
        let timeline = store.timeline_kinds(inc.id, &[UPDATE], None).await?;
        let p = public_incident(cfg, &inc, components, &timeline);
        if inc.state.is_open() {
            for c in &p.components {
                if let Some(s) = states.get_mut(c) {
                    *s = (*s).max(p.state);
                }
            }
        }
        out.push(p);
    }
    Ok(Board {
        components: states.into_iter().collect(),
        incidents: out,
    })
}

/// A public update, as on-call posts it.
#[derive(Clone, Debug)]
pub struct PostUpdate {
    /// Who wrote it (kept on the timeline, never shown publicly).
    pub by: String,
    /// `investigating`, `identified` or `monitoring`.
    pub status: Status,
    pub body: String,
    /// `api` or `slack`.
    pub via: String,
}

/// Whether `s` has nothing but white space (Unicode's, and U+FEFF): what
/// [`NOT_BLANK`] refuses in the OpenAPI document.
pub fn blank(s: &str) -> bool {
    s.chars().all(|c| c.is_whitespace() || c == '\u{feff}')
}

/// The OpenAPI pattern of a text that is not [`blank`], spelled out (the
/// `\s` of ECMA, Python and Rust regexes differ on U+0085 and U+FEFF).
pub const NOT_BLANK: &str = "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]";

impl PostUpdate {
    /// Checks a posted update's words: a known status, exactly as written
    /// (no padding: the OpenAPI schema's `^(investigating|...)$` refuses
    /// it too), a body of 1 to [`MAX_BODY`] characters.
    pub fn new(by: &str, status: &str, body: &str, via: &str) -> Result<PostUpdate, String> {
        let status = Status::parse_posted(status).ok_or_else(|| {
            format!(
                "status {:?} is not one of {}",
                status.chars().take(40).collect::<String>(),
                Status::POSTED.join(", ")
            )
        })?;
        if blank(body) {
            return Err("the update's body is empty".into());
        }
        // Counted as sent, white space included.
        if body.chars().count() > MAX_BODY {
            return Err(format!(
                "the update's body is longer than {MAX_BODY} characters"
            ));
        }
        let body = body.trim();
        if blank(by) {
            return Err("`by` (who writes the update) is empty".into());
        }
        Ok(PostUpdate {
            by: by.trim().to_string(),
            status,
            body: body.to_string(),
            via: via.to_string(),
        })
    }
}

impl Pager {
    /// The public status page's config, if any.
    pub fn public_status(&self) -> Option<PublicStatus> {
        self.settings().public.clone()
    }

    /// The public components `inc` affects (none without `public_status`).
    pub fn public_components(&self, scenario: &str) -> Vec<String> {
        let Some(cfg) = self.public_status() else {
            return Vec::new();
        };
        let targets = self.info(scenario).map(|i| i.targets).unwrap_or_default();
        cfg.components_of(scenario, &targets)
    }

    /// What the affected users may read of `inc` (see
    /// [`super::PublicNotice`]): nothing without a public page or a
    /// public component.
    pub(super) async fn public_notice(
        &self,
        inc: &Incident,
    ) -> Result<Option<super::PublicNotice>, StoreError> {
        let Some(cfg) = self.public_status() else {
            return Ok(None);
        };
        let components = self.public_components(&inc.scenario);
        if components.is_empty() {
            return Ok(None);
        }
        let timeline = self.store.timeline_kinds(inc.id, &[UPDATE], None).await?;
        let incident = public_incident(&cfg, inc, components, &timeline);
        let targets = |s: &str| self.info(s).map(|i| i.targets).unwrap_or_default();
        let b = board(self.store.as_ref(), &cfg, targets, self.clock.now()).await?;
        let components = b
            .components
            .into_iter()
            .filter(|(c, _)| incident.components.contains(c))
            .collect();
        Ok(Some(super::PublicNotice {
            title: cfg.title.clone(),
            incident,
            components,
        }))
    }

    /// The scenario of incident `id`, if it exists.
    pub async fn incident_scenario(&self, id: IncidentId) -> Result<Option<String>, StoreError> {
        Ok(self.store.incident(id).await?.map(|i| i.scenario))
    }

    fn statuspage(&self) -> Option<std::sync::Arc<statuspage::Client>> {
        self.settings().statuspage.clone()
    }

    /// Queues one Statuspage request (`open`, `update`, `resolve`).
    async fn public_enqueue(
        &self,
        id: IncidentId,
        event: &str,
        key: String,
        extra: serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut payload = json!({ "event": event });
        if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        self.enqueue(id, key, STATUSPAGE, "public", self.clock.now(), payload)
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// An incident opened: the mirror opens one too, if it affects a
    /// public component (the page itself reads the store: nothing to do).
    pub(super) async fn public_opened(&self, inc: &Incident) -> Result<(), StoreError> {
        if self.injected || self.statuspage().is_none() {
            return Ok(());
        }
        if self.public_components(&inc.scenario).is_empty() {
            return Ok(());
        }
        self.public_enqueue(inc.id, "open", format!("{}:public:open", inc.id), json!({}))
            .await
    }

    /// An incident resolved: so does its mirror (if it had one).
    pub(super) async fn public_resolved(&self, inc: &Incident) -> Result<(), StoreError> {
        let outbox = self.store.outbox_of(inc.id).await?;
        if !outbox.iter().any(|e| e.kind == "public") {
            return Ok(());
        }
        self.public_enqueue(
            inc.id,
            "resolve",
            format!("{}:public:resolve", inc.id),
            json!({}),
        )
        .await
    }

    /// On-call posts a public update for incident `id`: written on its
    /// timeline (kind `public-update`), shown on the public page at once,
    /// sent to the mirror, and told to everyone notified.
    pub async fn post_update(&self, id: IncidentId, u: PostUpdate) -> Result<(), DecideError> {
        let Some(inc) = self.store.incident(id).await? else {
            return Err(DecideError::NotFound(id));
        };
        if self.public_status().is_none() {
            return Err(DecideError::NotAwaiting(
                "there is no public status page (config `public_status:`)".into(),
            ));
        }
        let components = self.public_components(&inc.scenario);
        if components.is_empty() {
            return Err(DecideError::NotAwaiting(format!(
                "incident {id} ({}) affects no public component (public_status.components)",
                inc.scenario
            )));
        }
        if inc.state == IncidentState::Resolved {
            return Err(DecideError::NotAwaiting(format!(
                "incident {id} is resolved: its public page says so already"
            )));
        }
        let seq = self.store.timeline_len(id).await?;
        self.note(
            id,
            UPDATE,
            format!(
                "public update ({}) by {} via {}: {}",
                u.status.as_str(),
                u.by,
                u.via,
                u.body
            ),
            json!({ "status": u.status.as_str(), "body": u.body, "by": u.by, "via": u.via, "components": components }),
        )
        .await?;
        if !self.injected && self.statuspage().is_some() {
            self.public_enqueue(
                id,
                "update",
                format!("{id}:public:update:{seq}"),
                json!({ "seq": seq }),
            )
            .await?;
        }
        self.changed(
            id,
            "public-update",
            &format!(
                "public status update ({}) posted by {}",
                u.status.as_str(),
                u.by
            ),
        )
        .await?;
        Ok(())
    }
}

/// Delivers one `public` outbox entry to Statuspage.
pub(super) async fn deliver(p: &Pager, e: &OutboxEntry) -> Result<(), StoreError> {
    let id = e.incident_id;
    let (Some(cfg), Some(client)) = (p.public_status(), p.statuspage()) else {
        return mark(p, e, OutboxState::Cancelled, "no public_status.statuspage").await;
    };
    let Some(inc) = p.store.incident(id).await? else {
        return mark(p, e, OutboxState::Failed, "incident not found").await;
    };
    let event = text(e, "event");
    let outbox = p.store.outbox_of(id).await?;
    let reference = p
        .store
        .page_refs(id)
        .await?
        .remove(STATUSPAGE)
        .and_then(|v| v.as_str().map(String::from));
    if reference.is_none() && event != "open" {
        // The opening is still on its way (retrying): this waits behind it.
        if let Some(open) = outbox
            .iter()
            .find(|o| o.kind == "public" && o.id < e.id && o.state == OutboxState::Pending)
        {
            let due = open.due_at.max(p.clock.now()) + chrono::Duration::milliseconds(100);
            return p
                .store
                .outbox_mark(
                    e.id,
                    OutboxMark {
                        state: OutboxState::Pending,
                        attempts: e.attempts,
                        due_at: due,
                        detail: "waits for the incident's creation".into(),
                        at: p.clock.now(),
                    },
                )
                .await;
        }
        if event == "resolve" {
            return mark(p, e, OutboxState::Cancelled, "never created on Statuspage").await;
        }
    }
    if reference.is_some() && event == "open" {
        return mark(p, e, OutboxState::Sent, "created already").await;
    }
    let components = p.public_components(&inc.scenario);
    let timeline = p.store.timeline_kinds(id, &[UPDATE], None).await?;
    let mut public = public_incident(&cfg, &inc, components.clone(), &timeline);
    let body = match event.as_str() {
        "resolve" => cfg.resolved_text(&components),
        "update" => {
            // The update this entry was queued for (the timeline is
            // append-only: its position is its identity).
            let seq = e.payload["seq"].as_u64().unwrap_or_default() as usize;
            let entry = p.store.timeline_range(id, seq, 1).await?.pop();
            let entry = entry.as_ref().filter(|t| t.kind == UPDATE);
            if let Some(t) = entry {
                public.status = t.data["status"]
                    .as_str()
                    .and_then(Status::parse_posted)
                    .unwrap_or(Status::Investigating);
            }
            entry
                .and_then(|t| t.data["body"].as_str())
                .unwrap_or_default()
                .to_string()
        }
        _ => public
            .updates
            .iter()
            .rev()
            .find(|u| u.status != Status::Resolved)
            .map(|u| u.body.clone())
            .unwrap_or_default(),
    };
    let (status, state) = match event.as_str() {
        "resolve" => (Status::Resolved, "operational"),
        "open" => (Status::Investigating, public.state.as_str()),
        _ => (public.status, public.state.as_str()),
    };
    let sp = cfg.statuspage.as_ref();
    let ids: BTreeMap<String, &'static str> = components
        .iter()
        .filter_map(|c| sp.and_then(|s| s.components.get(c)))
        .map(|cid| (cid.clone(), state))
        .collect();
    let request = statuspage::Incident {
        name: public.name.clone(),
        status,
        body,
        components: ids,
    };
    // An earlier attempt began (`attempts > 0`, counted before the call)
    // and stored no id: it may have created the incident and lost the
    // answer. Look before creating again.
    let maybe_created = e.attempts > 0;
    let mark_ref = statuspage::Reference {
        incident: id,
        opened_at: inc.opened_at,
    };
    let e = &begin(p, e).await?;
    let attempts = e.attempts;
    let started = std::time::Instant::now();
    let result = match &reference {
        Some(r) => client
            .update(r, &request)
            .await
            .map(|()| (r.clone(), false)),
        None => {
            let found = match maybe_created {
                true => client.find(&mark_ref).await,
                false => Ok(None),
            };
            match found {
                Ok(Some(sid)) => {
                    // Adopted: stored at once, so a failing update below
                    // retries as an update, not as a creation.
                    p.store.set_page_ref(id, STATUSPAGE, json!(sid)).await?;
                    match event.as_str() {
                        // The lost creation carried this very opening.
                        "open" => Ok((sid, true)),
                        _ => client.update(&sid, &request).await.map(|()| (sid, true)),
                    }
                }
                Ok(None) => client
                    .create(&request, &mark_ref)
                    .await
                    .map(|sid| (sid, false)),
                Err(err) => Err(err),
            }
        }
    };
    crate::metrics::notification(STATUSPAGE, result.is_ok(), started.elapsed());
    match result {
        Ok((sid, adopted)) => {
            if reference.is_none() && !adopted {
                p.store.set_page_ref(id, STATUSPAGE, json!(sid)).await?;
            }
            let what = match (event.as_str(), reference.is_none(), adopted) {
                ("resolve", _, _) => "resolved",
                ("open", _, true) => "adopted",
                (_, true, false) => "created",
                _ => "updated",
            };
            let lost = match adopted {
                true => "; an earlier attempt created it and its answer was lost",
                false => "",
            };
            p.note(
                id,
                "public",
                format!(
                    "Statuspage incident {sid} {what} ({}){lost}",
                    status.as_str()
                ),
                json!({ "event": event, "statuspage": sid, "status": status.as_str(), "key": e.key, "adopted": adopted }),
            )
            .await?;
            mark(p, e, OutboxState::Sent, &format!("{what} {sid}")).await
        }
        Err(NotifyError::Retry { reason, after }) if attempts < super::dispatch::MAX_ATTEMPTS => {
            reschedule(p, e, reason, after).await
        }
        Err(err) => {
            tracing::error!(
                incident = id,
                attempts,
                "Statuspage delivery failed for good: {err}"
            );
            let why = format!("{err} (after {attempts} attempt(s))");
            p.note(
                id,
                "public",
                format!("Statuspage {event} failed: {why}"),
                json!({ "event": event, "delivered": false, "key": e.key }),
            )
            .await?;
            mark(p, e, OutboxState::Failed, &why).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, NewIncident, TimelineEntry};

    fn cfg() -> PublicStatus {
        crate::config::load_str(
            "medic.yaml",
            "public_status:\n  listen: 127.0.0.1:0\n  components:\n    Portal: { scenarios: [app-down, app-slow] }\n    Records: { scenarios: [db-down] }\n",
        )
        .unwrap()
        .public_status
        .unwrap()
    }

    #[tokio::test]
    async fn the_worst_open_incident_sets_a_components_state_and_updates_come_newest_first() {
        let store = MemoryStore::new();
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let open = |scenario: &str, severity: &str| NewIncident {
            scenario: scenario.into(),
            instance: String::new(),
            severity: severity.into(),
            summary: "internal summary: host db1.internal".into(),
            at: t0,
        };
        let (slow, _) = store
            .open_incident(open("app-slow", "warning"))
            .await
            .unwrap();
        let cfg = cfg();
        let b = board(&store, &cfg, |_| Vec::new(), t0).await.unwrap();
        assert_eq!(
            b.components,
            [
                ("Portal".to_string(), ComponentState::DegradedPerformance),
                ("Records".to_string(), ComponentState::Operational)
            ]
        );
        assert_eq!(b.incidents.len(), 1);
        let u = &b.incidents[0].updates;
        assert!(u[0].default, "a default message until a human writes one");
        assert_eq!(u[0].body, cfg.default_text(&["Portal".into()]));
        assert_eq!(b.incidents[0].name, "Degraded performance: Portal");

        let (down, _) = store
            .open_incident(open("app-down", "critical"))
            .await
            .unwrap();
        store
            .append(
                down.id,
                TimelineEntry::new(t0, UPDATE, "public update").with_data(
                    json!({ "status": "identified", "body": "We found the cause.", "by": "ann" }),
                ),
            )
            .await
            .unwrap();
        let b = board(&store, &cfg, |_| Vec::new(), t0).await.unwrap();
        assert_eq!(b.components[0].1, ComponentState::MajorOutage);
        let p = b
            .incidents
            .iter()
            .find(|i| i.state == ComponentState::MajorOutage)
            .unwrap();
        assert_eq!(p.status, Status::Identified);
        assert_eq!(p.updates.len(), 1);
        assert_eq!(p.updates[0].body, "We found the cause.");

        // Resolved: operational again, listed with its resolution.
        let t1 = t0 + chrono::Duration::minutes(5);
        for id in [slow.id, down.id] {
            store
                .set_state(id, IncidentState::Resolved, t1)
                .await
                .unwrap();
        }
        let b = board(&store, &cfg, |_| Vec::new(), t1).await.unwrap();
        assert_eq!(b.components[0].1, ComponentState::Operational);
        assert!(b.incidents.iter().all(|i| i.status == Status::Resolved));
        // Beyond the history: gone.
        let late = t1 + chrono::Duration::hours(25);
        assert!(
            board(&store, &cfg, |_| Vec::new(), late)
                .await
                .unwrap()
                .incidents
                .is_empty()
        );
        let text = serde_json::to_string(&b).unwrap();
        assert!(!text.contains("internal"), "no summary: {text}");
        assert!(!text.contains("ann"), "no author: {text}");
    }

    #[test]
    fn posted_updates_are_checked() {
        assert!(PostUpdate::new("ann", "identified", " Found it. ", "api").is_ok());
        assert_eq!(
            PostUpdate::new("ann", "resolved", "x", "api").unwrap_err(),
            "status \"resolved\" is not one of investigating, identified, monitoring"
        );
        assert!(PostUpdate::new("ann", "monitoring", "  ", "api").is_err());
        // Padding is refused, as the OpenAPI schema's pattern refuses it.
        assert_eq!(
            PostUpdate::new("ann", " identified ", "x", "api").unwrap_err(),
            "status \" identified \" is not one of investigating, identified, monitoring"
        );
        assert!(PostUpdate::new("", "monitoring", "x", "api").is_err());
        let long = "x".repeat(MAX_BODY + 1);
        assert!(PostUpdate::new("ann", "monitoring", &long, "api").is_err());
    }
}
