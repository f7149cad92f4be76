//! Paging humans: notifiers and escalation policies.
//!
//! Escalation starts when an incident's plan is exhausted (or refused). Each
//! level of the scenario's policy pages its notifiers after its delay, unless
//! the incident was resolved or acknowledged meanwhile. Every page sent is on
//! the incident's timeline (kind `page`, with the level and notifier), which
//! is also how a restarted medic knows which levels were already paged and
//! who must hear about the resolution.

pub mod log;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, EscalationPolicy, NotifierConfig};
use crate::store::{Incident, Store, StoreError, TimelineEntry};

/// What a page is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PageKind {
    /// medic could not fix it: a human must act.
    Escalation,
    /// It is over.
    Resolution,
}

/// One message to humans about one incident.
#[derive(Clone, Debug, Serialize)]
pub struct Page {
    pub kind: PageKind,
    pub incident_id: i64,
    pub scenario: String,
    pub severity: String,
    /// 1-based escalation level (0 for a resolution notice).
    pub level: usize,
    pub summary: String,
    /// Why now: what medic saw and did.
    pub message: String,
}

/// Why a page was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{0}")]
    Failed(String),
}

/// Delivers pages somewhere humans look.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    async fn send(&self, page: &Page) -> Result<(), NotifyError>;
}

/// Builds the configured notifiers.
pub fn build_notifiers(config: &Config) -> HashMap<String, Arc<dyn Notifier>> {
    config
        .notifiers
        .iter()
        .map(|(name, n)| {
            let built: Arc<dyn Notifier> = match n {
                NotifierConfig::Log(_) => Arc::new(log::LogNotifier),
            };
            (name.clone(), built)
        })
        .collect()
}

/// Runs escalation policies and sends resolution notices.
pub struct Pager {
    notifiers: HashMap<String, Arc<dyn Notifier>>,
    policies: BTreeMap<String, EscalationPolicy>,
    store: Arc<dyn Store>,
    clock: Clock,
}

impl Pager {
    pub fn new(config: &Config, store: Arc<dyn Store>, clock: Clock) -> Self {
        Self::with_notifiers(config, build_notifiers(config), store, clock)
    }

    /// A pager that pages `notifiers` instead of the configured ones
    /// (`medic test` records pages instead of sending them).
    pub fn with_notifiers(
        config: &Config,
        notifiers: HashMap<String, Arc<dyn Notifier>>,
        store: Arc<dyn Store>,
        clock: Clock,
    ) -> Self {
        Pager {
            notifiers,
            policies: config.escalation.clone(),
            store,
            clock,
        }
    }

    /// Pages `policy`'s levels, measured from `since`, until `cancel`
    /// (resolved or acknowledged). Levels already on the timeline are not
    /// paged again.
    pub async fn escalate(
        &self,
        incident: &Incident,
        policy: &str,
        since: DateTime<Utc>,
        message: &str,
        cancel: CancellationToken,
    ) -> Result<(), StoreError> {
        let Some(policy) = self.policies.get(policy) else {
            tracing::error!(
                incident = incident.id,
                policy,
                "escalation policy missing; paging nobody"
            );
            return Ok(());
        };
        let already = self.paged_levels(incident.id).await?;
        for (i, level) in policy.levels.iter().enumerate() {
            let n = i + 1;
            if already.contains(&n) {
                continue;
            }
            let due = since
                + chrono::Duration::from_std(level.after.get()).unwrap_or(chrono::Duration::MAX);
            let wait = (due - self.clock.now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
            let page = Page {
                kind: PageKind::Escalation,
                incident_id: incident.id,
                scenario: incident.scenario.clone(),
                severity: incident.severity.clone(),
                level: n,
                summary: incident.summary.clone(),
                message: message.to_string(),
            };
            for name in &level.notify {
                self.deliver(incident.id, name, &page).await?;
            }
        }
        Ok(())
    }

    /// Tells everyone who was paged about `incident` that it is over.
    pub async fn resolved(&self, incident: &Incident, message: &str) -> Result<(), StoreError> {
        let paged: BTreeSet<String> = self
            .store
            .timeline(incident.id)
            .await?
            .into_iter()
            .filter(|e| e.kind == "page" && e.data["page"] == "escalation")
            .filter_map(|e| e.data["notifier"].as_str().map(String::from))
            .collect();
        let page = Page {
            kind: PageKind::Resolution,
            incident_id: incident.id,
            scenario: incident.scenario.clone(),
            severity: incident.severity.clone(),
            level: 0,
            summary: incident.summary.clone(),
            message: message.to_string(),
        };
        for name in &paged {
            self.deliver(incident.id, name, &page).await?;
        }
        Ok(())
    }

    async fn paged_levels(&self, id: i64) -> Result<BTreeSet<usize>, StoreError> {
        Ok(self
            .store
            .timeline(id)
            .await?
            .into_iter()
            .filter(|e| e.kind == "page" && e.data["page"] == "escalation")
            .filter_map(|e| e.data["level"].as_u64().map(|l| l as usize))
            .collect())
    }

    async fn deliver(&self, id: i64, name: &str, page: &Page) -> Result<(), StoreError> {
        let Some(n) = self.notifiers.get(name) else {
            tracing::error!(incident = id, notifier = name, "notifier missing");
            return Ok(());
        };
        let started = std::time::Instant::now();
        let sent = n.send(page).await;
        crate::metrics::notification(name, sent.is_ok(), started.elapsed());
        let (msg, ok) = match sent {
            Ok(()) => (format!("paged level {} via {name}", page.level), true),
            Err(e) => (
                format!("paging level {} via {name} failed: {e}", page.level),
                false,
            ),
        };
        let msg = if page.kind == PageKind::Resolution {
            format!("resolution notice via {name}")
        } else {
            msg
        };
        self.store
            .append(
                id,
                TimelineEntry::new(self.clock.now(), "page", msg).with_data(json!({
                    "page": page.kind,
                    "level": page.level,
                    "notifier": name,
                    "delivered": ok,
                })),
            )
            .await
    }
}
