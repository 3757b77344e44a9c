use openraft::{CommittedLeaderId, LogId};

use super::ClusterState;
use crate::cluster::engine::{Applied, Proposal};
use crate::cluster::{Change, MemberRecord, PolicyVersion};

fn proposal(change: Change) -> Proposal {
    Proposal {
        origin: "gw1".into(),
        time: 1,
        change,
    }
}

fn at(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

#[test]
fn a_policy_change_is_in_force_once_applied() {
    let mut state = ClusterState::default();
    let text = "# v1".to_string();
    let change = Change::Policy {
        version: 1,
        text: text.clone(),
    };
    assert_eq!(
        state.apply(&at(1), &proposal(change)),
        Applied {
            policy_version: Some(1),
            ..Applied::default()
        }
    );
    assert_eq!(state.policy, Some(PolicyVersion { version: 1, text }));
    assert_eq!(state.recent.len(), 1);
    assert_eq!(state.recent[0].summary, "policy version 1");
}

#[test]
fn a_policy_version_made_meanwhile_is_a_conflict() {
    let mut state = ClusterState::default();
    for version in [1, 2] {
        let change = Change::Policy {
            version,
            text: String::new(),
        };
        state.apply(&at(version), &proposal(change));
    }
    let stale = Change::Policy {
        version: 2,
        text: "# lost race".into(),
    };
    let applied = state.apply(&at(3), &proposal(stale));
    assert!(applied.conflict.is_some(), "{applied:?}");
    assert_eq!(state.policy.map(|p| p.version), Some(2));
    assert_eq!(state.recent.len(), 2, "a conflict is no change");
}

#[test]
fn new_backends_get_the_next_number_and_names_stay_unique() {
    let mut state = ClusterState::default();
    let member = |name: &str, uuid: &str| MemberRecord {
        uuid: uuid.into(),
        ..MemberRecord::for_tests(name, 0)
    };
    let first = state.apply(
        &at(1),
        &proposal(Change::Member {
            member: member("gw1", "a"),
        }),
    );
    let second = state.apply(
        &at(2),
        &proposal(Change::Member {
            member: member("gw2", "b"),
        }),
    );
    assert_eq!((first.cid, second.cid), (Some(1), Some(2)));
    let again = state.apply(
        &at(3),
        &proposal(Change::Member {
            member: member("gw2", "c"),
        }),
    );
    assert!(again.conflict.is_some(), "{again:?}");
    // An edit (same uuid) keeps the number.
    let edit = MemberRecord {
        cid: 2,
        comment: Some("rack 4".into()),
        ..member("gw2", "b")
    };
    let edited = state.apply(&at(4), &proposal(Change::Member { member: edit }));
    assert_eq!(edited.cid, Some(2));
    assert_eq!(
        state.backend(2).and_then(|m| m.comment.clone()),
        Some("rack 4".into())
    );
}

#[test]
fn a_whole_new_text_takes_the_next_version() {
    let mut state = ClusterState::default();
    for index in 1..=2 {
        let change = Change::Policy {
            version: 0,
            text: format!("# {index}"),
        };
        let applied = state.apply(&at(index), &proposal(change));
        assert_eq!(applied.policy_version, Some(index));
    }
}
