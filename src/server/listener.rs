//! medic's listener: HTTP/1.1 (hyper) on `http.listen`, plain or TLS
//! (rustls), bounded so hostile clients cannot starve it.
//!
//! - A client has `header_timeout` to send a request's headers (and, with
//!   TLS, to finish the handshake); an idle keep-alive connection gets the
//!   same time for its next request. Then it is closed.
//! - A request has `request_timeout` to be answered, body included (503).
//! - At most `max_in_flight` requests are handled at once in each route
//!   group (the Alertmanager intake, Slack's interactions, the rest);
//!   beyond, 503 with `Retry-After` at once. `/healthz` and `/readyz` are
//!   not counted, so probes keep answering under load.
//! - At most `max_connections` connections are open (lowered at start-up
//!   to fit the process's file limit, so a flood cannot take the
//!   descriptors the store and the checks need). A new connection beyond
//!   the cap closes the oldest open connection that is not in a request
//!   (still sending its headers, or idle between requests), so clients
//!   that hold connections without finishing a request cannot lock out a
//!   probe; only when every connection is in a request is the new one
//!   closed at once.
//! - TLS: the certificate chain and key are read from their files at
//!   start-up and again on SIGHUP; a pair that does not load is refused
//!   at start-up, and on SIGHUP leaves the previous pair serving.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{HttpConfig, ListenerTls};

/// File descriptors kept for everything but client connections (the
/// store, checks, notifiers, actions).
const RESERVED_FDS: u64 = 256;

/// The certificate and key serving now, and where they are read from.
pub struct Tls {
    paths: ListenerTls,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl Tls {
    /// Reads the pair; why not, naming the file.
    pub fn load(paths: &ListenerTls) -> Result<Tls, String> {
        Ok(Tls {
            current: RwLock::new(build(paths)?),
            paths: paths.clone(),
        })
    }

    /// Reads the pair again; on failure the previous one keeps serving.
    pub fn reload(&self) -> Result<(), String> {
        let next = build(&self.paths)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let cfg = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(cfg)
    }
}

fn build(paths: &ListenerTls) -> Result<Arc<rustls::ServerConfig>, String> {
    let cert = paths.cert.display();
    let key_path = paths.key.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("http.tls.cert {cert}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("http.tls.cert {cert}: no PEM certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .map_err(|e| format!("http.tls.key {key_path}: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("http.tls: {cert} with {key_path}: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// What every request is bounded by: a time limit, and `max_in_flight`
/// requests at once per route group, so a flood of deliveries cannot
/// starve Slack's clicks or the API (and the other way round).
struct Guard {
    /// The Alertmanager intake, Slack's interactions, everything else.
    in_flight: [Arc<Semaphore>; 3],
    timeout: Duration,
}

/// The route group of `path`: its index in [`Guard::in_flight`].
fn group(path: &str) -> usize {
    if path.starts_with("/api/v1/alerts/") {
        0
    } else if path.starts_with("/slack/") {
        1
    } else {
        2
    }
}

fn busy(why: String) -> Response {
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "ok": false, "error": why })),
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
    let _permit = if probe {
        None
    } else {
        match g.in_flight[group(req.uri().path())]
            .clone()
            .try_acquire_owned()
        {
            Ok(p) => Some(p),
            Err(_) => {
                return busy(
                    "too many requests in flight on this route (http.max_in_flight); retry".into(),
                );
            }
        }
    };
    match tokio::time::timeout(g.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => busy(format!(
            "request not answered within {:?} (http.request_timeout)",
            g.timeout
        )),
    }
}

/// `max` lowered so that connections cannot use the descriptors
/// [`RESERVED_FDS`] keeps, given the soft file limit `soft`.
pub fn fit_file_limit(max: usize, soft: u64) -> usize {
    let room = soft.saturating_sub(RESERVED_FDS).max(16);
    max.min(usize::try_from(room).unwrap_or(usize::MAX))
}

fn connection_cap(max: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return max;
    };
    let fit = fit_file_limit(max, soft);
    if fit < max {
        tracing::warn!(
            configured = max,
            used = fit,
            file_limit = soft,
            "http.max_connections lowered to fit the file limit (raise LimitNOFILE / ulimit -n)"
        );
    }
    fit
}

/// Binds `http.listen` (a clash fails start-up loudly), loads TLS if
/// configured, and serves `app` until `shutdown`; then stops accepting,
/// lets requests in flight finish and returns. The bound address is
/// returned (port 0 picks a free one).
pub async fn serve(
    http: &HttpConfig,
    app: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let tls = match &http.tls {
        Some(t) => Some(Arc::new(Tls::load(t).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let listener = TcpListener::bind(http.listen)
        .await
        .with_context(|| format!("listening on {}", http.listen))?;
    let addr = listener.local_addr()?;
    let g = Arc::new(Guard {
        in_flight: std::array::from_fn(|_| Arc::new(Semaphore::new(http.max_in_flight))),
        timeout: http.request_timeout.get(),
    });
    let app = app.layer(axum::middleware::from_fn_with_state(g, guard));
    if let Some(tls) = &tls {
        reload_on_sighup(tls.clone(), shutdown.clone())?;
    }
    let limits = Limits {
        header_timeout: http.header_timeout.get(),
        connections: Arc::new(Connections::new(connection_cap(http.max_connections))),
    };
    let task = tokio::spawn(accept(listener, app, tls.clone(), limits, shutdown));
    tracing::info!(%addr, tls = tls.is_some(), "http server listening");
    Ok((addr, task))
}

fn reload_on_sighup(tls: Arc<Tls>, shutdown: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            match tls.reload() {
                Ok(()) => tracing::info!(
                    cert = %tls.paths.cert.display(),
                    "SIGHUP: TLS certificate and key read again"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS certificate not reloaded; the previous one keeps serving"
                ),
            }
        }
    });
    Ok(())
}

#[derive(Clone)]
struct Limits {
    header_timeout: Duration,
    connections: Arc<Connections>,
}

/// The open connections, oldest first, and whether each is in a request.
struct Connections {
    cap: usize,
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Open>>,
}

struct Open {
    /// Requests of this connection being handled now (0 or 1 on HTTP/1).
    busy: Arc<AtomicUsize>,
    /// Closes the connection (evicted to make room).
    close: CancellationToken,
}

/// One admitted connection: its id, request counter and close signal.
struct Admitted {
    id: u64,
    busy: Arc<AtomicUsize>,
    close: CancellationToken,
}

impl Connections {
    fn new(cap: usize) -> Connections {
        Connections {
            cap,
            next: AtomicU64::new(0),
            open: Mutex::new(BTreeMap::new()),
        }
    }

    /// Room for a new connection: at the cap, the oldest connection not in
    /// a request is closed to make it; `None` when every one is in one.
    fn admit(&self) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= self.cap {
            let idle = open
                .iter()
                .find(|(_, c)| c.busy.load(Ordering::SeqCst) == 0)
                .map(|(id, _)| *id)?;
            if let Some(evicted) = open.remove(&idle) {
                evicted.close.cancel();
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let busy = Arc::new(AtomicUsize::new(0));
        let close = CancellationToken::new();
        let entry = Open {
            busy: busy.clone(),
            close: close.clone(),
        };
        open.insert(id, entry);
        Some(Admitted { id, busy, close })
    }

    fn closed(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(&id);
    }
}

/// Counts a connection's request as in progress until it is answered (or
/// dropped).
struct InRequest(Arc<AtomicUsize>);

impl InRequest {
    fn new(busy: &Arc<AtomicUsize>) -> InRequest {
        busy.fetch_add(1, Ordering::SeqCst);
        InRequest(busy.clone())
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A hyper service that marks its connection busy while a request is
/// handled (so the connection cap never evicts it then).
struct Tracked<S> {
    inner: S,
    busy: Arc<AtomicUsize>,
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: R) -> Self::Future {
        let guard = InRequest::new(&self.busy);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
    }
}

/// Says at most once per 10 s how many connections were turned away.
struct Refusals {
    since: Instant,
    count: u64,
}

impl Refusals {
    fn note(&mut self, why: &str) {
        self.count += 1;
        if self.since.elapsed() >= Duration::from_secs(10) {
            tracing::warn!(refused = self.count, "http connections refused: {why}");
            self.since = Instant::now();
            self.count = 0;
        }
    }
}

async fn accept(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<Tls>>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let mut refused = Refusals {
        since: Instant::now() - Duration::from_secs(10),
        count: 0,
    };
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset
                    // before it was accepted: wait a little, go on.
                    refused.note(&format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = limits.connections.admit() else {
            refused.note("too many connections in a request (http.max_connections)");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, tls, limits, stop) = (app.clone(), tls.clone(), limits.clone(), shutdown.clone());
        tracker.spawn(async move {
            let id = admitted.id;
            let close = admitted.close.clone();
            tokio::select! {
                _ = connection(stream, app, tls, &limits, admitted.busy, stop) => {}
                _ = close.cancelled() => tracing::debug!("connection closed to make room (http.max_connections)"),
            }
            limits.connections.closed(id);
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection(
    stream: TcpStream,
    app: Router,
    tls: Option<Arc<Tls>>,
    limits: &Limits,
    busy: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    let Some(tls) = tls else {
        return http1(TokioIo::new(stream), app, limits, busy, shutdown).await;
    };
    let handshake = tls.acceptor().accept(stream);
    match tokio::time::timeout(limits.header_timeout, handshake).await {
        Ok(Ok(s)) => http1(TokioIo::new(s), app, limits, busy, shutdown).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

async fn http1<I>(
    io: I,
    app: Router,
    limits: &Limits,
    busy: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(100)
        .serve_connection(
            io,
            Tracked {
                inner: TowerToHyperService::new(app),
                busy,
            },
        );
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r {
            tracing::debug!(error = %e, "http connection ended");
        },
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_groups() {
        assert_eq!(group("/api/v1/alerts/alertmanager"), 0);
        assert_eq!(group("/slack/interactions"), 1);
        assert_eq!(group("/api/v1/incidents"), 2);
        assert_eq!(group("/-/reload"), 2);
    }

    #[test]
    fn at_the_cap_the_oldest_connection_not_in_a_request_makes_room() {
        let c = Connections::new(2);
        let a = c.admit().unwrap();
        let b = c.admit().unwrap();
        let _in_request = InRequest::new(&a.busy);
        // a is in a request, so b (idle) is closed for the third.
        let third = c.admit().unwrap();
        assert!(b.close.is_cancelled() && !a.close.is_cancelled());
        let _also = InRequest::new(&third.busy);
        // Every connection in a request: the next is refused.
        assert!(c.admit().is_none());
        drop(_in_request);
        assert!(c.admit().is_some());
        assert!(a.close.is_cancelled());
        c.closed(third.id);
        assert_eq!(c.open.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_connection_cap_leaves_descriptors_for_the_rest() {
        assert_eq!(fit_file_limit(512, 1_048_576), 512);
        assert_eq!(fit_file_limit(512, 1024), 512);
        assert_eq!(fit_file_limit(512, 512), 256);
        // A tiny limit still lets a few probes in.
        assert_eq!(fit_file_limit(512, 100), 16);
    }

    #[test]
    fn a_pair_that_does_not_load_says_which_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ListenerTls {
            cert: dir.path().join("missing.crt"),
            key: dir.path().join("missing.key"),
        };
        let e = Tls::load(&paths).err().unwrap();
        assert!(
            e.starts_with("http.tls.cert ") && e.contains("missing.crt"),
            "{e}"
        );
        std::fs::write(&paths.cert, "not pem\n").unwrap();
        let e = Tls::load(&paths).err().unwrap();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
