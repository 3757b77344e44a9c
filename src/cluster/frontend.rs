//! Frontends (SPEC section 8): nodes for a DMZ that keep no cluster
//! database on disk.
//!
//! A frontend holds the cluster's policy and membership in memory only. It
//! is no part of the consensus engine: it pulls the state from its
//! backends ([`super::pull`]), one at a time in the order of its list, and
//! that backend answers the moment it applies a change, so changes reach
//! the frontend within a second of reaching the backend. When the backend
//! cannot be reached it moves to the next one in its list; `cluster
//! add-backend` lengthens the list (failover without a virtual IP).
//!
//! On disk it keeps only what it needs to prove who it is after a restart:
//! `data_dir/cluster-frontend.json` (mode 0600) with the cluster's CA
//! certificate, its own key and certificate, and its backends' names and
//! addresses. A restart starts with an empty state and fills it from the
//! first backend that answers; while none does, it routes nothing and says
//! so. `cluster detach` leaves the cluster and removes that file too.
//!
//! Frontends are never routing members (they relay to the members, they are
//! not mail gateways themselves), never master, and are shown as `F(1,2)`:
//! the cluster numbers of their backends.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::api::Hello;
pub use super::api::{BackendRef, BackendsChanged, BackendsRequest, Detached};
use super::node::ClusterNode;
use super::server::{Refusal, Reply, refusal_of, to_reply};
use super::{Change, ClusterError, ClusterMeta, LocalNode, MemberRecord, Result, Role, propose};

/// The frontend's file in `data_dir`.
pub const FILE_NAME: &str = "cluster-frontend.json";

/// What a frontend keeps on disk: its identity and where its backends are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrontendFile {
    /// The cluster record as of the join (CA certificate, cluster id).
    pub cluster: ClusterMeta,
    /// This node: its key and certificate.
    pub local: LocalNode,
    /// Its backends, in the order it tries them.
    pub backends: Vec<BackendRef>,
}

/// The path of the file in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Reads the file; `None` when this node is no frontend.
pub fn load(data_dir: &Path) -> Result<Option<FrontendFile>> {
    let file = path(data_dir);
    match std::fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            ClusterError::Invalid(format!(
                "{}: {e}; the file is damaged: run `mxgate cluster detach` or remove it, then join again",
                file.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClusterError::Db(format!("cannot read {}: {e}", file.display()))),
    }
}

/// Writes the file (mode 0600, replaced atomically).
pub fn save(data_dir: &Path, file: &FrontendFile) -> Result<()> {
    let text = serde_json::to_string_pretty(file)?;
    super::join::write_private(data_dir, FILE_NAME, &text, 0o600)
}

/// Removes the file.
pub fn remove(data_dir: &Path) -> Result<()> {
    super::db::remove_if_present(&path(data_dir))
}

/// `F(1,2)`: the cluster numbers of a frontend's backends.
pub fn label(backend_cids: &[u32]) -> String {
    let cids: Vec<String> = backend_cids.iter().map(ToString::to_string).collect();
    format!("F({})", cids.join(","))
}

/// A backend: `POST /backends` from a frontend: records its list of
/// backends (a change of its member record).
pub async fn serve_backends(node: &Arc<ClusterNode>, member: &MemberRecord, body: &[u8]) -> Reply {
    let request: BackendsRequest = serde_json::from_slice(body)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("bad request: {e}")))?;
    if member.role != Role::Frontend {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!("{} is a backend; only frontends have backends", member.name),
        ));
    }
    let replica = node.replica();
    for name in &request.backends {
        if !replica.state.backends().any(|m| &m.name == name) {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                format!("{name} is not a backend of this cluster"),
            ));
        }
    }
    let mut record = replica
        .state
        .members
        .get(&member.name)
        .cloned()
        .unwrap_or_else(|| member.clone());
    record.backends = request.backends;
    let committed = propose::propose(node, Change::Member { member: record })
        .await
        .map_err(|e| refusal_of(&e))?;
    info!(frontend = %member.name, seq = committed.csn.seq, "frontend's backends recorded");
    to_reply(&committed.csn)
}

/// Frontend: `cluster add-backend HOST[:PORT]`: asks that node who it is,
/// has the master record it as one more backend of this frontend, and
/// follows it whenever the earlier ones cannot be reached.
pub async fn add_backend(node: &Arc<ClusterNode>, address: &str) -> Result<BackendsChanged> {
    let (meta, _) = frontend_only(node, "add-backend")?;
    let address = with_default_port(address)?;
    let hello: Hello = node
        .call(
            &address,
            "GET",
            "/hello",
            None::<&()>,
            Duration::from_secs(5),
        )
        .await?
        .json(&address)?;
    let replica = node.replica();
    let members: Vec<&MemberRecord> = replica.state.live_members().collect();
    let record = members
        .iter()
        .find(|m| m.name == hello.name)
        .ok_or_else(|| {
            ClusterError::Invalid(format!(
                "{address} is {}, which this frontend does not know as a member yet; wait until it has the cluster state (`cluster status`)",
                hello.name
            ))
        })?;
    if record.role != Role::Backend {
        return Err(ClusterError::Invalid(format!(
            "{} at {address} is a frontend; a frontend follows backends only",
            hello.name
        )));
    }
    let mut backends = node.backends();
    if backends.iter().any(|b| b.name == record.name) {
        return Err(ClusterError::Invalid(format!(
            "{} is a backend of this frontend already",
            record.name
        )));
    }
    backends.push(BackendRef {
        name: record.name.clone(),
        address: address.clone(),
    });
    let request = BackendsRequest {
        backends: backends.iter().map(|b| b.name.clone()).collect(),
    };
    node.call(
        &address,
        "POST",
        "/backends",
        Some(&request),
        Duration::from_secs(30),
    )
    .await
    .and_then(|a| a.json::<serde_json::Value>(&record.name))
    .map_err(|e| {
        ClusterError::Transport(format!(
            "{e}\nthe cluster must record the new backend; nothing was changed; try again when its master is reachable"
        ))
    })?;
    node.set_backends(backends.clone())?;
    let cids: Vec<u32> = backends
        .iter()
        .filter_map(|b| members.iter().find(|m| m.name == b.name).map(|m| m.cid))
        .collect();
    info!(backend = %record.name, %address, cluster = %meta.cluster_id, "frontend: backend added");
    Ok(BackendsChanged {
        frontend: node.name.clone(),
        backends,
        label: label(&cids),
    })
}

/// Frontend: `cluster detach`: leaves the cluster (telling the master when
/// it can be reached), forgets everything of it, in memory and on disk,
/// and routes by its own policy file again.
pub async fn detach(node: &Arc<ClusterNode>) -> Result<Detached> {
    frontend_only(node, "detach")?;
    let backend = node.pull_target().ok_or(ClusterError::NotClustered)?;
    let told = match node
        .call(
            &backend.address,
            "POST",
            "/leave",
            None::<&()>,
            Duration::from_secs(30),
        )
        .await
        .and_then(|a| a.json::<serde_json::Value>(&backend.name))
    {
        Ok(_) => true,
        Err(e) => {
            warn!(error = %e, backend = %backend.name,
                "detaching without telling the cluster; run `mxgate cluster delete NAME` on a backend");
            false
        }
    };
    node.forget_cluster().await?;
    remove(&node.data_dir)?;
    info!(
        "detached from the cluster; the cluster state is gone and the node routes by its own policy file"
    );
    Ok(Detached {
        detached: node.name.clone(),
        told,
    })
}

fn frontend_only(node: &ClusterNode, command: &str) -> Result<(ClusterMeta, LocalNode)> {
    let (meta, local) = node.clustered()?;
    if local.role != Role::Frontend {
        return Err(ClusterError::Invalid(format!(
            "`cluster {command}` is for frontends; this node is a backend (use `cluster leave`)"
        )));
    }
    Ok((meta, local))
}

/// `HOST[:PORT]` as `host:port` (port 7025 by default).
fn with_default_port(address: &str) -> Result<String> {
    let (host, port) = super::transport::host_port(address.trim())?;
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_lists_backend_numbers() {
        assert_eq!(super::label(&[1, 2]), "F(1,2)");
        assert_eq!(super::label(&[3]), "F(3)");
        assert_eq!(super::label(&[]), "F()");
    }

    #[test]
    fn default_port_is_added() {
        for (given, want) in [
            ("127.0.0.1", "127.0.0.1:7025"),
            ("127.0.0.1:7100", "127.0.0.1:7100"),
            ("gw2.example", "gw2.example:7025"),
            ("gw2.example:7026", "gw2.example:7026"),
        ] {
            assert_eq!(super::with_default_port(given).ok().as_deref(), Some(want));
        }
        assert!(super::with_default_port(" ").is_err());
    }
}
