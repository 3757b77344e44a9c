//! Fuzzes the PROXY header parser. The first byte selects the check:
//! - parse arbitrary bytes: no panic, a consumed length within the input,
//!   every shorter prefix of an accepted header asks for more (a header split
//!   across reads is never refused), the same answer with trailing bytes;
//! - round trip: `encode_proxy_header` (v1 or v2, IPv4, IPv6 or mixed) parses
//!   back to the same addresses (mixed families come back IPv4-mapped).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mxgate::smtp::proto::{ProxyInfo, encode_proxy_header, parse_proxy_header};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        parse(rest);
    } else {
        round_trip(selector, rest);
    }
});

fn parse(buf: &[u8]) {
    let Ok(Some((len, info))) = parse_proxy_header(buf) else {
        return;
    };
    assert!(
        len > 0 && len <= buf.len(),
        "consumed {len} of {}",
        buf.len()
    );
    assert_eq!(parse_proxy_header(&buf[..len]), Ok(Some((len, info))));
    for cut in 0..len {
        assert_eq!(
            parse_proxy_header(&buf[..cut]),
            Ok(None),
            "prefix of {cut} bytes of an accepted header refused"
        );
    }
}

fn round_trip(selector: u8, bytes: &[u8]) {
    let mut take = bytes.iter().copied().chain(std::iter::repeat(0));
    let mut next = |n: usize| -> Vec<u8> { (&mut take).take(n).collect() };
    let mut addr = |v6: bool| -> SocketAddr {
        let ip = if v6 {
            let raw: [u8; 16] = next(16).try_into().unwrap_or_default();
            IpAddr::V6(Ipv6Addr::from(raw))
        } else {
            let raw: [u8; 4] = next(4).try_into().unwrap_or_default();
            IpAddr::V4(Ipv4Addr::from(raw))
        };
        let port = next(2);
        SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]]))
    };
    let v2 = selector & 2 != 0;
    let source = addr(selector & 4 != 0);
    let destination = addr(selector & 8 != 0);
    let header = encode_proxy_header(v2, source, destination);
    let want = ProxyInfo::Tcp {
        source: canonical(source, destination),
        destination: canonical(destination, source),
    };
    assert_eq!(
        parse_proxy_header(&header),
        Ok(Some((header.len(), want))),
        "{source} {destination} v2={v2} {header:?}"
    );
    // Followed by the client's first command, and arriving in two pieces.
    let mut followed = header.clone();
    followed.extend_from_slice(b"EHLO x\r\n");
    assert_eq!(
        parse_proxy_header(&followed),
        Ok(Some((header.len(), want)))
    );
    for cut in 0..header.len() {
        assert_eq!(parse_proxy_header(&header[..cut]), Ok(None), "cut {cut}");
    }
}

/// `a` as the header carries it: IPv4-mapped when the other address is IPv6.
fn canonical(a: SocketAddr, other: SocketAddr) -> SocketAddr {
    match (a.ip(), other.ip()) {
        (IpAddr::V4(ip), IpAddr::V6(_)) => {
            SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port())
        }
        _ => a,
    }
}
