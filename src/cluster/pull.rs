//! How frontends get the cluster's state: they are no part of the engine
//! and keep nothing on disk; each pulls the whole replicated state from
//! one of its backends with a long-poll (`GET /state?after=INDEX`), which
//! the backend answers the moment it applies a change past `INDEX` (or
//! after [`HOLD`]). A frontend never takes state from a backend of an
//! older epoch than it has seen, nor an older state than it holds; when
//! its backend cannot be reached it moves on to the next in its list.

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::api::StateReply;
use super::node::{ClusterNode, Leader};
use super::server::{Refusal, Reply, to_reply};
use super::{ClusterError, MemberRecord, Result, Role};

/// Longest time a backend holds a frontend's long-poll.
pub const HOLD: Duration = Duration::from_secs(25);

/// `after=N` of a query string.
pub fn after_param(query: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("after")?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// `GET /state?after=INDEX` on a backend, for a frontend.
pub async fn serve_state(node: &Arc<ClusterNode>, member: &MemberRecord, query: &str) -> Reply {
    if member.role != Role::Frontend {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            "backends replicate through the engine".into(),
        ));
    }
    if node.raft().is_none() {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!("{} is not a running backend", node.name),
        ));
    }
    let after = after_param(query)
        .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "missing after=INDEX".into()))?;
    let mut watch = node.watch_replica();
    if watch.borrow().index() <= after {
        let deadline = tokio::time::sleep(HOLD);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = node.stop.cancelled() => break,
                changed = watch.changed() => {
                    if changed.is_err() || watch.borrow().index() > after {
                        break;
                    }
                }
            }
        }
    }
    let leader = node.leader();
    to_reply(&StateReply {
        epoch: node.epoch(),
        master: leader.map(|l| (l.name, l.address)),
        replica: (*node.replica()).clone(),
    })
}

/// A frontend pulls the state until `token` is cancelled.
pub async fn follow(node: Arc<ClusterNode>, token: CancellationToken) {
    let mut delay = Duration::from_millis(500);
    let mut last_error: Option<String> = None;
    loop {
        let pulled = tokio::select! {
            _ = token.cancelled() => return,
            pulled = pull(&node) => pulled,
        };
        match pulled {
            Ok(()) => {
                delay = Duration::from_millis(500);
                last_error = None;
            }
            Err(e) => {
                let message = e.to_string();
                if last_error.as_deref() != Some(message.as_str()) {
                    warn!(error = %message, "frontend: cannot get the state from this backend; trying the next one");
                }
                last_error = Some(message);
                node.next_backend();
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(4));
            }
        }
    }
}

async fn pull(node: &Arc<ClusterNode>) -> Result<()> {
    let backend = node.pull_target().ok_or(ClusterError::NotClustered)?;
    let held = node.replica();
    let path = format!("/state?after={}", held.index());
    let reply: StateReply = node
        .call(
            &backend.address,
            "GET",
            &path,
            None::<&()>,
            HOLD + Duration::from_secs(10),
        )
        .await?
        .json(&backend.name)?;
    let seen = node.epoch();
    if reply.epoch < seen {
        // Never take state of an older epoch than seen.
        return Err(ClusterError::Refused {
            peer: backend.address,
            code: super::api::RefusalCode::Refused,
            reason: format!(
                "it serves epoch {} but this node has seen epoch {seen}; not taking its state",
                reply.epoch
            ),
        });
    }
    node.saw_epoch(reply.epoch);
    if let Ok(mut named) = node.named_leader.lock() {
        *named = reply.master.map(|(name, address)| Leader {
            epoch: reply.epoch,
            name,
            address,
        });
    }
    if reply.replica.index() > held.index() {
        let first = held.state.meta.is_none();
        let index = reply.replica.index();
        node.publish_replica(reply.replica);
        if first {
            info!(backend = %backend.name, index, "frontend: cluster state received; routing with the cluster's policy");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn after_param_is_read_from_the_query() {
        for (q, want) in [
            ("after=5", Some(5)),
            ("x=1&after=12", Some(12)),
            ("after=", None),
            ("", None),
            ("after=-1", None),
        ] {
            assert_eq!(super::after_param(q), want, "{q}");
        }
    }
}
