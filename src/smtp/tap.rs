//! What the relay offers a subsystem that wants a copy of relayed messages
//! (LFT searches injected messages for attachments): the relay asks a
//! [`MessageTap`] once per message, after `354`, and feeds the
//! [`MessageCopy`] it gets every chunk it forwards to the member, then the
//! member's verdict. The data plane names no subsystem; the daemon supplies
//! the tap ([`crate::smtp::session::SessionContext::tap`]).

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::Policy;
use crate::routing::Router;

/// Source of a per-message copy of what the relay forwards.
pub trait MessageTap: Send + Sync + 'static {
    /// A copy for the message of `session` from `client`, about to be
    /// relayed under `policy` and `router`; `None` when this message is of
    /// no interest (or cannot be taken now). Called once per message.
    fn tap(
        &self,
        policy: &Arc<Policy>,
        router: &Router,
        client: IpAddr,
        session: u64,
    ) -> Option<Box<dyn MessageCopy>>;
}

/// One message's copy: receives the bytes as forwarded to the member
/// (dot-stuffed, through the end-of-data line). It must never make the relay
/// wait. Dropped without [`MessageCopy::finish`], the copy is discarded.
pub trait MessageCopy: Send {
    /// A chunk forwarded to the member (a reference count, no copy).
    fn feed(&mut self, chunk: &Bytes);

    /// The member's verdict: `accepted` when it answered the end of data `2xx`.
    fn finish(self: Box<Self>, accepted: bool);
}
