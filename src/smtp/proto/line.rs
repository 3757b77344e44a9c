//! Command-line framing: splits client input into lines ended by CRLF (or a
//! bare LF), enforcing [`MAX_COMMAND_LINE`] without ever buffering more than
//! one line's worth of an over-long line.

use bytes::{Buf, Bytes, BytesMut};

/// Longest command line accepted, CRLF included (RFC 5321 4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// A command line could not be taken off the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Longer than [`MAX_COMMAND_LINE`]; the reader discards it through its line end.
    #[error("line too long")]
    TooLong,
}

/// Splits client input into command lines (CRLF, or a bare LF, terminated).
#[derive(Debug, Default)]
pub struct LineReader {
    /// Inside an over-long line already reported: drop bytes through its LF.
    discarding: bool,
}

impl LineReader {
    /// A reader in its initial state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one line off the front of `buf`, without its line ending.
    /// `Ok(None)`: need more bytes. `Err(TooLong)` is returned once per
    /// over-long line; its remaining bytes are discarded by later calls.
    pub fn next_line(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, LineError> {
        if self.discarding && !self.skip_rest(buf) {
            return Ok(None);
        }
        // Only the first MAX_COMMAND_LINE bytes can hold the LF of an acceptable line.
        let window = buf.len().min(MAX_COMMAND_LINE);
        match memchr::memchr(b'\n', &buf[..window]) {
            Some(lf) => {
                let mut line = buf.split_to(lf + 1).freeze();
                line.truncate(lf);
                if line.last() == Some(&b'\r') {
                    line.truncate(lf - 1);
                }
                Ok(Some(line))
            }
            None if buf.len() >= MAX_COMMAND_LINE => {
                // Drop what is already known to belong to the long line now, so
                // the caller's buffer never grows past one line.
                self.discarding = true;
                self.skip_rest(buf);
                Err(LineError::TooLong)
            }
            None => Ok(None),
        }
    }

    /// Discards through the LF ending the over-long line; `true` once it was found.
    fn skip_rest(&mut self, buf: &mut BytesMut) -> bool {
        match memchr::memchr(b'\n', buf) {
            Some(lf) => {
                buf.advance(lf + 1);
                self.discarding = false;
                true
            }
            None => {
                buf.clear();
                false
            }
        }
    }
}
