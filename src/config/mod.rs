//! The daemon config: `medic.yaml` plus `MEDIC_`-prefixed environment
//! overrides (`MEDIC_MODE=enforce`, `MEDIC_STORE__SQLITE__PATH=/var/lib/medic/state.db`).
//!
//! Three phases: parse (serde, unknown fields rejected), validate (pure,
//! collects every problem), build (elsewhere: does the I/O).

mod communication;
pub mod load;
pub mod public;
pub(crate) mod refs;
pub mod topology;
pub mod zones;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::duration::Dur;
use crate::secret::SecretRef;

pub use communication::{Communication, OnOpen, OnSelfHealed, SeverityPolicy};
pub use load::{load, load_str, load_str_with_env, load_with_env};
pub use public::{PublicStatus, Statuspage};
pub use topology::{TargetBudget, TargetLinks, Topology};

/// The scenarios `medic drill --sandbox` can stage (`drill::sandbox`'s
/// list; here so config validation of `drill.sandbox` jobs can name them
/// without importing the drill module above it).
pub const SANDBOX_SCENARIOS: &[&str] = &[
    "redis-cache-failure",
    "database-failure",
    "data-corruption",
    "application-service-failure",
    "monitoring-system-failure",
    "backup-failure",
    "complete-infrastructure-failure",
];

/// Whether actions really run: the config's global mode, which scenarios
/// and plan steps may override.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Actions run.
    Enforce,
    /// Every decision is evaluated and written on the timeline as
    /// "would run ..."; nothing is executed. The safe default.
    #[default]
    DryRun,
}

/// The whole daemon config.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Global mode; scenarios and steps may override it. Default: dry-run.
    #[serde(default)]
    pub mode: Mode,
    /// Rule files or directories of rule files (`*.yaml`, `*.yml`),
    /// relative to the config file. Default: `rules`.
    #[serde(default = "default_rules")]
    pub rules: Vec<PathBuf>,
    /// Prometheus alerting rule files (or directories of them), relative
    /// to the config file: their alerts can be symptoms
    /// (`from_prometheus_rule: NAME`). `medic check` validates them.
    #[serde(default)]
    pub prometheus_rules: Vec<PathBuf>,
    /// Where durable state lives.
    #[serde(default)]
    pub store: StoreConfig,
    /// Everything medic watches or acts on, by name.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetConfig>,
    /// Where pages go, by name.
    #[serde(default = "default_notifiers")]
    pub notifiers: BTreeMap<String, NotifierConfig>,
    /// Escalation policies, by name; scenarios name one.
    #[serde(default = "default_escalation")]
    pub escalation: BTreeMap<String, EscalationPolicy>,
    /// Slack interactivity (the buttons of Slack pages); off when absent.
    #[serde(default)]
    pub slack: Option<SlackApp>,
    /// Global bounds.
    #[serde(default)]
    pub limits: GlobalLimits,
    /// How long a running action may finish after SIGTERM.
    #[serde(default = "default_grace")]
    pub shutdown_grace: Dur,
    /// medic's own HTTP server (health, readiness, webhooks, API); off
    /// when absent.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// Maintenance windows: they block actions (not observation) on a
    /// scenario or a target while they last.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceWindow>,
    /// Scheduled disaster-recovery jobs (backups, backup verification,
    /// restore tests), by name.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobConfig>,
    /// Targets `medic drill` may break on purpose, by target name, with the
    /// command that injects the failure.
    #[serde(default)]
    pub drills: BTreeMap<String, DrillConfig>,
    /// Which replica acts (see [`crate::lead`]). Default: an advisory lock
    /// with a PostgreSQL store, `single` with SQLite.
    #[serde(default)]
    pub leadership: Option<LeadershipConfig>,
    /// Bounds on the Alertmanager intake: delivery size, firing alerts
    /// kept, retention of resolved ones.
    #[serde(default)]
    pub alerts: AlertLimits,
    /// What `/metrics` shows beyond its per-scenario series.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Zones (groups of targets that fail together) and their vantage
    /// probes, by name: how medic tells a silent target from its own
    /// blindness (see [`zones`]).
    #[serde(default)]
    pub zones: BTreeMap<String, zones::ZoneConfig>,
    /// The public status page (its own listener: component names, states
    /// and human-written updates only) and its hosted mirror; off when
    /// absent.
    #[serde(default)]
    pub public_status: Option<PublicStatus>,
    /// The directory relative paths are resolved against (the config
    /// file's directory); set by the loader, not by users.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// What the loader found worth a warning (`medic check` prints them,
    /// start-up logs them): allowed, but probably not what was meant.
    #[serde(skip)]
    pub warnings: Vec<crate::diag::Diagnostic>,
    /// Each target's `depends_on`, `zone` and `budget` (the keys beside
    /// its kind); set by the loader.
    #[serde(skip)]
    pub topology: Topology,
}

fn default_rules() -> Vec<PathBuf> {
    vec![PathBuf::from("rules")]
}

fn default_grace() -> Dur {
    Dur::secs(30)
}

fn default_notifiers() -> BTreeMap<String, NotifierConfig> {
    BTreeMap::from([("log".to_string(), NotifierConfig::Log(LogNotifier {}))])
}

fn default_escalation() -> BTreeMap<String, EscalationPolicy> {
    BTreeMap::from([(
        "default".to_string(),
        EscalationPolicy {
            levels: vec![EscalationLevel {
                after: Dur::secs(0),
                notify: vec!["log".to_string()],
                name: None,
            }],
            repeat: 0,
            ack_timeout: None,
            status_every: None,
            communication: None,
        },
    )])
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::default(),
            rules: default_rules(),
            prometheus_rules: Vec::new(),
            store: StoreConfig::default(),
            targets: BTreeMap::new(),
            notifiers: default_notifiers(),
            escalation: default_escalation(),
            slack: None,
            limits: GlobalLimits::default(),
            shutdown_grace: default_grace(),
            http: None,
            maintenance: Vec::new(),
            jobs: BTreeMap::new(),
            drills: BTreeMap::new(),
            leadership: None,
            alerts: AlertLimits::default(),
            metrics: MetricsConfig::default(),
            zones: BTreeMap::new(),
            public_status: None,
            base_dir: PathBuf::from("."),
            warnings: Vec::new(),
            topology: Topology::default(),
        }
    }
}

impl Config {
    /// A path from the config, resolved against the config file's directory
    /// (left as written when that is the current directory).
    pub fn resolve_path(&self, p: &std::path::Path) -> PathBuf {
        if p.is_absolute()
            || self.base_dir.as_os_str().is_empty()
            || self.base_dir == std::path::Path::new(".")
        {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// `metrics:`: opt-ins for per-symptom series on `/metrics`. By default
/// medic's series are per scenario, so a scrape stays small with 100,000
/// checks; per-symptom detail is in the incidents API and the status page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Symptoms (`SCENARIO/SYMPTOM`, or `SCENARIO` for all of its) that get
    /// `medic_symptom_state{scenario,symptom,state}`.
    #[serde(default)]
    pub per_symptom: Vec<String>,
}

/// Which store backend.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum StoreConfig {
    /// An embedded SQLite file, created on start.
    Sqlite { path: PathBuf },
    /// A PostgreSQL database shared by several medic replicas (the tables
    /// are created on start). Leadership comes from an advisory lock.
    Postgres(PostgresTarget),
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sqlite {
            path: PathBuf::from("medic.db"),
        }
    }
}

/// How replicas elect the one that acts.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum LeadershipConfig {
    /// Always the leader: one replica (the SQLite store).
    Single,
    /// A PostgreSQL advisory lock in the store's database.
    Postgres(PostgresLeadership),
    /// A `coordination.k8s.io/v1` Lease.
    Kubernetes(KubernetesLeadership),
}

/// `leadership: {postgres: {...}}`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresLeadership {
    /// How long a paused or cut-off leader keeps the lock before the
    /// server drops its session (and another replica takes over).
    #[serde(default = "default_lease")]
    pub lease_duration: Dur,
}

impl Default for PostgresLeadership {
    fn default() -> Self {
        PostgresLeadership {
            lease_duration: default_lease(),
        }
    }
}

/// `leadership: {kubernetes: {...}}`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesLeadership {
    /// The Lease's namespace; default: the client's (the pod's) namespace.
    pub namespace: Option<String>,
    /// The Lease's name.
    #[serde(default = "default_lease_name")]
    pub name: String,
    /// `leaseDurationSeconds`: a holder that has not renewed for this long
    /// loses the lease.
    #[serde(default = "default_lease")]
    pub lease_duration: Dur,
    /// A kubeconfig file; default: in-cluster config, else `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
}

fn default_lease() -> Dur {
    Dur::secs(15)
}

fn default_lease_name() -> String {
    "medic".to_string()
}

impl Config {
    /// The leadership mode in effect: the configured one, else an advisory
    /// lock with a PostgreSQL store and `single` with SQLite.
    pub fn leadership(&self) -> LeadershipConfig {
        match (&self.leadership, &self.store) {
            (Some(l), _) => l.clone(),
            (None, StoreConfig::Postgres(_)) => {
                LeadershipConfig::Postgres(PostgresLeadership::default())
            }
            (None, StoreConfig::Sqlite { .. }) => LeadershipConfig::Single,
        }
    }
}

/// A target: `NAME: { KIND: { ...connection details... } }`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum TargetConfig {
    Tcp(TcpTarget),
    Http(HttpTarget),
    Redis(RedisTarget),
    Postgres(PostgresTarget),
    Prometheus(PrometheusTarget),
    Kubernetes(KubernetesTarget),
    Route53(Route53Target),
    Docker(DockerTarget),
}

impl TargetConfig {
    /// Every kind a target may have.
    pub const KINDS: &'static [&'static str] = &[
        "tcp",
        "http",
        "redis",
        "postgres",
        "prometheus",
        "kubernetes",
        "route53",
        "docker",
    ];

    /// The kind's name as written in config.
    pub fn kind(&self) -> &'static str {
        match self {
            TargetConfig::Tcp(_) => "tcp",
            TargetConfig::Http(_) => "http",
            TargetConfig::Redis(_) => "redis",
            TargetConfig::Postgres(_) => "postgres",
            TargetConfig::Prometheus(_) => "prometheus",
            TargetConfig::Kubernetes(_) => "kubernetes",
            TargetConfig::Route53(_) => "route53",
            TargetConfig::Docker(_) => "docker",
        }
    }

    /// `host:port`, for kinds that have one (tcp checks can use them). For
    /// URL targets it is the URL's host and port (default 80 or 443).
    pub fn address(&self) -> Option<String> {
        match self {
            TargetConfig::Tcp(t) => Some(t.address.clone()),
            TargetConfig::Redis(t) => Some(t.address.clone()),
            TargetConfig::Postgres(t) => Some(format!("{}:{}", t.host, t.port)),
            TargetConfig::Http(t) => url_address(&t.url),
            TargetConfig::Prometheus(t) => url_address(&t.url),
            TargetConfig::Kubernetes(_) | TargetConfig::Route53(_) | TargetConfig::Docker(_) => {
                None
            }
        }
    }
}

/// `host:port` of an `http(s)://` URL.
fn url_address(url: &str) -> Option<String> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else {
        (url.strip_prefix("https://")?, 443)
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    // No port, or an IPv6 literal without one (`[::1]`).
    let (host, port) = if host_port.ends_with(']') || !host_port.contains(':') {
        (host_port, default_port)
    } else {
        let (h, p) = host_port.rsplit_once(':')?;
        (h, p.parse::<u16>().ok()?)
    };
    (!host.is_empty()).then(|| format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_targets_have_addresses() {
        let http = |url: &str| TargetConfig::Http(HttpTarget { url: url.into() }).address();
        assert_eq!(
            http("http://127.0.0.1:8000/health").as_deref(),
            Some("127.0.0.1:8000")
        );
        assert_eq!(
            http("https://u:p@example.com/x").as_deref(),
            Some("example.com:443")
        );
        assert_eq!(http("http://[::1]/").as_deref(), Some("[::1]:80"));
        assert_eq!(http("http://[::1]:9090").as_deref(), Some("[::1]:9090"));
        assert_eq!(http("ftp://x"), None);
        assert_eq!(http("http://:80"), None);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpTarget {
    /// `host:port`.
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTarget {
    pub url: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTarget {
    /// `host:port`; empty for a cluster (`members`).
    #[serde(default)]
    pub address: String,
    /// A master and its replicas instead of one server: the names of other
    /// redis targets (each one server). Roles are discovered with `ROLE`:
    /// checks on the cluster follow its current master, `NAME/replicas`
    /// its replicas.
    #[serde(default)]
    pub members: Vec<String>,
    /// ACL user name (Redis 6+).
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    #[serde(default)]
    pub db: i64,
    /// Connect over TLS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// TLS options for targets that support it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Skip certificate verification (self-signed test setups only).
    #[serde(default)]
    pub insecure: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTarget {
    /// The server's host; empty for a cluster (`members`).
    #[serde(default)]
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    #[serde(default = "default_pg_user")]
    pub user: String,
    pub password: Option<SecretRef>,
    #[serde(default = "default_pg_db")]
    pub dbname: String,
    /// A cluster instead of one server: the names of other postgres
    /// targets (each one server). Roles are discovered, not configured:
    /// checks on the cluster follow its current primary.
    #[serde(default)]
    pub members: Vec<String>,
    /// A peer that acknowledges nothing for this long is dead: medic's
    /// held sessions use it as `TCP_USER_TIMEOUT` and for their TCP
    /// keepalives (idle half of it, then two probes a quarter apart), so a
    /// host that vanished is noticed in this time, not the kernel's
    /// 15 minutes. A server that accepts the TCP connection but does not
    /// answer its start-up within it is frozen (failing). Default 5s.
    pub peer_timeout: Option<Dur>,
    /// On a cluster: fence a member on sight when it answers as a primary
    /// on an older timeline than the cluster's (an old primary restarted
    /// after a failover). Default true.
    pub fence_on_sight: Option<bool>,
    /// On a member whose data directory is on medic's host: its path. A
    /// failover that cannot reach this member (it is down) demotes it on
    /// disk before promoting another: `standby.signal` and a
    /// `primary_conninfo` naming the new primary, so a restart brings it
    /// back in recovery (read-only), never as a second primary.
    pub data_dir: Option<std::path::PathBuf>,
    /// On a member on another host: a command (argv, no shell) that
    /// demotes it while it is down, run by a failover before promoting
    /// another, e.g. `[ssh, db1, sudo, -u, postgres, touch,
    /// /var/lib/postgresql/15/main/standby.signal]`. Its environment names
    /// the new primary: `MEDIC_MEMBER`, `MEDIC_NEW_PRIMARY`,
    /// `MEDIC_PRIMARY_HOST`, `MEDIC_PRIMARY_PORT`, `MEDIC_PRIMARY_CONNINFO`
    /// (for its `primary_conninfo`). Exit 0 is demoted.
    pub demote_command: Option<Vec<String>>,
    /// On a server (a cluster member, or a single server): how to restart
    /// its PostgreSQL in place when the postmaster died but its host is
    /// alive (`postgres.restart`, tried before a failover by the shipped
    /// database-failure rule). Without it, that step is skipped.
    pub restart: Option<Box<PgRestart>>,
}

/// `restart:` on a postgres server: one way to start its PostgreSQL again
/// on the same host and data directory, reusing the actions of that kind.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum PgRestart {
    /// `{ systemd: UNIT }`: `systemctl restart UNIT` on medic's host (its
    /// manager must answer first).
    Systemd(String),
    /// `{ docker: TARGET }`: `docker.restart` of a docker target (its
    /// Engine must answer first).
    Docker(String),
    /// `{ exec: [PROGRAM, ARG...] }`: a command (no shell), e.g. an `ssh`
    /// to the host that runs `systemctl restart` there; exit 0 is done,
    /// and an unreachable host fails it.
    Exec(Vec<String>),
}

impl PgRestart {
    /// `systemd`, `docker` or `exec`.
    pub fn kind(&self) -> &'static str {
        match self {
            PgRestart::Systemd(_) => "systemd",
            PgRestart::Docker(_) => "docker",
            PgRestart::Exec(_) => "exec",
        }
    }
}

/// Default `peer_timeout`.
pub const DEFAULT_PEER_TIMEOUT: Dur = Dur::secs(5);

impl PostgresTarget {
    /// Whether this target is a cluster of members.
    pub fn is_cluster(&self) -> bool {
        !self.members.is_empty()
    }

    /// `peer_timeout`, or its default.
    pub fn peer_timeout(&self) -> std::time::Duration {
        self.peer_timeout.unwrap_or(DEFAULT_PEER_TIMEOUT).get()
    }
}

impl Config {
    /// The members of the postgres cluster `name`, each with its settings
    /// (in the order written); `None` when `name` is not a cluster.
    pub fn postgres_members(&self, name: &str) -> Option<Vec<(String, PostgresTarget)>> {
        self.cluster_members(
            name,
            |t| match t {
                TargetConfig::Postgres(p) => Some(p),
                _ => None,
            },
            |p| &p.members,
        )
    }

    /// The members of the redis cluster `name`, each with its settings (in
    /// the order written); `None` when `name` is not a cluster.
    pub fn redis_members(&self, name: &str) -> Option<Vec<(String, RedisTarget)>> {
        self.cluster_members(
            name,
            |t| match t {
                TargetConfig::Redis(r) => Some(r),
                _ => None,
            },
            |r| &r.members,
        )
    }

    /// The members of cluster `name` of the kind `pick` selects.
    fn cluster_members<T: Clone>(
        &self,
        name: &str,
        pick: impl Fn(&TargetConfig) -> Option<&T>,
        members: impl Fn(&T) -> &[String],
    ) -> Option<Vec<(String, T)>> {
        let names = members(self.targets.get(name).and_then(&pick)?);
        if names.is_empty() {
            return None;
        }
        Some(
            names
                .iter()
                .filter_map(|m| Some((m.clone(), pick(self.targets.get(m)?)?.clone())))
                .collect(),
        )
    }
}

impl RedisTarget {
    /// Whether this target is a cluster of members.
    pub fn is_cluster(&self) -> bool {
        !self.members.is_empty()
    }
}

fn default_pg_port() -> u16 {
    5432
}
fn default_pg_user() -> String {
    "postgres".into()
}
fn default_pg_db() -> String {
    "postgres".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusTarget {
    pub url: String,
    pub bearer_token: Option<SecretRef>,
    pub basic_auth: Option<BasicAuth>,
}

/// A Basic-auth user and its password (a secret reference).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: SecretRef,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesTarget {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: String,
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Path to a kubeconfig; default: in-cluster config, then `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
}

/// A container, or the containers of a Compose service, on a Docker
/// Engine reached over its unix socket (the Engine API, never the CLI).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerTarget {
    /// The Engine's unix socket, with or without `unix://` (default
    /// `/var/run/docker.sock`).
    #[serde(default = "default_docker_socket")]
    pub socket: String,
    /// A container by name (`docker ps --filter name=` is a substring
    /// match; this is the exact name).
    pub container: Option<String>,
    /// Or a Compose service: every container labelled with its project
    /// and service (`com.docker.compose.project`,
    /// `com.docker.compose.service`), one-off `run` containers excepted.
    pub compose: Option<ComposeService>,
    /// How long a stop waits for the container to exit before Docker kills
    /// it (`docker restart -t`, `docker stop -t`). Default: the
    /// container's own stop timeout, else Docker's 10 s.
    pub stop_timeout: Option<Dur>,
}

/// A Compose service, by its labels.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeService {
    /// `com.docker.compose.project` (the directory name, or `-p`).
    pub project: String,
    /// `com.docker.compose.service`.
    pub service: String,
}

/// The Docker Engine's usual socket.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Whether `name` is a container name Docker accepts
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`, a leading `/` allowed as the API shows it).
pub fn docker_name(name: &str) -> Result<(), String> {
    let n = name.strip_prefix('/').unwrap_or(name);
    let mut chars = n.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "container {name:?} is not a container name: [a-zA-Z0-9][a-zA-Z0-9_.-]+"
        ))
    }
}

fn default_docker_socket() -> String {
    DEFAULT_DOCKER_SOCKET.into()
}

fn default_namespace() -> String {
    "default".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route53Target {
    pub hosted_zone_id: String,
    /// The record name, e.g. `app.example.com.`.
    pub record: String,
    #[serde(default = "default_record_type")]
    pub record_type: String,
    pub primary: Vec<String>,
    pub secondary: Vec<String>,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// The longest TTL medic accepts on the managed record (default 60):
    /// with a longer one, resolvers keep the old address for too long and a
    /// failover does not take effect; medic refuses to fail such a record
    /// over. Raise it deliberately.
    #[serde(default = "default_ttl")]
    pub max_ttl: u32,
    /// Override the endpoint (tests, other regions' endpoints).
    pub endpoint_url: Option<String>,
    /// The region the SDK signs for (Route 53 is global; default us-east-1).
    #[serde(default = "default_region")]
    pub region: String,
    /// Static credentials; default: the AWS SDK's chain (environment,
    /// profile, web identity, instance metadata).
    pub credentials: Option<AwsCredentials>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// An access key, by secret reference.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsCredentials {
    pub access_key_id: SecretRef,
    pub secret_access_key: SecretRef,
    pub session_token: Option<SecretRef>,
}

impl AwsCredentials {
    /// The secrets resolved into the SDK's credentials (one type shared by
    /// the S3 and Route 53 clients); the error names the field.
    #[cfg(feature = "aws")]
    pub fn resolve(&self) -> Result<aws_sdk_route53::config::Credentials, String> {
        let id = self
            .access_key_id
            .resolve()
            .map_err(|e| format!("access_key_id: {e}"))?;
        let key = self
            .secret_access_key
            .resolve()
            .map_err(|e| format!("secret_access_key: {e}"))?;
        let token = match &self.session_token {
            Some(s) => Some(
                s.resolve()
                    .map_err(|e| format!("session_token: {e}"))?
                    .expose()
                    .to_string(),
            ),
            None => None,
        };
        Ok(aws_sdk_route53::config::Credentials::new(
            id.expose(),
            key.expose(),
            token,
            None,
            "medic-config",
        ))
    }
}

fn default_record_type() -> String {
    "A".into()
}
fn default_ttl() -> u32 {
    60
}

/// A notifier: `NAME: { KIND: { ... } }`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum NotifierConfig {
    /// Pages are written to medic's log at ERROR level.
    Log(LogNotifier),
    /// One Block Kit message per incident in a Slack channel, updated in
    /// place, with action buttons; timeline entries in its thread.
    Slack(SlackNotifier),
    /// PagerDuty Events API v2: trigger, acknowledge, resolve.
    PagerDuty(PagerDutyNotifier),
    /// A JSON POST per notification (status pages, chat tools).
    Webhook(WebhookNotifier),
    /// Email over SMTP (STARTTLS or TLS, with authentication): one
    /// message per notice to a list of recipients.
    Email(EmailNotifier),
}

impl NotifierConfig {
    /// Every kind a notifier may have.
    pub const KINDS: &'static [&'static str] = &["log", "slack", "pagerduty", "webhook", "email"];
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogNotifier {}

/// A Slack channel, posted to by a bot.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackNotifier {
    /// The bot token (`xoxb-...`), scopes `chat:write` (and
    /// `usergroups:read` when approvers are user groups).
    pub token: SecretRef,
    /// Channel ID (`C0123ABCD`).
    pub channel: String,
    /// Users (`U...`) or groups (`S...`) mentioned in the thread when this
    /// notifier's level is paged.
    #[serde(default)]
    pub mention: Vec<String>,
    /// The Web API's base URL (tests point it at a local fake).
    #[serde(default = "default_slack_api")]
    pub api_url: String,
}

fn default_slack_api() -> String {
    "https://slack.com/api".into()
}

/// A PagerDuty service integration (Events API v2).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyNotifier {
    /// The integration's routing key.
    pub routing_key: SecretRef,
    /// The events endpoint (tests point it at a local fake).
    #[serde(default = "default_pagerduty_url")]
    pub url: String,
}

fn default_pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

/// A generic JSON webhook.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookNotifier {
    /// Where to POST: a secret reference (`{env: NAME}` / `{file: PATH}`),
    /// or inline (accepted; `medic check` warns). Never printed.
    pub url: crate::secret::SecretOrInline,
    /// Sent as `Authorization: Bearer ...` when set.
    #[serde(default)]
    pub bearer_token: Option<SecretRef>,
}

/// An SMTP relay and the recipients of one list (stakeholders, affected
/// users, executives, the on-call's mailbox).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailNotifier {
    /// The SMTP server's host name (what its certificate names).
    pub server: String,
    /// Default: 587 with `starttls`, 465 with `tls`, 25 with `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (default): plain connection upgraded with STARTTLS,
    /// refused if the server does not offer it; `tls`: TLS from the first
    /// byte (port 465); `none`: no encryption (a relay on localhost only).
    #[serde(default)]
    pub tls: EmailTls,
    /// A PEM file of certificate authorities to trust besides the
    /// system's (an internal relay with a private CA).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The sender: `medic <medic@example.com>` or `medic@example.com`.
    pub from: String,
    /// Authentication (PLAIN or LOGIN), when set; needs `password`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Recipients named in the message.
    #[serde(default)]
    pub to: Vec<String>,
    /// Recipients nobody else sees (affected users).
    #[serde(default)]
    pub bcc: Vec<String>,
    /// Put before every subject (`[medic] `).
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
}

fn default_subject_prefix() -> String {
    "[medic] ".into()
}

/// How the email notifier secures its SMTP connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    #[default]
    Starttls,
    Tls,
    None,
}

impl EmailNotifier {
    /// The port, or the TLS mode's usual one.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            EmailTls::Starttls => 587,
            EmailTls::Tls => 465,
            EmailTls::None => 25,
        })
    }
}

/// Who is paged, and when.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicy {
    pub levels: Vec<EscalationLevel>,
    /// After the last level, run the chain again this many times, then
    /// stop (and say so). Default 0.
    #[serde(default)]
    pub repeat: u32,
    /// An acknowledgement older than this, on an incident still open,
    /// reopens it: escalation resumes at the level after the last paged.
    #[serde(default)]
    pub ack_timeout: Option<Dur>,
    /// Status updates to everyone paged, every this long while the
    /// incident is open (the runbook: 30m). Default: none.
    #[serde(default)]
    pub status_every: Option<Dur>,
    /// The communication plan: notices at detection, levels timed from
    /// detection, the RTO clock, executives. Absent: pages only when a
    /// plan gives up, levels timed from then.
    #[serde(default)]
    pub communication: Option<Communication>,
}

/// One level: after `after` without acknowledgement, page `notify`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationLevel {
    pub after: Dur,
    /// Notifier names.
    pub notify: Vec<String>,
    /// Who this level is, for humans (`technical lead`).
    #[serde(default)]
    pub name: Option<String>,
}

/// The Slack app's interactivity (buttons): how medic checks that a click
/// comes from Slack, and who may decide.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackApp {
    /// The app's signing secret (Basic Information → App Credentials).
    pub signing_secret: SecretRef,
    /// Slack user IDs allowed to Approve, Reject and Resolve.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Slack user group IDs (`S...`) whose members may too (resolved with
    /// `usergroups.users.list` through the first Slack notifier's token).
    #[serde(default)]
    pub approver_groups: Vec<String>,
}

/// Global bounds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalLimits {
    /// Checks running at once.
    #[serde(default = "default_checks")]
    pub concurrent_checks: usize,
    /// Actions running at once.
    #[serde(default = "default_actions")]
    pub actions_in_flight: usize,
    /// When most of a scenario's targets fail at once, the cause is more
    /// likely the network or medic's own view: act on none, escalate.
    #[serde(default)]
    pub blast_radius: BlastRadius,
    /// Spread the first runs of checks slower than 1 s over their first
    /// interval (at most 15 s) instead of running them all at start-up,
    /// so thousands of checks do not fire in the same millisecond.
    /// Default true; `medic test` turns it off (series start at 0).
    #[serde(default = "default_true")]
    pub spread_first_checks: bool,
    /// How long a dependent incident's symptoms must outlive its cause's
    /// resolution before it runs its own plan (they often clear on their
    /// own once the cause is fixed). Default 2m.
    #[serde(default = "default_dependency_grace")]
    pub dependency_grace: Dur,
}

fn default_dependency_grace() -> Dur {
    Dur::secs(120)
}

fn default_true() -> bool {
    true
}

/// The blast-radius bound of [`GlobalLimits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlastRadius {
    /// Act on none when more than this share (in percent) of a
    /// scenario's targets fail at once. Default 50.
    #[serde(default = "default_blast_percent")]
    pub percent: u32,
    /// The bound applies to scenarios watching at least this many targets
    /// (with one target, "all of them failing" is just the incident).
    #[serde(default = "default_blast_min")]
    pub min_targets: usize,
}

fn default_blast_percent() -> u32 {
    50
}
fn default_blast_min() -> usize {
    2
}

impl Default for BlastRadius {
    fn default() -> Self {
        BlastRadius {
            percent: default_blast_percent(),
            min_targets: default_blast_min(),
        }
    }
}

/// A maintenance window: actions of `scenario`, or actions on `target`
/// (at least one of them), are blocked from `start` until `end`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub scenario: Option<String>,
    pub target: Option<String>,
    /// RFC 3339, e.g. `2026-03-01T22:00:00Z`.
    pub start: chrono::DateTime<chrono::Utc>,
    pub end: chrono::DateTime<chrono::Utc>,
    /// Shown on the timeline.
    #[serde(default)]
    pub reason: String,
}

fn default_checks() -> usize {
    256
}
fn default_actions() -> usize {
    4
}

impl Default for GlobalLimits {
    fn default() -> Self {
        GlobalLimits {
            concurrent_checks: default_checks(),
            actions_in_flight: default_actions(),
            blast_radius: BlastRadius::default(),
            spread_first_checks: true,
            dependency_grace: default_dependency_grace(),
        }
    }
}

/// Bounds on the Alertmanager intake (`alerts:`), so a hostile or runaway
/// sender cannot grow medic's memory or work without limit.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertLimits {
    /// Largest delivery body, in bytes; larger is 413. Default 4 MiB.
    #[serde(default = "default_delivery_bytes")]
    pub max_delivery_bytes: usize,
    /// Most alerts in one delivery; more is 413 (set Alertmanager's
    /// `webhook_configs.max_alerts` to at most this). Default 1000.
    #[serde(default = "default_per_delivery")]
    pub max_per_delivery: usize,
    /// Most alerts firing at once; a delivery that would add firing alerts
    /// beyond it is refused whole with 429. Default 10000.
    #[serde(default = "default_max_firing")]
    pub max_firing: usize,
    /// How long a resolved alert is kept (it stops a late duplicate from
    /// reviving it), then pruned. Default 24h.
    #[serde(default = "default_resolved_retention")]
    pub resolved_retention: Dur,
}

fn default_delivery_bytes() -> usize {
    4 << 20
}
fn default_per_delivery() -> usize {
    1000
}
fn default_max_firing() -> usize {
    10_000
}
fn default_resolved_retention() -> Dur {
    Dur::secs(24 * 3600)
}

impl Default for AlertLimits {
    fn default() -> Self {
        AlertLimits {
            max_delivery_bytes: default_delivery_bytes(),
            max_per_delivery: default_per_delivery(),
            max_firing: default_max_firing(),
            resolved_retention: default_resolved_retention(),
        }
    }
}

/// medic's own HTTP server.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on. Keep it on 127.0.0.1 unless something outside
    /// the host must reach it (Slack, Alertmanager, Kubernetes probes).
    pub listen: std::net::SocketAddr,
    /// Bearer token of every mutating route: the incident decisions
    /// (acknowledge, approve, reject, escalate, resolve) and `POST
    /// /-/reload`; it also opens the read routes. Without it those routes
    /// are refused.
    #[serde(default)]
    pub api_token: Option<SecretRef>,
    /// Bearer token (or Basic password) of the read routes: the incidents
    /// API, the status page and job runs. Without it (and without
    /// `open_reads`) only the API token reads.
    #[serde(default)]
    pub read_token: Option<SecretRef>,
    /// Read routes need no token (a listener only trusted clients reach).
    /// Warned about on a non-loopback `listen`. Default: false.
    #[serde(default)]
    pub open_reads: bool,
    /// Credentials the Alertmanager intake (`POST
    /// /api/v1/alerts/alertmanager`) requires. Without it the intake
    /// refuses every delivery (401).
    #[serde(default)]
    pub intake: Option<IntakeAuth>,
    /// TLS on the listener itself (cert and key by path, re-read on
    /// SIGHUP). Without it medic speaks plain HTTP (put a TLS proxy in
    /// front when anything outside the host reaches it).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// How long a client may take to send a request's headers (slow
    /// clients are disconnected). Default 10s.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Dur,
    /// How long one request may take, body included (then 503). Default 30s.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// Requests handled at once in each route group (the intake, Slack,
    /// the rest; beyond: 503 with Retry-After); `/healthz` and `/readyz`
    /// are not counted. Default 64.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Open connections at most (beyond: closed at once). Lowered at
    /// start-up to fit the process's file limit. Default 512.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_header_timeout() -> Dur {
    Dur::secs(10)
}
fn default_request_timeout() -> Dur {
    Dur::secs(30)
}
fn default_max_in_flight() -> usize {
    64
}
fn default_max_connections() -> usize {
    512
}

impl HttpConfig {
    /// An HTTP server on `listen` with every other setting at its default.
    pub fn on(listen: std::net::SocketAddr) -> Self {
        HttpConfig {
            listen,
            api_token: None,
            read_token: None,
            open_reads: false,
            intake: None,
            tls: None,
            header_timeout: default_header_timeout(),
            request_timeout: default_request_timeout(),
            max_in_flight: default_max_in_flight(),
            max_connections: default_max_connections(),
        }
    }

    /// Whether the intake takes deliveries without credentials.
    pub fn intake_is_open(&self) -> bool {
        self.intake.as_ref().is_some_and(|i| i.open)
    }

    /// Whether the intake checks credentials (bearer or basic).
    pub fn intake_is_authenticated(&self) -> bool {
        self.intake
            .as_ref()
            .is_some_and(|i| !i.open && (i.bearer.is_some() || i.basic.is_some()))
    }
}

/// `http.intake`: what Alertmanager's `http_config` sends. Either or both
/// of `bearer` and `basic` (a delivery matching either is accepted), or
/// `open: true` for none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeAuth {
    /// `Authorization: Bearer TOKEN` (Alertmanager's `http_config.authorization`).
    #[serde(default)]
    pub bearer: Option<SecretRef>,
    /// `Authorization: Basic ...` (Alertmanager's `http_config.basic_auth`).
    #[serde(default)]
    pub basic: Option<BasicAuth>,
    /// No credentials (a proxy in front authenticates). Refused with
    /// enforce-mode scenarios on `alert` checks.
    #[serde(default)]
    pub open: bool,
}

/// `http.tls`: PEM files, read at start-up and again on SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// The certificate chain (leaf first), PEM.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key: PathBuf,
}

/// A scheduled job: `NAME: { schedule: CRON, timezone: TZ, KIND: {...} }`
/// with exactly one KIND (`postgres.backup`, `backup.verify`,
/// `postgres.restore-test`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// A cron expression: five fields (`0 2 * * *`: daily at 02:00) or six
    /// with seconds first (`0 0 2 * * *`).
    pub schedule: String,
    /// The IANA time zone the schedule is read in. Default `UTC`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Overrides the global mode: in dry-run a job is not run, its slots
    /// are written on its timeline as "would run".
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Longest a run may take; it is then stopped and fails.
    #[serde(default = "default_job_timeout")]
    pub timeout: Dur,
    #[serde(rename = "postgres.backup")]
    pub backup: Option<BackupJobConfig>,
    #[serde(rename = "backup.verify")]
    pub verify: Option<VerifyJobConfig>,
    #[serde(rename = "postgres.restore-test")]
    pub restore_test: Option<RestoreTestJobConfig>,
    #[serde(rename = "redis.backup")]
    pub redis_backup: Option<RedisBackupJobConfig>,
    #[serde(rename = "kubernetes.backup")]
    pub kubernetes_backup: Option<KubernetesBackupJobConfig>,
    #[serde(rename = "drill.sandbox")]
    pub drill: Option<DrillJobConfig>,
    #[serde(rename = "drill.target")]
    pub drill_target: Option<DrillTargetJobConfig>,
}

/// `drill.target`: the runbook's scheduled drill against a real target the
/// config marks for drills (`drills: { TARGET: { drill: allowed, inject:
/// [...] } }`). The run injects the failure with the target's command and
/// follows the incident this medic's own engine opens and remediates (no
/// second engine acts beside it); the report is stored on the run and
/// sent to `notify`. It is not run while the scenario has an open incident.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillTargetJobConfig {
    /// The scenario drilled: one of the loaded rule files'.
    pub scenario: String,
    /// The target broken: marked `drill: allowed` under `drills:`.
    pub target: String,
    /// The notifiers the report goes to (the team's channel).
    #[serde(default)]
    pub notify: Vec<String>,
}

/// `drill.sandbox`: the runbook's scheduled DR drill. A sandbox drill of a
/// shipped scenario (`medic drill --sandbox SCENARIO`, in a child process),
/// its report stored on the job run and sent to `notify`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillJobConfig {
    /// The scenario drilled: one the sandbox can stage.
    pub scenario: String,
    /// The directory of the shipped rule file drilled; default: the first
    /// of the config's `rules` directories that has `SCENARIO.yaml`.
    pub rules: Option<PathBuf>,
    /// The notifiers the report goes to (the team's channel).
    #[serde(default)]
    pub notify: Vec<String>,
}

impl JobConfig {
    /// The kinds a job may have.
    pub const KINDS: &'static [&'static str] = &[
        "postgres.backup",
        "backup.verify",
        "postgres.restore-test",
        "redis.backup",
        "kubernetes.backup",
        "drill.sandbox",
        "drill.target",
    ];

    /// The kind set, if exactly one is.
    pub fn kind(&self) -> Option<&'static str> {
        let kinds = [
            self.backup.is_some(),
            self.verify.is_some(),
            self.restore_test.is_some(),
            self.redis_backup.is_some(),
            self.kubernetes_backup.is_some(),
            self.drill.is_some(),
            self.drill_target.is_some(),
        ];
        match kinds.iter().filter(|set| **set).count() {
            1 => kinds.iter().position(|set| *set).map(|i| Self::KINDS[i]),
            _ => None,
        }
    }

    /// Where a backup job (`postgres.backup`, `redis.backup` or
    /// `kubernetes.backup`) keeps its copies, and for how long.
    pub fn backup_storage(&self) -> Option<BackupStorage<'_>> {
        if let Some(b) = &self.backup {
            return Some(BackupStorage {
                directory: b.directory.as_ref(),
                s3: b.s3.as_ref(),
                places: &b.places,
                retention: b.retention,
                keep: b.keep.as_ref(),
            });
        }
        if let Some(k) = &self.kubernetes_backup {
            return Some(BackupStorage {
                directory: k.directory.as_ref(),
                s3: k.s3.as_ref(),
                places: &k.places,
                retention: k.retention,
                keep: k.keep.as_ref(),
            });
        }
        self.redis_backup.as_ref().map(|r| BackupStorage {
            directory: r.directory.as_ref(),
            s3: r.s3.as_ref(),
            places: &r.places,
            retention: r.retention,
            keep: r.keep.as_ref(),
        })
    }
}

/// The storage fields of a backup job (both kinds have the same ones).
#[derive(Clone, Copy, Debug)]
pub struct BackupStorage<'a> {
    pub directory: Option<&'a PathBuf>,
    pub s3: Option<&'a S3Config>,
    pub places: &'a [PlaceConfig],
    pub retention: Option<Dur>,
    pub keep: Option<&'a KeepConfig>,
}

impl BackupStorage<'_> {
    /// Every place, named: the old `directory` (named `directory`) and
    /// `s3` (named `s3`) keys first, then `places` in order.
    pub fn places(&self) -> Vec<PlaceConfig> {
        let mut v = Vec::new();
        if let Some(d) = self.directory {
            v.push(PlaceConfig {
                name: "directory".into(),
                directory: Some(d.clone()),
                s3: None,
                azure: None,
            });
        }
        if let Some(s3) = self.s3 {
            v.push(PlaceConfig {
                name: "s3".into(),
                directory: None,
                s3: Some(s3.clone()),
                azure: None,
            });
        }
        v.extend(self.places.iter().cloned());
        v
    }

    /// The first local directory among the places: where a copy is
    /// written first (and moved into), the others upload from it.
    pub fn work_directory(&self) -> Option<PathBuf> {
        self.places().into_iter().find_map(|p| p.directory)
    }

    /// What retention keeps: the tiers of `keep`, else everything younger
    /// than `retention` (default 30d, the runbook).
    pub fn retention_policy(&self) -> Retention {
        match self.keep {
            Some(k) => Retention::Tiers(k.clone()),
            None => Retention::Within(self.retention.unwrap_or_else(default_retention)),
        }
    }
}

/// What a backup job's retention keeps (besides the newest good copy,
/// which it always keeps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retention {
    /// `retention: 30d`: every copy younger than this.
    Within(Dur),
    /// `keep: { daily: 30d, monthly: 1y }`: one copy per period.
    Tiers(KeepConfig),
}

/// `keep:` retention tiers. Each keeps, for every period (UTC calendar
/// day, ISO week, month, year) that has a copy younger than its duration,
/// the newest such copy (the newest good one, if the period has one). A
/// copy no tier keeps is deleted, except the newest good copy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepConfig {
    pub daily: Option<Dur>,
    pub weekly: Option<Dur>,
    pub monthly: Option<Dur>,
    pub yearly: Option<Dur>,
}

impl KeepConfig {
    /// The tiers set, by name.
    pub fn tiers(&self) -> Vec<(&'static str, Dur)> {
        [
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]
        .into_iter()
        .filter_map(|(n, d)| Some((n, d?)))
        .collect()
    }
}

/// One named place a backup job keeps copies in: exactly one of
/// `directory`, `s3`, `azure`. `backup.verify` checks each place on its
/// own and names the one at fault.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceConfig {
    /// Unique within the job (`primary`, `azure-copy`); on every timeline
    /// line and page about the place.
    pub name: String,
    pub directory: Option<PathBuf>,
    pub s3: Option<S3Config>,
    pub azure: Option<AzureConfig>,
}

impl PlaceConfig {
    /// How many kinds are set (exactly one is valid).
    pub fn kinds(&self) -> usize {
        usize::from(self.directory.is_some())
            + usize::from(self.s3.is_some())
            + usize::from(self.azure.is_some())
    }
}

/// An Azure Blob Storage container (or Azurite), signed with the account
/// key (Shared Key) or a SAS token, each by secret reference.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// The storage account name.
    pub account: String,
    pub container: String,
    /// Blob name prefix, e.g. `postgres/`.
    #[serde(default)]
    pub prefix: String,
    /// The account key (base64, as the portal shows it): Shared Key.
    pub key: Option<SecretRef>,
    /// A SAS token (`sv=...&sig=...`, with or without the leading `?`)
    /// granting read, write, list and delete on the container.
    pub sas: Option<SecretRef>,
    /// Another endpoint than `https://ACCOUNT.blob.core.windows.net`:
    /// Azurite's `http://127.0.0.1:10000/devstoreaccount1`, a private
    /// endpoint, a sovereign cloud.
    pub endpoint_url: Option<String>,
}

fn default_timezone() -> String {
    "UTC".into()
}
fn default_job_timeout() -> Dur {
    Dur::secs(4 * 3600)
}

/// `postgres.backup`: `pg_dump --format=custom` of a target, to a local
/// directory and/or S3, with retention.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupJobConfig {
    /// The PostgreSQL target to dump.
    pub target: String,
    /// The directory holding `pg_dump`/`pg_restore`; default: the newest
    /// `/usr/lib/postgresql/*/bin`, else `PATH`.
    pub pg_bin: Option<PathBuf>,
    /// Where copies go: `directory`, `s3` and/or the named `places`
    /// (at least one place in all).
    pub directory: Option<PathBuf>,
    pub s3: Option<S3Config>,
    #[serde(default)]
    pub places: Vec<PlaceConfig>,
    /// Copies older than this are deleted, except the newest good one.
    /// Default 30d (the runbook). Not with `keep`.
    pub retention: Option<Dur>,
    /// Retention tiers instead of `retention`.
    pub keep: Option<KeepConfig>,
    /// pg_dump's compression level (0-9). Default 6.
    #[serde(default = "default_compress")]
    pub compress: u8,
}

/// `redis.backup`: `BGSAVE` on a redis target, wait for `LASTSAVE` to
/// move, copy the RDB file (`CONFIG GET dir` + `dbfilename`, read where
/// medic runs: on the Redis host) to a directory and/or S3, verified
/// (`REDIS` magic, trailing CRC64) and checksummed, with retention.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisBackupJobConfig {
    /// The redis target (one server, not a cluster of members).
    pub target: String,
    /// Where copies go: `directory`, `s3` and/or the named `places`
    /// (at least one place in all).
    pub directory: Option<PathBuf>,
    pub s3: Option<S3Config>,
    #[serde(default)]
    pub places: Vec<PlaceConfig>,
    /// Copies older than this are deleted, except the newest good one.
    /// Default 30d (the runbook). Not with `keep`.
    pub retention: Option<Dur>,
    /// Retention tiers instead of `retention`.
    pub keep: Option<KeepConfig>,
    /// Longest wait for the `BGSAVE` to finish (`LASTSAVE` to move).
    /// Default 10m; the job's own `timeout` still bounds the whole run.
    #[serde(default = "default_save_timeout")]
    pub save_timeout: Dur,
}

/// `kubernetes.backup`: the runbook's "Kubernetes manifests, ConfigMaps
/// and Secrets" backup. Every namespaced resource of a namespace that the
/// API lists (objects a controller owns, events, endpoints and leases
/// aside), as one YAML stream `kubectl apply -f` takes; with `encrypt`,
/// the whole copy is encrypted to age recipients (Secrets included),
/// without it Secrets are left out (named only).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesBackupJobConfig {
    /// A kubernetes target: its API (kubeconfig) and, by default, its
    /// namespace.
    pub target: String,
    /// Another namespace than the target's.
    pub namespace: Option<String>,
    /// Resources to leave out, by plural name (`pods`) or `name.group`
    /// (`ingresses.networking.k8s.io`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Encrypt the copy to these age recipients (Secrets are only backed
    /// up encrypted).
    pub encrypt: Option<AgeEncryption>,
    /// Where copies go: `directory`, `s3` and/or the named `places`
    /// (at least one place in all).
    pub directory: Option<PathBuf>,
    pub s3: Option<S3Config>,
    #[serde(default)]
    pub places: Vec<PlaceConfig>,
    /// Copies older than this are deleted, except the newest good one.
    /// Default 30d (the runbook). Not with `keep`.
    pub retention: Option<Dur>,
    /// Retention tiers instead of `retention`.
    pub keep: Option<KeepConfig>,
}

/// age encryption of a backup copy: to whom, and (for `backup.verify` to
/// read the copy back) the identity, by secret reference.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeEncryption {
    /// Public keys (`age1...`); not secrets, so written inline or in
    /// `recipients_file` (one per line, `#` comments), or both.
    #[serde(default)]
    pub recipients: Vec<String>,
    pub recipients_file: Option<PathBuf>,
    /// The private key (`AGE-SECRET-KEY-1...`) that `backup.verify`
    /// decrypts the copy with to count its objects; without it the copy
    /// is verified by size, sha256 and its age header only.
    pub identity: Option<SecretRef>,
}

fn default_save_timeout() -> Dur {
    Dur::secs(600)
}

fn default_retention() -> Dur {
    Dur::secs(30 * 86_400)
}
fn default_compress() -> u8 {
    6
}

/// An S3-compatible bucket.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix, e.g. `postgres/`.
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// Another endpoint than AWS (MinIO, moto in tests); path-style URLs.
    pub endpoint_url: Option<String>,
    /// Static credentials; default: the AWS SDK's chain.
    pub credentials: Option<AwsCredentials>,
}

/// `backup.verify`: the newest copy of a backup job exists, is younger
/// than the RPO and is intact (checksum, `pg_restore --list`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyJobConfig {
    /// The `postgres.backup` job whose copies to check.
    pub backup: String,
    /// The newest copy must be younger than this. Default 24h (runbook).
    #[serde(default = "default_rpo")]
    pub rpo: Dur,
    /// Where the result is written for `backup` checks; default
    /// `medic-backup-NAME.json` beside the config.
    pub state: Option<PathBuf>,
}

fn default_rpo() -> Dur {
    Dur::secs(24 * 3600)
}

/// `postgres.restore-test`: restore the newest copy into a scratch
/// database (created and dropped by the job), run integrity queries,
/// measure the restore time against the objective.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreTestJobConfig {
    /// The `postgres.backup` job whose newest copy to restore.
    pub backup: String,
    /// The server to restore on; default: the backup job's target. The
    /// scratch database is `medic_restore_test_TIMESTAMP`, never the
    /// target's own database.
    pub target: Option<String>,
    /// The recovery time objective of restoring from a backup. Default 2h.
    #[serde(default = "default_restore_rto")]
    pub rto: Dur,
    /// Tables whose rows are counted (the runbook's step 4).
    #[serde(default = "default_count_tables")]
    pub count: Vec<String>,
    /// Read-only integrity queries that must return 0 (the data-corruption
    /// checks), by name.
    #[serde(default = "default_integrity")]
    pub integrity: BTreeMap<String, String>,
}

fn default_restore_rto() -> Dur {
    Dur::secs(2 * 3600)
}
fn default_count_tables() -> Vec<String> {
    ["patients", "appointments", "prescriptions", "audit_logs"]
        .map(String::from)
        .to_vec()
}
fn default_integrity() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "orphaned_appointments".to_string(),
            "SELECT count(*) FROM appointments WHERE patient_id NOT IN (SELECT id FROM patients)"
                .to_string(),
        ),
        (
            "invalid_appointment_status".to_string(),
            "SELECT count(*) FROM appointments WHERE status NOT IN \
             ('scheduled', 'confirmed', 'cancelled', 'completed')"
                .to_string(),
        ),
        (
            "future_prescriptions".to_string(),
            "SELECT count(*) FROM prescriptions WHERE created_at > NOW()".to_string(),
        ),
    ])
}

/// Whether `medic drill` may break a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrillPermission {
    Allowed,
    Forbidden,
}

/// A drill target: `TARGET: { drill: allowed, inject: [CMD, ARGS...] }`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// Only `allowed` targets are ever broken on purpose.
    pub drill: DrillPermission,
    /// The command that injects the failure (kill a process, stop a
    /// service, block a port), run without a shell.
    pub inject: Vec<String>,
    /// Which scenarios this target's drill exercises; default: any.
    #[serde(default)]
    pub scenarios: Vec<String>,
    /// How long the drill waits for detection and recovery. Default 10m.
    #[serde(default = "default_drill_wait")]
    pub wait: Dur,
}

fn default_drill_wait() -> Dur {
    Dur::secs(600)
}
