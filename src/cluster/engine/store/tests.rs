//! The redb storage against openraft's own storage test suite, and a
//! reopen test: what was appended and applied is there after the database
//! is opened again.

use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use redb::Database;

use super::{LogStore, StateMachine};
use crate::cluster::engine::{Raft, StorageError};

/// A fresh database in a temporary directory per test (the guard removes it).
struct RedbBuilder;

fn fresh() -> Result<(tempfile::TempDir, Arc<Database>), StorageError> {
    let io = |e: &dyn std::fmt::Display| {
        StorageError::from(openraft::StorageIOError::write(openraft::AnyError::error(
            e,
        )))
    };
    let dir = tempfile::tempdir().map_err(|e| io(&e))?;
    let db = Database::create(dir.path().join("cluster.redb")).map_err(|e| io(&e))?;
    Ok((dir, Arc::new(db)))
}

impl StoreBuilder<Raft, LogStore, StateMachine, tempfile::TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let (dir, db) = fresh()?;
        Ok((dir, LogStore::open(db.clone())?, StateMachine::open(db)?))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(RedbBuilder).expect("openraft's storage suite");
}

#[tokio::test]
async fn a_reopened_database_has_the_log_and_the_applied_state() {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};

    let (_dir, db) = fresh().expect("database");
    let log_id = |index| LogId::new(CommittedLeaderId::new(3, 1), index);
    let change = crate::cluster::Change::Policy {
        version: 7,
        text: "# policy".into(),
    };
    let proposal = super::super::Proposal {
        origin: "gw1".into(),
        time: 1_700_000_000,
        change,
    };
    let entries: Vec<Entry<Raft>> = (1..=3)
        .map(|index| Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(proposal.clone()),
        })
        .collect();
    {
        let mut log = LogStore::open(db.clone()).expect("log");
        log.blocking_append(entries.clone()).await.expect("append");
        let mut machine = StateMachine::open(db.clone()).expect("machine");
        machine.apply(entries.clone()).await.expect("apply");
    }
    let mut log = LogStore::open(db.clone()).expect("log again");
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id, Some(log_id(3)));
    assert_eq!(log.try_get_log_entries(1..4).await.expect("read"), entries);
    let mut machine = StateMachine::open(db).expect("machine again");
    let (applied, _) = machine.applied_state().await.expect("applied");
    assert_eq!(applied, Some(log_id(3)));
    let policy = machine.state().policy.as_ref().map(|p| p.version);
    assert_eq!(policy, Some(7));
}
