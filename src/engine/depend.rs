//! One failure, one incident: which open incident waits on which.
//!
//! An incident *waits* (runs no step, pages no one) while it has a
//! [`Hold`]:
//! - a scenario that `supersedes` its scenario is pending or open on
//!   targets it touches (observes or acts on), zones included: the
//!   superseding incident is its cause (a pending one has no incident yet);
//! - else, one of its observed targets depends (`depends_on`, transitively)
//!   on a target another open incident observes: that incident, or the
//!   root of its own chain, is its cause.
//!
//! The engine recomputes holds whenever incidents open, close or a
//! scenario's phases change ([`super::Engine`]), links the cause in the
//! store and tells the cause's timeline (and whoever it paged) about the
//! dependent once. The incident task waits on its hold before each step
//! ([`super::plan`]); once released it waits the dependency grace period
//! and resumes its own plan only if its symptoms outlived it (if they
//! cleared, the engine resolves it with its cause).

use std::collections::BTreeSet;

use tokio::sync::watch;

use crate::config::Topology;
use crate::rules::model::Scenario;
use crate::store::IncidentId;

/// Why an incident may not act now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// The incident it waits on; `None` for a superseding scenario that
    /// is pending (no incident yet).
    pub cause: Option<IncidentId>,
    /// For the timeline: `waiting on incident #12 (database-failure on db)`.
    pub text: String,
}

/// What an incident task watches: its hold, `None` when free.
pub type HoldRx = watch::Receiver<Option<Hold>>;

/// A hold that never comes (tests and callers without an engine).
pub fn never() -> HoldRx {
    watch::channel(None).1
}

/// Targets a scenario touches: those it observes and those it acts on.
pub fn touches(s: &Scenario) -> BTreeSet<String> {
    let mut t = s.observed_targets();
    t.extend(s.acted_targets());
    t
}

/// Where a superseding scenario's reach ends: its targets and their zones.
pub fn scope(s: &Scenario, topo: &Topology) -> BTreeSet<String> {
    let t = touches(s);
    topo.with_zones(t.iter().map(String::as_str))
}

/// The targets `cause` observes that `dependent`'s observed targets depend
/// on (empty: no dependency).
pub fn dependency_targets(dependent: &Scenario, cause: &Scenario, topo: &Topology) -> Vec<String> {
    let observed = dependent.observed_targets();
    let deps = topo.dependencies(observed.iter().map(String::as_str));
    cause
        .observed_targets()
        .intersection(&deps)
        .cloned()
        .collect()
}

/// The targets where `superseder` reaches `s` (empty: it does not).
pub fn superseded_targets(s: &Scenario, superseder: &Scenario, topo: &Topology) -> Vec<String> {
    if !superseder.supersedes.contains(&s.name) {
        return Vec::new();
    }
    scope(superseder, topo)
        .intersection(&touches(s))
        .cloned()
        .collect()
}
