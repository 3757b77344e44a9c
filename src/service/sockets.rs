//! Listening sockets: the ones this process inherited, and every one it
//! listens on, kept for a successor.
//!
//! A socket is inherited from systemd (`LISTEN_FDS`, socket activation,
//! read with the `listenfd` crate; named by `LISTEN_FDNAMES`) or from the
//! predecessor of a binary upgrade ([`super::handover`]), named by the
//! listener it served (`smtp/NAME`, `http/NAME`, `metrics`, `cluster`,
//! `admin`). Whoever needs a listener asks [`tcp_listener`] or
//! [`inherited_unix_listener`]: an inherited socket bound to the same
//! address (for a configured port 0, the same IP and name) is used instead
//! of binding a new one, so connections waiting in its backlog are served
//! and none is refused. Each listener handed out is also held here (a
//! duplicate descriptor, with its name), so that [`held`] can pass all of
//! them to a successor.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// What kind of listening socket a descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// TCP (IPv4 or IPv6).
    Tcp,
    /// A Unix stream socket with a path.
    Unix,
}

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix stream.
    Unix(UnixListener),
}

impl Listener {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Listener::Tcp(_) => Kind::Tcp,
            Listener::Unix(_) => Kind::Unix,
        }
    }

    /// A socket of `kind` from a descriptor received from a predecessor.
    pub fn from_fd(kind: Kind, fd: OwnedFd) -> Listener {
        match kind {
            Kind::Tcp => Listener::Tcp(TcpListener::from(fd)),
            Kind::Unix => Listener::Unix(UnixListener::from(fd)),
        }
    }

    /// A second descriptor of the same socket.
    fn duplicate(&self) -> std::io::Result<OwnedFd> {
        match self {
            Listener::Tcp(l) => l.as_fd().try_clone_to_owned(),
            Listener::Unix(l) => l.as_fd().try_clone_to_owned(),
        }
    }

    /// The address for the log.
    fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "TCP socket".into(), |a| a.to_string()),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_else(|| "Unix socket".into()),
        }
    }
}

/// Where inherited sockets came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// systemd socket activation (`LISTEN_FDS`).
    Activation,
    /// The daemon this one replaces (`mxgate upgrade`).
    Predecessor,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Activation => "socket activation",
            Origin::Predecessor => "the previous process",
        })
    }
}

/// A socket this process inherited.
struct Inherited {
    listener: Listener,
    name: String,
    origin: Origin,
}

/// A socket held for a successor.
pub struct Held {
    /// Its kind.
    pub kind: Kind,
    /// The listener it serves.
    pub name: String,
    /// A duplicate descriptor.
    pub fd: OwnedFd,
}

struct Pool {
    inherited: Vec<Inherited>,
    held: Vec<Held>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    inherited: Vec::new(),
    held: Vec::new(),
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Adds named sockets to the inherited ones.
pub fn inherit(sockets: Vec<(String, Listener)>, origin: Origin) {
    let mut pool = pool();
    pool.inherited
        .extend(sockets.into_iter().map(|(name, listener)| Inherited {
            listener,
            name,
            origin,
        }));
}

/// Takes the sockets systemd passed (`LISTEN_FDS`, `LISTEN_PID`, named by
/// `LISTEN_FDNAMES`) into the inherited ones; `listenfd` clears the first
/// two, and a successor is started without any of the three.
/// Returns how many there were.
pub fn inherit_from_systemd() -> usize {
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|names| names.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let name = |index: usize| names.get(index).cloned().unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    let mut sockets = Vec::new();
    for index in 0..fds.len() {
        match fds.take_tcp_listener(index) {
            Ok(Some(socket)) => sockets.push((name(index), Listener::Tcp(socket))),
            Ok(None) => {}
            Err(_) => match fds.take_unix_listener(index) {
                Ok(Some(socket)) => sockets.push((name(index), Listener::Unix(socket))),
                Ok(None) => {}
                Err(e) => warn!(
                    descriptor = index + 3,
                    error = %e,
                    "socket activation: a passed descriptor is neither a listening TCP nor Unix stream socket; ignored"
                ),
            },
        }
    }
    let count = sockets.len();
    inherit(sockets, Origin::Activation);
    count
}

/// A listening TCP socket on `addr` for the listener `name`
/// (non-blocking): the inherited one bound to `addr` when there is one
/// (for port 0: bound to its IP and named `name`), else a new one.
pub fn tcp_listener(name: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let fits = |socket: &Inherited| {
        let Listener::Tcp(listener) = &socket.listener else {
            return false;
        };
        listener.local_addr().is_ok_and(|bound| {
            bound == addr || (addr.port() == 0 && bound.ip() == addr.ip() && socket.name == name)
        })
    };
    let listener = match take(fits) {
        Some(Listener::Tcp(listener)) => listener,
        _ => TcpListener::bind(addr)?,
    };
    listener.set_nonblocking(true)?;
    hold(name, &Listener::Tcp(listener.try_clone()?))?;
    Ok(listener)
}

/// The inherited listening Unix socket at `path`, if there is one
/// (non-blocking, held for a successor).
pub fn inherited_unix_listener(path: &Path) -> std::io::Result<Option<UnixListener>> {
    let wanted = Some(PathBuf::from(path));
    let found = take(|socket| match &socket.listener {
        Listener::Unix(listener) => {
            let bound = listener.local_addr().ok();
            bound.and_then(|a| a.as_pathname().map(Path::to_path_buf)) == wanted
        }
        Listener::Tcp(_) => false,
    });
    let Some(Listener::Unix(listener)) = found else {
        return Ok(None);
    };
    listener.set_nonblocking(true)?;
    hold_unix(&listener)?;
    Ok(Some(listener))
}

/// Name of the admin socket among the held ones.
const ADMIN: &str = "admin";

/// Holds the admin socket this process bound itself, for a successor.
pub fn hold_unix(listener: &UnixListener) -> std::io::Result<()> {
    hold(ADMIN, &Listener::Unix(listener.try_clone()?))
}

fn hold(name: &str, listener: &Listener) -> std::io::Result<()> {
    let fd = listener.duplicate()?;
    pool().held.push(Held {
        kind: listener.kind(),
        name: name.to_owned(),
        fd,
    });
    Ok(())
}

fn take(fits: impl Fn(&Inherited) -> bool) -> Option<Listener> {
    let mut pool = pool();
    let at = pool.inherited.iter().position(fits)?;
    let socket = pool.inherited.remove(at);
    info!(socket = %socket.listener.describe(), name = %socket.name, from = %socket.origin,
        "using an inherited listening socket");
    Some(socket.listener)
}

/// Closes the inherited sockets no listener asked for (logged): the
/// configuration no longer has their address.
pub fn close_unclaimed() {
    let unclaimed = std::mem::take(&mut pool().inherited);
    for socket in unclaimed {
        warn!(socket = %socket.listener.describe(), name = %socket.name, from = %socket.origin,
            "an inherited listening socket matches no listener of the configuration; closed");
    }
}

/// Duplicates of every listening socket this process serves, for a
/// successor.
pub fn held() -> std::io::Result<Vec<Held>> {
    pool()
        .held
        .iter()
        .map(|h| {
            Ok(Held {
                kind: h.kind,
                name: h.name.clone(),
                fd: h.fd.try_clone()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inherited_socket_is_used_for_its_address_and_held() {
        let socket = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        inherit(
            vec![("smtp/in".into(), Listener::Tcp(socket))],
            Origin::Activation,
        );
        let listener = tcp_listener("smtp/other", addr).expect("inherited");
        assert_eq!(listener.local_addr().expect("addr"), addr);
        assert!(held().expect("held").iter().any(|h| h.name == "smtp/other"));
    }

    #[test]
    fn a_configured_port_0_takes_the_inherited_socket_of_the_same_name() {
        let socket = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        inherit(
            vec![("http/gina".into(), Listener::Tcp(socket))],
            Origin::Predecessor,
        );
        let any_port: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let other = tcp_listener("http/other", any_port).expect("bound");
        assert_ne!(other.local_addr().expect("addr"), addr);
        let same = tcp_listener("http/gina", any_port).expect("inherited");
        assert_eq!(same.local_addr().expect("addr"), addr);
    }
}
