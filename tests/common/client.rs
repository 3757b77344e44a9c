//! A blocking SMTP client for tests, able to connect from any 127.x address.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// One SMTP reply: code and the full text (all lines joined by `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// True for 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.text)
    }
}

/// A TCP connection from `source` (any 127.x address works on loopback) to
/// `addr`: no delay, 20 s read and write timeouts. [`Client`] reads and
/// writes SMTP on it; a test that needs the bare socket takes it as is.
pub fn stream_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .expect("bind source");
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream
}

/// Asserts the reply starts with `expected` (code, enhanced code, text).
#[track_caller]
pub fn assert_reply(r: &Reply, expected: &str) {
    assert!(
        r.text.starts_with(expected),
        "expected {expected:?}, got {:?}",
        r.text
    );
}

/// The keywords of an EHLO reply (`text`, lines joined by `\n`): one for
/// each line after the first, its first word upper-cased (empty when the
/// line has none, so that a list compared whole shows it).
pub fn ehlo_keywords(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .map(|l| {
            let keyword = l.get(4..).unwrap_or("").split(' ').next().unwrap_or("");
            keyword.to_ascii_uppercase()
        })
        .collect()
}

/// One session from `source` to `addr`: EHLO, one message with `body`
/// (from `s@source.test` to `r@example.com`), QUIT; returns the reply to the
/// end of data. Panics if EHLO or the envelope is refused or QUIT is not
/// answered 221.
pub fn send_one(source: IpAddr, addr: SocketAddr, body: &str) -> Reply {
    let mut c = Client::greeted_from(source, addr);
    let r = c.cmd("EHLO client.example");
    assert!(r.ok(), "EHLO: {r}");
    let r = c.send_mail("s@source.test", &["r@example.com"], body);
    let quit = c.cmd("QUIT");
    assert_eq!(quit.code, 221, "QUIT: {quit}");
    r
}

/// A client connection.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects from 127.0.0.1 (the OS picks).
    pub fn connect(addr: SocketAddr) -> Client {
        Self::connect_from("127.0.0.1".parse().expect("ip"), addr)
    }

    /// Connects from `source` (any 127.x address works on loopback).
    pub fn connect_from(source: IpAddr, addr: SocketAddr) -> Client {
        Client {
            stream: stream_from(source, addr),
            buf: Vec::new(),
        }
    }

    /// Connects and reads the greeting, which must be 220.
    pub fn greeted_from(source: IpAddr, addr: SocketAddr) -> Client {
        let mut c = Self::connect_from(source, addr);
        let greeting = c.reply();
        assert_eq!(greeting.code, 220, "greeting: {greeting}");
        c
    }

    /// The client's own address (as the server sees it).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    /// Reads `n` replies in order.
    pub fn replies(&mut self, n: usize) -> Vec<Reply> {
        (0..n).map(|_| self.reply()).collect()
    }

    /// Sends one command line and asserts its reply starts with `expected`
    /// (e.g. `"550 5.7.1"`); returns the reply.
    pub fn expect(&mut self, line: &str, expected: &str) -> Reply {
        let r = self.cmd(line);
        assert!(
            r.text.starts_with(expected),
            "{line:?}: expected {expected:?}, got {:?}",
            r.text
        );
        r
    }

    /// Waits (bounded by the read timeout) until the server closes the
    /// connection; returns whatever complete lines arrived before.
    pub fn read_to_close(&mut self) -> Result<Vec<String>, String> {
        let mut lines = Vec::new();
        loop {
            match self.line() {
                Ok(line) => lines.push(line),
                Err(e) if e == "connection closed" => return Ok(lines),
                Err(e) if e.contains("reset") => return Ok(lines),
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one (possibly multi-line) reply.
    pub fn reply(&mut self) -> Reply {
        self.try_reply().unwrap_or_else(|e| panic!("no reply: {e}"))
    }

    /// Reads one reply, or says why there is none (closed, timeout).
    pub fn try_reply(&mut self) -> Result<Reply, String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line()?;
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or(format!("bad reply line {line:?}"))?;
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Ok(Reply {
                    code,
                    text: lines.join("\n"),
                });
            }
        }
    }

    fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Ok(line);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("connection closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Sends one command line and reads its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// True when the server has closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }

    /// EHLO, MAIL, RCPT..., DATA, body, end: returns the final reply, panicking
    /// if any envelope step is refused.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert!(r.ok(), "MAIL: {r}");
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert!(r.ok(), "RCPT: {r}");
        }
        let r = self.cmd("DATA");
        assert_eq!(r.code, 354, "DATA: {r}");
        self.send(body.as_bytes());
        self.send(b"\r\n.\r\n");
        self.reply()
    }
}
