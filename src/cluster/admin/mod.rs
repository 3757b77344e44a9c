//! Admin-socket requests of `mxgate cluster ...` and their handlers.
//!
//! Every change is validated first, then proposed through the one path
//! ([`super::propose`]): forwarded to the master when this node is not,
//! and reported done only once a majority of the backends holds it.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use tracing::info;

use super::db::Identity;
use super::engine::{Peer, Replica};
use super::identity::{self, Purpose};
use super::node::ClusterNode;
use super::policy::{self, ListKey};
use super::propose::{Committed, propose, propose_with};
use super::{
    Change, ClusterError, ClusterMeta, Csn, IdentifierState, LocalNode, Result, Role, join,
    membership, status,
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
        ClusterRequest::Promote { force } => membership::promote(node, force).await.map(to_json),
        ClusterRequest::Sync { master } => super::probe::sync(node, &master).await.map(to_json),
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

pub(super) fn done(what: impl Into<String>, committed: Committed) -> Done {
    Done {
        done: what.into(),
        csn: committed.csn,
    }
}

async fn create(node: &Arc<ClusterNode>, policy_path: &Path) -> Result<serde_json::Value> {
    if let Ok((meta, local)) = node.clustered()
        && local.detached.is_none()
    {
        return Err(ClusterError::AlreadyClustered(meta.cluster_id));
    }
    // A node that was in a cluster keeps the policy it replicated; a new
    // one starts from its own file.
    let (text, policy_from) = match node.replica().state.policy.clone() {
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
    let identity = Identity {
        cluster: meta.clone(),
        local: local.clone(),
    };
    node.start_over(identity, Replica::default()).await?;
    join::install(node, &local, &meta)?;
    node.run().await?;
    bootstrap(node, &member).await?;
    for change in [
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
    ] {
        propose(node, change).await?;
    }
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

/// Makes this node the only voter of a new engine, and waits until it is
/// its master.
async fn bootstrap(node: &ClusterNode, member: &super::MemberRecord) -> Result<()> {
    let engine = node.raft().ok_or(ClusterError::NotClustered)?;
    let voters = std::collections::BTreeMap::from([(1u64, membership::peer_of(member))]);
    let _: &std::collections::BTreeMap<u64, Peer> = &voters;
    engine
        .raft()
        .initialize(voters)
        .await
        .map_err(|e| ClusterError::Db(format!("cannot start the consensus engine: {e}")))?;
    engine
        .raft()
        .wait(Some(std::time::Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "cluster create")
        .await
        .map_err(|e| ClusterError::Db(format!("the new cluster elected no master: {e}")))?;
    Ok(())
}

/// Finds a member by name or cluster number.
fn find_member(node: &ClusterNode, which: &str) -> Result<super::MemberRecord> {
    let members: Vec<super::MemberRecord> =
        node.replica().state.members.values().cloned().collect();
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
    node.member()?;
    let member = find_member(node, which)?;
    if node.leader().is_some_and(|l| l.name == member.name) {
        return Err(ClusterError::Invalid(
            "the master cannot be deleted; make another backend master first (`cluster promote` there)".into(),
        ));
    }
    let committed = membership::remove(node, &member, "deleted").await?;
    Ok(done(
        format!(
            "{}({}) deleted; its certificate is refused from now on",
            member.name, member.cid
        ),
        committed,
    ))
}

async fn apply_policy(node: &Arc<ClusterNode>, name: &str, text: String) -> Result<Done> {
    policy::validate(Path::new(name), &text)?;
    // A whole new text: the state machine gives it the next version.
    let committed = propose(node, Change::Policy { version: 0, text }).await?;
    let version = committed.applied.policy_version.unwrap_or_default();
    Ok(done(
        format!("policy version {version} applied and replicated"),
        committed,
    ))
}

/// The next policy version after the one this node holds.
fn next_version(node: &ClusterNode) -> u64 {
    node.replica()
        .state
        .policy
        .as_ref()
        .map_or(0, |p| p.version)
        + 1
}

fn show_policy(node: &Arc<ClusterNode>) -> Result<serde_json::Value> {
    node.clustered()?;
    let policy = node.replica().state.policy.clone();
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
    node.member()?;
    let committed = propose_with(node, &mut |node| {
        let replica = node.replica();
        let current = replica
            .state
            .policy
            .as_ref()
            .map(|p| p.text.clone())
            .unwrap_or_default();
        let known: Vec<String> = replica
            .state
            .live_members()
            .map(|m| m.name.clone())
            .collect();
        let text = policy::set_list(&current, member, list, &to, &known)?;
        policy::validate(Path::new("cluster.toml (edited)"), &text)?;
        Ok(Change::Policy {
            version: next_version(node),
            text,
        })
    })
    .await?;
    let version = committed.applied.policy_version.unwrap_or_default();
    let key = match list {
        ListKey::InjectTo => "inject_to",
        ListKey::LftSyncTo => "lft_sync_to",
    };
    Ok(done(
        format!(
            "{member}.{key} = [{}] (policy version {version})",
            to.join(", ")
        ),
        committed,
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
    node.member()?;
    let mut member = find_member(node, which)?;
    let blank = |s: String| if s.is_empty() { None } else { Some(s) };
    if let Some(c) = comment {
        member.comment = blank(c);
    }
    if let Some(l) = location {
        member.location = blank(l);
    }
    let name = member.name.clone();
    let committed = propose(node, Change::Member { member }).await?;
    Ok(done(format!("member {name} updated"), committed))
}
