use std::net::SocketAddr;

use hyper::StatusCode;

use super::*;
use openraft::{CommittedLeaderId, LogId};

use crate::cluster::engine::state::ClusterState;
use crate::cluster::engine::{Proposal, Replica};
use crate::cluster::{Change, IdentifierState};

fn member(name: &str, fingerprint: &str) -> MemberRecord {
    MemberRecord {
        cert_fingerprint: fingerprint.into(),
        ..MemberRecord::for_tests(name, 2)
    }
}

#[test]
fn every_request_is_checked_against_the_replicated_state() {
    let mut state = ClusterState::default();
    let changes = [
        Change::Member {
            member: member("gw2", "fp-gw2"),
        },
        Change::Member {
            member: member("gw3", "fp-gw3"),
        },
        Change::MemberDeleted {
            name: "gw3".into(),
            reason: "deleted".into(),
        },
        Change::Identifier {
            state: IdentifierState {
                generation: 2,
                enrolment_fingerprints: vec!["fp-enrol".into()],
                retired_fingerprints: vec!["fp-old".into()],
                allowed_ips: vec!["127.0.0.5".parse().unwrap()],
            },
        },
    ];
    for (index, change) in changes.into_iter().enumerate() {
        let proposal = Proposal {
            origin: "gw1".into(),
            time: 0,
            change,
        };
        let at = LogId::new(CommittedLeaderId::new(1, 1), index as u64 + 1);
        state.apply(&at, &proposal);
    }
    let node = ClusterNode::for_tests("gw1");
    node.publish_replica(Replica {
        applied: None,
        state,
    });
    let allowed: SocketAddr = "127.0.0.5:40000".parse().unwrap();
    let other: SocketAddr = "127.0.0.6:40000".parse().unwrap();
    let cases: [(&str, SocketAddr, &str, Result<&str, &str>); 8] = [
        ("fp-gw2", other, "/state", Ok("member gw2")),
        ("fp-gw2", other, "/join", Ok("member gw2")),
        ("fp-gw3", other, "/state", Err("deleted")),
        ("fp-enrol", allowed, "/join", Ok("enrolment")),
        ("fp-enrol", allowed, "/status", Err("may only join")),
        ("fp-enrol", other, "/join", Err("not allowed")),
        ("fp-old", allowed, "/join", Err("rotate")),
        ("fp-unknown", allowed, "/join", Err("not that of a member")),
    ];
    for (fingerprint, peer, path, want) in cases {
        let got = authorise(&node, peer, fingerprint, path);
        match (got, want) {
            (Ok(Caller::Member(m)), Ok(w)) => assert_eq!(format!("member {}", m.name), w),
            (Ok(Caller::Enrolment), Ok(w)) => assert_eq!("enrolment", w),
            (Err(Refusal { status, reason, .. }), Err(w)) => {
                assert_eq!(status, StatusCode::FORBIDDEN);
                assert!(
                    reason.contains(w),
                    "{fingerprint} {path}: {reason:?} lacks {w:?}"
                );
            }
            (got, want) => panic!("{fingerprint} {path}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn a_peer_of_another_protocol_is_refused_by_code() {
    let headers = |v: Option<&str>| {
        let mut h = hyper::HeaderMap::new();
        if let Some(v) = v {
            h.insert(H_PROTOCOL, v.parse().unwrap());
        }
        h
    };
    let post = hyper::Method::POST;
    let get = hyper::Method::GET;
    assert!(check_protocol(&headers(Some("2")), &post, "/raft/append").is_ok());
    assert!(
        check_protocol(&headers(Some("3")), &post, "/propose").is_ok(),
        "adjacent"
    );
    for (h, method, path) in [
        (Some("4"), &post, "/raft/append"),
        (Some("1"), &post, "/join"),
        (None, &post, "/propose"),
        (None, &get, "/state"),
    ] {
        let refusal = check_protocol(&headers(h), method, path).expect_err("refused");
        assert_eq!(refusal.code, RefusalCode::Protocol, "{h:?} {path}");
        assert!(refusal.reason.contains("upgrade"), "{}", refusal.reason);
    }
    // Tools may read the status without naming a protocol.
    assert!(check_protocol(&headers(None), &get, "/status").is_ok());
}
