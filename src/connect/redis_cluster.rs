//! Redis clusters: a master and its replicas as one target, their roles
//! discovered with `ROLE`, not configured (the same idea as
//! [`super::pg_cluster`]). `target: cache` in a check means the current
//! master, `cache/replicas` the replicas.
//!
//! Each discovery asks every member `ROLE` at once. One member answering
//! `master` is the master. Two or more answer `master` after a replica was
//! promoted (`REPLICAOF NO ONE`) beside an old master that came back or
//! was never stopped: Redis has no timeline, so the promotion is read from
//! what medic saw before: a member last seen as a replica that now answers
//! as master was promoted, and is the master when it is the only such
//! one; the others are old masters. Anything else (two masters medic
//! never saw as replicas) is a problem, and no member is chosen on a
//! guess. The state is in memory, per process.
//!
//! An old master beside the chosen one is fenced on sight, as Redis
//! Sentinel reconfigures a returning master: medic sends it `REPLICAOF`
//! the current master, so it refuses writes (`READONLY`) and its data
//! follows the master's again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::config::{Config, RedisTarget};

/// One member's role as `ROLE` answered, or why it did not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    /// A replica of `host:port`, with its link state (`connected`...).
    Replica {
        of: String,
        state: String,
    },
    /// No answer: `broken` when the server is down for sure (refused,
    /// reset), not that medic cannot tell (timeout, no route, auth).
    Down {
        detail: String,
        broken: bool,
    },
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Master => write!(f, "master"),
            Role::Replica { of, state } => write!(f, "replica of {of} ({state})"),
            Role::Down { detail, .. } => write!(f, "{detail}"),
        }
    }
}

/// The cluster as one discovery saw it.
#[derive(Clone, Debug)]
pub struct View {
    /// Every member, in config order.
    pub members: Vec<(String, Role)>,
    /// The current master.
    pub master: Option<String>,
    /// Members answering as replicas.
    pub replicas: Vec<String>,
    /// Members answering as master beside the current one (old masters).
    pub old_masters: Vec<String>,
    /// Why there is no master although members answer.
    pub problem: Option<String>,
    /// What this discovery did to old masters (`cache-a made a replica
    /// of cache-b (127.0.0.1:6380)`, or why it could not).
    pub fenced: Vec<String>,
}

impl View {
    /// `cache-a: master; cache-b: replica of 127.0.0.1:6379 (connected)`.
    pub fn summary(&self) -> String {
        self.members
            .iter()
            .map(|(n, r)| format!("{n}: {r}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[derive(Default)]
struct State {
    /// The master chosen by the last discovery.
    master: Option<String>,
    /// Members seen answering as replicas (last time each answered).
    were_replicas: BTreeSet<String>,
}

/// A Redis cluster shared by every check and action that names it.
pub struct Cluster {
    pub name: String,
    pub members: Vec<(String, RedisTarget)>,
    clients: Vec<Result<redis::Client, String>>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("name", &self.name).finish()
    }
}

/// The redis cluster `name` of `config`, one per name and member settings
/// for the life of the process; `None` when `name` is not a cluster.
pub fn cluster(config: &Config, name: &str) -> Option<Arc<Cluster>> {
    static CLUSTERS: OnceLock<Mutex<BTreeMap<String, Arc<Cluster>>>> = OnceLock::new();
    let members = config.redis_members(name)?;
    let key = format!("{name}|{members:?}");
    let mut all = CLUSTERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    Some(
        all.entry(key)
            .or_insert_with(|| {
                Arc::new(Cluster {
                    name: name.to_string(),
                    clients: members.iter().map(|(n, t)| super::redis(n, t)).collect(),
                    members,
                    state: Mutex::new(State::default()),
                })
            })
            .clone(),
    )
}

/// Parses a `ROLE` reply: `master`, or `slave` with its master's host
/// and port and link state.
fn parse_role(v: &redis::Value) -> Result<Role, String> {
    let redis::Value::Array(items) = v else {
        return Err(format!("ROLE answered {v:?}"));
    };
    let text = |i: usize| -> Option<String> {
        match items.get(i)? {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            redis::Value::Int(n) => Some(n.to_string()),
            _ => None,
        }
    };
    match text(0).as_deref() {
        Some("master") => Ok(Role::Master),
        Some("slave") => Ok(Role::Replica {
            of: format!(
                "{}:{}",
                text(1).unwrap_or_default(),
                text(2).unwrap_or_default()
            ),
            state: text(3).unwrap_or_default(),
        }),
        other => Err(format!("ROLE answered {other:?}")),
    }
}

impl Cluster {
    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&RedisTarget> {
        self.members.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// A connection to member `i`, bounded by `timeout` to connect and to
    /// answer.
    async fn connect(
        &self,
        i: usize,
        timeout: Duration,
    ) -> Result<Result<MultiplexedConnection, redis::RedisError>, String> {
        let client = self.clients[i].as_ref().map_err(|e| e.clone())?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Ok(client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await)
    }

    async fn role(&self, i: usize, timeout: Duration) -> Role {
        let (_, t) = &self.members[i];
        let down = |e: redis::RedisError| Role::Down {
            detail: format!("{}: {e}", t.address),
            broken: e.is_connection_refusal() || e.is_connection_dropped(),
        };
        let mut conn: MultiplexedConnection = match self.connect(i, timeout).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return down(e),
            Err(e) => {
                return Role::Down {
                    detail: format!("{}: {e}", t.address),
                    broken: false,
                };
            }
        };
        match redis::cmd("ROLE")
            .query_async::<redis::Value>(&mut conn)
            .await
        {
            Ok(v) => parse_role(&v).unwrap_or_else(|e| Role::Down {
                detail: format!("{}: {e}", t.address),
                broken: false,
            }),
            Err(e) => down(e),
        }
    }

    /// Asks every member `ROLE` (at once) and updates who is the master.
    pub async fn discover(&self, timeout: Duration) -> View {
        let roles =
            futures_util::future::join_all((0..self.members.len()).map(|i| self.role(i, timeout)))
                .await;
        let seen: Vec<(String, Role)> = self
            .members
            .iter()
            .map(|(n, _)| n.clone())
            .zip(roles)
            .collect();
        let mut view = self.update(seen);
        if let Some(master) = view.master.clone() {
            for old in view.old_masters.clone() {
                let done = self.fence(&old, &master, timeout).await;
                match &done {
                    Ok(d) => tracing::warn!(cluster = %self.name, "old master fenced: {d}"),
                    Err(e) => tracing::error!(cluster = %self.name, "old master not fenced: {e}"),
                }
                view.fenced.push(done.unwrap_or_else(|e| e));
            }
        }
        view
    }

    /// Makes the old master `old` a replica of `master` (`REPLICAOF`).
    async fn fence(&self, old: &str, master: &str, timeout: Duration) -> Result<String, String> {
        let i = self
            .members
            .iter()
            .position(|(n, _)| n == old)
            .ok_or_else(|| format!("{old} is not a member"))?;
        let addr = self
            .member(master)
            .map(|t| t.address.clone())
            .unwrap_or_default();
        let (host, port) = addr
            .rsplit_once(':')
            .map(|(h, p)| (h.trim_start_matches('[').trim_end_matches(']'), p))
            .ok_or_else(|| format!("{master}'s address {addr:?} is not host:port"))?;
        let mut conn = match self.connect(i, timeout).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(format!("{old}: REPLICAOF {host} {port}: {e}")),
            Err(e) => return Err(format!("{old}: {e}")),
        };
        redis::cmd("REPLICAOF")
            .arg(host)
            .arg(port)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| format!("{old}: REPLICAOF {host} {port}: {e}"))?;
        Ok(format!("{old} made a replica of {master} ({addr})"))
    }

    /// The roles from what was seen.
    fn update(&self, seen: Vec<(String, Role)>) -> View {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let masters: Vec<&String> = seen
            .iter()
            .filter(|(_, r)| *r == Role::Master)
            .map(|(n, _)| n)
            .collect();
        let replicas: Vec<String> = seen
            .iter()
            .filter(|(_, r)| matches!(r, Role::Replica { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        let (master, problem) = match masters.as_slice() {
            [] => (None, None),
            [one] => (Some((*one).clone()), None),
            many => {
                let promoted: Vec<&&String> = many
                    .iter()
                    .filter(|n| st.were_replicas.contains(**n))
                    .collect();
                match promoted.as_slice() {
                    [one] => (Some((**one).clone()), None),
                    // Seen before, not promoted since: still the master.
                    [] if st.master.as_ref().is_some_and(|m| many.contains(&m)) => {
                        (st.master.clone(), None)
                    }
                    _ => (
                        None,
                        Some(format!(
                            "{} answer as master",
                            many.iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(" and ")
                        )),
                    ),
                }
            }
        };
        let old_masters = masters
            .iter()
            .filter(|n| Some(**n) != master.as_ref())
            .map(|n| (*n).clone())
            .collect();
        // Remember who answered as what (a silent member keeps its past).
        for (n, r) in &seen {
            match r {
                Role::Replica { .. } => {
                    st.were_replicas.insert(n.clone());
                }
                Role::Master if Some(n) == master.as_ref() => {
                    st.were_replicas.remove(n);
                }
                _ => {}
            }
        }
        if master.is_some() {
            st.master = master.clone();
        }
        View {
            members: seen,
            master,
            replicas,
            old_masters,
            problem,
            fenced: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_of(names: &[&str]) -> Cluster {
        Cluster {
            name: "cache".into(),
            members: names
                .iter()
                .map(|n| (n.to_string(), RedisTarget::default()))
                .collect(),
            clients: Vec::new(),
            state: Mutex::new(State::default()),
        }
    }

    fn replica() -> Role {
        Role::Replica {
            of: "a:1".into(),
            state: "connected".into(),
        }
    }

    fn down() -> Role {
        Role::Down {
            detail: "refused".into(),
            broken: true,
        }
    }

    fn see(c: &Cluster, a: Role, b: Role) -> View {
        c.update(vec![("a".into(), a), ("b".into(), b)])
    }

    #[test]
    fn the_master_follows_a_promotion_and_an_old_master_back_is_not_chosen() {
        let c = cluster_of(&["a", "b"]);
        let v = see(&c, Role::Master, replica());
        assert_eq!(v.master.as_deref(), Some("a"));
        assert_eq!(v.replicas, ["b"]);
        // b promoted beside a live a: b is the master now.
        let v = see(&c, Role::Master, Role::Master);
        assert_eq!(v.master.as_deref(), Some("b"));
        assert_eq!(v.old_masters, ["a"]);
        // a dies and comes back as master (empty): b stays the master.
        assert_eq!(see(&c, down(), Role::Master).master.as_deref(), Some("b"));
        let v = see(&c, Role::Master, Role::Master);
        assert_eq!(v.master.as_deref(), Some("b"));
        assert_eq!(v.old_masters, ["a"]);
    }

    #[test]
    fn two_masters_never_seen_as_replicas_is_a_problem() {
        let c = cluster_of(&["a", "b"]);
        let v = see(&c, Role::Master, Role::Master);
        assert_eq!(v.master, None);
        assert_eq!(v.problem.as_deref(), Some("a and b answer as master"));
    }

    #[test]
    fn role_replies_parse() {
        use redis::Value::{Array, BulkString, Int};
        let slave = Array(vec![
            BulkString(b"slave".to_vec()),
            BulkString(b"127.0.0.1".to_vec()),
            Int(6379),
            BulkString(b"connected".to_vec()),
            Int(14),
        ]);
        assert_eq!(
            parse_role(&slave),
            Ok(Role::Replica {
                of: "127.0.0.1:6379".into(),
                state: "connected".into()
            })
        );
        let master = Array(vec![BulkString(b"master".to_vec()), Int(0), Array(vec![])]);
        assert_eq!(parse_role(&master), Ok(Role::Master));
        assert!(parse_role(&Int(1)).is_err());
    }
}
