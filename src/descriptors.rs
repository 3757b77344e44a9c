//! The descriptor budget: how many client connections this process can
//! hold while the admin socket, the control plane, health checks and its
//! own files always keep descriptors.
//!
//! At start [`raise_limit`] lifts the soft `RLIMIT_NOFILE` to the hard one
//! (systemd's `LimitNOFILE`, the shell's `ulimit -Hn`). [`Budget::plan`]
//! then reserves descriptors for everything that is not a client
//! connection and divides the rest by what one client connection costs (its
//! own socket and the member's). The resulting cap is shared by every SMTP
//! session and GINA connection through one [`SessionGate`]: past it a new
//! SMTP client gets `421 4.7.0` at once and a GINA connection is closed,
//! never a stalled accept, and `accept(2)` never runs out under the other
//! parts of the daemon.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::accept::LogBudget;
use crate::config::Config;

/// Descriptors one client connection costs: its socket and the member's.
pub const PER_SESSION: u64 = 2;
/// Control-plane connections served at once, all peers together.
pub const CONTROL_PLANE_CONNECTIONS: usize = 128;
/// Control-plane connections served at once from one peer address.
pub const CONTROL_PLANE_PER_PEER: usize = 16;
/// Admin-socket connections served at once.
pub const ADMIN_CONNECTIONS: usize = 16;
/// Metrics-endpoint connections served at once.
pub const METRICS_CONNECTIONS: usize = 8;
/// Files, the database, DNS sockets, log output and whatever a library opens.
const BASE_RESERVE: u64 = 64;
/// Per member: health checks (SMTP and GINA), control-plane calls, LFT uploads.
const PER_MEMBER: u64 = 6;
/// Per worker runtime: its copy of the listening socket, epoll and eventfd.
const PER_WORKER: u64 = 3;

/// The process's descriptor limit after [`raise_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// The soft limit in force now.
    pub soft: u64,
    /// The soft limit before it was raised (equal to `soft` when unchanged).
    pub was: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft descriptor limit to the hard one and returns both. A
/// failure leaves the limit as it was (and says so in `was == soft`).
pub fn raise_limit() -> Limit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    // An unlimited value (`None`) is taken as the largest the budget needs.
    let big = u64::from(u32::MAX);
    let soft = current.current.unwrap_or(big);
    let hard = current.maximum.unwrap_or(big);
    if soft >= hard {
        return Limit {
            soft,
            was: soft,
            hard,
        };
    }
    let raised = Rlimit {
        current: current.maximum,
        maximum: current.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => Limit {
            soft: hard,
            was: soft,
            hard,
        },
        Err(_) => Limit {
            soft,
            was: soft,
            hard,
        },
    }
}

/// The hard descriptor limit, without changing anything (`check-config`).
pub fn hard_limit() -> u64 {
    let current = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    current.maximum.unwrap_or(u64::from(u32::MAX))
}

/// Where the descriptors go (`mxgate status`, the `descriptors` object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// The soft limit the budget divides.
    pub limit: u64,
    /// Reserved for listeners and their worker runtimes.
    pub listeners: u64,
    /// Reserved for the control plane (its listener, inbound and outbound connections).
    pub control_plane: u64,
    /// Reserved for the admin socket and metrics endpoint.
    pub admin: u64,
    /// Reserved for member health checks and uploads.
    pub members: u64,
    /// Reserved for files, the database and libraries.
    pub base: u64,
    /// Client connections (SMTP sessions and GINA connections together) the rest allows.
    pub sessions: usize,
    /// What the listeners' `max_sessions` add up to.
    pub configured_sessions: usize,
}

impl Budget {
    /// The budget of `config` under `limit` with `workers` threads per listener.
    pub fn plan(limit: u64, config: &Config, workers: usize) -> Budget {
        let listeners = config.smtp.len() + config.http.len();
        let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let listeners = as_u64(listeners) * as_u64(workers.max(1)) * PER_WORKER;
        let members = as_u64(config.policy.members.len().max(4)) * PER_MEMBER;
        let control_plane = if config.cluster.is_some() {
            1 + as_u64(CONTROL_PLANE_CONNECTIONS)
        } else {
            0
        };
        let admin = 2 + as_u64(ADMIN_CONNECTIONS) + as_u64(METRICS_CONNECTIONS);
        let reserved = listeners + members + control_plane + admin + BASE_RESERVE;
        let sessions = limit.saturating_sub(reserved) / PER_SESSION;
        Budget {
            limit,
            listeners,
            control_plane,
            admin,
            members,
            base: BASE_RESERVE,
            sessions: usize::try_from(sessions).unwrap_or(usize::MAX),
            configured_sessions: config.smtp.iter().map(|l| l.max_sessions).sum(),
        }
    }

    /// Everything that is not a client connection.
    pub fn reserved(&self) -> u64 {
        self.listeners + self.control_plane + self.admin + self.members + self.base
    }

    /// The limit that would let every listener reach its `max_sessions`.
    pub fn limit_needed(&self) -> u64 {
        let configured = u64::try_from(self.configured_sessions).unwrap_or(u64::MAX);
        self.reserved()
            .saturating_add(configured.saturating_mul(PER_SESSION))
    }

    /// A warning when the listeners' `max_sessions` exceed the budget.
    pub fn warning(&self) -> Option<String> {
        (self.configured_sessions > self.sessions).then(|| {
            format!(
                "[[smtp]] max_sessions add up to {} but the descriptor limit {} allows {} client connections; past them clients get 421 4.7.0. Raise the limit to {} (systemd LimitNOFILE=, ulimit -n) or lower max_sessions",
                self.configured_sessions,
                self.limit,
                self.sessions,
                self.limit_needed()
            )
        })
    }
}

/// The shared cap on client connections (SMTP sessions and GINA connections).
#[derive(Debug)]
pub struct SessionGate {
    cap: usize,
    open: AtomicUsize,
    /// Refusals are logged once a second.
    refusals: Mutex<LogBudget>,
}

impl Default for SessionGate {
    /// A gate that never closes (tests, embedded use).
    fn default() -> SessionGate {
        SessionGate {
            cap: usize::MAX,
            open: AtomicUsize::new(0),
            refusals: Mutex::new(LogBudget::new(Duration::from_secs(1))),
        }
    }
}

impl SessionGate {
    /// A gate letting `cap` connections in at once.
    pub fn new(cap: usize) -> Arc<SessionGate> {
        Arc::new(SessionGate {
            cap,
            ..SessionGate::default()
        })
    }

    /// Records a refusal at `now`; returns how many refusals went unlogged
    /// before it when this one should be logged (at most one line per second).
    pub fn refused(&self, now: Instant) -> Option<u64> {
        (self.refusals.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .due(now)
    }

    /// Takes a place, or `None` when all are taken.
    pub fn enter(self: &Arc<Self>) -> Option<GatePass> {
        let taken = self.open.fetch_add(1, Ordering::AcqRel);
        if taken >= self.cap {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(GatePass(self.clone()))
    }

    /// Connections inside now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }
}

/// A place in the [`SessionGate`], given back when dropped.
#[derive(Debug)]
pub struct GatePass(Arc<SessionGate>);

impl Drop for GatePass {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_lets_cap_in_and_gives_places_back() {
        let gate = SessionGate::new(2);
        let a = gate.enter();
        let b = gate.enter();
        assert!(a.is_some() && b.is_some());
        assert!(gate.enter().is_none());
        assert_eq!(gate.open(), 2);
        drop(a);
        assert!(gate.enter().is_some());
        drop(b);
        assert_eq!(gate.open(), 0);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = hard_limit();
        let limit = raise_limit();
        assert!(limit.soft >= limit.was);
        assert_eq!(limit.hard, before);
        assert_eq!(raise_limit().soft, limit.soft);
    }
}
