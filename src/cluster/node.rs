//! The running control plane of one node: its database, identity, the
//! master's write lock and change notification, what the master knows of
//! its followers, and what a follower knows of its master.
//!
//! The effective routing policy is published on a `watch` channel
//! ([`ClusterNode::policy`]): the daemon follows it; the control plane
//! knows nothing of the daemon.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::db::Db;
use super::frontend::{self, BackendRef, FrontendFile};
use super::transport::{self, Answer, MasterHint, Sender};
use super::{Change, ClusterError, ClusterMeta, LocalNode, LogEntry, Result, Role, time};
use crate::config::{Config, LocalConfig, Policy};
use crate::tls::mutual::{self, Admission};

/// What the master last heard from a follower.
#[derive(Debug, Clone)]
pub struct PeerState {
    /// Sequence the follower had applied when it last asked.
    pub acked: u64,
    /// Unix time of the last request.
    pub contact: u64,
    /// Its version.
    pub version: String,
    /// Its uptime then.
    pub uptime: u64,
}

/// What a follower knows of its master.
#[derive(Debug, Clone, Default)]
pub struct FollowState {
    /// Master's head at the last answer.
    pub remote_head: u64,
    /// Unix time of the last answer.
    pub contact: Option<u64>,
    /// The last failure, cleared by the next success.
    pub error: Option<String>,
}

/// What this node last heard from another member (any control-plane answer).
#[derive(Debug, Clone, Default)]
pub struct Contact {
    /// Unix time of the last answer.
    pub at: Option<u64>,
    /// The last failure, cleared by the next answer.
    pub error: Option<String>,
}

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
    /// The database.
    pub db: Db,
    /// When the daemon started.
    pub started: Instant,
    /// Serialises every change on the master (joins included).
    pub write: tokio::sync::Mutex<()>,
    head: watch::Sender<u64>,
    /// Master: followers by name.
    pub peers: Mutex<HashMap<String, PeerState>>,
    /// Follower: the master.
    pub follow: Mutex<FollowState>,
    follower: Mutex<Option<CancellationToken>>,
    /// A master of a higher epoch than the database's, as a peer told it.
    pub hint: Mutex<Option<MasterHint>>,
    /// Last contact with every other member, by name (the probe loop).
    pub contacts: Mutex<HashMap<String, Contact>>,
    probe: Mutex<Option<CancellationToken>>,
    /// Daemon shutdown.
    pub stop: CancellationToken,
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

/// How often every node asks every other member for its (epoch, master).
pub const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

async fn probe(node: Arc<ClusterNode>, token: CancellationToken) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
        let Ok((_, local)) = node.clustered() else {
            continue;
        };
        if local.detached.is_some() {
            return;
        }
        let Ok(members) = node.db.members() else {
            continue;
        };
        // The position rides along, so every node (the master included)
        // knows how far each member, frontends too, has applied the log.
        let hello = format!("/hello?after={}", node.db.head().unwrap_or(0));
        let mut calls = tokio::task::JoinSet::new();
        for m in members
            .into_iter()
            .filter(|m| !m.deleted && m.name != node.name)
        {
            let node = node.clone();
            let hello = hello.clone();
            calls.spawn(async move {
                let answer = node
                    .call(&m.address, "GET", &hello, None::<&()>, PROBE_EVERY)
                    .await;
                let mut contact = node
                    .contacts
                    .lock()
                    .ok()
                    .and_then(|c| c.get(&m.name).cloned())
                    .unwrap_or_default();
                match answer {
                    Ok(a) if a.status == 200 => {
                        // The node it follows answers again after a cut: a
                        // long-poll sent before the heal may wait for TCP to
                        // retransmit; start a fresh one at once.
                        let healed = contact.error.is_some();
                        contact.at = Some(time::now());
                        contact.error = None;
                        if healed
                            && node.master().is_err()
                            && node.follow_target().is_some_and(|(name, _)| name == m.name)
                        {
                            info!(peer = %m.name, "reachable again; restarting the change stream");
                            node.start_follower();
                        }
                    }
                    Ok(a) => contact.error = Some(transport::error_text(&a.body, a.status)),
                    Err(e) => contact.error = Some(e.to_string()),
                }
                if let Ok(mut c) = node.contacts.lock() {
                    c.insert(m.name, contact);
                }
            });
        }
        while calls.join_next().await.is_some() {}
        export_metrics(&node);
    }
}

/// `mxgate_cluster_epoch` and `mxgate_cluster_replication_lag_seconds`.
fn export_metrics(node: &ClusterNode) {
    let Ok(Some(meta)) = node.db.meta() else {
        return;
    };
    crate::metrics::cluster_epoch(meta.epoch);
    let now = time::now();
    if node.master().is_ok() {
        let peers = node.peers.lock().map(|p| p.clone()).unwrap_or_default();
        for (name, peer) in peers {
            if let Some(lag) = super::status::lag(node, peer.acked, now) {
                crate::metrics::cluster_replication_lag(&name, lag);
            }
        }
        crate::metrics::cluster_replication_lag(&node.name, 0);
    } else {
        crate::metrics::cluster_replication_lag(&node.name, follower_lag(node, now));
    }
}

/// A follower's replication lag in seconds: 0 while it hears from the
/// master and holds its head; otherwise the time since it last heard from
/// the master (its long-poll or the probe), or, never having heard, the age
/// of its last change. A follower that cannot reach the master (a failed
/// long-poll, or a failed probe while the long-poll still hangs on a dead
/// connection) is not in step, whatever head it last saw.
pub fn follower_lag(node: &ClusterNode, now: u64) -> u64 {
    let follow = node.follow.lock().map(|f| f.clone()).unwrap_or_default();
    let probe = node
        .known_master()
        .and_then(|k| node.contacts.lock().ok()?.get(&k.master).cloned())
        .unwrap_or_default();
    let last_change = node.db.last_entry().ok().flatten().map(|e| e.csn.time);
    let head = node.db.head().unwrap_or(0);
    lag_of(&follow, &probe, head, last_change, now)
}

fn lag_of(
    follow: &FollowState,
    probe: &Contact,
    head: u64,
    last_change: Option<u64>,
    now: u64,
) -> u64 {
    let cut_off = follow.error.is_some() || probe.error.is_some();
    match [follow.contact, probe.at].into_iter().flatten().max() {
        Some(_) if !cut_off && head >= follow.remote_head => 0,
        Some(at) => now.saturating_sub(at),
        None => now.saturating_sub(last_change.unwrap_or(now)),
    }
}

/// Opens the database and starts the control plane when `[cluster]` is
/// configured (`None` otherwise): the mutual-TLS listener, and the follower
/// on a backend. A clustered node's replicated policy is published before
/// this returns ([`ClusterNode::policy`]).
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
    let listener = tokio::net::TcpListener::bind(cluster.listen)
        .await
        .map_err(|e| anyhow::anyhow!("[cluster] listen: cannot bind {}: {e}", cluster.listen))?;
    let listen = listener.local_addr()?;
    let frontend_file = frontend::load(&config.node.data_dir)?;
    let db = match &frontend_file {
        // A frontend keeps no cluster database on disk: its state lives in
        // memory and comes from its backends after every start.
        Some(file) => {
            let db = Db::open_in_memory()?;
            db.seed(&file.local, &file.cluster)?;
            // A database file left from before it joined as a frontend.
            super::db::remove_if_present(&super::db::path(&config.node.data_dir))?;
            let names: Vec<&str> = file.backends.iter().map(|b| b.name.as_str()).collect();
            warn!(backends = %names.join(", "),
                "frontend: started with no cluster state (it is kept in memory only); routing nothing until a backend sends it");
            db
        }
        None => Db::open(&config.node.data_dir)?,
    };
    let head = db.head()?;
    let mut node = ClusterNode::new(
        config.node.name.clone(),
        config.node.data_dir.clone(),
        (listen, cluster.advertise),
        config.local.clone(),
        (db, head),
        stop.clone(),
        frontend_file.map(|f| f.backends).unwrap_or_default(),
    );
    node.policy_file = config.node.policy.clone();
    let node = Arc::new(node);
    let _ = node.me.set(Arc::downgrade(&node));
    info!(addr = %listen, "cluster control plane listening");
    tokio::spawn(super::server::serve(listener, node.clone(), stop));
    if let (Some(meta), Some(local)) = (node.db.meta()?, node.db.local()?) {
        node.load_identity(&local, &meta)?;
        node.refresh_policy();
        if let Some(why) = &local.detached {
            warn!(reason = %why, "this node is no longer in the cluster; its database stays as last synchronised");
        } else {
            if meta.master != node.name || local.role == Role::Frontend {
                node.start_follower();
            }
            node.start_probe();
        }
        info!(cluster = %meta.cluster_id, master = %meta.master, cid = local.cid, "cluster member");
    }
    Ok(Some(node))
}

impl ClusterNode {
    /// A node over `db` that is attached to no daemon (unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, db: Db) -> ClusterNode {
        ClusterNode::new(
            name.to_string(),
            std::path::PathBuf::new(),
            (
                SocketAddr::from(([127, 0, 0, 1], 0)),
                SocketAddr::from(([127, 0, 0, 1], 7025)),
            ),
            None,
            (db, 0),
            CancellationToken::new(),
            Vec::new(),
        )
    }

    /// The running state around `db` (whose log head is `head`): nothing
    /// followed or probed yet.
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        data_dir: std::path::PathBuf,
        (listen, advertise): (SocketAddr, SocketAddr),
        local: Option<LocalConfig>,
        (db, head): (Db, u64),
        stop: CancellationToken,
        backends: Vec<BackendRef>,
    ) -> ClusterNode {
        ClusterNode {
            name,
            data_dir,
            listen,
            advertise,
            local,
            db,
            started: Instant::now(),
            write: tokio::sync::Mutex::new(()),
            head: watch::channel(head).0,
            peers: Mutex::new(HashMap::new()),
            follow: Mutex::new(FollowState::default()),
            follower: Mutex::new(None),
            hint: Mutex::new(None),
            contacts: Mutex::new(HashMap::new()),
            probe: Mutex::new(None),
            stop,
            policy_file: std::path::PathBuf::new(),
            policy: watch::channel(None).0,
            attachments: std::sync::OnceLock::new(),
            server_tls: ArcSwapOption::empty(),
            backends: Mutex::new(backends),
            current_backend: AtomicUsize::new(0),
            me: std::sync::OnceLock::new(),
        }
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

    /// The `x-mxgate-*` header values of this node.
    pub fn sender(&self) -> Sender {
        let known = self.known_master();
        Sender {
            epoch: known.as_ref().map_or(0, |k| k.epoch),
            node: self.name.clone(),
            uptime: self.started.elapsed().as_secs(),
            master: known.map(|k| (k.master, k.master_address)),
        }
    }

    /// The master of the highest epoch this node knows: a peer's hint when
    /// it is above the database's epoch, else the database's master.
    pub fn known_master(&self) -> Option<MasterHint> {
        let meta = self.db.meta().ok().flatten();
        let hint = self.hint.lock().ok().and_then(|h| h.clone());
        match (meta, hint) {
            (Some(m), Some(h)) if h.epoch > m.epoch => Some(h),
            (Some(m), _) => Some(MasterHint {
                epoch: m.epoch,
                master: m.master,
                master_address: m.master_address,
            }),
            (None, h) => h,
        }
    }

    /// The highest epoch this node has seen: its database's, a peer's hint,
    /// or one it promised to a candidate. Changes of a lower epoch are refused.
    pub fn seen_epoch(&self) -> u64 {
        let known = self.known_master().map_or(0, |k| k.epoch);
        let promised = self.db.promise().ok().flatten().map_or(0, |p| p.epoch);
        known.max(promised)
    }

    /// Takes note of a peer's (epoch, master): a higher epoch than known
    /// makes a master stop accepting writes at once and every node follow
    /// the new master (a returning old master resynchronises).
    pub fn learn(self: &Arc<Self>, hint: &MasterHint) {
        let Ok(Some(meta)) = self.db.meta() else {
            return;
        };
        if hint.master == self.name {
            return;
        }
        let current = self.known_master().map_or(0, |k| k.epoch);
        if hint.epoch <= current.max(meta.epoch) {
            return;
        }
        if let Ok(mut slot) = self.hint.lock() {
            *slot = Some(hint.clone());
        }
        if meta.master == self.name {
            warn!(epoch = hint.epoch, master = %hint.master, address = %hint.master_address,
                "a master of a higher epoch exists; this node stops accepting changes and steps down");
        } else {
            info!(epoch = hint.epoch, master = %hint.master, address = %hint.master_address,
                "learned a new master from a peer; following it");
        }
        if matches!(self.db.local(), Ok(Some(l)) if l.detached.is_none()) {
            self.start_follower();
        }
    }

    /// One control-plane request with this node's identity, from its
    /// advertise address; learns the peer's (epoch, master) from the answer.
    pub async fn call<B: serde::Serialize>(
        self: &Arc<Self>,
        target: &str,
        method: &str,
        path: &str,
        body: Option<&B>,
        limit: std::time::Duration,
    ) -> Result<Answer> {
        let answer = transport::call(
            self.client_config()?,
            self.advertise.ip(),
            target,
            method,
            path,
            &self.sender(),
            body,
            limit,
        )
        .await?;
        if let Some(hint) = &answer.hint {
            self.learn(hint);
        }
        Ok(answer)
    }

    /// The cluster record and this node's identity; an error when not clustered.
    pub fn clustered(&self) -> Result<(ClusterMeta, LocalNode)> {
        match (self.db.meta()?, self.db.local()?) {
            (Some(meta), Some(local)) => Ok((meta, local)),
            _ => Err(ClusterError::NotClustered),
        }
    }

    /// Like [`Self::clustered`], and this node must be the master.
    pub fn master(&self) -> Result<(ClusterMeta, LocalNode)> {
        let (meta, local) = self.clustered()?;
        if let Some(why) = &local.detached {
            return Err(ClusterError::Invalid(format!(
                "this node is no longer in the cluster ({why}); join again to take part"
            )));
        }
        if meta.master != self.name {
            return Err(ClusterError::NotMaster(format!(
                "{} ({})",
                meta.master, meta.master_address
            )));
        }
        if let Some(known) = self.known_master()
            && known.epoch > meta.epoch
        {
            return Err(ClusterError::NotMaster(format!(
                "{} ({}) of epoch {}; this node stepped down from epoch {}",
                known.master, known.master_address, known.epoch, meta.epoch
            )));
        }
        if let Some(p) = self.db.promise()?
            && p.epoch > meta.epoch
        {
            return Err(ClusterError::NotMaster(format!(
                "{} (mastership is being handed over to it at epoch {})",
                p.candidate, p.epoch
            )));
        }
        Ok((meta, local))
    }

    /// Like [`Self::master`] but also while a handover is in progress:
    /// the master still serves its log to followers then.
    pub fn serving_master(&self) -> Result<(ClusterMeta, LocalNode)> {
        match self.master() {
            Err(ClusterError::NotMaster(m)) if m.contains("being handed over") => self.clustered(),
            other => other,
        }
    }

    /// A backend (the master included) that is in the cluster: it serves
    /// its copy of the log to frontends.
    pub fn serving_backend(&self) -> Result<(ClusterMeta, LocalNode)> {
        let (meta, local) = self.clustered()?;
        if let Some(why) = &local.detached {
            return Err(ClusterError::Invalid(format!(
                "this node is no longer in the cluster ({why})"
            )));
        }
        if local.role != Role::Backend {
            return Err(ClusterError::Invalid(
                "this node is a frontend; frontends follow backends only".into(),
            ));
        }
        Ok((meta, local))
    }

    /// Master: appends and applies a change (the caller holds [`Self::write`]),
    /// wakes the long-polls and applies the policy here.
    pub fn commit(&self, meta: &ClusterMeta, change: Change) -> Result<LogEntry> {
        let summary = change.summary();
        let entry = self
            .db
            .append(meta.epoch, &self.name, time::now(), change)?;
        info!(seq = entry.csn.seq, epoch = entry.csn.epoch, change = %summary, "cluster change committed");
        self.notify(entry.csn.seq);
        self.refresh_policy();
        Ok(entry)
    }

    /// Wakes every long-poll waiting for changes after `head`.
    pub fn notify(&self, head: u64) {
        self.head.send_replace(head);
    }

    /// A receiver of the log head.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
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

    /// Rebuilds the effective routing policy from the database and
    /// publishes it ([`ClusterNode::policy`]).
    pub fn refresh_policy(&self) {
        match super::policy::effective(&self.db, &self.policy_file) {
            Ok(Some(policy)) => {
                self.policy.send_replace(Some(Arc::new(policy)));
            }
            Ok(None) => {}
            Err(e) => {
                error!(error = %e, "cannot build the replicated policy; the running one stays")
            }
        }
    }

    /// Starts following the master (replacing a running follower).
    pub fn start_follower(self: &Arc<Self>) {
        let token = self.stop.child_token();
        if let Ok(mut slot) = self.follower.lock()
            && let Some(old) = slot.replace(token.clone())
        {
            old.cancel();
        }
        tokio::spawn(super::replicate::follow(self.clone(), token));
    }

    /// Starts (or restarts) the probe loop: every [`PROBE_EVERY`], a
    /// `GET /hello` to every other member, which records the last contact
    /// and learns a higher epoch from any of them.
    pub fn start_probe(self: &Arc<Self>) {
        let token = self.stop.child_token();
        if let Ok(mut slot) = self.probe.lock()
            && let Some(old) = slot.replace(token.clone())
        {
            old.cancel();
        }
        tokio::spawn(probe(self.clone(), token));
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
        matches!(self.db.local(), Ok(Some(l)) if l.role == Role::Frontend)
    }

    /// Whom the follower asks for changes: the master on a backend; on a
    /// frontend, the backend it follows now (name, address).
    pub fn follow_target(&self) -> Option<(String, String)> {
        if self.is_frontend() {
            let backends = self.backends();
            let i = self.current_backend.load(Ordering::Relaxed);
            return backends
                .get(i % backends.len().max(1))
                .map(|b| (b.name.clone(), b.address.clone()));
        }
        self.known_master().map(|k| (k.master, k.master_address))
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

    /// Frontend (`cluster detach`): forgets the cluster: stops following and
    /// probing, empties the in-memory state, drops the TLS identity and the
    /// replicated policy (the node routes by its own policy file again).
    pub fn forget_cluster(&self) -> Result<()> {
        self.stop_follower();
        if let Ok(mut slot) = self.probe.lock()
            && let Some(old) = slot.take()
        {
            old.cancel();
        }
        self.db.clear_memory()?;
        self.server_tls.store(None);
        if let Ok(mut b) = self.backends.lock() {
            b.clear();
        }
        if let Ok(mut h) = self.hint.lock() {
            *h = None;
        }
        if let Ok(mut p) = self.peers.lock() {
            p.clear();
        }
        if let Ok(mut c) = self.contacts.lock() {
            c.clear();
        }
        if let Ok(mut f) = self.follow.lock() {
            *f = FollowState::default();
        }
        super::join::remove_files(&self.data_dir);
        // The node's own policy file applies again.
        self.policy
            .send_if_modified(|policy| policy.take().is_some());
        Ok(())
    }

    /// Stops following.
    pub fn stop_follower(&self) {
        if let Ok(mut slot) = self.follower.lock()
            && let Some(old) = slot.take()
        {
            old.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Contact, FollowState, lag_of};

    #[test]
    fn a_follower_that_cannot_reach_its_master_lags() {
        let follow = |contact, remote_head, error: Option<&str>| FollowState {
            remote_head,
            contact,
            error: error.map(str::to_owned),
        };
        let probe = |at, error: Option<&str>| Contact {
            at,
            error: error.map(str::to_owned),
        };
        let now = 1000;
        for (f, p, head, want) in [
            // In step: heard from the master, holds its head.
            (follow(Some(990), 7, None), probe(Some(998), None), 7, 0),
            // Behind: since the last contact.
            (follow(Some(990), 9, None), probe(Some(998), None), 7, 2),
            // Cut off, the long-poll not failed yet: the probe says so.
            (
                follow(Some(940), 7, None),
                probe(Some(950), Some("no route")),
                7,
                50,
            ),
            // Cut off, the long-poll failed.
            (
                follow(Some(960), 7, Some("timeout")),
                probe(None, None),
                7,
                40,
            ),
            // Never heard: the age of the last change.
            (follow(None, 0, None), probe(None, Some("refused")), 7, 100),
        ] {
            assert_eq!(lag_of(&f, &p, head, Some(900), now), want, "{f:?} {p:?}");
        }
    }
}
