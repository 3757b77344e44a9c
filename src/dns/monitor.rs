//! The periodic DNS check inside the daemon: every `[dns] interval` it checks
//! `[dns] domains`, keeps the latest report for `mxgate status`, and sets the
//! `mxgate_dns_*` metrics. It follows policy reloads (a changed `[dns]`
//! section runs a check at once and re-points the member-name resolver) and
//! stops with the daemon.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::check::check;
use super::report::{CheckReport, Status};
use super::upstream::UpstreamResolver;
use crate::config::{DnsPolicy, Policy};

/// How often the loop looks for a changed policy.
const POLICY_POLL: Duration = Duration::from_secs(1);

/// The latest periodic report, shared with the admin socket.
#[derive(Debug, Default)]
pub struct DnsMonitor {
    latest: Mutex<Option<CheckReport>>,
}

impl DnsMonitor {
    /// The last finished periodic check (`None` before the first, or without `[dns] domains`).
    pub fn latest(&self) -> Option<CheckReport> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }

    fn store(&self, report: Option<CheckReport>) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = report;
        }
    }

    /// Runs the periodic check until `stop`; `policy` gives the current policy.
    pub fn spawn(
        self: Arc<Self>,
        policy: impl Fn() -> Arc<Policy> + Send + Sync + 'static,
        stop: CancellationToken,
    ) {
        tokio::spawn(async move {
            let mut seen: Option<DnsPolicy> = None;
            let mut next = Instant::now();
            loop {
                let current = policy();
                if seen.as_ref() != Some(&current.dns) {
                    UpstreamResolver::global().configure(&current.dns);
                    if current.dns.domains.is_empty() {
                        self.store(None);
                    }
                    seen = Some(current.dns.clone());
                    next = Instant::now();
                }
                if !current.dns.domains.is_empty() && Instant::now() >= next {
                    let report = tokio::select! {
                        _ = stop.cancelled() => return,
                        report = check(&current, &[]) => report,
                    };
                    log(&report);
                    record_metrics(&report);
                    self.store(Some(report));
                    next = Instant::now() + current.dns.interval;
                }
                let poll = Instant::now() + POLICY_POLL;
                let wake = if current.dns.domains.is_empty() {
                    poll
                } else {
                    next.min(poll)
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(wake) => {}
                }
            }
        });
    }
}

fn log(report: &CheckReport) {
    if report.status == Status::Ok {
        info!(summary = %report.summary, "dns check");
    } else {
        warn!(summary = %report.summary, "dns check");
    }
}

/// Sets the `mxgate_dns_*` gauges from a periodic check.
fn record_metrics(report: &CheckReport) {
    for d in &report.domains {
        let addresses = d.mx.iter().map(|m| m.addresses.len()).sum();
        let answering = (d.mx.iter().flat_map(|m| &m.addresses))
            .filter(|a| a.smtp.answers)
            .count();
        crate::metrics::dns_domain(crate::metrics::DnsDomainSample {
            domain: &d.domain,
            status: d.status.exit_code(),
            records: if d.implicit_mx { 0 } else { d.mx.len() },
            addresses,
            answering,
            checked_at: report.checked_at,
        });
    }
}
