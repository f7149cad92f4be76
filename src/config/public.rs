//! `public_status:`, the public status page: its own listener, the
//! components users know (each an operator-declared set of scenarios and
//! targets), and the hosted status page (Atlassian Statuspage) that
//! mirrors it. Nothing else of medic is ever shown there: see
//! `src/server/public.rs` and docs/paging.md.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::duration::Dur;
use crate::secret::SecretRef;

/// The public status page.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicStatus {
    /// Its own listener: only the public page is served there (no API,
    /// no metrics, no internal status page), without credentials.
    pub listen: std::net::SocketAddr,
    /// TLS on that listener (as `http.tls`); without it, plain HTTP
    /// behind a TLS proxy.
    #[serde(default)]
    pub tls: Option<super::ListenerTls>,
    /// The page's heading (`KeneyApp status`).
    #[serde(default = "default_title")]
    pub title: String,
    /// How often a browser reloads the page. Default 30s.
    #[serde(default = "default_refresh")]
    pub refresh: Dur,
    /// Shown for an incident nobody wrote an update for yet;
    /// `{components}` is replaced by the affected components' names.
    #[serde(default = "default_message")]
    pub default_message: String,
    /// Shown when an incident is resolved; `{components}` as above.
    #[serde(default = "default_resolved")]
    pub resolved_message: String,
    /// How long a resolved incident stays listed. Default 24h.
    #[serde(default = "default_history")]
    pub history: Dur,
    /// The components users see, by their public name. An incident
    /// affects a component when its scenario is listed, or when one of its
    /// scenario's targets is.
    pub components: BTreeMap<String, Component>,
    /// Atlassian Statuspage, kept in step through the outbox.
    #[serde(default)]
    pub statuspage: Option<Statuspage>,
    /// Each scenario name of `components` with its place in the config
    /// (set by the loader): the rules loaded say which are unknown.
    #[serde(skip)]
    pub scenario_refs: Vec<(String, crate::diag::Diagnostic)>,
}

/// One public component: what affects it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Scenario names (rule files' `scenario:`).
    #[serde(default)]
    pub scenarios: Vec<String>,
    /// Config target names.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// Atlassian Statuspage's REST API (`/v1/pages/{page_id}/incidents`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statuspage {
    /// The page's id (Statuspage → API info).
    pub page_id: String,
    /// The API key, sent as `Authorization: OAuth KEY`.
    pub api_key: SecretRef,
    /// The API's base URL (tests point it at a local fake).
    #[serde(default = "default_statuspage_url")]
    pub url: String,
    /// Statuspage's component id of each public component (by public
    /// name); a component without one is not sent.
    #[serde(default)]
    pub components: BTreeMap<String, String>,
}

fn default_title() -> String {
    "Service status".into()
}
fn default_refresh() -> Dur {
    Dur::secs(30)
}
fn default_message() -> String {
    "We are investigating an issue affecting {components}. The next update will follow here.".into()
}
fn default_resolved() -> String {
    "This incident has been resolved: {components} is operating normally.".into()
}
fn default_history() -> Dur {
    Dur::secs(24 * 3600)
}
fn default_statuspage_url() -> String {
    "https://api.statuspage.io".into()
}

impl PublicStatus {
    /// The public components an incident of `scenario` (watching
    /// `targets`) affects, in name order.
    pub fn components_of(&self, scenario: &str, targets: &[String]) -> Vec<String> {
        self.components
            .iter()
            .filter(|(_, c)| {
                c.scenarios.iter().any(|s| s == scenario)
                    || c.targets.iter().any(|t| targets.contains(t))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// [`PublicStatus::default_message`] for these components.
    pub fn default_text(&self, components: &[String]) -> String {
        self.default_message
            .replace("{components}", &components.join(", "))
    }

    /// [`PublicStatus::resolved_message`] for these components.
    pub fn resolved_text(&self, components: &[String]) -> String {
        self.resolved_message
            .replace("{components}", &components.join(", "))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn components_are_matched_by_scenario_or_target() {
        let config = crate::config::load_str(
            "medic.yaml",
            "targets: { db: { tcp: { address: \"127.0.0.1:5432\" } } }\n\
             public_status:\n  listen: 127.0.0.1:0\n  components:\n    Portal: { scenarios: [app-down] }\n    Records: { targets: [db] }\n",
        )
        .unwrap();
        let p = config.public_status.unwrap();
        assert_eq!(p.components_of("app-down", &[]), ["Portal"]);
        assert_eq!(
            p.components_of("app-down", &["db".into()]),
            ["Portal", "Records"]
        );
        assert!(p.components_of("other", &["cache".into()]).is_empty());
        assert_eq!(
            p.default_text(&["Portal".into(), "Records".into()]),
            "We are investigating an issue affecting Portal, Records. The next update will follow here."
        );
    }

    #[test]
    fn problems_are_reported_at_their_place() {
        let text = "\
http: { listen: \"127.0.0.1:7460\" }
targets: { db: { tcp: { address: \"127.0.0.1:5432\" } } }
public_status:
  listen: 127.0.0.1:7460
  components:
    Portal: { targets: [dbb] }
    Empty: {}
  statuspage:
    page_id: \"p/1\"
    api_key: { env: SP }
    components: { Portl: abc }
";
        let errors: Vec<String> = crate::config::load_str("medic.yaml", text)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "medic.yaml:4:11: 127.0.0.1:7460 is http.listen too: the public page needs a listener of its own",
                "medic.yaml:6:25: unknown target \"dbb\" (did you mean \"db\"?)",
                "medic.yaml:7:12: a component needs `scenarios` or `targets` (what affects it)",
                "medic.yaml:9:14: page_id must be Statuspage's page id (letters and digits)",
                "medic.yaml:11:26: unknown component \"Portl\" (did you mean \"Portal\"?)",
            ]
        );
    }
}
