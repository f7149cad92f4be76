//! `route53.failover`: repoint a DNS record to the secondary target.

use serde::Deserialize;

use crate::duration::Dur;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverParams {
    /// A config target of kind `route53`.
    pub target: String,
    /// How long to wait for INSYNC.
    pub within: Option<Dur>,
}
