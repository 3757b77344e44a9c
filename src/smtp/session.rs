//! One client SMTP session: the read loop and the policy step.
//!
//! Input is split into command lines; each line is classified by a pure step
//! ([`Session::classify`]) into a [`Pending`] item: a reply mxgate gives itself,
//! or a command to relay to the member. A pipelined batch (up to and including
//! `DATA`) is classified first and then resolved in order by
//! [`crate::smtp::relay`], which writes the relayed commands to the member in
//! one go and returns every reply in the client's order.
//!
//! STARTTLS (RFC 3207) ends the plain-text part: the `220` is sent, anything
//! the client pipelined after the command is discarded unread, and the same
//! session state is moved onto the TLS stream ([`Session::run`] re-wraps `S`
//! in `tokio_rustls::server::TlsStream<S>`) with HELO/EHLO, any transaction
//! and the member connection forgotten.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{ClientConfig, ServerConfig};
use tracing::{info, warn};

use crate::config::{Config, SmtpListener};
use crate::metrics;
use crate::routing::{MemberTable, Router};
use crate::shutdown::{Shutdown, StageWatch};
use crate::smtp::deadline::{Deadline, later};
use crate::smtp::proto::{self, Command, LineReader, MailFrom, RcptTo, Reply};
use crate::smtp::server::is_trusted;
use crate::smtp::upstream::{ClientIdentity, Upstream};

/// Room made in the input buffer before each read from the client.
/// Room made before reading commands: a command line is at most 512 octets,
/// so an idle session holds little.
pub(crate) const COMMAND_READ: usize = 1024;
/// Room made before the first read of message data: most messages fit in
/// one or two reads of it, without allocating (and faulting in) a large buffer.
pub(crate) const DATA_READ_FIRST: usize = 8 * 1024;
/// Room made before reading message data once reads fill the room given,
/// for throughput on large messages.
pub(crate) const DATA_READ: usize = 64 * 1024;

/// XCLIENT attributes mxgate accepts from trusted proxies.
const XCLIENT_ATTRS: &str = "NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT";

/// Recipients over `max_recipients` answered `452 4.5.3` in one transaction
/// before those replies count toward `max_errors` (Postfix's
/// `smtpd_recipient_overshoot_limit`). A sender with more recipients than
/// the limit sends them all and retries the rest later (RFC 5321 4.5.3.1.10):
/// counting the 452s as errors would close the session before the message
/// was sent, and its retry would fail the same way.
const RCPT_OVERSHOOT_LIMIT: usize = 1000;

/// What a session works with: one snapshot of configuration and routing.
#[derive(Clone)]
pub struct SessionContext {
    /// The listener the client reached.
    pub listener: Arc<SmtpListener>,
    /// Configuration snapshot taken when the session started.
    pub config: Arc<Config>,
    /// Routing snapshot taken when the session started.
    pub router: Arc<Router>,
    /// Live member state shared by all sessions.
    pub members: Arc<MemberTable>,
    /// Drain and abort signals.
    pub shutdown: Shutdown,
    /// STARTTLS for clients (`None`: not offered on this listener).
    pub tls: Option<Arc<ServerConfig>>,
    /// STARTTLS to members (`None`: `[upstream] tls = "none"`).
    pub upstream_tls: Option<Arc<ClientConfig>>,
    /// The LFT store: injected messages are tapped for attachments.
    pub lft: Option<Arc<crate::lft::Lft>>,
}

/// Where the client is, as far as the session knows.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Session id for logs.
    pub id: u64,
    /// The real client (after PROXY or XCLIENT).
    pub client: SocketAddr,
    /// The address the client reached.
    pub destination: SocketAddr,
    /// The client's verified host name, when a trusted proxy named it (XCLIENT `NAME`).
    pub name: Option<String>,
}

/// A client command after classification, in the order its reply is due.
#[derive(Debug)]
pub(crate) enum Pending {
    /// mxgate answers this itself.
    Reply(Reply),
    /// A recipient over `max_recipients`, within [`RCPT_OVERSHOOT_LIMIT`]:
    /// answered `452 4.5.3` without counting toward `max_errors`.
    Overshoot,
    /// EHLO/HELO/XCLIENT: ends any transaction and the member connection, then answers.
    Reset(Reply),
    /// Relayed `MAIL`.
    Mail(MailFrom),
    /// Relayed `RCPT`.
    Rcpt(RcptTo),
    /// Relayed `DATA`.
    Data,
    /// `RSET`: relayed when a member connection exists, answered `250` either way.
    Rset,
}

/// The open transaction as the member has accepted it (replayed on failover).
#[derive(Debug, Clone)]
pub(crate) struct Transaction {
    pub mail: MailFrom,
    pub rcpts: Vec<RcptTo>,
}

/// Counters for the session-end log line.
#[derive(Debug, Default)]
pub(crate) struct SessionStats {
    pub messages: u64,
    pub recipients: u64,
    pub bytes: u64,
    pub members: Vec<String>,
}

/// Why the session ended.
#[derive(Debug)]
pub(crate) enum End {
    Quit,
    ClientClosed,
    ClientTimeout,
    TooManyErrors,
    Shutdown,
    Io(std::io::Error),
    /// STARTTLS was answered `220`: the TLS handshake comes next.
    StartTls,
    /// The client's TLS handshake failed or timed out.
    TlsHandshake(String),
}

/// A client session over any stream (plain TCP, then TLS after STARTTLS).
pub struct Session<S> {
    pub(crate) io: S,
    pub(crate) ctx: SessionContext,
    pub(crate) peer: Peer,
    pub(crate) rbuf: BytesMut,
    pub(crate) wbuf: BytesMut,
    lines: LineReader,
    /// Client trusted for XCLIENT (its address is in `trusted_proxies`).
    trusted: bool,
    helo: Option<(String, &'static str)>,
    /// The stream is TLS (STARTTLS done).
    tls: bool,
    /// STARTTLS was accepted in the batch being read: nothing after it is read.
    starttls: bool,
    // Classification view: what the client has asked for so far.
    mail_open: bool,
    rcpts_asked: usize,
    /// Recipients of this transaction refused for `max_recipients` so far.
    overshoot: usize,
    // Resolution view: what the member has accepted.
    pub(crate) txn: Option<Transaction>,
    /// The transaction could not be placed anywhere: later commands of it get 451.
    pub(crate) broken: bool,
    pub(crate) upstream: Option<Upstream>,
    pub(crate) tried: Vec<String>,
    pub(crate) attempts: u32,
    /// Error replies (4xx/5xx) given so far, against `max_errors`.
    pub(crate) errors: usize,
    pub(crate) stats: SessionStats,
    /// The timer of every client read and write (one per connection).
    deadline: Deadline,
    /// Draining, watched by reads between transactions.
    drain: StageWatch,
    /// Commands encoded for the member, reused for every batch.
    pub(crate) obuf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A session whose greeting was sent ([`crate::smtp::greeting`]); `rbuf`
    /// holds bytes already read.
    pub fn new(io: S, ctx: SessionContext, peer: Peer, rbuf: BytesMut) -> Self {
        let trusted = is_trusted(&ctx.listener, peer.client);
        let drain = ctx.shutdown.watch_drain();
        Session {
            io,
            ctx,
            peer,
            rbuf,
            wbuf: BytesMut::with_capacity(512),
            lines: LineReader::new(),
            trusted,
            helo: None,
            tls: false,
            starttls: false,
            mail_open: false,
            rcpts_asked: 0,
            overshoot: 0,
            txn: None,
            broken: false,
            upstream: None,
            tried: Vec::new(),
            attempts: 0,
            errors: 0,
            stats: SessionStats::default(),
            deadline: Deadline::new(),
            drain,
            obuf: BytesMut::new(),
        }
    }

    /// Runs the session to its end and logs one line about it.
    pub async fn run(mut self) {
        let started = Instant::now();
        let end = self.serve_or_abort().await;
        if !matches!(end, End::StartTls) {
            return self.finish(end, started).await;
        }
        // Boxed: the TLS part of the session is large (the TLS stream and a
        // second copy of every session future) and rarely taken, and a
        // session task holds its future's full size from the start, idle or not.
        Box::pin(self.continue_in_tls(started)).await;
    }

    /// STARTTLS accepted: the handshake, then the rest of the session in TLS.
    async fn continue_in_tls(self, started: Instant) {
        match self.start_tls().await {
            Ok(mut tls) => {
                let end = tls.serve_or_abort().await;
                // close_notify, bounded: the client may be gone already.
                let _ = timeout(Duration::from_secs(1), tls.io.shutdown()).await;
                tls.finish(end, started).await;
            }
            Err((parked, end)) => parked.finish(end, started).await,
        }
    }

    /// The TLS handshake after `220 2.0.0 Ready to start TLS`. The session
    /// state moves onto the TLS stream; a failed handshake returns the state
    /// without a stream, for the session-end log.
    async fn start_tls(
        self,
    ) -> Result<Session<tokio_rustls::server::TlsStream<S>>, (Session<()>, End)> {
        let config = self.ctx.tls.clone();
        let limit = self.ctx.listener.command_timeout;
        let (parked, io) = self.replace_io(());
        let Some(config) = config else {
            return Err((parked, End::TlsHandshake("STARTTLS not configured".into())));
        };
        match timeout(limit, TlsAcceptor::from(config).accept(io)).await {
            Ok(Ok(stream)) => {
                let (mut session, ()) = parked.replace_io(stream);
                session.tls = true;
                Ok(session)
            }
            Ok(Err(e)) => {
                warn!(session = parked.peer.id, client = %parked.peer.client, error = %e, "client TLS handshake failed");
                Err((parked, End::TlsHandshake(e.to_string())))
            }
            Err(_) => {
                warn!(session = parked.peer.id, client = %parked.peer.client, "client TLS handshake timed out");
                Err((parked, End::TlsHandshake("timeout".into())))
            }
        }
    }

    pub(crate) async fn serve(&mut self) -> End {
        // When the command line being waited for is due: `command_timeout`
        // after the first read that had to wait for it (set by that read),
        // kept however its bytes trickle in, and cleared by its line end. A
        // client dripping a byte at a time cannot hold the session beyond it.
        // Replies are written first and bounded on their own (`flush`), so a
        // slow member does not eat into the client's time.
        let mut line_due: Option<tokio::time::Instant> = None;
        let command_timeout = self.ctx.listener.command_timeout;
        loop {
            // Room for a pipelined envelope without growing.
            let mut batch = Vec::with_capacity(8);
            let mut quit = false;
            loop {
                match self.lines.next_line(&mut self.rbuf) {
                    Ok(Some(line)) => {
                        line_due = None;
                        let (item, last) = self.classify(&line);
                        let is_data = matches!(item, Pending::Data);
                        batch.push(item);
                        if last {
                            quit = true;
                            break;
                        }
                        if is_data || self.starttls {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(proto::LineError::TooLong) => batch.push(Pending::Reply(Reply::new(
                        500,
                        "5.5.2",
                        "Error: line too long",
                    ))),
                }
            }
            if batch.is_empty() {
                if let Err(end) = self.flush().await {
                    return end;
                }
                let idle = self.txn.is_none() && !self.mail_open;
                let due = |now| *line_due.get_or_insert_with(|| later(now, command_timeout));
                if let Err(end) = self.read_more(due, idle, COMMAND_READ).await {
                    return end;
                }
                continue;
            }
            let start_data = self.resolve(batch).await;
            if !start_data {
                // What the member accepted is the truth: a refused MAIL opens
                // no transaction, a refused DATA leaves it open.
                self.mail_open = self.txn.is_some();
                self.rcpts_asked = self.txn.as_ref().map_or(0, |t| t.rcpts.len());
            }
            if start_data {
                if let Err(end) = self.flush().await {
                    return end;
                }
                if let Err(end) = self.stream_data().await {
                    return end;
                }
            }
            if self.errors >= self.ctx.listener.max_errors {
                metrics::refused(&self.ctx.listener.name, metrics::reason::MAX_ERRORS);
                return self
                    .close_with(421, "4.7.0", "Error: too many errors", End::TooManyErrors)
                    .await;
            }
            if quit {
                return match self.flush().await {
                    Ok(()) => End::Quit,
                    Err(end) => end,
                };
            }
            if self.starttls {
                // RFC 3207 and the STARTTLS injection class (CVE-2011-0411):
                // what the client sent after STARTTLS, before the handshake,
                // is thrown away, never executed inside the TLS session.
                self.rbuf.clear();
                self.lines = LineReader::new();
                self.starttls = false;
                return match self.flush().await {
                    Ok(()) => End::StartTls,
                    Err(end) => end,
                };
            }
        }
    }

    /// Writes the queued replies to the client.
    pub(crate) async fn flush(&mut self) -> Result<(), End> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        // A client that stops reading must not hold its session forever.
        let limit = self.ctx.listener.command_timeout;
        let write = async {
            self.io.write_all(&self.wbuf).await?;
            // A TLS stream may keep records buffered until flushed.
            self.io.flush().await
        };
        let result = match self.deadline.within(limit, write).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client does not read its replies",
            )),
        };
        self.wbuf.clear();
        result.map_err(End::Io)
    }

    /// Runs the session; when the drain timeout passes (abort), ends it with
    /// `421 4.3.2` wherever it is, e.g. waiting for a member's reply.
    async fn serve_or_abort(&mut self) -> End {
        let mut abort = self.ctx.shutdown.watch_abort();
        let served = abort.unless(self.serve()).await;
        match served {
            Some(end) => end,
            None => {
                // Whatever was half written is abandoned; the member never got
                // an end of data from this session, so it discards the message.
                self.wbuf.clear();
                self.upstream = None;
                let text = "Service shutting down, closing transmission channel";
                self.close_with(421, "4.3.2", text, End::Shutdown).await
            }
        }
    }

    /// Reads more client input into `rbuf`, with at least `room` octets of
    /// space; returns how many were read. The read must complete by the
    /// instant `due` gives (see [`Deadline::run`]), else the session ends
    /// with `421 4.4.2`. While draining, a session that is `idle` (between
    /// transactions) ends here with `421 4.3.2` (on abort any session does,
    /// in [`Session::serve_or_abort`]).
    pub(crate) async fn read_more(
        &mut self,
        due: impl FnOnce(tokio::time::Instant) -> tokio::time::Instant,
        idle: bool,
        room: usize,
    ) -> Result<usize, End> {
        // BytesMut only grows by 64 bytes when full: make room for a real read.
        self.rbuf.reserve(room);
        // Abort is not watched here: every read runs inside serve_or_abort,
        // which ends the session with the same 421 4.3.2 (one waiter less
        // to register and remove per read).
        let read = self.deadline.run(self.io.read_buf(&mut self.rbuf), due);
        let read = if idle {
            // Draining is checked first, as before every read.
            self.drain.unless(read).await
        } else {
            Some(read.await)
        };
        match read {
            None => {
                let text = "Service shutting down, closing transmission channel";
                Err(self.close_with(421, "4.3.2", text, End::Shutdown).await)
            }
            Some(Err(_)) => {
                metrics::refused(&self.ctx.listener.name, metrics::reason::TIMEOUT);
                let text = "Error: timeout exceeded";
                Err(self
                    .close_with(421, "4.4.2", text, End::ClientTimeout)
                    .await)
            }
            Some(Ok(Ok(0))) => Err(End::ClientClosed),
            Some(Ok(Ok(n))) => Ok(n),
            Some(Ok(Err(e))) => Err(End::Io(e)),
        }
    }

    /// Sends a final reply (with what is still queued) and ends the session as `end`.
    async fn close_with(&mut self, code: u16, enhanced: &str, text: &str, end: End) -> End {
        let text = format!("{} {text}", self.ctx.listener.hostname);
        self.wbuf
            .extend_from_slice(Reply::new(code, enhanced, &text).as_bytes());
        match self.flush().await {
            Ok(()) => end,
            Err(io) => io,
        }
    }

    /// The policy step: what one command line becomes. Returns the item and
    /// whether the session ends after its reply (QUIT).
    fn classify(&mut self, line: &[u8]) -> (Pending, bool) {
        let command = match proto::parse_command(line) {
            Ok(command) => command,
            Err(err) => return (Pending::Reply(Reply::from(&err)), false),
        };
        let item = match command {
            Command::Ehlo(name) => self.greet(name, "ESMTP"),
            Command::Helo(name) => self.greet(name, "SMTP"),
            Command::Mail(mail) => self.mail(mail),
            Command::Rcpt(rcpt) => self.rcpt(rcpt),
            Command::Data => {
                // A transaction no member could take stays answered with 451
                // (retry later) until RSET or a new MAIL.
                if self.mail_open || self.broken {
                    self.forget_envelope();
                    Pending::Data
                } else {
                    reply(503, "5.5.1", "Error: need RCPT command")
                }
            }
            Command::Rset => {
                self.forget_envelope();
                Pending::Rset
            }
            Command::Noop => reply(250, "2.0.0", "Ok"),
            Command::Quit => return (reply(221, "2.0.0", "Bye"), true),
            Command::Help => reply(214, "2.0.0", "See RFC 5321"),
            Command::Vrfy => reply(252, "2.5.0", "Cannot VRFY user, but will accept message"),
            Command::Expn => reply(502, "5.5.1", "Error: EXPN not implemented"),
            Command::StartTls => self.starttls(),
            Command::Auth => reply(502, "5.5.1", "Error: authentication not offered"),
            Command::Bdat { .. } => reply(502, "5.5.1", "Error: CHUNKING not offered"),
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

    /// The client's view: no MAIL is open any more (RSET, EHLO, XCLIENT, DATA).
    fn forget_envelope(&mut self) {
        self.mail_open = false;
        self.rcpts_asked = 0;
        self.overshoot = 0;
    }

    fn greet(&mut self, name: String, proto: &'static str) -> Pending {
        self.forget_envelope();
        let listener = &self.ctx.listener;
        let reply = if proto == "SMTP" {
            Reply::new(250, "", &listener.hostname)
        } else {
            let size = format!("SIZE {}", listener.max_message_size);
            let xclient = format!("XCLIENT {XCLIENT_ATTRS}");
            let mut lines = vec![listener.hostname.as_str(), "PIPELINING", size.as_str()];
            if self.trusted {
                lines.push(xclient.as_str());
            }
            if self.ctx.tls.is_some() && !self.tls {
                lines.push("STARTTLS");
            }
            lines.extend(["8BITMIME", "ENHANCEDSTATUSCODES"]);
            Reply::multiline(250, &lines)
        };
        self.helo = Some((name, proto));
        Pending::Reset(reply)
    }

    /// STARTTLS: accepted once, when offered. The reply resets the session
    /// (HELO/EHLO, transaction, member connection), as RFC 3207 requires.
    fn starttls(&mut self) -> Pending {
        if self.tls {
            return reply(503, "5.5.1", "Error: TLS already active");
        }
        if self.ctx.tls.is_none() {
            return reply(502, "5.5.1", "Error: STARTTLS not offered here");
        }
        self.starttls = true;
        self.helo = None;
        self.forget_envelope();
        Pending::Reset(Reply::new(220, "2.0.0", "Ready to start TLS"))
    }

    fn mail(&mut self, mail: MailFrom) -> Pending {
        if self.helo.is_none() {
            return reply(503, "5.5.1", "Error: send HELO/EHLO first");
        }
        if self.ctx.listener.require_tls && !self.tls {
            return reply(530, "5.7.0", "Must issue a STARTTLS command first");
        }
        if self.mail_open {
            return reply(503, "5.5.1", "Error: nested MAIL command");
        }
        for param in &mail.params {
            match param.keyword.as_str() {
                "SIZE" => {}
                "BODY" => match param
                    .value
                    .as_deref()
                    .map(str::to_ascii_uppercase)
                    .as_deref()
                {
                    Some("7BIT" | "8BITMIME") => {}
                    _ => return reply(501, "5.5.4", "Error: BODY must be 7BIT or 8BITMIME"),
                },
                _ => return reply(555, "5.5.4", "Error: unsupported MAIL parameter"),
            }
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
        self.mail_open = true;
        self.rcpts_asked = 0;
        self.overshoot = 0;
        Pending::Mail(mail)
    }

    fn rcpt(&mut self, rcpt: RcptTo) -> Pending {
        if !self.mail_open && !self.broken {
            return reply(503, "5.5.1", "Error: need MAIL command");
        }
        if !rcpt.params.is_empty() {
            return reply(555, "5.5.4", "Error: unsupported RCPT parameter");
        }
        if self.rcpts_asked >= self.ctx.listener.max_recipients {
            self.overshoot += 1;
            if self.overshoot <= RCPT_OVERSHOOT_LIMIT {
                return Pending::Overshoot;
            }
            return Pending::Reply(too_many_recipients());
        }
        self.rcpts_asked += 1;
        Pending::Rcpt(rcpt)
    }

    fn xclient(&mut self, attrs: Vec<(String, String)>) -> Pending {
        if !self.trusted {
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
            self.helo = Some((name, "ESMTP"));
        }
        self.forget_envelope();
        let greeting = [self.ctx.listener.hostname.as_str(), " ESMTP"].concat();
        Pending::Reset(Reply::new(220, "", &greeting))
    }

    /// The identity passed to the member (XCLIENT or PROXY).
    pub(crate) fn identity(&self) -> ClientIdentity {
        let (helo, proto) = self
            .helo
            .clone()
            .unwrap_or_else(|| (self.peer.client.ip().to_string(), "SMTP"));
        ClientIdentity {
            client: self.peer.client,
            destination: self.peer.destination,
            helo,
            proto,
            name: self.peer.name.clone(),
        }
    }
}

impl<S> Session<S> {
    /// Moves the session state onto another stream (STARTTLS), or parks it
    /// without one (`()`); returns the old stream.
    fn replace_io<T>(self, io: T) -> (Session<T>, S) {
        let Session {
            io: old,
            ctx,
            peer,
            rbuf,
            wbuf,
            lines,
            trusted,
            helo,
            tls,
            starttls,
            mail_open,
            rcpts_asked,
            overshoot,
            txn,
            broken,
            upstream,
            tried,
            attempts,
            errors,
            stats,
            deadline,
            drain,
            obuf,
        } = self;
        let session = Session {
            io,
            ctx,
            peer,
            rbuf,
            wbuf,
            lines,
            trusted,
            helo,
            tls,
            starttls,
            mail_open,
            rcpts_asked,
            overshoot,
            txn,
            broken,
            upstream,
            tried,
            attempts,
            errors,
            stats,
            deadline,
            drain,
            obuf,
        };
        (session, old)
    }

    /// Closes the client connection, ends the member connection and logs
    /// the session-end line.
    async fn finish(self, end: End, started: Instant) {
        let Session {
            io,
            ctx,
            peer,
            helo,
            tls,
            upstream,
            stats,
            ..
        } = self;
        // The client has had its last reply: it need not wait for the QUIT
        // exchange with the member before it sees the connection close.
        drop(io);
        if let Some(up) = upstream {
            up.quit().await;
        }
        info!(
            session = peer.id,
            listener = %ctx.listener.name,
            client = %peer.client,
            helo = helo.as_ref().map(|h| h.0.as_str()).unwrap_or(""),
            tls = tls,
            member = %Joined(&stats.members),
            messages = stats.messages,
            recipients = stats.recipients,
            bytes = stats.bytes,
            duration_ms = started.elapsed().as_millis() as u64,
            outcome = %end,
            "session end"
        );
    }
}

/// The session-end outcome, formatted only when the line is written.
impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Quit => f.write_str("quit"),
            End::ClientClosed => f.write_str("client closed"),
            End::ClientTimeout => f.write_str("client timeout"),
            End::TooManyErrors => f.write_str("too many errors"),
            End::Shutdown => f.write_str("shutdown"),
            End::Io(e) => write!(f, "client I/O error: {e}"),
            End::StartTls => f.write_str("STARTTLS"),
            End::TlsHandshake(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

/// Names joined by commas for a log field, without building the string first.
pub(crate) struct Joined<'a, T>(pub &'a [T]);

impl<T: AsRef<str>> std::fmt::Display for Joined<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name.as_ref())?;
        }
        Ok(())
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
