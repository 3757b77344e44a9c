//! The byte buffers of a session: client input, replies queued for the
//! client, and commands encoded for the member.

use bytes::{Bytes, BytesMut};

use crate::smtp::proto::{LineError, LineReader, Reply};

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
}

impl Buffers {
    /// Buffers over input already read (`rbuf`).
    pub(super) fn new(rbuf: BytesMut) -> Self {
        Buffers {
            rbuf,
            lines: LineReader::new(),
            wbuf: BytesMut::with_capacity(512),
            obuf: BytesMut::new(),
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
