//! The client's side of a session: what the client has said and been told.

use super::Transaction;
use crate::smtp::proto::{Chunking, Extensions, Reply};

/// What the client has said and been told: trust, HELO/EHLO, TLS, the
/// envelope as the client has asked for it (the classification view, which
/// runs ahead of what the member accepted) and the error replies given.
/// Moves with the session onto the TLS stream.
#[derive(Debug)]
pub(crate) struct ClientState {
    /// Client trusted for XCLIENT (its address is in `trusted_proxies`).
    pub(super) trusted: bool,
    /// The HELO/EHLO name and the protocol it implies (`SMTP`, `ESMTP`).
    pub(super) helo: Option<(String, &'static str)>,
    /// The optional extensions the last EHLO reply offered (none before
    /// EHLO, and after HELO).
    pub(super) offered: Extensions,
    /// The stream is TLS (STARTTLS done).
    pub(super) tls: bool,
    /// STARTTLS was accepted in the batch being read: nothing after it is read.
    pub(super) starttls: bool,
    /// A MAIL was asked for and not ended since.
    pub(super) mail_open: bool,
    /// Recipients asked for (within `max_recipients`) in this transaction.
    pub(super) rcpts_asked: usize,
    /// Recipients of this transaction refused for `max_recipients` so far.
    pub(super) overshoot: usize,
    /// The BDAT chunks of this transaction (RFC 3030), ended with it.
    pub(super) chunking: Chunking,
    /// Error replies (4xx/5xx) given so far, against `max_errors`.
    errors: usize,
}

impl ClientState {
    /// A client that has said nothing yet; `trusted` for XCLIENT.
    pub(super) fn new(trusted: bool) -> Self {
        ClientState {
            trusted,
            helo: None,
            offered: Extensions::default(),
            tls: false,
            starttls: false,
            mail_open: false,
            rcpts_asked: 0,
            overshoot: 0,
            chunking: Chunking::default(),
            errors: 0,
        }
    }

    /// A MAIL is asked for: a new envelope, with no recipients yet.
    pub(super) fn open_mail(&mut self) {
        self.mail_open = true;
        self.rcpts_asked = 0;
        self.overshoot = 0;
    }

    /// No MAIL is open any more (RSET, EHLO, XCLIENT, DATA, `BDAT LAST`).
    pub(super) fn forget_envelope(&mut self) {
        self.mail_open = false;
        self.rcpts_asked = 0;
        self.overshoot = 0;
        self.chunking.end();
    }

    /// After a batch without a message: what the member accepted is the
    /// truth. A refused MAIL opens no transaction, a refused DATA leaves it open.
    pub(super) fn align_to(&mut self, txn: Option<&Transaction>) {
        self.mail_open = txn.is_some();
        self.rcpts_asked = txn.map_or(0, |t| t.rcpts.len());
    }

    /// Counts a reply given to the client: 4xx and 5xx count against `max_errors`.
    pub(super) fn answered(&mut self, reply: &Reply) {
        if reply.code() >= 400 {
            self.errors += 1;
        }
    }

    /// The client has had `max` error replies or more.
    pub(super) fn too_many_errors(&self, max: usize) -> bool {
        self.errors >= max
    }
}
