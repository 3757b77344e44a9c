//! Member upstreams given as host names: resolved with the `[dns]` name
//! servers, cached per name for the records' TTL. Without `[dns]
//! nameservers` the hosts file is asked first, as the system resolver does.
//!
//! An expired entry is resolved again on the next connect. When the name
//! servers cannot be asked (timeout, SERVFAIL), the last good answer is used
//! for up to [`STALE_FOR`] after it expired, with a warning; a definite "no
//! such name" drops it. The clock is injected ([`Clock`]) and lookups go
//! through [`HostLookup`], so tests drive expiry exactly and count lookups.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use std::time::Instant;

use hickory_resolver::Hosts;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::resolver::{Answer, Dns, QueryError};
use crate::config::{DnsPolicy, HostPort};

/// How long a last good answer is used after its TTL while the name servers fail.
pub const STALE_FOR: Duration = Duration::from_secs(3600);

/// Shortest time an answer is cached (a TTL of 0 would resolve on every connect).
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// A future of one host lookup.
pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<(IpAddr, u32)>, QueryError>> + Send + 'a>>;

/// Where addresses of a host name come from (the name servers; a fake in tests).
pub trait HostLookup: Send + Sync {
    /// The A and AAAA records of `host` with their TTLs (seconds).
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a>;
}

impl HostLookup for Dns {
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a> {
        Box::pin(async move { Ok(Answer::addresses_in(self.addresses(host).await?)) })
    }
}

/// How long an address from the hosts file is cached (the file has no TTL).
const HOSTS_TTL: u32 = 60;

/// Member names without `[dns] nameservers`, as the system resolves them:
/// the hosts file first (so `localhost` and local aliases keep working), then
/// the servers of `/etc/resolv.conf`. The DNS check never uses this.
struct SystemLookup {
    hosts: Hosts,
    dns: Option<Dns>,
}

impl SystemLookup {
    fn new(policy: &DnsPolicy) -> Result<SystemLookup, QueryError> {
        let hosts = Hosts::from_system().unwrap_or_default();
        match Dns::new(policy) {
            Ok(dns) => Ok(SystemLookup {
                hosts,
                dns: Some(dns),
            }),
            // No name server: names in the hosts file still resolve.
            Err(e) if hosts_is_usable(&hosts) => {
                debug!(error = %e, "member host names: hosts file only");
                Ok(SystemLookup { hosts, dns: None })
            }
            Err(e) => Err(e),
        }
    }
}

fn hosts_is_usable(hosts: &Hosts) -> bool {
    !hosts_addresses(hosts, "localhost").is_empty()
}

/// The addresses `host` has in the hosts file, with [`HOSTS_TTL`].
fn hosts_addresses(hosts: &Hosts, host: &str) -> Vec<(IpAddr, u32)> {
    let Ok(name) = Name::from_ascii(host) else {
        return Vec::new();
    };
    [RecordType::A, RecordType::AAAA]
        .into_iter()
        .filter_map(|kind| hosts.lookup_static_host(&Query::query(name.clone(), kind)))
        .flat_map(|lookup| lookup.iter().filter_map(RData::ip_addr).collect::<Vec<_>>())
        .map(|ip| (ip, HOSTS_TTL))
        .collect()
}

impl HostLookup for SystemLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a> {
        let found = hosts_addresses(&self.hosts, host);
        match &self.dns {
            Some(dns) if found.is_empty() => dns.lookup(host),
            _ => Box::pin(async move {
                if found.is_empty() {
                    Err(QueryError::Other(format!(
                        "{host} is not in the hosts file and there is no name server"
                    )))
                } else {
                    Ok(found)
                }
            }),
        }
    }
}

/// Why a member's host name gave no address.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {source}")]
pub struct ResolveError {
    /// The name.
    pub host: String,
    /// What the name servers said.
    pub source: QueryError,
}

impl From<ResolveError> for io::Error {
    fn from(e: ResolveError) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, e)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    ips: Vec<IpAddr>,
    expires: Instant,
}

/// The lookup in use and the `[dns]` settings it was built from.
type Slot = Option<(DnsPolicy, Arc<dyn HostLookup>)>;

/// Where "now" comes from (the real clock; a hand-moved one in tests).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Resolves member host names with a TTL-honouring cache.
pub struct UpstreamResolver {
    lookup: Mutex<Slot>,
    cache: Mutex<HashMap<String, Entry>>,
    clock: Clock,
}

impl std::fmt::Debug for UpstreamResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResolver").finish_non_exhaustive()
    }
}

impl Default for UpstreamResolver {
    fn default() -> Self {
        UpstreamResolver {
            lookup: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            clock: Arc::new(Instant::now),
        }
    }
}

impl UpstreamResolver {
    /// A resolver asking `lookup`, with `clock` for expiry (tests).
    pub fn with_lookup(lookup: Arc<dyn HostLookup>, clock: Clock) -> UpstreamResolver {
        UpstreamResolver {
            lookup: Mutex::new(Some((DnsPolicy::default(), lookup))),
            cache: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// The process-wide resolver used for member connections.
    pub fn global() -> &'static UpstreamResolver {
        static GLOBAL: OnceLock<UpstreamResolver> = OnceLock::new();
        GLOBAL.get_or_init(UpstreamResolver::default)
    }

    /// Uses the name servers of `policy` from now on; a change of servers
    /// empties the cache. A policy that cannot be used is logged and skipped.
    pub fn configure(&self, policy: &DnsPolicy) {
        let Ok(mut slot) = self.lock_lookup() else {
            return;
        };
        if slot.as_ref().is_some_and(|(p, _)| same_servers(p, policy)) {
            return;
        }
        let lookup = if policy.nameservers.is_empty() {
            SystemLookup::new(policy).map(|l| Arc::new(l) as Arc<dyn HostLookup>)
        } else {
            Dns::new(policy).map(|d| Arc::new(d) as Arc<dyn HostLookup>)
        };
        match lookup {
            Ok(lookup) => {
                *slot = Some((policy.clone(), lookup));
                if let Ok(mut cache) = self.cache.lock() {
                    cache.clear();
                }
            }
            Err(e) => warn!(error = %e, "member host names cannot be resolved"),
        }
    }

    fn lock_lookup(&self) -> Result<std::sync::MutexGuard<'_, Slot>, ()> {
        self.lookup.lock().map_err(|_| ())
    }

    fn current(&self) -> Result<Arc<dyn HostLookup>, QueryError> {
        if let Ok(slot) = self.lock_lookup()
            && let Some((_, lookup)) = slot.as_ref()
        {
            return Ok(lookup.clone());
        }
        self.configure(&DnsPolicy::default());
        match self.lock_lookup() {
            Ok(slot) => slot
                .as_ref()
                .map(|(_, l)| l.clone())
                .ok_or_else(|| QueryError::Other("no usable name server".into())),
            Err(()) => Err(QueryError::Other("resolver state poisoned".into())),
        }
    }

    /// The addresses to connect to for `hp`: the literal, a cached answer
    /// within its TTL, a fresh answer, or (name servers failing) the last
    /// good answer within [`STALE_FOR`] of its expiry.
    pub async fn resolve(&self, hp: &HostPort) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Some(ip) = hp.ip() {
            return Ok(vec![SocketAddr::new(ip, hp.port)]);
        }
        let key = hp.host.to_ascii_lowercase();
        let now = (self.clock)();
        let cached = self.cache.lock().ok().and_then(|c| c.get(&key).cloned());
        if let Some(entry) = &cached
            && now < entry.expires
        {
            return Ok(with_port(&entry.ips, hp.port));
        }
        let fail = |source| ResolveError {
            host: hp.host.clone(),
            source,
        };
        let lookup = self.current().map_err(fail)?;
        match lookup.lookup(&key).await {
            Ok(found) if !found.is_empty() => {
                let ttl = found.iter().map(|(_, t)| *t).min().unwrap_or(0);
                let ttl = Duration::from_secs(u64::from(ttl)).max(MIN_TTL);
                let ips: Vec<IpAddr> = found.into_iter().map(|(ip, _)| ip).collect();
                debug!(host = %hp.host, addresses = ?ips, ttl = ?ttl, "member host name resolved");
                if let Ok(mut cache) = self.cache.lock() {
                    cache.insert(
                        key,
                        Entry {
                            ips: ips.clone(),
                            expires: (self.clock)() + ttl,
                        },
                    );
                }
                Ok(with_port(&ips, hp.port))
            }
            Ok(_) => Err(fail(QueryError::NoData("A/AAAA".into()))),
            Err(e) if e.is_negative() => {
                if let Ok(mut cache) = self.cache.lock() {
                    cache.remove(&key);
                }
                Err(fail(e))
            }
            Err(e) => match cached {
                Some(entry) if now < entry.expires + STALE_FOR => {
                    warn!(host = %hp.host, error = %e, addresses = ?entry.ips,
                        "name servers failing: using the last good answer for this member");
                    Ok(with_port(&entry.ips, hp.port))
                }
                _ => Err(fail(e)),
            },
        }
    }
}

/// Connects to a member given by host name: resolves it with the global
/// [`UpstreamResolver`] and tries each address in turn.
pub async fn connect(hp: &HostPort) -> io::Result<TcpStream> {
    let addrs = UpstreamResolver::global().resolve(hp).await?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{hp}: no address"));
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = io::Error::new(e.kind(), format!("{addr}: {e}")),
        }
    }
    Err(last)
}

fn with_port(ips: &[IpAddr], port: u16) -> Vec<SocketAddr> {
    ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
}

fn same_servers(a: &DnsPolicy, b: &DnsPolicy) -> bool {
    a.nameservers == b.nameservers && a.timeout == b.timeout && a.attempts == b.attempts
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
