//! Criterion micro-benchmarks of the hot paths, through the public API only:
//!
//! - `command_parse`: a realistic pipelined batch (MAIL, 5 RCPT, DATA) cut by
//!   `LineReader` and parsed by `parse_command`; throughput in commands.
//! - `data_scan`: `DataReceiver` over 1 MiB of mail-like text fed in 64 KiB
//!   chunks (each chunk appended to the input buffer as a socket read would);
//!   throughput in bytes, so Criterion prints GiB/s.
//! - `route`: one `Router::route` decision with 3, 16 and 64 members
//!   (`source-destination` affinity, all members up); throughput in decisions.
//!
//! `cargo bench --bench hot_paths` runs them all; append a filter (e.g.
//! `-- data_scan`) for one group.
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mxgate::config::{BareLf, load_policy};
use mxgate::routing::{MemberTable, Router};
use mxgate::smtp::proto::{DataReceiver, DataStep, LineReader, parse_command};

/// What a pipelining client sends in one go for a 5-recipient message.
const BATCH: &[u8] = b"MAIL FROM:<newsletter-bounces+alice=example.org@lists.example.net> SIZE=48213 BODY=8BITMIME\r\n\
RCPT TO:<alice@example.org>\r\n\
RCPT TO:<bob.smith@example.org> NOTIFY=FAILURE,DELAY\r\n\
RCPT TO:<carol@sub.example.org>\r\n\
RCPT TO:<dave+tag@example.org> ORCPT=rfc822;dave@example.org\r\n\
RCPT TO:<\"eve q\"@example.org>\r\n\
DATA\r\n";
const BATCH_COMMANDS: u64 = 7;

fn command_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("command_parse");
    group.throughput(Throughput::Elements(BATCH_COMMANDS));
    let mut buf = BytesMut::with_capacity(4096);
    group.bench_function("mail_5rcpt_data", |b| {
        b.iter(|| {
            buf.extend_from_slice(black_box(BATCH));
            let mut reader = LineReader::new();
            let mut n = 0u64;
            while let Some(line) = reader.next_line(&mut buf).expect("short lines") {
                let command = parse_command(&line).expect("valid command");
                black_box(&command);
                n += 1;
            }
            assert_eq!(n, BATCH_COMMANDS);
        })
    });
    group.finish();
}

/// About `size` bytes of message text: headers, then body lines of 20..78
/// characters, some starting with a (stuffed) dot, ending with `CRLF.CRLF`.
fn message(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 128);
    out.extend_from_slice(
        b"Received: from mail.example.net (mail.example.net [192.0.2.10])\r\n\
          \tby mx1.example.com with ESMTP id 4Xy2Kq0ZbWz9vBq\r\n\
From: Alice Example <alice@example.net>\r\n\
To: Bob Example <bob@example.com>\r\n\
Subject: Quarterly figures, as discussed\r\n\
Message-ID: <20240611093012.4711@mail.example.net>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n",
    );
    let words = [
        "the",
        "quarterly",
        "figures",
        "mail",
        "gateway",
        "cluster",
        "of",
        "and",
        "a",
        "to",
        "delivery",
        "queue",
        "recipient",
        "message",
        "is",
        "on",
        "for",
        "with",
        "report",
    ];
    let mut seed: u32 = 0x2545_f491;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    while out.len() < size {
        let target = 20 + (next() % 59) as usize;
        let start = out.len();
        if next() % 50 == 0 {
            out.extend_from_slice(b"..");
        }
        while out.len() - start < target {
            out.extend_from_slice(words[(next() as usize) % words.len()].as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn data_scan(c: &mut Criterion) {
    const CHUNK: usize = 64 * 1024;
    let msg = message(1024 * 1024);
    let mut group = c.benchmark_group("data_scan");
    group.throughput(Throughput::Bytes(msg.len() as u64));
    for (name, mode) in [
        ("reject_1MiB_64KiB", BareLf::Reject),
        ("normalize_1MiB_64KiB", BareLf::Normalize),
    ] {
        let mut input = BytesMut::with_capacity(CHUNK + 16);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut rx = DataReceiver::new(mode, u64::MAX);
                let mut forwarded = 0usize;
                let mut ended = false;
                for chunk in msg.chunks(CHUNK) {
                    input.extend_from_slice(chunk);
                    loop {
                        match rx.feed(&mut input) {
                            DataStep::Forward(bytes) => forwarded += black_box(bytes).len(),
                            DataStep::NeedMore => break,
                            DataStep::End => {
                                ended = true;
                                break;
                            }
                            DataStep::Refused(why) => panic!("refused: {why:?}"),
                        }
                    }
                }
                assert!(ended && forwarded == msg.len());
                input.clear();
            })
        });
    }
    group.finish();
}

/// A router over `n` members, all ingress, equal weight, never failed.
fn router(n: usize) -> Router {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cluster.toml");
    let mut text = String::from("[routing]\naffinity = \"source-destination\"\n\n");
    for i in 0..n {
        text.push_str(&format!(
            "[members.gw{i:02}]\nsmtp = \"10.1.{}.{}:25\"\nweight = {}\n\n",
            i / 250,
            i % 250 + 1,
            100 + (i % 3) * 50
        ));
    }
    std::fs::write(&path, text).expect("write cluster.toml");
    let policy = load_policy(&path).unwrap_or_else(|e| panic!("policy: {e}"));
    Router::new(Arc::new(policy))
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(1));
    let table = MemberTable::new();
    let clients: Vec<IpAddr> = (0..1024u32)
        .map(|i| {
            IpAddr::V4(Ipv4Addr::from(
                0xc633_6400u32.wrapping_add(i.wrapping_mul(2_654_435_761)),
            ))
        })
        .collect();
    let dest = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 25)));
    for n in [3usize, 16, 64] {
        let router = router(n);
        let mut i = 0usize;
        group.bench_function(format!("{n}_members"), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                let route = router.route(&table, black_box(clients[i]), dest);
                black_box(route)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, command_parse, data_scan, route);
criterion_main!(benches);
