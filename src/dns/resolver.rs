//! The DNS client: one query, one classified answer.
//!
//! Queries go straight to the configured name servers through hickory's
//! [`NameServerPool`] (UDP, TCP when truncated), never through hickory's
//! caching `Resolver`: that one answers `localhost`, `127.in-addr.arpa` and
//! friends itself and may read the hosts file, and the check must report what
//! DNS servers say, even for 127.0.0.0/8 (SPEC section 7). Every answer keeps
//! its TTLs; every failure is one [`QueryError`] the report can judge.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverOpts,
};
use hickory_resolver::name_server::{NameServerPool, TokioConnectionProvider};
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::proto::xfer::{DnsHandle, DnsRequestOptions, FirstAnswer, Protocol};
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};

use crate::config::DnsPolicy;

/// Why a query gave no records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The name does not exist (NXDOMAIN).
    #[error("NXDOMAIN")]
    NxDomain,
    /// The name exists but has no record of this type (NOERROR, empty answer).
    #[error("no {0} record")]
    NoData(String),
    /// No name server answered in time.
    #[error("no answer from the name server (timeout)")]
    Timeout,
    /// The name server answered with an error code (SERVFAIL, REFUSED, ...).
    #[error("name server answered {0}")]
    ServerError(ResponseCode),
    /// Anything else (connection refused, bad message, bad name).
    #[error("{0}")]
    Other(String),
}

impl QueryError {
    /// True for a definite negative answer (NXDOMAIN or no record of the type),
    /// false when the name servers could not be asked.
    pub fn is_negative(&self) -> bool {
        matches!(self, QueryError::NxDomain | QueryError::NoData(_))
    }
}

/// One record of an answer, with its TTL in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `MX preference exchange` (exchange without the trailing dot; `.` for a null MX).
    Mx(u16, String, u32),
    /// An A or AAAA address.
    Addr(IpAddr, u32),
    /// A PTR target (without the trailing dot).
    Ptr(String, u32),
}

impl Answer {
    /// The addresses among `answers`, with their TTLs.
    pub fn addresses_in(answers: Vec<Answer>) -> Vec<(IpAddr, u32)> {
        answers
            .into_iter()
            .filter_map(|a| match a {
                Answer::Addr(ip, ttl) => Some((ip, ttl)),
                _ => None,
            })
            .collect()
    }
}

/// Asks the configured name servers directly.
#[derive(Clone)]
pub struct Dns {
    pool: NameServerPool<TokioConnectionProvider>,
    attempts: u32,
    /// The servers asked, for messages.
    pub servers: Vec<SocketAddr>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("servers", &self.servers)
            .finish()
    }
}

impl Dns {
    /// A client for `[dns] nameservers` (empty: the servers of `/etc/resolv.conf`),
    /// with `[dns] timeout` per attempt and `[dns] attempts`.
    pub fn new(policy: &DnsPolicy) -> Result<Dns, QueryError> {
        let servers: Vec<SocketAddr> = if policy.nameservers.is_empty() {
            let (config, _) = hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                QueryError::Other(format!(
                    "no [dns] nameservers and /etc/resolv.conf is unusable: {e}"
                ))
            })?;
            let mut servers: Vec<SocketAddr> = config
                .name_servers()
                .iter()
                .map(|ns| ns.socket_addr)
                .collect();
            servers.dedup();
            servers
        } else {
            policy.nameservers.clone()
        };
        if servers.is_empty() {
            return Err(QueryError::Other(
                "no name server: set [dns] nameservers or add one to /etc/resolv.conf".into(),
            ));
        }
        let mut group = NameServerConfigGroup::with_capacity(servers.len() * 2);
        for addr in &servers {
            group.push(NameServerConfig::new(*addr, Protocol::Udp));
            group.push(NameServerConfig::new(*addr, Protocol::Tcp));
        }
        let mut opts = ResolverOpts::default();
        opts.timeout = policy.timeout;
        // Retries are counted here, in `query`, so a silent server costs exactly attempts x timeout.
        opts.attempts = 1;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.cache_size = 0;
        opts.ndots = 0;
        opts.edns0 = true;
        let pool = NameServerPool::from_config(group, opts, TokioConnectionProvider::default());
        Ok(Dns {
            pool,
            attempts: policy.attempts.max(1),
            servers,
        })
    }

    /// The per-attempt timeout times the attempts: the longest one query may take.
    pub fn max_query_time(policy: &DnsPolicy) -> Duration {
        policy.timeout * policy.attempts.max(1)
    }

    /// Asks for `name`'s records of type `rtype` (A, AAAA, MX or PTR); the
    /// answer records of that type with their TTLs.
    pub async fn query(&self, name: &str, rtype: RecordType) -> Result<Vec<Answer>, QueryError> {
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        let name =
            Name::from_ascii(&fqdn).map_err(|e| QueryError::Other(format!("{fqdn}: {e}")))?;
        self.query_name(name, rtype).await
    }

    /// The PTR records of `ip`.
    pub async fn reverse(&self, ip: IpAddr) -> Result<Vec<Answer>, QueryError> {
        self.query_name(Name::from(ip), RecordType::PTR).await
    }

    /// The A and AAAA records of `name`: both asked; a negative answer for
    /// one family is no error when the other has addresses.
    pub async fn addresses(&self, name: &str) -> Result<Vec<Answer>, QueryError> {
        let (a, aaaa) = tokio::join!(
            self.query(name, RecordType::A),
            self.query(name, RecordType::AAAA)
        );
        match (a, aaaa) {
            (Ok(mut a), Ok(aaaa)) => {
                a.extend(aaaa);
                Ok(a)
            }
            (Ok(found), Err(e)) | (Err(e), Ok(found)) => {
                if e.is_negative() {
                    Ok(found)
                } else {
                    Err(e)
                }
            }
            (Err(a), Err(aaaa)) => Err(worse(a, aaaa)),
        }
    }

    async fn query_name(&self, name: Name, rtype: RecordType) -> Result<Vec<Answer>, QueryError> {
        let mut last = QueryError::Timeout;
        for _ in 0..self.attempts {
            match self.once(name.clone(), rtype).await {
                Err(
                    e @ (QueryError::Timeout | QueryError::ServerError(_) | QueryError::Other(_)),
                ) => {
                    last = e;
                }
                done => return done,
            }
        }
        Err(last)
    }

    async fn once(&self, name: Name, rtype: RecordType) -> Result<Vec<Answer>, QueryError> {
        let mut options = DnsRequestOptions::default();
        options.use_edns = true;
        options.recursion_desired = true;
        let response = self
            .pool
            .lookup(Query::query(name, rtype), options)
            .first_answer()
            .await;
        let message = match response {
            Ok(message) => message,
            Err(e) => return Err(classify(&e, rtype)),
        };
        match message.response_code() {
            ResponseCode::NoError => {}
            ResponseCode::NXDomain => return Err(QueryError::NxDomain),
            code => return Err(QueryError::ServerError(code)),
        }
        let answers: Vec<Answer> = message
            .answers()
            .iter()
            .filter(|r| r.record_type() == rtype)
            .filter_map(|r| match r.data() {
                RData::MX(mx) => Some(Answer::Mx(
                    mx.preference(),
                    trim_dot(&mx.exchange().to_ascii()),
                    r.ttl(),
                )),
                RData::A(a) => Some(Answer::Addr(IpAddr::V4(a.0), r.ttl())),
                RData::AAAA(a) => Some(Answer::Addr(IpAddr::V6(a.0), r.ttl())),
                RData::PTR(p) => Some(Answer::Ptr(trim_dot(&p.0.to_ascii()), r.ttl())),
                _ => None,
            })
            .collect();
        if answers.is_empty() {
            return Err(QueryError::NoData(rtype.to_string()));
        }
        Ok(answers)
    }
}

/// Of two failures for one name, the one that says more: not asked beats negative.
fn worse(a: QueryError, b: QueryError) -> QueryError {
    match (&a, &b) {
        (QueryError::NoData(_), QueryError::NoData(_)) => QueryError::NoData("A/AAAA".into()),
        (_, _) if !a.is_negative() => a,
        (_, _) if !b.is_negative() => b,
        (QueryError::NxDomain, _) | (_, QueryError::NxDomain) => QueryError::NxDomain,
        _ => a,
    }
}

fn classify(e: &ProtoError, rtype: RecordType) -> QueryError {
    match e.kind() {
        ProtoErrorKind::Timeout => QueryError::Timeout,
        ProtoErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
            ResponseCode::NXDomain => QueryError::NxDomain,
            ResponseCode::NoError => QueryError::NoData(rtype.to_string()),
            code => QueryError::ServerError(code),
        },
        ProtoErrorKind::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => QueryError::Timeout,
        _ if e.to_string().contains("timed out") => QueryError::Timeout,
        _ => QueryError::Other(e.to_string()),
    }
}

fn trim_dot(name: &str) -> String {
    if name == "." {
        return ".".to_owned();
    }
    name.strip_suffix('.').unwrap_or(name).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_dots() {
        assert_eq!(trim_dot("mx.example.com."), "mx.example.com");
        assert_eq!(trim_dot("mx.example.com"), "mx.example.com");
        assert_eq!(trim_dot("."), ".");
    }

    #[test]
    fn worse_prefers_unanswered() {
        let nodata = || QueryError::NoData("A".into());
        assert_eq!(worse(nodata(), QueryError::Timeout), QueryError::Timeout);
        assert_eq!(worse(QueryError::NxDomain, nodata()), QueryError::NxDomain);
        assert_eq!(
            worse(nodata(), nodata()),
            QueryError::NoData("A/AAAA".into())
        );
    }
}
