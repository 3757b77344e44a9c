//! Active health checks (SPEC section 7), end to end with the real binary:
//! a killed Postfix `smtp-sink` member leaves routing before any client is
//! sent there and comes back after `rise` checks; a silent member and a
//! member answering `421` are down; a GINA portal answering 503 is down for
//! GINA while its SMTP side stays up; PROXY v2 is sent first when members
//! expect it; checks follow reloads. Every wait is bounded.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use common::fake_mta::Options;
use common::metrics::{http_get, metrics_addr, with_metrics};
use common::peers::SmtpSink;
use common::{
    Behavior, Client, FakeMta, Mxgate, eventually, ip, member, member_row, order_of, require,
};
use serde_json::Value;

/// Check interval in these tests.
const INTERVAL: Duration = Duration::from_millis(300);
const RISE: u32 = 2;
const FALL: u32 = 3;
/// Slack for process scheduling on a loaded CI machine (not a speed claim:
/// the bound itself is what the feature guarantees).
const SLACK: Duration = Duration::from_secs(3);

/// A policy with fast checks and the given members; `health` adds `[health]` keys.
fn policy(health: &str, members: &[String]) -> String {
    format!(
        "[routing]\n\n[upstream]\nbackoff = \"60s\"\nconnect_timeout = \"1s\"\ngreeting_timeout = \"3s\"\n\n\
         [health]\ninterval = \"{}ms\"\nrise = {RISE}\nfall = {FALL}\ntimeout = \"1s\"\n{health}\n\n{}",
        INTERVAL.as_millis(),
        members.join("\n")
    )
}

/// The member entry of `status --json`.
fn status_member(gw: &Mxgate, name: &str) -> Value {
    member_row(&gw.status(), name).clone()
}

/// The reason `route explain` gives for leaving `name` out, if it does.
fn excluded_reason(explain: &Value, name: &str) -> Option<String> {
    explain["excluded"]
        .as_array()?
        .iter()
        .find_map(|e| (e["member"] == name).then(|| e["reason"].as_str().unwrap_or("").to_owned()))
}

/// Waits (bounded) until `status` shows a finished check for every member's SMTP side.
fn wait_first_checks(gw: &Mxgate, names: &[&str]) {
    let ok = eventually(Duration::from_secs(10), || {
        names
            .iter()
            .all(|n| !status_member(gw, n)["smtp_health"]["last_check"].is_null())
    });
    assert!(ok, "no health check ran: {}", gw.status());
}

/// A client address whose first choice is `want` (routing is deterministic).
fn client_preferring(gw: &Mxgate, want: &str) -> IpAddr {
    (1..=60)
        .map(|i| ip(&format!("127.0.1.{i}")))
        .find(|c| gw.first_choice(*c).as_deref() == Some(want))
        .unwrap_or_else(|| panic!("no client prefers {want}"))
}

#[test]
fn killed_member_leaves_routing_before_any_client_and_returns_after_rise() {
    if !require("smtp-sink") {
        return;
    }
    let mut sink_a = SmtpSink::start("127.0.0.1");
    let sink_b = SmtpSink::start("127.0.0.1");
    let gw = Mxgate::start(&policy(
        "",
        &[member("a", sink_a.addr, ""), member("b", sink_b.addr, "")],
    ));
    wait_first_checks(&gw, &["a", "b"]);
    let client = client_preferring(&gw, "a");
    let a = status_member(&gw, "a");
    assert_eq!(a["smtp_health"]["check"], "smtp", "{a}");
    assert_eq!(a["smtp_health"]["last_check"]["result"], "pass", "{a}");

    // Stop a's MTA: it must leave routing within fall x interval + one interval.
    let addr_a = sink_a.addr;
    sink_a.kill();
    let killed = Instant::now();
    let bound = INTERVAL * (FALL + 1) + SLACK;
    let mut reason = None;
    let out = eventually(bound, || {
        reason = excluded_reason(&gw.explain(client), "a");
        reason.is_some()
    });
    let took = killed.elapsed();
    assert!(
        out,
        "a still routed {bound:?} after its MTA stopped: {}",
        gw.explain(client)
    );
    let reason = reason.unwrap_or_default();
    assert!(
        reason.starts_with("down: smtp check failed: connect to ")
            && reason.contains(&format!("({FALL} of {FALL} checks)")),
        "{reason}"
    );
    eprintln!("member out of routing {took:?} after its MTA stopped (bound {bound:?})");
    let text = gw.cli(&["route", "explain", "--client", &client.to_string()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("down: smtp check failed"), "{text}");
    let a = status_member(&gw, "a");
    assert_eq!(a["healthy"], false, "{a}");
    assert_eq!(a["smtp_health"]["last_check"]["result"], "fail", "{a}");

    // Only now do clients come: every one goes to b, none tries a.
    for i in 0..3 {
        let mut c = Client::greeted_from(client, gw.smtp_addr());
        assert_eq!(c.cmd("EHLO client.test").code, 250);
        let r = c.send_mail(
            "s@example.com",
            &["r@example.com"],
            &format!("Subject: {i}\r\n\r\nbody"),
        );
        assert!(r.ok(), "{r}");
        c.cmd("QUIT");
    }
    assert_eq!(sink_b.wait_count(3, Duration::from_secs(10)), 3);
    let logs = gw.logs();
    let tried_a: Vec<&String> = logs
        .iter()
        .filter(|l| {
            (l.contains("member unusable") && l.contains("member=a"))
                || (l.contains("failover") && l.contains("from=a"))
        })
        .collect();
    assert!(
        tried_a.is_empty(),
        "a session tried the dead member: {tried_a:#?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("member down: health checks failed") && l.contains("member=a")),
        "no transition logged"
    );

    // Restart it on the same address: back after `rise` passing checks.
    let _sink_a = SmtpSink::start_at(addr_a);
    let restarted = Instant::now();
    let bound = INTERVAL * (RISE + 1) + SLACK;
    let back = eventually(bound, || gw.first_choice(client).as_deref() == Some("a"));
    assert!(
        back,
        "a not back {bound:?} after restart: {}",
        gw.explain(client)
    );
    eprintln!(
        "member back {:?} after its MTA restarted (bound {bound:?})",
        restarted.elapsed()
    );
    let a = status_member(&gw, "a");
    assert_eq!(a["smtp_health"]["healthy"], true, "{a}");
    assert!(
        a["smtp_health"]["passes"].as_u64() >= Some(u64::from(RISE)),
        "{a}"
    );
    assert!(
        a["smtp_health"]["last_check"]["at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{a}"
    );
}

#[test]
fn silent_member_is_down() {
    let silent = FakeMta::start("silent", Behavior::Silent);
    let good = FakeMta::start("good", Behavior::Normal);
    let gw = Mxgate::start(&policy(
        "",
        &[
            member("silent", silent.addr, ""),
            member("good", good.addr, ""),
        ],
    ));
    let bound = INTERVAL * FALL + Duration::from_secs(1) * FALL + SLACK;
    let mut reason = None;
    let down = eventually(bound, || {
        reason = excluded_reason(&gw.explain(ip("127.0.1.1")), "silent");
        reason.is_some()
    });
    assert!(down, "a member that never greets stayed in routing");
    let reason = reason.unwrap_or_default();
    assert!(
        reason.contains("smtp check failed: no greeting within 1s"),
        "{reason}"
    );
    assert_eq!(order_of(&gw.explain(ip("127.0.1.1"))), ["good"]);
    // The good member got EHLO and QUIT from every check.
    let cmds = good.commands();
    assert!(cmds.iter().any(|c| c == "EHLO mx.test"), "{cmds:?}");
    assert!(cmds.iter().any(|c| c == "QUIT"), "{cmds:?}");
    assert!(good.messages().is_empty());
}

#[test]
fn member_answering_421_is_down() {
    let busy = FakeMta::start("busy", Behavior::Greet("421 4.3.2 busy".into()));
    let good = FakeMta::start("good", Behavior::Normal);
    let metrics = metrics_addr();
    let gw = Mxgate::start_with(
        &with_metrics(&common::default_listener(), metrics),
        &policy(
            "",
            &[member("busy", busy.addr, ""), member("good", good.addr, "")],
        ),
    );
    let bound = INTERVAL * (FALL + 1) + SLACK;
    let mut reason = None;
    let down = eventually(bound, || {
        reason = excluded_reason(&gw.explain(ip("127.0.1.1")), "busy");
        reason.is_some()
    });
    assert!(down, "a member answering 421 stayed in routing");
    let reason = reason.unwrap_or_default();
    assert!(
        reason.contains("smtp check failed: greeting: 421 4.3.2 busy"),
        "{reason}"
    );
    // The gauge follows SMTP health (refreshed every second).
    let gauge = eventually(Duration::from_secs(5), || {
        let scrape = http_get(metrics, "/metrics");
        scrape.contains("mxgate_member_up{member=\"busy\"} 0")
            && scrape.contains("mxgate_member_up{member=\"good\"} 1")
    });
    assert!(gauge, "{}", http_get(metrics, "/metrics"));
    let status = gw.cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("busy") && text.contains("DOWN") && text.contains("greeting: 421 4.3.2 busy"),
        "{text}"
    );
}

#[test]
fn proxy_header_comes_first_when_members_expect_it() {
    let options = Options {
        expect_proxy: true,
        ..Options::default()
    };
    let fake = FakeMta::start_with("proxied", Behavior::Normal, options);
    let members = [member("proxied", fake.addr, "")];
    let with_proxy =
        policy("", &members).replace("[upstream]\n", "[upstream]\nproxy_protocol = \"v2\"\n");
    let gw = Mxgate::start(&with_proxy);
    let passed = eventually(Duration::from_secs(10), || {
        let m = status_member(&gw, "proxied");
        m["smtp_health"]["passes"].as_u64() >= Some(2)
    });
    assert!(passed, "{}", gw.status());
    // The fake only greets after a valid header, and records the commands after it.
    assert!(fake.commands().iter().any(|c| c == "EHLO mx.test"));
}

/// A tiny HTTP server answering every request with `code`, counting requests.
struct WebMember {
    addr: SocketAddr,
    code: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl WebMember {
    fn start() -> WebMember {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind web member");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let code = Arc::new(AtomicU16::new(200));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (code.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = answer(stream, c.load(Ordering::SeqCst));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        WebMember { addr, code, stop }
    }
}

impl Drop for WebMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn answer(stream: TcpStream, code: u16) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    assert!(
        request.starts_with("GET /portal/health HTTP/1.1"),
        "{request:?}"
    );
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let body = "ok\n";
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn gina_http_health_is_separate_from_smtp_health() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let web = WebMember::start();
    let metrics = metrics_addr();
    let node = with_metrics(&common::default_listener(), metrics);
    let gina = format!("gina = \"{}\"", web.addr);
    let gw = Mxgate::start_with(
        &node,
        &policy(
            "http_path = \"/portal/health\"",
            &[member("m1", fake.addr, &gina)],
        ),
    );
    let gina_healthy = |want: bool| {
        eventually(INTERVAL * (FALL.max(RISE) + 1) + SLACK, || {
            let m = status_member(&gw, "m1");
            m["gina_health"]["healthy"] == want && !m["gina_health"]["last_check"].is_null()
        })
    };
    assert!(gina_healthy(true), "{}", gw.status());
    let m = status_member(&gw, "m1");
    assert_eq!(m["gina"], web.addr.to_string());
    assert_eq!(m["gina_health"]["check"], "http", "{m}");

    web.code.store(503, Ordering::SeqCst);
    assert!(
        gina_healthy(false),
        "503 did not take GINA down: {}",
        gw.status()
    );
    let m = status_member(&gw, "m1");
    let reason = m["gina_health"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("http check failed: HTTP status 503"),
        "{m}"
    );
    assert_eq!(
        m["healthy"], true,
        "SMTP routing must not follow GINA health: {m}"
    );
    assert_eq!(m["smtp_health"]["healthy"], true, "{m}");
    assert_eq!(order_of(&gw.explain(ip("127.0.1.1"))), ["m1"]);
    let text = String::from_utf8_lossy(&gw.cli(&["status"]).stdout).into_owned();
    assert!(
        text.contains("gina") && text.contains("HTTP status 503"),
        "{text}"
    );

    // Under 500 is healthy, whatever it is.
    web.code.store(404, Ordering::SeqCst);
    assert!(
        gina_healthy(true),
        "404 did not bring GINA back: {}",
        gw.status()
    );

    let scrape = http_get(metrics, "/metrics");
    let has = |service: &str, result: &str| {
        scrape.lines().any(|l| {
            l.starts_with("mxgate_health_checks_total{")
                && l.contains("member=\"m1\"")
                && l.contains(&format!("service=\"{service}\""))
                && l.contains(&format!("result=\"{result}\""))
        })
    };
    assert!(
        has("gina", "fail") && has("gina", "pass") && has("smtp", "pass"),
        "{scrape}"
    );
    assert!(
        scrape.contains("mxgate_member_up{member=\"m1\"} 1"),
        "{scrape}"
    );
}

#[test]
fn checks_follow_reloads() {
    let one = FakeMta::start("one", Behavior::Normal);
    let two = FakeMta::start("two", Behavior::Normal);
    let gw = Mxgate::start(&policy("", &[member("one", one.addr, "")]));
    wait_first_checks(&gw, &["one"]);

    // A member added by a reload is checked; one checked by TCP now.
    gw.reload_policy(&policy(
        "smtp_check = \"tcp\"",
        &[member("one", one.addr, ""), member("two", two.addr, "")],
    ));
    let ok = eventually(Duration::from_secs(10), || {
        let two = status_member(&gw, "two");
        let one = status_member(&gw, "one");
        two["smtp_health"]["last_check"]["result"] == "pass" && one["smtp_health"]["check"] == "tcp"
    });
    assert!(ok, "{}", gw.status());

    // Checks off: no more check connections; health is passive only.
    gw.reload_policy(&policy(
        "smtp_check = \"none\"",
        &[member("two", two.addr, "")],
    ));
    let stopped = eventually(Duration::from_secs(5), || {
        let logs = gw.logs();
        ["one", "two"].iter().all(|m| {
            logs.iter()
                .any(|l| l.contains("health checks stopped") && l.contains(&format!("member={m} ")))
        })
    });
    assert!(stopped, "{:#?}", gw.logs());
    let m = status_member(&gw, "two");
    assert_eq!(m["smtp_health"]["check"], "none", "{m}");
    // A check in flight at the reload may still connect; after that, none.
    std::thread::sleep(INTERVAL);
    let before = two.connections();
    std::thread::sleep(INTERVAL * 3);
    assert_eq!(
        two.connections(),
        before,
        "checks went on after smtp_check = \"none\""
    );
}

#[test]
fn failure_seen_by_a_session_makes_the_member_suspect_until_rise_checks_pass() {
    let flaky = FakeMta::start("flaky", Behavior::Normal);
    let good = FakeMta::start("good", Behavior::Normal);
    // A slower interval than elsewhere, so that the session, not a check, sees the failure first.
    let slow = policy(
        "",
        &[
            member("flaky", flaky.addr, ""),
            member("good", good.addr, ""),
        ],
    )
    .replace(
        &format!("interval = \"{}ms\"", INTERVAL.as_millis()),
        "interval = \"1s\"",
    );
    let gw = Mxgate::start(&slow);
    wait_first_checks(&gw, &["flaky", "good"]);
    let client = client_preferring(&gw, "flaky");

    flaky.set_behavior(Behavior::Greet("421 4.3.2 going down".into()));
    let mut c = Client::greeted_from(client, gw.smtp_addr());
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    let r = c.send_mail(
        "s@example.com",
        &["r@example.com"],
        "Subject: x\r\n\r\nbody",
    );
    assert!(r.ok(), "{r}");
    c.cmd("QUIT");
    assert_eq!(good.messages().len(), 1, "the session failed over to good");
    // At once, without waiting for `fall` checks.
    let reason = excluded_reason(&gw.explain(client), "flaky").unwrap_or_default();
    assert!(
        reason.starts_with("down: suspect: member refused greeting: 421 4.3.2 going down"),
        "{reason}"
    );

    // Healthy again: back only after `rise` passing checks (not after the 60 s back-off).
    flaky.set_behavior(Behavior::Normal);
    let back = eventually(Duration::from_secs(1) * (RISE + 1) + SLACK, || {
        gw.first_choice(client).as_deref() == Some("flaky")
    });
    assert!(back, "{}", gw.explain(client));
}
