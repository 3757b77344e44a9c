//! The `POST /join` body: what a joining node sends, and [`parse_request`],
//! the one function the master runs on the bytes before it looks at
//! anything else (and the `join_request` fuzz target runs on arbitrary ones).
//!
//! Every field must pass the rule `check-config` applies where the joining
//! node took it from, through the same function of [`crate::config`]:
//! `name` is `[node] name` ([`config::check_name`]), `address` is `[cluster]
//! advertise` ([`config::parse_socket`], and an address other nodes can
//! reach), `smtp_upstream` and `gina_upstream` are the `[local]` upstreams
//! ([`config::parse_host_port`], [`config::parse_gina`]). The role must be
//! `backend` or `frontend`, the certificate request must parse and carry a
//! valid signature, and the version must look like a version. A request
//! that breaks a rule is refused with the field and the reason, before the
//! master takes its write lock, so nothing changes. Keys the master does not
//! know are ignored (a newer node may send more).

use std::net::SocketAddr;

use serde_json::{Map, Value};

use crate::cluster::Role;
pub use crate::cluster::api::JoinRequest;
use crate::config;

/// Longest certificate request accepted (a P-256 CSR in PEM is about 500 bytes).
pub const MAX_CSR_PEM: usize = 16 * 1024;
/// Longest version string accepted.
pub const MAX_VERSION: usize = 64;

/// A join request whose every field passed its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidJoin {
    /// The request as sent.
    pub request: JoinRequest,
    /// `address`, parsed.
    pub advertise: SocketAddr,
}

/// A field of a join request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinField {
    /// `name`.
    Name,
    /// `role`.
    Role,
    /// `csr_pem`.
    CsrPem,
    /// `address`.
    Address,
    /// `smtp_upstream`.
    SmtpUpstream,
    /// `gina_upstream`.
    GinaUpstream,
    /// `version`.
    Version,
}

impl JoinField {
    /// The JSON key.
    pub fn key(self) -> &'static str {
        match self {
            JoinField::Name => "name",
            JoinField::Role => "role",
            JoinField::CsrPem => "csr_pem",
            JoinField::Address => "address",
            JoinField::SmtpUpstream => "smtp_upstream",
            JoinField::GinaUpstream => "gina_upstream",
            JoinField::Version => "version",
        }
    }

    /// Where the joining node took the value from.
    pub fn source(self) -> &'static str {
        match self {
            JoinField::Name => "[node] name",
            JoinField::Role => "cluster join --role",
            JoinField::CsrPem => "the node's certificate request",
            JoinField::Address => "[cluster] advertise",
            JoinField::SmtpUpstream => "[local] smtp_upstream",
            JoinField::GinaUpstream => "[local] gina_upstream",
            JoinField::Version => "the mxgate version",
        }
    }
}

impl std::fmt::Display for JoinField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// Why a join request is refused (HTTP 400); nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinInvalid {
    /// Not a JSON object.
    #[error("the join request is not a JSON object ({0}); join with `mxgate cluster join`")]
    Malformed(String),
    /// One field is missing, of the wrong type or breaks its rule.
    #[error(
        "join refused: field {field} ({}) is not valid: {reason}; fix it on the joining node and join again",
        .field.source()
    )]
    Field {
        /// Which field.
        field: JoinField,
        /// Why (values quoted with their control characters escaped).
        reason: String,
    },
}

impl JoinInvalid {
    /// The field at fault, if the request was an object.
    pub fn field(&self) -> Option<JoinField> {
        match self {
            JoinInvalid::Malformed(_) => None,
            JoinInvalid::Field { field, .. } => Some(*field),
        }
    }
}

fn invalid(field: JoinField) -> impl Fn(String) -> JoinInvalid {
    move |reason| JoinInvalid::Field { field, reason }
}

/// Parses and checks a `POST /join` body; the master's only reading of it.
pub fn parse_request(body: &[u8]) -> Result<ValidJoin, JoinInvalid> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| JoinInvalid::Malformed(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(JoinInvalid::Malformed(format!("found {}", kind(&value))));
    };
    let name = required(&map, JoinField::Name)?;
    config::check_name(&name).map_err(invalid(JoinField::Name))?;
    let role = match required(&map, JoinField::Role)?.as_str() {
        "backend" => Role::Backend,
        "frontend" => Role::Frontend,
        other => {
            return Err(invalid(JoinField::Role)(format!(
                "{other:?} is not a role; expected \"backend\" or \"frontend\""
            )));
        }
    };
    let csr_pem = required(&map, JoinField::CsrPem)?;
    check_csr(&csr_pem).map_err(invalid(JoinField::CsrPem))?;
    let address = required(&map, JoinField::Address)?;
    let advertise = parse_advertise(&address).map_err(invalid(JoinField::Address))?;
    let smtp_upstream = optional(&map, JoinField::SmtpUpstream)?;
    if let Some(upstream) = &smtp_upstream {
        config::parse_host_port(upstream).map_err(invalid(JoinField::SmtpUpstream))?;
    }
    let gina_upstream = optional(&map, JoinField::GinaUpstream)?;
    if let Some(upstream) = &gina_upstream {
        config::parse_gina(upstream).map_err(invalid(JoinField::GinaUpstream))?;
    }
    let version = required(&map, JoinField::Version)?;
    check_version(&version).map_err(invalid(JoinField::Version))?;
    Ok(ValidJoin {
        request: JoinRequest {
            name,
            role,
            csr_pem,
            address,
            smtp_upstream,
            gina_upstream,
            version,
        },
        advertise,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn required(map: &Map<String, Value>, field: JoinField) -> Result<String, JoinInvalid> {
    optional(map, field)?.ok_or_else(|| invalid(field)("missing".into()))
}

/// A string field; absent and `null` are `None`.
fn optional(map: &Map<String, Value>, field: JoinField) -> Result<Option<String>, JoinInvalid> {
    match map.get(field.key()) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(field)(format!(
            "expected a string, found {}",
            kind(other)
        ))),
    }
}

/// `[cluster] advertise`: the `IP:PORT` rule of `check-config`, and an
/// address other nodes can reach (`check-config` refuses a wildcard
/// address or port 0 there too).
fn parse_advertise(text: &str) -> Result<SocketAddr, String> {
    let address = config::parse_socket(text)?;
    if address.ip().is_unspecified() || address.port() == 0 {
        return Err(format!("{address} is not an address other nodes can reach"));
    }
    Ok(address)
}

/// A PEM certificate request whose signature verifies.
fn check_csr(pem: &str) -> Result<(), String> {
    if pem.len() > MAX_CSR_PEM {
        return Err(format!(
            "{} bytes, more than the {MAX_CSR_PEM} a certificate request may have",
            pem.len()
        ));
    }
    rcgen::CertificateSigningRequestParams::from_pem(pem)
        .map(|_| ())
        .map_err(|e| format!("not a certificate request in PEM with a valid signature ({e})"))
}

/// A version: 1 to 64 letters, digits, `.`, `-`, `+`, `_` (SemVer with
/// pre-release and build parts).
fn check_version(text: &str) -> Result<(), String> {
    let ok = !text.is_empty()
        && text.len() <= MAX_VERSION
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a version: use 1 to {MAX_VERSION} letters, digits, '.', '-', '+' or '_'"
        ))
    }
}

#[cfg(test)]
mod tests;
