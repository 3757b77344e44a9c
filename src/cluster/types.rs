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

/// The cluster as a whole: fixed at `create`. (Who is master, at which
/// epoch, is the engine's: [`super::node::Leader`].)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// Random id of the cluster, fixed at `create`.
    pub cluster_id: String,
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

impl LocalNode {
    /// A backend's identity with placeholder keys (unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str) -> LocalNode {
        LocalNode {
            name: name.into(),
            cid: 1,
            role: Role::Backend,
            cert_pem: "cert".into(),
            key_pem: "key".into(),
            ca_key_pem: None,
            detached: None,
        }
    }
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

/// Change sequence number (SPEC section 1): the Raft term and index of
/// the change's entry, where and when it was proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Csn {
    /// Epoch (Raft term) of the master that committed the change.
    pub epoch: u64,
    /// Position in the log (Raft index).
    pub seq: u64,
    /// Node the change was made on.
    pub origin: String,
    /// Unix time.
    pub time: u64,
}

/// One replicated change.
// Made once per proposal and stored as JSON: boxing the member record
// would buy nothing.
#[allow(clippy::large_enum_variant)]
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
}

impl Change {
    /// A one-line description for `cluster replication` and the log.
    pub fn summary(&self) -> String {
        match self {
            Change::Created { meta } => format!("cluster {} created", meta.cluster_id),
            Change::Member { member } => format!("member {} ({})", member.name, member.cid),
            Change::MemberDeleted { name, reason } => format!("member {name} {reason}"),
            Change::Policy { version: 0, .. } => "a new policy version".to_string(),
            Change::Policy { version, .. } => format!("policy version {version}"),
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

/// The current replicated policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// Version number.
    pub version: u64,
    /// `cluster.toml` text.
    pub text: String,
}
