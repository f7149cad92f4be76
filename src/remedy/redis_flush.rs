//! `redis.flush`: FLUSHALL ASYNC, or SCAN MATCH + batched UNLINK.
//!
//! Precondition: the node answers `role:master` in INFO replication. A
//! flush sent to a replica would be refused by Redis anyway ("READONLY"),
//! or worse, succeed on a writable replica and diverge from its master:
//! medic refuses first and says why. Never `KEYS`: it blocks the server for
//! the whole keyspace; SCAN walks it in small steps, and UNLINK frees
//! memory in the background. On a cluster (`members:`) it flushes the
//! current master, discovered with `ROLE` when the step runs.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::Deserialize;
use serde_json::json;

use super::{Action, ActionContext, ActionResult, BuildError, Gate, Preflight};
use crate::config::{Config, TargetConfig};
use crate::connect::redis_cluster::Cluster;

/// Keys asked for per SCAN call, and deleted per UNLINK.
const BATCH: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFlushParams {
    /// A config target of kind `redis`.
    pub target: String,
    /// Only keys matching this glob; absent: everything.
    pub pattern: Option<String>,
}

/// What a flush is sent to.
#[derive(Clone)]
enum Aim {
    One {
        address: String,
        client: Box<redis::Client>,
    },
    /// A cluster's current master.
    Master(Arc<Cluster>),
}

/// A runnable `redis.flush`.
pub struct RedisFlush {
    params: RedisFlushParams,
    aim: Aim,
}

impl RedisFlush {
    pub fn build(p: &RedisFlushParams, config: &Config) -> Result<Self, BuildError> {
        if let Some(c) = crate::connect::redis_cluster::cluster(config, &p.target) {
            return Ok(RedisFlush {
                params: p.clone(),
                aim: Aim::Master(c),
            });
        }
        let Some(TargetConfig::Redis(t)) = config.targets.get(&p.target) else {
            return Err(BuildError::Invalid(format!(
                "target {:?} is not a redis target",
                p.target
            )));
        };
        let client = crate::connect::redis(&p.target, t).map_err(BuildError::Invalid)?;
        Ok(RedisFlush {
            params: p.clone(),
            aim: Aim::One {
                address: t.address.clone(),
                client: Box::new(client),
            },
        })
    }

    /// A connection to the server to flush, and its address.
    async fn connect(&self, timeout: Duration) -> Result<(MultiplexedConnection, String), String> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let (address, client) = match &self.aim {
            Aim::One { address, client } => (address.clone(), (**client).clone()),
            Aim::Master(c) => {
                let view = c.discover(timeout).await;
                let Some(m) = view.master.as_deref() else {
                    return Err(format!(
                        "cluster {:?} has no master ({}{})",
                        c.name,
                        view.summary(),
                        view.problem.map(|p| format!("; {p}")).unwrap_or_default()
                    ));
                };
                let t = c.member(m).cloned().unwrap_or_default();
                let client = crate::connect::redis(m, &t)?;
                (format!("{} (master {m} of {})", t.address, c.name), client)
            }
        };
        let conn = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| format!("{address}: {e}"))?;
        Ok((conn, address))
    }

    /// SCAN MATCH + UNLINK in batches; returns (keys deleted, SCAN calls).
    async fn flush_matching(
        &self,
        conn: &mut MultiplexedConnection,
        pattern: &str,
    ) -> Result<(u64, u64), String> {
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        let mut scans = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(conn)
                .await
                .map_err(|e| format!("SCAN: {e}"))?;
            scans += 1;
            for chunk in keys.chunks(BATCH) {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(chunk)
                    .query_async(conn)
                    .await
                    .map_err(|e| format!("UNLINK: {e}"))?;
                deleted += n;
            }
            if next == 0 {
                return Ok((deleted, scans));
            }
            cursor = next;
        }
    }
}

/// `role:master` from INFO replication, or what it said instead.
fn role(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("role:"))
        .map(str::trim)
}

#[async_trait::async_trait]
impl Action for RedisFlush {
    fn describe(&self) -> String {
        match &self.params.pattern {
            Some(p) => format!(
                "redis.flush of keys matching {p:?} on {} (SCAN + UNLINK)",
                self.params.target
            ),
            None => format!(
                "redis.flush of everything on {} (FLUSHALL ASYNC)",
                self.params.target
            ),
        }
    }

    fn inputs(&self) -> serde_json::Value {
        let address = match &self.aim {
            Aim::One { address, .. } => json!(address),
            Aim::Master(c) => json!(format!("the master of {}", c.name)),
        };
        json!({ "target": self.params.target, "address": address, "pattern": self.params.pattern })
    }

    async fn preflight(&self, ctx: &ActionContext) -> Preflight {
        let mut pre = Preflight::default();
        let (mut conn, address) = match self.connect(ctx.timeout).await {
            Ok(c) => c,
            Err(e) => {
                pre.gate(Gate::fail("reachable", e));
                return pre;
            }
        };
        let info: String = match redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
        {
            Ok(i) => i,
            Err(e) => {
                pre.gate(Gate::fail(
                    "role-is-master",
                    format!("INFO replication failed: {e}"),
                ));
                return pre;
            }
        };
        match role(&info) {
            Some("master") => pre.gate(Gate::pass("role-is-master", "role:master")),
            Some(other) => pre.gate(Gate::fail(
                "role-is-master",
                format!("{address} answers role:{other}; flush the master, not a replica"),
            )),
            None => pre.gate(Gate::fail(
                "role-is-master",
                "INFO replication has no role line",
            )),
        };
        let size: Result<u64, _> = redis::cmd("DBSIZE").query_async(&mut conn).await;
        if let Ok(size) = size {
            pre.data = json!({ "dbsize": size });
        }
        pre
    }

    fn for_labels(
        &self,
        values: &super::template::Values,
    ) -> Result<Option<std::sync::Arc<dyn Action>>, super::template::TemplateError> {
        let Some(p) = self
            .params
            .pattern
            .as_deref()
            .filter(|p| super::template::has_vars(p))
        else {
            return Ok(None);
        };
        let pattern = values.expand(p, super::template::Slot::RedisGlob)?;
        Ok(Some(std::sync::Arc::new(RedisFlush {
            params: RedisFlushParams {
                target: self.params.target.clone(),
                pattern: Some(pattern),
            },
            aim: self.aim.clone(),
        })))
    }

    async fn run(&self, ctx: &ActionContext) -> ActionResult {
        let work = async {
            let (mut conn, _) = self.connect(ctx.timeout).await?;
            let before: u64 = redis::cmd("DBSIZE")
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("DBSIZE: {e}"))?;
            match &self.params.pattern {
                None => {
                    let _: () = redis::cmd("FLUSHALL")
                        .arg("ASYNC")
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| format!("FLUSHALL ASYNC: {e}"))?;
                    Ok::<_, String>(ActionResult::ok(
                        format!("FLUSHALL ASYNC: {before} keys in the db before"),
                        json!({ "keys_before": before }),
                    ))
                }
                Some(p) => {
                    let (deleted, scans) = self.flush_matching(&mut conn, p).await?;
                    Ok(ActionResult::ok(
                        format!(
                            "deleted {deleted} keys matching {p:?} ({before} keys before, {scans} SCAN calls)"
                        ),
                        json!({ "deleted": deleted, "keys_before": before, "scans": scans }),
                    ))
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(ctx.timeout, work) => match r {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => ActionResult::failed(e, json!({})),
                Err(_) => ActionResult::failed(
                    format!("timed out after {}", humantime::format_duration(ctx.timeout)),
                    json!({ "timed_out": true }),
                ),
            },
            _ = ctx.cancel.cancelled() => ActionResult::failed("aborted: medic is stopping", json!({})),
        }
    }
}

impl super::ActionKind for RedisFlushParams {
    fn validate(&self, v: &mut crate::config::refs::Refs, p: &marked_yaml::Node) {
        v.target(p, "target", &self.target, &["redis"], "redis.flush");
        if let Some(pat) = &self.pattern {
            v.non_empty(p, "pattern", pat);
        }
    }

    fn targets(&self) -> Vec<String> {
        vec![self.target.clone()]
    }

    fn expands() -> &'static [&'static str] {
        &["pattern"]
    }

    fn build(&self, config: &Config) -> Result<std::sync::Arc<dyn Action>, BuildError> {
        Ok(std::sync::Arc::new(RedisFlush::build(self, config)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_is_read_from_info_replication() {
        let info = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n";
        assert_eq!(role(info), Some("slave"));
        assert_eq!(role("# Replication\r\nrole:master\r\n"), Some("master"));
        assert_eq!(role("nothing"), None);
    }
}
