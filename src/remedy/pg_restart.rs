//! `postgres.restart`: start PostgreSQL again in place, on its own host
//! and data directory, when its postmaster died but its host is alive;
//! the shipped database-failure rule tries it before a failover (faster,
//! and nothing is lost: no promotion, no repointing, no rebuild).
//!
//! How is the operator's, per server, on the postgres target in the
//! config (`restart:`), and reuses the actions of that kind:
//! - `{ systemd: UNIT }`: `systemctl restart UNIT` ([`super::systemd`]);
//! - `{ docker: TARGET }`: `docker.restart` of a docker target
//!   ([`super::docker`]);
//! - `{ exec: [PROGRAM, ARG...] }`: a command ([`super::exec`]), e.g. an
//!   `ssh` to the host.
//!
//! `target` is one server or a cluster: for a cluster, the member last
//! seen as its primary. The preflight's gates, in order:
//! 1. `member`: which server (a cluster's last primary);
//! 2. `restart-method`: it has one (none at all: the step is skipped
//!    before any gate, [`super::Action::skip`]);
//! 3. `not-failed-over`: no other member answers as primary, the cluster
//!    has not demoted it (another member was promoted over it), and the
//!    ledger's newest promotion of this target did not promote another
//!    over it: an old primary restarted in place after a failover would be
//!    a second primary (split brain); it is rebuilt as a replica instead;
//! 4. `member-down`: it does not answer (one that answers needs no
//!    restart);
//! 5. `host-alive`: the method's channel answers within `host_timeout`
//!    (default 2s): systemd's manager knows the unit, the Docker Engine
//!    answers and names the container; for `exec` the command's own exit
//!    says (an `ssh` to a host that is gone fails fast).
//!
//! Then `run` restarts it and verifies: the server accepts connections as
//! a primary (out of recovery, writable) within `ready_within` (default
//! 10s). A server that comes back in recovery (demoted on disk by an
//! earlier failover) or read-only (fenced) is not a restored primary: the
//! step did not work, and the plan falls back to the failover.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::docker::{DockerRestart, DockerRestartParams};
use super::exec::{ExecAction, ExecParams};
use super::systemd::{SystemdRestart, SystemdRestartParams};
use super::{Action, ActionContext, ActionResult, BuildError, Gate, Preflight};
use crate::config::{Config, PgRestart, TargetConfig};
use crate::connect::pg_cluster::{Cluster, Member, Seen, probe};
use crate::duration::Dur;
use crate::store::AttemptOutcome;

/// Default `host_timeout`.
pub const DEFAULT_HOST_TIMEOUT: Dur = Dur::secs(2);
/// Default `ready_within`.
pub const DEFAULT_READY_WITHIN: Dur = Dur::secs(10);
/// How often the verification asks the restarted server.
const POLL: Duration = Duration::from_millis(100);

/// `action: postgres.restart, target: db`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartParams {
    /// A postgres target: one server, or a cluster (its last primary).
    pub target: String,
    /// The restart method's channel must answer within this (default 2s).
    pub host_timeout: Option<Dur>,
    /// The server must accept connections as a primary within this after
    /// the restart (default 10s).
    pub ready_within: Option<Dur>,
}

impl RestartParams {
    fn host_timeout(&self) -> Duration {
        self.host_timeout.unwrap_or(DEFAULT_HOST_TIMEOUT).get()
    }

    fn ready_within(&self) -> Duration {
        self.ready_within.unwrap_or(DEFAULT_READY_WITHIN).get()
    }
}

/// One server's restart method, built from the action of its kind.
enum Method {
    Systemd {
        unit: String,
        restart: SystemdRestart,
        /// `systemctl show --property=LoadState --value UNIT`.
        show: ExecAction,
    },
    Docker {
        target: String,
        restart: DockerRestart,
    },
    Exec(ExecAction),
}

impl Method {
    fn build(r: &PgRestart, config: &Config) -> Result<Method, BuildError> {
        Self::with_systemctl(r, config, "systemctl")
    }

    fn with_systemctl(r: &PgRestart, config: &Config, program: &str) -> Result<Method, BuildError> {
        Ok(match r {
            PgRestart::Systemd(unit) => Method::Systemd {
                unit: unit.clone(),
                restart: SystemdRestart::with_program(
                    &SystemdRestartParams { unit: unit.clone() },
                    program,
                )?,
                show: ExecAction::build(&ExecParams {
                    args: vec![
                        program.into(),
                        "show".into(),
                        "--property=LoadState".into(),
                        "--value".into(),
                        unit.clone(),
                    ],
                    env: Default::default(),
                    cwd: None,
                })?,
            },
            PgRestart::Docker(t) => Method::Docker {
                target: t.clone(),
                restart: DockerRestart::build(&DockerRestartParams { target: t.clone() }, config)?,
            },
            PgRestart::Exec(args) => Method::Exec(ExecAction::build(&ExecParams {
                args: args.clone(),
                env: Default::default(),
                cwd: None,
            })?),
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            Method::Systemd { .. } => "systemd",
            Method::Docker { .. } => "docker",
            Method::Exec(_) => "exec",
        }
    }

    fn describe(&self) -> String {
        match self {
            Method::Systemd { restart, .. } => restart.describe(),
            Method::Docker { restart, .. } => restart.describe(),
            Method::Exec(e) => e.describe(),
        }
    }

    fn inputs(&self) -> serde_json::Value {
        match self {
            Method::Systemd { unit, .. } => json!({ "systemd": unit }),
            Method::Docker { target, .. } => json!({ "docker": target }),
            Method::Exec(e) => json!({ "exec": e.inputs()["args"] }),
        }
    }

    /// Gate `host-alive`: the method's channel answers within `limit`.
    async fn host_alive(&self, ctx: &ActionContext, limit: Duration) -> Gate {
        const NAME: &str = "host-alive";
        let within = humantime::format_duration(limit);
        match self {
            Method::Systemd { unit, show, .. } => {
                let mut c = ctx.clone();
                c.timeout = limit;
                let r = show.run(&c).await;
                let state = r.data["stdout"].as_str().unwrap_or("").trim().to_string();
                if !r.ok {
                    Gate::fail(
                        NAME,
                        format!(
                            "the service manager did not answer within {within}: systemctl show {unit}: {}",
                            r.detail
                        ),
                    )
                } else if state != "loaded" {
                    Gate::fail(
                        NAME,
                        format!(
                            "the service manager answered, but unit {unit} is {state:?}, not loaded"
                        ),
                    )
                } else {
                    Gate::pass(
                        NAME,
                        format!(
                            "the service manager answered within {within}: unit {unit} is loaded"
                        ),
                    )
                }
            }
            Method::Docker { target, restart } => {
                match tokio::time::timeout(limit, restart.preflight(ctx)).await {
                    Err(_) => Gate::fail(
                        NAME,
                        format!(
                            "the Docker Engine of target {target} did not answer within {within}"
                        ),
                    ),
                    Ok(pre) => match pre.refusal() {
                        Some(g) => {
                            Gate::fail(NAME, format!("target {target}: {}: {}", g.name, g.detail))
                        }
                        None => Gate::pass(
                            NAME,
                            format!(
                                "the Docker Engine answered within {within}: {}",
                                pre.gates
                                    .iter()
                                    .map(|g| g.detail.as_str())
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            ),
                        ),
                    },
                }
            }
            Method::Exec(_) => Gate::pass(
                NAME,
                "exec: the command's own exit says whether the host answers (bounded by the step's timeout)",
            ),
        }
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        match self {
            Method::Systemd { restart, .. } => restart.run(ctx).await,
            Method::Docker { restart, .. } => restart.run(ctx).await,
            Method::Exec(e) => e.run(ctx).await,
        }
    }
}

/// Where the restart is aimed.
enum Aim {
    One(Box<Member>),
    Cluster(Arc<Cluster>),
}

/// A runnable `postgres.restart`.
pub struct Restart {
    params: RestartParams,
    aim: Aim,
    /// Per server with a `restart:`: its method.
    methods: BTreeMap<String, Method>,
    /// Why it cannot run at all: no server has a restart method.
    skip: Option<String>,
}

/// The servers `target` may restart (a cluster's members, or itself) and
/// their `restart:` methods; `None` when it is no postgres target.
fn servers(config: &Config, target: &str) -> Option<Vec<(String, Option<PgRestart>)>> {
    if let Some(members) = config.postgres_members(target) {
        return Some(
            members
                .into_iter()
                .map(|(n, t)| (n, t.restart.map(|r| *r)))
                .collect(),
        );
    }
    match config.targets.get(target) {
        Some(TargetConfig::Postgres(t)) => {
            Some(vec![(target.to_string(), t.restart.as_deref().cloned())])
        }
        _ => None,
    }
}

/// Why `postgres.restart` of `target` cannot run with this config: none
/// of its servers has a restart method (the step is skipped).
pub fn unconfigured(config: &Config, target: &str) -> Option<String> {
    let all = servers(config, target)?;
    if all.iter().any(|(_, r)| r.is_some()) {
        return None;
    }
    let at: Vec<String> = all
        .iter()
        .map(|(n, _)| format!("targets.{n}.postgres.restart"))
        .collect();
    Some(format!(
        "{target} has no restart method configured ({})",
        at.join(", ")
    ))
}

impl Restart {
    pub fn build(p: &RestartParams, config: &Config) -> Result<Self, BuildError> {
        let all = servers(config, &p.target).ok_or_else(|| {
            BuildError::Invalid(format!("target {:?} is not a postgres target", p.target))
        })?;
        let mut methods = BTreeMap::new();
        for (name, r) in &all {
            if let Some(r) = r {
                methods.insert(name.clone(), Method::build(r, config)?);
            }
        }
        let aim = match crate::connect::pg_cluster::cluster(config, &p.target) {
            Some(c) => Aim::Cluster(c),
            None => match config.targets.get(&p.target) {
                Some(TargetConfig::Postgres(t)) => Aim::One(Box::new(Member {
                    name: p.target.clone(),
                    target: t.clone(),
                })),
                _ => unreachable!("servers() found a postgres target"),
            },
        };
        Ok(Restart {
            params: p.clone(),
            aim,
            methods,
            skip: unconfigured(config, &p.target),
        })
    }

    /// With another `systemctl` (tests use a stand-in).
    #[cfg(test)]
    fn with_systemctl(p: &RestartParams, config: &Config, program: &str) -> Self {
        let mut r = Self::build(p, config).unwrap();
        for m in r.methods.values_mut() {
            if let Method::Systemd { unit, .. } = m {
                let spec = PgRestart::Systemd(unit.clone());
                *m = Method::with_systemctl(&spec, config, program).unwrap();
            }
        }
        r
    }

    fn member(&self, name: &str) -> Option<Member> {
        match &self.aim {
            Aim::One(m) => (m.name == name).then(|| (**m).clone()),
            Aim::Cluster(c) => c.member(name).cloned(),
        }
    }

    /// Gate `not-failed-over` from the ledger: the newest promotion of
    /// this target (succeeded or in flight) must not have promoted another
    /// server over `member`.
    async fn ledger_gate(&self, ctx: &ActionContext, member: &str) -> Option<Gate> {
        let ledger = ctx.ledger.as_ref()?;
        let past = match ledger
            // Every promotion the ledger keeps (a store cannot take
            // DateTime::MIN_UTC as a bound).
            .action_attempts_since("postgres.promote-replica", chrono::DateTime::UNIX_EPOCH)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                return Some(Gate::fail(
                    "not-failed-over",
                    format!("cannot read the ledger: {e}"),
                ));
            }
        };
        let newest = past.iter().rev().find(|a| {
            a.inputs["params"]["primary"].as_str() == Some(self.params.target.as_str())
                && matches!(a.outcome, None | Some(AttemptOutcome::Succeeded))
        })?;
        let pre = &newest.inputs["preflight"];
        let promoted = pre["candidate"].as_str().unwrap_or("a replica");
        let old = pre["old_primary"].as_str().unwrap_or(&self.params.target);
        // A cluster whose newest promotion promoted this member: it is
        // the primary since (a second failover brought it back).
        if promoted == member || (matches!(self.aim, Aim::Cluster(_)) && old != member) {
            return None;
        }
        Some(Gate::fail(
            "not-failed-over",
            format!(
                "a failover of {} {} {promoted} over {member} at {} (attempt {}): restarting {member} in place would make a second primary; rebuild it as a replica",
                self.params.target,
                if newest.outcome.is_none() {
                    "is promoting"
                } else {
                    "promoted"
                },
                newest.started_at.to_rfc3339(),
                newest.key
            ),
        ))
    }
}

#[async_trait::async_trait]
impl Action for Restart {
    fn describe(&self) -> String {
        let how: Vec<String> = self
            .methods
            .iter()
            .map(|(n, m)| format!("{n}: {}", m.describe()))
            .collect();
        match &self.aim {
            Aim::One(m) => format!(
                "postgres.restart of {} in place ({})",
                m.name,
                if how.is_empty() {
                    "no restart method".to_string()
                } else {
                    how.join("; ")
                }
            ),
            Aim::Cluster(c) => format!(
                "postgres.restart of the primary of cluster {} in place ({})",
                c.name,
                if how.is_empty() {
                    "no member has a restart method".to_string()
                } else {
                    how.join("; ")
                }
            ),
        }
    }

    fn inputs(&self) -> serde_json::Value {
        json!({
            "target": self.params.target,
            "host_timeout": self.params.host_timeout.unwrap_or(DEFAULT_HOST_TIMEOUT).to_string(),
            "ready_within": self.params.ready_within.unwrap_or(DEFAULT_READY_WITHIN).to_string(),
            "methods": self.methods.iter().map(|(n, m)| (n.clone(), m.inputs())).collect::<BTreeMap<_, _>>(),
        })
    }

    fn skip(&self) -> Option<String> {
        self.skip.clone()
    }

    async fn preflight(&self, ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        let t = self.params.host_timeout().min(ctx.timeout);
        // 1. Which server.
        let (member, view) = match &self.aim {
            Aim::One(m) => {
                pre.gate(Gate::pass("member", format!("{} (one server)", m.name)));
                ((**m).clone(), None)
            }
            Aim::Cluster(c) => {
                let view = c.discover(t).await;
                let Some(name) = c.last_primary() else {
                    pre.gate(Gate::fail(
                        "member",
                        format!(
                            "cluster {:?} has no known primary: medic never saw a member answer as primary ({})",
                            c.name,
                            view.summary()
                        ),
                    ));
                    return pre;
                };
                let Some(m) = c.member(&name).cloned() else {
                    pre.gate(Gate::fail(
                        "member",
                        format!("{name:?} is not a member of cluster {:?}", c.name),
                    ));
                    return pre;
                };
                pre.gate(Gate::pass(
                    "member",
                    format!(
                        "{name}, the member of cluster {:?} last seen as primary",
                        c.name
                    ),
                ));
                (m, Some(view))
            }
        };
        pre.data = json!({ "member": member.name });
        // 2. Its restart method.
        let Some(method) = self.methods.get(&member.name) else {
            pre.gate(Gate::fail(
                "restart-method",
                format!(
                    "{} has no restart method configured (targets.{}.postgres.restart)",
                    member.name, member.name
                ),
            ));
            return pre;
        };
        pre.gate(Gate::pass(
            "restart-method",
            format!("{}: {}", method.kind(), method.describe()),
        ));
        // 3. No failover over it: never a second primary.
        let mut over: Vec<String> = Vec::new();
        if let Some(view) = &view {
            if let Some(tl) = view.demoted.get(&member.name) {
                over.push(format!(
                    "cluster {} demoted {} (its primary on timeline {tl}; the cluster is on timeline {})",
                    self.params.target, member.name, view.timeline
                ));
            }
            for (n, s) in &view.members {
                if *n != member.name
                    && let Seen::Answered(a) = s
                    && !a.in_recovery
                {
                    over.push(format!("{n} answers as primary (timeline {})", a.timeline));
                }
            }
        }
        if !over.is_empty() {
            pre.gate(Gate::fail(
                "not-failed-over",
                format!(
                    "{}: restarting {} in place would make a second primary; rebuild it as a replica",
                    over.join("; "),
                    member.name
                ),
            ));
            return pre;
        }
        if let Some(g) = self.ledger_gate(ctx, &member.name).await {
            pre.gate(g);
            return pre;
        }
        pre.gate(Gate::pass(
            "not-failed-over",
            match &view {
                Some(_) => format!(
                    "no other member answers as primary and no failover promoted another over {}",
                    member.name
                ),
                None => format!("no failover of {} in the ledger", member.name),
            },
        ));
        // 4. It is down.
        let seen = match view.as_ref().and_then(|v| v.seen(&member.name)) {
            Some(s) => s.clone(),
            None => probe(&member, t).await,
        };
        if let Seen::Answered(_) = &seen {
            pre.gate(Gate::fail(
                "member-down",
                format!("{} answers ({seen}): nothing to restart", member.name),
            ));
            return pre;
        }
        pre.gate(Gate::pass(
            "member-down",
            format!("{} does not answer ({seen})", member.name),
        ));
        // 5. Its host answers.
        pre.gate(method.host_alive(ctx, t).await);
        pre
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        let Some(name) = ctx.preflight["member"].as_str() else {
            return ActionResult::failed("no server chosen by the preflight", json!({}));
        };
        let (Some(member), Some(method)) = (self.member(name), self.methods.get(name)) else {
            return ActionResult::failed(format!("no restart method for {name:?}"), json!({}));
        };
        let ready_within = self.params.ready_within();
        let started = tokio::time::Instant::now();
        // The method gets the step's time but what the verification needs.
        let mut mctx = ctx.clone();
        mctx.timeout = ctx
            .timeout
            .saturating_sub(ready_within)
            .max(self.params.host_timeout());
        let r = method.run(&mctx).await;
        let mut data = json!({
            "member": name,
            "method": method.inputs(),
            "restart": { "ok": r.ok, "detail": r.detail, "output": r.data },
        });
        if !r.ok {
            return ActionResult::failed(
                format!(
                    "restart of {name} in place ({}) failed: {}",
                    method.kind(),
                    r.detail
                ),
                data,
            );
        }
        let restarted = started.elapsed();
        // Verified: a primary again, accepting connections and writes.
        let deadline = tokio::time::Instant::now() + ready_within;
        let mut last;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let seen = probe(
                &member,
                left.clamp(Duration::from_millis(200), Duration::from_secs(2)),
            )
            .await;
            last = seen.to_string();
            match &seen {
                Seen::Answered(a) if !a.in_recovery && !a.read_only => {
                    if let Aim::Cluster(c) = &self.aim {
                        c.discover(Duration::from_secs(1)).await;
                    }
                    let took = started.elapsed();
                    data["ready_after_ms"] = json!(took.as_millis() as u64);
                    return ActionResult::ok(
                        format!(
                            "{name} restarted in place ({}: {}, {:.1}s) and accepts connections as primary (timeline {}) {:.1}s after the restart began",
                            method.kind(),
                            r.detail,
                            restarted.as_secs_f64(),
                            a.timeline,
                            took.as_secs_f64()
                        ),
                        data,
                    );
                }
                Seen::Answered(a) => {
                    let what = if a.in_recovery {
                        "in recovery (a standby)"
                    } else {
                        "read-only (fenced)"
                    };
                    return ActionResult::failed(
                        format!(
                            "{name} was restarted ({}: {}) but came back {what}, not as a writable primary",
                            method.kind(),
                            r.detail
                        ),
                        data,
                    );
                }
                Seen::Down { .. } => {}
            }
            if tokio::time::Instant::now() + POLL >= deadline {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = ctx.cancel.cancelled() => {
                    return ActionResult::failed("aborted: medic is stopping", data);
                }
            }
        }
        ActionResult::failed(
            format!(
                "{name} was restarted ({}: {}) but does not accept connections as primary within {} ({last})",
                method.kind(),
                r.detail,
                humantime::format_duration(ready_within)
            ),
            data,
        )
    }

    async fn reconcile(&self, ctx: &ActionContext) -> Option<ActionResult> {
        let name = ctx.preflight["member"]
            .as_str()
            .map(str::to_string)
            .or_else(|| match &self.aim {
                Aim::One(m) => Some(m.name.clone()),
                Aim::Cluster(c) => c.last_primary(),
            })?;
        let member = self.member(&name)?;
        match probe(&member, self.params.host_timeout()).await {
            Seen::Answered(a) if !a.in_recovery && !a.read_only => Some(ActionResult::ok(
                format!(
                    "{name} accepts connections as primary (timeline {})",
                    a.timeline
                ),
                json!({ "member": name }),
            )),
            other => Some(ActionResult::failed(
                format!("{name} is not a writable primary: {other}"),
                json!({ "member": name }),
            )),
        }
    }
}

impl super::ActionKind for RestartParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        v.target(p, "target", &self.target, &["postgres"], "postgres.restart");
        for (field, d) in [
            ("host_timeout", self.host_timeout),
            ("ready_within", self.ready_within),
        ] {
            if d.is_some_and(|d| d.get().is_zero()) {
                v.err(
                    crate::yaml::field_pos(p, field),
                    format!("{field} must be longer than 0s"),
                );
            }
        }
    }

    fn targets(&self) -> Vec<String> {
        vec![self.target.clone()]
    }

    fn unconfigured(&self, config: &Config) -> Option<String> {
        unconfigured(config, &self.target)
    }

    fn build(&self, config: &Config) -> Result<Arc<dyn Action>, BuildError> {
        Ok(Arc::new(Restart::build(self, config)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, NewAttempt, NewIncident, Store};

    /// Ports nothing listens on: every server is down.
    fn config(extra: &str) -> Config {
        config_with(extra, "")
    }

    /// [`config`] with more targets (lines of `targets:`).
    fn config_with(extra: &str, more: &str) -> Config {
        crate::config::load_str(
            "medic.yaml",
            &format!(
                "targets:\n  \
                 db: {{ postgres: {{ host: 127.0.0.1, port: 9, user: postgres, dbname: postgres{extra} }} }}\n  \
                 db-replica: {{ postgres: {{ host: 127.0.0.1, port: 9, user: postgres, dbname: postgres }} }}\n  \
                 pg: {{ postgres: {{ members: [pg-a, pg-b] }} }}\n  \
                 pg-a: {{ postgres: {{ host: 127.0.0.1, port: 9, restart: {{ exec: [\"true\"] }} }} }}\n  \
                 pg-b: {{ postgres: {{ host: 127.0.0.1, port: 9 }} }}\n{more}"
            ),
        )
        .unwrap()
    }

    fn params(target: &str) -> RestartParams {
        RestartParams {
            target: target.into(),
            host_timeout: None,
            ready_within: None,
        }
    }

    #[test]
    fn no_method_anywhere_is_a_skip_naming_where_to_configure_it() {
        let cfg = config("");
        let a = Restart::build(&params("db"), &cfg).unwrap();
        assert_eq!(
            a.skip().as_deref(),
            Some("db has no restart method configured (targets.db.postgres.restart)")
        );
        assert_eq!(
            super::super::ActionKind::unconfigured(&params("db"), &cfg),
            a.skip(),
            "the rule tests skip it the same way"
        );
        // A cluster with one member that has one: it runs (the preflight
        // decides for the member that is the primary).
        assert_eq!(Restart::build(&params("pg"), &cfg).unwrap().skip(), None);
    }

    #[tokio::test]
    async fn a_cluster_without_a_known_primary_is_refused() {
        let cfg = config("");
        let a = Restart::build(&params("pg"), &cfg).unwrap();
        let pre = a
            .preflight(&ActionContext::new("t", Duration::from_secs(5)))
            .await;
        let g = pre.refusal().expect("refused");
        assert_eq!(g.name, "member");
        assert!(g.detail.contains("has no known primary"), "{}", g.detail);
    }

    /// The old primary of a failover is never restarted in place: the
    /// ledger's newest promotion of it refuses the step before its host
    /// is even asked.
    #[tokio::test]
    async fn a_server_failed_over_is_never_restarted_in_place() {
        let cfg = config(", restart: { exec: [\"true\"] }");
        let a = Restart::build(&params("db"), &cfg).unwrap();
        let store = Arc::new(MemoryStore::new());
        let now = chrono::Utc::now();
        let (inc, _) = store
            .open_incident(NewIncident {
                scenario: "database-failure".into(),
                instance: String::new(),
                severity: "critical".into(),
                summary: "db down".into(),
                at: now,
            })
            .await
            .unwrap();
        let mut ctx = ActionContext::new("1:1:2", Duration::from_secs(5));
        ctx.ledger = Some(store.clone() as Arc<dyn Store>);
        // Before any failover: it gets to the host gate.
        let pre = a.preflight(&ctx).await;
        assert_eq!(pre.refusal(), None, "{:?}", pre.gates);
        assert!(
            pre.gates
                .iter()
                .any(|g| g.name == "not-failed-over" && g.passed),
            "{:?}",
            pre.gates
        );
        let id = store
            .begin_attempt(NewAttempt {
                incident_id: inc.id,
                scenario: "database-failure".into(),
                instance: String::new(),
                step: "promote-replica".into(),
                step_index: 1,
                action: "postgres.promote-replica".into(),
                key: "1:1:1".into(),
                started_at: now,
                inputs: json!({
                    "params": { "primary": "db" },
                    "preflight": { "candidate": "db-replica", "old_primary": "db" },
                }),
            })
            .await
            .unwrap();
        store
            .finish_attempt(id, AttemptOutcome::Succeeded, "promoted", now)
            .await
            .unwrap();
        let pre = a.preflight(&ctx).await;
        let g = pre.refusal().expect("refused");
        assert_eq!(g.name, "not-failed-over");
        assert!(
            g.detail.starts_with("a failover of db promoted db-replica over db at ")
                && g.detail.ends_with(
                    "(attempt 1:1:1): restarting db in place would make a second primary; rebuild it as a replica"
                ),
            "{}",
            g.detail
        );
    }

    #[tokio::test]
    async fn docker_needs_the_engine_to_answer_first() {
        let cfg = config_with(
            ", restart: { docker: db-container }",
            "  db-container: { docker: { container: db, socket: /nonexistent/docker.sock } }\n",
        );
        let a = Restart::build(&params("db"), &cfg).unwrap();
        let pre = a
            .preflight(&ActionContext::new("t", Duration::from_secs(5)))
            .await;
        let g = pre.refusal().expect("refused");
        assert_eq!(g.name, "host-alive");
        assert!(
            g.detail.starts_with("target db-container: docker-engine: "),
            "{}",
            g.detail
        );
    }

    /// A method that hangs (an ssh to a host that drops packets) is killed
    /// at the step's timeout less `ready_within`, and the step fails.
    #[tokio::test]
    async fn a_method_that_hangs_is_killed_and_the_step_fails() {
        let cfg = config(", restart: { exec: [sleep, \"30\"] }");
        let quick = RestartParams {
            host_timeout: Some(Dur::secs(1)),
            ready_within: Some(Dur::secs(1)),
            ..params("db")
        };
        let a = Restart::build(&quick, &cfg).unwrap();
        let mut ctx = ActionContext::new("t", Duration::from_secs(2));
        ctx.preflight = json!({ "member": "db" });
        let started = std::time::Instant::now();
        let r = a.run(&ctx).await;
        assert!(!r.ok);
        assert_eq!(
            r.detail,
            "restart of db in place (exec) failed: timed out after 1s; process group killed"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{r:?}");
    }

    #[tokio::test]
    async fn systemd_asks_the_manager_first_and_restarts_the_unit() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("systemctl");
        let log = dir.path().join("argv");
        // `show` answers "loaded" for the known unit; every call is logged.
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$@\" >> {}\ncase \"$1 $4\" in\n  'show postgresql@15-main') echo loaded ;;\n  show*) echo not-found ;;\nesac\n",
                log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ctx = ActionContext::new("t", Duration::from_secs(5));
        for (unit, passed, detail) in [
            (
                "postgresql@15-main",
                true,
                "the service manager answered within 2s: unit postgresql@15-main is loaded",
            ),
            (
                "postgresql@14-main",
                false,
                "the service manager answered, but unit postgresql@14-main is \"not-found\", not loaded",
            ),
        ] {
            let cfg = config(&format!(", restart: {{ systemd: {unit} }}"));
            let a = Restart::with_systemctl(&params("db"), &cfg, fake.to_str().unwrap());
            let pre = a.preflight(&ctx).await;
            let g = pre.gates.last().unwrap();
            assert_eq!((g.name.as_str(), g.passed), ("host-alive", passed), "{g:?}");
            assert_eq!(g.detail, detail);
        }
        let cfg = config(", restart: { systemd: postgresql@15-main }");
        let quick = RestartParams {
            ready_within: Some(Dur::secs(1)),
            ..params("db")
        };
        let a = Restart::with_systemctl(&quick, &cfg, fake.to_str().unwrap());
        let mut run = ctx.clone();
        run.preflight = json!({ "member": "db" });
        let r = a.run(&run).await;
        // The fake restarts nothing: the server stays down.
        assert!(!r.ok);
        assert!(
            r.detail.starts_with(
                "db was restarted (systemd: exit status 0) but does not accept connections as primary within 1s"
            ),
            "{}",
            r.detail
        );
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .ends_with("restart postgresql@15-main\n")
        );
    }
}
