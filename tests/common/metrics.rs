//! The metrics endpoint in tests: a free address for `[metrics] listen`, a
//! node configuration with it, and plain HTTP GETs of its pages over a real
//! socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A free address on 127.0.0.1 for `[metrics] listen`.
pub fn metrics_addr() -> SocketAddr {
    SocketAddr::new(super::ip("127.0.0.1"), super::free_port("127.0.0.1"))
}

/// `node` (what follows `[node]` in mxgate.toml, e.g. the listeners) with
/// `[metrics] listen = ADDR` after it.
pub fn with_metrics(node: &str, addr: SocketAddr) -> String {
    format!("{node}\n[metrics]\nlisten = \"{addr}\"\n")
}

/// Sends `GET path` (HTTP/1.1, `Connection: close`) to `addr`; the
/// connection, with a 10 s read timeout, to read the answer from.
fn request(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    s
}

/// GET `path`: the whole response, head and body, or what of it arrived
/// before the read failed (for tests that poll until it shows something).
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut out = String::new();
    let _ = request(addr, path).read_to_string(&mut out);
    out
}

/// GET `path`, asserting a complete `200` answer with a `text/plain` body;
/// returns the body.
pub fn http_get_text(addr: SocketAddr, path: &str) -> String {
    let mut response = Vec::new();
    request(addr, path)
        .read_to_end(&mut response)
        .expect("read response");
    let response = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a full response");
    assert!(head.starts_with("HTTP/1.1 200"), "response head: {head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "response head: {head}"
    );
    body.to_owned()
}
