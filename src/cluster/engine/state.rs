//! The replicated state of the cluster, as the engine's state machine
//! holds it: the cluster record, its members, the current policy version
//! and the identifier state. Applying a [`Change`] is a pure function of
//! the state, so every node that applies the same log holds the same state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Applied, Proposal};
use crate::cluster::{Change, ClusterMeta, IdentifierState, MemberRecord, PolicyVersion};

/// Everything the cluster replicates (also the content of a snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The cluster record, once created.
    pub meta: Option<ClusterMeta>,
    /// Members by name (deleted ones are kept, marked, so their
    /// certificates stay refused).
    pub members: BTreeMap<String, MemberRecord>,
    /// The policy in force.
    pub policy: Option<PolicyVersion>,
    /// Who may join, and with which identifiers.
    pub identifier: IdentifierState,
}

impl ClusterState {
    /// Applies one committed proposal.
    pub fn apply(&mut self, proposal: &Proposal) -> Applied {
        match &proposal.change {
            Change::Created { meta } => self.meta = Some(meta.clone()),
            Change::Member { member } => {
                self.members.insert(member.name.clone(), member.clone());
            }
            Change::MemberDeleted { name, .. } => {
                if let Some(member) = self.members.get_mut(name) {
                    member.deleted = true;
                }
            }
            Change::Policy { version, text } => {
                self.policy = Some(PolicyVersion {
                    version: *version,
                    text: text.clone(),
                });
                return Applied {
                    policy_version: Some(*version),
                };
            }
            Change::Identifier { state } => self.identifier = state.clone(),
            // The engine elects masters itself: nothing to record.
            Change::Promoted { .. } => {}
        }
        Applied::default()
    }
}

#[cfg(test)]
mod tests {
    use super::ClusterState;
    use crate::cluster::engine::{Applied, Proposal};
    use crate::cluster::{Change, PolicyVersion};

    fn proposal(change: Change) -> Proposal {
        Proposal {
            origin: "gw1".into(),
            time: 1,
            change,
        }
    }

    #[test]
    fn a_policy_change_is_in_force_once_applied() {
        let mut state = ClusterState::default();
        let text = "# v2".to_string();
        let change = Change::Policy {
            version: 2,
            text: text.clone(),
        };
        assert_eq!(
            state.apply(&proposal(change)),
            Applied {
                policy_version: Some(2)
            }
        );
        assert_eq!(state.policy, Some(PolicyVersion { version: 2, text }));
    }
}
