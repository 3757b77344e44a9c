//! The channel of a binary upgrade (`mxgate upgrade`, SIGUSR2) between the
//! running daemon (the predecessor) and the new binary it starts (the
//! successor), as nginx and HAProxy hand their listening sockets over.
//!
//! The channel is a Unix socket pair: the successor gets its end as
//! standard input, with `MXGATE_UPGRADE=stdin` in its environment. First
//! the predecessor sends a [`Manifest`] line together with every listening
//! socket it holds (`SCM_RIGHTS`); then the two exchange [`Step`] lines:
//! the successor says `loaded` (configuration and certificates read,
//! sockets adopted), the predecessor answers `released` (it let go of
//! what only one process may hold: the cluster database), the successor
//! says `ready` once it accepts, or `failed` with the reason at any point.
//! The predecessor keeps serving until `ready`, so a failed start refuses
//! nothing.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use super::sockets::{self, Held, Kind, Listener, Origin};

/// The environment variable that makes a process a successor.
pub const ENV: &str = "MXGATE_UPGRADE";
/// Its value: the channel is standard input.
const ON_STDIN: &str = "stdin";
/// Variables of the predecessor's own start that must not reach the successor.
const NOT_INHERITED: [&str; 4] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_PID"];
/// Longest line on the channel.
const MAX_LINE: usize = 64 * 1024;
/// Most sockets handed over.
const MAX_SOCKETS: usize = 256;

/// A socket passed, as the manifest describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Passed {
    /// Its kind.
    pub kind: Kind,
    /// The listener it served.
    pub name: String,
}

/// What comes with the sockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Each socket, in the order they were passed.
    pub sockets: Vec<Passed>,
    /// The predecessor's process id.
    pub predecessor: u32,
    /// The watchdog interval systemd asked of the service, in microseconds.
    pub watchdog_usec: Option<u64>,
}

/// One step of the handover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Successor: configuration loaded, sockets adopted.
    Loaded,
    /// Predecessor: the cluster database is free.
    Released,
    /// Successor: accepting on every listener.
    Ready {
        /// Its process id.
        pid: u32,
    },
    /// Either side: the upgrade is abandoned, and why.
    Failed {
        /// What went wrong.
        reason: String,
    },
}

/// Why a handover failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The new binary could not be started.
    #[error("cannot start {path}: {source}")]
    Spawn {
        /// The binary.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The channel failed.
    #[error("the handover channel failed: {0}")]
    Channel(#[from] std::io::Error),
    /// The other side closed the channel (the successor exited).
    #[error("the new process exited before it was ready{0}")]
    Closed(String),
    /// The other side said something out of order.
    #[error("unexpected handover step: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("no answer from the new process within {0:?}")]
    Timeout(Duration),
    /// The successor gave up, with its reason.
    #[error("{0}")]
    Failed(String),
}

/// One end of the channel: lines out, lines in.
struct Channel {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Channel {
    fn new(stream: UnixStream) -> std::io::Result<Channel> {
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Channel { stream, reader })
    }

    fn send(&mut self, step: &Step) -> Result<(), HandoverError> {
        let mut line = serde_json::to_vec(step).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.stream.write_all(&line)?;
        Ok(())
    }

    /// The next step, waiting at most `within`.
    fn receive(&mut self, within: Duration) -> Result<Step, HandoverError> {
        self.stream.set_read_timeout(Some(within))?;
        let mut line = String::new();
        let read = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_line(&mut line);
        match read {
            Ok(0) => Err(HandoverError::Closed(String::new())),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| HandoverError::Protocol(format!("{e}: {}", line.trim()))),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(HandoverError::Timeout(within))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The predecessor's side: the new process and the channel to it.
pub struct Successor {
    channel: Channel,
    child: Child,
}

impl Successor {
    /// Starts `binary` with `args` as the successor and passes it `held`
    /// (every listening socket of this process).
    pub fn start(
        binary: &Path,
        args: &[OsString],
        held: Vec<Held>,
        watchdog: Option<Duration>,
    ) -> Result<Successor, HandoverError> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut command = Command::new(binary);
        command
            .args(args)
            .env(ENV, ON_STDIN)
            .stdin(Stdio::from(OwnedFd::from(theirs)));
        for name in NOT_INHERITED {
            command.env_remove(name);
        }
        let child = command.spawn().map_err(|source| HandoverError::Spawn {
            path: binary.display().to_string(),
            source,
        })?;
        let manifest = Manifest {
            sockets: (held.iter())
                .map(|h| Passed {
                    kind: h.kind,
                    name: h.name.clone(),
                })
                .collect(),
            predecessor: std::process::id(),
            watchdog_usec: watchdog.map(|w| u64::try_from(w.as_micros()).unwrap_or(u64::MAX)),
        };
        let fds: Vec<BorrowedFd<'_>> = held.iter().map(|h| h.fd.as_fd()).collect();
        let mut successor = Successor {
            channel: Channel::new(ours)?,
            child,
        };
        if let Err(e) = send_manifest(&successor.channel.stream, &manifest, &fds) {
            let e = successor.closed_or(e);
            successor.abandon();
            return Err(e);
        }
        Ok(successor)
    }

    /// The successor's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `step`.
    pub fn send(&mut self, step: &Step) -> Result<(), HandoverError> {
        self.channel.send(step)
    }

    /// Waits at most `within` for `expected`; `failed` from the successor,
    /// its exit, or anything else is an error.
    pub fn expect(
        &mut self,
        within: Duration,
        expected: fn(&Step) -> bool,
    ) -> Result<Step, HandoverError> {
        match self.channel.receive(within) {
            Ok(step) if expected(&step) => Ok(step),
            Ok(Step::Failed { reason }) => Err(HandoverError::Failed(reason)),
            Ok(other) => Err(HandoverError::Protocol(format!("{other:?}"))),
            Err(e) => Err(self.closed_or(e)),
        }
    }

    /// `error`, or [`HandoverError::Closed`] with the exit status when it
    /// means that the successor is gone.
    fn closed_or(&mut self, error: HandoverError) -> HandoverError {
        let gone = match &error {
            HandoverError::Closed(_) => true,
            HandoverError::Channel(e) => matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            _ => false,
        };
        if gone {
            HandoverError::Closed(self.exit_status())
        } else {
            error
        }
    }

    /// How the successor ended, for the message (it may take a moment).
    fn exit_status(&mut self) -> String {
        for _ in 0..50 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return format!(" ({status})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        String::new()
    }

    /// Gives up on the successor: ends it and reaps it.
    pub fn abandon(&mut self) {
        let _ = self.channel.send(&Step::Failed {
            reason: "the upgrade was abandoned".into(),
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send_manifest(
    stream: &UnixStream,
    manifest: &Manifest,
    fds: &[BorrowedFd<'_>],
) -> Result<(), HandoverError> {
    let mut line = serde_json::to_vec(manifest).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(HandoverError::Protocol("too many sockets to pass".into()));
    }
    let sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(&line)],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    if sent < line.len() {
        (&*stream).write_all(&line[sent..])?;
    }
    Ok(())
}

/// The successor's side: the channel to the daemon it replaces.
pub struct Predecessor {
    channel: Channel,
    /// What came with the sockets.
    pub manifest: Manifest,
}

impl Predecessor {
    /// When this process is a successor (`MXGATE_UPGRADE=stdin`): receives
    /// the manifest and the sockets, and adds them to the inherited ones.
    pub fn from_environment() -> Result<Option<Predecessor>, HandoverError> {
        if std::env::var_os(ENV).is_none_or(|v| v != ON_STDIN) {
            return Ok(None);
        }
        let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
        let stream = UnixStream::from(stdin);
        let (manifest, fds) = receive_manifest(&stream)?;
        if manifest.sockets.len() != fds.len() {
            return Err(HandoverError::Protocol(format!(
                "{} sockets announced, {} received",
                manifest.sockets.len(),
                fds.len()
            )));
        }
        let sockets = (manifest.sockets.iter())
            .zip(fds)
            .map(|(passed, fd)| (passed.name.clone(), Listener::from_fd(passed.kind, fd)))
            .collect();
        sockets::inherit(sockets, Origin::Predecessor);
        Ok(Some(Predecessor {
            channel: Channel::new(stream)?,
            manifest,
        }))
    }

    /// Says `step`.
    pub fn send(&mut self, step: &Step) -> Result<(), HandoverError> {
        self.channel.send(step)
    }

    /// Says `loaded` and waits at most `within` for `released`.
    pub fn loaded(&mut self, within: Duration) -> Result<(), HandoverError> {
        self.channel.send(&Step::Loaded)?;
        match self.channel.receive(within)? {
            Step::Released => Ok(()),
            Step::Failed { reason } => Err(HandoverError::Failed(reason)),
            other => Err(HandoverError::Protocol(format!("{other:?}"))),
        }
    }
}

fn receive_manifest(stream: &UnixStream) -> Result<(Manifest, Vec<OwnedFd>), HandoverError> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buffer = vec![0u8; MAX_LINE];
    let received = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut buffer)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let mut line = buffer[..received.bytes].to_vec();
    let mut rest = stream;
    while !line.ends_with(b"\n") && line.len() < MAX_LINE {
        let mut byte = [0u8; 1];
        if rest.read(&mut byte)? == 0 {
            return Err(HandoverError::Closed(String::new()));
        }
        line.push(byte[0]);
    }
    let manifest = serde_json::from_slice(&line)
        .map_err(|e| HandoverError::Protocol(format!("bad manifest: {e}")))?;
    Ok((manifest, fds))
}
