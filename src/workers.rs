//! Thread-per-core serving of a TCP listener (`[[smtp]]` and `[[http]]`),
//! and the listener's session counters ([`ListenerStats`]).
//!
//! A listener is served by a pool of threads, one per CPU by default
//! ([`count`]), each running its own single-threaded tokio runtime. Every
//! worker accepts on the listener itself (its own descriptor of the one
//! listening socket, registered in its own event loop), so a connection is
//! accepted, registered and served on one thread for its whole life, as
//! HAProxy and nginx pin connections to a thread: no work stealing, no
//! cross-thread wake-up and no hand-over per connection. Whichever worker
//! is idle is woken first, which spreads short sessions by itself; a worker
//! that already has clearly more connections than the least busy one hands
//! a new connection over to that one, so a few long sessions
//! (persistent SMTP sessions, keep-alive HTTP clients) spread as well.
//!
//! Connections are tracked by the daemon's tracker (the drain) and by the
//! worker's own, which keeps the worker's runtime alive until its last
//! connection has ended. On `stop` every worker stops accepting at once
//! and closes its descriptor; the socket closes with the last one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::accept::AcceptErrors;
use crate::descriptors::SessionGate;

/// The number of worker threads for `[node] worker_threads` (0: one per CPU).
pub fn count(worker_threads: usize) -> usize {
    match worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// Session counters of one listener (SMTP or GINA), for `mxgate status`
/// and the session limits.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Sessions open now.
    pub active: AtomicU64,
    /// Sessions accepted since start.
    pub total: AtomicU64,
    /// Sessions open now per client address (after PROXY).
    per_client: Mutex<HashMap<IpAddr, usize>>,
    /// The descriptor budget's cap, shared by every listener.
    pub gate: Arc<SessionGate>,
}

impl ListenerStats {
    /// Counters of a listener whose sessions pass through `gate`.
    pub fn with_gate(gate: Arc<SessionGate>) -> ListenerStats {
        ListenerStats {
            gate,
            ..ListenerStats::default()
        }
    }

    /// Takes one of `max` session slots for `client`; `None` when all are taken.
    pub fn client_slot(self: &Arc<Self>, client: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut map = self
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = map.entry(client).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            stats: self.clone(),
            client,
        })
    }
}

/// Decrements the active count when a session task ends, however it ends.
pub struct ActiveGuard(pub Arc<ListenerStats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A session's place in the per-client count, given back when dropped.
pub struct ClientSlot {
    stats: Arc<ListenerStats>,
    client: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self
            .stats
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.client);
            }
        }
    }
}

/// What a listener does with each accepted connection.
pub trait Acceptor: Send + Sync + 'static {
    /// Starts serving `stream` from `peer` on the current (worker) runtime:
    /// spawns its task with `tasks` and keeps `load` alive as long as the
    /// connection lives (it counts the connection on the worker).
    fn start(&self, stream: TcpStream, peer: SocketAddr, tasks: &Trackers, load: WorkerLoad);
}

/// Where a worker's tasks are tracked: the daemon's tracker (drain) and the worker's.
#[derive(Clone)]
pub struct Trackers {
    global: TaskTracker,
    local: TaskTracker,
}

impl Trackers {
    /// Spawns `fut` on the current (worker) runtime, tracked by both; the
    /// handle aborts it (the GINA watchdog closes idle connections so).
    pub fn spawn<F>(&self, fut: F) -> tokio::task::AbortHandle
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(self.local.track_future(self.global.track_future(fut))).abort_handle()
    }
}

/// Counts a connection on its worker until dropped.
pub struct WorkerLoad(Arc<AtomicUsize>);

impl WorkerLoad {
    fn new(count: &Arc<AtomicUsize>) -> WorkerLoad {
        count.fetch_add(1, Ordering::Relaxed);
        WorkerLoad(count.clone())
    }
}

impl Drop for WorkerLoad {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection accepted by one worker and handed to another.
type Handed = (std::net::TcpStream, SocketAddr, WorkerLoad);

/// One worker's view of the pool.
struct Worker {
    index: usize,
    /// Every worker's connection count (this one's at `index`).
    loads: Arc<[Arc<AtomicUsize>]>,
    /// Every worker's hand-over queue.
    queues: Arc<[mpsc::UnboundedSender<Handed>]>,
    acceptor: Arc<dyn Acceptor>,
    trackers: Trackers,
    name: String,
    stop: CancellationToken,
}

/// Serves `listener` with `workers` threads (at least one) named
/// `{thread}-{i}`, each running its own single-threaded runtime and
/// accepting until `stop`; a worker ends when it has stopped accepting and
/// its last connection has ended. Connections are tracked by `tasks` (the drain).
pub fn spawn(
    listener: TcpListener,
    thread: &str,
    acceptor: Arc<dyn Acceptor>,
    stop: CancellationToken,
    tasks: TaskTracker,
    workers: usize,
) -> std::io::Result<()> {
    let workers = workers.max(1);
    // Out of the caller's event loop: each worker registers its own descriptor.
    let listener = listener.into_std()?;
    let loads: Arc<[Arc<AtomicUsize>]> = (0..workers).map(|_| Arc::default()).collect();
    let (queues, receivers): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
    let queues: Arc<[_]> = queues.into();
    for (index, handed) in receivers.into_iter().enumerate() {
        let listener = listener.try_clone()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let worker = Worker {
            index,
            loads: loads.clone(),
            queues: queues.clone(),
            acceptor: acceptor.clone(),
            trackers: Trackers {
                global: tasks.clone(),
                local: TaskTracker::new(),
            },
            name: thread.to_owned(),
            stop: stop.clone(),
        };
        // Tracked from the start, so the drain waits for this worker's connections.
        let running = tasks.token();
        std::thread::Builder::new()
            .name(format!("{thread}-{index}"))
            .spawn(move || {
                let _running = running;
                runtime.block_on(worker.run(listener, handed));
            })?;
    }
    Ok(())
}

impl Worker {
    async fn run(
        self,
        listener: std::net::TcpListener,
        mut handed: mpsc::UnboundedReceiver<Handed>,
    ) {
        match TcpListener::from_std(listener) {
            Ok(listener) => self.accept_loop(&listener, &mut handed).await,
            Err(e) => {
                warn!(listener = %self.name, error = %e, "worker cannot listen; it only takes connections handed over")
            }
        }
        // Handed over before the stop: still served (they are closed ungreeted while draining).
        handed.close();
        while let Ok((stream, peer, load)) = handed.try_recv() {
            self.start_handed(stream, peer, load);
        }
        self.trackers.local.close();
        self.trackers.local.wait().await;
    }

    /// Accepts until `stop`, serving connections here or handing them over.
    async fn accept_loop(
        &self,
        listener: &TcpListener,
        handed: &mut mpsc::UnboundedReceiver<Handed>,
    ) {
        // tokio's timer driver writes to its event loop's eventfd (a syscall,
        // and a spurious epoll wake-up after it) whenever a new timer expires
        // before every registered one: SMTP sessions register 5 s connect and
        // 30 s greeting timeouts next to 5 min command timeouts, about 2 such
        // writes per session and 1 per message. A timer that always expires
        // within a second makes every connection's timeout "later": one
        // wake-up per second instead (see docs/performance.md).
        let mut keep_timers_early = tokio::time::interval(Duration::from_secs(1));
        keep_timers_early.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut errors = AcceptErrors::new(self.name.clone());
        loop {
            let accepted = tokio::select! {
                _ = self.stop.cancelled() => return,
                Some((stream, peer, load)) = handed.recv() => {
                    self.start_handed(stream, peer, load);
                    continue;
                }
                _ = keep_timers_early.tick() => continue,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    errors.accepted();
                    self.place(stream, peer);
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    let pause = errors.failed(&e, std::time::Instant::now());
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Serves a connection this worker accepted, or hands it to the least
    /// busy worker when this one is clearly busier.
    fn place(&self, stream: TcpStream, peer: SocketAddr) {
        let mine = self.loads[self.index].load(Ordering::Relaxed);
        let least = self
            .loads
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|&(_, load)| load);
        if let Some((target, min)) = least
            && crowded(mine, min)
        {
            // Out of this event loop: the other worker registers it in its own.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    warn!(listener = %self.name, error = %e, "cannot hand a connection over");
                    return;
                }
            };
            let load = WorkerLoad::new(&self.loads[target]);
            if let Err(mpsc::error::SendError((stream, peer, _))) =
                self.queues[target].send((stream, peer, load))
            {
                // That worker has stopped: serve it here after all.
                self.start_handed(stream, peer, WorkerLoad::new(&self.loads[self.index]));
            }
            return;
        }
        let load = WorkerLoad::new(&self.loads[self.index]);
        self.acceptor.start(stream, peer, &self.trackers, load);
    }

    fn start_handed(&self, stream: std::net::TcpStream, peer: SocketAddr, load: WorkerLoad) {
        match TcpStream::from_std(stream) {
            Ok(stream) => self.acceptor.start(stream, peer, &self.trackers, load),
            Err(e) => warn!(listener = %self.name, error = %e, "worker cannot take a connection"),
        }
    }
}

/// True when a worker with `mine` connections should hand a new one to the
/// least busy worker, which has `min`: when it has more than that plus a
/// quarter, so a few long sessions spread over the workers while many short
/// ones rarely move.
fn crowded(mine: usize, min: usize) -> bool {
    mine > min + min / 4
}

#[cfg(test)]
mod tests {
    use super::crowded;

    #[test]
    fn hands_over_only_when_clearly_busier() {
        let cases = [
            (0, 0, false),
            (1, 0, true),
            (1, 1, false),
            (2, 1, true),
            (10, 8, false),
            (11, 8, true),
            (9, 4, true),
            (100, 80, false),
            (101, 80, true),
        ];
        for (mine, min, want) in cases {
            assert_eq!(crowded(mine, min), want, "mine {mine} min {min}");
        }
    }
}
