//! Accepting connections without spinning or flooding the log: the one
//! helper every accept loop uses (SMTP and GINA workers, metrics, admin
//! socket, control plane).
//!
//! `accept(2)` fails when the process or the system is out of descriptors
//! (`EMFILE`, `ENFILE`) or memory (`ENOBUFS`, `ENOMEM`); the pending
//! connection stays in the backlog, so a loop that only logs and retries
//! spins at full speed and writes a line per turn. [`AcceptErrors`] pauses
//! after such a failure, doubling from 10 ms up to about a second while the
//! failures go on, and back to none after the next success; it logs at most
//! once per [`LOG_INTERVAL`] per listener, saying how many failures it
//! left out, and counts every failure in
//! `mxgate_accept_errors_total{listener,error}`.
//!
//! [`Places`] caps a listener's connections in total and per peer address,
//! and [`LogBudget`] keeps any refusal log to a line per interval.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// `mxgate_accept_errors_total{listener,error}`.
pub const ACCEPT_ERRORS_TOTAL: &str = "mxgate_accept_errors_total";

/// The first pause after a resource failure.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// At most one log line per listener in this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What kind of failure `accept(2)` reported: the `error` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptFailure {
    /// `EMFILE`: this process is out of descriptors.
    ProcessDescriptors,
    /// `ENFILE`: the system is out of descriptors.
    SystemDescriptors,
    /// `ENOBUFS` or `ENOMEM`: out of socket memory.
    Memory,
    /// Anything else (an aborted connection, a protocol error).
    Other,
}

impl AcceptFailure {
    /// Classifies an accept error by its errno, never by its text.
    pub fn of(error: &io::Error) -> AcceptFailure {
        use rustix::io::Errno;
        match error.raw_os_error().map(Errno::from_raw_os_error) {
            Some(Errno::MFILE) => AcceptFailure::ProcessDescriptors,
            Some(Errno::NFILE) => AcceptFailure::SystemDescriptors,
            Some(Errno::NOBUFS | Errno::NOMEM) => AcceptFailure::Memory,
            _ => AcceptFailure::Other,
        }
    }

    /// The `error` label value.
    pub fn label(self) -> &'static str {
        match self {
            AcceptFailure::ProcessDescriptors => "emfile",
            AcceptFailure::SystemDescriptors => "enfile",
            AcceptFailure::Memory => "enobufs",
            AcceptFailure::Other => "other",
        }
    }

    /// Every label, for registering the series at zero.
    pub const LABELS: [&'static str; 4] = ["emfile", "enfile", "enobufs", "other"];

    /// True when retrying at once cannot succeed: the loop must back off.
    fn exhausts_resources(self) -> bool {
        self != AcceptFailure::Other
    }
}

/// At most one log line per interval: says when a line is due and how
/// many events went unlogged since the last one.
#[derive(Debug)]
pub struct LogBudget {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogBudget {
    /// One line per `interval`.
    pub const fn new(interval: Duration) -> LogBudget {
        LogBudget {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// An event at `now`: `Some(unlogged before it)` when it should be
    /// logged, `None` when it is only counted.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        if (self.last).is_some_and(|last| now.duration_since(last) < self.interval) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// One accept loop's failure state: the pause now and the log budget.
#[derive(Debug)]
pub struct AcceptErrors {
    listener: String,
    pause: Duration,
    log: LogBudget,
}

impl AcceptErrors {
    /// The state of a loop accepting for `listener` (the metrics label).
    pub fn new(listener: impl Into<String>) -> AcceptErrors {
        AcceptErrors {
            listener: listener.into(),
            pause: Duration::ZERO,
            log: LogBudget::new(LOG_INTERVAL),
        }
    }

    /// A connection was accepted: the next failure starts from the first pause.
    pub fn accepted(&mut self) {
        self.pause = Duration::ZERO;
    }

    /// Records a failure at `now`: counts it, logs it unless a line was
    /// written within [`LOG_INTERVAL`], and returns how long to pause.
    pub fn failed(&mut self, error: &io::Error, now: Instant) -> Duration {
        let kind = AcceptFailure::of(error);
        metrics::counter!(ACCEPT_ERRORS_TOTAL, "listener" => self.listener.clone(), "error" => kind.label())
            .increment(1);
        self.pause = if kind.exhausts_resources() {
            (self.pause * 2).clamp(FIRST_PAUSE, MAX_PAUSE)
        } else {
            // Not a shortage, but never a spin either.
            FIRST_PAUSE
        };
        if let Some(suppressed) = self.log.due(now) {
            warn!(listener = %self.listener, error = %error, kind = kind.label(),
                suppressed, pause_ms = self.pause.as_millis() as u64,
                "accept failed; pausing this listener (suppressed: failures not logged since the last line)");
        }
        self.pause
    }

    /// Accepts with `accept` until it succeeds, pausing after each failure;
    /// `None` once `stop` is cancelled.
    pub async fn next<T, F, Fut>(&mut self, stop: &CancellationToken, mut accept: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = io::Result<T>>,
    {
        loop {
            let result = tokio::select! {
                _ = stop.cancelled() => return None,
                result = accept() => result,
            };
            match result {
                Ok(accepted) => {
                    self.accepted();
                    return Some(accepted);
                }
                Err(e) => {
                    let pause = self.failed(&e, Instant::now());
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
}

/// An accept loop serving at most `limit` connections at once: it waits
/// for a free place before it accepts, so the next connections wait in the
/// listener's backlog (the admin socket, the metrics endpoint).
#[derive(Debug)]
pub struct Bounded {
    errors: AcceptErrors,
    places: Arc<Semaphore>,
}

impl Bounded {
    /// The loop of `listener` (the metrics label) with `limit` places.
    pub fn new(listener: impl Into<String>, limit: usize) -> Bounded {
        Bounded {
            errors: AcceptErrors::new(listener),
            places: Arc::new(Semaphore::new(limit)),
        }
    }

    /// The next connection and its place (held as long as it is served);
    /// `None` once `stop` is cancelled.
    pub async fn next<T, F, Fut>(
        &mut self,
        stop: &CancellationToken,
        accept: F,
    ) -> Option<(T, OwnedSemaphorePermit)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = io::Result<T>>,
    {
        let place = tokio::select! {
            _ = stop.cancelled() => return None,
            place = self.places.clone().acquire_owned() => place.ok()?,
        };
        let accepted = self.errors.next(stop, accept).await?;
        Some((accepted, place))
    }
}

/// Connection places of a listener: at most `total` at once, at most
/// `per_peer` from one address.
#[derive(Debug, Clone)]
pub struct Places(Arc<Mutex<PlacesState>>);

#[derive(Debug)]
struct PlacesState {
    total: usize,
    per_peer: usize,
    by_peer: HashMap<IpAddr, usize>,
    open: usize,
}

/// Why [`Places::take`] found no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPlace {
    /// Every place is taken.
    Total,
    /// This peer holds all of its places.
    Peer,
}

impl Places {
    /// Places for `total` connections, `per_peer` of them from one address.
    pub fn new(total: usize, per_peer: usize) -> Places {
        Places(Arc::new(Mutex::new(PlacesState {
            total,
            per_peer,
            by_peer: HashMap::new(),
            open: 0,
        })))
    }

    /// Takes a place for a connection from `peer`, given back when the
    /// [`Place`] is dropped.
    pub fn take(&self, peer: IpAddr) -> Result<Place, NoPlace> {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if state.open >= state.total {
            return Err(NoPlace::Total);
        }
        let per_peer = state.per_peer;
        let held = state.by_peer.entry(peer).or_insert(0);
        if *held >= per_peer {
            return Err(NoPlace::Peer);
        }
        *held += 1;
        state.open += 1;
        Ok(Place {
            places: self.clone(),
            peer,
        })
    }

    /// Connections holding a place now.
    pub fn open(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).open
    }
}

/// A connection's place, given back when dropped.
#[derive(Debug)]
pub struct Place {
    places: Places,
    peer: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = (self.places.0.lock()).unwrap_or_else(PoisonError::into_inner);
        state.open = state.open.saturating_sub(1);
        if let Some(held) = state.by_peer.get_mut(&self.peer) {
            *held -= 1;
            if *held == 0 {
                state.by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(code: rustix::io::Errno) -> io::Error {
        io::Error::from_raw_os_error(code.raw_os_error())
    }

    #[test]
    fn failures_are_classified_by_errno() {
        use rustix::io::Errno;
        let cases = [
            (Errno::MFILE, "emfile"),
            (Errno::NFILE, "enfile"),
            (Errno::NOBUFS, "enobufs"),
            (Errno::NOMEM, "enobufs"),
            (Errno::CONNABORTED, "other"),
        ];
        for (code, label) in cases {
            assert_eq!(AcceptFailure::of(&errno(code)).label(), label, "{code:?}");
        }
        let text_only = io::Error::other("Too many open files");
        assert_eq!(AcceptFailure::of(&text_only), AcceptFailure::Other);
    }

    #[test]
    fn the_pause_doubles_to_a_second_and_resets_after_a_success() {
        let mut errors = AcceptErrors::new("t");
        let emfile = errno(rustix::io::Errno::MFILE);
        let now = Instant::now();
        let pauses: Vec<_> = (0..10)
            .map(|_| errors.failed(&emfile, now).as_millis())
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        errors.accepted();
        assert_eq!(errors.failed(&emfile, now), FIRST_PAUSE);
        let aborted = errno(rustix::io::Errno::CONNABORTED);
        assert_eq!(errors.failed(&aborted, now), FIRST_PAUSE);
    }

    #[test]
    fn one_line_per_interval_counts_what_it_left_out() {
        let mut log = LogBudget::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(log.due(start), Some(0));
        for ms in 1..=50 {
            assert_eq!(log.due(start + Duration::from_millis(ms * 10)), None);
        }
        assert_eq!(log.due(start + Duration::from_millis(1001)), Some(50));
        assert_eq!(log.due(start + Duration::from_millis(1002)), None);
    }

    #[test]
    fn places_are_capped_in_total_and_per_peer() {
        let places = Places::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
        let a1 = places.take(a);
        let a2 = places.take(a);
        assert!(a1.is_ok() && a2.is_ok());
        assert_eq!(places.take(a).err(), Some(NoPlace::Peer));
        let b1 = places.take(b);
        assert!(b1.is_ok());
        assert_eq!(places.take(b).err(), Some(NoPlace::Total));
        drop(a1);
        assert!(places.take(b).is_ok());
        drop((a2, b1));
        assert_eq!(places.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn next_pauses_between_failures_and_stops_on_cancel() {
        let mut errors = AcceptErrors::new("t");
        let stop = CancellationToken::new();
        let mut calls = 0u32;
        let started = tokio::time::Instant::now();
        let got = errors
            .next(&stop, || {
                calls += 1;
                let result = if calls < 4 {
                    Err(errno(rustix::io::Errno::MFILE))
                } else {
                    Ok(calls)
                };
                async move { result }
            })
            .await;
        assert_eq!(got, Some(4));
        // 10 + 20 + 40 ms of pauses, on the paused clock.
        assert_eq!(started.elapsed(), Duration::from_millis(70));
        stop.cancel();
        let none: Option<()> = errors
            .next(&stop, std::future::pending::<io::Result<()>>)
            .await;
        assert_eq!(none, None);
    }
}
