//! The client's host name as a member would find it (SPEC 4.3, XCLIENT
//! `NAME` and `REVERSE_NAME`): forward-confirmed reverse DNS of the client
//! address, decided the way Postfix's smtpd decides it.
//!
//! The PTR names of the address are looked up; the first one whose A/AAAA
//! records contain the address is the client's name. What each outcome
//! means, as Postfix concludes it for a direct connection:
//!
//! | lookup | name | reverse name |
//! | --- | --- | --- |
//! | PTR: NXDOMAIN, no record, or no valid host name | `[UNAVAILABLE]` | `[UNAVAILABLE]` |
//! | PTR: SERVFAIL, timeout, no server | `[TEMPUNAVAIL]` | `[TEMPUNAVAIL]` |
//! | a PTR name's A/AAAA hold the address | that name | the first PTR name |
//! | no PTR name confirms, one lookup failed for now | `[TEMPUNAVAIL]` | the first PTR name |
//! | no PTR name confirms | `[UNAVAILABLE]` | the first PTR name |
//!
//! A server's REFUSED, NOTIMP or FORMERR is final (glibc's `NO_RECOVERY`);
//! only SERVFAIL is temporary (`TRY_AGAIN`). Everything is decided on
//! [`QueryError`]'s variants and hickory's [`ResponseCode`], never on text.
//!
//! [`ClientNames`] caches answers per address for the records' TTL (a
//! negative one for at most [`NEGATIVE_TTL`], a temporary failure not at
//! all) in a map of at most [`CACHE_ENTRIES`] addresses, and bounds every
//! lookup by `[dns] client_lookup_timeout`.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::ResponseCode;
use tracing::{debug, warn};

use super::resolver::{Answer, Dns, QueryError};
use crate::config::DnsPolicy;

/// How long "no name" is cached at most (and a PTR whose TTL is shorter, for that).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// How long a confirmed name is cached at most, whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Shortest time an answer is cached (a TTL of 0 would ask again per session).
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Addresses kept in the cache at most.
pub const CACHE_ENTRIES: usize = 16_384;
/// PTR names tried at most for one address.
pub const MAX_PTR_NAMES: usize = 8;

/// One of the two names as XCLIENT carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameStatus {
    /// A host name.
    Found(String),
    /// None: the member concludes "unknown" for good (`[UNAVAILABLE]`).
    Unavailable,
    /// The DNS could not say now (`[TEMPUNAVAIL]`).
    TempUnavailable,
}

impl NameStatus {
    /// The XCLIENT attribute value.
    pub fn as_xclient(&self) -> &str {
        match self {
            NameStatus::Found(name) => name,
            NameStatus::Unavailable => "[UNAVAILABLE]",
            NameStatus::TempUnavailable => "[TEMPUNAVAIL]",
        }
    }
}

/// The client's names: `name` forward-confirmed (XCLIENT `NAME`), `reverse`
/// the PTR name as found (XCLIENT `REVERSE_NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientName {
    /// Forward-confirmed reverse DNS name.
    pub name: NameStatus,
    /// The (first valid) PTR name, unconfirmed.
    pub reverse: NameStatus,
}

impl ClientName {
    /// Both names temporarily unavailable (a lookup that failed or ran out of time).
    pub fn temp_unavailable() -> ClientName {
        ClientName {
            name: NameStatus::TempUnavailable,
            reverse: NameStatus::TempUnavailable,
        }
    }

    /// Both names unavailable for good (no PTR; no lookups made).
    pub fn unavailable() -> ClientName {
        ClientName {
            name: NameStatus::Unavailable,
            reverse: NameStatus::Unavailable,
        }
    }
}

/// A future of one DNS lookup.
pub type Lookup<'a, T> = Pin<Box<dyn Future<Output = Result<Vec<T>, QueryError>> + Send + 'a>>;

/// The two lookups forward-confirmation needs (the name servers; a fake in tests).
pub trait NameLookup: Send + Sync {
    /// The PTR names of `ip` with their TTLs.
    fn reverse(&self, ip: IpAddr) -> Lookup<'_, (String, u32)>;
    /// The A and AAAA records of `name` with their TTLs.
    fn addresses<'a>(&'a self, name: &'a str) -> Lookup<'a, (IpAddr, u32)>;
}

impl NameLookup for Dns {
    fn reverse(&self, ip: IpAddr) -> Lookup<'_, (String, u32)> {
        Box::pin(async move {
            let answers = Dns::reverse(self, ip).await?;
            Ok(answers
                .into_iter()
                .filter_map(|a| match a {
                    Answer::Ptr(name, ttl) => Some((name, ttl)),
                    _ => None,
                })
                .collect())
        })
    }

    fn addresses<'a>(&'a self, name: &'a str) -> Lookup<'a, (IpAddr, u32)> {
        Box::pin(async move { Ok(Answer::addresses_in(Dns::addresses(self, name).await?)) })
    }
}

/// True when the failure may pass (ask again later), false when it is the answer.
pub fn is_temporary(e: &QueryError) -> bool {
    match e {
        QueryError::NxDomain | QueryError::NoData(_) => false,
        QueryError::ServerError(code) => *code == ResponseCode::ServFail,
        QueryError::Timeout | QueryError::Other(_) => true,
    }
}

/// A host name as Postfix's `valid_hostname` accepts it: labels of letters,
/// digits, `_` and inner `-`, at most 63 octets each and 255 in all, not
/// all digits (that would be an address).
pub fn valid_hostname(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut numeric = true;
    for label in name.split('.') {
        let bytes = label.as_bytes();
        let inner_ok = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
        if bytes.is_empty()
            || bytes.len() > 63
            || !inner_ok
            || bytes.first() == Some(&b'-')
            || bytes.last() == Some(&b'-')
        {
            return false;
        }
        numeric &= bytes.iter().all(u8::is_ascii_digit);
    }
    !numeric
}

/// Looks `ip` up: the names and how long the answer may be cached (`None`:
/// not at all, a temporary failure).
pub async fn confirm(lookup: &dyn NameLookup, ip: IpAddr) -> (ClientName, Option<Duration>) {
    let ip = ip.to_canonical();
    let ptrs = match lookup.reverse(ip).await {
        Ok(ptrs) => ptrs,
        Err(e) if is_temporary(&e) => {
            debug!(client = %ip, error = %e, "client PTR lookup failed for now");
            return (ClientName::temp_unavailable(), None);
        }
        Err(_) => return (ClientName::unavailable(), Some(NEGATIVE_TTL)),
    };
    let names: Vec<(String, u32)> = ptrs
        .into_iter()
        .filter(|(name, _)| valid_hostname(name))
        .take(MAX_PTR_NAMES)
        .collect();
    let Some((first, first_ttl)) = names.first().cloned() else {
        return (ClientName::unavailable(), Some(NEGATIVE_TTL));
    };
    let reverse = NameStatus::Found(first);
    let mut temporary = false;
    for (name, ptr_ttl) in names {
        match lookup.addresses(&name).await {
            Ok(addrs) => {
                let matching = addrs.iter().filter(|(a, _)| a.to_canonical() == ip);
                if let Some(addr_ttl) = matching.map(|(_, t)| *t).min() {
                    let ttl = ttl_of(ptr_ttl.min(addr_ttl)).min(MAX_TTL);
                    let name = NameStatus::Found(name);
                    return (ClientName { name, reverse }, Some(ttl));
                }
            }
            Err(e) if is_temporary(&e) => temporary = true,
            Err(_) => {}
        }
    }
    if temporary {
        let name = NameStatus::TempUnavailable;
        return (ClientName { name, reverse }, None);
    }
    let ttl = ttl_of(first_ttl).min(NEGATIVE_TTL);
    let name = NameStatus::Unavailable;
    (ClientName { name, reverse }, Some(ttl))
}

fn ttl_of(seconds: u32) -> Duration {
    Duration::from_secs(u64::from(seconds)).max(MIN_TTL)
}

/// Answers kept per address until they expire; at most `cap` of them.
#[derive(Debug)]
pub struct Cache {
    entries: HashMap<IpAddr, (ClientName, Instant)>,
    cap: usize,
}

impl Cache {
    /// An empty cache of at most `cap` addresses.
    pub fn new(cap: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// The answer for `ip`, if one is cached and not expired at `now`.
    pub fn get(&self, ip: IpAddr, now: Instant) -> Option<ClientName> {
        let (name, expires) = self.entries.get(&ip)?;
        (now < *expires).then(|| name.clone())
    }

    /// Keeps `name` for `ip` until `now + ttl`. When full, expired entries go
    /// first, then the one that expires soonest.
    pub fn insert(&mut self, ip: IpAddr, name: ClientName, ttl: Duration, now: Instant) {
        if self.entries.len() >= self.cap && !self.entries.contains_key(&ip) {
            self.entries.retain(|_, (_, expires)| now < *expires);
            if self.entries.len() >= self.cap {
                let soonest = self.entries.iter().min_by_key(|(_, (_, e))| *e);
                if let Some(key) = soonest.map(|(k, _)| *k) {
                    self.entries.remove(&key);
                }
            }
        }
        self.entries.insert(ip, (name, now + ttl));
    }

    /// Addresses cached (expired ones included until they are pushed out).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Where "now" comes from (the real clock; a hand-moved one in tests).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The lookup in use, with the `[dns]` settings it was made from.
struct Current {
    policy: DnsPolicy,
    lookup: Option<Arc<dyn NameLookup>>,
}

/// Client names for the sessions: bounded lookups through the `[dns]`
/// name servers, with the cache. One per daemon; `configure` follows reloads.
pub struct ClientNames {
    current: Mutex<Current>,
    cache: Mutex<Cache>,
    clock: Clock,
}

impl std::fmt::Debug for ClientNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientNames").finish_non_exhaustive()
    }
}

impl ClientNames {
    /// Client names through the name servers of `policy`.
    pub fn new(policy: &DnsPolicy) -> ClientNames {
        let names = ClientNames::with_lookup(None, Arc::new(Instant::now));
        names.configure(policy);
        names
    }

    /// Client names through `lookup` (`None`: every answer `[TEMPUNAVAIL]`),
    /// with `clock` for expiry (tests).
    pub fn with_lookup(lookup: Option<Arc<dyn NameLookup>>, clock: Clock) -> ClientNames {
        ClientNames {
            current: Mutex::new(Current {
                policy: DnsPolicy::default(),
                lookup,
            }),
            cache: Mutex::new(Cache::new(CACHE_ENTRIES)),
            clock,
        }
    }

    /// Follows `policy`: new name servers (or their timeouts) mean a new
    /// client and an empty cache; the lookup bound is taken as it is.
    pub fn configure(&self, policy: &DnsPolicy) {
        let Ok(mut current) = self.current.lock() else {
            return;
        };
        let same = current.lookup.is_some()
            && current.policy.nameservers == policy.nameservers
            && current.policy.timeout == policy.timeout
            && current.policy.attempts == policy.attempts;
        if !same {
            current.lookup = match Dns::new(policy) {
                Ok(dns) => Some(Arc::new(dns)),
                Err(e) => {
                    warn!(error = %e, "client names cannot be looked up: XCLIENT NAME will be [TEMPUNAVAIL]");
                    None
                }
            };
            if let Ok(mut cache) = self.cache.lock() {
                cache.clear();
            }
        }
        current.policy = policy.clone();
    }

    /// The names of `ip`: cached, or looked up within `[dns]
    /// client_lookup_timeout` (else `[TEMPUNAVAIL]`). The future owns what it
    /// uses, so a session may run it as a task of its own.
    pub fn lookup(
        self: &Arc<Self>,
        ip: IpAddr,
    ) -> impl Future<Output = ClientName> + Send + 'static {
        let names = self.clone();
        async move {
            let now = (names.clock)();
            if let Some(found) = names.cache.lock().ok().and_then(|c| c.get(ip, now)) {
                return found;
            }
            let (lookup, bound) = match names.current.lock() {
                Ok(current) if !current.policy.client_names => {
                    return ClientName::unavailable();
                }
                Ok(current) => (current.lookup.clone(), current.policy.client_lookup_timeout),
                Err(_) => (None, Duration::ZERO),
            };
            let Some(lookup) = lookup else {
                return ClientName::temp_unavailable();
            };
            let Ok((found, ttl)) = tokio::time::timeout(bound, confirm(&*lookup, ip)).await else {
                debug!(client = %ip, timeout = ?bound, "client name lookup ran out of time");
                return ClientName::temp_unavailable();
            };
            if let Some(ttl) = ttl
                && let Ok(mut cache) = names.cache.lock()
            {
                cache.insert(ip, found.clone(), ttl, (names.clock)());
            }
            found
        }
    }

    /// Addresses in the cache (for tests and `status`).
    pub fn cached(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.len())
    }
}

#[cfg(test)]
#[path = "client_name_tests.rs"]
mod tests;
