//! The cluster's consensus engine (issue 17, in progress): openraft's type
//! configuration for mxgate and its storage over the node's redb database
//! ([`store`]). What is replicated is a [`Proposal`]: one change of the
//! cluster's state ([`state`]) with where and when it was proposed; the
//! engine hands each committed one to the state machine, which answers
//! with what it [`Applied`].
//!
//! Not wired in yet: the control plane still runs on its own log
//! ([`super::replicate`]); the network over the mutual-TLS control plane
//! and the commands come next.

pub mod state;
pub mod store;

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
