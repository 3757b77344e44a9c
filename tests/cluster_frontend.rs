//! Frontends with real nodes (separate `mxgate serve` processes on 127.x),
//! real Postfix `smtp-sink` members and real `swaks` clients: a frontend
//! routes mail with the cluster's policy, keeps no database file, follows a
//! policy change within seconds, survives the loss of one of two backends
//! (`add-backend`), refills itself from a backend after a restart, starts
//! with nothing when no backend answers, and is empty after `detach`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::cluster::Node;
use common::peers::{self, SmtpSink};
use common::{eventually, member_row, policy, require};

/// SPEC section 8: a change reaches every reachable node within 10 s.
const CHANGE: Duration = Duration::from_secs(10);
/// SPEC section 8: a node back from an outage catches up within 15 s.
const CATCH_UP: Duration = Duration::from_secs(15);

/// One message through `server` with swaks, tagged `tag` in its subject.
fn swaks(server: SocketAddr, tag: &str) -> (String, bool) {
    peers::swaks(server, &["--header", &format!("Subject: {tag}")])
}

/// How many messages tagged `tag` the sinks hold.
fn delivered(sinks: &[&SmtpSink], tag: &str) -> usize {
    sinks
        .iter()
        .flat_map(|s| s.messages())
        .filter(|m| m.contains(&format!("Subject: {tag}")))
        .count()
}

fn policy_version(node: &Node) -> Option<u64> {
    node.policy_version()
}

fn names(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn frontend_follows_its_backends_in_memory_only_and_detaches() {
    if !require("swaks") || !require("smtp-sink") {
        return;
    }
    let sink1 = SmtpSink::start("127.75.0.11");
    let sink2 = SmtpSink::start("127.75.0.12");
    let sinks = [&sink1, &sink2];
    let base = policy("", &[]);
    let mut gw1 = Node::start("gw1", "127.75.0.1", &sink1.addr.to_string(), &base);
    let mut gw2 = Node::start("gw2", "127.75.0.2", &sink2.addr.to_string(), &base);
    let mut fe = Node::start_frontend("fe1", "127.75.0.3", &base);
    gw1.ok(&["cluster", "create"]);
    let id = gw1.export_identifier("pw");
    let out = gw2.join(&gw1, &id, Some("pw"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Join as a frontend: the state lives in memory, no database file.
    let id_text = id.to_str().expect("path").to_owned();
    let pw = fe.file("password", "pw\n");
    let out = fe.ok(&[
        "cluster",
        "join",
        "--identifier",
        &id_text,
        "--master",
        &gw1.address(),
        "--role",
        "frontend",
        "--password-file",
        pw.to_str().expect("path"),
    ]);
    assert!(out.contains("as a frontend"), "{out}");
    assert!(
        !fe.data("cluster.redb").exists(),
        "a frontend keeps no cluster database on disk"
    );
    assert!(fe.data("cluster-frontend.json").exists());
    assert_eq!(policy_version(&fe), Some(1));
    let status = fe.gw.status();
    assert_eq!(status["mode"], "frontend", "{status:#}");
    assert_eq!(status["cluster"]["policy_version"], 1, "{status:#}");

    // The master shows it as F(1), BACKEND-OF on gw1; a frontend is no
    // routing member.
    assert!(
        eventually(CHANGE, || {
            let s = gw1.status();
            member_row(&s, "fe1")["role"] == "frontend"
                && member_row(&s, "fe1")["state"] == "A"
                && names(&member_row(&s, "gw1")["backend_of"]) == ["fe1"]
        }),
        "{:#}",
        gw1.status()
    );
    let text = gw1.ok(&["cluster", "status"]);
    assert!(text.contains("fe1(F(1))"), "{text}");

    // add-backend gw2: F(1,2), recorded by the master, replicated to gw2.
    let out = fe.ok(&["cluster", "add-backend", &gw2.address()]);
    assert!(out.contains("F(1,2)"), "{out}");
    assert!(
        eventually(CHANGE, || {
            let s = gw2.status();
            names(&member_row(&s, "fe1")["frontend_of"]) == ["gw1", "gw2"]
                && names(&member_row(&s, "gw2")["backend_of"]) == ["fe1"]
        }),
        "{:#}",
        gw2.status()
    );
    let text = gw1.ok(&["cluster", "status"]);
    assert!(text.contains("fe1(F(1,2))"), "{text}");
    let err = fe.fails(&["cluster", "add-backend", &gw2.address()]);
    assert!(err.contains("already"), "{err}");

    // Mail through the frontend reaches the cluster's members.
    let (out, ok) = swaks(fe.gw.smtp_addr(), "via-frontend-1");
    assert!(ok, "swaks through the frontend failed:\n{out}");
    assert!(eventually(CHANGE, || delivered(&sinks, "via-frontend-1") == 1));

    // A policy change on the master reaches the frontend within seconds.
    gw1.apply_policy("p2.toml", &format!("{base}\n# version two\n"));
    assert!(
        eventually(CHANGE, || policy_version(&fe) == Some(2)),
        "frontend holds policy {:?}",
        policy_version(&fe)
    );

    // Lose the master (one of its two backends): the frontend keeps routing,
    // moves to gw2, and follows gw2 once it is promoted.
    gw1.stop();
    let (out, ok) = swaks(fe.gw.smtp_addr(), "via-frontend-2");
    assert!(ok, "swaks after losing gw1 failed:\n{out}");
    assert!(eventually(CHANGE, || delivered(&sinks, "via-frontend-2") == 1));
    let out = gw2.ok(&["cluster", "promote", "--force"]);
    assert!(out.contains("gw2 is now the master at epoch 2"), "{out}");
    gw2.apply_policy("p3.toml", &format!("{base}\n# version three\n"));
    assert!(
        eventually(CHANGE, || policy_version(&fe) == Some(3)),
        "frontend holds policy {:?} after gw1 was lost",
        policy_version(&fe)
    );

    // A restart refills the frontend from a backend that answers.
    fe.stop();
    fe.gw.restart();
    assert!(
        eventually(CHANGE, || policy_version(&fe) == Some(3)),
        "restarted frontend holds policy {:?}",
        policy_version(&fe)
    );
    assert!(!fe.data("cluster.redb").exists());

    // No backend answers: the restarted frontend starts with nothing, says
    // so, and routes nothing (the client is told to come back later).
    gw2.stop();
    fe.stop();
    fe.gw.restart();
    assert!(
        fe.gw
            .wait_log("started with no cluster state", Duration::from_secs(5))
            .is_some(),
        "{}",
        fe.gw.logs().join("\n")
    );
    assert_eq!(policy_version(&fe), Some(0));
    let (out, ok) = swaks(fe.gw.smtp_addr(), "via-frontend-3");
    assert!(!ok, "a frontend with no state accepted mail:\n{out}");
    assert!(
        out.contains("<** 4"),
        "expected a temporary refusal:\n{out}"
    );

    // The backend returns: the frontend fills itself without being told.
    gw2.gw.restart();
    assert!(
        eventually(CATCH_UP, || policy_version(&fe) == Some(3)),
        "frontend holds policy {:?} after gw2 returned",
        policy_version(&fe)
    );
    let (out, ok) = swaks(fe.gw.smtp_addr(), "via-frontend-4");
    assert!(ok, "swaks after the frontend refilled failed:\n{out}");

    // detach: the master is told, the frontend holds nothing, in memory or
    // on disk, and stays empty across a restart.
    let out = fe.ok(&["cluster", "detach"]);
    assert!(out.contains("the master was told"), "{out}");
    assert!(
        eventually(CHANGE, || gw2.status()["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["name"] != "fe1"))),
        "{:#}",
        gw2.status()
    );
    for file in ["cluster-frontend.json", "cluster.redb", "cluster-node.key"] {
        assert!(!fe.data(file).exists(), "{file} left after detach");
    }
    let err = fe.fails(&["cluster", "status"]);
    assert!(err.contains("not in a cluster"), "{err}");
    fe.stop();
    fe.gw.restart();
    let err = fe.fails(&["cluster", "status"]);
    assert!(err.contains("not in a cluster"), "{err}");
    assert!(!fe.data("cluster-frontend.json").exists());
}
