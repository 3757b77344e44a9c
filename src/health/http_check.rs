//! The GINA HTTP check: `GET [health] http_path` on a fresh connection to the
//! member's `gina` upstream (`host:port` plain, `https://host:port` TLS),
//! healthy when the status is below 500 within `[health] timeout`.
//!
//! HTTP/1.1 with hyper's connection-level client (one connection per check,
//! `Connection: close`, the body is not read). For `https://` the member
//! certificate is verified against `[upstream] tls_ca_file` when set, and not
//! verified otherwise (the check sends nothing secret; see `docs/health.md`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;

use super::tcp_check;
use crate::config::{HostPort, format_duration};
use crate::tls;

/// How one member's GINA portal is checked.
#[derive(Debug, Clone)]
pub struct HttpSpec {
    /// The `gina` upstream's host and port.
    pub addr: HostPort,
    /// `Some` for an `https://` upstream.
    pub tls: Option<Arc<ClientConfig>>,
    /// The request path (`[health] http_path`).
    pub path: String,
    /// `[upstream] connect_timeout`.
    pub connect_timeout: Duration,
}

impl PartialEq for HttpSpec {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
            && self.path == other.path
            && self.connect_timeout == other.connect_timeout
            && self.tls.is_some() == other.tls.is_some()
    }
}

/// A `gina` upstream as configured: (`host:port`, TLS). `None` when it does
/// not parse (config validation already refused such values).
pub fn parse_gina(text: &str) -> Option<(HostPort, bool)> {
    let (rest, https) = match text.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => v6.split_once("]:")?,
        None => rest.rsplit_once(':')?,
    };
    let port = port.parse().ok()?;
    Some((
        HostPort {
            host: host.to_owned(),
            port,
        },
        https,
    ))
}

/// Runs one HTTP check within `limit`; `Err` is the failure reason.
pub async fn check(spec: &HttpSpec, limit: Duration) -> Result<(), String> {
    match timeout(limit, run(spec, limit)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no HTTP answer within {}", format_duration(&limit))),
    }
}

async fn run(spec: &HttpSpec, limit: Duration) -> Result<(), String> {
    let tcp = tcp_check::connect(&spec.addr, spec.connect_timeout.min(limit)).await?;
    let status = match &spec.tls {
        None => request(tcp, spec).await?,
        Some(config) => {
            let name = tls::server_name(&spec.addr)
                .ok_or_else(|| format!("{} is not a valid TLS server name", spec.addr.host))?;
            let stream = TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            request(stream, spec).await?
        }
    };
    if status.as_u16() < 500 {
        Ok(())
    } else {
        Err(format!("HTTP status {status}"))
    }
}

/// Sends the GET over `io` and returns the response status.
async fn request<I>(io: I, spec: &HttpSpec) -> Result<http::StatusCode, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let req = http::Request::get(spec.path.as_str())
        .header(HOST, spec.addr.to_string())
        .header(
            USER_AGENT,
            concat!("mxgate-health/", env!("CARGO_PKG_VERSION")),
        )
        .header(CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let mut conn = std::pin::pin!(conn);
    let mut response = std::pin::pin!(sender.send_request(req));
    let response = tokio::select! {
        biased;
        response = &mut response => response,
        // With `Connection: close` the connection may end as soon as the
        // response is in: the response is then ready (or the request failed).
        ended = &mut conn => match ended {
            Ok(()) => response.await,
            Err(e) => return Err(format!("HTTP connection failed: {e}")),
        },
    };
    response
        .map(|r| r.status())
        .map_err(|e| format!("HTTP request failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gina_upstreams() {
        let hp = |h: &str, p| HostPort {
            host: h.into(),
            port: p,
        };
        let cases = [
            ("10.0.0.1:8080", Some((hp("10.0.0.1", 8080), false))),
            (
                "https://gina.test:8443",
                Some((hp("gina.test", 8443), true)),
            ),
            (
                "https://[2001:db8::1]:443",
                Some((hp("2001:db8::1", 443), true)),
            ),
            ("gina.test", None),
            ("gina.test:http", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_gina(text), want, "{text}");
        }
    }
}

#[cfg(test)]
mod io_tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::config::{ProxyProtocol, UpstreamPolicy, UpstreamTls};

    /// Serves one request with `status`; returns the address and the request head.
    async fn portal(
        status: &'static str,
        tls: bool,
    ) -> (HostPort, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let Ok((tcp, _)) = listener.accept().await else {
                return String::new();
            };
            if tls {
                let acceptor = TlsAcceptor::from(crate::health::tests::server_tls());
                match acceptor.accept(tcp).await {
                    Ok(stream) => answer(stream, status).await,
                    Err(e) => format!("handshake: {e}"),
                }
            } else {
                answer(tcp, status).await
            }
        });
        let addr = HostPort {
            host: addr.ip().to_string(),
            port: addr.port(),
        };
        (addr, task)
    }

    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, status: &str) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let response =
            format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        let _ = s.write_all(response.as_bytes()).await;
        let _ = s.shutdown().await;
        String::from_utf8_lossy(&head).into_owned()
    }

    fn spec(addr: HostPort, tls: bool) -> HttpSpec {
        let upstream = UpstreamPolicy {
            xclient: false,
            proxy_protocol: ProxyProtocol::Off,
            tls: UpstreamTls::None,
            connect_timeout: Duration::from_secs(2),
            greeting_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            data_timeout: Duration::from_secs(2),
            backoff: Duration::from_secs(2),
            tls_ca_file: None,
            tls_insecure_skip_verify: false,
        };
        HttpSpec {
            addr,
            // No tls_ca_file: encrypted, not verified (the GINA check's rule).
            tls: tls.then(|| crate::health::https_config(&upstream).expect("https config")),
            path: "/health?deep=1".into(),
            connect_timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn status_below_500_passes_over_http_and_https() {
        for tls in [false, true] {
            for (status, want) in [
                ("200 OK", Ok(())),
                ("404 Not Found", Ok(())),
                (
                    "503 Service Unavailable",
                    Err("HTTP status 503 Service Unavailable".to_owned()),
                ),
            ] {
                let (addr, head) = portal(status, tls).await;
                let host = addr.to_string();
                let got = check(&spec(addr, tls), Duration::from_secs(5)).await;
                assert_eq!(got, want, "{status} tls={tls}");
                let head = head.await.expect("portal");
                assert!(
                    head.starts_with("GET /health?deep=1 HTTP/1.1\r\n"),
                    "{head}"
                );
                assert!(
                    head.to_ascii_lowercase()
                        .contains(&format!("host: {host}\r\n")),
                    "{head}"
                );
            }
        }
    }

    #[tokio::test]
    async fn silence_fails_within_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hold = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let addr = HostPort {
            host: addr.ip().to_string(),
            port: addr.port(),
        };
        let got = check(&spec(addr, false), Duration::from_millis(300)).await;
        assert_eq!(got, Err("no HTTP answer within 300ms".to_owned()));
        hold.abort();
    }
}
