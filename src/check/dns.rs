//! `dns`: a name resolves, optionally to expected addresses.
//!
//! Asks the configured `server` (default: the name servers of
//! `/etc/resolv.conf`) for A and AAAA records on every run: no cache, no
//! `/etc/hosts`, so a failover shows as soon as the server answers it.
//!
//! | seen | outcome |
//! | --- | --- |
//! | addresses (equal to `expect`, per address family named there) | ok |
//! | other addresses than `expect` | failing |
//! | NXDOMAIN, an empty answer, SERVFAIL (the zone's servers fail) | failing |
//! | no answer in time from the `server` named (the server is silent) | unreachable (a candidate: unknown when medic is blind) |
//! | no answer in time from the system's resolvers, REFUSED (the server will not serve medic), network errors | unknown |

use serde::Deserialize;

/// `check: { dns: { name: example.com, expect: [192.0.2.1] } }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsParams {
    /// The name to resolve (a trailing dot makes it absolute; otherwise
    /// resolv.conf's search domains may apply).
    pub name: String,
    /// Expected addresses. The answers of each address family named here
    /// must be exactly these (IPv6 answers are ignored when only IPv4
    /// addresses are expected, and the reverse).
    #[serde(default)]
    pub expect: Vec<String>,
    /// The DNS server to ask: `IP` or `IP:PORT` (port 53 by default).
    /// Default: the system's name servers.
    pub server: Option<String>,
}

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::{TokioResolver, net::runtime::TokioRuntimeProvider};

use super::{BuildError, Check};
use crate::observe::Outcome;

/// A runnable `dns` check.
pub struct DnsCheck {
    name: String,
    expect: BTreeSet<IpAddr>,
    resolver: TokioResolver,
    /// The `server` named, if any: its silence is the target's
    /// (unreachable); the system resolvers' silence is medic's (unknown).
    server: Option<String>,
}

impl std::fmt::Debug for DnsCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsCheck")
            .field("name", &self.name)
            .finish()
    }
}

/// `IP` or `IP:PORT` (`[v6]:PORT`).
pub fn parse_server(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

impl DnsCheck {
    pub fn build(p: &DnsParams, timeout: Duration) -> Result<Self, BuildError> {
        let expect = p
            .expect
            .iter()
            .map(|a| {
                a.parse::<IpAddr>()
                    .map_err(|_| BuildError::Invalid(format!("{a:?} is not an IP address")))
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let provider = TokioRuntimeProvider::default();
        let mut builder = match &p.server {
            Some(s) => {
                let addr = parse_server(s).ok_or_else(|| {
                    BuildError::Invalid(format!("dns server {s:?} is not IP or IP:PORT"))
                })?;
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    provider,
                )
            }
            None => TokioResolver::builder(provider).map_err(|e| {
                BuildError::Invalid(format!("reading the system's DNS config: {e}"))
            })?,
        };
        let o = builder.options_mut();
        o.timeout = timeout;
        o.attempts = 1;
        o.cache_size = 0;
        o.use_hosts_file = ResolveHosts::Never;
        o.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let resolver = builder
            .build()
            .map_err(|e| BuildError::Invalid(format!("dns resolver: {e}")))?;
        Ok(DnsCheck {
            name: p.name.clone(),
            expect,
            resolver,
            server: p.server.clone(),
        })
    }

    fn judge(&self, got: BTreeSet<IpAddr>) -> Outcome {
        let n = &self.name;
        if got.is_empty() {
            return Outcome::Failing(format!("{n}: no A or AAAA records"));
        }
        if self.expect.is_empty() {
            return Outcome::Ok;
        }
        let v4 = self.expect.iter().any(IpAddr::is_ipv4);
        let v6 = self.expect.iter().any(IpAddr::is_ipv6);
        let compared: BTreeSet<IpAddr> = got
            .iter()
            .copied()
            .filter(|a| (a.is_ipv4() && v4) || (a.is_ipv6() && v6))
            .collect();
        if compared == self.expect {
            Outcome::Ok
        } else {
            Outcome::Failing(format!(
                "{n}: resolves to {}, expected {}",
                list(&got),
                list(&self.expect)
            ))
        }
    }
}

fn list(s: &BTreeSet<IpAddr>) -> String {
    s.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait::async_trait]
impl Check for DnsCheck {
    async fn run(&self) -> Outcome {
        match self.resolver.lookup_ip(self.name.as_str()).await {
            Ok(found) => self.judge(found.iter().collect()),
            Err(e) => match (classify(&self.name, &e), &self.server) {
                (Outcome::Unknown(d), Some(s)) if matches!(e, NetError::Timeout) => {
                    Outcome::Unreachable(format!("{d} from {s}"))
                }
                (o, _) => o,
            },
        }
    }

    fn timed_out(&self, after: Duration) -> Outcome {
        match &self.server {
            Some(s) => super::silent(&format!("{}: server {s}", self.name), after),
            None => Outcome::Unknown(format!(
                "{}: the system's resolvers gave no answer within {}",
                self.name,
                humantime::format_duration(after)
            )),
        }
    }
}

fn classify(n: &str, e: &NetError) -> Outcome {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => match nr.response_code {
            ResponseCode::NXDomain => Outcome::Failing(format!("{n}: NXDOMAIN (no such name)")),
            ResponseCode::NoError => Outcome::Failing(format!("{n}: no A or AAAA records")),
            ResponseCode::ServFail => Outcome::Failing(format!("{n}: SERVFAIL")),
            ResponseCode::Refused => Outcome::Unknown(format!("{n}: REFUSED by the server")),
            code => Outcome::Unknown(format!("{n}: no records ({code})")),
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            Outcome::Failing(format!("{n}: SERVFAIL"))
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => {
            Outcome::Unknown(format!("{n}: REFUSED by the server"))
        }
        NetError::Timeout => Outcome::Unknown(format!("{n}: no answer in time")),
        other => Outcome::Unknown(format!("{n}: {other}")),
    }
}

impl super::CheckKind for DnsParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::{field_pos, item_pos};
        v.non_empty(p, "name", &self.name);
        if let Some(server) = &self.server
            && parse_server(server).is_none()
        {
            v.err(
                field_pos(p, "server"),
                format!("server {server:?} must be IP or IP:PORT"),
            );
        }
        for (i, a) in self.expect.iter().enumerate() {
            if a.parse::<IpAddr>().is_err() {
                v.err(
                    item_pos(p, "expect", i),
                    format!("{a:?} is not an IP address"),
                );
            }
        }
    }

    fn build(
        &self,
        timeout: Duration,
        _config: &crate::config::Config,
    ) -> Result<std::sync::Arc<dyn Check>, BuildError> {
        Ok(std::sync::Arc::new(DnsCheck::build(self, timeout)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(expect: &[&str]) -> DnsCheck {
        DnsCheck::build(
            &DnsParams {
                name: "app.test.".into(),
                expect: expect.iter().map(|s| s.to_string()).collect(),
                server: Some("127.0.0.1:9".into()),
            },
            Duration::from_secs(1),
        )
        .unwrap()
    }

    fn ips(s: &[&str]) -> BTreeSet<IpAddr> {
        s.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn expected_addresses_compare_per_family() {
        let c = check(&["192.0.2.1", "192.0.2.2"]);
        assert_eq!(c.judge(ips(&["192.0.2.2", "192.0.2.1"])), Outcome::Ok);
        assert_eq!(
            c.judge(ips(&["192.0.2.1", "2001:db8::1", "192.0.2.2"])),
            Outcome::Ok,
            "IPv6 answers are not compared when only IPv4 is expected"
        );
        assert_eq!(
            c.judge(ips(&["192.0.2.1"])),
            Outcome::Failing(
                "app.test.: resolves to 192.0.2.1, expected 192.0.2.1, 192.0.2.2".into()
            )
        );
        assert_eq!(
            c.judge(ips(&["198.51.100.7", "192.0.2.1", "192.0.2.2"]))
                .label(),
            "failing"
        );
        assert_eq!(check(&[]).judge(ips(&["203.0.113.9"])), Outcome::Ok);
    }

    #[test]
    fn server_addresses() {
        assert_eq!(
            parse_server("10.0.0.2"),
            Some("10.0.0.2:53".parse().unwrap())
        );
        assert_eq!(
            parse_server("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(parse_server("[::1]:53"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(parse_server("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(parse_server("dns.example"), None);
    }
}
