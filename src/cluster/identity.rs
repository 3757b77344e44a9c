//! Certificates: the cluster CA, node keys and their certificates, and the
//! enrolment certificates of identifiers (rcgen, ECDSA P-256).
//!
//! A node makes its key itself and sends only a CSR; the master signs it
//! with the CA. The master decides every field of the certificate (subject,
//! SANs, usages, serial); nothing but the public key is taken from the CSR.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use super::{ClusterError, Result};

fn crypto(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Crypto(e.to_string())
}

/// A certificate just made, with what the member table records about it.
#[derive(Debug, Clone)]
pub struct Issued {
    /// PEM.
    pub cert_pem: String,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    /// Serial number, hex.
    pub serial: String,
}

/// A fresh random serial number (positive, 16 bytes).
fn serial() -> (SerialNumber, String) {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    (SerialNumber::from_slice(&bytes), hex(&bytes))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 fingerprint (hex) of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

/// The DER of the first certificate in `pem`.
pub fn cert_der(pem: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(crypto)
}

/// SHA-256 fingerprint (hex) of a PEM certificate.
pub fn fingerprint_pem(pem: &str) -> Result<String> {
    Ok(fingerprint(&cert_der(pem)?))
}

fn name(common_name: &str, unit: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "mxgate cluster");
    dn.push(DnType::OrganizationalUnitName, unit);
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A new cluster CA: (certificate PEM, key PEM).
pub fn new_ca(cluster_id: &str) -> Result<(String, String)> {
    let key = KeyPair::generate().map_err(crypto)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&format!("mxgate cluster CA {cluster_id}"), "ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(serial().0);
    let cert = params.self_signed(&key).map_err(crypto)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A new node key and a CSR for it: (key PEM, CSR PEM).
pub fn new_key_and_csr(node: &str) -> Result<(String, String)> {
    let key = KeyPair::generate().map_err(crypto)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(node, "node");
    let csr = params.serialize_request(&key).map_err(crypto)?;
    Ok((key.serialize_pem(), csr.pem().map_err(crypto)?))
}

/// What the certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A node: client and server of the control plane.
    Node,
    /// An identifier's enrolment identity: client only, may only join.
    Enrolment {
        /// Identifier generation at export.
        generation: u64,
    },
}

/// Signs the public key of `csr_pem` with the CA. The subject is `name`,
/// the SANs are `name` (DNS) and `ips`.
pub fn sign(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    csr_pem: &str,
    name_: &str,
    ips: &[IpAddr],
    purpose: Purpose,
) -> Result<Issued> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(crypto)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(crypto)?;
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| ClusterError::Crypto(format!("bad certificate request: {e}")))?;
    let mut params = CertificateParams::default();
    let (serial, serial_hex) = serial();
    params.serial_number = Some(serial);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    match purpose {
        Purpose::Node => {
            params.distinguished_name = name(name_, "node");
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ];
            let mut sans = Vec::new();
            if let Ok(dns) = name_.to_string().try_into() {
                sans.push(SanType::DnsName(dns));
            }
            sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
            params.subject_alt_names = sans;
        }
        Purpose::Enrolment { generation } => {
            params.distinguished_name = name(
                &format!("mxgate enrolment generation {generation}"),
                &format!("enrolment-{generation}"),
            );
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    csr.params = params;
    let cert = csr.signed_by(&issuer).map_err(crypto)?;
    Ok(Issued {
        fingerprint: fingerprint(cert.der()),
        cert_pem: cert.pem(),
        serial: serial_hex,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificate_is_signed_by_the_ca_with_fixed_fields() {
        let (ca, ca_key) = new_ca("c1").unwrap();
        let (key, csr) = new_key_and_csr("gw2").unwrap();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let issued = sign(&ca, &ca_key, &csr, "gw2", &[ip], Purpose::Node).unwrap();
        assert_eq!(
            issued.fingerprint,
            fingerprint_pem(&issued.cert_pem).unwrap()
        );
        assert_eq!(issued.serial.len(), 32);
        // The key stays a PKCS#8 private key of this node.
        assert!(key.contains("BEGIN PRIVATE KEY"));
        // rustls accepts the chain.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert_der(&ca).unwrap()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            rustls::crypto::ring::default_provider().into(),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_client_cert(&cert_der(&issued.cert_pem).unwrap(), &[], now)
            .unwrap();
    }

    #[test]
    fn garbage_csr_is_refused() {
        let (ca, ca_key) = new_ca("c1").unwrap();
        let err = sign(&ca, &ca_key, "nonsense", "x", &[], Purpose::Node).unwrap_err();
        assert!(err.to_string().contains("certificate request"), "{err}");
    }

    #[test]
    fn serials_differ() {
        assert_ne!(serial().1, serial().1);
    }
}
