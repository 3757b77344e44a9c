//! GINA web-portal proxy: `[[http]]` listeners in front of the members'
//! `gina` upstreams (SPEC section 6).
//!
//! How a request flows:
//!
//! 1. [`server`] accepts on a `[[http]]` listener (TLS by rustls with ALPN
//!    `h2` and `http/1.1` when the listener has a certificate) and serves
//!    over TLS the protocol ALPN negotiated (HTTP/2 for `h2`, HTTP/1.1
//!    otherwise; RFC 9113 section 3.3), in plain text HTTP/1.1 and
//!    prior-knowledge HTTP/2 with hyper's auto server; on drain it shuts each
//!    connection down gracefully (requests in flight finish); a [`watchdog`]
//!    closes a connection that sends no request head for 30 s.
//! 2. [`proxy`] answers itself what the listener's [`LocalContent`] claims
//!    (the LFT store's `/lft/SHA256`, [`local_content`]); it routes every
//!    other request like a public SMTP session
//!    ([`crate::routing::Router::route_http`]: the same rendezvous order over
//!    the client and the address it reached, over `ingress` members with a
//!    `gina` upstream; [`route`] keeps that order per connection while member
//!    health is unchanged), puts a member named by the sticky cookie first when
//!    it is a healthy candidate, rewrites the headers ([`headers`]), and
//!    forwards through the pooled client of [`upstream`], streaming the
//!    bodies both ways ([`body`]). A failed connect moves the request to the
//!    next member; anything else is answered: `502`, `503`, `504`, `413`.
//! 3. [`upgrade`] splices a WebSocket (any `Upgrade`) after the member's `101`.
//! 4. [`log`] writes one access-log line and the request metrics per request.
//!
//! [`headers`] and [`sticky`] are sans-IO and unit-tested.

pub mod body;
pub mod headers;
pub mod joint;
pub mod local_content;
pub mod log;
pub mod proxy;
pub mod route;
pub mod server;
pub mod sticky;
pub mod upgrade;
pub mod upstream;
pub mod watchdog;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ConfigError, ConfigErrors, HttpListener};
use crate::routing::{MemberTable, Router};
use crate::shutdown::Shutdown;
pub use local_content::LocalContent;
use upstream::Upstreams;

/// The HTTP side of one configuration snapshot: listener settings and
/// certificates, and the client towards members (with its connection pool).
pub struct HttpSnapshot {
    listeners: HashMap<String, Listener>,
    upstreams: Arc<Upstreams>,
    server: Arc<Servers>,
}

struct Listener {
    settings: Arc<HttpListener>,
    name: Arc<str>,
    tls: Option<TlsAcceptor>,
}

impl HttpSnapshot {
    /// Loads the listeners' certificates and builds the member client; every
    /// problem is reported, naming its file.
    pub fn load(config: &Config) -> Result<HttpSnapshot, ConfigErrors> {
        let mut errors = Vec::new();
        let mut listeners = HashMap::new();
        for (i, l) in config.http.iter().enumerate() {
            let tls = match (&l.tls_cert, &l.tls_key) {
                (Some(cert), Some(key)) => match crate::tls::server_config(cert, key) {
                    Ok(tls) => {
                        let mut tls = (*tls).clone();
                        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                        Some(TlsAcceptor::from(Arc::new(tls)))
                    }
                    Err(e) => {
                        errors.push(ConfigError {
                            file: cert.clone(),
                            line: None,
                            key: format!("http[{i}].tls_cert"),
                            message: format!("unusable certificate or key: {e}"),
                        });
                        None
                    }
                },
                _ => None,
            };
            listeners.insert(
                l.name.clone(),
                Listener {
                    settings: Arc::new(l.clone()),
                    name: Arc::from(l.name.as_str()),
                    tls,
                },
            );
        }
        let upstreams = match Upstreams::new(&config.policy) {
            Ok(u) => Some(Arc::new(u)),
            Err(e) => {
                errors.push(ConfigError {
                    file: config
                        .policy
                        .upstream
                        .tls_ca_file
                        .clone()
                        .unwrap_or_else(|| config.node.policy.clone()),
                    line: None,
                    key: "upstream.tls_ca_file".to_owned(),
                    message: format!("for https GINA members: {e}"),
                });
                None
            }
        };
        match upstreams {
            Some(upstreams) if errors.is_empty() => Ok(HttpSnapshot {
                listeners,
                upstreams,
                server: Arc::new(Servers::new()),
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// Everything a connection on `listener` needs, from this snapshot.
    pub fn context(
        &self,
        listener: &str,
        router: Arc<Router>,
        members: Arc<MemberTable>,
        shutdown: Shutdown,
        local_content: Option<Arc<dyn LocalContent>>,
    ) -> Option<HttpContext> {
        let l = self.listeners.get(listener)?;
        let policy = router.policy().clone();
        Some(HttpContext {
            listener: l.settings.clone(),
            name: l.name.clone(),
            tls: l.tls.clone(),
            router,
            members,
            upstreams: self.upstreams.clone(),
            server: self.server.clone(),
            shutdown,
            backoff: policy.upstream.backoff,
            max_attempts: usize::try_from(policy.routing.max_attempts.max(1)).unwrap_or(1),
            local_content,
        })
    }
}

/// hyper's servers for client connections, all with the same settings.
pub struct Servers {
    /// Plain text: HTTP/1.1 (with upgrades) or prior-knowledge HTTP/2,
    /// told apart by the first bytes.
    pub auto: auto::Builder<TokioExecutor>,
    /// TLS with `http/1.1` or no protocol negotiated.
    pub http1: http1::Builder,
    /// TLS with `h2` negotiated.
    pub http2: http2::Builder<TokioExecutor>,
}

impl Servers {
    fn new() -> Servers {
        // The request-head timeout is the connection's watchdog
        // ([`watchdog`]): hyper's own (on by default with a timer) arms a
        // timer per request. The auto server's halves get the same settings.
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new());
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true);
        auto.http2().timer(TokioTimer::new());
        Servers { auto, http1, http2 }
    }
}

/// What one connection on a `[[http]]` listener works with (a snapshot).
pub struct HttpContext {
    /// The listener's settings.
    pub listener: Arc<HttpListener>,
    /// Its name, for logs and metrics.
    pub name: Arc<str>,
    /// TLS acceptor when the listener has a certificate.
    pub tls: Option<TlsAcceptor>,
    /// Routing of the snapshot.
    pub router: Arc<Router>,
    /// Live member state (shared with SMTP).
    pub members: Arc<MemberTable>,
    /// The members' portals and the pooled client.
    pub upstreams: Arc<Upstreams>,
    /// The HTTP/1.1 and HTTP/2 servers.
    pub server: Arc<Servers>,
    /// Drain and abort.
    pub shutdown: Shutdown,
    /// How long a member whose connect failed is avoided (`[upstream] backoff`).
    pub backoff: Duration,
    /// Members tried per request (`[routing] max_attempts`).
    pub max_attempts: usize,
    /// What the listener answers itself (the LFT store at `/lft/SHA256`,
    /// SPEC section 9), supplied by the daemon.
    pub local_content: Option<Arc<dyn LocalContent>>,
}
