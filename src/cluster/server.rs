//! The control-plane server: mutual TLS on `[cluster] listen`, HTTP/1.1
//! routes, and authorisation by the client certificate on every request.
//!
//! The TLS handshake admits only certificates of the cluster CA that the
//! database holds valid now ([`super::admission`]): a deleted member's or a
//! retired enrolment identity's is refused with `certificate_revoked`, so it
//! cannot hold a connection open. Handshake, request head and body each have
//! a few seconds; connections are capped in total and per peer address
//! ([`CONTROL_PLANE_CONNECTIONS`], [`CONTROL_PLANE_PER_PEER`]); bodies are at
//! most 256 KiB (LFT uploads: the policy's size). Each request is then
//! checked against the database again: the enrolment identity
//! (an identifier's certificate of the current generation) may only call
//! `POST /join`, from an allowed address when the identifier is protected;
//! member certificates must belong to a member that is not deleted. Every
//! refusal is logged with the peer's address.
//!
//! Routes: `POST /join`, `POST /raft/vote`, `/raft/append`,
//! `/raft/snapshot` (the engine, backends only), `POST /propose` (a
//! change forwarded to the master), `GET /state?after=INDEX` (a
//! frontend's long-poll, [`super::pull`]), `GET /status`,
//! `GET /replication`, `POST /leave`, `GET /hello` ([`super::probe`]),
//! `POST /handover` ([`super::membership`]), `POST /backends`
//! ([`super::frontend`]). Every request and answer carries the sender's
//! control-plane protocol version; a peer whose version is not adjacent
//! to this one is refused ([`crate::cluster::api::protocol_compatible`]).
//! Every answer carries the (epoch, master, master address) this node knows.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::api::{H_PROTOCOL, PROTOCOL, RefusalCode, protocol_compatible};
use super::node::ClusterNode;
use super::transport::{H_EPOCH, H_MASTER, H_MASTER_ADDRESS};
use super::{MemberRecord, identity};
use crate::accept::{AcceptErrors, LogBudget, NoPlace, Places};
use crate::descriptors::{CONTROL_PLANE_CONNECTIONS, CONTROL_PLANE_PER_PEER};

/// Who a verified client certificate belongs to.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A member that is not deleted.
    Member(Box<MemberRecord>),
    /// An identifier's enrolment identity of the current generation.
    Enrolment,
}

/// What serves the `/lft/` routes for an authenticated member: the LFT
/// store, plugged in by the daemon ([`ClusterNode::serve_attachments`]).
pub trait Attachments: Send + Sync {
    /// The answer to `req` from `caller` at `peer`.
    fn serve<'a>(
        &'a self,
        node: &'a ClusterNode,
        peer: SocketAddr,
        caller: &'a MemberRecord,
        req: Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send + 'a>>;
}

/// A refusal: status, code and reason (also logged).
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// What kind of refusal (what the caller decides on).
    pub code: RefusalCode,
    /// Why, for people.
    pub reason: String,
}

impl Refusal {
    /// A refusal of no particular kind.
    pub fn new(status: StatusCode, reason: String) -> Refusal {
        Refusal::coded(status, RefusalCode::Refused, reason)
    }

    /// A refusal of kind `code`.
    pub fn coded(status: StatusCode, code: RefusalCode, reason: String) -> Refusal {
        Refusal {
            status,
            code,
            reason,
        }
    }
}

/// A route's answer.
pub type Reply = Result<serde_json::Value, Refusal>;

/// How long a peer has for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts control-plane connections until `stop`: at most
/// [`CONTROL_PLANE_CONNECTIONS`] at once and [`CONTROL_PLANE_PER_PEER`] from
/// one address; past them a connection is closed at once.
pub async fn serve(listener: TcpListener, node: Arc<ClusterNode>, stop: CancellationToken) {
    let mut errors = AcceptErrors::new("cluster");
    let places = Places::new(CONTROL_PLANE_CONNECTIONS, CONTROL_PLANE_PER_PEER);
    let refusals = Arc::new(Refusals::default());
    while let Some((stream, peer)) = errors.next(&stop, || listener.accept()).await {
        match places.take(peer.ip()) {
            Ok(place) => {
                let refusals = refusals.clone();
                let conn = connection(stream, peer, node.clone(), stop.clone(), refusals);
                tokio::spawn(async move {
                    let _place = place;
                    conn.await;
                });
            }
            Err(full) => {
                let why = match full {
                    NoPlace::Total => "every control-plane place is taken",
                    NoPlace::Peer => "this peer holds all its control-plane places",
                };
                refusals.log(peer, why, None);
            }
        }
    }
}

/// Connections refused before any request: logged at most once per
/// [`REFUSAL_LOG_INTERVAL`], so that nobody can flood the log by connecting.
#[derive(Debug)]
struct Refusals(std::sync::Mutex<LogBudget>);

/// At most one line about refused connections in this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Default for Refusals {
    fn default() -> Refusals {
        Refusals(std::sync::Mutex::new(LogBudget::new(REFUSAL_LOG_INTERVAL)))
    }
}

impl Refusals {
    fn log(&self, peer: SocketAddr, why: &str, error: Option<&dyn std::fmt::Display>) {
        let due = (self.0.lock())
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .due(std::time::Instant::now());
        if let Some(suppressed) = due {
            let error = error.map(ToString::to_string).unwrap_or_default();
            warn!(%peer, suppressed, %error, "cluster connection refused: {why} (suppressed: refusals not logged since the last line)");
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    node: Arc<ClusterNode>,
    stop: CancellationToken,
    refusals: Arc<Refusals>,
) {
    let Some(config) = node.server_tls.load_full() else {
        refusals.log(peer, "this node is in no cluster yet", None);
        return;
    };
    let _ = stream.set_nodelay(true);
    let handshake = TlsAcceptor::from(config).accept(stream);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let why = "TLS handshake failed (a client needs a current certificate of this cluster)";
            refusals.log(peer, why, Some(&e));
            return;
        }
        Err(_) => {
            refusals.log(peer, "no TLS handshake in time", None);
            return;
        }
    };
    let Some(fingerprint) = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| identity::fingerprint(c))
    else {
        warn!(%peer, "cluster connection refused: no client certificate");
        return;
    };
    let service = service_fn(move |req: Request<Incoming>| {
        let node = node.clone();
        let fingerprint = fingerprint.clone();
        async move {
            let response = route(&node, peer, &fingerprint, req).await;
            Ok::<_, Infallible>(response)
        }
    });
    let conn = wire::http_builder().serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "cluster connection ended");
            }
        }
        _ = stop.cancelled() => {}
    }
}

/// Who holds the certificate with `fingerprint`, or why they are refused.
pub fn authorise(
    node: &ClusterNode,
    peer: SocketAddr,
    fingerprint: &str,
    path: &str,
) -> Result<Caller, Refusal> {
    let forbidden = |m: String| Refusal::coded(StatusCode::FORBIDDEN, RefusalCode::NotMember, m);
    let replica = node.replica();
    let state = &replica.state;
    if let Some(member) = state
        .members
        .values()
        .find(|m| m.cert_fingerprint == fingerprint)
    {
        if member.deleted {
            return Err(forbidden(format!(
                "the certificate of {} belongs to a member that was deleted from the cluster; join again with a new identifier",
                member.name
            )));
        }
        return Ok(Caller::Member(Box::new(member.clone())));
    }
    let identifier = &state.identifier;
    if identifier
        .enrolment_fingerprints
        .iter()
        .any(|f| f == fingerprint)
    {
        if path != "/join" {
            return Err(forbidden(
                "the enrolment identity of an identifier may only join".into(),
            ));
        }
        if !identifier.allowed_ips.is_empty() && !identifier.allowed_ips.contains(&peer.ip()) {
            return Err(forbidden(format!(
                "joins from {} are not allowed (identifier protect --allow-ip {}); join from an allowed address or change the protection on the master",
                peer.ip(),
                identifier
                    .allowed_ips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }
        return Ok(Caller::Enrolment);
    }
    if identifier
        .retired_fingerprints
        .iter()
        .any(|f| f == fingerprint)
    {
        return Err(forbidden(
            "this identifier was invalidated by `cluster identifier rotate`; export a new one on the master".into(),
        ));
    }
    Err(forbidden(
        "the certificate is not that of a member of this cluster".into(),
    ))
}

async fn route(
    node: &Arc<ClusterNode>,
    peer: SocketAddr,
    fingerprint: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let answer = match check_protocol(req.headers(), &method, &path)
        .and_then(|()| authorise(node, peer, fingerprint, &path))
    {
        Err(refusal) => Err(refusal),
        Ok(caller) => {
            let route = Route::of(&method, &path);
            if let Caller::Member(member) = &caller
                && route == Some(Route::Lft)
            {
                return match node.attachments() {
                    Some(attachments) => attachments.serve(node, peer, member, req).await,
                    None => {
                        let reason = "the LFT store is not running";
                        warn!(%peer, %path, status = 503, %reason, "LFT upload refused");
                        respond(Err(Refusal::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            reason.into(),
                        )))
                    }
                };
            }
            let limit = match route {
                Some(Route::Raft(_)) => super::engine::MAX_RAFT_BODY,
                _ => wire::MAX_BODY,
            };
            let query = req.uri().query().unwrap_or("").to_string();
            let body = match wire::read_body(req.into_body(), limit).await {
                Ok(body) => body,
                Err(refusal) => return respond(Err(refusal)),
            };
            match (route, &caller) {
                (Some(route), caller) => answer(node, peer, route, caller, &query, &body).await,
                (None, _) => Err(Refusal::new(
                    StatusCode::NOT_FOUND,
                    format!("no route {method} {path}"),
                )),
            }
        }
    };
    if let Err(refusal) = &answer {
        let status = refusal.status.as_u16();
        let reason = &refusal.reason;
        warn!(%peer, %path, status, %reason, "cluster request refused");
    }
    let mut response = respond(answer);
    // Every answer says who is master at which epoch, and in which protocol.
    let leader = node.leader();
    let headers = response.headers_mut();
    let mut values = vec![(H_PROTOCOL, PROTOCOL.to_string())];
    if let Some(leader) = leader {
        values.extend([
            (H_EPOCH, leader.epoch.to_string()),
            (H_MASTER, leader.name),
            (H_MASTER_ADDRESS, leader.address),
        ]);
    }
    for (name, value) in values {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    response
}

/// Refuses a peer whose control-plane protocol is not adjacent to this
/// one. Tools (curl with a node's certificate) may read `GET /status`,
/// `/replication` and `/hello` without naming a protocol.
fn check_protocol(
    headers: &hyper::HeaderMap,
    method: &hyper::Method,
    path: &str,
) -> Result<(), Refusal> {
    let theirs = headers
        .get(H_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    let read_only =
        method == hyper::Method::GET && matches!(path, "/status" | "/replication" | "/hello");
    match theirs {
        Some(v) if protocol_compatible(v) => Ok(()),
        None if read_only => Ok(()),
        other => Err(Refusal::coded(
            StatusCode::BAD_REQUEST,
            RefusalCode::Protocol,
            format!(
                "this node speaks control-plane protocol {PROTOCOL} and the caller {}; adjacent versions work together: upgrade the older node first",
                other.map_or(
                    "none (a build before the openraft control plane)".to_string(),
                    |v| v.to_string()
                )
            ),
        )),
    }
}

/// Answers `route` for `caller`.
async fn answer(
    node: &Arc<ClusterNode>,
    peer: SocketAddr,
    route: Route,
    caller: &Caller,
    query: &str,
    body: &[u8],
) -> Reply {
    use super::{frontend, join, membership, probe, pull, status};
    let member = match (route, caller) {
        (Route::Join, Caller::Enrolment) => return join::serve_join(node, peer, body).await,
        (Route::Join, Caller::Member(m)) => {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                format!("{} is already a member; `cluster leave` it first", m.name),
            ));
        }
        (_, Caller::Member(m)) => m,
        (_, Caller::Enrolment) => {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "the enrolment identity of an identifier may only join".into(),
            ));
        }
    };
    match route {
        Route::Raft(rpc) => raft::serve(node, member, rpc, body).await,
        Route::Propose => serve_propose(node, body).await,
        Route::State => pull::serve_state(node, member, query).await,
        Route::Status => status::serve_status(node),
        Route::Replication => status::serve_replication(node),
        Route::Leave => join::serve_leave(node, member).await,
        Route::Hello => probe::serve_hello(node),
        Route::Handover => membership::serve_handover(node, member, body).await,
        Route::Backends => frontend::serve_backends(node, member, body).await,
        // Served before the body is read (streamed), and never an enrolment's.
        Route::Join | Route::Lft => {
            Err(Refusal::new(StatusCode::NOT_FOUND, "no such route".into()))
        }
    }
}

/// `POST /propose`: a change forwarded by another node; proposed here
/// only when this node is the master (never forwarded again).
async fn serve_propose(node: &Arc<ClusterNode>, body: &[u8]) -> Reply {
    let request: super::api::ProposeRequest = serde_json::from_slice(body).map_err(|e| {
        Refusal::coded(
            StatusCode::BAD_REQUEST,
            RefusalCode::BadRequest,
            format!("bad change: {e}"),
        )
    })?;
    if !node.raft().is_some_and(|e| e.is_leader()) {
        return Err(Refusal::coded(
            StatusCode::CONFLICT,
            RefusalCode::NotMaster,
            format!("{} is not the master", node.name),
        ));
    }
    match super::propose::propose_once(node, request.change).await {
        Ok(committed) => to_reply(&committed),
        Err(e) => Err(refusal_of(&e)),
    }
}

/// The refusal that carries `e` to the node that asked.
pub fn refusal_of(e: &super::ClusterError) -> Refusal {
    use super::ClusterError as E;
    let (status, code) = match e {
        E::NoMajority { .. } => (StatusCode::SERVICE_UNAVAILABLE, RefusalCode::NoMajority),
        E::OutcomeUnknown(_) => (StatusCode::GATEWAY_TIMEOUT, RefusalCode::OutcomeUnknown),
        E::Conflict(_) => (StatusCode::CONFLICT, RefusalCode::Conflict),
        E::NotMaster(_) => (StatusCode::CONFLICT, RefusalCode::NotMaster),
        E::Refused { code, .. } => (StatusCode::CONFLICT, *code),
        E::Invalid(_) => (StatusCode::CONFLICT, RefusalCode::Refused),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, RefusalCode::Refused),
    };
    Refusal::coded(status, code, e.to_string())
}

fn respond(answer: Reply) -> Response<Full<Bytes>> {
    let (status, body) = match answer {
        Ok(value) => (StatusCode::OK, value),
        Err(refusal) => (
            refusal.status,
            serde_json::json!({ "error": refusal.reason, "code": refusal.code }),
        ),
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serialises a route's result.
pub fn to_reply<T: Serialize>(value: &T) -> Reply {
    serde_json::to_value(value)
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Maps a control-plane error to a refusal.
pub fn refuse(status: StatusCode) -> impl Fn(super::ClusterError) -> Refusal {
    move |e| Refusal::new(status, e.to_string())
}

mod raft;
pub mod wire;

pub use wire::Route;

#[cfg(test)]
mod tests;
