//! The byte buffers of a session: client input, replies queued for the
//! client, and commands encoded for the member; and the look at the start
//! of the client's first input for a PROXY v2 header, before any line is cut.

use bytes::{Bytes, BytesMut};

use crate::smtp::proto::{LineError, LineReader, Reply, V2Signature, v2_signature};

/// What the session's first input turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Opening {
    /// Commands: cut them into lines.
    Commands,
    /// Too short to tell from the PROXY v2 signature: read more first.
    NeedMore,
    /// A PROXY v2 header (binary; as lines it would hold a `QUIT`).
    ProxyV2,
}

/// The session's buffers, kept for its whole life so that a command costs
/// no allocation: client input and the line reader over it, replies queued
/// for the client, and commands encoded for the member.
#[derive(Debug)]
pub(crate) struct Buffers {
    /// Client input not consumed yet.
    rbuf: BytesMut,
    /// Splits `rbuf` into command lines.
    lines: LineReader,
    /// Replies queued for the client, written by [`super::Session::flush`].
    wbuf: BytesMut,
    /// Commands encoded for the member, reused for every batch.
    obuf: BytesMut,
    /// The first input was looked at (see [`Buffers::opening`]).
    opened: bool,
}

impl Buffers {
    /// Buffers over input already read (`rbuf`).
    pub(super) fn new(rbuf: BytesMut) -> Self {
        Buffers {
            rbuf,
            lines: LineReader::new(),
            wbuf: BytesMut::with_capacity(512),
            obuf: BytesMut::new(),
            opened: false,
        }
    }

    /// What the input is, looked at once at the session's start: a PROXY v2
    /// header is recognised by its signature before the lines are cut (its
    /// binary octets would make several bad commands and a `QUIT`). Input
    /// that is still a beginning of the signature waits for more.
    pub(super) fn opening(&mut self) -> Opening {
        if self.opened {
            return Opening::Commands;
        }
        match v2_signature(&self.rbuf) {
            V2Signature::Present => Opening::ProxyV2,
            V2Signature::Incomplete => Opening::NeedMore,
            V2Signature::Absent => {
                self.opened = true;
                Opening::Commands
            }
        }
    }

    /// The next complete command line of the input, if there is one.
    pub(super) fn next_line(&mut self) -> Result<Option<Bytes>, LineError> {
        self.lines.next_line(&mut self.rbuf)
    }

    /// Throws away the unread input, partial line included (STARTTLS).
    pub(super) fn discard_input(&mut self) {
        self.rbuf.clear();
        self.lines = LineReader::new();
    }

    /// The client input, for message data read past the command lines.
    pub(crate) fn input(&mut self) -> &mut BytesMut {
        &mut self.rbuf
    }

    /// Queues `reply` for the client.
    pub(super) fn reply(&mut self, reply: &Reply) {
        self.wbuf.extend_from_slice(reply.as_bytes());
    }

    /// The replies queued for the client (empty: nothing to write).
    pub(super) fn output(&self) -> &[u8] {
        &self.wbuf
    }

    /// Forgets the queued replies: written, or abandoned.
    pub(super) fn clear_output(&mut self) {
        self.wbuf.clear();
    }

    /// The buffer to encode member commands into: empty, with the room of
    /// earlier batches.
    pub(crate) fn encoder(&mut self) -> &mut BytesMut {
        self.obuf.clear();
        &mut self.obuf
    }
}
