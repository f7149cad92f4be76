//! `redis`: PING (and, later, role and a SET/GET/DEL round-trip).

use serde::Deserialize;

/// `check: { redis: { target: cache, ping: true } }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisParams {
    /// A config target of kind `redis`.
    pub target: String,
    /// Send PING and expect PONG (default true).
    #[serde(default = "yes")]
    pub ping: bool,
    /// Expected role from INFO replication (`master` or `slave`).
    pub role: Option<String>,
    /// The runbook's SET/GET/DEL round-trip on a medic-owned key.
    #[serde(default)]
    pub roundtrip: bool,
}

fn yes() -> bool {
    true
}

/// Runtime form.
pub struct RedisCheck {}
impl RedisCheck {
    pub fn build(_p: &RedisParams, _c: &crate::config::Config) -> Result<Self, super::BuildError> {
        todo!()
    }
}
#[async_trait::async_trait]
impl super::Check for RedisCheck {
    async fn run(&self) -> super::Outcome {
        todo!()
    }
}
