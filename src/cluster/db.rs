//! The backend's database: `data_dir/cluster.redb`, one redb file.
//!
//! It holds this node's identity in the cluster (table `identity`: the
//! cluster record and this node's key and certificate, never replicated)
//! and the consensus engine's log and state machine (tables of
//! [`super::engine::store`]). A frontend has no database: its identity is
//! in its own file ([`super::frontend`]) and its state in memory.
//!
//! Earlier builds kept a hand-written change log in the same file; such a
//! database is not migrated (nothing was released) but refused with a
//! message that names the file to remove ([`ClusterError::OldFormat`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, TableDefinition, TableHandle};

use super::{ClusterError, ClusterMeta, LocalNode, Result};

const IDENTITY: TableDefinition<&str, &str> = TableDefinition::new("identity");
const K_IDENTITY: &str = "identity";

/// Tables only the control plane of earlier builds made.
const OLD_TABLES: [&str; 3] = ["log", "members", "policies"];

/// File name of the database inside `data_dir`.
pub const FILE_NAME: &str = "cluster.redb";

/// The path of the database in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Who this node is in its cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The cluster record (id, CA certificate).
    pub cluster: ClusterMeta,
    /// This node: its key, certificate, number.
    pub local: LocalNode,
}

/// A backend's database.
#[derive(Clone)]
pub struct Db {
    db: Arc<Database>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

impl Db {
    /// Opens (or creates) the database in `data_dir`; refuses one of an
    /// earlier build.
    pub fn open(data_dir: &Path) -> Result<Db> {
        use std::os::unix::fs::PermissionsExt;
        let file = path(data_dir);
        let db = Database::create(&file)?;
        // It holds this node's private key and the cluster CA's key.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            ClusterError::Db(format!("cannot set mode 0600 on {}: {e}", file.display()))
        })?;
        refuse_old_format(&db, &file)?;
        let txn = db.begin_write()?;
        txn.open_table(IDENTITY)?;
        txn.commit()?;
        Ok(Db { db: Arc::new(db) })
    }

    /// The redb database (the engine's storage shares it).
    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// This node's identity, when it is in a cluster.
    pub fn identity(&self) -> Result<Option<Identity>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(IDENTITY)?;
        match table.get(K_IDENTITY)? {
            Some(v) => Ok(Some(serde_json::from_str(v.value())?)),
            None => Ok(None),
        }
    }

    /// Records this node's identity (durably).
    pub fn set_identity(&self, identity: &Identity) -> Result<()> {
        let text = serde_json::to_string(identity)?;
        let txn = self.db.begin_write()?;
        txn.open_table(IDENTITY)?
            .insert(K_IDENTITY, text.as_str())?;
        txn.commit()?;
        Ok(())
    }
}

/// A database with the tables of the earlier control plane is refused.
fn refuse_old_format(db: &Database, file: &Path) -> Result<()> {
    let txn = db.begin_read()?;
    let old = txn
        .list_tables()?
        .any(|table| OLD_TABLES.contains(&table.name()));
    if old {
        return Err(ClusterError::OldFormat(file.to_path_buf()));
    }
    Ok(())
}

/// Removes `file` when it exists.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_of_an_earlier_build_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let db = Database::create(path(dir.path())).expect("create");
            let txn = db.begin_write().expect("txn");
            let old: TableDefinition<u64, &str> = TableDefinition::new("log");
            txn.open_table(old).expect("table");
            txn.commit().expect("commit");
        }
        let err = Db::open(dir.path()).expect_err("old format");
        let text = err.to_string();
        assert!(matches!(err, ClusterError::OldFormat(_)), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains("remove"), "{text}");
    }

    #[test]
    fn the_identity_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let identity = Identity {
            cluster: ClusterMeta {
                cluster_id: "c".into(),
                ca_cert_pem: "ca".into(),
            },
            local: LocalNode::for_tests("gw1"),
        };
        Db::open(dir.path())
            .and_then(|db| db.set_identity(&identity))
            .expect("write");
        let again = Db::open(dir.path()).and_then(|db| db.identity());
        assert_eq!(again.expect("read"), Some(identity));
    }
}
