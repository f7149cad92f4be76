//! `alert`: alerts pushed by Prometheus Alertmanager to medic's webhook.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `check: { alert: { matchers: { alertname: RedisDown } } }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertParams {
    /// Label equality matchers; a firing alert matching all is failing.
    pub matchers: BTreeMap<String, String>,
}
