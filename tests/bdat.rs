//! CHUNKING (RFC 3030 BDAT) end to end: a real Postfix member relaying to a
//! recording sink, and fake members for pipelining, the size limit, the
//! RFC 3030 error replies, failover before the first chunk, a member lost
//! after a chunk, and the LFT tap. Clients come from 127.91.0.x.

mod common;

use std::time::Duration;

use common::client::{Client, assert_reply, ehlo_keywords};
use common::fake_mta::Options;
use common::peers::PostfixInstance;
use common::{
    Behavior, FakeMta, Mxgate, eventually, ip, listener, member, policy, require, require_root,
};
use std::net::IpAddr;

const CLIENT: &str = "127.91.0.5";

/// A chunk with what DATA would treat specially: `CRLF.CRLF`, dot-led
/// lines, a bare LF and CR, NUL and 8-bit octets.
const TRICKY: &[u8] =
    b"Subject: chunks\r\n\r\nline one\r\n.\r\n..two dots\r\n.lead\r\nbare\nlf and\rcr \x00\xff\r\n";

fn chunking_fake(name: &str, behavior: Behavior) -> FakeMta {
    let options = Options {
        chunking: true,
        ..Options::default()
    };
    FakeMta::start_with(name, behavior, options)
}

/// A client whose EHLO offered CHUNKING. mxgate offers it once a member
/// connection (or a health check) has seen every candidate offer it: until
/// then each try opens one (MAIL, then RSET). Bounded.
fn chunking_client(gw: &Mxgate) -> Client {
    chunking_client_from(gw, ip(CLIENT))
}

/// [`chunking_client`] from `source`.
fn chunking_client_from(gw: &Mxgate, source: IpAddr) -> Client {
    let mut offered = None;
    let seen = eventually(Duration::from_secs(20), || {
        let mut c = Client::greeted_from(source, gw.smtp_addr());
        let ehlo = c.cmd("EHLO client.example");
        if ehlo_keywords(&ehlo.text).iter().any(|k| k == "CHUNKING") {
            offered = Some(c);
            return true;
        }
        c.cmd("MAIL FROM:<warm@source.test>");
        c.cmd("RSET");
        c.cmd("QUIT");
        false
    });
    assert!(seen, "mxgate never offered CHUNKING");
    offered.expect("client")
}

/// `BDAT n [LAST]` followed by `chunk`.
fn bdat(chunk: &[u8], last: bool) -> Vec<u8> {
    let mut out = format!(
        "BDAT {}{}\r\n",
        chunk.len(),
        if last { " LAST" } else { "" }
    )
    .into_bytes();
    out.extend_from_slice(chunk);
    out
}

/// MAIL and RCPT, pipelined with `chunks` (the last one `LAST`).
fn pipelined_message(chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = b"MAIL FROM:<s@source.test>\r\nRCPT TO:<r@example.com>\r\n".to_vec();
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend(bdat(chunk, i + 1 == chunks.len()));
    }
    out
}

#[test]
fn pipelined_chunks_arrive_octet_for_octet() {
    let fake = chunking_fake("m1", Behavior::Normal);
    let gw = Mxgate::start(&policy("", &[member("m1", fake.addr, "")]));
    let mut c = chunking_client(&gw);
    // Three chunks, the first cut inside the CRLF.CRLF, and an empty LAST,
    // all in one write with the envelope.
    let (a, rest) = TRICKY.split_at(29);
    let (b, d) = rest.split_at(20);
    c.send(&pipelined_message(&[a, b, d, b""]));
    let replies = c.replies(6);
    assert!(replies[..5].iter().all(|r| r.ok()), "{replies:?}");
    assert_reply(&replies[5], "250 2.0.0 Ok: queued as m1-1");
    c.expect("NOOP", "250");
    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].data, TRICKY, "chunks relayed verbatim");
    let bdats: Vec<String> = fake
        .commands()
        .into_iter()
        .filter(|l| l.starts_with("BDAT"))
        .collect();
    let expected = [
        "BDAT 29".to_owned(),
        "BDAT 20".to_owned(),
        format!("BDAT {}", d.len()),
        "BDAT 0 LAST".to_owned(),
    ];
    assert_eq!(bdats, expected);
    // The next message of the session: one chunk, LAST.
    c.send(&pipelined_message(&[b"second\r\n"]));
    assert!(c.replies(3).iter().all(|r| r.ok()));
    assert_eq!(fake.messages().len(), 2);
    assert_eq!(fake.messages()[1].data, b"second\r\n");
}

#[test]
fn chunks_over_the_size_limit_get_552_and_the_session_stays_in_step() {
    let fake = chunking_fake("m1", Behavior::Normal);
    let node = listener("max_message_size = 1000");
    let gw = Mxgate::start_with(&node, &policy("", &[member("m1", fake.addr, "")]));
    let mut c = chunking_client(&gw);
    let big = vec![b'x'; 600];
    // 600 fit, 600 more do not: 552, and the LAST after it gets 552 too;
    // its octets (QUIT lines) are read as data, never as commands.
    c.send(&pipelined_message(&[&big, &big, b"QUIT\r\nQUIT\r\n"]));
    let replies = c.replies(5);
    assert!(replies[..3].iter().all(|r| r.ok()), "{replies:?}");
    assert_reply(&replies[3], "552 5.3.4");
    assert_reply(&replies[4], "552 5.3.4");
    c.expect("NOOP", "250");
    assert!(
        fake.messages().is_empty(),
        "a refused message reached the member"
    );
    // A message within the limit in a new transaction is delivered.
    c.send(&pipelined_message(&[b"small\r\n"]));
    assert!(c.replies(3).iter().all(|r| r.ok()));
    assert_eq!(fake.messages().len(), 1);
    assert_eq!(fake.messages()[0].data, b"small\r\n");
    // A refused chunk far over the limit is not read: reply, then close.
    c.send(b"BDAT 999999999 LAST\r\n");
    assert_reply(&c.reply(), "503 5.5.1");
    assert!(c.read_to_close().is_ok_and(|rest| rest.is_empty()));
}

#[test]
fn rfc3030_error_replies() {
    let fake = chunking_fake("m1", Behavior::Normal);
    let gw = Mxgate::start(&policy("", &[member("m1", fake.addr, "")]));
    let mut c = chunking_client(&gw);
    // BDAT without MAIL: 503, and its octets are consumed.
    c.send(&bdat(b"NOOP\r\n", false));
    assert_reply(&c.reply(), "503 5.5.1");
    c.expect("NOOP", "250");
    // DATA, RCPT and MAIL inside a BDAT transaction: 503; RSET ends it.
    c.send(b"MAIL FROM:<s@source.test>\r\nRCPT TO:<r@example.com>\r\nBDAT 3\r\nabc");
    assert!(c.replies(3).iter().all(|r| r.ok()));
    c.expect("DATA", "503 5.5.1 Error: DATA after BDAT");
    c.expect(
        "RCPT TO:<r@example.com>",
        "503 5.5.1 Error: RCPT after BDAT",
    );
    c.expect(
        "MAIL FROM:<s@source.test>",
        "503 5.5.1 Error: MAIL after BDAT",
    );
    c.expect("RSET", "250");
    c.send(&pipelined_message(&[b"after rset\r\n"]));
    assert!(c.replies(3).iter().all(|r| r.ok()));
    assert_eq!(fake.messages().len(), 1);
    assert_eq!(fake.messages()[0].data, b"after rset\r\n");
    // A malformed BDAT: where its chunk ends is unknown, so the session ends.
    c.send(b"BDAT 12x\r\n");
    assert_reply(&c.reply(), "521 5.5.4");
    assert!(c.read_to_close().is_ok_and(|rest| rest.is_empty()));

    // Not offered (after HELO): 502, as an unknown command.
    let mut c = Client::greeted_from(ip(CLIENT), gw.smtp_addr());
    c.expect("HELO client.example", "250");
    c.expect("BDAT 0 LAST", "502 5.5.1");
    c.expect("NOOP", "250");
    // BINARYMIME is not offered, and BODY=BINARYMIME is refused.
    let mut c = chunking_client(&gw);
    let ehlo = c.cmd("EHLO client.example");
    assert!(!ehlo_keywords(&ehlo.text).iter().any(|k| k == "BINARYMIME"));
    let r = c.cmd("MAIL FROM:<s@source.test> BODY=BINARYMIME");
    assert!(r.code >= 500, "{r}");
}

/// A policy with fast active health checks (they learn both members'
/// extensions) and the given members.
fn checked_policy(members: &[String]) -> String {
    format!(
        "[routing]\n\n[upstream]\nbackoff = \"30s\"\nconnect_timeout = \"2s\"\ngreeting_timeout = \"3s\"\n\n\
         [health]\ninterval = \"300ms\"\nrise = 1\nfall = 3\ntimeout = \"1s\"\n\n{}",
        members.join("\n")
    )
}

#[test]
fn a_member_failing_before_the_first_chunk_is_failed_over() {
    let fakes = [
        chunking_fake("m1", Behavior::Normal),
        chunking_fake("m2", Behavior::Normal),
    ];
    let members: Vec<_> = fakes.iter().map(|f| member(&f.name, f.addr, "")).collect();
    let gw = Mxgate::start(&checked_policy(&members));
    let first = gw.first_choice(ip(CLIENT)).expect("first choice");
    let (bad, good) = if first == "m1" {
        (&fakes[0], &fakes[1])
    } else {
        (&fakes[1], &fakes[0])
    };
    let mut c = chunking_client(&gw);
    // The first choice drops the connection at RCPT: the envelope is
    // replayed on the other, and the chunk goes there.
    bad.set_behavior(Behavior::DropAtRcpt(1));
    c.send(&pipelined_message(&[TRICKY]));
    let replies = c.replies(3);
    assert!(replies.iter().all(|r| r.ok()), "{replies:?}");
    assert_eq!(good.messages().len(), 1);
    assert_eq!(good.messages()[0].data, TRICKY);
    // The first choice is dead: a new session's message goes to the other.
    c.expect("QUIT", "221");
    bad.kill();
    let mut c = chunking_client(&gw);
    c.send(&pipelined_message(&[b"one\r\n", b"two\r\n"]));
    let replies = c.replies(4);
    assert!(replies.iter().all(|r| r.ok()), "{replies:?}");
    assert_eq!(good.messages().len(), 2);
    assert_eq!(good.messages()[1].data, b"one\r\ntwo\r\n");
    assert!(bad.messages().is_empty());
}

#[test]
fn a_member_lost_after_a_chunk_gives_451_and_the_session_stays_in_step() {
    let fake = chunking_fake("m1", Behavior::Normal);
    let gw = Mxgate::start(&policy("", &[member("m1", fake.addr, "")]));
    let mut c = chunking_client(&gw);
    // The member closes after the first chunk: 451 4.4.2 for it, and for
    // the chunks after it, whose octets are still read.
    fake.set_behavior(Behavior::DropDuringData(50));
    let chunk = vec![b'y'; 100];
    c.send(&pipelined_message(&[&chunk, b"MAIL FROM:<x@y>\r\n", b"z"]));
    let replies = c.replies(5);
    assert!(replies[..2].iter().all(|r| r.ok()), "{replies:?}");
    for r in &replies[2..] {
        assert_reply(r, "451 4.4.2");
    }
    c.expect("NOOP", "250");
    assert!(fake.messages().is_empty());
    // The member is back: the next message is delivered on a new connection.
    fake.set_behavior(Behavior::Normal);
    c.send(&pipelined_message(&[b"retry\r\n"]));
    assert!(c.replies(3).iter().all(|r| r.ok()));
    assert_eq!(fake.messages().len(), 1);
    assert_eq!(fake.messages()[0].data, b"retry\r\n");
}

/// The message a recording sink got by DATA, without its dot-stuffing.
fn unstuffed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut line_start = true;
    for &b in data {
        if line_start && b == b'.' {
            line_start = false;
            continue;
        }
        line_start = b == b'\n';
        out.push(b);
    }
    out
}

#[test]
fn postfix_member_takes_bdat_and_relays_the_message_unchanged() {
    if !require_root("a Postfix instance") || !require("postfix") {
        return;
    }
    let sink = FakeMta::start("sink", Behavior::Normal);
    let postfix = PostfixInstance::start(sink.addr, false);
    let gw = Mxgate::start(&policy("", &[member("pfx", postfix.addr, "")]));
    let mut c = chunking_client(&gw);
    let body: &[u8] =
        b"\r\nfirst line\r\n.\r\n..two dots\r\n.lead\r\n\xc3\xa9 8-bit\r\nlast line\r\n";
    let message = [
        &b"From: <s@source.test>\r\nTo: <r@example.com>\r\nSubject: bdat\r\n"[..],
        body,
    ]
    .concat();
    let (a, rest) = message.split_at(70);
    let (b, d) = rest.split_at(9);
    c.send(&pipelined_message(&[a, b, d]));
    let replies = c.replies(5);
    assert!(
        replies.iter().all(|r| r.ok()),
        "{replies:?}\n{}",
        postfix.maillog()
    );
    assert!(replies[4].text.contains("queued as"), "{}", replies[4]);
    c.expect("QUIT", "221");
    assert!(
        eventually(Duration::from_secs(30), || !sink.messages().is_empty()),
        "Postfix did not relay the message:\n{}",
        postfix.maillog()
    );
    let got = unstuffed(&sink.messages()[0].data);
    assert!(
        got.ends_with(body) && got.windows(15).any(|w| w == b"Subject: bdat\r\n"),
        "message changed on its way:\n{}",
        String::from_utf8_lossy(&got)
    );
    // Postfix counted the BDAT commands of mxgate's session.
    assert!(
        eventually(Duration::from_secs(10), || postfix
            .maillog()
            .lines()
            .any(|l| l.contains("disconnect from") && l.contains("bdat=3"))),
        "no bdat=3 in Postfix's log:\n{}",
        postfix.maillog()
    );
}

#[test]
fn an_injected_bdat_message_has_its_attachment_extracted() {
    let fake = chunking_fake("dst", Behavior::Normal);
    let injector = "127.91.0.9";
    let text = policy(
        "",
        &[
            "[lft]\nthreshold = \"1KiB\"\n".to_owned(),
            member("dst", fake.addr, ""),
            format!(
                "[members.src]\naddresses = [\"{injector}\"]\ninject_to = [\"dst\"]\nlft_sync_to = [\"dst\"]\n"
            ),
        ],
    );
    let gw = Mxgate::start(&text);
    // A text attachment with dot-led lines: BDAT content is not unstuffed.
    let attachment: String = (0..40)
        .map(|i| {
            format!(
                "{}line {i:02} of the attachment, long enough to pass the threshold\r\n",
                if i % 7 == 0 { "." } else { "" }
            )
        })
        .collect();
    let attachment = attachment.trim_end().to_owned();
    let message = format!(
        "From: a@example.com\r\nTo: b@example.com\r\nMessage-ID: <bdat@example.com>\r\nSubject: lft\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--XX\r\nContent-Type: application/octet-stream; name=\"notes.txt\"\r\nContent-Disposition: attachment; filename=\"notes.txt\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{attachment}\r\n--XX--\r\n"
    );
    let (a, b) = message.as_bytes().split_at(300);
    let mut c = chunking_client_from(&gw, ip(injector));
    c.send(&pipelined_message(&[a, b]));
    let replies = c.replies(4);
    assert!(replies.iter().all(|r| r.ok()), "{replies:?}");
    assert_eq!(fake.messages()[0].data, message.as_bytes());
    let objects = gw.data_dir().join("lft/objects");
    let stored = || -> Vec<Vec<u8>> {
        let dirs = std::fs::read_dir(&objects).into_iter().flatten().flatten();
        dirs.flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .map(|f| f.path())
            .filter(|p| p.extension().is_none())
            .filter_map(|p| std::fs::read(p).ok())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(20), || stored()
            .iter()
            .any(|s| s == attachment.as_bytes())),
        "attachment not stored; stored: {:?}\n{}",
        stored()
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>(),
        gw.logs().join("\n")
    );
}
