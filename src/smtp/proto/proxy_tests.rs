//! Tests for PROXY v1/v2 parsing and encoding: round trips, partial input,
//! LOCAL/UNKNOWN, and refusals.

use super::*;

type Parsed = Result<Option<(usize, ProxyInfo)>, ProxyError>;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn v2_signature_at_the_start() {
    let header = encode_proxy_header(true, sa("192.0.2.1:1234"), sa("198.51.100.1:25"));
    assert_eq!(v2_signature(&header), V2Signature::Present);
    assert_eq!(v2_signature(&header[..12]), V2Signature::Present);
    for cut in 0..12 {
        assert_eq!(
            v2_signature(&header[..cut]),
            V2Signature::Incomplete,
            "{cut}"
        );
    }
    assert_eq!(v2_signature(b"EHLO x\r\n"), V2Signature::Absent);
    assert_eq!(v2_signature(b"\r\nEHLO x\r\n"), V2Signature::Absent);
    assert_eq!(v2_signature(b"PROXY TCP4 "), V2Signature::Absent);
}

#[test]
fn v1_parse() {
    let tcp = |s: &str, d: &str| ProxyInfo::Tcp {
        source: sa(s),
        destination: sa(d),
    };
    let cases: &[(&[u8], Parsed)] = &[
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\nEHLO x\r\n",
            Ok(Some((44, tcp("192.0.2.1:56324", "198.51.100.2:25")))),
        ),
        (
            b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 25\r\n",
            Ok(Some((44, tcp("[2001:db8::1]:4000", "[2001:db8::2]:25")))),
        ),
        (b"PROXY UNKNOWN\r\n", Ok(Some((15, ProxyInfo::Local)))),
        (
            b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
            Ok(Some((35, ProxyInfo::Local))),
        ),
        // could still become valid
        (b"", Ok(None)),
        (b"P", Ok(None)),
        (b"PROXY", Ok(None)),
        (b"PROXY ", Ok(None)),
        (b"PROXY TC", Ok(None)),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 ", Ok(None)),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25", Ok(None)),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r", Ok(None)),
        (b"PROXY TCP6 2001:db8::", Ok(None)),
        (b"PROXY UNKNOWN whatever", Ok(None)),
        // Found by fuzzing: a read ending inside a UTF-8 sequence of the free
        // text after UNKNOWN was refused, though the whole line is accepted.
        (b"PROXY UNKNOWN 0\xd0", Ok(None)),
        (
            b"PROXY UNKNOWN 0\xd0\xb1OWN 00 L\r\n",
            Ok(Some((27, ProxyInfo::Local))),
        ),
        // never valid
        (b"EHLO x\r\n", Err(ProxyError::Invalid)),
        (b"E", Err(ProxyError::Invalid)),
        (b"PROXY FOO", Err(ProxyError::Invalid)),
        (b"PROXY TCP4 x", Err(ProxyError::Invalid)),
        (b"PROXY TCP4\r", Err(ProxyError::Invalid)),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3",
            Err(ProxyError::Invalid),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx",
            Err(ProxyError::Invalid),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            Err(ProxyError::Invalid),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            Err(ProxyError::Invalid),
        ),
        (
            b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
            Err(ProxyError::Invalid),
        ),
        (
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            Err(ProxyError::Invalid),
        ),
        // Found by fuzzing: ppp takes `+4000` as a port, but a prefix of the
        // same header was refused; the grammar has digits only.
        (
            b"PROXY TCP6 2001:db8::1 2001:db8::2 +4000 25\r\n",
            Err(ProxyError::Invalid),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n",
            Err(ProxyError::Invalid),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            parse_proxy_header(input),
            *want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    // No CRLF within the first 107 bytes.
    let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
    assert_eq!(parse_proxy_header(&long), Err(ProxyError::Invalid));
}

#[test]
fn v2_parse() {
    let sig = v2::PROTOCOL_PREFIX;
    // every prefix of a valid header needs more
    let header = encode_proxy_header(true, sa("192.0.2.1:5000"), sa("198.51.100.2:25"));
    for cut in 0..header.len() {
        assert_eq!(parse_proxy_header(&header[..cut]), Ok(None), "cut {cut}");
    }
    let mut with_tail = header.clone();
    with_tail.extend_from_slice(b"EHLO x\r\n");
    assert_eq!(
        parse_proxy_header(&with_tail),
        Ok(Some((
            header.len(),
            ProxyInfo::Tcp {
                source: sa("192.0.2.1:5000"),
                destination: sa("198.51.100.2:25"),
            }
        )))
    );
    // LOCAL, with no addresses
    let local = [sig, &[0x20, 0x00, 0x00, 0x00]].concat();
    assert_eq!(parse_proxy_header(&local), Ok(Some((16, ProxyInfo::Local))));
    // PROXY with AF_UNSPEC: use the socket's addresses
    let unspec = [sig, &[0x21, 0x00, 0x00, 0x00]].concat();
    assert_eq!(
        parse_proxy_header(&unspec),
        Ok(Some((16, ProxyInfo::Local)))
    );
    // bad version, bad signature, UDP
    let bad_version = [sig, &[0x31, 0x11, 0x00, 0x0c], &[0; 12]].concat();
    assert_eq!(parse_proxy_header(&bad_version), Err(ProxyError::Invalid));
    let mut bad_sig = header.clone();
    bad_sig[3] = b'x';
    assert_eq!(parse_proxy_header(&bad_sig), Err(ProxyError::Invalid));
    let udp = [sig, &[0x21, 0x12, 0x00, 0x0c], &[0; 12]].concat();
    assert_eq!(parse_proxy_header(&udp), Err(ProxyError::Invalid));
    // TLVs after the addresses are part of the header
    let tlv = [
        sig,
        &[0x21, 0x11, 0x00, 0x10],
        &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2],
        &[0x04, 0x00, 0x01, 0x00],
    ]
    .concat();
    assert_eq!(
        parse_proxy_header(&tlv),
        Ok(Some((
            32,
            ProxyInfo::Tcp {
                source: sa("1.2.3.4:1"),
                destination: sa("5.6.7.8:2"),
            }
        )))
    );
}

#[test]
fn round_trips() {
    let pairs = [
        ("192.0.2.1:56324", "198.51.100.2:25"),
        ("[2001:db8::1]:4000", "[2001:db8::2]:587"),
        ("0.0.0.0:0", "255.255.255.255:65535"),
    ];
    for v2 in [false, true] {
        for (s, d) in pairs {
            let header = encode_proxy_header(v2, sa(s), sa(d));
            assert_eq!(
                parse_proxy_header(&header),
                Ok(Some((
                    header.len(),
                    ProxyInfo::Tcp {
                        source: sa(s),
                        destination: sa(d),
                    }
                ))),
                "v2={v2} {s} {d}"
            );
        }
        // mixed families come back IPv4-mapped
        let header = encode_proxy_header(v2, sa("192.0.2.1:1"), sa("[2001:db8::2]:25"));
        assert_eq!(
            parse_proxy_header(&header),
            Ok(Some((
                header.len(),
                ProxyInfo::Tcp {
                    source: sa("[::ffff:192.0.2.1]:1"),
                    destination: sa("[2001:db8::2]:25"),
                }
            )))
        );
    }
    assert_eq!(
        encode_proxy_header(false, sa("192.0.2.1:56324"), sa("198.51.100.2:25")),
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n"
    );
}

mod props {
    //! Property tests: encode -> parse round trips for v1 and v2, IPv4, IPv6
    //! and mixed; a header split anywhere asks for more; arbitrary bytes never
    //! panic and never claim more than they were given.
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<Ipv4Addr>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(ip.into(), p)),
            (any::<Ipv6Addr>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(ip.into(), p)),
        ]
    }

    /// `a` as carried next to `other`: IPv4-mapped beside an IPv6 address.
    fn carried(a: SocketAddr, other: SocketAddr) -> SocketAddr {
        match (a.ip(), other.ip()) {
            (IpAddr::V4(ip), IpAddr::V6(_)) => {
                SocketAddr::new(ip.to_ipv6_mapped().into(), a.port())
            }
            _ => a,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn encode_parse_round_trip(v2 in any::<bool>(), source in addr(), destination in addr()) {
            let header = encode_proxy_header(v2, source, destination);
            let want = ProxyInfo::Tcp {
                source: carried(source, destination),
                destination: carried(destination, source),
            };
            prop_assert_eq!(parse_proxy_header(&header), Ok(Some((header.len(), want))));
            let mut followed = header.clone();
            followed.extend_from_slice(b"EHLO x\r\n");
            prop_assert_eq!(parse_proxy_header(&followed), Ok(Some((header.len(), want))));
            for cut in 0..header.len() {
                prop_assert_eq!(parse_proxy_header(&header[..cut]), Ok(None), "cut {}", cut);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            v2_prefix in any::<bool>(),
            tail in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut buf = if v2_prefix { v2::PROTOCOL_PREFIX.to_vec() } else { b"PROXY ".to_vec() };
            buf.extend_from_slice(&tail);
            for input in [&buf[..], &tail[..]] {
                if let Ok(Some((len, _))) = parse_proxy_header(input) {
                    prop_assert!(len > 0 && len <= input.len());
                    for cut in 0..len {
                        prop_assert_eq!(parse_proxy_header(&input[..cut]), Ok(None));
                    }
                }
            }
        }

        #[test]
        fn v1_text_never_panics(line in "PROXY (TCP4|TCP6|UNKNOWN|TCP)( [0-9a-f.:+-]{0,16}){0,5}\r?\n?") {
            let _ = parse_proxy_header(line.as_bytes());
        }
    }
}
