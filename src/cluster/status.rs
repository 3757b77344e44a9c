//! `cluster status` and `cluster replication`: the members table of SPEC
//! section 8 and the last CSN each backend has applied.
//!
//! The master knows every follower's position (each long-poll names the
//! sequence it has applied), so its view is the authoritative one; a
//! backend asks the master (`GET /status`) and falls back to its own view
//! when the master cannot be reached. `local_entries` and `remote_entries`
//! count change-log entries: on the master, `local_entries` is its log and
//! `remote_entries` what the member has applied; on a backend's own row,
//! the reverse.

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;

pub use super::api::{BackendPosition, ClusterStatus, MemberStatus, Replication, Summary};
use super::node::ClusterNode;
use super::server::{Reply, refuse, to_reply};
use super::{MemberRecord, Result, Role, time};

mod log_summary;
mod render;
pub use log_summary::{EpochRun, LogPosition, LogSummary};
pub use render::{render_replication, render_text, uptime};

/// A member is shown in error when the master has not heard from it for this long.
pub const STALE_SECS: u64 = 60;

/// Seconds since the oldest change after `acked` was committed (0 when none).
pub fn lag(node: &ClusterNode, acked: u64, now: u64) -> Option<u64> {
    match node.db.entries_after(acked, 1) {
        Ok(next) => Some(next.first().map_or(0, |e| now.saturating_sub(e.csn.time))),
        Err(_) => None,
    }
}

fn contact_of(node: &ClusterNode, name: &str) -> Option<u64> {
    node.contacts.lock().ok()?.get(name)?.at
}

/// The master's view.
pub fn master_view(node: &ClusterNode) -> Result<ClusterStatus> {
    let (meta, _) = node.master()?;
    let head = node.db.log_len()?;
    let last_change = node.db.last_entry()?.map(|e| e.csn.time);
    let peers = node.peers.lock().map(|p| p.clone()).unwrap_or_default();
    let now = time::now();
    let texts = Texts::new(node);
    let records = node.db.members()?;
    let members = records
        .iter()
        .filter(|m| !m.deleted)
        .cloned()
        .map(|m| {
            let (comment, location) = (texts.comment(&m.name), texts.location(&m.name));
            let (frontend_of, backend_of) = links(&m, &records);
            let role = role_of(&m, &meta.master);
            let is_master = m.name == meta.master;
            let peer = peers.get(&m.name);
            let (state, remote, version, uptime, update) = if is_master {
                (
                    "A".to_string(),
                    head,
                    env!("CARGO_PKG_VERSION").to_string(),
                    node.started.elapsed().as_secs(),
                    last_change,
                )
            } else {
                match peer {
                    None => (
                        "ERROR: no contact since the master started".to_string(),
                        0,
                        m.version.clone(),
                        0,
                        None,
                    ),
                    Some(p) => {
                        let age = now.saturating_sub(p.contact);
                        let state = if age > STALE_SECS {
                            format!("ERROR: no contact for {age}s")
                        } else if p.acked >= head {
                            "A".into()
                        } else {
                            "S".into()
                        };
                        (state, p.acked, p.version.clone(), p.uptime, Some(p.contact))
                    }
                }
            };
            let acked = if is_master {
                head
            } else {
                peer.map_or(0, |p| p.acked)
            };
            let contact = [contact_of(node, &m.name), peer.map(|p| p.contact)]
                .into_iter()
                .flatten()
                .max();
            MemberStatus {
                last_contact: if is_master {
                    None
                } else {
                    contact.map(time::rfc3339)
                },
                replication_lag_s: if is_master || peer.is_some() {
                    lag(node, acked, now)
                } else {
                    None
                },
                name: m.name,
                cid: m.cid,
                device_id: m.device_id,
                uuid: m.uuid,
                address: m.address,
                role,
                state,
                version,
                uptime_s: uptime,
                last_update: update.map(time::rfc3339),
                local_entries: head,
                remote_entries: remote,
                frontend_of,
                backend_of,
                comment,
                location,
            }
        })
        .collect();
    Ok(ClusterStatus::of(meta.epoch, meta.master, members))
}

/// `master`, `backend` or `frontend`.
fn role_of(m: &MemberRecord, master: &str) -> String {
    match m.role {
        _ if m.name == master => "master",
        Role::Backend => "backend",
        Role::Frontend => "frontend",
    }
    .into()
}

/// FRONTEND-OF and BACKEND-OF of `m`: a frontend's backends, or the
/// frontends that use a backend.
fn links(m: &MemberRecord, records: &[MemberRecord]) -> (Vec<String>, Vec<String>) {
    match m.role {
        Role::Frontend => (m.backends.clone(), Vec::new()),
        Role::Backend => (
            Vec::new(),
            records
                .iter()
                .filter(|f| !f.deleted && f.role == Role::Frontend && f.backends.contains(&m.name))
                .map(|f| f.name.clone())
                .collect(),
        ),
    }
}

impl ClusterStatus {
    /// The members table of `master` at `epoch`; the per-node fields
    /// (`node`, `node_epoch`, `accepts_writes`, `discarded`) are filled in
    /// by the node that answers.
    fn of(epoch: u64, master: String, mut members: Vec<MemberStatus>) -> ClusterStatus {
        // Backends by number, then the frontends (number 0) by name.
        members.sort_by(|a, b| (a.cid == 0, a.cid, &a.name).cmp(&(b.cid == 0, b.cid, &b.name)));
        ClusterStatus {
            epoch,
            master,
            members,
            discarded: Vec::new(),
            node: String::new(),
            node_epoch: 0,
            accepts_writes: false,
            log: None,
        }
    }
}

impl ClusterStatus {
    /// The CID column: the number of a backend, `F(1,2)` for a frontend
    /// (its backends' numbers).
    pub fn cid_label(&self, m: &MemberStatus) -> String {
        if m.role != "frontend" {
            return m.cid.to_string();
        }
        let cids: Vec<u32> = m
            .frontend_of
            .iter()
            .filter_map(|name| self.members.iter().find(|b| &b.name == name).map(|b| b.cid))
            .collect();
        super::frontend::label(&cids)
    }
}

/// Comment and location per member: the member record's, else the policy's
/// `[members.NAME]` ones (the effective policy merges them that way).
struct Texts(Option<crate::config::Policy>);

impl Texts {
    fn new(node: &ClusterNode) -> Texts {
        Texts(
            super::policy::effective(&node.db, std::path::Path::new("cluster.toml"))
                .ok()
                .flatten(),
        )
    }

    fn comment(&self, name: &str) -> Option<String> {
        self.0.as_ref()?.member(name)?.comment.clone()
    }

    fn location(&self, name: &str) -> Option<String> {
        self.0.as_ref()?.member(name)?.location.clone()
    }
}

/// A backend's own view: its row from what it knows, the others unknown.
pub fn local_view(node: &ClusterNode, why: &str) -> Result<ClusterStatus> {
    let (meta, local) = node.clustered()?;
    let head = node.db.log_len()?;
    let follow = node.follow.lock().map(|f| f.clone()).unwrap_or_default();
    let texts = Texts::new(node);
    let records = node.db.members()?;
    let members = records
        .iter()
        .filter(|m| !m.deleted || m.name == node.name)
        .cloned()
        .map(|m| {
            let (comment, location) = (texts.comment(&m.name), texts.location(&m.name));
            let (frontend_of, backend_of) = links(&m, &records);
            let me = m.name == node.name;
            let target_error = node.follow_target().and_then(|(name, _)| {
                let error = node.contacts.lock().ok()?.get(&name)?.error.clone()?;
                Some(format!("{name} unreachable: {error}"))
            });
            let state = match (&local.detached, me) {
                (Some(d), true) => format!("ERROR: {d}"),
                (None, true) => match (&follow.error, &target_error) {
                    (Some(e), _) => format!("ERROR: {e}"),
                    // The long-poll may not have noticed a cut yet; the probe has.
                    (None, Some(e)) => format!("ERROR: {e}"),
                    (None, None) if follow.contact.is_some() && head >= follow.remote_head => {
                        "A".into()
                    }
                    (None, None) => "S".into(),
                },
                (_, false) => format!("ERROR: unknown ({why})"),
            };
            MemberStatus {
                last_contact: if me {
                    follow.contact.map(time::rfc3339)
                } else {
                    contact_of(node, &m.name).map(time::rfc3339)
                },
                replication_lag_s: me.then(|| super::node::follower_lag(node, time::now())),
                role: role_of(&m, &meta.master),
                state,
                version: if me {
                    env!("CARGO_PKG_VERSION").into()
                } else {
                    m.version.clone()
                },
                uptime_s: if me {
                    node.started.elapsed().as_secs()
                } else {
                    0
                },
                last_update: if me {
                    follow.contact.map(time::rfc3339)
                } else {
                    None
                },
                local_entries: head,
                remote_entries: if me { follow.remote_head } else { 0 },
                frontend_of,
                backend_of,
                name: m.name,
                cid: m.cid,
                device_id: m.device_id,
                uuid: m.uuid,
                address: m.address,
                comment,
                location,
            }
        })
        .collect();
    Ok(ClusterStatus::of(meta.epoch, meta.master, members))
}

/// `cluster status` on any node: the master's table, with this node's own
/// epoch, whether it accepts changes, and the changes it discarded.
pub async fn collect(node: &Arc<ClusterNode>) -> Result<ClusterStatus> {
    let (meta, local) = node.clustered()?;
    let mut status = if local.detached.is_some() {
        local_view(node, "this node no longer follows the cluster")?
    } else if node.master().is_ok() {
        master_view(node)?
    } else {
        match ask_master(node, "/status").await {
            Ok(status) => status,
            Err(e) => local_view(node, &format!("master unreachable: {e}"))?,
        }
    };
    status.node = node.name.clone();
    status.node_epoch = meta.epoch;
    status.accepts_writes = node.master().is_ok();
    status.log = Some(LogSummary::of(&node.db.entries_after(0, usize::MAX)?)?);
    status.discarded = node
        .db
        .discarded()?
        .into_iter()
        .filter_map(|d| serde_json::to_value(d).ok())
        .collect();
    Ok(status)
}

/// [`Summary`] of `node`; `None` when it is in no cluster.
pub fn summary(node: &ClusterNode) -> Option<Summary> {
    let (meta, local) = node.clustered().ok()?;
    let known = node.known_master();
    let entries = node.db.log_len().unwrap_or(0);
    let follow = node.follow.lock().map(|f| f.clone()).unwrap_or_default();
    let is_master = node.master().is_ok();
    let state = match (&local.detached, &follow.error) {
        (Some(why), _) => format!("ERROR: {why}"),
        _ if is_master => "A".into(),
        (None, Some(e)) => format!("ERROR: {e}"),
        (None, None) if follow.contact.is_some() && entries >= follow.remote_head => "A".into(),
        (None, None) => "S".into(),
    };
    Some(Summary {
        cluster_id: meta.cluster_id,
        role: match local.role {
            _ if is_master => "master",
            Role::Backend => "backend",
            Role::Frontend => "frontend",
        }
        .into(),
        epoch: meta.epoch,
        master: known.map_or(meta.master, |k| k.master),
        state,
        entries,
        policy_version: node.db.policy().ok().flatten().map_or(0, |p| p.version),
    })
}

/// `cluster replication` on any node.
pub async fn replication(node: &Arc<ClusterNode>) -> Result<Replication> {
    let (meta, _) = node.clustered()?;
    if meta.master == node.name {
        return replication_view(node);
    }
    ask_master(node, "/replication").await
}

async fn ask_master<T: serde::de::DeserializeOwned>(
    node: &Arc<ClusterNode>,
    path: &str,
) -> Result<T> {
    let known = node
        .known_master()
        .ok_or(super::ClusterError::NotClustered)?;
    node.call(
        &known.master_address,
        "GET",
        path,
        None::<&()>,
        Duration::from_secs(5),
    )
    .await?
    .json(&known.master)
}

/// The master's replication view.
pub fn replication_view(node: &ClusterNode) -> Result<Replication> {
    let (meta, _) = node.master()?;
    let peers = node.peers.lock().map(|p| p.clone()).unwrap_or_default();
    let head = node.db.last_entry()?.map(|e| e.csn);
    let mut backends = Vec::new();
    for m in node.db.members()?.into_iter().filter(|m| !m.deleted) {
        let (seq, contact) = if m.name == meta.master {
            (head.as_ref().map_or(0, |c| c.seq), Some(time::now()))
        } else {
            peers
                .get(&m.name)
                .map_or((0, None), |p| (p.acked, Some(p.contact)))
        };
        let last_csn = match seq {
            0 => None,
            s => node.db.entries_after(s - 1, 1)?.pop().map(|e| e.csn),
        };
        backends.push(BackendPosition {
            name: m.name,
            cid: m.cid,
            last_csn,
            last_contact: contact.map(time::rfc3339),
        });
    }
    Ok(Replication { head, backends })
}

/// `GET /status`.
pub fn serve_status(node: &Arc<ClusterNode>) -> Reply {
    to_reply(&master_view(node).map_err(refuse(StatusCode::CONFLICT))?)
}

/// `GET /replication`.
pub fn serve_replication(node: &Arc<ClusterNode>) -> Reply {
    to_reply(&replication_view(node).map_err(refuse(StatusCode::CONFLICT))?)
}
