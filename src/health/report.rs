//! How one service's health looks in `mxgate status` (JSON and text).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::routing::ServiceReport;

/// One service (SMTP or GINA) of one member in `mxgate status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// Usable now.
    pub healthy: bool,
    /// Why not, or the last failure a session saw.
    pub reason: Option<String>,
    /// The active check: `smtp`, `tcp`, `http`, or `none` (not checked:
    /// only failures seen by sessions count, with back-off).
    pub check: String,
    /// Consecutive passing checks (towards `rise` while down).
    pub passes: u32,
    /// Consecutive failed checks (towards `fall` while up).
    pub failures: u32,
    /// The last check that ended, if any.
    pub last_check: Option<LastCheckStatus>,
}

/// The last check of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastCheckStatus {
    /// `pass` or `fail`.
    pub result: String,
    /// Why it failed.
    pub reason: Option<String>,
    /// When it ended, RFC 3339 UTC.
    pub at: String,
    /// Seconds since it ended, when `status` was collected.
    pub age_s: u64,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
}

impl ServiceHealth {
    /// The status view of `report`, with ages relative to `now`.
    pub fn from_report(report: ServiceReport, now: SystemTime) -> ServiceHealth {
        ServiceHealth {
            healthy: report.healthy,
            reason: report.reason,
            check: report.check.unwrap_or("none").to_owned(),
            passes: report.passes,
            failures: report.failures,
            last_check: report.last_check.map(|l| LastCheckStatus {
                result: if l.passed { "pass" } else { "fail" }.to_owned(),
                reason: l.reason,
                at: rfc3339(l.at),
                age_s: now.duration_since(l.at).unwrap_or(Duration::ZERO).as_secs(),
                took_ms: u64::try_from(l.took.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// One line for `status` text: `smtp  up    pass 2s ago (12 ms)`.
    pub fn summary(&self) -> String {
        let state = if self.healthy { "up" } else { "DOWN" };
        let last = match &self.last_check {
            None if self.check == "none" => "not checked".to_owned(),
            None => "no check yet".to_owned(),
            Some(l) => {
                let mut s = format!("{} {}s ago ({} ms)", l.result, l.age_s, l.took_ms);
                if let Some(reason) = &l.reason {
                    s.push_str(": ");
                    s.push_str(reason);
                }
                s
            }
        };
        format!("{:<5} {state:<5} {last}", self.check)
    }
}

/// `time` as RFC 3339 UTC with seconds, e.g. `2026-11-22T06:40:50Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    crate::time::rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (1_798_761_599, "2026-12-31T23:59:59Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
        ];
        for (secs, want) in cases {
            assert_eq!(at(secs), want, "{secs}");
        }
    }
}
