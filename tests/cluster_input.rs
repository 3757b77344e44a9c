//! What a peer or a file puts into the control plane is checked and shown
//! safely (issue 15): a join whose node name (or any field) `check-config`
//! would refuse is refused with 400 and changes nothing, and the key of an
//! exported identifier is PBES2 that `openssl pkcs8` reads.
//!
//! The crafted joins are sent by a real enrolment identity: the test reads
//! the exported `clusterid.txt` with the library (the password-protected
//! key decrypted as `cluster join` does) and posts a join request built
//! like the one `cluster join` sends, with one field changed.

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Node, rows};
use common::{Behavior, FakeMta, require};
use mxgate::cluster::join::JoinRequest;
use mxgate::cluster::transport::{self, Sender};
use mxgate::cluster::{Role, identifier, identity};

/// The names of issue 15 that were accepted with 200.
const BAD_NAMES: [&str; 4] = ["", "x y", "../../../../tmp/adv-pwn", "bk\"} 9\nFAKE_LINE"];

/// What must not change: the members (name, number) and the log in brief
/// (head and SHA-256 of every entry).
fn state(master: &Node) -> (Vec<(String, u64)>, serde_json::Value) {
    let status = master.status();
    let members = rows(&status).into_iter().map(|r| (r.0, r.1)).collect();
    (members, status["log"].clone())
}

/// An enrolment client of the identifier at `id` (password `password`).
struct Enrolment {
    config: std::sync::Arc<rustls::ClientConfig>,
    master: String,
}

impl Enrolment {
    fn read(id: &std::path::Path, password: &str) -> Enrolment {
        let text = std::fs::read_to_string(id).expect("identifier");
        let id = identifier::parse(&text).expect("parse identifier");
        let key = id.key(Some(password)).expect("decrypt the enrolment key");
        Enrolment {
            config: mxgate::tls::mutual::client_config(&id.ca_cert_pem, &id.cert_pem, &key)
                .expect("client config"),
            master: id.master,
        }
    }

    /// `POST /join` with `request` from `bind`: (status, error text).
    fn join(&self, bind: &str, request: &JoinRequest) -> (u16, String) {
        let sender = Sender {
            epoch: 0,
            node: "crafted".into(),
            uptime: 0,
            master: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let bind: IpAddr = bind.parse().expect("bind address");
        let answer = runtime
            .block_on(transport::call(
                self.config.clone(),
                bind,
                &self.master,
                "POST",
                "/join",
                &sender,
                Some(request),
                Duration::from_secs(20),
            ))
            .expect("the master answers");
        (
            answer.status,
            transport::error_text(&answer.body, answer.status),
        )
    }
}

/// The join request `cluster join` would send for a node called `name` at `address`.
fn request(name: &str, address: &str) -> JoinRequest {
    let (_, csr_pem) = identity::new_key_and_csr("crafted").expect("csr");
    JoinRequest {
        name: name.into(),
        role: Role::Backend,
        csr_pem,
        address: address.into(),
        smtp_upstream: Some("127.0.0.1:10025".into()),
        gina_upstream: None,
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

#[test]
fn joins_check_config_would_refuse_get_400_and_change_nothing() {
    let fake = FakeMta::start("f", Behavior::Normal);
    let gw1 = Node::with_fake("gw1", "127.63.0.1", &fake);
    gw1.ok(&["cluster", "create"]);
    let id = gw1.export_identifier("s3cret");
    let enrolment = Enrolment::read(&id, "s3cret");
    let joiner = "127.63.0.2";
    let address = format!("{joiner}:7025");
    let before = state(&gw1);

    for name in BAD_NAMES {
        let (status, error) = enrolment.join(joiner, &request(name, &address));
        assert_eq!(status, 400, "{name:?} was not refused with 400: {error}");
        assert!(
            error.contains("field name ([node] name)") && error.contains("is not a valid name"),
            "{name:?}: {error}"
        );
        // The name is quoted escaped: the refusal is one line.
        assert!(!error.contains('\n'), "{error:?}");
        assert_eq!(state(&gw1), before, "{name:?} changed the cluster");
    }
    // Any other field breaking its check-config rule is refused the same way.
    for (field, mut bad) in [
        ("address", request("gw2", "0.0.0.0:7025")),
        ("address", request("gw2", "gw2.example.com:7025")),
        ("smtp_upstream", request("gw2", &address)),
        ("version", request("gw2", &address)),
    ] {
        match field {
            "smtp_upstream" => bad.smtp_upstream = Some("bk 9:25".into()),
            "version" => bad.version = "0.1.0\nFAKE_LINE".into(),
            _ => {}
        }
        let (status, error) = enrolment.join(joiner, &bad);
        assert_eq!(status, 400, "{field}: {error}");
        assert!(
            error.contains(&format!("field {field} (")),
            "{field}: {error}"
        );
        assert_eq!(state(&gw1), before, "a bad {field} changed the cluster");
    }
    // The refusals were logged without a forged line.
    assert!(
        gw1.gw.wait_log("adv-pwn", Duration::from_secs(5)).is_some(),
        "the refusal of the path name was not logged"
    );
    let logs = gw1.gw.logs();
    assert!(
        !logs.iter().any(|l| l.trim_start().starts_with("FAKE_LINE")),
        "a forged log line: {logs:?}"
    );

    // The same request with a valid name is accepted: the refusals were the
    // fields', not the crafted request's.
    let (status, error) = enrolment.join(joiner, &request("gw2", &address));
    assert_eq!(status, 200, "{error}");
    let (members, _) = state(&gw1);
    assert_eq!(
        members,
        [("gw1".to_owned(), 1), ("gw2".to_owned(), 2)],
        "{members:?}"
    );
}

#[test]
fn identifier_keys_are_pbes2_that_openssl_reads() {
    if !require("openssl") {
        return;
    }
    let fake = FakeMta::start("f", Behavior::Normal);
    let gw1 = Node::with_fake("gw1", "127.63.1.1", &fake);
    let gw2 = Node::with_fake("gw2", "127.63.1.2", &fake);
    gw1.ok(&["cluster", "create"]);
    let started = Instant::now();
    let id = gw1.export_identifier("s3cret pass");
    eprintln!("identifier export took {:?}", started.elapsed());

    let text = std::fs::read_to_string(&id).expect("identifier");
    let begin = text
        .find("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        .expect("an encrypted key");
    let end = "-----END ENCRYPTED PRIVATE KEY-----";
    let stop = text[begin..].find(end).expect("its end") + begin + end.len();
    let key = gw1.file("enrolment.key", &format!("{}\n", &text[begin..stop]));
    let password = gw1.file("openssl-pw", "s3cret pass\n");
    let wrong = gw1.file("openssl-wrong", "s3cret\n");

    let openssl = |password: &std::path::Path| {
        Command::new("openssl")
            .arg("pkcs8")
            .arg("-in")
            .arg(&key)
            .arg("-passin")
            .arg(format!("file:{}", password.display()))
            .output()
            .expect("run openssl")
    };
    let out = openssl(&password);
    assert!(
        out.status.success(),
        "openssl pkcs8 refused the key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = String::from_utf8_lossy(&out.stdout);
    assert!(plain.contains("-----BEGIN PRIVATE KEY-----"), "{plain}");
    assert!(!openssl(&wrong).status.success(), "a wrong password worked");

    // The KDF's parameters as openssl sees them.
    let der = Command::new("openssl")
        .args(["asn1parse", "-in"])
        .arg(&key)
        .output()
        .expect("run openssl asn1parse");
    let asn1 = String::from_utf8_lossy(&der.stdout);
    for needle in ["PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc", "927C0"] {
        assert!(asn1.contains(needle), "{needle} not in\n{asn1}");
    }

    // And the node that joins with it decrypts it the same way.
    let started = Instant::now();
    let out = gw2.join(&gw1, &id, Some("s3cret pass"));
    eprintln!("cluster join took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "join failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
