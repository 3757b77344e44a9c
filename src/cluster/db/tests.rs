use super::*;
use crate::cluster::{Role, types::*};

fn meta() -> ClusterMeta {
    ClusterMeta {
        cluster_id: "c1".into(),
        epoch: 1,
        master: "gw1".into(),
        master_address: "127.0.0.1:7025".into(),
        ca_cert_pem: "CA".into(),
    }
}

fn local(name: &str) -> LocalNode {
    LocalNode {
        name: name.into(),
        cid: 1,
        role: Role::Backend,
        cert_pem: "C".into(),
        key_pem: "K".into(),
        ca_key_pem: None,
        detached: None,
    }
}

fn member(name: &str, cid: u32) -> MemberRecord {
    MemberRecord {
        address: "127.0.0.1:1".into(),
        ..MemberRecord::for_tests(name, cid)
    }
}

#[test]
fn append_applies_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.meta().unwrap(), None);
        db.reset(&local("gw1"), &[]).unwrap();
        let e1 = db
            .append(1, "gw1", 10, Change::Created { meta: meta() })
            .unwrap();
        assert_eq!(e1.csn.seq, 1);
        db.append(
            1,
            "gw1",
            11,
            Change::Member {
                member: member("gw1", 1),
            },
        )
        .unwrap();
        db.append(
            1,
            "gw1",
            12,
            Change::Policy {
                version: 1,
                text: "x".into(),
            },
        )
        .unwrap();
        db.append(
            1,
            "gw1",
            13,
            Change::MemberDeleted {
                name: "gw1".into(),
                reason: "deleted".into(),
            },
        )
        .unwrap();
    }
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.meta().unwrap(), Some(meta()));
    assert_eq!(db.head().unwrap(), 4);
    assert_eq!(db.log_len().unwrap(), 4);
    assert_eq!(db.policy().unwrap().unwrap().text, "x");
    let members = db.members().unwrap();
    assert_eq!(members.len(), 1);
    assert!(members[0].deleted);
    assert_eq!(db.entries_after(2, 10).unwrap().len(), 2);
    assert_eq!(db.entries_after(0, 1).unwrap()[0].csn.seq, 1);
}

#[test]
fn follower_applies_in_order_only() {
    let dir = tempfile::tempdir().unwrap();
    let master_dir = tempfile::tempdir().unwrap();
    let master = Db::open(master_dir.path()).unwrap();
    master.reset(&local("gw1"), &[]).unwrap();
    let e1 = master
        .append(1, "gw1", 1, Change::Created { meta: meta() })
        .unwrap();
    let e2 = master
        .append(
            1,
            "gw1",
            2,
            Change::Member {
                member: member("gw2", 2),
            },
        )
        .unwrap();
    let e3 = master
        .append(
            1,
            "gw1",
            3,
            Change::Policy {
                version: 2,
                text: "p".into(),
            },
        )
        .unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.reset(&local("gw2"), &[e1, e2]).unwrap();
    assert_eq!(db.head().unwrap(), 2);
    // A gap is refused and changes nothing.
    let mut e4 = e3.clone();
    e4.csn.seq = 4;
    assert!(db.apply(&e4).is_err());
    assert_eq!(db.head().unwrap(), 2);
    db.apply(&e3).unwrap();
    assert_eq!(db.head().unwrap(), 3);
    assert_eq!(db.policy().unwrap().unwrap().version, 2);
    assert_eq!(db.local().unwrap().unwrap().name, "gw2");
}

#[test]
fn reset_wipes_previous_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.reset(&local("a"), &[]).unwrap();
    db.append(1, "a", 1, Change::Created { meta: meta() })
        .unwrap();
    db.append(
        1,
        "a",
        1,
        Change::Member {
            member: member("a", 1),
        },
    )
    .unwrap();
    db.reset(&local("b"), &[]).unwrap();
    assert_eq!(db.meta().unwrap(), None);
    assert!(db.members().unwrap().is_empty());
    assert_eq!(db.head().unwrap(), 0);
    assert_eq!(db.identifier().unwrap(), IdentifierState::default());
}

#[test]
fn promotion_raises_the_epoch_and_resync_reports_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let old = Db::open(dir.path()).unwrap();
    old.reset(&local("gw1"), &[]).unwrap();
    old.append(1, "gw1", 10, Change::Created { meta: meta() })
        .unwrap();
    let policy = |version, text: &str| Change::Policy {
        version,
        text: text.into(),
    };
    old.append(1, "gw1", 11, policy(1, "a")).unwrap();
    // gw2 has replicated up to seq 2 when gw1 makes a change nobody sees.
    let shared = old.entries_after(0, 10).unwrap();
    old.append(1, "gw1", 12, policy(2, "lost")).unwrap();

    let dir2 = tempfile::tempdir().unwrap();
    let new = Db::open(dir2.path()).unwrap();
    new.reset(&local("gw2"), &shared).unwrap();
    new.append(
        2,
        "gw2",
        20,
        Change::Promoted {
            epoch: 2,
            master: "gw2".into(),
            master_address: "127.0.0.2:7025".into(),
        },
    )
    .unwrap();
    new.append(2, "gw2", 21, policy(2, "kept")).unwrap();
    let m = new.meta().unwrap().unwrap();
    assert_eq!((m.epoch, m.master.as_str()), (2, "gw2"));
    assert_eq!(m.master_address, "127.0.0.2:7025");

    // The old master resynchronises: its seq 3 (epoch 1) is discarded.
    let theirs = new.entries_after(0, 10).unwrap();
    let discarded = old.resync(&local("gw1"), &theirs).unwrap();
    assert_eq!(discarded.len(), 1);
    assert_eq!((discarded[0].csn.epoch, discarded[0].csn.seq), (1, 3));
    assert_eq!(discarded[0].summary, "policy version 2");
    assert_eq!(discarded[0].by_epoch, 2);
    assert_eq!(old.discarded().unwrap(), discarded);
    assert_eq!(old.policy().unwrap().unwrap().text, "kept");
    assert_eq!(old.meta().unwrap().unwrap().master, "gw2");
    assert_eq!(old.entries_after(0, 10).unwrap(), theirs);
    // A second resync to the same log discards nothing more.
    assert!(old.resync(&local("gw1"), &theirs).unwrap().is_empty());
    assert_eq!(old.discarded().unwrap().len(), 1);
}

#[test]
fn promises_survive_a_resync() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.reset(&local("gw3"), &[]).unwrap();
    let p = Promise {
        epoch: 4,
        candidate: "gw2".into(),
    };
    db.set_promise(&p).unwrap();
    db.resync(&local("gw3"), &[]).unwrap();
    assert_eq!(db.promise().unwrap(), Some(p));
}
