//! Sans-IO SMTP protocol code: command lines, replies, EHLO capabilities,
//! XCLIENT encoding, the DATA receiver, BDAT chunks and PROXY headers. Nothing here
//! touches a socket; the async driver in [`crate::smtp`] feeds bytes in and
//! writes what comes out.
//!
//! - [`line`](mod@line): client input to command lines ([`LineReader`], 512-octet cap).
//! - [`command`]: a line to a [`Command`]; errors map to a [`Reply`] in one place.
//! - [`reply`]: member replies taken off the wire verbatim, and mxgate's own.
//! - [`caps`]: EHLO [`Capabilities`] of a member and the XCLIENT lines for it.
//! - [`params`]: MAIL and RCPT parameters checked against what a session offered.
//! - [`data`]: the [`DataReceiver`], which streams DATA to the member.
//! - [`chunk`]: BDAT (RFC 3030) chunks ([`ChunkReader`]) and a BDAT transaction's state ([`Chunking`]).
//! - [`proxy`]: PROXY v1/v2 headers in and out.

pub mod caps;
pub mod chunk;
pub mod command;
pub mod data;
pub mod line;
pub mod params;
mod path;
pub mod proxy;
pub mod reply;

pub use caps::{
    Capabilities, EhloCache, Extensions, XclientAttrs, encode_xclient, xtext_decode, xtext_encode,
};
pub use chunk::{Admission, ChunkReader, ChunkStep, Chunking, encode_bdat, is_bdat};
pub use command::{Command, CommandError, MailFrom, Param, RcptTo, parse_command};
pub use data::{DataReceiver, DataRefusal, DataStep};
pub use line::{LineError, LineReader, MAX_COMMAND_LINE};
pub use proxy::{
    ProxyError, ProxyInfo, V2Signature, encode_proxy_header, parse_proxy_header, v2_signature,
};
pub use reply::{MAX_REPLY_LINE, MAX_REPLY_LINES, MAX_REPLY_SIZE, Reply, ReplyError, parse_reply};
