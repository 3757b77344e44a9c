//! The access log and request metrics: one record per request.
//!
//! An [`Access`] is made when a request arrives, filled in as it is routed
//! and answered, and written when the response body ends or is dropped
//! (one `tracing` line, target `mxgate::http::access`, text or JSON per
//! `[log] format`; `mxgate_http_requests_total` and
//! `mxgate_http_request_duration_seconds`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Uri};
use tracing::info;

use super::watchdog::Busy;
use crate::metrics;

/// One request's log record.
#[derive(Debug)]
pub struct Access {
    /// Listener name.
    pub listener: Arc<str>,
    /// Client address.
    pub client: IpAddr,
    /// Request method.
    pub method: Method,
    /// Request target (the path is logged).
    pub uri: Uri,
    /// The member that answered, `None` when mxgate answered itself.
    pub member: Option<Arc<str>>,
    /// Status sent to the client.
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    /// Keeps the request counted as in flight on its connection until the
    /// record is written or dropped.
    pub busy: Option<Busy>,
    start: Instant,
}

impl Access {
    /// A record for a request that arrived at `start`.
    pub fn new(
        listener: Arc<str>,
        client: IpAddr,
        method: Method,
        uri: Uri,
        start: Instant,
    ) -> Self {
        Access {
            listener,
            client,
            method,
            uri,
            member: None,
            status: 0,
            bytes: 0,
            busy: None,
            start,
        }
    }

    /// Writes the log line and the metrics.
    pub fn done(self) {
        let elapsed = self.start.elapsed();
        let member = self.member.as_deref().unwrap_or(metrics::NO_MEMBER);
        metrics::http_request(&self.listener, member, self.status, elapsed);
        info!(
            target: "mxgate::http::access",
            listener = %self.listener,
            client = %self.client,
            method = %self.method,
            path = %self.uri.path(),
            member = %member,
            status = self.status,
            bytes = self.bytes,
            duration_ms = elapsed.as_millis() as u64,
            "http request"
        );
    }
}
