//! Replication: the master's long-poll (`GET /changes?after=SEQ`) and the
//! follower loop of a backend.
//!
//! The master answers at once when it has entries after `SEQ` (up to
//! [`BATCH`]), otherwise holds the request until a change is committed or
//! [`HOLD`] passes. A follower whose `SEQ` is beyond the master's head (it
//! holds changes the master does not) gets the whole log with `reset` and
//! replaces its state. The follower applies each entry in its own durable
//! transaction, so after a crash it resumes from the last applied CSN.

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use super::api::Changes;
use super::node::ClusterNode;
use super::server::{Refusal, Reply, refuse, to_reply};
use super::{Change, ClusterError, Result, Role, time};

/// Longest time the master holds a long-poll.
pub const HOLD: Duration = Duration::from_secs(25);
/// Most entries in one answer.
pub const BATCH: usize = 500;

/// `after=N` of a query string.
pub fn after_param(query: &str) -> Option<u64> {
    param(query, "after")
}

/// `NAME=N` of a query string.
pub fn param(query: &str, name: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// `GET /changes?after=SEQ`: the master serves backends; every backend
/// (the master included) serves frontends from its own copy of the log.
pub async fn serve_changes(
    node: &Arc<ClusterNode>,
    member: &super::MemberRecord,
    query: &str,
) -> Reply {
    let frontend = member.role == Role::Frontend;
    let (meta, _) = if frontend {
        node.serving_backend()
    } else {
        node.serving_master()
    }
    .map_err(refuse(StatusCode::CONFLICT))?;
    let after = after_param(query)
        .ok_or_else(|| Refusal(StatusCode::BAD_REQUEST, "missing after=SEQ".into()))?;
    let internal = refuse(StatusCode::INTERNAL_SERVER_ERROR);
    let mut watch = node.watch_head();
    let head = node.db.head().map_err(&internal)?;
    // The follower names the epoch of its entry at `after`: when this log
    // holds another entry there, the logs diverged (it applied changes of
    // an older master that this one does not hold) and it must resync.
    let diverged = match param(query, "epoch") {
        Some(epoch) if after > 0 && after <= head => node
            .db
            .entry(after)
            .map_err(&internal)?
            .is_none_or(|e| e.csn.epoch != epoch),
        _ => false,
    };
    // A frontend ahead of this backend came from a backend that is further
    // along: it waits here until this one catches up, it is not reset.
    let ahead = after > head && !frontend;
    if ahead || diverged {
        let entries = node.db.entries_after(0, usize::MAX).map_err(&internal)?;
        return to_reply(&Changes {
            epoch: meta.epoch,
            head,
            reset: true,
            entries,
        });
    }
    if after >= head {
        let deadline = tokio::time::sleep(HOLD);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = node.stop.cancelled() => break,
                changed = watch.changed() => {
                    if changed.is_err() || *watch.borrow() > after.max(head) {
                        break;
                    }
                }
            }
        }
    }
    let entries = node.db.entries_after(after, BATCH).map_err(&internal)?;
    let head = node.db.head().map_err(&internal)?;
    to_reply(&Changes {
        epoch: meta.epoch,
        head,
        reset: false,
        entries,
    })
}

/// Why a follower stopped for good.
enum Stop {
    /// Deleted, left, or told to stop.
    Detached(String),
    /// Cancelled.
    Cancelled,
}

/// Follows the master until `token` is cancelled or the node is detached.
pub async fn follow(node: Arc<ClusterNode>, token: CancellationToken) {
    let mut delay = Duration::from_millis(500);
    loop {
        match poll(&node, &token).await {
            Ok(()) => delay = Duration::from_millis(500),
            Err(Ok(Stop::Cancelled)) => return,
            Err(Ok(Stop::Detached(why))) => {
                warn!(reason = %why, "no longer following the master");
                if let Ok(Some(mut local)) = node.db.local() {
                    local.detached = Some(why);
                    let _ = node.db.set_local(&local);
                }
                return;
            }
            Err(Err(e)) => {
                let message = e.to_string();
                let repeated = node
                    .follow
                    .lock()
                    .map(|f| f.error.as_deref() == Some(message.as_str()))
                    .unwrap_or(false);
                if !repeated {
                    if node.is_frontend() {
                        warn!(error = %message, "frontend: cannot get changes from this backend; trying the next one");
                    } else {
                        warn!(error = %message, "cannot follow the master; retrying");
                    }
                }
                node.next_backend();
                if let Ok(mut f) = node.follow.lock() {
                    f.error = Some(message);
                }
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(4));
            }
        }
    }
}

async fn poll(
    node: &Arc<ClusterNode>,
    token: &CancellationToken,
) -> std::result::Result<(), Result<Stop>> {
    let (meta, local) = node.clustered().map_err(Err)?;
    if let Some(why) = local.detached {
        return Err(Ok(Stop::Detached(why)));
    }
    let head = node.db.head().map_err(Err)?;
    let last_epoch = node
        .db
        .last_entry()
        .map_err(Err)?
        .map_or(0, |e| e.csn.epoch);
    let path = format!("/changes?after={head}&epoch={last_epoch}");
    let Some((target_name, target_address)) = node.follow_target() else {
        return Err(Err(ClusterError::NotClustered));
    };
    if target_name == node.name {
        // This node is the master (it was promoted): nothing to follow.
        return Err(Ok(Stop::Cancelled));
    }
    let call = node.call(
        &target_address,
        "GET",
        &path,
        None::<&()>,
        HOLD + Duration::from_secs(15),
    );
    let answer = tokio::select! {
        _ = token.cancelled() => return Err(Ok(Stop::Cancelled)),
        answer = call => answer,
    };
    let answer = match answer {
        Err(ClusterError::Revoked { peer }) => {
            warn!(%peer, "the master refuses this node's certificate as revoked");
            return Err(Ok(Stop::Detached(
                "deleted from the cluster by the master".into(),
            )));
        }
        other => other.map_err(Err)?,
    };
    let changes: Changes = answer.json(&target_name).map_err(Err)?;
    let seen = node.seen_epoch().max(meta.epoch);
    if changes.epoch < seen {
        // Fencing (SPEC section 8): never apply changes of an older epoch.
        return Err(Err(ClusterError::Refused {
            peer: target_address.clone(),
            reason: format!(
                "it serves epoch {} but this node has seen epoch {seen}; not applying its changes",
                changes.epoch
            ),
        }));
    }
    let mut deleted = None;
    let was_empty = local.role == Role::Frontend && node.db.policy().map_err(Err)?.is_none();
    if changes.reset && local.role == Role::Frontend {
        // A frontend keeps nothing of its own: it takes the log as it is.
        node.db.reset(&local, &changes.entries).map_err(Err)?;
    } else if changes.reset {
        info!(
            entries = changes.entries.len(),
            "the master sent its whole log; replacing the local state"
        );
        let discarded = node.db.resync(&local, &changes.entries).map_err(Err)?;
        for d in &discarded {
            warn!(csn = %format!("{}.{}", d.csn.epoch, d.csn.seq), origin = %d.csn.origin,
                change = %d.summary, by_epoch = d.by_epoch,
                "change discarded: the master of a later epoch does not hold it");
        }
        if !discarded.is_empty() {
            warn!(
                count = discarded.len(),
                "resynchronised with the new master; see `cluster status` for the discarded changes"
            );
        }
    } else {
        for entry in &changes.entries {
            node.db
                .apply(entry)
                .map_err(|e| Err(ClusterError::Db(format!("{e}; will ask again"))))?;
        }
    }
    for entry in &changes.entries {
        if let Change::MemberDeleted { name, reason } = &entry.change
            && *name == node.name
        {
            deleted = Some(format!("{reason} (change {})", entry.csn.seq));
        }
    }
    if let Ok(mut f) = node.follow.lock() {
        f.remote_head = changes.head;
        f.contact = Some(time::now());
        f.error = None;
    }
    if !changes.entries.is_empty() {
        let new_head = node.db.head().map_err(Err)?;
        node.notify(new_head);
        info!(
            head = new_head,
            applied = changes.entries.len(),
            "replicated changes applied"
        );
        node.refresh_policy();
        if was_empty && node.db.policy().map_err(Err)?.is_some() {
            info!(backend = %target_name, entries = new_head, "frontend: cluster state received; routing with the cluster's policy");
        }
    }
    if let Some(why) = deleted {
        if why.starts_with("left") {
            return Err(Ok(Stop::Detached("left the cluster".into())));
        }
        return Err(Ok(Stop::Detached(format!(
            "deleted from the cluster by the master: {why}"
        ))));
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
