//! The DNS report as data: what was found for each domain, and the pure
//! rules that turn it into a monitoring-plugin status.
//!
//! [`super::check`] fills a [`DomainReport`] with observations (MX records,
//! addresses, PTRs, SMTP probes) and calls [`DomainReport::evaluate`], which
//! marks round robin and backup MX, which members are pointed at, and lists
//! the problems, each with its [`Status`]. Nothing here does I/O. The rules
//! are documented in `docs/dns.md`; the text form is in [`super::render`].

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::resolver::QueryError;

/// A monitoring-plugin status (Nagios, Icinga, Checkmk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Exit code 0.
    Ok,
    /// Exit code 1.
    Warning,
    /// Exit code 2.
    Critical,
    /// Exit code 3: the check could not tell.
    Unknown,
}

impl Status {
    /// The plugin exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    /// How bad: OK < WARNING < UNKNOWN < CRITICAL, so one domain whose name
    /// server is silent does not hide another domain that is down.
    pub fn severity(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Unknown => 2,
            Status::Critical => 3,
        }
    }

    /// The worse of two.
    pub fn max(self, other: Status) -> Status {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// The label as printed.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

/// The outcome of one lookup, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lookup {
    /// Records found.
    Ok,
    /// The name does not exist.
    Nxdomain,
    /// The name exists without records of the type.
    Nodata,
    /// No name server answered in time.
    Timeout,
    /// The name server answered an error code (SERVFAIL, REFUSED, ...).
    ServerError,
    /// Anything else.
    Error,
}

impl Lookup {
    /// Whether the servers answered (records, or a definite "none").
    pub fn answered(self) -> bool {
        matches!(self, Lookup::Ok | Lookup::Nxdomain | Lookup::Nodata)
    }
}

impl From<&QueryError> for Lookup {
    fn from(e: &QueryError) -> Lookup {
        match e {
            QueryError::NxDomain => Lookup::Nxdomain,
            QueryError::NoData(_) => Lookup::Nodata,
            QueryError::Timeout => Lookup::Timeout,
            QueryError::ServerError(_) => Lookup::ServerError,
            QueryError::Other(_) => Lookup::Error,
        }
    }
}

/// One problem found, with its weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// WARNING, CRITICAL or UNKNOWN.
    pub status: Status,
    /// What is wrong, in one line.
    pub message: String,
}

/// The result of one check run over several domains.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    /// Worst status over the domains (UNKNOWN when there is no domain).
    pub status: Status,
    /// [`Status::exit_code`] of `status`.
    pub exit_code: u8,
    /// The first output line: `DNS CRITICAL - a.example: ...; b.example: OK`.
    pub summary: String,
    /// When the check finished (Unix seconds).
    pub checked_at: u64,
    /// Name servers asked (`IP:PORT`).
    pub nameservers: Vec<String>,
    /// One report per domain, in the order asked.
    pub domains: Vec<DomainReport>,
}

impl CheckReport {
    /// Builds the overall status and summary from evaluated domain reports.
    pub fn new(domains: Vec<DomainReport>, nameservers: Vec<String>, checked_at: u64) -> Self {
        let status = if domains.is_empty() {
            Status::Unknown
        } else {
            domains.iter().fold(Status::Ok, |s, d| s.max(d.status))
        };
        let detail = if domains.is_empty() {
            "no domain to check: give DOMAIN or set [dns] domains".to_owned()
        } else {
            domains
                .iter()
                .map(|d| format!("{}: {}", d.domain, d.summary))
                .collect::<Vec<_>>()
                .join("; ")
        };
        CheckReport {
            status,
            exit_code: status.exit_code(),
            summary: format!("DNS {} - {detail}", status.label()),
            checked_at,
            nameservers,
            domains,
        }
    }
}

/// Everything found for one domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DomainReport {
    /// The domain.
    pub domain: String,
    /// Worst status of its problems (OK without any).
    pub status: Status,
    /// `OK`, or the worst problem (`(+N more)` when there are others).
    pub summary: String,
    /// The MX lookup itself.
    pub mx_lookup: Lookup,
    /// Its error text, when not `ok`.
    pub mx_error: Option<String>,
    /// No MX records: mail goes to the domain's own addresses (RFC 5321 5.1).
    pub implicit_mx: bool,
    /// The MX set, by preference then host.
    pub mx: Vec<MxReport>,
    /// Ingress members that no MX address points at.
    pub ingress_not_pointed_at: Vec<String>,
    /// Every problem, worst first.
    pub problems: Vec<Problem>,
}

/// Primary or backup MX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MxRole {
    /// The lowest preference: takes the mail while it answers.
    Primary,
    /// A higher preference: used when every primary fails.
    Backup,
}

/// One MX record and what its host resolves to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MxReport {
    /// MX preference (lower is tried first).
    pub preference: u16,
    /// The MX host (the exchange); `.` is a null MX.
    pub host: String,
    /// TTL of the MX record (seconds); none for an implicit MX.
    pub ttl: Option<u32>,
    /// Primary (lowest preference) or backup.
    pub role: MxRole,
    /// Shares its preference with another MX record: senders spread over them.
    pub round_robin: bool,
    /// The A/AAAA lookup of the host.
    pub lookup: Lookup,
    /// Its error text, when not `ok`.
    pub error: Option<String>,
    /// More than one address: senders spread over them.
    pub address_round_robin: bool,
    /// The host's addresses.
    pub addresses: Vec<AddressReport>,
}

/// One address of an MX host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddressReport {
    /// The address.
    pub address: IpAddr,
    /// `A` or `AAAA`.
    pub family: String,
    /// TTL of the A/AAAA record (seconds).
    pub ttl: u32,
    /// The SMTP probe.
    pub smtp: SmtpProbe,
    /// Forward-confirmed reverse DNS.
    pub ptr: PtrReport,
    /// Ingress members this address points at.
    pub members: Vec<String>,
}

/// Whether an address greets with `220` on the probe port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpProbe {
    /// A `220` greeting came in time.
    pub answers: bool,
    /// The greeting's first line, when one came.
    pub banner: Option<String>,
    /// Why it does not answer (refused, timeout, a greeting other than 220).
    pub error: Option<String>,
}

/// Forward-confirmed reverse DNS of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PtrStatus {
    /// A PTR name resolves back to the address.
    Confirmed,
    /// No PTR record.
    Missing,
    /// PTR names exist, but none resolves back to the address.
    Unconfirmed,
    /// The lookups could not be done (timeout, SERVFAIL).
    Unknown,
}

/// The PTR of one address and whether it is confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtrReport {
    /// The verdict.
    pub status: PtrStatus,
    /// PTR names found.
    pub names: Vec<String>,
    /// TTL of the PTR record (seconds).
    pub ttl: Option<u32>,
    /// What went wrong, when not confirmed.
    pub error: Option<String>,
}

/// An ingress member, as the check needs it: where its MTA is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressMember {
    /// Member name.
    pub name: String,
    /// Addresses of its `smtp` upstream (the literal, or what its name resolves to).
    pub smtp_ips: Vec<IpAddr>,
    /// Its `addresses` (sources that identify it).
    pub addresses: Vec<IpNet>,
}

impl IngressMember {
    /// Whether an MX address reaches this member.
    pub fn pointed_at_by(&self, ip: IpAddr) -> bool {
        self.smtp_ips.contains(&ip) || self.addresses.iter().any(|n| n.contains(&ip))
    }
}

impl DomainReport {
    /// A report for `domain` whose MX lookup failed with `e` (before evaluation).
    pub fn mx_failed(domain: &str, e: &QueryError) -> DomainReport {
        let mut r = DomainReport::empty(domain);
        r.mx_lookup = Lookup::from(e);
        r.mx_error = Some(e.to_string());
        r
    }

    /// A report for `domain` with nothing found yet.
    pub fn empty(domain: &str) -> DomainReport {
        DomainReport {
            domain: domain.to_owned(),
            status: Status::Ok,
            summary: String::new(),
            mx_lookup: Lookup::Ok,
            mx_error: None,
            implicit_mx: false,
            mx: Vec::new(),
            ingress_not_pointed_at: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Applies the rules: roles, round robin, members pointed at, problems,
    /// status and summary. Idempotent.
    pub fn evaluate(mut self, members: &[IngressMember]) -> DomainReport {
        self.problems.clear();
        self.ingress_not_pointed_at.clear();
        self.mx
            .sort_by(|a, b| (a.preference, &a.host).cmp(&(b.preference, &b.host)));
        let lowest = self.mx.iter().map(|m| m.preference).min();
        let prefs: Vec<u16> = self.mx.iter().map(|m| m.preference).collect();
        for mx in &mut self.mx {
            mx.role = if Some(mx.preference) == lowest {
                MxRole::Primary
            } else {
                MxRole::Backup
            };
            mx.round_robin = prefs.iter().filter(|p| **p == mx.preference).count() > 1;
            mx.address_round_robin = mx.addresses.len() > 1;
            mx.addresses.sort_by_key(|a| a.address);
            for a in &mut mx.addresses {
                a.members = members
                    .iter()
                    .filter(|m| m.pointed_at_by(a.address))
                    .map(|m| m.name.clone())
                    .collect();
            }
        }
        let problems = self.rules(members);
        self.problems = problems;
        self.problems
            .sort_by_key(|p| std::cmp::Reverse(p.status.severity()));
        self.status = self
            .problems
            .iter()
            .fold(Status::Ok, |s, p| s.max(p.status));
        self.summary = match self.problems.first() {
            None => "OK".to_owned(),
            Some(first) if self.problems.len() == 1 => first.message.clone(),
            Some(first) => format!("{} (+{} more)", first.message, self.problems.len() - 1),
        };
        self
    }

    fn rules(&mut self, members: &[IngressMember]) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut add = |status, message: String| out.push(Problem { status, message });
        match self.mx_lookup {
            Lookup::Ok | Lookup::Nodata => {}
            Lookup::Nxdomain => {
                add(Status::Critical, "domain does not exist (NXDOMAIN)".into());
                return out;
            }
            _ => {
                let e = self.mx_error.as_deref().unwrap_or("failed");
                add(Status::Unknown, format!("MX lookup failed: {e}"));
                return out;
            }
        }
        if self.mx.is_empty() {
            add(Status::Critical, "no MX and no address record".into());
            return out;
        }
        if self.mx.iter().any(|m| m.host == ".") {
            add(
                Status::Critical,
                "null MX: the domain accepts no mail (RFC 7505)".into(),
            );
            return out;
        }
        if self.implicit_mx {
            add(
                Status::Warning,
                "no MX record; mail goes to the domain's own address (implicit MX)".into(),
            );
        }
        let resolved = self.mx.iter().filter(|m| !m.addresses.is_empty()).count();
        if resolved == 0 {
            if self.mx.iter().all(|m| m.lookup.answered()) {
                add(Status::Critical, "no MX host resolves".into());
            } else {
                let e = self
                    .mx
                    .iter()
                    .find_map(|m| m.error.clone())
                    .unwrap_or_default();
                add(
                    Status::Unknown,
                    format!("MX hosts could not be resolved: {e}"),
                );
            }
            return out;
        }
        for mx in self.mx.iter().filter(|m| m.addresses.is_empty()) {
            let e = mx.error.as_deref().unwrap_or("no address");
            if mx.lookup.answered() {
                add(
                    Status::Warning,
                    format!("MX host {} does not resolve ({e})", mx.host),
                );
            } else {
                add(Status::Unknown, format!("MX host {}: {e}", mx.host));
            }
        }
        let addresses: Vec<(&MxReport, &AddressReport)> = self
            .mx
            .iter()
            .flat_map(|m| m.addresses.iter().map(move |a| (m, a)))
            .collect();
        if addresses.iter().all(|(_, a)| !a.smtp.answers) {
            add(Status::Critical, "no MX host answers SMTP".into());
        } else {
            for (mx, a) in addresses.iter().filter(|(_, a)| !a.smtp.answers) {
                let why = a.smtp.error.as_deref().unwrap_or("no 220 greeting");
                add(
                    Status::Warning,
                    format!("{} ({}) does not answer SMTP: {why}", a.address, mx.host),
                );
            }
        }
        let mut seen: Vec<IpAddr> = Vec::new();
        for (mx, a) in &addresses {
            if seen.contains(&a.address) {
                continue;
            }
            seen.push(a.address);
            let names = a.ptr.names.join(", ");
            match a.ptr.status {
                PtrStatus::Confirmed => {}
                PtrStatus::Missing => add(
                    Status::Warning,
                    format!("{} ({}) has no PTR record", a.address, mx.host),
                ),
                PtrStatus::Unconfirmed => add(
                    Status::Warning,
                    format!(
                        "{} ({}): PTR {names} does not resolve back to it",
                        a.address, mx.host
                    ),
                ),
                PtrStatus::Unknown => add(
                    Status::Unknown,
                    format!(
                        "{} ({}): PTR lookup failed: {}",
                        a.address,
                        mx.host,
                        a.ptr.error.as_deref().unwrap_or("unknown")
                    ),
                ),
            }
        }
        for m in members {
            if !addresses.iter().any(|(_, a)| m.pointed_at_by(a.address)) {
                self.ingress_not_pointed_at.push(m.name.clone());
            }
        }
        if !self.ingress_not_pointed_at.is_empty() {
            add(
                Status::Warning,
                format!(
                    "no MX address points at ingress member(s) {}",
                    self.ingress_not_pointed_at.join(", ")
                ),
            );
        }
        out
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
