//! Relaying a classified batch to the member, with failover.
//!
//! Commands bound for the member are written ahead in one go when it offers
//! PIPELINING, then their replies are read in order and queued for the client
//! between mxgate's own replies. If the member fails (connect, greeting, 421,
//! timeout, lost connection) before the end of DATA was sent, the next member
//! in the session's order gets the envelope replayed (MAIL and the accepted
//! RCPTs) and the unanswered commands again: the client sees nothing. Once
//! DATA content has gone out, a lost member means `451 4.4.2`; a `2xx` is only
//! ever given for a message the member acknowledged with `2xx`. A batch
//! ends at DATA or BDAT: the message content is streamed next ([`data`],
//! [`bdat`]).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

use crate::metrics::{self, MessageResult};
use crate::routing::Verdict;
use crate::smtp::proto::Reply;
use crate::smtp::session::{Joined, Pending, Session, Transaction, too_many_recipients};
use crate::smtp::upstream::{Upstream, UpstreamError};

mod bdat;
mod data;

/// What follows a resolved batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// More command lines.
    Commands,
    /// The member answered `354` to DATA: the message content streams next.
    Data,
    /// A `BDAT size [LAST]`: its chunk is relayed (or discarded) next.
    Chunk { size: u64, last: bool },
}

/// A pending item and whether its command has been written to the current member.
struct Item {
    pending: Pending,
    sent: bool,
}

fn tempfail_no_member() -> Reply {
    Reply::new(451, "4.4.1", "No mail server available, try again later")
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Resolves a batch in order, queueing every reply. Returns what comes
    /// next: message content after a `354` to DATA, a BDAT chunk (the last
    /// item of its batch, reached once the commands before it are
    /// answered), or more commands.
    pub(crate) async fn resolve(&mut self, batch: Vec<Pending>) -> Next {
        let mut items: VecDeque<Item> = batch
            .into_iter()
            .map(|pending| Item {
                pending,
                sent: false,
            })
            .collect();
        while let Some(front) = items.front() {
            if front.is_relayed()
                && !front.sent
                && let Err(unplaced) = self.write_ahead(&mut items).await
            {
                if let Some(item) = items.pop_front() {
                    match unplaced {
                        Some(reply) => self.queue(&reply),
                        None => self.queue_unplaced(&item.pending),
                    }
                }
                continue;
            }
            let Some(item) = items.pop_front() else { break };
            match item.pending {
                Pending::Reply(reply) | Pending::Hangup(reply) => self.queue(&reply),
                Pending::Bdat { size, last } => return Next::Chunk { size, last },
                // Not an error against max_errors (see RCPT_OVERSHOOT_LIMIT).
                Pending::Overshoot => self.queue_uncounted(&too_many_recipients()),
                Pending::Reset(reply) => {
                    self.end_member_connection();
                    self.link.end_transaction();
                    self.queue(&reply);
                }
                Pending::Rset => {
                    if item.sent && !self.collect_rset().await {
                        // The member connection is gone: later commands of the
                        // batch go to a new one.
                        unsend(&mut items);
                    }
                    self.answer_rset();
                }
                pending @ (Pending::Mail(_) | Pending::Rcpt(_) | Pending::Data) => {
                    if !item.sent {
                        // write_ahead found no member for it.
                        self.queue_unplaced(&pending);
                        continue;
                    }
                    match self.collect(&pending).await {
                        Collected::Reply(reply) => {
                            self.record(pending, &reply);
                            self.queue(&reply);
                        }
                        Collected::StartData(reply) => {
                            self.queue(&reply);
                            return Next::Data;
                        }
                        Collected::Failed(err) => {
                            unsend(&mut items);
                            if self.fail_over(err).await {
                                items.push_front(Item {
                                    pending,
                                    sent: false,
                                });
                            } else {
                                self.queue_unplaced(&pending);
                            }
                        }
                    }
                }
            }
        }
        Next::Commands
    }

    /// RSET always succeeds: it ends whatever transaction there was.
    fn answer_rset(&mut self) {
        self.link.end_transaction();
        self.queue(&Reply::new(250, "2.0.0", "Ok"));
    }

    /// Answers a relayed command for which no member could be found or is open.
    fn queue_unplaced(&mut self, pending: &Pending) {
        if matches!(pending, Pending::Rset) {
            self.answer_rset();
            return;
        }
        let reply = if self.link.is_broken() {
            tempfail_no_member()
        } else {
            match pending {
                Pending::Data => Reply::new(503, "5.5.1", "Error: need RCPT command"),
                _ => Reply::new(503, "5.5.1", "Error: need MAIL command"),
            }
        };
        self.queue(&reply);
    }

    /// Makes sure a member connection exists when the front item needs one,
    /// then writes every consecutive relayed command (one when the member does
    /// not pipeline). `Err` means the front item could not be placed: with the
    /// reply it gets (MAIL), or `None` to answer it as unplaced.
    async fn write_ahead(&mut self, items: &mut VecDeque<Item>) -> Result<(), Option<Reply>> {
        let Some(front) = items.front() else {
            return Ok(());
        };
        if self.link.upstream().is_none() {
            match &front.pending {
                Pending::Mail(_) => {
                    self.link.begin();
                    if let Err(reply) = Box::pin(self.connect_next()).await {
                        if self.link.unplaced(&reply) {
                            let member = self.link.last_tried().unwrap_or(metrics::NO_MEMBER);
                            metrics::message(member, MessageResult::Tempfail);
                        }
                        return Err(Some(reply));
                    }
                }
                // RSET without a member is answered by mxgate alone.
                Pending::Rset => return Ok(()),
                _ => return Err(None),
            }
        }
        loop {
            let Some(up) = self.link.upstream_mut() else {
                return Err(None);
            };
            let pipelining = up.capabilities().pipelining;
            // The session's encode buffer, reused for every batch.
            let out = self.bufs.encoder();
            for item in items.iter_mut() {
                if !item.is_relayed() {
                    // A reset ends the member connection: nothing past it may go ahead.
                    if matches!(item.pending, Pending::Reset(_)) {
                        break;
                    }
                    continue;
                }
                if item.sent {
                    continue;
                }
                encode(&item.pending, up, out);
                item.sent = true;
                if !pipelining {
                    break;
                }
            }
            if out.is_empty() {
                return Ok(());
            }
            let sent = up
                .send(out, self.ctx.config.policy.upstream.command_timeout)
                .await;
            match sent {
                Ok(()) => return Ok(()),
                Err(err) => {
                    unsend(items);
                    if !self.fail_over(err).await {
                        return Err(None);
                    }
                }
            }
        }
    }

    /// Reads the member's reply to a relayed command (`record` then updates the transaction).
    async fn collect(&mut self, pending: &Pending) -> Collected {
        let limit = self.ctx.config.policy.upstream.command_timeout;
        let Some(up) = self.link.upstream_mut() else {
            return Collected::Failed(UpstreamError::Closed);
        };
        let reply = match up.reply(limit).await {
            Ok(reply) if reply.code() == 421 => {
                return Collected::Failed(UpstreamError::Refused {
                    phase: "command",
                    reply,
                });
            }
            Ok(reply) => reply,
            Err(err) => return Collected::Failed(err),
        };
        match pending {
            Pending::Data if reply.is_intermediate() => Collected::StartData(reply),
            _ => Collected::Reply(reply),
        }
    }

    /// Updates the transaction with a relayed command the member answered
    /// (`reply`): an accepted MAIL opens it, an accepted RCPT joins it. The
    /// command moves into it, for a replay on failover.
    fn record(&mut self, pending: Pending, reply: &Reply) {
        if !reply.is_positive() {
            return;
        }
        match pending {
            Pending::Mail(mail) => self.link.open(mail),
            Pending::Rcpt(rcpt) => self.link.add_rcpt(rcpt),
            _ => {}
        }
    }

    /// Reads the member's answer to a relayed RSET; a failure just ends the connection.
    /// Returns false when the connection was dropped.
    async fn collect_rset(&mut self) -> bool {
        let limit = self.ctx.config.policy.upstream.command_timeout;
        let Some(up) = self.link.upstream_mut() else {
            return false;
        };
        if matches!(up.reply(limit).await, Ok(reply) if reply.is_positive()) {
            return true;
        }
        self.link.drop_upstream();
        false
    }

    /// The member failed before end of DATA: move the transaction to the next
    /// member. Returns false when none is left (the transaction is then broken).
    async fn fail_over(&mut self, err: UpstreamError) -> bool {
        // A connection kept from an earlier transaction may simply have been
        // closed by the member while idle: that is no failure of the member.
        let Some((from, stale)) = self.link.fail() else {
            return false;
        };
        if stale {
            info!(session = self.peer.id, member = %from, reason = %err.reason(), "kept member connection is gone; reconnecting");
        } else if matches!(err, UpstreamError::Timeout(_)) {
            // A member that stops answering is unwell for everyone.
            self.ctx.members.mark_failed(
                &from,
                &err.reason(),
                self.ctx.config.policy.upstream.backoff,
            );
        }
        // A 421 or a closed connection in the middle of this session's envelope
        // moves this session only: a member may say 421 because of this
        // client (too many errors, rate limits), and one client must not put
        // members into back-off for everyone. A member that is really gone
        // fails its next connect, which does mark it.
        loop {
            let reply = match Box::pin(self.connect_next()).await {
                Ok(()) => {
                    let txn = self.link.transaction().cloned();
                    let Some(up) = self.link.upstream_mut() else {
                        return false;
                    };
                    let to = up.member().to_owned();
                    if !stale {
                        warn!(session = self.peer.id, client = %self.peer.client, from = %from, to = %to, reason = %err.reason(), "failover");
                        metrics::failover(&from, &to);
                    }
                    let Some(txn) = txn else {
                        return true;
                    };
                    match replay(up, &txn, self.ctx.config.policy.upstream.command_timeout).await {
                        Ok(()) => return true,
                        Err(replay_err) => {
                            self.link.drop_upstream();
                            self.ctx.members.mark_failed(
                                &to,
                                &replay_err.reason(),
                                self.ctx.config.policy.upstream.backoff,
                            );
                            continue;
                        }
                    }
                }
                Err(reply) => reply,
            };
            warn!(session = self.peer.id, client = %self.peer.client, from = %from, reason = %err.reason(), reply = %String::from_utf8_lossy(reply.as_bytes()).trim_end(), "no member left for the transaction");
            metrics::message(&from, MessageResult::Tempfail);
            self.link.break_transaction();
            return false;
        }
    }

    /// Connects to the next untried member of the session's order.
    /// `Err` carries the reply the client gets when there is none.
    /// Callers box this future: it holds the whole member set-up (several
    /// KiB), needed once per member connection, and an idle session task
    /// would otherwise carry that size all its life.
    pub(crate) async fn connect_next(&mut self) -> Result<(), Reply> {
        let identity = self.identity().await;
        let policy = &self.ctx.config.policy;
        // The member that just failed to set up in this call, and why: when a
        // later one works, that is a failover and is logged as one.
        let mut failed: Option<(String, String)> = None;
        loop {
            if self.link.attempts() >= policy.routing.max_attempts {
                return Err(tempfail_no_member());
            }
            let route = self.ctx.router.route(
                &self.ctx.members,
                self.peer.client.ip(),
                Some(self.peer.destination.ip()),
            );
            match route.verdict {
                Verdict::Route => {}
                Verdict::InjectionDenied => {
                    let source = route.source_member.as_deref().unwrap_or("?");
                    warn!(session = self.peer.id, client = %self.peer.client, source = %source, "injection denied: member may inject into no member");
                    metrics::injection_denied(source);
                    return Err(Reply::new(
                        550,
                        "5.7.1",
                        &format!("Injection denied: member {source} may not inject mail here"),
                    ));
                }
                Verdict::Unavailable => return Err(tempfail_no_member()),
            }
            let Some(next) = route.order.iter().find(|r| self.link.untried(&r.member)) else {
                return Err(tempfail_no_member());
            };
            let name = next.member.clone();
            self.link.attempt(name.clone());
            let Some(addr) = policy.member(&name).and_then(|m| m.smtp.clone()) else {
                continue;
            };
            if self.link.attempts() == 1 {
                // debug: at info every session would write two lines; the
                // session-end line names the member, `route explain` the order.
                // Its own target, so `[log] level = "info,mxgate::route=debug"`
                // (and the demo) logs every routing decision.
                let order = route.order.iter().map(|r| r.member.as_str());
                debug!(target: "mxgate::route", session = self.peer.id, client = %self.peer.client, source_member = route.source_member.as_deref().unwrap_or("-"), member = %name, order = %Joined(&order.collect::<Vec<_>>()), "route");
            }
            // Count the session on the member from the moment it is chosen, so
            // concurrent sessions see it (affinity "none", `status`).
            let guard = self.ctx.members.start_session(&name);
            match Upstream::connect(
                &name,
                &addr,
                &policy.upstream,
                self.ctx.upstream_tls.as_ref(),
                &self.ctx.listener.hostname,
                &identity,
            )
            .await
            {
                Ok(mut up) => {
                    let offers = up.capabilities().extensions();
                    self.ctx.members.learn_extensions(&name, offers);
                    if !offers.covers(self.offered()) {
                        // Promised to the client when the member was not a
                        // candidate (down, or its extensions changed since).
                        let reason = format!(
                            "does not offer {} (offered to the client: {})",
                            offers,
                            self.offered()
                        );
                        warn!(session = self.peer.id, client = %self.peer.client, member = %name, reason = %reason, "member unusable for this session");
                        tokio::spawn(up.quit());
                        failed = Some((name, reason));
                        continue;
                    }
                    up.hold_session(guard);
                    if let Some((from, reason)) = failed.take() {
                        warn!(session = self.peer.id, client = %self.peer.client, from = %from, to = %name, reason = %reason, "failover");
                        metrics::failover(&from, &name);
                    }
                    self.ctx.members.mark_ok(&name);
                    self.stats.used(name);
                    self.link.connected(up);
                    return Ok(());
                }
                Err(err) => {
                    warn!(session = self.peer.id, client = %self.peer.client, member = %name, reason = %err.reason(), "member unusable");
                    self.ctx
                        .members
                        .mark_failed(&name, &err.reason(), policy.upstream.backoff);
                    failed = Some((name, err.reason()));
                }
            }
        }
    }

    /// Drops the member connection (saying QUIT) before the client identity changes.
    /// The QUIT exchange runs in the background: the client's reply does not wait for it.
    fn end_member_connection(&mut self) {
        if let Some(up) = self.link.take_upstream() {
            tokio::spawn(up.quit());
        }
    }
}

/// Outcome of reading a relayed command's reply.
enum Collected {
    Reply(Reply),
    StartData(Reply),
    Failed(UpstreamError),
}

/// Marks every item as not yet written: they go to the next member connection.
fn unsend(items: &mut VecDeque<Item>) {
    for item in items.iter_mut() {
        item.sent = false;
    }
}

impl Item {
    fn is_relayed(&self) -> bool {
        matches!(
            self.pending,
            Pending::Mail(_) | Pending::Rcpt(_) | Pending::Data | Pending::Rset
        )
    }
}

/// Encodes a relayed command for this member, dropping parameters it did not offer.
fn encode(pending: &Pending, up: &Upstream, out: &mut BytesMut) {
    match pending {
        Pending::Mail(mail) => {
            let caps = up.capabilities();
            mail.encode(out, |param| match param.keyword.as_str() {
                "SIZE" => caps.size.is_some(),
                "BODY" => caps.eightbitmime,
                "SMTPUTF8" => caps.smtputf8,
                "RET" | "ENVID" => caps.dsn,
                _ => false,
            });
        }
        Pending::Rcpt(rcpt) => rcpt.encode(out),
        Pending::Data => out.extend_from_slice(b"DATA\r\n"),
        Pending::Rset => out.extend_from_slice(b"RSET\r\n"),
        // A chunk goes out with its octets (`bdat`), never ahead of them.
        Pending::Reply(_)
        | Pending::Overshoot
        | Pending::Reset(_)
        | Pending::Bdat { .. }
        | Pending::Hangup(_) => {}
    }
}

/// Replays an accepted envelope on a fresh member; every reply must be 2xx.
async fn replay(
    up: &mut Upstream,
    txn: &Transaction,
    limit: Duration,
) -> Result<(), UpstreamError> {
    let commands: Vec<Pending> = std::iter::once(Pending::Mail(txn.mail.clone()))
        .chain(txn.rcpts.iter().cloned().map(Pending::Rcpt))
        .collect();
    let pipelining = up.capabilities().pipelining;
    let mut out = BytesMut::new();
    if pipelining {
        for command in &commands {
            encode(command, up, &mut out);
        }
        up.send(&out, limit).await?;
        for _ in &commands {
            expect_accepted(up.reply(limit).await?)?;
        }
    } else {
        for command in &commands {
            out.clear();
            encode(command, up, &mut out);
            up.send(&out, limit).await?;
            expect_accepted(up.reply(limit).await?)?;
        }
    }
    Ok(())
}

fn expect_accepted(reply: Reply) -> Result<(), UpstreamError> {
    if reply.is_positive() {
        Ok(())
    } else {
        Err(UpstreamError::Refused {
            phase: "envelope replay",
            reply,
        })
    }
}
