//! Failover with real nodes (separate `mxgate serve` processes on 127.x)
//! on the consensus engine: a SIGKILLed master is replaced by an election
//! without any command and returns as a backend; with two of three
//! backends down a change is refused and never appears later; a planned
//! `promote` hands mastership over; a two-backend cluster whose master is
//! lost for good recovers with `promote --force`, and the returning old
//! master is fenced; a change in flight when the majority is lost is
//! reported with an unknown outcome, and all nodes agree on it later.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Node, all_in_sync, one_master_per_epoch, rows, try_status};
use common::{eventually, fakes};

const SYNC: Duration = Duration::from_secs(20);
/// The issue: a new master within 15 s of the old one's death.
const ELECTION: Duration = Duration::from_secs(15);

fn policy_text(node: &Node) -> String {
    node.ok(&["cluster", "policy", "show"])
}

/// Waits until every node in `nodes` names the same master, not `not`;
/// returns it.
fn new_master(nodes: &[&Node], not: &str, limit: Duration) -> Option<String> {
    let mut found = None;
    eventually(limit, || {
        one_master_per_epoch(nodes);
        let masters: Vec<_> = nodes.iter().map(|n| n.master()).collect();
        let first = masters[0].clone();
        let agreed =
            first.as_ref().is_some_and(|(m, _)| m != not) && masters.iter().all(|m| *m == first);
        if agreed {
            found = first.map(|(m, _)| m);
        }
        agreed
    });
    found
}

fn by_name<'a>(nodes: &'a [&'a Node], name: &str) -> &'a Node {
    nodes
        .iter()
        .find(|n| n.name == name)
        .expect("a node of that name")
}

#[test]
fn a_killed_master_is_replaced_by_an_election_without_any_command() {
    let fakes = fakes(&["f1", "f2", "f3"]);
    let mut gw1 = Node::with_fake("gw1", "127.62.0.1", &fakes[0]);
    let gw2 = Node::with_fake("gw2", "127.62.0.2", &fakes[1]);
    let gw3 = Node::with_fake("gw3", "127.62.0.3", &fakes[2]);
    common::cluster::form(&[&gw1, &gw2, &gw3], SYNC);
    gw1.apply_policy("p2.toml", "[routing]\nmax_attempts = 2\n");

    gw1.kill();
    let killed = Instant::now();
    let survivors = [&gw2, &gw3];
    let master = new_master(&survivors, "gw1", ELECTION + Duration::from_secs(5))
        .expect("no new master elected");
    let took = killed.elapsed();
    assert!(took <= ELECTION, "the election took {took:?}");
    // The dead master shows as in error within a few seconds.
    let m = by_name(&survivors, &master);
    assert!(
        eventually(Duration::from_secs(8), || rows(&m.status())
            .iter()
            .any(|r| r.0 == "gw1" && r.2.starts_with("ERROR: no contact"))),
        "{:?}",
        rows(&m.status())
    );
    // Changes continue, on either survivor.
    let out = gw3.apply_policy("p3.toml", "[routing]\nmax_attempts = 3\n");
    assert!(out.contains("policy version 3"), "{out}");
    assert!(eventually(SYNC, || policy_text(&gw2).contains("max_attempts = 3")));

    // The old master returns as a backend and catches up.
    gw1.gw.restart();
    assert!(
        eventually(SYNC, || {
            one_master_per_epoch(&[&gw1, &gw2, &gw3]);
            gw1.master().is_some_and(|(m, _)| m == master)
                && policy_text(&gw1).contains("max_attempts = 3")
        }),
        "gw1 did not follow {master}: {:?}",
        try_status(&gw1)
    );
    assert!(all_in_sync(m, 3, SYNC), "{:?}", rows(&m.status()));
    let err = gw1.fails(&["cluster", "promote", "--force"]);
    assert!(err.contains("without --force"), "{err}");
}

#[test]
fn without_a_majority_a_change_is_refused_and_never_appears() {
    let fakes = fakes(&["f1", "f2", "f3"]);
    let gw1 = Node::with_fake("gw1", "127.62.1.1", &fakes[0]);
    let mut gw2 = Node::with_fake("gw2", "127.62.1.2", &fakes[1]);
    let mut gw3 = Node::with_fake("gw3", "127.62.1.3", &fakes[2]);
    common::cluster::form(&[&gw1, &gw2, &gw3], SYNC);
    gw2.kill();
    gw3.kill();
    let lost = gw1.file("lost.toml", "[routing]\nmax_attempts = 7\n");
    let started = Instant::now();
    let err = gw1.fails(&["cluster", "policy", "apply", lost.to_str().unwrap()]);
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("nothing was changed") && err.contains("1 of 3 backends are reachable"),
        "{err}"
    );
    assert!(err.contains("promote --force"), "{err}");
    assert!(
        eventually(Duration::from_secs(5), || gw1.status()["accepts_writes"]
            == false),
        "{}",
        gw1.status()
    );

    gw2.gw.restart();
    gw3.gw.restart();
    let master = new_master(&[&gw1, &gw2, &gw3], "", SYNC).expect("a master");
    assert!(all_in_sync(by_name(&[&gw1, &gw2, &gw3], &master), 3, SYNC));
    for node in [&gw1, &gw2, &gw3] {
        assert_eq!(node.policy_version(), Some(1), "{}", node.name);
        assert!(!policy_text(node).contains("max_attempts = 7"));
    }
}

/// The majority is lost after the master has checked it and before the
/// change commits: both followers die on their first disk write, which is
/// the change itself (a file size limit of one page, set on the running
/// daemons with `prlimit`, makes any write past it fatal: `SIGXFSZ`). The
/// command must say the outcome is unknown and fail, never "applied"; when
/// the followers return, every node agrees on one outcome.
#[test]
fn a_change_in_flight_when_the_majority_is_lost_has_an_unknown_outcome() {
    if !common::require("prlimit") {
        return;
    }
    let fakes = fakes(&["f1", "f2", "f3"]);
    let gw1 = Node::with_fake("gw1", "127.62.4.1", &fakes[0]);
    let mut gw2 = Node::with_fake("gw2", "127.62.4.2", &fakes[1]);
    let mut gw3 = Node::with_fake("gw3", "127.62.4.3", &fakes[2]);
    let nodes = [&gw1, &gw2, &gw3];
    common::cluster::form(&nodes, SYNC);
    assert_eq!(gw1.master().map(|(m, _)| m).as_deref(), Some("gw1"));
    // Idle and identical everywhere: nothing is left for the followers to
    // write before the change arrives.
    assert!(
        eventually(SYNC, || {
            let logs: Vec<_> = nodes
                .iter()
                .map(|n| try_status(n).map(|s| s["log"].clone()))
                .collect();
            logs.iter().all(|l| l.is_some() && *l == logs[0])
        }),
        "the nodes did not settle"
    );
    for follower in [&gw2, &gw3] {
        let pid = follower.gw.pid().to_string();
        let out = std::process::Command::new("prlimit")
            .args(["--pid", &pid, "--fsize=4096", "--core=0"])
            .output()
            .expect("prlimit runs");
        assert!(out.status.success(), "{out:?}");
    }

    let change = gw1.file("in-flight.toml", "[routing]\nmax_attempts = 6\n");
    let started = Instant::now();
    let out = gw1.cli(&["cluster", "policy", "apply", change.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("after {:?}: {said}", started.elapsed());
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("is unknown") && said.contains("may still apply"),
        "{said}"
    );
    assert!(!said.contains("applied"), "{said}");
    // The followers died of the write, so the check had passed before.
    for follower in [&mut gw2, &mut gw3] {
        assert!(
            follower.gw.wait_exit(Duration::from_secs(5)).is_some(),
            "{} survived the write",
            follower.name
        );
    }

    gw2.gw.restart();
    gw3.gw.restart();
    let nodes = [&gw1, &gw2, &gw3];
    let master = new_master(&nodes, "", SYNC).expect("a master");
    assert!(all_in_sync(by_name(&nodes, &master), 3, SYNC));
    let agreed = eventually(SYNC, || {
        let versions: Vec<_> = nodes.iter().map(|n| n.policy_version()).collect();
        versions.iter().all(|v| v.is_some() && *v == versions[0])
    });
    let versions: Vec<_> = nodes.iter().map(|n| n.policy_version()).collect();
    assert!(agreed, "the nodes disagree: {versions:?}");
    let applied = policy_text(&gw1).contains("max_attempts = 6");
    for node in nodes {
        assert_eq!(
            policy_text(node).contains("max_attempts = 6"),
            applied,
            "{}",
            node.name
        );
    }
    eprintln!("master {master}; the change in flight applied in the end: {applied}");
}

#[test]
fn promote_hands_mastership_over_and_refuses_a_lagging_candidate() {
    let fakes = fakes(&["f1", "f2", "f3"]);
    let gw1 = Node::with_fake("gw1", "127.62.2.1", &fakes[0]);
    let gw2 = Node::with_fake("gw2", "127.62.2.2", &fakes[1]);
    let gw3 = Node::with_fake("gw3", "127.62.2.3", &fakes[2]);
    common::cluster::form(&[&gw1, &gw2, &gw3], SYNC);
    let err = gw1.fails(&["cluster", "promote"]);
    assert!(err.contains("master already"), "{err}");
    gw1.apply_policy("p2.toml", "[routing]\nmax_attempts = 4\n");
    assert!(all_in_sync(&gw1, 3, SYNC));
    let out = gw3.ok(&["cluster", "promote"]);
    assert!(out.contains("gw3 is now the master at epoch"), "{out}");
    for node in [&gw1, &gw2, &gw3] {
        assert!(
            eventually(SYNC, || node.master().is_some_and(|(m, _)| m == "gw3")),
            "{}: {:?}",
            node.name,
            try_status(node)
        );
    }
    one_master_per_epoch(&[&gw1, &gw2, &gw3]);
    assert!(
        policy_text(&gw3).contains("max_attempts = 4"),
        "nothing is lost"
    );
    // `sync --master` tells whom a node follows.
    let out = gw1.ok(&["cluster", "sync", "--master", &gw2.address()]);
    assert!(out.contains("following master gw3"), "{out}");
}

#[test]
fn two_backends_recover_with_promote_force_and_the_old_master_is_fenced() {
    let fakes = fakes(&["f1", "f2"]);
    let mut gw1 = Node::with_fake("gw1", "127.62.3.1", &fakes[0]);
    let gw2 = Node::with_fake("gw2", "127.62.3.2", &fakes[1]);
    common::cluster::form(&[&gw1, &gw2], SYNC);
    gw1.kill();
    // Changes need both backends of two.
    let p2 = gw2.file("p2.toml", "[routing]\nmax_attempts = 5\n");
    let err = gw2.fails(&["cluster", "policy", "apply", p2.to_str().unwrap()]);
    assert!(err.contains("1 of 2 backends are reachable"), "{err}");
    let out = gw2.ok(&["cluster", "promote", "--force"]);
    assert!(
        out.contains("gw2 is now the master") && out.contains("removed gw1"),
        "{out}"
    );
    let out = gw2.ok(&["cluster", "policy", "apply", p2.to_str().unwrap()]);
    assert!(out.contains("policy version 2"), "{out}");
    assert_eq!(rows(&gw2.status()).len(), 1, "{:?}", rows(&gw2.status()));

    // The old master returns: it is refused, says so, and never masters.
    gw1.gw.restart();
    assert!(
        eventually(SYNC, || try_status(&gw1).is_some_and(|s| s["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|r| r["name"] == "gw1"
                && r["state"]
                    .as_str()
                    .is_some_and(|s| s.contains("removed from the cluster")))))),
        "{:?}",
        try_status(&gw1)
    );
    let text = gw1.ok(&["cluster", "status"]);
    assert!(text.contains("join with a new identifier"), "{text}");
    for _ in 0..5 {
        assert_ne!(
            try_status(&gw1).map(|s| s["accepts_writes"].clone()),
            Some(true.into())
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let err = gw1.fails(&["cluster", "policy", "apply", p2.to_str().unwrap()]);
    assert!(err.contains("no longer in the cluster"), "{err}");
    assert_eq!(gw2.master().map(|m| m.0), Some("gw2".into()));
}
