//! The cluster control plane: identity, membership, the replicated state
//! and the mutual-TLS API between nodes (SPEC section 8).
//!
//! Data flow: the backends run a consensus engine (openraft, [`engine`]);
//! every change is proposed to it through one path ([`propose`]) and is
//! done once a majority of the backends holds it. Each backend's state
//! machine applies committed changes and publishes the state; frontends
//! pull it from a backend ([`pull`]). After a change to policy or
//! membership, every node rebuilds its effective routing policy
//! ([`policy`]) and the daemon swaps it in like a SIGHUP reload.
//!
//! Files: [`engine`] (type configuration, storage, network), [`db`] (the
//! backend's database and identity), [`identity`] (CA, node keys,
//! signing), [`identifier`] (`clusterid.txt`), [`transport`] (the
//! client), [`server`] (control-plane routes and authorisation),
//! [`propose`], [`join`], [`membership`] (voters, promote, removal),
//! [`probe`] (contact, versions, clocks), [`pull`] and [`frontend`] (DMZ
//! nodes), [`policy`], [`status`], [`admin`] (admin-socket handlers),
//! [`node`] (the running state). The `mxgate cluster` subcommands are in
//! `crate::cli::cluster`.

pub mod admin;
mod admission;
pub mod api;
pub mod db;
pub mod engine;
pub mod frontend;
pub mod identifier;
pub mod identity;
pub mod join;
pub mod membership;
pub mod node;
pub mod policy;
pub mod probe;
pub mod propose;
pub mod pull;
pub mod server;
pub mod status;
pub use crate::time;
pub mod transport;
mod types;

pub use node::{ClusterNode, start};
pub use types::*;

/// Everything that can go wrong in the control plane; every message says
/// what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The embedded database failed.
    #[error("cluster database: {0}; check data_dir (disk full? permissions?)")]
    Db(String),
    /// The node is not in a cluster.
    #[error(
        "this node is not in a cluster; run `mxgate cluster create` or `mxgate cluster join` first"
    )]
    NotClustered,
    /// `[cluster]` is missing from mxgate.toml.
    #[error(
        "mxgate.toml has no [cluster] section; add one with listen and advertise, then restart the daemon"
    )]
    NoClusterSection,
    /// Already in a cluster.
    #[error("this node is already in cluster {0}; run `mxgate cluster leave` first")]
    AlreadyClustered(String),
    /// A change was attempted on a backend.
    #[error("this node is not the master; run the command on the master {0}")]
    NotMaster(String),
    /// The database was written by an earlier build.
    #[error(
        "{} was written by an earlier build of mxgate (before the openraft control plane) and is not migrated; stop mxgate, remove that file (the node then is in no cluster), start it again and join the cluster anew",
        .0.display()
    )]
    OldFormat(std::path::PathBuf),
    /// The node left or was removed.
    #[error("this node is no longer in the cluster ({0}); join again to take part")]
    Detached(String),
    /// The master knows it has no majority: refused before the log.
    #[error(
        "refused, nothing was changed: {reachable} of {backends} backends are reachable and a change needs {needed}{}; bring the others back (check `mxgate cluster status`), or if they are lost for good run `mxgate cluster promote --force` (docs/cluster.md, disaster recovery)",
        if .missing.is_empty() { String::new() } else { format!(" (no answer from {})", .missing.join(", ")) }
    )]
    NoMajority {
        /// Backends that answered, this one included.
        reachable: usize,
        /// Voting backends.
        backends: usize,
        /// A majority of them.
        needed: usize,
        /// Who did not answer.
        missing: Vec<String>,
    },
    /// The change was proposed but not confirmed in time.
    #[error(
        "the outcome of {0} is unknown: the master lost its majority while the change was in flight; it was not confirmed and may still apply when the backends return. Check `mxgate cluster status` and `mxgate cluster policy show` before trying again"
    )]
    OutcomeUnknown(String),
    /// The state changed meanwhile (a policy version, a name).
    #[error("{0}; nothing was changed, try again")]
    Conflict(String),
    /// A peer speaks an incompatible control-plane protocol.
    #[error("{0}")]
    Protocol(String),
    /// Certificates, keys, CSRs.
    #[error("certificate: {0}")]
    Crypto(String),
    /// The identifier file.
    #[error("identifier: {0}")]
    Identifier(String),
    /// Wrong password for the identifier.
    #[error(
        "wrong password for the identifier (or the file is damaged); check the password and try again"
    )]
    Password,
    /// A request or an answer between nodes failed (the peer may have
    /// seen the request).
    #[error("{0}")]
    Transport(String),
    /// A request could not be sent at all (no connection): the peer never
    /// saw it.
    #[error("{0}")]
    NotSent(String),
    /// The peer refused the request. The reason is the peer's text: shown
    /// escaped, so it cannot forge a line of the CLI's output; decisions
    /// are made on the code.
    #[error("refused by {peer}: {}", crate::text::escape(.reason))]
    Refused {
        /// Who refused.
        peer: String,
        /// What kind of refusal.
        code: api::RefusalCode,
        /// Why.
        reason: String,
    },
    /// Bad operator input.
    #[error("{0}")]
    Invalid(String),
    /// The peer refused this node's certificate at the handshake as revoked.
    #[error(
        "{peer} refuses this node's certificate as revoked: this node was deleted from the cluster, or its identifier was invalidated by `cluster identifier rotate`; join again with a new identifier"
    )]
    Revoked {
        /// Who refused.
        peer: String,
    },
    /// The peer does not know this node's certificate (yet).
    #[error(
        "{peer} does not admit this node's certificate: it is not a member there, or the change that adds this node has not reached it yet"
    )]
    NotAdmitted {
        /// Who refused.
        peer: String,
    },
}

impl From<crate::tls::mutual::MutualTlsError> for ClusterError {
    fn from(e: crate::tls::mutual::MutualTlsError) -> Self {
        ClusterError::Crypto(e.to_string())
    }
}

impl From<redb::Error> for ClusterError {
    fn from(e: redb::Error) -> Self {
        ClusterError::Db(e.to_string())
    }
}

macro_rules! db_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ClusterError {
            fn from(e: $t) -> Self {
                ClusterError::Db(e.to_string())
            }
        }
    )*};
}
db_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

/// Result of the control plane.
pub type Result<T> = std::result::Result<T, ClusterError>;
