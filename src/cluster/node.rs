//! The running control plane of one node: who it is in the cluster, its
//! consensus engine (a backend's), the replicated state it last applied
//! and what it last heard from every other member.
//!
//! The replicated state is published on a `watch` channel: a backend's
//! state machine publishes every apply, a frontend what it pulls from its
//! backend ([`super::pull`]). The effective routing policy built from it
//! is published on another ([`ClusterNode::policy`]): the daemon follows
//! it; the control plane knows nothing of the daemon.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::db::{Db, Identity};
use super::engine::{self, Replica};
use super::frontend::{self, BackendRef, FrontendFile};
use super::transport::{self, Answer, Sender};
use super::{ClusterError, ClusterMeta, LocalNode, Result, Role};
use crate::config::{Config, LocalConfig, Policy};
use crate::tls::mutual::{self, Admission};

pub use super::probe::Contact;

pub use super::engine::Leader;

/// How long a deleted node goes on taking part in the engine, so that the
/// membership change that removes it can commit.
pub const REMOVAL_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The control plane of this node.
pub struct ClusterNode {
    /// `[node] name`.
    pub name: String,
    /// `[node] data_dir`.
    pub data_dir: std::path::PathBuf,
    /// `[cluster] listen` as bound.
    pub listen: SocketAddr,
    /// `[cluster] advertise`.
    pub advertise: SocketAddr,
    /// `[local]`: the upstreams this node offers as a member.
    pub local: Option<LocalConfig>,
    /// When the daemon started.
    pub started: Instant,
    /// Daemon shutdown.
    pub stop: CancellationToken,
    /// A backend's database (None on a frontend).
    db: ArcSwapOption<Db>,
    /// Who this node is in its cluster (None: in no cluster).
    identity: ArcSwapOption<Identity>,
    /// A backend's consensus engine, while it is in a cluster.
    raft: ArcSwapOption<engine::Handle>,
    /// The replicated state as last applied (or pulled, on a frontend).
    replica: engine::store::Publisher,
    /// Frontend: the master its backend last named, and the highest epoch
    /// seen (state of a lower one is never taken).
    pub(super) named_leader: Mutex<Option<Leader>>,
    pub(super) seen_epoch: AtomicU64,
    /// Last contact with every other member, by name (the probe loop).
    pub contacts: Mutex<HashMap<String, Contact>>,
    /// The node's background tasks (probe, pull, membership), while in a cluster.
    tasks: Mutex<Option<CancellationToken>>,
    /// Serialises marking the node detached (a leave and a deletion noticed).
    detaching: Mutex<()>,
    /// A noticed deletion is being carried out.
    removing: std::sync::atomic::AtomicBool,
    /// `[node] policy`: the node's own policy file, under the replicated one.
    policy_file: std::path::PathBuf,
    /// The effective replicated policy; `None`: the node's own file applies.
    policy: watch::Sender<Option<Arc<Policy>>>,
    /// What serves the control plane's `/lft/` routes, once it runs.
    attachments: std::sync::OnceLock<Arc<dyn super::server::Attachments>>,
    /// The server side of the control plane (None: not in a cluster).
    pub server_tls: ArcSwapOption<rustls::ServerConfig>,
    /// Frontend: its backends, in the order it tries them.
    backends: Mutex<Vec<BackendRef>>,
    /// Frontend: the index in `backends` it follows now.
    current_backend: AtomicUsize,
    /// This node, for the handshake's admission check (set once it is shared).
    me: std::sync::OnceLock<Weak<ClusterNode>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("name", &self.name)
            .finish()
    }
}

/// Opens the node's cluster state and starts the control plane when
/// `[cluster]` is configured (`None` otherwise): the mutual-TLS listener,
/// and on a node in a cluster its engine or its pull, the probe and the
/// policy follower. The replicated policy is published before this returns.
pub async fn start(
    config: &Config,
    stop: CancellationToken,
) -> anyhow::Result<Option<Arc<ClusterNode>>> {
    let Some(cluster) = &config.cluster else {
        if super::db::path(&config.node.data_dir).exists() {
            warn!(
                "data_dir holds a cluster database but mxgate.toml has no [cluster]: the node does not take part in the cluster"
            );
        }
        return Ok(None);
    };
    let listener = crate::service::sockets::tcp_listener("cluster", cluster.listen)
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|e| anyhow::anyhow!("[cluster] listen: cannot bind {}: {e}", cluster.listen))?;
    let listen = listener.local_addr()?;
    let frontend_file = frontend::load(&config.node.data_dir)?;
    let mut node = ClusterNode::new(
        config.node.name.clone(),
        config.node.data_dir.clone(),
        (listen, cluster.advertise),
        config.local.clone(),
        stop.clone(),
    );
    node.policy_file = config.node.policy.clone();
    let node = Arc::new(node);
    let _ = node.me.set(Arc::downgrade(&node));
    match frontend_file {
        Some(file) => {
            // A database file left from before it joined as a frontend.
            super::db::remove_if_present(&super::db::path(&config.node.data_dir))?;
            let names: Vec<&str> = file.backends.iter().map(|b| b.name.as_str()).collect();
            warn!(backends = %names.join(", "),
                "frontend: started with no cluster state (it is kept in memory only); routing nothing until a backend sends it");
            if let Ok(mut b) = node.backends.lock() {
                *b = file.backends;
            }
            node.set_identity_in_memory(Identity {
                cluster: file.cluster,
                local: file.local,
            });
        }
        None => {
            let db = Db::open(&config.node.data_dir)?;
            let identity = db.identity()?;
            node.db.store(Some(Arc::new(db)));
            if let Some(identity) = identity {
                node.identity.store(Some(Arc::new(identity)));
            }
        }
    }
    node.spawn_policy_follower();
    info!(addr = %listen, "cluster control plane listening");
    tokio::spawn(super::server::serve(listener, node.clone(), stop));
    if let Ok((meta, local)) = node.clustered() {
        node.load_identity(&local, &meta)?;
        if let Some(why) = &local.detached {
            warn!(reason = %why, "this node is no longer in the cluster; its state stays as last synchronised");
            node.open_engine_read_only().await?;
        } else {
            node.run().await?;
        }
        info!(cluster = %meta.cluster_id, cid = local.cid, role = ?local.role, "cluster member");
    }
    Ok(Some(node))
}

impl ClusterNode {
    fn new(
        name: String,
        data_dir: std::path::PathBuf,
        (listen, advertise): (SocketAddr, SocketAddr),
        local: Option<LocalConfig>,
        stop: CancellationToken,
    ) -> ClusterNode {
        ClusterNode {
            name,
            data_dir,
            listen,
            advertise,
            local,
            started: Instant::now(),
            stop,
            db: ArcSwapOption::empty(),
            identity: ArcSwapOption::empty(),
            raft: ArcSwapOption::empty(),
            replica: Arc::new(watch::channel(Arc::new(Replica::default())).0),
            named_leader: Mutex::new(None),
            seen_epoch: AtomicU64::new(0),
            contacts: Mutex::new(HashMap::new()),
            tasks: Mutex::new(None),
            detaching: Mutex::new(()),
            removing: std::sync::atomic::AtomicBool::new(false),
            policy_file: std::path::PathBuf::new(),
            policy: watch::channel(None).0,
            attachments: std::sync::OnceLock::new(),
            server_tls: ArcSwapOption::empty(),
            backends: Mutex::new(Vec::new()),
            current_backend: AtomicUsize::new(0),
            me: std::sync::OnceLock::new(),
        }
    }

    /// A node in no cluster, attached to no daemon (unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str) -> Arc<ClusterNode> {
        let node = Arc::new(ClusterNode::new(
            name.to_string(),
            std::path::PathBuf::new(),
            (
                SocketAddr::from(([127, 0, 0, 1], 0)),
                SocketAddr::from(([127, 0, 0, 1], 7025)),
            ),
            None,
            CancellationToken::new(),
        ));
        let _ = node.me.set(Arc::downgrade(&node));
        node
    }

    /// Starts what a node in a cluster runs: a backend's engine, a
    /// frontend's pull, and on both the probe and the membership watch.
    pub async fn run(self: &Arc<Self>) -> Result<()> {
        let (_, local) = self.clustered()?;
        let token = self.stop.child_token();
        if let Ok(mut slot) = self.tasks.lock()
            && let Some(old) = slot.replace(token.clone())
        {
            old.cancel();
        }
        if local.role == Role::Backend {
            self.start_engine(local.cid).await?;
            tokio::spawn(super::membership::reconcile(self.clone(), token.clone()));
        } else {
            tokio::spawn(super::pull::follow(self.clone(), token.clone()));
        }
        tokio::spawn(super::probe::run(self.clone(), token));
        Ok(())
    }

    async fn start_engine(self: &Arc<Self>, id: u32) -> Result<()> {
        let db = self.db.load_full().ok_or(ClusterError::NotClustered)?;
        let network = engine::network::Network::new(
            self.client_config()?,
            self.advertise.ip(),
            self.name.clone(),
        );
        let handle =
            engine::Handle::start(db.database(), u64::from(id), network, self.replica.clone())
                .await?;
        self.raft.store(Some(Arc::new(handle)));
        Ok(())
    }

    /// A detached backend: its state machine, read for `status` and
    /// `policy show`, without an engine that talks to anyone.
    async fn open_engine_read_only(&self) -> Result<()> {
        if let Some(db) = self.db.load_full() {
            engine::publish_stored(&db.database(), &self.replica)?;
        }
        Ok(())
    }

    /// Stops the engine and the background tasks (leave, delete, detach).
    pub async fn stop_engine(&self) {
        if let Ok(mut slot) = self.tasks.lock()
            && let Some(old) = slot.take()
        {
            old.cancel();
        }
        if let Some(handle) = self.raft.swap(None) {
            handle.shutdown().await;
        }
    }

    /// Before a binary upgrade: stops the engine and closes the database,
    /// so that the successor can open it, and waits (at most `within`)
    /// until the file is free. The replicated state stays as last applied.
    /// False when there was no database (a frontend, or no cluster yet).
    pub async fn release_database(&self, within: Duration) -> Result<bool> {
        if self.db.load().is_none() {
            return Ok(false);
        }
        self.stop_engine().await;
        self.db.store(None);
        let deadline = Instant::now() + within;
        loop {
            // Opening it proves that nothing here holds it any more.
            match Db::open(&self.data_dir) {
                Ok(_) => return Ok(true),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// After a failed upgrade: opens the database again and restarts the
    /// engine, as at start.
    pub async fn reclaim_database(self: &Arc<Self>) -> Result<()> {
        let db = Db::open(&self.data_dir)?;
        self.db.store(Some(Arc::new(db)));
        match self.clustered() {
            Ok((_, local)) if local.detached.is_none() => self.run().await,
            _ => Ok(()),
        }
    }

    /// The engine, when this node is a backend in a cluster.
    pub fn raft(&self) -> Option<Arc<engine::Handle>> {
        self.raft.load_full()
    }

    /// The backend's database.
    pub fn db(&self) -> Result<Arc<Db>> {
        self.db.load_full().ok_or(ClusterError::NotClustered)
    }

    /// The replicated state as last applied.
    pub fn replica(&self) -> Arc<Replica> {
        self.replica.borrow().clone()
    }

    /// A receiver of the replicated state.
    pub fn watch_replica(&self) -> watch::Receiver<Arc<Replica>> {
        self.replica.subscribe()
    }

    /// Frontend: takes the state its backend sent.
    pub(super) fn publish_replica(&self, replica: Replica) {
        self.replica.send_replace(Arc::new(replica));
    }

    /// `[node] policy`: the node's own policy file.
    pub fn policy_file(&self) -> &std::path::Path {
        &self.policy_file
    }

    /// The effective replicated policy as it changes; `None`: the node's
    /// own policy file applies (not clustered, or detached).
    pub fn policy(&self) -> watch::Receiver<Option<Arc<Policy>>> {
        self.policy.subscribe()
    }

    /// Plugs in what serves the `/lft/` routes (the LFT store, once it runs).
    pub fn serve_attachments(&self, attachments: Arc<dyn super::server::Attachments>) {
        let _ = self.attachments.set(attachments);
    }

    /// What serves the `/lft/` routes, when it runs.
    pub fn attachments(&self) -> Option<&Arc<dyn super::server::Attachments>> {
        self.attachments.get()
    }

    /// The master of now: the engine's leader on a backend, the one its
    /// backend named on a frontend.
    pub fn leader(&self) -> Option<Leader> {
        match self.raft() {
            Some(raft) => raft.leader(),
            None => self.named_leader.lock().ok()?.clone(),
        }
    }

    /// The highest epoch this node has seen.
    pub fn epoch(&self) -> u64 {
        let engine = self.raft().map_or(0, |r| r.term());
        engine.max(self.seen_epoch.load(Ordering::Relaxed))
    }

    /// Whether this node is the master and knows a majority follows it:
    /// the engine heard from one lately, and the probe reaches one now.
    pub fn accepts_writes(&self) -> bool {
        let Some(engine) = self.raft() else {
            return false;
        };
        if !engine.has_quorum() {
            return false;
        }
        let metrics = engine.metrics();
        let membership = metrics.membership_config.membership().clone();
        let contacts = self.contacts.lock().map(|c| c.clone()).unwrap_or_default();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let reached = voters
            .iter()
            .filter_map(|id| membership.get_node(id))
            .filter(|peer| {
                peer.name == self.name
                    || contacts
                        .get(&peer.name)
                        .is_some_and(|c| c.error.is_none() && c.at.is_some())
            })
            .count();
        reached > voters.len() / 2
    }

    /// The `x-mxgate-*` header values of this node.
    pub fn sender(&self) -> Sender {
        let leader = self.leader();
        Sender {
            epoch: self.epoch(),
            node: self.name.clone(),
            uptime: self.started.elapsed().as_secs(),
            master: leader.map(|l| (l.name, l.address)),
        }
    }

    /// One control-plane request with this node's identity, from its
    /// advertise address.
    pub async fn call<B: serde::Serialize>(
        self: &Arc<Self>,
        target: &str,
        method: &str,
        path: &str,
        body: Option<&B>,
        limit: std::time::Duration,
    ) -> Result<Answer> {
        transport::call(
            self.client_config()?,
            self.advertise.ip(),
            target,
            method,
            path,
            &self.sender(),
            body,
            limit,
        )
        .await
    }

    /// The cluster record and this node's identity; an error when not clustered.
    pub fn clustered(&self) -> Result<(ClusterMeta, LocalNode)> {
        let identity = self
            .identity
            .load_full()
            .ok_or(ClusterError::NotClustered)?;
        Ok((identity.cluster.clone(), identity.local.clone()))
    }

    /// Like [`Self::clustered`], and this node must still be in the cluster.
    pub fn member(&self) -> Result<(ClusterMeta, LocalNode)> {
        let (meta, local) = self.clustered()?;
        if let Some(why) = &local.detached {
            return Err(ClusterError::Detached(why.clone()));
        }
        Ok((meta, local))
    }

    /// Records who this node is: in the database on a backend, in memory
    /// (and its file, by the caller) on a frontend.
    pub fn set_identity(&self, identity: Identity) -> Result<()> {
        if identity.local.role == Role::Backend {
            let db = match self.db.load_full() {
                Some(db) => db,
                None => {
                    let db = Arc::new(Db::open(&self.data_dir)?);
                    self.db.store(Some(db.clone()));
                    db
                }
            };
            db.set_identity(&identity)?;
        }
        self.identity.store(Some(Arc::new(identity)));
        Ok(())
    }

    fn set_identity_in_memory(&self, identity: Identity) {
        self.identity.store(Some(Arc::new(identity)));
    }

    /// Create or join: forgets any cluster this node was in (its engine,
    /// the engine's log and state; a frontend keeps no database at all)
    /// and takes `identity`, with `replica` as the state it knows so far.
    pub async fn start_over(&self, identity: Identity, replica: Replica) -> Result<()> {
        self.stop_engine().await;
        if identity.local.role == Role::Backend {
            self.set_identity(identity)?;
            engine::store::LogStore::wipe(&self.db()?.database())?;
        } else {
            self.db.store(None);
            super::db::remove_if_present(&super::db::path(&self.data_dir))?;
            self.set_identity(identity)?;
        }
        if let Ok(mut c) = self.contacts.lock() {
            c.clear();
        }
        if let Ok(mut l) = self.named_leader.lock() {
            *l = None;
        }
        self.publish_replica(replica);
        Ok(())
    }

    /// Marks this node as no longer in the cluster, with why.
    pub fn set_detached(&self, why: &str) -> Result<()> {
        let _one_at_a_time = self.detaching.lock();
        let (cluster, mut local) = self.clustered()?;
        local.detached = Some(why.to_string());
        self.set_identity(Identity { cluster, local })
    }

    /// Like [`Self::set_detached`], unless the node is detached already
    /// (a `leave` in progress says why itself).
    pub fn detach_once(&self, why: &str) -> Result<()> {
        let _one_at_a_time = self.detaching.lock();
        let (cluster, mut local) = self.clustered()?;
        if local.detached.is_some() {
            return Ok(());
        }
        local.detached = Some(why.to_string());
        self.set_identity(Identity { cluster, local })
    }

    /// Installs the TLS identity of `local` for the server side.
    pub fn load_identity(&self, local: &LocalNode, meta: &ClusterMeta) -> Result<()> {
        let me: Weak<dyn Admission> = self.me.get().cloned().unwrap_or_else(|| {
            // Not shared yet (unit tests): nobody is admitted.
            Weak::<ClusterNode>::new()
        });
        let config = mutual::server_config(&meta.ca_cert_pem, &local.cert_pem, &local.key_pem, me)?;
        self.server_tls.store(Some(config));
        Ok(())
    }

    /// The client side with this node's identity.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let (meta, local) = self.clustered()?;
        Ok(mutual::client_config(
            &meta.ca_cert_pem,
            &local.cert_pem,
            &local.key_pem,
        )?)
    }

    /// Follows the replicated state: rebuilds and publishes the effective
    /// routing policy on every change, and notices this node's own deletion.
    fn spawn_policy_follower(self: &Arc<Self>) {
        let mut replica = self.watch_replica();
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(node) = node.upgrade() else { return };
                node.refresh_policy();
                node.notice_removal().await;
                drop(node);
                if replica.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Rebuilds the effective routing policy from the replicated state and
    /// publishes it ([`ClusterNode::policy`]).
    pub fn refresh_policy(&self) {
        let replica = self.replica();
        if self.clustered().is_err() || replica.state.meta.is_none() {
            return;
        }
        match super::policy::effective(&replica.state, &self.policy_file) {
            Ok(policy) => {
                self.policy.send_replace(Some(Arc::new(policy)));
            }
            Err(e) => {
                error!(error = %e, "cannot build the replicated policy; the running one stays")
            }
        }
    }

    /// A member whose own record the cluster marked deleted stops taking
    /// part, once the engine's membership no longer holds it (it must help
    /// commit the membership change that removes it) or after
    /// [`REMOVAL_GRACE`].
    async fn notice_removal(self: &Arc<Self>) {
        let Ok((_, local)) = self.member() else {
            return;
        };
        let replica = self.replica();
        let Some(record) = replica.state.members.get(&self.name) else {
            return;
        };
        if !record.deleted || record.uuid.is_empty() || local.cid != record.cid {
            return;
        }
        if self.removing.swap(true, Ordering::Relaxed) {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + REMOVAL_GRACE;
            while tokio::time::Instant::now() < deadline && node.in_membership(local.cid) {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            let why = "deleted from the cluster by the master";
            warn!(
                reason = why,
                "no longer in the cluster; stopping its control plane"
            );
            node.stop_engine().await;
            if let Err(e) = node.detach_once(why) {
                error!(error = %e, "cannot record that this node left the cluster");
            }
            node.removing.store(false, Ordering::Relaxed);
        });
    }

    /// Whether the engine's membership still holds node `cid`.
    fn in_membership(&self, cid: u32) -> bool {
        self.raft().is_some_and(|engine| {
            let metrics = engine.metrics();
            let membership = metrics.membership_config.membership().clone();
            membership.get_node(&u64::from(cid)).is_some()
        })
    }

    /// Frontend: its backends, in the order it tries them.
    pub fn backends(&self) -> Vec<BackendRef> {
        self.backends.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Frontend: sets its backends, in memory and in its file.
    pub fn set_backends(&self, backends: Vec<BackendRef>) -> Result<()> {
        let (cluster, local) = self.clustered()?;
        frontend::save(
            &self.data_dir,
            &FrontendFile {
                cluster,
                local,
                backends: backends.clone(),
            },
        )?;
        if let Ok(mut slot) = self.backends.lock() {
            *slot = backends;
        }
        self.current_backend.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Whether this node is a frontend.
    pub fn is_frontend(&self) -> bool {
        self.clustered()
            .is_ok_and(|(_, local)| local.role == Role::Frontend)
    }

    /// Frontend: the backend it pulls from now (name, address).
    pub fn pull_target(&self) -> Option<BackendRef> {
        let backends = self.backends();
        let i = self.current_backend.load(Ordering::Relaxed);
        backends.get(i % backends.len().max(1)).cloned()
    }

    /// Frontend: moves on to the next backend after a failure.
    pub fn next_backend(&self) {
        let len = self.backends().len().max(1);
        let _ = self
            .current_backend
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| {
                Some((i + 1) % len)
            });
    }

    /// Frontend (`cluster detach`): forgets the cluster: stops pulling and
    /// probing, empties the in-memory state, drops the TLS identity and the
    /// replicated policy (the node routes by its own policy file again).
    pub async fn forget_cluster(&self) -> Result<()> {
        self.stop_engine().await;
        self.identity.store(None);
        self.publish_replica(Replica::default());
        self.server_tls.store(None);
        if let Ok(mut b) = self.backends.lock() {
            b.clear();
        }
        if let Ok(mut l) = self.named_leader.lock() {
            *l = None;
        }
        if let Ok(mut c) = self.contacts.lock() {
            c.clear();
        }
        super::join::remove_files(&self.data_dir);
        // The node's own policy file applies again.
        self.policy
            .send_if_modified(|policy| policy.take().is_some());
        Ok(())
    }

    /// Takes note of an epoch a peer named (frontends: never take state
    /// of an older one).
    pub fn saw_epoch(&self, epoch: u64) {
        self.seen_epoch.fetch_max(epoch, Ordering::Relaxed);
    }
}

impl From<engine::EngineError> for ClusterError {
    fn from(e: engine::EngineError) -> Self {
        ClusterError::Db(e.to_string())
    }
}

impl From<engine::StorageError> for ClusterError {
    fn from(e: engine::StorageError) -> Self {
        ClusterError::Db(e.to_string())
    }
}
