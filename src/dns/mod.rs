//! DNS: the MX / round-robin check of the domains mxgate fronts, and host
//! names of member upstreams (SPEC section 7).
//!
//! - [`resolver`]: asks the `[dns] nameservers` (or `/etc/resolv.conf`'s)
//!   directly, without hosts file or synthesised answers, and classifies each
//!   answer (records with TTLs, NXDOMAIN, no data, timeout, server error).
//! - [`check`] gathers, per domain, the MX set, each MX host's addresses, an
//!   SMTP probe and forward-confirmed reverse DNS of every address;
//!   [`report`] holds that as data and judges it (OK / WARNING / CRITICAL /
//!   UNKNOWN, exit codes of monitoring plugins); [`render`] prints it.
//! - [`monitor`] runs the check every `[dns] interval` in the daemon for
//!   `mxgate status` and the `mxgate_dns_*` metrics.
//! - [`upstream`] resolves member upstreams given by name, honouring TTLs.
//! - [`client_name`]: the SMTP client's forward-confirmed reverse DNS name
//!   (XCLIENT `NAME`), TTL-cached and bounded in time.

pub mod check;
pub mod client_name;
pub mod monitor;
pub mod probe;
pub mod render;
pub mod report;
pub mod resolver;
pub mod upstream;

pub use check::check;
pub use client_name::{ClientName, ClientNames, NameStatus};
pub use monitor::DnsMonitor;
pub use render::render_text;
pub use report::{CheckReport, DomainReport, Status};
pub use resolver::{Dns, QueryError};
pub use upstream::{UpstreamResolver, connect};
