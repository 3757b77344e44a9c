//! Active health checks: one task per checked service of every member.
//!
//! Flow: [`Plan::new`] turns a configuration snapshot into one [`Job`] per
//! (member, service): the member's `smtp` upstream is checked per
//! `[health] smtp_check` ([`smtp_check`] or [`tcp_check`]), its `gina`
//! upstream per `gina_check` ([`http_check`] or [`tcp_check`]).
//! [`Supervisor::start`] registers every job in the [`MemberTable`]
//! ([`MemberTable::set_check`]) before returning, so the first session
//! already sees checked members, and spawns one task per job. Each task
//! checks at once, then every `interval` (a check that outlasts the interval
//! delays the next one; they never overlap), and records each result
//! ([`MemberTable::record_check`]), where the rise/fall machine
//! ([`CheckState`], owned by routing: [`crate::routing::health_state`])
//! decides up and down. [`Supervisor::update`] (on reload) stops the tasks of
//! jobs that went away or changed and starts the new ones; a member keeps its
//! state unless its upstream address or check kind changed. Everything stops
//! when the daemon's `CancellationToken` fires.
//!
//! Files: `probe` (the SMTP check dialogue, sans-IO), [`smtp_check`],
//! [`http_check`], [`tcp_check`] (the I/O), [`report`] (what `mxgate status`
//! shows).

pub mod http_check;
mod probe;
pub mod report;
pub mod smtp_check;
pub mod tcp_check;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_rustls::rustls::ClientConfig;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{
    Config, GinaCheck, HostPort, SmtpCheck, UpstreamPolicy, UpstreamTls, format_duration,
};
use crate::routing::health_state::{CheckState, LastCheck, Outcome, Thresholds, Transition};
use crate::routing::{MemberTable, Service};
use crate::smtp::proto::Extensions;
use http_check::HttpSpec;
use smtp_check::SmtpSpec;

/// What one job checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// The SMTP dialogue.
    Smtp(SmtpSpec),
    /// A TCP connect.
    Tcp {
        /// Where.
        addr: HostPort,
        /// `[upstream] connect_timeout`.
        connect_timeout: Duration,
    },
    /// `GET` on the GINA portal.
    Http(HttpSpec),
    /// A check that cannot run as configured (e.g. no TLS configuration):
    /// it always fails with `reason`.
    Unusable {
        /// The kind it would have been.
        kind: &'static str,
        /// Why it cannot run.
        reason: String,
    },
}

impl Check {
    /// The kind, as reasons and `status` name it: `smtp`, `tcp`, `http`.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Smtp(_) => "smtp",
            Check::Tcp { .. } => "tcp",
            Check::Http(_) => "http",
            Check::Unusable { kind, .. } => kind,
        }
    }

    /// The address checked, if any.
    fn addr(&self) -> Option<&HostPort> {
        match self {
            Check::Smtp(s) => Some(&s.addr),
            Check::Tcp { addr, .. } => Some(addr),
            Check::Http(h) => Some(&h.addr),
            Check::Unusable { .. } => None,
        }
    }

    /// Runs the check once, within `limit`.
    pub async fn run(&self, limit: Duration) -> Outcome {
        self.run_learning(limit).await.0
    }

    /// Runs the check once, within `limit`; with the optional SMTP
    /// extensions the member offered when an SMTP check passed.
    pub async fn run_learning(&self, limit: Duration) -> (Outcome, Option<Extensions>) {
        let result = match self {
            Check::Smtp(spec) => smtp_check::check(spec, limit).await.map(Some),
            Check::Tcp {
                addr,
                connect_timeout,
            } => tcp_check::check(addr, (*connect_timeout).min(limit))
                .await
                .map(|()| None),
            Check::Http(spec) => http_check::check(spec, limit).await.map(|()| None),
            Check::Unusable { reason, .. } => Err(reason.clone()),
        };
        match result {
            Ok(learned) => (Outcome::Pass, learned),
            Err(reason) => (Outcome::Fail(reason), None),
        }
    }
}

/// One checked service of one member, with its schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Member name.
    pub member: String,
    /// Which upstream.
    pub service: Service,
    /// How.
    pub check: Check,
    /// `[health] interval`.
    pub interval: Duration,
    /// `[health] timeout`.
    pub timeout: Duration,
    /// `[health] rise` / `fall`.
    pub thresholds: Thresholds,
}

impl Job {
    /// A fresh rise/fall state for this job.
    fn fresh_state(&self) -> CheckState {
        CheckState::new(self.check.kind(), self.thresholds)
    }
}

/// Every job of one configuration snapshot.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The jobs, in policy member order, SMTP before GINA.
    pub jobs: Vec<Job>,
}

impl Plan {
    /// The jobs for `config`; `upstream_tls` is the snapshot's member-side
    /// TLS configuration (used when `[health] starttls`).
    pub fn new(config: &Config, upstream_tls: Option<Arc<ClientConfig>>) -> Plan {
        let policy = &config.policy;
        let h = &policy.health;
        let up = &policy.upstream;
        let ehlo_name = config
            .smtp
            .first()
            .map_or_else(|| config.node.name.clone(), |l| l.hostname.clone());
        let thresholds = Thresholds {
            rise: h.rise,
            fall: h.fall,
        };
        let mut gina_tls: Option<Result<Arc<ClientConfig>, String>> = None;
        let mut jobs = Vec::new();
        for m in &policy.members {
            let job = |service, check| Job {
                member: m.name.clone(),
                service,
                check,
                interval: h.interval,
                timeout: h.timeout,
                thresholds,
            };
            if let Some(addr) = &m.smtp {
                let check = match h.smtp_check {
                    SmtpCheck::Smtp => Some(match (h.starttls, &upstream_tls) {
                        (true, None) => Check::Unusable {
                            kind: "smtp",
                            reason: "[health] starttls needs [upstream] tls other than \"none\""
                                .into(),
                        },
                        (starttls, tls) => Check::Smtp(SmtpSpec {
                            addr: addr.clone(),
                            proxy: up.proxy_protocol,
                            connect_timeout: up.connect_timeout,
                            ehlo_name: ehlo_name.clone(),
                            starttls: tls.clone().filter(|_| starttls),
                        }),
                    }),
                    SmtpCheck::Tcp => Some(Check::Tcp {
                        addr: addr.clone(),
                        connect_timeout: up.connect_timeout,
                    }),
                    SmtpCheck::None => None,
                };
                jobs.extend(check.map(|c| job(Service::Smtp, c)));
            }
            let Some((addr, https)) = m.gina.as_deref().and_then(http_check::parse_gina) else {
                continue;
            };
            let check = match h.gina_check {
                GinaCheck::Http if https => {
                    let tls = gina_tls.get_or_insert_with(|| https_config(up));
                    Some(match tls {
                        Ok(tls) => Check::Http(HttpSpec {
                            addr,
                            tls: Some(tls.clone()),
                            path: h.http_path.clone(),
                            connect_timeout: up.connect_timeout,
                        }),
                        Err(reason) => Check::Unusable {
                            kind: "http",
                            reason: reason.clone(),
                        },
                    })
                }
                GinaCheck::Http => Some(Check::Http(HttpSpec {
                    addr,
                    tls: None,
                    path: h.http_path.clone(),
                    connect_timeout: up.connect_timeout,
                })),
                GinaCheck::Tcp => Some(Check::Tcp {
                    addr,
                    connect_timeout: up.connect_timeout,
                }),
                GinaCheck::None => None,
            };
            jobs.extend(check.map(|c| job(Service::Gina, c)));
        }
        Plan { jobs }
    }
}

/// TLS for `https://` GINA checks: the `[upstream]` trust settings with
/// `opportunistic` semantics (verified when `tls_ca_file` is set), HTTP/1.1 by ALPN.
fn https_config(upstream: &UpstreamPolicy) -> Result<Arc<ClientConfig>, String> {
    let policy = UpstreamPolicy {
        tls: UpstreamTls::Opportunistic,
        ..upstream.clone()
    };
    match crate::tls::client_config(&policy) {
        Ok(Some(config)) => {
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        }
        Ok(None) => Err("no TLS configuration for https:// GINA checks".into()),
        Err(e) => Err(format!("TLS configuration for https:// GINA checks: {e}")),
    }
}

/// Runs the health-check tasks; [`Supervisor::update`] follows reloads.
#[derive(Debug)]
pub struct Supervisor {
    plans: watch::Sender<Arc<Plan>>,
}

/// A running job.
struct Running {
    job: Job,
    stop: CancellationToken,
}

impl Supervisor {
    /// Registers every job of `plan` in `table` and starts checking; all
    /// tasks end when `stop` is cancelled. Must run inside the tokio runtime.
    pub fn start(table: Arc<MemberTable>, plan: Plan, stop: CancellationToken) -> Supervisor {
        let mut running = HashMap::new();
        reconcile(&table, &mut running, &plan, &stop);
        let (plans, mut rx) = watch::channel(Arc::new(plan));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    changed = rx.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                }
                let plan = rx.borrow_and_update().clone();
                reconcile(&table, &mut running, &plan, &stop);
            }
            for r in running.values() {
                r.stop.cancel();
            }
        });
        Supervisor { plans }
    }

    /// Applies a new plan (after a reload).
    pub fn update(&self, plan: Plan) {
        self.plans.send_replace(Arc::new(plan));
    }
}

/// Makes the running tasks match `plan`.
fn reconcile(
    table: &Arc<MemberTable>,
    running: &mut HashMap<(String, Service), Running>,
    plan: &Plan,
    stop: &CancellationToken,
) {
    let wanted: HashMap<(String, Service), &Job> = plan
        .jobs
        .iter()
        .map(|j| ((j.member.clone(), j.service), j))
        .collect();
    // Stop what the plan no longer has.
    running.retain(|key, r| {
        if wanted.contains_key(key) {
            return true;
        }
        r.stop.cancel();
        table.set_check(&key.0, key.1, None, true);
        info!(member = %key.0, service = %key.1, "health checks stopped");
        false
    });
    for (key, job) in wanted {
        let reset = match running.get(&key) {
            Some(old) if old.job == *job => continue,
            Some(old) => {
                old.stop.cancel();
                // Keep the state unless the member now points elsewhere or is checked another way.
                old.job.check.kind() != job.check.kind() || old.job.check.addr() != job.check.addr()
            }
            None => true,
        };
        table.set_check(&job.member, job.service, Some(job.fresh_state()), reset);
        let child = stop.child_token();
        info!(member = %job.member, service = %job.service, check = %job.check.kind(), interval = %format_duration(&job.interval), "health checks started");
        let job = job.clone();
        let check = job.check.clone();
        let limit = job.timeout;
        let (learner, member) = (table.clone(), job.member.clone());
        tokio::spawn(schedule(
            job.clone(),
            table.clone(),
            child.clone(),
            move || {
                let (check, learner, member) = (check.clone(), learner.clone(), member.clone());
                async move {
                    let (outcome, learned) = check.run_learning(limit).await;
                    if let Some(extensions) = learned {
                        learner.learn_extensions(&member, extensions);
                    }
                    outcome
                }
            },
        ));
        running.insert(key, Running { job, stop: child });
    }
}

/// Checks `job` at once, then every interval, until `stop`; `check` runs one check.
async fn schedule<F, Fut>(job: Job, table: Arc<MemberTable>, stop: CancellationToken, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut tick = tokio::time::interval(job.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let outcome = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            outcome = check() => outcome,
        };
        let passed = outcome == Outcome::Pass;
        crate::metrics::health_check(&job.member, job.service.label(), passed);
        let last = LastCheck {
            passed,
            reason: None,
            at: SystemTime::now(),
            took: started.elapsed(),
        };
        let reason = match &outcome {
            Outcome::Pass => None,
            Outcome::Fail(r) => Some(r.clone()),
        };
        let transition = table.record_check(&job.member, job.service, outcome, started, last);
        let health = table.service_health(&job.member, job.service);
        let (member, service, kind) = (&job.member, job.service, job.check.kind());
        match transition {
            Transition::WentDown => {
                warn!(member = %member, service = %service, check = %kind, reason = health.reason.as_deref().unwrap_or(""), "member down: health checks failed")
            }
            Transition::WentUp => {
                info!(member = %member, service = %service, check = %kind, "member up: health checks pass")
            }
            Transition::Unchanged => match reason {
                Some(reason) => {
                    debug!(member = %member, service = %service, check = %kind, reason = %reason, "health check failed")
                }
                None => {
                    debug!(member = %member, service = %service, check = %kind, "health check passed")
                }
            },
        }
    }
}
