//! `cluster promote --force`: disaster recovery when a majority of the
//! backends is lost for good. Like etcd's `--force-new-cluster`, the
//! survivor rewrites the membership from its own state while its engine is
//! stopped: it appends one membership entry that names itself as the only
//! voter, at a new term, and records its own vote for that term as
//! committed. Started again, openraft restores it as the master of that
//! term at once (a single voter is its own majority); the backends it can
//! reach are added back as learners and then voters by the membership
//! watch ([`crate::cluster::membership`]).
//!
//! Whatever the lost backends committed after the survivor last heard from
//! them is lost with them; they are fenced (marked deleted, their
//! certificates refused) by the caller.

#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use redb::Database;

use super::store::LogStore;
use super::{Peer, Raft, StorageError};

/// Rewrites the membership in `db` so that `me` (`peer`) is the only
/// voter, at a term above every term it has seen; returns that term.
pub async fn single_voter(db: Arc<Database>, me: u64, peer: Peer) -> Result<u64, StorageError> {
    let mut log = LogStore::open(db)?;
    let state = log.get_log_state().await?;
    let vote = log.read_vote().await?.unwrap_or_default();
    let last = state.last_log_id;
    let term = vote
        .leader_id()
        .term
        .max(last.map_or(0, |id| id.leader_id.term))
        + 1;
    let index = last.map_or(0, |id| id.index + 1);
    let membership = Membership::new(vec![BTreeSet::from([me])], BTreeMap::from([(me, peer)]));
    let entry: Entry<Raft> = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, me), index),
        payload: EntryPayload::Membership(membership),
    };
    log.append_now(entry)?;
    log.save_vote(&Vote::new_committed(term, me)).await?;
    Ok(term)
}
