//! Network namespaces for real partitions (`ip netns`, veth, a bridge).
//!
//! Layout: one "switch" namespace holding a bridge, and one namespace per
//! host, joined to the bridge by a veth pair (`eth0` in the host, `pN` on
//! the switch). Each host's `eth0` carries a 127.x address (`/24`) with
//! `route_localnet` on, and its loopback keeps only 127.0.0.1/32, so the
//! rest of 127.0.0.0/8 is routed over the veth. Nothing is created or
//! changed in the root namespace: the traffic stays on 127.0.0.0/8, on
//! virtual links inside this machine. A partition is `ip link set pN
//! nomaster` on the switch (a dead switch port: frames go nowhere), the
//! heal puts the port back on the bridge.
//!
//! Names carry the test process's pid (`mxp<pid>sw`, `mxp<pid>n<i>`), so a
//! crashed earlier run cannot collide with this one; its leftovers (whose
//! pid is gone) are removed when a new [`Lan`] is made. [`Drop`] removes
//! every namespace of this run, on every exit path.

use std::process::Command;
use std::time::Duration;

use super::run_bounded;

/// Runs `ip ARGS` (bounded); `Err` with its stderr when it fails.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let (out, killed) = run_bounded(Command::new("ip").args(args), Duration::from_secs(10));
    if out.status.success() && !killed {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            if killed { " (timed out)" } else { "" }
        ))
    }
}

/// Writes `value` to `/proc/sys/PATH` inside namespace `ns`.
fn sysctl(ns: &str, path: &str, value: &str) -> Result<(), String> {
    let script = format!("echo {value} > /proc/sys/{path}");
    ip(&["netns", "exec", ns, "sh", "-c", &script])
}

/// One host of a [`Lan`].
pub struct Host {
    /// Its namespace.
    pub ns: String,
    /// Its address on the LAN.
    pub ip: String,
    /// Its port on the switch.
    port: String,
}

/// A switch and hosts in their own network namespaces.
pub struct Lan {
    switch: String,
    /// The hosts, in the order of the addresses given to [`Lan::new`].
    pub hosts: Vec<Host>,
}

const PREFIX: &str = "mxp";

impl Lan {
    /// A LAN with one host per address in `ips` (127.x, one /24).
    /// [`Lan::new`] for a test: `None` (the test skips, saying why) when
    /// namespaces cannot be made here; under `CI=true` that fails instead.
    pub fn for_test(ips: &[&str]) -> Option<Lan> {
        match Lan::new(ips) {
            Ok(lan) => Some(lan),
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "network namespaces are required under CI: {e}"
                );
                eprintln!("SKIP: cannot make network namespaces here: {e}");
                None
            }
        }
    }

    pub fn new(ips: &[&str]) -> Result<Lan, String> {
        sweep_stale();
        let tag = format!("{PREFIX}{}", std::process::id());
        let mut lan = Lan {
            switch: format!("{tag}sw"),
            hosts: Vec::new(),
        };
        // From here on, Drop removes whatever was made.
        ip(&["netns", "add", &lan.switch])?;
        quiet_ipv6(&lan.switch)?;
        ip(&["-n", &lan.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &lan.switch, "link", "set", "br0", "up"])?;
        for (i, addr) in ips.iter().enumerate() {
            let host = Host {
                ns: format!("{tag}n{}", i + 1),
                ip: (*addr).to_owned(),
                port: format!("p{}", i + 1),
            };
            ip(&["netns", "add", &host.ns])?;
            lan.hosts.push(host);
            let host = &lan.hosts[i];
            quiet_ipv6(&host.ns)?;
            for k in ["all", "default"] {
                sysctl(&host.ns, &format!("net/ipv4/conf/{k}/route_localnet"), "1")?;
            }
            let (sw, ns) = (lan.switch.as_str(), host.ns.as_str());
            ip(&[
                "-n", sw, "link", "add", &host.port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ])?;
            ip(&["-n", sw, "link", "set", &host.port, "master", "br0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "del", "127.0.0.1/8", "dev", "lo"])?;
            ip(&["-n", ns, "addr", "add", "127.0.0.1/32", "dev", "lo"])?;
            let cidr = format!("{addr}/24");
            ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(lan)
    }

    /// The command prefix that runs a program in host `i`'s namespace.
    pub fn wrap(&self, i: usize) -> [&str; 4] {
        ["ip", "netns", "exec", self.hosts[i].ns.as_str()]
    }

    /// Cuts host `i` off: its switch port leaves the bridge.
    pub fn cut(&self, i: usize) {
        let port = &self.hosts[i].port;
        if let Err(e) = ip(&["-n", &self.switch, "link", "set", port, "nomaster"]) {
            panic!("cannot cut host {i} off: {e}");
        }
    }

    /// Heals the cut: the port joins the bridge again.
    pub fn heal(&self, i: usize) {
        let port = &self.hosts[i].port;
        if let Err(e) = ip(&["-n", &self.switch, "link", "set", port, "master", "br0"]) {
            panic!("cannot heal host {i}: {e}");
        }
    }
}

/// IPv6 off in `ns` (no link-local chatter on the virtual links).
fn quiet_ipv6(ns: &str) -> Result<(), String> {
    for k in ["all", "default"] {
        sysctl(ns, &format!("net/ipv6/conf/{k}/disable_ipv6"), "1")?;
    }
    Ok(())
}

impl Drop for Lan {
    fn drop(&mut self) {
        // A namespace lives on while a process runs in it, but its name
        // goes at once; deleting the switch's namespace cuts every veth.
        for ns in std::iter::once(&self.switch).chain(self.hosts.iter().map(|h| &h.ns)) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Removes the namespaces of earlier runs whose test process is gone.
fn sweep_stale() {
    let (out, _) = run_bounded(
        Command::new("ip").args(["netns", "list"]),
        Duration::from_secs(10),
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let suffix = &rest[pid.len()..];
        let ours = suffix == "sw"
            || suffix
                .strip_prefix('n')
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if ours && !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing network namespace {name} of an earlier run");
            let _ = ip(&["netns", "del", name]);
        }
    }
}
