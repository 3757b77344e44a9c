//! SMTP wire behaviour of mxgate against scriptable fake MTAs (SPEC section 4):
//! mxgate's own greeting and EHLO, verbatim relaying, XCLIENT / PROXY towards
//! the member, pipelining, connection reuse, strict end of data (smuggling),
//! pre-greet, client-side PROXY / XCLIENT, errors and limits.
//!
//! Everything runs over real sockets on 127.x; every wait is bounded by the
//! client's read timeout or an explicit deadline.

mod common;

use std::net::SocketAddr;

use common::client::{assert_reply, ehlo_keywords};
use common::fake_mta::Options;
use common::logs::{EndLines, LOG_WAIT, session_end};
use common::{
    Behavior, Client, FakeMta, Mxgate, ip, listener, member, one_member, policy, policy_with,
};

// 1. Greeting and EHLO -------------------------------------------------------

#[test]
fn greeting_is_mxgates_own_and_no_member_is_contacted_before_mail() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::connect_from(ip("127.0.0.5"), gw.smtp_addr());
    let greeting = c.reply();
    assert_eq!(greeting.text, "220 mx.test ESMTP");
    let ehlo = c.cmd("EHLO client.example");
    assert_eq!(ehlo.code, 250);
    assert_eq!(ehlo.text.lines().next(), Some("250-mx.test"));
    assert_eq!(c.cmd("NOOP").text, "250 2.0.0 Ok");
    assert_eq!(c.cmd("RSET").code, 250);
    assert_eq!(c.cmd("VRFY postmaster").code, 252);
    assert_eq!(c.cmd("HELP").code, 214);
    assert_eq!(c.cmd("HELO again.example").text, "250 mx.test");
    assert_eq!(fake.connections(), 0, "no member contacted before MAIL");
    assert_eq!(c.cmd("MAIL FROM:<a@x>").text, "250 2.1.0 Ok");
    assert_eq!(fake.connections(), 1);
    assert_eq!(c.cmd("QUIT").code, 221);
}

#[test]
fn ehlo_advertises_exactly_what_mxgate_carries() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let node = listener("max_message_size = \"10MiB\"\ntrusted_proxies = [\"127.0.0.2/32\"]");
    let gw = Mxgate::start_with(&node, &one_member(&fake));

    let mut c = Client::greeted_from(ip("127.0.0.5"), gw.smtp_addr());
    let ehlo = c.cmd("EHLO client.example");
    assert_eq!(ehlo.code, 250);
    assert_eq!(
        ehlo_keywords(&ehlo.text),
        ["PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES"],
        "{ehlo}"
    );
    assert!(
        ehlo.text.lines().any(|l| l == "250-SIZE 10485760"),
        "SIZE is max_message_size exactly: {ehlo}"
    );
    for absent in ["STARTTLS", "CHUNKING", "SMTPUTF8", "DSN", "AUTH", "XCLIENT"] {
        assert!(!ehlo.text.contains(absent), "{absent} advertised: {ehlo}");
    }
    // A second EHLO gives the same answer.
    assert_eq!(c.cmd("EHLO client.example"), ehlo);

    // The trusted proxy additionally sees XCLIENT.
    let mut p = Client::greeted_from(ip("127.0.0.2"), gw.smtp_addr());
    let ehlo = p.cmd("EHLO proxy.example");
    let keys = ehlo_keywords(&ehlo.text);
    assert!(keys.contains(&"XCLIENT".to_owned()), "{ehlo}");
    for k in ["PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES"] {
        assert!(keys.contains(&k.to_owned()), "{k} missing: {ehlo}");
    }
    assert_eq!(keys.len(), 5, "{ehlo}");
}

#[test]
fn ehlo_default_size_is_50mib() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.5"), gw.smtp_addr());
    let ehlo = c.cmd("EHLO client.example");
    assert!(
        ehlo.text.lines().any(|l| l == "250-SIZE 52428800"),
        "{ehlo}"
    );
}

// 2. Relay -------------------------------------------------------------------

#[test]
fn relay_is_byte_identical_and_member_replies_are_verbatim() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.5"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    let mut body: Vec<u8> =
        b"From: a@x\r\nTo: b@y\r\nSubject: relay test\r\n\r\nline one\r\n".to_vec();
    body.extend_from_slice(b"..a dot-stuffed line\r\n.\tdot tab\r\n");
    body.extend_from_slice("caf\u{e9} 8-bit \u{2603}\r\n".as_bytes());
    body.extend_from_slice(&[b'x'; 900]);
    body.extend_from_slice(b"\r\n\t tab and spaces  \r\n\r\n\r\nlast\r\n");
    assert_eq!(c.cmd("MAIL FROM:<a@x> BODY=8BITMIME").text, "250 2.1.0 Ok");
    assert_eq!(c.cmd("RCPT TO:<b@y>").text, "250 2.1.5 Ok");
    // The member's exact rejection text comes back.
    assert_eq!(
        c.cmd("RCPT TO:<reject@y>").text,
        "550 5.1.1 <reject@x> User unknown"
    );
    assert_eq!(c.cmd("RCPT TO:<c@y>").text, "250 2.1.5 Ok");
    assert_eq!(c.cmd("DATA").text, "354 End data with <CR><LF>.<CR><LF>");
    c.send(&body);
    c.send(b".\r\n");
    assert_eq!(c.reply().text, "250 2.0.0 Ok: queued as m1-1");
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0].data, body,
        "message reaches the member byte-identical"
    );
    assert!(
        msgs[0].mail.starts_with("MAIL FROM:<a@x>"),
        "{}",
        msgs[0].mail
    );
    assert_eq!(msgs[0].rcpts, ["RCPT TO:<b@y>", "RCPT TO:<c@y>"]);
    c.cmd("QUIT");
    let end = session_end(&gw, c.local_addr(), EndLines::One);
    assert!(end.contains("messages=1 "), "{end}");
    assert!(end.contains("recipients=2 "), "{end}");
}

#[test]
fn final_reply_from_member_is_verbatim_and_not_counted() {
    let fake = FakeMta::start("m1", Behavior::FinalReply("554 5.7.1 spam".into()));
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.5"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    let r = c.send_mail("a@x", &["b@y"], "Subject: spam\r\n\r\nbuy now");
    assert_eq!(r.text, "554 5.7.1 spam");
    assert!(fake.messages().is_empty());
    // The session carries on.
    assert_eq!(c.cmd("NOOP").code, 250);
    c.cmd("QUIT");
    let end = session_end(&gw, c.local_addr(), EndLines::One);
    assert!(
        end.contains("messages=0 "),
        "a refused message is not counted as accepted: {end}"
    );
}

#[test]
fn multiline_member_reply_comes_back_verbatim() {
    let fake = FakeMta::start(
        "m1",
        Behavior::FinalReply(
            "550-5.7.1 first line of the refusal\r\n550-5.7.1 second line\r\n550 5.7.1 last line"
                .into(),
        ),
    );
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.5"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    let r = c.send_mail("a@x", &["b@y"], "hi");
    assert_eq!(
        r.text,
        "550-5.7.1 first line of the refusal\n550-5.7.1 second line\n550 5.7.1 last line"
    );
    assert!(fake.messages().is_empty());
    c.expect("NOOP", "250 2.0.0 Ok");
}

// 3. XCLIENT / PROXY towards the member ---------------------------------------

#[test]
fn xclient_passes_the_real_client_and_its_helo() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.7"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    assert_eq!(c.send_mail("a@x", &["b@y"], "hi").code, 250);
    let port = c.local_addr().port();
    let msg = &fake.messages()[0];
    assert_eq!(msg.xclient.len(), 1, "{msg:?}");
    let x = &msg.xclient[0];
    for attr in [
        "ADDR=127.0.0.7".to_owned(),
        format!("PORT={port}"),
        "HELO=client.example".to_owned(),
        "PROTO=ESMTP".to_owned(),
        "DESTADDR=127.0.0.1".to_owned(),
        format!("DESTPORT={}", gw.smtp_addr().port()),
    ] {
        assert!(
            x.split(' ').any(|a| a == attr),
            "{attr} missing in XCLIENT {x}"
        );
    }
    // EHLO mxgate's name first, then (after XCLIENT) the client's own name.
    assert_eq!(msg.helo, ["mx.test", "client.example"]);
    let cmds = fake.commands();
    let xi = cmds
        .iter()
        .position(|l| l.starts_with("XCLIENT"))
        .expect("XCLIENT sent");
    assert_eq!(cmds[xi + 1], "EHLO client.example", "{cmds:?}");
}

#[test]
fn helo_client_gets_proto_smtp_in_xclient() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.7"), gw.smtp_addr());
    assert_eq!(c.cmd("HELO old.example").code, 250);
    assert_eq!(c.send_mail("a@x", &["b@y"], "hi").code, 250);
    let x = &fake.messages()[0].xclient[0];
    assert!(x.contains("HELO=old.example"), "{x}");
    assert!(x.contains("PROTO=SMTP"), "{x}");
}

#[test]
fn no_xclient_when_policy_forbids_it() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&policy_with(
        "",
        &[("xclient", "false")],
        &[member("m1", fake.addr, "")],
    ));
    let mut c = Client::greeted_from(ip("127.0.0.7"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    assert_eq!(c.send_mail("a@x", &["b@y"], "hi").code, 250);
    let msg = &fake.messages()[0];
    assert!(msg.xclient.is_empty(), "{msg:?}");
    assert_eq!(msg.helo, ["mx.test"]);
    assert!(!fake.commands().iter().any(|l| l.starts_with("XCLIENT")));
}

#[test]
fn no_xclient_when_member_does_not_offer_it() {
    let fake = FakeMta::start_with(
        "m1",
        Behavior::Normal,
        Options {
            no_xclient: true,
            ..Options::default()
        },
    );
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.7"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    assert_eq!(c.send_mail("a@x", &["b@y"], "hi").code, 250);
    assert!(!fake.commands().iter().any(|l| l.starts_with("XCLIENT")));
}

fn proxy_to_member(version: &str) -> (Vec<u8>, SocketAddr, SocketAddr, Vec<String>) {
    let fake = FakeMta::start_with(
        "m1",
        Behavior::Normal,
        Options {
            expect_proxy: true,
            ..Options::default()
        },
    );
    let gw = Mxgate::start(&policy_with(
        "",
        &[("proxy_protocol", &format!("\"{version}\""))],
        &[member("m1", fake.addr, "")],
    ));
    let mut c = Client::greeted_from(ip("127.0.0.8"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    assert_eq!(c.send_mail("a@x", &["b@y"], "hi").code, 250);
    let msg = fake.messages()[0].clone();
    assert!(
        msg.xclient.is_empty(),
        "no XCLIENT with a PROXY header: {msg:?}"
    );
    (
        msg.proxy.expect("PROXY header received"),
        c.local_addr(),
        gw.smtp_addr(),
        msg.helo,
    )
}

#[test]
fn proxy_v1_header_to_member_names_the_client() {
    let (header, client, dest, helo) = proxy_to_member("v1");
    let expected = format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        client.ip(),
        dest.ip(),
        client.port(),
        dest.port()
    );
    assert_eq!(String::from_utf8_lossy(&header), expected);
    assert_eq!(
        helo,
        ["client.example"],
        "the MTA believes it talks to the client"
    );
}

#[test]
fn proxy_v2_header_to_member_names_the_client() {
    let (h, client, dest, _) = proxy_to_member("v2");
    assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n", "v2 signature");
    assert_eq!(h[12], 0x21, "version 2, PROXY command");
    assert_eq!(h[13], 0x11, "TCP over IPv4");
    let len = u16::from_be_bytes([h[14], h[15]]) as usize;
    assert_eq!(h.len(), 16 + len);
    assert!(len >= 12);
    let a = &h[16..];
    let (SocketAddr::V4(client), SocketAddr::V4(dest)) = (client, dest) else {
        panic!("v4")
    };
    assert_eq!(&a[0..4], client.ip().octets());
    assert_eq!(&a[4..8], dest.ip().octets());
    assert_eq!(u16::from_be_bytes([a[8], a[9]]), client.port());
    assert_eq!(u16::from_be_bytes([a[10], a[11]]), dest.port());
}

// 4. Pipelining --------------------------------------------------------------

fn pipelined_batch(options: Options) {
    let fake = FakeMta::start_with("m1", Behavior::Normal, options);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.9"), gw.smtp_addr());
    assert_eq!(c.cmd("EHLO client.example").code, 250);
    c.send(
        b"MAIL FROM:<a@x>\r\nRCPT TO:<b1@y>\r\nRCPT TO:<reject@y>\r\nRCPT TO:<b2@y>\r\nDATA\r\n",
    );
    let texts: Vec<String> = c.replies(5).into_iter().map(|r| r.text).collect();
    assert_eq!(
        texts,
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "550 5.1.1 <reject@x> User unknown",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
        ]
    );
    c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpts, ["RCPT TO:<b1@y>", "RCPT TO:<b2@y>"]);
    assert_eq!(msgs[0].data, b"Subject: pipelined\r\n\r\nbody\r\n");
    // A whole pipelined transaction, body and QUIT included, in one write.
    c.send(b"RSET\r\nMAIL FROM:<a2@x>\r\nRCPT TO:<c@y>\r\nDATA\r\n");
    let texts: Vec<u16> = c.replies(4).into_iter().map(|r| r.code).collect();
    assert_eq!(texts, [250, 250, 250, 354]);
    c.send(b"second\r\n.\r\nNOOP\r\nQUIT\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(c.reply().code, 250);
    assert_eq!(c.reply().code, 221);
    assert_eq!(fake.messages().len(), 2);
}

#[test]
fn pipelined_envelope_replies_in_order() {
    pipelined_batch(Options::default());
}

#[test]
fn pipelined_envelope_to_member_without_pipelining() {
    pipelined_batch(Options {
        no_pipelining: true,
        ..Options::default()
    });
}

// 5. Connection reuse --------------------------------------------------------

#[test]
fn transactions_reuse_the_member_connection() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.10"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    assert_eq!(c.send_mail("a@x", &["b@y"], "one").code, 250);
    assert_eq!(c.cmd("RSET").text, "250 2.0.0 Ok");
    assert_eq!(c.send_mail("a@x", &["c@y"], "two").code, 250);
    // RSET in the middle of a transaction abandons it.
    c.expect("MAIL FROM:<abandoned@x>", "250");
    c.expect("RCPT TO:<d@y>", "250");
    assert_eq!(c.cmd("RSET").text, "250 2.0.0 Ok");
    c.expect("RCPT TO:<d@y>", "503 5.5.1");
    assert_eq!(c.send_mail("a@x", &["e@y"], "three").code, 250);
    assert_eq!(
        fake.connections(),
        1,
        "one member connection for the whole session"
    );
    let msgs = fake.messages();
    assert_eq!(msgs.len(), 3);
    assert_eq!(
        msgs[2].rcpts,
        ["RCPT TO:<e@y>"],
        "the abandoned recipient is gone"
    );
    assert!(
        fake.commands().iter().any(|l| l == "RSET"),
        "RSET relayed to the member"
    );
    c.cmd("QUIT");
    let end = session_end(&gw, c.local_addr(), EndLines::One);
    assert!(
        end.contains("messages=3 ") && end.contains("recipients=3 "),
        "{end}"
    );
}

// 6. Strict end of data / smuggling --------------------------------------------

const SMUGGLE_ENDINGS: [&[u8]; 4] = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r"];

fn smuggling_body(ending: &[u8]) -> Vec<u8> {
    let mut body = b"From: a@x\r\nSubject: smuggle\r\n\r\nhello".to_vec();
    body.extend_from_slice(ending);
    body.extend_from_slice(
        b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled body\r\n",
    );
    body.extend_from_slice(b"\r\n.\r\n");
    body
}

#[test]
fn smuggled_end_of_data_is_rejected() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.11"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    for ending in SMUGGLE_ENDINGS {
        c.expect("MAIL FROM:<a@x>", "250");
        c.expect("RCPT TO:<b@y>", "250");
        c.expect("DATA", "354");
        c.send(&smuggling_body(ending));
        let r = c.reply();
        assert_reply(&r, "550 5.5.2");
        // Exactly one reply: the smuggled commands were message content, not commands.
        assert_eq!(
            c.cmd("NOOP").text,
            "250 2.0.0 Ok",
            "after ending {ending:?}"
        );
    }
    assert!(fake.messages().is_empty(), "{:?}", fake.messages());
    let cmds = fake.commands();
    assert!(
        !cmds
            .iter()
            .any(|l| l.contains("evil") || l.contains("victim")),
        "{cmds:?}"
    );
    // The session continues: a clean message is accepted.
    assert_eq!(c.send_mail("a@x", &["b@y"], "clean").code, 250);
    assert_eq!(fake.messages().len(), 1);
    assert_eq!(fake.messages()[0].data, b"clean\r\n");
    assert!(!fake.commands().iter().any(|l| l.contains("evil")));
}

#[test]
fn smuggled_end_of_data_is_normalized() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&listener("bare_lf = \"normalize\""), &one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.12"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    for (i, ending) in SMUGGLE_ENDINGS.into_iter().enumerate() {
        c.expect("MAIL FROM:<a@x>", "250");
        c.expect("RCPT TO:<b@y>", "250");
        c.expect("DATA", "354");
        c.send(&smuggling_body(ending));
        let r = c.reply();
        assert_eq!(r.code, 250, "ending {ending:?}: {r}");
        assert_eq!(c.cmd("NOOP").text, "250 2.0.0 Ok");
        let msgs = fake.messages();
        assert_eq!(msgs.len(), i + 1);
        let data = &msgs[i].data;
        for (k, b) in data.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(
                    data.get(k + 1),
                    Some(&b'\n'),
                    "bare CR at {k} in {:?}",
                    String::from_utf8_lossy(data)
                ),
                b'\n' => assert_eq!(data.get(k.wrapping_sub(1)), Some(&b'\r'), "bare LF at {k}"),
                _ => {}
            }
        }
        assert!(
            String::from_utf8_lossy(data).contains("MAIL FROM:<evil@x>"),
            "the smuggled text stays content: {:?}",
            String::from_utf8_lossy(data)
        );
        assert!(
            !data.windows(5).any(|w| w == b"\r\n.\r\n"),
            "no end of data inside the content"
        );
    }
    assert!(
        !fake
            .commands()
            .iter()
            .any(|l| l.contains("evil") || l.contains("victim"))
    );
    assert_eq!(
        fake.messages()
            .iter()
            .map(|m| m.mail.as_str())
            .collect::<Vec<_>>(),
        ["MAIL FROM:<a@x>"; 4]
    );
}

// 7. Pre-greet and PROXY from the client side ------------------------------------

#[test]
fn client_talking_before_greeting_is_refused() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&listener("greet_delay = \"500ms\""), &one_member(&fake));
    let mut c = Client::connect_from(ip("127.0.0.13"), gw.smtp_addr());
    c.send(b"EHLO x\r\n");
    let r = c.reply();
    assert_reply(&r, "554 5.5.1");
    assert_eq!(
        c.read_to_close(),
        Ok(vec![]),
        "disconnected after the refusal"
    );
    // A patient client is greeted.
    let mut ok = Client::connect_from(ip("127.0.0.14"), gw.smtp_addr());
    assert_eq!(ok.reply().text, "220 mx.test ESMTP");
    assert_eq!(fake.connections(), 0);
}

#[test]
fn proxy_header_from_untrusted_client_is_refused() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let node = listener(
        "greet_delay = \"500ms\"\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]",
    );
    let gw = Mxgate::start_with(&node, &one_member(&fake));
    let mut c = Client::connect_from(ip("127.0.0.15"), gw.smtp_addr());
    c.send(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n");
    assert_reply(&c.reply(), "550 5.7.1");
    assert_eq!(c.read_to_close(), Ok(vec![]));
    // A v2 header from an untrusted client, too.
    let mut c = Client::connect_from(ip("127.0.0.15"), gw.smtp_addr());
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[203, 0, 113, 9, 127, 0, 0, 1, 0x9c, 0x40, 0, 25]);
    c.send(&v2);
    assert_reply(&c.reply(), "550 5.7.1");
    assert!(
        gw.wait_log("PROXY header from a peer not in trusted_proxies", LOG_WAIT)
            .is_some(),
        "logged"
    );
}

#[test]
fn proxy_line_on_plain_listener_is_refused() {
    // Without greet_delay the PROXY line may be seen before or after the
    // greeting; it is refused either way.
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::connect_from(ip("127.0.0.16"), gw.smtp_addr());
    c.send(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n");
    let mut r = c.reply();
    if r.text == "220 mx.test ESMTP" {
        r = c.reply();
    }
    assert_reply(&r, "550 5.7.1");
    assert_eq!(fake.connections(), 0);
}

#[test]
fn proxy_v2_header_after_the_greeting_is_refused_once_and_closed() {
    // SPEC 4.10: a PROXY v2 header from a peer outside trusted_proxies
    // (even on a proxy_protocol listener) after the greeting is one
    // `550 5.7.1`, logged and counted; its `QUIT` is never executed.
    let fake = FakeMta::start("m1", Behavior::Normal);
    let metrics = common::metrics::metrics_addr();
    let node = common::metrics::with_metrics(
        &listener("proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]"),
        metrics,
    );
    let gw = Mxgate::start_with(&node, &one_member(&fake));
    let header = [
        &b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c"[..],
        &[203, 0, 113, 9, 127, 0, 0, 1, 0x9c, 0x40, 0, 25],
    ]
    .concat();
    let mut clients = Vec::new();
    for (i, source) in ["127.84.0.1", "127.84.0.2"].into_iter().enumerate() {
        let mut c = Client::greeted_from(ip(source), gw.smtp_addr());
        clients.push(c.local_addr());
        if i == 0 {
            c.send(&header);
        } else {
            // Split inside the signature: still recognised.
            c.send(&header[..5]);
            std::thread::sleep(std::time::Duration::from_millis(50));
            c.send(&header[5..]);
        }
        let lines = c.read_to_close().expect("closed");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("550 5.7.1 "), "{lines:?}");
    }
    assert!(
        gw.wait_logs("PROXY v2 header refused", 2, LOG_WAIT)
            .is_some(),
        "logged"
    );
    let want = r#"mxgate_smtp_refused_total{listener="inbound",reason="proxy_untrusted"} 2"#;
    let mut last = String::new();
    let counted = common::eventually(LOG_WAIT, || {
        last = common::metrics::http_get_text(metrics, "/metrics");
        last.lines().any(|l| l == want)
    });
    assert!(counted, "{want} not in:\n{last}");
    for client in clients {
        let end = session_end(&gw, client, EndLines::One);
        assert!(end.contains("PROXY header refused"), "{end}");
    }
    assert_eq!(fake.connections(), 0);
}

#[test]
fn proxy_header_from_trusted_proxy_names_the_client() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let node = listener("proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]");
    let gw = Mxgate::start_with(&node, &one_member(&fake));
    let mut c = Client::connect_from(ip("127.0.0.1"), gw.smtp_addr());
    c.send(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n");
    assert_eq!(c.reply().text, "220 mx.test ESMTP");
    c.cmd("EHLO real-client.example");
    assert_eq!(c.send_mail("a@x", &["b@y"], "via proxy").code, 250);
    let x = &fake.messages()[0].xclient[0];
    assert!(x.split(' ').any(|a| a == "ADDR=203.0.113.9"), "{x}");
    assert!(x.split(' ').any(|a| a == "PORT=40000"), "{x}");
    assert!(x.split(' ').any(|a| a == "HELO=real-client.example"), "{x}");
    c.cmd("QUIT");
    assert!(
        gw.wait_log("client=203.0.113.9:40000", LOG_WAIT).is_some(),
        "session logged with the real client"
    );
}

// 8. XCLIENT from the client side ------------------------------------------------

#[test]
fn xclient_from_untrusted_client_is_refused() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(
        &listener("trusted_proxies = [\"127.0.0.2/32\"]"),
        &one_member(&fake),
    );
    let mut c = Client::greeted_from(ip("127.0.0.17"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    c.expect("XCLIENT ADDR=198.51.100.7", "550 5.7.1");
    // Still the untrusted client's own address goes to the member.
    assert_eq!(c.send_mail("a@x", &["b@y"], "hi").code, 250);
    let x = &fake.messages()[0].xclient[0];
    assert!(x.contains("ADDR=127.0.0.17 "), "{x}");
    assert!(gw.wait_log("XCLIENT refused", LOG_WAIT).is_some());
}

#[test]
fn xclient_from_trusted_proxy_is_passed_on() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(
        &listener("trusted_proxies = [\"127.0.0.2/32\"]"),
        &one_member(&fake),
    );
    let mut c = Client::greeted_from(ip("127.0.0.2"), gw.smtp_addr());
    c.cmd("EHLO proxy.example");
    assert_eq!(
        c.cmd("XCLIENT ADDR=198.51.100.7 PORT=4711 HELO=real.example")
            .text,
        "220 mx.test ESMTP"
    );
    c.cmd("EHLO real.example");
    assert_eq!(c.send_mail("a@x", &["b@y"], "hi").code, 250);
    let x = &fake.messages()[0].xclient[0];
    for attr in ["ADDR=198.51.100.7", "PORT=4711", "HELO=real.example"] {
        assert!(x.split(' ').any(|a| a == attr), "{attr} missing in {x}");
    }
    assert_eq!(
        fake.messages()[0].helo.last().map(String::as_str),
        Some("real.example")
    );
}

#[test]
fn trusted_proxy_may_send_xclient_twice_and_unnamed_attributes_stay() {
    // Like Postfix: trust belongs to the connection, and an XCLIENT changes
    // only the attributes it names (mxgate itself may split XCLIENT in two).
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(
        &listener("trusted_proxies = [\"127.0.0.2/32\"]"),
        &one_member(&fake),
    );
    let mut c = Client::greeted_from(ip("127.0.0.2"), gw.smtp_addr());
    c.cmd("EHLO proxy.example");
    c.expect("XCLIENT HELO=real.example PORT=4711", "220");
    c.expect("XCLIENT ADDR=198.51.100.8", "220");
    assert_eq!(c.send_mail("a@x", &["b@y"], "hi").code, 250);
    let x = &fake.messages()[0].xclient[0];
    for attr in ["ADDR=198.51.100.8", "PORT=4711", "HELO=real.example"] {
        assert!(x.split(' ').any(|a| a == attr), "{attr} missing in {x}");
    }
}

// 9. Errors keep the session alive -------------------------------------------------

#[test]
fn command_errors_keep_the_session() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.18"), gw.smtp_addr());
    c.expect("MAIL FROM:<a@x>", "503 5.5.1");
    c.expect("EHLO client.example", "250");
    let long = format!("NOOP {}", "a".repeat(593));
    assert_eq!(long.len() + 2, 600);
    c.expect(&long, "500 5.5.2");
    c.expect("NOOP", "250");
    c.expect("RCPT TO:<b@y>", "503 5.5.1");
    c.expect("DATA", "503 5.5.1");
    c.expect("FROB", "500 5.5.2");
    c.expect("MAIL FROM:bad address", "501");
    c.expect("MAIL FROM:<a@x> SIZE=52428801", "552 5.3.4");
    c.expect("VRFY postmaster", "252");
    c.expect("NOOP", "250");
    assert_eq!(
        fake.connections(),
        0,
        "refused commands never reach a member"
    );
    assert_eq!(c.send_mail("a@x", &["b@y"], "still fine").code, 250);
}

#[test]
fn line_of_512_octets_is_accepted_513_is_not() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.19"), gw.smtp_addr());
    let ok = format!("NOOP {}", "a".repeat(512 - 2 - 5));
    c.expect(&ok, "250");
    let long = format!("NOOP {}", "a".repeat(512 - 2 - 4));
    c.expect(&long, "500 5.5.2");
    c.expect("NOOP", "250");
}

#[test]
fn too_many_recipients() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&listener("max_recipients = 2"), &one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.20"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    c.expect("MAIL FROM:<a@x>", "250");
    c.expect("RCPT TO:<b1@y>", "250");
    c.expect("RCPT TO:<b2@y>", "250");
    c.expect("RCPT TO:<b3@y>", "452 4.5.3");
    c.expect("DATA", "354");
    c.send(b"hi\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(
        fake.messages()[0].rcpts,
        ["RCPT TO:<b1@y>", "RCPT TO:<b2@y>"]
    );
    // The limit is per transaction.
    c.expect("MAIL FROM:<a@x>", "250");
    c.expect("RCPT TO:<c1@y>", "250");
    c.expect("RCPT TO:<c2@y>", "250");
}

#[test]
fn oversized_message_is_refused_and_never_reaches_the_member() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&listener("max_message_size = \"1KiB\""), &one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.21"), gw.smtp_addr());
    let ehlo = c.cmd("EHLO client.example");
    assert!(ehlo.text.contains("250-SIZE 1024"), "{ehlo}");
    c.expect("MAIL FROM:<a@x> SIZE=1025", "552 5.3.4");
    c.expect("MAIL FROM:<a@x> SIZE=1000", "250");
    c.expect("RCPT TO:<b@y>", "250");
    c.expect("DATA", "354");
    let body = "x".repeat(70) + "\r\n";
    c.send(body.repeat(30).as_bytes());
    c.send(b".\r\n");
    assert_reply(&c.reply(), "552 5.3.4");
    assert!(fake.messages().is_empty());
    // The session carries on.
    c.expect("NOOP", "250");
    assert_eq!(c.send_mail("a@x", &["b@y"], &"y".repeat(500)).code, 250);
    assert_eq!(fake.messages().len(), 1);
}

#[test]
fn message_size_limit_is_exact() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&listener("max_message_size = \"1KiB\""), &one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.23"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    c.expect("MAIL FROM:<a@x> SIZE=1024", "250");
    c.expect("RSET", "250");
    // 1024 octets of content (CRLF before the final dot included) fit.
    let fits = "x".repeat(1022);
    assert_eq!(c.send_mail("a@x", &["b@y"], &fits).code, 250);
    assert_eq!(fake.messages()[0].data.len(), 1024);
    let r = c.send_mail("a@x", &["b@y"], &"x".repeat(1023));
    assert_reply(&r, "552 5.3.4");
    assert_eq!(fake.messages().len(), 1);
}

#[test]
fn pipelined_batch_after_refused_mail_never_reaches_the_member() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.24"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    c.send(b"MAIL FROM:<a@x> SIZE=99999999999\r\nRCPT TO:<b@y>\r\nDATA\r\nNOOP\r\n");
    let texts: Vec<String> = c
        .replies(4)
        .into_iter()
        .map(|r| r.text[..9].to_owned())
        .collect();
    assert_eq!(texts, ["552 5.3.4", "503 5.5.1", "503 5.5.1", "250 2.0.0"]);
    assert_eq!(fake.connections(), 0);
}

#[test]
fn new_ehlo_starts_a_new_member_connection_with_the_new_name() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.0.25"), gw.smtp_addr());
    c.cmd("EHLO first.example");
    assert_eq!(c.send_mail("a@x", &["b@y"], "one").code, 250);
    c.expect("EHLO second.example", "250");
    assert_eq!(c.send_mail("a@x", &["b@y"], "two").code, 250);
    let msgs = fake.messages();
    assert_eq!(
        fake.connections(),
        2,
        "EHLO resets the session, so the member connection too"
    );
    assert!(
        msgs[0].xclient[0].contains("HELO=first.example"),
        "{:?}",
        msgs[0]
    );
    assert!(
        msgs[1].xclient[0].contains("HELO=second.example"),
        "{:?}",
        msgs[1]
    );
    assert_eq!(
        msgs[1].helo.last().map(String::as_str),
        Some("second.example")
    );
    // The first connection was closed politely.
    assert!(fake.commands().iter().any(|l| l == "QUIT"));
}

#[test]
fn xclient_mid_session_moves_to_a_new_member_connection() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(
        &listener("trusted_proxies = [\"127.0.0.2/32\"]"),
        &one_member(&fake),
    );
    let mut c = Client::greeted_from(ip("127.0.0.2"), gw.smtp_addr());
    c.cmd("EHLO proxy.example");
    assert_eq!(c.send_mail("a@x", &["b@y"], "own").code, 250);
    c.expect(
        "XCLIENT ADDR=198.51.100.7 HELO=one.example",
        "220 mx.test ESMTP",
    );
    c.cmd("EHLO one.example");
    assert_eq!(c.send_mail("a@x", &["b@y"], "relayed").code, 250);
    let msgs = fake.messages();
    assert_eq!(
        fake.connections(),
        2,
        "the member connection of the proxy's own identity is not reused"
    );
    assert!(
        msgs[0].xclient[0].contains("ADDR=127.0.0.2 "),
        "{:?}",
        msgs[0]
    );
    assert!(
        msgs[1].xclient[0].contains("ADDR=198.51.100.7 "),
        "{:?}",
        msgs[1]
    );
    assert!(
        msgs[1].xclient[0].contains("HELO=one.example"),
        "{:?}",
        msgs[1]
    );
}

// 10. Empty policy -------------------------------------------------------------

#[test]
fn empty_policy_greets_and_tempfails_mail() {
    let gw = Mxgate::start(&policy("", &[]));
    let mut c = Client::connect_from(ip("127.0.0.22"), gw.smtp_addr());
    assert_eq!(c.reply().text, "220 mx.test ESMTP");
    c.expect("EHLO client.example", "250");
    c.expect("MAIL FROM:<a@x>", "451 4.4.1");
    c.expect("RCPT TO:<b@y>", "451 4.4.1");
    c.expect("NOOP", "250");
    c.expect("QUIT", "221");
}
