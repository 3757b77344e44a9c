//! Failover between members (SPEC 4.6, 4.8, 5): connect refused, greeting
//! 421, silent member, envelope failure with replay, 421 at MAIL, loss during
//! DATA, nothing left, back-off, a kept connection that died, and the log
//! lines that record all of it.
//!
//! Two fake MTAs `a` and `b`; the test asks `route explain` which one is the
//! client's first choice and breaks that one. Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::logs::{EndLines, LOG_WAIT, session_end, wait_for};
use common::{
    Behavior, Client, FakeMta, Mxgate, ip, listener, member, member_row, one_member, policy_with,
};

const CLIENT: &str = "127.0.0.33";

/// A gateway in front of two fakes, with the client's first choice known.
struct Pair {
    gw: Mxgate,
    first: FakeMta,
    second: FakeMta,
}

impl Pair {
    fn start(routing: &str, upstream: &[(&str, &str)]) -> Pair {
        let a = FakeMta::start("a", Behavior::Normal);
        let b = FakeMta::start("b", Behavior::Normal);
        let gw = Mxgate::start(&policy_with(
            routing,
            upstream,
            &[member("a", a.addr, ""), member("b", b.addr, "")],
        ));
        let first = gw.first_choice(ip(CLIENT)).expect("a first choice");
        let (first, second) = if first == "a" { (a, b) } else { (b, a) };
        Pair { gw, first, second }
    }

    fn client(&self) -> Client {
        let mut c = Client::greeted_from(ip(CLIENT), self.gw.smtp_addr());
        assert_eq!(c.cmd("EHLO client.example").code, 250);
        c
    }

    /// Asserts a `failover` line for `client`'s session names from and to.
    fn assert_failover(&self, client: SocketAddr, from: &str, to: &str) {
        let needle = format!("client={client}");
        let found = wait_for(&self.gw, |l| {
            l.contains(": failover ") && l.contains(&needle)
        });
        assert!(
            found
                .iter()
                .any(|l| l.contains(&format!("from={from} ")) && l.contains(&format!("to={to} "))),
            "no failover line from {from} to {to} for {client}:\n{}",
            self.gw.logs().join("\n")
        );
    }

    /// The one `session end` line of `client`'s session (after QUIT).
    fn session_end(&self, client: SocketAddr) -> String {
        session_end(&self.gw, client, EndLines::OneSettled)
    }
}

/// Asserts the session-end fields.
#[track_caller]
fn assert_end(line: &str, member: &str, messages: u64, recipients: u64, outcome: &str) {
    for field in [
        format!("member={member} "),
        format!("messages={messages} "),
        format!("recipients={recipients} "),
        format!("outcome={outcome}"),
    ] {
        assert!(line.contains(&field), "{field} missing in {line}");
    }
    let bytes = line
        .split(' ')
        .find_map(|f| f.strip_prefix("bytes="))
        .expect("bytes field");
    assert!(bytes.parse::<u64>().is_ok(), "{line}");
}

/// Sends one message, every step must be accepted; returns the final reply text.
fn deliver(c: &mut Client, rcpts: &[&str], body: &str) -> String {
    let r = c.send_mail("sender@x", rcpts, body);
    assert_eq!(r.code, 250, "{r}");
    r.text
}

// 1-3, 5: failures before or at MAIL are invisible -------------------------------

fn invisible_failover(pair: &Pair) {
    let mut c = pair.client();
    deliver(&mut c, &["rcpt@y"], "Subject: failover\r\n\r\nhello");
    assert_eq!(c.cmd("QUIT").code, 221);
    assert!(pair.first.messages().is_empty());
    let msgs = pair.second.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpts, ["RCPT TO:<rcpt@y>"]);
    assert_eq!(msgs[0].data, b"Subject: failover\r\n\r\nhello\r\n");
    let (first, second) = (pair.first.name.as_str(), pair.second.name.as_str());
    pair.assert_failover(c.local_addr(), first, second);
    let end = pair.session_end(c.local_addr());
    assert!(
        end.contains("messages=1 ")
            && end.contains("recipients=1 ")
            && end.contains("outcome=quit"),
        "{end}"
    );
    let members = end
        .split(' ')
        .find_map(|f| f.strip_prefix("member="))
        .expect("member field");
    assert_eq!(
        members.rsplit(',').next(),
        Some(second),
        "the session ends on {second}: {end}"
    );
}

#[test]
fn connect_refused_goes_to_the_next_member() {
    let pair = Pair::start("", &[]);
    pair.first.kill();
    invisible_failover(&pair);
}

#[test]
fn greeting_421_goes_to_the_next_member() {
    let pair = Pair::start("", &[]);
    pair.first
        .set_behavior(Behavior::Greet("421 4.3.2 too busy".into()));
    invisible_failover(&pair);
    assert_eq!(pair.first.connections(), 1);
}

#[test]
fn silent_member_times_out_to_the_next_member() {
    let pair = Pair::start("", &[("greeting_timeout", "\"1s\"")]);
    pair.first.set_behavior(Behavior::Silent);
    let started = Instant::now();
    invisible_failover(&pair);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "greeting_timeout bounds the wait"
    );
    assert_eq!(pair.first.connections(), 1);
}

#[test]
fn reply_421_at_mail_goes_to_the_next_member() {
    let pair = Pair::start("", &[]);
    pair.first.set_behavior(Behavior::Reply421AtMail);
    invisible_failover(&pair);
    assert!(pair.first.commands().iter().any(|l| l.starts_with("MAIL")));
}

// 4. failover during the envelope, with replay -------------------------------------

fn drop_at_rcpt(pipelined: bool) {
    let pair = Pair::start("", &[]);
    pair.first.set_behavior(Behavior::DropAtRcpt(2));
    let mut c = pair.client();
    if pipelined {
        c.send(b"MAIL FROM:<sender@x>\r\nRCPT TO:<r1@y>\r\nRCPT TO:<r2@y>\r\nDATA\r\n");
        let codes: Vec<u16> = c.replies(4).iter().map(|r| r.code).collect();
        assert_eq!(codes, [250, 250, 250, 354]);
    } else {
        c.expect("MAIL FROM:<sender@x>", "250");
        c.expect("RCPT TO:<r1@y>", "250");
        c.expect("RCPT TO:<r2@y>", "250");
        c.expect("DATA", "354");
    }
    c.send(b"Subject: replay\r\n\r\nbody\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250, "{r}");
    assert!(
        r.text
            .contains(&format!("queued as {}-1", pair.second.name)),
        "{r}"
    );
    assert_eq!(c.cmd("QUIT").code, 221);
    assert!(pair.first.messages().is_empty());
    let first_cmds = pair.first.commands();
    assert!(
        first_cmds.iter().any(|l| l == "RCPT TO:<r1@y>"),
        "{first_cmds:?}"
    );
    let msgs = pair.second.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].mail, "MAIL FROM:<sender@x>");
    assert_eq!(
        msgs[0].rcpts,
        ["RCPT TO:<r1@y>", "RCPT TO:<r2@y>"],
        "envelope replayed"
    );
    assert_eq!(msgs[0].data, b"Subject: replay\r\n\r\nbody\r\n");
    // The member saw MAIL exactly once and each recipient exactly once.
    let second_cmds = pair.second.commands();
    assert_eq!(
        second_cmds.iter().filter(|l| l.starts_with("MAIL")).count(),
        1,
        "{second_cmds:?}"
    );
    assert_eq!(
        second_cmds
            .iter()
            .filter(|l| *l == "RCPT TO:<r1@y>")
            .count(),
        1,
        "{second_cmds:?}"
    );
    assert_eq!(
        second_cmds
            .iter()
            .filter(|l| *l == "RCPT TO:<r2@y>")
            .count(),
        1,
        "{second_cmds:?}"
    );
    let (first, second) = (pair.first.name.as_str(), pair.second.name.as_str());
    pair.assert_failover(c.local_addr(), first, second);
    let end = pair.session_end(c.local_addr());
    assert_end(&end, &format!("{first},{second}"), 1, 2, "quit");
}

#[test]
fn envelope_failover_replays_mail_and_accepted_rcpts() {
    drop_at_rcpt(false);
}

#[test]
fn pipelined_envelope_failover_replays_mail_and_accepted_rcpts() {
    drop_at_rcpt(true);
}

#[test]
fn member_lost_at_data_command_fails_over_invisibly() {
    let pair = Pair::start("", &[]);
    pair.first.set_behavior(Behavior::DropAtData);
    let mut c = pair.client();
    c.send(b"MAIL FROM:<sender@x>\r\nRCPT TO:<r1@y>\r\nRCPT TO:<reject@y>\r\nRCPT TO:<r2@y>\r\nDATA\r\n");
    let codes: Vec<u16> = c.replies(5).iter().map(|r| r.code).collect();
    assert_eq!(codes, [250, 250, 550, 250, 354]);
    c.send(b"body\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    let msgs = pair.second.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0].rcpts,
        ["RCPT TO:<r1@y>", "RCPT TO:<r2@y>"],
        "only accepted recipients are replayed"
    );
    assert!(!pair.second.commands().iter().any(|l| l.contains("reject")));
    assert!(pair.first.messages().is_empty());
    let (first, second) = (pair.first.name.as_str(), pair.second.name.as_str());
    pair.assert_failover(c.local_addr(), first, second);
}

#[test]
fn no_member_left_mid_envelope_tempfails_the_rest() {
    let pair = Pair::start("", &[]);
    pair.first.set_behavior(Behavior::DropAtRcpt(2));
    pair.second.kill();
    let mut c = pair.client();
    c.expect("MAIL FROM:<sender@x>", "250");
    c.expect("RCPT TO:<r1@y>", "250");
    c.expect("RCPT TO:<r2@y>", "451 4.4.1");
    c.expect("DATA", "451 4.4.1");
    assert!(pair.first.messages().is_empty());
    // A connection lost in the middle of one session's envelope moves only
    // that session: the member is not put into back-off for everyone, so a
    // new transaction starts over on it (it still answers).
    c.expect("RSET", "250");
    c.expect("MAIL FROM:<sender@x>", "250");
    let status = pair.gw.status();
    let first = member_row(&status, &pair.first.name);
    assert_eq!(first["healthy"], true, "{status}");
    c.expect("QUIT", "221");
    let end = pair.session_end(c.local_addr());
    assert_end(&end, &pair.first.name, 0, 0, "quit");
}

// 6. lost during DATA ---------------------------------------------------------------

#[test]
fn member_lost_during_data_gets_451_and_session_continues() {
    let pair = Pair::start("", &[]);
    pair.first.set_behavior(Behavior::DropDuringData(1000));
    let mut c = pair.client();
    c.expect("MAIL FROM:<sender@x>", "250");
    c.expect("RCPT TO:<r@y>", "250");
    c.expect("DATA", "354");
    let line = "x".repeat(98) + "\r\n";
    c.send(line.repeat(100).as_bytes());
    c.send(b".\r\n");
    let r = c.reply();
    assert!(
        r.text.starts_with("451 4.4.2"),
        "never 250 for a message the member did not take: {r}"
    );
    assert!(pair.first.messages().is_empty());
    assert!(pair.second.messages().is_empty());
    // The session carries on; the next message is accepted.
    c.expect("NOOP", "250");
    deliver(&mut c, &["r@y"], "small one");
    let total = pair.first.messages().len() + pair.second.messages().len();
    assert_eq!(total, 1);
    assert_eq!(c.cmd("QUIT").code, 221);
    assert!(
        pair.gw
            .wait_log("member lost during DATA", LOG_WAIT)
            .is_some()
    );
    let end = pair.session_end(c.local_addr());
    assert!(
        end.contains("messages=1 ") && end.contains("recipients=1 "),
        "{end}"
    );
}

// 7. nothing left -------------------------------------------------------------------

#[test]
fn all_members_down_tempfails() {
    let pair = Pair::start("", &[]);
    pair.first.kill();
    pair.second.kill();
    let mut c = pair.client();
    c.expect("MAIL FROM:<sender@x>", "451 4.4.1");
    c.expect("RCPT TO:<r@y>", "451 4.4.1");
    c.expect("DATA", "451 4.4.1");
    c.expect("RSET", "250");
    c.expect("MAIL FROM:<sender@x>", "451 4.4.1");
    assert_eq!(c.cmd("QUIT").code, 221);
    let end = pair.session_end(c.local_addr());
    assert_end(&end, "", 0, 0, "quit");
}

#[test]
fn max_attempts_limits_failover() {
    let pair = Pair::start("max_attempts = 1", &[]);
    pair.first.kill();
    let mut c = pair.client();
    c.expect("MAIL FROM:<sender@x>", "451 4.4.1");
    assert_eq!(pair.second.connections(), 0, "only one attempt");
    assert!(pair.second.messages().is_empty());
}

// 8. back-off -----------------------------------------------------------------------

#[test]
fn failed_member_is_backed_off_and_reported() {
    let pair = Pair::start("", &[]);
    let (first, second) = (pair.first.name.clone(), pair.second.name.clone());
    pair.first.kill();
    let mut c = pair.client();
    deliver(&mut c, &["r@y"], "one");
    let status = pair.gw.status();
    let m = member_row(&status, &first);
    assert_eq!(m["healthy"], false, "{status}");
    assert!(
        m["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{status}"
    );
    let other = member_row(&status, &second);
    assert_eq!(other["healthy"], true, "{status}");
    let explain = pair.gw.explain(ip(CLIENT));
    assert_eq!(explain["order"][0]["member"], second.as_str(), "{explain}");
    let excluded = explain["excluded"].as_array().expect("excluded");
    let e = excluded
        .iter()
        .find(|e| e["member"] == first.as_str())
        .unwrap_or_else(|| panic!("{first} not excluded: {explain}"));
    assert!(
        e["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{explain}"
    );
}

#[test]
fn backed_off_member_is_not_tried_by_new_sessions() {
    let pair = Pair::start("", &[]);
    pair.first
        .set_behavior(Behavior::Greet("421 4.3.2 too busy".into()));
    let mut c = pair.client();
    deliver(&mut c, &["r@y"], "one");
    assert_eq!(c.cmd("QUIT").code, 221);
    assert_eq!(pair.first.connections(), 1);
    for n in 0..3 {
        let mut c = pair.client();
        deliver(&mut c, &["r@y"], &format!("again {n}"));
        assert_eq!(c.cmd("QUIT").code, 221);
        let end = pair.session_end(c.local_addr());
        assert!(
            end.contains(&format!("member={} ", pair.second.name)),
            "{end}"
        );
    }
    assert_eq!(
        pair.first.connections(),
        1,
        "the backed-off member gets no new connection"
    );
    assert_eq!(pair.second.messages().len(), 4);
}

#[test]
fn backed_off_member_gets_its_clients_back_after_backoff() {
    let pair = Pair::start("", &[("backoff", "\"1s\"")]);
    let (first, second) = (pair.first.name.clone(), pair.second.name.clone());
    pair.first
        .set_behavior(Behavior::Greet("421 4.3.2 too busy".into()));
    let mut c = pair.client();
    deliver(&mut c, &["r@y"], "during back-off");
    assert_eq!(
        pair.gw.explain(ip(CLIENT))["order"][0]["member"],
        second.as_str()
    );
    pair.first.set_behavior(Behavior::Normal);
    // Poll (bounded) until the back-off has run out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pair.gw.first_choice(ip(CLIENT)).as_deref() != Some(first.as_str()) {
        assert!(
            Instant::now() < deadline,
            "{first} never came back: {}",
            pair.gw.explain(ip(CLIENT))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut c = pair.client();
    deliver(&mut c, &["r@y"], "after back-off");
    assert_eq!(
        pair.first.messages().len(),
        1,
        "the client is back on its first choice"
    );
    assert_eq!(pair.second.messages().len(), 1);
}

// 9. a kept connection that died between transactions ---------------------------------

#[test]
fn dead_idle_connection_is_replaced() {
    let pair = Pair::start("", &[]);
    let mut c = pair.client();
    deliver(&mut c, &["r@y"], "one");
    assert_eq!(pair.first.connections(), 1);
    // The member closes its idle connection (restart, idle timeout).
    pair.first.drop_connections();
    deliver(&mut c, &["r@y"], "two");
    assert_eq!(
        pair.first.connections(),
        2,
        "a new connection to the same member"
    );
    // Again, with the next transaction pipelined in one write.
    pair.first.drop_connections();
    c.send(b"MAIL FROM:<sender@x>\r\nRCPT TO:<r@y>\r\nDATA\r\n");
    let codes: Vec<u16> = c.replies(3).iter().map(|r| r.code).collect();
    assert_eq!(codes, [250, 250, 354]);
    c.send(b"three\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(pair.first.connections(), 3);
    assert_eq!(pair.first.messages().len(), 3);
    assert_eq!(pair.second.connections(), 0);
    assert_eq!(c.cmd("QUIT").code, 221);
    let end = pair.session_end(c.local_addr());
    assert_end(&end, &pair.first.name, 3, 3, "quit");
    // A member closing an idle connection is no failure of the member.
    assert_eq!(pair.gw.status()["members"][0]["healthy"], true);
    assert_eq!(pair.gw.status()["members"][1]["healthy"], true);
}

#[test]
fn member_gone_between_transactions_fails_over() {
    let pair = Pair::start("", &[]);
    let mut c = pair.client();
    deliver(&mut c, &["r@y"], "one");
    pair.first.kill();
    deliver(&mut c, &["r@y"], "two");
    assert_eq!(pair.first.messages().len(), 1);
    assert_eq!(pair.second.messages().len(), 1);
    assert_eq!(c.cmd("QUIT").code, 221);
    let (first, second) = (pair.first.name.as_str(), pair.second.name.as_str());
    pair.assert_failover(c.local_addr(), first, second);
    let end = pair.session_end(c.local_addr());
    assert_end(&end, &format!("{first},{second}"), 2, 2, "quit");
}

// Review regressions -------------------------------------------------------------

#[test]
fn a_421_caused_by_one_client_backs_off_no_member_for_others() {
    // Postfix says 421 at its error limit: that is about this client, so the
    // session fails over but the member stays in routing for everyone else.
    let fake = FakeMta::start("m1", Behavior::Reply421AtRcpt(2));
    let gw = Mxgate::start(&one_member(&fake));
    let mut noisy = Client::greeted_from(ip("127.0.11.1"), gw.smtp_addr());
    noisy.expect("EHLO noisy.example", "250");
    noisy.expect("MAIL FROM:<a@x>", "250");
    noisy.expect("RCPT TO:<r1@y>", "250");
    noisy.expect("RCPT TO:<r2@y>", "451 4.4.1");
    fake.set_behavior(Behavior::Normal);
    let mut other = Client::greeted_from(ip("127.0.11.2"), gw.smtp_addr());
    other.expect("EHLO other.example", "250");
    assert_eq!(other.send_mail("a@x", &["b@y"], "still routed").code, 250);
    assert_eq!(fake.messages().len(), 1);
}

#[test]
fn pipelined_rset_after_the_kept_connection_died_still_delivers() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.11.3"), gw.smtp_addr());
    c.expect("EHLO client.example", "250");
    assert_eq!(c.send_mail("a@x", &["b@y"], "first").code, 250);
    fake.drop_connections();
    c.send(b"RSET\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n");
    let codes: Vec<u16> = c.replies(4).iter().map(|r| r.code).collect();
    assert_eq!(codes, vec![250, 250, 250, 354]);
    c.send(b"second\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    assert_eq!(fake.messages().len(), 2);
}

#[test]
fn a_refused_mail_opens_no_transaction() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.11.4"), gw.smtp_addr());
    c.expect("EHLO client.example", "250");
    c.expect("MAIL FROM:<reject@x>", "550 5.7.1");
    c.expect("RCPT TO:<b@y>", "503 5.5.1");
    // The next MAIL is a new transaction, not a nested one.
    assert_eq!(c.send_mail("good@x", &["b@y"], "after a refusal").code, 250);
}

#[test]
fn xclient_values_cannot_inject_commands() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let node = listener("trusted_proxies = [\"127.0.11.5/32\"]");
    let gw = Mxgate::start_with(&node, &one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.11.5"), gw.smtp_addr());
    c.expect("EHLO proxy.example", "250");
    c.expect(
        "XCLIENT ADDR=192.0.2.7 HELO=evil+0D+0ARCPT+20TO:<injected@victim>",
        "501 5.5.4",
    );
    assert_eq!(c.send_mail("a@x", &["b@y"], "clean").code, 250);
    assert!(
        !fake.commands().iter().any(|l| l.contains("injected")),
        "{:?}",
        fake.commands()
    );
}

#[test]
fn trusted_proxy_passes_the_client_name_on() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let node = listener("trusted_proxies = [\"127.0.11.6/32\"]");
    let gw = Mxgate::start_with(&node, &one_member(&fake));
    let mut c = Client::greeted_from(ip("127.0.11.6"), gw.smtp_addr());
    c.expect("EHLO proxy.example", "250");
    c.expect("XCLIENT NAME=mail.example.org ADDR=192.0.2.8", "220");
    c.expect("EHLO mail.example.org", "250");
    assert_eq!(c.send_mail("a@x", &["b@y"], "named").code, 250);
    let x = &fake.messages()[0].xclient[0];
    assert!(x.split(' ').any(|a| a == "NAME=mail.example.org"), "{x}");
}
