//! Service-manager notifications (systemd's `sd_notify` protocol).
//!
//! Under systemd (`Type=notify`) medic says `READY=1` once its rules are
//! loaded, its store is open and its engine runs; `RELOADING=1` then
//! `READY=1` around a reload; `STOPPING=1` on shutdown; and, when the unit
//! sets `WatchdogSec=`, `WATCHDOG=1` at half that period, but only while the
//! store still answers: a medic whose store hangs cannot act safely, and is
//! better restarted by systemd than left running blind.
//!
//! Without `NOTIFY_SOCKET` (a terminal, Kubernetes, tests) every call is a
//! no-op.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::store::prelude::*;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// `READY=1`, with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` (with the monotonic timestamp systemd 253+ requires).
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// A free-form status line (`systemctl status` shows it).
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The watchdog period systemd asked for, if any (`WATCHDOG_USEC`, for
/// this process).
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// Feeds systemd's watchdog every `period / 2` while the store answers
/// within that time, until `stop`.
pub async fn watchdog(period: Duration, store: Arc<dyn Store>, stop: CancellationToken) {
    let every = (period / 2).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(period = %humantime::format_duration(period), "feeding the systemd watchdog");
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match tokio::time::timeout(every, store.recent_incidents(1)).await {
            Ok(Ok(_)) => send(&[NotifyState::Watchdog]),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "store failing: not feeding the watchdog")
            }
            Err(_) => tracing::error!("store not answering: not feeding the watchdog"),
        }
    }
}
