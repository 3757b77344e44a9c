//! Bodies in both directions, streamed frame by frame (never collected).
//!
//! [`PendingBody`] holds the client's request body until an attempt polls
//! it: while no byte has been read, a failed connect can hand it to the
//! next member ([`PendingBody::attempt`]); after that it belongs to that one
//! attempt. [`RequestBody`] counts the bytes and stops past `max_body_size`
//! (the request then fails, and the client gets `413`).
//!
//! [`ResponseBody`] is what the client receives: the member's body as is,
//! or mxgate's own short text. It carries the request's [`Access`] record,
//! which writes the access-log line and the metrics when the body is done
//! or dropped (client gone), so bytes and duration cover the whole response.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::log::Access;

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More than `max_body_size` bytes.
    #[error("request body larger than max_body_size")]
    TooLarge,
    /// The client's side failed (reset, malformed chunking).
    #[error("client body: {0}")]
    Client(#[from] hyper::Error),
}

struct Shared {
    /// The client's body until the first poll.
    slot: Mutex<Option<Incoming>>,
    /// Set once an attempt read from it: it cannot be replayed.
    touched: AtomicBool,
    /// Set when the limit cut it off.
    exceeded: AtomicBool,
}

/// The client's request body, waiting for the attempt that sends it.
pub struct PendingBody {
    /// `None`: the request has no body (replayable any number of times).
    shared: Option<Arc<Shared>>,
    limit: u64,
}

impl PendingBody {
    /// Wraps the client's body; `limit` is the listener's `max_body_size`.
    pub fn new(body: Incoming, limit: u64) -> Self {
        let shared = (!body.is_end_stream()).then(|| {
            Arc::new(Shared {
                slot: Mutex::new(Some(body)),
                touched: AtomicBool::new(false),
                exceeded: AtomicBool::new(false),
            })
        });
        PendingBody { shared, limit }
    }

    /// A body for one more attempt, or `None` once an earlier attempt read
    /// from it (the request may have reached that member).
    pub fn attempt(&self) -> Option<RequestBody> {
        match &self.shared {
            None => Some(RequestBody {
                shared: None,
                inner: None,
                seen: 0,
                limit: self.limit,
            }),
            Some(s) if s.touched.load(Ordering::Acquire) => None,
            Some(s) => Some(RequestBody {
                shared: Some(s.clone()),
                inner: None,
                seen: 0,
                limit: self.limit,
            }),
        }
    }

    /// True when the body was cut off at `max_body_size`.
    pub fn exceeded(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.exceeded.load(Ordering::Acquire))
    }
}

/// The request body as sent to one member.
pub struct RequestBody {
    shared: Option<Arc<Shared>>,
    inner: Option<Incoming>,
    seen: u64,
    limit: u64,
}

impl RequestBody {
    fn with_slot<R>(&self, f: impl FnOnce(Option<&Incoming>) -> R) -> R {
        if let Some(inner) = &self.inner {
            return f(Some(inner));
        }
        match &self.shared {
            Some(s) => f(s
                .slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()),
            None => f(None),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.inner.is_none() {
            let Some(shared) = &this.shared else {
                return Poll::Ready(None);
            };
            shared.touched.store(true, Ordering::Release);
            this.inner = shared
                .slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        if let Some(s) = &this.shared {
                            s.exceeded.store(true, Ordering::Release);
                        }
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.with_slot(|b| b.is_none_or(Body::is_end_stream))
    }

    fn size_hint(&self) -> SizeHint {
        self.with_slot(|b| b.map_or_else(|| SizeHint::with_exact(0), Body::size_hint))
    }
}

/// What the client receives: the member's body or mxgate's own text.
pub struct ResponseBody {
    kind: Kind,
    access: Option<Access>,
}

enum Kind {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

impl ResponseBody {
    /// The member's body, passed through.
    pub fn upstream(body: Incoming, access: Access) -> Self {
        ResponseBody {
            kind: Kind::Upstream(body),
            access: Some(access),
        }
    }

    /// mxgate's own body.
    pub fn local(text: Bytes, access: Access) -> Self {
        ResponseBody {
            kind: Kind::Local(Some(text)),
            access: Some(access),
        }
    }

    /// An empty body (the `101` of an upgrade).
    pub fn empty(access: Access) -> Self {
        ResponseBody {
            kind: Kind::Local(None),
            access: Some(access),
        }
    }

    fn count(&mut self, n: usize) {
        if let Some(a) = &mut self.access {
            a.bytes += n as u64;
        }
    }

    fn finish(&mut self) {
        if let Some(a) = self.access.take() {
            a.done();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
            Kind::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len();
                    this.count(n);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Local(d) => d.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(b) => b.size_hint(),
            Kind::Local(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish();
    }
}
