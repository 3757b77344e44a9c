//! The admin socket (`data_dir/admin.sock`, mode 0600) the CLI talks to.
//!
//! One JSON request per line, one JSON response per line:
//! `{"cmd":"status"}` or `{"cmd":"route_explain","client":IP,"dest":IP|null,"listener":NAME|null,"text":BOOL}`
//! or `{"cmd":"dns_check","domains":[NAME...]}` (a fresh check; no domain: `[dns] domains`),
//! answered `{"ok":true,"result":...}` or `{"ok":false,"error":TEXT}`.

mod run;
mod server;
mod status;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use run::{UPGRADE_WITHIN, serve_daemon, start};
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
    /// `mxgate upgrade`: replace the daemon by the binary at its path;
    /// answers a [`crate::daemon::Upgraded`].
    Upgrade,
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
