//! Logs (SPEC section 10): one line per session end with client, helo,
//! member, messages, recipients, bytes, duration and outcome, as text or JSON.

mod common;

use std::time::Duration;

use common::{Behavior, Client, FakeMta, Mxgate, default_listener, member, policy};

#[test]
fn json_session_end_line_has_every_field() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let node = format!("{}\n[log]\nformat = \"json\"\n", default_listener());
    let gw = Mxgate::start_with(&node, &policy("", &[member("m1", fake.addr, "")]));
    let mut c = Client::greeted_from("127.0.10.1".parse().expect("ip"), gw.smtp_addr());
    c.expect("EHLO json.example", "250");
    assert_eq!(c.send_mail("a@x", &["b@y", "c@y"], "hello json").code, 250);
    c.expect("QUIT", "221");
    let line = gw
        .wait_log("session end", Duration::from_secs(10))
        .expect("a session end line");
    let event: serde_json::Value = serde_json::from_str(&line).expect("log line is JSON");
    let fields = &event["fields"];
    assert_eq!(fields["message"], "session end", "{event}");
    assert!(
        fields["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.10.1:")),
        "{event}"
    );
    assert_eq!(fields["helo"], "json.example", "{event}");
    assert_eq!(fields["member"], "m1", "{event}");
    assert_eq!(fields["messages"], 1, "{event}");
    assert_eq!(fields["recipients"], 2, "{event}");
    assert!(fields["bytes"].as_u64().is_some_and(|b| b >= 10), "{event}");
    assert!(fields["duration_ms"].as_u64().is_some(), "{event}");
    assert_eq!(fields["outcome"], "quit", "{event}");
}

#[test]
fn text_log_has_one_session_end_line_per_session() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&policy("", &[member("m1", fake.addr, "")]));
    for i in 1..=3 {
        let mut c = Client::greeted_from(
            format!("127.0.10.{}", 10 + i).parse().expect("ip"),
            gw.smtp_addr(),
        );
        c.expect("EHLO text.example", "250");
        c.expect("QUIT", "221");
    }
    let lines = gw
        .wait_logs("session end", 3, Duration::from_secs(10))
        .expect("three session end lines");
    assert_eq!(lines.len(), 3);
    for line in lines {
        assert!(line.contains("outcome=quit"), "{line}");
        assert!(line.contains("helo=\"text.example\""), "{line}");
    }
}
