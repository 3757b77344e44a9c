//! The rise/fall state machine of one actively checked service of one member:
//! this module owns the member health state that routing reads.
//!
//! Pure: no clock, no I/O. The health checks ([`crate::health`]) feed it
//! check outcomes ([`CheckState::record`]), sessions feed it passive failures
//! ([`CheckState::suspect`]); the routing table reads [`CheckState::is_up`] and
//! renders [`CheckState::down_reason`]. It lives in `routing`, below `health`,
//! so that `health` reports into it and the two do not import each other.
//!
//! Rules (see `docs/health.md`):
//! - A service starts **up** with no history, so a fresh daemon serves at once;
//!   the first check runs immediately.
//! - Up: `fall` consecutive failed checks take it down.
//! - Down: `rise` consecutive passing checks bring it up.
//! - A passive failure (a session could not connect, got `421`, or the member
//!   went silent) takes it down at once ("suspect") and clears the passing
//!   count; only `rise` passing checks that *started after* the failure bring
//!   it back. A check already in flight when the failure happened does not count.

use std::fmt;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// `rise` and `fall` of `[health]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive passing checks that bring a down service up.
    pub rise: u32,
    /// Consecutive failing checks that take an up service down.
    pub fall: u32,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The service answered as required.
    Pass,
    /// It did not; why.
    Fail(String),
}

/// Whether a step changed the service's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Still up, or still down.
    Unchanged,
    /// It was up and is now down.
    WentDown,
    /// It was down and is now up.
    WentUp,
}

/// The last check's result, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCheck {
    /// It passed.
    pub passed: bool,
    /// Why it failed (`None` when it passed).
    pub reason: Option<String>,
    /// When it ended (wall clock).
    pub at: SystemTime,
    /// How long it took.
    pub took: Duration,
}

/// Why a service is down.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    /// `fall` checks failed; the latest failure.
    Checks(String),
    /// A session saw it fail; what it saw.
    Suspect(String),
}

/// One service's active-check state.
#[derive(Debug, Clone)]
pub struct CheckState {
    /// `smtp`, `tcp` or `http`: names the check in reasons.
    kind: &'static str,
    thresholds: Thresholds,
    up: bool,
    /// Consecutive passing checks (that count).
    passes: u32,
    /// Consecutive failing checks.
    failures: u32,
    /// Why it is down; `None` while up.
    cause: Option<Cause>,
    /// When the last passive failure happened: checks started before it do not count.
    suspect_since: Option<Instant>,
    last: Option<LastCheck>,
}

impl CheckState {
    /// A fresh service: up, no history.
    pub fn new(kind: &'static str, thresholds: Thresholds) -> Self {
        CheckState {
            kind,
            thresholds,
            up: true,
            passes: 0,
            failures: 0,
            cause: None,
            suspect_since: None,
            last: None,
        }
    }

    /// The check kind (`smtp`, `tcp`, `http`).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The thresholds in force.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// Takes new thresholds (a reload); the state and counts stay.
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.thresholds = thresholds;
    }

    /// Usable for routing.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Consecutive passing checks that count towards `rise`.
    pub fn passes(&self) -> u32 {
        self.passes
    }

    /// Consecutive failed checks.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The last check, if one has ended.
    pub fn last(&self) -> Option<&LastCheck> {
        self.last.as_ref()
    }

    /// A passive failure: down at once, passing count cleared.
    pub fn suspect(&mut self, reason: &str, now: Instant) -> Transition {
        let was_up = self.up;
        self.up = false;
        self.passes = 0;
        self.cause = Some(Cause::Suspect(reason.to_owned()));
        self.suspect_since = Some(now);
        if was_up {
            Transition::WentDown
        } else {
            Transition::Unchanged
        }
    }

    /// Records a check that started at `started` and ended with `outcome`.
    /// `last` is what `status` shows for it (its `passed`/`reason` are set here).
    pub fn record(
        &mut self,
        outcome: Outcome,
        started: Instant,
        mut last: LastCheck,
    ) -> Transition {
        last.passed = outcome == Outcome::Pass;
        last.reason = match &outcome {
            Outcome::Pass => None,
            Outcome::Fail(reason) => Some(reason.clone()),
        };
        self.last = Some(last);
        match outcome {
            Outcome::Pass => {
                self.failures = 0;
                if self.suspect_since.is_some_and(|since| started < since) {
                    // It began before the failure a session saw: no evidence.
                    return Transition::Unchanged;
                }
                self.passes = self.passes.saturating_add(1);
                if !self.up && self.passes >= self.thresholds.rise {
                    self.up = true;
                    self.cause = None;
                    self.suspect_since = None;
                    return Transition::WentUp;
                }
                Transition::Unchanged
            }
            Outcome::Fail(reason) => {
                self.passes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.up {
                    if self.failures >= self.thresholds.fall {
                        self.up = false;
                        self.cause = Some(Cause::Checks(reason));
                        return Transition::WentDown;
                    }
                } else if matches!(self.cause, Some(Cause::Checks(_))) {
                    self.cause = Some(Cause::Checks(reason));
                }
                Transition::Unchanged
            }
        }
    }

    /// Why the service is down (`None` while up), e.g.
    /// `smtp check failed: connect to 10.0.0.1:25 failed: ... (3 of 3 checks)`.
    pub fn down_reason(&self) -> Option<DownReason<'_>> {
        if self.up {
            None
        } else {
            Some(DownReason(self))
        }
    }
}

/// Displays why a checked service is down.
#[derive(Debug, Clone, Copy)]
pub struct DownReason<'a>(&'a CheckState);

impl fmt::Display for DownReason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let Thresholds { rise, fall } = s.thresholds;
        match &s.cause {
            Some(Cause::Checks(reason)) => {
                write!(f, "{} check failed: {reason} ", s.kind)?;
                if s.failures <= fall && s.failures > 0 {
                    write!(f, "({} of {fall} checks)", s.failures)?;
                } else if s.failures > fall {
                    write!(f, "({} checks in a row)", s.failures)?;
                } else {
                    f.write_str("(now passing)")?;
                }
            }
            Some(Cause::Suspect(reason)) => {
                write!(f, "suspect: {reason}")?;
                if let Some(LastCheck {
                    passed: false,
                    reason: Some(check),
                    ..
                }) = &s.last
                    && s.failures > 0
                {
                    write!(f, "; {} check failed: {check}", s.kind)?;
                }
            }
            None => f.write_str("down")?,
        }
        write!(f, "; {} of {rise} passing checks to come back", s.passes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { rise: 2, fall: 3 };

    fn last() -> LastCheck {
        LastCheck {
            passed: false,
            reason: None,
            at: SystemTime::UNIX_EPOCH,
            took: Duration::ZERO,
        }
    }

    /// One step of a table-driven run.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Pass,
        Fail,
        /// A passive failure.
        Suspect,
        /// A passing check that started before the last passive failure.
        StalePass,
    }

    /// Runs `steps` from a fresh state; returns (up after each step, transitions).
    fn run(steps: &[Step]) -> (Vec<bool>, Vec<Transition>) {
        let base = Instant::now();
        let mut s = CheckState::new("smtp", T);
        let mut ups = Vec::new();
        let mut transitions = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let now = base + Duration::from_secs(10 * (i as u64 + 1));
            let t = match step {
                Step::Pass => s.record(Outcome::Pass, now, last()),
                Step::Fail => s.record(Outcome::Fail("refused".into()), now, last()),
                Step::Suspect => s.suspect("421 busy", now),
                Step::StalePass => s.record(Outcome::Pass, now - Duration::from_secs(15), last()),
            };
            ups.push(s.is_up());
            transitions.push(t);
        }
        (ups, transitions)
    }

    #[test]
    fn rise_and_fall_table() {
        use Step::*;
        let (y, n) = (true, false);
        #[rustfmt::skip]
        let cases: &[(&str, &[Step], &[bool])] = &[
            ("starts up and stays up", &[Pass, Pass], &[y, y]),
            ("fall - 1 failures keep it up", &[Fail, Fail], &[y, y]),
            ("fall failures take it down", &[Fail, Fail, Fail], &[y, y, n]),
            ("a pass resets the failure count", &[Fail, Fail, Pass, Fail, Fail], &[y, y, y, y, y]),
            ("rise passes bring it back", &[Fail, Fail, Fail, Pass, Pass], &[y, y, n, n, y]),
            ("a failure resets the pass count", &[Fail, Fail, Fail, Pass, Fail, Pass, Pass], &[y, y, n, n, n, n, y]),
            ("suspect is down at once", &[Suspect], &[n]),
            ("suspect needs rise passes", &[Suspect, Pass, Pass], &[n, n, y]),
            ("suspect clears passes already made", &[Fail, Fail, Fail, Pass, Suspect, Pass, Pass], &[y, y, n, n, n, n, y]),
            ("a check started before the failure does not count", &[Suspect, StalePass, Pass], &[n, n, n]),
            ("...and a later one does", &[Suspect, StalePass, Pass, Pass], &[n, n, n, y]),
            ("failures while suspect keep it down", &[Suspect, Fail, Fail, Fail, Fail, Pass, Pass], &[n, n, n, n, n, n, y]),
        ];
        for (name, steps, want) in cases {
            let (ups, _) = run(steps);
            assert_eq!(&ups, want, "{name}");
        }
    }

    #[test]
    fn transitions_are_reported_once() {
        use Step::*;
        let (_, t) = run(&[Fail, Fail, Fail, Fail, Pass, Pass, Pass, Suspect, Suspect]);
        use Transition::*;
        assert_eq!(
            t,
            [
                Unchanged, Unchanged, WentDown, Unchanged, Unchanged, WentUp, Unchanged, WentDown,
                Unchanged
            ]
        );
    }

    #[test]
    fn reasons() {
        let now = Instant::now();
        let mut s = CheckState::new("smtp", T);
        assert!(s.down_reason().is_none());
        for _ in 0..3 {
            s.record(Outcome::Fail("greeting: 421 busy".into()), now, last());
        }
        assert_eq!(
            s.down_reason().map(|r| r.to_string()).as_deref(),
            Some(
                "smtp check failed: greeting: 421 busy (3 of 3 checks); 0 of 2 passing checks to come back"
            )
        );
        s.record(Outcome::Fail("no greeting within 1s".into()), now, last());
        assert_eq!(
            s.down_reason().map(|r| r.to_string()).as_deref(),
            Some(
                "smtp check failed: no greeting within 1s (4 checks in a row); 0 of 2 passing checks to come back"
            )
        );
        s.record(Outcome::Pass, now, last());
        assert_eq!(
            s.down_reason().map(|r| r.to_string()).as_deref(),
            Some(
                "smtp check failed: no greeting within 1s (now passing); 1 of 2 passing checks to come back"
            )
        );
        let mut s = CheckState::new("http", T);
        s.suspect("connect refused", now);
        assert_eq!(
            s.down_reason().map(|r| r.to_string()).as_deref(),
            Some("suspect: connect refused; 0 of 2 passing checks to come back")
        );
        s.record(Outcome::Fail("status 503".into()), now, last());
        assert_eq!(
            s.down_reason().map(|r| r.to_string()).as_deref(),
            Some(
                "suspect: connect refused; http check failed: status 503; 0 of 2 passing checks to come back"
            )
        );
        let l = s.last().cloned();
        assert_eq!(
            l.map(|l| (l.passed, l.reason)),
            Some((false, Some("status 503".to_owned())))
        );
    }
}
