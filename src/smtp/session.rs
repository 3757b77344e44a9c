//! One client SMTP session: the read loop and the policy step.
//!
//! Input is split into command lines; each line is classified by a pure step
//! ([`classify`]) into a [`Pending`] item: a reply mxgate gives itself,
//! or a command to relay to the member. A pipelined batch (up to and including
//! `DATA` or `BDAT`) is classified first and then resolved in order by
//! [`crate::smtp::relay`], which writes the relayed commands to the member in
//! one go and returns every reply in the client's order. The octets of a
//! `BDAT` chunk follow its command line: the relay takes exactly those
//! before the next line is read ([`crate::smtp::proto::chunk`]).
//!
//! STARTTLS (RFC 3207) ends the plain-text part: the `220` is sent, anything
//! the client pipelined after the command is discarded unread, and the same
//! session state is moved onto the TLS stream ([`Session::run`] re-wraps `S`
//! in `tokio_rustls::server::TlsStream<S>`) with HELO/EHLO, any transaction
//! and the member connection forgotten.
//!
//! The session's state is in groups, each in its own file under `session/`
//! and changed through its methods: the client's side (`client`), the link
//! to the member (`link`, driven by the relay) and the buffers (`buffers`);
//! the counters and the client's waits are small groups of their own here.

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
use crate::dns::ClientNames;
use crate::metrics;
use crate::routing::{MemberTable, Router};
use crate::shutdown::{Shutdown, StageWatch};
use crate::smtp::deadline::{Deadline, later};
use crate::smtp::proto::{self, Chunking, MailFrom, RcptTo, Reply};
use crate::smtp::relay::Next;
use crate::smtp::server::is_trusted;
use crate::smtp::tap::MessageTap;

mod buffers;
mod classify;
mod client;
mod end;
mod link;
mod name;

use buffers::{Buffers, Opening};
pub(crate) use classify::too_many_recipients;
use client::ClientState;
pub(crate) use end::End;
pub(crate) use link::{MemberLink, Transaction};
pub use name::NameSlot;

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
    /// Takes a copy of relayed messages (LFT: injected messages are
    /// searched for attachments); `None`: no copies.
    pub tap: Option<Arc<dyn MessageTap>>,
    /// Looks up clients' host names (XCLIENT `NAME`); `None`: none is
    /// looked up and members are told `[UNAVAILABLE]`.
    pub client_names: Option<Arc<ClientNames>>,
}

/// Where the client is, as far as the session knows.
#[derive(Debug)]
pub struct Peer {
    /// Session id for logs.
    pub id: u64,
    /// The real client (after PROXY or XCLIENT).
    pub client: SocketAddr,
    /// The address the client reached.
    pub destination: SocketAddr,
    /// The client's verified host name, when a trusted proxy named it (XCLIENT `NAME`).
    pub name: Option<String>,
    /// The lookup of the client's own names (forward-confirmed reverse DNS).
    pub names: NameSlot,
}

/// A client command after classification, in the order its reply is due.
#[derive(Debug)]
pub(crate) enum Pending {
    /// mxgate answers this itself.
    Reply(Reply),
    /// A recipient over `max_recipients`, within [`classify::RCPT_OVERSHOOT_LIMIT`]:
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
    /// `BDAT size [LAST]` (CHUNKING offered): its chunk follows and is
    /// relayed or discarded once the commands before it are resolved.
    Bdat { size: u64, last: bool },
    /// mxgate answers this and closes the session: the input can no longer
    /// be read in step (a malformed BDAT: where its chunk ends is unknown).
    Hangup(Reply),
}

/// Counters for the session-end log line.
#[derive(Debug, Default)]
pub(crate) struct SessionStats {
    messages: u64,
    recipients: u64,
    bytes: u64,
    /// Every member used, in the order first used.
    members: Vec<String>,
}

impl SessionStats {
    /// A connection to `member` was set up.
    pub(crate) fn used(&mut self, member: String) {
        if !self.members.contains(&member) {
            self.members.push(member);
        }
    }

    /// The member used last, if any.
    pub(crate) fn last_member(&self) -> Option<&str> {
        self.members.last().map(String::as_str)
    }

    /// Message content of `bytes` was received, whatever became of it.
    pub(crate) fn received(&mut self, bytes: u64) {
        self.bytes += bytes;
    }

    /// A member accepted a message for `recipients`.
    pub(crate) fn delivered(&mut self, recipients: u64) {
        self.messages += 1;
        self.recipients += recipients;
    }
}

/// What ends a wait on the client: the deadline of each read and write,
/// and draining.
struct Waits {
    /// The timer of every client read and write (one per connection).
    deadline: Deadline,
    /// Draining, watched by reads between transactions.
    drain: StageWatch,
}

/// A client session over any stream (plain TCP, then TLS after STARTTLS).
/// Its state is in groups, each owning its changes: the client's side, the
/// member's, the buffers, the counters and what bounds waits on the client.
pub struct Session<S> {
    pub(crate) io: S,
    pub(crate) ctx: SessionContext,
    pub(crate) peer: Peer,
    /// The client's side: what it has said and been told.
    client: ClientState,
    /// The member's side: its connection and what it has accepted.
    pub(crate) link: MemberLink,
    /// Client input, replies queued for the client, member commands.
    pub(crate) bufs: Buffers,
    /// Counters for the session-end log line.
    pub(crate) stats: SessionStats,
    /// The client's deadline, and draining.
    waits: Waits,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A session whose greeting was sent ([`crate::smtp::greeting`]); `rbuf`
    /// holds bytes already read.
    pub fn new(io: S, ctx: SessionContext, peer: Peer, rbuf: BytesMut) -> Self {
        let client = ClientState::new(is_trusted(&ctx.listener, peer.client));
        let waits = Waits {
            deadline: Deadline::new(),
            drain: ctx.shutdown.watch_drain(),
        };
        Session {
            io,
            ctx,
            peer,
            client,
            link: MemberLink::default(),
            bufs: Buffers::new(rbuf),
            stats: SessionStats::default(),
            waits,
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
                session.client.tls = true;
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
            let mut quit = None;
            loop {
                match self.bufs.opening() {
                    Opening::Commands => {}
                    Opening::NeedMore => break,
                    Opening::ProxyV2 => return self.refuse_proxy_v2().await,
                }
                match self.bufs.next_line() {
                    Ok(Some(line)) => {
                        line_due = None;
                        let (item, last) = self.classify(&line);
                        // Message content follows these: no line past them is read yet.
                        let content = matches!(item, Pending::Data | Pending::Bdat { .. });
                        let hangup = matches!(item, Pending::Hangup(_));
                        batch.push(item);
                        if last || hangup {
                            quit = Some(if hangup { End::BadBdat } else { End::Quit });
                            break;
                        }
                        if content || self.client.starttls {
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
                let idle = self.link.transaction().is_none() && !self.client.mail_open;
                let due = |now| *line_due.get_or_insert_with(|| later(now, command_timeout));
                if let Err(end) = self.read_more(due, idle, COMMAND_READ).await {
                    return end;
                }
                continue;
            }
            match self.resolve(batch).await {
                Next::Commands => self.client.align_to(self.link.transaction()),
                Next::Data => {
                    if let Err(end) = self.flush().await {
                        return end;
                    }
                    if let Err(end) = self.stream_data().await {
                        return end;
                    }
                }
                Next::Chunk { size, last } => {
                    // The replies so far go out while the chunk streams in.
                    if let Err(end) = self.flush().await {
                        return end;
                    }
                    if let Err(end) = self.relay_chunk(size, last).await {
                        return end;
                    }
                    self.client.align_to(self.link.transaction());
                }
            }
            if self.client.too_many_errors(self.ctx.listener.max_errors) {
                metrics::refused(&self.ctx.listener.name, metrics::reason::MAX_ERRORS);
                return self
                    .close_with(421, "4.7.0", "Error: too many errors", End::TooManyErrors)
                    .await;
            }
            if let Some(quit) = quit {
                return match self.flush().await {
                    Ok(()) => quit,
                    Err(end) => end,
                };
            }
            if self.client.starttls {
                // RFC 3207 and the STARTTLS injection class (CVE-2011-0411):
                // what the client sent after STARTTLS, before the handshake,
                // is thrown away, never executed inside the TLS session.
                self.bufs.discard_input();
                self.client.starttls = false;
                return match self.flush().await {
                    Ok(()) => End::StartTls,
                    Err(end) => end,
                };
            }
        }
    }

    /// Writes the queued replies to the client.
    pub(crate) async fn flush(&mut self) -> Result<(), End> {
        if self.bufs.output().is_empty() {
            return Ok(());
        }
        // A client that stops reading must not hold its session forever.
        let limit = self.ctx.listener.command_timeout;
        let write = async {
            self.io.write_all(self.bufs.output()).await?;
            // A TLS stream may keep records buffered until flushed.
            self.io.flush().await
        };
        let result = match self.waits.deadline.within(limit, write).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client does not read its replies",
            )),
        };
        self.bufs.clear_output();
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
                self.bufs.clear_output();
                self.link.drop_upstream();
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
        let input = self.bufs.input();
        input.reserve(room);
        // Abort is not watched here: every read runs inside serve_or_abort,
        // which ends the session with the same 421 4.3.2 (one waiter less
        // to register and remove per read).
        let read = self.waits.deadline.run(self.io.read_buf(input), due);
        let read = if idle {
            // Draining is checked first, as before every read.
            self.waits.drain.unless(read).await
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

    /// A PROXY v2 header after the greeting (from anyone: a trusted proxy
    /// sends it before, on a `proxy_protocol` listener): `550 5.7.1`, as the
    /// v1 form gets, and the connection is closed (the rest is binary).
    async fn refuse_proxy_v2(&mut self) -> End {
        warn!(session = self.peer.id, client = %self.peer.client, "PROXY v2 header refused: not at connection start from a trusted proxy");
        metrics::refused(&self.ctx.listener.name, metrics::reason::PROXY_UNTRUSTED);
        self.bufs.discard_input();
        self.queue(&Reply::new(550, "5.7.1", "Error: PROXY not accepted here"));
        match self.flush().await {
            Ok(()) => End::ProxyHeader,
            Err(io) => io,
        }
    }

    /// Sends a final reply (with what is still queued) and ends the session as `end`.
    async fn close_with(&mut self, code: u16, enhanced: &str, text: &str, end: End) -> End {
        let text = format!("{} {text}", self.ctx.listener.hostname);
        self.bufs.reply(&Reply::new(code, enhanced, &text));
        match self.flush().await {
            Ok(()) => end,
            Err(io) => io,
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
            client,
            link,
            bufs,
            stats,
            waits,
        } = self;
        let session = Session {
            io,
            ctx,
            peer,
            client,
            link,
            bufs,
            stats,
            waits,
        };
        (session, old)
    }

    /// The optional extensions the client was offered at its EHLO.
    pub(crate) fn offered(&self) -> proto::Extensions {
        self.client.offered
    }

    /// The BDAT side of the client's transaction.
    pub(crate) fn chunking(&mut self) -> &mut Chunking {
        &mut self.client.chunking
    }

    /// A BDAT transaction ended (`BDAT LAST`): no MAIL is open any more.
    pub(crate) fn end_chunking(&mut self) {
        self.client.forget_envelope();
    }

    /// Queues `reply` for the client; an error reply counts against `max_errors`.
    pub(crate) fn queue(&mut self, reply: &Reply) {
        self.client.answered(reply);
        self.bufs.reply(reply);
    }

    /// Queues `reply` without counting it as an error (a recipient over
    /// `max_recipients`, see [`classify::RCPT_OVERSHOOT_LIMIT`]).
    pub(crate) fn queue_uncounted(&mut self, reply: &Reply) {
        self.bufs.reply(reply);
    }

    /// Closes the client connection, ends the member connection and logs
    /// the session-end line.
    async fn finish(self, end: End, started: Instant) {
        let Session {
            io,
            ctx,
            mut peer,
            client,
            mut link,
            stats,
            ..
        } = self;
        // The client has had its last reply: it need not wait for the QUIT
        // exchange with the member before it sees the connection close.
        drop(io);
        if let Some(up) = link.take_upstream() {
            up.quit().await;
        }
        let looked_up = peer.names.settled().await.map(|n| n.name.as_xclient());
        let client_name = peer.name.as_deref().or(looked_up).unwrap_or("-");
        info!(
            session = peer.id,
            listener = %ctx.listener.name,
            client = %peer.client,
            client_name,
            helo = client.helo.as_ref().map(|h| h.0.as_str()).unwrap_or(""),
            tls = client.tls,
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
