//! The connections to members' GINA portals: HTTP/1.1 over plain TCP for
//! `host:port`, over TLS (rustls) for `https://host:port`.
//!
//! Each client connection keeps its own member connections ([`LocalPool`]):
//! a keep-alive client reuses one member connection for all its requests,
//! and the member connections are driven inside the client connection's
//! task ([`Drivers`]), so a request crosses no task or thread boundary; they
//! close with the client connection. A request that needs a connection
//! while the others are busy (HTTP/2 streams in parallel) opens another.
//! An upgrade (WebSocket) always gets a fresh connection of its own, driven
//! by its own task, since it outlives the request.
//!
//! Member certificates are verified against `[upstream] tls_ca_file` or the
//! system roots, with the member's host as the server name
//! (`tls_insecure_skip_verify` turns that off, as for SMTP); the rustls
//! configuration is the one [`crate::tls::client_config`] builds for
//! `tls = "required"`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::body::RequestBody;
use crate::config::{HostPort, Policy, UpstreamTls};
use crate::tls::{self as smtp_tls, TlsError};

/// Idle connections kept per member and client connection.
const MAX_IDLE: usize = 8;

/// Where one member's portal is.
#[derive(Debug)]
pub struct MemberUpstream {
    /// `host:port`, also the `Host` of a request that had none.
    pub authority: Authority,
    addr: HostPort,
    tls: bool,
}

/// The members' portals of one snapshot and how to reach them.
pub struct Upstreams {
    members: HashMap<String, Arc<MemberUpstream>>,
    tls: Option<TlsConnector>,
    connect_timeout: Duration,
}

impl Upstreams {
    /// Parses every member's `gina` (TLS set up only when a member needs it).
    pub fn new(policy: &Policy) -> Result<Upstreams, TlsError> {
        let mut members = HashMap::new();
        let mut any_tls = false;
        for m in &policy.members {
            let Some(gina) = &m.gina else { continue };
            // Validated by the config loader; a value that does not parse
            // leaves the member without a GINA upstream.
            let Ok((tls, addr)) = crate::config::parse_gina(gina) else {
                continue;
            };
            let Ok(authority) = addr.to_string().parse::<Authority>() else {
                continue;
            };
            any_tls |= tls;
            members.insert(
                m.name.clone(),
                Arc::new(MemberUpstream {
                    authority,
                    addr,
                    tls,
                }),
            );
        }
        let tls = if any_tls {
            let mut upstream = policy.upstream.clone();
            upstream.tls = UpstreamTls::Required;
            smtp_tls::client_config(&upstream)?.map(TlsConnector::from)
        } else {
            None
        };
        Ok(Upstreams {
            members,
            tls,
            connect_timeout: policy.upstream.connect_timeout,
        })
    }

    /// The portal of `member`, if it has one.
    pub fn member(&self, member: &str) -> Option<&Arc<MemberUpstream>> {
        self.members.get(member)
    }

    /// Sends `req` (origin-form URI, `Host` set) to `member`: on an idle
    /// connection of `pool` when there is one, else on a new one.
    pub async fn send(
        &self,
        pool: &LocalPool,
        member: &Arc<MemberUpstream>,
        mut req: Request<RequestBody>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, SendError> {
        if !upgrade {
            while let Some(mut sender) = pool.take(member) {
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        pool.put(member, sender);
                        return Ok(resp);
                    }
                    // Not written: the idle connection was closed meanwhile.
                    Err(mut e) => match e.take_message() {
                        Some(back) => req = back,
                        None => return Err(SendError::Request(e.into_error())),
                    },
                }
            }
        }
        // Boxed: the connect and handshake futures are large (TLS), and
        // inline they would be moved with every request's future.
        Box::pin(self.open_and_send(pool, member, req, upgrade)).await
    }

    /// [`Upstreams::send`] on a new connection.
    async fn open_and_send(
        &self,
        pool: &LocalPool,
        member: &Arc<MemberUpstream>,
        req: Request<RequestBody>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, SendError> {
        let io = self.connect(member).await.map_err(SendError::Connect)?;
        let (mut sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        if upgrade {
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
        } else {
            pool.drive(Box::pin(async move {
                let _ = conn.await;
            }));
        }
        match sender.try_send_request(req).await {
            Ok(resp) => {
                if !upgrade {
                    pool.put(member, sender);
                }
                Ok(resp)
            }
            Err(e) => Err(SendError::Request(e.into_error())),
        }
    }

    async fn connect(&self, member: &MemberUpstream) -> Result<Io, BoxError> {
        let connecting = async {
            let tcp = TcpStream::connect((member.addr.host.as_str(), member.addr.port)).await?;
            tcp.set_nodelay(true)?;
            if !member.tls {
                return Ok(Io::Plain(TokioIo::new(tcp)));
            }
            let tls = self
                .tls
                .clone()
                .ok_or("no TLS configuration for an https member")?;
            let name = smtp_tls::server_name(&member.addr)
                .ok_or("member host is not a valid TLS server name")?;
            let stream = tls.connect(name, tcp).await?;
            Ok(Io::Tls(Box::new(TokioIo::new(stream))))
        };
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(result) => result,
            Err(_) => Err(format!("connect timeout ({:?})", self.connect_timeout).into()),
        }
    }
}

/// Why a request got no response from a member.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection (refused, unreachable, timeout, TLS): the request never
    /// reached the member, so it may go to another one.
    #[error("connect: {0}")]
    Connect(BoxError),
    /// The member had the request and failed (closed, malformed answer, the
    /// request body failed).
    #[error("{0}")]
    Request(hyper::Error),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A member connection's driving future.
pub type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One client connection's member connections (see the module docs).
pub struct LocalPool {
    idle: Mutex<Vec<(Arc<MemberUpstream>, SendRequest<RequestBody>)>>,
    new: Arc<NewDrivers>,
}

/// Member connections handed to [`Drivers`] and not yet picked up. A flag
/// rather than a channel: [`Drivers`] is polled a few times per request and
/// new connections are rare, so a poll costs one atomic swap.
#[derive(Default)]
struct NewDrivers {
    /// Set when `list` has something.
    pending: AtomicBool,
    list: Mutex<Vec<Driver>>,
    /// The waker of the latest poll of [`Drivers`].
    waker: Mutex<Option<Waker>>,
}

impl LocalPool {
    /// A pool and the future that drives its connections (poll it in the
    /// client connection's task; it never completes).
    pub fn new() -> (LocalPool, Drivers) {
        let new = Arc::new(NewDrivers::default());
        (
            LocalPool {
                idle: Mutex::new(Vec::new()),
                new: new.clone(),
            },
            Drivers {
                new,
                registered: None,
                running: Vec::new(),
            },
        )
    }

    /// An idle, usable connection to `member`; closed ones are dropped.
    fn take(&self, member: &Arc<MemberUpstream>) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|(_, s)| !s.is_closed());
        let pos = idle
            .iter()
            .position(|(m, s)| Arc::ptr_eq(m, member) && s.is_ready())?;
        Some(idle.swap_remove(pos).1)
    }

    /// Keeps `sender` for the next request (it is ready again once the
    /// response body has been read).
    fn put(&self, member: &Arc<MemberUpstream>, sender: SendRequest<RequestBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.iter().filter(|(m, _)| Arc::ptr_eq(m, member)).count() < MAX_IDLE {
            idle.push((member.clone(), sender));
        }
    }

    fn drive(&self, driver: Driver) {
        // Dropped with the pool if the client connection (and its
        // [`Drivers`]) is gone: so is everyone who could use it.
        self.new
            .list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(driver);
        self.new.pending.store(true, Ordering::SeqCst);
        let waker = self
            .new
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Drives the member connections of one client connection.
pub struct Drivers {
    new: Arc<NewDrivers>,
    /// The waker last stored in `new` (stored again only when it changes).
    registered: Option<Waker>,
    running: Vec<Driver>,
}

impl Future for Drivers {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // Registered before looking at `pending`, so a connection handed
        // over after the look wakes this poll's waker.
        if !this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            this.registered = Some(cx.waker().clone());
            *this
                .new
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        }
        if this.new.pending.swap(false, Ordering::SeqCst) {
            let mut list = this.new.list.lock().unwrap_or_else(PoisonError::into_inner);
            this.running.append(&mut list);
        }
        this.running
            .retain_mut(|d| d.as_mut().poll(cx).is_pending());
        Poll::Pending
    }
}

/// A member connection as hyper sees it: plain TCP or TLS over TCP.
pub enum Io {
    /// `host:port`.
    Plain(TokioIo<TcpStream>),
    /// `https://host:port`.
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Io::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        both!(self, s => s.poll_read(cx, buf))
    }
}

impl Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        both!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        both!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        both!(self, s => s.poll_shutdown(cx))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        both!(self, s => s.poll_write_vectored(cx, bufs))
    }
}
