//! openraft's storage over the node's redb database: the log ([`LogStore`])
//! and the state machine with its snapshots ([`StateMachine`]).
//!
//! Durability: every write is one redb write transaction, committed (and so
//! on disk) before openraft is told it is done; an entry counts only once
//! its append has committed. Tables: `raft_log` (index -> entry, JSON) and
//! `raft_meta` (the vote, the committed and purged log ids, the applied
//! state machine and the current snapshot). Purging removes the entries a
//! snapshot covers, so the log does not grow without bound.

// openraft's traits return its `StorageError` (224 bytes); the helpers
// here return the same type rather than box it at every boundary.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::state::ClusterState;
use super::{Applied, Peer, Raft, Replica, StorageError};
use crate::cluster::Csn;
use crate::cluster::api::Discarded;
use tokio::sync::watch;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const K_VOTE: &str = "vote";
const K_COMMITTED: &str = "committed";
const K_PURGED: &str = "purged";
const K_MACHINE: &str = "machine";
const K_SNAPSHOT: &str = "snapshot";
const K_DISCARDED: &str = "discarded";

/// How many truncated entries are remembered for `cluster status`.
const DISCARDED_KEPT: usize = 100;

/// The entries this node had appended that a new master truncated.
pub fn discarded(db: &Database) -> Result<Vec<Discarded>, StorageError> {
    Ok(read_meta(db, K_DISCARDED, Io::read_logs)?.unwrap_or_default())
}

type Io = StorageIOError<u64>;

fn any(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e)
}

/// Creates the engine's tables in `db` when they are missing.
fn create_tables(db: &Database) -> Result<(), StorageError> {
    let write = |e: &dyn std::fmt::Display| StorageError::from(Io::write(any(e)));
    let txn = db.begin_write().map_err(|e| write(&e))?;
    txn.open_table(LOG).map_err(|e| write(&e))?;
    txn.open_table(META).map_err(|e| write(&e))?;
    txn.commit().map_err(|e| write(&e))
}

/// Reads `key` of `raft_meta`; `fail` makes the error for its subject.
fn read_meta<T: DeserializeOwned>(
    db: &Database,
    key: &str,
    fail: fn(AnyError) -> Io,
) -> Result<Option<T>, StorageError> {
    let err = |e: &dyn std::fmt::Display| StorageError::from(fail(any(e)));
    let txn = db.begin_read().map_err(|e| err(&e))?;
    let table = txn.open_table(META).map_err(|e| err(&e))?;
    let Some(value) = table.get(key).map_err(|e| err(&e))? else {
        return Ok(None);
    };
    serde_json::from_slice(value.value()).map_err(|e| err(&e))
}

/// Writes `values` into `raft_meta` in one committed transaction.
fn write_meta(
    db: &Database,
    values: &[(&str, Vec<u8>)],
    fail: fn(AnyError) -> Io,
) -> Result<(), StorageError> {
    let err = |e: &dyn std::fmt::Display| StorageError::from(fail(any(e)));
    let txn = db.begin_write().map_err(|e| err(&e))?;
    {
        let mut table = txn.open_table(META).map_err(|e| err(&e))?;
        for (key, value) in values {
            table.insert(*key, value.as_slice()).map_err(|e| err(&e))?;
        }
    }
    txn.commit().map_err(|e| err(&e))
}

fn json<T: Serialize>(value: &T, fail: fn(AnyError) -> Io) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| StorageError::from(fail(any(e))))
}

/// The Raft log in `raft_log`, with the vote and the purge point.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// The log in `db` (tables made when missing).
    pub fn open(db: Arc<Database>) -> Result<LogStore, StorageError> {
        create_tables(&db)?;
        Ok(LogStore { db })
    }

    /// Appends `entry` durably, outside the engine (`promote --force`,
    /// while the engine is stopped).
    pub fn append_now(&self, entry: Entry<Raft>) -> Result<(), StorageError> {
        self.insert([entry])
    }

    /// Writes `entries` in one committed transaction.
    fn insert(&self, entries: impl IntoIterator<Item = Entry<Raft>>) -> Result<(), StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::from(Io::write_logs(any(e)));
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| err(&e))?;
            for entry in entries {
                let value = serde_json::to_vec(&entry).map_err(|e| err(&e))?;
                (table.insert(entry.log_id.index, value.as_slice())).map_err(|e| err(&e))?;
            }
        }
        txn.commit().map_err(|e| err(&e))
    }

    /// Removes every entry, the vote and the state machine: a backend that
    /// leaves a cluster or joins another starts from nothing.
    pub fn wipe(db: &Database) -> Result<(), StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::from(Io::write(any(e)));
        let txn = db.begin_write().map_err(|e| err(&e))?;
        txn.delete_table(LOG).map_err(|e| err(&e))?;
        txn.delete_table(META).map_err(|e| err(&e))?;
        txn.open_table(LOG).map_err(|e| err(&e))?;
        txn.open_table(META).map_err(|e| err(&e))?;
        txn.commit().map_err(|e| err(&e))
    }

    fn last_entry(&self) -> Result<Option<Entry<Raft>>, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::from(Io::read_logs(any(e)));
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let table = txn.open_table(LOG).map_err(|e| err(&e))?;
        let Some((_, value)) = table.last().map_err(|e| err(&e))? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value()).map_err(|e| err(&e))
    }

    /// Removes the entries of `range` from the log, and writes `meta` in
    /// the same transaction.
    fn remove(
        &self,
        range: impl RangeBounds<u64>,
        meta: Option<(&str, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::from(Io::write_logs(any(e)));
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut log = txn.open_table(LOG).map_err(|e| err(&e))?;
            let keys = (log.range(range).map_err(|e| err(&e))?)
                .map(|item| item.map(|(key, _)| key.value()))
                .collect::<Result<Vec<u64>, _>>()
                .map_err(|e| err(&e))?;
            for key in keys {
                log.remove(key).map_err(|e| err(&e))?;
            }
            if let Some((key, value)) = &meta {
                let mut table = txn.open_table(META).map_err(|e| err(&e))?;
                table.insert(*key, value.as_slice()).map_err(|e| err(&e))?;
            }
        }
        txn.commit().map_err(|e| err(&e))
    }
}

impl RaftLogReader<Raft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Raft>>, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::from(Io::read_logs(any(e)));
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let table = txn.open_table(LOG).map_err(|e| err(&e))?;
        let mut entries = Vec::new();
        for item in table.range(range).map_err(|e| err(&e))? {
            let (_, value) = item.map_err(|e| err(&e))?;
            entries.push(serde_json::from_slice(value.value()).map_err(|e| err(&e))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<Raft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<Raft>, StorageError> {
        let last_purged_log_id: Option<LogId<u64>> = read_meta(&self.db, K_PURGED, Io::read_logs)?;
        let last = self.last_entry()?.map(|entry| entry.log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let value = json(vote, Io::write_vote)?;
        write_meta(&self.db, &[(K_VOTE, value)], Io::write_vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        read_meta(&self.db, K_VOTE, Io::read_vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        let value = json(&committed, Io::write)?;
        write_meta(&self.db, &[(K_COMMITTED, value)], Io::write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        Ok(read_meta::<Option<LogId<u64>>>(&self.db, K_COMMITTED, Io::read)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<Raft>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<Raft>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Committed, so on disk: only now does the entry count.
        self.insert(entries)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let truncated = self.try_get_log_entries(log_id.index..).await?;
        let by_epoch = read_meta::<Vote<u64>>(&self.db, K_VOTE, Io::read_vote)?
            .map_or(0, |v| v.leader_id().term);
        let mut discarded = discarded(&self.db)?;
        discarded.extend(truncated.iter().filter_map(|entry| match &entry.payload {
            EntryPayload::Normal(proposal) => Some(Discarded {
                csn: Csn {
                    epoch: entry.log_id.leader_id.term,
                    seq: entry.log_id.index,
                    origin: proposal.origin.clone(),
                    time: proposal.time,
                },
                summary: proposal.change.summary(),
                discarded_at: crate::time::now(),
                by_epoch,
            }),
            _ => None,
        }));
        let keep = discarded.len().saturating_sub(DISCARDED_KEPT);
        let value = json(&discarded.get(keep..), Io::write_logs)?;
        self.remove(log_id.index.., Some((K_DISCARDED, value)))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let purged = json(&log_id, Io::write_logs)?;
        self.remove(..=log_id.index, Some((K_PURGED, purged)))
    }
}

/// What the state machine keeps in `raft_meta` after every apply.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Machine {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, Peer>,
    state: ClusterState,
}

/// A snapshot as it is kept: its meta and its data (a [`Machine`] in JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, Peer>,
    data: Vec<u8>,
}

impl StoredSnapshot {
    fn into_snapshot(self) -> Snapshot<Raft> {
        Snapshot {
            meta: self.meta,
            snapshot: Box::new(Cursor::new(self.data)),
        }
    }
}

/// Where the state machine publishes what it applied.
pub type Publisher = Arc<watch::Sender<Arc<Replica>>>;

/// The cluster's state as the engine applies it, with its snapshots.
#[derive(Debug, Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    machine: Machine,
    publish: Option<Publisher>,
}

impl StateMachine {
    /// The state machine in `db`, as last applied.
    pub fn open(db: Arc<Database>) -> Result<StateMachine, StorageError> {
        create_tables(&db)?;
        let machine = read_meta(&db, K_MACHINE, Io::read_state_machine)?.unwrap_or_default();
        Ok(StateMachine {
            db,
            machine,
            publish: None,
        })
    }

    /// Publishes the state on `publish` now and after every apply and
    /// snapshot installed.
    pub fn publishing(mut self, publish: Publisher) -> StateMachine {
        self.publish = Some(publish);
        // An empty machine (a node that just joined) publishes nothing: the
        // state the join answered with stays until the first apply.
        if self.machine.applied.is_some() {
            self.published();
        }
        self
    }

    /// The replicated state as last applied.
    pub fn state(&self) -> &ClusterState {
        &self.machine.state
    }

    /// The state as last applied, with its log id.
    pub fn replica(&self) -> Replica {
        Replica {
            applied: self.machine.applied,
            state: self.machine.state.clone(),
        }
    }

    fn published(&self) {
        if let Some(publish) = &self.publish {
            publish.send_replace(Arc::new(self.replica()));
        }
    }

    fn save(&self, snapshot: Option<&StoredSnapshot>) -> Result<(), StorageError> {
        let mut values = vec![(K_MACHINE, json(&self.machine, Io::write_state_machine)?)];
        if let Some(snapshot) = snapshot {
            values.push((K_SNAPSHOT, json(snapshot, Io::write_state_machine)?));
        }
        write_meta(&self.db, &values, Io::write_state_machine)?;
        self.published();
        Ok(())
    }
}

impl RaftSnapshotBuilder<Raft> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Raft>, StorageError> {
        let data = json(&self.machine, Io::write_state_machine)?;
        let at = self.machine.applied;
        let made = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let snapshot_id = match at {
            Some(id) => format!("{}-{}-{made}", id.leader_id.term, id.index),
            None => format!("0-0-{made}"),
        };
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: at,
                last_membership: self.machine.membership.clone(),
                snapshot_id,
            },
            data,
        };
        let value = json(&stored, Io::write_state_machine)?;
        write_meta(&self.db, &[(K_SNAPSHOT, value)], Io::write_state_machine)?;
        Ok(stored.into_snapshot())
    }
}

impl RaftStateMachine<Raft> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, Peer>), StorageError> {
        Ok((self.machine.applied, self.machine.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry<Raft>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut outcomes = Vec::new();
        for entry in entries {
            self.machine.applied = Some(entry.log_id);
            outcomes.push(match entry.payload {
                EntryPayload::Blank => Applied::default(),
                EntryPayload::Normal(proposal) => {
                    self.machine.state.apply(&entry.log_id, &proposal)
                }
                EntryPayload::Membership(membership) => {
                    self.machine.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Applied::default()
                }
            });
        }
        self.save(None)?;
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Peer>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let signature = Some(meta.signature());
        let received: Machine = serde_json::from_slice(&data)
            .map_err(|e| StorageError::from(Io::read_snapshot(signature, any(e))))?;
        self.machine = Machine {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: received.state,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save(Some(&stored))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Raft>>, StorageError> {
        let stored: Option<StoredSnapshot> =
            read_meta(&self.db, K_SNAPSHOT, Io::read_state_machine)?;
        Ok(stored.map(StoredSnapshot::into_snapshot))
    }
}

#[cfg(test)]
mod tests;
