//! Joining and leaving: the node side (`cluster join`, `cluster leave`)
//! and the master side (`POST /join`, `POST /leave`).
//!
//! The master serialises joins with its write lock: it picks the next
//! cluster number, signs the node's CSR, records the member and appends the
//! change in one transaction, then answers with the certificate and its
//! whole log. The node then replaces its cluster state with that log in one
//! transaction and starts following.
//!
//! The master reads a join's body only through [`parse_request`]
//! ([`request`]): every field is checked with the rules of `check-config`
//! and a bad one is refused with HTTP 400 before anything is looked up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use tracing::{info, warn};

pub use super::api::{JoinReply, Joined, Left};
use super::identity::{self, Purpose};
use super::node::ClusterNode;
use super::server::{Refusal, Reply, refuse, to_reply};
use super::transport::{self, Sender};
use super::{
    Change, ClusterError, ClusterMeta, LocalNode, MemberRecord, Result, Role, identifier, time,
};

mod request;
pub use request::{
    JoinField, JoinInvalid, JoinRequest, MAX_CSR_PEM, MAX_VERSION, ValidJoin, parse_request,
};

/// A fresh device id: 12 upper-case hex digits.
pub fn device_id() -> String {
    identity::hex(&uuid::Uuid::new_v4().as_bytes()[..6]).to_uppercase()
}

/// The member record of a node.
#[allow(clippy::too_many_arguments)]
pub fn record(
    name: &str,
    cid: u32,
    role: Role,
    address: &str,
    smtp_upstream: Option<String>,
    gina_upstream: Option<String>,
    issued: &identity::Issued,
    version: &str,
) -> MemberRecord {
    MemberRecord {
        name: name.to_string(),
        cid,
        role,
        device_id: device_id(),
        uuid: uuid::Uuid::new_v4().to_string(),
        address: address.to_string(),
        smtp_upstream,
        gina_upstream,
        cert_fingerprint: issued.fingerprint.clone(),
        cert_serial: issued.serial.clone(),
        comment: None,
        location: None,
        joined: time::now(),
        version: version.to_string(),
        deleted: false,
        backends: Vec::new(),
    }
}

/// Master: `POST /join` from an enrolment identity.
pub async fn serve_join(node: &Arc<ClusterNode>, peer: SocketAddr, body: &[u8]) -> Reply {
    let ValidJoin { request, advertise } =
        parse_request(body).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?;
    let _guard = node.write.lock().await;
    let (meta, local) = node.master().map_err(refuse(StatusCode::CONFLICT))?;
    let ca_key = local.ca_key_pem.as_deref().ok_or_else(|| {
        Refusal(
            StatusCode::CONFLICT,
            "this master holds no cluster CA key and cannot sign certificates".into(),
        )
    })?;
    let members = node
        .db
        .members()
        .map_err(refuse(StatusCode::INTERNAL_SERVER_ERROR))?;
    if let Some(m) = members
        .iter()
        .find(|m| m.name == request.name && !m.deleted)
    {
        return Err(Refusal(
            StatusCode::CONFLICT,
            format!(
                "a member called {} (cluster number {}) exists already; give the new node another [node] name, or `cluster delete {}` first",
                m.name, m.cid, m.name
            ),
        ));
    }
    let ips = [advertise.ip()];
    // Backends are numbered 1, 2, ...; frontends are shown by their
    // backends' numbers (`F(1,2)`) and get 0.
    let cid = match request.role {
        Role::Backend => members.iter().map(|m| m.cid).max().unwrap_or(0) + 1,
        Role::Frontend => 0,
    };
    let issued = identity::sign(
        &meta.ca_cert_pem,
        ca_key,
        &request.csr_pem,
        &request.name,
        &ips,
        Purpose::Node,
    )
    .map_err(refuse(StatusCode::BAD_REQUEST))?;
    let mut member = record(
        &request.name,
        cid,
        request.role,
        &request.address,
        request.smtp_upstream.clone(),
        request.gina_upstream.clone(),
        &issued,
        &request.version,
    );
    if request.role == Role::Frontend {
        // It follows the master it joined through until `add-backend`.
        member.backends = vec![meta.master.clone()];
        member.smtp_upstream = None;
        member.gina_upstream = None;
    }
    node.commit(
        &meta,
        Change::Member {
            member: member.clone(),
        },
    )
    .map_err(refuse(StatusCode::INTERNAL_SERVER_ERROR))?;
    info!(node = %member.name, cid, role = ?member.role, %peer, "node joined the cluster");
    let entries = node
        .db
        .entries_after(0, usize::MAX)
        .map_err(refuse(StatusCode::INTERNAL_SERVER_ERROR))?;
    to_reply(&JoinReply {
        ca_key_pem: (member.role == Role::Backend).then(|| ca_key.to_string()),
        member,
        cert_pem: issued.cert_pem,
        entries,
    })
}

/// Master: `POST /leave` from a member.
pub async fn serve_leave(node: &Arc<ClusterNode>, member: &MemberRecord) -> Reply {
    let _guard = node.write.lock().await;
    let (meta, _) = node.master().map_err(refuse(StatusCode::CONFLICT))?;
    node.commit(
        &meta,
        Change::MemberDeleted {
            name: member.name.clone(),
            reason: "left".into(),
        },
    )
    .map_err(refuse(StatusCode::INTERNAL_SERVER_ERROR))?;
    info!(node = %member.name, "node left the cluster");
    to_reply(&serde_json::json!({ "left": member.name }))
}

/// Node: `cluster join`. Nothing changes locally unless the master accepted.
pub async fn join(
    node: &Arc<ClusterNode>,
    identifier_text: &str,
    password: Option<&str>,
    master: &str,
    role: Role,
) -> Result<Joined> {
    if let (Some(meta), Some(local)) = (node.db.meta()?, node.db.local()?)
        && local.detached.is_none()
    {
        return Err(ClusterError::AlreadyClustered(meta.cluster_id));
    }
    let id = identifier::parse(identifier_text)?;
    let enrolment_key = id.key(password)?;
    let (key_pem, csr_pem) = identity::new_key_and_csr(&node.name)?;
    let config = crate::tls::mutual::client_config(&id.ca_cert_pem, &id.cert_pem, &enrolment_key)?;
    let request = JoinRequest {
        name: node.name.clone(),
        role,
        csr_pem,
        address: node.advertise.to_string(),
        smtp_upstream: node
            .local
            .as_ref()
            .and_then(|l| l.smtp_upstream.as_ref())
            .map(ToString::to_string),
        gina_upstream: node.local.as_ref().and_then(|l| l.gina_upstream.clone()),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let sender = Sender {
        epoch: 0,
        node: node.name.clone(),
        uptime: node.started.elapsed().as_secs(),
        master: None,
    };
    let reply: JoinReply = transport::call(
        config,
        node.advertise.ip(),
        master,
        "POST",
        "/join",
        &sender,
        Some(&request),
        Duration::from_secs(20),
    )
    .await?
    .json(master)?;
    if identity::fingerprint_pem(&reply.cert_pem)? != reply.member.cert_fingerprint {
        return Err(ClusterError::Transport(format!(
            "{master} answered with a certificate that does not match its member record"
        )));
    }
    let meta = reply
        .entries
        .iter()
        .rev()
        .find_map(|e| match &e.change {
            Change::Created { meta } => Some(meta.clone()),
            _ => None,
        })
        .ok_or_else(|| ClusterError::Transport(format!("{master} sent no cluster record")))?;
    if meta.cluster_id != id.cluster_id {
        return Err(ClusterError::Transport(format!(
            "{master} is in cluster {}, the identifier is for {}",
            crate::text::escape(&meta.cluster_id),
            crate::text::escape(&id.cluster_id)
        )));
    }
    let local = LocalNode {
        name: node.name.clone(),
        cid: reply.member.cid,
        role,
        cert_pem: reply.cert_pem.clone(),
        key_pem,
        ca_key_pem: reply.ca_key_pem.clone(),
        detached: None,
    };
    node.stop_follower();
    match role {
        Role::Frontend => {
            node.db.move_to_memory(&node.data_dir)?;
            node.db.reset(&local, &reply.entries)?;
            // The node that accepted the join is the master of now (the
            // `Created` record names the first one).
            let first = super::frontend::BackendRef {
                name: reply
                    .member
                    .backends
                    .first()
                    .cloned()
                    .unwrap_or_else(|| meta.master.clone()),
                address: master.to_string(),
            };
            node.set_backends(vec![first])?;
        }
        Role::Backend => {
            node.db.move_to_disk(&node.data_dir)?;
            node.db.reset(&local, &reply.entries)?;
        }
    }
    node.notify(node.db.head()?);
    let meta = node.db.meta()?.unwrap_or(meta);
    install(node, &local, &meta)?;
    node.start_follower();
    node.start_probe();
    info!(cluster = %meta.cluster_id, cid = local.cid, master = %meta.master, "joined the cluster");
    Ok(Joined {
        cluster_id: meta.cluster_id,
        master: meta.master,
        cid: reply.member.cid,
        device_id: reply.member.device_id,
        uuid: reply.member.uuid,
        entries: reply.entries.len() as u64,
    })
}

/// After create or join: the TLS identity, copies of the certificate and
/// key for tools, and the replicated policy.
pub fn install(node: &ClusterNode, local: &LocalNode, meta: &ClusterMeta) -> Result<()> {
    node.load_identity(local, meta)?;
    write_files(node, local, meta)?;
    node.refresh_policy();
    Ok(())
}

/// `data_dir/cluster-ca.pem`, `cluster-node.pem`, `cluster-node.key` (0600):
/// copies for tools such as curl; the database holds the originals.
fn write_files(node: &ClusterNode, local: &LocalNode, meta: &ClusterMeta) -> Result<()> {
    write_private(&node.data_dir, "cluster-ca.pem", &meta.ca_cert_pem, 0o644)?;
    write_private(&node.data_dir, "cluster-node.pem", &local.cert_pem, 0o644)?;
    write_private(&node.data_dir, "cluster-node.key", &local.key_pem, 0o600)
}

/// Removes the copies [`write_files`] made (a frontend that detaches).
pub fn remove_files(data_dir: &std::path::Path) {
    for name in ["cluster-ca.pem", "cluster-node.pem", "cluster-node.key"] {
        let _ = std::fs::remove_file(data_dir.join(name));
    }
}

/// Writes `data_dir/NAME` with `mode`, replacing it atomically.
pub fn write_private(data_dir: &std::path::Path, name: &str, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io =
        |e: std::io::Error| ClusterError::Db(format!("{}: {e}", data_dir.join(name).display()));
    let tmp = data_dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
    }
    std::fs::rename(&tmp, data_dir.join(name)).map_err(io)
}

/// Node: `cluster leave`: tells the master, keeps the database, stops
/// following. With `force`, a master that cannot be reached (or refuses)
/// is not told: disaster recovery when the master is lost.
pub async fn leave(node: &Arc<ClusterNode>, force: bool) -> Result<Left> {
    let (meta, mut local) = node.clustered()?;
    if let Some(why) = &local.detached {
        return Err(ClusterError::Invalid(format!(
            "this node is no longer in the cluster already ({why})"
        )));
    }
    if local.role == Role::Frontend {
        return Err(ClusterError::Invalid(
            "this node is a frontend: `mxgate cluster detach` leaves the cluster and forgets its state".into(),
        ));
    }
    if meta.master == node.name {
        return Err(ClusterError::Invalid(
            "the master cannot leave; `cluster delete` the other members first, or make another node master".into(),
        ));
    }
    let told = transport::call(
        node.client_config()?,
        node.advertise.ip(),
        &meta.master_address,
        "POST",
        "/leave",
        &node.sender(),
        None::<&()>,
        Duration::from_secs(15),
    )
    .await
    .and_then(|answer| answer.json::<serde_json::Value>(&meta.master));
    let told = match told {
        Ok(_) => true,
        Err(e) if force => {
            warn!(error = %e, "leaving without telling the master (--force)");
            false
        }
        Err(e) => {
            return Err(ClusterError::Transport(format!(
                "{e}\nthe master must be told: try again when it is reachable, run `mxgate cluster delete {}` on the master, \
                 or, if the master is lost, `mxgate cluster leave --force` (docs/cluster.md, disaster recovery)",
                node.name
            )));
        }
    };
    node.stop_follower();
    local.detached = Some(if told {
        "left the cluster".into()
    } else {
        "left the cluster without telling the master (--force)".into()
    });
    node.db.set_local(&local)?;
    Ok(Left {
        left: node.name.clone(),
        master: meta.master,
        told,
    })
}
