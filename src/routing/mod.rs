//! Routing: which member a session goes to, in which order, and why.
//!
//! [`Router`] is built from one policy snapshot and is pure: given the client
//! address, the destination address and the live [`MemberTable`], it returns a
//! [`Route`]. The order is weighted rendezvous hashing over a fixed 64-bit
//! hash (XXH3-64, seed 0; see `docs/routing.md`), so every node in every
//! process agrees without sharing state. Injection (client is a member) is
//! confined to that member's `inject_to`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::Policy;

/// The fixed hash of an affinity key and a member name (XXH3-64, seed 0).
pub fn member_hash(key: &[u8], member: &str) -> u64 {
    let _ = (key, member);
    todo!()
}

/// Weighted rendezvous score of a member for a key: higher wins.
pub fn rendezvous_score(hash: u64, weight: u32) -> f64 {
    let _ = (hash, weight);
    todo!()
}

/// Live state of every member: passive failures (back-off) and active sessions.
/// Shared by all sessions; survives reloads (members are matched by name).
#[derive(Debug, Default)]
pub struct MemberTable {
    _private: (),
}

/// A member's current health as routing sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberHealth {
    /// Usable for routing.
    pub healthy: bool,
    /// Why not, or the last failure.
    pub reason: Option<String>,
}

/// Decrements the member's active-session count when dropped.
#[derive(Debug)]
pub struct SessionGuard {
    _private: (),
}

impl MemberTable {
    /// An empty table.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Marks `member` failed (connect refused, 421, ...): avoided for `backoff`.
    pub fn mark_failed(&self, member: &str, reason: &str, backoff: Duration) {
        let _ = (member, reason, backoff);
        todo!()
    }
    /// Marks `member` working again.
    pub fn mark_ok(&self, member: &str) {
        let _ = member;
        todo!()
    }
    /// Health of `member` now.
    pub fn health(&self, member: &str) -> MemberHealth {
        let _ = member;
        todo!()
    }
    /// Counts a session on `member` until the guard is dropped.
    pub fn start_session(self: &Arc<Self>, member: &str) -> SessionGuard {
        let _ = member;
        todo!()
    }
    /// Active sessions on `member`.
    pub fn active_sessions(&self, member: &str) -> u64 {
        let _ = member;
        todo!()
    }
}

/// A member in routing order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// Member name.
    pub member: String,
    /// Rendezvous score (or, with affinity `none`, the negated session count).
    pub score: f64,
    /// Healthy now.
    pub healthy: bool,
}

/// A member left out of the order, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Excluded {
    /// Member name.
    pub member: String,
    /// Why, e.g. `not ingress`, `not in gw1's inject_to`, `down: connect refused (back-off 8s left)`.
    pub reason: String,
}

/// The outcome of routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// `order` holds at least one member.
    Route,
    /// The source member may inject nowhere (`550 5.7.1`).
    InjectionDenied,
    /// No candidate is healthy (`451 4.4.1`).
    Unavailable,
}

/// Which members a session would reach, in order, and why (SPEC section 5).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// The member the client is, when it injects.
    pub source_member: Option<String>,
    /// Healthy candidates, first choice first.
    pub order: Vec<Ranked>,
    /// Everything else, with reasons.
    pub excluded: Vec<Excluded>,
    /// What the session should do.
    pub verdict: Verdict,
}

impl Route {
    /// Human-readable explanation for `mxgate route explain`.
    pub fn render_text(&self) -> String {
        todo!()
    }
}

/// Routing over one policy snapshot.
#[derive(Debug)]
pub struct Router {
    policy: Arc<Policy>,
}

impl Router {
    /// Prepares routing for `policy` (address index for source members).
    pub fn new(policy: Arc<Policy>) -> Self {
        Router { policy }
    }
    /// The member whose `addresses` contain `client`.
    pub fn source_member(&self, client: IpAddr) -> Option<&str> {
        let _ = (client, &self.policy);
        todo!()
    }
    /// Orders the candidates for a session from `client` to `dest`.
    pub fn route(&self, table: &MemberTable, client: IpAddr, dest: Option<IpAddr>) -> Route {
        let _ = (table, client, dest);
        todo!()
    }
}
