//! `dns`: a name resolves, optionally to expected addresses.

use serde::Deserialize;

/// `check: { dns: { name: example.com, expect: [192.0.2.1] } }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsParams {
    pub name: String,
    #[serde(default)]
    pub expect: Vec<String>,
}
