//! The cluster identifier (`clusterid.txt`): what a new node needs to join.
//!
//! Format (text, sans-IO [`parse`] / [`Identifier::render`]):
//!
//! ```text
//! # mxgate cluster identifier: keep it secret
//! cluster-id: 3f1c...
//! master: 10.0.0.1:7025
//! generation: 1
//! -----BEGIN CERTIFICATE-----        the cluster CA
//! -----BEGIN CERTIFICATE-----        the enrolment certificate
//! -----BEGIN ENCRYPTED PRIVATE KEY-----  its key, PKCS#8 PBES2
//! ```
//!
//! The key is encrypted with PBES2: PBKDF2-HMAC-SHA256 with 600 000
//! iterations (OWASP's figure for PBKDF2-HMAC-SHA256), a random 16-byte
//! salt, and AES-256-CBC with a random IV, so `openssl pkcs8` reads it too.
//! Identifiers exported before used scrypt (log2 N = 15, r = 8, p = 1),
//! which OpenSSL refuses by its memory limit; they are still read. A key
//! whose KDF asks for more work than [`MAX_PBKDF2_ITERATIONS`] or
//! [`MAX_SCRYPT_LOG_N`] allow is refused before any is done: the file, not
//! the code, would set the cost.
//!
//! Without a password (`--insecure-no-password`) the last block is a plain
//! `PRIVATE KEY`. The enrolment certificate may only call join, and only
//! while its generation is current.

use pkcs8::der::Decode;
use pkcs8::pkcs5::{EncryptionScheme, pbes2};
use pkcs8::{Document, EncryptedPrivateKeyInfo, LineEnding, PrivateKeyInfo, SecretDocument};

use super::{ClusterError, Result};

const ENCRYPTED: &str = "ENCRYPTED PRIVATE KEY";
const PLAIN: &str = "PRIVATE KEY";

/// PBKDF2-HMAC-SHA256 iterations of a new identifier's key (OWASP Password
/// Storage Cheat Sheet: 600 000 for PBKDF2-HMAC-SHA256).
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// Most PBKDF2 iterations accepted when reading a key (about 10 s of work).
pub const MAX_PBKDF2_ITERATIONS: u32 = 20_000_000;
/// Largest scrypt cost (log2 N) accepted when reading a key; with r = 8
/// that is 256 MiB of memory. Earlier identifiers used 15.
pub const MAX_SCRYPT_LOG_N: u32 = 18;
/// Largest scrypt block size and parallelisation accepted.
const MAX_SCRYPT_R_P: u16 = 16;

/// A parsed identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identifier {
    /// The cluster's id.
    pub cluster_id: String,
    /// Control-plane address of the master.
    pub master: String,
    /// Generation of the enrolment certificate.
    pub generation: u64,
    /// CA certificate (PEM).
    pub ca_cert_pem: String,
    /// Enrolment certificate (PEM).
    pub cert_pem: String,
    /// The enrolment key: `ENCRYPTED PRIVATE KEY` or `PRIVATE KEY` PEM.
    pub key_pem: String,
}

fn bad(message: impl Into<String>) -> ClusterError {
    ClusterError::Identifier(message.into())
}

/// The PEM blocks of `text`, in order: (label, whole block).
fn pem_blocks(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if current.is_some() {
                return Err(bad(format!("BEGIN {label} inside another PEM block")));
            }
            current = Some((label.to_string(), format!("{line}\n")));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            match current.take() {
                Some((begin, mut block)) if begin == label => {
                    block.push_str(line);
                    block.push('\n');
                    out.push((begin, block));
                }
                _ => return Err(bad(format!("END {label} without its BEGIN"))),
            }
        } else if let Some((_, block)) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    if let Some((label, _)) = current {
        return Err(bad(format!("PEM block {label} is not closed")));
    }
    Ok(out)
}

/// Parses `clusterid.txt`.
pub fn parse(text: &str) -> Result<Identifier> {
    let mut cluster_id = None;
    let mut master = None;
    let mut generation = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN") {
            break;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(bad(format!("line {line:?} is not `key: value`")));
        };
        let value = value.trim().to_string();
        match key.trim() {
            "cluster-id" => cluster_id = Some(value),
            "master" => master = Some(value),
            "generation" => {
                generation = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| bad(format!("generation {value:?} is not a number")))?,
                )
            }
            other => return Err(bad(format!("unknown field {other:?}"))),
        }
    }
    let blocks = pem_blocks(text)?;
    let labels: Vec<&str> = blocks.iter().map(|(l, _)| l.as_str()).collect();
    let [ca, cert, key] = blocks.as_slice() else {
        return Err(bad(format!(
            "expected 3 PEM blocks (CA certificate, enrolment certificate, key), found {labels:?}"
        )));
    };
    if ca.0 != "CERTIFICATE" || cert.0 != "CERTIFICATE" || (key.0 != ENCRYPTED && key.0 != PLAIN) {
        return Err(bad(format!(
            "expected CERTIFICATE, CERTIFICATE, {ENCRYPTED}; found {labels:?}"
        )));
    }
    Ok(Identifier {
        cluster_id: cluster_id.ok_or_else(|| bad("cluster-id is missing"))?,
        master: master.ok_or_else(|| bad("master is missing"))?,
        generation: generation.ok_or_else(|| bad("generation is missing"))?,
        ca_cert_pem: ca.1.clone(),
        cert_pem: cert.1.clone(),
        key_pem: key.1.clone(),
    })
}

impl Identifier {
    /// The file's text.
    pub fn render(&self) -> String {
        format!(
            "# mxgate cluster identifier: keep it secret; join with\n\
             #   mxgate cluster join --identifier clusterid.txt --master {}\n\
             cluster-id: {}\nmaster: {}\ngeneration: {}\n{}{}{}",
            self.master,
            self.cluster_id,
            self.master,
            self.generation,
            self.ca_cert_pem,
            self.cert_pem,
            self.key_pem
        )
    }

    /// Whether the key is password-protected.
    pub fn encrypted(&self) -> bool {
        self.key_pem.contains(ENCRYPTED)
    }

    /// The enrolment key as plain PKCS#8 PEM; `password` is needed when it is encrypted.
    pub fn key(&self, password: Option<&str>) -> Result<String> {
        if !self.encrypted() {
            return Ok(self.key_pem.clone());
        }
        let password = password.ok_or_else(|| {
            bad("the key is password-protected: give --password-file or type the password at the prompt")
        })?;
        decrypt_key(&self.key_pem, password)
    }
}

/// Encrypts a PKCS#8 PEM key with `password` (PBES2: PBKDF2-HMAC-SHA256,
/// [`PBKDF2_ITERATIONS`], AES-256-CBC). Salt and IV are 16 bytes each from
/// the system's cryptographic random source (ring's).
pub fn encrypt_key(key_pem: &str, password: &str) -> Result<String> {
    encrypt_key_with(key_pem, password, PBKDF2_ITERATIONS)
}

/// [`encrypt_key`] with `iterations` (tests use fewer).
fn encrypt_key_with(key_pem: &str, password: &str, iterations: u32) -> Result<String> {
    let (_, doc) = SecretDocument::from_pem(key_pem).map_err(|e| bad(e.to_string()))?;
    let info = PrivateKeyInfo::from_der(doc.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let random = rustls::crypto::ring::default_provider().secure_random;
    let (mut salt, mut iv) = ([0u8; 16], [0u8; 16]);
    random
        .fill(&mut salt)
        .and_then(|()| random.fill(&mut iv))
        .map_err(|_| bad("the system's random source failed; try again"))?;
    let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(iterations, &salt, &iv)
        .map_err(|e| bad(e.to_string()))?;
    let encrypted = info
        .encrypt_with_params(params, password.as_bytes())
        .map_err(|e| bad(e.to_string()))?;
    let pem = encrypted
        .to_pem(ENCRYPTED, LineEnding::LF)
        .map_err(|e| bad(e.to_string()))?;
    Ok(pem.to_string())
}

/// Decrypts an `ENCRYPTED PRIVATE KEY` PEM; a wrong password is [`ClusterError::Password`].
pub fn decrypt_key(pem: &str, password: &str) -> Result<String> {
    let (label, doc) = Document::from_pem(pem).map_err(|e| bad(e.to_string()))?;
    if label != ENCRYPTED {
        return Err(bad(format!("expected {ENCRYPTED}, found {label}")));
    }
    let info = EncryptedPrivateKeyInfo::from_der(doc.as_bytes()).map_err(|e| bad(e.to_string()))?;
    check_cost(&info.encryption_algorithm)?;
    let plain = info
        .decrypt(password.as_bytes())
        .map_err(|_| ClusterError::Password)?;
    let pem = plain
        .to_pem(PLAIN, LineEnding::LF)
        .map_err(|e| bad(e.to_string()))?;
    Ok(pem.to_string())
}

/// Refuses a key whose KDF would cost more than the limits above.
fn check_cost(scheme: &EncryptionScheme<'_>) -> Result<()> {
    let EncryptionScheme::Pbes2(params) = scheme else {
        return Ok(());
    };
    match &params.kdf {
        pbes2::Kdf::Pbkdf2(p) if p.iteration_count > MAX_PBKDF2_ITERATIONS => Err(bad(format!(
            "the key asks for {} PBKDF2 iterations, more than the {MAX_PBKDF2_ITERATIONS} accepted; export a new identifier",
            p.iteration_count
        ))),
        pbes2::Kdf::Scrypt(p)
            if p.cost_parameter > 1 << MAX_SCRYPT_LOG_N
                || p.block_size > MAX_SCRYPT_R_P
                || p.parallelization > MAX_SCRYPT_R_P =>
        {
            Err(bad(format!(
                "the key asks for scrypt N = {}, r = {}, p = {}, more than accepted (N <= 2^{MAX_SCRYPT_LOG_N}, r and p <= {MAX_SCRYPT_R_P}); export a new identifier",
                p.cost_parameter, p.block_size, p.parallelization
            )))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
