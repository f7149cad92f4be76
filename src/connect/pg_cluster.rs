//! PostgreSQL clusters: a target made of members whose roles are
//! discovered, not configured. Patroni's view: the primary is a role, not
//! a host.
//!
//! Each discovery asks every member `pg_is_in_recovery()`, its timeline
//! and `default_transaction_read_only`. The cluster's timeline is the
//! newest any member was ever seen on (a promotion moves it forward);
//! the *primary* is the one member answering out of recovery on it. A
//! member answering as primary on an older timeline is an old primary
//! that came back after a failover: it is *demoted*, and with
//! `fence_on_sight` (the default) medic fences it at once ([`fence`]):
//! `ALTER SYSTEM SET default_transaction_read_only = on`, reload, wait
//! until a new session sees it, then terminate every other client
//! session. The last primary seen that stops answering and is replaced
//! is demoted too, so the watcher polls it quickly while it is down and
//! fences it the moment it answers again.
//!
//! The state is in memory, per process: a medic restarted after a
//! failover learns the cluster's timeline again from the members that
//! answer (the promoted one is on the newer timeline).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::pg::{Session, SessionError, is_broken, open};
use crate::config::{Config, PostgresTarget};

/// How often the watcher discovers every member.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How often it polls a demoted member that does not answer.
const DEMOTED_POLL: Duration = Duration::from_millis(5);
/// The longest wait for one member during discovery.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an old primary back in recovery (demoted on disk) may take to
/// follow the new primary's timeline before it counts as needing a rebuild.
pub const REJOIN_GRACE: Duration = Duration::from_secs(10);

/// One member: its config target name and settings.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub target: PostgresTarget,
}

impl Member {
    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.target.host, self.target.port)
    }
}

/// What an answering member said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberState {
    pub in_recovery: bool,
    pub timeline: u32,
    /// `default_transaction_read_only` is on (fenced, or configured so).
    pub read_only: bool,
}

/// One member as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Answered(MemberState),
    /// No answer: `broken` when the answer says the server is down
    /// (refused, closed, frozen), not that medic cannot tell; `silent`
    /// when nothing answered in time (a connect or start-up timeout, or a
    /// frozen server: the kernel accepted, the server said nothing).
    Down {
        detail: String,
        broken: bool,
        silent: bool,
    },
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Answered(s) if s.in_recovery => write!(f, "replica on timeline {}", s.timeline),
            Seen::Answered(s) => write!(
                f,
                "primary on timeline {}{}",
                s.timeline,
                if s.read_only { ", read-only" } else { "" }
            ),
            Seen::Down { detail, .. } => write!(f, "{detail}"),
        }
    }
}

/// A fence medic ran on sight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fenced {
    pub member: String,
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub detail: String,
}

/// The cluster as one discovery saw it.
#[derive(Clone, Debug)]
pub struct View {
    /// Every member, in config order.
    pub members: Vec<(String, Seen)>,
    /// The member answering as primary on the cluster's timeline.
    pub primary: Option<String>,
    /// The newest timeline any member was seen on.
    pub timeline: u32,
    /// Old primaries (member → the timeline it was primary on).
    pub demoted: BTreeMap<String, u32>,
    /// Why there is no primary although members answer (two on one
    /// timeline).
    pub problem: Option<String>,
    /// Fences run on sight, oldest first (the last 16).
    pub fenced: Vec<Fenced>,
    /// Old primaries back in recovery (a standby: read-only) but not on the
    /// cluster's timeline, and for how long: they have not rejoined as
    /// replicas of the new primary (yet).
    pub stale_standbys: BTreeMap<String, Duration>,
}

impl View {
    /// What one member was seen as.
    pub fn seen(&self, name: &str) -> Option<&Seen> {
        self.members.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// `db-a: primary on timeline 2; db-b: connection refused`.
    pub fn summary(&self) -> String {
        self.members
            .iter()
            .map(|(n, s)| format!("{n}: {s}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[derive(Default)]
struct State {
    last: BTreeMap<String, Seen>,
    timeline: u32,
    /// The last member seen as the primary, and its timeline then.
    primary: Option<(String, u32)>,
    demoted: BTreeMap<String, u32>,
    fenced: Vec<Fenced>,
    /// Since when a demoted member answers in recovery on an older timeline.
    standby_since: BTreeMap<String, tokio::time::Instant>,
}

/// A cluster of PostgreSQL members, shared by every check and action that
/// names it (see [`cluster`]).
pub struct Cluster {
    pub name: String,
    pub members: Vec<Member>,
    fence_on_sight: bool,
    state: Mutex<State>,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Serialises fences, so two discoveries never fence one member twice.
    fencing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("name", &self.name).finish()
    }
}

/// The cluster `name` of `config`, shared across checks and actions (one
/// per name and member settings, for the life of the process); `None`
/// when `name` is not a cluster.
pub fn cluster(config: &Config, name: &str) -> Option<Arc<Cluster>> {
    static CLUSTERS: OnceLock<Mutex<BTreeMap<String, Arc<Cluster>>>> = OnceLock::new();
    let crate::config::TargetConfig::Postgres(t) = config.targets.get(name)? else {
        return None;
    };
    let members = config.postgres_members(name)?;
    let key = format!("{name}|{members:?}|{:?}", t.fence_on_sight);
    let mut all = CLUSTERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    Some(
        all.entry(key)
            .or_insert_with(|| {
                Arc::new(Cluster {
                    name: name.to_string(),
                    members: members
                        .into_iter()
                        .map(|(name, target)| Member { name, target })
                        .collect(),
                    fence_on_sight: t.fence_on_sight.unwrap_or(true),
                    state: Mutex::new(State::default()),
                    watcher: Mutex::new(None),
                    fencing: tokio::sync::Mutex::new(()),
                })
            })
            .clone(),
    )
}

const PROBE_SQL: &str = "\
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery()
            THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1),
                          (SELECT timeline_id FROM pg_control_checkpoint()))::bigint
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END,
       current_setting('default_transaction_read_only') = 'on'";

/// Asks one member its role, timeline and read-only setting.
pub async fn probe(m: &Member, timeout: Duration) -> Seen {
    let down = |e: &SessionError| Seen::Down {
        detail: format!("{}: {e}", m.address()),
        broken: is_broken(e),
        silent: matches!(
            e,
            SessionError::ConnectTimeout | SessionError::StartupTimeout | SessionError::Silent(_)
        ),
    };
    let s = match open(&m.target, "medic", timeout).await {
        Ok(s) => s,
        Err(e) => return down(&e),
    };
    match tokio::time::timeout(timeout, s.client.query_one(PROBE_SQL, &[])).await {
        Ok(Ok(row)) => Seen::Answered(MemberState {
            in_recovery: row.get(0),
            timeline: row.get::<_, Option<i64>>(1).unwrap_or(0) as u32,
            read_only: row.get(2),
        }),
        Ok(Err(e)) => down(&SessionError::Pg(e)),
        Err(_) => Seen::Down {
            detail: format!(
                "{}: no answer within {}",
                m.address(),
                humantime::format_duration(timeout)
            ),
            broken: false,
            silent: true,
        },
    }
}

impl Cluster {
    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The last member seen as the primary (it may be down now).
    pub fn last_primary(&self) -> Option<String> {
        self.lock().primary.as_ref().map(|(n, _)| n.clone())
    }

    /// Records that `member` is no longer the primary (a failover chose
    /// another): it is watched as demoted and fenced when it answers as
    /// primary again.
    pub fn demote(&self, member: &str) {
        let mut st = self.lock();
        let tl = st
            .primary
            .as_ref()
            .filter(|(n, _)| n == member)
            .map_or(st.timeline, |(_, t)| *t);
        st.demoted.insert(member.to_string(), tl);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks every member (at once), updates the roles, fences a returned
    /// old primary on sight, and starts the watcher if it is not running.
    pub async fn discover(self: &Arc<Self>, timeout: Duration) -> View {
        self.watch();
        let t = timeout.min(PROBE_TIMEOUT);
        let seen = futures_util::future::join_all(self.members.iter().map(|m| probe(m, t))).await;
        let names = self.members.iter().map(|m| m.name.clone());
        self.absorb(names.zip(seen).collect()).await
    }

    /// Folds what was seen into the state; fences what must be fenced.
    async fn absorb(&self, seen: Vec<(String, Seen)>) -> View {
        let to_fence = self.update(&seen);
        for name in to_fence {
            self.fence_on_sight(&name).await;
        }
        self.view()
    }

    /// The roles from `seen`; the members to fence now.
    fn update(&self, seen: &[(String, Seen)]) -> Vec<String> {
        let mut st = self.lock();
        for (n, s) in seen {
            st.last.insert(n.clone(), s.clone());
            if let Seen::Answered(a) = s {
                st.timeline = st.timeline.max(a.timeline);
            }
        }
        let newest = st.timeline;
        let primaries: Vec<(&String, &MemberState)> = st
            .last
            .iter()
            .filter_map(|(n, s)| match s {
                Seen::Answered(a) if !a.in_recovery => Some((n, a)),
                _ => None,
            })
            .collect();
        let current: Vec<String> = primaries
            .iter()
            .filter(|(_, a)| a.timeline == newest)
            .map(|(n, _)| (*n).clone())
            .collect();
        let stale: Vec<(String, u32, bool)> = primaries
            .iter()
            .filter(|(_, a)| a.timeline < newest)
            .map(|(n, a)| ((*n).clone(), a.timeline, a.read_only))
            .collect();
        // Rebuilt: a replica on the cluster's timeline (it follows the new
        // primary). In recovery on an older one, it is a standby that has
        // not rejoined (demoted on disk, its WAL maybe past the fork).
        let rebuilt: Vec<String> = st
            .demoted
            .keys()
            .filter(|n| matches!(st.last.get(*n), Some(Seen::Answered(a)) if a.in_recovery && a.timeline >= newest))
            .cloned()
            .collect();
        for n in rebuilt {
            st.demoted.remove(&n);
        }
        let stale_standbys: Vec<String> = st
            .demoted
            .keys()
            .filter(|n| matches!(st.last.get(*n), Some(Seen::Answered(a)) if a.in_recovery))
            .cloned()
            .collect();
        st.standby_since.retain(|n, _| stale_standbys.contains(n));
        for n in stale_standbys {
            st.standby_since
                .entry(n)
                .or_insert_with(tokio::time::Instant::now);
        }
        if let [one] = current.as_slice() {
            if let Some((old, tl)) = st.primary.clone()
                && old != *one
            {
                st.demoted.insert(old, tl);
            }
            st.primary = Some((one.clone(), newest));
        }
        let mut to_fence = Vec::new();
        for (n, tl, read_only) in stale {
            st.demoted.insert(n.clone(), tl);
            if self.fence_on_sight && !read_only {
                to_fence.push(n);
            }
        }
        to_fence
    }

    fn view(&self) -> View {
        let st = self.lock();
        let newest = st.timeline;
        let members: Vec<(String, Seen)> = self
            .members
            .iter()
            .map(|m| {
                let s = st.last.get(&m.name).cloned().unwrap_or(Seen::Down {
                    detail: "not seen yet".into(),
                    broken: false,
                    silent: false,
                });
                (m.name.clone(), s)
            })
            .collect();
        let current: Vec<&str> = members
            .iter()
            .filter(
                |(_, s)| matches!(s, Seen::Answered(a) if !a.in_recovery && a.timeline == newest),
            )
            .map(|(n, _)| n.as_str())
            .collect();
        let (primary, problem) = match current.as_slice() {
            [one] => (Some(one.to_string()), None),
            [] => (None, None),
            many => (
                None,
                Some(format!(
                    "{} answer as primary on the same timeline {newest}",
                    many.join(" and ")
                )),
            ),
        };
        View {
            members,
            primary,
            timeline: newest,
            demoted: st.demoted.clone(),
            problem,
            fenced: st.fenced.clone(),
            stale_standbys: st
                .standby_since
                .iter()
                .map(|(n, t)| (n.clone(), t.elapsed()))
                .collect(),
        }
    }

    async fn fence_on_sight(&self, name: &str) {
        let Some(m) = self.member(name) else { return };
        let _one = self.fencing.lock().await;
        // Fenced meanwhile by another discovery?
        if matches!(self.lock().last.get(name), Some(Seen::Answered(a)) if a.read_only) {
            return;
        }
        let r = fence(m, PROBE_TIMEOUT).await;
        let (ok, detail) = match r {
            Ok(r) => (true, r.detail),
            Err(e) => (false, e),
        };
        if ok {
            tracing::warn!(cluster = %self.name, member = name, "fenced on sight: {detail}");
        } else {
            tracing::error!(cluster = %self.name, member = name, "fence on sight failed: {detail}");
        }
        let mut st = self.lock();
        if ok && let Some(Seen::Answered(a)) = st.last.get_mut(name) {
            a.read_only = true;
        }
        st.fenced.push(Fenced {
            member: name.to_string(),
            at: Utc::now(),
            ok,
            detail,
        });
        let n = st.fenced.len();
        if n > 16 {
            st.fenced.drain(..n - 16);
        }
    }

    /// Starts the watcher once per runtime: it discovers every member each
    /// second and, while a demoted member does not answer, polls it every
    /// 5 ms so it is fenced the moment it answers again.
    fn watch(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut w = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        if w.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let me = Arc::downgrade(self);
        *w = Some(rt.spawn(async move {
            let mut last_full = tokio::time::Instant::now();
            loop {
                let Some(c) = me.upgrade() else { return };
                let down_demoted: Vec<Member> = {
                    let st = c.lock();
                    st.demoted
                        .keys()
                        .filter(|n| !matches!(st.last.get(*n), Some(Seen::Answered(_))))
                        .filter_map(|n| c.member(n).cloned())
                        .collect()
                };
                if last_full.elapsed() >= WATCH_EVERY {
                    c.discover_quietly().await;
                    last_full = tokio::time::Instant::now();
                } else if !down_demoted.is_empty() {
                    let newest = c.lock().timeline;
                    let seen = futures_util::future::join_all(
                        down_demoted
                            .iter()
                            .map(|m| probe_and_mark_read_only(m, newest, c.fence_on_sight)),
                    )
                    .await;
                    let answered: Vec<(String, Seen)> = down_demoted
                        .iter()
                        .map(|m| m.name.clone())
                        .zip(seen)
                        .filter(|(_, s)| matches!(s, Seen::Answered(_)))
                        .collect();
                    if !answered.is_empty() {
                        c.absorb(answered).await;
                    }
                }
                let pause = if down_demoted.is_empty() {
                    WATCH_EVERY
                } else {
                    DEMOTED_POLL
                };
                drop(c);
                tokio::time::sleep(pause).await;
            }
        }));
    }

    async fn discover_quietly(&self) {
        let seen =
            futures_util::future::join_all(self.members.iter().map(|m| probe(m, PROBE_TIMEOUT)))
                .await;
        let names = self.members.iter().map(|m| m.name.clone());
        self.absorb(names.zip(seen).collect()).await;
    }
}

/// The watcher's fast path for a demoted member that was down: in the
/// first session it gets, asks the role and, when it answers as a primary
/// on a timeline older than `newest`, sets `default_transaction_read_only`
/// and reloads at once, in that same session (the full [`fence`], which
/// verifies and terminates the other sessions, follows from the view).
/// What it saw, as [`probe`] would have reported it before the fence.
async fn probe_and_mark_read_only(m: &Member, newest: u32, fence_on_sight: bool) -> Seen {
    let Ok(s) = open(&m.target, "medic-fence", PROBE_TIMEOUT).await else {
        return Seen::Down {
            detail: format!("{}: no answer", m.address()),
            broken: true,
            silent: false,
        };
    };
    let Ok(row) = s.client.query_one(PROBE_SQL, &[]).await else {
        return Seen::Down {
            detail: format!("{}: no answer to the role query", m.address()),
            broken: true,
            silent: false,
        };
    };
    let state = MemberState {
        in_recovery: row.get(0),
        timeline: row.get::<_, Option<i64>>(1).unwrap_or(0) as u32,
        read_only: row.get(2),
    };
    if fence_on_sight && !state.in_recovery && !state.read_only && state.timeline < newest {
        // Two statements: ALTER SYSTEM cannot run in the implicit
        // transaction of a multi-statement query.
        if s.client
            .batch_execute("ALTER SYSTEM SET default_transaction_read_only = on")
            .await
            .is_ok()
        {
            let _ = s.client.batch_execute("SELECT pg_reload_conf()").await;
        }
    }
    Seen::Answered(state)
}

/// What [`fence`] did.
#[derive(Clone, Debug)]
pub struct FenceReport {
    /// It was a replica: nothing to do.
    pub already_replica: bool,
    /// Client sessions terminated.
    pub terminated: i64,
    pub detail: String,
}

/// Fences one server that answers as a primary: `ALTER SYSTEM SET
/// default_transaction_read_only = on`, `pg_reload_conf()`, waits (up to
/// `timeout`) until a new session sees it on, then terminates every other
/// client session, so no transaction begun before the fence goes on
/// writing. A replica is left alone. The setting survives restarts (it is
/// in `postgresql.auto.conf`); a client that sets it off again in its own
/// session is not stopped: this is a fence against ordinary clients, and
/// the old primary is to be rebuilt as a replica.
pub async fn fence(m: &Member, timeout: Duration) -> Result<FenceReport, String> {
    let a = m.address();
    let err =
        |what: &str, e: tokio_postgres::Error| format!("{a}: {what}: {}", SessionError::Pg(e));
    let s: Session = open(&m.target, "medic-fence", timeout)
        .await
        .map_err(|e| format!("{a}: {e}"))?;
    let c = &s.client;
    let in_recovery: bool = c
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| err("pg_is_in_recovery()", e))?
        .get(0);
    if in_recovery {
        return Ok(FenceReport {
            already_replica: true,
            terminated: 0,
            detail: format!("{} is a replica (in recovery): nothing to fence", m.name),
        });
    }
    c.batch_execute("ALTER SYSTEM SET default_transaction_read_only = on")
        .await
        .map_err(|e| err("ALTER SYSTEM", e))?;
    c.query_one("SELECT pg_reload_conf()", &[])
        .await
        .map_err(|e| err("pg_reload_conf()", e))?;
    // The reload is asynchronous: wait until a new session sees it.
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = open(&m.target, "medic-fence", timeout).await;
        let on = match v {
            Ok(v) => v
                .client
                .query_one("SHOW default_transaction_read_only", &[])
                .await
                .map(|r| r.get::<_, String>(0) == "on")
                .unwrap_or(false),
            Err(_) => false,
        };
        if on {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{a}: default_transaction_read_only is still off in new sessions {} after the reload",
                humantime::format_duration(timeout)
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let terminated: i64 = c
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
             FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| err("pg_terminate_backend", e))?
        .get(0);
    Ok(FenceReport {
        already_replica: false,
        terminated,
        detail: format!(
            "{} fenced: default_transaction_read_only = on (ALTER SYSTEM, reloaded, seen by a new session), {terminated} client sessions terminated",
            m.name
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_of(names: &[&str]) -> Cluster {
        Cluster {
            name: "db".into(),
            members: names
                .iter()
                .map(|n| Member {
                    name: n.to_string(),
                    target: PostgresTarget {
                        host: "127.0.0.1".into(),
                        port: 1,
                        user: "postgres".into(),
                        password: None,
                        dbname: "postgres".into(),
                        ..Default::default()
                    },
                })
                .collect(),
            fence_on_sight: true,
            state: Mutex::new(State::default()),
            watcher: Mutex::new(None),
            fencing: tokio::sync::Mutex::new(()),
        }
    }

    fn primary(tl: u32) -> Seen {
        Seen::Answered(MemberState {
            in_recovery: false,
            timeline: tl,
            read_only: false,
        })
    }

    fn replica(tl: u32) -> Seen {
        Seen::Answered(MemberState {
            in_recovery: true,
            timeline: tl,
            read_only: false,
        })
    }

    fn down() -> Seen {
        Seen::Down {
            detail: "connection refused".into(),
            broken: true,
            silent: false,
        }
    }

    #[test]
    fn the_primary_follows_a_promotion_and_the_old_one_is_fenced_when_it_returns() {
        let c = cluster_of(&["a", "b"]);
        assert!(
            c.update(&[("a".into(), primary(1)), ("b".into(), replica(1))])
                .is_empty()
        );
        assert_eq!(c.view().primary.as_deref(), Some("a"));
        // a dies: still the last primary, no current one.
        c.update(&[("a".into(), down()), ("b".into(), replica(1))]);
        assert_eq!(c.view().primary, None);
        assert_eq!(c.last_primary().as_deref(), Some("a"));
        // b promoted (timeline 2): a is demoted.
        c.update(&[("a".into(), down()), ("b".into(), primary(2))]);
        let v = c.view();
        assert_eq!(v.primary.as_deref(), Some("b"));
        assert_eq!(v.timeline, 2);
        assert_eq!(v.demoted.get("a"), Some(&1));
        // a returns as a primary on timeline 1: fenced on sight.
        let f = c.update(&[("a".into(), primary(1)), ("b".into(), primary(2))]);
        assert_eq!(f, vec!["a".to_string()]);
        assert_eq!(c.view().primary.as_deref(), Some("b"));
        // Rebuilt as a replica: no longer demoted.
        c.update(&[("a".into(), replica(2)), ("b".into(), primary(2))]);
        assert!(c.view().demoted.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_primary_back_in_recovery_is_demoted_until_it_follows_the_new_timeline() {
        let c = cluster_of(&["a", "b"]);
        c.update(&[("a".into(), primary(1)), ("b".into(), replica(1))]);
        c.update(&[("a".into(), down()), ("b".into(), primary(2))]);
        // Demoted on disk, it restarts as a standby still on timeline 1.
        let f = c.update(&[("a".into(), replica(1)), ("b".into(), primary(2))]);
        assert!(f.is_empty(), "a standby needs no fence");
        tokio::time::advance(Duration::from_secs(3)).await;
        c.update(&[("a".into(), replica(1)), ("b".into(), primary(2))]);
        let v = c.view();
        assert_eq!(v.demoted.get("a"), Some(&1));
        assert_eq!(v.stale_standbys.get("a"), Some(&Duration::from_secs(3)));
        // It streams from b on timeline 2: a replica, no longer demoted.
        c.update(&[("a".into(), replica(2)), ("b".into(), primary(2))]);
        let v = c.view();
        assert!(v.demoted.is_empty() && v.stale_standbys.is_empty());
    }

    #[test]
    fn two_primaries_on_one_timeline_is_a_problem_not_a_choice() {
        let c = cluster_of(&["a", "b"]);
        let f = c.update(&[("a".into(), primary(3)), ("b".into(), primary(3))]);
        assert!(f.is_empty(), "nobody is fenced on a guess");
        let v = c.view();
        assert_eq!(v.primary, None);
        assert!(v.problem.unwrap().contains("a and b"));
    }

    #[test]
    fn an_old_primary_already_read_only_is_not_fenced_again() {
        let c = cluster_of(&["a", "b"]);
        c.update(&[("a".into(), replica(2)), ("b".into(), primary(2))]);
        let fenced = Seen::Answered(MemberState {
            in_recovery: false,
            timeline: 1,
            read_only: true,
        });
        assert!(c.update(&[("a".into(), fenced)]).is_empty());
        assert_eq!(c.view().demoted.get("a"), Some(&1));
    }
}
