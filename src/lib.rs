//! mxgate: the front door of a mail-gateway cluster.
//!
//! How a session flows:
//!
//! 1. [`smtp::server`] accepts a connection on a `[[smtp]]` listener, reads a
//!    PROXY header when the peer is a trusted proxy, and greets with mxgate's own banner.
//! 2. [`smtp::session`] answers EHLO/HELO/NOOP/... itself; at the first `MAIL` it
//!    asks [`routing::Router`] for the member order (rendezvous hash of the
//!    client and destination, confined to `inject_to` when the client is a member).
//! 3. [`smtp::upstream`] connects to the first member that answers, passes the
//!    real client (XCLIENT or PROXY), and the session relays the envelope and
//!    DATA ([`smtp::proto::DataReceiver`]) with replies returned verbatim,
//!    failing over to the next member until end of DATA is sent.
//! 4. [`http`] proxies GINA web-portal requests on `[[http]]` listeners to the
//!    members' `gina` upstreams, routed like public SMTP sessions.
//! 5. [`admin`] serves `mxgate status` and `route explain` over a Unix socket.
//! 6. Beside the sessions, [`health`] checks every member's SMTP and GINA
//!    upstreams every `[health] interval`; the router leaves out members
//!    whose service is down.
//!
//! Modules: [`config`] (files -> validated runtime types), [`smtp`] (the data
//! plane; [`smtp::proto`] is sans-IO), [`routing`] (member order and live
//! member state), [`health`] (active checks), [`admin`] (CLI socket),
//! [`metrics`] (Prometheus endpoint), [`demo`] (self-contained demo),
//! [`dns`] (MX / round-robin check, member host names), [`cluster`]
//! (control plane: identity, join, replicated policy over mutual TLS), [`lft`]
//! (attachment store of injected mail and its synchronisation), [`text`]
//! (escaping what the CLI prints, so no value can forge a line), [`stdout`]
//! (the one writer of standard output, quiet when its reader goes away), [`cli`]
//! (the command line). `docs/architecture.md` draws the layers they form.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accept;
pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod descriptors;
pub mod dns;
pub mod health;
pub mod http;
pub mod lft;
pub mod logging;
pub mod metrics;
pub mod routing;
pub mod service;
pub mod shutdown;
pub mod smtp;
pub mod stdout;
pub mod text;
pub mod time;
pub mod tls;
pub mod workers;
