//! TLS set-up for STARTTLS, on both sides of mxgate, and the rustls
//! configurations every other part uses: GINA listeners, health checks and
//! GINA member connections build theirs here (a leaf module: it imports
//! only `config`).
//!
//! At start-up and on every reload, [`TlsSnapshot::load`] reads each
//! listener's `tls_cert`/`tls_key` into a rustls [`ServerConfig`] and builds
//! one [`ClientConfig`] for STARTTLS to members from `[upstream]`; a broken
//! file refuses the configuration with an error naming it. Sessions take both
//! from the snapshot they start with, so nothing is parsed per connection.
//!
//! Member certificates (`[upstream] tls`):
//! - `opportunistic`: verified only when `tls_ca_file` is set (as Postfix
//!   `may`); otherwise encryption without authentication.
//! - `required`: verified against `tls_ca_file`, or the system roots, with the
//!   member's host (IP address or DNS name) as the server name.
//! - `tls_insecure_skip_verify = true` turns verification off in both modes
//!   (lab use; a warning is logged whenever the policy is loaded).
//!
//! The handshake signature is checked in every mode, so an unverified peer
//! still has to hold the key of the certificate it shows.
//!
//! [`MemberStream`] is the member connection: plain TCP until STARTTLS, TLS after.
//! [`mutual`] holds the control plane's mutual TLS over the cluster CA.

pub mod mutual;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::warn;

use crate::config::{Config, ConfigError, ConfigErrors, HostPort, UpstreamPolicy, UpstreamTls};

/// The protocol versions mxgate speaks, on both sides.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{}: cannot read {what}: {source}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected in it.
        what: &'static str,
        /// The parser's complaint.
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the certificate, the key or the pair.
    #[error("{}: {source}", .path.display())]
    Rustls {
        /// The file (the certificate, for a pair).
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// `required` without `tls_ca_file`, and the system has no usable roots.
    #[error("no system root certificates found; set [upstream] tls_ca_file")]
    NoRoots,
}

/// The TLS configurations of one snapshot: per listener and towards members.
#[derive(Default)]
pub struct TlsSnapshot {
    listeners: HashMap<String, Arc<ServerConfig>>,
    upstream: Option<Arc<ClientConfig>>,
}

impl TlsSnapshot {
    /// Loads every listener's certificate and key and the member-side
    /// configuration; all problems are reported, each naming its file.
    pub fn load(config: &Config) -> Result<TlsSnapshot, ConfigErrors> {
        let mut errors = Vec::new();
        let mut listeners = HashMap::new();
        for (i, listener) in config.smtp.iter().enumerate() {
            let (Some(cert), Some(key)) = (&listener.tls_cert, &listener.tls_key) else {
                continue;
            };
            match server_config(cert, key) {
                Ok(tls) => {
                    listeners.insert(listener.name.clone(), tls);
                }
                Err(e) => errors.push(error(&e, cert, format!("smtp[{i}].tls_cert"))),
            }
        }
        let upstream = match client_config(&config.policy.upstream) {
            Ok(tls) => tls,
            Err(e) => {
                let file = config
                    .policy
                    .upstream
                    .tls_ca_file
                    .clone()
                    .unwrap_or_else(|| config.node.policy.clone());
                errors.push(error(&e, &file, "upstream.tls".to_owned()));
                None
            }
        };
        if errors.is_empty() {
            Ok(TlsSnapshot {
                listeners,
                upstream,
            })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The STARTTLS configuration of a listener (`None`: STARTTLS not offered).
    pub fn listener(&self, name: &str) -> Option<Arc<ServerConfig>> {
        self.listeners.get(name).cloned()
    }

    /// The configuration for STARTTLS to members (`None`: `tls = "none"`).
    pub fn upstream(&self) -> Option<Arc<ClientConfig>> {
        self.upstream.clone()
    }
}

fn error(e: &TlsError, fallback: &Path, key: String) -> ConfigError {
    let file = match e {
        TlsError::Pem { path, .. } | TlsError::Rustls { path, .. } => path.clone(),
        TlsError::NoRoots => fallback.to_path_buf(),
    };
    let message = match e {
        TlsError::Pem { what, source, .. } => format!("cannot read {what}: {source}"),
        TlsError::Rustls { source, .. } => format!("unusable certificate or key: {source}"),
        TlsError::NoRoots => e.to_string(),
    };
    ConfigError {
        file,
        line: None,
        key,
        message,
    }
}

/// The crypto provider of every configuration (ring).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the STARTTLS server configuration from a PEM chain and key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        path: key.to_path_buf(),
        what: "a private key",
        source,
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| TlsError::Rustls {
            path: cert.to_path_buf(),
            source,
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|source| TlsError::Rustls {
            path: cert.to_path_buf(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// Builds the configuration for STARTTLS to members; `None` for `tls = "none"`.
pub fn client_config(policy: &UpstreamPolicy) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let verify = match policy.tls {
        UpstreamTls::None => return Ok(None),
        _ if policy.tls_insecure_skip_verify => {
            warn!(
                "[upstream] tls_insecure_skip_verify = true: member certificates are NOT verified (lab use only)"
            );
            false
        }
        UpstreamTls::Opportunistic => policy.tls_ca_file.is_some(),
        UpstreamTls::Required => true,
    };
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| TlsError::Rustls {
            path: PathBuf::new(),
            source,
        })?;
    let config = if verify {
        builder
            .with_root_certificates(roots(policy.tls_ca_file.as_deref())?)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    Ok(Some(Arc::new(config)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        path: path.to_path_buf(),
        what: "certificates",
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(pem(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// Trust anchors: the CA file when given, else the system's roots.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|source| TlsError::Rustls {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                warn!(error = %e, "loading system root certificates");
            }
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(TlsError::NoRoots);
            }
        }
    }
    Ok(roots)
}

/// The TLS server name of a member: its IP address or DNS name.
pub fn server_name(addr: &HostPort) -> Option<ServerName<'static>> {
    match addr.ip() {
        Some(ip) => Some(ServerName::IpAddress(ip.into())),
        None => ServerName::try_from(addr.host.clone()).ok(),
    }
}

/// Accepts any certificate chain, but still checks the handshake signature
/// (the peer holds the key of the certificate it shows).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A member connection: plain TCP until STARTTLS, TLS after.
#[derive(Debug)]
pub enum MemberStream {
    /// Before STARTTLS, or without it.
    Plain(TcpStream),
    /// After a successful STARTTLS handshake.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl MemberStream {
    /// True once STARTTLS succeeded.
    pub fn is_tls(&self) -> bool {
        matches!(self, MemberStream::Tls(_))
    }
}

impl AsyncRead for MemberStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MemberStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MemberStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MemberStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MemberStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MemberStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MemberStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MemberStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MemberStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MemberStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }

    #[test]
    fn server_config_loads_a_pair_and_names_the_broken_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = pem_pair(dir.path(), "a");
        assert!(server_config(&cert, &key).is_ok());

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not PEM\n").expect("write");
        let err = server_config(&garbage, &key).expect_err("garbage cert");
        assert!(err.to_string().contains("garbage.pem"), "{err}");
        let err = server_config(&cert, &garbage).expect_err("garbage key");
        assert!(err.to_string().contains("garbage.pem"), "{err}");

        // A key that does not belong to the certificate.
        let (_, other_key) = pem_pair(dir.path(), "b");
        let err = server_config(&cert, &other_key).expect_err("mismatched pair");
        assert!(err.to_string().contains("a.pem"), "{err}");
    }

    #[test]
    fn server_names_are_ip_addresses_or_dns_names() {
        let host = |h: &str| HostPort {
            host: h.to_owned(),
            port: 25,
        };
        assert!(matches!(
            server_name(&host("127.0.0.1")),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name(&host("::1")),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name(&host("mx.example.com")),
            Some(ServerName::DnsName(_))
        ));
        assert!(server_name(&host("bad name")).is_none());
    }
}
