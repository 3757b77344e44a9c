//! The admin socket (`data_dir/admin.sock`, mode 0600) the CLI talks to.
//!
//! One JSON request per line, one JSON response per line:
//! `{"cmd":"status"}` or `{"cmd":"route_explain","client":IP,"dest":IP|null,"listener":NAME|null,"text":BOOL}`
//! or `{"cmd":"dns_check","domains":[NAME...]}` (a fresh check; no domain: `[dns] domains`),
//! answered `{"ok":true,"result":...}` or `{"ok":false,"error":TEXT}`.

mod server;
mod status;

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use server::{bind, serve};
pub use status::{
    DescriptorStatus, DnsDomainStatus, DnsStatus, ListenerStatus, MemberStatus, Status, render_text,
};

/// A request on the admin socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Listeners, members, sessions.
    Status,
    /// The routing order for a client.
    RouteExplain {
        /// Client address.
        client: IpAddr,
        /// Destination address (default: the listener's address).
        dest: Option<IpAddr>,
        /// Listener whose address is the destination (default: the first).
        listener: Option<String>,
        /// Answer with the rendered text instead of the JSON route.
        #[serde(default)]
        text: bool,
    },
    /// A fresh DNS check with the daemon's policy; answers a [`crate::dns::CheckReport`].
    DnsCheck {
        /// Domains to check (empty: `[dns] domains`).
        #[serde(default)]
        domains: Vec<String>,
    },
    /// `mxgate lft status`: the LFT upload queue per target.
    LftStatus,
    /// `mxgate cluster ...` (handled in [`crate::cluster::admin`]).
    Cluster(crate::cluster::admin::ClusterRequest),
}

/// A response on the admin socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result when `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// What went wrong otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why the CLI could not get an answer from the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listening on the socket.
    #[error(
        "cannot reach the mxgate daemon at {path}: {source}\n\
         Is `mxgate serve` running with this configuration? Pass the same file with -c."
    )]
    Unreachable {
        /// Socket path.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The daemon answered something unexpected.
    #[error("bad answer from the daemon: {0}")]
    Protocol(String),
    /// The daemon refused the request.
    #[error("{0}")]
    Refused(String),
}

/// Sends one request to the daemon at `socket` and returns its result.
pub fn request(socket: &Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    request_within(socket, req, Duration::from_secs(30))
}

/// [`request`], waiting up to `limit` for the answer (a DNS check takes longer).
pub fn request_within(
    socket: &Path,
    req: &Request,
    limit: Duration,
) -> Result<serde_json::Value, ClientError> {
    let unreachable = |source| ClientError::Unreachable {
        path: socket.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream.set_read_timeout(Some(limit)).map_err(unreachable)?;
    let mut line = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(unreachable)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let response: Response =
        serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
    match (response.ok, response.result, response.error) {
        (true, Some(result), _) => Ok(result),
        (_, _, Some(error)) => Err(ClientError::Refused(error)),
        _ => Err(ClientError::Protocol("empty response".into())),
    }
}
