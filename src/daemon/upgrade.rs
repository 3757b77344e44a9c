//! A binary upgrade on the running daemon's side (`mxgate upgrade`,
//! SIGUSR2): starts the binary installed at this process's path as its
//! successor ([`crate::service::handover`]), hands it every listening
//! socket, lets go of the cluster database once the successor has loaded
//! its configuration, and gives way when it is ready. Until then this
//! process serves as before; any failure leaves it serving, with the
//! cluster database taken back.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{error, info};

use super::Daemon;
use crate::service::handover::{HandoverError, Step, Successor};
use crate::service::sockets;

/// How long the successor has to load its configuration.
const LOAD_WITHIN: Duration = Duration::from_secs(60);
/// How long it has to start accepting once the database is free.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long the cluster's engine has to let go of the database.
const RELEASE_WITHIN: Duration = Duration::from_secs(10);
/// How long the answer to `mxgate upgrade` may take to be written.
const ANSWER_WRITTEN_WITHIN: Duration = Duration::from_secs(5);
/// How long a successor waits for its predecessor to let go of it.
pub(super) const RELEASE_WAIT: Duration = Duration::from_secs(30);

/// An `upgrade` asked on the admin socket, and where its answer goes.
pub struct UpgradeRequest {
    /// The answer: the new process, or why there is none.
    pub reply: oneshot::Sender<Result<Upgraded, String>>,
    /// Resolves once the answer is written (the process may then end).
    pub written: oneshot::Receiver<()>,
}

/// A successful upgrade.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upgraded {
    /// The process that serves now.
    pub new_pid: u32,
    /// The process that drains and exits.
    pub old_pid: u32,
    /// The binary started.
    pub binary: String,
    /// Sessions the old process still carries.
    pub draining_sessions: u64,
}

/// Runs `work` on a blocking thread (the handover channel blocks).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HandoverError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| HandoverError::Channel(std::io::Error::other(e)))
}

impl Daemon {
    /// Upgrades and answers `request` (SIGUSR2 has none); true when the
    /// successor serves now.
    pub(super) async fn upgrade_answering(&mut self, request: Option<UpgradeRequest>) -> bool {
        let outcome = self.upgrade().await;
        match &outcome {
            Ok(done) => info!(new_pid = done.new_pid, binary = %done.binary,
                "upgrade: the new process serves; this one drains"),
            Err(e) => error!("upgrade failed, this process keeps serving: {e}"),
        }
        let succeeded = outcome.is_ok();
        if let Some(request) = request {
            let pid = std::process::id();
            let answer = outcome.map_err(|e| {
                format!("upgrade failed; the running daemon (pid {pid}) keeps serving: {e}")
            });
            if request.reply.send(answer).is_ok() {
                let _ = tokio::time::timeout(ANSWER_WRITTEN_WITHIN, request.written).await;
            }
        }
        succeeded
    }

    async fn upgrade(&self) -> Result<Upgraded, HandoverError> {
        let binary = self.binary.clone().ok_or_else(|| {
            HandoverError::Failed("the daemon does not know the path of its binary".into())
        })?;
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        let held = sockets::held()?;
        let watchdog = self.watchdog;
        let path = binary.clone();
        let mut successor = blocking(move || {
            let mut successor = Successor::start(&path, &args, held, watchdog)?;
            match successor.expect(LOAD_WITHIN, |s| *s == Step::Loaded) {
                Ok(_) => Ok(successor),
                Err(e) => {
                    successor.abandon();
                    Err(e)
                }
            }
        })
        .await??;
        let node = self.gateway.cluster.get().cloned();
        let released = match &node {
            Some(node) => node.release_database(RELEASE_WITHIN).await,
            None => Ok(false),
        };
        let released = match released {
            Ok(released) => released,
            Err(e) => {
                blocking(move || successor.abandon()).await?;
                self.reclaim(node.as_ref()).await;
                return Err(HandoverError::Failed(format!(
                    "the cluster database could not be released: {e}"
                )));
            }
        };
        let ready = blocking(move || {
            let ready = successor
                .send(&Step::Released)
                .and_then(|()| successor.expect(READY_WITHIN, |s| matches!(s, Step::Ready { .. })));
            if ready.is_err() {
                successor.abandon();
            }
            ready.map(|_| successor.pid())
        })
        .await?;
        match ready {
            Ok(new_pid) => Ok(Upgraded {
                new_pid,
                old_pid: std::process::id(),
                binary: binary.display().to_string(),
                draining_sessions: self.gateway.sessions_now(),
            }),
            Err(e) => {
                if released {
                    self.reclaim(node.as_ref()).await;
                }
                Err(e)
            }
        }
    }

    /// Takes the cluster database back after a failed upgrade.
    async fn reclaim(&self, node: Option<&Arc<crate::cluster::ClusterNode>>) {
        if let Some(node) = node
            && let Err(e) = node.reclaim_database().await
        {
            error!("after the failed upgrade the cluster database cannot be opened again: {e}");
        }
    }
}
