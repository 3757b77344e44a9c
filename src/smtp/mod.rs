//! The SMTP data plane: listeners, client sessions, relaying to members.
//!
//! [`server`] accepts and handles what comes before the greeting (PROXY,
//! session limits); [`greeting`] sends the greeting unless the client talked
//! first (pre-greet); [`session`] runs the client conversation; [`relay`] moves the
//! transaction to a member with failover; [`upstream`] is the member-side
//! SMTP client; [`tap`] is how a subsystem gets a copy of relayed messages;
//! [`proto`] is the sans-IO protocol code under all of them.

mod deadline;
mod greeting;
pub mod proto;
mod relay;
pub mod server;
pub mod session;
pub mod tap;
pub mod upstream;
