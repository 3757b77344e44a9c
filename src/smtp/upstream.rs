//! The client side towards a member's MTA.
//!
//! [`Upstream::connect`] opens the TCP connection, sends a PROXY header when
//! the policy asks for one, reads the greeting, sends EHLO and, when the MTA
//! offers it and the policy allows, XCLIENT with the real client followed by
//! the re-greeting and a second EHLO carrying the client's own HELO name.
//! STARTTLS (per `[upstream] tls`, see [`crate::tls`]) comes after the
//! first EHLO and is followed by EHLO again, before XCLIENT.
//! Every failure is an [`UpstreamError`], which the session turns into a
//! failover (before end of DATA) or a `451 4.4.2` (after).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tracing::{debug, info};

use crate::config::{HostPort, ProxyProtocol, UpstreamPolicy, UpstreamTls};
use crate::metrics;
use crate::routing::SessionGuard;
use crate::smtp::deadline::Deadline;
use crate::smtp::proto::{self, Capabilities, Reply, ReplyError};
use crate::tls::{self, MemberStream};

/// Who the member should believe it is talking to.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The real client (after a PROXY header or XCLIENT from a trusted proxy).
    pub client: SocketAddr,
    /// The address the client reached.
    pub destination: SocketAddr,
    /// The client's HELO/EHLO argument.
    pub helo: String,
    /// `ESMTP` after EHLO, `SMTP` after HELO.
    pub proto: &'static str,
    /// XCLIENT `NAME`: the forward-confirmed reverse DNS name, `[UNAVAILABLE]`
    /// or `[TEMPUNAVAIL]` (SPEC 4.3).
    pub name: String,
    /// XCLIENT `REVERSE_NAME`: the PTR name as found (or `[UNAVAILABLE]`,
    /// `[TEMPUNAVAIL]`); `None`: not sent (a trusted proxy gave `NAME`).
    pub reverse_name: Option<String>,
}

/// Why a member could not be used, tagged so the session decides once what the client sees.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed.
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// Address tried.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("timeout waiting for {0}")]
    Timeout(&'static str),
    /// The member closed the connection.
    #[error("connection closed by member")]
    Closed,
    /// Read or write failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The member sent something that is not an SMTP reply.
    #[error("bad reply: {0}")]
    BadReply(#[from] ReplyError),
    /// `[upstream] tls = "required"` and the member does not offer STARTTLS.
    #[error("member does not offer STARTTLS (required by [upstream] tls)")]
    TlsNotOffered,
    /// The TLS handshake with the member failed (certificate not trusted, ...).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The member refused during set-up (greeting, EHLO, XCLIENT), or said 421.
    #[error("member refused {phase}: {}", String::from_utf8_lossy(.reply.as_bytes()).trim_end())]
    Refused {
        /// Which step.
        phase: &'static str,
        /// What it said.
        reply: Reply,
    },
}

impl UpstreamError {
    /// Short reason for logs and `route explain`.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

thread_local! {
    /// The last member EHLO reply parsed on this worker thread.
    static EHLO_CACHE: std::cell::RefCell<proto::EhloCache> =
        std::cell::RefCell::new(proto::EhloCache::default());
}

/// A live, set-up connection to one member's MTA.
#[derive(Debug)]
pub struct Upstream {
    member: String,
    stream: MemberStream,
    rbuf: BytesMut,
    caps: Capabilities,
    transactions: u64,
    /// Counts this connection in the member's active sessions while it lives.
    session: Option<SessionGuard>,
    /// The timer of every write and reply after the set-up (one per connection).
    deadline: Deadline,
    /// The accepted-message series of this member, resolved at the first one.
    accepted: Option<metrics::AcceptedMessages>,
}

impl Upstream {
    /// Connects to `addr` for `member` and performs the whole set-up.
    /// `tls` is the snapshot's member-side TLS configuration (`None`: no STARTTLS).
    pub async fn connect(
        member: &str,
        addr: &HostPort,
        policy: &UpstreamPolicy,
        tls: Option<&Arc<ClientConfig>>,
        our_name: &str,
        client: &ClientIdentity,
    ) -> Result<Upstream, UpstreamError> {
        // One timer for the whole set-up, handed on to the connection: the
        // connect and the handshake each used a `timeout` of their own.
        let mut deadline = Deadline::new();
        let stream = match deadline
            .within(policy.connect_timeout, connect_tcp(addr))
            .await
        {
            Ok(stream) => stream?,
            Err(_) => return Err(UpstreamError::Timeout("connect")),
        };
        let up = Upstream {
            member: member.to_owned(),
            stream: MemberStream::Plain(stream),
            rbuf: BytesMut::with_capacity(4096),
            caps: Capabilities::default(),
            transactions: 0,
            session: None,
            deadline: Deadline::new(),
            accepted: None,
        };
        let mut up = deadline
            .within(
                policy.greeting_timeout,
                up.handshake(addr, policy, tls, our_name, client),
            )
            .await
            .map_err(|_| UpstreamError::Timeout("greeting/EHLO"))??;
        up.deadline = deadline;
        Ok(up)
    }

    async fn handshake(
        mut self,
        addr: &HostPort,
        policy: &UpstreamPolicy,
        tls: Option<&Arc<ClientConfig>>,
        our_name: &str,
        client: &ClientIdentity,
    ) -> Result<Upstream, UpstreamError> {
        let proxied = policy.proxy_protocol != ProxyProtocol::Off;
        if proxied {
            let header = proto::encode_proxy_header(
                policy.proxy_protocol == ProxyProtocol::V2,
                client.client,
                client.destination,
            );
            self.write(&header).await?;
        }
        expect_positive("greeting", self.read_reply().await?)?;
        // With a PROXY header the MTA already believes it talks to the client,
        // so it should also see the client's own HELO name.
        let first_ehlo = if proxied {
            client.helo.as_str()
        } else {
            our_name
        };
        self.ehlo(first_ehlo).await?;
        if let Some(config) = tls.filter(|_| policy.tls != UpstreamTls::None) {
            self = self.start_tls(addr, policy.tls, config, first_ehlo).await?;
        }
        if !proxied && policy.xclient {
            self.xclient(client).await?;
        }
        Ok(self)
    }

    /// STARTTLS after the first EHLO, then EHLO again (RFC 3207: everything
    /// learnt before the handshake is void). Without STARTTLS offered, or
    /// refused, `opportunistic` carries on in plain text; `required` fails.
    async fn start_tls(
        mut self,
        addr: &HostPort,
        mode: UpstreamTls,
        config: &Arc<ClientConfig>,
        ehlo_name: &str,
    ) -> Result<Upstream, UpstreamError> {
        let required = mode == UpstreamTls::Required;
        if !self.caps.starttls {
            return if required {
                Err(UpstreamError::TlsNotOffered)
            } else {
                Ok(self)
            };
        }
        self.write(b"STARTTLS\r\n").await?;
        let reply = self.read_reply().await?;
        if reply.code() != 220 {
            if required || reply.code() == 421 {
                return Err(UpstreamError::Refused {
                    phase: "STARTTLS",
                    reply,
                });
            }
            info!(member = %self.member, reply = %String::from_utf8_lossy(reply.as_bytes()).trim_end(), "member refused STARTTLS; carrying on without TLS");
            return Ok(self);
        }
        // Anything the member sent after its 220 is not part of the TLS
        // session: never read it as a reply (response injection).
        self.rbuf.clear();
        let Some(name) = tls::server_name(addr) else {
            return Err(UpstreamError::Tls(format!(
                "{} is not a valid TLS server name",
                addr.host
            )));
        };
        let MemberStream::Plain(tcp) = self.stream else {
            return Err(UpstreamError::Tls("STARTTLS twice".into()));
        };
        let stream = TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| UpstreamError::Tls(e.to_string()))?;
        debug!(member = %self.member, version = ?stream.get_ref().1.protocol_version(), "STARTTLS to member");
        self.stream = MemberStream::Tls(Box::new(stream));
        self.ehlo(ehlo_name).await?;
        Ok(self)
    }

    /// XCLIENT with the real client when the member offers it, then EHLO again.
    async fn xclient(&mut self, client: &ClientIdentity) -> Result<(), UpstreamError> {
        // Taken, not cloned: the EHLO after XCLIENT replaces the capabilities.
        let Some(offered) = self.caps.xclient.take() else {
            return Ok(());
        };
        // The four address values share one buffer (one allocation, no formatter).
        let mut values = String::with_capacity(64);
        push_xclient_addr(&mut values, &client.client);
        let addr_end = values.len();
        push_decimal(&mut values, client.client.port());
        let port_end = values.len();
        push_xclient_addr(&mut values, &client.destination);
        let dest_addr_end = values.len();
        push_decimal(&mut values, client.destination.port());
        let attrs = [
            ("NAME", client.name.as_str()),
            ("ADDR", &values[..addr_end]),
            ("PORT", &values[addr_end..port_end]),
            ("HELO", client.helo.as_str()),
            ("PROTO", client.proto),
            ("DESTADDR", &values[port_end..dest_addr_end]),
            ("DESTPORT", &values[dest_addr_end..]),
            (
                "REVERSE_NAME",
                client.reverse_name.as_deref().unwrap_or_default(),
            ),
        ];
        // REVERSE_NAME (last) only when mxgate looked the client up itself.
        let sent = attrs.len() - usize::from(client.reverse_name.is_none());
        let lines = proto::encode_xclient(&attrs[..sent], offered);
        if lines.is_empty() {
            self.caps.xclient = Some(offered);
            return Ok(());
        }
        for line in lines {
            self.write(&line).await?;
            // Postfix answers XCLIENT with a new 220 greeting; smtp-sink with 250.
            expect_positive("XCLIENT", self.read_reply().await?)?;
        }
        // Postfix replaces XCLIENT HELO= with the next EHLO's argument, so that
        // EHLO must carry the client's own name.
        self.ehlo(&client.helo).await
    }

    async fn ehlo(&mut self, name: &str) -> Result<(), UpstreamError> {
        // Second guard: the session already refuses such names, but nothing
        // that could end the line may ever reach the member.
        let name = if name.is_empty() || name.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            "[UNAVAILABLE]"
        } else {
            name
        };
        let mut command = Vec::with_capacity(name.len() + 7);
        command.extend_from_slice(b"EHLO ");
        command.extend_from_slice(name.as_bytes());
        command.extend_from_slice(b"\r\n");
        self.write(&command).await?;
        let reply = expect_positive("EHLO", self.read_reply().await?)?;
        self.caps = EHLO_CACHE.with_borrow_mut(|cache| cache.capabilities(&reply));
        Ok(())
    }

    /// Writes and flushes (a TLS stream may hold records until flushed).
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        write_to(&mut self.stream, bytes).await
    }

    /// True when the connection to the member is encrypted.
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Keeps `guard` (the member's active-session count) until this connection is dropped.
    pub fn hold_session(&mut self, guard: SessionGuard) {
        self.session = Some(guard);
    }

    /// The member's name.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// What the member offered in its (last) EHLO reply.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Transactions completed on this connection (0: freshly made).
    pub fn transactions(&self) -> u64 {
        self.transactions
    }

    /// Counts a finished transaction (the connection is then being reused).
    pub fn transaction_done(&mut self) {
        self.transactions += 1;
    }

    /// Counts a message of `bytes` bytes this member accepted (metrics).
    pub fn count_accepted(&mut self, bytes: u64) {
        let member = &self.member;
        self.accepted
            .get_or_insert_with(|| metrics::AcceptedMessages::new(member))
            .record(bytes);
    }

    /// Writes bytes to the member.
    pub async fn send(&mut self, bytes: &[u8], limit: Duration) -> Result<(), UpstreamError> {
        let Upstream {
            stream, deadline, ..
        } = self;
        match deadline.within(limit, write_to(stream, bytes)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(UpstreamError::Timeout("write")),
        }
    }

    /// Reads the next reply, waiting at most `limit`.
    pub async fn reply(&mut self, limit: Duration) -> Result<Reply, UpstreamError> {
        let Upstream {
            stream,
            rbuf,
            deadline,
            ..
        } = self;
        deadline
            .within(limit, read_reply(stream, rbuf))
            .await
            .map_err(|_| UpstreamError::Timeout("reply"))?
    }

    async fn read_reply(&mut self) -> Result<Reply, UpstreamError> {
        read_reply(&mut self.stream, &mut self.rbuf).await
    }

    /// Says QUIT and waits briefly for the answer; the connection ends either way.
    pub async fn quit(mut self) {
        if self.send(b"QUIT\r\n", Duration::from_secs(1)).await.is_ok() {
            let _ = self.reply(Duration::from_secs(1)).await;
        }
    }
}

/// Writes and flushes (a TLS stream may hold records until flushed).
async fn write_to(stream: &mut MemberStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Reads the next reply from the member into `rbuf` and parses it.
async fn read_reply(
    stream: &mut MemberStream,
    rbuf: &mut BytesMut,
) -> Result<Reply, UpstreamError> {
    loop {
        if let Some(reply) = proto::parse_reply(rbuf)? {
            return Ok(reply);
        }
        rbuf.reserve(4096);
        if stream.read_buf(rbuf).await? == 0 {
            return Err(UpstreamError::Closed);
        }
    }
}

/// Connects with TCP_NODELAY set, resolving a host name when needed
/// (the caller bounds it with `connect_timeout`).
async fn connect_tcp(addr: &HostPort) -> Result<TcpStream, UpstreamError> {
    let connected = match addr.ip() {
        Some(ip) => TcpStream::connect(SocketAddr::new(ip, addr.port)).await,
        None => crate::dns::connect(addr).await,
    };
    let stream = connected.map_err(|source| UpstreamError::Connect {
        addr: addr.to_string(),
        source,
    })?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn expect_positive(phase: &'static str, reply: Reply) -> Result<Reply, UpstreamError> {
    if reply.is_positive() {
        Ok(reply)
    } else {
        Err(UpstreamError::Refused { phase, reply })
    }
}

/// XCLIENT address syntax: IPv6 addresses carry an `IPV6:` prefix.
#[cfg(test)]
fn xclient_addr(addr: &SocketAddr) -> String {
    let mut out = String::new();
    push_xclient_addr(&mut out, addr);
    out
}

/// Appends `addr`'s address in XCLIENT syntax (IPv6 with an `IPV6:` prefix).
fn push_xclient_addr(out: &mut String, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => push_dotted_quad(out, *v4.ip()),
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => push_dotted_quad(out, v4),
            None => {
                use std::fmt::Write;
                // Writing to a String cannot fail.
                let _ = write!(out, "IPV6:{}", v6.ip());
            }
        },
    }
}

/// `a.b.c.d`, written directly: `Ipv4Addr`'s `Display` goes through the
/// formatter's padding support, about 1.5k instructions per address, twice
/// per member connection.
#[cfg(test)]
fn dotted_quad(ip: std::net::Ipv4Addr) -> String {
    let mut out = String::new();
    push_dotted_quad(&mut out, ip);
    out
}

/// Appends `a.b.c.d`.
fn push_dotted_quad(out: &mut String, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_decimal(out, u16::from(octet));
    }
}

/// Appends `n` in decimal without the formatter (ports and octets).
fn push_decimal(out: &mut String, n: u16) {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    let mut n = n;
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[start..] {
        out.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    use super::{dotted_quad, push_decimal, xclient_addr};
    use std::net::{Ipv4Addr, SocketAddr};

    #[test]
    fn decimal_matches_display() {
        for n in [0u16, 7, 9, 10, 99, 100, 255, 4711, 9999, 10000, 65535] {
            let mut out = String::from("x");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }

    #[test]
    fn dotted_quad_matches_display() {
        for ip in [
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(10, 99, 100, 255),
            Ipv4Addr::new(9, 10, 199, 200),
            Ipv4Addr::new(255, 255, 255, 255),
        ] {
            assert_eq!(dotted_quad(ip), ip.to_string());
        }
    }

    #[test]
    fn xclient_addr_forms() {
        let cases = [
            ("192.0.2.7:25", "192.0.2.7"),
            ("[::ffff:192.0.2.7]:25", "192.0.2.7"),
            ("[2001:db8::1]:25", "IPV6:2001:db8::1"),
        ];
        for (addr, want) in cases {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(xclient_addr(&addr), want);
        }
    }
}
