//! The SMTP check, the I/O half: connect, PROXY header when the member
//! expects one, then the `probe` dialogue (greeting 2xx, EHLO 2xx, optional
//! STARTTLS), and QUIT whenever the connection is up, pass or fail.
//!
//! The whole check, QUIT aside, is bounded by `[health] timeout`; the connect
//! also by `[upstream] connect_timeout`. The PROXY header carries the check
//! connection's own addresses (as HAProxy's `check-send-proxy` does), so the
//! member logs mxgate as the client.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;

use super::probe::{Probe, Step, first_line};
use super::tcp_check;
use crate::config::{HostPort, ProxyProtocol, format_duration};
use crate::smtp::proto::{self, Extensions, Reply};
use crate::tls::{self, MemberStream};

/// How one member's MTA is checked.
#[derive(Debug, Clone)]
pub struct SmtpSpec {
    /// The member's `smtp` upstream.
    pub addr: HostPort,
    /// `[upstream] proxy_protocol`.
    pub proxy: ProxyProtocol,
    /// `[upstream] connect_timeout`.
    pub connect_timeout: Duration,
    /// Name sent in EHLO (the first listener's `hostname`, else the node name).
    pub ehlo_name: String,
    /// `Some` when `[health] starttls`: the member-side TLS configuration.
    pub starttls: Option<Arc<ClientConfig>>,
}

impl PartialEq for SmtpSpec {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
            && self.proxy == other.proxy
            && self.connect_timeout == other.connect_timeout
            && self.ehlo_name == other.ehlo_name
            && match (&self.starttls, &other.starttls) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

/// How long QUIT may take after the check: it is a courtesy, not part of the verdict.
const QUIT_GRACE: Duration = Duration::from_secs(1);

/// Runs one SMTP check within `limit`; `Ok` holds the optional extensions
/// the member's EHLO offered, `Err` the failure reason.
pub async fn check(spec: &SmtpSpec, limit: Duration) -> Result<Extensions, String> {
    let deadline = Instant::now() + limit;
    let tcp = tcp_check::connect(&spec.addr, spec.connect_timeout.min(limit)).await?;
    let mut conn = Conn {
        stream: Some(MemberStream::Plain(tcp)),
        rbuf: BytesMut::with_capacity(1024),
    };
    let mut probe = Probe::new(&spec.ehlo_name, spec.starttls.is_some());
    let result = match timeout_at(deadline, dialogue(&mut conn, spec, &mut probe)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no {} within {}",
            probe.waiting_for(),
            format_duration(&limit)
        )),
    };
    // A member that said nothing in time gets QUIT but is not waited for.
    let wait_reply = !result
        .as_ref()
        .is_err_and(|e| e.starts_with("no ") || e.starts_with("connection closed"));
    conn.quit(wait_reply).await;
    result.map(|()| probe.extensions().unwrap_or_default())
}

/// The dialogue after connect; the caller bounds it in time.
async fn dialogue(conn: &mut Conn, spec: &SmtpSpec, probe: &mut Probe) -> Result<(), String> {
    if spec.proxy != ProxyProtocol::Off {
        let header = {
            let Some(MemberStream::Plain(tcp)) = &conn.stream else {
                return Err("no connection".into());
            };
            let local = tcp
                .local_addr()
                .map_err(|e| format!("local address: {e}"))?;
            let peer = tcp.peer_addr().map_err(|e| format!("peer address: {e}"))?;
            proto::encode_proxy_header(spec.proxy == ProxyProtocol::V2, local, peer)
        };
        conn.write(&header).await?;
    }
    loop {
        let reply = conn.read_reply(probe.waiting_for()).await?;
        let mut step = probe.on_reply(&reply);
        loop {
            match step {
                Step::Send(bytes) => {
                    conn.write(&bytes).await?;
                    break;
                }
                Step::StartTls => {
                    let config = spec
                        .starttls
                        .clone()
                        .ok_or_else(|| "STARTTLS without a TLS configuration".to_owned())?;
                    conn.start_tls(&spec.addr, config).await?;
                    step = probe.on_tls();
                }
                Step::Done(result) => return result,
            }
        }
    }
}

/// The check connection.
struct Conn {
    /// `None` only while a TLS handshake runs (or after it was abandoned).
    stream: Option<MemberStream>,
    rbuf: BytesMut,
}

impl Conn {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let stream = self.stream.as_mut().ok_or("connection lost")?;
        stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        stream
            .flush()
            .await
            .map_err(|e| format!("write failed: {e}"))
    }

    /// The next reply, parsed sans-IO by [`proto::parse_reply`].
    async fn read_reply(&mut self, what: &str) -> Result<Reply, String> {
        loop {
            match proto::parse_reply(&mut self.rbuf) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => return Err(format!("bad reply while waiting for {what}: {e}")),
            }
            let stream = self.stream.as_mut().ok_or("connection lost")?;
            self.rbuf.reserve(1024);
            match stream.read_buf(&mut self.rbuf).await {
                Ok(0) => return Err(format!("connection closed by member before its {what}")),
                Ok(_) => {}
                Err(e) => return Err(format!("read failed while waiting for {what}: {e}")),
            }
        }
    }

    async fn start_tls(
        &mut self,
        addr: &HostPort,
        config: Arc<ClientConfig>,
    ) -> Result<(), String> {
        // Bytes after the 220 are not part of the TLS session (response injection).
        self.rbuf.clear();
        let name = tls::server_name(addr)
            .ok_or_else(|| format!("{} is not a valid TLS server name", addr.host))?;
        let Some(MemberStream::Plain(tcp)) = self.stream.take() else {
            return Err("STARTTLS twice".into());
        };
        let stream = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        self.stream = Some(MemberStream::Tls(Box::new(stream)));
        Ok(())
    }

    /// QUIT while the connection is up; with `wait_reply`, reads the answer
    /// (bounded), so the member logs a clean end rather than a lost connection.
    async fn quit(mut self, wait_reply: bool) {
        if self.stream.is_none() {
            return;
        }
        if !matches!(
            timeout(QUIT_GRACE, self.write(b"QUIT\r\n")).await,
            Ok(Ok(()))
        ) {
            return;
        }
        if wait_reply
            && let Ok(Ok(reply)) = timeout(QUIT_GRACE, self.read_reply("QUIT reply")).await
        {
            tracing::trace!(reply = %first_line(&reply), "health check QUIT");
        }
        if let Some(mut stream) = self.stream.take() {
            let _ = timeout(QUIT_GRACE, stream.shutdown()).await;
        }
    }
}

#[cfg(test)]
#[path = "smtp_check_tests.rs"]
mod tests;
