//! Accepting SMTP connections on a `[[smtp]]` listener.
//!
//! Before the greeting, a connection from a trusted proxy on a
//! `proxy_protocol` listener must send a PROXY v1/v2 header, which names the
//! real client. Anyone who talks before the greeting otherwise is refused:
//! `550 5.7.1` for a PROXY header mxgate may not honour, `554 5.5.1` for
//! anything else (pre-greet). Then a [`Session`] runs in its own task, on
//! the worker thread that accepted the connection ([`spawn_workers`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug_span, warn};

use crate::config::SmtpListener;
use crate::descriptors::SessionGate;
use crate::metrics;
use crate::smtp::greeting::{self, Greeting};
use crate::smtp::proto::{self, ProxyInfo, Reply};
use crate::smtp::session::{NameSlot, Peer, Session, SessionContext};
use crate::workers::{Acceptor, ActiveGuard, ListenerStats, Trackers, WorkerLoad};

/// How long a trusted proxy has to send its PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Source of a fresh [`SessionContext`] per connection (the current snapshot).
pub trait ContextSource: Send + Sync + 'static {
    /// The context for a session starting now on `listener`.
    fn context(&self, listener: &str) -> Option<SessionContext>;
}

/// Starts a session for each connection a worker accepts on one `[[smtp]]` listener.
struct SmtpAcceptor {
    name: String,
    source: Arc<dyn ContextSource>,
    stats: Arc<ListenerStats>,
    /// The address every session on this listener reached, when the
    /// listener is bound to one (not 0.0.0.0 / [::]): no getsockname per connection.
    fixed_local: Option<SocketAddr>,
    metrics: metrics::ListenerMetrics,
}

impl Acceptor for SmtpAcceptor {
    fn start(&self, stream: TcpStream, peer: SocketAddr, tasks: &Trackers, load: WorkerLoad) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let Some(ctx) = self.source.context(&self.name) else {
            return;
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.stats.total.fetch_add(1, Ordering::Relaxed);
        let active = self.stats.active.fetch_add(1, Ordering::Relaxed) + 1;
        let guard = ActiveGuard(self.stats.clone());
        let metered = self.metrics.session_opened();
        // A debug span: at info every poll of the session would enter and
        // leave it (about 2k instructions per message, 10k per session). The
        // session's own lines carry `session` themselves.
        let span = debug_span!("smtp", session = id, client = %peer);
        let stats = self.stats.clone();
        let fixed_local = self.fixed_local;
        tasks.spawn(
            async move {
                let _guard = (guard, metered, load);
                // Boxed: the session future is several KiB (the session and
                // every nested future), and the runtime moves the task's
                // future several times (spawn, completion); moving a box is
                // moving a pointer.
                Box::pin(handle(stream, peer, fixed_local, id, ctx, stats, active)).await;
            }
            .instrument(span),
        );
    }
}

/// Serves `listener` with `workers` threads (at least one), each running its
/// own single-threaded runtime and accepting its share of the sessions
/// ([`crate::workers`]) until `stop`; a session stays on the thread that
/// accepted it. Sessions are tracked by `tasks` (the drain).
pub fn spawn_workers(
    listener: TcpListener,
    name: String,
    source: Arc<dyn ContextSource>,
    stats: Arc<ListenerStats>,
    stop: CancellationToken,
    tasks: TaskTracker,
    workers: usize,
) -> std::io::Result<()> {
    let fixed_local = listener
        .local_addr()
        .ok()
        .filter(|addr| !addr.ip().is_unspecified());
    let thread = format!("smtp-{name}");
    let acceptor = Arc::new(SmtpAcceptor {
        metrics: metrics::ListenerMetrics::new(&name),
        name,
        source,
        stats,
        fixed_local,
    });
    crate::workers::spawn(listener, &thread, acceptor, stop, tasks, workers)
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    fixed_local: Option<SocketAddr>,
    id: u64,
    ctx: SessionContext,
    stats: Arc<ListenerStats>,
    active: u64,
) {
    if let Err(e) = stream.set_nodelay(true) {
        warn!(error = %e, "cannot set TCP_NODELAY");
    }
    let Some(local) = fixed_local.or_else(|| stream.local_addr().ok()) else {
        return;
    };
    let listener = ctx.listener.clone();
    let Some(_pass) = stats.gate.enter() else {
        refuse_over_budget(&mut stream, &listener, &stats.gate, peer).await;
        return;
    };
    let trusted = is_trusted(&listener, peer);
    let mut rbuf = BytesMut::with_capacity(1024);
    let mut client = Peer {
        id,
        client: peer,
        destination: local,
        name: None,
        names: NameSlot::default(),
    };
    if listener.proxy_protocol && trusted {
        match read_proxy_header(&mut stream, &mut rbuf).await {
            Ok(ProxyInfo::Tcp {
                source,
                destination,
            }) => {
                client.client = source;
                client.destination = destination;
            }
            Ok(ProxyInfo::Local) => {}
            Err(reason) => {
                warn!(peer = %peer, reason, "PROXY header from trusted proxy rejected");
                let reply = Reply::new(421, "4.7.0", "PROXY header expected");
                refuse(&mut stream, &listener, metrics::reason::PROXY_HEADER, reply).await;
                return;
            }
        }
    }
    if usize::try_from(active).unwrap_or(usize::MAX) > listener.max_sessions {
        warn!(listener = %listener.name, client = %client.client, limit = listener.max_sessions, "session refused: listener at max_sessions");
        let text = format!(
            "{} Error: too many sessions, try again later",
            listener.hostname
        );
        let reply = Reply::new(421, "4.7.0", &text);
        refuse(&mut stream, &listener, metrics::reason::MAX_SESSIONS, reply).await;
        return;
    }
    // A trusted proxy speaking for many clients (XCLIENT) is not one client;
    // behind a PROXY header the real client is counted.
    let _slot = if is_trusted(&listener, client.client) {
        None
    } else {
        let slot = stats.client_slot(client.client.ip(), listener.max_sessions_per_client);
        if slot.is_none() {
            warn!(listener = %listener.name, client = %client.client, limit = listener.max_sessions_per_client, "session refused: client at max_sessions_per_client");
            let text = format!(
                "{} Error: too many sessions from your address, try again later",
                listener.hostname
            );
            let reply = Reply::new(421, "4.7.0", &text);
            let reason = metrics::reason::MAX_SESSIONS_PER_CLIENT;
            refuse(&mut stream, &listener, reason, reply).await;
            return;
        }
        slot
    };
    if ctx.shutdown.is_draining() {
        // Accepted just as SIGTERM arrived: closed, never greeted.
        return;
    }
    // The client's names are looked up while it is greeted and says EHLO.
    // A trusted proxy names its clients itself (XCLIENT): nothing to start.
    if !is_trusted(&listener, client.client) {
        client.names = NameSlot::start(ctx.client_names.as_ref(), client.client.ip());
    }
    match greeting::greet(&mut stream, &mut rbuf, &listener, peer).await {
        Greeting::Sent => Session::new(stream, ctx, client, rbuf).run().await,
        Greeting::Refuse(reply, reason) => refuse(&mut stream, &listener, reason, reply).await,
        Greeting::Lost => {}
    }
}

/// Refuses a client past the descriptor budget with `421 4.7.0` (logged
/// at most once a second: a flood must not fill the disk).
async fn refuse_over_budget(
    stream: &mut TcpStream,
    listener: &SmtpListener,
    gate: &SessionGate,
    peer: SocketAddr,
) {
    if let Some(suppressed) = gate.refused(std::time::Instant::now()) {
        warn!(listener = %listener.name, client = %peer, limit = gate.cap(), suppressed,
            "session refused: the descriptor budget is spent (suppressed: refusals not logged since the last line)");
    }
    let text = format!(
        "{} Error: too many connections, try again later",
        listener.hostname
    );
    let reply = Reply::new(421, "4.7.0", &text);
    refuse(stream, listener, metrics::reason::DESCRIPTOR_BUDGET, reply).await;
}

async fn read_proxy_header(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
) -> Result<ProxyInfo, &'static str> {
    let read = async {
        loop {
            match proto::parse_proxy_header(rbuf) {
                Ok(Some((len, info))) => {
                    let _ = rbuf.split_to(len);
                    return Ok(info);
                }
                Ok(None) => {}
                Err(_) => return Err("invalid PROXY header"),
            }
            match stream.read_buf(rbuf).await {
                Ok(0) | Err(_) => return Err("connection closed before the PROXY header"),
                Ok(_) => {}
            }
        }
    };
    timeout(PROXY_HEADER_TIMEOUT, read)
        .await
        .unwrap_or(Err("no PROXY header in time"))
}

/// Answers `reply` before the greeting, counts the refusal under `reason`, and closes.
async fn refuse(
    stream: &mut TcpStream,
    listener: &SmtpListener,
    reason: &'static str,
    reply: Reply,
) {
    metrics::refused(&listener.name, reason);
    let _ = timeout(Duration::from_secs(5), stream.write_all(reply.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// True when `peer` may send PROXY headers and XCLIENT to this listener.
pub(crate) fn is_trusted(listener: &SmtpListener, peer: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    listener.trusted_proxies.iter().any(|net| net.contains(&ip))
}
