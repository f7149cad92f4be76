//! Live reload of the config and rules: SIGHUP or `POST /-/reload`.
//!
//! A reload re-reads the config file and every rule file it names and
//! validates them as a whole. A set with any problem is rejected: the old
//! rules keep running, every problem is logged as `path:line:col: message`,
//! and `/readyz` and the reload metrics show the failure until a reload
//! succeeds. A good set replaces the running scenarios without dropping
//! open incidents (see [`crate::engine::reload`]).
//!
//! Requests are queued to the daemon and handled one at a time.

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// Why a reload did not happen or was rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReloadOutcome {
    /// The new set runs.
    pub ok: bool,
    /// Scenarios running after the reload (the old count when rejected).
    pub scenarios: usize,
    /// Scenarios refused (a check or action kind this build cannot run).
    pub refused: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Incidents of removed scenarios, closed with a note.
    pub closed: Vec<i64>,
    /// Every problem, `path:line:col: message`, when rejected.
    pub errors: Vec<String>,
    /// Config changes that only a restart applies (kept as they were).
    pub needs_restart: Vec<String>,
}

impl ReloadOutcome {
    /// A rejected reload.
    pub fn rejected(scenarios: usize, refused: usize, errors: Vec<String>) -> Self {
        ReloadOutcome {
            ok: false,
            scenarios,
            refused,
            added: Vec::new(),
            removed: Vec::new(),
            closed: Vec::new(),
            errors,
            needs_restart: Vec::new(),
        }
    }
}

/// One reload request; `reply` (if any) gets the outcome.
pub struct ReloadRequest {
    /// Who asked: `SIGHUP`, `POST /-/reload`, ...
    pub source: String,
    pub reply: Option<oneshot::Sender<ReloadOutcome>>,
}

/// Asks the running daemon to reload. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReloadHandle(mpsc::Sender<ReloadRequest>);

/// The daemon's end of the reload queue.
pub type ReloadRequests = mpsc::Receiver<ReloadRequest>;

/// A reload queue: the handle for signal handlers and the HTTP server, the
/// receiver for the daemon.
pub fn channel() -> (ReloadHandle, ReloadRequests) {
    let (tx, rx) = mpsc::channel(8);
    (ReloadHandle(tx), rx)
}

impl ReloadHandle {
    /// Queues a reload without waiting for it (signal handlers). A reload
    /// already queued covers this one, so a full queue drops it.
    pub fn request(&self, source: &str) {
        let _ = self.0.try_send(ReloadRequest {
            source: source.to_string(),
            reply: None,
        });
    }

    /// Reloads and waits for the outcome; `None` if the daemon is gone.
    pub async fn reload(&self, source: &str) -> Option<ReloadOutcome> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(ReloadRequest {
                source: source.to_string(),
                reply: Some(tx),
            })
            .await
            .ok()?;
        rx.await.ok()
    }
}

/// Reload counters, shown on `/readyz` and as metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReloadStats {
    pub succeeded: u64,
    pub failed: u64,
    /// Whether the newest reload (or the start-up load) succeeded.
    pub last_ok: bool,
    /// Unix seconds of the newest successful load (start-up counts).
    pub last_success_unix: i64,
}

impl ReloadStats {
    /// Publishes the counters as medic's own metrics.
    pub fn export(&self) {
        crate::metrics::reloads(
            self.succeeded,
            self.failed,
            self.last_ok,
            self.last_success_unix,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_does_not_block_when_the_queue_is_full() {
        let (h, mut rx) = channel();
        for _ in 0..100 {
            h.request("SIGHUP");
        }
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 8);
    }
}
