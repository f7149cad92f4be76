//! Checks across scenarios: what `supersedes` (and a public component)
//! names, and two scenarios that can act on one target with nothing
//! ordering them.
//!
//! medic keeps one actor per target at run time (a lock, a target budget),
//! but a lock only takes turns: it does not say which scenario should act.
//! A dependency between their targets (`depends_on` in the config) or a
//! supersession (`supersedes` in a rule) does, so `medic check` warns when
//! two scenarios share a target with neither.

use std::collections::BTreeSet;

use crate::config::Config;
use crate::diag::{Diagnostic, did_you_mean};
use crate::yaml::Pos;

use super::model::Scenario;

/// Per loaded scenario (same order): its file, where each `supersedes`
/// name is written, where each plan step starts.
pub(crate) type Meta = (String, Vec<(String, Pos)>, Vec<Pos>);

fn at(origin: &str, p: Pos, msg: String) -> Diagnostic {
    Diagnostic::new(origin.to_string(), p.0, p.1, msg)
}

/// Whether either scenario's incidents wait on the other's by the
/// config's `depends_on`: one observes a target the other's targets
/// depend on.
fn dependent(a: &Scenario, b: &Scenario, config: &Config) -> bool {
    let (oa, ob) = (a.observed_targets(), b.observed_targets());
    let da = config.topology.dependencies(oa.iter().map(String::as_str));
    let db = config.topology.dependencies(ob.iter().map(String::as_str));
    !da.is_disjoint(&ob) || !db.is_disjoint(&oa)
}

/// Warns about `supersedes` names no loaded scenario has, and about two
/// scenarios acting on one target with no dependency or supersession
/// between them (at the first such step of the one loaded first).
pub(crate) fn across(
    scenarios: &[Scenario],
    meta: &[Meta],
    config: Option<&Config>,
    _diags: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) {
    let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    for (origin, sup, _) in meta {
        for (name, p) in sup {
            if !names.contains(&name.as_str()) {
                let hint = did_you_mean(name, names.iter().copied())
                    .map_or_else(String::new, |h| format!(" ({h})"));
                warnings.push(at(
                    origin,
                    *p,
                    format!("warning: supersedes {name:?}, which is not among the rule files loaded{hint}"),
                ));
            }
        }
    }
    let Some(config) = config else { return };
    // A public component that names no loaded scenario never degrades.
    for (name, d) in config
        .public_status
        .iter()
        .flat_map(|p| p.scenario_refs.iter())
    {
        if !names.contains(&name.as_str()) {
            let hint = did_you_mean(name, names.iter().copied())
                .map_or_else(String::new, |h| format!(" ({h})"));
            warnings.push(Diagnostic {
                message: format!(
                    "warning: public component names scenario {name:?}, which is not among the rule files loaded{hint}"
                ),
                ..d.clone()
            });
        }
    }
    for i in 0..scenarios.len() {
        for j in i + 1..scenarios.len() {
            let (a, b) = (&scenarios[i], &scenarios[j]);
            let shared: BTreeSet<String> = a
                .acted_targets()
                .intersection(&b.acted_targets())
                .cloned()
                .collect();
            if shared.is_empty()
                || a.supersedes.contains(&b.name)
                || b.supersedes.contains(&a.name)
                || dependent(a, b, config)
            {
                continue;
            }
            let target = shared.iter().next().cloned().unwrap_or_default();
            let step_of = |s: &Scenario| {
                s.plan
                    .iter()
                    .position(|st| st.action.targets().contains(&target))
            };
            let (Some(ka), Some(kb)) = (step_of(a), step_of(b)) else {
                continue;
            };
            let (oa, sa, pa) = &meta[i];
            let _ = sa;
            let (ob, _, pb) = &meta[j];
            let here = pa.get(ka).copied().unwrap_or((0, 0));
            let there = pb.get(kb).copied().unwrap_or((0, 0));
            warnings.push(at(
                oa,
                here,
                format!(
                    "warning: scenarios {:?} and {:?} can both act on target {target:?} (step {:?} here, step {:?} at {ob}:{}:{}) with no dependency or supersession between them: give one's targets `depends_on` the other's in the config, or write `supersedes: [{}]` in one of them",
                    a.name, b.name, a.plan[ka].name, b.plan[kb].name, there.0, there.1, b.name
                ),
            ));
        }
    }
}
