//! The SMTP check's I/O against an in-process member on 127.0.0.1: STARTTLS,
//! PROXY first, and QUIT sent whether the check passes or fails.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::*;
use crate::config::{UpstreamPolicy, UpstreamTls};

/// How the in-process member behaves.
#[derive(Clone, Copy)]
enum Script {
    /// Greets, offers STARTTLS, does TLS when asked.
    Normal,
    /// Greets with 421.
    Busy,
    /// Expects a PROXY v1 line before greeting.
    Proxy,
}

/// Starts a member answering one connection; returns its address and the
/// lines it received (`PROXY ...`, `EHLO ...`, `STARTTLS`, `<TLS>`, `QUIT`).
async fn member(script: Script) -> (HostPort, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let mut conn = BufReader::new(tcp);
        if matches!(script, Script::Proxy) {
            let line = read_line(&mut conn).await;
            log.lock().expect("lock").push(line);
        }
        let greeting: &[u8] = match script {
            Script::Busy => b"421 4.3.2 busy\r\n",
            _ => b"220 member.test ESMTP\r\n",
        };
        let _ = conn.get_mut().write_all(greeting).await;
        let tls = serve(&mut conn, &log, true).await;
        if tls {
            let acceptor = TlsAcceptor::from(crate::health::tests::server_tls());
            let Ok(stream) = acceptor.accept(conn.into_inner()).await else {
                return;
            };
            log.lock().expect("lock").push("<TLS>".into());
            let mut conn = BufReader::new(stream);
            serve(&mut conn, &log, false).await;
        }
    });
    let addr = HostPort {
        host: addr.ip().to_string(),
        port: addr.port(),
    };
    (addr, seen)
}

async fn read_line<S: AsyncRead + Unpin>(conn: &mut BufReader<S>) -> String {
    let mut line = String::new();
    let _ = conn.read_line(&mut line).await;
    line.trim_end().to_owned()
}

/// Answers commands until QUIT (false) or STARTTLS (true).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    log: &Mutex<Vec<String>>,
    offer_tls: bool,
) -> bool {
    loop {
        let line = read_line(conn).await;
        if line.is_empty() {
            return false;
        }
        log.lock().expect("lock").push(line.clone());
        let reply: &[u8] = match line.split(' ').next().unwrap_or("") {
            "EHLO" if offer_tls => b"250-member.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
            "EHLO" => b"250-member.test\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250 8BITMIME\r\n",
            "STARTTLS" => b"220 2.0.0 go ahead\r\n",
            "QUIT" => b"221 2.0.0 bye\r\n",
            _ => b"502 5.5.2 what\r\n",
        };
        let _ = conn.get_mut().write_all(reply).await;
        match line.as_str() {
            "STARTTLS" => return true,
            "QUIT" => return false,
            _ => {}
        }
    }
}

fn client_tls() -> Arc<ClientConfig> {
    let policy = UpstreamPolicy {
        xclient: false,
        proxy_protocol: ProxyProtocol::Off,
        tls: UpstreamTls::Opportunistic,
        connect_timeout: Duration::from_secs(2),
        greeting_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        data_timeout: Duration::from_secs(2),
        backoff: Duration::from_secs(2),
        tls_ca_file: None,
        tls_insecure_skip_verify: true,
    };
    crate::tls::client_config(&policy)
        .ok()
        .flatten()
        .expect("client config")
}

fn spec(addr: HostPort, proxy: ProxyProtocol, starttls: bool) -> SmtpSpec {
    SmtpSpec {
        addr,
        proxy,
        connect_timeout: Duration::from_secs(2),
        ehlo_name: "mx.test".into(),
        starttls: starttls.then(client_tls),
    }
}

const LIMIT: Duration = Duration::from_secs(5);

/// What the member's EHLO after STARTTLS offers (the first EHLO offers
/// STARTTLS and 8BITMIME only).
const LEARNED: Extensions = Extensions {
    smtputf8: true,
    chunking: true,
    dsn: false,
};

fn lines(seen: &Mutex<Vec<String>>) -> Vec<String> {
    seen.lock().expect("lock").clone()
}

#[tokio::test]
async fn passes_with_starttls_and_says_quit_inside_tls() {
    let (addr, seen) = member(Script::Normal).await;
    let result = check(&spec(addr, ProxyProtocol::Off, true), LIMIT).await;
    assert_eq!(result, Ok(LEARNED));
    assert_eq!(
        lines(&seen),
        ["EHLO mx.test", "STARTTLS", "<TLS>", "EHLO mx.test", "QUIT"]
    );
}

#[tokio::test]
async fn passes_without_starttls() {
    let (addr, seen) = member(Script::Normal).await;
    assert_eq!(
        check(&spec(addr, ProxyProtocol::Off, false), LIMIT).await,
        Ok(Extensions::default())
    );
    assert_eq!(lines(&seen), ["EHLO mx.test", "QUIT"]);
}

#[tokio::test]
async fn fails_on_421_greeting_and_still_says_quit() {
    let (addr, seen) = member(Script::Busy).await;
    let result = check(&spec(addr, ProxyProtocol::Off, false), LIMIT).await;
    assert_eq!(result, Err("greeting: 421 4.3.2 busy".to_owned()));
    assert_eq!(lines(&seen), ["QUIT"]);
}

#[tokio::test]
async fn proxy_header_goes_first() {
    let (addr, seen) = member(Script::Proxy).await;
    let port = addr.port;
    assert_eq!(
        check(&spec(addr, ProxyProtocol::V1, false), LIMIT).await,
        Ok(Extensions::default())
    );
    let seen = lines(&seen);
    assert!(
        seen[0].starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 ")
            && seen[0].ends_with(&format!(" {port}")),
        "{seen:?}"
    );
    assert_eq!(seen[1..], ["EHLO mx.test", "QUIT"]);
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
    let limit = Duration::from_millis(300);
    let result = check(&spec(addr, ProxyProtocol::Off, false), limit).await;
    assert_eq!(result, Err("no greeting within 300ms".to_owned()));
    hold.abort();
}
