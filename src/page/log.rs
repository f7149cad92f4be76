//! The `log` notifier: pages written to medic's own log at ERROR level
//! (an operator must act), as structured fields.

use super::{Notifier, NotifyError, Page, PageKind};

/// Writes pages to the log.
pub struct LogNotifier;

#[async_trait::async_trait]
impl Notifier for LogNotifier {
    async fn send(&self, page: &Page) -> Result<(), NotifyError> {
        match page.kind {
            PageKind::Escalation => tracing::error!(
                incident = page.incident_id,
                scenario = %page.scenario,
                severity = %page.severity,
                level = page.level,
                "PAGE: {}: {}",
                page.summary,
                page.message
            ),
            PageKind::Resolution => tracing::warn!(
                incident = page.incident_id,
                scenario = %page.scenario,
                "RESOLVED: {}: {}",
                page.summary,
                page.message
            ),
        }
        Ok(())
    }
}
