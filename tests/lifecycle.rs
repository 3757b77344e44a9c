//! Limits, timeouts, drain (SIGTERM) and reload (SIGHUP) over real sockets
//! (SPEC section 4, items 9 and 12): each limit answers with its exact code
//! and the daemon keeps serving everyone else.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::peers::SmtpSink;
use common::{
    Behavior, Client, FakeMta, Mxgate, default_listener, eventually, ip, listener, member,
    one_member, policy, require, run_bounded,
};

/// A full message in one session proves the daemon still serves.
fn still_serves(gw: &Mxgate, from: &str) {
    let mut c = Client::greeted_from(ip(from), gw.smtp_addr());
    c.expect("EHLO other.example", "250");
    assert_eq!(c.send_mail("a@x", &["b@y"], "still here").code, 250);
    c.expect("QUIT", "221");
}

/// True when a fresh connection is refused, or closed without a greeting.
fn not_greeted(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return true;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut first = String::new();
    use std::io::BufRead;
    let _ = std::io::BufReader::new(stream).read_line(&mut first);
    !first.starts_with("220")
}

#[test]
fn max_sessions_refuses_at_the_greeting_and_others_go_on() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&listener("max_sessions = 2"), &one_member(&fake));
    let mut a = Client::greeted_from(ip("127.0.9.1"), gw.smtp_addr());
    let _b = Client::greeted_from(ip("127.0.9.2"), gw.smtp_addr());
    let mut c = Client::connect_from(ip("127.0.9.3"), gw.smtp_addr());
    let refused = c.reply();
    assert!(refused.text.starts_with("421 4.7.0"), "{refused}");
    assert!(c.is_closed());
    a.expect("QUIT", "221");
    // The slot comes back once the first session has ended.
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut d = Client::connect_from(ip("127.0.9.4"), gw.smtp_addr());
            d.reply().code == 220
        }),
        "a slot should be free again"
    );
    assert!(
        gw.wait_log("max_sessions", Duration::from_secs(5))
            .is_some()
    );
}

#[test]
fn max_sessions_per_client_counts_one_address() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&listener("max_sessions_per_client = 1"), &one_member(&fake));
    let _first = Client::greeted_from(ip("127.0.9.11"), gw.smtp_addr());
    let mut second = Client::connect_from(ip("127.0.9.11"), gw.smtp_addr());
    let refused = second.reply();
    assert!(refused.text.starts_with("421 4.7.0"), "{refused}");
    assert!(second.is_closed());
    still_serves(&gw, "127.0.9.12");
}

#[test]
fn trusted_proxy_is_not_held_to_the_per_client_limit() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let node = listener("max_sessions_per_client = 1\ntrusted_proxies = [\"127.0.9.15/32\"]");
    let gw = Mxgate::start_with(&node, &one_member(&fake));
    // A proxy passing its clients with XCLIENT carries many sessions at once.
    let _one = Client::greeted_from(ip("127.0.9.15"), gw.smtp_addr());
    let _two = Client::greeted_from(ip("127.0.9.15"), gw.smtp_addr());
    let mut three = Client::greeted_from(ip("127.0.9.15"), gw.smtp_addr());
    three.expect("EHLO proxy.example", "250");
}

#[test]
fn too_many_errors_closes_with_421() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&listener("max_errors = 3"), &one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.9.21"), gw.smtp_addr());
    c.expect("EHLO client.example", "250");
    c.expect("BOGUS1", "500 5.5.2");
    c.expect("BOGUS2", "500 5.5.2");
    c.send(b"BOGUS3\r\n");
    let replies = c.read_to_close().expect("replies until close");
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(replies[0].starts_with("500 5.5.2"), "{replies:?}");
    assert!(replies[1].starts_with("421 4.7.0"), "{replies:?}");
    still_serves(&gw, "127.0.9.22");
    assert!(
        gw.wait_log("too many errors", Duration::from_secs(5))
            .is_some()
    );
}

#[test]
fn idle_client_times_out_with_421() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&listener("command_timeout = \"1s\""), &one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.9.31"), gw.smtp_addr());
    c.expect("EHLO client.example", "250");
    let started = Instant::now();
    let r = c.reply();
    assert!(r.text.starts_with("421 4.4.2"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(c.is_closed());
    still_serves(&gw, "127.0.9.32");
}

#[test]
fn stalled_data_times_out_and_nothing_reaches_the_member() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&listener("data_timeout = \"1s\""), &one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.9.41"), gw.smtp_addr());
    c.expect("EHLO client.example", "250");
    c.expect("MAIL FROM:<a@x>", "250");
    c.expect("RCPT TO:<b@y>", "250");
    c.expect("DATA", "354");
    c.send(b"Subject: half\r\n\r\nthe rest never comes");
    let r = c.reply();
    assert!(r.text.starts_with("421 4.4.2"), "{r}");
    assert!(c.is_closed());
    still_serves(&gw, "127.0.9.42");
    assert_eq!(fake.messages().len(), 1, "only the later message arrived");
}

#[test]
fn sigterm_drains_transactions_in_flight_and_refuses_new_sessions() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let mut gw = Mxgate::start(&one_member(&fake));
    let addr = gw.smtp_addr();
    let mut idle = Client::greeted_from(ip("127.0.9.51"), addr);
    idle.expect("EHLO idle.example", "250");
    let mut busy = Client::greeted_from(ip("127.0.9.52"), addr);
    busy.expect("EHLO busy.example", "250");
    busy.expect("MAIL FROM:<a@x>", "250");
    busy.expect("RCPT TO:<b@y>", "250");
    busy.expect("DATA", "354");
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n");

    gw.terminate();
    assert!(gw.wait_log("stopping", Duration::from_secs(10)).is_some());
    // The idle session is told at once.
    let r = idle.reply();
    assert!(r.text.starts_with("421 4.3.2"), "{r}");
    // New connections are refused or closed, never greeted.
    assert!(
        not_greeted(addr),
        "a new session was greeted while draining"
    );
    // The transaction in flight completes, then the session is closed.
    busy.send(b"second half\r\n.\r\n");
    let r = busy.reply();
    assert_eq!(r.code, 250, "{r}");
    let r = busy.reply();
    assert!(r.text.starts_with("421 4.3.2"), "{r}");
    assert_eq!(fake.messages().len(), 1);
    assert!(
        gw.wait_exit(Duration::from_secs(20)).is_some(),
        "daemon did not exit"
    );
}

#[test]
fn drain_timeout_ends_a_stuck_transaction_with_421_and_nothing_is_delivered() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let mut gw = Mxgate::start_full(
        "drain_timeout = \"1s\"",
        &default_listener(),
        &one_member(&fake),
    );
    let mut stuck = Client::greeted_from(ip("127.0.9.61"), gw.smtp_addr());
    stuck.expect("EHLO stuck.example", "250");
    stuck.expect("MAIL FROM:<a@x>", "250");
    stuck.expect("RCPT TO:<b@y>", "250");
    stuck.expect("DATA", "354");
    stuck.send(b"Subject: never finished\r\n\r\n");
    gw.terminate();
    let r = stuck.reply();
    assert!(r.text.starts_with("421 4.3.2"), "{r}");
    assert!(
        gw.wait_exit(Duration::from_secs(20)).is_some(),
        "daemon did not exit"
    );
    assert!(
        fake.messages().is_empty(),
        "an unfinished message must not be delivered"
    );
}

#[test]
fn reload_under_traffic_loses_no_message() {
    if !require("smtp-source") || !require("smtp-sink") {
        return;
    }
    let a = SmtpSink::start("127.0.0.1");
    let b = SmtpSink::start("127.0.0.1");
    let only_a = policy("affinity = \"none\"", &[member("a", a.addr, "")]);
    let a_and_b = policy(
        "affinity = \"none\"",
        &[member("a", a.addr, ""), member("b", b.addr, "")],
    );
    let only_b = policy("affinity = \"none\"", &[member("b", b.addr, "")]);
    let gw = Mxgate::start(&only_a);
    let total = 1500;
    let addr = gw.smtp_addr().to_string();
    let source = std::thread::spawn(move || {
        let mut cmd = Command::new("smtp-source");
        cmd.args(["-s", "5", "-m", &total.to_string(), "-l", "2048"])
            .args(["-f", "sender@example.org", "-t", "rcpt@example.com"])
            .arg(&addr);
        run_bounded(&mut cmd, Duration::from_secs(120))
    });
    // Change the members twice while mail flows: add b, then remove a.
    assert!(a.wait_count(300, Duration::from_secs(60)) >= 300);
    gw.reload_policy(&a_and_b);
    assert!(
        eventually(Duration::from_secs(60), || b.count() >= 100),
        "b should get mail after the first reload"
    );
    gw.reload_policy(&only_b);
    let (out, killed) = source.join().expect("smtp-source thread");
    assert!(!killed, "smtp-source did not finish in time");
    assert!(
        out.status.success(),
        "smtp-source failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let delivered = a.count() + b.count();
    assert_eq!(delivered, total, "a: {}, b: {}", a.count(), b.count());
    let a_final = a.count();
    // After the second reload nothing new goes to a.
    still_serves_via(&gw);
    assert_eq!(a.count(), a_final);
}

fn still_serves_via(gw: &Mxgate) {
    let mut c = Client::greeted_from(ip("127.0.9.71"), gw.smtp_addr());
    c.expect("EHLO after.example", "250");
    assert_eq!(c.send_mail("a@x", &["b@y"], "after reloads").code, 250);
}

#[test]
fn a_client_that_never_reads_its_replies_does_not_hold_the_session() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&listener("command_timeout = \"1s\""), &one_member(&fake));
    let stream = TcpStream::connect(gw.smtp_addr()).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    // Pipeline far more commands than the socket buffers hold, never reading.
    let batch = "NOOP\r\n".repeat(10_000);
    let mut writer = &stream;
    for _ in 0..200 {
        use std::io::Write;
        if writer.write_all(batch.as_bytes()).is_err() {
            break;
        }
    }
    let active = || {
        gw.status()["listeners"][0]["active_sessions"]
            .as_u64()
            .unwrap_or(u64::MAX)
    };
    assert!(
        eventually(Duration::from_secs(20), || active() == 0),
        "the session should end once its replies cannot be written"
    );
    drop(stream);
    still_serves(&gw, "127.0.9.81");
}
