//! Does an MX address answer SMTP? Connect to the probe port, wait for the
//! greeting, send `QUIT`. Only a `220` greeting counts (RFC 5321 3.1: a
//! `554` greeting means "no service here").
//!
//! The greeting is parsed by [`crate::smtp::proto::parse_reply`]; the verdict
//! on a parsed greeting is the pure [`judge`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::report::SmtpProbe;
use crate::smtp::proto::{Reply, parse_reply};

/// The verdict on a complete greeting.
pub fn judge(reply: &Reply) -> SmtpProbe {
    let raw = reply.as_bytes();
    let first = raw.split(|b| *b == b'\n').next().unwrap_or(raw);
    let first = String::from_utf8_lossy(first).trim_end().to_owned();
    if reply.code() == 220 {
        SmtpProbe {
            answers: true,
            banner: Some(first),
            error: None,
        }
    } else {
        SmtpProbe {
            answers: false,
            error: Some(format!("greeting {first}")),
            banner: Some(first),
        }
    }
}

/// Probes `ip:port`; connecting and the greeting together get `limit`.
pub async fn probe(ip: IpAddr, port: u16, limit: Duration) -> SmtpProbe {
    let addr = SocketAddr::new(ip, port);
    let failed = |e: String| SmtpProbe {
        answers: false,
        banner: None,
        error: Some(e),
    };
    let attempt = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to port {port}: {e}"))?;
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            match parse_reply(&mut buf) {
                Ok(Some(reply)) => {
                    let verdict = judge(&reply);
                    let _ = stream.write_all(b"QUIT\r\n").await;
                    return Ok(verdict);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("bad greeting: {e}")),
            }
            let n = stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| format!("reading the greeting: {e}"))?;
            if n == 0 {
                return Err("closed before a greeting".to_owned());
            }
        }
    };
    match timeout(limit, attempt).await {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(e)) => failed(e),
        Err(_) => failed(format!(
            "no greeting on port {port} within {}s",
            limit.as_secs_f32()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &[u8]) -> Reply {
        let mut buf = BytesMut::from(text);
        parse_reply(&mut buf).ok().flatten().expect("a reply")
    }

    #[test]
    fn only_220_answers() {
        let cases: &[(&[u8], bool, &str)] = &[
            (
                b"220 mx.example.com ESMTP\r\n",
                true,
                "220 mx.example.com ESMTP",
            ),
            (
                b"220-mx.example.com hello\r\n220 more\r\n",
                true,
                "220-mx.example.com hello",
            ),
            (b"554 5.3.2 no service\r\n", false, "554 5.3.2 no service"),
            (b"421 4.3.2 busy\r\n", false, "421 4.3.2 busy"),
        ];
        for (text, answers, banner) in cases {
            let v = judge(&reply(text));
            assert_eq!(v.answers, *answers, "{banner}");
            assert_eq!(v.banner.as_deref(), Some(*banner));
            assert_eq!(v.error.is_some(), !answers);
        }
    }

    #[tokio::test]
    async fn probes_a_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"220 probe.test ESMTP\r\n").await;
                let mut sink = [0u8; 64];
                let _ = s.read(&mut sink).await;
            }
        });
        let v = probe(
            "127.0.0.1".parse().expect("ip"),
            port,
            Duration::from_secs(5),
        )
        .await;
        assert!(v.answers, "{v:?}");
        assert_eq!(v.banner.as_deref(), Some("220 probe.test ESMTP"));
    }

    #[tokio::test]
    async fn silent_listener_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let v = probe(
            "127.0.0.1".parse().expect("ip"),
            port,
            Duration::from_millis(200),
        )
        .await;
        assert!(!v.answers);
        assert!(
            v.error
                .as_deref()
                .is_some_and(|e| e.contains("no greeting")),
            "{v:?}"
        );
        drop(listener);
    }
}
