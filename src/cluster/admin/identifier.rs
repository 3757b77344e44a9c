//! Identifier handlers: export, protect, rotate. Each is a change of the
//! identifier state, proposed like every change (on any backend).

use std::net::IpAddr;
use std::sync::Arc;

use super::{Done, done};
use crate::cluster::identity::{self, Purpose};
use crate::cluster::node::ClusterNode;
use crate::cluster::propose::propose;
use crate::cluster::{Change, ClusterError, Result, identifier};

/// `cluster identifier export`: a new enrolment certificate of the current
/// generation, its key encrypted with `password`.
pub(super) async fn export(
    node: &Arc<ClusterNode>,
    password: Option<String>,
    insecure: bool,
    allow_ip: Vec<IpAddr>,
) -> Result<serde_json::Value> {
    if password.is_none() && !insecure {
        return Err(ClusterError::Invalid(
            "an identifier needs a password: give --password-file, or --insecure-no-password to export the key unencrypted".into(),
        ));
    }
    if password.as_deref() == Some("") {
        return Err(ClusterError::Invalid(
            "the password is empty; choose a real one".into(),
        ));
    }
    let (meta, local) = node.member()?;
    let ca_key = local.ca_key_pem.as_deref().ok_or_else(|| {
        ClusterError::Invalid(
            "this node holds no CA key; export the identifier on a backend".into(),
        )
    })?;
    let mut state = node.replica().state.identifier.clone();
    let (key, csr) = identity::new_key_and_csr("enrolment")?;
    let issued = identity::sign(
        &meta.ca_cert_pem,
        ca_key,
        &csr,
        "enrolment",
        &[],
        Purpose::Enrolment {
            generation: state.generation,
        },
    )?;
    let key_pem = match &password {
        Some(p) => identifier::encrypt_key(&key, p)?,
        None => key,
    };
    state.enrolment_fingerprints.push(issued.fingerprint);
    for ip in allow_ip {
        if !state.allowed_ips.contains(&ip) {
            state.allowed_ips.push(ip);
        }
    }
    let id = identifier::Identifier {
        cluster_id: meta.cluster_id.clone(),
        master: node
            .leader()
            .map_or_else(|| node.advertise.to_string(), |l| l.address),
        generation: state.generation,
        ca_cert_pem: meta.ca_cert_pem.clone(),
        cert_pem: issued.cert_pem,
        key_pem,
    };
    let generation = state.generation;
    let allowed = state.allowed_ips.clone();
    propose(node, Change::Identifier { state }).await?;
    Ok(serde_json::json!({
        "text": id.render(),
        "generation": generation,
        "encrypted": password.is_some(),
        "allowed_ips": allowed,
    }))
}

/// `cluster identifier protect`.
pub(super) async fn protect(
    node: &Arc<ClusterNode>,
    allow_ip: Vec<IpAddr>,
    clear: bool,
) -> Result<Done> {
    if clear != allow_ip.is_empty() {
        return Err(ClusterError::Invalid(
            "give either --allow-ip IP... or --clear".into(),
        ));
    }
    node.member()?;
    let mut state = node.replica().state.identifier.clone();
    state.allowed_ips = allow_ip;
    let what = if clear {
        "joins are allowed from any address".to_string()
    } else {
        format!(
            "joins are allowed only from {}",
            state
                .allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let committed = propose(node, Change::Identifier { state }).await?;
    Ok(done(what, committed))
}

/// `cluster identifier rotate`.
pub(super) async fn rotate(node: &Arc<ClusterNode>) -> Result<Done> {
    node.member()?;
    let mut state = node.replica().state.identifier.clone();
    state.generation += 1;
    let old = std::mem::take(&mut state.enrolment_fingerprints);
    state.retired_fingerprints.extend(old);
    let what = format!(
        "identifier generation is now {}; every identifier exported before is refused",
        state.generation
    );
    let committed = propose(node, Change::Identifier { state }).await?;
    Ok(done(what, committed))
}
