use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::ResponseCode;

use super::*;

type Ptrs = Result<Vec<(String, u32)>, QueryError>;
type Addrs = Result<Vec<(IpAddr, u32)>, QueryError>;

/// A DNS of fixed answers; counts the PTR lookups. A name not listed is NXDOMAIN.
#[derive(Default)]
struct Fake {
    ptr: Mutex<HashMap<IpAddr, Ptrs>>,
    addrs: Mutex<HashMap<String, Addrs>>,
    asked: AtomicUsize,
    /// PTR lookups never answer.
    silent: bool,
}

impl Fake {
    fn ptr(self, ip: &str, answer: Ptrs) -> Self {
        self.ptr.lock().unwrap().insert(ip.parse().unwrap(), answer);
        self
    }

    fn addrs(self, name: &str, answer: Addrs) -> Self {
        self.addrs.lock().unwrap().insert(name.into(), answer);
        self
    }
}

impl NameLookup for Fake {
    fn reverse(&self, ip: IpAddr) -> Lookup<'_, (String, u32)> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let silent = self.silent;
        let answer = self.ptr.lock().unwrap().get(&ip).cloned();
        Box::pin(async move {
            if silent {
                std::future::pending::<()>().await;
            }
            answer.unwrap_or(Err(QueryError::NxDomain))
        })
    }

    fn addresses<'a>(&'a self, name: &'a str) -> Lookup<'a, (IpAddr, u32)> {
        let answer = self.addrs.lock().unwrap().get(name).cloned();
        Box::pin(async move { answer.unwrap_or(Err(QueryError::NxDomain)) })
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn found(name: &str) -> NameStatus {
    NameStatus::Found(name.into())
}

fn servfail() -> QueryError {
    QueryError::ServerError(ResponseCode::ServFail)
}

#[tokio::test]
async fn outcomes_follow_postfix() {
    let fake = Fake::default()
        .ptr("192.0.2.1", Ok(vec![("mx.example".into(), 300)]))
        .addrs("mx.example", Ok(vec![(ip("192.0.2.1"), 600)]))
        .ptr("192.0.2.2", Ok(vec![("other.example".into(), 300)]))
        .addrs("other.example", Ok(vec![(ip("192.0.2.99"), 600)]))
        .ptr("192.0.2.3", Err(servfail()))
        .ptr("192.0.2.4", Ok(vec![("flaky.example".into(), 300)]))
        .addrs("flaky.example", Err(QueryError::Timeout))
        .ptr("192.0.2.5", Err(QueryError::NoData("PTR".into())))
        .ptr(
            "192.0.2.6",
            Err(QueryError::ServerError(ResponseCode::Refused)),
        )
        .ptr("192.0.2.7", Ok(vec![("gone.example".into(), 300)]))
        .ptr("192.0.2.8", Ok(vec![("bad name.example".into(), 300)]))
        .ptr(
            "192.0.2.9",
            Err(QueryError::Other("connection refused".into())),
        );
    let cases: &[(&str, NameStatus, NameStatus, Option<u64>)] = &[
        // Confirmed: cached for the shorter TTL.
        (
            "192.0.2.1",
            found("mx.example"),
            found("mx.example"),
            Some(300),
        ),
        // A PTR name that does not resolve back: unknown, the PTR kept as the reverse name.
        (
            "192.0.2.2",
            NameStatus::Unavailable,
            found("other.example"),
            Some(60),
        ),
        (
            "192.0.2.3",
            NameStatus::TempUnavailable,
            NameStatus::TempUnavailable,
            None,
        ),
        (
            "192.0.2.4",
            NameStatus::TempUnavailable,
            found("flaky.example"),
            None,
        ),
        (
            "192.0.2.5",
            NameStatus::Unavailable,
            NameStatus::Unavailable,
            Some(60),
        ),
        (
            "192.0.2.6",
            NameStatus::Unavailable,
            NameStatus::Unavailable,
            Some(60),
        ),
        (
            "192.0.2.7",
            NameStatus::Unavailable,
            found("gone.example"),
            Some(60),
        ),
        (
            "192.0.2.8",
            NameStatus::Unavailable,
            NameStatus::Unavailable,
            Some(60),
        ),
        (
            "192.0.2.9",
            NameStatus::TempUnavailable,
            NameStatus::TempUnavailable,
            None,
        ),
        // No PTR at all (NXDOMAIN).
        (
            "192.0.2.10",
            NameStatus::Unavailable,
            NameStatus::Unavailable,
            Some(60),
        ),
    ];
    for (addr, name, reverse, ttl) in cases {
        let (got, got_ttl) = confirm(&fake, ip(addr)).await;
        assert_eq!(&got.name, name, "{addr}");
        assert_eq!(&got.reverse, reverse, "{addr}");
        assert_eq!(got_ttl, ttl.map(Duration::from_secs), "{addr}");
    }
}

#[tokio::test]
async fn the_first_ptr_name_that_confirms_wins() {
    let fake = Fake::default()
        .ptr(
            "2001:db8::25",
            Ok(vec![
                ("alias.example".into(), 100),
                ("mail.example".into(), 100),
                ("mail2.example".into(), 100),
            ]),
        )
        .addrs("alias.example", Ok(vec![(ip("2001:db8::26"), 100)]))
        .addrs("mail.example", Ok(vec![(ip("2001:db8::25"), 5)]))
        .addrs("mail2.example", Ok(vec![(ip("2001:db8::25"), 100)]));
    let (got, ttl) = confirm(&fake, ip("2001:db8::25")).await;
    assert_eq!(got.name, found("mail.example"));
    assert_eq!(got.reverse, found("alias.example"));
    assert_eq!(ttl, Some(Duration::from_secs(5)));
}

#[tokio::test]
async fn a_mapped_address_is_looked_up_as_ipv4() {
    let fake = Fake::default()
        .ptr("192.0.2.1", Ok(vec![("mx.example".into(), 0)]))
        .addrs("mx.example", Ok(vec![(ip("192.0.2.1"), 0)]));
    let (got, ttl) = confirm(&fake, ip("::ffff:192.0.2.1")).await;
    assert_eq!(got.name, found("mx.example"));
    assert_eq!(ttl, Some(MIN_TTL), "a TTL of 0 is cached for the minimum");
}

#[test]
fn temporary_failures_are_told_by_their_kind() {
    assert!(is_temporary(&servfail()));
    assert!(is_temporary(&QueryError::Timeout));
    assert!(is_temporary(&QueryError::Other("x".into())));
    assert!(!is_temporary(&QueryError::NxDomain));
    assert!(!is_temporary(&QueryError::NoData("PTR".into())));
    assert!(!is_temporary(&QueryError::ServerError(
        ResponseCode::Refused
    )));
    assert!(!is_temporary(&QueryError::ServerError(
        ResponseCode::NotImp
    )));
}

#[test]
fn host_names_as_postfix_accepts_them() {
    for good in [
        "mx.example.com",
        "a",
        "under_score.example",
        "a-b.c1",
        "1a.example",
    ] {
        assert!(valid_hostname(good), "{good}");
    }
    let long = "a".repeat(64);
    for bad in [
        "",
        "1.2.3.4",
        "a..b",
        "-a.example",
        "a-.example",
        "a b.example",
        "a.",
        ".a",
        long.as_str(),
        "\\032.example",
    ] {
        assert!(!valid_hostname(bad), "{bad:?}");
    }
}

#[test]
fn the_cache_expires_and_stays_bounded() {
    let t0 = Instant::now();
    let mut cache = Cache::new(2);
    let name = |n: &str| ClientName {
        name: found(n),
        reverse: found(n),
    };
    cache.insert(ip("192.0.2.1"), name("a"), Duration::from_secs(10), t0);
    assert_eq!(cache.get(ip("192.0.2.1"), t0), Some(name("a")));
    assert_eq!(
        cache.get(ip("192.0.2.1"), t0 + Duration::from_secs(10)),
        None
    );
    cache.insert(ip("192.0.2.2"), name("b"), Duration::from_secs(5), t0);
    // Full: the one expiring soonest goes.
    cache.insert(ip("192.0.2.3"), name("c"), Duration::from_secs(20), t0);
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.get(ip("192.0.2.2"), t0), None);
    assert_eq!(cache.get(ip("192.0.2.1"), t0), Some(name("a")));
    // Expired entries go before live ones.
    let later = t0 + Duration::from_secs(15);
    cache.insert(ip("192.0.2.4"), name("d"), Duration::from_secs(20), later);
    assert_eq!(cache.get(ip("192.0.2.3"), later), Some(name("c")));
    assert_eq!(cache.get(ip("192.0.2.4"), later), Some(name("d")));
    // Replacing an address needs no room.
    cache.insert(ip("192.0.2.4"), name("e"), Duration::from_secs(20), later);
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.get(ip("192.0.2.4"), later), Some(name("e")));
}

fn clock() -> (Arc<Mutex<Instant>>, Clock) {
    let now = Arc::new(Mutex::new(Instant::now()));
    let read = now.clone();
    (now, Arc::new(move || *read.lock().unwrap()))
}

#[tokio::test]
async fn answers_are_cached_for_their_ttl_and_failures_not_at_all() {
    let fake = Arc::new(
        Fake::default()
            .ptr("192.0.2.1", Ok(vec![("mx.example".into(), 30)]))
            .addrs("mx.example", Ok(vec![(ip("192.0.2.1"), 30)]))
            .ptr("192.0.2.3", Err(servfail())),
    );
    let (now, clock) = clock();
    let names = Arc::new(ClientNames::with_lookup(Some(fake.clone()), clock));
    for _ in 0..3 {
        let got = names.lookup(ip("192.0.2.1")).await;
        assert_eq!(got.name, found("mx.example"));
    }
    assert_eq!(fake.asked.load(Ordering::SeqCst), 1);
    *now.lock().unwrap() += Duration::from_secs(31);
    names.lookup(ip("192.0.2.1")).await;
    assert_eq!(fake.asked.load(Ordering::SeqCst), 2);
    for _ in 0..2 {
        let got = names.lookup(ip("192.0.2.3")).await;
        assert_eq!(got, ClientName::temp_unavailable());
    }
    assert_eq!(fake.asked.load(Ordering::SeqCst), 4);
    // NXDOMAIN: cached for the negative TTL.
    names.lookup(ip("192.0.2.50")).await;
    names.lookup(ip("192.0.2.50")).await;
    assert_eq!(fake.asked.load(Ordering::SeqCst), 5);
    assert_eq!(names.cached(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_silent_name_server_gives_tempunavail_within_the_bound() {
    let fake = Arc::new(Fake {
        silent: true,
        ..Fake::default()
    });
    let names = Arc::new(ClientNames::with_lookup(Some(fake), Arc::new(Instant::now)));
    let started = tokio::time::Instant::now();
    let got = names.lookup(ip("192.0.2.1")).await;
    assert_eq!(got, ClientName::temp_unavailable());
    let waited = started.elapsed();
    let bound = DnsPolicy::default().client_lookup_timeout;
    assert!(waited >= bound && waited < bound + Duration::from_millis(100));
    assert_eq!(names.cached(), 0);
}

#[tokio::test]
async fn without_a_name_server_every_name_is_tempunavail() {
    let names = Arc::new(ClientNames::with_lookup(None, Arc::new(Instant::now)));
    assert_eq!(
        names.lookup(ip("192.0.2.1")).await,
        ClientName::temp_unavailable()
    );
}
