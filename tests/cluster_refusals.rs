//! The control plane refuses, with a clear error and no database change:
//! a wrong password, an identifier from before `rotate`, a join from an
//! address outside `protect --allow-ip`, clients without a certificate or
//! without TLS, and the enrolment identity anywhere but join.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::cluster::{Node, rows};
use common::{Behavior, FakeMta, require};

/// The master's number of change-log entries.
fn entries(master: &Node) -> u64 {
    rows(&master.status())[0].3
}

fn refused(node: &Node, master: &Node, id: &std::path::Path, password: Option<&str>, want: &str) {
    let before = entries(master);
    let out = node.join(master, id, password);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "join should be refused");
    assert!(err.contains(want), "{want:?} not in {err:?}");
    assert_eq!(entries(master), before, "the master's database changed");
    let err = node.fails(&["cluster", "status"]);
    assert!(err.contains("not in a cluster"), "{err}");
}

#[test]
fn refusals_change_nothing() {
    if !require("curl") {
        return;
    }
    let fake = FakeMta::start("f", Behavior::Normal);
    let gw1 = Node::with_fake("gw1", "127.62.0.1", &fake);
    let gw2 = Node::with_fake("gw2", "127.62.0.2", &fake);

    // Not in a cluster yet: commands say what to do.
    let err = gw1.fails(&["cluster", "status"]);
    assert!(err.contains("cluster create"), "{err}");
    gw1.ok(&["cluster", "create"]);
    let err = gw1.fails(&["cluster", "create"]);
    assert!(err.contains("already in cluster"), "{err}");

    let pw = gw1.file("pw", "s3cret\n");
    let export = |name: &str| {
        let out = gw1.gw.dir.path().join(name);
        gw1.ok(&[
            "cluster",
            "identifier",
            "export",
            "--out",
            out.to_str().unwrap(),
            "--password-file",
            pw.to_str().unwrap(),
        ]);
        out
    };

    // Without a password or explicit consent, no identifier (no terminal to ask on).
    if require("setsid") {
        let out = Command::new("setsid")
            .arg(env!("CARGO_BIN_EXE_mxgate"))
            .args([
                "cluster",
                "identifier",
                "export",
                "--out",
                "/nonexistent/x",
                "-c",
            ])
            .arg(gw1.gw.config_path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--password-file"), "{err}");
    }

    let old = export("old.txt");
    // Wrong password: refused locally, says "password".
    refused(&gw2, &gw1, &old, Some("wrong"), "password");

    // After rotate, the old identifier is refused by the master.
    let out = gw1.ok(&["cluster", "identifier", "rotate"]);
    assert!(out.contains("generation is now 2"), "{out}");
    refused(&gw2, &gw1, &old, Some("s3cret"), "rotate");

    // Protected: only from listed addresses, for identifiers exported before too.
    let new = export("new.txt");
    gw1.ok(&[
        "cluster",
        "identifier",
        "protect",
        "--allow-ip",
        "127.62.0.99",
    ]);
    refused(&gw2, &gw1, &new, Some("s3cret"), "not allowed");

    // Clients without a certificate or without TLS never reach a route.
    let before = entries(&gw1);
    let url = format!("https://{}/status", gw1.address());
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10", &url])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "curl without a certificate got {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        gw1.gw
            .wait_log("TLS handshake failed", Duration::from_secs(5))
            .is_some()
    );
    let handshakes = gw1
        .gw
        .logs()
        .iter()
        .filter(|l| l.contains("TLS handshake failed"))
        .count();
    let mut plain = TcpStream::connect(gw1.address()).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "plain HTTP answered"
    );
    // Refused before any route; its log line may be folded into the next
    // one (refusals are logged at most once per 10 s: nobody can flood the
    // log by connecting), so only the count of lines is bounded.
    let lines = gw1.gw.logs();
    let now = lines
        .iter()
        .filter(|l| l.contains("TLS handshake failed"))
        .count();
    assert!(now <= handshakes + 1, "{lines:?}");
    assert_eq!(entries(&gw1), before);

    // The enrolment identity may only join.
    let (open, _) = gw1.export_unencrypted("open.txt");
    let text = std::fs::read_to_string(&open).unwrap();
    let blocks: Vec<&str> = text.split_inclusive("-----\n").collect();
    let pem = |label: &str, nth: usize| -> String {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let start = text.match_indices(&begin).nth(nth).unwrap().0;
        let stop = text[start..].find(&end).unwrap() + start + end.len();
        format!("{}\n", &text[start..stop])
    };
    assert!(!blocks.is_empty());
    let cert = gw1.file("enrol.pem", &pem("CERTIFICATE", 1));
    let key = gw1.file("enrol.key", &pem("PRIVATE KEY", 0));
    let ca = gw1.file("ca.pem", &pem("CERTIFICATE", 0));
    let before = entries(&gw1);
    let (code, body) = common::cluster::curl_mtls(&url, &cert, &key, &ca);
    assert!(
        code == "403" && body.contains("may only join"),
        "{code} {body}"
    );
    assert_eq!(entries(&gw1), before);

    // Lifting the protection lets the same identifier join.
    gw1.ok(&["cluster", "identifier", "protect", "--clear"]);
    let out = gw2.join(&gw1, &new, Some("s3cret"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("CID 2"));
    // A second join of the same node is refused.
    let err = gw2.fails(&[
        "cluster",
        "join",
        "--identifier",
        new.to_str().unwrap(),
        "--master",
        &gw1.address(),
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(err.contains("already in cluster"), "{err}");
    // An invalid policy is refused with its errors and changes nothing.
    let bad = gw1.file("bad.toml", "[routing]\nmax_attempts = 0\n");
    let before = entries(&gw1);
    let err = gw1.fails(&["cluster", "policy", "apply", bad.to_str().unwrap()]);
    assert!(
        err.contains("bad.toml:2: routing.max_attempts") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(entries(&gw1), before);
    let err = gw1.fails(&["cluster", "inject", "set", "gw1", "--to", "nobody"]);
    assert!(err.contains("\"nobody\" is not a member"), "{err}");
}
