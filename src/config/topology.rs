//! How targets relate: the keys a target has beside its kind.
//!
//! ```yaml
//! targets:
//!   app:
//!     http: { url: "http://127.0.0.1:8000/health" }
//!     depends_on: [db, cache]       # an app failing while db fails waits on db
//!     zone: primary                 # targets of one zone fail together
//!     budget: { changes: 3, per: 30m }
//! ```
//!
//! `depends_on` makes a dependent's incident wait on its cause's incident
//! instead of acting ([`crate::engine`]); `zone` groups targets (a
//! superseding scenario's scope covers the zones of its targets); `budget`
//! bounds how often any step of any scenario changes the target. The
//! loader takes these keys out of each target's mapping before the kind is
//! read, so [`super::TargetConfig`] stays one kind per target.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::duration::Dur;

/// The keys a target may have beside its kind.
pub const LINK_KEYS: &[&str] = &["depends_on", "zone", "budget"];

/// A target's relations and its own budget.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetLinks {
    /// Targets this one needs: while one of them has an open incident, an
    /// incident on this target waits on it. Transitive.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The zone (region, data center) the target lives in.
    #[serde(default)]
    pub zone: Option<String>,
    /// How often steps may change this target, whoever asks.
    #[serde(default)]
    pub budget: TargetBudget,
}

/// A target's own budget: at most `changes` actions per `per`, counted
/// from the ledger over every scenario. Default 4 per 30m: the longest
/// shipped plan changes one target 3 times (two restarts and a rollout),
/// leaving one for another scenario; the issue's 5 restarts in 30 minutes
/// is past it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetBudget {
    pub changes: u32,
    pub per: Dur,
}

impl Default for TargetBudget {
    fn default() -> Self {
        TargetBudget {
            changes: 4,
            per: Dur::secs(30 * 60),
        }
    }
}

/// Every target's links, with the questions the engine and the checker ask.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Topology {
    links: BTreeMap<String, TargetLinks>,
}

impl Topology {
    pub fn new(links: BTreeMap<String, TargetLinks>) -> Self {
        Topology { links }
    }

    /// A target's links (the defaults when it has none).
    pub fn links(&self, target: &str) -> TargetLinks {
        self.links.get(target).cloned().unwrap_or_default()
    }

    /// Every target declared with links.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &TargetLinks)> {
        self.links.iter()
    }

    /// Everything `targets` depend on, transitively, not counting
    /// `targets` themselves.
    pub fn dependencies<'a>(&self, targets: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let start: BTreeSet<String> = targets.into_iter().map(str::to_string).collect();
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = start.iter().cloned().collect();
        while let Some(t) = todo.pop() {
            for d in self
                .links
                .get(&t)
                .map(|l| l.depends_on.as_slice())
                .unwrap_or_default()
            {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen.retain(|t| !start.contains(t));
        seen
    }

    /// `targets` and every target sharing a zone with one of them.
    pub fn with_zones<'a>(&self, targets: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = targets.into_iter().map(str::to_string).collect();
        let zones: BTreeSet<&String> = out
            .iter()
            .filter_map(|t| self.links.get(t).and_then(|l| l.zone.as_ref()))
            .collect();
        for (t, l) in &self.links {
            if l.zone.as_ref().is_some_and(|z| zones.contains(z)) {
                out.insert(t.clone());
            }
        }
        out
    }

    /// Each dependency cycle once, as the path that closes it
    /// (`[db, cache, db]`), starting from its smallest name.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let mut found: Vec<Vec<String>> = Vec::new();
        for start in self.links.keys() {
            // Depth-first from `start`, looking for a way back to it
            // through names greater than it (so each cycle is found once).
            let mut stack: Vec<(String, usize)> = vec![(start.clone(), 0)];
            let mut path: Vec<String> = vec![start.clone()];
            while let Some((node, i)) = stack.pop() {
                let deps = self
                    .links
                    .get(&node)
                    .map(|l| l.depends_on.clone())
                    .unwrap_or_default();
                if i >= deps.len() {
                    path.pop();
                    continue;
                }
                stack.push((node, i + 1));
                let next = &deps[i];
                if next == start {
                    let mut c = path.clone();
                    c.push(start.clone());
                    found.push(c);
                    // One cycle through `start` is enough to refuse it.
                    break;
                }
                if next > start && !path.contains(next) {
                    path.push(next.clone());
                    stack.push((next.clone(), 0));
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(edges: &[(&str, &[&str])]) -> Topology {
        Topology::new(
            edges
                .iter()
                .map(|(t, d)| {
                    let links = TargetLinks {
                        depends_on: d.iter().map(|s| s.to_string()).collect(),
                        ..Default::default()
                    };
                    (t.to_string(), links)
                })
                .collect(),
        )
    }

    #[test]
    fn dependencies_are_transitive_and_exclude_the_start() {
        let t = topo(&[
            ("app", &["backend"]),
            ("backend", &["db", "cache"]),
            ("db", &[]),
        ]);
        let d: Vec<String> = t.dependencies(["app"]).into_iter().collect();
        assert_eq!(d, ["backend", "cache", "db"]);
        assert!(t.dependencies(["db"]).is_empty());
        let both: Vec<String> = t.dependencies(["app", "backend"]).into_iter().collect();
        assert_eq!(both, ["cache", "db"]);
    }

    #[test]
    fn cycles_are_found_once_each() {
        let t = topo(&[
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["a"]),
            ("d", &["d"]),
            ("e", &["a"]),
        ]);
        assert_eq!(
            t.cycles(),
            vec![vec!["a", "b", "c", "a"], vec!["d", "d"]]
                .into_iter()
                .map(|c| c.into_iter().map(String::from).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        );
        assert!(topo(&[("app", &["db"]), ("db", &[])]).cycles().is_empty());
    }

    #[test]
    fn zones_widen_a_scope() {
        let mut links = BTreeMap::new();
        for (t, z) in [("app", "eu"), ("db", "eu"), ("dr", "us")] {
            let l = TargetLinks {
                zone: Some(z.into()),
                ..Default::default()
            };
            links.insert(t.to_string(), l);
        }
        let t = Topology::new(links);
        let s: Vec<String> = t.with_zones(["app"]).into_iter().collect();
        assert_eq!(s, ["app", "db"]);
    }
}
