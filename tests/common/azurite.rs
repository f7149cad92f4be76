//! azurite-blob (npm `azurite`, Microsoft's Azure Storage emulator): the
//! Blob service the Azure backup storage is tested against, on an
//! ephemeral port on 127.0.0.1 with its data in a temp directory, killed
//! and reaped on drop. scripts/test.sh installs it into
//! `~/.cache/medic-test/azurite` (`npm install --prefix`).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use super::start_service;

/// Azurite's well-known development account and key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An azurite-blob the test owns.
pub struct Azurite {
    pub port: u16,
    child: Child,
    /// Its blobs and metadata; deleted on drop.
    _dir: tempfile::TempDir,
    _log: tempfile::NamedTempFile,
}

/// Where azurite-blob is: `$MEDIC_AZURITE_BLOB`, else scripts/test.sh's
/// cache (`$XDG_CACHE_HOME` or `~/.cache`, `medic-test/azurite`), else
/// `PATH`.
fn program() -> PathBuf {
    if let Some(p) = std::env::var_os("MEDIC_AZURITE_BLOB") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(c) = cache {
        let p = c.join("medic-test/azurite/node_modules/.bin/azurite-blob");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("azurite-blob")
}

impl Azurite {
    /// Starts azurite-blob on a free port and waits until it listens.
    pub fn start() -> Azurite {
        let dir = tempfile::tempdir().unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let bin = program();
        let (child, port) = start_service(
            &format!(
                "azurite-blob at {} (npm install --prefix ~/.cache/medic-test/azurite azurite; scripts/test.sh does)",
                bin.display()
            ),
            None,
            log.path(),
            Duration::from_secs(30),
            |port| {
                let mut c = Command::new(&bin);
                c.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                    .arg("--location")
                    .arg(dir.path())
                    .args(["--skipApiVersionCheck", "--loose", "--disableTelemetry"]);
                c
            },
            |_, port| TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        Azurite {
            port,
            child,
            _dir: dir,
            _log: log,
        }
    }

    /// The account's endpoint URL (path style, as Azurite serves it).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
