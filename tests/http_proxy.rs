//! GINA web-portal proxy (SPEC section 6) with real `curl` as the client:
//! source-address affinity identical to SMTP's, failover of a killed
//! member's users only, TLS with HTTP/2, cookie affinity, forwarded headers,
//! WebSocket pass-through, 502/503/504, streaming uploads and the upload limit.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::metrics::{metrics_addr, with_metrics};
use common::web::{HangingMember, WebMember};
use common::{Mxgate, free_port, ip, order_of, run_bounded};

/// `[[smtp]]` (for the SMTP comparison) plus a `[[http]]` listener `gina`.
fn node(http_extra: &str) -> String {
    format!(
        "{}\n[[http]]\nname = \"gina\"\nlisten = \"127.0.0.1:0\"\nupstream_timeout = \"5s\"\n{http_extra}\n",
        common::default_listener()
    )
}

/// Members with an (unused) SMTP upstream and the given GINA upstreams.
fn policy(members: &[(&str, String)]) -> String {
    let sections: Vec<String> = members
        .iter()
        .map(|(name, gina)| {
            format!(
                "[members.{name}]\nsmtp = \"127.0.0.1:{}\"\ngina = \"{gina}\"\n",
                free_port("127.0.0.1")
            )
        })
        .collect();
    common::policy("", &sections)
}

/// Runs curl with a time bound; returns (stdout, stderr).
fn curl(args: &[&str]) -> (String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30"]).args(args);
    let (out, killed) = run_bounded(&mut cmd, Duration::from_secs(40));
    assert!(!killed, "curl {args:?} hung");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `member=` line of a web member's answer.
fn member_of(body: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix("member="))
        .unwrap_or_else(|| panic!("no member in answer: {body:?}"))
        .to_owned()
}

fn get_from(source: &str, url: &str) -> String {
    let (body, err) = curl(&["--interface", source, url]);
    assert!(err.is_empty(), "curl from {source}: {err}");
    member_of(&body)
}

/// HTTP status code of a request (`-w %{http_code}`), and the body.
fn status_of(args: &[&str]) -> (String, String) {
    let mut all = vec!["-o", "-", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let (out, _) = curl(&all);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().to_owned(), body.to_owned())
}

fn url(gw: &Mxgate, path: &str) -> String {
    format!("http://{}{path}", gw.listener_addr("gina"))
}

fn require_curl() -> bool {
    common::require("curl")
}

#[test]
fn each_source_address_sticks_to_the_smtp_member_and_only_a_killed_members_users_move() {
    if !require_curl() {
        return;
    }
    let mut webs: Vec<WebMember> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| WebMember::start(n, "127.0.0.1"))
        .collect();
    let members: Vec<(&str, String)> = webs.iter().map(|w| (w.name.as_str(), w.gina())).collect();
    let metrics = metrics_addr();
    let node = with_metrics(&node(""), metrics);
    let gw = Mxgate::start_with(&node, &policy(&members));
    let target = url(&gw, "/portal");
    let dest = gw.listener_addr("gina").ip();

    let clients: Vec<String> = (1..=24).map(|n| format!("127.0.1.{n}")).collect();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    let mut second: BTreeMap<String, String> = BTreeMap::new();
    for c in &clients {
        let order = order_of(&gw.explain_to(ip(c), Some(dest)));
        let seen: Vec<String> = (0..3).map(|_| get_from(c, &target)).collect();
        assert!(
            seen.iter().all(|m| *m == seen[0]),
            "{c} moved between requests: {seen:?}"
        );
        assert_eq!(
            seen[0], order[0],
            "{c}: HTTP went to {} but SMTP's first choice is {}",
            seen[0], order[0]
        );
        first.insert(c.clone(), seen[0].clone());
        second.insert(c.clone(), order[1].clone());
    }
    let mut per_member: BTreeMap<&str, usize> = BTreeMap::new();
    for m in first.values() {
        *per_member.entry(m).or_default() += 1;
    }
    assert!(
        per_member.len() >= 2,
        "24 clients all on one member: {per_member:?}"
    );

    // Kill the busiest member: its users move to their second choice, nobody else moves.
    let (victim, _) = per_member
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(m, n)| (m.to_string(), *n))
        .expect("a member");
    let idx = webs.iter().position(|w| w.name == victim).expect("victim");
    webs[idx].stop();
    for c in &clients {
        let now: Vec<String> = (0..2).map(|_| get_from(c, &target)).collect();
        assert_eq!(
            now[0], now[1],
            "{c} moved between requests after the failure"
        );
        if first[c] == victim {
            assert_eq!(
                now[0], second[c],
                "{c} (on killed {victim}) should go to its second choice"
            );
        } else {
            assert_eq!(
                now[0], first[c],
                "{c} was not on {victim} and must not move"
            );
        }
    }

    // Observability: status lists the HTTP listener, metrics count the requests, one access line each.
    let status = gw.status();
    let listeners = status["listeners"].as_array().expect("listeners");
    assert!(
        listeners
            .iter()
            .any(|l| l["name"] == "gina" && l["kind"] == "http"),
        "{status}"
    );
    let (text, _) = curl(&[&format!("http://{metrics}/metrics")]);
    let survivor = first.values().find(|m| **m != victim).expect("survivor");
    assert!(
        text.contains(&format!(
            "mxgate_http_requests_total{{listener=\"gina\",member=\"{survivor}\",code=\"200\"}}"
        )),
        "{text}"
    );
    assert!(
        text.contains("mxgate_http_request_duration_seconds_bucket{listener=\"gina\""),
        "{text}"
    );
    assert!(
        gw.wait_logs("http request", 24 * 5, Duration::from_secs(10))
            .is_some(),
        "one access-log line per request"
    );
    let line = gw
        .wait_log("http request", Duration::from_secs(1))
        .expect("access line");
    for field in [
        "client=127.0.1.",
        "method=GET",
        "path=/portal",
        "member=",
        "status=200",
        "bytes=",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

#[test]
fn tls_listener_speaks_http2_and_http11() {
    if !require_curl() {
        return;
    }
    let web = WebMember::start("m1", "127.0.0.1");
    let gw_dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let cert_path = gw_dir.path().join("gina.pem");
    let key_path = gw_dir.path().join("gina.key");
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    let node = node(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    ));
    let gw = Mxgate::start_with(&node, &policy(&[("m1", web.gina())]));
    let target = format!("https://{}/tls", gw.listener_addr("gina"));

    let (out, err) = curl(&["-k", "--http2", "-w", "\nversion=%{http_version}", &target]);
    assert!(out.contains("version=2"), "expected HTTP/2: {out} {err}");
    assert_eq!(member_of(&out), "m1");
    assert!(out.contains("h:x-forwarded-proto: https"), "{out}");
    let (out, err) = curl(&[
        "-k",
        "--http1.1",
        "-w",
        "\nversion=%{http_version}",
        &target,
    ]);
    assert!(
        out.contains("version=1.1"),
        "expected HTTP/1.1: {out} {err}"
    );
    // The member is spoken to in HTTP/1.1 and sees the host the client asked for.
    assert!(
        out.contains(&format!("h:host: {}", gw.listener_addr("gina"))),
        "{out}"
    );
}

#[test]
fn cookie_affinity_names_the_member_and_falls_back_to_the_hash_order() {
    if !require_curl() {
        return;
    }
    let mut webs: Vec<WebMember> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| WebMember::start(n, "127.0.0.1"))
        .collect();
    let members: Vec<(&str, String)> = webs.iter().map(|w| (w.name.as_str(), w.gina())).collect();
    let gw = Mxgate::start_with(
        &node("sticky_cookie = \"MXGATE_MEMBER\"\n"),
        &policy(&members),
    );
    let target = url(&gw, "/");
    let client = "127.0.3.1";

    // No cookie: the hash order, and a cookie naming that member.
    let (out, _) = curl(&["-i", "--interface", client, &target]);
    let hashed = member_of(&out);
    assert!(
        out.to_ascii_lowercase().contains(&format!(
            "set-cookie: mxgate_member={}; path=/; httponly",
            hashed.to_ascii_lowercase()
        )),
        "{out}"
    );
    assert!(
        !out.contains("Secure"),
        "no Secure on a plain listener: {out}"
    );

    // A cookie naming another healthy member wins, and is not set again.
    let other = webs
        .iter()
        .map(|w| w.name.clone())
        .find(|n| *n != hashed)
        .expect("other");
    let cookie = format!("MXGATE_MEMBER={other}");
    for _ in 0..3 {
        let (out, _) = curl(&["-i", "--interface", client, "-b", &cookie, &target]);
        assert_eq!(
            member_of(&out),
            other,
            "cookie naming {other} ignored: {out}"
        );
        assert!(!out.to_ascii_lowercase().contains("set-cookie"), "{out}");
    }

    // Unknown member: hash order, and the cookie is corrected.
    let (out, _) = curl(&[
        "-i",
        "--interface",
        client,
        "-b",
        "MXGATE_MEMBER=nosuch",
        &target,
    ]);
    assert_eq!(member_of(&out), hashed);
    assert!(out.contains(&format!("MXGATE_MEMBER={hashed}")), "{out}");

    // The cookie's member goes down: hash order (skipping it), and a new cookie.
    let idx = webs.iter().position(|w| w.name == other).expect("other");
    webs[idx].stop();
    let (out, _) = curl(&["-i", "--interface", client, "-b", &cookie, &target]);
    let now = member_of(&out);
    assert_ne!(now, other);
    assert!(out.contains(&format!("MXGATE_MEMBER={now}")), "{out}");
}

#[test]
fn forwarded_headers_reach_the_member_and_hop_by_hop_headers_do_not() {
    if !require_curl() {
        return;
    }
    let web = WebMember::start("m1", "127.0.0.1");
    let gw = Mxgate::start_with(&node(""), &policy(&[("m1", web.gina())]));
    let host = gw.listener_addr("gina").to_string();
    let (out, _) = curl(&[
        "--interface",
        "127.0.2.9",
        "-H",
        "X-Forwarded-For: 10.1.1.1",
        "-H",
        "Connection: keep-alive, X-Secret",
        "-H",
        "X-Secret: hop",
        "-H",
        "Keep-Alive: timeout=5",
        &url(&gw, "/h"),
    ]);
    let expect = [
        "h:x-forwarded-for: 10.1.1.1, 127.0.2.9".to_owned(),
        "h:x-forwarded-proto: http".to_owned(),
        format!("h:x-forwarded-host: {host}"),
        format!("h:forwarded: for=127.0.2.9;host=\"{host}\";proto=http"),
        "h:via: 1.1 mxgate".to_owned(),
        format!("h:host: {host}"),
    ];
    for line in &expect {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
    for gone in ["h:x-secret", "h:keep-alive"] {
        assert!(!out.contains(gone), "{gone} forwarded:\n{out}");
    }
}

#[test]
fn websocket_upgrade_is_passed_through() {
    let web = WebMember::start("m1", "127.0.0.1");
    let gw = Mxgate::start_with(&node(""), &policy(&[("m1", web.gina())]));
    let addr: SocketAddr = gw.listener_addr("gina");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        s.read_exact(&mut byte).expect("101 head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("x-member: m1"), "{head}");
    for round in 0..3 {
        let msg = format!("echo round {round} through mxgate");
        s.write_all(msg.as_bytes()).expect("send");
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).expect("echo");
        assert_eq!(String::from_utf8_lossy(&back), msg);
    }
}

#[test]
fn hanging_member_gives_504_refusing_member_502_and_no_member_503() {
    if !require_curl() {
        return;
    }
    let hanging = HangingMember::start("127.0.0.1");
    let gw = Mxgate::start_with(
        &node("").replace("upstream_timeout = \"5s\"", "upstream_timeout = \"1s\""),
        &policy(&[("slow", hanging.addr.to_string())]),
    );
    let (code, body) = status_of(&[&url(&gw, "/slow")]);
    assert_eq!(code, "504", "{body}");
    assert!(body.starts_with("504 Gateway Timeout: "), "{body}");
    drop(gw);

    let refused = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let gw = Mxgate::start_with(&node(""), &policy(&[("gone", refused)]));
    let (code, body) = status_of(&[&url(&gw, "/")]);
    assert_eq!(code, "502", "{body}");
    assert!(body.starts_with("502 Bad Gateway: "), "{body}");
    // The refusing member is now in back-off: nobody left to ask.
    let (code, body) = status_of(&[&url(&gw, "/")]);
    assert_eq!(code, "503", "{body}");
    assert!(body.starts_with("503 Service Unavailable: "), "{body}");
    drop(gw);

    // Members without a gina upstream are no candidates.
    let smtp_only = common::policy(
        "",
        &[format!(
            "[members.m1]\nsmtp = \"127.0.0.1:{}\"\n",
            free_port("127.0.0.1")
        )],
    );
    let gw = Mxgate::start_with(&node(""), &smtp_only);
    let (code, _) = status_of(&[&url(&gw, "/")]);
    assert_eq!(code, "503");
    let out = gw.cli(&[
        "route",
        "explain",
        "--client",
        "192.0.2.1",
        "--listener",
        "gina",
        "--json",
    ]);
    let explain: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        explain["excluded"][0]["reason"], "no gina upstream",
        "{explain}"
    );
}

/// Resident and peak memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .expect("memory field")
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn a_large_upload_streams_without_growing_the_proxy_and_the_limit_gives_413() {
    if !require_curl() {
        return;
    }
    let web = WebMember::start("m1", "127.0.0.1");
    let gw = Mxgate::start_with(
        &node("max_body_size = \"1GiB\"\n"),
        &policy(&[("m1", web.gina())]),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("upload.bin");
    const SIZE: u64 = 200 << 20;
    {
        let f = std::fs::File::create(&big).expect("create");
        let mut w = std::io::BufWriter::new(f);
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..(SIZE >> 20) {
            w.write_all(&chunk).expect("write");
        }
    }
    // Warm up (pool, allocator) before the baseline.
    let _ = curl(&[&url(&gw, "/warm")]);
    let (rss_before, _) = memory_kib(gw.pid());
    let (out, err) = curl(&["-T", &big.display().to_string(), &url(&gw, "/upload")]);
    assert!(
        out.contains(&format!("bytes={SIZE}")),
        "upload not passed whole: {out} {err}"
    );
    assert!(out.contains("complete=true"), "{out}");
    let (_, peak) = memory_kib(gw.pid());
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    eprintln!(
        "proxy RSS before {rss_before} KiB, peak after {peak} KiB: +{growth_mib} MiB for a 200 MiB upload"
    );
    assert!(
        growth_mib < 50,
        "the proxy grew by {growth_mib} MiB for a 200 MiB upload"
    );
    drop(gw);

    // A 1 MiB limit: a declared larger Content-Length gets 413 at once ...
    let gw = Mxgate::start_with(
        &node("max_body_size = \"1MiB\"\n"),
        &policy(&[("m1", web.gina())]),
    );
    let two = dir.path().join("two.bin");
    std::fs::write(&two, vec![b'x'; 2 << 20]).expect("write");
    let data = format!("@{}", two.display());
    let (code, body) = status_of(&["--data-binary", &data, &url(&gw, "/post")]);
    assert_eq!(code, "413", "{body}");
    assert!(body.starts_with("413 Payload Too Large: "), "{body}");
    // ... and a chunked body is cut off when it passes the limit.
    let (code, body) = status_of(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &data,
        &url(&gw, "/chunked"),
    ]);
    assert_eq!(code, "413", "{body}");
    // Within the limit passes.
    let small = dir.path().join("small.bin");
    std::fs::write(&small, vec![b'y'; 1000]).expect("write");
    let (code, body) = status_of(&[
        "--data-binary",
        &format!("@{}", small.display()),
        &url(&gw, "/ok"),
    ]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("bytes=1000"), "{body}");
}

#[test]
fn sigterm_lets_requests_in_flight_finish_and_refuses_new_connections() {
    if !require_curl() {
        return;
    }
    let web = WebMember::start("m1", "127.0.0.1");
    let mut gw = Mxgate::start_full(
        "drain_timeout = \"10s\"",
        &node(""),
        &policy(&[("m1", web.gina())]),
    );
    let target = url(&gw, "/slow");
    let addr = gw.listener_addr("gina");
    let before = web.requests.load(std::sync::atomic::Ordering::Relaxed);
    let slow = std::thread::spawn(move || status_of(&[&target]));
    assert!(
        common::eventually(Duration::from_secs(10), || {
            web.requests.load(std::sync::atomic::Ordering::Relaxed) > before
        }),
        "the slow request never reached the member"
    );
    gw.terminate();
    let (code, body) = slow.join().expect("curl thread");
    assert_eq!(code, "200", "request in flight during the drain: {body}");
    assert_eq!(member_of(&body), "m1");
    assert!(
        gw.wait_exit(Duration::from_secs(15)).is_some(),
        "mxgate did not stop"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "listener still accepting after the drain"
    );
}

#[test]
fn https_member_is_reached_over_verified_tls() {
    if !require_curl() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip("127.0.0.1"))];
    let cert = params.self_signed(&key).expect("cert");
    let ca = dir.path().join("member.pem");
    std::fs::write(&ca, cert.pem()).expect("write");
    let server = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("server config");
    let web = WebMember::start_tls("secure", "127.0.0.1", std::sync::Arc::new(server));
    let policy = format!(
        "[upstream]\ntls_ca_file = \"{}\"\n\n[members.secure]\ngina = \"https://{}\"\n",
        ca.display(),
        web.addr
    );
    let gw = Mxgate::start_with(&node(""), &policy);
    let (out, err) = curl(&[&url(&gw, "/over-tls")]);
    assert_eq!(member_of(&out), "secure", "{out} {err}");
    assert!(out.contains("path=/over-tls"), "{out}");
    drop(gw);

    // Without the CA the member's certificate is not trusted: no connection, 502.
    let untrusted = format!("[members.secure]\ngina = \"https://{}\"\n", web.addr);
    let gw = Mxgate::start_with(&node(""), &untrusted);
    let (code, body) = status_of(&[&url(&gw, "/")]);
    assert_eq!(code, "502", "{body}");
    assert!(
        gw.wait_log("gina connect failed", Duration::from_secs(5))
            .is_some(),
        "the TLS failure is a connect failure"
    );
}
