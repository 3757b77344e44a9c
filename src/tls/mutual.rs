//! Mutual TLS over one private CA (the cluster's control plane): the server
//! side admits only client certificates of the CA that an [`Admission`]
//! accepts at the moment of the handshake; the client side presents its own
//! certificate and verifies the server's against the same CA.
//!
//! [`alert_in`] finds the TLS alert a peer answered with, so callers decide
//! on the alert's code, never on an error's text.

use std::sync::{Arc, Weak};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName,
    RootCertStore, ServerConfig, SignatureScheme,
};

use super::{VERSIONS, provider};

/// Why a mutual-TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MutualTlsError {
    /// A certificate or key in PEM could not be parsed.
    #[error("cannot read a PEM certificate or key: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// rustls refused the CA, the certificate or the key.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// The CA cannot verify certificates.
    #[error("unusable CA certificate: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Who holds a client certificate of the CA, asked at every handshake
/// ([`server_config`]).
pub trait Admission: Send + Sync {
    /// The standing of the client certificate `der` (already verified
    /// against the CA).
    fn admit(&self, der: &[u8]) -> Admit;
}

/// The standing of a client certificate of the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The handshake completes.
    Valid,
    /// Refused with the `certificate_revoked` alert.
    Revoked,
    /// Nobody the admission knows (yet): refused with `access_denied`.
    Unknown,
}

/// The server side: only clients with a certificate of the CA in `ca_pem`
/// that `admission` admits now complete the handshake.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    admission: Weak<dyn Admission>,
) -> Result<Arc<ServerConfig>, MutualTlsError> {
    let chain = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider()).build()?;
    let verifier = Arc::new(AdmittedClients { chain, admission });
    let (certs, key) = identity(cert_pem, key_pem)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// The client side with this identity. The server must present a
/// certificate of the CA for the name or address it is reached at.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ClientConfig>, MutualTlsError> {
    let verifier =
        WebPkiServerVerifier::builder_with_provider(roots(ca_pem)?, provider()).build()?;
    let (certs, key) = identity(cert_pem, key_pem)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// The TLS alert the peer sent, found anywhere in `error`'s chain (hyper
/// wraps the I/O error, which wraps rustls's).
pub fn alert_in(error: &(dyn std::error::Error + 'static)) -> Option<AlertDescription> {
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

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, MutualTlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    Ok(Arc::new(roots))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn identity(cert_pem: &str, key_pem: &str) -> Result<Identity, MutualTlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    Ok((certs, key))
}

/// Checks the chain against the CA, then the certificate's standing now,
/// so a retired or revoked certificate cannot complete a handshake (and so
/// cannot hold a connection open).
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
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        let standing = (self.admission.upgrade()).map_or(Admit::Unknown, |a| a.admit(end_entity));
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rustls::AlertDescription;

    #[test]
    fn an_alert_is_found_through_io_and_hyper_layers() {
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
}
