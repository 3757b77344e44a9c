//! One reusable timer per connection instead of a `tokio::time::timeout`
//! per read, write and reply.
//!
//! A `timeout` creates a timer entry, and when the wrapped future is not
//! ready at once (the usual case for a read or a member's reply) registers it
//! in the runtime's timer wheel and removes it again when it completes: about
//! 15 registrations and removals per relayed session. [`Deadline`] keeps one
//! [`Sleep`] for the connection's life and moves its deadline lazily: while
//! the timer is armed for an instant before the new limit, it stays there,
//! and when it fires early it is re-armed for the limit it stands for now.
//! So the timer is touched about once per limit's length, not per operation.
//! A future that is ready at its first poll never touches the timer, as with
//! `timeout`.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

/// The limit passed to [`Deadline::within`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// A connection's reusable timer (see the module documentation).
#[derive(Debug)]
pub(crate) struct Deadline {
    /// Made at the first wait that is not ready at once (a connection whose
    /// operations all complete at their first poll never allocates it).
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    /// A timer that is not armed yet (costs nothing until it is).
    pub(crate) fn new() -> Deadline {
        Deadline { sleep: None }
    }

    /// Runs `fut` for at most `limit`: `Err(Elapsed)` when it did not finish
    /// in time. Same semantics as `tokio::time::timeout` (the future is
    /// polled before the timer, so a ready future always wins).
    pub(crate) async fn within<F: Future>(
        &mut self,
        limit: Duration,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        let mut fut = pin!(fut);
        let sleep = &mut self.sleep;
        // The instant this call times out at, once the future was pending.
        let mut armed_at: Option<Instant> = None;
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            let (want, sleep) = match armed_at {
                // Armed at the first pending poll of this call.
                Some(want) => (
                    want,
                    sleep.get_or_insert_with(|| Box::pin(sleep_until(want))),
                ),
                None => {
                    // Saturating: a limit too large for an Instant never expires.
                    let now = Instant::now();
                    let at = now
                        .checked_add(limit)
                        .unwrap_or_else(|| now + Duration::from_secs(86400 * 365 * 30));
                    armed_at = Some(at);
                    (at, arm(sleep, now, at))
                }
            };
            loop {
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) if sleep.deadline() >= want => {
                        return Poll::Ready(Err(Elapsed));
                    }
                    // An earlier limit's instant: not this one's yet.
                    Poll::Ready(()) => sleep.as_mut().reset(want),
                }
            }
        })
        .await
    }
}

/// The timer for a wait that times out at `want` (`now` being the present):
/// made at the first such wait; later, lazily moved. A timer still armed for
/// an instant between now and `want` is left alone; when it fires it is moved
/// on to `want` by [`Deadline::within`]. So the wheel is touched about once
/// per limit, not on every read, write and reply.
fn arm(sleep: &mut Option<Pin<Box<Sleep>>>, now: Instant, want: Instant) -> &mut Pin<Box<Sleep>> {
    match sleep {
        None => sleep.insert(Box::pin(sleep_until(want))),
        Some(armed) => {
            let at = armed.deadline();
            if at > want || at <= now {
                armed.as_mut().reset(want);
            }
            armed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Deadline, Elapsed};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn ready_future_wins_and_pending_one_times_out() {
        let mut deadline = Deadline::new();
        assert_eq!(deadline.within(Duration::ZERO, async { 7 }).await, Ok(7));
        let never = std::future::pending::<()>();
        let start = tokio::time::Instant::now();
        assert_eq!(
            deadline.within(Duration::from_secs(30), never).await,
            Err(Elapsed)
        );
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn reused_after_expiry_and_with_shorter_and_longer_limits() {
        let mut deadline = Deadline::new();
        for secs in [5, 300, 1, 60, 1] {
            let start = tokio::time::Instant::now();
            let out = deadline
                .within(Duration::from_secs(secs), std::future::pending::<()>())
                .await;
            assert_eq!(out, Err(Elapsed));
            assert_eq!(start.elapsed(), Duration::from_secs(secs));
        }
        // Operations that finish in time leave the timer at an earlier
        // instant; a later timeout is still exact.
        for _ in 0..5 {
            let quick = tokio::time::sleep(Duration::from_secs(7));
            assert_eq!(
                deadline.within(Duration::from_secs(10), quick).await,
                Ok(())
            );
        }
        let start = tokio::time::Instant::now();
        let out = deadline
            .within(Duration::from_secs(10), std::future::pending::<()>())
            .await;
        assert_eq!(out, Err(Elapsed));
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // A slow future that finishes in time is not cut short by an earlier,
        // longer deadline that is still registered.
        let slow = tokio::time::sleep(Duration::from_secs(2));
        assert_eq!(deadline.within(Duration::from_secs(3), slow).await, Ok(()));
        let slow = tokio::time::sleep(Duration::from_secs(4));
        assert_eq!(
            deadline.within(Duration::from_secs(3), slow).await,
            Err(Elapsed)
        );
    }
}
