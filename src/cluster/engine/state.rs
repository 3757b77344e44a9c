//! The replicated state of the cluster, as the engine's state machine
//! holds it: the cluster record, its members, the current policy version,
//! the identifier state and the last changes applied. Applying a
//! [`Proposal`] is a pure function of the state and the entry's log id, so
//! every node that applies the same log holds the same state.
//!
//! Two decisions are the state machine's, so that the engine serialises
//! them: a new backend's cluster number (the next free one) and a policy
//! version (a whole new text takes the next one; an edit of the current
//! text names the version it makes, and one made meanwhile by another
//! change is refused as a conflict: the proposer retries from the newer
//! text).

use std::collections::{BTreeMap, VecDeque};

use openraft::LogId;
use serde::{Deserialize, Serialize};

use super::{Applied, Proposal};
use crate::cluster::{Change, ClusterMeta, IdentifierState, MemberRecord, PolicyVersion, Role};

/// How many applied changes the state remembers (`cluster status`, the
/// chaos test's check that every node applied the same ones in order).
pub const RECENT: usize = 64;

/// One applied change: its CSN (term, index, origin, time) and what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Raft term of the master that proposed it (the epoch).
    pub term: u64,
    /// Position in the log.
    pub index: u64,
    /// The node it was made on.
    pub origin: String,
    /// Unix time of the proposal.
    pub time: u64,
    /// What it was (`policy version 3`, `member gw2 (2)`, ...).
    pub summary: String,
}

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
    /// The last [`RECENT`] changes applied, oldest first.
    #[serde(default)]
    pub recent: VecDeque<ChangeRecord>,
}

impl ClusterState {
    /// Applies one committed proposal at `log_id`.
    pub fn apply(&mut self, log_id: &LogId<u64>, proposal: &Proposal) -> Applied {
        let applied = self.change(&proposal.change);
        if applied.conflict.is_none() {
            let summary = match (&proposal.change, applied.cid, applied.policy_version) {
                (Change::Member { member }, Some(cid), _) => {
                    format!("member {} ({cid})", member.name)
                }
                (Change::Policy { .. }, _, Some(version)) => format!("policy version {version}"),
                (change, _, _) => change.summary(),
            };
            self.recent.push_back(ChangeRecord {
                term: log_id.leader_id.term,
                index: log_id.index,
                origin: proposal.origin.clone(),
                time: proposal.time,
                summary,
            });
            while self.recent.len() > RECENT {
                self.recent.pop_front();
            }
        }
        applied
    }

    fn change(&mut self, change: &Change) -> Applied {
        match change {
            Change::Created { meta } => self.meta = Some(meta.clone()),
            Change::Member { member } => return self.member(member),
            Change::MemberDeleted { name, .. } => {
                if let Some(member) = self.members.get_mut(name) {
                    member.deleted = true;
                }
            }
            Change::Policy { version, text } => {
                let next = self.policy.as_ref().map_or(0, |p| p.version) + 1;
                // 0: the next version, whatever it is (a whole new text).
                let version = if *version == 0 { &next } else { version };
                if *version != next {
                    return Applied {
                        conflict: Some(format!(
                            "policy version {next} was made meanwhile by another change"
                        )),
                        ..Applied::default()
                    };
                }
                self.policy = Some(PolicyVersion {
                    version: *version,
                    text: text.clone(),
                });
                return Applied {
                    policy_version: Some(*version),
                    ..Applied::default()
                };
            }
            Change::Identifier { state } => self.identifier = state.clone(),
        }
        Applied::default()
    }

    /// A member record: an edit keeps the number; a new backend (number
    /// 0) gets the next free one; a name taken by a member that is not
    /// deleted cannot join again.
    fn member(&mut self, member: &MemberRecord) -> Applied {
        let mut member = member.clone();
        let existing = self.members.get(&member.name);
        let joining = existing.is_none_or(|m| m.deleted || m.uuid != member.uuid);
        if joining && existing.is_some_and(|m| !m.deleted) {
            return Applied {
                conflict: Some(format!("a member called {} exists already", member.name)),
                ..Applied::default()
            };
        }
        if joining && member.role == Role::Backend && member.cid == 0 {
            member.cid = self.members.values().map(|m| m.cid).max().unwrap_or(0) + 1;
        }
        let cid = member.cid;
        self.members.insert(member.name.clone(), member);
        Applied {
            cid: Some(cid),
            ..Applied::default()
        }
    }

    /// Members that are not deleted.
    pub fn live_members(&self) -> impl Iterator<Item = &MemberRecord> {
        self.members.values().filter(|m| !m.deleted)
    }

    /// Backends that are not deleted.
    pub fn backends(&self) -> impl Iterator<Item = &MemberRecord> {
        self.live_members().filter(|m| m.role == Role::Backend)
    }

    /// The backend with Raft node id (cluster number) `id`.
    pub fn backend(&self, id: u64) -> Option<&MemberRecord> {
        self.members
            .values()
            .find(|m| m.role == Role::Backend && u64::from(m.cid) == id)
    }
}

/// The replicated state as a node last applied it: what the daemon routes
/// by, what a frontend pulls from its backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The log id of the last entry applied.
    pub applied: Option<openraft::LogId<u64>>,
    /// The state.
    pub state: ClusterState,
}

impl Replica {
    /// The index of the last entry applied (0: none).
    pub fn index(&self) -> u64 {
        self.applied.map_or(0, |id| id.index)
    }
}

#[cfg(test)]
mod tests;
