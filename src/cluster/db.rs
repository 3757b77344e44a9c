//! The embedded cluster database (`data_dir/cluster.redb`; in memory on a
//! frontend).
//!
//! Tables: `meta` (cluster record, this node, identifier state, current
//! policy; JSON values), `members` (name -> record), `policies` (version ->
//! text) and `log` (sequence -> CSN and change). Every write is one redb
//! write transaction, committed durably before the caller returns: the
//! master appends a change and applies it in the same transaction, a
//! follower applies a received entry the same way, and a join replaces
//! everything at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    Change, ClusterError, ClusterMeta, Csn, Discarded, IdentifierState, LocalNode, LogEntry,
    MemberRecord, PolicyVersion, Promise, Result,
};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const MEMBERS: TableDefinition<&str, &str> = TableDefinition::new("members");
const POLICIES: TableDefinition<u64, &str> = TableDefinition::new("policies");
const LOG: TableDefinition<u64, &str> = TableDefinition::new("log");

const K_CLUSTER: &str = "cluster";
const K_LOCAL: &str = "local";
const K_IDENTIFIER: &str = "identifier";
const K_POLICY: &str = "policy";
const K_PROMISE: &str = "promise";
const K_DISCARDED: &str = "discarded";

/// File name of the database inside `data_dir`.
pub const FILE_NAME: &str = "cluster.redb";

/// The path of the database in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// The cluster database: a file in `data_dir` on the master and on
/// backends, memory only on a frontend (SPEC section 8).
pub struct Db {
    db: ArcSwap<Database>,
    in_memory: AtomicBool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

impl Db {
    /// Opens (or creates) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Db> {
        use std::os::unix::fs::PermissionsExt;
        let file = path(data_dir);
        let db = Database::create(&file)?;
        // It holds this node's private key (and the CA key on the master).
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            ClusterError::Db(format!("cannot set mode 0600 on {}: {e}", file.display()))
        })?;
        Ok(Db {
            db: ArcSwap::from_pointee(with_tables(db)?),
            in_memory: AtomicBool::new(false),
        })
    }

    /// An empty database in memory only (a frontend's).
    pub fn open_in_memory() -> Result<Db> {
        Ok(Db {
            db: ArcSwap::from_pointee(memory_database()?),
            in_memory: AtomicBool::new(true),
        })
    }

    /// Replaces the database with an empty one in memory and removes the
    /// file from `data_dir`: a node that becomes a frontend keeps nothing
    /// of the cluster on disk.
    pub fn move_to_memory(&self, data_dir: &Path) -> Result<()> {
        self.db.store(Arc::new(memory_database()?));
        self.in_memory.store(true, Ordering::Relaxed);
        remove_if_present(&path(data_dir))
    }

    /// Puts the database back in a file in `data_dir` (a former frontend
    /// that joins as a backend); nothing happens when it is there already.
    pub fn move_to_disk(&self, data_dir: &Path) -> Result<()> {
        if !self.is_in_memory() {
            return Ok(());
        }
        let disk = Db::open(data_dir)?;
        self.db.store(disk.db.load_full());
        self.in_memory.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Empties the in-memory database (a frontend that detaches).
    pub fn clear_memory(&self) -> Result<()> {
        self.db.store(Arc::new(memory_database()?));
        Ok(())
    }

    /// Whether the database lives in memory only.
    pub fn is_in_memory(&self) -> bool {
        self.in_memory.load(Ordering::Relaxed)
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction> {
        Ok(self.db.load().begin_read()?)
    }

    fn begin_write(&self) -> Result<WriteTransaction> {
        Ok(self.db.load().begin_write()?)
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(META)?;
        match table.get(key)? {
            Some(v) => Ok(Some(serde_json::from_str(v.value())?)),
            None => Ok(None),
        }
    }

    /// The cluster record; `None` when this node is in no cluster.
    pub fn meta(&self) -> Result<Option<ClusterMeta>> {
        self.get(K_CLUSTER)
    }

    /// This node's identity.
    pub fn local(&self) -> Result<Option<LocalNode>> {
        self.get(K_LOCAL)
    }

    /// Identifier generation and join restrictions.
    pub fn identifier(&self) -> Result<IdentifierState> {
        Ok(self.get(K_IDENTIFIER)?.unwrap_or_default())
    }

    /// The current replicated policy.
    pub fn policy(&self) -> Result<Option<PolicyVersion>> {
        self.get(K_POLICY)
    }

    /// Every member record, deleted ones included, by cluster number.
    pub fn members(&self) -> Result<Vec<MemberRecord>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(MEMBERS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(serde_json::from_str::<MemberRecord>(v.value())?);
        }
        out.sort_by_key(|m| m.cid);
        Ok(out)
    }

    /// Sequence number of the last log entry (0: empty).
    pub fn head(&self) -> Result<u64> {
        let txn = self.begin_read()?;
        let table = txn.open_table(LOG)?;
        Ok(table.last()?.map_or(0, |(k, _)| k.value()))
    }

    /// Number of log entries.
    pub fn log_len(&self) -> Result<u64> {
        let txn = self.begin_read()?;
        Ok(txn.open_table(LOG)?.len()?)
    }

    /// The last log entry.
    pub fn last_entry(&self) -> Result<Option<LogEntry>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(LOG)?;
        match table.last()? {
            Some((_, v)) => Ok(Some(serde_json::from_str(v.value())?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` entries after sequence `after`.
    pub fn entries_after(&self, after: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(LOG)?;
        let mut out = Vec::new();
        for row in table.range(after.saturating_add(1)..)?.take(limit) {
            let (_, v) = row?;
            out.push(serde_json::from_str(v.value())?);
        }
        Ok(out)
    }

    /// The promise this node gave to a candidate master, if any.
    pub fn promise(&self) -> Result<Option<Promise>> {
        self.get(K_PROMISE)
    }

    /// Records a promise durably.
    pub fn set_promise(&self, promise: &Promise) -> Result<()> {
        let txn = self.begin_write()?;
        put(&txn, K_PROMISE, promise)?;
        txn.commit()?;
        Ok(())
    }

    /// The changes this node discarded at resynchronisations (oldest first).
    pub fn discarded(&self) -> Result<Vec<Discarded>> {
        Ok(self.get(K_DISCARDED)?.unwrap_or_default())
    }

    /// The entry at sequence `seq`.
    pub fn entry(&self, seq: u64) -> Result<Option<LogEntry>> {
        let txn = self.begin_read()?;
        let table = txn.open_table(LOG)?;
        match table.get(seq)? {
            Some(v) => Ok(Some(serde_json::from_str(v.value())?)),
            None => Ok(None),
        }
    }

    /// Resynchronisation with the master of a later epoch: replaces the log
    /// and state with `entries` (its whole log), keeping this node's identity
    /// and promise, and records every local entry the new log does not hold
    /// (same sequence, different CSN, or beyond its head) as discarded. One
    /// transaction; returns the newly discarded entries.
    pub fn resync(&self, local: &LocalNode, entries: &[LogEntry]) -> Result<Vec<Discarded>> {
        let mine = self.entries_after(0, usize::MAX)?;
        let by_epoch = entries.iter().map(|e| e.csn.epoch).max().unwrap_or(0);
        let now = super::time::now();
        let mut discarded = self.discarded()?;
        let fresh: Vec<Discarded> = mine
            .into_iter()
            .filter(|e| {
                entries
                    .get(e.csn.seq.saturating_sub(1) as usize)
                    .is_none_or(|theirs| theirs.csn != e.csn)
            })
            .map(|e| Discarded {
                summary: e.change.summary(),
                csn: e.csn,
                discarded_at: now,
                by_epoch,
            })
            .collect();
        discarded.extend(fresh.iter().cloned());
        let promise = self.promise()?;
        self.reset_with(local, entries, |txn| {
            put(txn, K_DISCARDED, &discarded)?;
            if let Some(p) = &promise {
                put(txn, K_PROMISE, p)?;
            }
            Ok(())
        })?;
        Ok(fresh)
    }

    /// Sets this node's identity (e.g. marks it detached).
    pub fn set_local(&self, local: &LocalNode) -> Result<()> {
        let txn = self.begin_write()?;
        put(&txn, K_LOCAL, local)?;
        txn.commit()?;
        Ok(())
    }

    /// Master: appends `change` with the next sequence number and applies
    /// it, in one durable transaction.
    pub fn append(&self, epoch: u64, origin: &str, time: u64, change: Change) -> Result<LogEntry> {
        let txn = self.begin_write()?;
        let seq = {
            let table = txn.open_table(LOG)?;
            table.last()?.map_or(0, |(k, _)| k.value()) + 1
        };
        let entry = LogEntry {
            csn: Csn {
                epoch,
                seq,
                origin: origin.to_string(),
                time,
            },
            change,
        };
        write_entry(&txn, &entry)?;
        txn.commit()?;
        Ok(entry)
    }

    /// Follower: applies one received entry, which must come right after
    /// the local head. Each entry is its own durable transaction.
    pub fn apply(&self, entry: &LogEntry) -> Result<()> {
        let txn = self.begin_write()?;
        let head = {
            let table = txn.open_table(LOG)?;
            table.last()?.map_or(0, |(k, _)| k.value())
        };
        if entry.csn.seq != head + 1 {
            return Err(ClusterError::Db(format!(
                "change {} does not follow the local head {head}; the node resynchronises",
                entry.csn.seq
            )));
        }
        write_entry(&txn, &entry.clone())?;
        txn.commit()?;
        Ok(())
    }

    /// Join and create: wipes every table, stores `local`, and applies
    /// `entries` (the master's full log), all in one transaction.
    pub fn reset(&self, local: &LocalNode, entries: &[LogEntry]) -> Result<()> {
        self.reset_with(local, entries, |_| Ok(()))
    }

    /// A frontend at start: its identity and the cluster record it kept,
    /// with an empty log that its backends fill.
    pub fn seed(&self, local: &LocalNode, meta: &ClusterMeta) -> Result<()> {
        self.reset_with(local, &[], |txn| put(txn, K_CLUSTER, meta))
    }

    fn reset_with(
        &self,
        local: &LocalNode,
        entries: &[LogEntry],
        extra: impl FnOnce(&WriteTransaction) -> Result<()>,
    ) -> Result<()> {
        let txn = self.begin_write()?;
        txn.delete_table(META)
            .map_err(|e| ClusterError::Db(e.to_string()))?;
        txn.delete_table(MEMBERS)
            .map_err(|e| ClusterError::Db(e.to_string()))?;
        txn.delete_table(POLICIES)
            .map_err(|e| ClusterError::Db(e.to_string()))?;
        txn.delete_table(LOG)
            .map_err(|e| ClusterError::Db(e.to_string()))?;
        txn.open_table(MEMBERS)?;
        txn.open_table(POLICIES)?;
        txn.open_table(LOG)?;
        put(&txn, K_LOCAL, local)?;
        for (expected, entry) in (1..).zip(entries) {
            if entry.csn.seq != expected {
                return Err(ClusterError::Db(format!(
                    "snapshot entry {} out of order (expected {expected})",
                    entry.csn.seq
                )));
            }
            write_entry(&txn, entry)?;
        }
        extra(&txn)?;
        txn.commit()?;
        Ok(())
    }
}

/// Removes `file`; a file that is not there is fine.
pub fn remove_if_present(file: &Path) -> Result<()> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ClusterError::Db(format!(
            "cannot remove {}: {e}",
            file.display()
        ))),
    }
}

/// Creates the tables of a new database.
fn with_tables(db: Database) -> Result<Database> {
    let txn = db.begin_write()?;
    txn.open_table(META)?;
    txn.open_table(MEMBERS)?;
    txn.open_table(POLICIES)?;
    txn.open_table(LOG)?;
    txn.commit()?;
    Ok(db)
}

fn memory_database() -> Result<Database> {
    let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
    with_tables(db)
}

fn put<T: Serialize>(txn: &WriteTransaction, key: &str, value: &T) -> Result<()> {
    let text = serde_json::to_string(value)?;
    txn.open_table(META)?.insert(key, text.as_str())?;
    Ok(())
}

/// Inserts the entry in the log and applies its change to the state tables.
fn write_entry(txn: &WriteTransaction, entry: &LogEntry) -> Result<()> {
    let text = serde_json::to_string(entry)?;
    txn.open_table(LOG)?.insert(entry.csn.seq, text.as_str())?;
    match &entry.change {
        Change::Created { meta } => put(txn, K_CLUSTER, meta)?,
        Change::Member { member } => {
            let text = serde_json::to_string(member)?;
            txn.open_table(MEMBERS)?
                .insert(member.name.as_str(), text.as_str())?;
        }
        Change::MemberDeleted { name, .. } => {
            let mut table = txn.open_table(MEMBERS)?;
            let record = match table.get(name.as_str())? {
                Some(v) => Some(serde_json::from_str::<MemberRecord>(v.value())?),
                None => None,
            };
            if let Some(mut record) = record {
                record.deleted = true;
                let text = serde_json::to_string(&record)?;
                table.insert(name.as_str(), text.as_str())?;
            }
        }
        Change::Policy { version, text } => {
            txn.open_table(POLICIES)?.insert(*version, text.as_str())?;
            put(
                txn,
                K_POLICY,
                &PolicyVersion {
                    version: *version,
                    text: text.clone(),
                },
            )?;
        }
        Change::Identifier { state } => put(txn, K_IDENTIFIER, state)?,
        Change::Promoted {
            epoch,
            master,
            master_address,
        } => {
            let current = txn
                .open_table(META)?
                .get(K_CLUSTER)?
                .map(|v| v.value().to_string());
            let Some(current) = current else {
                return Err(ClusterError::Db(format!(
                    "change {}: a promotion before the cluster record",
                    entry.csn.seq
                )));
            };
            let mut meta: ClusterMeta = serde_json::from_str(&current)?;
            meta.epoch = *epoch;
            meta.master = master.clone();
            meta.master_address = master_address.clone();
            put(txn, K_CLUSTER, &meta)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
