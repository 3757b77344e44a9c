//! LFT attachment store and synchronisation with real nodes: three `mxgate
//! serve` processes on 127.73.0.x forming a cluster; gw1 injects (its
//! `addresses` hold the client's address) and its `lft_sync_to` names gw2.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::client::Client;
use common::cluster::{Node, all_in_sync};
use common::{Behavior, eventually, fakes, ip, policy};
use sha2::{Digest, Sha256};

const SYNC: Duration = Duration::from_secs(20);
const INJECTOR: &str = "127.73.0.100";

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len() * 4 / 3 + data.len() / 38 + 8);
    let mut line = 0;
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            s.push(if i <= chunk.len() {
                T[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
        line += 4;
        if line == 76 {
            s.push_str("\r\n");
            line = 0;
        }
    }
    s.trim_end().to_owned()
}

/// Deterministic pseudo-random bytes.
fn payload(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A message with a small text part and `attachment` as `name` (base64);
/// it ends without CRLF (the client adds the end of data).
fn message(tag: &str, name: &str, attachment: &[u8]) -> String {
    format!(
        "From: a@example.com\r\nTo: b@example.com\r\nMessage-ID: <{tag}@example.com>\r\nSubject: {tag}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n.leading dot line\r\n--XX\r\nContent-Type: application/pdf; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--XX--",
        b64(attachment)
    )
}

/// Dot-stuffs as a client must.
fn stuffed(text: &str) -> String {
    text.split("\r\n")
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn object(node: &Node, sha: &str) -> PathBuf {
    node.data("lft/objects").join(&sha[..2]).join(&sha[2..])
}

fn inject(gw1: &Node, body: &str) -> common::client::Reply {
    let mut c = Client::greeted_from(ip(INJECTOR), gw1.gw.smtp_addr());
    c.expect("EHLO gw1.example.com", "250");
    c.send_mail("a@example.com", &["b@example.com"], &stuffed(body))
}

/// `GET /lft/<sha>` on `node`'s GINA listener: (lower-cased head, body).
fn curl_get(node: &Node, sha: &str) -> (String, Vec<u8>) {
    let gina = node.gw.listener_addr("gina");
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let (out, killed) = common::run_bounded(
        Command::new("curl")
            .args(["-s", "-o"])
            .arg(&body)
            .arg("-D")
            .arg(&head)
            .arg(format!("http://{gina}/lft/{sha}")),
        Duration::from_secs(60),
    );
    assert!(!killed && out.status.success(), "curl GET /lft: {out:?}");
    let head = std::fs::read_to_string(&head).unwrap().to_ascii_lowercase();
    (head, std::fs::read(&body).unwrap_or_default())
}

fn lft_status(node: &Node) -> serde_json::Value {
    serde_json::from_str(&node.ok(&["lft", "status", "--json"])).expect("lft status json")
}

fn target<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["targets"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["target"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

/// `PUT /lft/SHA` on `node` with curl and another node's certificate: HTTP code.
fn curl_put(node: &Node, as_node: &Node, sha: &str, body: &Path) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            // A node's request names its control-plane protocol.
            "-H",
            "x-mxgate-protocol: 2",
        ])
        .arg("--cacert")
        .arg(as_node.data("cluster-ca.pem"))
        .arg("--cert")
        .arg(as_node.data("cluster-node.pem"))
        .arg("--key")
        .arg(as_node.data("cluster-node.key"))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("https://{}/lft/{sha}", node.address()))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn attachments_sync_to_lft_sync_to_only_with_retries_and_checks() {
    if !common::require("curl") {
        return;
    }
    let fakes = fakes(&["f1", "f2", "f3"]);
    let local = policy(
        "",
        &[format!(
            "[lft]\nthreshold = \"1MiB\"\n\n[members.gw1]\naddresses = [\"{INJECTOR}\"]\n"
        )],
    );
    let gw1 = Node::start("gw1", "127.73.0.1", &fakes[0].addr.to_string(), &local);
    let mut gw2 = Node::start("gw2", "127.73.0.2", &fakes[1].addr.to_string(), &local);
    let gw3 = Node::start("gw3", "127.73.0.3", &fakes[2].addr.to_string(), &local);
    gw1.ok(&["cluster", "create"]);
    let id = gw1.export_identifier("lft secret");
    for node in [&gw2, &gw3] {
        let out = node.join(&gw1, &id, Some("lft secret"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(all_in_sync(&gw1, 3, SYNC));
    gw1.ok(&["cluster", "inject", "set", "gw1", "--to", "gw2,gw3"]);
    gw1.ok(&["cluster", "lft", "set", "gw1", "--to", "gw2"]);
    let version = gw1.policy_version();
    assert!(eventually(SYNC, || [&gw2, &gw3]
        .iter()
        .all(|n| n.policy_version() == version)));

    // A 12 MiB attachment reaches the member unchanged, is stored on gw1
    // and synchronised to gw2 only.
    let big = payload(12 << 20, 1);
    let big_sha = sha(&big);
    let body = message("m1", "big.pdf", &big);
    let reply = inject(&gw1, &body);
    assert_eq!(reply.code, 250, "{reply}");
    let received: Vec<_> = fakes.iter().flat_map(|f| f.messages()).collect();
    assert_eq!(received.len(), 1);
    assert_eq!(
        sha(&received[0].data),
        sha(format!("{}\r\n", stuffed(&body)).as_bytes())
    );
    assert!(
        fakes[0].messages().is_empty(),
        "gw1 may only inject into gw2, gw3"
    );
    assert!(
        eventually(SYNC, || object(&gw2, &big_sha).is_file()),
        "gw2 never got the attachment:\n{}",
        gw1.gw.logs().join("\n")
    );
    assert_eq!(std::fs::read(object(&gw2, &big_sha)).unwrap(), big);
    assert_eq!(std::fs::read(object(&gw1, &big_sha)).unwrap(), big);
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(object(&gw2, &big_sha).with_extension("json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["file_name"], "big.pdf");
    assert_eq!(meta["content_type"], "application/pdf");
    assert_eq!(meta["source_member"], "gw1");
    assert_eq!(meta["message_id"], "m1@example.com");
    assert!(!object(&gw3, &big_sha).exists(), "gw3 is no sync target");
    // gw2 serves it over its GINA listener, byte-identical; gw3 has nothing.
    let (head, served) = curl_get(&gw2, &big_sha);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: application/pdf"), "{head}");
    assert!(head.contains("big.pdf"), "{head}");
    assert_eq!(sha(&served), big_sha, "GET /lft/<sha256> on gw2");
    let (head, _) = curl_get(&gw3, &big_sha);
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert!(eventually(
        SYNC,
        || target(&lft_status(&gw1), "gw2")["synced"] == 1
    ));
    let text = gw1.ok(&["lft", "status"]);
    assert!(text.contains("gw2"), "{text}");

    // A target that is down gets the attachment when it returns.
    gw2.gw.terminate();
    assert!(gw2.gw.wait_exit(Duration::from_secs(20)).is_some());
    let second = payload(2 << 20, 2);
    let second_sha = sha(&second);
    assert_eq!(
        inject(&gw1, &message("m2", "second.bin", &second)).code,
        250
    );
    assert!(eventually(SYNC, || {
        let s = lft_status(&gw1);
        target(&s, "gw2")["pending"] == 1 && !target(&s, "gw2")["oldest_pending"].is_null()
    }));
    assert!(gw1.gw.wait_log("LFT upload failed", SYNC).is_some());
    gw2.gw.restart();
    assert!(
        eventually(Duration::from_secs(90), || object(&gw2, &second_sha)
            .is_file()),
        "gw2 never got the attachment after its return:\n{}",
        gw1.gw.logs().join("\n")
    );
    assert_eq!(std::fs::read(object(&gw2, &second_sha)).unwrap(), second);
    assert!(eventually(
        SYNC,
        || target(&lft_status(&gw1), "gw2")["synced"] == 2
    ));

    // A message the member rejects is not stored.
    fakes[1].set_behavior(Behavior::FinalReply("554 5.7.1 no thanks".into()));
    fakes[2].set_behavior(Behavior::FinalReply("554 5.7.1 no thanks".into()));
    let third = payload(2 << 20, 3);
    assert_eq!(inject(&gw1, &message("m3", "third.bin", &third)).code, 554);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !object(&gw1, &sha(&third)).exists(),
        "a rejected message's attachment was stored"
    );

    // gw3 may not sync to gw2: refused, and logged.
    let file = gw3.file("upload.bin", "some content");
    let content_sha = sha(b"some content");
    assert_eq!(curl_put(&gw2, &gw3, &content_sha, &file), "403");
    assert!(
        gw2.gw
            .wait_log("may not synchronise LFT attachments", SYNC)
            .is_some()
    );
    assert!(!object(&gw2, &content_sha).exists());
    // gw1 may, but content that does not match its hash is rejected.
    let wrong = sha(b"other content");
    assert_eq!(curl_put(&gw2, &gw1, &wrong, &file), "400");
    assert!(
        gw2.gw
            .wait_log("content does not match its SHA-256", SYNC)
            .is_some()
    );
    assert!(!object(&gw2, &wrong).exists());
    // The right hash is stored; a second upload is idempotent.
    assert_eq!(curl_put(&gw2, &gw1, &content_sha, &file), "200");
    assert_eq!(curl_put(&gw2, &gw1, &content_sha, &file), "200");
    assert_eq!(
        std::fs::read(object(&gw2, &content_sha)).unwrap(),
        b"some content"
    );
}
