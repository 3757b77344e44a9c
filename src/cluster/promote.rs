//! Failover (SPEC section 8): `cluster promote`, the lossless handover,
//! promises, `cluster sync --master` and `GET /hello`.
//!
//! Epoch fencing: a promote commits a `promoted` change at epoch + 1 as the
//! first entry of the new epoch, in one durable transaction that also
//! rewrites the cluster record; only then does the node accept changes. A
//! node gives at most one candidate a promise per epoch (durably), and a
//! promote without `--force` needs the promises of a majority of the
//! backends, so two masters of one epoch cannot exist. Any node that sees a
//! higher epoch (in any request or answer) stops accepting changes at once
//! and follows the new master.
//!
//! Handover (`promote --force` while the master is reachable): the master
//! promises epoch + 1 to the candidate and from then on refuses changes,
//! answers with every entry the candidate lacks, and follows the candidate;
//! the candidate applies them and commits the promotion. Nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use tracing::{info, warn};

pub use super::api::{Candidacy, Hello, Promoted};
use super::node::ClusterNode;
use super::replicate::Changes;
use super::server::{Refusal, Reply, refuse, to_reply};
use super::transport::MasterHint;
use super::{Change, ClusterError, MemberRecord, Promise, Result, Role, time};

/// `GET /hello`.
pub fn serve_hello(node: &Arc<ClusterNode>) -> Reply {
    let known = node
        .known_master()
        .ok_or_else(|| Refusal(StatusCode::CONFLICT, "not in a cluster".into()))?;
    to_reply(&Hello {
        name: node.name.clone(),
        epoch: known.epoch,
        master: known.master,
        master_address: known.master_address,
    })
}

fn position(node: &ClusterNode) -> Result<(u64, u64)> {
    let head = node.db.head()?;
    let last_epoch = node.db.last_entry()?.map_or(0, |e| e.csn.epoch);
    Ok((head, last_epoch))
}

/// `POST /promise`: `member` asks this node to accept it as master of
/// `epoch`. Granted (durably) when the epoch is above every epoch this node
/// has seen or promised to another, this node is not a reachable master,
/// and the candidate's log is at least as recent as this node's.
pub async fn serve_promise(node: &Arc<ClusterNode>, member: &MemberRecord, body: &[u8]) -> Reply {
    let conflict = |m: String| Refusal(StatusCode::CONFLICT, m);
    let request: Candidacy = serde_json::from_slice(body)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("bad promise request: {e}")))?;
    let _guard = node.write.lock().await;
    let internal = refuse(StatusCode::INTERNAL_SERVER_ERROR);
    let (meta, _) = node.clustered().map_err(&internal)?;
    if node.master().is_ok() {
        return Err(conflict(format!(
            "{} is the master of epoch {} and reachable; promote with --force for a handover",
            node.name, meta.epoch
        )));
    }
    if let Some(p) = node.db.promise().map_err(&internal)?
        && p.epoch >= request.epoch
        && p.candidate != member.name
    {
        return Err(conflict(format!(
            "promised epoch {} to {} already",
            p.epoch, p.candidate
        )));
    }
    let known = node.known_master().map_or(0, |k| k.epoch);
    if request.epoch <= known.max(meta.epoch) {
        return Err(conflict(format!(
            "epoch {} is not above epoch {known} this node knows",
            request.epoch
        )));
    }
    let (head, last_epoch) = position(node).map_err(&internal)?;
    if (last_epoch, head) > (request.last_epoch, request.head) {
        return Err(conflict(format!(
            "this node holds changes up to {last_epoch}.{head}, the candidate only up to {}.{}; promote this node instead",
            request.last_epoch, request.head
        )));
    }
    let promise = Promise {
        epoch: request.epoch,
        candidate: member.name.clone(),
    };
    node.db.set_promise(&promise).map_err(&internal)?;
    info!(epoch = promise.epoch, candidate = %promise.candidate, "promised the candidate mastership of the epoch");
    to_reply(&promise)
}

/// `POST /handover` on the master: promises epoch + 1 to `member`, stops
/// accepting changes, answers with what the candidate lacks and follows it.
pub async fn serve_handover(node: &Arc<ClusterNode>, member: &MemberRecord, body: &[u8]) -> Reply {
    let request: Candidacy = serde_json::from_slice(body).map_err(|e| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("bad handover request: {e}"),
        )
    })?;
    if member.role != Role::Backend {
        return Err(Refusal(
            StatusCode::CONFLICT,
            "only a backend can become master".into(),
        ));
    }
    let _guard = node.write.lock().await;
    let (meta, _) = node.master().map_err(refuse(StatusCode::CONFLICT))?;
    let internal = refuse(StatusCode::INTERNAL_SERVER_ERROR);
    // The candidate may have seen (promised) a higher epoch than this
    // master's, of a master this one never heard of: the new epoch must be
    // above that one too, or two masters of one epoch would exist.
    let promise = Promise {
        epoch: (meta.epoch + 1).max(request.epoch),
        candidate: member.name.clone(),
    };
    node.db.set_promise(&promise).map_err(&internal)?;
    warn!(candidate = %member.name, epoch = promise.epoch, "handing over mastership: this node accepts no more changes");
    let head = node.db.head().map_err(&internal)?;
    let diverged = request.head > head
        || (request.head > 0
            && node
                .db
                .entry(request.head)
                .map_err(&internal)?
                .is_none_or(|e| e.csn.epoch != request.last_epoch));
    let entries = node
        .db
        .entries_after(if diverged { 0 } else { request.head }, usize::MAX)
        .map_err(&internal)?;
    if let Ok(mut hint) = node.hint.lock() {
        *hint = Some(MasterHint {
            epoch: promise.epoch,
            master: member.name.clone(),
            master_address: member.address.clone(),
        });
    }
    node.start_follower();
    to_reply(&Changes {
        epoch: meta.epoch,
        head,
        reset: diverged,
        entries,
    })
}

/// `cluster promote [--force]` on a backend.
pub async fn promote(node: &Arc<ClusterNode>, force: bool) -> Result<Promoted> {
    let _guard = node.write.lock().await;
    let (meta, local) = node.clustered()?;
    if let Some(why) = &local.detached {
        return Err(ClusterError::Invalid(format!(
            "this node is no longer in the cluster ({why}); join again first"
        )));
    }
    if local.role != Role::Backend {
        return Err(ClusterError::Invalid(
            "only a backend can be promoted; a frontend holds no database".into(),
        ));
    }
    if local.ca_key_pem.is_none() {
        return Err(ClusterError::Invalid(
            "this node holds no copy of the cluster CA key, so it could not sign joins as master; promote another backend".into(),
        ));
    }
    let known = node.known_master().ok_or(ClusterError::NotClustered)?;
    if known.master == node.name {
        return Err(ClusterError::Invalid(format!(
            "this node is the master of epoch {} already",
            known.epoch
        )));
    }
    let reachable = node
        .call(
            &known.master_address,
            "GET",
            "/hello",
            None::<&()>,
            Duration::from_secs(3),
        )
        .await
        .map(|a| a.status == 200)
        .unwrap_or(false);
    // The call may have taught us a newer master.
    let known = node.known_master().ok_or(ClusterError::NotClustered)?;
    let backends: Vec<MemberRecord> = node
        .db
        .members()?
        .into_iter()
        .filter(|m| !m.deleted && m.role == Role::Backend)
        .collect();
    let (handover, epoch, promises) = if reachable {
        if !force {
            return Err(ClusterError::Invalid(format!(
                "the master {} ({}) is reachable; to move mastership without losing anything run `mxgate cluster promote --force`: \
                 the master stops accepting changes, this node catches up to its last change, then takes over",
                known.master, known.master_address
            )));
        }
        node.stop_follower();
        let (head, last_epoch) = position(node)?;
        // Above every epoch this node has seen, a promise it gave included:
        // that candidate may have become master of it, unknown to the
        // master handing over.
        let request = Candidacy {
            epoch: known.epoch.max(node.seen_epoch()).max(meta.epoch) + 1,
            head,
            last_epoch,
        };
        let answer = node
            .call(
                &known.master_address,
                "POST",
                "/handover",
                Some(&request),
                Duration::from_secs(15),
            )
            .await;
        let changes: Changes = match answer.and_then(|a| a.json(&known.master)) {
            Ok(c) => c,
            Err(e) => {
                node.start_follower();
                return Err(e);
            }
        };
        if changes.reset {
            for d in node.db.resync(&local, &changes.entries)? {
                warn!(csn = %format!("{}.{}", d.csn.epoch, d.csn.seq), change = %d.summary, "change discarded at handover");
            }
        } else {
            for entry in &changes.entries {
                node.db.apply(entry)?;
            }
        }
        info!(
            head = node.db.head()?,
            "caught up with the master's last change"
        );
        (
            true,
            (changes.epoch + 1).max(request.epoch),
            vec![node.name.clone(), known.master.clone()],
        )
    } else {
        let epoch = node.seen_epoch().max(meta.epoch) + 1;
        let (head, last_epoch) = position(node)?;
        let request = Candidacy {
            epoch,
            head,
            last_epoch,
        };
        let mut granted = vec![node.name.clone()];
        let mut refusals = Vec::new();
        for m in backends.iter().filter(|m| m.name != node.name) {
            let answer = node
                .call(
                    &m.address,
                    "POST",
                    "/promise",
                    Some(&request),
                    Duration::from_secs(5),
                )
                .await
                .and_then(|a| a.json::<Promise>(&m.name));
            match answer {
                Ok(_) => granted.push(m.name.clone()),
                Err(e) => refusals.push((m.name.clone(), e.to_string())),
            }
        }
        if let Some((who, why)) = refusals.iter().find(|(_, why)| why.contains("promised")) {
            return Err(ClusterError::Invalid(format!(
                "{who} {why}: another node is being promoted; check `mxgate cluster status` there"
            )));
        }
        let majority = backends.len() / 2 + 1;
        if granted.len() < majority {
            let why: Vec<String> = refusals.iter().map(|(n, e)| format!("{n}: {e}")).collect();
            if !force {
                return Err(ClusterError::Invalid(format!(
                    "only {} of {} backends agreed ({}); a majority ({majority}) must, so that two masters cannot exist. \
                     If the others are lost for good, run `mxgate cluster promote --force`",
                    granted.len(),
                    backends.len(),
                    why.join("; ")
                )));
            }
            warn!(granted = granted.len(), backends = backends.len(), refusals = %why.join("; "),
                "promoting without a majority (--force)");
        }
        (false, epoch, granted)
    };
    if let Some(k) = node.known_master()
        && k.epoch >= epoch
        && k.master != node.name
    {
        node.start_follower();
        return Err(ClusterError::Invalid(format!(
            "{} became master of epoch {} meanwhile; this node follows it",
            k.master, k.epoch
        )));
    }
    node.stop_follower();
    let entry = node.db.append(
        epoch,
        &node.name,
        time::now(),
        Change::Promoted {
            epoch,
            master: node.name.clone(),
            master_address: node.advertise.to_string(),
        },
    )?;
    if let Ok(mut hint) = node.hint.lock() {
        *hint = None;
    }
    node.notify(entry.csn.seq);
    node.refresh_policy();
    warn!(epoch, previous = %known.master, handover, "this node is now the master");
    Ok(Promoted {
        epoch,
        master: node.name.clone(),
        previous: known.master,
        handover,
        promises,
        backends: backends.len(),
        seq: entry.csn.seq,
    })
}

/// `cluster sync --master HOST[:PORT]`: asks that node who is master and
/// follows it (when no member this node knows can tell it).
pub async fn sync(node: &Arc<ClusterNode>, target: &str) -> Result<Hello> {
    let (_, local) = node.clustered()?;
    if let Some(why) = &local.detached {
        return Err(ClusterError::Invalid(format!(
            "this node is no longer in the cluster ({why}); join again instead"
        )));
    }
    let hello: Hello = node
        .call(
            target,
            "GET",
            "/hello",
            None::<&()>,
            Duration::from_secs(10),
        )
        .await?
        .json(target)?;
    let seen = node.seen_epoch();
    if hello.epoch < seen {
        return Err(ClusterError::Invalid(format!(
            "{target} knows epoch {} only, this node has seen epoch {seen}; sync with the master of the highest epoch",
            hello.epoch
        )));
    }
    if hello.master == node.name {
        return Err(ClusterError::Invalid(format!(
            "{target} says this node is the master of epoch {}",
            hello.epoch
        )));
    }
    if let Ok(mut hint) = node.hint.lock() {
        *hint = Some(MasterHint {
            epoch: hello.epoch,
            master: hello.master.clone(),
            master_address: hello.master_address.clone(),
        });
    }
    node.start_follower();
    info!(master = %hello.master, epoch = hello.epoch, "following the master named by cluster sync");
    Ok(hello)
}
