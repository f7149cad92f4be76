//! Which copies of a backup job a place keeps: the pure decision behind
//! [`super::backup::retain`], on the time it is given (the job's clock,
//! so a paused-clock test can run it over simulated years).
//!
//! - `retention: 30d`: every copy younger than 30 days (a copy exactly
//!   30 days old stays).
//! - `keep: { daily: 30d, monthly: 1y }`: for each UTC calendar day that
//!   has copies younger than 30 days, the newest of them; for each month
//!   with copies younger than a year (`1y` is 365.25 days), the newest of
//!   those. `weekly` (ISO weeks) and `yearly` work alike. Within a period
//!   the newest *good* copy is preferred over a newer unrecorded one.
//!
//! Either way the newest good copy (recorded by a succeeded backup run and
//! not found broken in this place by `backup.verify`) is never deleted,
//! however old: a job that has failed for a year still leaves one copy.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Utc};

use super::storage::StoredCopy;
use crate::config::{KeepConfig, Retention};

/// Why a copy is kept: `newest good copy`, `daily 2026-03-01`,
/// `within 30days`.
pub type Reason = String;

/// The verdict on one place's copies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Kept copies, oldest first, each with the first reason found.
    pub keep: Vec<(String, Reason)>,
    /// Copies to delete, oldest first.
    pub delete: Vec<String>,
}

/// Decides on `copies` (any order) at `now`; `good` are the names known
/// good in this place.
pub fn decide(
    copies: &[StoredCopy],
    good: &BTreeSet<String>,
    policy: &Retention,
    now: DateTime<Utc>,
) -> Decision {
    let mut sorted: Vec<&StoredCopy> = copies.iter().collect();
    sorted.sort_by(|a, b| (a.taken_at, &a.name).cmp(&(b.taken_at, &b.name)));
    let mut keep: BTreeMap<&str, Reason> = BTreeMap::new();
    let newest_good = sorted
        .iter()
        .rev()
        .find(|c| good.contains(&c.name))
        .or(sorted.last());
    if let Some(c) = newest_good {
        keep.insert(&c.name, "newest good copy".into());
    }
    match policy {
        Retention::Within(d) => {
            let cutoff = now - chrono::Duration::from_std(d.get()).unwrap_or(chrono::Duration::MAX);
            for c in &sorted {
                if c.taken_at >= cutoff {
                    keep.entry(&c.name).or_insert_with(|| format!("within {d}"));
                }
            }
        }
        Retention::Tiers(k) => tiers(&sorted, good, k, now, &mut keep),
    }
    let mut out = Decision::default();
    for c in sorted {
        match keep.get(c.name.as_str()) {
            Some(r) => out.keep.push((c.name.clone(), r.clone())),
            None => out.delete.push(c.name.clone()),
        }
    }
    out
}

fn tiers<'a>(
    sorted: &[&'a StoredCopy],
    good: &BTreeSet<String>,
    k: &KeepConfig,
    now: DateTime<Utc>,
    keep: &mut BTreeMap<&'a str, Reason>,
) {
    for (tier, d) in k.tiers() {
        let window = chrono::Duration::from_std(d.get()).unwrap_or(chrono::Duration::MAX);
        // Period label → (newest good, newest) in the window.
        let mut periods: BTreeMap<String, (Option<&StoredCopy>, &StoredCopy)> = BTreeMap::new();
        for c in sorted.iter().filter(|c| now - c.taken_at < window) {
            let label = period(tier, c.taken_at);
            let is_good = good.contains(&c.name);
            periods
                .entry(label)
                .and_modify(|(g, n)| {
                    // `sorted` is oldest first: each later copy is newer.
                    *n = c;
                    if is_good {
                        *g = Some(c);
                    }
                })
                .or_insert((is_good.then_some(*c), *c));
        }
        for (label, (g, n)) in periods {
            let c = g.unwrap_or(n);
            keep.entry(&c.name)
                .or_insert_with(|| format!("{tier} {label}"));
        }
    }
}

/// The calendar period (UTC) of tier `tier` a time falls in.
fn period(tier: &str, t: DateTime<Utc>) -> String {
    match tier {
        "daily" => t.format("%Y-%m-%d").to_string(),
        "weekly" => {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }
        "monthly" => t.format("%Y-%m").to_string(),
        _ => t.format("%Y").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::Dur;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn copy(t: DateTime<Utc>) -> StoredCopy {
        StoredCopy {
            name: super::super::storage::copy_name("db", t),
            taken_at: t,
            size: 1,
        }
    }

    fn kept(d: &Decision) -> Vec<String> {
        d.keep.iter().map(|(n, _)| n.clone()).collect()
    }

    #[test]
    fn within_keeps_the_window_and_the_newest_good_copy() {
        let now = at("2026-03-31T02:00:00Z");
        let copies: Vec<StoredCopy> = (0..40)
            .map(|d| copy(now - chrono::Duration::days(d)))
            .collect();
        let good: BTreeSet<String> = copies.iter().map(|c| c.name.clone()).collect();
        let d = decide(
            &copies,
            &good,
            &Retention::Within(Dur::secs(30 * 86_400)),
            now,
        );
        // 0..=30 days old: 31 copies (exactly 30 days old stays).
        assert_eq!(d.keep.len(), 31);
        assert_eq!(d.delete.len(), 9);
        // Everything old: only the newest good one stays, even unrecorded
        // newer copies go.
        let later = now + chrono::Duration::days(100);
        let mut good = BTreeSet::new();
        good.insert(copies[5].name.clone());
        let d = decide(
            &copies,
            &good,
            &Retention::Within(Dur::secs(30 * 86_400)),
            later,
        );
        assert_eq!(kept(&d), [copies[5].name.clone()]);
        assert_eq!(d.keep[0].1, "newest good copy");
    }

    #[test]
    fn a_period_keeps_its_newest_good_copy_over_a_newer_unrecorded_one() {
        let now = at("2026-03-31T23:00:00Z");
        let morning = copy(at("2026-03-31T02:00:00Z"));
        let evening = copy(at("2026-03-31T14:00:00Z"));
        let earlier = copy(at("2026-03-30T02:00:00Z"));
        let good: BTreeSet<String> = [earlier.name.clone(), morning.name.clone()].into();
        let k = KeepConfig {
            daily: Some(Dur::secs(7 * 86_400)),
            ..Default::default()
        };
        let d = decide(
            &[earlier.clone(), evening.clone(), morning.clone()],
            &good,
            &Retention::Tiers(k),
            now,
        );
        assert_eq!(kept(&d), [earlier.name.clone(), morning.name.clone()]);
        assert_eq!(d.delete, std::slice::from_ref(&evening.name));
        assert_eq!(d.keep[0].1, "daily 2026-03-30");
    }

    #[test]
    fn weekly_and_yearly_tiers_use_iso_weeks_and_years() {
        // 2026-01-01 is a Thursday: ISO week 2026-W01 starts 2025-12-29.
        assert_eq!(period("weekly", at("2025-12-29T00:00:00Z")), "2026-W01");
        assert_eq!(period("weekly", at("2025-12-28T23:59:59Z")), "2025-W52");
        assert_eq!(period("yearly", at("2025-12-28T23:59:59Z")), "2025");
        assert_eq!(period("monthly", at("2025-12-28T23:59:59Z")), "2025-12");
    }
}
