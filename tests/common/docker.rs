//! A private Docker Engine for tests: `dockerd` on a unix socket in a temp
//! dir (its own data root, exec root and containerd), no bridge, no
//! iptables; images imported from a tiny rootfs of `/bin/busybox`
//! (busybox-static), since no registry is reachable. Containers run with
//! the host's network and listen on 127.0.0.1 only.
//!
//! Dropped: its containers killed, dockerd stopped (SIGTERM) and waited
//! on, what it left mounted unmounted and its directory removed.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HealthConfig, HostConfig, RestartPolicy};
use bollard::query_parameters::{CreateContainerOptionsBuilder, CreateImageOptionsBuilder};
use futures_util::StreamExt;

/// Where busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// A running private dockerd.
pub struct Dockerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts one and waits until it answers `/_ping`; panics saying why
    /// it did not start, with the end of its log.
    pub fn start() -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("medic-dockerd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let socket = d.join("docker.sock");
        let log_path = d.join("dockerd.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("dockerd")
            .arg("--bridge=none")
            .arg("--iptables=false")
            .arg("--shutdown-timeout=1")
            .arg(format!("--data-root={}", d.join("docker").display()))
            .arg(format!("--exec-root={}", d.join("exec").display()))
            .arg(format!("-H=unix://{}", socket.display()))
            .arg(format!("--pidfile={}", d.join("docker.pid").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => panic!(
                "could not run dockerd ({e}); install docker.io (apt-get install -y docker.io busybox-static)"
            ),
        };
        let mut me = Dockerd {
            dir,
            socket,
            child: Some(child),
        };
        let start = Instant::now();
        loop {
            if ping(&me.socket) {
                break;
            }
            if let Some(status) = me.child.as_mut().unwrap().try_wait().unwrap() {
                me.child = None;
                panic!(
                    "dockerd exited ({status}) before answering; its log:\n{}",
                    super::log_tail(&log_path, 0, 40)
                );
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!(
                    "dockerd did not answer on {} within 60 s; its log:\n{}",
                    me.socket.display(),
                    super::log_tail(&log_path, 0, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    /// The socket as a config's `socket:` value.
    pub fn socket_str(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    /// A bollard client of this Engine.
    pub async fn client(&self) -> Docker {
        Docker::connect_with_unix(self.socket_str(), 60, bollard::API_DEFAULT_VERSION)
            .unwrap()
            .negotiate_version()
            .await
            .unwrap()
    }

    /// The end of dockerd's log (for failure messages).
    pub fn log(&self) -> String {
        super::log_tail(&self.dir.path().join("dockerd.log"), 0, 40)
    }

    /// Imports `repo:tag` (`docker import`) from a rootfs holding busybox
    /// (`/bin/busybox`, `/bin/sh`) and `/www/index.html`, with `changes`
    /// as Dockerfile instructions (`CMD [...]`, `ENV K=V`).
    pub async fn import(&self, repo: &str, tag: &str, changes: &[&str]) {
        let root = self.dir.path().join(format!("rootfs-{tag}"));
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("www")).unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap_or_else(|e| {
            panic!("{BUSYBOX}: {e} (install busybox-static)");
        });
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin/sh"));
        std::fs::write(root.join("www/index.html"), format!("{repo}:{tag}\n")).unwrap();
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-cf", "-", "."])
            .output()
            .unwrap();
        assert!(tar.status.success(), "tar: {:?}", tar);
        let docker = self.client().await;
        let opts = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(changes.iter().map(|c| c.to_string()).collect())
            .build();
        let mut s = docker.create_image(
            Some(opts),
            Some(bollard::body_full(tar.stdout.into())),
            None,
        );
        while let Some(r) = s.next().await {
            r.unwrap_or_else(|e| panic!("import {repo}:{tag}: {e}\n{}", self.log()));
        }
    }

    /// Creates and starts `name` from `image` on the host's network, with
    /// `labels`, `env`, and a healthcheck fetching `http://127.0.0.1:PORT/`
    /// every 200 ms when `health_port` is given.
    pub async fn run(
        &self,
        name: &str,
        image: &str,
        labels: &[(&str, &str)],
        env: &[&str],
        health_port: Option<u16>,
    ) -> String {
        self.run_with_policy(name, image, labels, env, health_port, None)
            .await
    }

    /// [`Dockerd::run`] with a restart policy (`always`, `on-failure`).
    pub async fn run_with_policy(
        &self,
        name: &str,
        image: &str,
        labels: &[(&str, &str)],
        env: &[&str],
        health_port: Option<u16>,
        policy: Option<&str>,
    ) -> String {
        let docker = self.client().await;
        let body = ContainerCreateBody {
            image: Some(image.into()),
            env: Some(env.iter().map(|e| e.to_string()).collect()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            healthcheck: health_port.map(|p| HealthConfig {
                test: Some(vec![
                    "CMD".into(),
                    BUSYBOX.into(),
                    "wget".into(),
                    "-q".into(),
                    "-O".into(),
                    "/dev/null".into(),
                    format!("http://127.0.0.1:{p}/"),
                ]),
                interval: Some(200_000_000),
                timeout: Some(1_000_000_000),
                retries: Some(2),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                network_mode: Some("host".into()),
                restart_policy: policy.map(|p| RestartPolicy {
                    name: Some(p.parse().unwrap()),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(name).build()),
                body,
            )
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}\n{}", self.log()));
        docker
            .start_container(&c.id, None)
            .await
            .unwrap_or_else(|e| panic!("start {name}: {e}\n{}", self.log()));
        c.id
    }
}

/// `CMD` serving `/www` on 127.0.0.1:`port` in the foreground.
pub fn httpd_cmd(port: u16) -> String {
    format!(
        "CMD [\"{BUSYBOX}\", \"httpd\", \"-f\", \"-p\", \"127.0.0.1:{port}\", \"-h\", \"/www\"]"
    )
}

/// One HTTP/1.0 request to the Engine on `socket`; the status and body.
fn request(socket: &Path, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("{method} {path} HTTP/1.0\r\nHost: docker\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

/// Whether the Engine on `socket` answers `GET /_ping` with OK.
fn ping(socket: &Path) -> bool {
    request(socket, "GET", "/_ping").is_some_and(|(s, _)| s == 200)
}

/// Kills every running container (busybox as PID 1 ignores SIGTERM: a
/// daemon shutdown would wait out each one's stop timeout).
fn kill_all(socket: &Path) {
    let Some((200, list)) = request(socket, "GET", "/containers/json") else {
        return;
    };
    let list: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap_or_default();
    for c in list {
        if let Some(id) = c["Id"].as_str() {
            let _ = request(socket, "POST", &format!("/containers/{id}/kill"));
        }
    }
}

/// Unmounts what dockerd left mounted under `dir` (its `netns/default`),
/// deepest first, so the temp dir can be removed.
fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_all(&self.socket);
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            let mut exited = false;
            while !exited && start.elapsed() < Duration::from_secs(20) {
                exited = c.try_wait().ok().flatten().is_some();
                std::thread::sleep(Duration::from_millis(20));
            }
            if !exited {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Its `netns/default` mount can outlive it for a moment.
        for _ in 0..20 {
            unmount_under(self.dir.path());
            if std::fs::remove_dir_all(self.dir.path()).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
