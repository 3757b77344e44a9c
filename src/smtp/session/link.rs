//! The member's side of a session: the member connection, the transaction
//! it holds (with the tap's copy of a message relayed in BDAT chunks), and
//! the members tried for it ([`crate::smtp::relay`] drives it).

use crate::smtp::proto::{MailFrom, RcptTo, Reply};
use crate::smtp::tap::MessageCopy;
use crate::smtp::upstream::Upstream;

/// The open transaction as the member has accepted it (replayed on failover).
#[derive(Debug, Clone)]
pub(crate) struct Transaction {
    pub mail: MailFrom,
    pub rcpts: Vec<RcptTo>,
}

/// The link to a member: its connection, the transaction as the member
/// accepted it (the resolution view), and the members tried for it in the
/// session's order. STARTTLS moves it with the session, unused (the reset
/// before the `220` ended the connection and the transaction).
#[derive(Debug, Default)]
pub(crate) struct MemberLink {
    upstream: Option<Upstream>,
    txn: Option<Transaction>,
    /// The transaction could not be placed anywhere: later commands of it get 451.
    broken: bool,
    /// Members tried since the transaction (or the reconnect) began, in order.
    tried: Vec<String>,
    /// Connections attempted since then, against `max_attempts`.
    attempts: u32,
    /// The tap's copy of the message being relayed in BDAT chunks; it
    /// ends with the transaction (dropped: discarded).
    copy: Option<Copy>,
}

/// A [`MessageCopy`] kept between chunks.
pub(crate) struct Copy(pub Box<dyn MessageCopy>);

impl std::fmt::Debug for Copy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageCopy")
    }
}

impl MemberLink {
    /// The member connection, if one is open.
    pub(crate) fn upstream(&self) -> Option<&Upstream> {
        self.upstream.as_ref()
    }

    /// The member connection, to talk on, if one is open.
    pub(crate) fn upstream_mut(&mut self) -> Option<&mut Upstream> {
        self.upstream.as_mut()
    }

    /// A member connection was set up: commands go to it from now on.
    pub(crate) fn connected(&mut self, up: Upstream) {
        self.upstream = Some(up);
    }

    /// Takes the member connection away, to end it politely (QUIT) or to name it.
    pub(crate) fn take_upstream(&mut self) -> Option<Upstream> {
        self.upstream.take()
    }

    /// Drops the member connection without QUIT: a member that never got
    /// the end of data discards the message.
    pub(crate) fn drop_upstream(&mut self) {
        self.upstream = None;
    }

    /// The member connection failed: takes it away. Returns its member and
    /// whether it was stale (kept from an earlier transaction, none open:
    /// the member may just have closed it while idle); a stale connection
    /// is no failure of the member, and every member may be tried again.
    pub(crate) fn fail(&mut self) -> Option<(String, bool)> {
        let failed = self.upstream.take()?;
        let stale = failed.transactions() > 0 && self.txn.is_none();
        if stale {
            self.restart_attempts();
        }
        Some((failed.member().to_owned(), stale))
    }

    /// The transaction the member accepted so far, if one is open.
    pub(crate) fn transaction(&self) -> Option<&Transaction> {
        self.txn.as_ref()
    }

    /// Takes the transaction at its end of data: it is over, whatever the
    /// reply. A tap's copy not taken before is discarded.
    pub(crate) fn take_transaction(&mut self) -> Option<Transaction> {
        self.copy = None;
        self.txn.take()
    }

    /// Keeps the tap's copy of the message relayed in chunks.
    pub(crate) fn keep_copy(&mut self, copy: Box<dyn MessageCopy>) {
        self.copy = Some(Copy(copy));
    }

    /// The tap's copy of the message relayed in chunks, to feed.
    pub(crate) fn copy_mut(&mut self) -> Option<&mut Copy> {
        self.copy.as_mut()
    }

    /// Takes the tap's copy, for the member's verdict.
    pub(crate) fn take_copy(&mut self) -> Option<Copy> {
        self.copy.take()
    }

    /// The transaction could not be placed anywhere: later commands of it get 451.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// A new transaction (MAIL without a member connection): not broken,
    /// and every member may be tried for it.
    pub(crate) fn begin(&mut self) {
        self.broken = false;
        self.restart_attempts();
    }

    /// The member accepted MAIL: the transaction opens.
    pub(crate) fn open(&mut self, mail: MailFrom) {
        self.txn = Some(Transaction {
            mail,
            rcpts: Vec::new(),
        });
    }

    /// The member accepted a recipient: it joins the transaction.
    pub(crate) fn add_rcpt(&mut self, rcpt: RcptTo) {
        if let Some(txn) = self.txn.as_mut() {
            txn.rcpts.push(rcpt);
        }
    }

    /// Forgets the transaction, whether the member had it or none could take it.
    pub(crate) fn end_transaction(&mut self) {
        self.txn = None;
        self.copy = None;
        self.broken = false;
    }

    /// No member took a new transaction and the client gets `reply`: when
    /// it is transient, the transaction is broken. Returns whether it is.
    pub(crate) fn unplaced(&mut self, reply: &Reply) -> bool {
        self.broken = reply.is_transient();
        self.broken
    }

    /// No member is left for the open transaction: it is broken.
    pub(crate) fn break_transaction(&mut self) {
        self.txn = None;
        self.copy = None;
        self.broken = true;
    }

    /// A new transaction (or a reconnect from the top) may try every member again.
    pub(crate) fn restart_attempts(&mut self) {
        self.tried.clear();
        self.attempts = 0;
    }

    /// Connections attempted since the transaction (or reconnect) began.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// `member` has not been tried since the transaction (or reconnect) began.
    pub(crate) fn untried(&self, member: &str) -> bool {
        !self.tried.iter().any(|t| t == member)
    }

    /// A connection to `member` is attempted.
    pub(crate) fn attempt(&mut self, member: String) {
        self.tried.push(member);
        self.attempts += 1;
    }

    /// The member tried last, if any.
    pub(crate) fn last_tried(&self) -> Option<&str> {
        self.tried.last().map(String::as_str)
    }
}
