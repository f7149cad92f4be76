//! PostgreSQL sessions that notice a dead peer: medic opens the TCP socket
//! itself (so it can tell "no TCP answer" from "TCP answered, the server
//! said nothing"), with TCP keepalive and `TCP_USER_TIMEOUT` set from the
//! target's `peer_timeout`, then runs the start-up on it.
//!
//! | the peer | what a session sees |
//! | --- | --- |
//! | killed (process gone, host up) | the kernel resets or closes the socket: at once |
//! | host gone, packets dropped | keepalive probes go unanswered: the socket errors after `peer_timeout` (idle half of it, two probes a quarter apart); data sent and never acknowledged errors after `peer_timeout` too (`TCP_USER_TIMEOUT`) |
//! | process frozen (SIGSTOP), host up | the kernel still acknowledges: TCP connects, the start-up gets no answer: [`SessionError::Silent`] after `peer_timeout` |

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use crate::config::PostgresTarget;

/// Why a session could not be opened.
#[derive(Debug)]
pub enum SessionError {
    /// The TCP connection was not established within the timeout: no
    /// answer at all (the host, the path or medic's own network).
    ConnectTimeout,
    /// The TCP connect failed (refused, reset, no route, name resolution).
    Tcp(std::io::Error),
    /// TCP connected but the server did not answer its start-up within
    /// `peer_timeout` (which this carries): the process is frozen.
    Silent(Duration),
    /// TCP connected but the start-up ran out of the caller's timeout
    /// before `peer_timeout` elapsed: too early to call it frozen.
    StartupTimeout,
    /// The server answered with an error, or hung up.
    Pg(tokio_postgres::Error),
    /// The settings (a password that does not resolve).
    Config(String),
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::ConnectTimeout => write!(f, "connect timed out"),
            SessionError::Tcp(e) => write!(f, "{e}"),
            SessionError::Silent(t) => write!(
                f,
                "accepted the TCP connection but did not answer within {} (peer_timeout): the server is frozen",
                humantime::format_duration(*t)
            ),
            SessionError::StartupTimeout => write!(f, "start-up timed out"),
            SessionError::Pg(e) => match e.as_db_error() {
                Some(db) => write!(f, "{}", db.message()),
                None => write!(f, "{e}"),
            },
            SessionError::Config(e) => write!(f, "{e}"),
        }
    }
}

/// An open session: the client and the task driving its connection, which
/// ends when the socket closes or fails (the server went away) or when
/// the client is dropped.
pub struct Session {
    pub client: Client,
    pub conn: JoinHandle<()>,
}

impl Session {
    /// Resolves when the connection has ended. Cancel-safe.
    pub async fn closed(&mut self) {
        let _ = (&mut self.conn).await;
    }

    /// Whether the connection has ended already.
    pub fn is_closed(&self) -> bool {
        self.conn.is_finished()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// Sets keepalive and `TCP_USER_TIMEOUT` on `s` from `peer_timeout`.
pub fn set_liveness(s: &TcpStream, peer_timeout: Duration) -> std::io::Result<()> {
    let sock = SockRef::from(s);
    let idle = (peer_timeout / 2).max(Duration::from_secs(1));
    let interval = (peer_timeout / 4).max(Duration::from_secs(1));
    sock.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(idle)
            .with_interval(interval)
            .with_retries(2),
    )?;
    sock.set_tcp_user_timeout(Some(peer_timeout))?;
    sock.set_tcp_nodelay(true)
}

/// Opens a session to the single server `t` with the client settings `cfg`
/// (from [`super::postgres`]), within `timeout` overall.
pub async fn session(
    t: &PostgresTarget,
    cfg: &tokio_postgres::Config,
    timeout: Duration,
) -> Result<Session, SessionError> {
    let started = tokio::time::Instant::now();
    let stream = tokio::time::timeout(timeout, TcpStream::connect((t.host.as_str(), t.port)))
        .await
        .map_err(|_| SessionError::ConnectTimeout)?
        .map_err(SessionError::Tcp)?;
    let peer = t.peer_timeout();
    set_liveness(&stream, peer).map_err(SessionError::Tcp)?;
    let left = timeout.saturating_sub(started.elapsed());
    let wait = left.min(peer);
    let (client, conn) = match tokio::time::timeout(wait, cfg.connect_raw(stream, NoTls)).await {
        Ok(r) => r.map_err(SessionError::Pg)?,
        Err(_) if wait == peer => return Err(SessionError::Silent(peer)),
        Err(_) => return Err(SessionError::StartupTimeout),
    };
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Session { client, conn })
}

/// [`session`] from the target alone, as application `app`.
pub async fn open(
    t: &PostgresTarget,
    app: &str,
    timeout: Duration,
) -> Result<Session, SessionError> {
    let cfg = super::postgres(t, app, timeout).map_err(SessionError::Config)?;
    session(t, &cfg, timeout).await
}

/// Whether an error says the server is broken (refused, reset, closed,
/// shutting down, out of resources) rather than that medic cannot tell
/// (timeouts, credentials, its own config).
pub fn is_broken(e: &SessionError) -> bool {
    match e {
        SessionError::ConnectTimeout | SessionError::StartupTimeout | SessionError::Config(_) => {
            false
        }
        SessionError::Silent(_) => true,
        SessionError::Tcp(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        ),
        SessionError::Pg(e) => pg_is_broken(e),
    }
}

/// [`is_broken`] for a driver error on an open session.
pub fn pg_is_broken(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return ["57", "53", "58", "08", "XX"]
            .iter()
            .any(|p| code.starts_with(p));
    }
    if e.is_closed() {
        return true;
    }
    let text = e.to_string();
    text.contains("unexpected EOF") || text.contains("connection closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn liveness_options_are_set_on_the_socket() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        set_liveness(&s, Duration::from_secs(4)).unwrap();
        let sock = SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(2));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 2);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(4))
        );
    }
}
