//! The daemon's log lines as the SMTP suites read them: waiting (bounded)
//! for lines that match, and the `session end` line of one client's session.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Mxgate;

/// How long a test waits for a log line.
pub const LOG_WAIT: Duration = Duration::from_secs(10);

/// Waits (at most [`LOG_WAIT`]) until some log line satisfies `pred`;
/// returns all that do (none when the time ran out).
pub fn wait_for(gw: &Mxgate, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let lines: Vec<String> = gw.logs().into_iter().filter(|l| pred(l)).collect();
        if !lines.is_empty() || Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What [`session_end`] asserts about the number of `session end` lines
/// of one session, beyond there being one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndLines {
    /// Nothing: the first line found is returned.
    First,
    /// Exactly one when the first shows up.
    One,
    /// Exactly one when the first shows up, and still one 50 ms later (a
    /// duplicate written a moment after the first fails too).
    OneSettled,
}

/// Waits (at most [`LOG_WAIT`]) for the `session end` line of the session
/// whose client is `client`; `count` says what else is asserted.
#[track_caller]
pub fn session_end(gw: &Mxgate, client: SocketAddr, count: EndLines) -> String {
    let needle = format!("client={client} ");
    let is_end = |l: &str| l.contains("session end") && l.contains(&needle);
    let lines = wait_for(gw, is_end);
    assert!(
        !lines.is_empty(),
        "no session end for {client}:\n{}",
        gw.logs().join("\n")
    );
    if count != EndLines::First {
        assert_eq!(
            lines.len(),
            1,
            "exactly one session end line for {client}: {lines:#?}"
        );
    }
    if count == EndLines::OneSettled {
        // Give a duplicate a moment to show up, then count again.
        std::thread::sleep(Duration::from_millis(50));
        let again: Vec<String> = gw.logs().into_iter().filter(|l| is_end(l)).collect();
        assert_eq!(again.len(), 1, "{again:#?}");
    }
    lines[0].clone()
}
