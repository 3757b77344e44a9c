//! The four nodes of `mxgate demo --cluster`: their fixed addresses, the
//! `mxgate.toml` and `cluster.toml` written for each, and the `mxgate
//! serve` child processes ([`Nodes`]), stopped on every exit path.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};
use tokio::process::{Child, Command};

/// The SMTP listener's port on every node.
pub const SMTP_PORT: u16 = 2525;
/// The control plane's port (`[cluster] listen`) on every node.
pub const CLUSTER_PORT: u16 = 7025;
/// The metrics endpoint's port on every node.
pub const METRICS_PORT: u16 = 9325;
/// The GINA (HTTP) listener's port on every node.
pub const HTTP_PORT: u16 = 8080;
/// The built-in sink MTA's port on a backend's address (its `[local]` MTA).
pub const SINK_PORT: u16 = 10025;
/// The built-in web member's port on a backend's address (its `[local]` portal).
pub const WEB_PORT: u16 = 10080;

/// How long a node has to answer its admin socket after it was started.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// How long the nodes have to exit after SIGTERM before they get SIGKILL.
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// How often a start-up or stop is checked.
const POLL: Duration = Duration::from_millis(50);

/// What a node is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A voting backend with a built-in sink MTA as its `[local]` member.
    Backend,
    /// A frontend (DMZ): routes to the backends' members, keeps no database.
    Frontend,
}

/// One node of the demo.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// `[node] name`.
    pub name: &'static str,
    /// The sink MTA's name (backends).
    pub sink: &'static str,
    /// Its address: every listener of the node is on it.
    pub ip: Ipv4Addr,
    /// Backend or frontend.
    pub role: Role,
}

impl Spec {
    /// The SMTP listener.
    pub fn smtp(&self) -> SocketAddr {
        SocketAddr::from((self.ip, SMTP_PORT))
    }

    /// The control plane (`[cluster] listen` and `advertise`).
    pub fn cluster(&self) -> SocketAddr {
        SocketAddr::from((self.ip, CLUSTER_PORT))
    }

    /// The GINA (HTTP) listener.
    pub fn http(&self) -> SocketAddr {
        SocketAddr::from((self.ip, HTTP_PORT))
    }

    /// The built-in web member (portal) of a backend.
    pub fn web_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, WEB_PORT))
    }

    /// The metrics endpoint.
    pub fn metrics(&self) -> SocketAddr {
        SocketAddr::from((self.ip, METRICS_PORT))
    }

    /// The built-in sink MTA of a backend.
    pub fn sink_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, SINK_PORT))
    }

    /// Every address the demo binds for this node.
    fn addresses(&self) -> Vec<SocketAddr> {
        let mut all = vec![self.smtp(), self.http(), self.cluster(), self.metrics()];
        if self.role == Role::Backend {
            all.extend([self.sink_addr(), self.web_addr()]);
        }
        all
    }
}

/// gw1, gw2, gw3 (backends) and fe1 (frontend) on 127.71.0.1-4.
pub const SPECS: [Spec; 4] = [
    Spec {
        name: "gw1",
        sink: "sink-gw1",
        ip: Ipv4Addr::new(127, 71, 0, 1),
        role: Role::Backend,
    },
    Spec {
        name: "gw2",
        sink: "sink-gw2",
        ip: Ipv4Addr::new(127, 71, 0, 2),
        role: Role::Backend,
    },
    Spec {
        name: "gw3",
        sink: "sink-gw3",
        ip: Ipv4Addr::new(127, 71, 0, 3),
        role: Role::Backend,
    },
    Spec {
        name: "fe1",
        sink: "",
        ip: Ipv4Addr::new(127, 71, 0, 4),
        role: Role::Frontend,
    },
];

/// Fails with a clear message when an address the demo needs is taken
/// (by another `mxgate demo --cluster`, most likely).
pub fn check_free() -> anyhow::Result<()> {
    for spec in &SPECS {
        for addr in spec.addresses() {
            if let Err(e) = TcpListener::bind(addr) {
                bail!(
                    "{addr} ({}'s address) cannot be bound: {e}; is another `mxgate demo --cluster` running? \
                     Stop it with Ctrl-C (nodes of a demo that was killed outright run on: \
                     `ps -ef | grep mxgate-cluster-demo` shows them) and start again",
                    spec.name
                );
            }
        }
    }
    Ok(())
}

/// The policy every node starts with; gw1's becomes version 1 of the
/// replicated policy at `cluster create`.
pub fn base_policy() -> String {
    "# Written by `mxgate demo --cluster`. Once a node is in the cluster it\n\
     # routes by the replicated policy (`mxgate cluster policy show`); every\n\
     # joined backend is a member with the sink MTA and portal of\n\
     # its [local] section.\n\
     [routing]\naffinity = \"source\"\n\n\
     [health]\n# The web members log every request they answer: TCP checks keep the terminal quiet.\n\
     gina_check = \"tcp\"\n\n\
     [dns]\n# The demo asks no DNS server for client names.\nclient_names = false\n"
        .to_owned()
}

/// Writes `DIR/NAME/mxgate.toml` and `cluster.toml`; the path of the first.
pub fn write_config(dir: &Path, spec: &Spec) -> anyhow::Result<PathBuf> {
    let node_dir = dir.join(spec.name);
    std::fs::create_dir_all(&node_dir)
        .with_context(|| format!("cannot create {}", node_dir.display()))?;
    let local = match spec.role {
        Role::Backend => format!(
            "# What this node offers as a member: the demo's built-in sink MTA and portal.\n\
             [local]\nsmtp_upstream = \"{}\"\ngina_upstream = \"{}\"\n\n",
            spec.sink_addr(),
            spec.web_addr()
        ),
        Role::Frontend => String::new(),
    };
    let (name, ip) = (spec.name, spec.ip);
    let node = format!(
        "# Written by `mxgate demo --cluster`: {name}, a {role}.\n\
         [node]\nname = \"{name}\"\ndata_dir = \"data\"\npolicy = \"cluster.toml\"\n\n\
         [[smtp]]\nname = \"inbound\"\nlisten = \"{smtp}\"\nhostname = \"{name}.demo.test\"\n\
         # Four daemons on a laptop: well within a 1024-descriptor limit.\n\
         max_sessions = 100\n\n\
         [[http]]\nname = \"gina\"\nlisten = \"{http}\"\nsticky_cookie = \"MXGATE_MEMBER\"\n\n\
         [metrics]\nlisten = \"{metrics}\"\n\n\
         {local}\
         [cluster]\nlisten = \"{ip}:{CLUSTER_PORT}\"\nadvertise = \"{ip}:{CLUSTER_PORT}\"\n",
        role = match spec.role {
            Role::Backend => "backend",
            Role::Frontend => "frontend",
        },
        smtp = spec.smtp(),
        http = spec.http(),
        metrics = spec.metrics(),
    );
    let path = node_dir.join("mxgate.toml");
    write(&path, &node)?;
    write(&node_dir.join("cluster.toml"), &base_policy())?;
    Ok(path)
}

/// Writes `text` to `path`, the path named in the error.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A running `mxgate serve` of the demo.
pub struct Running {
    /// The node.
    pub spec: Spec,
    /// Its `mxgate.toml`.
    pub config: PathBuf,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// Its process id.
    pub pid: u32,
    child: Child,
    /// How it ended, once it has.
    pub ended: Option<ExitStatus>,
}

/// The demo's nodes. Dropped without [`Nodes::stop`] (an error, a panic)
/// every child still running gets SIGKILL (`kill_on_drop`).
#[derive(Default)]
pub struct Nodes {
    /// In start order.
    pub running: Vec<Running>,
}

impl Nodes {
    /// Spawns `exe serve -c CONFIG` for `spec`, its output to `NAME/mxgate.log`,
    /// in a process group of its own (a Ctrl-C on the terminal reaches only
    /// the demo, which stops the nodes in order).
    pub fn spawn(&mut self, exe: &Path, spec: Spec, config: PathBuf) -> anyhow::Result<()> {
        let log = config.with_file_name("mxgate.log");
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = file
            .try_clone()
            .with_context(|| format!("cannot open {}", log.display()))?;
        let child = Command::new(exe)
            .arg("serve")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} serve", exe.display()))?;
        let pid = child
            .id()
            .with_context(|| format!("{} ended at once", spec.name))?;
        self.running.push(Running {
            spec,
            config,
            log,
            pid,
            child,
            ended: None,
        });
        Ok(())
    }

    /// The node called `name`.
    pub fn get(&self, name: &str) -> Option<&Running> {
        self.running.iter().find(|r| r.spec.name == name)
    }

    /// Waits until node `index` answers `exe status` (bounded); fails with
    /// the end of its log when it ends or does not answer in time.
    pub async fn wait_ready(&mut self, exe: &Path, index: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        let Some(node) = self.running.get_mut(index) else {
            bail!("no node {index}");
        };
        loop {
            if let Some(status) = node.child.try_wait().context("cannot wait for a node")? {
                node.ended = Some(status);
                bail!(
                    "{} ended at start-up ({status}); its log {}:\n{}",
                    node.spec.name,
                    node.log.display(),
                    log_tail(&node.log)
                );
            }
            let answered = Command::new(exe)
                .arg("status")
                .arg("-c")
                .arg(&node.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if answered {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not answer within {}s; its log {}:\n{}",
                    node.spec.name,
                    READY_WITHIN.as_secs(),
                    node.log.display(),
                    log_tail(&node.log)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The nodes that ended since the last call, with how.
    pub fn reap(&mut self) -> Vec<(Spec, u32, ExitStatus)> {
        let mut ended = Vec::new();
        for node in self.running.iter_mut().filter(|n| n.ended.is_none()) {
            if let Ok(Some(status)) = node.child.try_wait() {
                node.ended = Some(status);
                ended.push((node.spec, node.pid, status));
            }
        }
        ended
    }

    /// SIGTERM to every node still running, then SIGKILL to those still
    /// running after [`STOP_WITHIN`]; returns when all have ended.
    pub async fn stop(&mut self) {
        for node in self.running.iter_mut().filter(|n| n.ended.is_none()) {
            if let Some(pid) = i32::try_from(node.pid).ok().and_then(Pid::from_raw) {
                let _ = kill_process(pid, Signal::TERM);
            }
        }
        let deadline = tokio::time::Instant::now() + STOP_WITHIN;
        for node in self.running.iter_mut().filter(|n| n.ended.is_none()) {
            match tokio::time::timeout_at(deadline, node.child.wait()).await {
                Ok(Ok(status)) => node.ended = Some(status),
                Ok(Err(_)) | Err(_) => {
                    let _ = node.child.kill().await;
                    node.ended = node.child.try_wait().ok().flatten();
                }
            }
        }
    }
}

/// The last lines of a node's log, for an error.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(15);
    lines[from..].join("\n")
}
