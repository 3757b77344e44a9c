//! The control plane's HTTP wire: hyper's server configuration (a request
//! head within [`HEADER_TIMEOUT`] and [`MAX_HEAD`] bytes), the route table
//! ([`Route`]) and body limits ([`read_body`]). [`check_request_bytes`]
//! runs a connection's bytes through exactly these without a node: the
//! fuzz target `cluster_request` uses it.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Refusal;
use crate::cluster::api::RaftRpc;
use crate::cluster::pull::after_param;
use crate::cluster::transport::MasterHint;

/// Largest request body accepted on every route but LFT uploads (a join
/// carries a CSR); uploads are bounded by the policy's message size.
pub const MAX_BODY: usize = 256 * 1024;
/// Largest request head (hyper's read buffer).
pub const MAX_HEAD: usize = 16 * 1024;
/// How long a peer has to send a request head, and the longest a
/// keep-alive connection waits idle for the next one.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer has to send a request body (LFT uploads: [`crate::lft::sync`]).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A control-plane route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /join`: the enrolment identity joins.
    Join,
    /// `POST /raft/...`: the engine's requests between backends.
    Raft(RaftRpc),
    /// `POST /propose`: a change forwarded to the master.
    Propose,
    /// `GET /state?after=INDEX`: a frontend's long-poll.
    State,
    /// `GET /status`.
    Status,
    /// `GET /replication`.
    Replication,
    /// `POST /leave`.
    Leave,
    /// `GET /hello`: the probe.
    Hello,
    /// `POST /handover`: a backend asks the master to let it take over.
    Handover,
    /// `POST /backends`: a frontend's backend list.
    Backends,
    /// `/lft/SHA256`: an attachment upload (streamed; its method checked there).
    Lft,
}

impl Route {
    /// The route of `method` and `path`, or `None`.
    pub fn of(method: &Method, path: &str) -> Option<Route> {
        if path.starts_with("/lft/") {
            return Some(Route::Lft);
        }
        let route = match (method, path) {
            (&Method::POST, "/join") => Route::Join,
            (&Method::POST, "/raft/vote") => Route::Raft(RaftRpc::Vote),
            (&Method::POST, "/raft/append") => Route::Raft(RaftRpc::Append),
            (&Method::POST, "/raft/snapshot") => Route::Raft(RaftRpc::Snapshot),
            (&Method::POST, "/propose") => Route::Propose,
            (&Method::GET, "/state") => Route::State,
            (&Method::GET, "/status") => Route::Status,
            (&Method::GET, "/replication") => Route::Replication,
            (&Method::POST, "/leave") => Route::Leave,
            (&Method::GET, "/hello") => Route::Hello,
            (&Method::POST, "/handover") => Route::Handover,
            (&Method::POST, "/backends") => Route::Backends,
            _ => return None,
        };
        Some(route)
    }
}

/// hyper's HTTP/1.1 server as the control plane runs it.
pub fn http_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    builder
}

/// A request body of at most `limit` bytes, sent within [`BODY_TIMEOUT`].
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Refusal> {
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read the body (at most {limit} bytes): {e}"),
        )),
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {BODY_TIMEOUT:?}"),
        )),
    }
}

/// Serves `input` as one connection's bytes through [`http_builder`]: each
/// request is routed, its query and `x-mxgate-*` headers parsed and its
/// body read under the limits, then answered with its route or the
/// refusal. Returns what the server wrote. No node, no TLS: for fuzzing.
pub async fn check_request_bytes(input: &[u8]) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let service = service_fn(|req: Request<Incoming>| async move {
        let route = Route::of(req.method(), req.uri().path());
        let after = req.uri().query().and_then(after_param);
        let hint = MasterHint::from_headers(req.headers());
        let text = match read_body(req.into_body(), MAX_BODY).await {
            Ok(body) => format!("{route:?} {after:?} {hint:?} {}", body.len()),
            Err(refusal) => format!("{} {}", refusal.status, refusal.reason),
        };
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
    });
    // The input ends with a half-close: answer what came before it (the
    // control plane itself closes at once on EOF).
    let mut builder = http_builder();
    builder.half_close(true);
    let serving = builder.serve_connection(TokioIo::new(server), service);
    let talking = async {
        let _ = client.write_all(input).await;
        let _ = client.shutdown().await;
        let mut output = Vec::new();
        let _ = client.read_to_end(&mut output).await;
        output
    };
    let (_, output) = tokio::join!(serving, talking);
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_path() {
        assert_eq!(Route::of(&Method::POST, "/join"), Some(Route::Join));
        assert_eq!(Route::of(&Method::GET, "/join"), None);
        assert_eq!(Route::of(&Method::GET, "/state"), Some(Route::State));
        assert_eq!(
            Route::of(&Method::POST, "/raft/append"),
            Some(Route::Raft(RaftRpc::Append))
        );
        assert_eq!(Route::of(&Method::PUT, "/lft/ab"), Some(Route::Lft));
        assert_eq!(Route::of(&Method::GET, "/nope"), None);
    }

    #[tokio::test]
    async fn bytes_are_served_with_the_limits() {
        let out = check_request_bytes(b"GET /state?after=7 HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("Some(State) Some(7) None 0"), "{text}");

        let big = format!(
            "POST /join HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        let mut input = big.into_bytes();
        input.extend(std::iter::repeat_n(b'a', MAX_BODY + 1));
        let out = check_request_bytes(&input).await;
        assert!(String::from_utf8_lossy(&out).contains("400 Bad Request"));

        let head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let out = check_request_bytes(head.as_bytes()).await;
        assert!(
            String::from_utf8_lossy(&out).starts_with("HTTP/1.1 431"),
            "{out:?}"
        );
    }
}
