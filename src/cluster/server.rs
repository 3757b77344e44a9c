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
//! Routes: `POST /join`, `GET /changes?after=SEQ` (long-poll),
//! `GET /status`, `GET /replication`, `POST /leave`, `GET /hello`,
//! `POST /promise`, `POST /handover` ([`super::promote`]), `POST /backends`
//! ([`super::frontend`]). Every answer
//! carries the (epoch, master, master address) this node knows.

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

use super::node::{ClusterNode, PeerState};
use super::transport::{H_EPOCH, H_MASTER, H_MASTER_ADDRESS, H_UPTIME, H_VERSION, MasterHint};
use super::{MemberRecord, identity, time};
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

/// A refusal: status and reason (also logged).
#[derive(Debug)]
pub struct Refusal(pub StatusCode, pub String);

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
    let forbidden = |m: String| Refusal(StatusCode::FORBIDDEN, m);
    let internal =
        |e: super::ClusterError| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let members = node.db.members().map_err(internal)?;
    if let Some(member) = members.iter().find(|m| m.cert_fingerprint == fingerprint) {
        if member.deleted {
            return Err(forbidden(format!(
                "the certificate of {} belongs to a member that was deleted from the cluster; join again with a new identifier",
                member.name
            )));
        }
        return Ok(Caller::Member(Box::new(member.clone())));
    }
    let identifier = node.db.identifier().map_err(internal)?;
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
    let answer = match authorise(node, peer, fingerprint, &path) {
        Err(refusal) => Err(refusal),
        Ok(caller) => {
            let route = Route::of(&method, &path);
            if let Caller::Member(member) = &caller {
                record_contact(node, member, &req);
                if let Some(hint) = MasterHint::from_headers(req.headers()) {
                    node.learn(&hint);
                }
                if route == Some(Route::Lft) {
                    return match node.attachments() {
                        Some(attachments) => attachments.serve(node, peer, member, req).await,
                        None => {
                            let reason = "the LFT store is not running";
                            warn!(%peer, %path, status = 503, %reason, "LFT upload refused");
                            respond(Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, reason.into())))
                        }
                    };
                }
            }
            let query = req.uri().query().unwrap_or("").to_string();
            let body = match wire::read_body(req.into_body()).await {
                Ok(body) => body,
                Err(refusal) => return respond(Err(refusal)),
            };
            match (route, &caller) {
                (Some(route), caller) => answer(node, peer, route, caller, &query, &body).await,
                (None, _) => Err(Refusal(
                    StatusCode::NOT_FOUND,
                    format!("no route {method} {path}"),
                )),
            }
        }
    };
    if let Err(Refusal(status, reason)) = &answer {
        warn!(%peer, %path, status = status.as_u16(), %reason, "cluster request refused");
    }
    let mut response = respond(answer);
    // Every answer says who is master at which epoch (SPEC section 8:
    // nodes learn the new master from any peer they talk to).
    if let Some(known) = node.known_master() {
        let headers = response.headers_mut();
        for (name, value) in [
            (H_EPOCH, known.epoch.to_string()),
            (H_MASTER, known.master),
            (H_MASTER_ADDRESS, known.master_address),
        ] {
            if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }
    response
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
    use super::{frontend, join, promote, replicate, status};
    let member = match (route, caller) {
        (Route::Join, Caller::Enrolment) => return join::serve_join(node, peer, body).await,
        (Route::Join, Caller::Member(m)) => {
            return Err(Refusal(
                StatusCode::CONFLICT,
                format!("{} is already a member; `cluster leave` it first", m.name),
            ));
        }
        (_, Caller::Member(m)) => m,
        (_, Caller::Enrolment) => {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                "the enrolment identity of an identifier may only join".into(),
            ));
        }
    };
    match route {
        Route::Changes => replicate::serve_changes(node, member, query).await,
        Route::Status => status::serve_status(node),
        Route::Replication => status::serve_replication(node),
        Route::Leave => join::serve_leave(node, member).await,
        Route::Hello => promote::serve_hello(node),
        Route::Promise => promote::serve_promise(node, member, body).await,
        Route::Handover => promote::serve_handover(node, member, body).await,
        Route::Backends => frontend::serve_backends(node, member, body).await,
        // Served before the body is read (streamed), and never an enrolment's.
        Route::Join | Route::Lft => Err(Refusal(StatusCode::NOT_FOUND, "no such route".into())),
    }
}

/// The master remembers every follower's last request (for status).
fn record_contact(node: &ClusterNode, member: &MemberRecord, req: &Request<Incoming>) {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let acked = req.uri().query().and_then(super::replicate::after_param);
    if let Ok(mut peers) = node.peers.lock() {
        let entry = peers
            .entry(member.name.clone())
            .or_insert_with(|| PeerState {
                acked: 0,
                contact: 0,
                version: member.version.clone(),
                uptime: 0,
            });
        entry.contact = time::now();
        if let Some(acked) = acked {
            entry.acked = acked;
        }
        if let Some(v) = header(H_VERSION) {
            entry.version = v;
        }
        if let Some(u) = header(H_UPTIME).and_then(|u| u.parse().ok()) {
            entry.uptime = u;
        }
    }
}

fn respond(answer: Reply) -> Response<Full<Bytes>> {
    let (status, body) = match answer {
        Ok(value) => (StatusCode::OK, value),
        Err(Refusal(status, reason)) => (status, serde_json::json!({ "error": reason })),
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
        .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Maps a control-plane error to a refusal.
pub fn refuse(status: StatusCode) -> impl Fn(super::ClusterError) -> Refusal {
    move |e| Refusal(status, e.to_string())
}

pub mod wire;

pub use wire::Route;

#[cfg(test)]
mod tests;
