//! Remediation: actions, their guards, and the plan executor.
//!
//! [`ActionSpec`] is the closed set of action kinds a plan step may name,
//! each with its parameters; [`build`] turns one into a runnable [`Action`]
//! or says this build cannot run that kind yet. The plan executor
//! ([`plan`]) wraps every attempt in guards (limits, cooldown, mode),
//! records it in the ledger, then verifies it.

pub mod exec;
pub mod k8s;
pub mod plan;
pub mod postgres;
pub mod redis_flush;
pub mod route53;
pub mod systemd;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// An action as written in a plan step (its parameters sit beside `action:`).
#[derive(Clone, Debug, PartialEq)]
pub enum ActionSpec {
    Exec(exec::ExecParams),
    SystemdRestart(systemd::SystemdRestartParams),
    K8sRolloutRestart(k8s::RolloutRestartParams),
    K8sRolloutUndo(k8s::RolloutUndoParams),
    K8sSetEnv(k8s::SetEnvParams),
    K8sScale(k8s::ScaleParams),
    RedisFlush(redis_flush::RedisFlushParams),
    PostgresPromoteReplica(postgres::PromoteReplicaParams),
    PostgresQuarantine(postgres::QuarantineParams),
    Route53Failover(route53::FailoverParams),
}

impl ActionSpec {
    /// Every kind a rule file may name.
    pub const KINDS: &'static [&'static str] = &[
        "exec",
        "systemd-restart",
        "k8s.rollout-restart",
        "k8s.rollout-undo",
        "k8s.set-env",
        "k8s.scale",
        "redis.flush",
        "postgres.promote-replica",
        "postgres.quarantine",
        "route53.failover",
    ];

    /// The kind's name as written in rule files.
    pub fn kind(&self) -> &'static str {
        match self {
            ActionSpec::Exec(_) => "exec",
            ActionSpec::SystemdRestart(_) => "systemd-restart",
            ActionSpec::K8sRolloutRestart(_) => "k8s.rollout-restart",
            ActionSpec::K8sRolloutUndo(_) => "k8s.rollout-undo",
            ActionSpec::K8sSetEnv(_) => "k8s.set-env",
            ActionSpec::K8sScale(_) => "k8s.scale",
            ActionSpec::RedisFlush(_) => "redis.flush",
            ActionSpec::PostgresPromoteReplica(_) => "postgres.promote-replica",
            ActionSpec::PostgresQuarantine(_) => "postgres.quarantine",
            ActionSpec::Route53Failover(_) => "route53.failover",
        }
    }
}

/// What an action needs to know about the attempt it runs in.
#[derive(Clone, Debug)]
pub struct ActionContext {
    /// Unique per attempt; actions that talk to APIs pass it on where they can.
    pub key: String,
    /// Cancelled when the daemon must stop now (grace period over).
    pub cancel: CancellationToken,
    /// How long the action may run; it must stop (and clean up) by then.
    pub timeout: std::time::Duration,
}

/// What an action reports.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionResult {
    /// Whether the action itself succeeded (verification comes after).
    pub ok: bool,
    /// One line for the timeline: exit status, API answer, refusal reason.
    pub detail: String,
    /// Structured output for the timeline (captured output, row counts...).
    pub data: serde_json::Value,
}

/// An executor of one action kind.
#[async_trait::async_trait]
pub trait Action: Send + Sync {
    /// What it would do, for dry-run and the timeline ("would run ...").
    fn describe(&self) -> String;
    /// Its inputs for the ledger (never secrets).
    fn inputs(&self) -> serde_json::Value;
    /// Runs it once. The executor enforces the step's timeout around this.
    async fn run(&self, ctx: &ActionContext) -> ActionResult;
}

/// Why an action could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("action kind {0:?} is not implemented in this build of medic")]
    NotImplemented(&'static str),
    #[error("{0}")]
    Invalid(String),
}

/// Builds a runnable action from its spec and the config's targets.
pub fn build(spec: &ActionSpec, _config: &Config) -> Result<Arc<dyn Action>, BuildError> {
    match spec {
        ActionSpec::Exec(p) => Ok(Arc::new(exec::ExecAction::build(p)?)),
        other => Err(BuildError::NotImplemented(other.kind())),
    }
}
