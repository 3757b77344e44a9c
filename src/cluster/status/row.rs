//! One row of `cluster status`: a member's STATE from what the master's
//! engine and probe know, and the columns around it.

use super::{MemberStatus, Texts};
use crate::cluster::node::{ClusterNode, Contact};
use crate::cluster::{MemberRecord, Role, time};

/// STATE of a member: `A` in step, `S` catching up, `ERROR: ...` when its
/// last probe failed (`no contact for Ns`).
pub fn state_of(me: bool, contact: &Contact, remote: u64, local: u64, now: u64) -> String {
    if me {
        return "A".into();
    }
    match (&contact.error, contact.at) {
        (Some(_), Some(at)) => format!("ERROR: no contact for {}s", now.saturating_sub(at)),
        (Some(e), None) => format!("ERROR: no contact since this node started ({e})"),
        (None, _) if contact.at.is_some() && remote >= local => "A".into(),
        (None, _) => "S".into(),
    }
}

/// `master`, `backend` or `frontend`.
fn role_of(m: &MemberRecord, master: Option<&str>) -> String {
    match m.role {
        _ if Some(m.name.as_str()) == master => "master",
        Role::Backend => "backend",
        Role::Frontend => "frontend",
    }
    .into()
}

/// FRONTEND-OF and BACKEND-OF of `m`: a frontend's backends, or the
/// frontends that use a backend.
fn links(m: &MemberRecord, records: &[MemberRecord]) -> (Vec<String>, Vec<String>) {
    match m.role {
        Role::Frontend => (m.backends.clone(), Vec::new()),
        Role::Backend => (
            Vec::new(),
            records
                .iter()
                .filter(|f| !f.deleted && f.role == Role::Frontend && f.backends.contains(&m.name))
                .map(|f| f.name.clone())
                .collect(),
        ),
    }
}

/// The row of `m` as `node` sees it.
pub fn member_row(
    node: &ClusterNode,
    m: &MemberRecord,
    records: &[MemberRecord],
    texts: &Texts,
    (contact, state): (&Contact, &str),
    (local, remote): (u64, u64),
    now: u64,
) -> MemberStatus {
    let me = m.name == node.name;
    let hello = contact.hello.as_ref();
    let (frontend_of, backend_of) = links(m, records);
    let leader = node.leader();
    let lag = match (state, contact.behind_since) {
        ("A", _) => Some(0),
        (_, Some(since)) => Some(now.saturating_sub(since)),
        _ => contact.at.map(|at| now.saturating_sub(at)),
    };
    MemberStatus {
        name: m.name.clone(),
        cid: m.cid,
        device_id: m.device_id.clone(),
        uuid: m.uuid.clone(),
        address: m.address.clone(),
        role: role_of(m, leader.as_ref().map(|l| l.name.as_str())),
        state: state.to_string(),
        version: match (me, hello) {
            (true, _) => env!("CARGO_PKG_VERSION").into(),
            (false, Some(h)) => h.version.clone(),
            (false, None) => m.version.clone(),
        },
        uptime_s: match (me, hello) {
            (true, _) => node.started.elapsed().as_secs(),
            (false, Some(h)) => h.uptime,
            (false, None) => 0,
        },
        last_update: if me {
            Some(time::rfc3339(now))
        } else {
            contact.at.map(time::rfc3339)
        },
        local_entries: local,
        remote_entries: remote,
        frontend_of,
        backend_of,
        comment: texts.comment(&m.name),
        location: texts.location(&m.name),
        last_contact: if me {
            None
        } else {
            contact.at.map(time::rfc3339)
        },
        replication_lag_s: if me { Some(0) } else { lag },
        clock_offset_ms: if me { Some(0) } else { contact.clock_offset_ms },
        protocol: if me {
            Some(crate::cluster::api::PROTOCOL)
        } else {
            hello.map(|h| h.protocol)
        },
    }
}
