//! The one path of every change: `policy apply`, `inject set`, `lft set`,
//! `member set`, joins, deletes, `identifier protect/rotate` and a
//! frontend's backends are all proposed here.
//!
//! On the master, a change is proposed to the engine only after the master
//! confirmed, by a round of heartbeats, that a majority of the backends
//! still follows it; without one it is refused before it enters the log
//! ([`ClusterError::NoMajority`], within [`REFUSE_WITHIN`]), so it can never
//! appear later. It is reported done only once committed (held by a
//! majority) and applied here. When the majority is lost while it is in
//! flight, the outcome is reported unknown ([`ClusterError::OutcomeUnknown`]
//! after [`COMMIT_WITHIN`]), never as applied. On a backend that is not the
//! master, the change is forwarded to the master (`POST /propose`); on a
//! frontend, to the backend it follows.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use tracing::info;

use super::api::{ProposeRequest, RefusalCode};
use super::engine::{Applied, Peer, Proposal};
use super::node::ClusterNode;
use super::{Change, ClusterError, Csn, Result, time};

/// The longest a change waits to learn that the master has no majority.
pub const REFUSE_WITHIN: Duration = Duration::from_secs(10);
/// The longest a proposed change waits to be committed.
pub const COMMIT_WITHIN: Duration = Duration::from_secs(10);
/// How many times a change that met a conflict is proposed.
const ATTEMPTS: usize = 3;
/// How long a node waits for its state to catch up after a conflict.
const CATCH_UP: Duration = Duration::from_secs(2);

/// A change a majority holds, applied here.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Committed {
    /// Its CSN.
    pub csn: Csn,
    /// What applying it did.
    pub applied: Applied,
}

/// Proposes `change` and waits until it is committed (see the module).
pub async fn propose(node: &Arc<ClusterNode>, change: Change) -> Result<Committed> {
    propose_once(node, change).await
}

/// Like [`propose`], with the change made from the state now by `make`,
/// again after a conflict (a policy version made meanwhile).
pub async fn propose_with(
    node: &Arc<ClusterNode>,
    make: &mut (dyn FnMut(&ClusterNode) -> Result<Change> + Send),
) -> Result<Committed> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let change = make(node)?;
        match propose_once(node, change).await {
            Err(e) if is_conflict(&e) && attempt < ATTEMPTS => {
                // This node's copy was behind the master's: wait (briefly)
                // until it has caught up, then make the change again.
                let mut replica = node.watch_replica();
                let _ = tokio::time::timeout(CATCH_UP, replica.changed()).await;
            }
            other => return other,
        }
    }
}

/// A conflict here, or one the master reported.
fn is_conflict(e: &ClusterError) -> bool {
    matches!(
        e,
        ClusterError::Conflict(_)
            | ClusterError::Refused {
                code: RefusalCode::Conflict,
                ..
            }
    )
}

/// Proposes `change` once (`POST /propose` on the master: the forwarding
/// node retries after a conflict, with its own state caught up).
pub async fn propose_once(node: &Arc<ClusterNode>, change: Change) -> Result<Committed> {
    node.member()?;
    match propose_here(node, change.clone()).await {
        Err(Forward(Some(leader))) => forward(node, &leader.address, &leader.name, change).await,
        Err(Forward(None)) => Err(no_majority(node, None)),
        Ok(result) => result,
    }
}

/// Where to send a change this node cannot propose: the master, or
/// `None` when no master is known.
struct Forward(Option<Peer>);

/// Proposes on this node when it is the master.
async fn propose_here(
    node: &Arc<ClusterNode>,
    change: Change,
) -> std::result::Result<Result<Committed>, Forward> {
    let Some(engine) = node.raft() else {
        // A frontend: its backend forwards to the master.
        return Err(Forward(node.pull_target().map(|b| Peer {
            name: b.name,
            address: b.address,
        })));
    };
    let raft = engine.raft();
    match tokio::time::timeout(REFUSE_WITHIN, raft.ensure_linearizable()).await {
        Ok(Ok(_)) => {}
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
            return Err(forward_to(f));
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
            return Ok(Err(no_majority(node, Some(q.got.len()))));
        }
        Ok(Err(RaftError::Fatal(e))) => return Ok(Err(ClusterError::Db(e.to_string()))),
        Err(_) => return Ok(Err(no_majority(node, None))),
    }
    let summary = change.summary();
    let proposal = Proposal {
        origin: node.name.clone(),
        time: time::now(),
        change,
    };
    let (origin, at) = (proposal.origin.clone(), proposal.time);
    let response = match tokio::time::timeout(COMMIT_WITHIN, raft.client_write(proposal)).await {
        Ok(Ok(response)) => response,
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            return Err(forward_to(f));
        }
        Ok(Err(RaftError::APIError(e))) => return Ok(Err(ClusterError::Invalid(e.to_string()))),
        Ok(Err(RaftError::Fatal(e))) => return Ok(Err(ClusterError::Db(e.to_string()))),
        Err(_) => return Ok(Err(ClusterError::OutcomeUnknown(summary))),
    };
    if let Some(why) = response.data.conflict {
        return Ok(Err(ClusterError::Conflict(why)));
    }
    let csn = Csn {
        epoch: response.log_id.leader_id.term,
        seq: response.log_id.index,
        origin,
        time: at,
    };
    info!(epoch = csn.epoch, seq = csn.seq, change = %summary, "cluster change committed");
    Ok(Ok(Committed {
        csn,
        applied: response.data,
    }))
}

fn forward_to(f: ForwardToLeader<u64, Peer>) -> Forward {
    Forward(f.leader_node)
}

/// Sends `change` to the master `name` at `address`.
async fn forward(
    node: &Arc<ClusterNode>,
    address: &str,
    name: &str,
    change: Change,
) -> Result<Committed> {
    let summary = change.summary();
    let request = ProposeRequest { change };
    let limit = REFUSE_WITHIN + COMMIT_WITHIN + Duration::from_secs(5);
    let answer = match node
        .call(address, "POST", "/propose", Some(&request), limit)
        .await
    {
        Ok(answer) => answer,
        // The master never saw the change: say how many backends this node
        // reaches when that is no majority.
        Err(e @ ClusterError::NotSent(_)) => {
            return match refusal(node, None, Some(name)) {
                refused @ ClusterError::NoMajority {
                    reachable, needed, ..
                } if reachable < needed => Err(refused),
                _ => Err(e),
            };
        }
        // The master may have it (and commit it): the outcome is unknown.
        Err(ClusterError::Transport(_)) => return Err(ClusterError::OutcomeUnknown(summary)),
        Err(e) => return Err(e),
    };
    match answer.json::<Committed>(name) {
        Err(ClusterError::Refused {
            code: RefusalCode::NotMaster,
            ..
        }) => Err(no_majority(node, None)),
        other => other,
    }
}

/// The majority is missing: `got` backends answered the master's round
/// (counted from the probe when the round did not end).
fn no_majority(node: &ClusterNode, got: Option<usize>) -> ClusterError {
    refusal(node, got, None)
}

/// [`no_majority`], with `down` known not to answer.
fn refusal(node: &ClusterNode, got: Option<usize>, down: Option<&str>) -> ClusterError {
    let (reachable, backends, missing) = reach(node, down);
    let reachable = got.unwrap_or(reachable);
    ClusterError::NoMajority {
        reachable,
        backends,
        needed: backends / 2 + 1,
        missing,
    }
}

/// The voting backends this node reaches (itself included), how many
/// there are, and the names of those it does not reach.
pub(super) fn reach(node: &ClusterNode, down: Option<&str>) -> (usize, usize, Vec<String>) {
    let replica = node.replica();
    let voters: Vec<String> = match node.raft() {
        Some(engine) => {
            let metrics = engine.metrics();
            let membership = metrics.membership_config.membership().clone();
            membership
                .voter_ids()
                .filter_map(|id| membership.get_node(&id).map(|p| p.name.clone()))
                .collect()
        }
        None => replica.state.backends().map(|m| m.name.clone()).collect(),
    };
    let contacts = node.contacts.lock().map(|c| c.clone()).unwrap_or_default();
    let missing: Vec<String> = voters
        .iter()
        .filter(|name| **name != node.name)
        .filter(|name| {
            Some(name.as_str()) == down
                || contacts
                    .get(*name)
                    .is_none_or(|c| c.error.is_some() || c.at.is_none())
        })
        .cloned()
        .collect();
    (voters.len() - missing.len(), voters.len(), missing)
}
