//! The sandbox's `complete-infrastructure-failure`: two regions on
//! 127.0.0.1 (port sets), a Route 53 (moto_server) whose record says which
//! region serves, and fronts that follow it (the module doc of
//! [`super`] says what each part stands for).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use aws_sdk_route53::Client;
use aws_sdk_route53::config::retry::RetryConfig;
use aws_sdk_route53::config::timeout::TimeoutConfig;
use aws_sdk_route53::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_route53::error::DisplayErrorContext;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use super::{
    BoxFut, DrillError, DrillReport, LossProbe, Sandbox, Writer, adapt, fail, finish, load,
    on_path, pg_connect,
};
use crate::duration::Dur;
use crate::remedy::ActionSpec;
use crate::rules::model::Scenario;

/// The record users resolve, and what it holds for each region.
const RECORD: &str = "app.sandbox.example.";
const PRIMARY: &str = "127.0.0.1";
const SECONDARY: &str = "127.0.0.2";
/// How often the sandbox's resolver reads the record.
const RESOLVE_EVERY: Duration = Duration::from_millis(250);
/// The shipped waits, shortened: `for`, `clear_for`, and the promotion's
/// primary-unreachable gate.
const FOR: Dur = Dur::secs(3);
const CLEAR_FOR: Dur = Dur::secs(3);
const UNREACHABLE_FOR: Dur = Dur::secs(5);
const UNREACHABLE_CHECKS: u32 = 4;

/// A Route 53 client of the sandbox's moto_server on `port`.
fn client(port: u16) -> Client {
    let conf = aws_sdk_route53::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "sandbox", "sandbox", None, None, "sandbox",
        ))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
        .build();
    Client::from_conf(conf)
}

/// The hosted zone `sandbox.example.` with [`RECORD`] on the primary
/// region (TTL 60 s, the longest medic fails over); returns its id.
async fn create_zone(c: &Client) -> Result<String, DrillError> {
    let r53 = |e: String| fail(format!("the sandbox's Route 53 (moto_server): {e}"));
    let zone = c
        .create_hosted_zone()
        .name("sandbox.example.")
        .caller_reference(format!("medic-sandbox-{}", std::process::id()))
        .send()
        .await
        .map_err(|e| r53(DisplayErrorContext(e).to_string()))?
        .hosted_zone()
        .map(|z| z.id().trim_start_matches("/hostedzone/").to_string())
        .ok_or_else(|| fail("moto_server created no hosted zone"))?;
    let set = ResourceRecordSet::builder()
        .name(RECORD)
        .r#type(RrType::A)
        .ttl(60)
        .resource_records(
            ResourceRecord::builder()
                .value(PRIMARY)
                .build()
                .map_err(fail)?,
        )
        .build()
        .map_err(fail)?;
    let change = Change::builder()
        .action(ChangeAction::Upsert)
        .resource_record_set(set)
        .build()
        .map_err(fail)?;
    c.change_resource_record_sets()
        .hosted_zone_id(&zone)
        .change_batch(
            ChangeBatch::builder()
                .changes(change)
                .build()
                .map_err(fail)?,
        )
        .send()
        .await
        .map_err(|e| r53(DisplayErrorContext(e).to_string()))?;
    Ok(zone)
}

/// [`RECORD`]'s value now, as Route 53 answers it.
async fn resolve(c: &Client, zone: &str) -> Result<String, String> {
    let out = c
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .map_err(|e| DisplayErrorContext(e).to_string())?;
    out.resource_record_sets()
        .iter()
        .filter(|s| s.name() == RECORD && *s.r#type() == RrType::A)
        .flat_map(|s| s.resource_records().iter().map(|r| r.value().to_string()))
        .next()
        .ok_or_else(|| format!("{RECORD} has no A record"))
}

/// Which region an address of the record stands for.
fn region(addr: &str) -> &'static str {
    match addr {
        PRIMARY => "the primary region",
        SECONDARY => "the secondary region",
        _ => "no sandbox region",
    }
}

impl Sandbox {
    /// The sandbox's resolver: reads [`RECORD`] from Route 53 every
    /// [`RESOLVE_EVERY`] (a resolver with that short a cache; it keeps its
    /// last answer while Route 53 does not answer).
    fn resolver(&mut self, c: Client, zone: String) -> watch::Receiver<Option<String>> {
        let (tx, rx) = watch::channel(None);
        self.tasks.push(tokio::spawn(async move {
            loop {
                if let Ok(v) = resolve(&c, &zone).await {
                    tx.send_if_modified(|old| {
                        let changed = old.as_deref() != Some(&*v);
                        *old = Some(v);
                        changed
                    });
                }
                tokio::time::sleep(RESOLVE_EVERY).await;
            }
        }));
        rx
    }

    /// A front on a free port for one service users reach by the DNS
    /// name: each connection goes to the port `regions` gives for the
    /// record's current value. While that region's service refuses, the
    /// front does not listen either (connecting is refused, as at a dead
    /// region's address; a `tcp` check sees it): it closes its port when
    /// forwarding fails and opens it again once the service the record
    /// names accepts (probed every 250 ms). Returns the port.
    async fn region_front(
        &mut self,
        dns: watch::Receiver<Option<String>>,
        regions: [(&'static str, u16); 2],
    ) -> Result<u16, DrillError> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = listen(addr).map_err(fail)?;
        let addr = listener.local_addr().map_err(fail)?;
        let upstream = move || -> Option<u16> {
            let v = dns.borrow();
            let v = v.as_deref()?;
            regions.iter().find(|(r, _)| *r == v).map(|(_, p)| *p)
        };
        self.tasks.push(tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                match &listener {
                    Some(l) => {
                        let Ok((mut client, _)) = l.accept().await else {
                            listener = None;
                            continue;
                        };
                        let server = match upstream() {
                            Some(to) => TcpStream::connect(("127.0.0.1", to)).await.ok(),
                            None => None,
                        };
                        match server {
                            Some(mut server) => {
                                tokio::spawn(async move {
                                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server)
                                        .await;
                                });
                            }
                            // Dropping `client` too: closed at once.
                            None => listener = None,
                        }
                    }
                    None => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        let up = match upstream() {
                            Some(to) => TcpStream::connect(("127.0.0.1", to)).await.is_ok(),
                            None => false,
                        };
                        if up {
                            match listen(addr) {
                                Ok(l) => listener = Some(l),
                                Err(e) => {
                                    tracing::warn!(%addr, error = %e, "the sandbox's front cannot listen again")
                                }
                            }
                        }
                    }
                }
            }
        }));
        Ok(addr.port())
    }
}

/// Listens on `addr`, reusing it (its closed connections' TIME_WAIT).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(128)
}

/// Shortens the shipped waits (minutes) to seconds, saying so.
fn shorten(sc: &mut Scenario, notes: &mut Vec<String>) {
    let mut shortened = Vec::new();
    for s in &mut sc.symptoms {
        if s.for_ > FOR || s.clear_for > CLEAR_FOR {
            shortened.push(format!(
                "{} (for {}, clear_for {})",
                s.name, s.for_, s.clear_for
            ));
            s.for_ = s.for_.min(FOR);
            s.clear_for = s.clear_for.min(CLEAR_FOR);
        }
    }
    if !shortened.is_empty() {
        notes.push(format!(
            "fires after {FOR} failing and clears after {CLEAR_FOR} healthy instead of the shipped minutes: {}",
            shortened.join(", ")
        ));
    }
    for st in &mut sc.plan {
        if let ActionSpec::PostgresPromoteReplica(p) = &mut st.action {
            let was = format!(
                "{} checks over {}",
                p.unreachable_checks
                    .unwrap_or(crate::remedy::postgres::DEFAULT_UNREACHABLE_CHECKS),
                p.unreachable_for
                    .unwrap_or(crate::remedy::postgres::DEFAULT_UNREACHABLE_FOR)
            );
            p.unreachable_checks = Some(UNREACHABLE_CHECKS);
            p.unreachable_for = Some(UNREACHABLE_FOR);
            notes.push(format!(
                "step {} promotes once the primary was unreachable for {UNREACHABLE_CHECKS} checks over {UNREACHABLE_FOR} instead of {was}",
                st.name
            ));
        }
    }
}

/// Whether the database on `port` takes writes: not in recovery, and an
/// INSERT commits; says which row it wrote.
async fn writable(port: u16) -> Result<i64, String> {
    let c = pg_connect(port).await?;
    let recovery: bool = c
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if recovery {
        return Err("still in recovery (a standby)".into());
    }
    c.query_one("INSERT INTO drill_writes DEFAULT VALUES RETURNING id", &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| format!("INSERT failed: {e}"))
}

/// Runs the drill (see the module doc of [`super`]).
pub(super) async fn run(
    mut sb: Sandbox,
    rule_path: &Path,
    rule_text: &str,
    bin: &Path,
    db: &Path,
    out: &mut (dyn std::io::Write + Send),
) -> Result<DrillReport, DrillError> {
    let started = tokio::time::Instant::now();
    let dir = sb.dir.clone();
    // Route 53.
    let moto = on_path("moto_server").ok_or_else(|| {
        fail("the complete-infrastructure-failure drill's Route 53 is moto_server: `moto_server` is not on PATH (install it: pip install 'moto[server]')")
    })?;
    let moto_port = sb
        .start_service(
            "moto_server",
            Duration::from_secs(60),
            |port| {
                let mut c = Command::new(&moto);
                c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                Ok(c)
            },
            async |port| TcpStream::connect(("127.0.0.1", port)).await.is_ok(),
        )
        .await?;
    let r53 = client(moto_port);
    let zone = create_zone(&r53).await?;
    let dns = sb.resolver(r53.clone(), zone.clone());
    // The primary region, then the secondary.
    let p1 = sb.pg_primary(bin).await?;
    let (app1, _) = sb.httpd("app-primary").await?;
    let cache1 = sb.redis("cache-primary").await?;
    let p2 = sb.pg_replica(bin, p1).await?;
    let (app2, _) = sb.httpd("app-secondary").await?;
    let cache2 = sb.redis("cache-secondary").await?;
    let app = sb
        .region_front(dns.clone(), [(PRIMARY, app1), (SECONDARY, app2)])
        .await?;
    let db_front = sb
        .region_front(dns.clone(), [(PRIMARY, p1), (SECONDARY, p2)])
        .await?;
    let cache = sb
        .region_front(dns, [(PRIMARY, cache1), (SECONDARY, cache2)])
        .await?;
    let (akid, secret) = (
        dir.join("aws-access-key-id"),
        dir.join("aws-secret-access-key"),
    );
    std::fs::write(&akid, "sandbox\n").map_err(fail)?;
    std::fs::write(&secret, "sandbox\n").map_err(fail)?;
    let js = |p: &Path| serde_json::Value::from(p.display().to_string());
    let pg = |port: u16| {
        format!(
            "{{ postgres: {{ host: 127.0.0.1, port: {port}, user: postgres, dbname: postgres }} }}"
        )
    };
    let targets = [
        format!("app: {{ http: {{ url: \"http://127.0.0.1:{app}/health\" }} }}"),
        format!("db: {}", pg(db_front)),
        format!("db-secondary: {}", pg(p2)),
        format!("cache: {{ redis: {{ address: \"127.0.0.1:{cache}\" }} }}"),
        format!(
            "app-dns: {{ route53: {{ hosted_zone_id: {}, record: {RECORD}, primary: [{PRIMARY}], secondary: [{SECONDARY}], ttl: 60, \
             endpoint_url: \"http://127.0.0.1:{moto_port}\", credentials: {{ access_key_id: {{ file: {} }}, secret_access_key: {{ file: {} }} }} }} }}",
            serde_json::Value::from(zone.as_str()),
            js(&akid),
            js(&secret)
        ),
    ]
    .join("\n  ")
        + "\n";
    let real = ["app", "db", "db-secondary", "cache", "app-dns"];
    let (mut sc, config) = load(rule_path, rule_text, &targets, &dir, db, "")?;
    let mut notes = Vec::new();
    adapt(&mut sc, &real, |_| None, &mut notes)?;
    shorten(&mut sc, &mut notes);
    notes.push(format!(
        "users reach the app, db and cache by {RECORD} (moto_server's Route 53): fronts forward to the region it names ({PRIMARY} primary, {SECONDARY} secondary), re-read every {}ms, not after its TTL",
        RESOLVE_EVERY.as_millis()
    ));
    let writer = Writer::start(p1).await?;
    let w2 = writer.clone();
    let (pg_pid, app_pid, cache_pid) = (
        sb.pid("primary")?,
        sb.pid("app-primary")?,
        sb.pid("cache-primary")?,
    );
    let inject: BoxFut<Result<String, String>> = Box::pin(async move {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let pid = |p: u32| Pid::from_raw(p as i32);
        kill(pid(pg_pid), Signal::SIGQUIT).map_err(|e| format!("PostgreSQL primary: {e}"))?;
        kill(pid(app_pid), Signal::SIGKILL).map_err(|e| format!("app: {e}"))?;
        kill(pid(cache_pid), Signal::SIGKILL).map_err(|e| format!("cache: {e}"))?;
        Ok("the primary region went down at once: the PostgreSQL primary stopped the way a crash does (immediate shutdown) under a writer committing every 20 ms, the app and redis-server killed (SIGKILL)".to_string())
    });
    let loss: LossProbe = Box::new(move || -> BoxFut<(String, Option<Duration>)> {
        Box::pin(async move {
            let (lost, window) = w2.loss(db_front).await;
            let dns = match resolve(&r53, &zone).await {
                Ok(v) => format!("DNS {RECORD} A = {v} ({})", region(&v)),
                Err(e) => format!("DNS {RECORD} not read: {e}"),
            };
            let secondary = match writable(p2).await {
                Ok(id) => format!(
                    "the secondary (db-secondary) is writable: not in recovery, an INSERT committed (row {id})"
                ),
                Err(e) => format!("the secondary (db-secondary) is NOT writable: {e}"),
            };
            (format!("{lost}; {dns}; {secondary}"), window)
        })
    });
    let _ = writeln!(
        out,
        "sandbox: Route 53 (moto_server) 127.0.0.1:{moto_port}, {RECORD} A {PRIMARY}; primary region: PostgreSQL 127.0.0.1:{p1}, app 127.0.0.1:{app1}, redis 127.0.0.1:{cache1}; \
         secondary region: streaming replica 127.0.0.1:{p2}, app 127.0.0.1:{app2}, redis 127.0.0.1:{cache2}; fronts by DNS: app 127.0.0.1:{app}, db 127.0.0.1:{db_front}, cache 127.0.0.1:{cache} ({} ms)",
        started.elapsed().as_millis()
    );
    let r = finish(sb, sc, config, "primary region", notes, inject, loss, out).await;
    writer.stop();
    r
}
