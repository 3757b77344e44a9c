//! One service of one member (its SMTP upstream or its GINA upstream): how
//! usable it is, from passive failures and, when it is actively checked, from
//! the health checks.
//!
//! Two regimes, one per service:
//! - **Actively checked** (`[health] smtp_check` / `gina_check` not `none`):
//!   the [`CheckState`] rise/fall machine decides; a passive failure makes the
//!   service suspect (down at once) until `rise` checks pass. `backoff` is not used.
//! - **Not checked**: a passive failure puts the service in back-off for
//!   `backoff` (`[upstream] backoff` for SMTP); a success ends it early.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::health_state::{CheckState, DownReason, LastCheck, Transition};
use super::table::MemberHealth;

/// Which of a member's upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// Its MTA (`smtp`): what SMTP routing uses.
    Smtp,
    /// Its web portal (`gina`): what the GINA proxy uses.
    Gina,
}

impl Service {
    /// `smtp` or `gina` (metric labels, logs).
    pub fn label(self) -> &'static str {
        match self {
            Service::Smtp => "smtp",
            Service::Gina => "gina",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One service's state in the member table.
#[derive(Debug, Default)]
pub(super) struct ServiceState {
    /// Passive back-off (services not actively checked): avoided until then.
    down_until: Option<Instant>,
    /// The last passive failure reported, kept after recovery for `status`.
    last_failure: Option<String>,
    /// Active-check state; `None` when the service is not checked.
    check: Option<CheckState>,
}

impl ServiceState {
    /// Why the service is down at `now`, or `None` when it is usable.
    pub(super) fn down_at(&self, now: Instant) -> Option<Down<'_>> {
        if let Some(check) = &self.check {
            return check.down_reason().map(Down::Check);
        }
        let until = self.down_until?;
        let left = until.checked_duration_since(now).filter(|d| !d.is_zero())?;
        Some(Down::Backoff {
            reason: self.last_failure.as_deref().unwrap_or("failed"),
            left,
        })
    }

    /// The end of the passive back-off, when not actively checked.
    pub(super) fn backoff_until(&self) -> Option<Instant> {
        self.down_until.filter(|_| self.check.is_none())
    }

    /// A passive failure (see the module doc for the two regimes).
    pub(super) fn mark_failed(
        &mut self,
        reason: &str,
        backoff: Duration,
        now: Instant,
    ) -> Transition {
        self.last_failure = Some(reason.to_owned());
        match &mut self.check {
            Some(check) => check.suspect(reason, now),
            None => {
                let was_up = self.down_until.is_none_or(|u| u <= now);
                let until = now + backoff;
                self.down_until = Some(self.down_until.map_or(until, |u| u.max(until)));
                if was_up && !backoff.is_zero() {
                    Transition::WentDown
                } else {
                    Transition::Unchanged
                }
            }
        }
    }

    /// A session used the service: ends a passive back-off. Actively checked
    /// services come back through their checks only.
    /// Returns whether a back-off was running (health may have changed).
    pub(super) fn mark_ok(&mut self) -> bool {
        self.down_until.take().is_some()
    }

    /// Starts (or, with `None`, stops) active checking. A running check
    /// state of the same kind is kept unless `reset`.
    pub(super) fn set_check(&mut self, check: Option<CheckState>, reset: bool) {
        match (check, &mut self.check) {
            (Some(new), Some(old)) if !reset && old.kind() == new.kind() => {
                old.set_thresholds(new.thresholds());
            }
            (new, slot) => *slot = new,
        }
    }

    /// The active-check state, when checked.
    pub(super) fn check_mut(&mut self) -> Option<&mut CheckState> {
        self.check.as_mut()
    }

    /// Health for routing and `status`.
    pub(super) fn health(&self, now: Instant) -> MemberHealth {
        match self.down_at(now) {
            Some(down) => MemberHealth {
                healthy: false,
                reason: Some(down.to_string()),
            },
            None => MemberHealth {
                healthy: true,
                reason: self.last_failure.clone(),
            },
        }
    }

    /// Everything `status` shows about the service.
    pub(super) fn report(&self, now: Instant) -> ServiceReport {
        let health = self.health(now);
        ServiceReport {
            healthy: health.healthy,
            reason: health.reason,
            check: self.check.as_ref().map(CheckState::kind),
            passes: self.check.as_ref().map_or(0, CheckState::passes),
            failures: self.check.as_ref().map_or(0, CheckState::failures),
            last_check: self.check.as_ref().and_then(|c| c.last().cloned()),
        }
    }
}

/// A service that is down; displays as the reason `route explain` shows
/// after `down: `.
#[derive(Debug, Clone, Copy)]
pub(super) enum Down<'a> {
    /// Passive back-off: `<reason> (back-off Ns left)`.
    Backoff {
        /// The failure.
        reason: &'a str,
        /// Time left.
        left: Duration,
    },
    /// The active checks say so, e.g. `smtp check failed: ... (3 of 3 checks)`.
    Check(DownReason<'a>),
}

impl fmt::Display for Down<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Down::Backoff { reason, left } => {
                // Round up: a member still down never shows "0s left".
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                write!(f, "{reason} (back-off {secs}s left)")
            }
            Down::Check(reason) => reason.fmt(f),
        }
    }
}

/// One service of one member as `mxgate status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceReport {
    /// Usable now.
    pub healthy: bool,
    /// Why not, or the last passive failure.
    pub reason: Option<String>,
    /// The active check (`smtp`, `tcp`, `http`); `None`: not checked.
    pub check: Option<&'static str>,
    /// Consecutive passing checks that count towards `rise`.
    pub passes: u32,
    /// Consecutive failing checks.
    pub failures: u32,
    /// The last check that ended.
    pub last_check: Option<LastCheck>,
}
