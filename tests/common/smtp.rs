//! A real SMTP server (Python's `aiosmtpd`, `pip install aiosmtpd`;
//! scripts/test.sh does) on an ephemeral port on 127.0.0.1, requiring
//! STARTTLS with a certificate made for the test (its own CA, made with
//! `openssl`) and AUTH with one user and password. Every message it
//! accepts and every login are recorded as JSON lines; killed and reaped
//! on drop.

use std::io::BufRead;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use super::start_service;

/// The SMTP server a test owns.
pub struct Smtp {
    pub port: u16,
    /// The CA that signed the server's certificate (what medic's `ca:`
    /// names).
    pub ca: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (apt-get install openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server certificate it signed for 127.0.0.1.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=medic test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

impl Smtp {
    /// Starts the server for `user` / `password` and waits until it listens.
    pub fn start(user: &str, password: &str) -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        certificates(dir.path());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/smtp_server.py");
        let log = dir.path().join("server.log");
        let out = dir.path().join("messages.jsonl");
        let (child, port) = start_service(
            "aiosmtpd (pip install aiosmtpd; scripts/test.sh does)",
            None,
            &log,
            Duration::from_secs(30),
            |port| {
                let mut c = Command::new("python3");
                c.arg(&script)
                    .arg(port.to_string())
                    .arg(dir.path().join("server.pem"))
                    .arg(dir.path().join("server.key"))
                    .args([user, password])
                    .arg(&out);
                c
            },
            |_, port| {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on"))
            },
        );
        Smtp {
            port,
            ca: dir.path().join("ca.pem"),
            dir,
            child,
        }
    }

    fn lines(&self, file: &str) -> Vec<serde_json::Value> {
        let Ok(f) = std::fs::File::open(self.dir.path().join(file)) else {
            return Vec::new();
        };
        std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect()
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        self.lines("messages.jsonl")
    }

    /// Every login tried so far (`ok`, `mechanism`, `login`, `tls`).
    pub fn logins(&self) -> Vec<serde_json::Value> {
        self.lines("messages.jsonl.auth")
    }

    /// What the server wrote (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
