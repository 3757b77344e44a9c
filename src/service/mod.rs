//! What mxgate exchanges with the process that started it: the listening
//! sockets it inherits (systemd socket activation, or its predecessor in a
//! binary upgrade) and holds for a successor (`sockets`), systemd's notify
//! protocol (`notify`), and the handover channel of `mxgate upgrade`
//! between the running daemon and the new binary (`handover`).
//!
//! It sits below everything that binds a socket (the daemon's listeners,
//! metrics, the control plane, the admin socket) and knows nothing of them
//! beyond addresses and paths.

pub mod handover;
pub mod notify;
pub mod sockets;
