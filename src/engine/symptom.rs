//! The symptom state machine: ok → pending → firing → clearing → ok.
//!
//! Driven by check outcomes over time. A symptom fires only after failing
//! *continuously* for `for`, and clears only after being ok continuously for
//! `clear_for`. Unknown never moves a symptom towards firing: it breaks a
//! pending streak (back to ok) and a clearing streak (back to firing), so a
//! symptom that medic cannot see stays where the last *seen* evidence put it.

use std::time::Duration;

use tokio::time::Instant;

use crate::observe::{Phase, Seen};

/// A phase change, reported by [`SymptomState::update`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: Phase,
    pub to: Phase,
}

/// The timing of one symptom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub for_: Duration,
    pub clear_for: Duration,
}

/// One symptom's state. Small and `Copy` so thousands fit in a cache-friendly `Vec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymptomState {
    pub phase: Phase,
    /// When the current streak (failing for pending, ok for clearing) began.
    pub since: Instant,
    pub seen: Seen,
}

impl SymptomState {
    /// A symptom never observed.
    pub fn new(now: Instant) -> Self {
        SymptomState {
            phase: Phase::Ok,
            since: now,
            seen: Seen::Nothing,
        }
    }

    /// A symptom presumed firing: used when medic restarts with an incident
    /// open, so that it resolves only after the symptom is *seen* clearing.
    pub fn presumed_firing(now: Instant) -> Self {
        SymptomState {
            phase: Phase::Firing,
            since: now,
            seen: Seen::Nothing,
        }
    }

    /// Feeds one observation made at `now`; returns the phase change, if any.
    #[inline]
    pub fn update(&mut self, seen: Seen, now: Instant, t: Timing) -> Option<Transition> {
        self.seen = seen;
        let from = self.phase;
        let to = match (from, seen) {
            (_, Seen::Nothing) => from,
            (Phase::Ok, Seen::Failing) => {
                self.since = now;
                if t.for_.is_zero() {
                    Phase::Firing
                } else {
                    Phase::Pending
                }
            }
            (Phase::Ok, _) => Phase::Ok,
            (Phase::Pending, Seen::Failing) => {
                if now.saturating_duration_since(self.since) >= t.for_ {
                    Phase::Firing
                } else {
                    Phase::Pending
                }
            }
            // An ok, or a gap in what medic can see, breaks the failing streak.
            (Phase::Pending, Seen::Ok | Seen::Unknown) => Phase::Ok,
            (Phase::Firing, Seen::Ok) => {
                self.since = now;
                if t.clear_for.is_zero() {
                    Phase::Ok
                } else {
                    Phase::Clearing
                }
            }
            (Phase::Firing, _) => Phase::Firing,
            (Phase::Clearing, Seen::Ok) => {
                if now.saturating_duration_since(self.since) >= t.clear_for {
                    Phase::Ok
                } else {
                    Phase::Clearing
                }
            }
            // Failing again, or unseen: not proven healthy, back to firing.
            (Phase::Clearing, Seen::Failing | Seen::Unknown) => Phase::Firing,
        };
        if to == from {
            return None;
        }
        self.phase = to;
        Some(Transition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const T: Timing = Timing {
        for_: Duration::from_secs(3),
        clear_for: Duration::from_secs(5),
    };

    fn fail() -> Seen {
        Seen::Failing
    }

    /// Steps the paused clock by one second, then observes.
    async fn tick(s: &mut SymptomState, seen: Seen) -> Option<Transition> {
        advance(Duration::from_secs(1)).await;
        s.update(seen, Instant::now(), T)
    }

    #[tokio::test(start_paused = true)]
    async fn fires_exactly_at_for() {
        let mut s = SymptomState::new(Instant::now());
        assert_eq!(
            tick(&mut s, fail()).await,
            Some(Transition {
                from: Phase::Ok,
                to: Phase::Pending
            })
        );
        assert_eq!(tick(&mut s, fail()).await, None); // 1 s failing
        assert_eq!(tick(&mut s, fail()).await, None); // 2 s
        assert_eq!(
            tick(&mut s, fail()).await, // 3 s = for
            Some(Transition {
                from: Phase::Pending,
                to: Phase::Firing
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn clears_exactly_at_clear_for() {
        let mut s = SymptomState::presumed_firing(Instant::now());
        assert_eq!(tick(&mut s, Seen::Ok).await.unwrap().to, Phase::Clearing);
        for _ in 0..4 {
            assert_eq!(tick(&mut s, Seen::Ok).await, None);
        }
        assert_eq!(tick(&mut s, Seen::Ok).await.unwrap().to, Phase::Ok);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_never_fires() {
        let mut s = SymptomState::new(Instant::now());
        for _ in 0..100 {
            assert_eq!(tick(&mut s, Seen::Unknown).await, None);
        }
        assert_eq!(s.phase, Phase::Ok);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_breaks_a_pending_streak() {
        let mut s = SymptomState::new(Instant::now());
        tick(&mut s, fail()).await;
        tick(&mut s, fail()).await;
        assert_eq!(tick(&mut s, Seen::Unknown).await.unwrap().to, Phase::Ok);
        // Failing again starts a new streak: for must elapse again in full.
        tick(&mut s, fail()).await;
        tick(&mut s, fail()).await;
        tick(&mut s, fail()).await;
        assert_eq!(s.phase, Phase::Pending);
        assert_eq!(tick(&mut s, fail()).await.unwrap().to, Phase::Firing);
    }

    #[tokio::test(start_paused = true)]
    async fn flapping_inside_for_never_fires() {
        let mut s = SymptomState::new(Instant::now());
        for i in 0..200 {
            let seen = if i % 3 == 2 { Seen::Ok } else { fail() };
            tick(&mut s, seen).await;
            assert_ne!(s.phase, Phase::Firing, "fired at observation {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_while_firing_holds_and_breaks_clearing() {
        let mut s = SymptomState::presumed_firing(Instant::now());
        assert_eq!(tick(&mut s, Seen::Unknown).await, None);
        assert_eq!(s.phase, Phase::Firing);
        tick(&mut s, Seen::Ok).await;
        assert_eq!(s.phase, Phase::Clearing);
        assert_eq!(tick(&mut s, Seen::Unknown).await.unwrap().to, Phase::Firing);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_while_clearing_refires() {
        let mut s = SymptomState::presumed_firing(Instant::now());
        tick(&mut s, Seen::Ok).await;
        assert_eq!(tick(&mut s, fail()).await.unwrap().to, Phase::Firing);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_for_fires_and_clears_at_once() {
        let z = Timing {
            for_: Duration::ZERO,
            clear_for: Duration::ZERO,
        };
        let mut s = SymptomState::new(Instant::now());
        assert_eq!(
            s.update(fail(), Instant::now(), z).unwrap().to,
            Phase::Firing
        );
        assert_eq!(s.update(Seen::Ok, Instant::now(), z).unwrap().to, Phase::Ok);
    }
}
