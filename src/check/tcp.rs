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

use std::io::ErrorKind;

use tokio::net::TcpStream;

use super::{BuildError, Check};
use crate::config::Config;
use crate::observe::Outcome;

/// A runnable `tcp` check.
#[derive(Debug)]
pub struct TcpCheck {
    address: String,
}

impl TcpCheck {
    pub fn build(p: &TcpParams, config: &Config) -> Result<Self, BuildError> {
        let address = match (&p.address, &p.target) {
            (Some(a), None) => a.clone(),
            (None, Some(t)) => config
                .targets
                .get(t)
                .and_then(|t| t.address())
                .ok_or_else(|| BuildError::Invalid(format!("target {t:?} has no address")))?,
            _ => {
                return Err(BuildError::Invalid(
                    "tcp needs exactly one of `address` or `target`".into(),
                ));
            }
        };
        Ok(TcpCheck { address })
    }
}

#[async_trait::async_trait]
impl Check for TcpCheck {
    async fn run(&self) -> Outcome {
        match TcpStream::connect(&self.address).await {
            Ok(_) => Outcome::Ok,
            Err(e) => classify_io(&self.address, &e),
        }
    }

    fn timed_out(&self, after: std::time::Duration) -> Outcome {
        super::silent(&self.address, after)
    }
}

/// A refused or reset connection is evidence that the target is broken;
/// a timeout or no route is a silent target (a candidate unreachable: the
/// engine's vantage judgement decides); anything else (name resolution)
/// may be medic's own view.
pub(crate) fn classify_io(address: &str, e: &std::io::Error) -> Outcome {
    match e.kind() {
        ErrorKind::ConnectionRefused => Outcome::Failing(format!("{address}: connection refused")),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::UnexpectedEof => {
            Outcome::Failing(format!("{address}: connection reset ({e})"))
        }
        ErrorKind::TimedOut => Outcome::Unreachable(format!("{address}: timed out")),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
            Outcome::Unreachable(format!("{address}: no route ({e})"))
        }
        _ => Outcome::Unknown(format!("{address}: {e}")),
    }
}

impl super::CheckKind for TcpParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::{field_pos, pos};
        match (&self.target, &self.address) {
            (Some(name), None) => v.target(p, "target", name, TCP_KINDS, "a tcp check"),
            (None, Some(addr)) => {
                if !is_host_port(addr) {
                    v.err(
                        field_pos(p, "address"),
                        format!("address {addr:?} must be HOST:PORT"),
                    );
                }
            }
            (None, None) => v.err(pos(p), "a tcp check needs `target` or `address`"),
            (Some(_), Some(_)) => v.err(
                field_pos(p, "address"),
                "a tcp check takes `target` or `address`, not both",
            ),
        }
    }

    fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    fn build(
        &self,
        _timeout: std::time::Duration,
        config: &Config,
    ) -> Result<std::sync::Arc<dyn Check>, BuildError> {
        Ok(std::sync::Arc::new(TcpCheck::build(self, config)?))
    }
}

/// Target kinds with an address (see `TargetConfig::address`).
const TCP_KINDS: &[&str] = &["tcp", "redis", "postgres", "http", "prometheus"];

fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(address: String) -> TcpCheck {
        TcpCheck::build(
            &TcpParams {
                target: None,
                address: Some(address),
            },
            &Config::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn open_port_is_ok_closed_port_is_failing() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        assert_eq!(check(addr.clone()).run().await, Outcome::Ok);
        drop(l);
        assert_eq!(
            check(addr.clone()).run().await,
            Outcome::Failing(format!("{addr}: connection refused"))
        );
    }

    /// A timeout or no route is the target's silence (a candidate for the
    /// vantage judgement), never the blind "unknown" it once was.
    #[test]
    fn timeouts_and_no_route_are_candidate_unreachable() {
        use std::io::Error;
        for kind in [
            ErrorKind::TimedOut,
            ErrorKind::HostUnreachable,
            ErrorKind::NetworkUnreachable,
        ] {
            let o = classify_io("10.0.0.1:5432", &Error::from(kind));
            assert_eq!(o.label(), "unreachable", "{kind:?}: {o:?}");
            assert!(o.is_failing());
        }
        let c = check("10.0.0.1:5432".into());
        assert_eq!(
            c.timed_out(std::time::Duration::from_millis(1500)),
            Outcome::Unreachable("10.0.0.1:5432: no answer within 1s 500ms".into())
        );
    }

    #[tokio::test]
    async fn unresolvable_name_is_unknown() {
        let o = check("no-such-host.invalid:80".into()).run().await;
        assert_eq!(o.label(), "unknown", "{o:?}");
    }
}
