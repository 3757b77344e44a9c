//! Prometheus metrics (SPEC section 10): the endpoint at `[metrics] listen`
//! scraped over a real socket (and with curl), every series described, and
//! the counters moving by exactly the right amounts with the right labels for
//! accepted, rejected and tempfailed messages, failovers, injection denials,
//! member health and refusals. Every wait is a poll with a deadline.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::client::send_one;
use common::metrics::{http_get_text, metrics_addr, with_metrics};
use common::peers::SmtpSink;
use common::{Behavior, Client, FakeMta, Mxgate, eventually, ip, listener, member, policy_with};

const WAIT: Duration = Duration::from_secs(10);
const CLIENT: &str = "127.0.0.33";

/// Every series mxgate describes.
const SERIES: [(&str, &str); 8] = [
    ("mxgate_smtp_sessions_total", "counter"),
    ("mxgate_smtp_active_sessions", "gauge"),
    ("mxgate_smtp_refused_total", "counter"),
    ("mxgate_smtp_messages_total", "counter"),
    ("mxgate_smtp_bytes_total", "counter"),
    ("mxgate_member_up", "gauge"),
    ("mxgate_route_failovers_total", "counter"),
    ("mxgate_injection_denied_total", "counter"),
];

/// A gateway with metrics on a free port and `extra` lines on its listener.
struct Gw {
    gw: Mxgate,
    metrics: SocketAddr,
}

impl Gw {
    fn start(listener_extra: &str, backoff: &str, members: &[String]) -> Gw {
        let metrics = metrics_addr();
        let node = with_metrics(&listener(listener_extra), metrics);
        let policy = policy_with("", &[("backoff", &format!("\"{backoff}\""))], members);
        Gw {
            gw: Mxgate::start_with(&node, &policy),
            metrics,
        }
    }

    /// One message from `client` ([`send_one`]): the reply to its end of data.
    fn send(&self, client: IpAddr, body: &str) -> common::client::Reply {
        send_one(client, self.gw.smtp_addr(), body)
    }

    fn scrape(&self) -> Scrape {
        Scrape::parse(&http_get_text(self.metrics, "/metrics"))
    }

    /// Polls until `name{labels}` has the value `want`; panics with the last scrape otherwise.
    fn wait_value(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let mut last = None;
        let ok = eventually(WAIT, || {
            let s = self.scrape();
            let v = s.value(name, labels);
            last = Some(s);
            v == Some(want)
        });
        assert!(
            ok,
            "{name}{labels:?} never became {want}; last scrape:\n{}",
            last.map(|s| s.text).unwrap_or_default()
        );
    }
}

/// One scrape: the raw text and every sample by name and sorted labels.
struct Scrape {
    text: String,
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut labels: Vec<(String, String)> = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect();
            labels.sort();
            let value = value.parse().unwrap_or(f64::NAN);
            samples.insert((name.to_owned(), labels), value);
        }
        Scrape {
            text: text.to_owned(),
            samples,
        }
    }

    /// The sample with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut key: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        key.sort();
        self.samples.get(&(name.to_owned(), key)).copied()
    }

    /// The sample with exactly these labels, 0 when absent.
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Sum over every sample of `name`.
    fn total(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }
}

#[test]
fn every_series_is_described_and_messages_count_by_member_and_result() {
    let ok = FakeMta::start("ok", Behavior::Normal);
    let no = FakeMta::start("no", Behavior::FinalReply("554 5.7.1 no".into()));
    // Public mail goes to `ok` (the only ingress member); mail injected by
    // member `src` (127.0.8.1) goes to `no`.
    let gw = Gw::start(
        "",
        "30s",
        &[
            member("ok", ok.addr, ""),
            member("no", no.addr, "ingress = false"),
            "[members.src]\naddresses = [\"127.0.8.1\"]\ninject_to = [\"no\"]\ningress = false\n"
                .to_owned(),
        ],
    );

    // Before any traffic: listener and member series exist at 0 (member ones
    // after the first refresh), with HELP and TYPE.
    gw.wait_value("mxgate_member_up", &[("member", "ok")], 1.0);
    gw.wait_value("mxgate_member_up", &[("member", "no")], 1.0);
    let s = gw.scrape();
    for (name, kind) in SERIES {
        if name == "mxgate_route_failovers_total" {
            continue; // exists once a failover happened (checked in the failover test)
        }
        assert!(
            s.text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{}",
            s.text
        );
        assert!(
            s.text.contains(&format!("# TYPE {name} {kind}\n")),
            "no TYPE {kind} for {name}:\n{}",
            s.text
        );
    }
    assert_eq!(
        s.value("mxgate_smtp_sessions_total", &[("listener", "inbound")]),
        Some(0.0)
    );
    assert_eq!(
        s.value("mxgate_smtp_active_sessions", &[("listener", "inbound")]),
        Some(0.0)
    );
    for result in ["accepted", "rejected", "tempfail"] {
        assert_eq!(
            s.value(
                "mxgate_smtp_messages_total",
                &[("member", "ok"), ("result", result)]
            ),
            Some(0.0)
        );
    }
    assert_eq!(
        s.value("mxgate_injection_denied_total", &[("source", "src")]),
        Some(0.0)
    );
    assert_eq!(
        s.value("mxgate_injection_denied_total", &[("source", "ok")]),
        None
    );
    assert_eq!(
        s.value("mxgate_smtp_bytes_total", &[("member", "ok")]),
        Some(0.0)
    );

    // Two accepted by `ok`, one rejected by `no` (5xx to the end of data),
    // one refused by mxgate for a bare LF (on `ok`).
    let body = "Subject: metrics\r\n\r\nhello";
    for _ in 0..2 {
        let r = gw.send(ip(CLIENT), body);
        assert!(r.ok(), "end of data: {r}");
    }
    let r = gw.send(ip("127.0.8.1"), body);
    assert_eq!(r.code, 554, "end of data on no: {r}");
    let r = gw.send(ip(CLIENT), "Subject: bare\n\nLF only");
    assert_eq!(r.code, 550, "bare LF: {r}");

    let msgs = "mxgate_smtp_messages_total";
    gw.wait_value(
        "mxgate_smtp_active_sessions",
        &[("listener", "inbound")],
        0.0,
    );
    let s = gw.scrape();
    assert_eq!(
        s.count(msgs, &[("member", "ok"), ("result", "accepted")]),
        2.0,
        "{}",
        s.text
    );
    assert_eq!(
        s.count(msgs, &[("member", "ok"), ("result", "rejected")]),
        1.0,
        "{}",
        s.text
    );
    assert_eq!(
        s.count(msgs, &[("member", "no"), ("result", "rejected")]),
        1.0,
        "{}",
        s.text
    );
    assert_eq!(s.total(msgs), 4.0, "{}", s.text);
    assert_eq!(
        s.count("mxgate_smtp_sessions_total", &[("listener", "inbound")]),
        4.0
    );
    assert_eq!(
        s.count(
            "mxgate_smtp_refused_total",
            &[("listener", "inbound"), ("reason", "bare_line_ending")]
        ),
        1.0
    );
    // The bytes of the two accepted messages (content and its last CRLF), none for `no`.
    let per_message = (body.len() + 2) as f64;
    assert_eq!(
        s.count("mxgate_smtp_bytes_total", &[("member", "ok")]),
        2.0 * per_message
    );
    assert_eq!(s.count("mxgate_smtp_bytes_total", &[("member", "no")]), 0.0);
    assert_eq!(ok.messages().len(), 2);

    // curl sees the same endpoint.
    if common::require("curl") {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "10"])
            .arg(format!("http://{}/metrics", gw.metrics))
            .output()
            .expect("run curl");
        assert!(out.status.success(), "curl: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let s = Scrape::parse(&text);
        assert_eq!(
            s.count(msgs, &[("member", "ok"), ("result", "accepted")]),
            2.0,
            "{text}"
        );
        assert!(text.contains("# TYPE mxgate_member_up gauge"), "{text}");
    }

    // docs/metrics.md lists every series exported here and exactly the
    // refusal reasons (all pre-registered at zero).
    let s = gw.scrape();
    let (series, reasons) = documented();
    for line in s.text.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|l| l.split(' ').next())
        {
            assert!(
                series.contains(name),
                "{name} is exported but docs/metrics.md does not list it"
            );
        }
    }
    let exported: BTreeSet<String> = s
        .samples
        .keys()
        .filter(|(name, _)| name == "mxgate_smtp_refused_total")
        .flat_map(|(_, labels)| labels.iter())
        .filter(|(k, _)| k == "reason")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(
        exported, reasons,
        "the refusal reasons exported (left) and in docs/metrics.md (right)"
    );
}

/// The series docs/metrics.md lists in its table, and the `reason` values
/// of its refusal table.
fn documented() -> (BTreeSet<String>, BTreeSet<String>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
    let text = std::fs::read_to_string(path).expect("read docs/metrics.md");
    let mut series = BTreeSet::new();
    let mut reasons = BTreeSet::new();
    let mut section = "";
    for line in text.lines() {
        if line.starts_with("## ") {
            section = line;
        }
        let Some(first) = line
            .strip_prefix("| `")
            .and_then(|rest| rest.split('`').next())
        else {
            continue;
        };
        if first.starts_with("mxgate_") {
            series.insert(first.to_owned());
        } else if section.contains("`reason` of `mxgate_smtp_refused_total`") {
            reasons.insert(first.to_owned());
        }
    }
    assert!(
        series.len() >= 15 && reasons.len() >= 8,
        "docs/metrics.md: tables not found ({series:?}, {reasons:?})"
    );
    (series, reasons)
}

/// docs/metrics.md lists exactly the series the source defines (every
/// `pub const NAME: &str = "mxgate_..."` under src/), so it names none the
/// daemon cannot export, also those that need a cluster, DNS checks or LFT.
#[test]
fn docs_list_exactly_the_series_the_source_defines() {
    let mut defined = BTreeSet::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    let mut budget = 10_000; // bounded walk
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src").flatten() {
            budget -= 1;
            assert!(budget > 0, "src/ has more files than expected");
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for line in text.lines().map(str::trim) {
                if line.starts_with("pub const ")
                    && let Some(name) = line.split('"').nth(1)
                    && name.starts_with("mxgate_")
                {
                    defined.insert(name.to_owned());
                }
            }
        }
    }
    let (series, _) = documented();
    assert!(
        defined.len() >= 20,
        "too few series found in src/: {defined:?}"
    );
    assert_eq!(
        defined, series,
        "series defined in src/ (left) and listed in docs/metrics.md (right)"
    );
}

#[test]
fn failover_counts_and_a_killed_member_goes_down_then_up_after_restart() {
    let a = FakeMta::start("a", Behavior::Normal);
    let b = FakeMta::start("b", Behavior::Normal);
    let gw = Gw::start(
        "",
        "2s",
        &[member("a", a.addr, ""), member("b", b.addr, "")],
    );
    let first = gw.gw.first_choice(ip(CLIENT)).expect("a first choice");
    let (first_mta, second_mta, second) = if first == "a" {
        (&a, &b, "b")
    } else {
        (&b, &a, "a")
    };
    gw.wait_value("mxgate_member_up", &[("member", &first)], 1.0);
    first_mta.kill();

    let r = gw.send(ip(CLIENT), "Subject: failover\r\n\r\nhello");
    assert!(r.ok(), "end of data after failover: {r}");
    assert_eq!(second_mta.messages().len(), 1);
    gw.wait_value("mxgate_member_up", &[("member", &first)], 0.0);
    let s = gw.scrape();
    assert_eq!(
        s.count(
            "mxgate_route_failovers_total",
            &[("from", &first), ("to", second)]
        ),
        1.0,
        "{}",
        s.text
    );
    assert_eq!(s.total("mxgate_route_failovers_total"), 1.0, "{}", s.text);
    assert_eq!(
        s.count(
            "mxgate_smtp_messages_total",
            &[("member", second), ("result", "accepted")]
        ),
        1.0
    );
    assert_eq!(s.total("mxgate_smtp_messages_total"), 1.0, "{}", s.text);
    assert_eq!(
        s.value("mxgate_member_up", &[("member", second)]),
        Some(1.0)
    );
    // The one series the first test could not see without a failover.
    assert!(
        s.text.contains("# HELP mxgate_route_failovers_total "),
        "{}",
        s.text
    );
    assert!(
        s.text
            .contains("# TYPE mxgate_route_failovers_total counter\n"),
        "{}",
        s.text
    );

    // The back-off (2s) expires with no event: the periodic refresh shows it.
    // A real MTA comes back on the killed member's port and takes mail again.
    let restarted = common::require("smtp-sink").then(|| SmtpSink::start_at(first_mta.addr));
    gw.wait_value("mxgate_member_up", &[("member", &first)], 1.0);
    if let Some(sink) = restarted {
        let r = gw.send(ip(CLIENT), "Subject: back\r\n\r\nhello again");
        assert!(r.ok(), "end of data on the restarted member: {r}");
        assert_eq!(sink.wait_count(1, WAIT), 1);
        gw.wait_value(
            "mxgate_smtp_messages_total",
            &[("member", &first), ("result", "accepted")],
            1.0,
        );
        let s = gw.scrape();
        assert_eq!(s.total("mxgate_route_failovers_total"), 1.0, "{}", s.text);
    }
}

#[test]
fn no_member_is_a_tempfail_and_the_member_comes_back_up() {
    let solo = FakeMta::start("solo", Behavior::Greet("421 4.3.2 restarting".into()));
    let gw = Gw::start("", "2s", &[member("solo", solo.addr, "")]);
    gw.wait_value("mxgate_member_up", &[("member", "solo")], 1.0);

    let mut c = Client::greeted_from(ip(CLIENT), gw.gw.smtp_addr());
    assert!(c.cmd("EHLO client.example").ok());
    let r = c.cmd("MAIL FROM:<s@source.test>");
    assert!(r.text.starts_with("451 4.4.1"), "MAIL: {r}");
    assert_eq!(c.cmd("QUIT").code, 221);
    gw.wait_value("mxgate_member_up", &[("member", "solo")], 0.0);
    let s = gw.scrape();
    assert_eq!(
        s.count(
            "mxgate_smtp_messages_total",
            &[("member", "solo"), ("result", "tempfail")]
        ),
        1.0,
        "{}",
        s.text
    );
    assert_eq!(s.total("mxgate_smtp_messages_total"), 1.0, "{}", s.text);

    solo.set_behavior(Behavior::Normal);
    gw.wait_value("mxgate_member_up", &[("member", "solo")], 1.0);
    let r = gw.send(ip(CLIENT), "Subject: up\r\n\r\nhello");
    assert!(r.ok(), "end of data: {r}");
    gw.wait_value(
        "mxgate_smtp_messages_total",
        &[("member", "solo"), ("result", "accepted")],
        1.0,
    );
}

#[test]
fn injection_denials_count_per_source_member() {
    let gw1 = FakeMta::start("gw1", Behavior::Normal);
    let gw2 = FakeMta::start("gw2", Behavior::Normal);
    let gw = Gw::start(
        "",
        "30s",
        &[
            member(
                "gw1",
                gw1.addr,
                "addresses = [\"127.0.5.1\"]\ninject_to = []",
            ),
            member("gw2", gw2.addr, ""),
        ],
    );
    gw.wait_value("mxgate_injection_denied_total", &[("source", "gw1")], 0.0);
    let mut c = Client::greeted_from(ip("127.0.5.1"), gw.gw.smtp_addr());
    assert!(c.cmd("EHLO gw1.example").ok());
    for _ in 0..2 {
        let r = c.cmd("MAIL FROM:<s@source.test>");
        assert!(r.text.starts_with("550 5.7.1"), "MAIL: {r}");
        assert!(c.cmd("RSET").ok());
    }
    assert_eq!(c.cmd("QUIT").code, 221);
    let s = gw.scrape();
    assert_eq!(
        s.count("mxgate_injection_denied_total", &[("source", "gw1")]),
        2.0,
        "{}",
        s.text
    );
    assert_eq!(s.total("mxgate_injection_denied_total"), 2.0, "{}", s.text);
    // A denial is no message: nothing reached a member.
    assert_eq!(s.total("mxgate_smtp_messages_total"), 0.0, "{}", s.text);
    assert_eq!(gw1.connections() + gw2.connections(), 0);
}

#[test]
fn refusals_count_by_reason() {
    let m = FakeMta::start("m", Behavior::Normal);
    let gw = Gw::start(
        "greet_delay = \"300ms\"\nmax_message_size = 1000",
        "30s",
        &[member("m", m.addr, "")],
    );
    let refused = |reason: &str| {
        gw.scrape().count(
            "mxgate_smtp_refused_total",
            &[("listener", "inbound"), ("reason", reason)],
        )
    };
    for reason in [
        "pregreet",
        "proxy_untrusted",
        "xclient_untrusted",
        "bare_line_ending",
        "message_size",
    ] {
        assert_eq!(refused(reason), 0.0, "{reason} before any traffic");
    }

    // Talking before the greeting.
    let mut c = Client::connect(gw.gw.smtp_addr());
    c.send(b"EHLO early.example\r\n");
    let r = c.reply();
    assert!(r.text.starts_with("554 5.5.1"), "pre-greet: {r}");
    // A PROXY header from an untrusted peer.
    let mut c = Client::connect(gw.gw.smtp_addr());
    c.send(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 25\r\n");
    let r = c.reply();
    assert!(r.text.starts_with("550 5.7.1"), "untrusted PROXY: {r}");
    // XCLIENT from an untrusted client, then a MAIL SIZE over the limit.
    let mut c = Client::greeted_from(ip(CLIENT), gw.gw.smtp_addr());
    assert!(c.cmd("EHLO client.example").ok());
    let r = c.cmd("XCLIENT ADDR=192.0.2.9");
    assert!(r.text.starts_with("550 5.7.1"), "XCLIENT: {r}");
    let r = c.cmd("MAIL FROM:<s@source.test> SIZE=5000");
    assert!(r.text.starts_with("552"), "MAIL SIZE: {r}");
    assert_eq!(c.cmd("QUIT").code, 221);

    gw.wait_value(
        "mxgate_smtp_refused_total",
        &[("listener", "inbound"), ("reason", "pregreet")],
        1.0,
    );
    gw.wait_value(
        "mxgate_smtp_refused_total",
        &[("listener", "inbound"), ("reason", "proxy_untrusted")],
        1.0,
    );
    assert_eq!(refused("xclient_untrusted"), 1.0);
    assert_eq!(refused("message_size"), 1.0);
    assert_eq!(refused("bare_line_ending"), 0.0);
    gw.wait_value(
        "mxgate_smtp_sessions_total",
        &[("listener", "inbound")],
        3.0,
    );
    gw.wait_value(
        "mxgate_smtp_active_sessions",
        &[("listener", "inbound")],
        0.0,
    );
}

#[test]
fn limit_refusals_count_by_reason() {
    let m = FakeMta::start("m", Behavior::Normal);
    let gw = Gw::start(
        "max_sessions = 1\nmax_errors = 2\ncommand_timeout = \"1s\"",
        "30s",
        &[member("m", m.addr, "")],
    );
    let key = |reason: &'static str| [("listener", "inbound"), ("reason", reason)];
    // One session holds the only slot; a second is refused at the greeting.
    let mut first = Client::greeted_from(ip(CLIENT), gw.gw.smtp_addr());
    let mut second = Client::connect(gw.gw.smtp_addr());
    assert!(second.reply().text.starts_with("421 4.7.0"));
    gw.wait_value("mxgate_smtp_refused_total", &key("max_sessions"), 1.0);
    // Two errors close the first session.
    first.expect("BOGUS1", "500");
    first.send(b"BOGUS2\r\n");
    let replies = first.read_to_close().expect("replies");
    assert!(
        replies.last().is_some_and(|r| r.starts_with("421 4.7.0")),
        "{replies:?}"
    );
    gw.wait_value("mxgate_smtp_refused_total", &key("max_errors"), 1.0);
    // A silent client times out.
    // The slot is free again once the closed session's task has ended.
    let mut idle = None;
    assert!(common::eventually(Duration::from_secs(10), || {
        let mut c = Client::connect(gw.gw.smtp_addr());
        let greeted = c.reply().code == 220;
        if greeted {
            idle = Some(c);
        }
        greeted
    }));
    let mut idle = idle.expect("greeted");
    let r = idle.reply();
    assert!(r.text.starts_with("421 4.4.2"), "{r}");
    gw.wait_value("mxgate_smtp_refused_total", &key("timeout"), 1.0);
}

#[test]
fn a_metrics_port_in_use_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = common::shared_tempdir();
    let config = dir.path().join("mxgate.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"test\"\ndata_dir = \"data\"\npolicy = \"cluster.toml\"\n\n{}\n[metrics]\nlisten = \"{addr}\"\n",
            common::default_listener()
        ),
    )
    .expect("write mxgate.toml");
    std::fs::write(
        dir.path().join("cluster.toml"),
        "[members.m]\nsmtp = \"127.0.0.1:2\"\n",
    )
    .expect("write cluster.toml");
    let (out, killed) = common::run_bounded(
        Command::new(env!("CARGO_BIN_EXE_mxgate"))
            .args(["serve", "-c"])
            .arg(&config),
        WAIT,
    );
    assert!(!killed, "mxgate kept running with its metrics port taken");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[metrics] listen") && stderr.contains(&addr.to_string()),
        "stderr should name the key and the address: {stderr}"
    );
}
