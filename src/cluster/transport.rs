//! Mutual TLS between nodes: rustls configurations over the cluster CA and
//! a small HTTP/1.1 client (hyper) that connects from the node's
//! `[cluster] advertise` address, so the peer sees the address that
//! `identifier protect` and member `addresses` name.
//!
//! Every request carries the sender's epoch, name, version and uptime in
//! `x-mxgate-*` headers (the epoch is what issue 7's fencing compares).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName,
    RootCertStore, ServerConfig, SignatureScheme,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

use super::{ClusterError, Result};

/// Header: the sender's epoch.
pub const H_EPOCH: &str = "x-mxgate-epoch";
/// Header: the sender's node name.
pub const H_NODE: &str = "x-mxgate-node";
/// Header: the sender's mxgate version.
pub const H_VERSION: &str = "x-mxgate-version";
/// Header: the sender's uptime in seconds.
pub const H_UPTIME: &str = "x-mxgate-uptime";
/// Header (requests and answers): the master of the sender's epoch.
pub const H_MASTER: &str = "x-mxgate-master";
/// Header (requests and answers): that master's control-plane address.
pub const H_MASTER_ADDRESS: &str = "x-mxgate-master-address";

/// Who is master at which epoch, as a peer told it (headers of every
/// control-plane request and answer).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MasterHint {
    /// The epoch.
    pub epoch: u64,
    /// The master's name.
    pub master: String,
    /// Its control-plane address.
    pub master_address: String,
}

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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Crypto(e.to_string())
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots.add(super::identity::cert_der(ca_pem)?).map_err(tls)?;
    Ok(Arc::new(roots))
}

fn chain(
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(tls)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(tls)?;
    Ok((certs, key))
}

/// Who holds a client certificate of the cluster CA, as the database says
/// now: asked at every handshake ([`server_config`]).
pub trait Admission: Send + Sync {
    /// The standing of the certificate with SHA-256 `fingerprint`.
    fn admit(&self, fingerprint: &str) -> Admit;
}

/// The standing of a client certificate of the cluster CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A member that is not deleted, or an enrolment identity of the
    /// current generation: the handshake completes.
    Valid,
    /// A deleted member's, or an enrolment identity retired by `rotate`:
    /// refused with the `certificate_revoked` alert, which the peer reads
    /// as [`ClusterError::Revoked`].
    Revoked,
    /// Nobody this node knows (yet): refused with `access_denied`.
    Unknown,
}

/// Checks the chain against the cluster CA, then the certificate's
/// standing now, so a retired, rotated or deleted certificate cannot
/// complete a handshake (and so cannot hold a connection open).
struct AdmittedClients {
    chain: Arc<dyn ClientCertVerifier>,
    admission: Weak<dyn Admission>,
}

impl std::fmt::Debug for AdmittedClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdmittedClients")
    }
}

impl ClientCertVerifier for AdmittedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        let fingerprint = super::identity::fingerprint(end_entity);
        let standing = (self.admission.upgrade()).map_or(Admit::Unknown, |a| a.admit(&fingerprint));
        match standing {
            Admit::Valid => Ok(verified),
            Admit::Revoked => Err(rustls::Error::InvalidCertificate(CertificateError::Revoked)),
            Admit::Unknown => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// The control plane's server side: only clients with a certificate of
/// the cluster CA that `admission` admits now complete the handshake.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    admission: Weak<dyn Admission>,
) -> Result<Arc<ServerConfig>> {
    let webpki = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .build()
        .map_err(tls)?;
    let verifier = Arc::new(AdmittedClients {
        chain: webpki,
        admission,
    });
    let (certs, key) = chain(cert_pem, key_pem)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(tls)?;
    Ok(Arc::new(config))
}

/// The client side with this identity (a node's or an enrolment one).
/// The server must present a certificate of the cluster CA for the
/// address it is reached at.
pub fn client_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Arc<ClientConfig>> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .build()
        .map_err(tls)?;
    let (certs, key) = chain(cert_pem, key_pem)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .map_err(tls)?;
    Ok(Arc::new(config))
}

/// Who is calling: the values of the `x-mxgate-*` headers.
#[derive(Debug, Clone)]
pub struct Sender {
    /// Epoch the sender has seen.
    pub epoch: u64,
    /// Node name.
    pub node: String,
    /// Uptime in seconds.
    pub uptime: u64,
    /// The master the sender knows at `epoch` (name, address).
    pub master: Option<(String, String)>,
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
                reason: error_text(&self.body, self.status),
            })
        }
    }
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

/// One HTTPS request to `target` (`host[:port]`) from `bind` with `config`.
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
    let fut = call_inner(config, bind, target, method, path, sender, body);
    match tokio::time::timeout(limit, fut).await {
        Ok(answer) => answer,
        Err(_) => Err(ClusterError::Transport(format!(
            "{target} did not answer within {}s",
            limit.as_secs()
        ))),
    }
}

async fn call_inner<B: Serialize>(
    config: Arc<ClientConfig>,
    bind: IpAddr,
    target: &str,
    method: &str,
    path: &str,
    sender: &Sender,
    body: Option<&B>,
) -> Result<Answer> {
    let net = |what: &str, e: &dyn std::fmt::Display| {
        ClusterError::Transport(format!(
            "cannot {what} {target}: {e}; is it running and reachable?"
        ))
    };
    let (host, port) = host_port(target)?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| net("resolve", &e))?
        .find(|a| a.is_ipv4() == bind.is_ipv4())
        .ok_or_else(|| net("resolve", &"no address of the advertise address's family"))?;
    let socket = if bind.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| net("connect to", &e))?;
    socket.bind(SocketAddr::new(bind, 0)).map_err(|e| {
        ClusterError::Transport(format!(
            "cannot bind the [cluster] advertise address {bind}: {e}; is it an address of this host?"
        ))
    })?;
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| net("connect to", &e))?;
    let _ = stream.set_nodelay(true);
    // Node certificates name the node's advertise address: verify the
    // address connected to, whether the operator gave a name or an address.
    let name = ServerName::IpAddress(addr.ip().into());
    // A refusal of this node's certificate arrives as an alert: at the
    // handshake (TLS 1.2) or at the first read after it (TLS 1.3).
    let refused = |what: &str, e: &(dyn std::error::Error + 'static)| match alert_in(e) {
        Some(AlertDescription::CertificateRevoked) => ClusterError::Revoked {
            peer: target.to_owned(),
        },
        Some(AlertDescription::AccessDenied) => ClusterError::NotAdmitted {
            peer: target.to_owned(),
        },
        _ => net(what, &e),
    };
    let tls = TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| refused("make a TLS connection to", &e))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| refused("talk HTTP to", &e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let bytes = match body {
        Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| net("encode for", &e))?),
        None => Bytes::new(),
    };
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", target)
        .header("content-type", "application/json")
        .header(H_EPOCH, sender.epoch)
        .header(H_NODE, &sender.node)
        .header(H_VERSION, env!("CARGO_PKG_VERSION"))
        .header(H_UPTIME, sender.uptime);
    if let Some((master, address)) = &sender.master {
        request = request
            .header(H_MASTER, master)
            .header(H_MASTER_ADDRESS, address);
    }
    let request = request
        .body(Full::new(bytes))
        .map_err(|e| net("build a request for", &e))?;
    let response = send
        .send_request(request)
        .await
        .map_err(|e| refused("get an answer from", &e))?;
    let status = response.status().as_u16();
    let hint = MasterHint::from_headers(response.headers());
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| net("read the answer of", &e))?
        .to_bytes();
    Ok(Answer { status, body, hint })
}

/// The TLS alert the peer sent, found anywhere in `error`'s chain (hyper
/// wraps the I/O error, which wraps rustls's).
fn alert_in(error: &(dyn std::error::Error + 'static)) -> Option<AlertDescription> {
    let mut next = Some(error);
    while let Some(e) = next {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            (e.downcast_ref::<std::io::Error>())
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = tls {
            return Some(*alert);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn an_alert_is_found_through_io_and_hyper_layers() {
        use rustls::AlertDescription;
        let io = std::io::Error::other(rustls::Error::AlertReceived(
            AlertDescription::CertificateRevoked,
        ));
        assert_eq!(
            super::alert_in(&io),
            Some(AlertDescription::CertificateRevoked)
        );
        let plain = std::io::Error::other("certificate revoked");
        assert_eq!(super::alert_in(&plain), None);
    }

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
