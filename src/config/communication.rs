//! The communication plan of an escalation policy (the runbook's: notify
//! at detection, page on need, the RTO as a clock, executives for P1).
//! Absent, a policy pages only when a plan gives up, its levels timed from
//! then (medic before issue 15).

use serde::Deserialize;

use crate::duration::Dur;

/// Who hears what, when, by severity. See docs/paging.md.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Communication {
    /// Notifiers of the on-call channel: notices (not pages) go here.
    #[serde(default)]
    pub channel: Vec<String>,
    /// Notified at once when a critical (P1) incident opens.
    #[serde(default)]
    pub executives: Vec<String>,
    /// Stakeholders (an email list): told when a critical or high
    /// incident opens, then of its progress and resolution like everyone
    /// notified.
    #[serde(default)]
    pub stakeholders: Vec<String>,
    /// The affected users' lists (email notifiers, e.g. a `bcc` of the
    /// users): told `users_within` after detection, with the public
    /// template (only what the public status page shows), of incidents
    /// on a public component still open then; then of their resolution.
    /// Never among everyone notified (no internal notice reaches them).
    #[serde(default)]
    pub users: Vec<String>,
    /// When the affected users are told, after detection. Default 1h (the
    /// runbook's "email to affected users: within 1 hour").
    #[serde(default = "default_users_within")]
    pub users_within: Dur,
    /// How long after resolution (the symptoms clear for their
    /// `clear_for`) the resolution notice (or the FYI) goes out. Default
    /// 0s: at once. The runbook wants it within 15m of restoration.
    #[serde(default = "default_resolution_after")]
    pub resolution_after: Dur,
    /// When the post-mortem reminder goes to the acknowledging engineer
    /// and the channel, after the resolution of an incident that paged
    /// someone. Default 24h (the runbook's post-mortem deadline).
    #[serde(default = "default_postmortem_after")]
    pub postmortem_after: Dur,
    /// Where the post-mortem draft of an incident is read; `{id}` is
    /// replaced. Default: the `medic report ID` command.
    #[serde(default)]
    pub report_url: Option<String>,
    /// A first page unacknowledged this long is a missed acknowledgement
    /// (timeline, `medic_ack_missed_total`). Default 15m (the runbook).
    #[serde(default = "default_ack_within")]
    pub ack_within: Dur,
    /// Shares of the scenario's RTO (percent, 1..=99) at which medic
    /// escalates one level, saying how much is left; at 100 % it pages the
    /// top level. Default 50 and 80.
    #[serde(default = "default_rto_shares")]
    pub rto_shares: Vec<u32>,
    /// Where humans read an incident's timeline; `{id}` is replaced
    /// (`https://medic.example.com/api/v1/incidents/{id}`). Default: the
    /// `medic report ID` command.
    #[serde(default)]
    pub timeline_url: Option<String>,
    #[serde(default)]
    pub critical: Option<SeverityPolicy>,
    #[serde(default)]
    pub high: Option<SeverityPolicy>,
    #[serde(default)]
    pub warning: Option<SeverityPolicy>,
    #[serde(default)]
    pub info: Option<SeverityPolicy>,
}

/// What happens for incidents of one severity; unset fields take the
/// severity's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityPolicy {
    /// When the incident opens. Defaults: critical `page`, high `notify`,
    /// warning and info `channel`.
    #[serde(default)]
    pub open: Option<OnOpen>,
    /// When medic fixed it alone (nobody paged). Default `fyi`.
    #[serde(default)]
    pub self_healed: Option<OnSelfHealed>,
    /// Whether the affected users (`users`) hear of incidents of this
    /// severity. Default `true`.
    #[serde(default)]
    pub users: Option<bool>,
    /// When they do, after detection. Default: the plan's `users_within`.
    #[serde(default)]
    pub users_within: Option<Dur>,
}

/// What an opening incident does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOpen {
    /// Page level 1 now (levels timed from detection), saying medic is on
    /// it and what it will try.
    Page,
    /// A notice to the channel that mentions the on-call.
    Notify,
    /// A notice to the channel, mentioning nobody.
    Channel,
    /// Nothing until the plan gives up.
    None,
}

/// What an incident medic fixed alone does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSelfHealed {
    /// A short FYI to the channel with the timeline link.
    Fyi,
    None,
}

/// A severity's policy with the defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub open: OnOpen,
    pub self_healed: OnSelfHealed,
    pub users: bool,
    pub users_within: Dur,
}

fn default_ack_within() -> Dur {
    Dur::secs(15 * 60)
}

fn default_users_within() -> Dur {
    Dur::secs(3600)
}

fn default_resolution_after() -> Dur {
    Dur::secs(0)
}

fn default_postmortem_after() -> Dur {
    Dur::secs(24 * 3600)
}

fn default_rto_shares() -> Vec<u32> {
    vec![50, 80]
}

impl Communication {
    /// The policy of `severity` (`critical`, `high`, `warning`, `info`).
    pub fn for_severity(&self, severity: &str) -> Resolved {
        let (set, open) = match severity {
            "critical" => (self.critical, OnOpen::Page),
            "high" => (self.high, OnOpen::Notify),
            "warning" => (self.warning, OnOpen::Channel),
            _ => (self.info, OnOpen::Channel),
        };
        let set = set.unwrap_or_default();
        Resolved {
            open: set.open.unwrap_or(open),
            self_healed: set.self_healed.unwrap_or(OnSelfHealed::Fyi),
            users: set.users.unwrap_or(true),
            users_within: set.users_within.unwrap_or(self.users_within),
        }
    }

    /// Where humans read incident `id`'s timeline.
    pub fn timeline_link(&self, id: i64) -> String {
        match &self.timeline_url {
            Some(u) => u.replace("{id}", &id.to_string()),
            None => format!("`medic report {id}`"),
        }
    }

    /// Where humans read incident `id`'s post-mortem draft.
    pub fn report_link(&self, id: i64) -> String {
        match &self.report_url {
            Some(u) => u.replace("{id}", &id.to_string()),
            None => format!("`medic report {id}`"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_take_the_runbook_defaults_unless_set() {
        let config = crate::config::load_str(
            "medic.yaml",
            "notifiers: { c: { log: {} } }\nescalation:\n  default:\n    levels: [{ after: 0s, notify: [c] }]\n    communication: { channel: [c], high: { open: page }, info: { self_healed: none, users: false }, warning: { users_within: 30m } }\n",
        )
        .unwrap();
        let c = config.escalation["default"].communication.clone().unwrap();
        assert_eq!(c.ack_within, Dur::secs(900));
        assert_eq!(c.rto_shares, [50, 80]);
        assert_eq!(c.for_severity("critical").open, OnOpen::Page);
        assert_eq!(c.for_severity("high").open, OnOpen::Page);
        assert_eq!(c.for_severity("warning").open, OnOpen::Channel);
        assert_eq!(c.for_severity("info").self_healed, OnSelfHealed::None);
        assert_eq!(c.for_severity("warning").self_healed, OnSelfHealed::Fyi);
        assert_eq!(c.timeline_link(7), "`medic report 7`");
        assert_eq!(c.resolution_after, Dur::secs(0));
        assert_eq!(c.postmortem_after, Dur::secs(86400));
        assert_eq!(c.report_link(7), "`medic report 7`");
        assert!(c.users.is_empty());
        assert_eq!(c.for_severity("critical").users_within, Dur::secs(3600));
        assert!(c.for_severity("critical").users);
        assert!(!c.for_severity("info").users);
        assert_eq!(c.for_severity("warning").users_within, Dur::secs(1800));
    }
}
