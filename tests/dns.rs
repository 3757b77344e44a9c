//! `mxgate dns check` and the periodic DNS check against a real dnsmasq on
//! loopback, with real `smtp-sink` MTAs on port 25 of distinct 127.x
//! addresses as MX hosts (SPEC section 7: MX hosts are probed on port 25).
//!
//! Each test has its own 127.53.N.0/24 so tests can run in parallel.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::dnsmasq::Dnsmasq;
use common::metrics::{http_get, metrics_addr, with_metrics};
use common::peers::SmtpSink;
use common::*;
use serde_json::Value;

/// The test zone `mx.test` for addresses `P.x` (`P` = "127.53.N").
///
/// - `rr.mx.test`: MX 10 mx1 + MX 10 mx2 (round robin), MX 20 backup +
///   MX 20 noptr (backup MX), MX 40 ghost (does not exist).
///   mx1 = P.1; mx2 = P.2 and P.3 (several A records); backup = P.4 (nothing
///   listens on port 25; its PTR names elsewhere.mx.test = P.99: not confirmed);
///   noptr = P.5 (no PTR record).
/// - `ok.mx.test`: MX 10 mx1.  `down.mx.test`: MX 10 backup (no SMTP).
/// - `nx.mx.test`: does not exist.  `sink.mx.test`: P.10 (a member by name).
fn zone(p: &str) -> Vec<String> {
    [
        "--local=/mx.test/".to_owned(),
        "--local=/53.127.in-addr.arpa/".to_owned(),
        "--local-ttl=120".to_owned(),
        "--mx-host=rr.mx.test,mx1.mx.test,10".to_owned(),
        "--mx-host=rr.mx.test,mx2.mx.test,10".to_owned(),
        "--mx-host=rr.mx.test,backup.mx.test,20".to_owned(),
        "--mx-host=rr.mx.test,noptr.mx.test,20".to_owned(),
        "--mx-host=rr.mx.test,ghost.mx.test,40".to_owned(),
        "--mx-host=ok.mx.test,mx1.mx.test,10".to_owned(),
        "--mx-host=down.mx.test,backup.mx.test,10".to_owned(),
        format!("--host-record=mx1.mx.test,{p}.1,300"),
        format!("--host-record=mx2.mx.test,{p}.2,300"),
        format!("--host-record=mx2.mx.test,{p}.3,300"),
        format!("--address=/backup.mx.test/{p}.4"),
        format!("--address=/elsewhere.mx.test/{p}.99"),
        format!(
            "--ptr-record={},elsewhere.mx.test",
            reverse(&format!("{p}.4"))
        ),
        format!("--address=/noptr.mx.test/{p}.5"),
        format!("--host-record=sink.mx.test,{p}.10,60"),
    ]
    .into()
}

fn reverse(ip: &str) -> String {
    let mut parts: Vec<&str> = ip.split('.').collect();
    parts.reverse();
    format!("{}.in-addr.arpa", parts.join("."))
}

/// dnsmasq, smtp-sink and root (port 25) are needed; false: skip (outside CI).
fn tools() -> bool {
    require("dnsmasq") && require("smtp-sink") && require_root("SMTP probes on port 25")
}

/// smtp-sinks on port 25 of `P.x` for each x.
fn sinks(p: &str, hosts: &[u8]) -> Vec<SmtpSink> {
    hosts
        .iter()
        .map(|x| SmtpSink::start_at(format!("{p}.{x}:25").parse().expect("addr")))
        .collect()
}

/// A `[dns]` section asking `ns`, with short timeouts, then `rest`.
fn dns_policy(ns: SocketAddr, extra: &str, rest: &str) -> String {
    format!(
        "[dns]\nnameservers = [\"{ns}\"]\ntimeout = \"2s\"\nattempts = 1\nprobe_timeout = \"3s\"\n{extra}\n\n{rest}"
    )
}

/// `mxgate dns check DOMAIN... --json` and the text form: (exit code, json, text).
fn dns_check(gw: &Mxgate, domains: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["dns", "check"];
    args.extend(domains);
    let text = gw.cli(&args);
    args.push("--json");
    let json = gw.cli(&args);
    let code = json.status.code().unwrap_or(-1);
    assert_eq!(
        text.status.code(),
        Some(code),
        "text and json agree on the exit code"
    );
    let value: Value = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "dns check --json: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&json.stdout),
            String::from_utf8_lossy(&json.stderr)
        )
    });
    (
        code,
        value,
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

fn mx_of<'a>(domain: &'a Value, host: &str) -> &'a Value {
    domain["mx"]
        .as_array()
        .and_then(|mx| mx.iter().find(|m| m["host"] == host))
        .unwrap_or_else(|| panic!("no MX {host} in {domain:#}"))
}

fn address_of<'a>(mx: &'a Value, ip: &str) -> &'a Value {
    mx["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["address"] == ip))
        .unwrap_or_else(|| panic!("no address {ip} in {mx:#}"))
}

fn problems(domain: &Value) -> Vec<String> {
    domain["problems"]
        .as_array()
        .map(|p| {
            p.iter()
                .map(|p| {
                    format!(
                        "{} {}",
                        p["status"].as_str().unwrap_or(""),
                        p["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn mx_set_round_robin_backup_ptr_smtp_and_nxdomain() {
    if !tools() {
        return;
    }
    let p = "127.53.1";
    let dns = Dnsmasq::start(&format!("{p}.53"), &zone(p));
    let _sinks = sinks(p, &[1, 2, 3, 5]);
    let gw = Mxgate::start(&dns_policy(dns.addr, "", &policy("", &[])));

    // Everything in order: OK, exit 0.
    let (code, v, text) = dns_check(&gw, &["ok.mx.test"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        text.lines().next(),
        Some("DNS OK - ok.mx.test: OK"),
        "{text}"
    );
    let d = &v["domains"][0];
    assert_eq!(d["status"], "OK");
    let mx1 = mx_of(d, "mx1.mx.test");
    assert_eq!(mx1["preference"], 10);
    assert_eq!(mx1["ttl"], 120, "MX TTL from --local-ttl");
    assert_eq!(mx1["role"], "primary");
    assert_eq!(mx1["round_robin"], false);
    let a = address_of(mx1, &format!("{p}.1"));
    assert_eq!(a["ttl"], 300, "A TTL from --host-record");
    assert_eq!(a["smtp"]["answers"], true);
    assert!(
        a["smtp"]["banner"]
            .as_str()
            .is_some_and(|b| b.starts_with("220 "))
    );
    assert_eq!(a["ptr"]["status"], "confirmed");
    assert_eq!(a["ptr"]["names"][0], "mx1.mx.test");

    // Round robin, backup MX, several A records, missing and unconfirmed PTR,
    // a host without SMTP, a host that does not resolve: WARNING, exit 1.
    let (code, v, text) = dns_check(&gw, &["rr.mx.test"]);
    assert_eq!(code, 1, "{text}");
    let d = &v["domains"][0];
    assert_eq!(d["status"], "WARNING", "{d:#}");
    let hosts: Vec<(u64, &str, &str, bool)> = d["mx"]
        .as_array()
        .expect("mx")
        .iter()
        .map(|m| {
            (
                m["preference"].as_u64().unwrap_or(0),
                m["host"].as_str().unwrap_or(""),
                m["role"].as_str().unwrap_or(""),
                m["round_robin"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        hosts,
        vec![
            (10, "mx1.mx.test", "primary", true),
            (10, "mx2.mx.test", "primary", true),
            (20, "backup.mx.test", "backup", true),
            (20, "noptr.mx.test", "backup", true),
            (40, "ghost.mx.test", "backup", false),
        ]
    );
    let mx2 = mx_of(d, "mx2.mx.test");
    assert_eq!(mx2["address_round_robin"], true, "two A records on mx2");
    assert_eq!(mx2["addresses"].as_array().map(Vec::len), Some(2));
    for x in [2, 3] {
        let a = address_of(mx2, &format!("{p}.{x}"));
        assert_eq!(a["smtp"]["answers"], true);
        assert_eq!(a["ptr"]["status"], "confirmed");
    }
    let backup = address_of(mx_of(d, "backup.mx.test"), &format!("{p}.4"));
    assert_eq!(backup["smtp"]["answers"], false);
    assert_eq!(backup["ptr"]["status"], "unconfirmed");
    assert_eq!(backup["ptr"]["names"][0], "elsewhere.mx.test");
    let noptr = address_of(mx_of(d, "noptr.mx.test"), &format!("{p}.5"));
    assert_eq!(noptr["smtp"]["answers"], true);
    assert_eq!(noptr["ptr"]["status"], "missing");
    let ghost = mx_of(d, "ghost.mx.test");
    assert_eq!(ghost["lookup"], "nxdomain");
    let found = problems(d);
    for want in [
        "WARNING MX host ghost.mx.test does not resolve (NXDOMAIN)".to_owned(),
        format!("WARNING {p}.4 (backup.mx.test) does not answer SMTP"),
        format!("WARNING {p}.5 (noptr.mx.test) has no PTR record"),
        format!(
            "WARNING {p}.4 (backup.mx.test): PTR elsewhere.mx.test does not resolve back to it"
        ),
    ] {
        assert!(
            found.iter().any(|f| f.starts_with(&want)),
            "{want:?} not in {found:#?}"
        );
    }
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(text.starts_with("DNS WARNING - rr.mx.test: "), "{text}");
    assert!(text.contains("MX 10 mx2.mx.test ttl 120s: primary, round robin with 1 other MX of preference 10, round robin over 2 addresses"), "{text}");
    assert!(
        text.contains(
            "MX 20 backup.mx.test ttl 120s: backup, round robin with 1 other MX of preference 20"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!("A    {p}.5 ttl 120s; SMTP ok")),
        "{text}"
    );
    assert!(text.contains("PTR missing"), "{text}");
    assert!(
        text.contains("PTR elsewhere.mx.test NOT confirmed"),
        "{text}"
    );

    // docs/dns.md's sample shows this domain's block as printed (its run had
    // members, this one none: member columns and member problems aside).
    let documented = doc_block("rr.mx.test", "127.53.9", p);
    assert_eq!(
        documented.len(),
        14,
        "5 MX, 5 A and 4 problem lines: {documented:#?}"
    );
    assert_eq!(
        documented,
        doc_block_of(&text, "rr.mx.test"),
        "docs/dns.md's rr.mx.test block drifted from the text output"
    );

    // No MX host answers SMTP: CRITICAL, exit 2.
    let (code, v, text) = dns_check(&gw, &["down.mx.test"]);
    assert_eq!(code, 2, "{text}");
    assert_eq!(
        text.lines().next(),
        Some("DNS CRITICAL - down.mx.test: no MX host answers SMTP (+1 more)")
    );
    assert_eq!(v["domains"][0]["status"], "CRITICAL");

    // NXDOMAIN: CRITICAL, exit 2.
    let (code, v, text) = dns_check(&gw, &["nx.mx.test"]);
    assert_eq!(code, 2, "{text}");
    let d = &v["domains"][0];
    assert_eq!(d["mx_lookup"], "nxdomain");
    assert_eq!(d["summary"], "domain does not exist (NXDOMAIN)");

    // A name outside dnsmasq's zones, with no upstream server: an error code, UNKNOWN.
    let (code, v, text) = dns_check(&gw, &["elsewhere.example"]);
    assert_eq!(code, 3, "{text}");
    assert_eq!(v["domains"][0]["mx_lookup"], "server_error", "{v:#}");
    assert!(
        text.starts_with(
            "DNS UNKNOWN - elsewhere.example: MX lookup failed: name server answered "
        ),
        "{text}"
    );

    // Several domains: the worst status, each domain in the summary line.
    let (code, v, text) = dns_check(&gw, &["ok.mx.test", "nx.mx.test", "rr.mx.test"]);
    assert_eq!(code, 2, "{text}");
    assert_eq!(v["exit_code"], 2);
    let first = text.lines().next().unwrap_or("");
    assert!(
        first.starts_with("DNS CRITICAL - ok.mx.test: OK; nx.mx.test: domain does not exist (NXDOMAIN); rr.mx.test: "),
        "{first}"
    );
}

#[test]
fn ingress_members_no_record_points_at() {
    if !tools() {
        return;
    }
    let p = "127.53.2";
    let dns = Dnsmasq::start(&format!("{p}.53"), &zone(p));
    let _sinks = sinks(p, &[1]);
    let members = [
        format!("[members.gw1]\nsmtp = \"{p}.1:25\"\n"),
        format!("[members.gw2]\nsmtp = \"{p}.200:2525\"\naddresses = [\"{p}.0/30\"]\n"),
        format!("[members.gw3]\nsmtp = \"{p}.9:25\"\n"),
        format!("[members.gw4]\nsmtp = \"{p}.8:25\"\ningress = false\n"),
    ];
    let gw = Mxgate::start(&dns_policy(dns.addr, "", &policy("", &members)));
    let (code, v, text) = dns_check(&gw, &["ok.mx.test"]);
    assert_eq!(code, 1, "{text}");
    let d = &v["domains"][0];
    assert_eq!(
        d["ingress_not_pointed_at"],
        serde_json::json!(["gw3"]),
        "{d:#}"
    );
    let a = address_of(mx_of(d, "mx1.mx.test"), &format!("{p}.1"));
    assert_eq!(a["members"], serde_json::json!(["gw1", "gw2"]));
    assert_eq!(
        text.lines().next(),
        Some("DNS WARNING - ok.mx.test: no MX address points at ingress member(s) gw3")
    );
}

#[test]
fn silent_nameserver_is_unknown() {
    // A UDP socket that is bound and never answers.
    let silent = UdpSocket::bind("127.53.5.53:0").expect("bind udp");
    let ns = silent.local_addr().expect("addr");
    let gw = Mxgate::start(&dns_policy(ns, "", &policy("", &[])));
    let (code, v, text) = dns_check(&gw, &["example.com"]);
    assert_eq!(code, 3, "{text}");
    let d = &v["domains"][0];
    assert_eq!(d["status"], "UNKNOWN");
    assert_eq!(d["mx_lookup"], "timeout");
    assert_eq!(
        text.lines().next(),
        Some(
            "DNS UNKNOWN - example.com: MX lookup failed: no answer from the name server (timeout)"
        )
    );
    drop(silent);
}

#[test]
fn unreachable_daemon_is_unknown() {
    let dir = shared_tempdir();
    let config = dir.path().join("mxgate.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"t\"\ndata_dir = \"data\"\npolicy = \"cluster.toml\"\n\n{}",
            default_listener()
        ),
    )
    .expect("write");
    std::fs::write(dir.path().join("cluster.toml"), "").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mxgate"))
        .args(["dns", "check", "example.com", "-c"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("DNS UNKNOWN - cannot reach the mxgate daemon"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Is `mxgate serve` running"));
}

#[test]
fn periodic_check_feeds_status_and_metrics() {
    if !tools() {
        return;
    }
    let p = "127.53.3";
    let dns = Dnsmasq::start(&format!("{p}.53"), &zone(p));
    let _sinks = sinks(p, &[1]);
    let metrics = metrics_addr();
    let node = with_metrics(&default_listener(), metrics);
    let policy = dns_policy(
        dns.addr,
        "domains = [\"ok.mx.test\", \"down.mx.test\"]\ninterval = \"1s\"",
        &policy("", &[]),
    );
    let gw = Mxgate::start_with(&node, &policy);

    let mut last = Value::Null;
    assert!(
        eventually(Duration::from_secs(30), || {
            last = gw.status();
            last["dns"]["domains"]
                .as_array()
                .is_some_and(|d| d.len() == 2)
        }),
        "no DNS section in status: {last:#}"
    );
    let first_check = last["dns"]["checked_at"].as_u64().unwrap_or(0);
    assert_eq!(last["dns"]["status"], "CRITICAL");
    assert_eq!(last["dns"]["interval_s"], 1);
    assert_eq!(last["dns"]["domains"][0]["domain"], "ok.mx.test");
    assert_eq!(last["dns"]["domains"][0]["status"], "OK");
    assert_eq!(last["dns"]["domains"][0]["mx_answering"], 1);
    assert_eq!(last["dns"]["domains"][1]["status"], "CRITICAL");
    assert_eq!(
        last["dns"]["domains"][1]["summary"],
        "no MX host answers SMTP (+1 more)"
    );

    let text = gw.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("DNS (last check "), "{text}");
    assert!(text.contains("down.mx.test"), "{text}");

    // Checks go on every interval.
    assert!(
        eventually(Duration::from_secs(30), || {
            gw.status()["dns"]["checked_at"].as_u64().unwrap_or(0) > first_check
        }),
        "no second periodic check"
    );

    let mut scrape = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            scrape = http_get(metrics, "/metrics");
            scrape.contains("mxgate_dns_check_status{domain=\"down.mx.test\"} 2")
        }),
        "{scrape}"
    );
    for want in [
        "mxgate_dns_check_status{domain=\"ok.mx.test\"} 0",
        "mxgate_dns_mx_records{domain=\"ok.mx.test\"} 1",
        "mxgate_dns_mx_answering{domain=\"ok.mx.test\"} 1",
        "mxgate_dns_mx_answering{domain=\"down.mx.test\"} 0",
        "mxgate_dns_last_check_timestamp_seconds{domain=\"ok.mx.test\"}",
    ] {
        assert!(scrape.contains(want), "{want} not in\n{scrape}");
    }

    // A reload that drops the domains empties the DNS section.
    gw.reload_policy(&dns_policy(dns.addr, "", &policy_for_reload()));
    assert!(
        eventually(Duration::from_secs(10), || gw.status()["dns"].is_null()),
        "DNS section left after the domains were removed"
    );
}

fn policy_for_reload() -> String {
    policy("", &[])
}

#[test]
fn member_upstream_by_host_name_gets_mail() {
    if !(require("dnsmasq") && require("smtp-sink")) {
        return;
    }
    let p = "127.53.4";
    let dns = Dnsmasq::start(&format!("{p}.53"), &zone(p));
    let sink = SmtpSink::start(&format!("{p}.10"));
    let member = format!(
        "[members.byname]\nsmtp = \"sink.mx.test:{}\"\n",
        sink.addr.port()
    );
    let gw = Mxgate::start(&dns_policy(dns.addr, "", &policy("", &[member])));

    let mut c = Client::greeted_from(ip("127.0.0.1"), gw.smtp_addr());
    c.cmd("EHLO client.test");
    let r = c.send_mail("s@source.test", &["r@example.com"], &tagged_body("byname"));
    assert!(r.ok(), "mail to a member given by name: {r}");
    assert_eq!(sink.wait_count(1, Duration::from_secs(10)), 1);
    assert!(sink.messages()[0].contains("X-Test-Client: byname"));

    // A second session uses the cached answer and reaches the same MTA.
    let mut c = Client::greeted_from(ip("127.0.0.1"), gw.smtp_addr());
    c.cmd("EHLO client.test");
    assert!(
        c.send_mail("s@source.test", &["r@example.com"], &tagged_body("again"))
            .ok()
    );
    assert_eq!(sink.wait_count(2, Duration::from_secs(10)), 2);
}

/// The lines of `domain`'s block in docs/dns.md's first sample output, its
/// addresses `from.x` rewritten to `to.x`, in the form [`doc_block_of`] gives.
fn doc_block(domain: &str, from: &str, to: &str) -> Vec<String> {
    let doc = include_str!("../docs/dns.md").replace(&format!("{from}."), &format!("{to}."));
    doc_block_of(&doc, domain)
}

/// The lines after `DOMAIN: STATUS` up to the next blank line or prompt,
/// without member columns (`; member ...`, `; no member`) and without the
/// lines about ingress members.
fn doc_block_of(text: &str, domain: &str) -> Vec<String> {
    let head = format!("{domain}: ");
    text.lines()
        .skip_while(|l| !l.starts_with(&head) || l.contains(" - "))
        .skip(1)
        .take_while(|l| !l.is_empty() && !l.starts_with('$'))
        .filter(|l| !l.contains("ingress member"))
        .map(|l| {
            let end = l
                .find("; member ")
                .or_else(|| l.find("; no member"))
                .unwrap_or(l.len());
            l[..end].to_owned()
        })
        .collect()
}
