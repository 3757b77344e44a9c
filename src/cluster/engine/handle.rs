//! The running engine of a backend: openraft's `Raft` over the node's
//! database and the control-plane network, and what the rest of the
//! control plane reads from it (the master and epoch, whether a majority
//! follows, the replication progress).

use std::sync::Arc;

use openraft::{RaftMetrics, ServerState};
use redb::Database;

use super::network::Network;
use super::store::{LogStore, Publisher, StateMachine};
use super::{EngineError, Peer, Raft};

/// Who is master, at which epoch (the engine's current leader and term).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The epoch: the Raft term.
    pub epoch: u64,
    /// The master's name.
    pub name: String,
    /// Its control-plane address.
    pub address: String,
}

/// A backend's engine.
pub struct Handle {
    raft: openraft::Raft<Raft>,
    id: u64,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle({})", self.id)
    }
}

impl Handle {
    /// Starts the engine of node `id` over `db`, publishing every apply on
    /// `publish`.
    pub async fn start(
        db: Arc<Database>,
        id: u64,
        network: Network,
        publish: Publisher,
    ) -> Result<Handle, EngineError> {
        let config = Arc::new(super::config().map_err(|e| EngineError::Config(e.to_string()))?);
        let log = LogStore::open(db.clone())?;
        let machine = StateMachine::open(db)?.publishing(publish);
        let raft = openraft::Raft::new(id, config, network, log, machine)
            .await
            .map_err(|e| EngineError::Fatal(e.to_string()))?;
        Ok(Handle { raft, id })
    }

    /// openraft's handle.
    pub fn raft(&self) -> &openraft::Raft<Raft> {
        &self.raft
    }

    /// This node's id (its cluster number).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The engine's metrics now.
    pub fn metrics(&self) -> RaftMetrics<u64, Peer> {
        self.raft.metrics().borrow().clone()
    }

    /// The current epoch (Raft term).
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The master of the current term, when one is known.
    pub fn leader(&self) -> Option<Leader> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let id = metrics.current_leader?;
        let peer = metrics.membership_config.membership().get_node(&id)?;
        Some(Leader {
            epoch: metrics.current_term,
            name: peer.name.clone(),
            address: peer.address.clone(),
        })
    }

    /// Whether this node is the master and heard from a majority within
    /// the longest election timeout.
    pub fn has_quorum(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let limit = u64::try_from(super::ELECTION_TIMEOUT.end.as_millis()).unwrap_or(u64::MAX);
        metrics.state == ServerState::Leader
            && metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| ms <= limit)
    }

    /// Whether this node is the master (it may not know yet that it lost
    /// its majority).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Stops the engine.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
