//! Failover with real nodes (separate `mxgate serve` processes on 127.x):
//! promote with epoch fencing, following the new master without being told,
//! a returning old master that steps down and reports its unreplicated
//! change as discarded, the lossless handover, `sync --master`, and a
//! backend cut off (SIGSTOP) while changes are made that converges by itself.

mod common;

use std::time::Duration;

use common::cluster::{Node, all_in_sync, one_master_per_epoch, rows, try_status};
use common::{eventually, fakes, signal};

const SYNC: Duration = Duration::from_secs(15);
/// SPEC section 8: after a promote, the others follow within 30 s.
const FOLLOW: Duration = Duration::from_secs(30);

fn master_of(node: &Node) -> Option<(String, u64)> {
    let s = try_status(node)?;
    Some((s["master"].as_str()?.to_owned(), s["epoch"].as_u64()?))
}

fn policy_text(node: &Node) -> String {
    node.ok(&["cluster", "policy", "show"])
}

#[test]
fn promote_follow_step_down_handover_and_heal() {
    let fakes = fakes(&["f1", "f2", "f3"]);
    let mut gw1 = Node::with_fake("gw1", "127.62.0.1", &fakes[0]);
    let mut gw2 = Node::with_fake("gw2", "127.62.0.2", &fakes[1]);
    let mut gw3 = Node::with_fake("gw3", "127.62.0.3", &fakes[2]);
    common::cluster::form(&[&gw1, &gw2, &gw3], SYNC);
    one_master_per_epoch(&[&gw1, &gw2, &gw3]);

    // A backend refuses to promote while the master is reachable.
    let err = gw2.fails(&["cluster", "promote"]);
    assert!(
        err.contains("reachable") && err.contains("--force"),
        "{err}"
    );

    // The master makes a change nobody replicates, then dies.
    gw2.stop();
    gw3.stop();
    let lost = gw1.file("lost.toml", "[routing]\nmax_attempts = 7\n");
    let out = gw1.ok(&["cluster", "policy", "apply", lost.to_str().unwrap()]);
    assert!(out.contains("policy version 2"), "{out}");
    gw1.stop();
    gw2.gw.restart();
    gw3.gw.restart();

    // Promote gw2: gw3 promises (a majority of 3 backends), epoch 2.
    let out = gw2.ok(&["cluster", "promote"]);
    assert!(out.contains("gw2 is now the master at epoch 2"), "{out}");
    one_master_per_epoch(&[&gw2, &gw3]);
    // gw3 follows gw2 without being told.
    assert!(
        eventually(FOLLOW, || {
            one_master_per_epoch(&[&gw2, &gw3]);
            master_of(&gw3) == Some(("gw2".into(), 2))
        }),
        "gw3 did not follow gw2: {:?}",
        try_status(&gw3)
    );
    // A policy change on the new master reaches it.
    let out = gw2.apply_policy("p2.toml", "[routing]\nmax_attempts = 3\n");
    assert!(
        out.contains("policy version 2") && out.contains("change 2."),
        "{out}"
    );
    assert!(
        eventually(SYNC, || policy_text(&gw3).contains("max_attempts = 3")),
        "{}",
        policy_text(&gw3)
    );

    // The old master returns: it steps down, resynchronises, and reports
    // its unreplicated change as discarded.
    gw1.gw.restart();
    assert!(
        eventually(FOLLOW, || {
            one_master_per_epoch(&[&gw1, &gw2, &gw3]);
            let s = try_status(&gw1);
            s.as_ref().is_some_and(|s| {
                s["master"] == "gw2"
                    && s["accepts_writes"] == false
                    && s["discarded"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|c| c["summary"] == "policy version 2"))
            })
        }),
        "gw1 did not step down: {:?}",
        try_status(&gw1)
    );
    assert!(gw1.gw.wait_log("change discarded", SYNC).is_some());
    let text = gw1.ok(&["cluster", "status"]);
    assert!(text.contains("discarded on gw1"), "{text}");
    assert!(policy_text(&gw1).contains("max_attempts = 3"));
    assert!(!policy_text(&gw1).contains("max_attempts = 7"));
    let err = gw1.fails(&["cluster", "policy", "apply", lost.to_str().unwrap()]);
    assert!(
        err.contains("not the master") && err.contains("gw2"),
        "{err}"
    );
    assert!(all_in_sync(&gw2, 3, SYNC), "{:?}", rows(&gw2.status()));
    // Status shows lag and last contact per member.
    let s = gw2.status();
    for m in s["members"].as_array().unwrap() {
        assert!(m.get("replication_lag_s").is_some(), "{m}");
        if m["name"] != "gw2" {
            assert!(m["last_contact"].is_string(), "{m}");
        }
    }

    // Handover while all is well: nothing lost, gw2 steps down at once.
    let p3 = gw2.file("p3.toml", "[routing]\nmax_attempts = 4\n");
    gw2.ok(&["cluster", "policy", "apply", p3.to_str().unwrap()]);
    let out = gw3.ok(&["cluster", "promote", "--force"]);
    assert!(
        out.contains("gw3 is now the master at epoch 3") && out.contains("nothing was lost"),
        "{out}"
    );
    assert!(policy_text(&gw3).contains("max_attempts = 4"));
    one_master_per_epoch(&[&gw1, &gw2, &gw3]);
    let err = gw2.fails(&["cluster", "policy", "apply", p3.to_str().unwrap()]);
    assert!(err.contains("not the master"), "{err}");
    for node in [&gw1, &gw2] {
        assert!(
            eventually(FOLLOW, || master_of(node) == Some(("gw3".into(), 3))),
            "{}: {:?}",
            node.name,
            try_status(node)
        );
    }
    assert!(
        try_status(&gw2).unwrap()["discarded"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a handover discards nothing"
    );

    // sync --master: explicit, for when nothing else is reachable.
    let out = gw1.ok(&["cluster", "sync", "--master", &gw2.address()]);
    assert!(out.contains("following master gw3"), "{out}");

    // Cut gw1 off (SIGSTOP) while changes are made; it converges by itself.
    signal(gw1.gw.pid(), "STOP");
    for (i, max) in [5, 6].iter().enumerate() {
        gw3.apply_policy(
            &format!("q{i}.toml"),
            &format!("[routing]\nmax_attempts = {max}\n"),
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    signal(gw1.gw.pid(), "CONT");
    assert!(
        eventually(SYNC, || policy_text(&gw1).contains("max_attempts = 6")),
        "{}",
        policy_text(&gw1)
    );
    assert!(all_in_sync(&gw3, 3, SYNC), "{:?}", rows(&gw3.status()));
    one_master_per_epoch(&[&gw1, &gw2, &gw3]);
}
