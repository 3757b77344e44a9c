//! The records of the cluster database and of the wire, shared by both.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A node's role (SPEC section 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds the replicated database.
    Backend,
    /// Keeps the cluster state in memory only; follows its backends.
    Frontend,
}

/// What this database says about the cluster as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// Random id of the cluster, fixed at `create`.
    pub cluster_id: String,
    /// Raised by every promote (issue 7); 1 after `create`.
    pub epoch: u64,
    /// Name of the master.
    pub master: String,
    /// Control-plane address of the master (`host:port`).
    pub master_address: String,
    /// The cluster CA certificate (PEM).
    pub ca_cert_pem: String,
}

/// This node's own identity in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalNode {
    /// `[node] name`.
    pub name: String,
    /// Cluster number.
    pub cid: u32,
    /// Role.
    pub role: Role,
    /// Its certificate (PEM), signed by the cluster CA.
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM); made here, never sent anywhere.
    pub key_pem: String,
    /// The CA private key (PEM): on the node that created the cluster and on
    /// every backend that joined it (sent over mutual TLS at join), so any
    /// backend can be promoted and sign joins.
    #[serde(default)]
    pub ca_key_pem: Option<String>,
    /// Set when the node left or was deleted: it no longer follows.
    #[serde(default)]
    pub detached: Option<String>,
}

/// One cluster member as the master recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// `[node] name`.
    pub name: String,
    /// Cluster number (backends 1, 2, ...).
    pub cid: u32,
    /// Role.
    pub role: Role,
    /// Device id shown in `cluster status`.
    pub device_id: String,
    /// UUID.
    pub uuid: String,
    /// Control-plane address (`[cluster] advertise`).
    pub address: String,
    /// `[local] smtp_upstream` advertised at join.
    pub smtp_upstream: Option<String>,
    /// `[local] gina_upstream` advertised at join.
    pub gina_upstream: Option<String>,
    /// SHA-256 of the node certificate (DER), hex.
    pub cert_fingerprint: String,
    /// Serial number of the node certificate, hex.
    pub cert_serial: String,
    /// Free text.
    #[serde(default)]
    pub comment: Option<String>,
    /// Free text.
    #[serde(default)]
    pub location: Option<String>,
    /// Unix time of the join.
    pub joined: u64,
    /// mxgate version at join.
    #[serde(default)]
    pub version: String,
    /// Deleted or left: its certificate is refused.
    #[serde(default)]
    pub deleted: bool,
    /// Frontends: the backends it follows, by name, in the order it tries them.
    #[serde(default)]
    pub backends: Vec<String>,
}

impl MemberRecord {
    /// A backend record with placeholder identity fields (unit tests
    /// change what they look at with struct update syntax).
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, cid: u32) -> MemberRecord {
        MemberRecord {
            name: name.into(),
            cid,
            role: Role::Backend,
            device_id: format!("D{cid}"),
            uuid: "u".into(),
            address: "127.0.0.2:7025".into(),
            smtp_upstream: None,
            gina_upstream: None,
            cert_fingerprint: format!("fp{cid}"),
            cert_serial: "01".into(),
            comment: None,
            location: None,
            joined: 0,
            version: "0".into(),
            deleted: false,
            backends: Vec::new(),
        }
    }
}

/// Who may join, and with which identifiers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifierState {
    /// Raised by `identifier rotate`; enrolment certificates of older generations are refused.
    pub generation: u64,
    /// Fingerprints (SHA-256 hex) of enrolment certificates exported in this generation.
    pub enrolment_fingerprints: Vec<String>,
    /// Fingerprints of enrolment certificates of older generations (refused with a clear reason).
    #[serde(default)]
    pub retired_fingerprints: Vec<String>,
    /// When not empty, joins are accepted only from these source addresses.
    pub allowed_ips: Vec<IpAddr>,
}

/// Change sequence number (SPEC section 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Csn {
    /// Epoch of the master that made the change.
    pub epoch: u64,
    /// Position in the log, from 1.
    pub seq: u64,
    /// Node the change was made on.
    pub origin: String,
    /// Unix time.
    pub time: u64,
}

/// One replicated change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The cluster was created (the first entry of every log).
    Created {
        /// The cluster's meta record.
        meta: ClusterMeta,
    },
    /// A member joined or was edited.
    Member {
        /// The full record.
        member: MemberRecord,
    },
    /// A member was deleted or left.
    MemberDeleted {
        /// Its name.
        name: String,
        /// "deleted" or "left".
        reason: String,
    },
    /// A new policy version (`cluster.toml` text).
    Policy {
        /// Version number, from 1.
        version: u64,
        /// The file's text.
        text: String,
    },
    /// Identifier generation or join restrictions changed.
    Identifier {
        /// The new state.
        state: IdentifierState,
    },
    /// A node became master at a new epoch (`cluster promote`): the first
    /// entry of every epoch after the first.
    Promoted {
        /// The new epoch.
        epoch: u64,
        /// The new master's name.
        master: String,
        /// Its control-plane address.
        master_address: String,
    },
}

impl Change {
    /// A one-line description for `cluster replication` and the log.
    pub fn summary(&self) -> String {
        match self {
            Change::Created { meta } => format!("cluster created by {}", meta.master),
            Change::Member { member } => format!("member {} ({})", member.name, member.cid),
            Change::MemberDeleted { name, reason } => format!("member {name} {reason}"),
            Change::Policy { version, .. } => format!("policy version {version}"),
            Change::Promoted { epoch, master, .. } => {
                format!("{master} promoted to master at epoch {epoch}")
            }
            Change::Identifier { state } => format!(
                "identifier generation {}, {} exported, joins from {}",
                state.generation,
                state.enrolment_fingerprints.len(),
                if state.allowed_ips.is_empty() {
                    "anywhere".to_string()
                } else {
                    state
                        .allowed_ips
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                }
            ),
        }
    }
}

/// A log entry: the change and its CSN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Where and when.
    pub csn: Csn,
    /// What.
    pub change: Change,
}

/// A change a node had committed (as master) or applied that the master of a
/// later epoch does not hold: replaced at resynchronisation (SPEC section 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discarded {
    /// Its CSN.
    pub csn: Csn,
    /// What it was.
    pub summary: String,
    /// Unix time it was discarded.
    pub discarded_at: u64,
    /// The epoch of the master whose log replaced it.
    pub by_epoch: u64,
}

/// A promise given to a candidate master (`cluster promote`): this node
/// accepts nothing from an epoch below `epoch` and promises `epoch` to
/// `candidate` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promise {
    /// The epoch promised.
    pub epoch: u64,
    /// To whom.
    pub candidate: String,
}

/// The current replicated policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// Version number.
    pub version: u64,
    /// `cluster.toml` text.
    pub text: String,
}
