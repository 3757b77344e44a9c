//! XCLIENT `NAME` is the client's forward-confirmed reverse DNS name (SPEC
//! 4.3), checked end to end: a real dnsmasq serves the test zones on
//! 127.85.0.53, and a real Postfix member with `smtpd_client_restrictions =
//! reject_unknown_client_hostname` (and `unknown_client_reject_code = 550`,
//! to tell a final "unknown" from a temporary one) concludes what it would
//! for a direct connection:
//!
//! - 127.85.0.1 has a PTR whose name resolves back to it: accepted, and
//!   Postfix's `Received:` header names it;
//! - 127.85.0.2 has no PTR, 127.85.0.3 a PTR whose name resolves elsewhere:
//!   `550 5.7.25 ... cannot find your hostname`;
//! - name servers that do not answer: `[TEMPUNAVAIL]` once
//!   `client_lookup_timeout` has passed, so `450 4.7.25`.

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::dnsmasq::Dnsmasq;
use common::logs::{EndLines, session_end};
use common::peers::{PostfixInstance, SmtpSink};
use common::{Client, Mxgate, ip, listener, member, policy, require, require_root};

const GOOD: &str = "127.85.0.1";
const NO_PTR: &str = "127.85.0.2";
const LIAR: &str = "127.85.0.3";
const SILENT_DNS_CLIENT: &str = "127.85.0.4";

fn tools() -> bool {
    require_root("a Postfix instance")
        && require("postfix")
        && require("smtp-sink")
        && require("dnsmasq")
}

/// The test zones: `good.client.test` both ways, `liar.client.test` pointing
/// elsewhere; everything else under them NXDOMAIN (`--local`).
fn zones() -> Dnsmasq {
    let records: Vec<String> = [
        "--local=/85.127.in-addr.arpa/",
        "--local=/client.test/",
        "--host-record=good.client.test,127.85.0.1",
        "--ptr-record=3.0.85.127.in-addr.arpa,liar.client.test",
        "--host-record=liar.client.test,127.85.0.99",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    Dnsmasq::start("127.85.0.53", &records)
}

/// A Postfix member that refuses clients without a confirmed host name,
/// relaying to `sink`. Waits (bounded) until the restriction is in force.
fn strict_postfix(sink: &SmtpSink) -> PostfixInstance {
    let postfix = PostfixInstance::start(sink.addr, false);
    let conf = postfix.dir.path().join("conf");
    let status = Command::new("postconf")
        .arg("-c")
        .arg(&conf)
        .args([
            "-e",
            "smtpd_client_restrictions = reject_unknown_client_hostname",
            "unknown_client_reject_code = 550",
        ])
        .status()
        .expect("run postconf");
    assert!(status.success(), "postconf failed");
    let status = Command::new("postfix")
        .arg("-c")
        .arg(&conf)
        .arg("reload")
        .status()
        .expect("run postfix reload");
    assert!(status.success(), "postfix reload failed");
    // Postfix does not look names up itself here (smtpd_peername_lookup =
    // no): a direct client is "unknown", refused once the reload took.
    let refused = common::eventually(Duration::from_secs(20), || {
        let mut c = Client::greeted_from(ip("127.0.0.1"), postfix.addr);
        c.cmd("EHLO direct.example");
        c.cmd("MAIL FROM:<a@source.test>");
        let code = c.cmd("RCPT TO:<b@example.com>").code;
        c.cmd("QUIT");
        code == 550
    });
    assert!(
        refused,
        "the restriction never took:\n{}",
        postfix.maillog()
    );
    postfix
}

fn gateway(postfix: &PostfixInstance, nameservers: &[SocketAddr]) -> Mxgate {
    let servers: Vec<String> = nameservers.iter().map(|s| format!("\"{s}\"")).collect();
    let dns = format!(
        "[dns]\nclient_names = true\nnameservers = [{}]\ntimeout = \"5s\"\nattempts = 1\nclient_lookup_timeout = \"1s\"\n",
        servers.join(", ")
    );
    let text = format!("{}\n{dns}", policy("", &[member("pfx", postfix.addr, "")]));
    Mxgate::start_with(&listener(""), &text)
}

/// EHLO, MAIL and RCPT from `source`: the RCPT reply's text, and how long
/// MAIL took (the member connection, with the name awaited, is made there).
fn envelope(gw: &Mxgate, source: &str) -> (String, Duration, SocketAddr) {
    let mut c = Client::greeted_from(ip(source), gw.smtp_addr());
    let local = c.local_addr();
    assert_eq!(c.cmd("EHLO client.example").code, 250);
    let started = Instant::now();
    let mail = c.cmd("MAIL FROM:<a@source.test>");
    let took = started.elapsed();
    assert_eq!(mail.code, 250, "MAIL: {mail}");
    let rcpt = c.cmd("RCPT TO:<b@example.com>");
    c.cmd("QUIT");
    (rcpt.text, took, local)
}

#[test]
fn a_confirmed_name_reaches_postfix_and_others_are_refused_as_postfix_would() {
    if !tools() {
        return;
    }
    let dns = zones();
    let sink = SmtpSink::start("127.0.0.1");
    let postfix = strict_postfix(&sink);
    let gw = gateway(&postfix, &[dns.addr]);

    // Confirmed: accepted, and Postfix names the client.
    let mut c = Client::greeted_from(ip(GOOD), gw.smtp_addr());
    let local = c.local_addr();
    assert_eq!(c.cmd("EHLO client.example").code, 250);
    let r = c.send_mail("a@source.test", &["b@example.com"], "Subject: t\r\n\r\nhi");
    assert_eq!(r.code, 250, "end of data: {r}\n{}", postfix.maillog());
    c.cmd("QUIT");
    assert_eq!(sink.wait_count(1, Duration::from_secs(30)), 1, "relayed");
    let mut received = String::new();
    common::eventually(Duration::from_secs(10), || {
        received = sink.messages().concat();
        received.contains("by pfx")
    });
    assert!(
        received.contains("from client.example (good.client.test [127.85.0.1])"),
        "Received header should name the client:\n{received}"
    );
    let end = session_end(&gw, local, EndLines::One);
    assert!(end.contains("client_name=\"good.client.test\""), "{end}");

    // No PTR, and a PTR name that does not resolve back: "unknown" for good.
    for source in [NO_PTR, LIAR] {
        let (rcpt, _, local) = envelope(&gw, source);
        assert!(
            rcpt.starts_with("550 5.7.25 ") && rcpt.contains("cannot find your hostname"),
            "{source}: {rcpt}\n{}",
            postfix.maillog()
        );
        let end = session_end(&gw, local, EndLines::One);
        assert!(end.contains("client_name=\"[UNAVAILABLE]\""), "{end}");
    }
}

#[test]
fn name_servers_that_do_not_answer_give_tempunavail_within_the_bound() {
    if !tools() {
        return;
    }
    let sink = SmtpSink::start("127.0.0.1");
    let postfix = strict_postfix(&sink);
    // A "name server" that takes queries (UDP and TCP) and never answers
    // (bound after Postfix started: its script refuses a port in use anywhere).
    let udp = UdpSocket::bind("127.85.0.54:0").expect("bind udp");
    let port = udp.local_addr().expect("addr").port();
    let _tcp = TcpListener::bind(("127.85.0.54", port)).expect("bind tcp");
    let silent: SocketAddr = format!("127.85.0.54:{port}").parse().expect("addr");
    let gw = gateway(&postfix, &[silent]);
    let (rcpt, took, local) = envelope(&gw, SILENT_DNS_CLIENT);
    assert!(
        rcpt.starts_with("450 4.7.25 ") && rcpt.contains("cannot find your hostname"),
        "{rcpt}\n{}",
        postfix.maillog()
    );
    // The session waited for the lookup, but no longer than the bound (1s)
    // plus the member connection.
    assert!(took < Duration::from_secs(3), "MAIL took {took:?}");
    let end = session_end(&gw, local, EndLines::One);
    assert!(end.contains("client_name=\"[TEMPUNAVAIL]\""), "{end}");
}
