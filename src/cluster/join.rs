//! Joining and leaving: the node side (`cluster join`, `cluster leave`)
//! and the backend side (`POST /join`, `POST /leave`).
//!
//! A backend signs the node's CSR and proposes its member record; the
//! state machine gives a new backend the next free cluster number, and
//! the engine serialises joins. Once the record is committed the node gets
//! its certificate and the state as applied then; it admits the members
//! by that state until its engine has caught up: the master adds it as a
//! learner, sends it the snapshot and makes it a voter
//! ([`super::membership`]).
//!
//! The master reads a join's body only through [`parse_request`]
//! ([`request`]): every field is checked with the rules of `check-config`
//! and a bad one is refused with HTTP 400 before anything is looked up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use tracing::{info, warn};

use super::api::RefusalCode;
pub use super::api::{JoinReply, Joined, Left};
use super::db::Identity;
use super::identity::{self, Purpose};
use super::node::ClusterNode;
use super::server::{Refusal, Reply, refuse, to_reply};
use super::transport::{self, Sender};
use super::{
    Change, ClusterError, ClusterMeta, LocalNode, MemberRecord, Result, Role, identifier, propose,
    time,
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

/// A backend: `POST /join` from an enrolment identity. Any backend
/// signs the node's certificate; the member record is proposed (and so
/// forwarded to the master) and the answer sent once it is committed.
pub async fn serve_join(node: &Arc<ClusterNode>, peer: SocketAddr, body: &[u8]) -> Reply {
    let ValidJoin { request, advertise } = parse_request(body).map_err(|e| {
        Refusal::coded(
            StatusCode::BAD_REQUEST,
            RefusalCode::BadRequest,
            e.to_string(),
        )
    })?;
    let (meta, local) = node.member().map_err(refuse(StatusCode::CONFLICT))?;
    let ca_key = local.ca_key_pem.as_deref().ok_or_else(|| {
        Refusal::new(
            StatusCode::CONFLICT,
            "this node holds no cluster CA key and cannot sign certificates; join through a backend".into(),
        )
    })?;
    if let Some(m) = node
        .replica()
        .state
        .live_members()
        .find(|m| m.name == request.name)
    {
        return Err(Refusal::coded(
            StatusCode::CONFLICT,
            RefusalCode::Conflict,
            format!(
                "a member called {} (cluster number {}) exists already; give the new node another [node] name, or `cluster delete {}` first",
                m.name, m.cid, m.name
            ),
        ));
    }
    let issued = identity::sign(
        &meta.ca_cert_pem,
        ca_key,
        &request.csr_pem,
        &request.name,
        &[advertise.ip()],
        Purpose::Node,
    )
    .map_err(refuse(StatusCode::BAD_REQUEST))?;
    // Backends get the next free number from the state machine; frontends
    // are shown by their backends' numbers (`F(1,2)`) and get 0.
    let mut member = record(
        &request.name,
        0,
        request.role,
        &request.address,
        request.smtp_upstream.clone(),
        request.gina_upstream.clone(),
        &issued,
        &request.version,
    );
    if request.role == Role::Frontend {
        // It follows the backend it joined through until `add-backend`.
        member.backends = vec![node.name.clone()];
        member.smtp_upstream = None;
        member.gina_upstream = None;
    }
    let committed = propose::propose(
        node,
        Change::Member {
            member: member.clone(),
        },
    )
    .await
    .map_err(|e| super::server::refusal_of(&e))?;
    member.cid = committed.applied.cid.unwrap_or(member.cid);
    info!(node = %member.name, cid = member.cid, role = ?member.role, %peer, "node joined the cluster");
    to_reply(&JoinReply {
        ca_key_pem: (member.role == Role::Backend).then(|| ca_key.to_string()),
        member,
        cert_pem: issued.cert_pem,
        replica: (*node.replica()).clone(),
    })
}

/// A backend: `POST /leave` from a member: marks it as left and takes it
/// out of the engine's membership.
pub async fn serve_leave(node: &Arc<ClusterNode>, member: &MemberRecord) -> Reply {
    super::membership::remove(node, member, "left")
        .await
        .map_err(|e| super::server::refusal_of(&e))?;
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
    if let Ok((meta, local)) = node.clustered()
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
        Duration::from_secs(30),
    )
    .await?
    .json(master)?;
    if identity::fingerprint_pem(&reply.cert_pem)? != reply.member.cert_fingerprint {
        return Err(ClusterError::Transport(format!(
            "{master} answered with a certificate that does not match its member record"
        )));
    }
    let meta = reply
        .replica
        .state
        .meta
        .clone()
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
    let through = reply.member.backends.first().cloned();
    let entries = reply.replica.index();
    node.start_over(
        Identity {
            cluster: meta.clone(),
            local: local.clone(),
        },
        reply.replica,
    )
    .await?;
    if role == Role::Frontend {
        let first = super::frontend::BackendRef {
            name: through.unwrap_or_default(),
            address: master.to_string(),
        };
        node.set_backends(vec![first])?;
    }
    install(node, &local, &meta)?;
    node.run().await?;
    info!(cluster = %meta.cluster_id, cid = local.cid, "joined the cluster");
    Ok(Joined {
        cluster_id: meta.cluster_id,
        master: node
            .leader()
            .map(|l| l.name)
            .unwrap_or_else(|| master.to_string()),
        cid: reply.member.cid,
        device_id: reply.member.device_id,
        uuid: reply.member.uuid,
        entries,
    })
}

/// After create or join: the TLS identity and copies of the certificate
/// and key for tools.
pub fn install(node: &ClusterNode, local: &LocalNode, meta: &ClusterMeta) -> Result<()> {
    node.load_identity(local, meta)?;
    write_files(node, local, meta)
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

/// Node: `cluster leave`: has the master take this backend out of the
/// cluster, then stops its engine and keeps its state as last applied.
/// With `force`, a master that cannot be reached (or refuses) is not
/// told: disaster recovery when the cluster is lost.
pub async fn leave(node: &Arc<ClusterNode>, force: bool) -> Result<Left> {
    let (_, local) = node.clustered()?;
    if let Some(why) = &local.detached
        && !force
    {
        return Err(ClusterError::Invalid(format!(
            "this node is no longer in the cluster already ({why})"
        )));
    }
    if local.role == Role::Frontend {
        return Err(ClusterError::Invalid(
            "this node is a frontend: `mxgate cluster detach` leaves the cluster and forgets its state".into(),
        ));
    }
    let leader = node.leader();
    if leader.as_ref().is_some_and(|l| l.name == node.name) && !force {
        return Err(ClusterError::Invalid(
            "the master cannot leave; make another backend master (`cluster promote` there) or `cluster delete` the other members first".into(),
        ));
    }
    let told = match (&leader, &local.detached) {
        (Some(leader), None) => node
            .call(
                &leader.address,
                "POST",
                "/leave",
                None::<&()>,
                Duration::from_secs(30),
            )
            .await
            .and_then(|answer| answer.json::<serde_json::Value>(&leader.name)),
        _ => Err(ClusterError::Invalid("no master is known".into())),
    };
    let told = match told {
        Ok(_) => true,
        Err(e) if force => {
            warn!(error = %e, "leaving without telling the master (--force)");
            false
        }
        Err(e) => {
            return Err(ClusterError::Transport(format!(
                "{e}\nthe master must be told: try again when it is reachable, run `mxgate cluster delete {}` on a backend, \
                 or, if the cluster is lost, `mxgate cluster leave --force` (docs/cluster.md, disaster recovery)",
                node.name
            )));
        }
    };
    node.stop_engine().await;
    node.set_detached(if told {
        "left the cluster"
    } else {
        "left the cluster without telling the master (--force)"
    })?;
    Ok(Left {
        left: node.name.clone(),
        master: leader.map(|l| l.name).unwrap_or_default(),
        told,
    })
}
