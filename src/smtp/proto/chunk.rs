//! CHUNKING (RFC 3030 BDAT), sans-IO: the octets of one chunk
//! ([`ChunkReader`]) and the running state of a BDAT transaction
//! ([`Chunking`]: octets announced so far against the size limit, and the
//! reply that failed it).
//!
//! A chunk is exactly the `n` octets that follow the `BDAT n [LAST]` command
//! line: binary-safe, with no dot-stuffing and no end marker, so nothing in
//! it is scanned (a `CRLF.CRLF`, a bare CR or LF, a dot at a line start are
//! all data). With no end-of-data sequence there is nothing to smuggle one
//! past (CVE-2023-51764): the member counts octets too. The `bare_lf` rule
//! is DATA's alone (SPEC 4.7); a member applies its own policy to BDAT
//! content (Postfix's `smtpd_forbid_bare_newline` covers it).

use bytes::{BufMut, Bytes, BytesMut};

use super::reply::Reply;

/// One step of the [`ChunkReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkStep {
    /// Octets of the chunk (never empty): forward them, then call `feed` again.
    Forward(Bytes),
    /// The input is used up and octets of the chunk are still due: read more.
    NeedMore,
    /// The whole chunk was taken; what follows it stays in the input.
    End,
}

/// Takes exactly the announced octets of one chunk off the front of the
/// client input, whatever they are; input past the chunk is left alone
/// (the next command, pipelined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkReader {
    /// Octets of the chunk not taken yet.
    left: u64,
}

impl ChunkReader {
    /// A reader for a chunk of `size` octets, right after its command line.
    pub fn new(size: u64) -> Self {
        ChunkReader { left: size }
    }

    /// Takes chunk octets from the front of `input` (no copy: a slice of it).
    pub fn feed(&mut self, input: &mut BytesMut) -> ChunkStep {
        if self.left == 0 {
            return ChunkStep::End;
        }
        if input.is_empty() {
            return ChunkStep::NeedMore;
        }
        let n = usize::try_from(self.left).map_or(input.len(), |left| left.min(input.len()));
        self.left -= n as u64;
        ChunkStep::Forward(input.split_to(n).freeze())
    }

    /// Octets of the chunk still to come.
    pub fn left(&self) -> u64 {
        self.left
    }
}

/// What becomes of an announced chunk ([`Chunking::admit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Within the limit: relay it.
    Relay,
    /// Refused: read and discard its octets, then answer this reply.
    Refuse(Reply),
}

/// The BDAT side of a transaction: whether chunks were announced in it,
/// the octets announced so far, and the reply that failed it (a failed
/// transaction keeps discarding chunks, each answered with that reply,
/// until `BDAT LAST` or RSET, as in Postfix). Cleared with the envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunking {
    /// Chunks were announced since the transaction began.
    open: bool,
    /// Octets of the relayed chunks.
    total: u64,
    /// Chunks relayed to the member.
    relayed: u64,
    /// Why the transaction failed, when it did.
    failed: Option<Reply>,
}

impl Chunking {
    /// Decides a chunk of `size` octets in a message of at most `max`
    /// octets; a chunk that would pass the limit fails the transaction
    /// (`552 5.3.4`, as Postfix does when the announced size passes it).
    pub fn admit(&mut self, size: u64, max: u64) -> Admission {
        self.open = true;
        if let Some(reply) = &self.failed {
            return Admission::Refuse(reply.clone());
        }
        match self.total.checked_add(size) {
            Some(total) if total <= max => {
                self.total = total;
                self.relayed += 1;
                Admission::Relay
            }
            _ => {
                let reply = too_big();
                self.fail(reply.clone());
                Admission::Refuse(reply)
            }
        }
    }

    /// The transaction failed with `reply`: later chunks get it too.
    pub fn fail(&mut self, reply: Reply) {
        self.open = true;
        self.failed = Some(reply);
    }

    /// Chunks were announced in the transaction (DATA, MAIL and RCPT are
    /// out of sequence now).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The transaction failed: chunks are discarded.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// The chunk just admitted is the transaction's first (nothing of the
    /// message went to the member before it).
    pub fn is_first(&self) -> bool {
        self.relayed == 1
    }

    /// Octets of the relayed chunks.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The transaction ended (`BDAT LAST`, RSET, a new session state).
    pub fn end(&mut self) {
        *self = Chunking::default();
    }
}

/// The reply to a chunk that takes the message past the size limit.
pub fn too_big() -> Reply {
    Reply::new(552, "5.3.4", "Error: message size exceeds fixed limit")
}

/// Whether a command line is a BDAT command, parsed or not (its verb).
pub fn is_bdat(line: &[u8]) -> bool {
    line.get(..4)
        .is_some_and(|verb| verb.eq_ignore_ascii_case(b"BDAT"))
        && matches!(line.get(4), None | Some(b' '))
}

/// Appends the command line `BDAT size [LAST]`.
pub fn encode_bdat(size: u64, last: bool, out: &mut BytesMut) {
    out.put_slice(b"BDAT ");
    out.put_slice(size.to_string().as_bytes());
    if last {
        out.put_slice(b" LAST");
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
#[path = "chunk_tests.rs"]
mod tests;
