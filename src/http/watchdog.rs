//! The request-head timeout of a client connection, without a timer per
//! request.
//!
//! A client has [`HEADER_READ_TIMEOUT`] to send a request head, counted from
//! the connection's start or the end of its last response (slow or stalled
//! heads, idle keep-alive connections). Rather than arming a timer for every
//! request (hyper's `header_read_timeout` allocates and registers one per
//! head), each connection counts the requests it started and finished
//! ([`Activity`], two relaxed atomic increments per request) and one
//! watchdog task per connection looks at the counts every [`CHECK`]: when
//! no request was in flight and none started for the whole timeout, it
//! aborts the connection's task (nothing is in flight, so no answer is cut
//! off). The connection thus closes 30 to 40 seconds after it fell idle.
//! The watchdog ends with the connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;
use tracing::debug;

/// How long a client has to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the watchdog looks.
pub const CHECK: Duration = Duration::from_secs(5);

/// Requests started and finished on one connection.
#[derive(Debug, Default)]
pub struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
}

impl Activity {
    /// A request has started (its head is in); it is in flight until the
    /// returned guard is dropped (its response ended or was abandoned).
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.started.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// (started, finished).
    fn counts(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::Relaxed),
            self.finished.load(Ordering::Relaxed),
        )
    }
}

/// One request in flight (see [`Activity::busy`]).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether a connection whose counts were `before` and are `now` was idle
/// all along (no request in flight, none started).
fn stayed_idle(before: Option<(u64, u64)>, now: (u64, u64)) -> bool {
    now.0 == now.1 && before == Some(now)
}

/// Watches the connection whose activity is `activity`: aborts the task in
/// `connection` (set once spawned) when it stays idle for
/// [`HEADER_READ_TIMEOUT`]. Ends by itself when `activity` is gone; abort
/// the returned handle to end it at once.
pub fn spawn(activity: Weak<Activity>, connection: Arc<OnceLock<AbortHandle>>) -> AbortHandle {
    tokio::spawn(async move {
        let mut before = None;
        let mut quiet = Duration::ZERO;
        loop {
            tokio::time::sleep(CHECK).await;
            let Some(now) = activity.upgrade().map(|a| a.counts()) else {
                return;
            };
            if stayed_idle(before, now) {
                quiet += CHECK;
            } else {
                quiet = Duration::ZERO;
            }
            before = Some(now);
            if quiet >= HEADER_READ_TIMEOUT {
                debug!("no request head within {HEADER_READ_TIMEOUT:?}: closing the connection");
                if let Some(task) = connection.get() {
                    task.abort();
                }
                return;
            }
        }
    })
    .abort_handle()
}

/// Aborts a task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop(pub AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_means_nothing_in_flight_and_nothing_new() {
        type Counts = (u64, u64);
        let cases: &[(Option<Counts>, Counts, bool)] = &[
            (None, (0, 0), false),
            (Some((0, 0)), (0, 0), true),
            (Some((3, 3)), (3, 3), true),
            (Some((3, 3)), (4, 4), false),
            (Some((4, 3)), (4, 3), false),
            (Some((3, 3)), (4, 3), false),
        ];
        for &(before, now, idle) in cases {
            assert_eq!(stayed_idle(before, now), idle, "{before:?} -> {now:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_aborted_and_a_busy_one_is_not() {
        let activity = Arc::new(Activity::default());
        let slot = Arc::new(OnceLock::new());
        let _watchdog = spawn(Arc::downgrade(&activity), slot.clone());
        let busy = activity.busy();
        let task = tokio::spawn(std::future::pending::<()>());
        let _ = slot.set(task.abort_handle());
        // In flight for a long time: left alone.
        tokio::time::sleep(HEADER_READ_TIMEOUT * 3).await;
        assert!(!task.is_finished());
        drop(busy);
        // Idle: aborted within the timeout plus two checks.
        tokio::time::sleep(HEADER_READ_TIMEOUT + CHECK * 2).await;
        assert!(task.is_finished());
        assert!(task.await.is_err_and(|e| e.is_cancelled()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_ends_with_its_connection() {
        let activity = Arc::new(Activity::default());
        let handle = spawn(Arc::downgrade(&activity), Arc::new(OnceLock::new()));
        drop(activity);
        tokio::time::sleep(CHECK * 2).await;
        assert!(handle.is_finished());
    }
}
