//! The `upstream_timeout` timers of one client connection.
//!
//! A `tokio::time::timeout` per request registers a timer entry in the
//! runtime's wheel whenever the member does not answer at once (always,
//! here) and removes it again: about 600 instructions per request. A
//! connection keeps its timers instead ([`crate::smtp::deadline::Deadline`],
//! moved lazily, exact at expiry): a request takes one for its member send
//! and gives it back when done. An HTTP/1 connection only ever needs one;
//! an HTTP/2 connection as many as it has requests waiting at once.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::smtp::deadline::Deadline;

/// Reusable timers of one client connection (see the module docs).
#[derive(Default)]
pub struct Timers {
    idle: Mutex<Vec<Deadline>>,
}

impl Timers {
    /// Runs `fut` for at most `limit` (as `tokio::time::timeout`: a ready
    /// future wins; `None` when the limit ran out first).
    pub async fn within<F: Future>(&self, limit: Duration, fut: F) -> Option<F::Output> {
        let taken = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut lent = Lent {
            timers: self,
            deadline: Some(taken.unwrap_or_else(Deadline::new)),
        };
        match lent.deadline.as_mut() {
            Some(deadline) => deadline.within(limit, fut).await.ok(),
            None => Some(fut.await),
        }
    }
}

/// A timer in use; back to its connection when the request is done (or
/// dropped).
struct Lent<'a> {
    timers: &'a Timers,
    deadline: Option<Deadline>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(deadline) = self.deadline.take() {
            self.timers
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Timers;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn exact_like_timeout_and_reused() {
        let timers = Timers::default();
        assert_eq!(timers.within(Duration::ZERO, async { 7 }).await, Some(7));
        for _ in 0..3 {
            let quick = tokio::time::sleep(Duration::from_secs(1));
            assert!(
                timers
                    .within(Duration::from_secs(60), quick)
                    .await
                    .is_some()
            );
        }
        let start = tokio::time::Instant::now();
        let hung = std::future::pending::<()>();
        assert!(timers.within(Duration::from_secs(60), hung).await.is_none());
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        assert_eq!(timers.idle.lock().map(|v| v.len()).unwrap_or(0), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_get_their_own_timer() {
        let timers = Timers::default();
        let start = tokio::time::Instant::now();
        let slow = timers.within(Duration::from_secs(10), std::future::pending::<()>());
        let quick = timers.within(Duration::from_secs(5), std::future::pending::<()>());
        let (a, b) = tokio::join!(slow, quick);
        assert!(a.is_none() && b.is_none());
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(timers.idle.lock().map(|v| v.len()).unwrap_or(0), 2);
    }
}
