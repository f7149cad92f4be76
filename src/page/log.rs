//! The `log` notifier: notices written to medic's own log, pages at ERROR
//! level (an operator must act), as structured fields.

use super::{Delivered, Notice, NoticeKind, Notifier, NotifyError, Report};

/// Writes notices to the log.
pub struct LogNotifier;

#[async_trait::async_trait]
impl Notifier for LogNotifier {
    async fn send(&self, n: &Notice) -> Result<Delivered, NotifyError> {
        let inc = &n.view.incident;
        match n.kind {
            NoticeKind::Page => tracing::error!(
                incident = inc.id,
                scenario = %inc.scenario,
                severity = %inc.severity,
                level = n.level,
                dependents = ?n.view.dependents,
                "PAGE: {}",
                n.text
            ),
            NoticeKind::Resolution => tracing::warn!(
                incident = inc.id,
                scenario = %inc.scenario,
                "RESOLVED: {}",
                n.text
            ),
            NoticeKind::Update | NoticeKind::Status | NoticeKind::Notice => tracing::warn!(
                incident = inc.id,
                scenario = %inc.scenario,
                entries = n.entries.len(),
                "{}",
                n.text
            ),
        }
        Ok(Delivered::default())
    }

    async fn report(&self, r: &Report) -> Result<Delivered, NotifyError> {
        tracing::warn!(event = %r.event, key = %r.key, "{}\n{}", r.title, r.text);
        Ok(Delivered::default())
    }
}
