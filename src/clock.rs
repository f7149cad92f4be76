//! Wall-clock time for timelines, ledgers and budgets.
//!
//! Everything that waits uses `tokio::time`; everything that is *recorded*
//! needs a wall-clock timestamp. [`Clock::tokio`] derives wall time from
//! tokio's clock so a test with `start_paused = true` drives both at once.

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// A source of wall-clock timestamps.
#[derive(Clone, Debug)]
pub struct Clock {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    System,
    /// Wall time = `base` + time elapsed on tokio's clock since `start`.
    Tokio {
        base: DateTime<Utc>,
        start: Instant,
    },
}

impl Clock {
    /// The system's real-time clock (production).
    pub fn system() -> Self {
        Clock { kind: Kind::System }
    }

    /// A clock that follows tokio's clock from `base` on: pausing or
    /// advancing tokio's clock in a test moves this one too.
    pub fn tokio(base: DateTime<Utc>) -> Self {
        Clock {
            kind: Kind::Tokio {
                base,
                start: Instant::now(),
            },
        }
    }

    /// The current wall-clock time.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.kind {
            Kind::System => Utc::now(),
            Kind::Tokio { base, start } => {
                let elapsed = Instant::now().saturating_duration_since(*start);
                *base + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let base = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Clock::tokio(base);
        assert_eq!(clock.now(), base);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now(), base + chrono::Duration::hours(1));
    }
}
