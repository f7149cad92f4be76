//! PostgreSQL actions: replica promotion and data quarantine.
//!
//! `postgres.promote-replica` keeps the promotion safety rules (DESIGN.md):
//! its preflight gates are, in order,
//! 1. `cooldown`: one failover per cluster (primary) per cooldown, counted
//!    from the ledger across scenarios, in-flight promotions included;
//! 2. `primary-unreachable`: what the engine saw: a symptom checking the
//!    primary has seen it *failing* (not unknown) for at least N consecutive
//!    checks over at least T. Too early is "not yet": re-checked, not refused;
//! 3. `no-other-primary`: no reachable node answers `pg_is_in_recovery() =
//!    false`, unless a `fence` is configured: it runs before the promotion,
//!    and the promotion goes ahead only if the old primary no longer answers
//!    as primary afterwards;
//! 4. one `candidate NAME` gate per replica: reachable, in recovery,
//!    streaming (it has received WAL from a primary), priority above 0, and
//!    lag within `max_lag_bytes`. Lag is measured against the most advanced
//!    WAL position medic can see: the received LSN of every reachable
//!    replica (and the primary's, were it reachable). WAL the dead primary
//!    never shipped to anyone cannot be measured by anyone;
//! 5. `candidate-chosen`: eligible candidates ranked by received LSN, then
//!    priority (higher first), then name.
//!
//! Then `run` fences (if configured), calls `pg_promote(true, timeout)` on
//! the chosen candidate, and verifies `pg_is_in_recovery() = false` and a
//! new timeline: only then does the step count as worked (its follow-ups,
//! `then: continue`, repoint the clients).
//!
//! `postgres.quarantine` moves the rows a condition selects into a
//! quarantine table, in one transaction with the source table locked against
//! writes: count (refusing more than `max_rows`), copy, delete exactly the
//! copied rows, check the counts, commit. Nothing is deleted that was not
//! first copied; a mismatch rolls everything back.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio_postgres::{Client, NoTls};

use super::exec::{ExecAction, ExecParams};
use super::{Action, ActionContext, ActionResult, BuildError, Gate, Preflight};
use crate::config::{Config, PostgresTarget, TargetConfig};
use crate::connect::pg_cluster::Cluster;
use crate::duration::Dur;
use crate::observe::Seen;
use crate::store::AttemptOutcome;

/// Default `max_lag_bytes`: the runbook's RPO, 1 MiB.
pub const DEFAULT_MAX_LAG_BYTES: u64 = 1024 * 1024;
/// Default `unreachable_checks`.
pub const DEFAULT_UNREACHABLE_CHECKS: u32 = 3;
/// Default `unreachable_for`.
pub const DEFAULT_UNREACHABLE_FOR: Dur = Dur::secs(5);
/// Default `cooldown`: one failover per cluster per hour.
pub const DEFAULT_COOLDOWN: Dur = Dur::secs(3600);
/// The longest wait for one node to answer during the gates.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How much longer than the candidates medic waits for an old primary its
/// checks have already seen failing for `unreachable_checks` over
/// `unreachable_for`, when it can fence it (a cluster fences it on sight
/// should it answer later; a `fence` command runs anyway): a silent
/// primary costs this, not a full [`PROBE_TIMEOUT`], before the promotion.
const SILENT_GRACE: Duration = Duration::from_millis(250);

/// A replica that may be promoted: a target name, or `{ target, priority }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Candidate {
    Name(String),
    Ranked {
        target: String,
        /// Higher is preferred; 0 = never promote this one. Default 1.
        priority: u32,
    },
}

impl Candidate {
    pub fn target(&self) -> &str {
        match self {
            Candidate::Name(n) | Candidate::Ranked { target: n, .. } => n,
        }
    }

    pub fn priority(&self) -> u32 {
        match self {
            Candidate::Name(_) => 1,
            Candidate::Ranked { priority, .. } => *priority,
        }
    }
}

/// `postgres.promote-replica` under the promotion safety rules.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteReplicaParams {
    /// The primary (a config target of kind `postgres`).
    pub primary: String,
    /// Candidate replicas (config targets of kind `postgres`). With a
    /// cluster `primary`: optional, members with priorities; default every
    /// member but the old primary, priority 1.
    #[serde(default)]
    pub replicas: Vec<Candidate>,
    /// Refuse candidates lagging more than this (default 1 MiB).
    pub max_lag_bytes: Option<u64>,
    /// The primary must have been unreachable for this many checks...
    pub unreachable_checks: Option<u32>,
    /// ...over at least this long.
    pub unreachable_for: Option<Dur>,
    /// One failover per cluster per cooldown.
    pub cooldown: Option<Dur>,
    /// A command that makes sure the old primary cannot accept writes
    /// (stop it, cut it off, or mark it a standby) before the promotion.
    pub fence: Option<ExecParams>,
    /// When the old primary cannot be reached to fence it (its host is
    /// gone): `proceed` (default) promotes anyway, because clients are
    /// repointed by the next steps and a cluster fences the old primary on
    /// sight when it answers again; `refuse` does not promote until it can
    /// be fenced (no split brain ever, at the price of no primary).
    pub old_primary_unreachable: Option<OldPrimaryUnreachable>,
}

/// `old_primary_unreachable: proceed | refuse`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OldPrimaryUnreachable {
    #[default]
    Proceed,
    Refuse,
}

/// `postgres.quarantine`: copy then delete affected rows, in one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineParams {
    pub target: String,
    /// The source table.
    pub table: String,
    /// The condition selecting corrupted rows.
    #[serde(rename = "where")]
    pub where_: String,
    /// Where the rows go; default `{table}_quarantine`.
    pub into: Option<String>,
    /// Refuse when more rows than this match.
    pub max_rows: Option<u64>,
}

/// Connection details of one node, the password resolved when connecting.
#[derive(Clone, Debug)]
struct Node {
    name: String,
    target: PostgresTarget,
}

fn node(config: &Config, name: &str) -> Result<Node, BuildError> {
    match config.targets.get(name) {
        Some(TargetConfig::Postgres(t)) => Ok(Node {
            name: name.to_string(),
            target: t.clone(),
        }),
        _ => Err(BuildError::Invalid(format!(
            "target {name:?} is not a postgres target"
        ))),
    }
}

/// Connects to one node; the connection task ends with the client.
async fn connect(n: &Node, timeout: Duration) -> Result<Client, String> {
    let cfg = crate::connect::postgres(&n.target, "medic", timeout)
        .map_err(|e| format!("{}: {e}", n.name))?;
    let (client, conn) = tokio::time::timeout(timeout, cfg.connect(NoTls))
        .await
        .map_err(|_| {
            format!(
                "{}: no answer within {}",
                n.name,
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|e| format!("{}: {}", n.name, pg_error(&e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The server's message when there is one (the Display of a db error is
/// just "db error").
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// `16/B374D848` → a byte position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// A byte position → `16/B374D848`.
pub fn format_lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xFFFF_FFFF)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// What one node answered.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
struct NodeState {
    in_recovery: bool,
    /// Last WAL received by streaming (replicas), or written (a primary).
    received: Option<u64>,
    replayed: Option<u64>,
    timeline: Option<u32>,
    /// `primary_conninfo` is set: a streaming replica.
    streaming: bool,
}

const PROBE_SQL: &str = "\
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()::text
            ELSE pg_current_wal_lsn()::text END,
       pg_last_wal_replay_lsn()::text,
       CASE WHEN pg_is_in_recovery()
            THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1),
                          (SELECT timeline_id FROM pg_control_checkpoint()))::bigint
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END,
       current_setting('primary_conninfo') <> ''";

async fn probe(n: &Node, timeout: Duration) -> Result<NodeState, String> {
    let client = connect(n, timeout).await?;
    let row = tokio::time::timeout(timeout, client.query_one(PROBE_SQL, &[]))
        .await
        .map_err(|_| {
            format!(
                "{}: no answer within {}",
                n.name,
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|e| format!("{}: {}", n.name, pg_error(&e)))?;
    let lsn = |i: usize| {
        row.get::<_, Option<String>>(i)
            .as_deref()
            .and_then(parse_lsn)
    };
    Ok(NodeState {
        in_recovery: row.get(0),
        received: lsn(1),
        replayed: lsn(2),
        timeline: row.get::<_, Option<i64>>(3).map(|t| t as u32),
        streaming: row.get(4),
    })
}

/// A runnable `postgres.promote-replica`.
pub struct PromoteReplica {
    params: PromoteReplicaParams,
    /// One server: the configured primary and replicas.
    fixed: Option<Roles>,
    /// A cluster: the old primary is the member last seen as primary, the
    /// candidates the others.
    cluster: Option<Arc<Cluster>>,
    /// With a cluster: the `replicas` listed (members or not: a replica in
    /// another region may be promoted too); empty: every other member.
    listed: Vec<(Node, u32)>,
    fence: Option<ExecAction>,
}

/// Who is the old primary and who may be promoted.
#[derive(Clone)]
struct Roles {
    primary: Node,
    candidates: Vec<(Node, u32)>,
}

impl PromoteReplica {
    pub fn build(p: &PromoteReplicaParams, config: &Config) -> Result<Self, BuildError> {
        let fence = p.fence.as_ref().map(ExecAction::build).transpose()?;
        if let Some(c) = crate::connect::pg_cluster::cluster(config, &p.primary) {
            let listed = p
                .replicas
                .iter()
                .map(|c| Ok((node(config, c.target())?, c.priority())))
                .collect::<Result<Vec<_>, BuildError>>()?;
            return Ok(PromoteReplica {
                params: p.clone(),
                fixed: None,
                cluster: Some(c),
                listed,
                fence,
            });
        }
        let primary = node(config, &p.primary)?;
        let candidates = p
            .replicas
            .iter()
            .map(|c| Ok((node(config, c.target())?, c.priority())))
            .collect::<Result<Vec<_>, BuildError>>()?;
        if candidates.is_empty() {
            return Err(BuildError::Invalid(
                "postgres.promote-replica needs at least one replica".into(),
            ));
        }
        Ok(PromoteReplica {
            params: p.clone(),
            fixed: Some(Roles {
                primary,
                candidates,
            }),
            cluster: None,
            listed: Vec::new(),
            fence,
        })
    }

    /// The roles now: for a cluster, `old` (from the preflight) or the
    /// member last seen as primary is the old primary.
    async fn roles(&self, ctx: &ActionContext, old: Option<&str>) -> Result<Roles, String> {
        if let Some(r) = &self.fixed {
            return Ok(r.clone());
        }
        let Some(c) = &self.cluster else {
            return Err("neither a primary nor a cluster".into());
        };
        let old = match old.map(str::to_string).or_else(|| c.last_primary()) {
            Some(o) => o,
            None => {
                let view = c.discover(Self::probe_timeout(ctx)).await;
                c.last_primary().ok_or_else(|| {
                    format!(
                        "cluster {:?} has no known primary: medic never saw a member answer as primary ({})",
                        c.name,
                        view.summary()
                    )
                })?
            }
        };
        let as_node = |m: &crate::connect::pg_cluster::Member| Node {
            name: m.name.clone(),
            target: m.target.clone(),
        };
        let primary = c
            .member(&old)
            .map(as_node)
            .ok_or_else(|| format!("{old:?} is not a member of cluster {:?}", c.name))?;
        let candidates = if self.listed.is_empty() {
            c.members
                .iter()
                .filter(|m| m.name != old)
                .map(|m| (as_node(m), 1))
                .collect()
        } else {
            self.listed
                .iter()
                .filter(|(n, _)| n.name != old)
                .cloned()
                .collect()
        };
        Ok(Roles {
            primary,
            candidates,
        })
    }

    fn on_unreachable(&self) -> OldPrimaryUnreachable {
        self.params.old_primary_unreachable.unwrap_or_default()
    }

    /// Whether the old primary can be fenced by medic itself (a cluster
    /// member: SQL fence now, fence on sight later) or by the `fence`
    /// command.
    fn can_fence(&self) -> bool {
        self.fence.is_some() || self.cluster.is_some()
    }

    fn max_lag(&self) -> u64 {
        self.params.max_lag_bytes.unwrap_or(DEFAULT_MAX_LAG_BYTES)
    }

    fn probe_timeout(ctx: &ActionContext) -> Duration {
        ctx.timeout.min(PROBE_TIMEOUT)
    }

    /// Gate 1: one failover per cluster per cooldown.
    async fn cooldown_gate(&self, ctx: &ActionContext) -> Gate {
        let cooldown = self.params.cooldown.unwrap_or(DEFAULT_COOLDOWN);
        let Some(ledger) = &ctx.ledger else {
            return Gate::pass("cooldown", "no ledger (not run by the executor)");
        };
        let window = chrono::Duration::from_std(cooldown.get()).unwrap_or(chrono::Duration::MAX);
        let since = ctx
            .now
            .checked_sub_signed(window)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let past = match ledger
            .action_attempts_since("postgres.promote-replica", since)
            .await
        {
            Ok(p) => p,
            Err(e) => return Gate::fail("cooldown", format!("cannot read the ledger: {e}")),
        };
        let mut same_cluster = past.iter().filter(|a| {
            a.key != ctx.key
                && a.inputs["params"]["primary"].as_str() == Some(self.params.primary.as_str())
                && matches!(a.outcome, None | Some(AttemptOutcome::Succeeded))
        });
        match same_cluster.next_back() {
            Some(a) => Gate::fail(
                "cooldown",
                format!(
                    "a failover of cluster {:?} {} at {} (attempt {}); one per {cooldown}",
                    self.params.primary,
                    if a.outcome.is_none() {
                        "is in flight since"
                    } else {
                        "succeeded"
                    },
                    a.started_at.to_rfc3339(),
                    a.key
                ),
            ),
            None => Gate::pass(
                "cooldown",
                format!(
                    "no failover of cluster {:?} in the last {cooldown}",
                    self.params.primary
                ),
            ),
        }
    }

    /// Gate 2: what the engine saw of the primary.
    fn unreachable_gate(&self, ctx: &ActionContext) -> Gate {
        let need_n = self
            .params
            .unreachable_checks
            .unwrap_or(DEFAULT_UNREACHABLE_CHECKS);
        let need_t = self
            .params
            .unreachable_for
            .unwrap_or(DEFAULT_UNREACHABLE_FOR)
            .get();
        let watching: Vec<_> = ctx
            .observations
            .iter()
            .filter(|o| o.target.as_deref() == Some(self.params.primary.as_str()))
            .collect();
        if watching.is_empty() {
            return Gate::fail(
                "primary-unreachable",
                format!(
                    "no symptom of this scenario checks the primary {:?}",
                    self.params.primary
                ),
            );
        }
        // The symptom with the longest failing streak speaks for the
        // primary. Failing (or unreachable) only: unknown is medic's own
        // blindness, never the primary's absence.
        let now = tokio::time::Instant::now();
        let best = watching
            .iter()
            .filter(|o| o.view.seen.is_failing())
            .max_by_key(|o| o.view.streak);
        let Some(o) = best else {
            let seen: Vec<String> = watching
                .iter()
                .map(|o| format!("{} last seen {:?}", o.symptom, o.view.seen))
                .collect();
            let blind = watching.iter().any(|o| o.view.seen == Seen::Unknown);
            let mut detail = format!("the primary is not seen failing ({})", seen.join(", "));
            if blind {
                detail.push_str("; unknown is not unreachable");
            }
            return Gate::fail("primary-unreachable", detail);
        };
        // The silence is counted from the primary's last good answer when
        // it came right before the failing streak (Sentinel's down-after),
        // else from the streak's first check.
        let age = o
            .view
            .quiet_since
            .or(o.view.streak_since)
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let mut detail = format!(
            "symptom {} saw {:?} fail {} consecutive checks, {:.1}s since its last answer (need {need_n} over {})",
            o.symptom,
            self.params.primary,
            o.view.streak,
            age.as_secs_f64(),
            humantime::format_duration(need_t)
        );
        // With several replicas, this one's view is subjective: a quorum
        // of observers must see the primary failing too.
        if let Some(q) = &o.quorum {
            detail.push_str(&format!("; {}", q.describe()));
        }
        let objective = o.quorum.is_none_or(|q| q.met());
        if o.view.streak >= need_n && age >= need_t && objective {
            Gate::pass("primary-unreachable", detail)
        } else {
            let wait = need_t.saturating_sub(age).max(Duration::from_millis(200));
            Gate::not_yet("primary-unreachable", detail, wait)
        }
    }

    /// Probes the old primary and every candidate at once, once the
    /// primary-unreachable gate passed. With a way to fence, the old
    /// primary gets [`SILENT_GRACE`] beyond the candidates' answers: the
    /// evidence in hand already says it is gone, and a late answer would be
    /// fenced (on sight, or by the fence command).
    async fn probe_all(
        &self,
        roles: &Roles,
        ctx: &ActionContext,
    ) -> (Result<NodeState, String>, Vec<Result<NodeState, String>>) {
        let t = Self::probe_timeout(ctx);
        let primary = probe(&roles.primary, t);
        let replicas =
            futures_util::future::join_all(roles.candidates.iter().map(|(n, _)| probe(n, t)));
        if !self.can_fence() {
            return tokio::join!(primary, replicas);
        }
        tokio::pin!(primary, replicas);
        let mut early = None;
        let replicas = loop {
            tokio::select! {
                p = &mut primary, if early.is_none() => early = Some(p),
                r = &mut replicas => break r,
            }
        };
        let primary = match early {
            Some(p) => p,
            None => tokio::time::timeout(SILENT_GRACE, primary)
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "{}: no answer within {} after the candidates answered, and its checks saw it failing",
                        roles.primary.name,
                        humantime::format_duration(SILENT_GRACE)
                    ))
                }),
        };
        (primary, replicas)
    }
}

#[async_trait::async_trait]
impl Action for PromoteReplica {
    fn describe(&self) -> String {
        let names: Vec<&str> = match (&self.fixed, &self.cluster) {
            (Some(r), _) => r.candidates.iter().map(|(n, _)| n.name.as_str()).collect(),
            (None, Some(c)) => c.members.iter().map(|m| m.name.as_str()).collect(),
            (None, None) => Vec::new(),
        };
        format!(
            "postgres.promote-replica of the best of [{}] (primary {}{})",
            names.join(", "),
            self.params.primary,
            if self.fence.is_some() {
                ", fenced first"
            } else {
                ""
            }
        )
    }

    fn inputs(&self) -> serde_json::Value {
        json!({
            "primary": self.params.primary,
            "replicas": match &self.fixed {
                Some(r) => r.candidates.iter().map(|(n, p)| json!({ "target": n.name, "priority": p })).collect::<Vec<_>>(),
                None => self.params.replicas.iter().map(|c| json!({ "target": c.target(), "priority": c.priority() })).collect(),
            },
            "cluster": self.cluster.as_ref().map(|c| c.members.iter().map(|m| m.name.clone()).collect::<Vec<_>>()),
            "old_primary_unreachable": match self.on_unreachable() { OldPrimaryUnreachable::Proceed => "proceed", OldPrimaryUnreachable::Refuse => "refuse" },
            "max_lag_bytes": self.max_lag(),
            "unreachable_checks": self.params.unreachable_checks.unwrap_or(DEFAULT_UNREACHABLE_CHECKS),
            "unreachable_for": self.params.unreachable_for.unwrap_or(DEFAULT_UNREACHABLE_FOR).to_string(),
            "cooldown": self.params.cooldown.unwrap_or(DEFAULT_COOLDOWN).to_string(),
            "fence": self.fence.as_ref().map(|f| f.inputs()),
        })
    }

    async fn preflight(&self, ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        if !pre.gate(self.cooldown_gate(ctx).await) {
            return pre;
        }
        if !pre.gate(self.unreachable_gate(ctx)) {
            return pre;
        }
        let roles = match self.roles(ctx, None).await {
            Ok(r) => r,
            Err(e) => {
                pre.gate(Gate::fail("cluster-roles", e));
                return pre;
            }
        };
        if let Some(c) = &self.cluster {
            pre.gate(Gate::pass(
                "cluster-roles",
                format!(
                    "cluster {:?}: old primary {} (the member last seen as primary), candidates {}",
                    c.name,
                    roles.primary.name,
                    roles
                        .candidates
                        .iter()
                        .map(|(n, _)| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let (primary, replicas) = self.probe_all(&roles, ctx).await;
        let mut seen = BTreeMap::new();
        seen.insert(
            roles.primary.name.clone(),
            match &primary {
                Ok(s) => json!(s),
                Err(e) => json!({ "unreachable": e }),
            },
        );
        // Gate 3: nobody else answers as primary.
        let mut as_primary: Vec<&str> = Vec::new();
        for ((n, _), r) in roles.candidates.iter().zip(&replicas) {
            seen.insert(
                n.name.clone(),
                match r {
                    Ok(s) => json!(s),
                    Err(e) => json!({ "unreachable": e }),
                },
            );
            if matches!(r, Ok(s) if !s.in_recovery) {
                as_primary.push(&n.name);
            }
        }
        let old_is_primary = matches!(&primary, Ok(s) if !s.in_recovery);
        let gate = if !as_primary.is_empty() {
            Gate::fail(
                "no-other-primary",
                format!(
                    "{} already answer(s) as primary (pg_is_in_recovery() = false)",
                    as_primary.join(", ")
                ),
            )
        } else if old_is_primary && !self.can_fence() {
            Gate::fail(
                "no-other-primary",
                format!(
                    "the old primary {:?} still answers as primary; without a fence medic does not promote beside it",
                    roles.primary.name
                ),
            )
        } else if old_is_primary {
            Gate::pass(
                "no-other-primary",
                format!(
                    "the old primary {:?} still answers as primary: {} first (checked again after fencing)",
                    roles.primary.name,
                    if self.fence.is_some() {
                        "the fence must stop it"
                    } else {
                        "medic fences it (default_transaction_read_only, sessions terminated)"
                    }
                ),
            )
        } else {
            Gate::pass(
                "no-other-primary",
                format!(
                    "no reachable node answers as primary ({} {})",
                    roles.primary.name,
                    match &primary {
                        Ok(_) => "is in recovery".to_string(),
                        Err(e) => format!("is unreachable: {e}"),
                    }
                ),
            )
        };
        pre.data = json!({ "nodes": seen, "old_primary": roles.primary.name });
        if !pre.gate(gate) {
            return pre;
        }
        // The old primary cannot be fenced while it is unreachable.
        if let Err(e) = &primary
            && self.can_fence()
        {
            let name = &roles.primary.name;
            let policy = match self.on_unreachable() {
                OldPrimaryUnreachable::Proceed => "proceed",
                OldPrimaryUnreachable::Refuse => "refuse",
            };
            // Its data directory on medic's host: demoted on disk first.
            let on_disk = self
                .cluster
                .as_ref()
                .and_then(|_| roles.primary.target.data_dir.as_deref())
                .map(|d| (d, crate::connect::pg_demote::reachable(d)));
            let gate = match (self.on_unreachable(), &self.cluster) {
                _ if self.fence.is_some() => Gate::pass(
                    "old-primary-fenced",
                    format!(
                        "{name} is unreachable ({e}): the fence command runs first; should it fail, old_primary_unreachable: {policy}"
                    ),
                ),
                (_, Some(_)) if matches!(on_disk, Some((_, Ok(())))) => Gate::pass(
                    "old-primary-fenced",
                    format!(
                        "{name} cannot be reached to fence it ({e}); its data directory {} is on medic's host: it is demoted on disk before the promotion (standby.signal, primary_conninfo to the new primary), so it restarts in recovery",
                        on_disk
                            .map(|(d, _)| d.display().to_string())
                            .unwrap_or_default()
                    ),
                ),
                (_, Some(_))
                    if on_disk.is_none() && roles.primary.target.demote_command.is_some() =>
                {
                    Gate::pass(
                        "old-primary-fenced",
                        format!(
                            "{name} cannot be reached to fence it ({e}); its demote_command runs before the promotion (it restarts as a standby of the new primary); should it fail, old_primary_unreachable: {policy}"
                        ),
                    )
                }
                (OldPrimaryUnreachable::Refuse, _) if matches!(on_disk, Some((_, Err(_)))) => {
                    Gate::fail(
                        "old-primary-fenced",
                        format!(
                            "{name} cannot be reached to fence it ({e}), nor its data directory ({}); old_primary_unreachable: refuse",
                            on_disk.and_then(|(_, r)| r.err()).unwrap_or_default()
                        ),
                    )
                }
                (OldPrimaryUnreachable::Proceed, Some(c))
                    if matches!(on_disk, Some((_, Err(_)))) =>
                {
                    Gate::pass(
                        "old-primary-fenced",
                        format!(
                            "{name} cannot be reached to fence it ({e}), nor its data directory ({}); old_primary_unreachable: proceed: clients are repointed, and cluster {:?} fences {name} on sight when it answers again",
                            on_disk.and_then(|(_, r)| r.err()).unwrap_or_default(),
                            c.name
                        ),
                    )
                }
                (OldPrimaryUnreachable::Refuse, _) => Gate::fail(
                    "old-primary-fenced",
                    format!(
                        "{name} cannot be reached to fence it ({e}); old_primary_unreachable: refuse"
                    ),
                ),
                (OldPrimaryUnreachable::Proceed, Some(c)) => Gate::pass(
                    "old-primary-fenced",
                    format!(
                        "{name} cannot be reached to fence it ({e}); old_primary_unreachable: proceed: clients are repointed, and cluster {:?} fences {name} on sight when it answers again",
                        c.name
                    ),
                ),
                (OldPrimaryUnreachable::Proceed, None) => Gate::pass(
                    "old-primary-fenced",
                    format!(
                        "{name} cannot be reached to fence it ({e}); old_primary_unreachable: proceed: clients are repointed (make the primary a cluster to fence it on sight when it answers again)"
                    ),
                ),
            };
            if !pre.gate(gate) {
                return pre;
            }
            pre.data["fence_unreachable"] = json!(true);
        }
        // Gate 4: each candidate.
        let reference = replicas
            .iter()
            .filter_map(|r| r.as_ref().ok().and_then(|s| s.received))
            .chain(primary.as_ref().ok().and_then(|s| s.received))
            .max();
        let mut eligible = Vec::new();
        for ((n, prio), r) in roles.candidates.iter().zip(&replicas) {
            let name = format!("candidate {}", n.name);
            let gate = match r {
                Err(e) => Gate::fail(&name, format!("unreachable: {e}")),
                Ok(s) if !s.in_recovery => Gate::fail(&name, "not in recovery"),
                Ok(s) if !s.streaming => {
                    Gate::fail(&name, "not a streaming replica (primary_conninfo is empty)")
                }
                Ok(NodeState { received: None, .. }) => {
                    Gate::fail(&name, "has received no WAL by streaming")
                }
                Ok(_) if *prio == 0 => Gate::fail(&name, "priority 0: never promoted"),
                Ok(s) => {
                    let received = s.received.unwrap_or(0);
                    let lag = reference.unwrap_or(received).saturating_sub(received);
                    let detail = format!(
                        "in recovery, streaming, received {}, lag {} (max {}), priority {prio}",
                        format_lsn(received),
                        mib(lag),
                        mib(self.max_lag())
                    );
                    if lag > self.max_lag() {
                        Gate::fail(
                            &name,
                            format!("lags {} behind the most advanced node: {detail}", mib(lag)),
                        )
                    } else {
                        eligible.push((n, *prio, received, s.timeline));
                        Gate::pass(&name, detail)
                    }
                }
            };
            // One candidate refused does not refuse the step: the ranking
            // below does, when none is left.
            pre.gate(Gate {
                advisory: !gate.passed,
                ..gate
            });
        }
        // Gate 5: the ranking. Refusals of single candidates are reported
        // above; the step is refused only when none is left.
        eligible.sort_by(|a, b| {
            b.2.cmp(&a.2)
                .then(b.1.cmp(&a.1))
                .then(a.0.name.cmp(&b.0.name))
        });
        let rejected: Vec<String> = roles
            .candidates
            .iter()
            .zip(&replicas)
            .filter(|((n, _), _)| !eligible.iter().any(|e| e.0.name == n.name))
            .map(|((n, _), _)| n.name.clone())
            .collect();
        match eligible.first() {
            Some((n, prio, received, timeline)) => {
                let ranking: Vec<&str> = eligible.iter().map(|e| e.0.name.as_str()).collect();
                pre.gate(Gate::pass(
                    "candidate-chosen",
                    format!(
                        "{} (received {}, priority {prio}); ranking by received LSN, priority, name: {}",
                        n.name,
                        format_lsn(*received),
                        ranking.join(" > ")
                    ),
                ));
                pre.data["candidate"] = json!(n.name);
                pre.data["timeline_before"] = json!(timeline);
                pre.data["fence_old_primary"] = json!(old_is_primary);
            }
            None => {
                pre.gate(Gate::fail(
                    "candidate-chosen",
                    format!("no eligible candidate ({} refused)", rejected.join(", ")),
                ));
            }
        }
        pre.data["refused_candidates"] = json!(rejected);
        pre
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        let started = tokio::time::Instant::now();
        let Some(chosen) = ctx.preflight["candidate"].as_str() else {
            return ActionResult::failed("no candidate chosen by the preflight", json!({}));
        };
        let roles = match self.roles(ctx, ctx.preflight["old_primary"].as_str()).await {
            Ok(r) => r,
            Err(e) => return ActionResult::failed(e, json!({ "candidate": chosen })),
        };
        let Some((node, _)) = roles.candidates.iter().find(|(n, _)| n.name == chosen) else {
            return ActionResult::failed(format!("unknown candidate {chosen:?}"), json!({}));
        };
        let mut data = json!({ "candidate": chosen, "old_primary": roles.primary.name });
        let mut demoted: Option<crate::connect::pg_demote::Demoted> = None;
        let mut remote_demotion: Option<String> = None;
        let t = Self::probe_timeout(ctx);
        // Fence first: the old primary must not accept writes any more.
        if let Some(fence) = &self.fence {
            let r = fence.run(ctx).await;
            data["fence"] = json!({ "ok": r.ok, "detail": r.detail, "output": r.data });
            if !r.ok {
                let unreachable = probe(&roles.primary, t).await.err();
                match (unreachable, self.on_unreachable()) {
                    (Some(e), OldPrimaryUnreachable::Proceed) => {
                        data["fence"]["skipped"] = json!(format!(
                            "{} is unreachable ({e}); old_primary_unreachable: proceed",
                            roles.primary.name
                        ));
                    }
                    _ => {
                        return ActionResult::failed(
                            format!("fence failed ({}); not promoting", r.detail),
                            data,
                        );
                    }
                }
            }
        } else if let Some(c) = &self.cluster
            && let Some(m) = c.member(&roles.primary.name)
        {
            // One the preflight found unreachable gets a short look only:
            // should it answer later, the cluster fences it on sight (or it
            // was demoted on disk below).
            let look = if ctx.preflight["fence_unreachable"] == json!(true) {
                SILENT_GRACE.min(t)
            } else {
                t
            };
            match probe(&roles.primary, look).await {
                // medic's own fence, when the old primary answers as primary.
                Ok(s) if !s.in_recovery => match crate::connect::pg_cluster::fence(m, t).await {
                    Ok(r) => data["fence"] = json!({ "ok": true, "detail": r.detail }),
                    Err(e) => {
                        data["fence"] = json!({ "ok": false, "detail": e });
                        return ActionResult::failed(
                            format!("fence of {} failed ({e}); not promoting", m.name),
                            data,
                        );
                    }
                },
                Ok(_) => {}
                // Down, and its data directory is here: demoted on disk
                // before the promotion, so a restart never brings it back
                // as a primary.
                Err(_) if m.target.data_dir.is_some() => {
                    let dir = m.target.data_dir.as_deref().unwrap_or(Path::new(""));
                    let why = format!(
                        "medic {}: demoted by the failover of cluster {} to {chosen} (incident {}); remove standby.signal only to rebuild this server",
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        c.name,
                        ctx.key
                    );
                    match crate::connect::pg_demote::demote(
                        dir,
                        &m.name,
                        chosen,
                        &node.target,
                        &why,
                    ) {
                        Ok(d) => {
                            data["fence"] =
                                json!({ "ok": true, "detail": d.detail, "on_disk": true });
                            demoted = Some(d);
                        }
                        Err(e) => {
                            data["fence"] = json!({ "ok": false, "detail": e, "on_disk": true });
                            if self.on_unreachable() == OldPrimaryUnreachable::Refuse {
                                return ActionResult::failed(
                                    format!(
                                        "demoting {} on disk failed ({e}); old_primary_unreachable: refuse: not promoting",
                                        m.name
                                    ),
                                    data,
                                );
                            }
                            data["fence"]["skipped"] = json!(format!(
                                "demoting {} on disk failed ({e}); old_primary_unreachable: proceed: fenced on sight when it answers again",
                                m.name
                            ));
                        }
                    }
                }
                // Down, on another host: its own demote command (ssh...).
                Err(_) if m.target.demote_command.is_some() => {
                    let args = m.target.demote_command.clone().unwrap_or_default();
                    let env = [
                        ("MEDIC_MEMBER", m.name.clone()),
                        ("MEDIC_NEW_PRIMARY", chosen.to_string()),
                        ("MEDIC_PRIMARY_HOST", node.target.host.clone()),
                        ("MEDIC_PRIMARY_PORT", node.target.port.to_string()),
                        (
                            "MEDIC_PRIMARY_CONNINFO",
                            crate::connect::pg_demote::conninfo(&node.target, &m.name),
                        ),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), super::k8s::EnvValue::Plain(v)))
                    .collect();
                    let r = match ExecAction::build(&ExecParams {
                        args,
                        env,
                        cwd: None,
                    }) {
                        Ok(a) => a.run(ctx).await,
                        Err(e) => ActionResult::failed(e.to_string(), json!({})),
                    };
                    if r.ok {
                        let d = format!(
                            "{} demoted by its demote_command ({}): it restarts as a standby of {chosen}",
                            m.name, r.detail
                        );
                        data["fence"] = json!({ "ok": true, "detail": d, "command": r.data });
                        remote_demotion = Some(d);
                    } else {
                        data["fence"] =
                            json!({ "ok": false, "detail": r.detail, "command": r.data });
                        if self.on_unreachable() == OldPrimaryUnreachable::Refuse {
                            return ActionResult::failed(
                                format!(
                                    "the demote_command of {} failed ({}); old_primary_unreachable: refuse: not promoting",
                                    m.name, r.detail
                                ),
                                data,
                            );
                        }
                        data["fence"]["skipped"] = json!(format!(
                            "the demote_command of {} failed ({}); old_primary_unreachable: proceed: fenced on sight when it answers again",
                            m.name, r.detail
                        ));
                    }
                }
                Err(_) => {}
            }
        }
        if self.fence.is_some()
            && let Ok(s) = probe(&roles.primary, t).await
            && !s.in_recovery
        {
            return ActionResult::failed(
                format!(
                    "the old primary {:?} still answers as primary after fencing; not promoting",
                    roles.primary.name
                ),
                data,
            );
        }
        let r = self.promote(ctx, node, &roles, data, started).await;
        if let Some(d) = remote_demotion {
            return ActionResult {
                detail: format!("{}; {d}", r.detail),
                ..r
            };
        }
        let Some(d) = demoted else { return r };
        if r.ok {
            return ActionResult {
                detail: format!("{}; {}", r.detail, d.detail),
                ..r
            };
        }
        // Not promoted: the old primary is not left a standby of a
        // replica. A candidate out of recovery was promoted after all.
        if matches!(probe(node, t).await, Ok(s) if !s.in_recovery) {
            return ActionResult {
                detail: format!("{}; {}", r.detail, d.detail),
                ..r
            };
        }
        let undone = d
            .undo()
            .unwrap_or_else(|e| format!("undoing the demotion on disk failed: {e}"));
        ActionResult {
            detail: format!("{}; {undone}", r.detail),
            ..r
        }
    }

    async fn reconcile(&self, ctx: &ActionContext) -> Option<ActionResult> {
        PromoteReplica::reconcile_now(self, ctx).await
    }
}

impl PromoteReplica {
    /// `pg_promote` on `node`, then the verification: out of recovery, on
    /// a new timeline.
    async fn promote(
        &self,
        ctx: &ActionContext,
        node: &Node,
        roles: &Roles,
        mut data: serde_json::Value,
        started: tokio::time::Instant,
    ) -> ActionResult {
        let chosen = node.name.as_str();
        let t = Self::probe_timeout(ctx);
        let client = match connect(node, t).await {
            Ok(c) => c,
            Err(e) => return ActionResult::failed(e, data),
        };
        let before = ctx.preflight["timeline_before"].as_u64().map(|v| v as u32);
        // pg_promote's wait is whole seconds, at least 1, within our timeout.
        let wait_s = ctx.timeout.as_secs().clamp(1, 60) as i32;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&wait_s];
        let promoted = tokio::select! {
            r = client.query_one("SELECT pg_promote(true, $1)", &params) => r,
            _ = ctx.cancel.cancelled() => return ActionResult::failed("aborted: medic is stopping", data),
        };
        match promoted {
            Ok(row) if row.get::<_, bool>(0) => {}
            Ok(_) => {
                return ActionResult::failed(
                    format!("pg_promote on {chosen} did not finish within {wait_s}s"),
                    data,
                );
            }
            Err(e) => {
                return ActionResult::failed(
                    format!("pg_promote on {chosen}: {}", pg_error(&e)),
                    data,
                );
            }
        }
        // Verify: out of recovery, on a new timeline.
        let after = match probe(node, t).await {
            Ok(s) => s,
            Err(e) => return ActionResult::failed(format!("after pg_promote: {e}"), data),
        };
        data["timeline_before"] = json!(before);
        data["timeline_after"] = json!(after.timeline);
        data["took_ms"] = json!(started.elapsed().as_millis() as u64);
        if after.in_recovery {
            return ActionResult::failed(
                format!("{chosen} is still in recovery after pg_promote"),
                data,
            );
        }
        match (before, after.timeline) {
            (Some(b), Some(a)) if a > b => {
                if let Some(c) = &self.cluster {
                    c.demote(&roles.primary.name);
                }
                ActionResult::ok(
                    format!("{chosen} promoted: pg_is_in_recovery() = false, timeline {b} → {a}"),
                    data,
                )
            }
            (b, a) => ActionResult::failed(
                format!(
                    "{chosen} is out of recovery but its timeline did not advance ({b:?} → {a:?})"
                ),
                data,
            ),
        }
    }

    async fn reconcile_now(&self, ctx: &ActionContext) -> Option<ActionResult> {
        let t = Self::probe_timeout(ctx);
        let roles = self
            .roles(ctx, ctx.preflight["old_primary"].as_str())
            .await
            .ok()?;
        let states =
            futures_util::future::join_all(roles.candidates.iter().map(|(n, _)| probe(n, t))).await;
        let promoted: Vec<&str> = roles
            .candidates
            .iter()
            .zip(&states)
            .filter(|(_, s)| matches!(s, Ok(s) if !s.in_recovery))
            .map(|((n, _), _)| n.name.as_str())
            .collect();
        match promoted.as_slice() {
            [one] => Some(ActionResult::ok(
                format!("{one} answers as primary"),
                json!({ "candidate": one }),
            )),
            [] if states.iter().all(|s| s.is_ok()) => {
                Some(ActionResult::failed("no candidate was promoted", json!({})))
            }
            [] => None,
            many => Some(ActionResult::failed(
                format!("several candidates answer as primary: {}", many.join(", ")),
                json!({}),
            )),
        }
    }
}

/// A table name as validated by the rule loader (NAME or SCHEMA.NAME),
/// quoted for SQL.
fn quote_table(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// A runnable `postgres.quarantine`.
pub struct Quarantine {
    params: QuarantineParams,
    node: Node,
    into: String,
    max_rows: u64,
}

impl Quarantine {
    pub fn build(p: &QuarantineParams, config: &Config) -> Result<Self, BuildError> {
        let node = node(config, &p.target)?;
        let Some(max_rows) = p.max_rows else {
            return Err(BuildError::Invalid(
                "postgres.quarantine needs max_rows".into(),
            ));
        };
        Ok(Quarantine {
            into: p
                .into
                .clone()
                .unwrap_or_else(|| format!("{}_quarantine", p.table)),
            params: p.clone(),
            node,
            max_rows,
        })
    }

    fn count_sql(&self) -> String {
        format!(
            "SELECT count(*) FROM {} WHERE {}",
            quote_table(&self.params.table),
            self.params.where_
        )
    }

    async fn quarantine(&self, ctx: &ActionContext) -> Result<ActionResult, String> {
        let mut client = connect(&self.node, ctx.timeout).await?;
        let src = quote_table(&self.params.table);
        let dst = quote_table(&self.into);
        let err = |what: &'static str| {
            move |e: tokio_postgres::Error| format!("{what}: {}", pg_error(&e))
        };
        let tx = client.transaction().await.map_err(err("BEGIN"))?;
        // Writers wait; readers go on. Rows cannot change between count,
        // copy and delete.
        tx.batch_execute(&format!("LOCK TABLE {src} IN SHARE ROW EXCLUSIVE MODE"))
            .await
            .map_err(err("LOCK"))?;
        let total_before: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {src}"), &[])
            .await
            .map_err(err("count"))?
            .get(0);
        let matching: i64 = tx
            .query_one(&self.count_sql(), &[])
            .await
            .map_err(err("count matching rows"))?
            .get(0);
        let matching = matching.max(0) as u64;
        if matching > self.max_rows {
            return Ok(ActionResult::failed(
                format!(
                    "{matching} rows match, more than max_rows {}: corruption that wide goes to a human",
                    self.max_rows
                ),
                json!({ "matching": matching }),
            ));
        }
        if matching == 0 {
            return Ok(ActionResult::ok(
                "no rows match; nothing moved",
                json!({ "moved": 0 }),
            ));
        }
        // The quarantine table: the source's columns, plus when and by which
        // attempt each row was moved.
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {dst} (LIKE {src});
             ALTER TABLE {dst} ADD COLUMN IF NOT EXISTS medic_quarantined_at timestamptz;
             ALTER TABLE {dst} ADD COLUMN IF NOT EXISTS medic_attempt text;"
        ))
        .await
        .map_err(err("create the quarantine table"))?;
        let q_before: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {dst}"), &[])
            .await
            .map_err(err("count quarantine"))?
            .get(0);
        let cols: Vec<String> = tx
            .query(
                "SELECT quote_ident(attname) FROM pg_attribute
                 WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
                 ORDER BY attnum",
                &[&src],
            )
            .await
            .map_err(err("list columns"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let cols = cols.join(", ");
        let copied = tx
            .execute(
                &format!(
                    "INSERT INTO {dst} ({cols}, medic_quarantined_at, medic_attempt)
                     SELECT {cols}, now(), $1 FROM {src} WHERE {}",
                    self.params.where_
                ),
                &[&ctx.key],
            )
            .await
            .map_err(err("copy"))?;
        // Delete exactly the rows that were copied: those matching the
        // condition (the table is locked, now() is the transaction's).
        let deleted = tx
            .execute(
                &format!("DELETE FROM {src} WHERE {}", self.params.where_),
                &[],
            )
            .await
            .map_err(err("delete"))?;
        let total_after: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {src}"), &[])
            .await
            .map_err(err("count"))?
            .get(0);
        let q_after: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {dst}"), &[])
            .await
            .map_err(err("count quarantine"))?
            .get(0);
        let data = json!({
            "matching": matching, "copied": copied, "deleted": deleted,
            "source_before": total_before, "source_after": total_after,
            "quarantine_before": q_before, "quarantine_after": q_after,
            "into": self.into,
        });
        let consistent = copied == matching
            && deleted == copied
            && total_before + q_before == total_after + q_after;
        if !consistent {
            // Dropping the transaction rolls it back.
            return Ok(ActionResult::failed(
                format!(
                    "counts do not add up (matching {matching}, copied {copied}, deleted {deleted}); rolled back"
                ),
                data,
            ));
        }
        tx.commit().await.map_err(err("COMMIT"))?;
        Ok(ActionResult::ok(
            format!(
                "moved {deleted} rows from {} to {} ({} → {} rows; source + quarantine unchanged at {})",
                self.params.table,
                self.into,
                total_before,
                total_after,
                total_after + q_after
            ),
            data,
        ))
    }
}

#[async_trait::async_trait]
impl Action for Quarantine {
    fn describe(&self) -> String {
        format!(
            "postgres.quarantine of rows of {} where {} into {} (at most {})",
            self.params.table, self.params.where_, self.into, self.max_rows
        )
    }

    fn inputs(&self) -> serde_json::Value {
        json!({
            "target": self.params.target,
            "table": self.params.table,
            "where": self.params.where_,
            "into": self.into,
            "max_rows": self.max_rows,
        })
    }

    async fn preflight(&self, ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        let mut client = match connect(&self.node, ctx.timeout.min(PROBE_TIMEOUT)).await {
            Ok(c) => c,
            Err(e) => {
                pre.gate(Gate::fail("reachable", e));
                return pre;
            }
        };
        // Preconditions only read: a read-only transaction makes sure.
        let count = async {
            let tx = client.build_transaction().read_only(true).start().await?;
            tx.query_one(&self.count_sql(), &[]).await
        };
        match count.await {
            Ok(row) => {
                let n = row.get::<_, i64>(0).max(0) as u64;
                pre.data = json!({ "matching": n });
                if n > self.max_rows {
                    pre.gate(Gate::fail(
                        "max-rows",
                        format!("{n} rows match, more than max_rows {}: corruption that wide goes to a human", self.max_rows),
                    ));
                } else {
                    pre.gate(Gate::pass(
                        "max-rows",
                        format!("{n} rows match (max {})", self.max_rows),
                    ));
                }
            }
            Err(e) => {
                pre.gate(Gate::fail(
                    "max-rows",
                    format!("counting failed: {}", pg_error(&e)),
                ));
            }
        }
        pre
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        tokio::select! {
            r = tokio::time::timeout(ctx.timeout, self.quarantine(ctx)) => match r {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => ActionResult::failed(e, json!({})),
                Err(_) => ActionResult::failed(
                    format!("timed out after {}; rolled back", humantime::format_duration(ctx.timeout)),
                    json!({ "timed_out": true }),
                ),
            },
            _ = ctx.cancel.cancelled() => ActionResult::failed("aborted: medic is stopping; rolled back", json!({})),
        }
    }
}

impl super::ActionKind for PromoteReplicaParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::{field_pos, item_pos};
        const PG: &[&str] = &["postgres"];
        let user = "postgres.promote-replica";
        v.target(p, "primary", &self.primary, PG, user);
        let cluster = v
            .config
            .and_then(|c| c.postgres_members(&self.primary))
            .is_some();
        if self.replicas.is_empty() && !cluster {
            v.err(
                field_pos(p, "replicas"),
                "name at least one replica to promote",
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.replicas.iter().enumerate() {
            let name = c.target();
            let at = item_pos(p, "replicas", i);
            if *name == self.primary {
                v.err(at, format!("{name:?} is the primary, not a replica"));
            } else if !seen.insert(name) {
                v.err(at, format!("replica {name:?} is listed twice"));
            } else {
                v.target_at(at, name, PG, user);
            }
        }
        if let Some(fence) = &self.fence
            && fence.args.first().is_none_or(|a| a.trim().is_empty())
        {
            v.err(
                field_pos(p, "fence"),
                "a fence needs a program: fence: { args: [PROGRAM, ARG...] }",
            );
        }
        if let Some(0) = self.unreachable_checks {
            v.err(
                field_pos(p, "unreachable_checks"),
                "unreachable_checks must be at least 1",
            );
        }
        if let Some(0) = self.max_lag_bytes {
            // 0 would refuse every candidate: surely a mistake.
            v.err(
                field_pos(p, "max_lag_bytes"),
                "max_lag_bytes must be at least 1",
            );
        }
    }

    fn targets(&self) -> Vec<String> {
        std::iter::once(self.primary.clone())
            .chain(self.replicas.iter().map(|r| r.target().to_string()))
            .collect()
    }

    fn build(&self, config: &Config) -> Result<std::sync::Arc<dyn Action>, BuildError> {
        Ok(std::sync::Arc::new(PromoteReplica::build(self, config)?))
    }
}

impl super::ActionKind for QuarantineParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        use crate::yaml::{field_pos, pos};
        v.target(
            p,
            "target",
            &self.target,
            &["postgres"],
            "postgres.quarantine",
        );
        if !is_table_name(&self.table) {
            v.err(
                field_pos(p, "table"),
                format!("{:?} is not a table name (NAME or SCHEMA.NAME)", self.table),
            );
        }
        if let Some(into) = &self.into
            && !is_table_name(into)
        {
            v.err(
                field_pos(p, "into"),
                format!("{into:?} is not a table name (NAME or SCHEMA.NAME)"),
            );
        }
        v.non_empty(p, "where", &self.where_);
        match self.max_rows {
            None => v.err(
                pos(p),
                "postgres.quarantine needs `max_rows`: the most rows it may move",
            ),
            Some(0) => v.err(field_pos(p, "max_rows"), "max_rows must be at least 1"),
            Some(_) => {}
        }
    }

    fn targets(&self) -> Vec<String> {
        vec![self.target.clone()]
    }

    fn build(&self, config: &Config) -> Result<std::sync::Arc<dyn Action>, BuildError> {
        Ok(std::sync::Arc::new(Quarantine::build(self, config)?))
    }
}

/// `NAME` or `SCHEMA.NAME`, plain identifiers (they are spliced into SQL).
fn is_table_name(s: &str) -> bool {
    let ident = |p: &str| {
        p.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| ident(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip() {
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(format_lsn(parse_lsn("0/3000060").unwrap()), "0/3000060");
        assert_eq!(parse_lsn("nonsense"), None);
        assert_eq!(parse_lsn("G/1"), None);
    }

    #[test]
    fn tables_are_quoted() {
        assert_eq!(quote_table("appointments"), "\"appointments\"");
        assert_eq!(quote_table("app.Appointments"), "\"app\".\"Appointments\"");
    }

    /// A promotion of `db` to `r1`, the gate's needs at 3 checks over 5 s.
    fn promote() -> PromoteReplica {
        let target = |port| PostgresTarget {
            host: "127.0.0.1".into(),
            port,
            user: "postgres".into(),
            password: None,
            dbname: "postgres".into(),
            ..Default::default()
        };
        PromoteReplica {
            params: PromoteReplicaParams {
                primary: "db".into(),
                replicas: vec![Candidate::Name("r1".into())],
                max_lag_bytes: None,
                unreachable_checks: Some(3),
                unreachable_for: Some(Dur::secs(5)),
                cooldown: None,
                fence: None,
                old_primary_unreachable: Default::default(),
            },
            fixed: Some(Roles {
                primary: Node {
                    name: "db".into(),
                    target: target(1),
                },
                candidates: vec![(
                    Node {
                        name: "r1".into(),
                        target: target(2),
                    },
                    1,
                )],
            }),
            cluster: None,
            listed: Vec::new(),
            fence: None,
        }
    }

    /// The engine's view of the primary: `seen` for `streak` checks since
    /// `since`, with an objective view.
    fn seeing(
        seen: Seen,
        streak: u32,
        since: tokio::time::Instant,
        quorum: Option<crate::observe::QuorumView>,
    ) -> ActionContext {
        let mut ctx = ActionContext::new("t:0:1", Duration::from_secs(30));
        ctx.observations = vec![crate::observe::SymptomObservation {
            symptom: "db_down".into(),
            target: Some("db".into()),
            check: "postgres",
            view: crate::observe::SymptomView {
                phase: crate::observe::Phase::Firing,
                seen,
                streak,
                streak_since: Some(since),
                quiet_since: None,
            },
            quorum,
        }];
        ctx
    }

    fn quorum(failing: u32, observers: u32, need: u32) -> Option<crate::observe::QuorumView> {
        Some(crate::observe::QuorumView {
            failing,
            observers,
            need,
            blind: false,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn primary_unreachable_counts_failing_checks_and_the_quorum_never_unknown() {
        let p = promote();
        let start = tokio::time::Instant::now();
        tokio::time::advance(Duration::from_secs(6)).await;
        // Unknown for as long as you like is medic's blindness: refused.
        let g = p.unreachable_gate(&seeing(Seen::Unknown, 50, start, None));
        assert!(!g.passed && g.wait.is_none(), "{g:?}");
        assert!(g.detail.contains("unknown is not unreachable"), "{g:?}");
        // Failing 3 checks over 6 s on one replica alone.
        let g = p.unreachable_gate(&seeing(Seen::Failing, 3, start, None));
        assert!(g.passed, "{g:?}");
        // With several replicas, this one failing is subjective: not yet.
        let g = p.unreachable_gate(&seeing(Seen::Failing, 3, start, quorum(1, 3, 2)));
        assert!(!g.passed && g.wait.is_some(), "{g:?}");
        assert!(
            g.detail.ends_with("failing on 1 of 3 observers, quorum 2"),
            "{g:?}"
        );
        let g = p.unreachable_gate(&seeing(Seen::Failing, 3, start, quorum(2, 3, 2)));
        assert!(g.passed, "{g:?}");
        // A blind replica counts nobody, itself included.
        let blind = Some(crate::observe::QuorumView {
            blind: true,
            ..quorum(3, 3, 2).unwrap()
        });
        let g = p.unreachable_gate(&seeing(Seen::Failing, 3, start, blind));
        assert!(!g.passed, "{g:?}");
        // Too few checks, or too short: not yet, whatever the quorum.
        let g = p.unreachable_gate(&seeing(Seen::Failing, 2, start, quorum(3, 3, 2)));
        assert!(!g.passed && g.wait.is_some(), "{g:?}");
        let recent = tokio::time::Instant::now() - Duration::from_secs(1);
        let g = p.unreachable_gate(&seeing(Seen::Failing, 5, recent, quorum(3, 3, 2)));
        assert!(!g.passed && g.wait.is_some(), "{g:?}");
    }

    /// The silence counts from the primary's last answer when it came
    /// right before the streak: 3 checks over 4 s, 5.5 s since it last
    /// answered (need 3 over 5 s), pass; with no answer before it, wait.
    #[tokio::test(start_paused = true)]
    async fn primary_unreachable_counts_the_silence_from_its_last_answer() {
        let p = promote();
        let heard = tokio::time::Instant::now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        let first = tokio::time::Instant::now();
        tokio::time::advance(Duration::from_secs(4)).await;
        let mut ctx = seeing(Seen::Failing, 3, first, None);
        let g = p.unreachable_gate(&ctx);
        assert!(!g.passed && g.wait.is_some(), "{g:?}");
        ctx.observations[0].view.quiet_since = Some(heard);
        let g = p.unreachable_gate(&ctx);
        assert!(g.passed, "{g:?}");
        assert!(
            g.detail
                .contains("fail 3 consecutive checks, 5.5s since its last answer"),
            "{g:?}"
        );
        // Too few checks: not yet, however long the silence.
        let mut ctx = seeing(Seen::Failing, 2, first, None);
        ctx.observations[0].view.quiet_since = Some(heard);
        let g = p.unreachable_gate(&ctx);
        assert!(!g.passed && g.wait.is_some(), "{g:?}");
    }

    #[test]
    fn candidates_default_to_priority_one() {
        let c: Vec<Candidate> =
            serde_json::from_str(r#"["a", {"target": "b", "priority": 0}]"#).unwrap();
        assert_eq!((c[0].target(), c[0].priority()), ("a", 1));
        assert_eq!((c[1].target(), c[1].priority()), ("b", 0));
    }
}
