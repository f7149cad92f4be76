//! Incidents as a tree: each cause with its dependents under it
//! (`medic incidents`, the status page).

use super::{Incident, IncidentId};

/// `incidents` in tree order, each with its depth: a root (no cause, or a
/// cause not among them) in the order given, then its dependents, depth
/// first. Every incident appears once, even if links loop.
pub fn order(incidents: &[Incident]) -> Vec<(usize, &Incident)> {
    let ids: Vec<IncidentId> = incidents.iter().map(|i| i.id).collect();
    let mut out = Vec::with_capacity(incidents.len());
    let mut placed = std::collections::HashSet::new();
    fn walk<'a>(
        i: &'a Incident,
        depth: usize,
        all: &'a [Incident],
        out: &mut Vec<(usize, &'a Incident)>,
        placed: &mut std::collections::HashSet<IncidentId>,
    ) {
        if !placed.insert(i.id) {
            return;
        }
        out.push((depth, i));
        for d in all.iter().filter(|d| d.cause == Some(i.id)) {
            walk(d, depth + 1, all, out, placed);
        }
    }
    for i in incidents {
        if i.cause.is_none_or(|c| !ids.contains(&c)) {
            walk(i, 0, incidents, &mut out, &mut placed);
        }
    }
    // Whatever only a loop reaches.
    for i in incidents {
        walk(i, 0, incidents, &mut out, &mut placed);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::IncidentState;

    fn inc(id: IncidentId, cause: Option<IncidentId>) -> Incident {
        let at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        Incident {
            id,
            scenario: format!("s{id}"),
            instance: String::new(),
            state: IncidentState::Open,
            severity: "high".into(),
            summary: String::new(),
            opened_at: at,
            updated_at: at,
            resolved_at: None,
            cause,
        }
    }

    #[test]
    fn dependents_sit_under_their_cause_once() {
        let list = [
            inc(1, None),
            inc(2, Some(4)),
            inc(3, Some(1)),
            inc(4, None),
            inc(5, Some(99)),
        ];
        let got: Vec<(usize, IncidentId)> = order(&list).iter().map(|(d, i)| (*d, i.id)).collect();
        assert_eq!(got, [(0, 1), (1, 3), (0, 4), (1, 2), (0, 5)]);
        let looped = [inc(1, Some(2)), inc(2, Some(1))];
        assert_eq!(order(&looped).len(), 2, "a loop shows each incident once");
    }
}
