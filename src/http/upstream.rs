//! The connection to members' GINA portals: one pooled hyper client per
//! snapshot (its pool keeps HTTP/1.1 keep-alive connections per member),
//! plain TCP for `host:port`, TLS (rustls) for `https://host:port`.
//!
//! Member certificates are verified against `[upstream] tls_ca_file` or the
//! system roots, with the member's host as the server name
//! (`tls_insecure_skip_verify` turns that off, as for SMTP); the rustls
//! configuration is the one [`crate::smtp::tls::client_config`] builds for
//! `tls = "required"`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, Scheme};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::body::RequestBody;
use crate::config::{Policy, UpstreamTls};
use crate::smtp::tls::{self as smtp_tls, TlsError};

/// How long an idle pooled connection to a member is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// Idle pooled connections kept per member.
const POOL_MAX_IDLE: usize = 256;

/// Where one member's portal is.
#[derive(Debug, Clone)]
pub struct MemberUpstream {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host:port`.
    pub authority: Authority,
}

impl MemberUpstream {
    /// The member URI for a request path (`/path?query`).
    pub fn uri(&self, path_and_query: Option<&http::uri::PathAndQuery>) -> Option<Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            path_and_query
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).ok()
    }
}

/// The members' portals of one snapshot and the client that reaches them.
pub struct Upstreams {
    members: HashMap<String, MemberUpstream>,
    /// The pooled client.
    pub client: Client<Connector, RequestBody>,
}

impl Upstreams {
    /// Parses every member's `gina` and builds the client (TLS only when a
    /// member needs it).
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
            let scheme = if tls { Scheme::HTTPS } else { Scheme::HTTP };
            members.insert(m.name.clone(), MemberUpstream { scheme, authority });
        }
        let tls = if any_tls {
            let mut upstream = policy.upstream.clone();
            upstream.tls = UpstreamTls::Required;
            smtp_tls::client_config(&upstream)?
        } else {
            None
        };
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(policy.upstream.connect_timeout));
        let connector = Connector {
            http,
            tls: tls.map(TlsConnector::from),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Upstreams { members, client })
    }

    /// The portal of `member`, if it has one.
    pub fn member(&self, member: &str) -> Option<&MemberUpstream> {
        self.members.get(member)
    }
}

/// Connects to a member: TCP, then TLS for `https` URIs.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<TlsConnector>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = Io;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Io, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = (uri.scheme() == Some(&Scheme::HTTPS)).then(|| self.tls.clone());
        let connecting = self.http.call(uri.clone());
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            let Some(tls) = tls else {
                return Ok(Io::Plain(TokioIo::new(tcp)));
            };
            let tls = tls.ok_or("no TLS configuration for an https member")?;
            let host = uri.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                Err(_) => rustls::pki_types::ServerName::try_from(host.to_owned())?,
            };
            let stream = tls.connect(name, tcp).await?;
            Ok(Io::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A member connection as hyper sees it: plain TCP or TLS over TCP.
pub enum Io {
    /// `host:port`.
    Plain(TokioIo<TcpStream>),
    /// `https://host:port`.
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for Io {
    fn connected(&self) -> Connected {
        Connected::new()
    }
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
