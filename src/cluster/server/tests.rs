use std::net::SocketAddr;

use hyper::StatusCode;

use super::*;
use crate::cluster::db::Db;
use crate::cluster::{Change, IdentifierState};

fn member(name: &str, fingerprint: &str) -> MemberRecord {
    MemberRecord {
        cert_fingerprint: fingerprint.into(),
        ..MemberRecord::for_tests(name, 2)
    }
}

#[test]
fn every_request_is_checked_against_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.append(
        1,
        "gw1",
        0,
        Change::Member {
            member: member("gw2", "fp-gw2"),
        },
    )
    .unwrap();
    db.append(
        1,
        "gw1",
        0,
        Change::Member {
            member: member("gw3", "fp-gw3"),
        },
    )
    .unwrap();
    db.append(
        1,
        "gw1",
        0,
        Change::MemberDeleted {
            name: "gw3".into(),
            reason: "deleted".into(),
        },
    )
    .unwrap();
    db.append(
        1,
        "gw1",
        0,
        Change::Identifier {
            state: IdentifierState {
                generation: 2,
                enrolment_fingerprints: vec!["fp-enrol".into()],
                retired_fingerprints: vec!["fp-old".into()],
                allowed_ips: vec!["127.0.0.5".parse().unwrap()],
            },
        },
    )
    .unwrap();
    let node = ClusterNode::for_tests("gw1", db);
    let allowed: SocketAddr = "127.0.0.5:40000".parse().unwrap();
    let other: SocketAddr = "127.0.0.6:40000".parse().unwrap();
    let cases: [(&str, SocketAddr, &str, Result<&str, &str>); 8] = [
        ("fp-gw2", other, "/changes", Ok("member gw2")),
        ("fp-gw2", other, "/join", Ok("member gw2")),
        ("fp-gw3", other, "/changes", Err("deleted")),
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
            (Err(Refusal(status, reason)), Err(w)) => {
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
