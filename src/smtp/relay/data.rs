//! The message content: streamed from the client to the member after
//! `354`, through the sans-IO [`DataReceiver`] (strict end of data, bare
//! line endings, size), under the data deadline with its minimum data rate
//! ([`DataDeadline`]); then the member's reply to the end of data, which is
//! the only source of a `2xx` for the message.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;

use crate::metrics::{self, MessageResult};
use crate::smtp::deadline::DataDeadline;
use crate::smtp::proto::{DataReceiver, DataRefusal, DataStep, Reply};
use crate::smtp::session::{DATA_READ, DATA_READ_FIRST, End, Session};
use crate::smtp::tap::Framing;
use crate::smtp::upstream::UpstreamError;

/// RFC 5321 4.5.3.2.6: a data block may take 3 minutes.
pub(super) const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(180);

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Reads more message content (DATA or a BDAT chunk) into the input
    /// under the data deadline, `room` growing while reads fill it. When
    /// the client fails, the member connection is dropped before the end
    /// of the message, so the member discards what it got.
    pub(super) async fn read_content(
        &mut self,
        due: &mut DataDeadline,
        room: &mut usize,
    ) -> Result<(), End> {
        match self.read_more(|now| due.due(now), false, *room).await {
            Ok(n) => {
                due.received(n);
                // A read that filled the room: more is coming, read more at once.
                if n >= *room {
                    *room = (*room * 2).min(DATA_READ);
                }
                Ok(())
            }
            Err(end) => {
                self.link.drop_upstream();
                Err(end)
            }
        }
    }

    /// Streams the message content after `354`, then queues the final reply.
    pub(crate) async fn stream_data(&mut self) -> Result<(), End> {
        let listener = self.ctx.listener.clone();
        let member = self
            .link
            .upstream()
            .map_or(metrics::NO_MEMBER, |u| u.member())
            .to_owned();
        let mut receiver = DataReceiver::new(listener.bare_lf, listener.max_message_size);
        // `data_timeout` of waiting from now (the 354 has just been written),
        // then the client must keep up `min_data_rate`: a client dripping a
        // byte now and then cannot hold the session (and the member's
        // connection).
        let mut due = DataDeadline::new(listener.data_timeout, listener.min_data_rate);
        let mut room = DATA_READ_FIRST;
        let mut refused = None;
        let mut lost: Option<UpstreamError> = None;
        let mut tap = self.ctx.tap.as_ref().and_then(|tap| {
            tap.tap(
                &self.ctx.config.policy,
                &self.ctx.router,
                self.peer.client.ip(),
                self.peer.id,
                Framing::DotStuffed,
            )
        });
        loop {
            match receiver.feed(self.bufs.input()) {
                DataStep::Forward(bytes) => {
                    if let Some(tap) = tap.as_mut() {
                        tap.feed(&bytes);
                    }
                    if let Some(up) = self.link.upstream_mut()
                        && lost.is_none()
                        && let Err(err) = up.send(&bytes, DATA_BLOCK_TIMEOUT).await
                    {
                        lost = Some(err);
                        self.link.drop_upstream();
                    }
                }
                DataStep::NeedMore => self.read_content(&mut due, &mut room).await?,
                DataStep::End => break,
                DataStep::Refused(why) => {
                    refused = Some(why);
                    // Closing without end of data makes the member discard what it got.
                    self.link.drop_upstream();
                }
            }
        }
        self.stats.received(receiver.size());
        let rcpts = self
            .link
            .take_transaction()
            .map_or(0, |t| t.rcpts.len() as u64);
        let reply = match (refused, lost) {
            (Some(DataRefusal::BareLineEnding), _) => {
                metrics::refused(&listener.name, metrics::reason::BARE_LINE_ENDING);
                Reply::new(
                    550,
                    "5.5.2",
                    "Error: bare CR or LF in message content (RFC 5321 2.3.8)",
                )
            }
            (Some(DataRefusal::TooBig), _) => {
                metrics::refused(&listener.name, metrics::reason::MESSAGE_SIZE);
                Reply::new(552, "5.3.4", "Error: message size exceeds fixed limit")
            }
            (None, Some(err)) => self.lost_during_data(err),
            (None, None) => self.final_reply(rcpts).await,
        };
        let result = MessageResult::of(reply.code());
        if let Some(tap) = tap {
            tap.finish(result == MessageResult::Accepted);
        }
        match self.link.upstream_mut() {
            // Accepted: the member answered 2xx on this same connection.
            Some(up) if result == MessageResult::Accepted => up.count_accepted(receiver.size()),
            _ => {
                metrics::message(&member, result);
                if result == MessageResult::Accepted {
                    metrics::bytes_relayed(&member, receiver.size());
                }
            }
        }
        self.queue(&reply);
        Ok(())
    }

    async fn final_reply(&mut self, rcpts: u64) -> Reply {
        let limit = self.ctx.config.policy.upstream.data_timeout;
        let Some(up) = self.link.upstream_mut() else {
            return self.lost_during_data(UpstreamError::Closed);
        };
        match up.reply(limit).await {
            Ok(reply) if reply.code() == 421 => self.lost_during_data(UpstreamError::Refused {
                phase: "end of data",
                reply,
            }),
            Ok(reply) => {
                up.transaction_done();
                if reply.is_positive() {
                    self.stats.delivered(rcpts);
                }
                reply
            }
            Err(err) => self.lost_during_data(err),
        }
    }

    /// Drops the member connection that was lost with part of a message;
    /// the member's name, for the log and metrics.
    pub(super) fn release_lost_member(&mut self) -> String {
        self.link
            .take_upstream()
            .map(|up| up.member().to_owned())
            .or_else(|| self.stats.last_member().map(str::to_owned))
            .unwrap_or_default()
    }

    fn lost_during_data(&mut self, err: UpstreamError) -> Reply {
        let member = self.release_lost_member();
        warn!(session = self.peer.id, client = %self.peer.client, member = %member, reason = %err.reason(), "member lost during DATA; client told to retry");
        Reply::new(
            451,
            "4.4.2",
            "Connection to mail server lost during data, try again later",
        )
    }
}
