//! Network namespaces for packet-loss and partition tests (root only, as
//! in CI): one namespace joined to the test's own by a veth pair on a /30
//! of 198.18.0.0/15 (RFC 2544's benchmarking range: never a real network),
//! deleted on drop. Names are unique per process and per namespace, so
//! tests run in parallel.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace with a veth link to the test's namespace.
pub struct Netns {
    pub name: String,
    /// The veth end in the test's namespace, and its address.
    pub host_dev: String,
    pub host_addr: String,
    /// The veth end inside the namespace, and its address.
    pub ns_dev: String,
    pub ns_addr: String,
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// A fresh namespace, its loopback and veth up.
    pub fn new() -> Netns {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let name = format!("mdc{}x{n}", pid % 100_000);
        // A /30 no link on this machine has yet: other test processes (and
        // other engineers' tests) make namespaces on the same range, and
        // two links on one /30 would route this test's packets into the
        // other's namespace.
        let in_use = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-o", "-4", "addr", "show"])
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default(),
        )
        .into_owned();
        let mut idx = (pid.wrapping_mul(8).wrapping_add(n)) % 32_768;
        let ip = |idx: u32, i: u32| {
            std::net::Ipv4Addr::from(
                u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + idx * 4 + i,
            )
            .to_string()
        };
        for _ in 0..32_768 {
            let taken = (0..4).any(|i| in_use.contains(&format!("inet {}/", ip(idx, i))));
            if !taken {
                break;
            }
            idx = (idx + 7919) % 32_768;
        }
        let ns = Netns {
            host_dev: format!("{name}h"),
            ns_dev: format!("{name}n"),
            host_addr: ip(idx, 1),
            ns_addr: ip(idx, 2),
            name,
        };
        // Left over from a crashed run of a process with the same pid.
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &ns.host_dev])
            .output();
        sh(&["ip", "netns", "add", &ns.name]);
        sh(&[
            "ip",
            "link",
            "add",
            &ns.host_dev,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_dev,
        ]);
        sh(&["ip", "link", "set", &ns.ns_dev, "netns", &ns.name]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", ns.host_addr),
            "dev",
            &ns.host_dev,
        ]);
        sh(&["ip", "link", "set", &ns.host_dev, "up"]);
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", ns.ns_addr),
            "dev",
            &ns.ns_dev,
        ]);
        ns.exec_ok(&["ip", "link", "set", &ns.ns_dev, "up"]);
        ns
    }

    /// `ip netns exec NAME ARGS...`, not started yet.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Runs `args` inside the namespace; panics when it fails.
    pub fn exec_ok(&self, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        sh(&all);
    }

    /// Starts `args` inside the namespace, output to `log`.
    pub fn spawn(&self, args: &[&str], log: &std::path::Path) -> Child {
        let out = std::fs::File::create(log).unwrap();
        self.command(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?} in {}: {e}", self.name))
    }

    /// Drops every TCP packet to `port` inside the namespace (the service
    /// goes silent; the host still answers on other ports).
    pub fn drop_port(&self, port: u16) {
        let p = port.to_string();
        self.exec_ok(&[
            "iptables", "-A", "INPUT", "-p", "tcp", "--dport", &p, "-j", "DROP",
        ]);
    }

    /// Drops every packet into the namespace (the host goes silent).
    pub fn drop_all(&self) {
        self.exec_ok(&["iptables", "-A", "INPUT", "-j", "DROP"]);
    }

    /// Takes the namespace's own link down: whatever runs inside reaches
    /// nothing but its loopback.
    pub fn cut_inside(&self) {
        self.exec_ok(&["ip", "link", "set", &self.ns_dev, "down"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and so the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_dev])
            .output();
    }
}

/// A child process killed and reaped on drop (SIGCONT first: a stopped
/// process could not be reaped).
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
