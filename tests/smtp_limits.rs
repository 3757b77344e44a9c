//! SMTP limits that real senders trip (SPEC 4.1 and 4.9), over real sockets
//! on 127.x against a fake MTA (and swaks to smtp-sink): recipients over `max_recipients` do not count
//! as errors (up to Postfix's overshoot allowance), `command_timeout` is a
//! deadline for a whole command line, DATA has a minimum data rate, and a
//! client that talked before the greeting is always caught.
//!
//! Every wait is bounded: by the client's read timeout, an explicit loop
//! bound, or a deadline.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::client::assert_reply;
use common::logs::{EndLines, LOG_WAIT, session_end};
use common::{Behavior, Client, FakeMta, Mxgate, ip, listener, one_member};

/// `MAIL`, then `n` recipients `r0@y` ... in one pipelined write (what a
/// PIPELINING sender such as Postfix does), optionally followed by DATA.
fn envelope(n: usize, data: bool) -> Vec<u8> {
    let mut out = b"MAIL FROM:<a@x>\r\n".to_vec();
    for i in 0..n {
        out.extend_from_slice(format!("RCPT TO:<r{i}@y>\r\n").as_bytes());
    }
    if data {
        out.extend_from_slice(b"DATA\r\n");
    }
    out
}

// 1. Recipients over max_recipients -------------------------------------------

#[test]
fn a_message_to_1020_recipients_reaches_1000_and_20_get_452() {
    // Defaults: max_recipients = 1000, max_errors = 20. Before, the 20
    // refused recipients were 20 errors and the session was closed with
    // `421 4.7.0` before the message was sent (and so was every retry).
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.21.1"), gw.smtp_addr());
    c.expect("EHLO sender.example", "250");
    c.send(&envelope(1020, true));
    assert_reply(&c.reply(), "250");
    let replies = c.replies(1020);
    for (i, r) in replies.iter().enumerate() {
        let expected = if i < 1000 { "250" } else { "452 4.5.3" };
        assert!(r.text.starts_with(expected), "RCPT {i}: {r}");
    }
    assert_reply(&c.reply(), "354");
    c.send(b"Subject: many\r\n\r\nhello\r\n.\r\n");
    assert_reply(&c.reply(), "250");
    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpts.len(), 1000);
    assert_eq!(messages[0].rcpts[999], "RCPT TO:<r999@y>");
    // The sender sends the other 20 in a second transaction, same session.
    c.send(&envelope(20, true));
    let replies = c.replies(22);
    assert!(replies.iter().take(21).all(|r| r.ok()), "{replies:?}");
    assert_reply(&replies[21], "354");
    c.send(b"Subject: rest\r\n\r\nhello\r\n.\r\n");
    assert_reply(&c.reply(), "250");
    c.expect("QUIT", "221");
    assert_eq!(fake.messages().len(), 2);
}

#[test]
fn swaks_to_1020_recipients_through_mxgate_to_smtp_sink() {
    // Real peers: swaks pipelining one message to 1020 recipients, a real
    // smtp-sink as the member.
    if !common::require("swaks") || !common::require("smtp-sink") {
        return;
    }
    let sink = common::peers::SmtpSink::start("127.0.0.1");
    let gw = Mxgate::start(&common::policy(
        "",
        &[common::member("sink", sink.addr, "")],
    ));
    let to: Vec<String> = (0..1020).map(|i| format!("r{i}@example.com")).collect();
    let to = to.join(",");
    let (text, ok) = common::peers::swaks(gw.smtp_addr(), &["--to", &to, "--pipeline"]);
    assert!(ok, "swaks failed:\n{text}");
    assert_eq!(text.matches("452 4.5.3").count(), 20, "{text}");
    assert!(!text.contains("421 "), "{text}");
    assert_eq!(sink.wait_count(1, LOG_WAIT), 1);
    let message = &sink.messages()[0];
    let rcpts: Vec<&str> = message
        .lines()
        .filter_map(|l| l.strip_prefix("X-Rcpt-Args: "))
        .collect();
    assert_eq!(rcpts.len(), 1000);
    assert_eq!(rcpts[999], "<r999@example.com>");
}

#[test]
fn recipients_beyond_the_overshoot_allowance_count_as_errors() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let node = listener("max_recipients = 1\nmax_errors = 3");
    let gw = Mxgate::start_with(&node, &one_member(&fake));
    // 1 accepted, 1000 free refusals, 2 counted: the session goes on.
    let mut c = Client::greeted_from(ip("127.0.21.2"), gw.smtp_addr());
    c.expect("EHLO sender.example", "250");
    c.send(&envelope(1 + 1000 + 2, false));
    let replies = c.replies(1 + 1 + 1000 + 2);
    assert!(replies[..2].iter().all(|r| r.ok()), "{:?}", &replies[..2]);
    assert!(
        replies[2..].iter().all(|r| r.text.starts_with("452 4.5.3")),
        "all refused for the limit"
    );
    c.expect("NOOP", "250");
    // A new transaction starts a new allowance; the errors stay counted:
    // one more (a bad command) ends the session.
    c.expect("RSET", "250");
    c.send(&envelope(1 + 1000, false));
    assert_eq!(c.replies(1 + 1 + 1000).len(), 1002);
    c.send(b"BOGUS\r\n");
    let rest = c.read_to_close().expect("replies until close");
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert!(rest[0].starts_with("500 5.5.2"), "{rest:?}");
    assert!(rest[1].starts_with("421 4.7.0"), "{rest:?}");
    // One past the allowance with max_errors = 1 closes at once.
    let node = listener("max_recipients = 1\nmax_errors = 1");
    let gw = Mxgate::start_with(&node, &one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.21.3"), gw.smtp_addr());
    c.expect("EHLO sender.example", "250");
    c.send(&envelope(1 + 1000 + 1, false));
    let replies = c.replies(1 + 1 + 1000 + 1);
    assert_reply(&replies[1002], "452 4.5.3");
    assert_reply(&c.reply(), "421 4.7.0");
    assert!(c.is_closed());
}

// 2. Deadlines ---------------------------------------------------------------

/// A raw client connection from `source`, greeted, for dripping bytes.
fn greeted_raw(source: &str, addr: SocketAddr) -> TcpStream {
    let mut stream = common::client::stream_from(ip(source), addr);
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert_eq!(raw_reply(&mut stream), "220 mx.test ESMTP");
    stream
}

/// Reads one reply (its last line) from a raw connection, bounded by a 10 s
/// read timeout and 64 KiB.
fn raw_reply(stream: &mut TcpStream) -> String {
    reply_after(stream, Vec::new())
}

/// Like [`raw_reply`], when the reply's first bytes (`line`) were read already.
fn reply_after(stream: &mut TcpStream, mut line: Vec<u8>) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    for _ in 0..65536 {
        stream.read_exact(&mut byte).expect("reply");
        line.push(byte[0]);
        if line.ends_with(b"\r\n") {
            if line.get(3) == Some(&b' ') {
                line.truncate(line.len() - 2);
                return String::from_utf8_lossy(&line).into_owned();
            }
            line.clear();
        }
    }
    panic!("reply too long");
}

/// Sends `line` on a raw connection and asserts its reply starts with `expected`.
#[track_caller]
fn raw_expect(stream: &mut TcpStream, line: &str, expected: &str) {
    stream
        .write_all(format!("{line}\r\n").as_bytes())
        .expect("send");
    let reply = raw_reply(stream);
    assert!(reply.starts_with(expected), "{line}: {reply}");
}

/// Writes `bytes` one at a time, `every` apart, until the server answers;
/// returns the answer (its last line) and how many bytes were written.
/// Bounded: at most `bytes.len()` writes.
fn drip_until_answered(stream: &mut TcpStream, bytes: &[u8], every: Duration) -> (String, usize) {
    let mut byte = [0u8; 1];
    for (i, b) in bytes.iter().enumerate() {
        stream.write_all(std::slice::from_ref(b)).expect("drip");
        // The pause between two bytes is this read's timeout.
        stream.set_read_timeout(Some(every)).expect("timeout");
        match stream.read(&mut byte) {
            Ok(0) => return (String::new(), i + 1),
            Ok(_) => {
                // The rest of the answer follows at once.
                return (reply_after(stream, byte.to_vec()), i + 1);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    panic!("never answered after {} bytes", bytes.len());
}

#[test]
fn a_dripped_command_line_is_cut_by_command_timeout() {
    // A byte every 500 ms used to restart a 2 s per-read timeout for ever.
    let fake = FakeMta::start("m1", Behavior::Normal);
    let node = listener("command_timeout = \"2s\"");
    let gw = Mxgate::start_with(&node, &one_member(&fake));
    let mut stream = greeted_raw("127.0.21.4", gw.smtp_addr());
    let started = Instant::now();
    let line = format!("EHLO {}\r\n", "d".repeat(40));
    let (answer, written) =
        drip_until_answered(&mut stream, line.as_bytes(), Duration::from_millis(500));
    let took = started.elapsed();
    assert!(answer.starts_with("421 4.4.2 "), "{answer:?}");
    assert!(
        written >= 3 && written < line.len(),
        "{written} bytes dripped"
    );
    // The deadline counts from the wait for the line (just before the
    // greeting was read here), not from the last byte.
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "cut after {took:?}"
    );
    let end = session_end(&gw, stream.local_addr().expect("addr"), EndLines::First);
    assert!(end.contains("outcome=client timeout"), "{end}");
}

#[test]
fn a_command_line_within_command_timeout_is_served() {
    // Slow but in time: the whole line in about 1.5 s of a 3 s deadline,
    // then the next line gets its own deadline.
    let fake = FakeMta::start("m1", Behavior::Normal);
    let node = listener("command_timeout = \"3s\"");
    let gw = Mxgate::start_with(&node, &one_member(&fake));
    let mut stream = greeted_raw("127.0.21.5", gw.smtp_addr());
    for _ in 0..2 {
        let (answer, written) =
            drip_until_answered(&mut stream, b"NOOP\r\n", Duration::from_millis(250));
        assert_eq!(written, 6, "{answer:?}");
        assert!(answer.starts_with("250 "), "{answer:?}");
    }
}

#[test]
fn dripped_data_is_cut_by_the_minimum_data_rate() {
    // 4 bytes a second against 10: each byte costs 0.25 s of the 2 s of
    // data_timeout and brings 0.1 s back, so the time runs out after about
    // 3.2 s, although every read came within 0.25 s.
    let fake = FakeMta::start("m1", Behavior::Normal);
    let node = listener("data_timeout = \"2s\"\nmin_data_rate = 10");
    let gw = Mxgate::start_with(&node, &one_member(&fake));
    let mut stream = greeted_raw("127.0.21.6", gw.smtp_addr());
    raw_expect(&mut stream, "EHLO sender.example", "250");
    raw_expect(&mut stream, "MAIL FROM:<a@x>", "250");
    raw_expect(&mut stream, "RCPT TO:<b@y>", "250");
    raw_expect(&mut stream, "DATA", "354");
    let started = Instant::now();
    let body = "x".repeat(200);
    let (answer, written) =
        drip_until_answered(&mut stream, body.as_bytes(), Duration::from_millis(250));
    let took = started.elapsed();
    assert!(answer.starts_with("421 4.4.2 "), "{answer:?}");
    // Later than data_timeout alone (the bytes bought time), but cut: about
    // 3.2 s at this pace, sooner if the dripping client is slowed down.
    assert!(
        took > Duration::from_secs(2) && took < Duration::from_secs(6),
        "cut after {took:?} and {written} bytes"
    );
    assert!(fake.messages().is_empty(), "the member discarded it");
    let end = session_end(&gw, stream.local_addr().expect("addr"), EndLines::First);
    assert!(end.contains("outcome=client timeout"), "{end}");
    // Steady data at 40 bytes a second for longer than data_timeout is fine.
    let mut c = Client::greeted_from(ip("127.0.21.7"), gw.smtp_addr());
    c.expect("EHLO sender.example", "250");
    c.expect("MAIL FROM:<a@x>", "250");
    c.expect("RCPT TO:<b@y>", "250");
    c.expect("DATA", "354");
    for i in 0..14 {
        c.send(format!("line {i:03}\r\n").as_bytes());
        std::thread::sleep(Duration::from_millis(250));
    }
    c.send(b".\r\n");
    assert_reply(&c.reply(), "250");
    assert_eq!(fake.messages().len(), 1);
}

// 3. Pre-greet -------------------------------------------------------------------

/// Sends SIGCONT to the daemon when dropped (a failed test must not leave it stopped).
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        common::signal(self.0, "CONT");
    }
}

/// Bytes waiting in the receive queue of the server side of the connection
/// `server` <-> `client`, from /proc/net/tcp (IPv4).
fn rx_queued(server: SocketAddr, client: SocketAddr) -> Option<u64> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let queues = fields.get(4)?;
        let (_, rx) = queues.split_once(':')?;
        u64::from_str_radix(rx, 16).ok()
    })
}

#[test]
fn every_client_talking_before_the_greeting_is_refused() {
    // greet_delay = 0 (the default). Each client's EHLO is in mxgate's
    // socket before the greeting is due: the daemon is stopped while the
    // clients connect (the kernel completes the handshakes) and send, and
    // continued once /proc/net/tcp shows every EHLO queued on its side.
    // Before, only those sessions whose readiness the event loop happened
    // to have learnt were caught (28 of 40); now every one is.
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let addr = gw.smtp_addr();
    let stopped = Continue(gw.pid());
    common::signal(gw.pid(), "STOP");
    let mut clients: Vec<Client> = (0..40)
        .map(|i| {
            let mut c = Client::connect_from(ip(&format!("127.0.22.{}", i + 1)), addr);
            c.send(b"EHLO early.example\r\n");
            c
        })
        .collect();
    let queued = common::eventually(Duration::from_secs(10), || {
        clients
            .iter()
            .all(|c| rx_queued(addr, c.local_addr()) == Some(20))
    });
    assert!(queued, "every EHLO queued at mxgate before it runs again");
    drop(stopped);
    for c in &mut clients {
        let r = c.reply();
        assert_reply(&r, "554 5.5.1");
        assert_eq!(c.read_to_close(), Ok(vec![]), "closed after the refusal");
    }
    assert!(
        gw.wait_logs("client talked before the greeting", 40, LOG_WAIT)
            .is_some()
    );
    assert_eq!(fake.connections(), 0);
    // A client that waits is greeted.
    let mut ok = Client::greeted_from(ip("127.0.22.99"), addr);
    ok.expect("EHLO patient.example", "250");
}
