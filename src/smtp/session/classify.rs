//! The policy step of a client session: what one command line becomes
//! ([`Pending`]), decided from the session's state without touching a socket. EHLO,
//! HELO, NOOP, RSET, QUIT and the other commands mxgate answers itself are
//! answered here; MAIL, RCPT, DATA and BDAT are checked against the
//! listener's limits and passed on to [`crate::smtp::relay`].

use tracing::{info, warn};

use super::{Pending, Session};
use crate::metrics;
use crate::smtp::proto::{self, Command, Extensions, MailFrom, RcptTo, Reply};
use crate::smtp::upstream::ClientIdentity;

/// XCLIENT attributes mxgate accepts from trusted proxies.
const XCLIENT_ATTRS: &str = "NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT";

/// Recipients over `max_recipients` answered `452 4.5.3` in one transaction
/// before those replies count toward `max_errors` (Postfix's
/// `smtpd_recipient_overshoot_limit`). A sender with more recipients than
/// the limit sends them all and retries the rest later (RFC 5321 4.5.3.1.10):
/// counting the 452s as errors would close the session before the message
/// was sent, and its retry would fail the same way.
pub(crate) const RCPT_OVERSHOOT_LIMIT: usize = 1000;

impl<S> Session<S> {
    /// The policy step: what one command line becomes. Returns the item and
    /// whether the session ends after its reply (QUIT).
    pub(super) fn classify(&mut self, line: &[u8]) -> (Pending, bool) {
        let command = match proto::parse_command(line) {
            Ok(command) => command,
            Err(_) if self.client.offered.chunking && proto::is_bdat(line) => {
                return (self.bad_bdat(line), false);
            }
            Err(err) => return (Pending::Reply(Reply::from(&err)), false),
        };
        // RFC 3030: once chunks were sent, the transaction takes only more
        // BDAT (or RSET) until `BDAT LAST` (Postfix's replies).
        let chunking = self.client.chunking.is_open();
        let item = match command {
            Command::Ehlo(name) => self.greet(name, "ESMTP"),
            Command::Helo(name) => self.greet(name, "SMTP"),
            Command::Mail(_) if chunking => reply(503, "5.5.1", "Error: MAIL after BDAT"),
            Command::Rcpt(_) if chunking => reply(503, "5.5.1", "Error: RCPT after BDAT"),
            Command::Data if chunking => reply(503, "5.5.1", "Error: DATA after BDAT"),
            Command::Mail(mail) => self.mail(mail),
            Command::Rcpt(rcpt) => self.rcpt(rcpt),
            Command::Data => {
                // A transaction no member could take stays answered with 451
                // (retry later) until RSET or a new MAIL.
                if self.client.mail_open || self.link.is_broken() {
                    self.client.forget_envelope();
                    Pending::Data
                } else {
                    reply(503, "5.5.1", "Error: need RCPT command")
                }
            }
            Command::Rset => {
                self.client.forget_envelope();
                Pending::Rset
            }
            Command::Noop => reply(250, "2.0.0", "Ok"),
            Command::Quit => return (reply(221, "2.0.0", "Bye"), true),
            Command::Help => reply(214, "2.0.0", "See RFC 5321"),
            Command::Vrfy => reply(252, "2.5.0", "Cannot VRFY user, but will accept message"),
            Command::Expn => reply(502, "5.5.1", "Error: EXPN not implemented"),
            Command::StartTls => self.starttls(),
            Command::Auth => reply(502, "5.5.1", "Error: authentication not offered"),
            // Not offered (HELO, or a member without CHUNKING): like any
            // unknown command; what follows is read as command lines.
            Command::Bdat { .. } if !self.client.offered.chunking => {
                reply(502, "5.5.1", "Error: CHUNKING not offered")
            }
            // Whether a member takes it is known once the commands before
            // it are resolved (see `crate::smtp::relay::bdat`).
            Command::Bdat { size, last } => Pending::Bdat { size, last },
            Command::Xclient(attrs) => self.xclient(attrs),
            Command::Proxy => {
                warn!(session = self.peer.id, client = %self.peer.client, "PROXY header refused: not at connection start from a trusted proxy");
                metrics::refused(&self.ctx.listener.name, metrics::reason::PROXY_UNTRUSTED);
                reply(550, "5.7.1", "Error: PROXY not accepted here")
            }
            Command::Unknown(_) => reply(500, "5.5.2", "Error: command not recognized"),
        };
        (item, false)
    }

    fn greet(&mut self, name: String, proto: &'static str) -> Pending {
        self.client.forget_envelope();
        let listener = &self.ctx.listener;
        let reply = if proto == "SMTP" {
            Reply::new(250, "", &listener.hostname)
        } else {
            self.client.offered = self
                .ctx
                .router
                .extensions(&self.ctx.members, self.peer.client.ip());
            let size = format!("SIZE {}", listener.max_message_size);
            let xclient = format!("XCLIENT {XCLIENT_ATTRS}");
            let mut lines = vec![listener.hostname.as_str(), "PIPELINING", size.as_str()];
            if self.client.trusted {
                lines.push(xclient.as_str());
            }
            if self.ctx.tls.is_some() && !self.client.tls {
                lines.push("STARTTLS");
            }
            lines.extend(["8BITMIME", "ENHANCEDSTATUSCODES"]);
            for keyword in self.client.offered.keywords() {
                lines.push(keyword);
            }
            Reply::multiline(250, &lines)
        };
        if proto == "SMTP" {
            self.client.offered = Extensions::default();
        }
        self.client.helo = Some((name, proto));
        Pending::Reset(reply)
    }

    /// A malformed BDAT when CHUNKING was offered: its chunk follows, of a
    /// size not known, so nothing after it can be read as a command. Like
    /// Postfix: `521 5.5.4` and the connection is closed.
    fn bad_bdat(&self, line: &[u8]) -> Pending {
        let shown = String::from_utf8_lossy(&line[..line.len().min(100)]).into_owned();
        warn!(session = self.peer.id, client = %self.peer.client, command = %shown, "malformed BDAT; closing the session");
        Pending::Hangup(Reply::new(521, "5.5.4", "Syntax: BDAT count [LAST]"))
    }

    /// STARTTLS: accepted once, when offered. The reply resets the session
    /// (HELO/EHLO, transaction, member connection), as RFC 3207 requires.
    fn starttls(&mut self) -> Pending {
        if self.client.tls {
            return reply(503, "5.5.1", "Error: TLS already active");
        }
        if self.ctx.tls.is_none() {
            return reply(502, "5.5.1", "Error: STARTTLS not offered here");
        }
        self.client.starttls = true;
        self.client.helo = None;
        self.client.forget_envelope();
        Pending::Reset(Reply::new(220, "2.0.0", "Ready to start TLS"))
    }

    fn mail(&mut self, mail: MailFrom) -> Pending {
        if self.client.helo.is_none() {
            return reply(503, "5.5.1", "Error: send HELO/EHLO first");
        }
        if self.ctx.listener.require_tls && !self.client.tls {
            return reply(530, "5.7.0", "Must issue a STARTTLS command first");
        }
        if self.client.mail_open {
            return reply(503, "5.5.1", "Error: nested MAIL command");
        }
        if let Err(err) = proto::params::check_mail(&mail.params, self.client.offered) {
            return Pending::Reply(Reply::from(&err));
        }
        if mail.params.iter().any(|p| p.keyword == "SIZE") && mail.size().is_none() {
            return reply(501, "5.5.4", "Error: bad SIZE value");
        }
        if mail
            .size()
            .is_some_and(|size| size > self.ctx.listener.max_message_size)
        {
            metrics::refused(&self.ctx.listener.name, metrics::reason::MESSAGE_SIZE);
            return reply(552, "5.3.4", "Error: message size exceeds fixed limit");
        }
        self.client.open_mail();
        Pending::Mail(mail)
    }

    fn rcpt(&mut self, rcpt: RcptTo) -> Pending {
        let client = &mut self.client;
        if !client.mail_open && !self.link.is_broken() {
            return reply(503, "5.5.1", "Error: need MAIL command");
        }
        if let Err(err) = proto::params::check_rcpt(&rcpt.params, client.offered) {
            return Pending::Reply(Reply::from(&err));
        }
        if client.rcpts_asked >= self.ctx.listener.max_recipients {
            client.overshoot += 1;
            if client.overshoot <= RCPT_OVERSHOOT_LIMIT {
                return Pending::Overshoot;
            }
            return Pending::Reply(too_many_recipients());
        }
        client.rcpts_asked += 1;
        Pending::Rcpt(rcpt)
    }

    fn xclient(&mut self, attrs: Vec<(String, String)>) -> Pending {
        if !self.client.trusted {
            warn!(session = self.peer.id, client = %self.peer.client, "XCLIENT refused: client is not in trusted_proxies");
            metrics::refused(&self.ctx.listener.name, metrics::reason::XCLIENT_UNTRUSTED);
            return reply(550, "5.7.1", "Error: insufficient authorization");
        }
        let mut client = self.peer.client;
        let mut destination = self.peer.destination;
        let mut helo = None;
        let mut client_name = None;
        for (name, value) in attrs {
            // Values go on to the member (EHLO, XCLIENT): nothing that could
            // end a line or hide a command may pass.
            if value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                warn!(session = self.peer.id, client = %self.peer.client, attribute = %name, "XCLIENT refused: control character or space in a value");
                return reply(501, "5.5.4", "Error: bad XCLIENT attribute value");
            }
            let unavailable = value.starts_with('[');
            match name.as_str() {
                "ADDR" if !unavailable => match parse_xclient_ip(&value) {
                    Some(ip) => client.set_ip(ip),
                    None => return reply(501, "5.5.4", "Error: bad XCLIENT ADDR"),
                },
                "PORT" if !unavailable => match value.parse() {
                    Ok(port) => client.set_port(port),
                    Err(_) => return reply(501, "5.5.4", "Error: bad XCLIENT PORT"),
                },
                "DESTADDR" if !unavailable => match parse_xclient_ip(&value) {
                    Some(ip) => destination.set_ip(ip),
                    None => return reply(501, "5.5.4", "Error: bad XCLIENT DESTADDR"),
                },
                "DESTPORT" if !unavailable => match value.parse() {
                    Ok(port) => destination.set_port(port),
                    Err(_) => return reply(501, "5.5.4", "Error: bad XCLIENT DESTPORT"),
                },
                "HELO" if !unavailable => helo = Some(value),
                // `[UNAVAILABLE]` and `[TEMPUNAVAIL]` are passed on as given.
                "NAME" => client_name = Some(value),
                _ => {}
            }
        }
        info!(session = self.peer.id, from = %self.peer.client, client = %client, "XCLIENT from trusted proxy");
        self.peer.client = client;
        self.peer.destination = destination;
        if client_name.is_some() {
            self.peer.name = client_name;
        }
        // Like Postfix, trust is decided once per connection: a proxy may send
        // several XCLIENT commands, and attributes not named stay as they were.
        if let Some(name) = helo {
            self.client.helo = Some((name, "ESMTP"));
        }
        self.client.forget_envelope();
        let greeting = [self.ctx.listener.hostname.as_str(), " ESMTP"].concat();
        Pending::Reset(Reply::new(220, "", &greeting))
    }

    /// The identity passed to the member (XCLIENT or PROXY). The client's
    /// names are a trusted proxy's XCLIENT `NAME` when it gave one, else
    /// the lookup's answer, awaited here for at most `[dns] client_lookup_timeout`.
    pub(crate) async fn identity(&mut self) -> ClientIdentity {
        let (helo, proto) = self
            .client
            .helo
            .clone()
            .unwrap_or_else(|| (self.peer.client.ip().to_string(), "SMTP"));
        let (name, reverse_name) = match &self.peer.name {
            Some(given) => (given.clone(), None),
            None => {
                let names = self.ctx.client_names.as_ref();
                let bound = self.ctx.config.policy.dns.client_lookup_timeout;
                let ip = self.peer.client.ip();
                let found = self.peer.names.get(names, ip, bound).await;
                let reverse = found.reverse.as_xclient().to_owned();
                (found.name.as_xclient().to_owned(), Some(reverse))
            }
        };
        ClientIdentity {
            client: self.peer.client,
            destination: self.peer.destination,
            helo,
            proto,
            name,
            reverse_name,
        }
    }
}

/// The reply to a recipient over `max_recipients`.
pub(crate) fn too_many_recipients() -> Reply {
    Reply::new(452, "4.5.3", "Error: too many recipients")
}

fn reply(code: u16, enhanced: &str, text: &str) -> Pending {
    Pending::Reply(Reply::new(code, enhanced, text))
}

fn parse_xclient_ip(value: &str) -> Option<std::net::IpAddr> {
    let text = value
        .strip_prefix("IPV6:")
        .or_else(|| value.strip_prefix("ipv6:"))
        .unwrap_or(value);
    text.parse().ok()
}
