//! Remediation actions: one file per action kind.
//!
//! [`ActionSpec`] is the closed set of action kinds a plan step may name,
//! each with its parameters; [`build`] turns one into a runnable [`Action`]
//! or says this build cannot run that kind yet. An action reports its own
//! preconditions as [`Gate`]s; the plan executor that wraps every attempt
//! in guards, records it and verifies it is [`crate::engine::plan`].

pub mod docker;
pub mod exec;
pub mod k8s;
pub mod pg_fence;
pub mod pg_restart;
pub mod pg_restore;
pub mod postgres;
pub mod redis_flush;
pub mod route53;
pub mod systemd;
pub mod template;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use marked_yaml::Node;

use crate::config::Config;
use crate::config::refs::Refs;
use crate::features::Feature;
use crate::observe::SymptomObservation;
use crate::store::prelude::*;
use crate::yaml::{self, Cursor};

/// One action kind's parameters (they sit beside `action:` in a plan
/// step): each kind's file says what serde cannot check about them, which
/// targets they act on, and how they build the runnable [`Action`].
pub(crate) trait ActionKind {
    /// The Cargo feature the kind's runtime needs (`None`: always built).
    fn feature() -> Option<Feature>
    where
        Self: Sized,
    {
        None
    }

    /// Reports what is wrong beyond the parameters' shape, each problem at
    /// its position in `p` (the step's parameter keys).
    fn validate(&self, v: &mut Refs, p: &Node);

    /// The config targets it acts on (maintenance windows name them).
    fn targets(&self) -> Vec<String> {
        Vec::new()
    }

    /// The parameters that expand `${labels.NAME}` (see [`template`]);
    /// `${` in any other is refused when the rule file is loaded.
    fn expands() -> &'static [&'static str]
    where
        Self: Sized,
    {
        &[]
    }

    /// Why these parameters may only run after a human approved
    /// (`approval: required`); `None`: no such rule. The rule loader
    /// refuses the step without it.
    fn requires_approval(&self) -> Option<&'static str> {
        None
    }

    /// Why the config lets this action do nothing at all (e.g. a restart
    /// in place of a server with no restart method): the step is then
    /// skipped, on the timeline, as a step that did not work, so a
    /// fallback runs. `None`: it can run.
    fn unconfigured(&self, _config: &Config) -> Option<String> {
        None
    }

    /// The runnable action.
    fn build(&self, config: &Config) -> Result<Arc<dyn Action>, BuildError>;
}

/// The action kinds, written once: the enum, its names (for parsing, the
/// kind list and did-you-mean) and its dispatch all come from this list.
macro_rules! action_kinds {
    ($($name:literal => $variant:ident($params:ty),)*) => {
        /// An action as written in a plan step (its parameters sit beside `action:`).
        #[derive(Clone, Debug, PartialEq)]
        pub enum ActionSpec {
            $($variant($params),)*
        }

        impl ActionSpec {
            /// Every kind a rule file may name.
            pub const KINDS: &'static [&'static str] = &[$($name),*];

            /// The kind's name as written in rule files.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(ActionSpec::$variant(_) => $name,)*
                }
            }

            fn params(&self) -> &dyn ActionKind {
                match self {
                    $(ActionSpec::$variant(p) => p,)*
                }
            }

            /// The parameters of kind `kind` read from `p`; `also` are the
            /// step's own fields, suggested for typos too.
            fn read(kind: &str, p: &Node, also: &[&str], y: &mut Cursor) -> Option<ActionSpec> {
                match kind {
                    $($name => Some(ActionSpec::$variant(y.params(p, also)?)),)*
                    _ => None,
                }
            }

            /// The Cargo feature kind `kind` needs, if any.
            pub fn feature(kind: &str) -> Option<Feature> {
                match kind {
                    $($name => <$params as ActionKind>::feature(),)*
                    _ => None,
                }
            }

            /// The parameters of kind `kind` that expand `${labels.NAME}`.
            pub fn expands(kind: &str) -> &'static [&'static str] {
                match kind {
                    $($name => <$params as ActionKind>::expands(),)*
                    _ => &[],
                }
            }

            /// Whether some action kind has this field (to flag true typos
            /// only when the action itself is unknown).
            pub(crate) fn any_field(field: &str) -> bool {
                [$(yaml::field_names::<$params>()),*]
                    .iter()
                    .any(|fields| fields.contains(&field))
            }
        }
    };
}

action_kinds! {
    "exec" => Exec(exec::ExecParams),
    "systemd-restart" => SystemdRestart(systemd::SystemdRestartParams),
    "k8s.rollout-restart" => K8sRolloutRestart(k8s::RolloutRestartParams),
    "k8s.rollout-undo" => K8sRolloutUndo(k8s::RolloutUndoParams),
    "k8s.set-env" => K8sSetEnv(k8s::SetEnvParams),
    "k8s.scale" => K8sScale(k8s::ScaleParams),
    "redis.flush" => RedisFlush(redis_flush::RedisFlushParams),
    "postgres.promote-replica" => PostgresPromoteReplica(postgres::PromoteReplicaParams),
    "postgres.restart" => PostgresRestart(pg_restart::RestartParams),
    "postgres.quarantine" => PostgresQuarantine(postgres::QuarantineParams),
    "postgres.fence" => PostgresFence(pg_fence::FenceParams),
    "postgres.restore" => PostgresRestore(pg_restore::RestoreParams),
    "postgres.restore-tables" => PostgresRestoreTables(pg_restore::RestoreTablesParams),
    "route53.failover" => Route53Failover(route53::FailoverParams),
    "docker.restart" => DockerRestart(docker::DockerRestartParams),
    "docker.recreate" => DockerRecreate(docker::DockerRecreateParams),
}

impl ActionSpec {
    /// The config targets it acts on (maintenance windows name them).
    pub fn targets(&self) -> Vec<String> {
        self.params().targets()
    }

    /// Why the config lets this action do nothing at all (the step is
    /// skipped), if so; see [`ActionKind::unconfigured`].
    pub fn unconfigured(&self, config: &Config) -> Option<String> {
        self.params().unconfigured(config)
    }

    /// Why this step may only run with `approval: required`, if it must.
    pub fn requires_approval(&self) -> Option<&'static str> {
        self.params().requires_approval()
    }

    /// Reads the parameters of an action of kind `kind` (known to be one
    /// of [`ActionSpec::KINDS`]) from `p` and validates them; every
    /// problem is reported at its position.
    pub(crate) fn parse(v: &mut Refs, kind: &str, p: &Node, also: &[&str]) -> Option<ActionSpec> {
        let spec = ActionSpec::read(kind, p, also, v.y)?;
        let before = v.out.len();
        spec.params().validate(v, p);
        (v.out.len() == before).then_some(spec)
    }
}

/// What an action needs to know about the attempt it runs in.
#[derive(Clone)]
pub struct ActionContext {
    /// Unique per attempt (its idempotency key); actions that talk to APIs
    /// pass it on where they can.
    pub key: String,
    /// Cancelled when the daemon must stop now (grace period over).
    pub cancel: CancellationToken,
    /// How long the action may run; it must stop (and clean up) by then.
    pub timeout: std::time::Duration,
    /// What the engine saw of the scenario's symptoms when the step began.
    pub observations: Vec<SymptomObservation>,
    /// The ledger, for guards that span incidents and scenarios (one
    /// failover per cluster per cooldown). `None` in unit tests.
    pub ledger: Option<Arc<dyn Store>>,
    /// Wall-clock time when the step began.
    pub now: chrono::DateTime<chrono::Utc>,
    /// What preflight decided (e.g. the chosen candidate), for `run`.
    pub preflight: serde_json::Value,
    /// The scenario's recovery point objective, if it sets one (a restore
    /// reports the data it loses against it).
    pub rpo: Option<std::time::Duration>,
    /// When the incident was first detected (opened), if there is one: a
    /// table restore reads a backup taken before it.
    pub detected_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl std::fmt::Debug for ActionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionContext")
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .field("observations", &self.observations)
            .field("preflight", &self.preflight)
            .finish()
    }
}

impl ActionContext {
    /// A context with nothing observed and no ledger (tests, `medic` tools).
    pub fn new(key: impl Into<String>, timeout: std::time::Duration) -> Self {
        ActionContext {
            key: key.into(),
            cancel: CancellationToken::new(),
            timeout,
            observations: Vec::new(),
            ledger: None,
            now: chrono::Utc::now(),
            preflight: serde_json::Value::Null,
            rpo: None,
            detected_at: None,
        }
    }
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

impl ActionResult {
    /// A success.
    pub fn ok(detail: impl Into<String>, data: serde_json::Value) -> Self {
        ActionResult {
            ok: true,
            detail: detail.into(),
            data,
        }
    }

    /// A failure.
    pub fn failed(detail: impl Into<String>, data: serde_json::Value) -> Self {
        ActionResult {
            ok: false,
            detail: detail.into(),
            data,
        }
    }
}

/// One precondition (safety check) and what medic found.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Gate {
    /// Short and stable, e.g. `primary-unreachable`, `role-is-master`.
    pub name: String,
    pub passed: bool,
    /// What was seen, for humans ("role is slave", "lag 2.0 MiB > 1 MiB").
    pub detail: String,
    /// A refusal that is only "not yet" (e.g. the primary has not been
    /// unreachable long enough): the executor re-evaluates after this long,
    /// within the step's timeout, instead of giving up on the step.
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde_opt")]
    pub wait: Option<std::time::Duration>,
    /// A finding that does not refuse the step by itself (one promotion
    /// candidate of several refused); a later gate decides.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub advisory: bool,
}

/// Shows an optional wait as "1s 500ms" on timelines.
mod humantime_serde_opt {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

impl Gate {
    pub fn pass(name: &str, detail: impl Into<String>) -> Self {
        Gate {
            name: name.to_string(),
            passed: true,
            detail: detail.into(),
            wait: None,
            advisory: false,
        }
    }

    pub fn fail(name: &str, detail: impl Into<String>) -> Self {
        Gate {
            name: name.to_string(),
            passed: false,
            detail: detail.into(),
            wait: None,
            advisory: false,
        }
    }

    /// A refusal for now: re-check after `wait`.
    pub fn not_yet(name: &str, detail: impl Into<String>, wait: std::time::Duration) -> Self {
        Gate {
            wait: Some(wait),
            ..Gate::fail(name, detail)
        }
    }
}

/// The preconditions of one attempt: every gate in the order evaluated,
/// and what they decided for `run` (in [`ActionContext::preflight`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Preflight {
    pub gates: Vec<Gate>,
    pub data: serde_json::Value,
}

impl Preflight {
    /// The first gate that refused, if any.
    pub fn refusal(&self) -> Option<&Gate> {
        self.gates.iter().find(|g| !g.passed && !g.advisory)
    }

    /// Adds a gate; returns whether it passed (for early returns).
    pub fn gate(&mut self, g: Gate) -> bool {
        let passed = g.passed;
        self.gates.push(g);
        passed
    }
}

/// An executor of one action kind.
#[async_trait::async_trait]
pub trait Action: Send + Sync {
    /// What it would do, for dry-run and the timeline ("would run ...").
    fn describe(&self) -> String;
    /// Its inputs for the ledger (never secrets).
    fn inputs(&self) -> serde_json::Value;
    /// Its preconditions: read-only safety checks that may refuse, each
    /// reported as a [`Gate`]. Evaluated before every attempt, and in
    /// dry-run too. The default has none.
    async fn preflight(&self, _ctx: &ActionContext) -> Preflight {
        Preflight::default()
    }
    /// Why it cannot do anything with this config (e.g. no restart method
    /// configured): the executor skips the step before any guard, saying
    /// so on the timeline, as a step that did not work (a fallback runs).
    fn skip(&self) -> Option<String> {
        None
    }
    /// Runs it once, after its preflight passed. The executor enforces the
    /// step's timeout around this.
    async fn run(&self, ctx: &ActionContext) -> ActionResult;
    /// After a restart found an attempt of this action in flight: whether
    /// its effect is in place (`Some(ok)`), without running it again.
    /// `None`: the action cannot tell; the step's symptoms decide.
    async fn reconcile(&self, _ctx: &ActionContext) -> Option<ActionResult> {
        None
    }
    /// This action for one per-series incident: `${labels.NAME}` in its
    /// parameters replaced by the series' labels, each value checked for
    /// where it lands (see [`template`]). `Ok(None)`: nothing to expand,
    /// the action is the same. The default is for actions without
    /// expandable parameters.
    fn for_labels(
        &self,
        _values: &template::Values,
    ) -> Result<Option<Arc<dyn Action>>, template::TemplateError> {
        Ok(None)
    }
}

/// An action whose parameters could not be expanded for an incident's
/// labels: its preflight refuses with the reason, so the step is on the
/// timeline (never run with a hole or a stranger's syntax in its inputs).
/// A missing label fails the step (gate `labels`); a value refused where
/// it lands (gate `label-value`) escalates at once.
pub struct Unexpanded {
    pub action: Arc<dyn Action>,
    pub error: template::TemplateError,
}

#[async_trait::async_trait]
impl Action for Unexpanded {
    fn describe(&self) -> String {
        self.action.describe()
    }
    fn inputs(&self) -> serde_json::Value {
        self.action.inputs()
    }
    fn skip(&self) -> Option<String> {
        self.action.skip()
    }
    async fn preflight(&self, _ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        pre.gate(Gate::fail(self.error.gate(), self.error.to_string()));
        pre
    }
    async fn run(&self, _ctx: &ActionContext) -> ActionResult {
        ActionResult::failed(self.error.to_string(), serde_json::Value::Null)
    }
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
pub fn build(spec: &ActionSpec, config: &Config) -> Result<Arc<dyn Action>, BuildError> {
    spec.params().build(config)
}
