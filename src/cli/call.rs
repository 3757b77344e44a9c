//! The one way the command line asks the running daemon: find its admin
//! socket through `mxgate.toml`, send one request line, read one answer
//! line ([`crate::admin`] documents the protocol). Every failure is a
//! [`CallError`] that says what to do next and has its [`Exit`] code.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Exit;
use crate::admin::{Request, Response};
use crate::config;

/// How long an ordinary answer may take.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Why the daemon gave no result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// `mxgate.toml` could not be read to find the admin socket.
    #[error(
        "cannot read {}: {source}\n\
         The daemon is found through its configuration file: pass the one \
         `mxgate serve` runs with, with -c (default /etc/mxgate/mxgate.toml).",
        .path.display()
    )]
    Unreadable {
        /// The file given with `-c` (or the default).
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// `mxgate.toml` was read but is invalid, so the admin socket is unknown.
    #[error(
        "{errors}\n{} is invalid, so the daemon's admin socket is unknown; \
         fix the lines above (mxgate check-config -c {} lists them all)",
        .path.display(), .path.display()
    )]
    Invalid {
        /// The file given with `-c` (or the default).
        path: PathBuf,
        /// What is wrong with it.
        errors: config::ConfigErrors,
    },
    /// No daemon listening on the socket.
    #[error(
        "cannot reach the mxgate daemon at {}: {source}\n\
         Is `mxgate serve` running with this configuration? Pass the same file with -c.",
        .socket.display()
    )]
    Unreachable {
        /// Socket path.
        socket: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The daemon answered something unexpected.
    #[error("bad answer from the daemon: {0}")]
    Protocol(String),
    /// The daemon refused the request (its reason).
    #[error("{0}")]
    Refused(String),
}

impl CallError {
    /// The exit code for this failure.
    pub fn exit(&self) -> Exit {
        match self {
            CallError::Unreadable { .. } | CallError::Invalid { .. } => Exit::Config,
            CallError::Unreachable { .. } | CallError::Protocol(_) => Exit::Unavailable,
            CallError::Refused(_) => Exit::Failed,
        }
    }
}

/// Sends `request` to the daemon of `config_path` and returns its result,
/// waiting up to `limit` for the answer.
pub fn call(
    config_path: &Path,
    request: &Request,
    limit: Duration,
) -> Result<serde_json::Value, CallError> {
    let path = config_path.to_path_buf();
    let text = match std::fs::read_to_string(config_path) {
        Ok(text) => text,
        Err(source) => return Err(CallError::Unreadable { path, source }),
    };
    let socket = match config::load_node_str(config_path, &text) {
        Ok(node) => node.admin_socket(),
        Err(errors) => return Err(CallError::Invalid { path, errors }),
    };
    exchange(&socket, request, limit)
}

fn exchange(
    socket: &Path,
    request: &Request,
    limit: Duration,
) -> Result<serde_json::Value, CallError> {
    let unreachable = |source| CallError::Unreachable {
        socket: socket.to_path_buf(),
        source,
    };
    let protocol = |e: &dyn std::fmt::Display| CallError::Protocol(e.to_string());
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream.set_read_timeout(Some(limit)).map_err(unreachable)?;
    let mut line = serde_json::to_string(request).map_err(|e| protocol(&e))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(unreachable)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| protocol(&e))?;
    let response: Response = serde_json::from_str(&answer).map_err(|e| protocol(&e))?;
    match (response.ok, response.result, response.error) {
        (true, Some(result), _) => Ok(result),
        (_, _, Some(error)) => Err(CallError::Refused(error)),
        _ => Err(CallError::Protocol("empty response".into())),
    }
}
