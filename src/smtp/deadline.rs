//! Client-side time limits: one reusable timer per connection, and the
//! instants it is armed for.
//!
//! A `tokio::time::timeout` per read, write and reply creates a timer entry,
//! and when the wrapped future is not ready at once (the usual case for a
//! read or a member's reply) registers it in the runtime's timer wheel and
//! removes it again when it completes: about 15 registrations and removals
//! per relayed session. [`Deadline`] keeps one [`Sleep`] for the connection's
//! life and moves its deadline lazily: while the timer is armed for an
//! instant before the new limit, it stays there, and when it fires early it
//! is re-armed for the limit it stands for now. So the timer is touched about
//! once per limit's length, not per operation. A future that is ready at its
//! first poll never touches the timer (nor the clock), as with `timeout`.
//!
//! What a wait is bounded by is the caller's choice ([`Deadline::run`]): a
//! fresh limit per operation ([`Deadline::within`], replies to the client),
//! an instant that several waits share (a command line: `command_timeout`
//! from the first wait for it, however its bytes trickle in), or a budget of
//! waiting time that received data tops up ([`DataDeadline`], a minimum data
//! rate for DATA, and for BDAT chunks later).

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until};

/// The limit of a [`Deadline`] wait ran out.
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
        self.run(fut, |now| later(now, limit)).await
    }

    /// Runs `fut` until the instant `due` gives: `Err(Elapsed)` when it did
    /// not finish by then. `due` is called with the present at the first
    /// poll that finds `fut` pending (never when `fut` is ready at once, so
    /// that case reads no clock); it may return a fixed instant, one that
    /// an earlier wait stored, or `now` plus a limit. An instant already
    /// past still lets a ready future win, as with [`Deadline::within`].
    pub(crate) async fn run<F: Future>(
        &mut self,
        fut: F,
        due: impl FnOnce(Instant) -> Instant,
    ) -> Result<F::Output, Elapsed> {
        let mut fut = pin!(fut);
        let sleep = &mut self.sleep;
        let mut due = Some(due);
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
                    let now = Instant::now();
                    // `due` is there until this first pending poll takes it.
                    let at = due.take().map_or(now, |due| due(now));
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

/// `now + limit`, saturating: a limit too large for an `Instant` never
/// expires in practice (30 years).
pub(crate) fn later(now: Instant, limit: Duration) -> Instant {
    now.checked_add(limit)
        .unwrap_or_else(|| now + Duration::from_secs(86400 * 365 * 30))
}

/// The timer for a wait that times out at `want` (`now` being the present):
/// made at the first such wait; later, lazily moved. A timer still armed for
/// an instant between now and `want` is left alone; when it fires it is moved
/// on to `want` by [`Deadline::run`]. So the wheel is touched about once
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

/// The deadline of a stream of message data, with a minimum data rate
/// (Postfix's `smtpd_min_data_rate`): the client has `timeout` at first, and
/// every read of N bytes gives it N / `rate` seconds more, but never more
/// than `timeout` in hand. A client sending at least `rate` bytes a second
/// (in reads no more than `timeout` apart) never runs out; one that drips
/// does, however often it sends a byte.
///
/// As in Postfix (its stream deadlines count the time spent in I/O), only
/// the time spent waiting for the client counts: the time the session
/// spends writing the data on to the member does not, so a slow member
/// cannot make a client miss its deadline. A read that is ready at once has
/// waited for nothing and reads no clock.
///
/// [`DataDeadline::due`] is the `due` of [`Deadline::run`] for each read;
/// [`DataDeadline::received`] books what the read brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DataDeadline {
    /// Waiting time the client has left.
    left: Duration,
    timeout: Duration,
    /// Bytes per second; 0: no rate, every read gets a fresh `timeout`.
    rate: u64,
    /// When the read in progress started waiting for the client, if it did.
    waiting_since: Option<Instant>,
}

impl DataDeadline {
    /// The deadline of a data phase beginning now.
    pub(crate) fn new(timeout: Duration, rate: u64) -> DataDeadline {
        DataDeadline {
            left: timeout,
            timeout,
            rate,
            waiting_since: None,
        }
    }

    /// The instant a read that starts waiting at `now` must complete by.
    pub(crate) fn due(&mut self, now: Instant) -> Instant {
        self.waiting_since = Some(now);
        later(now, self.left)
    }

    /// The read in progress brought `n` bytes.
    pub(crate) fn received(&mut self, n: usize) {
        if let Some(since) = self.waiting_since.take() {
            self.left = self.left.saturating_sub(since.elapsed());
        }
        self.left = match self.rate {
            0 => self.timeout,
            rate => {
                let nanos = (n as u128).saturating_mul(1_000_000_000) / u128::from(rate);
                let credit = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
                self.left.saturating_add(credit).min(self.timeout)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::{DataDeadline, Deadline, Elapsed, later};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::time::{Instant, sleep};

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

    /// A peer writing `chunk` bytes every `every`, `times` times, then closing.
    fn drip(every: Duration, chunk: usize, times: usize) -> DuplexStream {
        let (client, mut server_side) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let bytes = vec![b'x'; chunk];
            for _ in 0..times {
                sleep(every).await;
                if server_side.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
        client
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_instant_is_not_moved_by_partial_input() {
        // A command line: `command_timeout` from the first wait for it,
        // whatever arrives in between.
        let mut deadline = Deadline::new();
        let mut io = drip(Duration::from_millis(500), 1, 100);
        let mut line: Option<Instant> = None;
        let limit = Duration::from_secs(2);
        let start = Instant::now();
        let mut buf = Vec::new();
        let mut reads = 0;
        let out = loop {
            reads += 1;
            assert!(reads < 100, "bounded");
            let read = io.read_buf(&mut buf);
            match deadline
                .run(read, |now| *line.get_or_insert_with(|| later(now, limit)))
                .await
            {
                Ok(n) => assert_eq!(n.ok(), Some(1)),
                Err(e) => break e,
            }
        };
        assert_eq!(out, Elapsed);
        assert_eq!(start.elapsed(), limit);
        // Bytes at 0.5, 1.0, 1.5 s; the one due at 2.0 s is too late.
        assert_eq!(buf.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn data_deadline_credits_bytes_up_to_the_timeout() {
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut d = DataDeadline::new(secs(10), 100);
        assert_eq!(d.due(t0), t0 + secs(10));
        // A read that waited 1 s for 50 bytes: 10 - 1 + 0.5 s left.
        tokio::time::advance(secs(1)).await;
        d.received(50);
        assert_eq!(d.left, ms(9_500));
        // A big read, ready at once: never more than the timeout in hand.
        d.received(1 << 30);
        assert_eq!(d.left, secs(10));
        // Time not spent waiting for the client (writing to the member)
        // does not count: a read ready at once loses nothing.
        tokio::time::advance(secs(60)).await;
        d.received(10);
        assert_eq!(d.left, secs(10));
        // A slow read gains what its bytes are worth, no more.
        let now = Instant::now();
        assert_eq!(d.due(now), now + secs(10));
        tokio::time::advance(secs(9)).await;
        d.received(10);
        assert_eq!(d.left, ms(1_100));
        // Rate 0: every read gets a fresh timeout (a per-read limit).
        let mut off = DataDeadline::new(secs(10), 0);
        off.due(Instant::now());
        tokio::time::advance(secs(9)).await;
        off.received(1);
        assert_eq!(off.left, secs(10));
        // Huge values saturate instead of overflowing.
        let mut big = DataDeadline::new(Duration::MAX, u64::MAX);
        big.received(usize::MAX);
        assert!(big.due(Instant::now()) > Instant::now());
    }

    /// Reads `io` to its end under `deadline`: the bytes read and whether
    /// the deadline cut it off.
    async fn read_data(io: &mut DuplexStream, mut data: DataDeadline) -> (usize, bool) {
        let mut deadline = Deadline::new();
        let mut buf = Vec::new();
        for _ in 0..10_000 {
            let read = io.read_buf(&mut buf);
            match deadline.run(read, |now| data.due(now)).await {
                Ok(Ok(0)) => return (buf.len(), false),
                Ok(Ok(n)) => data.received(n),
                Ok(Err(e)) => panic!("read: {e}"),
                Err(Elapsed) => return (buf.len(), true),
            }
        }
        panic!("unbounded read");
    }

    #[tokio::test(start_paused = true)]
    async fn dripped_data_is_cut_by_the_rate_and_steady_data_is_not() {
        let timeout = Duration::from_secs(2);
        // 4 bytes a second against a minimum of 10: each byte costs 0.25 s
        // of waiting and brings 0.1 s; of the 2 s, 0.2 s are left after
        // byte 12 (3 s), and byte 13 would come 0.25 s later: cut at 3.2 s.
        let start = Instant::now();
        let mut io = drip(Duration::from_millis(250), 1, 100);
        let cut = read_data(&mut io, DataDeadline::new(timeout, 10)).await;
        assert_eq!(cut, (12, true));
        assert_eq!(start.elapsed(), Duration::from_millis(3200));
        // 20 bytes a second for 10 s: five times the timeout, never cut.
        let start = Instant::now();
        let mut io = drip(Duration::from_millis(250), 5, 40);
        let whole = read_data(&mut io, DataDeadline::new(timeout, 10)).await;
        assert_eq!(whole, (200, false));
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // Without a rate, the same drip is never cut: each read restarts the timeout.
        let mut io = drip(Duration::from_millis(250), 1, 40);
        let off = read_data(&mut io, DataDeadline::new(timeout, 0)).await;
        assert_eq!(off, (40, false));
    }
}
