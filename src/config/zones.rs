//! `zones:`: groups of targets that fail together (a region, a data
//! center, a network), each with optional vantage probes: how medic tells a
//! silent target from its own blindness (see `check::vantage`).
//!
//! ```yaml
//! zones:
//!   primary:
//!     targets: [app, db, db-replica, cache]
//!     vantage:                       # medic's own path into the zone
//!       - tcp: 10.0.0.1:22           # a gateway or peer: any answer, even refused
//!       - dns: { server: 10.0.0.53, name: keneyapp.internal. }
//!     every: 10s                     # the probes' interval (default 10s)
//!     timeout: 2s                    # and their bound (default 2s)
//!   secondary:
//!     targets: [db-secondary]
//! ```

use serde::Deserialize;

use crate::duration::Dur;

/// One zone: its targets and the probes of medic's path into it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Config targets in this zone (a target is in at most one zone).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Probes that answer when medic's path into the zone works, whatever
    /// its targets do.
    #[serde(default)]
    pub vantage: Vec<VantageProbe>,
    /// How often each probe runs.
    #[serde(default = "default_every")]
    pub every: Dur,
    /// How long a probe may take before it counts as silent.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
}

fn default_every() -> Dur {
    Dur::secs(10)
}

fn default_timeout() -> Dur {
    Dur::secs(2)
}

/// A vantage probe: any answer counts (a refused connection, NXDOMAIN);
/// only silence (a timeout, no route) does not.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum VantageProbe {
    /// A TCP connect to `HOST:PORT` (a gateway, a peer, a bastion).
    Tcp(String),
    /// A DNS query for `name` to `server` (`IP` or `IP:PORT`).
    Dns(DnsProbe),
}

/// `dns: { server: IP[:PORT], name: NAME }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsProbe {
    pub server: String,
    pub name: String,
}

impl VantageProbe {
    /// How the probe is named on timelines (`tcp 10.0.0.1:22`).
    pub fn describe(&self) -> String {
        match self {
            VantageProbe::Tcp(a) => format!("tcp {a}"),
            VantageProbe::Dns(d) => format!("dns {} at {}", d.name, d.server),
        }
    }
}
