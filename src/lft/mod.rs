//! LFT (large file transfer) attachment store and synchronisation (SPEC
//! section 9).
//!
//! Data flow: for an injected session (the client is a member's address),
//! the relay hands every chunk it forwards to an [`tap::LftTap`] (the data
//! plane's [`crate::smtp::tap::MessageTap`] is [`Lft`]). The tap never
//! waits: it passes the chunk on an unbounded channel whose bytes in flight
//! are bounded, to a spool task that un-dot-stuffs it into
//! `data_dir/lft/spool`. When the member accepted the message (end of data
//! `2xx`), the spool is parsed ([`extract`], mail-parser) off the runtime
//! and every attachment of at least `[lft] threshold` goes into the
//! content-addressed [`store`]; one durable [`queue`] entry per target of
//! the source member's `lft_sync_to`. The uploader ([`sync`]) sends them over
//! the cluster's mutual TLS (`PUT /lft/SHA256`); the receiver checks the
//! sender's `lft_sync_to` and the hash. [`serve`] answers `GET`/`HEAD
//! /lft/SHA256` for the GINA listener; [`status`] is `mxgate lft status`.

pub mod extract;
pub mod queue;
pub mod serve;
pub mod status;
pub mod store;
pub mod sync;
pub mod tap;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cluster::ClusterNode;
use crate::config::{Config, Policy};

pub use tap::LftTap;

/// Everything that can go wrong in the LFT store.
#[derive(Debug, thiserror::Error)]
pub enum LftError {
    /// A file in `data_dir/lft` could not be read or written.
    #[error("{path}: {source}; check data_dir (disk full? permissions?)")]
    Io {
        /// The file.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// A stored record is damaged or a name is not usable.
    #[error("LFT store: {0}")]
    Corrupt(String),
}

impl LftError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> LftError {
        LftError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Result of the LFT module.
pub type Result<T> = std::result::Result<T, LftError>;

/// Bytes handed to spool tasks but not yet written, over all messages: past
/// this, a message is skipped for LFT rather than the relay waiting.
pub const MAX_IN_FLIGHT: u64 = 32 << 20;
/// Messages spooled at once; more are skipped for LFT.
pub const MAX_SPOOLS: usize = 32;

/// What LFT needs of the daemon it runs in (supplied by the daemon).
pub trait Host: Send + Sync {
    /// The effective policy now (the replicated one in a cluster).
    fn policy(&self) -> Arc<Policy>;
    /// The node's control plane, when `[cluster]` is configured.
    fn cluster(&self) -> Option<Arc<ClusterNode>>;
}

/// No daemon: a service on its own (unit tests).
#[cfg(test)]
pub(crate) fn no_host() -> Weak<dyn Host> {
    struct NoHost;
    impl Host for NoHost {
        fn policy(&self) -> Arc<Policy> {
            unreachable!("a Weak::new() is never upgraded")
        }
        fn cluster(&self) -> Option<Arc<ClusterNode>> {
            None
        }
    }
    Weak::<NoHost>::new()
}

/// The LFT service of one daemon.
#[derive(Debug)]
pub struct Lft {
    /// `[node] name`.
    pub node_name: String,
    /// `data_dir/lft`.
    pub dir: PathBuf,
    /// Stored attachments.
    pub store: store::Store,
    /// Uploads to do.
    pub queue: queue::Queue,
    /// Wakes the uploader.
    pub wake: Notify,
    host: Weak<dyn Host>,
    /// This service, for the spool tasks its taps start.
    me: Weak<Lft>,
    in_flight: Arc<AtomicU64>,
    spools: Arc<AtomicUsize>,
}

impl Lft {
    /// The service over `data_dir/lft` (directories made here; leftover spool files removed).
    pub fn open(node_name: &str, data_dir: &Path, host: Weak<dyn Host>) -> Result<Arc<Lft>> {
        let dir = data_dir.join("lft");
        for sub in ["objects", "queue", "spool"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| LftError::io(&d, e))?;
        }
        if let Ok(files) = std::fs::read_dir(dir.join("spool")) {
            for f in files.flatten() {
                let _ = std::fs::remove_file(f.path());
            }
        }
        Ok(Arc::new_cyclic(|me| Lft {
            node_name: node_name.to_owned(),
            store: store::Store::new(&dir.join("objects")),
            queue: queue::Queue::new(&dir.join("queue")),
            dir,
            wake: Notify::new(),
            host,
            me: me.clone(),
            in_flight: Arc::new(AtomicU64::new(0)),
            spools: Arc::new(AtomicUsize::new(0)),
        }))
    }

    /// The daemon, while it runs.
    pub fn host(&self) -> Option<Arc<dyn Host>> {
        self.host.upgrade()
    }

    /// The effective policy now (the replicated one in a cluster).
    pub fn policy(&self) -> Option<Arc<Policy>> {
        self.host().map(|host| host.policy())
    }

    /// Every member named in some `lft_sync_to`, sorted.
    pub fn targets(policy: &Policy) -> Vec<String> {
        let mut t: Vec<String> = policy
            .members
            .iter()
            .flat_map(|m| m.lft_sync_to.iter().cloned())
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// Sets `mxgate_lft_pending{target}` from the queue.
    pub fn refresh_metrics(&self) {
        let targets = self.policy().map(|p| Lft::targets(&p)).unwrap_or_default();
        for c in self.queue.counts(&targets) {
            crate::metrics::lft_pending(&c.target, c.pending);
        }
    }
}

/// Opens the store and starts the uploader; the daemon keeps the service
/// and plugs it into the sessions and the control plane (`/lft/` uploads).
pub fn start(
    config: &Config,
    host: Weak<dyn Host>,
    stop: CancellationToken,
) -> anyhow::Result<Arc<Lft>> {
    let lft = Lft::open(&config.node.name, &config.node.data_dir, host)?;
    if let Some(node) = lft.host().and_then(|host| host.cluster()) {
        node.serve_attachments(lft.clone());
    }
    lft.refresh_metrics();
    tokio::spawn(sync::run(lft.clone(), stop));
    Ok(lft)
}
