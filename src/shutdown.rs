//! The two stages of stopping, shared by the daemon and every session.
//!
//! `drain` (SIGTERM): listeners stop at once; a session that is between
//! transactions ends now with `421 4.3.2`, one in the middle of a
//! transaction finishes it first. `abort` (the drain timeout passed): every
//! session ends with `421 4.3.2` wherever it is; a message whose end of data
//! was not yet sent is discarded by the member and retried by the client.
//!
//! A session polls its shutdown watch on every wake-up of its task. A
//! [`StageWatch`] makes that an atomic load: it registers the task's waker
//! with the stage's token once, and polls the token again only when the
//! waker changes (the token's own check takes a lock on every poll).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Cloneable handle to the daemon's shutdown state.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    drain: CancellationToken,
    abort: CancellationToken,
    /// The two stages as flags, set before the tokens are cancelled.
    flags: Arc<Flags>,
}

#[derive(Debug, Default)]
struct Flags {
    draining: AtomicBool,
    aborted: AtomicBool,
}

impl Shutdown {
    /// A handle in the running state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining: no new transactions.
    pub fn drain(&self) {
        self.flags.draining.store(true, Ordering::Release);
        self.drain.cancel();
    }

    /// Ends every session now.
    pub fn abort(&self) {
        self.flags.draining.store(true, Ordering::Release);
        self.flags.aborted.store(true, Ordering::Release);
        self.drain.cancel();
        self.abort.cancel();
    }

    /// True once draining started.
    pub fn is_draining(&self) -> bool {
        self.flags.draining.load(Ordering::Acquire)
    }

    /// Resolves when draining starts (at once if it has).
    pub async fn drained(&self) {
        self.drain.cancelled().await;
    }

    /// Resolves when sessions must end (at once if they must).
    pub async fn aborted(&self) {
        self.abort.cancelled().await;
    }

    /// A watch on the drain stage, for one task to poll repeatedly.
    pub fn watch_drain(&self) -> StageWatch {
        StageWatch::new(self, false)
    }

    /// A watch on the abort stage, for one task to poll repeatedly.
    pub fn watch_abort(&self) -> StageWatch {
        StageWatch::new(self, true)
    }
}

/// One shutdown stage watched by one task (see the module documentation).
#[derive(Debug)]
pub struct StageWatch {
    flags: Arc<Flags>,
    abort: bool,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The waker the token holds for this watch, once registered.
    registered: Option<Waker>,
}

impl StageWatch {
    fn new(shutdown: &Shutdown, abort: bool) -> StageWatch {
        let token = if abort {
            &shutdown.abort
        } else {
            &shutdown.drain
        };
        StageWatch {
            flags: shutdown.flags.clone(),
            abort,
            wait: Box::pin(token.clone().cancelled_owned()),
            registered: None,
        }
    }

    /// True once the stage was reached.
    pub fn reached(&self) -> bool {
        let flag = if self.abort {
            &self.flags.aborted
        } else {
            &self.flags.draining
        };
        flag.load(Ordering::Acquire)
    }

    /// Ready once the stage was reached; otherwise the task is woken when it is.
    pub fn poll_reached(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.reached() {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            // The flag is set before the token is cancelled, and cancelling
            // wakes the registered waker: nothing can be missed.
            return Poll::Pending;
        }
        match self.wait.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                self.registered = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Runs `fut` unless the stage is reached first (checked before `fut` is
    /// polled, at every wake-up): `None` then, and `fut` is dropped.
    pub async fn unless<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if self.reached() {
                return Poll::Ready(None);
            }
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            self.poll_reached(cx).map(|()| None)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::Shutdown;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn watch_runs_the_future_until_the_stage() {
        let shutdown = Shutdown::new();
        let mut drain = shutdown.watch_drain();
        let mut abort = shutdown.watch_abort();
        assert_eq!(drain.unless(async { 1 }).await, Some(1));
        // Woken while pending: several sleeps register the waker once.
        for _ in 0..3 {
            let nap = tokio::time::sleep(Duration::from_secs(1));
            assert_eq!(abort.unless(nap).await, Some(()));
        }
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            trigger.drain();
        });
        let start = tokio::time::Instant::now();
        assert_eq!(drain.unless(std::future::pending::<()>()).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!(shutdown.is_draining() && !abort.reached());
        // A reached stage wins over a ready future.
        assert_eq!(drain.unless(async { 2 }).await, None);
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            trigger.abort();
        });
        assert_eq!(abort.unless(std::future::pending::<()>()).await, None);
        assert!(abort.reached());
    }
}
