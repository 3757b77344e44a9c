//! The process's standard output: the one writer every command prints
//! through. A reader that closes the pipe early (`mxgate status | head -1`)
//! is not an error: the command stops writing and ends with 141, what a
//! shell reports for a program ended by SIGPIPE, instead of panicking as
//! `println!` does (Rust ignores SIGPIPE, so the write fails with EPIPE).

use std::io::{ErrorKind, Write};

/// The exit status of a command whose reader went away: 128 + SIGPIPE (13).
pub const CLOSED_EXIT: u8 = 141;

/// Why standard output took not everything.
#[derive(Debug)]
pub enum WriteError {
    /// The reader closed the pipe: stop quietly.
    Closed,
    /// Any other failure (a full disk, a revoked terminal): worth a message.
    Failed(std::io::Error),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Closed => f.write_str("standard output was closed by its reader"),
            WriteError::Failed(e) => write!(f, "cannot write to standard output: {e}"),
        }
    }
}

impl std::error::Error for WriteError {}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> WriteError {
        match e.kind() {
            ErrorKind::BrokenPipe => WriteError::Closed,
            _ => WriteError::Failed(e),
        }
    }
}

/// Writes `bytes` to standard output and flushes it.
pub fn write(bytes: &[u8]) -> Result<(), WriteError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(WriteError::from)
}

/// Writes `text` as whole lines: a line break is added unless it ends with one.
pub fn write_lines(text: &str) -> Result<(), WriteError> {
    if text.ends_with('\n') {
        write(text.as_bytes())
    } else {
        write(format!("{text}\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_pipe_ends_quietly() {
        let closed = WriteError::from(std::io::Error::from(ErrorKind::BrokenPipe));
        assert!(matches!(closed, WriteError::Closed));
        let full = WriteError::from(std::io::Error::from(ErrorKind::StorageFull));
        assert!(matches!(full, WriteError::Failed(_)));
        assert_eq!(CLOSED_EXIT, 128 + 13);
    }
}
