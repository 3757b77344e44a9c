//! The two stages of stopping, shared by the daemon and every session.
//!
//! `drain` (SIGTERM): listeners stop at once; a session that is between
//! transactions ends now with `421 4.3.2`, one in the middle of a
//! transaction finishes it first. `abort` (the drain timeout passed): every
//! session ends with `421 4.3.2` wherever it is; a message whose end of data
//! was not yet sent is discarded by the member and retried by the client.

use tokio_util::sync::CancellationToken;

/// Cloneable handle to the daemon's shutdown state.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    drain: CancellationToken,
    abort: CancellationToken,
}

impl Shutdown {
    /// A handle in the running state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining: no new transactions.
    pub fn drain(&self) {
        self.drain.cancel();
    }

    /// Ends every session now.
    pub fn abort(&self) {
        self.drain.cancel();
        self.abort.cancel();
    }

    /// True once draining started.
    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// Resolves when draining starts (at once if it has).
    pub async fn drained(&self) {
        self.drain.cancelled().await;
    }

    /// Resolves when sessions must end (at once if they must).
    pub async fn aborted(&self) {
        self.abort.cancelled().await;
    }
}
