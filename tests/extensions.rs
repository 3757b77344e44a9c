//! The optional SMTP extensions (SPEC 4.2, 4.4): EHLO offers SMTPUTF8,
//! CHUNKING and DSN only when every candidate member offers them (learned
//! from health checks), `status` and `route explain` show why, a policy
//! that adds a member without them takes them away; SMTPUTF8 through a real
//! Postfix member and DSN parameters to a real `smtp-sink`.

mod common;

use std::time::Duration;

use common::client::{Client, ehlo_keywords};
use common::fake_mta::{Behavior, FakeMta, Options};
use common::peers::{PostfixInstance, SmtpSink};
use common::{Mxgate, eventually, ip, member, member_row, require, require_root};

/// Health checks learn a member's extensions within a few intervals.
const LEARN: Duration = Duration::from_secs(15);

/// A policy with active SMTP health checks every second.
fn checked_policy(members: &[String]) -> String {
    format!(
        "[routing]\n\n[upstream]\nbackoff = \"30s\"\nconnect_timeout = \"2s\"\n\n\
         [health]\ninterval = \"1s\"\ngina_check = \"none\"\n\n{}",
        members.join("\n")
    )
}

fn fake_offering(name: &str, extensions: Vec<&'static str>) -> FakeMta {
    let options = Options {
        extensions,
        ..Options::default()
    };
    FakeMta::start_with(name, Behavior::Normal, options)
}

/// The optional extensions in mxgate's EHLO reply to a client at `from`.
fn offered(gw: &Mxgate, from: &str) -> Vec<String> {
    let mut c = Client::greeted_from(ip(from), gw.smtp_addr());
    let reply = c.cmd("EHLO client.example");
    assert_eq!(reply.code, 250, "{reply}");
    let optional = ["SMTPUTF8", "CHUNKING", "DSN"];
    ehlo_keywords(&reply.text)
        .into_iter()
        .filter(|k| optional.contains(&k.as_str()))
        .collect()
}

/// Waits until the EHLO to `from` offers exactly `want`.
fn offers_eventually(gw: &Mxgate, from: &str, want: &[&str]) -> Vec<String> {
    let mut last = Vec::new();
    eventually(LEARN, || {
        last = offered(gw, from);
        last == want
    });
    last
}

#[test]
fn ehlo_offers_what_every_candidate_offers_and_a_new_member_can_take_it_away() {
    let a = fake_offering("a", vec!["SMTPUTF8", "DSN", "CHUNKING"]);
    let b = fake_offering("b", vec!["SMTPUTF8", "CHUNKING"]);
    let plain = fake_offering("plain", vec![]);
    let two = [member("a", a.addr, ""), member("b", b.addr, "")];
    let gw = Mxgate::start(&checked_policy(&two));
    let got = offers_eventually(&gw, "127.0.0.9", &["SMTPUTF8", "CHUNKING"]);
    assert_eq!(got, ["SMTPUTF8", "CHUNKING"], "DSN is b's to refuse");

    // status shows each member's and the listener's set; route explain why.
    let status = gw.status();
    assert_eq!(
        member_row(&status, "a")["extensions"],
        serde_json::json!(["SMTPUTF8", "CHUNKING", "DSN"])
    );
    assert_eq!(
        status["listeners"][0]["advertises"],
        serde_json::json!(["SMTPUTF8", "CHUNKING"])
    );
    let explain = gw.explain(ip("127.0.0.9"));
    assert_eq!(
        explain["extensions"]["offered"],
        serde_json::json!(["SMTPUTF8", "CHUNKING"])
    );
    let text = gw.cli(&["route", "explain", "--client", "127.0.0.9"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("offered:  SMTPUTF8 CHUNKING"), "{text}");

    // SMTPUTF8 is carried to the member; DSN, not offered, is refused.
    let mut c = Client::greeted_from(ip("127.0.0.9"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    c.expect("MAIL FROM:<j\u{f6}ran@ex\u{e4}mple.org> SMTPUTF8", "250");
    c.expect("RCPT TO:<r@example.com> NOTIFY=SUCCESS", "555 5.5.4");
    c.expect("RCPT TO:<\u{fc}ser@ex\u{e4}mple.org>", "250");
    c.expect("DATA", "354");
    let r = c.cmd("Subject: gr\u{fc}\u{df}e\r\n\r\nh\u{e9}llo\r\n.");
    assert_eq!(r.code, 250, "{r}");
    let got = a.messages().into_iter().chain(b.messages()).next();
    let got = got.expect("a member got the message");
    assert_eq!(got.mail, "MAIL FROM:<j\u{f6}ran@ex\u{e4}mple.org> SMTPUTF8");
    assert!(String::from_utf8_lossy(&got.data).contains("h\u{e9}llo"));

    // A policy that adds a member without them takes them away from new
    // sessions at once (its extensions are not known yet), and for good
    // once its health check has seen its EHLO.
    let three = [
        two[0].clone(),
        two[1].clone(),
        member("plain", plain.addr, ""),
    ];
    gw.reload_policy(&checked_policy(&three));
    assert_eq!(offered(&gw, "127.0.0.9"), Vec::<String>::new());
    assert!(eventually(
        LEARN,
        || member_row(&gw.status(), "plain")["extensions"] == serde_json::json!([])
    ));
    assert_eq!(offered(&gw, "127.0.0.9"), Vec::<String>::new());
    let mut c = Client::greeted_from(ip("127.0.0.9"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    c.expect("MAIL FROM:<a@example.org> SMTPUTF8", "555 5.5.4");
}

/// `X-Mail-Args:` and `X-Rcpt-Args:` as smtp-sink dumps them.
fn sink_args(message: &str) -> (String, Vec<String>) {
    let header = |line: &str, name: &str| line.strip_prefix(name).map(|v| v.trim().to_owned());
    let mail = message
        .lines()
        .find_map(|l| header(l, "X-Mail-Args:"))
        .unwrap_or_default();
    let rcpts = message
        .lines()
        .filter_map(|l| header(l, "X-Rcpt-Args:"))
        .collect();
    (mail, rcpts)
}

#[test]
fn dsn_parameters_reach_an_smtp_sink_member_verbatim() {
    if !require("smtp-sink") {
        return;
    }
    let sink = SmtpSink::start("127.0.0.1");
    let gw = Mxgate::start(&checked_policy(&[member("sink", sink.addr, "")]));
    assert_eq!(offers_eventually(&gw, "127.0.0.9", &["DSN"]), ["DSN"]);
    let mut c = Client::greeted_from(ip("127.0.0.9"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    c.expect(
        "MAIL FROM:<s@example.org> RET=HDRS ENVID=QQ314159+2Bx",
        "250",
    );
    c.expect("RCPT TO:<a@example.com> NOTIFY=NEVER", "250");
    c.expect(
        "RCPT TO:<b@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40example.com",
        "250",
    );
    c.expect("RCPT TO:<c@example.com> NOTIFY=SOMETIMES", "501 5.5.4");
    c.expect("DATA", "354");
    assert_eq!(c.cmd("Subject: dsn\r\n\r\nbody\r\n.").code, 250);
    assert_eq!(sink.wait_count(1, Duration::from_secs(10)), 1);
    let mut dumped = (String::new(), Vec::new());
    eventually(Duration::from_secs(5), || {
        dumped = sink_args(&sink.messages().pop().unwrap_or_default());
        dumped.1.len() == 2
    });
    let (mail, rcpts) = dumped;
    assert!(
        mail.contains("RET=HDRS") && mail.contains("ENVID=QQ314159+2Bx"),
        "{mail}"
    );
    assert!(rcpts[0].contains("NOTIFY=NEVER"), "{rcpts:?}");
    assert!(
        rcpts[1].contains("NOTIFY=SUCCESS,DELAY")
            && rcpts[1].contains("ORCPT=rfc822;b+40example.com"),
        "{rcpts:?}"
    );
}

/// The `Received:` header Postfix (`pfxPORT.test`) added, unfolded.
fn postfix_received(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let mut headers: Vec<String> = Vec::new();
    for line in text.lines().take_while(|l| !l.is_empty()) {
        match (line.starts_with([' ', '\t']), headers.last_mut()) {
            (true, Some(last)) => last.push_str(line),
            _ => headers.push(line.to_owned()),
        }
    }
    headers
        .into_iter()
        .find(|h| h.starts_with("Received:") && h.contains("by pfx"))
}

#[test]
fn an_internationalised_message_crosses_a_real_postfix_member_intact() {
    if !require_root("a Postfix instance") || !require("postfix") {
        return;
    }
    // The final sink offers SMTPUTF8, as the member's next hop must.
    let last_hop = fake_offering("final", vec!["SMTPUTF8"]);
    let postfix = PostfixInstance::start(last_hop.addr, false);
    let gw = Mxgate::start(&checked_policy(&[member("pfx", postfix.addr, "")]));
    let got = offers_eventually(&gw, "127.0.0.9", &["SMTPUTF8", "CHUNKING", "DSN"]);
    assert_eq!(
        got,
        ["SMTPUTF8", "CHUNKING", "DSN"],
        "Postfix offers all three"
    );

    let body = "Subject: gr\u{fc}\u{df}e aus K\u{f6}ln\r\n\r\nj\u{f6}ran sagt h\u{e9}llo\r\n";
    let mut c = Client::greeted_from(ip("127.0.0.9"), gw.smtp_addr());
    c.cmd("EHLO client.example");
    c.expect("MAIL FROM:<j\u{f6}ran@ex\u{e4}mple.org> SMTPUTF8", "250");
    c.expect("RCPT TO:<\u{fc}ser@ex\u{e4}mple.org>", "250");
    c.expect("DATA", "354");
    let r = c.cmd(&format!("{body}."));
    assert_eq!(r.code, 250, "{r}\nmaillog:\n{}", postfix.maillog());

    let mut message = None;
    eventually(Duration::from_secs(30), || {
        message = last_hop.messages().pop();
        message.is_some()
    });
    let message = message.unwrap_or_else(|| panic!("not relayed:\n{}", postfix.maillog()));
    assert!(
        message.mail.contains("<j\u{f6}ran@ex\u{e4}mple.org>"),
        "{}",
        message.mail
    );
    assert!(message.mail.contains("SMTPUTF8"), "{}", message.mail);
    let data = String::from_utf8_lossy(&message.data);
    assert!(
        data.ends_with(body.split_once("\r\n\r\n").map_or("", |b| b.1)),
        "{data}"
    );
    assert!(
        data.contains("Subject: gr\u{fc}\u{df}e aus K\u{f6}ln"),
        "{data}"
    );
    let received = postfix_received(&message.data).unwrap_or_default();
    // Postfix names the protocol UTF8SMTP(S) when the sender used SMTPUTF8.
    assert!(received.contains("with UTF8SMTP"), "{received}");
}
