//! Checks: one way each to observe a target.
//!
//! A run gives [`Outcome::Ok`], [`Outcome::Failing`] (the target is broken),
//! [`Outcome::Unreachable`] (the target is silent: a timeout, no route) or
//! [`Outcome::Unknown`] (medic could not see). Keeping the last two apart
//! is the heart of the safety model: unknown never triggers remediation.
//! A check's unreachable is a candidate: only the engine, which sees every
//! target and medic's vantage probes, can tell a silent target from a
//! blind medic ([`vantage`]).
//!
//! [`CheckSpec`] is the closed set of kinds rule files may name, each with
//! its parameters; [`build`] turns one into a runnable [`Check`] or says that
//! this build cannot run that kind yet.

pub mod alert;
pub mod backup;
pub mod config;
pub mod dns;
pub mod docker;
pub mod exposition;
pub mod http;
pub mod kubernetes;
pub mod postgres;
pub mod promql;
pub mod redis;
pub mod scrape;
pub mod source;
pub mod tcp;
pub mod vantage;

use std::sync::Arc;
use std::time::Duration;

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;

use crate::config::Config;
use crate::config::refs::Refs;
use crate::features::Feature;
use crate::observe::{Observation, Outcome};
use crate::yaml::{Cursor, is_null, key_pos, pos, unknown_field};

/// One way to observe a target. Implementations must honour cancellation
/// by being cancel-safe (the scheduler drops the future on timeout).
#[async_trait::async_trait]
pub trait Check: Send + Sync {
    /// Observes once.
    async fn run(&self) -> Outcome;

    /// Observes once, per series. Checks over many series override this
    /// (and [`Check::per_series`]); the default wraps [`Check::run`].
    async fn observe(&self) -> Observation {
        Observation::Whole(self.run().await)
    }

    /// Whether [`Check::observe`] reports series (one symptom instance and
    /// one incident per label set) rather than one outcome.
    fn per_series(&self) -> bool {
        false
    }

    /// Resolves when the check learns between runs that its target may
    /// have changed (a held connection dropped): the scheduler then runs it
    /// at once instead of waiting for the next tick. Must be cancel-safe.
    /// The default never resolves.
    async fn lost(&self) {
        std::future::pending::<()>().await
    }

    /// What a run the scheduler dropped after `after` (the symptom's
    /// timeout) means. The default, for checks through a monitoring source
    /// (Prometheus, the Kubernetes API, medic's store), is unknown: medic's
    /// own blindness. Checks of a target (`tcp`, `http`, `postgres`,
    /// `redis`, `dns` with a `server`) say [`Outcome::Unreachable`]
    /// instead ([`silent`]): a *candidate* the engine's vantage judgement
    /// keeps or turns into unknown.
    fn timed_out(&self, after: Duration) -> Outcome {
        Outcome::Unknown(format!(
            "timed out after {}",
            humantime::format_duration(after)
        ))
    }

    /// Hands the check medic's store once it is open, for checks that read
    /// what medic itself records (`alert`: the alerts Alertmanager pushed).
    /// The default ignores it.
    fn attach_store(&self, _store: &Arc<dyn crate::store::Store>) {}

    /// Hands the check medic's vantage judgement (`vantage`: failing while
    /// medic is blind). The default ignores it.
    fn attach_vantage(&self, _vantage: &Arc<vantage::Vantage>) {}
}

/// A target that gave no answer within `after`: a candidate unreachable
/// (see [`Check::timed_out`]).
pub fn silent(what: &str, after: Duration) -> Outcome {
    Outcome::Unreachable(format!(
        "{what}: no answer within {}",
        humantime::format_duration(after)
    ))
}

/// Restart-count samples of one container, oldest first.
pub(crate) type Samples = std::collections::VecDeque<(tokio::time::Instant, i64)>;

/// Records `count` at `now` and returns the restarts within `window`: the
/// growth since the last sample at or before the window's start. Without
/// such a sample, a pod (container) started inside the window counts from 0,
/// an older one from the oldest sample (a lower bound). Shared by the
/// `kubernetes` and `docker` checks' `max_restarts` in a `window`.
pub(crate) fn restarts_in_window(
    samples: &mut Samples,
    now: tokio::time::Instant,
    count: i64,
    window: Duration,
    started_inside: bool,
) -> i64 {
    samples.push_back((now, count));
    let cutoff = now.checked_sub(window);
    if let Some(cutoff) = cutoff {
        while samples.len() >= 2 && samples[1].0 <= cutoff {
            samples.pop_front();
        }
    }
    let (first_at, first_count) = samples[0];
    let covers_window = cutoff.is_some_and(|c| first_at <= c);
    let baseline = if !covers_window && started_inside {
        0
    } else {
        first_count
    };
    (count - baseline).max(0)
}

/// One check kind's parameters (`check: { KIND: PARAMS }`): each kind's
/// file says what serde cannot check about them, which target they
/// observe, and how they build the runnable [`Check`].
pub(crate) trait CheckKind {
    /// `{ KIND: SCALAR }` as the parameter mapping it stands for (`None`:
    /// the kind has no shorthand; the scalar is then an error from serde).
    fn shorthand(_scalar: &Node) -> Option<Node>
    where
        Self: Sized,
    {
        None
    }

    /// The Cargo feature the kind's runtime needs (`None`: always built).
    fn feature() -> Option<Feature>
    where
        Self: Sized,
    {
        None
    }

    /// Reports what is wrong beyond the parameters' shape, each problem at
    /// its position in `p` (the parameter block as written).
    fn validate(&self, v: &mut Refs, p: &Node);

    /// The config target this check observes, if it names one.
    fn target(&self) -> Option<&str> {
        None
    }

    /// The runnable check; `timeout` as in [`build`].
    fn build(&self, timeout: Duration, config: &Config) -> Result<Arc<dyn Check>, BuildError>;
}

/// The check kinds, written once: the enum, its names (for parsing, the
/// kind list and did-you-mean) and its dispatch all come from this list.
macro_rules! check_kinds {
    ($($name:literal => $variant:ident($params:ty),)*) => {
        /// A check as written in a rule file: `check: { KIND: PARAMS }`.
        #[derive(Clone, Debug, PartialEq)]
        pub enum CheckSpec {
            $($variant($params),)*
        }

        impl CheckSpec {
            /// Every kind a rule file may name.
            pub const KINDS: &'static [&'static str] = &[$($name),*];

            /// The kind's name as written in rule files.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(CheckSpec::$variant(_) => $name,)*
                }
            }

            fn params(&self) -> &dyn CheckKind {
                match self {
                    $(CheckSpec::$variant(p) => p,)*
                }
            }

            /// The Cargo feature kind `kind` needs, if any.
            pub fn feature(kind: &str) -> Option<Feature> {
                match kind {
                    $($name => <$params as CheckKind>::feature(),)*
                    _ => None,
                }
            }

            /// The parameters of kind `kind` read from `v` (shorthand
            /// expanded), and the parameter block they were read from.
            fn read(kind: &str, v: &Node, y: &mut Cursor) -> Option<(CheckSpec, Node)> {
                match kind {
                    $($name => {
                        let p = expand::<$params>(v);
                        let spec = CheckSpec::$variant(y.params(&p, &[])?);
                        Some((spec, p))
                    })*
                    _ => None,
                }
            }
        }
    };
}

check_kinds! {
    "tcp" => Tcp(tcp::TcpParams),
    "http" => Http(http::HttpParams),
    "redis" => Redis(redis::RedisParams),
    "promql" => Promql(promql::PromqlParams),
    "scrape" => Scrape(scrape::ScrapeParams),
    "postgres" => Postgres(postgres::PostgresParams),
    "kubernetes" => Kubernetes(kubernetes::KubernetesParams),
    "dns" => Dns(dns::DnsParams),
    "alert" => Alert(alert::AlertParams),
    "source" => Source(source::SourceParams),
    "backup" => Backup(backup::BackupParams),
    "vantage" => Vantage(vantage::VantageParams),
    "docker" => Docker(docker::DockerParams),
    "config" => Config(config::ConfigParams),
}

impl CheckSpec {
    /// The config target this check observes, if it names one.
    pub fn target(&self) -> Option<&str> {
        self.params().target()
    }

    /// Reads `check: { KIND: PARAMS }` and validates it; every problem is
    /// reported at its position.
    pub(crate) fn parse(v: &mut Refs, node: &Node) -> Option<CheckSpec> {
        let m = v.mapping(
            node,
            &format!(
                "`{{ KIND: {{ ...parameters... }} }}` with KIND one of {}",
                CheckSpec::KINDS.join(", ")
            ),
        )?;
        let mut entries = m.iter();
        let Some((k, kv)) = entries.next() else {
            v.err(
                pos(node),
                format!(
                    "a check needs a kind: one of {}",
                    CheckSpec::KINDS.join(", ")
                ),
            );
            return None;
        };
        if let Some((k2, _)) = entries.next() {
            v.err(
                key_pos(k2),
                format!(
                    "a check has exactly one kind; found {:?} and {:?}",
                    k.as_str(),
                    k2.as_str()
                ),
            );
            return None;
        }
        let kind = k.as_str();
        if !CheckSpec::KINDS.contains(&kind) {
            v.err(key_pos(k), unknown_field("check", kind, CheckSpec::KINDS));
            return None;
        }
        // Refused in a build without the kind's feature; its parameters
        // are still read, so every other mistake is reported too.
        let missing = CheckSpec::feature(kind)
            .and_then(|f| f.missing_for(&format!("check `{kind}`")))
            .map(|why| v.err(key_pos(k), why))
            .is_some();
        let (spec, p) = CheckSpec::read(kind, kv, v.y)?;
        (spec.validate(v, &p) && !missing).then_some(spec)
    }

    /// Validates parameters built elsewhere (from a Prometheus rule) or
    /// read by [`CheckSpec::parse`], reporting at `p`; whether they are
    /// valid.
    pub(crate) fn validate(&self, v: &mut Refs, p: &Node) -> bool {
        let before = v.out.len();
        self.params().validate(v, p);
        v.out.len() == before
    }
}

/// A kind's parameter block: null is no parameters, a scalar may be the
/// kind's shorthand.
fn expand<T: CheckKind>(v: &Node) -> Node {
    if is_null(v) {
        return Node::Mapping(MarkedMappingNode::new_empty(*v.span()));
    }
    match v {
        Node::Scalar(_) => T::shorthand(v).unwrap_or_else(|| v.clone()),
        _ => v.clone(),
    }
}

/// Why a check could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("check kind {0:?} is not implemented in this build of medic")]
    NotImplemented(&'static str),
    #[error("{0}")]
    Invalid(String),
}

/// Builds a runnable check from its spec and the config's targets.
/// `timeout` is the symptom's: the scheduler drops a run after it, and
/// checks that can (PostgreSQL's `statement_timeout`, connect timeouts)
/// pass it on so the far side stops working when medic stops waiting.
pub fn build(
    spec: &CheckSpec,
    timeout: Duration,
    config: &Config,
) -> Result<Arc<dyn Check>, BuildError> {
    spec.params().build(timeout, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn restarts_counted_within_the_window() {
        let w = Duration::from_secs(600);
        let mut s = VecDeque::new();
        let t0 = Instant::now();
        // An old pod first seen with 7 restarts: those are not counted.
        assert_eq!(restarts_in_window(&mut s, t0, 7, w, false), 0);
        let t = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(restarts_in_window(&mut s, t(60), 9, w, false), 2);
        assert_eq!(restarts_in_window(&mut s, t(300), 12, w, false), 5);
        // At 660 s the window starts at 60 s: the sample there (9) is the
        // baseline.
        assert_eq!(restarts_in_window(&mut s, t(660), 12, w, false), 3);
        // At 960 s the window starts at 360 s: baseline 12 (sample at 300).
        assert_eq!(restarts_in_window(&mut s, t(960), 13, w, false), 1);
        assert!(s.len() <= 3, "old samples are dropped: {s:?}");
        // A pod that started inside the window counts all its restarts.
        let mut fresh = VecDeque::new();
        assert_eq!(restarts_in_window(&mut fresh, t(0), 4, w, true), 4);
    }
}
