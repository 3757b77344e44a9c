//! The engine's membership follows the replicated member records, and the
//! commands that change who is master.
//!
//! [`reconcile`] runs on every backend and acts on the master: a backend
//! recorded by a join is added as a learner (the engine sends it the
//! snapshot), made a voter once it has caught up (joint consensus; the
//! engine serialises membership changes), and a deleted or departed one
//! is removed. So a join, a `cluster delete` and a `cluster leave` are
//! each a committed change of the member records followed by a membership
//! change, and a master that changes mid-way finishes the work.
//!
//! `cluster promote` ([`promote`]) asks the master to stop its heartbeats
//! for a moment, after it checked the candidate's log is complete, and
//! makes the candidate stand for election; `--force` ([`promote_force`])
//! rewrites the membership on a survivor ([`super::engine::force`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use openraft::ChangeMembers;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::api::{HandoverRequest, Hello, Promoted, RefusalCode};
use super::engine::{Handle, Peer};
use super::node::ClusterNode;
use super::server::{Refusal, Reply, to_reply};
use super::{Change, ClusterError, MemberRecord, Result, Role, propose};

/// How often the master compares the membership with the member records.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// A learner this close to the master's last log index is made a voter.
const CAUGHT_UP: u64 = 8;
/// The longest a membership change holds up the command that caused it.
const MEMBERSHIP_WITHIN: Duration = Duration::from_secs(10);
/// How long the master pauses its heartbeats for a candidate.
const HANDOVER_PAUSE: Duration = Duration::from_secs(8);
/// How long `cluster promote` tries to win an election.
const ELECTION_WITHIN: Duration = Duration::from_secs(15);

/// Keeps the engine's membership in step with the member records while
/// this node is the master, until `token` is cancelled.
pub async fn reconcile(node: Arc<ClusterNode>, token: CancellationToken) {
    let mut replica = node.watch_replica();
    loop {
        // At once after a change of the state (a join, a delete), and
        // every second (a learner catching up).
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            _ = replica.changed() => {}
        }
        if let Some(engine) = node.raft()
            && engine.is_leader()
            && let Err(e) = step(&node, &engine).await
        {
            warn!(error = %e, "membership change not made yet; trying again");
        }
    }
}

/// One comparison of the membership with the member records, and the
/// change that brings them closer.
pub async fn step(node: &ClusterNode, engine: &Handle) -> Result<()> {
    let metrics = engine.metrics();
    let membership = metrics.membership_config.membership().clone();
    if membership.get_joint_config().len() > 1 {
        return Ok(()); // a change is under way
    }
    let wanted: BTreeMap<u64, Peer> = node
        .replica()
        .state
        .backends()
        .map(|m| (u64::from(m.cid), peer_of(m)))
        .collect();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let learners: BTreeSet<u64> = membership.learner_ids().collect();
    let raft = engine.raft();
    let fail = |e: &dyn std::fmt::Display| ClusterError::Invalid(e.to_string());
    for (id, peer) in wanted
        .iter()
        .filter(|(id, _)| !voters.contains(id) && !learners.contains(id))
    {
        info!(node = %peer.name, id, "adding the backend to the engine as a learner");
        raft.add_learner(*id, peer.clone(), false)
            .await
            .map_err(|e| fail(&e))?;
    }
    let last = metrics.last_log_index.unwrap_or(0);
    let matched = |id: &u64| {
        metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(id).copied().flatten())
            .map_or(0, |log_id| log_id.index)
    };
    let mut next: BTreeSet<u64> = voters
        .iter()
        .filter(|id| wanted.contains_key(id))
        .copied()
        .collect();
    next.extend(
        learners
            .iter()
            .filter(|id| wanted.contains_key(id) && matched(id) + CAUGHT_UP >= last),
    );
    if !next.is_empty() && next != voters {
        info!(voters = ?next, before = ?voters, "changing the voting backends");
        let change = raft.change_membership(ChangeMembers::ReplaceAllVoters(next), false);
        tokio::time::timeout(MEMBERSHIP_WITHIN, change)
            .await
            .map_err(|_| {
                ClusterError::Invalid("the membership change is not committed yet".into())
            })?
            .map_err(|e| fail(&e))?;
    }
    let stale: BTreeSet<u64> = learners
        .iter()
        .filter(|id| !wanted.contains_key(id))
        .copied()
        .collect();
    if !stale.is_empty() {
        raft.change_membership(ChangeMembers::RemoveNodes(stale), false)
            .await
            .map_err(|e| fail(&e))?;
    }
    Ok(())
}

/// The engine's node of a member record.
pub fn peer_of(m: &MemberRecord) -> Peer {
    Peer {
        name: m.name.clone(),
        address: m.address.clone(),
    }
}

/// Marks `member` deleted (or left) and takes it out of the membership.
pub async fn remove(
    node: &Arc<ClusterNode>,
    member: &MemberRecord,
    reason: &str,
) -> Result<propose::Committed> {
    let committed = propose::propose(
        node,
        Change::MemberDeleted {
            name: member.name.clone(),
            reason: reason.to_string(),
        },
    )
    .await?;
    if let Some(engine) = node.raft()
        && engine.is_leader()
        && let Err(e) = step(node, &engine).await
    {
        warn!(error = %e, member = %member.name, "membership change follows later");
    }
    if let Ok(mut contacts) = node.contacts.lock() {
        contacts.remove(&member.name);
    }
    Ok(committed)
}

/// `POST /handover` on the master: `member` wants to take over. Granted
/// when its log holds every entry the master has: the master pauses its
/// heartbeats so that the other backends' leases run out and the
/// candidate can win the election it starts.
pub async fn serve_handover(node: &Arc<ClusterNode>, member: &MemberRecord, body: &[u8]) -> Reply {
    let request: HandoverRequest = serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("bad handover request: {e}"),
        )
    })?;
    let engine = node.raft().filter(|e| e.is_leader()).ok_or_else(|| {
        Refusal::coded(
            StatusCode::CONFLICT,
            RefusalCode::NotMaster,
            format!("{} is not the master", node.name),
        )
    })?;
    let metrics = engine.metrics();
    let last = metrics.last_log_index.unwrap_or(0);
    let is_voter = metrics
        .membership_config
        .membership()
        .voter_ids()
        .any(|id| id == u64::from(member.cid));
    if member.role != Role::Backend || !is_voter {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!(
                "{} is not a voting backend (yet); wait until `cluster status` shows it A",
                member.name
            ),
        ));
    }
    if request.last_index < last {
        return Err(Refusal::coded(
            StatusCode::CONFLICT,
            RefusalCode::Behind,
            format!(
                "{}'s log is behind: it holds entries up to {}, the master up to {last}; wait until `cluster status` shows it A, then promote again",
                member.name, request.last_index
            ),
        ));
    }
    warn!(candidate = %member.name, "handing mastership over: heartbeats paused");
    let raft = engine.raft().clone();
    raft.runtime_config().heartbeat(false);
    tokio::spawn(async move {
        tokio::time::sleep(HANDOVER_PAUSE).await;
        raft.runtime_config().heartbeat(true);
    });
    to_reply(&serde_json::json!({ "handover": member.name }))
}

/// `cluster promote`: makes this backend the master now.
pub async fn promote(node: &Arc<ClusterNode>, force: bool) -> Result<Promoted> {
    let (_, local) = node.member()?;
    if local.role != Role::Backend {
        return Err(ClusterError::Invalid("a frontend is never master".into()));
    }
    let engine = node.raft().ok_or(ClusterError::NotClustered)?;
    if engine.is_leader() && engine.has_quorum() {
        return Err(ClusterError::Invalid(format!(
            "{} is the master already",
            node.name
        )));
    }
    if force {
        return promote_force(node).await;
    }
    let previous = node.leader().map(|l| l.name).unwrap_or_default();
    if let Some(leader) = node.leader().filter(|l| l.name != node.name) {
        let request = HandoverRequest {
            last_index: engine.metrics().last_log_index.unwrap_or(0),
        };
        match node
            .call(
                &leader.address,
                "POST",
                "/handover",
                Some(&request),
                Duration::from_secs(5),
            )
            .await
            .and_then(|a| a.json::<serde_json::Value>(&leader.name))
        {
            Ok(_) => {}
            Err(e @ ClusterError::Refused { .. }) => return Err(e),
            // The master does not answer: the election decides.
            Err(e) => warn!(error = %e, "the master does not answer; standing for election"),
        }
    }
    win_election(node, &engine).await?;
    Ok(Promoted {
        epoch: engine.term(),
        master: node.name.clone(),
        previous,
        kept: Vec::new(),
        removed: Vec::new(),
        backends: voters(&engine).len(),
    })
}

/// Stands for election until this node is master, or [`ELECTION_WITHIN`].
async fn win_election(node: &ClusterNode, engine: &Handle) -> Result<()> {
    let deadline = tokio::time::Instant::now() + ELECTION_WITHIN;
    while tokio::time::Instant::now() < deadline {
        if engine.is_leader() {
            info!(epoch = engine.term(), "this node is now the master");
            return Ok(());
        }
        let _ = engine.raft().trigger().elect().await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    Err(ClusterError::Invalid(format!(
        "{} did not win an election within {}s: a majority of the backends must answer and none of them may hold a longer log; \
         `mxgate cluster status` shows who is reachable and in sync (promote a backend that shows A)",
        node.name,
        ELECTION_WITHIN.as_secs()
    )))
}

/// The voting backends (name by id).
fn voters(engine: &Handle) -> BTreeMap<u64, Peer> {
    let metrics = engine.metrics();
    let membership = metrics.membership_config.membership().clone();
    membership
        .voter_ids()
        .filter_map(|id| membership.get_node(&id).map(|p| (id, p.clone())))
        .collect()
}

/// `cluster promote --force`: this backend keeps the voters it reaches,
/// removes (fences) the others, and continues as master.
async fn promote_force(node: &Arc<ClusterNode>) -> Result<Promoted> {
    let engine = node.raft().ok_or(ClusterError::NotClustered)?;
    let voters = voters(&engine);
    let me = engine.id();
    let mut reached = BTreeSet::from([me]);
    for (id, peer) in voters.iter().filter(|(id, _)| **id != me) {
        let hello = node
            .call(
                &peer.address,
                "GET",
                "/hello",
                None::<&()>,
                Duration::from_secs(3),
            )
            .await
            .and_then(|a| a.json::<Hello>(&peer.name));
        if hello.is_ok() {
            reached.insert(*id);
        }
    }
    if reached.len() > voters.len() / 2 {
        return Err(ClusterError::Invalid(format!(
            "{} of {} backends are reachable, a majority: no --force needed; run `mxgate cluster promote` (without --force)",
            reached.len(),
            voters.len()
        )));
    }
    let previous = node.leader().map(|l| l.name).unwrap_or_default();
    let removed: Vec<MemberRecord> = node
        .replica()
        .state
        .backends()
        .filter(|m| !reached.contains(&u64::from(m.cid)))
        .cloned()
        .collect();
    warn!(kept = ?reached, removed = ?removed.iter().map(|m| &m.name).collect::<Vec<_>>(),
        "promote --force: rewriting the membership from this node's state");
    let db = node.db()?;
    node.stop_engine().await;
    let peer = voters.get(&me).cloned().unwrap_or_else(|| Peer {
        name: node.name.clone(),
        address: node.advertise.to_string(),
    });
    let epoch = super::engine::force::single_voter(db.database(), me, peer)
        .await
        .map_err(|e| ClusterError::Db(e.to_string()))?;
    node.run().await?;
    for member in &removed {
        remove(node, member, "removed by promote --force").await?;
    }
    let kept: Vec<String> = reached
        .iter()
        .filter_map(|id| voters.get(id).map(|p| p.name.clone()))
        .collect();
    Ok(Promoted {
        epoch,
        master: node.name.clone(),
        previous,
        backends: kept.len(),
        kept,
        removed: removed.into_iter().map(|m| m.name).collect(),
    })
}
