//! Checks: one way each to observe a target.
//!
//! A run gives [`Outcome::Ok`], [`Outcome::Failing`] (the target is broken)
//! or [`Outcome::Unknown`] (medic could not see). Keeping the last two apart
//! is the heart of the safety model: unknown never triggers remediation.
//!
//! [`CheckSpec`] is the closed set of kinds rule files may name, each with
//! its parameters; [`build`] turns one into a runnable [`Check`] or says that
//! this build cannot run that kind yet.

pub mod alert;
pub mod backup;
pub mod dns;
pub mod exposition;
pub mod http;
pub mod kubernetes;
pub mod postgres;
pub mod promql;
pub mod redis;
pub mod scrape;
pub mod source;
pub mod tcp;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::observe::{Observation, Outcome};

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

    /// Hands the check medic's store once it is open, for checks that read
    /// what medic itself records (`alert`: the alerts Alertmanager pushed).
    /// The default ignores it.
    fn attach_store(&self, _store: &Arc<dyn crate::store::Store>) {}
}

/// A check as written in a rule file: `check: { KIND: PARAMS }`.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckSpec {
    Tcp(tcp::TcpParams),
    Http(http::HttpParams),
    Redis(redis::RedisParams),
    Promql(promql::PromqlParams),
    Scrape(scrape::ScrapeParams),
    Postgres(postgres::PostgresParams),
    Kubernetes(kubernetes::KubernetesParams),
    Dns(dns::DnsParams),
    Alert(alert::AlertParams),
    Source(source::SourceParams),
    Backup(backup::BackupParams),
}

impl CheckSpec {
    /// Every kind a rule file may name.
    pub const KINDS: &'static [&'static str] = &[
        "tcp",
        "http",
        "redis",
        "promql",
        "scrape",
        "postgres",
        "kubernetes",
        "dns",
        "alert",
        "source",
        "backup",
    ];

    /// The kind's name as written in rule files.
    pub fn kind(&self) -> &'static str {
        match self {
            CheckSpec::Tcp(_) => "tcp",
            CheckSpec::Http(_) => "http",
            CheckSpec::Redis(_) => "redis",
            CheckSpec::Promql(_) => "promql",
            CheckSpec::Scrape(_) => "scrape",
            CheckSpec::Postgres(_) => "postgres",
            CheckSpec::Kubernetes(_) => "kubernetes",
            CheckSpec::Dns(_) => "dns",
            CheckSpec::Alert(_) => "alert",
            CheckSpec::Source(_) => "source",
            CheckSpec::Backup(_) => "backup",
        }
    }

    /// The config target this check observes, if it names one.
    pub fn target(&self) -> Option<&str> {
        match self {
            CheckSpec::Tcp(p) => p.target.as_deref(),
            CheckSpec::Http(p) => p.target.as_deref(),
            CheckSpec::Redis(p) => Some(&p.target),
            CheckSpec::Promql(p) => p.source.as_deref(),
            CheckSpec::Scrape(p) => p.target.as_deref(),
            CheckSpec::Postgres(p) => Some(&p.target),
            CheckSpec::Kubernetes(p) => Some(&p.target),
            CheckSpec::Source(p) => Some(&p.target),
            CheckSpec::Dns(_) | CheckSpec::Alert(_) | CheckSpec::Backup(_) => None,
        }
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
    match spec {
        CheckSpec::Tcp(p) => Ok(Arc::new(tcp::TcpCheck::build(p, config)?)),
        CheckSpec::Http(p) => Ok(Arc::new(http::HttpCheck::build(p, config)?)),
        CheckSpec::Redis(p) => Ok(Arc::new(redis::RedisCheck::build(p, config)?)),
        CheckSpec::Postgres(p) => Ok(Arc::new(postgres::PostgresCheck::build(
            p, timeout, config,
        )?)),
        CheckSpec::Dns(p) => Ok(Arc::new(dns::DnsCheck::build(p, timeout)?)),
        CheckSpec::Promql(p) => Ok(Arc::new(promql::PromqlCheck::build(p, timeout, config)?)),
        CheckSpec::Source(p) => Ok(Arc::new(source::SourceCheck::build(p, timeout, config)?)),
        CheckSpec::Scrape(p) => Ok(Arc::new(scrape::ScrapeCheck::build(p, timeout, config)?)),
        CheckSpec::Alert(p) => Ok(Arc::new(alert::AlertCheck::build(p, config)?)),
        CheckSpec::Kubernetes(p) => Ok(Arc::new(kubernetes::KubernetesCheck::build(
            p, timeout, config,
        )?)),
        CheckSpec::Backup(p) => Ok(Arc::new(backup::BackupCheck::build(p, config)?)),
    }
}
