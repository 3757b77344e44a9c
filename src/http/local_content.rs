//! Content a GINA listener answers itself instead of proxying it to a member:
//! what the data plane needs of a subsystem such as the LFT store (`GET`/`HEAD
//! /lft/SHA256`, SPEC section 9), declared here as [`LocalContent`].
//!
//! `http` declares the trait, the subsystem implements it, and the daemon
//! supplies it in each [`HttpContext`](super::HttpContext), so the proxy names
//! no subsystem and can be tested without one. The source decides which paths
//! are its own ([`LocalContent::claims`]): only those requests pay for the
//! boxed future of [`LocalContent::serve`].

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

/// A local answer, its body whole in memory.
pub type LocalResponse = Response<Full<Bytes>>;

/// What [`LocalContent::serve`] returns: boxed, so the proxy's request future
/// does not carry it inline.
pub type LocalFuture<'a> = Pin<Box<dyn Future<Output = Option<LocalResponse>> + Send + 'a>>;

/// A source of locally served content.
pub trait LocalContent: Send + Sync + 'static {
    /// Whether a request for `path` is this source's to answer. Asked for
    /// every request before it is routed: cheap, and it allocates nothing.
    fn claims(&self, path: &str) -> bool;

    /// The answer to `req`, whose path [`claims`](LocalContent::claims)
    /// accepted; `None` leaves the request to the proxy.
    fn serve<'a>(&'a self, req: &'a Request<Incoming>) -> LocalFuture<'a>;
}
