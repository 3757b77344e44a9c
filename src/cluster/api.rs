//! The control plane's wire types: the JSON bodies and `x-mxgate-*`
//! headers exchanged between nodes, and the requests and answers of
//! `mxgate cluster` on the admin socket. Data only: the handlers that
//! make and read them live in the other modules of `cluster` (and the
//! command line in `crate::cli::cluster`); this file imports none of them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use super::engine::state::{ChangeRecord, Replica};
use super::{Change, Csn, MemberRecord, Role};

/// The control-plane protocol this build speaks. Version 2 is the first
/// on the consensus engine; a peer is served when its version is within
/// one of this one ([`protocol_compatible`]), so that nodes can be
/// upgraded one at a time.
pub const PROTOCOL: u32 = 2;
/// The oldest protocol this build talks to at all.
pub const MIN_PROTOCOL: u32 = 2;

/// Header (every request and answer): the sender's protocol version.
pub const H_PROTOCOL: &str = "x-mxgate-protocol";

/// Whether a peer speaking `theirs` is served: adjacent versions
/// interoperate, older than [`MIN_PROTOCOL`] never.
pub fn protocol_compatible(theirs: u32) -> bool {
    theirs >= MIN_PROTOCOL && theirs.abs_diff(PROTOCOL) <= 1
}

/// What kind of refusal an answer carries: decisions are made on this,
/// never on the text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// Any other refusal.
    #[default]
    Refused,
    /// This node is not the master (and forwards no further).
    NotMaster,
    /// The master has no majority; nothing was changed.
    NoMajority,
    /// The change was proposed but its outcome is unknown.
    OutcomeUnknown,
    /// The state changed meanwhile; try again.
    Conflict,
    /// The candidate's log is behind the master's.
    Behind,
    /// The peer speaks an incompatible protocol.
    Protocol,
    /// The caller is no member (deleted, left, or unknown).
    NotMember,
    /// The request is malformed.
    BadRequest,
}

/// One of openraft's requests between backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftRpc {
    /// `POST /raft/vote`.
    Vote,
    /// `POST /raft/append`.
    Append,
    /// `POST /raft/snapshot`: one chunk of a snapshot.
    Snapshot,
}

impl RaftRpc {
    /// Its path.
    pub fn path(self) -> &'static str {
        match self {
            RaftRpc::Vote => "/raft/vote",
            RaftRpc::Append => "/raft/append",
            RaftRpc::Snapshot => "/raft/snapshot",
        }
    }
}

/// `POST /propose`: a change forwarded to the master.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProposeRequest {
    /// The change.
    pub change: Change,
}

/// `GET /state?after=INDEX`: what a frontend pulls from its backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateReply {
    /// The epoch the backend knows.
    pub epoch: u64,
    /// The master of that epoch, when known (name, address).
    pub master: Option<(String, String)>,
    /// The state as the backend last applied it.
    pub replica: Replica,
}

/// `POST /handover`: a backend asks the master to let it take over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandoverRequest {
    /// The candidate's last log index.
    pub last_index: u64,
}

/// Header: the sender's epoch.
pub const H_EPOCH: &str = "x-mxgate-epoch";

/// Header: the sender's node name.
pub const H_NODE: &str = "x-mxgate-node";

/// Header: the sender's mxgate version.
pub const H_VERSION: &str = "x-mxgate-version";

/// Header: the sender's uptime in seconds.
pub const H_UPTIME: &str = "x-mxgate-uptime";

/// Header (requests and answers): the master of the sender's epoch.
pub const H_MASTER: &str = "x-mxgate-master";

/// Header (requests and answers): that master's control-plane address.
pub const H_MASTER_ADDRESS: &str = "x-mxgate-master-address";

/// Who is master at which epoch, as a peer told it (headers of every
/// control-plane request and answer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MasterHint {
    /// The epoch.
    pub epoch: u64,
    /// The master's name.
    pub master: String,
    /// Its control-plane address.
    pub master_address: String,
}

/// Who is calling: the values of the `x-mxgate-*` headers.
#[derive(Debug, Clone)]
pub struct Sender {
    /// Epoch the sender has seen.
    pub epoch: u64,
    /// Node name.
    pub node: String,
    /// Uptime in seconds.
    pub uptime: u64,
    /// The master the sender knows at `epoch` (name, address).
    pub master: Option<(String, String)>,
}

/// One `mxgate cluster` request (the `cluster` variant of the admin request).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClusterRequest {
    /// Make this node master of a new cluster.
    Create,
    /// Write an identifier.
    IdentifierExport {
        /// Encrypt the key with this password; `None` needs `insecure_no_password`.
        password: Option<String>,
        /// Explicit consent to an unencrypted key.
        #[serde(default)]
        insecure_no_password: bool,
        /// Also limit joins to these addresses.
        #[serde(default)]
        allow_ip: Vec<IpAddr>,
    },
    /// Limit joins to source addresses.
    IdentifierProtect {
        /// Allowed addresses.
        allow_ip: Vec<IpAddr>,
        /// Lift the limit.
        clear: bool,
    },
    /// Invalidate every identifier exported before.
    IdentifierRotate,
    /// Join a cluster.
    Join {
        /// `clusterid.txt` text.
        identifier: String,
        /// Its password.
        password: Option<String>,
        /// Master `host[:port]`.
        master: String,
        /// Role.
        role: Role,
    },
    /// The members table.
    Status,
    /// Last CSN per backend.
    Replication,
    /// Remove a member (name or cluster number).
    Delete {
        /// Name or CID.
        member: String,
    },
    /// Leave the cluster.
    Leave {
        /// Leave even when the master cannot be told.
        #[serde(default)]
        force: bool,
    },
    /// Replace the policy.
    PolicyApply {
        /// File name (for errors).
        name: String,
        /// Its text.
        text: String,
    },
    /// The current policy.
    PolicyShow,
    /// Set an injection ACL.
    InjectSet {
        /// Member.
        member: String,
        /// Targets.
        to: Vec<String>,
    },
    /// Set LFT sync targets.
    LftSet {
        /// Member.
        member: String,
        /// Targets.
        to: Vec<String>,
    },
    /// Make this backend the master (epoch + 1).
    Promote {
        /// Hand over from a reachable master, or promote without a majority.
        #[serde(default)]
        force: bool,
    },
    /// Follow the master that HOST[:PORT] names.
    Sync {
        /// A node's control-plane address.
        master: String,
    },
    /// Frontend: use one more backend.
    AddBackend {
        /// Its control-plane address.
        backend: String,
    },
    /// Frontend: leave and forget the cluster.
    Detach,
    /// Set a member's comment and location.
    MemberSet {
        /// Name or CID.
        member: String,
        /// New comment (empty: remove).
        comment: Option<String>,
        /// New location (empty: remove).
        location: Option<String>,
    },
}

/// `POST /join` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// `[node] name`.
    pub name: String,
    /// Requested role.
    pub role: Role,
    /// CSR of the node's own key (PEM).
    pub csr_pem: String,
    /// `[cluster] advertise`.
    pub address: String,
    /// `[local] smtp_upstream`.
    pub smtp_upstream: Option<String>,
    /// `[local] gina_upstream`.
    pub gina_upstream: Option<String>,
    /// mxgate version.
    pub version: String,
}

/// `POST /join` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinReply {
    /// The new member's record.
    pub member: MemberRecord,
    /// Its certificate.
    pub cert_pem: String,
    /// The cluster's state as the master applied it: the new node admits
    /// the members' certificates by it until its engine catches up.
    pub replica: Replica,
    /// The cluster CA key, for backends only (sent over mutual TLS), so
    /// that any backend can be promoted and sign joins.
    #[serde(default)]
    pub ca_key_pem: Option<String>,
}

/// What `cluster join` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joined {
    /// Cluster id.
    pub cluster_id: String,
    /// Master name.
    pub master: String,
    /// This node's number.
    pub cid: u32,
    /// Device id.
    pub device_id: String,
    /// UUID.
    pub uuid: String,
    /// The master's last applied log index at the join.
    pub entries: u64,
}

/// What `cluster leave` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Left {
    /// This node.
    pub left: String,
    /// The master.
    pub master: String,
    /// Whether the master was told (not with `--force` and the master unreachable).
    pub told: bool,
}

/// `GET /hello` answer: who this node is, the master it knows, how far
/// it applied the state, its version and clock (the probe of every node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The answering node.
    pub name: String,
    /// The highest epoch it knows.
    pub epoch: u64,
    /// The master of that epoch ("" when none is known).
    pub master: String,
    /// Its address.
    pub master_address: String,
    /// The last log index it applied.
    #[serde(default)]
    pub applied: u64,
    /// Its last log index (a backend's).
    #[serde(default)]
    pub last_index: u64,
    /// Its mxgate version.
    #[serde(default)]
    pub version: String,
    /// Its control-plane protocol version.
    #[serde(default)]
    pub protocol: u32,
    /// Its uptime in seconds.
    #[serde(default)]
    pub uptime: u64,
    /// Its clock: Unix time in milliseconds.
    #[serde(default)]
    pub clock_ms: u64,
}

/// What `cluster promote` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Promoted {
    /// The new epoch.
    pub epoch: u64,
    /// This node.
    pub master: String,
    /// The master before ("" when there was none).
    pub previous: String,
    /// `--force`: the backends it kept (itself and the reachable ones).
    #[serde(default)]
    pub kept: Vec<String>,
    /// `--force`: the backends it removed (fenced).
    #[serde(default)]
    pub removed: Vec<String>,
    /// Voting backends now.
    pub backends: usize,
}

/// One backend a frontend follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRef {
    /// Its `[node] name`.
    pub name: String,
    /// Its control-plane address.
    pub address: String,
}

/// `POST /backends` body: the frontend's new list of backends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendsRequest {
    /// Backend names, in the order the frontend tries them.
    pub backends: Vec<String>,
}

/// What `cluster add-backend` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendsChanged {
    /// This frontend.
    pub frontend: String,
    /// Its backends now.
    pub backends: Vec<BackendRef>,
    /// `F(1,2)`.
    pub label: String,
}

/// What `cluster detach` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detached {
    /// This node.
    pub detached: String,
    /// Whether the master was told (it removes the frontend's record).
    pub told: bool,
}

/// `cluster status --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Current epoch.
    pub epoch: u64,
    /// Master's name.
    pub master: String,
    /// One row per member, by cluster number.
    pub members: Vec<MemberStatus>,
    /// Entries this node had appended that a new master truncated (never
    /// committed, never acknowledged to anyone).
    pub discarded: Vec<Discarded>,
    /// The node that answered (the one `cluster status` ran on).
    #[serde(default)]
    pub node: String,
    /// Its own epoch (of its database).
    #[serde(default)]
    pub node_epoch: u64,
    /// Whether it accepts changes now (it is the master and has seen no
    /// higher epoch).
    #[serde(default)]
    pub accepts_writes: bool,
    /// Its own replicated state in brief: nodes hold the same state when
    /// these match.
    #[serde(default)]
    pub log: Option<LogSummary>,
    /// Warnings about the cluster (clocks apart, versions apart).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One row of `cluster status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Node name.
    pub name: String,
    /// Cluster number.
    pub cid: u32,
    /// Device id.
    pub device_id: String,
    /// UUID.
    pub uuid: String,
    /// Control-plane address.
    pub address: String,
    /// `master`, `backend` or `frontend`.
    pub role: String,
    /// `A` in sync, `S` syncing, `ERROR: reason`.
    pub state: String,
    /// mxgate version.
    pub version: String,
    /// Uptime in seconds (as last reported).
    pub uptime_s: u64,
    /// Last contact or change, RFC 3339 UTC.
    pub last_update: Option<String>,
    /// Log index the node that made the table holds.
    pub local_entries: u64,
    /// Log index the member holds.
    pub remote_entries: u64,
    /// Frontends: the backends they follow, by name.
    pub frontend_of: Vec<String>,
    /// Backends: the frontends that follow them, by name.
    pub backend_of: Vec<String>,
    /// Free text.
    pub comment: Option<String>,
    /// Free text.
    pub location: Option<String>,
    /// Last answer from this member to the node that made the table, RFC 3339 UTC.
    #[serde(default)]
    pub last_contact: Option<String>,
    /// Age in seconds of the oldest change the member has not applied (0: in sync).
    #[serde(default)]
    pub replication_lag_s: Option<u64>,
    /// Its clock minus the master's, in milliseconds, as the master's
    /// probe measured it.
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
    /// Its control-plane protocol version.
    #[serde(default)]
    pub protocol: Option<u32>,
}

/// `cluster replication --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replication {
    /// The master's last CSN.
    pub head: Option<Csn>,
    /// Per backend: the last CSN it applied.
    pub backends: Vec<BackendPosition>,
}

/// One backend's position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendPosition {
    /// Node name.
    pub name: String,
    /// Cluster number.
    pub cid: u32,
    /// Last applied CSN (origin node and time included).
    pub last_csn: Option<Csn>,
    /// Last contact, RFC 3339 UTC.
    pub last_contact: Option<String>,
}

/// The cluster line of `mxgate status`: this node's own view, no network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Cluster id.
    pub cluster_id: String,
    /// This node's role: `master`, `backend` or `frontend`.
    pub role: String,
    /// Epoch of this node's copy of the log.
    pub epoch: u64,
    /// The master it knows.
    pub master: String,
    /// `A` in sync, `S` syncing, `ERROR: reason` (detached, or the master
    /// or backend cannot be reached).
    pub state: String,
    /// Log entries held.
    pub entries: u64,
    /// Replicated policy version held (0: none yet).
    pub policy_version: u64,
}

/// A node's replicated state in brief: nodes hold the same state when
/// these match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSummary {
    /// The last entry applied (None: nothing yet).
    pub head: Option<LogPosition>,
    /// Its index: entries applied.
    pub entries: u64,
    /// Lower-case hex SHA-256 of the state as JSON (members, policy,
    /// identifier state, recent changes).
    pub sha256: String,
    /// The last changes applied, oldest first, with their CSNs.
    pub recent: Vec<ChangeRecord>,
}

/// A log position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    /// Epoch (term) of the entry.
    pub epoch: u64,
    /// Its index.
    pub seq: u64,
}

/// A change a node had appended but a new master truncated: it was never
/// committed, so never acknowledged to anyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discarded {
    /// Where it was in the log.
    pub csn: Csn,
    /// What it was.
    pub summary: String,
    /// Unix time it was truncated.
    pub discarded_at: u64,
    /// The epoch of the master whose log replaced it.
    pub by_epoch: u64,
}
