//! Validated, immutable runtime configuration: what the rest of mxgate reads.
//!
//! Built from the `File*` structs in [`super::file`] by [`super::load`]. Every
//! value here has already been checked; nothing downstream re-validates.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

/// Everything one node runs with: `mxgate.toml` plus the policy it points at.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// `[node]`.
    pub node: NodeConfig,
    /// `[[smtp]]` listeners, in file order.
    pub smtp: Vec<SmtpListener>,
    /// `[local]`: this node's own upstreams when it is a cluster member.
    pub local: Option<LocalConfig>,
    /// `[metrics]`.
    pub metrics: Option<MetricsConfig>,
    /// `[log]`.
    pub log: LogConfig,
    /// The routing policy (`cluster.toml`).
    pub policy: Arc<Policy>,
    /// `[[http]]` listeners (GINA web-portal proxy), in file order.
    pub http: Vec<HttpListener>,
    /// `[cluster]`: the control plane; `None` for a standalone node.
    pub cluster: Option<ClusterConfig>,
}

/// `[node]`: identity and where state and policy live.
#[derive(Debug, Clone, Serialize)]
pub struct NodeConfig {
    /// Node name (default: host name).
    pub name: String,
    /// State directory; relative paths in the file are resolved against the file's directory.
    pub data_dir: PathBuf,
    /// Path of `cluster.toml`.
    pub policy: PathBuf,
    /// On SIGTERM, how long sessions in flight may take to finish before `421 4.3.2`.
    #[serde(serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    /// Threads running sessions and everything else: 0 (default) is one
    /// per CPU; 1 is one event loop on one thread; N is N workers.
    pub worker_threads: usize,
}

impl NodeConfig {
    /// Path of the admin socket the CLI talks to.
    pub fn admin_socket(&self) -> PathBuf {
        self.data_dir.join("admin.sock")
    }
}

/// What to do with a bare CR or LF inside DATA (SPEC section 4 item 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BareLf {
    /// Refuse the message with `550 5.5.2` (default).
    Reject,
    /// Turn bare line endings into CRLF, never letting them form an end of data.
    Normalize,
}

/// One `[[smtp]]` listener.
#[derive(Debug, Clone, Serialize)]
pub struct SmtpListener {
    /// Listener name, used in logs, metrics and `route explain --listener`.
    pub name: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Banner and EHLO name (default: the node name).
    pub hostname: String,
    /// Expect a PROXY v1/v2 header before the greeting (from `trusted_proxies` only).
    pub proxy_protocol: bool,
    /// Peers allowed to send PROXY headers or XCLIENT to mxgate.
    pub trusted_proxies: Vec<IpNet>,
    /// PEM certificate chain for STARTTLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for STARTTLS.
    pub tls_key: Option<PathBuf>,
    /// Refuse MAIL before STARTTLS.
    pub require_tls: bool,
    /// Largest message accepted, advertised in SIZE (bytes).
    #[serde(serialize_with = "super::units::ser_size")]
    pub max_message_size: u64,
    /// Concurrent sessions on this listener.
    pub max_sessions: usize,
    /// Concurrent sessions from one client address.
    pub max_sessions_per_client: usize,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Bare CR/LF handling in DATA.
    pub bare_lf: BareLf,
    /// How long to wait for a pre-greeting talker before sending the banner (0: just check).
    #[serde(serialize_with = "ser_duration")]
    pub greet_delay: Duration,
    /// Time for one whole command line, from the moment the session waits
    /// for it to its line end (RFC 5321 4.5.3.2.7: 5 minutes); a deadline,
    /// not renewed by partial input.
    #[serde(serialize_with = "ser_duration")]
    pub command_timeout: Duration,
    /// Message data: the first `data_timeout` of DATA is free; then the
    /// client must keep up `min_data_rate` (RFC 5321 4.5.3.2.6: 3 minutes).
    #[serde(serialize_with = "ser_duration")]
    pub data_timeout: Duration,
    /// Minimum message data rate in bytes per second (Postfix's
    /// `smtpd_min_data_rate`): each read of N bytes moves the data deadline
    /// N / rate seconds on, never beyond `data_timeout` from then. 0: off
    /// (`data_timeout` per read).
    pub min_data_rate: u64,
    /// Errors (4xx/5xx replies to the client) before `421` and close.
    pub max_errors: usize,
}

/// One `[[http]]` listener: the GINA web-portal proxy.
#[derive(Debug, Clone, Serialize)]
pub struct HttpListener {
    /// Listener name, used in logs and metrics; unique among all listeners.
    pub name: String,
    /// Address to bind.
    pub listen: SocketAddr,
    /// PEM certificate chain; when set (with `tls_key`) the listener speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// No answer from the member within this time: `504` (default 60s).
    #[serde(serialize_with = "ser_duration")]
    pub upstream_timeout: Duration,
    /// Cookie carrying the chosen member, for cookie affinity; `None`: address affinity only.
    pub sticky_cookie: Option<String>,
    /// Largest request body passed to a member (bytes, default 100MiB): a
    /// larger `Content-Length` gets `413`, a longer streamed body is cut off.
    #[serde(serialize_with = "super::units::ser_size")]
    pub max_body_size: u64,
}

/// `[cluster]`: the control-plane endpoint (mutual TLS).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Address other nodes reach this one at (default: `listen`, which then must not be a wildcard).
    pub advertise: SocketAddr,
}

/// `[local]`: the upstreams this node offers as a cluster member.
#[derive(Debug, Clone, Serialize)]
pub struct LocalConfig {
    /// This node's MTA.
    pub smtp_upstream: Option<HostPort>,
    /// This node's GINA portal.
    pub gina_upstream: Option<String>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint.
    pub listen: SocketAddr,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// tracing filter directive, e.g. `info` or `mxgate=debug`.
    pub level: String,
}

/// The policy: `cluster.toml`.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    /// `[routing]`.
    pub routing: RoutingPolicy,
    /// `[upstream]`.
    pub upstream: UpstreamPolicy,
    /// `[health]`.
    pub health: HealthPolicy,
    /// `[dns]`.
    pub dns: DnsPolicy,
    /// `[lft]`.
    pub lft: LftPolicy,
    /// `[members.NAME]`, sorted by name.
    pub members: Vec<Member>,
}

impl Policy {
    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// How sessions are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Affinity {
    /// Rendezvous hash of (client prefix, destination address).
    SourceDestination,
    /// Rendezvous hash of the client prefix.
    Source,
    /// Fewest active sessions first.
    None,
}

/// `[routing]`.
#[derive(Debug, Clone, Serialize)]
pub struct RoutingPolicy {
    /// Affinity mode.
    pub affinity: Affinity,
    /// IPv4 clients are grouped by this prefix length.
    pub client_prefix_v4: u8,
    /// IPv6 clients are grouped by this prefix length.
    pub client_prefix_v6: u8,
    /// Members tried for one transaction before `451 4.4.1`.
    pub max_attempts: u32,
}

/// PROXY protocol towards members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// No header.
    Off,
    /// Text header.
    V1,
    /// Binary header.
    V2,
}

/// STARTTLS towards members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTls {
    /// Never.
    None,
    /// When offered.
    Opportunistic,
    /// Always; a member without it is a failed attempt.
    Required,
}

/// `[upstream]`: how mxgate talks to members' MTAs.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamPolicy {
    /// Pass the real client with XCLIENT when the MTA offers it.
    pub xclient: bool,
    /// PROXY header sent first.
    pub proxy_protocol: ProxyProtocol,
    /// STARTTLS mode.
    pub tls: UpstreamTls,
    /// TCP connect timeout.
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// Greeting, EHLO and XCLIENT exchange timeout (a member that connects but stays silent fails over).
    #[serde(serialize_with = "ser_duration")]
    pub greeting_timeout: Duration,
    /// Envelope command reply timeout (RFC 5321 4.5.3.2: 5 minutes).
    #[serde(serialize_with = "ser_duration")]
    pub command_timeout: Duration,
    /// Reply to the end of DATA (RFC 5321 4.5.3.2: 10 minutes).
    #[serde(serialize_with = "ser_duration")]
    pub data_timeout: Duration,
    /// How long a member whose connect failed is avoided.
    #[serde(serialize_with = "ser_duration")]
    pub backoff: Duration,
    /// CA certificates (PEM) that member certificates are verified against;
    /// `None`: the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Lab use only: accept any member certificate.
    pub tls_insecure_skip_verify: bool,
}

/// `[health]`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthPolicy {
    /// Check interval.
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// Successes before a member is up.
    pub rise: u32,
    /// Failures before a member is down.
    pub fall: u32,
    /// Longest one check may take (default: the interval).
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// How a member's SMTP upstream is checked.
    pub smtp_check: SmtpCheck,
    /// How a member's GINA upstream is checked.
    pub gina_check: GinaCheck,
    /// Path requested by the GINA HTTP check (default `/`).
    pub http_path: String,
    /// The SMTP check also performs STARTTLS (needs `[upstream] tls` other than `none`).
    pub starttls: bool,
}

/// `[health] smtp_check`: how a member's MTA is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpCheck {
    /// Greeting 2xx, EHLO 2xx (optionally STARTTLS), QUIT (default).
    Smtp,
    /// A TCP connect only.
    Tcp,
    /// No active check: only failures seen by sessions count (back-off).
    None,
}

/// `[health] gina_check`: how a member's GINA portal is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GinaCheck {
    /// `GET http_path`, healthy when the status is below 500 (default).
    Http,
    /// A TCP connect only.
    Tcp,
    /// No active check.
    None,
}

/// `[dns]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsPolicy {
    /// Domains whose MX records are watched.
    pub domains: Vec<String>,
    /// Resolvers to ask (empty: the system resolver).
    pub nameservers: Vec<SocketAddr>,
    /// Check interval.
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// How long one DNS query waits for an answer (per attempt).
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Attempts per DNS query before it counts as unanswered.
    pub attempts: u32,
    /// TCP port the MX addresses are probed on (SMTP: 25).
    pub smtp_probe_port: u16,
    /// How long an MX address may take to connect and send its banner.
    #[serde(serialize_with = "ser_duration")]
    pub probe_timeout: Duration,
    /// How long a session waits for its client's forward-confirmed reverse
    /// DNS name (XCLIENT `NAME`) before it sends `[TEMPUNAVAIL]`.
    #[serde(serialize_with = "ser_duration")]
    pub client_lookup_timeout: Duration,
    /// Look client names up at all (`false`: XCLIENT `NAME=[UNAVAILABLE]`
    /// for every client, like Postfix's `smtpd_peername_lookup = no`).
    pub client_names: bool,
}

impl Default for DnsPolicy {
    /// The defaults of an empty `[dns]` table.
    fn default() -> Self {
        DnsPolicy {
            domains: Vec::new(),
            nameservers: Vec::new(),
            interval: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
            attempts: 2,
            smtp_probe_port: 25,
            probe_timeout: Duration::from_secs(10),
            client_lookup_timeout: Duration::from_secs(2),
            client_names: true,
        }
    }
}

/// `[lft]`.
#[derive(Debug, Clone, Serialize)]
pub struct LftPolicy {
    /// Attachments at least this large are stored (bytes).
    #[serde(serialize_with = "super::units::ser_size")]
    pub threshold: u64,
    /// Injected messages larger than this are relayed but not searched (bytes).
    #[serde(serialize_with = "super::units::ser_size")]
    pub max_message_size: u64,
}

/// `host:port` of an upstream; the host may be a name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl HostPort {
    /// The host as an IP address, when it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Serialize for HostPort {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A routing target (`[members.NAME]`).
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Unique name.
    pub name: String,
    /// Its MTA; a member without one takes no SMTP sessions.
    pub smtp: Option<HostPort>,
    /// Its GINA portal (`host:port` or `https://host:port`).
    pub gina: Option<String>,
    /// Relative share of sessions (default 100).
    pub weight: u32,
    /// Receives sessions from non-members.
    pub ingress: bool,
    /// Source addresses (IPs or CIDRs) that identify this member when it injects.
    pub addresses: Vec<IpNet>,
    /// Members this one may inject into.
    pub inject_to: Vec<String>,
    /// Members its LFT attachments are synchronised to (subset of `inject_to`).
    pub lft_sync_to: Vec<String>,
    /// Free text.
    pub comment: Option<String>,
    /// Free text.
    pub location: Option<String>,
}

/// Formats a duration the way the config files write it (`5s`, `250ms`, `5m`).
pub fn format_duration(d: &Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(d))
}
