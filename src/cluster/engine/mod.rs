//! The cluster's consensus engine: openraft (0.9, pinned) with mxgate's
//! type configuration, its storage over the backend's redb database
//! ([`store`]), its network over the mutual-TLS control plane
//! ([`network`]) and the running engine ([`handle`]). What is replicated
//! is a [`Proposal`]: one change of the cluster's state ([`state`]) with
//! where and when it was proposed; the engine hands each committed one to
//! the state machine, which answers with what it [`Applied`]. The
//! cluster's commands (in the rest of `cluster`) only propose changes
//! ([`super::propose`]) and read the state.

pub mod force;
pub mod handle;
pub mod network;
pub mod state;
pub mod store;

pub use handle::{Handle, Leader};
pub use state::Replica;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use super::Change;

/// Who a voter is: its node name and control-plane address (`host:port`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// `[node] name`.
    pub name: String,
    /// `[cluster] advertise`.
    pub address: String,
}

/// One change proposed to the cluster, with where and when: with the
/// entry's term and index it is the change's CSN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The node that proposed it.
    pub origin: String,
    /// Unix time of the proposal (the proposer's clock).
    pub time: u64,
    /// What changes.
    pub change: Change,
}

/// What applying a committed proposal did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The policy version now in force, when the proposal made one.
    pub policy_version: Option<u64>,
    /// The member's cluster number, when the proposal recorded a member.
    pub cid: Option<u32>,
    /// Why the state machine left the state unchanged (a policy version
    /// or a member name taken meanwhile); the proposer may retry.
    pub conflict: Option<String>,
}

openraft::declare_raft_types!(
    /// openraft's types for mxgate's control plane.
    pub Raft:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = Peer,
        Entry = openraft::Entry<Raft>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A storage error of the engine.
pub type StorageError = openraft::StorageError<u64>;

/// Why the engine cannot run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Its storage failed.
    #[error("consensus storage: {0}")]
    Storage(#[from] Box<StorageError>),
    /// Its configuration is invalid (a bug).
    #[error("consensus configuration: {0}")]
    Config(String),
    /// It stopped.
    #[error("consensus engine stopped: {0}")]
    Fatal(String),
}

impl From<StorageError> for EngineError {
    fn from(e: StorageError) -> Self {
        EngineError::Storage(Box::new(e))
    }
}

/// Publishes the state machine as stored in `db` (a detached node's last
/// state, read without running the engine).
pub fn publish_stored(
    db: &std::sync::Arc<redb::Database>,
    publish: &store::Publisher,
) -> Result<(), EngineError> {
    let machine = store::StateMachine::open(db.clone())?;
    publish.send_replace(std::sync::Arc::new(machine.replica()));
    Ok(())
}

/// How often the master tells the backends it is alive.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(500);
/// A backend that heard nothing from the master for the master's lease
/// (openraft: the longest election timeout, 3 s) plus a random time in
/// this range stands for election: a dead master is replaced within about
/// 4.5 to 6 s on a LAN (measured: median 5.4 s, `benches/cluster-failover.sh`;
/// the issue asks for 15 s at most).
pub const ELECTION_TIMEOUT: std::ops::Range<std::time::Duration> =
    std::time::Duration::from_millis(1500)..std::time::Duration::from_millis(3000);
/// A snapshot is taken after this many applied entries since the last one;
/// the log before it is then purged but for [`KEEP_AFTER_SNAPSHOT`] entries
/// (so a backend a little behind catches up from the log, not a snapshot).
pub const SNAPSHOT_EVERY: u64 = 500;
/// Entries kept in the log below the last snapshot.
pub const KEEP_AFTER_SNAPSHOT: u64 = 100;
/// Size of one snapshot chunk sent to a backend that is far behind.
pub const CHUNK: u64 = 256 * 1024;
/// Largest body of a vote, append or snapshot request: 64 entries of at
/// most a policy's size each, or one snapshot chunk with its framing.
pub const MAX_RAFT_BODY: usize = 16 * 1024 * 1024;

/// openraft's configuration for the control plane, validated.
pub fn config() -> Result<openraft::Config, Box<openraft::ConfigError>> {
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    openraft::Config {
        cluster_name: "mxgate".into(),
        heartbeat_interval: millis(HEARTBEAT),
        election_timeout_min: millis(ELECTION_TIMEOUT.start),
        election_timeout_max: millis(ELECTION_TIMEOUT.end),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: KEEP_AFTER_SNAPSHOT,
        // Requests between nodes are at most MAX_RAFT_BODY bytes.
        snapshot_max_chunk_size: CHUNK,
        max_payload_entries: 64,
        // The probe turns elections on while this node reaches a majority
        // (`crate::cluster::probe`): a pre-vote of sorts.
        enable_elect: false,
        ..openraft::Config::default()
    }
    .validate()
    .map_err(Box::new)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_engine_configuration_is_valid() {
        let config = super::config().expect("a valid openraft configuration");
        assert!(config.heartbeat_interval < config.election_timeout_min);
        assert_eq!(
            config.max_in_snapshot_log_to_keep,
            super::KEEP_AFTER_SNAPSHOT
        );
    }
}
