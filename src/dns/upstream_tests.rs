//! The TTL cache of [`UpstreamResolver`], on a hand-moved clock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Answers from a script, counting the lookups.
struct Scripted {
    answer: Mutex<Result<Vec<(IpAddr, u32)>, QueryError>>,
    calls: AtomicUsize,
}

impl Scripted {
    fn new(answer: Result<Vec<(IpAddr, u32)>, QueryError>) -> Arc<Scripted> {
        Arc::new(Scripted {
            answer: Mutex::new(answer),
            calls: AtomicUsize::new(0),
        })
    }

    fn set(&self, answer: Result<Vec<(IpAddr, u32)>, QueryError>) {
        *self.answer.lock().expect("lock") = answer;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl HostLookup for Scripted {
    fn lookup<'a>(&'a self, _host: &'a str) -> LookupFuture<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.lock().expect("lock").clone();
        Box::pin(async move { answer })
    }
}

/// A clock that moves only when told.
#[derive(Clone)]
struct Manual(Arc<Mutex<Instant>>);

impl Manual {
    fn new() -> Manual {
        Manual(Arc::new(Mutex::new(Instant::now())))
    }

    fn clock(&self) -> Clock {
        let me = self.0.clone();
        Arc::new(move || *me.lock().expect("clock"))
    }

    fn advance(&self, d: Duration) {
        *self.0.lock().expect("clock") += d;
    }
}

fn resolver(fake: &Arc<Scripted>) -> (UpstreamResolver, Manual) {
    let time = Manual::new();
    (
        UpstreamResolver::with_lookup(fake.clone(), time.clock()),
        time,
    )
}

fn hp(host: &str) -> HostPort {
    HostPort {
        host: host.to_owned(),
        port: 2525,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn addr(s: &str) -> SocketAddr {
    SocketAddr::new(ip(s), 2525)
}

#[tokio::test]
async fn literal_needs_no_lookup() {
    let fake = Scripted::new(Err(QueryError::Timeout));
    let (r, _time) = resolver(&fake);
    let got = r.resolve(&hp("192.0.2.7")).await.expect("literal");
    assert_eq!(got, vec![addr("192.0.2.7")]);
    assert_eq!(fake.calls(), 0);
}

#[tokio::test]
async fn answer_is_cached_for_its_ttl_then_resolved_again() {
    let fake = Scripted::new(Ok(vec![(ip("192.0.2.1"), 60), (ip("192.0.2.2"), 30)]));
    let (r, time) = resolver(&fake);
    let first = r.resolve(&hp("mta.example")).await.expect("first");
    assert_eq!(first, vec![addr("192.0.2.1"), addr("192.0.2.2")]);
    assert_eq!(fake.calls(), 1);

    // The shortest TTL (30s) rules; within it, no lookup.
    time.advance(Duration::from_secs(29));
    r.resolve(&hp("MTA.example")).await.expect("cached");
    assert_eq!(fake.calls(), 1, "names are case-insensitive and cached");

    fake.set(Ok(vec![(ip("192.0.2.3"), 30)]));
    time.advance(Duration::from_secs(2));
    let again = r.resolve(&hp("mta.example")).await.expect("again");
    assert_eq!(again, vec![addr("192.0.2.3")]);
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn zero_ttl_is_cached_for_the_minimum() {
    let fake = Scripted::new(Ok(vec![(ip("192.0.2.1"), 0)]));
    let (r, time) = resolver(&fake);
    r.resolve(&hp("mta.example")).await.expect("first");
    r.resolve(&hp("mta.example")).await.expect("cached");
    assert_eq!(fake.calls(), 1);
    time.advance(MIN_TTL);
    r.resolve(&hp("mta.example")).await.expect("again");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn failing_servers_keep_the_last_good_answer_for_a_while() {
    let fake = Scripted::new(Ok(vec![(ip("192.0.2.1"), 10)]));
    let (r, time) = resolver(&fake);
    r.resolve(&hp("mta.example")).await.expect("first");

    fake.set(Err(QueryError::Timeout));
    time.advance(Duration::from_secs(11));
    let stale = r.resolve(&hp("mta.example")).await.expect("stale answer");
    assert_eq!(stale, vec![addr("192.0.2.1")]);
    assert_eq!(fake.calls(), 2, "an expired entry is asked for again");

    fake.set(Err(QueryError::ServerError(
        hickory_resolver::proto::op::ResponseCode::ServFail,
    )));
    time.advance(STALE_FOR - Duration::from_secs(2));
    assert!(
        r.resolve(&hp("mta.example")).await.is_ok(),
        "still within STALE_FOR"
    );

    time.advance(Duration::from_secs(2));
    let err = r.resolve(&hp("mta.example")).await.expect_err("too old");
    assert_eq!(
        err.source,
        QueryError::ServerError(hickory_resolver::proto::op::ResponseCode::ServFail)
    );
}

#[tokio::test]
async fn nxdomain_drops_the_entry() {
    let fake = Scripted::new(Ok(vec![(ip("192.0.2.1"), 10)]));
    let (r, time) = resolver(&fake);
    r.resolve(&hp("mta.example")).await.expect("first");
    fake.set(Err(QueryError::NxDomain));
    time.advance(Duration::from_secs(11));
    assert!(r.resolve(&hp("mta.example")).await.is_err());
    // Servers failing now: nothing stale is left to fall back on.
    fake.set(Err(QueryError::Timeout));
    assert!(r.resolve(&hp("mta.example")).await.is_err());
}

#[tokio::test]
async fn empty_answer_is_an_error() {
    let fake = Scripted::new(Ok(Vec::new()));
    let (r, _time) = resolver(&fake);
    let err = r.resolve(&hp("mta.example")).await.expect_err("no address");
    assert!(
        err.to_string().contains("cannot resolve mta.example"),
        "{err}"
    );
}

#[test]
fn hosts_file_names_resolve_without_name_servers() {
    let mut hosts = hickory_resolver::Hosts::default();
    let file = "127.0.0.1 localhost\n10.9.8.7 mta.example mta\n::1 localhost ip6-localhost\n";
    hosts
        .read_hosts_conf(file.as_bytes())
        .unwrap_or_else(|e| panic!("hosts text: {e}"));
    let ips = |name| {
        super::hosts_addresses(&hosts, name)
            .into_iter()
            .map(|(ip, _)| ip.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ips("mta.example"), ["10.9.8.7"]);
    assert_eq!(ips("MTA"), ["10.9.8.7"]);
    assert_eq!(ips("localhost"), ["127.0.0.1", "::1"]);
    assert!(ips("other.example").is_empty());
    assert!(super::hosts_is_usable(&hosts));
}
