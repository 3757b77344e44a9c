//! Who may complete a control-plane TLS handshake: the replicated state's view of
//! a client certificate's fingerprint, asked by the server's certificate
//! verifier ([`crate::tls::mutual::server_config`]) at every handshake. Per
//! request, [`super::server::authorise`] then decides what the caller may do.

use super::node::ClusterNode;
use crate::tls::mutual::{Admission, Admit};

impl Admission for ClusterNode {
    /// Members that are not deleted and enrolment identities of the current
    /// generation are valid; deleted members and retired identities are
    /// revoked.
    fn admit(&self, der: &[u8]) -> Admit {
        let fingerprint = super::identity::fingerprint(der);
        let replica = self.replica();
        let identifier = &replica.state.identifier;
        let members = &replica.state.members;
        if let Some(member) = members.values().find(|m| m.cert_fingerprint == fingerprint) {
            return if member.deleted {
                Admit::Revoked
            } else {
                Admit::Valid
            };
        }
        let is = |list: &[String]| list.contains(&fingerprint);
        if is(&identifier.enrolment_fingerprints) {
            Admit::Valid
        } else if is(&identifier.retired_fingerprints) {
            Admit::Revoked
        } else {
            Admit::Unknown
        }
    }
}
