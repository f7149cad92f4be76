//! The runbook's post-recovery checklist as items on every incident
//! (reference/disaster-recovery-plan.md, "Post-Recovery Procedures"):
//! people tick them through the API or a Slack button; `medic report`,
//! the incidents API and the Slack message show them.
//!
//! A tick is a timeline entry (kind `checklist`, data `{item, done, by,
//! via}`), like a decision: the state of an item is its latest entry, so
//! it needs no table of its own and shows who ticked what, when.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::Pager;
use super::decision::{DecideError, DecisionOutcome};
use crate::store::{IncidentId, TimelineEntry};

/// One item of the checklist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    /// `SECTION.N` (`1.2`): what the API and the buttons name.
    pub id: &'static str,
    pub section: &'static str,
    pub text: &'static str,
}

const fn item(id: &'static str, section: &'static str, text: &'static str) -> Item {
    Item { id, section, text }
}

/// The runbook's post-recovery checklist, in its order.
pub const ITEMS: &[Item] = &[
    item("1.1", "Verification", "All services operational"),
    item(
        "1.2",
        "Verification",
        "Database queries responding normally",
    ),
    item("1.3", "Verification", "No data loss beyond RPO"),
    item(
        "1.4",
        "Verification",
        "Monitoring systems showing normal metrics",
    ),
    item("1.5", "Verification", "User access restored"),
    item("1.6", "Verification", "All integrations functioning"),
    item("2.1", "Documentation", "Incident timeline documented"),
    item("2.2", "Documentation", "Root cause identified"),
    item("2.3", "Documentation", "Recovery steps logged"),
    item("2.4", "Documentation", "Deviations from plan noted"),
    item("2.5", "Documentation", "Lessons learned captured"),
    item("3.1", "Post-Mortem", "Schedule post-mortem within 24 hours"),
    item("3.2", "Post-Mortem", "Include all stakeholders"),
    item("3.3", "Post-Mortem", "Review incident timeline"),
    item("3.4", "Post-Mortem", "Discuss what went well"),
    item("3.5", "Post-Mortem", "Identify improvement opportunities"),
    item("3.6", "Post-Mortem", "Create action items with owners"),
    item(
        "4.1",
        "Improvement Actions",
        "Update runbooks based on learnings",
    ),
    item(
        "4.2",
        "Improvement Actions",
        "Implement preventive measures",
    ),
    item("4.3", "Improvement Actions", "Enhance monitoring/alerting"),
    item("4.4", "Improvement Actions", "Update DR plan"),
    item("4.5", "Improvement Actions", "Schedule follow-up training"),
];

/// The sections, in order.
pub fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for i in ITEMS {
        if !out.contains(&i.section) {
            out.push(i.section);
        }
    }
    out
}

/// The item `id` names.
pub fn find(id: &str) -> Option<&'static Item> {
    ITEMS.iter().find(|i| i.id == id)
}

/// An item as it stands on one incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct State {
    pub id: &'static str,
    pub section: &'static str,
    pub text: &'static str,
    pub done: bool,
    /// Who ticked (or unticked) it last, and when.
    pub by: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

/// Every item, ticked or not, as the timeline says.
pub fn state(timeline: &[TimelineEntry]) -> Vec<State> {
    ITEMS
        .iter()
        .map(|i| {
            let last = timeline
                .iter()
                .rev()
                .find(|e| e.kind == "checklist" && e.data["item"] == i.id);
            State {
                id: i.id,
                section: i.section,
                text: i.text,
                done: last.is_some_and(|e| e.data["done"] == true),
                by: last.and_then(|e| e.data["by"].as_str().map(String::from)),
                at: last.map(|e| e.at),
            }
        })
        .collect()
}

impl Pager {
    /// Ticks (`done`) or unticks item `item` of incident `id`, for `by`
    /// (through `via`: `api`, `slack`). Doing it again changes nothing and
    /// names who did it first; the incident's messages are updated.
    pub async fn tick(
        &self,
        id: IncidentId,
        item: &str,
        done: bool,
        by: &str,
        via: &str,
    ) -> Result<DecisionOutcome, DecideError> {
        let it = find(item).ok_or_else(|| {
            DecideError::Unknown(format!(
                "unknown checklist item {:?}; one of {}..{} (section.item)",
                item.chars().take(20).collect::<String>(),
                ITEMS[0].id,
                ITEMS[ITEMS.len() - 1].id
            ))
        })?;
        if super::public::blank(by) {
            return Err(DecideError::BadRequest("`by` must name who ticks".into()));
        }
        if self.store.incident(id).await?.is_none() {
            return Err(DecideError::NotFound(id));
        }
        let timeline = self.store.timeline_kinds(id, &["checklist"], None).await?;
        let now = state(&timeline)
            .into_iter()
            .find(|s| s.id == it.id)
            .filter(|s| s.by.is_some());
        let word = if done { "ticked" } else { "unticked" };
        if let Some(s) = now.filter(|s| s.done == done) {
            return Ok(DecisionOutcome {
                first: false,
                message: format!(
                    "checklist {} {:?} already {word} by {} at {}",
                    it.id,
                    it.text,
                    s.by.unwrap_or_default(),
                    s.at.map(|t| t.format("%H:%M:%S UTC").to_string())
                        .unwrap_or_default()
                ),
            });
        }
        let msg = format!("checklist {} {} {word} by {by} via {via}", it.id, it.text);
        self.note(
            id,
            "checklist",
            msg.clone(),
            json!({ "item": it.id, "done": done, "by": by, "via": via }),
        )
        .await?;
        self.changed(id, "checklist", &msg).await?;
        Ok(DecisionOutcome {
            first: true,
            message: msg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runbooks_items_with_the_latest_tick_winning() {
        assert_eq!(ITEMS.len(), 22);
        assert_eq!(
            sections(),
            [
                "Verification",
                "Documentation",
                "Post-Mortem",
                "Improvement Actions"
            ]
        );
        let at = |s| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        let t = vec![
            TimelineEntry::new(at(1), "checklist", "x")
                .with_data(json!({"item": "1.2", "done": true, "by": "alice"})),
            TimelineEntry::new(at(2), "checklist", "x")
                .with_data(json!({"item": "1.2", "done": false, "by": "bob"})),
            TimelineEntry::new(at(3), "checklist", "x")
                .with_data(json!({"item": "2.2", "done": true, "by": "carol"})),
        ];
        let s = state(&t);
        assert!(!s[1].done);
        assert_eq!(s[1].by.as_deref(), Some("bob"));
        assert!(s[7].done && s[7].id == "2.2");
        assert_eq!(s.iter().filter(|s| s.done).count(), 1);
    }
}
