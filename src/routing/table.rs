//! Live member state shared by every session: passive failures with back-off
//! and active-session counts.
//!
//! Sessions report failures ([`MemberTable::mark_failed`]) and successes
//! ([`MemberTable::mark_ok`]); the router reads the table once per decision.
//! State is keyed by member name, so it survives policy reloads: a member that
//! keeps its name keeps its state. Entries are never removed (a handful of
//! bytes per name ever seen). Times are `tokio::time::Instant`, so a paused
//! tokio clock drives back-off in tests.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Live state of every member: passive failures (back-off) and active sessions.
/// Shared by all sessions; survives reloads (members are matched by name).
#[derive(Debug, Default)]
pub struct MemberTable {
    members: Mutex<HashMap<String, MemberState>>,
}

/// One member's entry.
#[derive(Debug, Default)]
pub(super) struct MemberState {
    /// Shared with every [`SessionGuard`] of the member, so dropping a guard
    /// needs no lock.
    active: Arc<AtomicU64>,
    /// Avoided until then.
    down_until: Option<Instant>,
    /// The last failure reported, kept after recovery for `status`.
    last_failure: Option<String>,
}

impl MemberState {
    /// Why the member is down at `now`, or `None` when it is usable.
    pub(super) fn down_at(&self, now: Instant) -> Option<Down<'_>> {
        let until = self.down_until?;
        let left = until.checked_duration_since(now).filter(|d| !d.is_zero())?;
        Some(Down {
            reason: self.last_failure.as_deref().unwrap_or("failed"),
            left,
        })
    }

    /// Sessions running on the member.
    pub(super) fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
}

/// A member in back-off; displays as `<reason> (back-off Ns left)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Down<'a> {
    reason: &'a str,
    left: Duration,
}

impl fmt::Display for Down<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Round up: a member still down never shows "0s left".
        let secs = self.left.as_secs() + u64::from(self.left.subsec_nanos() > 0);
        write!(f, "{} (back-off {secs}s left)", self.reason)
    }
}

/// A member's current health as routing sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberHealth {
    /// Usable for routing.
    pub healthy: bool,
    /// Why not, or the last failure.
    pub reason: Option<String>,
}

/// One row of [`MemberTable::snapshot`], for `mxgate status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberStatus {
    /// Member name.
    pub name: String,
    /// Health now.
    pub health: MemberHealth,
    /// Sessions running on it now.
    pub active_sessions: u64,
}

/// Decrements the member's active-session count when dropped.
#[derive(Debug)]
pub struct SessionGuard {
    active: Arc<AtomicU64>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl MemberTable {
    /// An empty table.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Marks `member` failed (connect refused, 421, ...): avoided for `backoff`.
    ///
    /// A member already in a longer back-off stays in it; the reason is
    /// always the latest.
    pub fn mark_failed(&self, member: &str, reason: &str, backoff: Duration) {
        self.mark_failed_at(member, reason, backoff, Instant::now());
    }

    pub(super) fn mark_failed_at(
        &self,
        member: &str,
        reason: &str,
        backoff: Duration,
        now: Instant,
    ) {
        let until = now + backoff;
        self.update(member, |state| {
            state.down_until = Some(state.down_until.map_or(until, |u| u.max(until)));
            state.last_failure = Some(reason.to_owned());
        });
    }

    /// Marks `member` working again.
    pub fn mark_ok(&self, member: &str) {
        if let Some(state) = self.lock().get_mut(member) {
            state.down_until = None;
        }
    }

    /// Health of `member` now.
    pub fn health(&self, member: &str) -> MemberHealth {
        self.health_at(member, Instant::now())
    }

    pub(super) fn health_at(&self, member: &str, now: Instant) -> MemberHealth {
        self.lock().get(member).map_or(
            MemberHealth {
                healthy: true,
                reason: None,
            },
            |s| health_of(s, now),
        )
    }

    /// Counts a session on `member` until the guard is dropped.
    pub fn start_session(self: &Arc<Self>, member: &str) -> SessionGuard {
        let active = self.update(member, |state| Arc::clone(&state.active));
        active.fetch_add(1, Ordering::Relaxed);
        SessionGuard { active }
    }

    /// Active sessions on `member`.
    pub fn active_sessions(&self, member: &str) -> u64 {
        self.lock().get(member).map_or(0, MemberState::active)
    }

    /// Every member the table has seen (failed or with sessions), sorted by
    /// name. Members never seen are healthy with no sessions.
    pub fn snapshot(&self) -> Vec<MemberStatus> {
        self.snapshot_at(Instant::now())
    }

    pub(super) fn snapshot_at(&self, now: Instant) -> Vec<MemberStatus> {
        let members = self.lock();
        let mut rows: Vec<MemberStatus> = members
            .iter()
            .map(|(name, s)| MemberStatus {
                name: name.clone(),
                health: health_of(s, now),
                active_sessions: s.active(),
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows
    }

    /// Runs `f` over the states with the lock held once (one routing decision).
    pub(super) fn with_states<R>(&self, f: impl FnOnce(&HashMap<String, MemberState>) -> R) -> R {
        f(&self.lock())
    }

    /// Applies `f` to `member`'s entry, creating it when missing.
    fn update<R>(&self, member: &str, f: impl FnOnce(&mut MemberState) -> R) -> R {
        let mut members = self.lock();
        // Look up first so that the common case allocates no key.
        if let Some(state) = members.get_mut(member) {
            return f(state);
        }
        f(members.entry(member.to_owned()).or_default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, MemberState>> {
        // Every update leaves the map consistent, so a panic elsewhere while
        // the lock was held cannot have left half a change behind.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn health_of(state: &MemberState, now: Instant) -> MemberHealth {
    match state.down_at(now) {
        Some(down) => MemberHealth {
            healthy: false,
            reason: Some(down.to_string()),
        },
        None => MemberHealth {
            healthy: true,
            reason: state.last_failure.clone(),
        },
    }
}
