//! The greeting, and the pre-greet check made at the moment it is sent
//! (SPEC 4.1: a client that talks before the greeting gets `554 5.5.1` and
//! is dropped; a PROXY header from a peer not allowed to send one gets
//! `550 5.7.1`).
//!
//! What "before the greeting" means: the client's bytes were in mxgate's
//! socket receive queue when the greeting was handed to the kernel. The
//! last look is a `recv` system call made right before the `send` of the
//! greeting, with no await point in between, so the window between the two
//! is a few microseconds whatever the load. It asks the kernel, not tokio's
//! readiness cache: a socket accepted a moment ago has no readiness yet (the
//! event loop learns it at its next poll), so `try_read` there answers "would
//! block" without looking, and a client whose command was already queued was
//! greeted or not depending on whether the event loop had polled in between
//! (28 of 40 were caught). Bytes that arrive after the greeting was sent
//! cannot be told from a quick client's answer to it (on loopback the round
//! trip is some 20 µs), so they are served; a `greet_delay` holds the
//! greeting back and catches clients that do not wait for it (Postfix's
//! postscreen does the same with its greet wait).

use std::io::{Read, Write};
use std::net::SocketAddr;

use bytes::BytesMut;
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::{info, warn};

use crate::config::SmtpListener;
use crate::metrics;
use crate::smtp::proto::Reply;

/// Octets of early input looked at: enough to tell a PROXY header from a command.
const PROBE: usize = 512;

/// How the greeting went.
#[derive(Debug)]
pub(crate) enum Greeting {
    /// Sent: the session starts.
    Sent,
    /// The client talked first: this refusal (with its metrics reason) is
    /// to be sent instead, and the connection closed.
    Refuse(Reply, &'static str),
    /// The connection failed while the greeting was being written.
    Lost,
}

/// Waits `greet_delay` for a client that talks first, then looks once more
/// and sends the greeting (`220 <hostname> ESMTP`) unless it did. `rbuf`
/// holds what was read before (after a PROXY header, say); anything in it
/// counts as talking first too.
pub(crate) async fn greet(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    listener: &SmtpListener,
    peer: SocketAddr,
) -> Greeting {
    if rbuf.is_empty() && !listener.greet_delay.is_zero() {
        // End of input or an error: nothing was said; the greeting's write
        // or the session's first read finds out the rest.
        let _ = timeout(listener.greet_delay, stream.read_buf(rbuf)).await;
    }
    if rbuf.is_empty() {
        last_look(stream, rbuf);
    }
    if !rbuf.is_empty() {
        let (reply, reason) = refusal(rbuf, peer);
        return Greeting::Refuse(reply, reason);
    }
    // `concat`, not `format!`: the formatter cost about 0.5 k instructions.
    let text = [listener.hostname.as_str(), " ESMTP"].concat();
    let greeting = Reply::new(220, "", &text);
    let bytes = greeting.as_bytes();
    // Sent directly after the look, for the same reason: a tokio write on a
    // socket whose writability it has not learnt yet would wait for the
    // next poll of the event loop first. A new connection's send buffer is
    // empty, so this takes it all; whatever it does not take goes the
    // usual way.
    let sent = (&*SockRef::from(&*stream)).write(bytes).unwrap_or(0);
    let rest = bytes.get(sent..).unwrap_or_default();
    if rest.is_empty() {
        return Greeting::Sent;
    }
    match timeout(listener.command_timeout, stream.write_all(rest)).await {
        Ok(Ok(())) => Greeting::Sent,
        _ => Greeting::Lost,
    }
}

/// Takes whatever the client has sent so far into `rbuf`, asking the kernel
/// (a non-blocking `recv`; the socket is non-blocking, as tokio made it).
fn last_look(stream: &TcpStream, rbuf: &mut BytesMut) {
    let mut probe = [0u8; PROBE];
    // Err: nothing there (would block) or the connection failed, which the
    // greeting's write or the session's first read will see.
    if let Ok(n) = (&*SockRef::from(stream)).read(&mut probe) {
        rbuf.extend_from_slice(probe.get(..n).unwrap_or_default());
    }
}

/// The refusal for a client that talked first, and its metrics reason.
fn refusal(rbuf: &BytesMut, peer: SocketAddr) -> (Reply, &'static str) {
    if rbuf.starts_with(b"PROXY ") || rbuf.starts_with(b"\r\n\r\n\0\r\nQUIT\n") {
        warn!(peer = %peer, "PROXY header from a peer not in trusted_proxies (or on a listener without proxy_protocol) refused");
        let reply = Reply::new(550, "5.7.1", "Error: PROXY header not accepted from you");
        return (reply, metrics::reason::PROXY_UNTRUSTED);
    }
    info!(peer = %peer, "client talked before the greeting");
    let reply = Reply::new(554, "5.5.1", "Error: talking before the greeting");
    (reply, metrics::reason::PREGREET)
}

#[cfg(test)]
mod tests {
    use super::{Greeting, greet};
    use crate::config::{BareLf, SmtpListener};
    use bytes::BytesMut;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn listener(greet_delay: Duration) -> SmtpListener {
        SmtpListener {
            name: "in".into(),
            listen: "127.0.0.1:0".parse().expect("addr"),
            hostname: "mx.test".into(),
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            max_message_size: 1 << 20,
            max_sessions: 10,
            max_sessions_per_client: 10,
            max_recipients: 10,
            bare_lf: BareLf::Reject,
            greet_delay,
            command_timeout: Duration::from_secs(5),
            data_timeout: Duration::from_secs(5),
            min_data_rate: 500,
            max_errors: 10,
        }
    }

    /// A connected pair: the client's end and the server's accepted end.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = l.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn input_queued_before_the_greeting_is_caught_at_once() {
        let cfg = listener(Duration::ZERO);
        for _ in 0..20 {
            let (mut client, mut server) = pair().await;
            client.write_all(b"EHLO x\r\n").await.expect("write");
            // The bytes are in the server's queue once it can read them; a
            // blocking peek proves it without a sleep. tokio's readiness for
            // `server` is untouched by it (peek on a clone of the std socket).
            let std = server.into_std().expect("std");
            let mut byte = [0u8; 1];
            std.set_nonblocking(false).expect("blocking");
            assert_eq!(std.peek(&mut byte).expect("peek"), 1);
            std.set_nonblocking(true).expect("nonblocking");
            server = TcpStream::from_std(std).expect("tokio");
            let mut rbuf = BytesMut::new();
            let peer = client.local_addr().expect("addr");
            match greet(&mut server, &mut rbuf, &cfg, peer).await {
                Greeting::Refuse(reply, reason) => {
                    assert!(reply.as_bytes().starts_with(b"554 5.5.1"));
                    assert_eq!(reason, crate::metrics::reason::PREGREET);
                }
                other => panic!("not refused: {other:?}"),
            }
            assert_eq!(&rbuf[..], b"EHLO x\r\n");
        }
    }

    #[tokio::test]
    async fn a_silent_client_is_greeted() {
        let cfg = listener(Duration::ZERO);
        let (mut client, mut server) = pair().await;
        let peer = client.local_addr().expect("addr");
        let mut rbuf = BytesMut::new();
        assert!(matches!(
            greet(&mut server, &mut rbuf, &cfg, peer).await,
            Greeting::Sent
        ));
        let mut line = [0u8; 19];
        client.read_exact(&mut line).await.expect("greeting");
        assert_eq!(&line, b"220 mx.test ESMTP\r\n");
    }
}
