//! Accepting connections on a `[[http]]` listener and serving them.
//!
//! Each listener is served by one thread per CPU, each with its own
//! single-threaded tokio runtime, accepting its share of the connections
//! ([`spawn_workers`], [`crate::workers`]). A connection, its requests and
//! its member connections stay on one thread (as in HAProxy and nginx), so a
//! request costs no cross-thread wake-up. Connections are tracked by the
//! daemon's tracker (the drain) and by the worker's own, which keeps the
//! worker's runtime alive until its last connection has ended.
//!
//! Each connection gets TCP_NODELAY, a TLS handshake when the listener has a
//! certificate (ALPN `h2`, `http/1.1`), then the HTTP that decides
//! ([`Protocol`]): over TLS the negotiated one, hyper's HTTP/2 server for
//! `h2` and its HTTP/1.1 server (keep-alive, upgrades) for `http/1.1` or
//! none, so an HTTP/1.1 request after `h2` gets a GOAWAY and an HTTP/2
//! preface after `http/1.1` a closed connection (RFC 9113 section 3.3); in
//! plain text hyper's auto server (HTTP/1.1, or HTTP/2 with prior knowledge
//! when the client starts with its preface). [`proxy::handle`] is the
//! service, and a [`watchdog`] closes the connection when no request head comes
//! for 30 seconds. The context (snapshot) is taken per connection. On drain a
//! connection shuts down gracefully: requests in flight finish, idle
//! keep-alive connections close; on abort it is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::HttpContext;
use super::headers::ConnForward;
use super::joint::{Ended, Joint};
use super::proxy::{self, ConnInfo};
use super::route::RouteCache;
use super::upstream::{Drivers, LocalPool};
use super::watchdog::{self, AbortOnDrop, Activity};
use crate::shutdown::Shutdown;
use crate::workers::{Acceptor, ActiveGuard, ListenerStats, WorkerLoad};

/// How long a client has for the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Source of a fresh [`HttpContext`] per connection (the current snapshot).
pub trait HttpContextSource: Send + Sync + 'static {
    /// The context for a connection starting now on `listener`.
    fn http_context(&self, listener: &str) -> Option<HttpContext>;
}

pub use crate::workers::Trackers;

/// Starts each connection a worker accepts on one `[[http]]` listener.
struct HttpAcceptor {
    name: String,
    source: Arc<dyn HttpContextSource>,
    stats: Arc<ListenerStats>,
}

impl Acceptor for HttpAcceptor {
    fn start(&self, stream: TcpStream, peer: SocketAddr, tasks: &Trackers, load: WorkerLoad) {
        start_connection(
            stream,
            peer,
            &self.name,
            &*self.source,
            &self.stats,
            tasks,
            load,
        );
    }
}

/// Serves `listener` with `workers` threads (at least one), each running its
/// own single-threaded runtime and accepting its share of the connections
/// ([`crate::workers`]) until `stop`. Connections are tracked by `tasks` (the drain).
pub fn spawn_workers(
    listener: TcpListener,
    name: String,
    source: Arc<dyn HttpContextSource>,
    stats: Arc<ListenerStats>,
    stop: CancellationToken,
    tasks: TaskTracker,
    workers: usize,
) -> std::io::Result<()> {
    let thread = format!("http-{name}");
    let acceptor = Arc::new(HttpAcceptor {
        name,
        source,
        stats,
    });
    crate::workers::spawn(listener, &thread, acceptor, stop, tasks, workers)
}

/// Starts serving one accepted connection on the current (worker) runtime.
fn start_connection(
    stream: TcpStream,
    peer: SocketAddr,
    name: &str,
    source: &dyn HttpContextSource,
    stats: &Arc<ListenerStats>,
    tasks: &Trackers,
    load: WorkerLoad,
) {
    let Some(ctx) = source.http_context(name) else {
        return;
    };
    let Some(pass) = stats.gate.enter() else {
        // Past the descriptor budget: closed at once (logged once a second).
        if let Some(suppressed) = stats.gate.refused(std::time::Instant::now()) {
            warn!(listener = %name, client = %peer, limit = stats.gate.cap(), suppressed,
                "connection closed: the descriptor budget is spent (suppressed: refusals not logged since the last line)");
        }
        return;
    };
    let Ok(local) = stream.local_addr() else {
        return;
    };
    stats.total.fetch_add(1, Ordering::Relaxed);
    stats.active.fetch_add(1, Ordering::Relaxed);
    let guard = ActiveGuard(stats.clone());
    let (pool, drivers) = LocalPool::new();
    let activity = Arc::new(Activity::default());
    let task = Arc::new(OnceLock::new());
    let watchdog = AbortOnDrop(watchdog::spawn(Arc::downgrade(&activity), task.clone()));
    let secure = ctx.tls.is_some();
    let conn = ConnInfo {
        client: peer,
        local,
        secure,
        tasks: tasks.clone(),
        pool,
        routes: RouteCache::new(),
        forward: ConnForward::new(peer.ip(), if secure { "https" } else { "http" }),
        activity,
    };
    let handle = tasks.spawn(async move {
        let _guards = (guard, load, watchdog, pass);
        serve(stream, Arc::new(ctx), Arc::new(conn), drivers).await;
    });
    let _ = task.set(handle);
}

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Plain text: HTTP/1.1, or HTTP/2 with prior knowledge when the client
    /// starts with the HTTP/2 preface (hyper's auto server).
    Sniffed,
    /// TLS with `http/1.1` or no protocol negotiated: HTTP/1.1 only.
    Http1,
    /// TLS with `h2` negotiated: HTTP/2 only.
    Http2,
}

impl Protocol {
    /// The protocol ALPN negotiated decides, never the first bytes
    /// (RFC 9113 section 3.3).
    fn negotiated(alpn: Option<&[u8]>) -> Protocol {
        match alpn {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        }
    }
}

async fn serve(stream: TcpStream, ctx: Arc<HttpContext>, conn: Arc<ConnInfo>, drivers: Drivers) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "cannot set TCP_NODELAY");
    }
    match ctx.tls.clone() {
        Some(acceptor) => {
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(tls)) => {
                    let protocol = Protocol::negotiated(tls.get_ref().1.alpn_protocol());
                    run(tls, protocol, ctx, conn, drivers).await;
                }
                Ok(Err(e)) => debug!(client = %conn.client, error = %e, "TLS handshake failed"),
                Err(_) => debug!(client = %conn.client, "TLS handshake timed out"),
            }
        }
        None => run(stream, Protocol::Sniffed, ctx, conn, drivers).await,
    }
}

/// Serves the connection in `protocol` with [`proxy::handle`] as the service.
async fn run<I>(
    io: I,
    protocol: Protocol,
    ctx: Arc<HttpContext>,
    conn: Arc<ConnInfo>,
    drivers: Drivers,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let ctx = ctx.clone();
        let conn = conn.clone();
        service_fn(move |req| {
            let ctx = ctx.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(proxy::handle(&ctx, &conn, req).await) }
        })
    };
    let io = TokioIo::new(io);
    let servers = &ctx.server;
    let (shutdown, client) = (&ctx.shutdown, conn.client);
    match protocol {
        Protocol::Sniffed => {
            let served = servers.auto.serve_connection_with_upgrades(io, service);
            drive(served, |c| c.graceful_shutdown(), shutdown, client, drivers).await;
        }
        Protocol::Http1 => {
            let served = servers.http1.serve_connection(io, service).with_upgrades();
            drive(served, |c| c.graceful_shutdown(), shutdown, client, drivers).await;
        }
        Protocol::Http2 => {
            let served = servers.http2.serve_connection(io, service);
            drive(served, |c| c.graceful_shutdown(), shutdown, client, drivers).await;
        }
    }
}

/// Drives the client connection `served` until it ends; its member
/// connections are driven alongside, in this task, and closed with it. On
/// drain `graceful` shuts it down gracefully; on abort it is dropped.
async fn drive<M, E>(
    served: M,
    graceful: fn(Pin<&mut M>),
    shutdown: &Shutdown,
    client: SocketAddr,
    drivers: Drivers,
) where
    M: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    // The member connections, the drain and the abort are polled only when
    // woken, in the same task poll as the client connection ([`Joint`]).
    let mut joint = Joint::new(served, drivers);
    joint.stop_on(shutdown.drained());
    match (&mut joint).await {
        Ended::Done(Err(e)) => {
            debug!(client = %client, error = %e, "HTTP connection ended with an error");
            return;
        }
        Ended::Done(Ok(())) => return,
        Ended::Stopped => {}
    }
    graceful(joint.main_mut());
    joint.stop_on(shutdown.aborted());
    let _ = joint.await;
}

#[cfg(test)]
mod tests {
    use super::Protocol;

    #[test]
    fn alpn_decides_the_protocol() {
        assert_eq!(Protocol::negotiated(Some(b"h2")), Protocol::Http2);
        assert_eq!(Protocol::negotiated(Some(b"http/1.1")), Protocol::Http1);
        assert_eq!(Protocol::negotiated(None), Protocol::Http1);
    }
}
