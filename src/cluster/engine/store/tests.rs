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
    let proposal = |version| super::super::Proposal {
        origin: "gw1".into(),
        time: 1_700_000_000,
        change: crate::cluster::Change::Policy {
            version,
            text: "# policy".into(),
        },
    };
    let entries: Vec<Entry<Raft>> = (1..=3)
        .map(|index| Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(proposal(index)),
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
    assert_eq!(policy, Some(3));
}

/// The directory the crash writer works in (set by the crash test only).
const CRASH_DIR: &str = "MXGATE_ENGINE_CRASH_DIR";
/// Entries the writer has acknowledged before it is killed.
const ACKNOWLEDGED_BEFORE_KILL: u64 = 200;

fn proposal(index: u64) -> openraft::Entry<Raft> {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    let change = crate::cluster::Change::Policy {
        version: index,
        text: format!("# policy {index}"),
    };
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(super::super::Proposal {
            origin: "gw1".into(),
            time: index,
            change,
        }),
    }
}

/// Run by `a_sigkill_during_a_burst_loses_no_acknowledged_entry` in a
/// child process: appends and applies one entry at a time and prints each
/// index once its append returned, until it is killed (at most 100 000).
#[tokio::test]
#[ignore = "the crash test's child process"]
async fn crash_writer() {
    use std::io::Write;
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let db = Arc::new(Database::create(std::path::Path::new(&dir).join("cluster.redb")).unwrap());
    let mut log = LogStore::open(db.clone()).unwrap();
    let mut machine = StateMachine::open(db).unwrap();
    for index in 1..=100_000 {
        log.blocking_append([proposal(index)]).await.unwrap();
        machine.apply([proposal(index)]).await.unwrap();
        println!("acknowledged {index}");
        std::io::stdout().flush().unwrap();
    }
}

#[tokio::test]
async fn a_sigkill_during_a_burst_loses_no_acknowledged_entry() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use openraft::RaftLogReader;

    let dir = tempfile::tempdir().expect("temporary directory");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "cluster::engine::store::tests::crash_writer"])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let stdout = child.stdout.take().expect("writer's stdout");
    let mut acknowledged = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the writer");
        if let Some(index) = line.strip_prefix("acknowledged ") {
            acknowledged = index.parse().expect("an index");
            if acknowledged >= ACKNOWLEDGED_BEFORE_KILL {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap the writer");
    assert!(
        acknowledged >= ACKNOWLEDGED_BEFORE_KILL,
        "the writer stopped at {acknowledged}"
    );

    let db = Arc::new(Database::create(dir.path().join("cluster.redb")).expect("reopen"));
    let mut log = LogStore::open(db.clone()).expect("log");
    let last = (log.get_log_state().await.expect("log state").last_log_id).map_or(0, |id| id.index);
    assert!(
        last >= acknowledged,
        "log ends at {last}, {acknowledged} were acknowledged"
    );
    let entries = log
        .try_get_log_entries(1..=last)
        .await
        .expect("read the log");
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (1..=last).collect::<Vec<_>>(), "a gap in the log");
    let mut machine = StateMachine::open(db).expect("machine");
    let (applied, _) = machine.applied_state().await.expect("applied");
    let applied = applied.map_or(0, |id| id.index);
    assert!(
        applied >= acknowledged && applied <= last,
        "applied {applied}, log {last}"
    );
    let version = machine.state().policy.as_ref().map(|p| p.version);
    assert_eq!(
        version,
        Some(applied),
        "the state is the one of the applied entry"
    );
}
