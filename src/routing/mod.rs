//! Routing: which member a session goes to, in which order, and why.
//!
//! [`Router`] is built from one policy snapshot and is pure: given the client
//! address, the destination address and the live [`MemberTable`], it returns a
//! [`Route`]. The order is weighted rendezvous hashing over a fixed 64-bit
//! hash (XXH3-64, seed 0; see `docs/routing.md`), so every node in every
//! process agrees without sharing state. Injection (client is a member) is
//! confined to that member's `inject_to`.
//!
//! Files: [`hash`] (the fixed key encoding, hash and score: a product
//! guarantee), `table` (live member state), `service` (one
//! service's health: passive back-off or active checks), [`health_state`]
//! (the pure rise/fall machine of an actively checked service, fed by
//! `health`), `router` (the decision), `explain` (the result and its text
//! rendering).

pub mod hash;
pub mod health_state;

mod explain;
mod router;
mod service;
mod table;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use explain::{Excluded, ExtensionsReport, MemberExtensions, Ranked, Route, Verdict};
pub use hash::{AffinityKey, member_hash, rendezvous_score};
pub use router::Router;
pub use service::{Service, ServiceReport};
pub use table::{MemberHealth, MemberStatus, MemberTable, SessionGuard};
