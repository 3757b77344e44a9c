//! Accepting SMTP connections on a `[[smtp]]` listener.
//!
//! Before the greeting, a connection from a trusted proxy on a
//! `proxy_protocol` listener must send a PROXY v1/v2 header, which names the
//! real client. Anyone who talks before the greeting otherwise is refused:
//! `550 5.7.1` for a PROXY header mxgate may not honour, `554 5.5.1` for
//! anything else (pre-greet). Then a [`Session`] runs in its own task.

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
use tracing::{Instrument, info, info_span, warn};

use crate::config::SmtpListener;
use crate::metrics;
use crate::smtp::proto::{self, ProxyInfo, Reply};
use crate::smtp::session::{Peer, Session, SessionContext};

/// How long a trusted proxy has to send its PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Session counters of one listener, for `mxgate status`.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Sessions open now.
    pub active: AtomicU64,
    /// Sessions accepted since start.
    pub total: AtomicU64,
}

/// Decrements the active count when a session task ends, however it ends.
struct ActiveGuard(Arc<ListenerStats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Source of a fresh [`SessionContext`] per connection (the current snapshot).
pub trait ContextSource: Send + Sync + 'static {
    /// The context for a session starting now on `listener`.
    fn context(&self, listener: &str) -> Option<SessionContext>;
}

/// Accepts connections until `stop` is cancelled; sessions are tracked by `tasks`.
pub async fn accept_loop(
    listener: TcpListener,
    name: String,
    source: Arc<dyn ContextSource>,
    stats: Arc<ListenerStats>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(ctx) = source.context(&name) else {
            continue;
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        stats.total.fetch_add(1, Ordering::Relaxed);
        stats.active.fetch_add(1, Ordering::Relaxed);
        let guard = ActiveGuard(stats.clone());
        let metered = metrics::session_opened(&name);
        let span = info_span!("smtp", session = id, client = %peer);
        tasks.spawn(
            async move {
                let _guard = (guard, metered);
                handle(stream, peer, id, ctx).await;
            }
            .instrument(span),
        );
    }
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, id: u64, ctx: SessionContext) {
    if let Err(e) = stream.set_nodelay(true) {
        warn!(error = %e, "cannot set TCP_NODELAY");
    }
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let listener = ctx.listener.clone();
    let trusted = is_trusted(&listener, peer);
    let mut rbuf = BytesMut::with_capacity(4096);
    let mut client = Peer {
        id,
        client: peer,
        destination: local,
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
                metrics::refused(&listener.name, metrics::reason::PROXY_HEADER);
                refuse(
                    &mut stream,
                    Reply::new(421, "4.7.0", "PROXY header expected"),
                )
                .await;
                return;
            }
        }
    }
    if let Some(reply) = pregreet_check(&mut stream, &mut rbuf, listener.greet_delay, peer).await {
        metrics::refused(&listener.name, pregreet_reason(&reply));
        refuse(&mut stream, reply).await;
        return;
    }
    Session::new(stream, ctx, client, rbuf).run().await;
}

/// Looks for a client talking before the greeting; returns the refusal when it does.
async fn pregreet_check(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    delay: Duration,
    peer: SocketAddr,
) -> Option<Reply> {
    if rbuf.is_empty() {
        if delay.is_zero() {
            let mut probe = [0u8; 512];
            match stream.try_read(&mut probe) {
                Ok(n) if n > 0 => rbuf.extend_from_slice(&probe[..n]),
                _ => return None,
            }
        } else {
            match timeout(delay, stream.read_buf(rbuf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }
    if rbuf.starts_with(b"PROXY ") || rbuf.starts_with(b"\r\n\r\n\0\r\nQUIT\n") {
        warn!(peer = %peer, "PROXY header from a peer not in trusted_proxies (or on a listener without proxy_protocol) refused");
        return Some(Reply::new(
            550,
            "5.7.1",
            "Error: PROXY header not accepted from you",
        ));
    }
    info!(peer = %peer, "client talked before the greeting");
    Some(Reply::new(
        554,
        "5.5.1",
        "Error: talking before the greeting",
    ))
}

/// The refusal reason of a [`pregreet_check`] reply.
fn pregreet_reason(reply: &Reply) -> &'static str {
    if reply.code() == 550 {
        metrics::reason::PROXY_UNTRUSTED
    } else {
        metrics::reason::PREGREET
    }
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

async fn refuse(stream: &mut TcpStream, reply: Reply) {
    let _ = timeout(Duration::from_secs(5), stream.write_all(reply.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// True when `peer` may send PROXY headers and XCLIENT to this listener.
pub(crate) fn is_trusted(listener: &SmtpListener, peer: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    listener.trusted_proxies.iter().any(|net| net.contains(&ip))
}
