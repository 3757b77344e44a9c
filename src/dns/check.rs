//! Running the domain check: the lookups and SMTP probes that fill a
//! [`DomainReport`], done concurrently per domain, per MX host and per
//! address, each domain bounded in time. The verdict is
//! [`DomainReport::evaluate`]'s.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_resolver::proto::rr::RecordType;
use tokio::task::JoinSet;

use super::probe::probe;
use super::report::{
    AddressReport, CheckReport, DomainReport, IngressMember, Lookup, MxReport, MxRole, PtrReport,
    PtrStatus,
};
use super::resolver::{Answer, Dns, QueryError};
use crate::config::{DnsPolicy, Policy};

/// Checks `domains` (empty: `[dns] domains`) with the policy's `[dns]`
/// settings and ingress members.
pub async fn check(policy: &Policy, domains: &[String]) -> CheckReport {
    let domains: Vec<String> = if domains.is_empty() {
        policy.dns.domains.clone()
    } else {
        domains
            .iter()
            .map(|d| d.trim_end_matches('.').to_owned())
            .collect()
    };
    let dns = match Dns::new(&policy.dns) {
        Ok(dns) => dns,
        Err(e) => {
            let reports = domains
                .iter()
                .map(|d| DomainReport::mx_failed(d, &e).evaluate(&[]))
                .collect();
            return CheckReport::new(reports, Vec::new(), now());
        }
    };
    let members = ingress_members(&dns, policy).await;
    let mut set = JoinSet::new();
    for (i, domain) in domains.iter().enumerate() {
        let (dns, settings, members, domain) = (
            dns.clone(),
            policy.dns.clone(),
            members.clone(),
            domain.clone(),
        );
        set.spawn(async move {
            let limit = domain_limit(&settings);
            let report =
                match tokio::time::timeout(limit, check_domain(&dns, &settings, &domain)).await {
                    Ok(report) => report,
                    Err(_) => DomainReport::mx_failed(
                        &domain,
                        &QueryError::Other(format!(
                            "the check did not finish within {}s",
                            limit.as_secs()
                        )),
                    ),
                };
            (i, report.evaluate(&members))
        });
    }
    let reports = collect(set, domains.len()).await;
    let servers = dns.servers.iter().map(ToString::to_string).collect();
    CheckReport::new(reports, servers, now())
}

/// The longest one domain's check may take: a chain of lookups (MX, A/AAAA,
/// PTR, the PTR name's A/AAAA) and a probe, with room to spare.
pub fn domain_limit(settings: &DnsPolicy) -> Duration {
    Dns::max_query_time(settings) * 5 + settings.probe_timeout + Duration::from_secs(5)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Results of a JoinSet of `(index, T)` in index order (a panicked task is dropped).
async fn collect<T: 'static>(mut set: JoinSet<(usize, T)>, len: usize) -> Vec<T> {
    let mut out: Vec<(usize, T)> = Vec::with_capacity(len);
    while let Some(done) = set.join_next().await {
        if let Ok(item) = done {
            out.push(item);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

/// The policy's ingress members with where their MTAs are (names resolved with `dns`).
async fn ingress_members(dns: &Dns, policy: &Policy) -> Vec<IngressMember> {
    let mut out = Vec::new();
    for m in policy.members.iter().filter(|m| m.ingress) {
        let smtp_ips = match &m.smtp {
            None => Vec::new(),
            Some(hp) => match hp.ip() {
                Some(ip) => vec![ip],
                None => addresses_of(&dns.addresses(&hp.host).await.unwrap_or_default()),
            },
        };
        if smtp_ips.is_empty() && m.addresses.is_empty() {
            continue;
        }
        out.push(IngressMember {
            name: m.name.clone(),
            smtp_ips,
            addresses: m.addresses.clone(),
        });
    }
    out
}

fn addresses_of(answers: &[Answer]) -> Vec<IpAddr> {
    answers
        .iter()
        .filter_map(|a| match a {
            Answer::Addr(ip, _) => Some(*ip),
            _ => None,
        })
        .collect()
}

/// Everything about one domain, before evaluation.
pub async fn check_domain(dns: &Dns, settings: &DnsPolicy, domain: &str) -> DomainReport {
    let mut report = DomainReport::empty(domain);
    let records: Vec<(u16, String, Option<u32>)> = match dns.query(domain, RecordType::MX).await {
        Ok(answers) => {
            let mut records: Vec<(u16, String, Option<u32>)> = answers
                .into_iter()
                .filter_map(|a| match a {
                    Answer::Mx(pref, host, ttl) => Some((pref, host, Some(ttl))),
                    _ => None,
                })
                .collect();
            records.sort();
            records.dedup();
            records
        }
        Err(QueryError::NoData(_)) => {
            report.mx_lookup = Lookup::Nodata;
            match dns.addresses(domain).await {
                Err(e) if e.is_negative() => return report,
                _ => {
                    report.implicit_mx = true;
                    vec![(0, domain.to_owned(), None)]
                }
            }
        }
        Err(e) => return DomainReport::mx_failed(domain, &e),
    };
    let mut set = JoinSet::new();
    for (i, (preference, host, ttl)) in records.into_iter().enumerate() {
        let (dns, settings) = (dns.clone(), settings.clone());
        set.spawn(async move {
            let mx = if host == "." {
                null_mx(preference, ttl)
            } else {
                mx_host(&dns, &settings, preference, host, ttl).await
            };
            (i, mx)
        });
    }
    report.mx = collect(set, 0).await;
    report
}

fn null_mx(preference: u16, ttl: Option<u32>) -> MxReport {
    MxReport {
        preference,
        host: ".".to_owned(),
        ttl,
        role: MxRole::Primary,
        round_robin: false,
        lookup: Lookup::Nodata,
        error: Some("null MX".to_owned()),
        address_round_robin: false,
        addresses: Vec::new(),
    }
}

async fn mx_host(
    dns: &Dns,
    settings: &DnsPolicy,
    preference: u16,
    host: String,
    ttl: Option<u32>,
) -> MxReport {
    let mut mx = MxReport {
        preference,
        host,
        ttl,
        role: MxRole::Primary,
        round_robin: false,
        lookup: Lookup::Ok,
        error: None,
        address_round_robin: false,
        addresses: Vec::new(),
    };
    let answers = match dns.addresses(&mx.host).await {
        Ok(answers) => answers,
        Err(e) => {
            mx.lookup = Lookup::from(&e);
            mx.error = Some(e.to_string());
            return mx;
        }
    };
    let mut set = JoinSet::new();
    for (i, answer) in answers.into_iter().enumerate() {
        let Answer::Addr(ip, ttl) = answer else {
            continue;
        };
        let (dns, port, limit) = (
            dns.clone(),
            settings.smtp_probe_port,
            settings.probe_timeout,
        );
        set.spawn(async move {
            let (smtp, ptr) = tokio::join!(probe(ip, port, limit), fcrdns(&dns, ip));
            let family = if ip.is_ipv4() { "A" } else { "AAAA" };
            let report = AddressReport {
                address: ip,
                family: family.to_owned(),
                ttl,
                smtp,
                ptr,
                members: Vec::new(),
            };
            (i, report)
        });
    }
    mx.addresses = collect(set, 0).await;
    mx
}

/// Forward-confirmed reverse DNS: the PTR names of `ip`, and whether one of
/// them has `ip` among its addresses.
pub async fn fcrdns(dns: &Dns, ip: IpAddr) -> PtrReport {
    let answers = match dns.reverse(ip).await {
        Ok(answers) => answers,
        Err(e) => {
            let status = if e.is_negative() {
                PtrStatus::Missing
            } else {
                PtrStatus::Unknown
            };
            return PtrReport {
                status,
                names: Vec::new(),
                ttl: None,
                error: Some(e.to_string()),
            };
        }
    };
    let mut names = Vec::new();
    let mut ttl = None;
    for a in answers {
        if let Answer::Ptr(name, t) = a {
            ttl = Some(ttl.map_or(t, |old: u32| old.min(t)));
            names.push(name);
        }
    }
    let mut unanswered = None;
    for name in &names {
        match dns.addresses(name).await {
            Ok(found) if addresses_of(&found).contains(&ip) => {
                return PtrReport {
                    status: PtrStatus::Confirmed,
                    names,
                    ttl,
                    error: None,
                };
            }
            Ok(_) => {}
            Err(e) if e.is_negative() => {}
            Err(e) => unanswered = Some(format!("{name}: {e}")),
        }
    }
    let (status, error) = match unanswered {
        Some(e) => (PtrStatus::Unknown, e),
        None => (
            PtrStatus::Unconfirmed,
            format!("no PTR name resolves back to {ip}"),
        ),
    };
    PtrReport {
        status,
        names,
        ttl,
        error: Some(error),
    }
}
