//! `postgres.fence`: makes a server that answers as a primary refuse
//! writes, without a command the operator writes and without its host:
//! `ALTER SYSTEM SET default_transaction_read_only = on`, `pg_reload_conf()`,
//! a new session must see it on, then every other client session is
//! terminated (see [`crate::connect::pg_cluster::fence`]). A replica is
//! left alone. `target` is one server (a cluster member) or
//! `CLUSTER/demoted`: every old primary of the cluster that answers as a
//! primary; one that is down is fenced on sight when it answers again.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::{Action, ActionContext, ActionResult, BuildError, Preflight};
use crate::config::{Config, TargetConfig};
use crate::connect::pg_cluster::{Cluster, Member, Seen, fence};

/// `action: postgres.fence, target: db/demoted`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceParams {
    /// A postgres target (one server), or `CLUSTER/demoted`.
    pub target: String,
}

enum Aim {
    One(Box<Member>),
    Demoted(Arc<Cluster>),
}

/// A runnable `postgres.fence`.
pub struct Fence {
    params: FenceParams,
    aim: Aim,
}

impl Fence {
    pub fn build(p: &FenceParams, config: &Config) -> Result<Self, BuildError> {
        let aim = match p.target.split_once('/') {
            Some((base, "demoted")) => Aim::Demoted(
                crate::connect::pg_cluster::cluster(config, base).ok_or_else(|| {
                    BuildError::Invalid(format!("target {base:?} is not a postgres cluster"))
                })?,
            ),
            Some((_, role)) => {
                return Err(BuildError::Invalid(format!(
                    "postgres.fence fences one server or CLUSTER/demoted, not {role:?}"
                )));
            }
            None => match config.targets.get(&p.target) {
                Some(TargetConfig::Postgres(t)) if !t.is_cluster() => Aim::One(Box::new(Member {
                    name: p.target.clone(),
                    target: t.clone(),
                })),
                _ => {
                    return Err(BuildError::Invalid(format!(
                        "target {:?} is not one postgres server",
                        p.target
                    )));
                }
            },
        };
        Ok(Fence {
            params: p.clone(),
            aim,
        })
    }
}

#[async_trait::async_trait]
impl Action for Fence {
    fn describe(&self) -> String {
        format!(
            "postgres.fence of {} (default_transaction_read_only = on, client sessions terminated)",
            self.params.target
        )
    }

    fn inputs(&self) -> serde_json::Value {
        json!({ "target": self.params.target })
    }

    async fn preflight(&self, _ctx: &ActionContext) -> Preflight {
        Preflight::default()
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        let t = ctx.timeout;
        match &self.aim {
            Aim::One(m) => match fence(m, t).await {
                Ok(r) => ActionResult::ok(r.detail, json!({ "terminated": r.terminated })),
                Err(e) => ActionResult::failed(e, json!({})),
            },
            Aim::Demoted(c) => {
                let view = c.discover(t).await;
                if view.demoted.is_empty() {
                    return ActionResult::ok(
                        format!("cluster {:?} has no old primary to fence", c.name),
                        json!({ "fenced": [] }),
                    );
                }
                let mut done = Vec::new();
                let mut failed = Vec::new();
                for name in view.demoted.keys() {
                    let Some(m) = c.member(name) else { continue };
                    match view.seen(name) {
                        Some(Seen::Answered(a)) if !a.in_recovery && a.read_only => done.push(
                            format!(
                                "{name} is already fenced (default_transaction_read_only = on): rebuild it as a replica"
                            ),
                        ),
                        Some(Seen::Answered(a)) if !a.in_recovery => match fence(m, t).await {
                            Ok(r) => done.push(r.detail),
                            Err(e) => failed.push(e),
                        },
                        Some(Seen::Answered(_)) => done.push(format!(
                            "{name} is in recovery (a standby, read-only) but does not follow the new primary yet: nothing to fence; rebuild it as a replica"
                        )),
                        _ => done.push(format!(
                            "{name} does not answer: fenced on sight when it answers again"
                        )),
                    }
                }
                let data = json!({ "fenced": done, "failed": failed });
                if failed.is_empty() {
                    ActionResult::ok(done.join("; "), data)
                } else {
                    ActionResult::failed(failed.join("; "), data)
                }
            }
        }
    }
}

impl super::ActionKind for FenceParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::field_pos;
        let (base, role) = match self.target.split_once('/') {
            Some((b, r)) => (b, Some(r)),
            None => (self.target.as_str(), None),
        };
        v.target(p, "target", base, &["postgres"], "postgres.fence");
        let cluster = v.config.and_then(|c| match c.targets.get(base) {
            Some(TargetConfig::Postgres(t)) => Some(t.is_cluster()),
            _ => None,
        });
        match (role, cluster) {
            (None, Some(true)) => v.err(
                field_pos(p, "target"),
                format!(
                    "{base:?} is a cluster: fencing its primary would stop every write; name a member, or {:?} for its old primaries",
                    format!("{base}/demoted")
                ),
            ),
            (Some("demoted"), Some(false)) => v.err(
                field_pos(p, "target"),
                format!("target {base:?} is one server, not a cluster (members)"),
            ),
            (Some(r), _) if r != "demoted" => v.err(
                field_pos(p, "target"),
                format!("postgres.fence fences one server or {base}/demoted, not {r:?}"),
            ),
            _ => {}
        }
    }

    fn targets(&self) -> Vec<String> {
        vec![self.target.clone()]
    }

    fn build(&self, config: &Config) -> Result<std::sync::Arc<dyn Action>, BuildError> {
        Ok(std::sync::Arc::new(Fence::build(self, config)?))
    }
}
