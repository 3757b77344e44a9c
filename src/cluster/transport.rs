//! The one mutual-TLS HTTP/1.1 client (hyper) between nodes, for every
//! control-plane request and every LFT upload: it connects from the node's
//! `[cluster] advertise` address, so the peer sees the address that
//! `identifier protect` and member `addresses` name. The rustls
//! configurations come from [`crate::tls::mutual`].
//!
//! Every request carries the sender's epoch, name, version and uptime in
//! `x-mxgate-*` headers (the epoch is what issue 7's fencing compares).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

pub use super::api::{
    H_EPOCH, H_MASTER, H_MASTER_ADDRESS, H_NODE, H_PROTOCOL, H_UPTIME, H_VERSION, MasterHint,
    PROTOCOL, RefusalCode, Sender,
};
use super::{ClusterError, Result};
use crate::tls::mutual::alert_in;

impl MasterHint {
    /// Reads the hint from `x-mxgate-epoch`, `-master` and `-master-address`.
    pub fn from_headers(headers: &hyper::HeaderMap) -> Option<MasterHint> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let epoch = get(H_EPOCH)?.parse().ok()?;
        let master = get(H_MASTER)?.to_string();
        let master_address = get(H_MASTER_ADDRESS)?.to_string();
        if master.is_empty() || master_address.is_empty() || epoch == 0 {
            return None;
        }
        Some(MasterHint {
            epoch,
            master,
            master_address,
        })
    }
}

/// A peer's answer: status and body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Bytes,
    /// The peer's epoch and master, from the answer's headers.
    pub hint: Option<MasterHint>,
}

impl Answer {
    /// The body as JSON when the status is 200; the peer's error otherwise.
    pub fn json<T: DeserializeOwned>(self, peer: &str) -> Result<T> {
        if self.status == 200 {
            serde_json::from_slice(&self.body)
                .map_err(|e| ClusterError::Transport(format!("bad answer from {peer}: {e}")))
        } else {
            Err(ClusterError::Refused {
                peer: peer.to_string(),
                code: refusal_code(&self.body),
                reason: error_text(&self.body, self.status),
            })
        }
    }
}

/// The `code` of a refusal's JSON body ([`RefusalCode::Refused`] when
/// there is none).
pub fn refusal_code(body: &[u8]) -> RefusalCode {
    #[derive(serde::Deserialize)]
    struct Coded {
        #[serde(default)]
        code: RefusalCode,
    }
    serde_json::from_slice::<Coded>(body).map_or(RefusalCode::Refused, |c| c.code)
}

/// The `error` of a JSON error body, or the body itself.
pub fn error_text(body: &[u8], status: u16) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("HTTP {status}: {}", String::from_utf8_lossy(body)))
}

/// Splits `host[:port]`; the port defaults to 7025.
pub fn host_port(target: &str) -> Result<(String, u16)> {
    let bad = || ClusterError::Invalid(format!("{target:?} is not HOST[:PORT]"));
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = target.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok((ip.to_string(), 7025));
    }
    match target.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            Ok((host.to_string(), port.parse().map_err(|_| bad())?))
        }
        None if !target.is_empty() => Ok((target.to_string(), 7025)),
        _ => Err(bad()),
    }
}

/// Where and as whom a request goes: the node's client configuration, its
/// `[cluster] advertise` address to connect from, and the peer.
#[derive(Clone, Copy)]
pub struct Route<'a> {
    /// The client side with this node's (or an enrolment) identity.
    pub config: &'a Arc<ClientConfig>,
    /// The address connected from.
    pub bind: IpAddr,
    /// The peer, `host[:port]`.
    pub target: &'a str,
}

/// One request's content: method, path, body and the headers beyond the
/// `x-mxgate-*` ones every request carries.
pub struct Outgoing<'a> {
    /// `GET`, `POST`, `PUT`.
    pub method: &'a str,
    /// The path.
    pub path: &'a str,
    /// The body's media type.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
    /// More headers (name, value).
    pub headers: &'a [(&'static str, String)],
}

/// One HTTPS request with a JSON body (or none) to `target` (`host[:port]`)
/// from `bind` with `config`.
#[allow(clippy::too_many_arguments)]
pub async fn call<B: Serialize>(
    config: Arc<ClientConfig>,
    bind: IpAddr,
    target: &str,
    method: &str,
    path: &str,
    sender: &Sender,
    body: Option<&B>,
    limit: Duration,
) -> Result<Answer> {
    let body = match body {
        Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| {
            ClusterError::Transport(format!("cannot encode a request for {target}: {e}"))
        })?),
        None => Bytes::new(),
    };
    let outgoing = Outgoing {
        method,
        path,
        content_type: "application/json",
        body,
        headers: &[],
    };
    let route = Route {
        config: &config,
        bind,
        target,
    };
    send(route, sender, outgoing, limit).await
}

/// One HTTPS request, answered within `limit`.
pub async fn send(
    route: Route<'_>,
    sender: &Sender,
    outgoing: Outgoing<'_>,
    limit: Duration,
) -> Result<Answer> {
    match tokio::time::timeout(limit, exchange(route, sender, outgoing)).await {
        Ok(answer) => answer,
        Err(_) => Err(ClusterError::Transport(format!(
            "{} did not answer within {}s",
            route.target,
            limit.as_secs()
        ))),
    }
}

fn unreachable(target: &str, what: &str, e: &dyn std::fmt::Display) -> ClusterError {
    ClusterError::Transport(format!(
        "cannot {what} {target}: {e}; is it running and reachable?"
    ))
}

/// A refusal of this node's certificate arrives as an alert: at the
/// handshake (TLS 1.2) or at the first read after it (TLS 1.3).
fn refused(target: &str, what: &str, e: &(dyn std::error::Error + 'static)) -> ClusterError {
    match alert_in(e) {
        Some(AlertDescription::CertificateRevoked) => ClusterError::Revoked {
            peer: target.to_owned(),
        },
        Some(AlertDescription::AccessDenied) => ClusterError::NotAdmitted {
            peer: target.to_owned(),
        },
        _ => unreachable(target, what, &e),
    }
}

/// A TCP connection from `bind` to `target`.
async fn connect(bind: IpAddr, target: &str) -> Result<tokio::net::TcpStream> {
    let (host, port) = host_port(target)?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| unreachable(target, "resolve", &e))?
        .find(|a| a.is_ipv4() == bind.is_ipv4())
        .ok_or_else(|| {
            unreachable(
                target,
                "resolve",
                &"no address of the advertise address's family",
            )
        })?;
    let socket = if bind.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| unreachable(target, "connect to", &e))?;
    socket.bind(SocketAddr::new(bind, 0)).map_err(|e| {
        ClusterError::Transport(format!(
            "cannot bind the [cluster] advertise address {bind}: {e}; is it an address of this host?"
        ))
    })?;
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| unreachable(target, "connect to", &e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn exchange(route: Route<'_>, sender: &Sender, outgoing: Outgoing<'_>) -> Result<Answer> {
    let target = route.target;
    // Until the request is sent, a failure means the peer never saw it.
    let not_sent = |e: ClusterError| match e {
        ClusterError::Transport(m) => ClusterError::NotSent(m),
        other => other,
    };
    let stream = connect(route.bind, target).await.map_err(not_sent)?;
    let addr = stream
        .peer_addr()
        .map_err(|e| not_sent(unreachable(target, "connect to", &e)))?;
    // Node certificates name the node's advertise address: verify the
    // address connected to, whether the operator gave a name or an address.
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = TlsConnector::from(route.config.clone())
        .connect(name, stream)
        .await
        .map_err(|e| not_sent(refused(target, "make a TLS connection to", &e)))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| not_sent(refused(target, "talk HTTP to", &e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = request(target, sender, outgoing).map_err(not_sent)?;
    let response = send
        .send_request(request)
        .await
        .map_err(|e| refused(target, "get an answer from", &e))?;
    let status = response.status().as_u16();
    let hint = MasterHint::from_headers(response.headers());
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(target, "read the answer of", &e))?
        .to_bytes();
    Ok(Answer { status, body, hint })
}

fn request(target: &str, sender: &Sender, outgoing: Outgoing<'_>) -> Result<Request<Full<Bytes>>> {
    let mut request = Request::builder()
        .method(outgoing.method)
        .uri(outgoing.path)
        .header("host", target)
        .header("content-type", outgoing.content_type)
        .header(H_EPOCH, sender.epoch)
        .header(H_NODE, &sender.node)
        .header(H_VERSION, env!("CARGO_PKG_VERSION"))
        .header(H_UPTIME, sender.uptime)
        .header(H_PROTOCOL, PROTOCOL);
    if let Some((master, address)) = &sender.master {
        request = request
            .header(H_MASTER, master)
            .header(H_MASTER_ADDRESS, address);
    }
    for (name, value) in outgoing.headers {
        request = request.header(*name, value);
    }
    request
        .body(Full::new(outgoing.body))
        .map_err(|e| unreachable(target, "build a request for", &e))
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_port_defaults_to_7025() {
        for (input, host, port) in [
            ("10.0.0.1:7100", "10.0.0.1", 7100),
            ("10.0.0.1", "10.0.0.1", 7025),
            ("[::1]:9", "::1", 9),
            ("::1", "::1", 7025),
            ("gw1.example.com", "gw1.example.com", 7025),
            ("gw1.example.com:8", "gw1.example.com", 8),
        ] {
            assert_eq!(
                host_port(input).unwrap(),
                (host.to_string(), port),
                "{input}"
            );
        }
        assert!(host_port("").is_err());
        assert!(host_port("h:x").is_err());
    }
}
