//! Identifier handlers on the master: export, protect, rotate.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Done, done};
use crate::cluster::identity::{self, Purpose};
use crate::cluster::node::ClusterNode;
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
    let _guard = node.write.lock().await;
    let (meta, local) = node.master()?;
    let ca_key = local
        .ca_key_pem
        .as_deref()
        .ok_or_else(|| ClusterError::Invalid("this master holds no CA key".into()))?;
    let mut state = node.db.identifier()?;
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
        master: meta.master_address.clone(),
        generation: state.generation,
        ca_cert_pem: meta.ca_cert_pem.clone(),
        cert_pem: issued.cert_pem,
        key_pem,
    };
    let generation = state.generation;
    let allowed = state.allowed_ips.clone();
    node.commit(&meta, Change::Identifier { state })?;
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
    let _guard = node.write.lock().await;
    let (meta, _) = node.master()?;
    let mut state = node.db.identifier()?;
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
    let entry = node.commit(&meta, Change::Identifier { state })?;
    Ok(done(what, entry))
}

/// `cluster identifier rotate`.
pub(super) async fn rotate(node: &Arc<ClusterNode>) -> Result<Done> {
    let _guard = node.write.lock().await;
    let (meta, _) = node.master()?;
    let mut state = node.db.identifier()?;
    state.generation += 1;
    let old = std::mem::take(&mut state.enrolment_fingerprints);
    state.retired_fingerprints.extend(old);
    let what = format!(
        "identifier generation is now {}; every identifier exported before is refused",
        state.generation
    );
    let entry = node.commit(&meta, Change::Identifier { state })?;
    Ok(done(what, entry))
}
