//! What the relay offers a subsystem that wants a copy of relayed messages
//! (LFT searches injected messages for attachments): the relay asks a
//! [`MessageTap`] once per message, after `354` or at its first BDAT
//! chunk, saying how the bytes are framed ([`Framing`]), and feeds the
//! [`MessageCopy`] it gets every chunk it forwards to the member, then the
//! member's verdict. The data plane names no subsystem; the daemon supplies
//! the tap ([`crate::smtp::session::SessionContext::tap`]).

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::Policy;
use crate::routing::Router;

/// How the bytes fed to a [`MessageCopy`] are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// DATA: dot-stuffed, through the end-of-data line (`.CRLF`).
    DotStuffed,
    /// BDAT (RFC 3030): the message octets as they are, nothing added.
    Chunks,
}

/// Source of a per-message copy of what the relay forwards.
pub trait MessageTap: Send + Sync + 'static {
    /// A copy for the message of `session` from `client`, about to be
    /// relayed under `policy` and `router`; `None` when this message is of
    /// no interest (or cannot be taken now). Called once per message; the
    /// copy is fed bytes framed as `framing` says.
    fn tap(
        &self,
        policy: &Arc<Policy>,
        router: &Router,
        client: IpAddr,
        session: u64,
        framing: Framing,
    ) -> Option<Box<dyn MessageCopy>>;
}

/// One message's copy: receives the bytes as forwarded to the member
/// (framed as [`MessageTap::tap`] was told). It must never make the relay
/// wait. Dropped without [`MessageCopy::finish`], the copy is discarded.
pub trait MessageCopy: Send {
    /// A chunk forwarded to the member (a reference count, no copy).
    fn feed(&mut self, chunk: &Bytes);

    /// The member's verdict: `accepted` when it answered the end of data `2xx`.
    fn finish(self: Box<Self>, accepted: bool);
}
