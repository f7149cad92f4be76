//! `tcp`: can a TCP connection be opened?

use serde::Deserialize;

/// `check: { tcp: { target: NAME } }` or `{ tcp: { address: HOST:PORT } }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpParams {
    /// A config target with an address (tcp, redis, postgres).
    pub target: Option<String>,
    /// Or an address written inline.
    pub address: Option<String>,
}

/// Runtime form.
pub struct TcpCheck {}
impl TcpCheck {
    pub fn build(_p: &TcpParams, _c: &crate::config::Config) -> Result<Self, super::BuildError> {
        todo!()
    }
}
#[async_trait::async_trait]
impl super::Check for TcpCheck {
    async fn run(&self) -> super::Outcome {
        todo!()
    }
}
