//! moto_server (Python, `pip install 'moto[server]'`): a real
//! implementation of the AWS APIs (S3 for the backup jobs, Route 53 for DNS
//! failover) on an ephemeral port on 127.0.0.1, killed and reaped on drop.

use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::Duration;

use super::start_service;

/// A moto_server the test owns.
pub struct Moto {
    pub port: u16,
    child: Child,
    /// Its output (for failure messages); deleted on drop.
    _log: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts moto_server on a free port and waits until it listens.
    pub fn start() -> Moto {
        let log = tempfile::NamedTempFile::new().unwrap();
        let (child, port) = start_service(
            "moto_server (pip install 'moto[server]'; scripts/test.sh does)",
            None,
            log.path(),
            Duration::from_secs(30),
            |port| {
                let mut c = Command::new("moto_server");
                c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                c
            },
            |_, port| TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        Moto {
            port,
            child,
            _log: log,
        }
    }

    /// Its endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
