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
//! -----BEGIN ENCRYPTED PRIVATE KEY-----  its key, PKCS#8 PBES2 (scrypt, AES-256-CBC)
//! ```
//!
//! Without a password (`--insecure-no-password`) the last block is a plain
//! `PRIVATE KEY`. The enrolment certificate may only call join, and only
//! while its generation is current.

use pkcs8::der::Decode;
use pkcs8::pkcs5::pbes2;
use pkcs8::{Document, EncryptedPrivateKeyInfo, LineEnding, PrivateKeyInfo, SecretDocument};

use super::{ClusterError, Result};

const ENCRYPTED: &str = "ENCRYPTED PRIVATE KEY";
const PLAIN: &str = "PRIVATE KEY";

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

/// Encrypts a PKCS#8 PEM key with `password` (PBES2: scrypt log2 N = 15,
/// r = 8, p = 1; AES-256-CBC). Salt and IV come from the OS random source
/// (via UUID v4, 122 random bits each).
pub fn encrypt_key(key_pem: &str, password: &str) -> Result<String> {
    let (_, doc) = SecretDocument::from_pem(key_pem).map_err(|e| bad(e.to_string()))?;
    let info = PrivateKeyInfo::from_der(doc.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let salt = *uuid::Uuid::new_v4().as_bytes();
    let iv = *uuid::Uuid::new_v4().as_bytes();
    let scrypt = pbes2::Parameters::scrypt_aes256cbc(
        pkcs8::pkcs5::scrypt::Params::new(15, 8, 1, 32).map_err(|e| bad(e.to_string()))?,
        &salt,
        &iv,
    )
    .map_err(|e| bad(e.to_string()))?;
    let encrypted = info
        .encrypt_with_params(scrypt, password.as_bytes())
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
    let plain = info
        .decrypt(password.as_bytes())
        .map_err(|_| ClusterError::Password)?;
    let pem = plain
        .to_pem(PLAIN, LineEnding::LF)
        .map_err(|e| bad(e.to_string()))?;
    Ok(pem.to_string())
}

#[cfg(test)]
mod tests;
