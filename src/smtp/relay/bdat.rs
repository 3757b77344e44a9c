//! CHUNKING (RFC 3030): a `BDAT size [LAST]` chunk, relayed as it arrives.
//!
//! The batch ends at a BDAT, so the commands before it are answered first
//! and whether a member holds the transaction is known. Then the chunk's
//! octets are taken off the client input exactly ([`ChunkReader`]: no
//! dot-stuffing, no end-of-data scanning) and either forwarded to the
//! member behind its own `BDAT size [LAST]` line, under the same data
//! deadline and minimum data rate as DATA, or read and discarded when the
//! chunk is refused (RFC 3030 has the server consume the announced octets
//! whatever it answers). The member's reply to the chunk goes back
//! verbatim; a `2xx` to `BDAT LAST` only ever comes from the member.
//!
//! Refusals by mxgate: no transaction at a member (`503 5.5.1`, or
//! `451 4.4.1` when none could take it), the running total past
//! `max_message_size` (`552 5.3.4`; the member connection is dropped so it
//! never completes the partial message). A member that fails before the
//! first chunk went out is failed over like an envelope command (the
//! envelope is replayed on the next); after that, a lost member means
//! `451 4.4.2`. Once the transaction failed in mxgate, later chunks are
//! discarded with the same reply until `BDAT LAST` or RSET, as Postfix does.
//! A refused chunk larger than 1.5 times `max_message_size` is not read:
//! the client gets the reply and the session ends (Postfix stops reading too).

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;

use super::data::DATA_BLOCK_TIMEOUT;
use super::tempfail_no_member;
use crate::metrics::{self, MessageResult};
use crate::smtp::deadline::DataDeadline;
use crate::smtp::proto::{Admission, ChunkReader, ChunkStep, Reply, encode_bdat};
use crate::smtp::session::{DATA_READ_FIRST, End, Session};
use crate::smtp::tap::Framing;
use crate::smtp::upstream::UpstreamError;

/// Why a chunk's command line did not reach a member.
enum Unsent {
    /// The member failed after part of the message went out to it.
    Lost(UpstreamError),
    /// No member is left for the transaction (it is broken).
    Unplaced,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// The chunk of `BDAT size [LAST]`: its octets are read off the client
    /// input, relayed or discarded, and its reply queued.
    pub(crate) async fn relay_chunk(&mut self, size: u64, last: bool) -> Result<(), End> {
        let reply = match self.admit_chunk(size) {
            Some(reply) => {
                self.discard_chunk(size, &reply).await?;
                reply
            }
            None => self.send_chunk(size, last).await?,
        };
        if last {
            self.end_chunking();
        }
        self.queue(&reply);
        Ok(())
    }

    /// `None` when the chunk goes to the member; else the reply it gets
    /// once its octets are discarded.
    fn admit_chunk(&mut self, size: u64) -> Option<Reply> {
        let failed = self.chunking().is_failed();
        if !failed && self.link.transaction().is_none() {
            return Some(if self.link.is_broken() {
                tempfail_no_member()
            } else {
                Reply::new(503, "5.5.1", "Error: need RCPT command")
            });
        }
        let max = self.ctx.listener.max_message_size;
        match self.chunking().admit(size, max) {
            Admission::Relay => None,
            Admission::Refuse(reply) => {
                if !failed {
                    self.refuse_message(&reply);
                }
                Some(reply)
            }
        }
    }

    /// The message passed the size limit: its transaction is over, and the
    /// member, which never gets `BDAT LAST`, discards what it got.
    fn refuse_message(&mut self, reply: &Reply) {
        metrics::refused(&self.ctx.listener.name, metrics::reason::MESSAGE_SIZE);
        let member = self.link.upstream().map(|up| up.member().to_owned());
        metrics::message(
            member.as_deref().unwrap_or(metrics::NO_MEMBER),
            MessageResult::of(reply.code()),
        );
        self.link.drop_upstream();
        self.link.take_transaction();
    }

    /// Reads and drops a refused chunk; one too large to be worth reading
    /// gets its reply and ends the session.
    async fn discard_chunk(&mut self, size: u64, reply: &Reply) -> Result<(), End> {
        let max = self.ctx.listener.max_message_size;
        if size > max.saturating_add(max / 2) {
            warn!(session = self.peer.id, client = %self.peer.client, size, "BDAT chunk far over the size limit; closing the session");
            self.queue(reply);
            return Err(match self.flush().await {
                Ok(()) => End::BdatOverflow,
                Err(end) => end,
            });
        }
        self.take_chunk(size, false).await.map(|_| ())
    }

    /// Relays an admitted chunk: its command line, its octets, the
    /// member's reply (the message's, at `BDAT LAST`).
    async fn send_chunk(&mut self, size: u64, last: bool) -> Result<Reply, End> {
        let first = self.chunking().is_first();
        match self.send_bdat_line(size, last, first).await {
            Ok(()) => {}
            Err(Unsent::Unplaced) => {
                let reply = tempfail_no_member();
                self.chunking().fail(reply.clone());
                self.take_chunk(size, false).await?;
                return Ok(reply);
            }
            Err(Unsent::Lost(err)) => {
                self.take_chunk(size, false).await?;
                return Ok(self.chunk_lost(err));
            }
        }
        if first {
            self.open_copy();
        }
        Ok(match self.take_chunk(size, true).await? {
            Some(err) => self.chunk_lost(err),
            None => self.chunk_reply(last).await,
        })
    }

    /// Sends `BDAT size [LAST]` to the member. Before anything of the
    /// message went out (`first`), a member that fails is failed over (the
    /// envelope replayed on the next); after, the message is lost with it.
    async fn send_bdat_line(&mut self, size: u64, last: bool, first: bool) -> Result<(), Unsent> {
        let mut line = BytesMut::with_capacity(32);
        encode_bdat(size, last, &mut line);
        let limit = self.ctx.config.policy.upstream.command_timeout;
        // Bounded: every failover uses up one of `max_attempts`.
        loop {
            let err = match self.link.upstream_mut() {
                None => UpstreamError::Closed,
                // Never the case (a member lacking an extension offered to
                // the client is not used), but its octets must never reach
                // a member that would read them as commands.
                Some(up) if !up.capabilities().chunking => UpstreamError::Refused {
                    phase: "BDAT",
                    reply: Reply::new(502, "5.5.1", "CHUNKING not offered"),
                },
                Some(up) => match up.send(&line, limit).await {
                    Ok(()) => return Ok(()),
                    Err(err) => err,
                },
            };
            if !first {
                return Err(Unsent::Lost(err));
            }
            if !self.fail_over(err).await {
                return Err(Unsent::Unplaced);
            }
        }
    }

    /// A copy of the message for the tap, taken at its first chunk.
    fn open_copy(&mut self) {
        let copy = self.ctx.tap.as_ref().and_then(|tap| {
            tap.tap(
                &self.ctx.config.policy,
                &self.ctx.router,
                self.peer.client.ip(),
                self.peer.id,
                Framing::Chunks,
            )
        });
        if let Some(copy) = copy {
            self.link.keep_copy(copy);
        }
    }

    /// Takes the chunk's `size` octets off the client input, under the
    /// data deadline; with `forward`, they go to the tap and the member as
    /// they come. Returns the member's failure, if it failed meanwhile (the
    /// rest is still read, to stay in step with the client).
    async fn take_chunk(&mut self, size: u64, forward: bool) -> Result<Option<UpstreamError>, End> {
        let listener = self.ctx.listener.clone();
        let mut reader = ChunkReader::new(size);
        let mut due = DataDeadline::new(listener.data_timeout, listener.min_data_rate);
        let mut room = DATA_READ_FIRST;
        let mut lost = None;
        loop {
            match reader.feed(self.bufs.input()) {
                ChunkStep::Forward(bytes) if forward && lost.is_none() => {
                    if let Some(copy) = self.link.copy_mut() {
                        copy.0.feed(&bytes);
                    }
                    let sent = match self.link.upstream_mut() {
                        Some(up) => up.send(&bytes, DATA_BLOCK_TIMEOUT).await,
                        None => Err(UpstreamError::Closed),
                    };
                    if let Err(err) = sent {
                        lost = Some(err);
                    }
                }
                ChunkStep::Forward(_) => {}
                ChunkStep::NeedMore => self.read_content(&mut due, &mut room).await?,
                ChunkStep::End => break,
            }
        }
        self.stats.received(size);
        Ok(lost)
    }

    /// The member's reply to a relayed chunk, verbatim; at `BDAT LAST`, the
    /// message's outcome.
    async fn chunk_reply(&mut self, last: bool) -> Reply {
        let limit = self.ctx.config.policy.upstream.data_timeout;
        let Some(up) = self.link.upstream_mut() else {
            return self.chunk_lost(UpstreamError::Closed);
        };
        let reply = match up.reply(limit).await {
            Ok(reply) if reply.code() == 421 => {
                return self.chunk_lost(UpstreamError::Refused {
                    phase: "BDAT",
                    reply,
                });
            }
            Ok(reply) => reply,
            Err(err) => return self.chunk_lost(err),
        };
        if last {
            self.message_done(&reply);
        }
        reply
    }

    /// The member answered `BDAT LAST` with `reply`: the transaction is
    /// over; the tap and the counters learn the outcome.
    fn message_done(&mut self, reply: &Reply) {
        let size = self.chunking().total();
        let copy = self.link.take_copy();
        let rcpts = self
            .link
            .take_transaction()
            .map_or(0, |t| t.rcpts.len() as u64);
        let result = MessageResult::of(reply.code());
        let accepted = result == MessageResult::Accepted;
        if let Some(copy) = copy {
            copy.0.finish(accepted);
        }
        if accepted {
            self.stats.delivered(rcpts);
        }
        let Some(up) = self.link.upstream_mut() else {
            return;
        };
        up.transaction_done();
        if accepted {
            up.count_accepted(size);
        } else {
            metrics::message(up.member(), result);
        }
    }

    /// The member was lost with part of the message: `451 4.4.2` (the
    /// client retries; nothing is lost), and later chunks get it too.
    fn chunk_lost(&mut self, err: UpstreamError) -> Reply {
        let member = self.release_lost_member();
        warn!(session = self.peer.id, client = %self.peer.client, member = %member, reason = %err.reason(), "member lost during BDAT; client told to retry");
        metrics::message(&member, MessageResult::Tempfail);
        self.link.take_transaction();
        let reply = Reply::new(
            451,
            "4.4.2",
            "Connection to mail server lost during data, try again later",
        );
        self.chunking().fail(reply.clone());
        reply
    }
}
