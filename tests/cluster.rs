//! The cluster control plane with real nodes: separate `mxgate serve`
//! processes on distinct 127.x addresses, talking mutual TLS.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::{Node, all_in_sync, rows};
use common::{Behavior, FakeMta, eventually, fakes, ip, order_of, policy};

const SYNC: Duration = Duration::from_secs(15);

fn order(node: &Node, client: &str) -> BTreeSet<String> {
    order_of(&node.gw.explain(ip(client))).into_iter().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn create_join_replicate_catch_up_delete_leave() {
    let fakes = fakes(&["f1", "f2", "f3"]);
    let gw1 = Node::with_fake("gw1", "127.61.0.1", &fakes[0]);
    let gw2 = Node::with_fake("gw2", "127.61.0.2", &fakes[1]);
    let mut gw3 = Node::with_fake("gw3", "127.61.0.3", &fakes[2]);

    let out = gw1.ok(&["cluster", "create"]);
    assert!(out.contains("gw1 is its master"), "{out}");
    let password = gw1.file("pw", "correct horse\n");
    let id = gw1.gw.dir.path().join("clusterid.txt");
    let out = gw1.ok(&[
        "cluster",
        "identifier",
        "export",
        "--out",
        id.to_str().unwrap(),
        "--password-file",
        password.to_str().unwrap(),
    ]);
    assert!(out.contains("encrypted with the password"), "{out}");
    let text = std::fs::read_to_string(&id).unwrap();
    assert!(text.contains("BEGIN ENCRYPTED PRIVATE KEY"));
    assert!(!text.contains("BEGIN PRIVATE KEY"));
    // Key material is readable by the owner only.
    for path in [
        id.clone(),
        gw1.data("cluster.redb"),
        gw1.data("cluster-node.key"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }

    for node in [&gw2, &gw3] {
        let out = node.join(&gw1, &id, Some("correct horse"));
        assert!(
            out.status.success(),
            "join {}: {}",
            node.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        all_in_sync(&gw1, 3, SYNC),
        "not in sync: {:?}",
        rows(&gw1.status())
    );
    let status = gw1.status();
    assert_eq!(status["master"], "gw1");
    assert_eq!(status["epoch"], 1);
    let cids: Vec<_> = rows(&status).iter().map(|r| (r.0.clone(), r.1)).collect();
    assert_eq!(
        cids,
        [("gw1".into(), 1), ("gw2".into(), 2), ("gw3".into(), 3)]
    );
    for m in status["members"].as_array().unwrap() {
        for key in [
            "device_id",
            "uuid",
            "address",
            "role",
            "version",
            "uptime_s",
            "frontend_of",
            "backend_of",
        ] {
            assert!(m.get(key).is_some(), "{key} missing in {m}");
        }
    }
    // A backend shows the master's view too.
    assert!(all_in_sync(&gw2, 3, SYNC));
    let text = gw2.ok(&["cluster", "status"]);
    assert!(
        text.contains("NAME(CID)")
            && text.contains("gw3(3)")
            && text.contains("entries in remote database"),
        "{text}"
    );

    // Every node routes over the three joined nodes.
    for node in [&gw1, &gw2, &gw3] {
        assert!(
            eventually(SYNC, || order(node, "192.0.2.7")
                == set(&["gw1", "gw2", "gw3"])),
            "{}: {:?}",
            node.name,
            order(node, "192.0.2.7")
        );
    }

    // A policy change on the master changes routing on every node.
    let out = gw1.apply_policy(
        "p2.toml",
        "[routing]\nmax_attempts = 2\n\n[members.gw1]\ningress = false\n\n[members.gw3]\ningress = false\n",
    );
    assert!(out.contains("policy version 2"), "{out}");
    for node in [&gw1, &gw2, &gw3] {
        assert!(
            eventually(SYNC, || order(node, "192.0.2.7") == set(&["gw2"])),
            "{}: policy 2 not applied: {:?}",
            node.name,
            order(node, "192.0.2.7")
        );
    }

    // A clustered node ignores its local cluster.toml, also on SIGHUP.
    gw2.gw.reload_policy(&policy("", &[]));
    assert_eq!(order(&gw2, "192.0.2.7"), set(&["gw2"]));

    // A node that is down during two changes catches up when it returns.
    gw3.stop();
    let p3 = gw1.file("p3.toml", "[members.gw2]\ningress = false\n");
    gw1.ok(&["cluster", "policy", "apply", p3.to_str().unwrap()]);
    let out = gw1.ok(&["cluster", "inject", "set", "gw1", "--to", "gw2,gw3"]);
    assert!(out.contains("inject_to = [gw2, gw3]"), "{out}");
    assert_eq!(gw1.policy_version(), Some(4));
    gw3.gw.restart();
    assert!(
        eventually(SYNC, || gw3.policy_version() == Some(4)),
        "gw3 did not catch up: {:?}",
        gw3.policy_version()
    );
    assert!(eventually(SYNC, || order(&gw3, "192.0.2.7") == set(&["gw1", "gw3"])));
    assert!(all_in_sync(&gw1, 3, SYNC), "{:?}", rows(&gw1.status()));
    let shown = gw3.ok(&["cluster", "policy", "show"]);
    assert!(shown.contains("inject_to = [\"gw2\", \"gw3\"]"), "{shown}");

    // Replication positions: every backend at the master's head.
    let repl: serde_json::Value =
        serde_json::from_str(&gw1.ok(&["cluster", "replication", "--json"])).unwrap();
    let head = repl["head"]["seq"].as_u64().unwrap();
    let backends = repl["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 3);
    assert!(
        backends
            .iter()
            .all(|b| b["last_csn"]["seq"].as_u64() == Some(head)),
        "{repl}"
    );
    assert!(
        backends.iter().all(|b| b["last_csn"]["origin"] == "gw1"),
        "{repl}"
    );

    // Comment and location reach the members table.
    gw1.ok(&[
        "cluster",
        "member",
        "set",
        "gw2",
        "--comment",
        "rack B",
        "--location",
        "Zurich",
    ]);
    assert!(eventually(SYNC, || {
        gw2.status()["members"][1]["location"] == "Zurich"
    }));

    // A change made on a backend is forwarded to the master, and reported
    // done once a majority holds it.
    let p4 = gw2.file("p4.toml", &shown);
    let out = gw2.ok(&["cluster", "policy", "apply", p4.to_str().unwrap()]);
    assert!(out.contains("policy version 5"), "{out}");
    assert_eq!(gw1.policy_version(), Some(5));

    // Delete gw3: its certificate is refused at once, and it knows it.
    let cert = std::fs::read_to_string(gw3.data("cluster-node.pem")).unwrap();
    let key = std::fs::read_to_string(gw3.data("cluster-node.key")).unwrap();
    let ca = gw3.data("cluster-ca.pem");
    let (cert_copy, key_copy) = (gw1.file("gw3.pem", &cert), gw1.file("gw3.key", &key));
    let before = curl_status(&gw1, &cert_copy, &key_copy, &ca);
    assert_eq!(before.0, "200", "{before:?}");
    let out = gw1.ok(&["cluster", "delete", "3"]);
    assert!(out.contains("gw3(3) deleted"), "{out}");
    // (The engine's membership change that follows the deletion is no
    // change of the replicated state: the digest covers the state.)
    let state = gw1.status()["log"]["sha256"].clone();
    // Refused at the TLS handshake with the certificate_revoked alert: a
    // deleted member cannot even hold a connection open.
    let after = curl_status(&gw1, &cert_copy, &key_copy, &ca);
    assert_eq!(after.0, "000", "{after:?}");
    assert!(after.1.contains("revoked"), "{after:?}");
    assert_eq!(
        gw1.status()["log"]["sha256"],
        state,
        "a refused request changed the replicated state"
    );
    assert!(rows(&gw1.status()).iter().all(|r| r.0 != "gw3"));
    assert!(
        eventually(SYNC, || rows(&gw3.status())
            .iter()
            .any(|r| r.0 == "gw3" && r.2.contains("deleted"))),
        "{:?}",
        rows(&gw3.status())
    );
    assert!(eventually(SYNC, || order(&gw2, "192.0.2.7") == set(&["gw1"])));

    // gw2 leaves: the master drops it, gw2 keeps its database.
    let out = gw2.ok(&["cluster", "leave"]);
    assert!(out.contains("gw2 left the cluster"), "{out}");
    let names: Vec<_> = rows(&gw1.status()).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["gw1"]);
    assert_eq!(gw2.policy_version(), Some(5));
    assert!(
        rows(&gw2.status())
            .iter()
            .any(|r| r.0 == "gw2" && r.2.contains("left")),
        "{:?}",
        rows(&gw2.status())
    );
}

/// `GET /status` on `node`'s control plane with a client certificate: (HTTP code, body).
fn curl_status(
    node: &Node,
    cert: &std::path::Path,
    key: &std::path::Path,
    ca: &std::path::Path,
) -> (String, String) {
    common::cluster::curl_mtls(&format!("https://{}/status", node.address()), cert, key, ca)
}

#[test]
fn parallel_joins_get_distinct_numbers() {
    let fake = FakeMta::start("f", Behavior::Normal);
    let gw1 = Node::with_fake("gw1", "127.63.0.1", &fake);
    let gw2 = Node::with_fake("gw2", "127.63.0.2", &fake);
    let gw3 = Node::with_fake("gw3", "127.63.0.3", &fake);
    gw1.ok(&["cluster", "create"]);
    let (id, _) = gw1.export_unencrypted("id.txt");
    let text = std::fs::read_to_string(&id).unwrap();
    assert!(text.contains("BEGIN PRIVATE KEY") && !text.contains("ENCRYPTED"));
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| gw2.join(&gw1, &id, None));
        let b = s.spawn(|| gw3.join(&gw1, &id, None));
        (a.join().unwrap(), b.join().unwrap())
    });
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(all_in_sync(&gw1, 3, SYNC), "{:?}", rows(&gw1.status()));
    let cids: BTreeSet<u64> = rows(&gw1.status()).iter().map(|r| r.1).collect();
    assert_eq!(cids, [1, 2, 3].into_iter().collect());
}

#[test]
fn disaster_recovery_when_the_cluster_is_lost() {
    let fake = FakeMta::start("f", Behavior::Normal);
    let gw1 = Node::with_fake("gw1", "127.64.0.1", &fake);
    let gw2 = Node::with_fake("gw2", "127.64.0.2", &fake);
    let gw3 = Node::with_fake("gw3", "127.64.0.3", &fake);
    gw1.ok(&["cluster", "create"]);
    let (id, out) = gw1.export_unencrypted("id.txt");
    assert!(out.contains("NOT encrypted"), "{out}");
    for node in [&gw2, &gw3] {
        assert!(node.join(&gw1, &id, None).status.success());
    }
    gw1.apply_policy("p2.toml", "[members.gw1]\ningress = false\n");
    assert!(eventually(SYNC, || gw2.policy_version() == Some(2)
        && gw3.policy_version() == Some(2)));

    // Two of three backends are lost for good.
    let (mut gw1, mut gw3) = (gw1, gw3);
    gw1.stop();
    gw3.stop();
    // The survivor keeps routing with the last policy.
    assert_eq!(order(&gw2, "192.0.2.9"), set(&["gw2", "gw3"]));
    let err = gw2.fails(&["cluster", "leave"]);
    assert!(err.contains("--force"), "{err}");
    let out = gw2.ok(&["cluster", "leave", "--force"]);
    assert!(out.contains("WITHOUT telling"), "{out}");
    // A new cluster around gw2 keeps the replicated policy.
    let out = gw2.ok(&["cluster", "create"]);
    assert!(out.contains("replicated policy version 2"), "{out}");
    assert!(
        gw2.ok(&["cluster", "policy", "show"])
            .contains("ingress = false")
    );
    let (id2, _) = gw2.export_unencrypted("id2.txt");
    gw3.gw.restart();
    gw3.ok(&["cluster", "leave", "--force"]);
    let out = gw3.join(&gw2, &id2, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all_in_sync(&gw2, 2, SYNC), "{:?}", rows(&gw2.status()));
    assert!(eventually(SYNC, || order(&gw3, "192.0.2.9") == set(&["gw2", "gw3"])));
}

/// After 500 entries the engine snapshots its state and purges the log
/// before it; a backend that joins later gets the snapshot (in chunks over
/// `POST /raft/snapshot`) and holds the same state.
#[test]
fn a_backend_joining_after_compaction_gets_the_snapshot() {
    let fake = FakeMta::start("f", Behavior::Normal);
    let gw1 = Node::with_fake("gw1", "127.64.1.1", &fake);
    let gw2 = Node::with_fake("gw2", "127.64.1.2", &fake);
    gw1.ok(&["cluster", "create"]);
    let (id, _) = gw1.export_unencrypted("id.txt");
    let file = gw1.file("p.toml", "");
    for i in 0..520 {
        std::fs::write(
            &file,
            format!("# change {i}\n[routing]\nmax_attempts = 3\n"),
        )
        .unwrap();
        gw1.ok(&["cluster", "policy", "apply", file.to_str().unwrap()]);
    }
    assert!(
        gw1.gw
            .wait_log("update_snapshot", Duration::from_secs(10))
            .is_some(),
        "gw1 took no snapshot"
    );
    assert!(gw2.join(&gw1, &id, None).status.success());
    assert!(all_in_sync(&gw1, 2, SYNC), "{:?}", rows(&gw1.status()));
    assert!(
        gw2.gw
            .wait_log("install_full_snapshot", Duration::from_secs(10))
            .is_some(),
        "gw2 was not sent the snapshot"
    );
    assert!(eventually(SYNC, || gw2.status()["log"]["sha256"]
        == gw1.status()["log"]["sha256"]));
    assert_eq!(gw2.policy_version(), Some(521));
}
