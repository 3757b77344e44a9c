//! mxgate between real third-party peers: Postfix `smtp-source` and `swaks`
//! as clients; Postfix `smtp-sink` and a throwaway Postfix MTA as members.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::peers::{PostfixInstance, SmtpSink, swaks};
use common::{Mxgate, member, policy, policy_with, require, require_root, run_bounded};

/// Upper bound for one load run; smtp-source is killed after it.
const LOAD_LIMIT: Duration = Duration::from_secs(120);

fn two_sink_gateway(routing: &str) -> (Mxgate, SmtpSink, SmtpSink) {
    let a = SmtpSink::start("127.0.0.1");
    let b = SmtpSink::start("127.0.0.1");
    let gw = Mxgate::start(&policy(
        routing,
        &[member("sink1", a.addr, ""), member("sink2", b.addr, "")],
    ));
    (gw, a, b)
}

/// Runs smtp-source (all from 127.0.0.1) against mxgate in front of two sinks
/// and checks that every message was dumped exactly once. Returns the counts
/// of sink1 and sink2, and the first choice `route explain` names for 127.0.0.1.
fn smtp_source_run(
    routing: &str,
    args: &[&str],
    messages: usize,
) -> Option<(usize, usize, String)> {
    if !require("smtp-source") || !require("smtp-sink") {
        return None;
    }
    let (gw, a, b) = two_sink_gateway(routing);
    let started = Instant::now();
    let (out, killed) = run_bounded(
        Command::new("smtp-source").args(args).args([
            "-f",
            "sender@source.test",
            "-t",
            "rcpt@example.com",
            &gw.smtp_addr().to_string(),
        ]),
        LOAD_LIMIT,
    );
    let elapsed = started.elapsed();
    assert!(
        !killed,
        "smtp-source {args:?} did not finish within {LOAD_LIMIT:?}"
    );
    assert!(
        out.status.success(),
        "smtp-source {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // smtp-source only returns after the last 250 to the end of data, and a
    // sink answers that after writing the file; allow a moment for the last
    // files to be closed all the same.
    let total = || a.count() + b.count();
    common::eventually(Duration::from_secs(10), || total() >= messages);
    let (na, nb) = (a.count(), b.count());
    eprintln!(
        "smtp-source {args:?}: {messages} messages in {elapsed:.2?} ({:.0} msg/s); sink1 {na}, sink2 {nb}",
        messages as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(
        na + nb,
        messages,
        "sinks dumped {na} + {nb} messages, expected exactly {messages}"
    );
    // Every dumped message is a complete one.
    let short: Vec<_> = a
        .messages()
        .into_iter()
        .chain(b.messages())
        .filter(|m| m.len() < 4096)
        .map(|m| m.len())
        .collect();
    assert!(
        short.is_empty(),
        "{} truncated messages (sizes {short:?})",
        short.len()
    );
    let first = gw
        .first_choice("127.0.0.1".parse().expect("ip"))
        .expect("first choice");
    Some((na, nb, first))
}

#[test]
fn smtp_source_2000_messages_20_sessions_all_counted() {
    // Affinity "none": 20 concurrent sessions spread over both sinks by load.
    let args = ["-s", "20", "-m", "2000", "-l", "4096"];
    let Some((a, b, _)) = smtp_source_run("affinity = \"none\"", &args, 2000) else {
        return;
    };
    assert!(
        a > 0 && b > 0,
        "affinity none: both sinks should get messages (sink1 {a}, sink2 {b})"
    );
}

#[test]
fn smtp_source_persistent_sessions_all_counted() {
    // Default affinity: one client address, so every session sticks to the first choice.
    let args = ["-s", "4", "-m", "2000", "-l", "4096", "-d"];
    let Some((a, b, first)) = smtp_source_run("", &args, 2000) else {
        return;
    };
    let expected = if first == "sink1" {
        (2000, 0)
    } else {
        (0, 2000)
    };
    assert_eq!(
        (a, b),
        expected,
        "one client: every message on its first choice {first}"
    );
}

/// The reply swaks shows right after it sent the end of data (` -> .`).
fn end_of_data_reply(transcript: &str) -> Option<&str> {
    let lines: Vec<&str> = transcript.lines().collect();
    let dot = lines
        .iter()
        .rposition(|l| l.trim_end() == "-> ." || l.trim_end().ends_with(" -> ."))?;
    lines[dot + 1..]
        .iter()
        .find(|l| l.trim_start().starts_with("<-"))
        .copied()
}

#[test]
fn swaks_through_mxgate_to_smtp_sink() {
    if !require("swaks") || !require("smtp-sink") {
        return;
    }
    let sink = SmtpSink::start("127.0.0.1");
    let gw = Mxgate::start(&policy("", &[member("sink", sink.addr, "")]));

    let (out, ok) = swaks(gw.smtp_addr(), &["--helo", "client.example"]);
    assert!(ok, "swaks failed:\n{out}");
    let reply =
        end_of_data_reply(&out).unwrap_or_else(|| panic!("no end-of-data reply in:\n{out}"));
    assert!(
        reply.contains("<-  250"),
        "end of data answered {reply:?}:\n{out}"
    );
    assert_eq!(
        sink.wait_count(1, Duration::from_secs(10)),
        1,
        "one message dumped"
    );

    // With PIPELINING: MAIL, RCPT and DATA in one batch.
    let (out, ok) = swaks(gw.smtp_addr(), &["--helo", "client.example", "--pipeline"]);
    assert!(ok, "swaks --pipeline failed:\n{out}");
    assert!(
        out.contains("PIPELINING"),
        "mxgate should offer PIPELINING:\n{out}"
    );
    let reply =
        end_of_data_reply(&out).unwrap_or_else(|| panic!("no end-of-data reply in:\n{out}"));
    assert!(
        reply.contains("<-  250"),
        "end of data answered {reply:?}:\n{out}"
    );
    assert_eq!(
        sink.wait_count(2, Duration::from_secs(10)),
        2,
        "two messages dumped"
    );
}

/// The `Received:` header Postfix (host name `pfxPORT.test`) wrote into the
/// message the sink dumped (the sink adds its own on top).
fn postfix_received(sink: &SmtpSink) -> String {
    assert_eq!(
        sink.wait_count(1, Duration::from_secs(30)),
        1,
        "Postfix did not relay the message to the sink"
    );
    // smtp-sink creates the dump file before it has written all of it: read
    // until the header is there (bounded).
    let mut found = None;
    let mut last = String::new();
    common::eventually(Duration::from_secs(10), || {
        last = sink.messages().pop().unwrap_or_default();
        found = postfix_received_in(&last);
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no Received header by Postfix in:\n{last}"))
}

/// The `Received:` header Postfix wrote (unfolded), if the message has one.
fn postfix_received_in(message: &str) -> Option<String> {
    let mut headers: Vec<String> = Vec::new();
    for line in message.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            headers.push(line.to_owned());
        }
    }
    headers
        .into_iter()
        .find(|h| h.starts_with("Received:") && h.contains(" by pfx"))
}

fn send_from_77(gw: &Mxgate) {
    let (out, ok) = swaks(
        gw.smtp_addr(),
        &[
            "--helo",
            "client.example",
            "--local-interface",
            "127.0.0.77",
        ],
    );
    assert!(ok, "swaks failed:\n{out}");
    let reply =
        end_of_data_reply(&out).unwrap_or_else(|| panic!("no end-of-data reply in:\n{out}"));
    assert!(
        reply.contains("<-  250"),
        "end of data answered {reply:?}:\n{out}"
    );
}

#[test]
fn postfix_member_sees_original_client_via_xclient() {
    if !require_root("a Postfix instance")
        || !require("postfix")
        || !require("smtp-sink")
        || !require("swaks")
    {
        return;
    }
    let sink = SmtpSink::start("127.0.0.1");
    let postfix = PostfixInstance::start(sink.addr, false);
    let gw = Mxgate::start(&policy("", &[member("pfx", postfix.addr, "")]));
    send_from_77(&gw);
    let received = postfix_received(&sink);
    eprintln!("{received}");
    assert!(
        received.contains("from client.example (") && received.contains("[127.0.0.77])"),
        "Received header should show the original client, got: {received}\nmaillog:\n{}",
        postfix.maillog()
    );
}

#[test]
fn postfix_member_sees_original_client_via_proxy_v2() {
    if !require_root("a Postfix instance")
        || !require("postfix")
        || !require("smtp-sink")
        || !require("swaks")
    {
        return;
    }
    let sink = SmtpSink::start("127.0.0.1");
    let postfix = PostfixInstance::start(sink.addr, true);
    let members = [member("pfx", postfix.addr, "")];
    let text = policy_with("", &[("proxy_protocol", "\"v2\"")], &members);
    let gw = Mxgate::start(&text);
    send_from_77(&gw);
    let received = postfix_received(&sink);
    eprintln!("{received}");
    assert!(
        received.contains("from client.example (") && received.contains("[127.0.0.77])"),
        "Received header should show the original client, got: {received}\nmaillog:\n{}",
        postfix.maillog()
    );
}
