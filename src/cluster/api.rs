//! The control plane's wire types: the JSON bodies and `x-mxgate-*`
//! headers exchanged between nodes, and the requests and answers of
//! `mxgate cluster` on the admin socket. Data only: the handlers that
//! make and read them live in the other modules of `cluster` (and the
//! command line in `crate::cli::cluster`); this file imports none of them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Csn, LogEntry, MemberRecord, Role};

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
    /// The master's whole log (the snapshot).
    pub entries: Vec<LogEntry>,
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
    /// Log entries taken over.
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

/// `GET /changes` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Changes {
    /// The master's epoch.
    pub epoch: u64,
    /// The master's head.
    pub head: u64,
    /// The entries are the whole log: replace the local one.
    pub reset: bool,
    /// Entries after the requested sequence.
    pub entries: Vec<LogEntry>,
}

/// `GET /hello` answer: who this node is and the master it knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The answering node.
    pub name: String,
    /// The highest epoch it knows.
    pub epoch: u64,
    /// The master of that epoch.
    pub master: String,
    /// Its address.
    pub master_address: String,
}

/// `POST /promise` and `POST /handover` body: the candidate's log position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Candidacy {
    /// The epoch the candidate wants to become master of (at a handover:
    /// the lowest it accepts, above every epoch it has seen or promised).
    pub epoch: u64,
    /// The candidate's head.
    pub head: u64,
    /// The epoch of its last entry.
    pub last_epoch: u64,
}

/// What `cluster promote` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Promoted {
    /// The new epoch.
    pub epoch: u64,
    /// This node.
    pub master: String,
    /// The master before.
    pub previous: String,
    /// True when the previous master handed over (nothing lost).
    pub handover: bool,
    /// Backends that promised the epoch (this node included).
    pub promises: Vec<String>,
    /// Backends in the cluster.
    pub backends: usize,
    /// The CSN sequence of the promotion.
    pub seq: u64,
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
    /// Changes this node discarded when it resynchronised with the master
    /// of a later epoch (a returning old master's unreplicated changes).
    pub discarded: Vec<serde_json::Value>,
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
    /// Its own change log in brief (head, SHA-256 of every entry, runs by
    /// epoch and origin): nodes hold the same log when head and digest match.
    #[serde(default)]
    pub log: Option<LogSummary>,
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
    /// Change-log entries in the local database.
    pub local_entries: u64,
    /// Change-log entries in the remote database.
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

/// A node's change log in brief.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSummary {
    /// The last entry's position (None: empty log).
    pub head: Option<LogPosition>,
    /// Number of entries.
    pub entries: u64,
    /// Lower-case hex SHA-256 over the entries in order, each as its JSON
    /// (the form stored and replicated) followed by a newline.
    pub sha256: String,
    /// The entries grouped by (epoch, origin), in log order.
    pub epochs: Vec<EpochRun>,
}

/// A log position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    /// Epoch of the entry.
    pub epoch: u64,
    /// Its sequence number.
    pub seq: u64,
}

/// Consecutive entries of one epoch written by one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRun {
    /// The epoch.
    pub epoch: u64,
    /// The node that wrote them (the master of that epoch).
    pub origin: String,
    /// Sequence of the first entry of the run.
    pub first: u64,
    /// Sequence of the last entry of the run.
    pub last: u64,
}
