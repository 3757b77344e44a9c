//! A minimal sink MTA for the demo: accepts every message and logs it.
//!
//! It offers PIPELINING, 8BITMIME, SIZE and XCLIENT like Postfix, so the
//! demo shows mxgate passing the real client address along.

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::info;

use crate::config::BareLf;
use crate::smtp::proto::{self, Command, DataReceiver, DataStep, LineReader, Reply};

/// Starts a sink called `name` on an ephemeral 127.0.0.1 port.
pub async fn start(name: &'static str) -> std::io::Result<SocketAddr> {
    start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Starts a sink called `name` listening on `addr`; the address it got.
pub async fn start_on(name: &'static str, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut count = 0u64;
        while let Ok((stream, _)) = listener.accept().await {
            count += 1;
            tokio::spawn(session(name, stream, count));
        }
    });
    Ok(addr)
}

async fn session(name: &'static str, mut stream: TcpStream, conn: u64) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut rbuf = BytesMut::new();
    let mut lines = LineReader::new();
    let mut client = String::from("(direct)");
    let mut rcpts = Vec::new();
    let mut from = String::new();
    let mut seq = 0u64;
    stream
        .write_all(format!("220 {name}.demo.test ESMTP demo sink\r\n").as_bytes())
        .await?;
    loop {
        let mut out = BytesMut::new();
        while let Ok(Some(line)) = lines.next_line(&mut rbuf) {
            let reply = match proto::parse_command(&line) {
                Ok(Command::Ehlo(_)) => Reply::multiline(
                    250,
                    &[
                        &format!("{name}.demo.test"),
                        "PIPELINING",
                        "SIZE 104857600",
                        "8BITMIME",
                        "XCLIENT NAME ADDR PORT PROTO HELO DESTADDR DESTPORT",
                        "ENHANCEDSTATUSCODES",
                    ],
                ),
                Ok(Command::Helo(_)) => Reply::new(250, "", &format!("{name}.demo.test")),
                Ok(Command::Xclient(attrs)) => {
                    if let Some((_, addr)) = attrs.iter().find(|(k, _)| k == "ADDR") {
                        client = addr.clone();
                    }
                    Reply::new(220, "", &format!("{name}.demo.test ESMTP demo sink"))
                }
                Ok(Command::Mail(mail)) => {
                    from = mail.path;
                    rcpts.clear();
                    Reply::new(250, "2.1.0", "Ok")
                }
                Ok(Command::Rcpt(rcpt)) => {
                    rcpts.push(rcpt.path);
                    Reply::new(250, "2.1.5", "Ok")
                }
                Ok(Command::Data) => {
                    out.extend_from_slice(
                        Reply::new(354, "", "End data with <CR><LF>.<CR><LF>").as_bytes(),
                    );
                    stream.write_all(&out).await?;
                    out.clear();
                    let size = receive(&mut stream, &mut rbuf).await?;
                    seq += 1;
                    info!(target: "mxgate::demo", sink = name, client = %client, from = %from, to = %rcpts.join(","), bytes = size, "sink accepted a message");
                    Reply::new(250, "2.0.0", &format!("Ok: queued as {name}-{conn}-{seq}"))
                }
                Ok(Command::Rset | Command::Noop) => Reply::new(250, "2.0.0", "Ok"),
                Ok(Command::Quit) => {
                    out.extend_from_slice(Reply::new(221, "2.0.0", "Bye").as_bytes());
                    return stream.write_all(&out).await;
                }
                Ok(_) => Reply::new(502, "5.5.1", "Not implemented"),
                Err(err) => Reply::from(&err),
            };
            out.extend_from_slice(reply.as_bytes());
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
        if stream.read_buf(&mut rbuf).await? == 0 {
            return Ok(());
        }
    }
}

async fn receive(stream: &mut TcpStream, rbuf: &mut BytesMut) -> std::io::Result<u64> {
    let mut receiver = DataReceiver::new(BareLf::Normalize, u64::MAX);
    loop {
        match receiver.feed(rbuf) {
            DataStep::End => return Ok(receiver.size()),
            DataStep::Forward(_) | DataStep::Refused(_) => {}
            DataStep::NeedMore => {
                if stream.read_buf(rbuf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }
}
