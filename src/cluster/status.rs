//! `cluster status` and `cluster replication`: the members table of SPEC
//! section 8 and each backend's position in the log.
//!
//! The master's view is the authoritative one: STATE comes from the
//! engine's replication progress (`A` when a backend holds every entry of
//! the master's log, `S` while it catches up) and from the probe (a member
//! that stops answering shows `ERROR: no contact for Ns` within a few
//! seconds); a frontend's row from what it reports it applied. Any other
//! node asks the master (`GET /status`) and falls back to its own view
//! when the master cannot be reached. `local_entries` is the master's log
//! index, `remote_entries` the member's.

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use sha2::{Digest, Sha256};

pub use super::api::{
    BackendPosition, ClusterStatus, Discarded, LogPosition, LogSummary, MemberStatus, Replication,
    Summary,
};
use super::node::{ClusterNode, Contact};
use super::server::{Reply, refuse, to_reply};
use super::{ClusterError, Csn, MemberRecord, Result, Role, time};

mod render;
mod row;
pub use render::{render_replication, render_text, uptime};

/// A clock this far from the master's is warned about (PMG stops syncing
/// beyond 5 s; SEPPmail wants NTP).
pub const CLOCK_WARN_MS: i64 = 5_000;

/// The master's view.
pub fn master_view(node: &ClusterNode) -> Result<ClusterStatus> {
    let engine = node
        .raft()
        .filter(|e| e.is_leader())
        .ok_or_else(|| ClusterError::NotMaster(leader_text(node)))?;
    let metrics = engine.metrics();
    let last = metrics.last_log_index.unwrap_or(0);
    let replica = node.replica();
    let contacts = node.contacts.lock().map(|c| c.clone()).unwrap_or_default();
    let texts = Texts::new(node);
    let records: Vec<MemberRecord> = replica.state.live_members().cloned().collect();
    let now = time::now();
    let mut warnings = Vec::new();
    let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
    let members = records
        .iter()
        .map(|m| {
            let contact = contacts.get(&m.name).cloned().unwrap_or_default();
            let joining = m.role == Role::Backend && !voters.contains(&u64::from(m.cid));
            let remote = if m.name == node.name {
                last
            } else if m.role == Role::Backend {
                matched(&metrics, m.cid)
            } else {
                contact.hello.as_ref().map_or(0, |h| h.applied)
            };
            let local = if m.role == Role::Backend {
                last
            } else {
                replica.index()
            };
            let mut state = row::state_of(m.name == node.name, &contact, remote, local, now);
            if joining && state == "A" {
                // Caught up, not a voter yet: the engine is making it one.
                state = "S".into();
            }
            if let Some(w) = clock_warning(&m.name, contact.clock_offset_ms) {
                warnings.push(w);
            }
            row::member_row(
                node,
                m,
                &records,
                &texts,
                (&contact, &state),
                (local, remote),
                now,
            )
        })
        .collect();
    let mut status = ClusterStatus::of(metrics.current_term, node.name.clone(), members);
    status.warnings = warnings;
    Ok(status)
}

/// The index of the last entry backend `cid` holds, as the master knows.
fn matched(metrics: &openraft::RaftMetrics<u64, super::engine::Peer>, cid: u32) -> u64 {
    metrics
        .replication
        .as_ref()
        .and_then(|r| r.get(&u64::from(cid)).copied().flatten())
        .map_or(0, |id| id.index)
}

/// A warning when a member's clock is more than [`CLOCK_WARN_MS`] off.
fn clock_warning(name: &str, offset_ms: Option<i64>) -> Option<String> {
    let offset = offset_ms?;
    (offset.abs() > CLOCK_WARN_MS).then(|| {
        format!(
            "the clock of {name} is {:.1} s {} the master's (more than {} s): check NTP on both",
            offset.abs() as f64 / 1000.0,
            if offset > 0 { "ahead of" } else { "behind" },
            CLOCK_WARN_MS / 1000
        )
    })
}

fn leader_text(node: &ClusterNode) -> String {
    node.leader().map_or_else(
        || "(none elected now)".into(),
        |l| format!("{} ({})", l.name, l.address),
    )
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
            warnings: Vec::new(),
        }
    }

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
pub(super) struct Texts(Option<crate::config::Policy>);

impl Texts {
    fn new(node: &ClusterNode) -> Texts {
        let replica = node.replica();
        Texts(super::policy::effective(&replica.state, std::path::Path::new("cluster.toml")).ok())
    }

    fn comment(&self, name: &str) -> Option<String> {
        self.0.as_ref()?.member(name)?.comment.clone()
    }

    fn location(&self, name: &str) -> Option<String> {
        self.0.as_ref()?.member(name)?.location.clone()
    }
}

/// A node's own view, when the master cannot tell: its row from what it
/// knows, the others as last probed.
pub fn local_view(node: &ClusterNode, why: &str) -> Result<ClusterStatus> {
    let (_, local) = node.clustered()?;
    let replica = node.replica();
    let contacts = node.contacts.lock().map(|c| c.clone()).unwrap_or_default();
    let texts = Texts::new(node);
    let records: Vec<MemberRecord> = replica
        .state
        .members
        .values()
        .filter(|m| !m.deleted || m.name == node.name)
        .cloned()
        .collect();
    let now = time::now();
    let index = replica.index();
    let members = records
        .iter()
        .map(|m| {
            let me = m.name == node.name;
            let contact = contacts.get(&m.name).cloned().unwrap_or_default();
            let state = match (&local.detached, me) {
                (Some(d), true) => format!("ERROR: {d}"),
                (None, true) => format!("ERROR: {why}"),
                (_, false) => match &contact.error {
                    Some(e) => format!("ERROR: {e}"),
                    None => format!("ERROR: unknown ({why})"),
                },
            };
            let remote = if me {
                index
            } else {
                contact.hello.as_ref().map_or(0, |h| h.applied)
            };
            let mut row = row::member_row(
                node,
                m,
                &records,
                &texts,
                (&contact, &state),
                (index, remote),
                now,
            );
            if me {
                // Cut off: its lag is the time since it last heard from a backend.
                row.replication_lag_s = contacts
                    .values()
                    .filter_map(|c| c.at)
                    .max()
                    .map(|at| now.saturating_sub(at));
            }
            row
        })
        .collect();
    let leader = node.leader();
    Ok(ClusterStatus::of(
        leader.as_ref().map_or(node.epoch(), |l| l.epoch),
        leader.map(|l| l.name).unwrap_or_default(),
        members,
    ))
}

/// `cluster status` on any node: the master's table, with this node's own
/// epoch, whether it accepts changes, its state in brief and the entries
/// it had appended that a new master truncated.
pub async fn collect(node: &Arc<ClusterNode>) -> Result<ClusterStatus> {
    let (_, local) = node.clustered()?;
    let mut status = if local.detached.is_some() {
        local_view(node, "this node is no longer in the cluster")?
    } else if node.raft().is_some_and(|e| e.is_leader()) {
        master_view(node)?
    } else {
        match ask_master(node, "/status").await {
            Ok(status) => status,
            Err(e) => local_view(node, &format!("no master reachable: {e}"))?,
        }
    };
    status.node = node.name.clone();
    status.node_epoch = node.epoch();
    status.accepts_writes = node.accepts_writes();
    status.log = Some(log_summary(node));
    if let Ok(db) = node.db() {
        status.discarded = super::engine::store::discarded(&db.database())?;
    }
    Ok(status)
}

/// This node's replicated state in brief.
pub fn log_summary(node: &ClusterNode) -> LogSummary {
    let replica = node.replica();
    let json = serde_json::to_vec(&replica.state).unwrap_or_default();
    LogSummary {
        head: replica.applied.map(|id| LogPosition {
            epoch: id.leader_id.term,
            seq: id.index,
        }),
        entries: replica.index(),
        sha256: super::identity::hex(&Sha256::digest(&json)),
        recent: replica.state.recent.iter().cloned().collect(),
    }
}

/// [`Summary`] of `node`; `None` when it is in no cluster.
pub fn summary(node: &ClusterNode) -> Option<Summary> {
    let (meta, local) = node.clustered().ok()?;
    let leader = node.leader();
    let replica = node.replica();
    let is_master = node.accepts_writes();
    let state = match (&local.detached, &leader) {
        (Some(why), _) => format!("ERROR: {why}"),
        _ if is_master => "A".into(),
        (None, None) => "ERROR: no master known".into(),
        (None, Some(_)) => "A".into(),
    };
    Some(Summary {
        cluster_id: meta.cluster_id,
        role: match local.role {
            _ if is_master => "master",
            Role::Backend => "backend",
            Role::Frontend => "frontend",
        }
        .into(),
        epoch: node.epoch(),
        master: leader.map(|l| l.name).unwrap_or_default(),
        state,
        entries: replica.index(),
        policy_version: replica.state.policy.as_ref().map_or(0, |p| p.version),
    })
}

/// `cluster replication` on any node.
pub async fn replication(node: &Arc<ClusterNode>) -> Result<Replication> {
    node.clustered()?;
    if node.raft().is_some_and(|e| e.is_leader()) {
        return replication_view(node);
    }
    ask_master(node, "/replication").await
}

async fn ask_master<T: serde::de::DeserializeOwned>(
    node: &Arc<ClusterNode>,
    path: &str,
) -> Result<T> {
    let leader = node.leader().ok_or(ClusterError::NotClustered)?;
    if leader.name == node.name {
        return Err(ClusterError::NotMaster(leader_text(node)));
    }
    node.call(
        &leader.address,
        "GET",
        path,
        None::<&()>,
        Duration::from_secs(5),
    )
    .await?
    .json(&leader.name)
}

/// The master's replication view: each backend's last entry.
pub fn replication_view(node: &ClusterNode) -> Result<Replication> {
    let engine = node
        .raft()
        .filter(|e| e.is_leader())
        .ok_or_else(|| ClusterError::NotMaster(leader_text(node)))?;
    let metrics = engine.metrics();
    let replica = node.replica();
    // The last change at or before a log position (membership entries and
    // the master's first entry of a term are no changes).
    let csn_at = |term: u64, index: u64| {
        let record = replica.state.recent.iter().rev().find(|r| r.index <= index);
        Csn {
            epoch: record.map_or(term, |r| r.term),
            seq: record.map_or(index, |r| r.index),
            origin: record.map(|r| r.origin.clone()).unwrap_or_default(),
            time: record.map_or(0, |r| r.time),
        }
    };
    let contacts = node.contacts.lock().map(|c| c.clone()).unwrap_or_default();
    let backends = replica
        .state
        .backends()
        .map(|m| {
            let id = u64::from(m.cid);
            let position = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).copied().flatten());
            let contact: Option<&Contact> = contacts.get(&m.name);
            BackendPosition {
                name: m.name.clone(),
                cid: m.cid,
                last_csn: position.map(|p| csn_at(p.leader_id.term, p.index)),
                last_contact: if m.name == node.name {
                    Some(time::rfc3339(time::now()))
                } else {
                    contact.and_then(|c| c.at).map(time::rfc3339)
                },
            }
        })
        .collect();
    Ok(Replication {
        head: replica
            .applied
            .map(|id| csn_at(id.leader_id.term, id.index)),
        backends,
    })
}

/// `GET /status`.
pub fn serve_status(node: &Arc<ClusterNode>) -> Reply {
    to_reply(&master_view(node).map_err(refuse(StatusCode::CONFLICT))?)
}

/// `GET /replication`.
pub fn serve_replication(node: &Arc<ClusterNode>) -> Reply {
    to_reply(&replication_view(node).map_err(refuse(StatusCode::CONFLICT))?)
}
