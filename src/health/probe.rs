//! The SMTP check dialogue, sans-IO: which command to send after which reply,
//! and when the check has passed or failed.
//!
//! `greeting 2xx -> EHLO 2xx [-> STARTTLS 220 -> (handshake) -> EHLO 2xx]`.
//! The driver ([`super::smtp_check`]) parses replies with
//! [`crate::smtp::proto::parse_reply`], feeds them to [`Probe::on_reply`],
//! performs what comes back, and always ends with QUIT while the connection is up.

use crate::smtp::proto::{Capabilities, Extensions, Reply};

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write these bytes, then read the next reply.
    Send(Vec<u8>),
    /// Run the TLS handshake, then call [`Probe::on_tls`].
    StartTls,
    /// The check is over: passed (`Ok`) or failed with a reason.
    Done(Result<(), String>),
}

/// Where the dialogue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Greeting,
    Ehlo,
    StartTls,
    Handshake,
    EhloAfterTls,
    Over,
}

/// One SMTP check's dialogue.
#[derive(Debug)]
pub struct Probe {
    phase: Phase,
    ehlo: Vec<u8>,
    starttls: bool,
    /// What the last positive EHLO reply offered.
    extensions: Option<Extensions>,
}

impl Probe {
    /// A check that says `EHLO ehlo_name` and, when `starttls`, requires STARTTLS.
    pub fn new(ehlo_name: &str, starttls: bool) -> Probe {
        // Config and listener names never hold spaces or controls; be safe anyway.
        let name = if ehlo_name.is_empty()
            || ehlo_name.bytes().any(|b| b.is_ascii_control() || b == b' ')
        {
            "[UNAVAILABLE]"
        } else {
            ehlo_name
        };
        Probe {
            phase: Phase::Greeting,
            ehlo: format!("EHLO {name}\r\n").into_bytes(),
            starttls,
            extensions: None,
        }
    }

    /// What is awaited now, for timeout reasons (`greeting`, `EHLO reply`, ...).
    pub fn waiting_for(&self) -> &'static str {
        match self.phase {
            Phase::Greeting => "greeting",
            Phase::Ehlo | Phase::EhloAfterTls => "EHLO reply",
            Phase::StartTls => "STARTTLS reply",
            Phase::Handshake => "TLS handshake",
            Phase::Over => "nothing",
        }
    }

    /// The next step after `reply`.
    pub fn on_reply(&mut self, reply: &Reply) -> Step {
        match self.phase {
            Phase::Greeting => {
                if !reply.is_positive() {
                    return self.fail("greeting", reply);
                }
                self.phase = Phase::Ehlo;
                Step::Send(self.ehlo.clone())
            }
            Phase::Ehlo => {
                if !reply.is_positive() {
                    return self.fail("EHLO", reply);
                }
                let caps = Capabilities::from_ehlo(reply);
                if !self.starttls {
                    self.extensions = Some(caps.extensions());
                    return self.pass();
                }
                if !caps.starttls {
                    self.phase = Phase::Over;
                    return Step::Done(Err("STARTTLS not offered".into()));
                }
                self.phase = Phase::StartTls;
                Step::Send(b"STARTTLS\r\n".to_vec())
            }
            Phase::StartTls => {
                if reply.code() != 220 {
                    return self.fail("STARTTLS", reply);
                }
                self.phase = Phase::Handshake;
                Step::StartTls
            }
            Phase::EhloAfterTls => {
                if !reply.is_positive() {
                    return self.fail("EHLO after STARTTLS", reply);
                }
                self.extensions = Some(Capabilities::from_ehlo(reply).extensions());
                self.pass()
            }
            Phase::Handshake | Phase::Over => {
                self.phase = Phase::Over;
                Step::Done(Err("unexpected reply".into()))
            }
        }
    }

    /// The optional extensions the member's last EHLO reply offered (the
    /// one after STARTTLS when the check uses it), once the check passed.
    pub fn extensions(&self) -> Option<Extensions> {
        self.extensions
    }

    /// The TLS handshake succeeded: EHLO again (RFC 3207).
    pub fn on_tls(&mut self) -> Step {
        if self.phase != Phase::Handshake {
            self.phase = Phase::Over;
            return Step::Done(Err("unexpected TLS handshake".into()));
        }
        self.phase = Phase::EhloAfterTls;
        Step::Send(self.ehlo.clone())
    }

    fn pass(&mut self) -> Step {
        self.phase = Phase::Over;
        Step::Done(Ok(()))
    }

    fn fail(&mut self, what: &str, reply: &Reply) -> Step {
        self.phase = Phase::Over;
        Step::Done(Err(format!("{what}: {}", first_line(reply))))
    }
}

/// The reply's first line, as text, for reasons (`421 4.3.2 busy`).
pub fn first_line(reply: &Reply) -> String {
    let raw = reply.as_bytes();
    let end = memchr::memchr(b'\n', raw).unwrap_or(raw.len());
    let line = String::from_utf8_lossy(&raw[..end]);
    let line = line.trim_end();
    // Reasons end up in logs and `status`: keep them short and printable.
    line.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::smtp::proto::parse_reply;

    fn reply(text: &str) -> Reply {
        let mut buf = BytesMut::from(text);
        match parse_reply(&mut buf) {
            Ok(Some(r)) => r,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    /// Runs a dialogue: each reply in turn (`"TLS"` stands for a finished handshake);
    /// returns every step.
    fn run(starttls: bool, replies: &[&str]) -> Vec<Step> {
        let mut p = Probe::new("mx.test", starttls);
        replies
            .iter()
            .map(|r| {
                if *r == "TLS" {
                    p.on_tls()
                } else {
                    p.on_reply(&reply(r))
                }
            })
            .collect()
    }

    fn send(s: &str) -> Step {
        Step::Send(s.as_bytes().to_vec())
    }

    #[test]
    fn dialogues() {
        let ehlo = "250-mta.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
        let ehlo_tls = "250-mta.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n";
        #[rustfmt::skip]
        let cases: &[(&str, bool, &[&str], Vec<Step>)] = &[
            ("passes", false, &["220 mta.test ESMTP\r\n", ehlo],
             vec![send("EHLO mx.test\r\n"), Step::Done(Ok(()))]),
            ("421 greeting", false, &["421 4.3.2 busy\r\n"],
             vec![Step::Done(Err("greeting: 421 4.3.2 busy".into()))]),
            ("554 greeting", false, &["554 5.7.1 go away\r\n"],
             vec![Step::Done(Err("greeting: 554 5.7.1 go away".into()))]),
            ("EHLO refused", false, &["220 hi\r\n", "502 5.5.1 no EHLO\r\n"],
             vec![send("EHLO mx.test\r\n"), Step::Done(Err("EHLO: 502 5.5.1 no EHLO".into()))]),
            ("multi-line greeting", false, &["220-mta.test\r\n220 ESMTP\r\n", ehlo],
             vec![send("EHLO mx.test\r\n"), Step::Done(Ok(()))]),
            ("starttls passes", true, &["220 hi\r\n", ehlo_tls, "220 go ahead\r\n", "TLS", ehlo],
             vec![send("EHLO mx.test\r\n"), send("STARTTLS\r\n"), Step::StartTls,
                  send("EHLO mx.test\r\n"), Step::Done(Ok(()))]),
            ("starttls not offered", true, &["220 hi\r\n", ehlo],
             vec![send("EHLO mx.test\r\n"), Step::Done(Err("STARTTLS not offered".into()))]),
            ("starttls refused", true, &["220 hi\r\n", ehlo_tls, "454 4.7.0 TLS not available\r\n"],
             vec![send("EHLO mx.test\r\n"), send("STARTTLS\r\n"),
                  Step::Done(Err("STARTTLS: 454 4.7.0 TLS not available".into()))]),
            ("EHLO after TLS refused", true, &["220 hi\r\n", ehlo_tls, "220 go\r\n", "TLS", "421 bye\r\n"],
             vec![send("EHLO mx.test\r\n"), send("STARTTLS\r\n"), Step::StartTls,
                  send("EHLO mx.test\r\n"), Step::Done(Err("EHLO after STARTTLS: 421 bye".into()))]),
        ];
        for (name, starttls, replies, want) in cases {
            assert_eq!(&run(*starttls, replies), want, "{name}");
        }
    }

    #[test]
    fn odd_names_and_text_are_made_safe() {
        let mut p = Probe::new("bad name\r\nRSET", false);
        assert_eq!(
            p.on_reply(&reply("220 hi\r\n")),
            send("EHLO [UNAVAILABLE]\r\n")
        );
        let r = reply("421 \x1b[31mred\r\n");
        assert_eq!(first_line(&r), "421 ?[31mred");
        assert_eq!(p.waiting_for(), "EHLO reply");
    }
}
