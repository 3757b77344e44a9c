//! The running daemon: listeners, the shared snapshot, reload and shutdown.
//!
//! Everything a new session needs lives in one [`Snapshot`] (configuration,
//! router, listener settings) behind an `ArcSwap`: a reload swaps it, sessions
//! in flight keep the one they started with. The [`MemberTable`] outlives
//! snapshots, so health and back-off survive a reload. The health checks
//! ([`health::Supervisor`]) start with the daemon, follow every reload and
//! stop with it. After start, [`run`] handles signals and stopping, and
//! [`upgrade`] a binary upgrade.

mod run;
mod upgrade;

pub use run::{Signals, status_line};
pub use upgrade::{UpgradeRequest, Upgraded};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{self, Config, SmtpListener};
use crate::descriptors::{Budget, Limit, SessionGate};
use crate::health;
use crate::routing::{MemberTable, Router};
use crate::service::handover::Predecessor;
use crate::shutdown::Shutdown;
use crate::smtp::server::{self, ContextSource};
use crate::smtp::session::SessionContext;
use crate::tls::TlsSnapshot;
use crate::workers::ListenerStats;

/// One consistent view of configuration for new sessions.
pub struct Snapshot {
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// Routing over its policy.
    pub router: Arc<Router>,
    listeners: HashMap<String, Arc<SmtpListener>>,
    /// Listener certificates and the member-side TLS configuration.
    tls: TlsSnapshot,
    /// GINA listeners and the client towards members' portals.
    http: crate::http::HttpSnapshot,
}

impl Snapshot {
    /// The health-check jobs of this snapshot.
    fn health_plan(&self) -> health::Plan {
        health::Plan::new(&self.config, self.tls.upstream())
    }

    /// Fails when a certificate, key or CA file cannot be used.
    fn new(config: Config) -> Result<Snapshot, config::ConfigErrors> {
        let tls = TlsSnapshot::load(&config)?;
        let http = crate::http::HttpSnapshot::load(&config)?;
        let listeners = config
            .smtp
            .iter()
            .map(|l| (l.name.clone(), Arc::new(l.clone())))
            .collect();
        let router = Arc::new(Router::new(config.policy.clone()));
        Ok(Snapshot {
            config: Arc::new(config),
            router,
            listeners,
            tls,
            http,
        })
    }
}

/// State shared by the listeners, the sessions and the admin socket.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    /// Live member state (back-off, active sessions).
    pub members: Arc<MemberTable>,
    /// Per-listener counters.
    pub listener_stats: HashMap<String, Arc<ListenerStats>>,
    /// Addresses the listeners are bound to (port 0 resolved).
    pub bound: Vec<(String, SocketAddr)>,
    /// When the daemon started.
    pub started: Instant,
    /// The same, Unix time in seconds.
    pub started_at: u64,
    /// `upgrade` requests for the run loop.
    upgrades: tokio::sync::mpsc::Sender<UpgradeRequest>,
    /// Drain and abort signals for sessions.
    pub shutdown: Shutdown,
    /// The latest periodic DNS check (`[dns] domains`).
    pub dns: Arc<crate::dns::DnsMonitor>,
    /// Client host names for XCLIENT `NAME` (follows `[dns]` on reload).
    pub client_names: Arc<crate::dns::ClientNames>,
    /// The active health checks (follow reloads).
    health: health::Supervisor,
    config_path: Option<PathBuf>,
    /// The cluster control plane, when `[cluster]` is configured.
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::ClusterNode>>,
    /// The replicated policy of a clustered node: reloads keep it instead of the local file.
    cluster_policy: arc_swap::ArcSwapOption<config::Policy>,
    /// Held while a published policy is put in place (by the follower task or an admin answer).
    following: std::sync::Mutex<()>,
    /// The LFT attachment store and its uploader.
    pub lft: std::sync::OnceLock<Arc<crate::lft::Lft>>,
    /// The descriptor limit and budget planned at start.
    pub descriptors: (Limit, Budget),
    /// The budget's cap on client connections, shared by every listener.
    pub gate: Arc<SessionGate>,
}

impl Gateway {
    /// Makes the policy the cluster published the one in use, unless it is
    /// already ([`crate::cluster::ClusterNode::policy`]): the replicated one,
    /// or the node's own file again once none is published.
    pub fn follow_cluster_policy(&self) {
        let Some(node) = self.cluster.get() else {
            return;
        };
        let published = node.policy().borrow().clone();
        let Ok(_following) = self.following.lock() else {
            return;
        };
        match (published, self.cluster_policy.load_full()) {
            (Some(new), Some(old)) if Arc::ptr_eq(&new, &old) => {}
            (Some(new), _) => self.apply_policy(new),
            (None, Some(_)) => self.drop_cluster_policy(),
            (None, None) => {}
        }
    }

    /// Applies a new policy live (the replicated one of a cluster), like a
    /// SIGHUP reload: new sessions use it, sessions in flight keep theirs.
    fn apply_policy(&self, policy: Arc<config::Policy>) {
        self.cluster_policy.store(Some(policy.clone()));
        let mut config = (*self.snapshot().config).clone();
        config.policy = policy;
        match Snapshot::new(config) {
            Ok(snapshot) => {
                self.install(snapshot);
                info!("replicated policy applied");
            }
            Err(errors) => error!("replicated policy not applied:\n{errors}"),
        }
    }

    /// Stops using the replicated policy (a node that left, a frontend that
    /// detached): the node's own policy file applies again, re-read now.
    fn drop_cluster_policy(&self) {
        self.cluster_policy.store(None);
        match self.reload() {
            Ok(()) => info!("the node's own policy file applies again"),
            Err(errors) => error!(
                "the node's own policy file does not load; the replicated policy stays until it is fixed and reloaded:\n{errors}"
            ),
        }
    }

    /// Makes `snapshot` the one new sessions see; health checks follow its members.
    fn install(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        self.health.update(snapshot.health_plan());
        self.client_names.configure(&snapshot.config.policy.dns);
        self.snapshot.store(snapshot);
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Re-reads the configuration files; a broken file is refused and the old one stays.
    pub fn reload(&self) -> Result<(), config::ConfigErrors> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let mut config = config::load(path)?;
        if let Some(policy) = self.cluster_policy.load_full() {
            config.policy = policy;
        }
        let old = self.snapshot();
        let old_names: Vec<_> = old
            .config
            .smtp
            .iter()
            .map(|l| (&l.name, l.listen))
            .collect();
        let new_names: Vec<_> = config.smtp.iter().map(|l| (&l.name, l.listen)).collect();
        if old_names != new_names {
            warn!(
                "listener names or addresses changed: that takes a restart; other changes apply now"
            );
        }
        self.install(Snapshot::new(config)?);
        info!("configuration reloaded");
        Ok(())
    }

    /// The address a listener is bound to.
    pub fn bound_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|(name, _)| name == listener)
            .map(|(_, addr)| *addr)
    }

    /// Asks the run loop for a binary upgrade; the answer comes on `reply`.
    /// `written` resolves once the answer is written to the requester.
    pub fn request_upgrade(
        &self,
        reply: tokio::sync::oneshot::Sender<Result<Upgraded, String>>,
        written: tokio::sync::oneshot::Receiver<()>,
    ) {
        if let Err(e) = self.upgrades.try_send(UpgradeRequest { reply, written }) {
            let request = match e {
                tokio::sync::mpsc::error::TrySendError::Full(r)
                | tokio::sync::mpsc::error::TrySendError::Closed(r) => r,
            };
            let _ = request.reply.send(Err(
                "an upgrade is under way already, or the daemon is stopping".into(),
            ));
        }
    }

    /// Sessions (SMTP and GINA connections) open now on every listener.
    pub fn sessions_now(&self) -> u64 {
        (self.listener_stats.values())
            .map(|s| s.active.load(Ordering::Relaxed))
            .sum()
    }

    /// Active sessions on a listener.
    pub fn active_sessions(&self, listener: &str) -> (u64, u64) {
        self.listener_stats.get(listener).map_or((0, 0), |s| {
            (
                s.active.load(Ordering::Relaxed),
                s.total.load(Ordering::Relaxed),
            )
        })
    }
}

impl ContextSource for Gateway {
    fn context(&self, listener: &str) -> Option<SessionContext> {
        let snapshot = self.snapshot.load();
        Some(SessionContext {
            listener: snapshot.listeners.get(listener)?.clone(),
            config: snapshot.config.clone(),
            router: snapshot.router.clone(),
            members: self.members.clone(),
            shutdown: self.shutdown.clone(),
            tls: snapshot.tls.listener(listener),
            upstream_tls: snapshot.tls.upstream(),
            tap: self.lft.get().map(|lft| lft.clone() as _),
            client_names: Some(self.client_names.clone()),
        })
    }
}

impl crate::http::server::HttpContextSource for Gateway {
    fn http_context(&self, listener: &str) -> Option<crate::http::HttpContext> {
        let snapshot = self.snapshot.load();
        snapshot.http.context(
            listener,
            snapshot.router.clone(),
            self.members.clone(),
            self.shutdown.clone(),
            self.lft
                .get()
                .cloned()
                .map(|lft| lft as Arc<dyn crate::http::LocalContent>),
        )
    }
}

/// A started daemon.
pub struct Daemon {
    /// Shared state.
    pub gateway: Arc<Gateway>,
    stop: CancellationToken,
    sessions: TaskTracker,
    admin_path: PathBuf,
    upgrades: tokio::sync::mpsc::Receiver<UpgradeRequest>,
    /// This process's binary, as it was at start: an upgrade starts what is
    /// installed at that path now.
    binary: Option<PathBuf>,
    /// The watchdog interval systemd asked for (pinged at half of it).
    watchdog: Option<Duration>,
}

/// Binds listener `name` (`kind` for the log) and records its address in `bound`.
async fn bind(
    name: &str,
    listen: SocketAddr,
    kind: &str,
    bound: &mut Vec<(String, SocketAddr)>,
) -> anyhow::Result<TcpListener> {
    let socket = crate::service::sockets::tcp_listener(&format!("{kind}/{name}"), listen)
        .and_then(TcpListener::from_std)
        .with_context(|| format!("listener {name}: cannot bind {listen}"))?;
    let addr = socket.local_addr()?;
    info!(listener = %name, addr = %addr, "listening ({kind})");
    bound.push((name.to_owned(), addr));
    Ok(socket)
}

/// Binds each listener (`kind` for the log) and records its address in `bound`.
async fn bind_all<'a>(
    listeners: impl Iterator<Item = (&'a String, SocketAddr)>,
    kind: &str,
    bound: &mut Vec<(String, SocketAddr)>,
) -> anyhow::Result<Vec<(String, TcpListener)>> {
    let mut sockets = Vec::new();
    for (name, listen) in listeners {
        sockets.push((name.clone(), bind(name, listen, kind, bound).await?));
    }
    Ok(sockets)
}

/// Starts the workers of each bound listener with `spawn` (SMTP or GINA),
/// handing it the listener's counters.
fn spawn_listeners(
    gateway: &Gateway,
    sockets: Vec<(String, TcpListener)>,
    spawn: impl Fn(TcpListener, String, Arc<ListenerStats>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    for (name, socket) in sockets {
        let stats = (gateway.listener_stats.get(&name).cloned()).unwrap_or_default();
        spawn(socket, name, stats)?;
    }
    Ok(())
}

/// How often `mxgate_member_up` is refreshed: back-off expires without an event.
const MEMBER_REFRESH: Duration = Duration::from_secs(1);

/// Keeps `mxgate_member_up` current for every member of the current policy,
/// once a second, until `stop` ([`crate::metrics::MemberSeries`]).
fn spawn_member_refresh(gateway: Arc<Gateway>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut series = crate::metrics::MemberSeries::default();
        let mut tick = tokio::time::interval(MEMBER_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let snapshot = gateway.snapshot();
            let policy = snapshot.router.policy();
            for status in snapshot.router.status(&gateway.members) {
                let injects =
                    (policy.member(&status.name)).is_some_and(|m| !m.addresses.is_empty());
                series.record(&status.name, status.health.healthy, injects);
            }
        }
    });
}

/// Starts the control plane (when `[cluster]` is configured) and the LFT
/// store, and follows the policy the control plane publishes.
async fn start_subsystems(gateway: &Arc<Gateway>, stop: &CancellationToken) -> anyhow::Result<()> {
    let config = gateway.snapshot().config.clone();
    if let Some(node) = crate::cluster::start(&config, stop.clone()).await? {
        let _ = gateway.cluster.set(node.clone());
        gateway.follow_cluster_policy();
        spawn_policy_follower(gateway.clone(), node.policy(), stop.clone());
    }
    let host: Weak<dyn crate::lft::Host> = Arc::downgrade(gateway) as Weak<dyn crate::lft::Host>;
    let lft = crate::lft::start(&config, host, stop.clone())?;
    let _ = gateway.lft.set(lft);
    Ok(())
}

/// Puts every policy the control plane publishes in place, until `stop`.
fn spawn_policy_follower(
    gateway: Arc<Gateway>,
    mut published: watch::Receiver<Option<Arc<config::Policy>>>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = published.changed() => if changed.is_err() { return },
            }
            gateway.follow_cluster_policy();
        }
    });
}

impl crate::lft::Host for Gateway {
    fn policy(&self) -> Arc<config::Policy> {
        self.snapshot().config.policy.clone()
    }

    fn cluster(&self) -> Option<Arc<crate::cluster::ClusterNode>> {
        self.cluster.get().cloned()
    }
}

/// Raises the descriptor limit and plans the budget of `config` under it
/// (logged; a warning when the listeners' `max_sessions` do not fit).
fn plan_descriptors(config: &Config) -> (Limit, Budget) {
    let limit = crate::descriptors::raise_limit();
    let workers = crate::workers::count(config.node.worker_threads);
    let budget = Budget::plan(limit.soft, config, workers);
    info!(
        limit = limit.soft,
        raised_from = limit.was,
        hard = limit.hard,
        reserved = budget.reserved(),
        sessions = budget.sessions,
        "descriptor budget"
    );
    if let Some(warning) = budget.warning() {
        warn!("{warning}");
    }
    (limit, budget)
}

/// Binds every listener and starts accepting (the admin socket is
/// [`crate::admin::start`]'s). `config_path` is re-read on reload (`None`:
/// reload does nothing).
pub async fn start(
    config: Config,
    config_path: Option<PathBuf>,
    predecessor: &mut Option<Predecessor>,
) -> anyhow::Result<Daemon> {
    let mut bound = Vec::new();
    let smtp = config.smtp.iter().map(|l| (&l.name, l.listen));
    let sockets = bind_all(smtp, "SMTP", &mut bound).await?;
    let http = config.http.iter().map(|l| (&l.name, l.listen));
    let http_sockets = bind_all(http, "GINA HTTP", &mut bound).await?;
    let stop = CancellationToken::new();
    let metrics_on = crate::metrics::install(&config, stop.clone())?;
    let (limit, budget) = plan_descriptors(&config);
    let gate = SessionGate::new(budget.sessions);
    let listener_stats = config
        .smtp
        .iter()
        .map(|l| &l.name)
        .chain(config.http.iter().map(|l| &l.name))
        .map(|name| {
            (
                name.clone(),
                Arc::new(ListenerStats::with_gate(gate.clone())),
            )
        })
        .collect::<HashMap<_, _>>();
    let snapshot = Snapshot::new(config)?;
    let snapshot_dns = snapshot.config.policy.dns.clone();
    let members = MemberTable::new();
    let (upgrade_requests, upgrades) = tokio::sync::mpsc::channel(1);
    // Registers every checked member before the first session can arrive.
    let health = health::Supervisor::start(members.clone(), snapshot.health_plan(), stop.clone());
    let gateway = Arc::new(Gateway {
        snapshot: ArcSwap::from_pointee(snapshot),
        members,
        listener_stats,
        bound,
        started: Instant::now(),
        started_at: crate::time::now(),
        upgrades: upgrade_requests,
        shutdown: Shutdown::new(),
        dns: Arc::default(),
        client_names: Arc::new(crate::dns::ClientNames::new(&snapshot_dns)),
        health,
        config_path,
        cluster: std::sync::OnceLock::new(),
        cluster_policy: arc_swap::ArcSwapOption::empty(),
        following: std::sync::Mutex::new(()),
        lft: std::sync::OnceLock::new(),
        descriptors: (limit, budget),
        gate,
    });
    let sessions = TaskTracker::new();
    let admin_path = gateway.snapshot().config.node.admin_socket();
    if metrics_on {
        spawn_member_refresh(gateway.clone(), stop.clone());
    }
    // A start that fails from here on must not leave the health checks running.
    take_over_database(predecessor)
        .await
        .inspect_err(|_| stop.cancel())?;
    start_subsystems(&gateway, &stop)
        .await
        .inspect_err(|_| stop.cancel())?;
    crate::dns::UpstreamResolver::global().configure(&gateway.snapshot().config.policy.dns);
    let source = gateway.clone();
    (gateway.dns.clone()).spawn(
        move || source.snapshot().config.policy.clone(),
        stop.clone(),
    );
    let workers = crate::workers::count(gateway.snapshot().config.node.worker_threads);
    let smtp: Arc<dyn ContextSource> = gateway.clone();
    spawn_listeners(&gateway, sockets, |socket, name, stats| {
        let (stop, tasks) = (stop.clone(), sessions.clone());
        server::spawn_workers(socket, name, smtp.clone(), stats, stop, tasks, workers)
    })?;
    let http: Arc<dyn crate::http::server::HttpContextSource> = gateway.clone();
    spawn_listeners(&gateway, http_sockets, |socket, name, stats| {
        let (stop, tasks) = (stop.clone(), sessions.clone());
        crate::http::server::spawn_workers(socket, name, http.clone(), stats, stop, tasks, workers)
    })?;
    let watchdog = match predecessor {
        Some(p) => p.manifest.watchdog_usec.map(Duration::from_micros),
        None => crate::service::notify::watchdog_interval(),
    };
    Ok(Daemon {
        gateway,
        stop,
        sessions,
        admin_path,
        upgrades,
        binary: std::env::current_exe().ok(),
        watchdog,
    })
}

/// When this process replaces a running daemon: says that the
/// configuration is loaded and waits until the predecessor has closed
/// the cluster database (only one process may hold it).
async fn take_over_database(predecessor: &mut Option<Predecessor>) -> anyhow::Result<()> {
    let Some(mut p) = predecessor.take() else {
        return Ok(());
    };
    let (p, released) = tokio::task::spawn_blocking(move || {
        let released = p.loaded(upgrade::RELEASE_WAIT);
        (p, released)
    })
    .await?;
    *predecessor = Some(p);
    released.context("the running daemon did not hand over")
}

impl Daemon {
    /// The watchdog interval systemd asked for.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }
}
