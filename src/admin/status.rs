//! What `mxgate status` and `mxgate route explain` report.
//!
//! The text form of `status` escapes every value ([`crate::text::escape`]):
//! names, upstreams, reasons and DNS summaries can quote what a peer sent.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::daemon::Gateway;
use crate::health::report::ServiceHealth;
use crate::routing::{Route, Service};
use crate::smtp::proto::Extensions;

/// `mxgate status --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Node name.
    pub node: String,
    /// mxgate version.
    pub version: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// The daemon's process id (it changes with `mxgate upgrade`).
    #[serde(default)]
    pub pid: u32,
    /// When this process started, Unix time in seconds.
    #[serde(default)]
    pub started_at: u64,
    /// `standalone`, or the node's cluster role: `master`, `backend`, `frontend`.
    pub mode: String,
    /// The cluster as this node sees it (`null` when standalone).
    #[serde(default)]
    pub cluster: Option<crate::cluster::status::Summary>,
    /// Listeners: SMTP first, then GINA HTTP (`kind`).
    pub listeners: Vec<ListenerStatus>,
    /// Members with health.
    pub members: Vec<MemberStatus>,
    /// The latest periodic DNS check (`null` before the first or without `[dns] domains`).
    #[serde(default)]
    pub dns: Option<DnsStatus>,
    /// The descriptor budget (`null` from a daemon that predates it).
    #[serde(default)]
    pub descriptors: Option<DescriptorStatus>,
}

/// The descriptor section of `status`: the limit, what is reserved, and
/// the client connections the rest allows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DescriptorStatus {
    /// The soft limit in force, the limit before mxgate raised it, the hard limit.
    pub limit: crate::descriptors::Limit,
    /// Where the descriptors go.
    pub budget: crate::descriptors::Budget,
    /// Client connections (SMTP sessions and GINA connections) open now.
    pub open: usize,
}

/// The DNS section of `status`: the latest periodic check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsStatus {
    /// Worst status over the domains.
    pub status: crate::dns::Status,
    /// The check's summary line.
    pub summary: String,
    /// When it finished (Unix seconds).
    pub checked_at: u64,
    /// Seconds between checks (`[dns] interval`).
    pub interval_s: u64,
    /// Per domain.
    pub domains: Vec<DnsDomainStatus>,
}

/// One domain in the DNS section of `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsDomainStatus {
    /// The domain.
    pub domain: String,
    /// Its status.
    pub status: crate::dns::Status,
    /// `OK` or its worst problem.
    pub summary: String,
    /// MX records (0 for an implicit MX).
    pub mx_records: usize,
    /// MX addresses that greeted with 220.
    pub mx_answering: usize,
}

impl DnsStatus {
    fn of(report: &crate::dns::CheckReport, interval: std::time::Duration) -> DnsStatus {
        DnsStatus {
            status: report.status,
            summary: report.summary.clone(),
            checked_at: report.checked_at,
            interval_s: interval.as_secs(),
            domains: report
                .domains
                .iter()
                .map(|d| DnsDomainStatus {
                    domain: d.domain.clone(),
                    status: d.status,
                    summary: d.summary.clone(),
                    mx_records: if d.implicit_mx { 0 } else { d.mx.len() },
                    mx_answering: (d.mx.iter().flat_map(|m| &m.addresses))
                        .filter(|a| a.smtp.answers)
                        .count(),
                })
                .collect(),
        }
    }
}

/// One listener in `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// Name.
    pub name: String,
    /// Bound address.
    pub listen: String,
    /// Sessions open now.
    pub active_sessions: u64,
    /// Sessions since start.
    pub sessions_total: u64,
    /// `smtp`, or `http` for a GINA listener (sessions are its connections).
    #[serde(default = "smtp_kind")]
    pub kind: String,
    /// The optional extensions an SMTP listener's EHLO offers a public
    /// client now (SMTPUTF8, CHUNKING, DSN: those every candidate offers).
    #[serde(default)]
    pub advertises: Option<Vec<String>>,
}

fn smtp_kind() -> String {
    "smtp".to_owned()
}

/// One member in `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Name.
    pub name: String,
    /// SMTP upstream.
    pub smtp: Option<String>,
    /// Weight.
    pub weight: u32,
    /// Takes public sessions.
    pub ingress: bool,
    /// Usable for routing now.
    pub healthy: bool,
    /// Why not, or the last failure.
    pub reason: Option<String>,
    /// Sessions relayed to it now.
    pub active_sessions: u64,
    /// GINA upstream.
    #[serde(default)]
    pub gina: Option<String>,
    /// Health of its SMTP upstream (what SMTP routing uses), with the last check.
    #[serde(default)]
    pub smtp_health: Option<ServiceHealth>,
    /// Health of its GINA upstream (what the GINA proxy uses); `None` without one.
    #[serde(default)]
    pub gina_health: Option<ServiceHealth>,
    /// The optional extensions its last EHLO offered (SMTPUTF8, CHUNKING,
    /// DSN); `None` until a health check or a connection saw one.
    #[serde(default)]
    pub extensions: Option<Vec<String>>,
}

/// Collects the status of the running daemon.
pub fn collect(gateway: &Gateway) -> Status {
    let snapshot = gateway.snapshot();
    let config = &snapshot.config;
    let now = std::time::SystemTime::now();
    let public = snapshot.router.public_extensions(&gateway.members);
    let words = |e: Extensions| e.keywords().map(str::to_owned).collect::<Vec<_>>();
    let listeners = config
        .smtp
        .iter()
        .map(|l| (&l.name, l.listen, "smtp"))
        .chain(config.http.iter().map(|l| (&l.name, l.listen, "http")))
        .map(|(name, listen, kind)| {
            let (active, total) = gateway.active_sessions(name);
            ListenerStatus {
                name: name.clone(),
                listen: gateway.bound_addr(name).unwrap_or(listen).to_string(),
                active_sessions: active,
                sessions_total: total,
                kind: kind.to_owned(),
                advertises: (kind == "smtp").then(|| words(public)),
            }
        })
        .collect();
    let members = config
        .policy
        .members
        .iter()
        .map(|m| {
            let health = gateway.members.health(&m.name);
            let service = |service| {
                let report = gateway.members.service_report(&m.name, service);
                ServiceHealth::from_report(report, now)
            };
            MemberStatus {
                name: m.name.clone(),
                smtp: m.smtp.as_ref().map(ToString::to_string),
                weight: m.weight,
                ingress: m.ingress,
                healthy: health.healthy,
                reason: health.reason,
                active_sessions: gateway.members.active_sessions(&m.name),
                gina: m.gina.clone(),
                smtp_health: m.smtp.as_ref().map(|_| service(Service::Smtp)),
                gina_health: m.gina.as_ref().map(|_| service(Service::Gina)),
                extensions: gateway.members.extensions(&m.name).map(words),
            }
        })
        .collect();
    let cluster = gateway
        .cluster
        .get()
        .and_then(|node| crate::cluster::status::summary(node));
    Status {
        node: config.node.name.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_s: gateway.started.elapsed().as_secs(),
        pid: std::process::id(),
        started_at: gateway.started_at,
        mode: cluster
            .as_ref()
            .map_or_else(|| "standalone".to_owned(), |c| c.role.clone()),
        cluster,
        listeners,
        members,
        dns: (gateway.dns.latest()).map(|r| DnsStatus::of(&r, config.policy.dns.interval)),
        descriptors: Some(DescriptorStatus {
            limit: gateway.descriptors.0,
            budget: gateway.descriptors.1.clone(),
            open: gateway.gate.open(),
        }),
    }
}

/// Routes `client` as a session on `listener` (default: the first SMTP
/// listener) would be routed; on a GINA listener, as its HTTP requests are.
pub fn explain(
    gateway: &Gateway,
    client: IpAddr,
    dest: Option<IpAddr>,
    listener: Option<&str>,
) -> Result<Route, String> {
    let snapshot = gateway.snapshot();
    let dest = match dest {
        Some(dest) => dest,
        None => {
            let name = match listener {
                Some(name) => name.to_owned(),
                None => snapshot
                    .config
                    .smtp
                    .first()
                    .map(|l| l.name.clone())
                    .ok_or("no SMTP listener configured; give --dest")?,
            };
            let addr = gateway
                .bound_addr(&name)
                .ok_or_else(|| format!("no listener named {name:?}"))?;
            if addr.ip().is_unspecified() {
                return Err(format!(
                    "listener {name} listens on {}, so the destination depends on the address a client reaches; give --dest",
                    addr.ip()
                ));
            }
            addr.ip()
        }
    };
    // A GINA listener routes like a public session over members with a `gina` upstream.
    let is_http = listener.is_some_and(|name| snapshot.config.http.iter().any(|l| l.name == name));
    if is_http {
        return Ok(snapshot
            .router
            .route_http(&gateway.members, client, Some(dest)));
    }
    let mut route = snapshot.router.route(&gateway.members, client, Some(dest));
    route.extensions = Some(snapshot.router.explain_extensions(&gateway.members, client));
    Ok(route)
}

/// Extension keywords for the text tables: `-` for none.
fn keywords(words: &[String]) -> String {
    if words.is_empty() {
        return "-".to_owned();
    }
    crate::text::escape(&words.join(" ")).into_owned()
}

/// Text form of `status`.
pub fn render_text(status: &Status) -> String {
    use crate::text::escape as e;
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} (mxgate {}), {}, up {}s, pid {}",
        e(&status.node),
        e(&status.version),
        e(&status.mode),
        status.uptime_s,
        status.pid
    );
    if let Some(c) = &status.cluster {
        let _ = writeln!(
            out,
            "cluster {}: epoch {}, master {}, this node {} ({}), policy version {}, {} log entries",
            e(&c.cluster_id),
            c.epoch,
            e(&c.master),
            e(&c.role),
            e(&c.state),
            c.policy_version,
            c.entries
        );
    }
    if let Some(d) = &status.descriptors {
        let _ = writeln!(
            out,
            "descriptors: limit {} (was {}, hard {}), {} reserved, client connections {} of {} (max_sessions add up to {})",
            d.limit.soft,
            d.limit.was,
            d.limit.hard,
            d.budget.reserved(),
            d.open,
            d.budget.sessions,
            d.budget.configured_sessions
        );
    }
    let _ = writeln!(
        out,
        "\nLISTENER         ADDRESS                  ACTIVE    TOTAL  KIND  ADVERTISES"
    );
    for l in &status.listeners {
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:>6} {:>8}  {:<4}  {}",
            e(&l.name),
            e(&l.listen),
            l.active_sessions,
            l.sessions_total,
            e(&l.kind),
            l.advertises.as_ref().map_or(String::new(), |a| keywords(a))
        );
    }
    let _ = writeln!(
        out,
        "\nMEMBER           SMTP                     WEIGHT INGRESS HEALTH  ACTIVE  EXTENSIONS             REASON"
    );
    for m in &status.members {
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:>6} {:<7} {:<7} {:>6}  {:<22} {}",
            e(&m.name),
            e(m.smtp.as_deref().unwrap_or("-")),
            m.weight,
            if m.ingress { "yes" } else { "no" },
            if m.healthy { "up" } else { "DOWN" },
            m.active_sessions,
            m.extensions
                .as_ref()
                .map_or("?".to_owned(), |x| keywords(x)),
            e(m.reason.as_deref().unwrap_or(""))
        );
    }
    if let Some(dns) = &status.dns {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let _ = writeln!(
            out,
            "\nDNS (last check {}s ago, every {}s): {}",
            now.saturating_sub(dns.checked_at),
            dns.interval_s,
            e(&dns.summary)
        );
        let _ = writeln!(
            out,
            "DOMAIN                     STATUS    MX  ANSWERING  SUMMARY"
        );
        for d in &dns.domains {
            let _ = writeln!(
                out,
                "{:<26} {:<8} {:>3} {:>10}  {}",
                e(&d.domain),
                d.status.label(),
                d.mx_records,
                d.mx_answering,
                e(&d.summary)
            );
        }
    }
    let _ = writeln!(out, "\nHEALTH           SERVICE CHECK STATE LAST CHECK");
    for m in &status.members {
        let services = [("smtp", &m.smtp_health), ("gina", &m.gina_health)];
        for (service, health) in services {
            let Some(health) = health else { continue };
            let _ = writeln!(
                out,
                "{:<16} {service:<7} {}",
                e(&m.name),
                e(&health.summary())
            );
            if let (false, Some(reason)) = (health.healthy, &health.reason) {
                let _ = writeln!(out, "{:<16} {:<7} down: {}", "", "", e(reason));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escapes_every_value() {
        let status = Status {
            node: "gw1\nFAKE node".into(),
            version: "0.1.0".into(),
            uptime_s: 5,
            pid: 1,
            started_at: 0,
            mode: "standalone".into(),
            cluster: None,
            listeners: vec![ListenerStatus {
                name: "in\x1b[2J".into(),
                listen: "127.0.0.1:25".into(),
                active_sessions: 0,
                sessions_total: 0,
                kind: "smtp".into(),
                advertises: Some(vec!["SMTPUTF8\n".into()]),
            }],
            members: vec![MemberStatus {
                name: "bk\"} 9\nFAKE_LINE".into(),
                smtp: Some("127.0.0.1:10025".into()),
                weight: 100,
                ingress: true,
                healthy: false,
                reason: Some("421 bye\r\nFAKE reason".into()),
                active_sessions: 0,
                gina: None,
                smtp_health: None,
                gina_health: None,
                extensions: Some(vec!["DSN\x07".into()]),
            }],
            dns: None,
            descriptors: None,
        };
        let text = render_text(&status);
        // node line, blank, listener header and row, blank, member header and
        // row, blank, health header.
        assert_eq!(text.lines().count(), 9, "{text}");
        assert!(!crate::text::has_unescaped_control(&text), "{text}");
        for needle in [
            "node gw1\\nFAKE node (mxgate",
            "in\\x1b[2J ",
            "bk\"} 9\\nFAKE_LINE",
            "421 bye\\r\\nFAKE reason",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
