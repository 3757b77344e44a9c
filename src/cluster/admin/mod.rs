//! Admin-socket requests of `mxgate cluster ...` and their handlers.
//!
//! Changes are made on the master only, under its write lock: each is
//! validated first, then committed durably as one change of the log before
//! the CLI is told it is done.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use tracing::info;

use super::identity::{self, Purpose};
use super::node::ClusterNode;
use super::policy::{self, ListKey};
use super::{
    Change, ClusterError, ClusterMeta, Csn, IdentifierState, LocalNode, LogEntry, Result, Role,
    join, status, time,
};

mod identifier;
pub use crate::cluster::api::ClusterRequest;
use identifier::{export, protect, rotate};

/// Answers one cluster request on `node` (`None`: no `[cluster]`).
pub async fn handle(
    node: Option<&Arc<ClusterNode>>,
    request: ClusterRequest,
) -> std::result::Result<serde_json::Value, String> {
    let node = node.ok_or_else(|| ClusterError::NoClusterSection.to_string())?;
    let value = match request {
        ClusterRequest::Create => create(node, node.policy_file()).await.map(to_json),
        ClusterRequest::IdentifierExport {
            password,
            insecure_no_password,
            allow_ip,
        } => export(node, password, insecure_no_password, allow_ip)
            .await
            .map(to_json),
        ClusterRequest::IdentifierProtect { allow_ip, clear } => {
            protect(node, allow_ip, clear).await.map(to_json)
        }
        ClusterRequest::IdentifierRotate => rotate(node).await.map(to_json),
        ClusterRequest::Join {
            identifier,
            password,
            master,
            role,
        } => join::join(node, &identifier, password.as_deref(), &master, role)
            .await
            .map(to_json),
        ClusterRequest::Status => status::collect(node).await.map(to_json),
        ClusterRequest::Replication => status::replication(node).await.map(to_json),
        ClusterRequest::Delete { member } => delete(node, &member).await.map(to_json),
        ClusterRequest::Leave { force } => join::leave(node, force).await.map(to_json),
        ClusterRequest::PolicyApply { name, text } => {
            apply_policy(node, &name, text).await.map(to_json)
        }
        ClusterRequest::PolicyShow => show_policy(node).map(to_json),
        ClusterRequest::InjectSet { member, to } => set_list(node, &member, ListKey::InjectTo, to)
            .await
            .map(to_json),
        ClusterRequest::LftSet { member, to } => set_list(node, &member, ListKey::LftSyncTo, to)
            .await
            .map(to_json),
        ClusterRequest::Promote { force } => {
            super::promote::promote(node, force).await.map(to_json)
        }
        ClusterRequest::Sync { master } => super::promote::sync(node, &master).await.map(to_json),
        ClusterRequest::AddBackend { backend } => super::frontend::add_backend(node, &backend)
            .await
            .map(to_json),
        ClusterRequest::Detach => super::frontend::detach(node).await.map(to_json),
        ClusterRequest::MemberSet {
            member,
            comment,
            location,
        } => member_set(node, &member, comment, location)
            .await
            .map(to_json),
    };
    value.map_err(|e| e.to_string())
}

fn to_json<T: Serialize>(value: T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// What a change reports: its CSN.
#[derive(Debug, Serialize)]
pub(super) struct Done {
    done: String,
    csn: Csn,
}

pub(super) fn done(what: impl Into<String>, entry: LogEntry) -> Done {
    Done {
        done: what.into(),
        csn: entry.csn,
    }
}

async fn create(node: &Arc<ClusterNode>, policy_path: &Path) -> Result<serde_json::Value> {
    let _guard = node.write.lock().await;
    if let (Some(meta), Some(local)) = (node.db.meta()?, node.db.local()?)
        && local.detached.is_none()
    {
        return Err(ClusterError::AlreadyClustered(meta.cluster_id));
    }
    // A node that was in a cluster keeps the policy it replicated; a new
    // one starts from its own file.
    let (text, policy_from) = match node.db.policy()? {
        Some(p) => (
            p.text,
            format!(
                "replicated policy version {} of the previous cluster",
                p.version
            ),
        ),
        None => {
            let text = std::fs::read_to_string(policy_path).map_err(|e| {
                ClusterError::Invalid(format!(
                    "cannot read the policy {}: {e}",
                    policy_path.display()
                ))
            })?;
            (text, policy_path.display().to_string())
        }
    };
    policy::validate(policy_path, &text)?;
    let cluster_id = uuid::Uuid::new_v4().simple().to_string();
    let (ca_cert_pem, ca_key_pem) = identity::new_ca(&cluster_id)?;
    let (key_pem, csr) = identity::new_key_and_csr(&node.name)?;
    let issued = identity::sign(
        &ca_cert_pem,
        &ca_key_pem,
        &csr,
        &node.name,
        &[node.advertise.ip()],
        Purpose::Node,
    )?;
    let meta = ClusterMeta {
        cluster_id: cluster_id.clone(),
        epoch: 1,
        master: node.name.clone(),
        master_address: node.advertise.to_string(),
        ca_cert_pem,
    };
    let member = join::record(
        &node.name,
        1,
        Role::Backend,
        &node.advertise.to_string(),
        node.local
            .as_ref()
            .and_then(|l| l.smtp_upstream.as_ref())
            .map(ToString::to_string),
        node.local.as_ref().and_then(|l| l.gina_upstream.clone()),
        &issued,
        env!("CARGO_PKG_VERSION"),
    );
    let local = LocalNode {
        name: node.name.clone(),
        cid: 1,
        role: Role::Backend,
        cert_pem: issued.cert_pem.clone(),
        key_pem,
        ca_key_pem: Some(ca_key_pem),
        detached: None,
    };
    let now = time::now();
    let changes = [
        Change::Created { meta: meta.clone() },
        Change::Member {
            member: member.clone(),
        },
        Change::Policy { version: 1, text },
        Change::Identifier {
            state: IdentifierState {
                generation: 1,
                ..IdentifierState::default()
            },
        },
    ];
    let entries: Vec<LogEntry> = changes
        .into_iter()
        .enumerate()
        .map(|(i, change)| LogEntry {
            csn: Csn {
                epoch: 1,
                seq: i as u64 + 1,
                origin: node.name.clone(),
                time: now,
            },
            change,
        })
        .collect();
    node.stop_follower();
    node.db.reset(&local, &entries)?;
    node.notify(node.db.head()?);
    join::install(node, &local, &meta)?;
    node.start_probe();
    info!(cluster = %cluster_id, "cluster created; this node is its master");
    Ok(serde_json::json!({
        "cluster_id": cluster_id,
        "master": node.name,
        "address": node.advertise.to_string(),
        "cid": 1,
        "device_id": member.device_id,
        "uuid": member.uuid,
        "policy_from": policy_from,
    }))
}

/// Finds a member by name or cluster number.
fn find_member(node: &ClusterNode, which: &str) -> Result<super::MemberRecord> {
    let members = node.db.members()?;
    let cid: Option<u32> = which.parse().ok();
    members
        .iter()
        .filter(|m| !m.deleted)
        .find(|m| m.name == which || (m.cid != 0 && Some(m.cid) == cid))
        .cloned()
        .ok_or_else(|| {
            ClusterError::Invalid(format!(
                "no member {which:?}; members: {}",
                members
                    .iter()
                    .filter(|m| !m.deleted)
                    .map(|m| format!("{}({})", m.name, m.cid))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

async fn delete(node: &Arc<ClusterNode>, which: &str) -> Result<Done> {
    let _guard = node.write.lock().await;
    let (meta, _) = node.master()?;
    let member = find_member(node, which)?;
    if member.name == meta.master {
        return Err(ClusterError::Invalid(
            "the master cannot delete itself; delete the other members, or make another node master first".into(),
        ));
    }
    let entry = node.commit(
        &meta,
        Change::MemberDeleted {
            name: member.name.clone(),
            reason: "deleted".into(),
        },
    )?;
    if let Ok(mut peers) = node.peers.lock() {
        peers.remove(&member.name);
    }
    Ok(done(
        format!(
            "{}({}) deleted; its certificate is refused from now on",
            member.name, member.cid
        ),
        entry,
    ))
}

async fn apply_policy(node: &Arc<ClusterNode>, name: &str, text: String) -> Result<Done> {
    policy::validate(Path::new(name), &text)?;
    let _guard = node.write.lock().await;
    let (meta, _) = node.master()?;
    let version = node.db.policy()?.map_or(0, |p| p.version) + 1;
    let entry = node.commit(&meta, Change::Policy { version, text })?;
    Ok(done(
        format!("policy version {version} applied and replicated"),
        entry,
    ))
}

fn show_policy(node: &Arc<ClusterNode>) -> Result<serde_json::Value> {
    node.clustered()?;
    let policy = node.db.policy()?;
    Ok(serde_json::json!({
        "version": policy.as_ref().map_or(0, |p| p.version),
        "text": policy.map(|p| p.text).unwrap_or_default(),
    }))
}

async fn set_list(
    node: &Arc<ClusterNode>,
    member: &str,
    list: ListKey,
    to: Vec<String>,
) -> Result<Done> {
    let _guard = node.write.lock().await;
    let (meta, _) = node.master()?;
    let current = node.db.policy()?.map(|p| p.text).unwrap_or_default();
    let known: Vec<String> = node
        .db
        .members()?
        .into_iter()
        .filter(|m| !m.deleted)
        .map(|m| m.name)
        .collect();
    let text = policy::set_list(&current, member, list, &to, &known)?;
    policy::validate(Path::new("cluster.toml (edited)"), &text)?;
    let version = node.db.policy()?.map_or(0, |p| p.version) + 1;
    let entry = node.commit(&meta, Change::Policy { version, text })?;
    let key = match list {
        ListKey::InjectTo => "inject_to",
        ListKey::LftSyncTo => "lft_sync_to",
    };
    Ok(done(
        format!(
            "{member}.{key} = [{}] (policy version {version})",
            to.join(", ")
        ),
        entry,
    ))
}

async fn member_set(
    node: &Arc<ClusterNode>,
    which: &str,
    comment: Option<String>,
    location: Option<String>,
) -> Result<Done> {
    if comment.is_none() && location.is_none() {
        return Err(ClusterError::Invalid(
            "give --comment TEXT and/or --location TEXT".into(),
        ));
    }
    let _guard = node.write.lock().await;
    let (meta, _) = node.master()?;
    let mut member = find_member(node, which)?;
    let blank = |s: String| if s.is_empty() { None } else { Some(s) };
    if let Some(c) = comment {
        member.comment = blank(c);
    }
    if let Some(l) = location {
        member.location = blank(l);
    }
    let name = member.name.clone();
    let entry = node.commit(&meta, Change::Member { member })?;
    Ok(done(format!("member {name} updated"), entry))
}
