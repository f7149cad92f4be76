//! Cron schedules in a time zone (the `cron` crate for the expression,
//! `chrono-tz` for the zone).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// Why a schedule is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "invalid cron expression {expr:?}: {why} (five fields `MIN HOUR DOM MON DOW`, or six with seconds first)"
    )]
    Cron { expr: String, why: String },
    #[error("unknown time zone {0:?} (an IANA name such as UTC or Europe/Paris)")]
    TimeZone(String),
}

/// A cron expression read in a time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: cron::Schedule,
    tz: Tz,
}

impl Schedule {
    /// Parses `expr` (5 or 6 fields) in the IANA zone `tz`.
    pub fn parse(expr: &str, tz: &str) -> Result<Self, ScheduleError> {
        let fields = expr.split_whitespace().count();
        if !(5..=7).contains(&fields) {
            return Err(ScheduleError::Cron {
                expr: expr.to_string(),
                why: format!("{fields} fields"),
            });
        }
        let full = if fields == 5 {
            format!("0 {expr}")
        } else {
            expr.to_string()
        };
        let cron = cron::Schedule::from_str(&full).map_err(|e| ScheduleError::Cron {
            expr: expr.to_string(),
            why: e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })?;
        let tz = tz
            .parse::<Tz>()
            .map_err(|_| ScheduleError::TimeZone(tz.to_string()))?;
        Ok(Schedule { cron, tz })
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .after(&t.with_timezone(&self.tz))
            .next()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The newest slot in `(after, until]`, if any: the one slot a late
    /// start-up catches up on, however many were missed.
    pub fn newest_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut newest = None;
        let mut t = after;
        // Walk forward; bounded so a per-second schedule missed for a year
        // does not spin: past 100,000 slots, jump close to `until`.
        for _ in 0..100_000 {
            match self.next_after(t) {
                Some(n) if n <= until => {
                    newest = Some(n);
                    t = n;
                }
                _ => return newest,
            }
        }
        let mut t = until - chrono::Duration::days(1);
        while let Some(n) = self.next_after(t).filter(|n| *n <= until) {
            newest = Some(n);
            t = n;
        }
        newest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_fields_and_time_zones() {
        let s = Schedule::parse("0 2 * * *", "Europe/Paris").unwrap();
        // 02:00 in Paris in winter is 01:00 UTC.
        assert_eq!(
            s.next_after(t("2026-01-10T12:00:00Z")),
            Some(t("2026-01-11T01:00:00Z"))
        );
        let s = Schedule::parse("0 0 2 * * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(t("2026-01-10T02:00:00Z")),
            Some(t("2026-01-11T02:00:00Z"))
        );
    }

    #[test]
    fn bad_input_says_what() {
        assert!(matches!(
            Schedule::parse("0 2 * *", "UTC"),
            Err(ScheduleError::Cron { .. })
        ));
        assert_eq!(
            Schedule::parse("0 2 * * *", "Mars/Olympus").unwrap_err(),
            ScheduleError::TimeZone("Mars/Olympus".into())
        );
    }

    #[test]
    fn newest_missed_slot_only() {
        let s = Schedule::parse("0 * * * *", "UTC").unwrap();
        assert_eq!(
            s.newest_between(t("2026-01-10T00:00:00Z"), t("2026-01-10T05:30:00Z")),
            Some(t("2026-01-10T05:00:00Z"))
        );
        assert_eq!(
            s.newest_between(t("2026-01-10T05:00:00Z"), t("2026-01-10T05:30:00Z")),
            None
        );
    }
}
