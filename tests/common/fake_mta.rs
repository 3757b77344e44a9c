//! A scriptable fake MTA for failure injection: it can refuse, stay silent,
//! say 421, drop the connection at a chosen point, or behave. It records what
//! it received. Real MTAs (smtp-sink, Postfix) cover the normal paths.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the fake behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// A well-behaved ESMTP server with PIPELINING and XCLIENT.
    Normal,
    /// Greets with this line (e.g. `421 4.3.2 busy`) and closes.
    Greet(String),
    /// Accepts TCP and never says anything.
    Silent,
    /// Closes the connection instead of answering the nth RCPT (1-based).
    DropAtRcpt(usize),
    /// Answers `421` to MAIL.
    Reply421AtMail,
    /// Answers `421` to the nth RCPT (1-based) and closes, as Postfix does at
    /// its error limit.
    Reply421AtRcpt(usize),
    /// Closes the connection instead of answering DATA (or a BDAT, before
    /// reading its chunk).
    DropAtData,
    /// Closes the connection once this many message bytes arrived (DATA,
    /// or BDAT chunks: after the chunk that reaches it, unanswered).
    DropDuringData(usize),
    /// Answers the end of data with this line instead of 250.
    FinalReply(String),
}

/// What one message looked like on arrival.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub xclient: Vec<String>,
    pub helo: Vec<String>,
    pub proxy: Option<Vec<u8>>,
    pub mail: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
}

#[derive(Default)]
struct State {
    messages: Vec<Received>,
    connections: usize,
    commands: Vec<String>,
    streams: Vec<TcpStream>,
}

/// A fake MTA on 127.0.0.1.
pub struct FakeMta {
    pub addr: SocketAddr,
    pub name: String,
    state: Arc<Mutex<State>>,
    stopped: Arc<AtomicBool>,
    behavior: Arc<Mutex<Behavior>>,
}

/// Options beyond behaviour.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub no_pipelining: bool,
    pub no_xclient: bool,
    /// Expect a PROXY header (v1 line or v2 binary) before greeting.
    pub expect_proxy: bool,
    /// More EHLO keywords (e.g. `SMTPUTF8`, `DSN`).
    pub extensions: Vec<&'static str>,
    /// Offer CHUNKING and take BDAT (RFC 3030); `data` is the chunks' octets.
    pub chunking: bool,
}

impl FakeMta {
    pub fn start(name: &str, behavior: Behavior) -> FakeMta {
        Self::start_with(name, behavior, Options::default())
    }

    pub fn start_with(name: &str, behavior: Behavior, options: Options) -> FakeMta {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake MTA");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let stopped = Arc::new(AtomicBool::new(false));
        let behavior = Arc::new(Mutex::new(behavior));
        let fake = FakeMta {
            addr,
            name: name.to_owned(),
            state: state.clone(),
            stopped: stopped.clone(),
            behavior: behavior.clone(),
        };
        let name = name.to_owned();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let state = state.clone();
                let behavior = behavior.lock().expect("lock").clone();
                let options = options.clone();
                let name = name.clone();
                let Ok(closer) = stream.try_clone() else {
                    continue;
                };
                if let Ok(clone) = stream.try_clone() {
                    let mut s = state.lock().expect("lock");
                    s.connections += 1;
                    s.streams.push(clone);
                }
                std::thread::spawn(move || {
                    let _ = serve(&name, stream, &state, &behavior, &options);
                    // The clone kept in `streams` would otherwise hold the
                    // connection open: really close it when the script ends.
                    let _ = closer.shutdown(Shutdown::Both);
                });
            }
        });
        fake
    }

    /// Messages fully received and acknowledged with 2xx.
    pub fn messages(&self) -> Vec<Received> {
        self.state.lock().expect("lock").messages.clone()
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.state.lock().expect("lock").connections
    }

    /// Every command line received, in order.
    pub fn commands(&self) -> Vec<String> {
        self.state.lock().expect("lock").commands.clone()
    }

    /// Changes the behaviour for new connections.
    pub fn set_behavior(&self, behavior: Behavior) {
        *self.behavior.lock().expect("lock") = behavior;
    }

    /// Cuts every live connection but keeps listening (a member that closed
    /// its idle connections, e.g. after a restart).
    pub fn drop_connections(&self) {
        for s in self.state.lock().expect("lock").streams.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Stops listening (new connects are refused) and cuts live connections.
    pub fn kill(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Unblock accept() so the listener is dropped.
        let _ = TcpStream::connect(self.addr);
        for s in self.state.lock().expect("lock").streams.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wait until the port refuses connections.
        for _ in 0..100 {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FakeMta {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(
    name: &str,
    stream: TcpStream,
    state: &Mutex<State>,
    behavior: &Behavior,
    options: &Options,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut current = Received::default();
    if options.expect_proxy {
        let mut first = [0u8; 12];
        reader.read_exact(&mut first[..5])?;
        if &first[..5] == b"PROXY" {
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest)?;
            let mut header = first[..5].to_vec();
            header.extend(rest);
            current.proxy = Some(header);
        } else {
            reader.read_exact(&mut first[5..12])?;
            let mut fixed = [0u8; 4];
            reader.read_exact(&mut fixed)?;
            let len = u16::from_be_bytes([fixed[2], fixed[3]]) as usize;
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body)?;
            let mut header = first.to_vec();
            header.extend(fixed);
            header.extend(body);
            current.proxy = Some(header);
        }
    }
    match behavior {
        Behavior::Silent => {
            std::thread::sleep(Duration::from_secs(60));
            return Ok(());
        }
        Behavior::Greet(line) => {
            out.write_all(format!("{line}\r\n").as_bytes())?;
            return Ok(());
        }
        _ => out.write_all(format!("220 {name}.fake ESMTP\r\n").as_bytes())?,
    }
    let mut rcpt_count = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_owned();
        state.lock().expect("lock").commands.push(line.clone());
        let verb = line
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => {
                current.helo.push(line[5..].to_owned());
                let mut caps = vec![format!("{name}.fake")];
                if !options.no_pipelining {
                    caps.push("PIPELINING".into());
                }
                caps.push("SIZE 52428800".into());
                caps.push("8BITMIME".into());
                if !options.no_xclient {
                    caps.push("XCLIENT NAME ADDR PORT PROTO HELO DESTADDR DESTPORT".into());
                }
                caps.push("ENHANCEDSTATUSCODES".into());
                caps.extend(options.extensions.iter().map(|k| (*k).to_owned()));
                if options.chunking {
                    caps.push("CHUNKING".into());
                }
                let n = caps.len();
                caps.iter()
                    .enumerate()
                    .map(|(i, c)| format!("250{}{c}\r\n", if i + 1 < n { "-" } else { " " }))
                    .collect()
            }
            "XCLIENT" => {
                current.xclient.push(line[8..].to_owned());
                format!("220 {name}.fake ESMTP\r\n")
            }
            "MAIL" => {
                if *behavior == Behavior::Reply421AtMail {
                    out.write_all(b"421 4.3.2 shutting down\r\n")?;
                    return Ok(());
                }
                rcpt_count = 0;
                if line.to_ascii_lowercase().contains("reject") {
                    "550 5.7.1 <reject@x> Sender rejected\r\n".to_owned()
                } else {
                    current.mail = line.clone();
                    current.rcpts.clear();
                    current.data.clear();
                    "250 2.1.0 Ok\r\n".to_owned()
                }
            }
            "RCPT" => {
                rcpt_count += 1;
                if *behavior == Behavior::DropAtRcpt(rcpt_count) {
                    return Ok(());
                }
                if *behavior == Behavior::Reply421AtRcpt(rcpt_count) {
                    out.write_all(b"421 4.7.0 Error: too many errors\r\n")?;
                    return Ok(());
                }
                if line.to_ascii_lowercase().contains("reject") {
                    "550 5.1.1 <reject@x> User unknown\r\n".to_owned()
                } else {
                    current.rcpts.push(line.clone());
                    "250 2.1.5 Ok\r\n".to_owned()
                }
            }
            "DATA" => {
                if *behavior == Behavior::DropAtData {
                    return Ok(());
                }
                out.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                let mut data = Vec::new();
                loop {
                    let mut chunk = Vec::new();
                    if reader.read_until(b'\n', &mut chunk)? == 0 {
                        return Ok(());
                    }
                    data.extend_from_slice(&chunk);
                    if let Behavior::DropDuringData(n) = behavior
                        && data.len() >= *n
                    {
                        return Ok(());
                    }
                    if data.ends_with(b"\r\n.\r\n") || data == b".\r\n" {
                        break;
                    }
                }
                let end = data.len().saturating_sub(3);
                current.data = data[..end].to_vec();
                if let Behavior::FinalReply(line) = behavior {
                    format!("{line}\r\n")
                } else {
                    let mut s = state.lock().expect("lock");
                    s.messages.push(current.clone());
                    format!("250 2.0.0 Ok: queued as {name}-{}\r\n", s.messages.len())
                }
            }
            "BDAT" if options.chunking => {
                if *behavior == Behavior::DropAtData {
                    return Ok(());
                }
                let mut words = line.split(' ').skip(1);
                let size: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
                let mut chunk = vec![0u8; size];
                reader.read_exact(&mut chunk)?;
                current.data.extend_from_slice(&chunk);
                if let Behavior::DropDuringData(n) = behavior
                    && current.data.len() >= *n
                {
                    return Ok(());
                }
                match behavior {
                    _ if !last => format!("250 2.0.0 Ok: {size} bytes\r\n"),
                    Behavior::FinalReply(line) => format!("{line}\r\n"),
                    _ => {
                        let mut s = state.lock().expect("lock");
                        s.messages.push(current.clone());
                        current.data.clear();
                        format!("250 2.0.0 Ok: queued as {name}-{}\r\n", s.messages.len())
                    }
                }
            }
            "RSET" => {
                current.data.clear();
                "250 2.0.0 Ok\r\n".to_owned()
            }
            "NOOP" => "250 2.0.0 Ok\r\n".to_owned(),
            "QUIT" => {
                out.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => "502 5.5.2 Error: command not recognized\r\n".to_owned(),
        };
        out.write_all(reply.as_bytes())?;
    }
}
