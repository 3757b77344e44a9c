//! Hostile peers against a real `mxgate serve`: a descriptor flood from
//! anonymous SMTP clients under a 512-descriptor limit, and retired or
//! deleted cluster certificates trying to hold the control plane open.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::Client;
use common::cluster::Node;
use common::{Behavior, FakeMta, eventually, policy, run_bounded};
use mxgate::tls::mutual::client_config;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 here; USER_HZ is 100.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

fn log_bytes(node: &Node) -> usize {
    node.gw.logs().iter().map(|l| l.len() + 1).sum()
}

/// `mxgate status --json` within 10 s, or `None`.
fn status_in_time(node: &Node) -> Option<serde_json::Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mxgate"));
    cmd.args(["status", "--json", "-c"])
        .arg(node.gw.config_path());
    let (out, killed) = run_bounded(&mut cmd, Duration::from_secs(10));
    let answered = !killed && out.status.success();
    if !answered {
        println!(
            "status: killed {killed}, {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    answered
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn smtp_addr(node: &Node) -> SocketAddr {
    node.gw.smtp_addr()
}

#[test]
fn a_descriptor_flood_neither_spins_nor_floods_the_log() {
    if !common::require("prlimit") {
        return;
    }
    // 560 clients here, and 300 connections in the test beside this one.
    mxgate::descriptors::raise_limit();
    let fake = FakeMta::start("f", Behavior::Normal);
    let wrap = ["prlimit", "--nofile=512:512"];
    let gw = Node::start_wrapped(
        &wrap,
        "gw1",
        "127.81.0.1",
        &fake.addr.to_string(),
        &policy("", &[]),
    );
    gw.ok(&["cluster", "create"]);
    let status = status_in_time(&gw).expect("status before the flood");
    let descriptors = &status["descriptors"];
    assert_eq!(descriptors["limit"]["soft"], 512, "{descriptors}");
    let cap = descriptors["budget"]["sessions"]
        .as_u64()
        .expect("sessions");
    assert!((50..256).contains(&cap), "{descriptors}");

    let (bytes, cpu) = (log_bytes(&gw), cpu_seconds(gw.gw.pid()));
    let started = Instant::now();
    // 560 silent clients from distinct addresses, held for 6 s.
    let mut clients = Vec::new();
    for i in 0..560u32 {
        let source: IpAddr = [127, 82, (i / 200) as u8, (i % 200 + 1) as u8].into();
        clients.push(Client::connect_from(source, smtp_addr(&gw)));
    }
    // The daemon keeps answering its operator during the flood.
    let open =
        |status: Option<serde_json::Value>| status.and_then(|s| s["descriptors"]["open"].as_u64());
    assert!(
        eventually(Duration::from_secs(5), || open(status_in_time(&gw))
            == Some(cap)),
        "the budget's cap was not reached, or status did not answer during the flood"
    );
    let window = Duration::from_secs(6);
    std::thread::sleep(window.saturating_sub(started.elapsed()));
    let (grown, used) = (log_bytes(&gw) - bytes, cpu_seconds(gw.gw.pid()) - cpu);
    println!(
        "flood: {grown} log bytes, {used:.2} s CPU in {:?}; cap {cap}",
        started.elapsed()
    );
    assert!(grown < 1_000_000, "the log grew by {grown} bytes");
    assert!(used < 3.0, "{used} s of CPU");

    // Clients past the cap were told so at once: 421 4.7.0, then closed.
    let refused = clients
        .iter_mut()
        .filter_map(|c| c.try_reply().ok())
        .filter(|r| r.code == 421 && r.text.contains("4.7.0"))
        .count();
    assert_eq!(refused as u64, 560 - cap, "refusals");
    drop(clients);

    // SMTP recovers: a new client is greeted and its mail delivered.
    let source: IpAddr = [127, 82, 9, 9].into();
    let mut client = None;
    assert!(eventually(Duration::from_secs(10), || {
        let mut c = Client::connect_from(source, smtp_addr(&gw));
        let greeted = c.try_reply().is_ok_and(|r| r.code == 220);
        client = greeted.then_some(c);
        greeted
    }));
    let mut client = client.expect("greeted");
    assert!(client.cmd("EHLO client.test").ok());
    let reply = client.send_mail("a@test", &["b@test"], "Subject: after\r\n\r\nhello");
    assert!(reply.ok(), "{reply}");
}

/// Opens `count` TLS connections to `node`'s control plane with `config`,
/// each sending an unfinished request head, and returns how long it took
/// until the server had closed every one of them (at most `limit`).
/// Meanwhile SMTP and `mxgate status` must keep working.
fn hold_open(
    node: &Node,
    config: Arc<rustls::ClientConfig>,
    count: usize,
    limit: Duration,
) -> Duration {
    let target: SocketAddr = node.address().parse().expect("address");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let all_closed = runtime.spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..count {
            let config = config.clone();
            tasks.spawn(async move {
                let Ok(tcp) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let name = ServerName::IpAddress(target.ip().into());
                let Ok(mut tls) = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                else {
                    return;
                };
                if tls
                    .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let mut buf = [0u8; 512];
                // Until the server closes (EOF or an alert).
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    // While the connections are being opened and held.
    let mut smtp = Client::connect_from([127, 84, 0, 1].into(), node.gw.smtp_addr());
    let greeting = smtp.reply();
    assert_eq!(greeting.code, 220, "{greeting}");
    assert!(status_in_time(node).is_some(), "status did not answer");
    let done = runtime.block_on(async { tokio::time::timeout(limit, all_closed).await });
    assert!(
        matches!(done, Ok(Ok(()))),
        "connections still open after {limit:?}"
    );
    let took = started.elapsed();
    runtime.shutdown_background();
    took
}

#[test]
fn retired_and_deleted_certificates_cannot_hold_the_control_plane() {
    mxgate::descriptors::raise_limit();
    let fake = FakeMta::start("f", Behavior::Normal);
    let gw1 = Node::with_fake("gw1", "127.83.0.1", &fake);
    let gw2 = Node::with_fake("gw2", "127.83.0.2", &fake);
    gw1.ok(&["cluster", "create"]);
    let old = gw1.export_identifier("s3cret");
    let text = std::fs::read_to_string(&old).expect("identifier");
    let id = mxgate::cluster::identifier::parse(&text).expect("parse");
    let key = id.key(Some("s3cret")).expect("key");
    let enrolment = client_config(&id.ca_cert_pem, &id.cert_pem, &key).expect("enrolment config");

    // Before rotate the enrolment identity completes a handshake (its
    // requests are refused by route); after it, it cannot.
    gw1.ok(&["cluster", "identifier", "rotate"]);
    let took = hold_open(&gw1, enrolment, 300, Duration::from_secs(15));
    println!("300 connections with a rotated identifier closed in {took:?}");

    // A deleted node's certificate: the same.
    let new = gw1.export_identifier("s3cret");
    let out = gw2.join(&gw1, &new, Some("s3cret"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = std::fs::read_to_string(gw2.data("cluster-node.pem")).expect("cert");
    let key = std::fs::read_to_string(gw2.data("cluster-node.key")).expect("key");
    let member = client_config(&id.ca_cert_pem, &cert, &key).expect("member config");
    // Still a member: its handshake completes and a request is answered.
    assert!(
        answers(&gw1, member.clone()),
        "a member's request was not answered"
    );
    gw1.ok(&["cluster", "delete", "gw2"]);
    let took = hold_open(&gw1, member, 300, Duration::from_secs(15));
    println!("300 connections with a deleted node's certificate closed in {took:?}");
    // The control plane still serves the members it has.
    assert!(status_in_time(&gw1).is_some());
}

/// True when a `GET /status` with `config` gets an HTTP answer.
fn answers(node: &Node, config: Arc<rustls::ClientConfig>) -> bool {
    let target: SocketAddr = node.address().parse().expect("address");
    let name = ServerName::IpAddress(target.ip().into());
    let Ok(mut conn) = rustls::ClientConnection::new(config, name) else {
        return false;
    };
    let Ok(mut tcp) = std::net::TcpStream::connect(target) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    if tls
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200")
}

#[test]
fn check_config_warns_when_max_sessions_exceed_the_descriptor_limit() {
    if !common::require("prlimit") {
        return;
    }
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/mxgate.toml");
    let run = |limit: &str| {
        let out = Command::new("prlimit")
            .arg(format!("--nofile={limit}"))
            .arg(env!("CARGO_BIN_EXE_mxgate"))
            .args(["check-config", "-c", config])
            .output()
            .expect("prlimit");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let tight = run("512:512");
    assert!(
        tight.contains("warning: [[smtp]] max_sessions add up to 10000")
            && tight.contains("Raise the limit to"),
        "{tight}"
    );
}
