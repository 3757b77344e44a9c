//! Live member state shared by every session: health per service (SMTP and
//! GINA, see [`Service`]), active-session counts and the optional SMTP
//! extensions each member was last seen to offer.
//!
//! Sessions report failures ([`MemberTable::mark_failed`],
//! [`MemberTable::mark_service_failed`]) and successes
//! ([`MemberTable::mark_ok`]); the health checks ([`crate::health`]) register
//! the services they check ([`MemberTable::set_check`]) and record each
//! result ([`MemberTable::record_check`]); the router reads the table once per
//! decision. `health()`, `mark_failed()` and `mark_ok()` mean the SMTP service.
//! State is keyed by member name, so it survives policy reloads: a member that
//! keeps its name keeps its state. Entries are never removed (a handful of
//! bytes per name ever seen). Times are `tokio::time::Instant`, so a paused
//! tokio clock drives back-off in tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};

use super::health_state::{CheckState, LastCheck, Outcome, Transition};
pub(super) use super::service::Down;
use super::service::{Service, ServiceReport, ServiceState};
use crate::smtp::proto::Extensions;

/// Live state of every member: passive failures (back-off) and active sessions.
/// Shared by all sessions; survives reloads (members are matched by name).
#[derive(Debug, Default)]
pub struct MemberTable {
    members: Mutex<HashMap<String, MemberState>>,
    /// Bumped by every change of health (not of session counts): a routing
    /// result cached under one value holds until it changes or a back-off
    /// ends ([`MemberTable::generation`], [`MemberTable::next_backoff_end`]).
    generation: AtomicU64,
}

/// One member's entry.
#[derive(Debug, Default)]
pub(super) struct MemberState {
    /// Shared with every [`SessionGuard`] of the member, so dropping a guard
    /// needs no lock.
    active: Arc<AtomicU64>,
    /// Its MTA.
    smtp: ServiceState,
    /// Its web portal.
    gina: ServiceState,
    /// The optional extensions its last EHLO reply offered (health check
    /// or member connection); `None` until one was seen.
    extensions: Option<Extensions>,
}

impl MemberState {
    /// Why the member's `service` is down at `now`, or `None` when it is usable.
    pub(super) fn service_down_at(&self, service: Service, now: Instant) -> Option<Down<'_>> {
        self.service(service).down_at(now)
    }

    /// The optional extensions the member offers, as far as known.
    pub(super) fn extensions(&self) -> Option<Extensions> {
        self.extensions
    }

    /// Sessions running on the member.
    pub(super) fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    fn service(&self, service: Service) -> &ServiceState {
        match service {
            Service::Smtp => &self.smtp,
            Service::Gina => &self.gina,
        }
    }

    fn service_mut(&mut self, service: Service) -> &mut ServiceState {
        match service {
            Service::Smtp => &mut self.smtp,
            Service::Gina => &mut self.gina,
        }
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

    /// Marks `member`'s SMTP service failed (connect refused, 421, ...); see
    /// [`MemberTable::mark_service_failed`].
    pub fn mark_failed(&self, member: &str, reason: &str, backoff: Duration) {
        self.mark_service_failed(member, Service::Smtp, reason, backoff);
    }

    /// A session saw `member`'s `service` fail. Actively checked: suspect,
    /// down at once until `rise` checks pass (`backoff` unused). Not checked:
    /// avoided for `backoff` (a member already in a longer back-off stays in
    /// it). The reason is always the latest.
    pub fn mark_service_failed(
        &self,
        member: &str,
        service: Service,
        reason: &str,
        backoff: Duration,
    ) {
        self.mark_failed_at(member, service, reason, backoff, Instant::now());
    }

    pub(super) fn mark_failed_at(
        &self,
        member: &str,
        service: Service,
        reason: &str,
        backoff: Duration,
        now: Instant,
    ) {
        let (transition, checked) = self.update(member, |state| {
            let s = state.service_mut(service);
            let transition = s.mark_failed(reason, backoff, now);
            (transition, s.check_mut().is_some())
        });
        self.changed();
        if checked && transition == Transition::WentDown {
            warn!(member, service = %service, reason, "member suspect: out of routing until its health checks pass");
        }
    }

    /// Marks `member`'s SMTP service working again (ends a passive back-off).
    pub fn mark_ok(&self, member: &str) {
        self.mark_service_ok(member, Service::Smtp);
    }

    /// A session used `member`'s `service` successfully: ends a passive
    /// back-off. An actively checked service comes back through its checks only.
    pub fn mark_service_ok(&self, member: &str, service: Service) {
        let ended = self
            .lock()
            .get_mut(member)
            .is_some_and(|state| state.service_mut(service).mark_ok());
        if ended {
            self.changed();
        }
    }

    /// Health of `member`'s SMTP service now (what SMTP routing uses).
    pub fn health(&self, member: &str) -> MemberHealth {
        self.service_health(member, Service::Smtp)
    }

    /// Health of `member`'s `service` now. A member the table has never seen is healthy.
    pub fn service_health(&self, member: &str, service: Service) -> MemberHealth {
        self.health_at(member, service, Instant::now())
    }

    pub(super) fn health_at(&self, member: &str, service: Service, now: Instant) -> MemberHealth {
        self.lock().get(member).map_or(
            MemberHealth {
                healthy: true,
                reason: None,
            },
            |s| s.service(service).health(now),
        )
    }

    /// What `status` shows about `member`'s `service`: health, check kind,
    /// counts and the last check.
    pub fn service_report(&self, member: &str, service: Service) -> ServiceReport {
        let now = Instant::now();
        match self.lock().get(member) {
            Some(s) => s.service(service).report(now),
            None => ServiceState::default().report(now),
        }
    }

    /// Starts actively checking `member`'s `service` with `check` (a fresh
    /// [`CheckState`]), or stops with `None`. When a check of the same kind
    /// is already registered its state is kept (only the thresholds change)
    /// unless `reset` (e.g. the upstream address changed).
    pub fn set_check(
        &self,
        member: &str,
        service: Service,
        check: Option<CheckState>,
        reset: bool,
    ) {
        self.update(member, |state| {
            state.service_mut(service).set_check(check, reset);
        });
        self.changed();
    }

    /// Records one active check of `member`'s `service` that started at
    /// `started`. Ignored (returns `Unchanged`) when the service is not
    /// registered as checked (the check raced a reload).
    pub fn record_check(
        &self,
        member: &str,
        service: Service,
        outcome: Outcome,
        started: Instant,
        last: LastCheck,
    ) -> Transition {
        let mut members = self.lock();
        let transition = match members
            .get_mut(member)
            .and_then(|s| s.service_mut(service).check_mut())
        {
            Some(check) => check.record(outcome, started, last),
            None => Transition::Unchanged,
        };
        drop(members);
        self.changed();
        transition
    }

    /// Records the optional extensions `member`'s EHLO reply offered (a
    /// health check or a member connection saw it); new sessions offer
    /// their clients what every candidate offers.
    pub fn learn_extensions(&self, member: &str, offered: Extensions) {
        if self.extensions(member) == Some(offered) {
            return;
        }
        self.update(member, |state| state.extensions = Some(offered));
        info!(member = %member, extensions = %offered, "member extensions learned");
    }

    /// What `member`'s last EHLO reply offered, when one was seen.
    pub fn extensions(&self, member: &str) -> Option<Extensions> {
        self.lock().get(member).and_then(MemberState::extensions)
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
                health: s.smtp.health(now),
                active_sessions: s.active(),
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows
    }

    /// The health generation: it changes whenever a member's health may have
    /// changed other than by a back-off running out (see
    /// [`MemberTable::next_backoff_end`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// When the first passive back-off of `service` still running ends (its
    /// member becomes usable again without any event), if one is running.
    pub fn next_backoff_end(&self, service: Service) -> Option<Instant> {
        let now = Instant::now();
        self.lock()
            .values()
            .filter_map(|s| s.service(service).backoff_until())
            .filter(|&until| until > now)
            .min()
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
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
