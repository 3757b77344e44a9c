//! GINA over TLS: the protocol ALPN negotiated decides the HTTP version
//! (RFC 9113 section 3.3), never the first bytes. A client of our own
//! (tokio-rustls with a chosen ALPN list, hyper or raw bytes) checks that
//! `h2` gets HTTP/2 only, `http/1.1` (or nothing) HTTP/1.1 only, and that a
//! plain-text listener still serves HTTP/1.1 and prior-knowledge h2c. Then
//! h2spec, the HTTP/2 conformance suite, runs against the TLS listener
//! (third_party/h2spec, built by .ci/run).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use common::web::WebMember;
use common::{Mxgate, free_port, run_bounded};

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
/// HTTP/2 frame types and the PROTOCOL_ERROR code.
const FRAME_SETTINGS: u8 = 4;
const FRAME_GOAWAY: u8 = 7;
const PROTOCOL_ERROR: u32 = 1;

/// A gateway with a TLS `[[http]]` listener `gina` and a plain-text one
/// `plain` on `ip`, in front of one web member.
struct Gateway {
    gw: Mxgate,
    web: WebMember,
    cert: CertificateDer<'static>,
    dir: tempfile::TempDir,
}

impl Gateway {
    fn start(ip: &str) -> Gateway {
        let web = WebMember::start("m1", ip);
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (cert_path, key_path) = (dir.path().join("gina.pem"), dir.path().join("gina.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        let node = format!(
            "{}\n[[http]]\nname = \"gina\"\nlisten = \"{ip}:0\"\nupstream_timeout = \"5s\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\n\n\
             [[http]]\nname = \"plain\"\nlisten = \"{ip}:0\"\nupstream_timeout = \"5s\"\n",
            common::default_listener(),
            cert_path.display(),
            key_path.display()
        );
        let member = format!(
            "[members.m1]\nsmtp = \"{ip}:{}\"\ngina = \"{}\"\n",
            free_port(ip),
            web.gina()
        );
        let gw = Mxgate::start_with(&node, &common::policy("", &[member]));
        Gateway {
            gw,
            web,
            cert: cert.der().clone(),
            dir,
        }
    }

    fn tls_addr(&self) -> SocketAddr {
        self.gw.listener_addr("gina")
    }

    fn requests(&self) -> u64 {
        self.web.requests.load(Ordering::Relaxed)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A TLS connection offering `alpn`, trusting the gateway's certificate.
async fn connect(g: &Gateway, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(g.cert.clone()).expect("add cert");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(g.tls_addr()).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// Sends `bytes` on a TLS connection offering `alpn`; returns the
/// negotiated protocol and everything the gateway sent until it closed
/// (at most 10 s, 64 KiB).
async fn exchange(g: &Gateway, alpn: &[&[u8]], bytes: &[u8]) -> (Option<Vec<u8>>, Vec<u8>) {
    let mut tls = connect(g, alpn).await;
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    tls.write_all(bytes).await.expect("write");
    tls.flush().await.expect("flush");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 65536 {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the gateway kept the connection open: {got:?}"),
        }
    }
    (negotiated, got)
}

/// HTTP/2 frames in `data`: (type, payload); a truncated tail is left out.
fn frames(data: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        if rest.len() < 9 + len {
            break;
        }
        out.push((rest[3], rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    out
}

#[test]
fn alpn_h2_closes_on_an_http11_request_as_a_protocol_error() {
    let g = Gateway::start("127.85.0.1");
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let (alpn, got) = runtime().block_on(exchange(&g, &[b"h2", b"http/1.1"], request));
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert!(
        !got.starts_with(b"HTTP/"),
        "answered in HTTP/1.1: {}",
        String::from_utf8_lossy(&got)
    );
    let frames = frames(&got);
    assert_eq!(
        frames.first().map(|f| f.0),
        Some(FRAME_SETTINGS),
        "the server speaks HTTP/2 first: {got:?}"
    );
    // A connection error of type PROTOCOL_ERROR: the connection closes
    // (`exchange` saw it end), with a GOAWAY that RFC 9113 section 3.4
    // allows to omit after an invalid preface (h2 omits it).
    for (_, goaway) in frames.iter().filter(|f| f.0 == FRAME_GOAWAY) {
        let code = goaway
            .get(4..8)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        assert_eq!(code, Some(PROTOCOL_ERROR), "GOAWAY {goaway:?}");
    }
    assert!(
        frames
            .iter()
            .all(|f| [FRAME_SETTINGS, FRAME_GOAWAY].contains(&f.0)),
        "only SETTINGS and GOAWAY expected: {frames:?}"
    );
    assert_eq!(g.requests(), 0, "the request reached the member");
}

#[test]
fn alpn_http11_does_not_answer_an_http2_preface_in_http2() {
    let g = Gateway::start("127.85.0.2");
    let preface = [PREFACE, SETTINGS].concat();
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let (negotiated, got) = runtime().block_on(exchange(&g, alpn, &preface));
        let expected = alpn.first().map(|p| p.to_vec());
        assert_eq!(negotiated, expected);
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 4"),
            "offering {alpn:?}, the preface got {got:?}"
        );
    }
    assert_eq!(g.requests(), 0, "the preface reached the member");
}

/// One GET over `io` in `version` (hyper's client); returns the version
/// of the answer, its status and body.
async fn get<I>(io: I, version: Version, uri: &str) -> (Version, u16, String)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let mut req = Request::builder()
        .uri(uri)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = if version == Version::HTTP_2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        send.send_request(req).await.expect("h2 request")
    } else {
        let host = hyper::header::HeaderValue::from_static("localhost");
        req.headers_mut().insert(hyper::header::HOST, host);
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("http1 handshake");
        tokio::spawn(conn);
        send.send_request(req).await.expect("http1 request")
    };
    let (version, status) = (resp.version(), resp.status().as_u16());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (version, status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn negotiated_h2_and_http11_and_plain_text_h2c_still_reach_the_member() {
    let g = Gateway::start("127.85.0.3");
    let rt = runtime();
    let cases: [(&[&[u8]], Version); 3] = [
        (&[b"h2", b"http/1.1"], Version::HTTP_2),
        (&[b"http/1.1"], Version::HTTP_11),
        (&[], Version::HTTP_11),
    ];
    for (alpn, version) in cases {
        let (got, status, body) = rt.block_on(async {
            let tls = connect(&g, alpn).await;
            get(tls, version, "https://localhost/alpn").await
        });
        assert_eq!((got, status), (version, 200), "ALPN {alpn:?}: {body}");
        assert!(body.contains("member=m1\n"), "{body}");
        assert!(body.contains("h:x-forwarded-proto: https"), "{body}");
    }
    // Plain text: HTTP/1.1 and prior-knowledge HTTP/2 as before.
    let plain = g.gw.listener_addr("plain");
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let (got, status, body) = rt.block_on(async {
            let tcp = TcpStream::connect(plain).await.expect("connect");
            get(tcp, version, &format!("http://{plain}/plain")).await
        });
        assert_eq!((got, status), (version, 200), "plain {version:?}: {body}");
        assert!(body.contains("member=m1\n"), "{body}");
    }
    assert_eq!(g.requests(), 5);
}

/// h2spec's closing line: "N tests, N passed, N skipped, N failed".
fn h2spec_summary(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().rev().find(|l| l.contains(" tests, "))?;
    let count = |word: &str| {
        line.split(", ")
            .find_map(|part| part.trim().strip_suffix(word)?.trim().parse::<u32>().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

#[test]
fn h2spec_passes_against_a_tls_listener() {
    if !common::require("h2spec") {
        return;
    }
    let g = Gateway::start("127.85.0.4");
    let addr = g.tls_addr();
    let report = g.dir.path().join("h2spec.xml");
    let mut cmd = Command::new("h2spec");
    cmd.args(["-t", "-k", "-o", "5", "-h"])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .arg("-j")
        .arg(&report);
    let (out, killed) = run_bounded(&mut cmd, Duration::from_secs(600));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!killed, "h2spec did not finish in 10 minutes:\n{text}");
    let summary = h2spec_summary(&text);
    eprintln!("h2spec: {summary:?} (passed, failed)");
    assert!(
        out.status.success() && matches!(summary, Some((p, 0)) if p > 0),
        "h2spec failed ({summary:?}):\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
