//! Cluster nodes for tests: each a `mxgate serve` process with its own
//! name, 127.x address, `[local]` upstream and `[cluster]` control plane.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use super::{FakeMta, Mxgate, eventually, free_port};

/// One node of a test cluster.
pub struct Node {
    /// The daemon.
    pub gw: Mxgate,
    /// Its name.
    pub name: String,
    /// Its address (listeners and control plane).
    pub ip: String,
    /// `[cluster] listen` port.
    pub port: u16,
}

impl Node {
    /// Starts node `name` on `ip` offering `smtp_upstream` as its `[local]` MTA.
    pub fn start(name: &str, ip: &str, smtp_upstream: &str, policy: &str) -> Node {
        Self::start_wrapped(&[], name, ip, smtp_upstream, policy)
    }

    /// Starts node `name` on `ip` with `fake` as its `[local]` MTA and an
    /// empty policy.
    pub fn with_fake(name: &str, ip: &str, fake: &FakeMta) -> Node {
        Self::start(name, ip, &fake.addr.to_string(), &super::policy("", &[]))
    }

    /// Like [`Node::start`], with the daemon run under `wrap` (e.g.
    /// `ip netns exec NS`: see [`Mxgate::start_wrapped`]).
    pub fn start_wrapped(
        wrap: &[&str],
        name: &str,
        ip: &str,
        smtp_upstream: &str,
        policy: &str,
    ) -> Node {
        let local = format!("[local]\nsmtp_upstream = \"{smtp_upstream}\"\n\n");
        Self::start_node(wrap, name, ip, &local, policy)
    }

    /// Starts node `name` on `ip` with no `[local]` section (a frontend offers no MTA).
    pub fn start_frontend(name: &str, ip: &str, policy: &str) -> Node {
        Self::start_node(&[], name, ip, "", policy)
    }

    /// Like [`Node::start_frontend`], with the daemon run under `wrap`
    /// (e.g. `ip netns exec NS`).
    pub fn start_frontend_wrapped(wrap: &[&str], name: &str, ip: &str, policy: &str) -> Node {
        Self::start_node(wrap, name, ip, "", policy)
    }

    fn start_node(wrap: &[&str], name: &str, ip: &str, local: &str, policy: &str) -> Node {
        // Any 127.x address is bindable here, so this finds a port that is
        // free in a fresh network namespace too.
        let port = free_port(ip);
        let config = format!(
            "[[smtp]]\nname = \"inbound\"\nlisten = \"{ip}:0\"\nhostname = \"mx.test\"\n\n\
             [[http]]\nname = \"gina\"\nlisten = \"{ip}:0\"\n\n\
             {local}\
             [cluster]\nlisten = \"{ip}:{port}\"\nadvertise = \"{ip}:{port}\"\n"
        );
        Node {
            gw: Mxgate::start_wrapped(wrap, name, "", &config, policy),
            name: name.to_owned(),
            ip: ip.to_owned(),
            port,
        }
    }

    /// Stops the daemon (SIGTERM) and asserts that it exits within 10 s
    /// (`self.gw.restart()` brings it back).
    #[track_caller]
    pub fn stop(&mut self) {
        self.gw.terminate();
        assert!(
            self.gw.wait_exit(Duration::from_secs(10)).is_some(),
            "{} did not exit",
            self.name
        );
    }

    /// Kills the daemon (SIGKILL) and waits until it is gone
    /// (`self.gw.restart()` brings it back).
    #[track_caller]
    pub fn kill(&mut self) {
        super::signal(self.gw.pid(), "KILL");
        assert!(
            self.gw.wait_exit(Duration::from_secs(10)).is_some(),
            "{} did not die",
            self.name
        );
    }

    /// The master this node names in `cluster status` and the epoch, when
    /// it answers and knows one.
    pub fn master(&self) -> Option<(String, u64)> {
        let s = try_status(self)?;
        let master = s["master"].as_str()?.to_owned();
        (!master.is_empty()).then(|| (master, s["epoch"].as_u64().unwrap_or(0)))
    }

    /// `HOST:PORT` of the control plane.
    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// Runs `mxgate ARGS -c ...`.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.gw.cli(args)
    }

    /// Runs the CLI and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{}: mxgate {args:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "{}: mxgate {args:?} should fail but printed {}",
            self.name,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Writes `text` to `file` in the node's directory and applies it with
    /// `cluster policy apply`, which must succeed; returns its stdout.
    pub fn apply_policy(&self, file: &str, text: &str) -> String {
        let path = self.file(file, text);
        self.ok(&["cluster", "policy", "apply", path.to_str().expect("path")])
    }

    /// `cluster status --json`.
    pub fn status(&self) -> serde_json::Value {
        let text = self.ok(&["cluster", "status", "--json"]);
        serde_json::from_str(&text).expect("cluster status json")
    }

    /// A file in the node's directory.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.gw.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// Path of a file in data_dir.
    pub fn data(&self, name: &str) -> PathBuf {
        self.gw.data_dir().join(name)
    }

    /// On the master: exports `clusterid.txt` with `password`; its path.
    pub fn export_identifier(&self, password: &str) -> PathBuf {
        let password = self.file("pw", &format!("{password}\n"));
        let id = self.gw.dir.path().join("clusterid.txt");
        self.ok(&[
            "cluster",
            "identifier",
            "export",
            "--out",
            id.to_str().expect("path"),
            "--password-file",
            password.to_str().expect("path"),
        ]);
        id
    }

    /// Exports the cluster identifier without a password
    /// (`--insecure-no-password`) to `file` in the node's directory; its path
    /// and what the command printed.
    pub fn export_unencrypted(&self, file: &str) -> (PathBuf, String) {
        let id = self.gw.dir.path().join(file);
        let out = self.ok(&[
            "cluster",
            "identifier",
            "export",
            "--out",
            id.to_str().expect("path"),
            "--insecure-no-password",
        ]);
        (id, out)
    }

    /// Joins the cluster of `master` with `identifier` (and `password`).
    pub fn join(
        &self,
        master: &Node,
        identifier: &std::path::Path,
        password: Option<&str>,
    ) -> Output {
        let id = identifier.display().to_string();
        let mut args = vec![
            "cluster".to_owned(),
            "join".into(),
            "--identifier".into(),
            id,
            "--master".into(),
            master.address(),
        ];
        if let Some(p) = password {
            let file = self.file("password", &format!("{p}\n"));
            args.extend(["--password-file".into(), file.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cli(&args)
    }

    /// The version of the replicated policy this node holds.
    pub fn policy_version(&self) -> Option<u64> {
        let out = self.cli(&["cluster", "policy", "show"]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .next()?
            .strip_prefix("# policy version ")?
            .trim()
            .parse()
            .ok()
    }
}

/// The members of `cluster status --json` as (name, cid, state, local, remote).
pub fn rows(status: &serde_json::Value) -> Vec<(String, u64, String, u64, u64)> {
    status["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                m["cid"].as_u64().unwrap_or_default(),
                m["state"].as_str().unwrap_or_default().to_owned(),
                m["local_entries"].as_u64().unwrap_or_default(),
                m["remote_entries"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits (bounded) until every member of `node`'s status is in state A with
/// matching entry counts and there are `count` of them.
pub fn all_in_sync(node: &Node, count: usize, limit: Duration) -> bool {
    eventually(limit, || {
        let rows = rows(&node.status());
        rows.len() == count && rows.iter().all(|r| r.2 == "A" && r.3 == r.4)
    })
}

/// `cluster status --json` of a node, or None when it does not answer
/// (stopped, restarting).
pub fn try_status(node: &Node) -> Option<serde_json::Value> {
    let out = node.cli(&["cluster", "status", "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The nodes that accept changes now, as (their epoch, name).
pub fn writers(nodes: &[&Node]) -> Vec<(u64, String)> {
    nodes
        .iter()
        .filter_map(|node| {
            let s = try_status(node)?;
            (s["accepts_writes"] == true)
                .then(|| (s["node_epoch"].as_u64().unwrap_or(0), node.name.clone()))
        })
        .collect()
}

/// Asserts that no two of `nodes` accept changes in the same epoch (SPEC
/// section 8); returns the [`writers`] it saw.
#[track_caller]
pub fn one_master_per_epoch(nodes: &[&Node]) -> Vec<(u64, String)> {
    let now = writers(nodes);
    for (i, a) in now.iter().enumerate() {
        for b in &now[i + 1..] {
            assert_ne!(a.0, b.0, "two nodes accept writes in one epoch: {now:?}");
        }
    }
    now
}

/// Makes `nodes[0]` master of a new cluster and joins the others as
/// backends; waits (bounded by `limit`) until all are in sync.
pub fn form(nodes: &[&Node], limit: Duration) {
    let master = nodes[0];
    master.ok(&["cluster", "create"]);
    let id = master.export_identifier("pw");
    for node in &nodes[1..] {
        let out = node.join(master, &id, Some("pw"));
        assert!(
            out.status.success(),
            "{}: join failed: {}",
            node.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        all_in_sync(master, nodes.len(), limit),
        "{:?}",
        rows(&master.status())
    );
}

/// `curl` of `url` with a client certificate (mutual TLS to a control
/// plane): (HTTP code, body followed by curl's stderr).
pub fn curl_mtls(
    url: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
    ca: &std::path::Path,
) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (
        code.to_owned(),
        format!("{body} {}", String::from_utf8_lossy(&out.stderr)),
    )
}
