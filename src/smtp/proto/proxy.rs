//! PROXY protocol headers (HAProxy v1 text and v2 binary), parsed and built
//! with the `ppp` crate. Parsing is incremental: the caller keeps reading
//! while [`parse_proxy_header`] answers `Ok(None)`.

use ppp::PartialResult;
use ppp::{v1, v2};
use std::net::{IpAddr, SocketAddr};

/// Longest v1 header, CRLF included (proxy-protocol.txt 2.1).
const V1_MAX: usize = 107;

/// Addresses carried by a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyInfo {
    /// The proxied connection's client and the address it reached.
    Tcp {
        /// Original client.
        source: SocketAddr,
        /// Original destination.
        destination: SocketAddr,
    },
    /// `LOCAL` / `UNKNOWN`: keep the socket's own addresses.
    Local,
}

/// A PROXY header that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Not a PROXY v1 or v2 header.
    #[error("invalid PROXY header")]
    Invalid,
}

/// What the start of a stream says about a PROXY v2 header (its 12-octet
/// binary signature), for a peer that may not send one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2Signature {
    /// `buf` starts with the signature.
    Present,
    /// `buf` is shorter than the signature and could still become it.
    Incomplete,
    /// `buf` is not a PROXY v2 header.
    Absent,
}

/// Looks for the PROXY v2 signature (`\r\n\r\n\0\r\nQUIT\n`) at the start of `buf`.
pub fn v2_signature(buf: &[u8]) -> V2Signature {
    let signature = v2::PROTOCOL_PREFIX;
    if buf.starts_with(signature) {
        V2Signature::Present
    } else if signature.starts_with(buf) {
        V2Signature::Incomplete
    } else {
        V2Signature::Absent
    }
}

/// Parses a PROXY v1 or v2 header at the front of `buf`: `Ok(None)` needs more,
/// `Ok(Some((len, info)))` consumed `len` bytes.
pub fn parse_proxy_header(buf: &[u8]) -> Result<Option<(usize, ProxyInfo)>, ProxyError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == v2::PROTOCOL_PREFIX[0] {
        parse_v2(buf)
    } else {
        parse_v1(buf)
    }
}

fn parse_v2(buf: &[u8]) -> Result<Option<(usize, ProxyInfo)>, ProxyError> {
    let header = match v2::Header::try_from(buf) {
        Ok(header) => header,
        Err(e) if e.is_incomplete() => return Ok(None),
        Err(_) => return Err(ProxyError::Invalid),
    };
    let len = header.len();
    if header.command == v2::Command::Local {
        return Ok(Some((len, ProxyInfo::Local)));
    }
    if header.protocol == v2::Protocol::Datagram {
        return Err(ProxyError::Invalid);
    }
    let info = match header.addresses {
        v2::Addresses::IPv4(a) => ProxyInfo::Tcp {
            source: SocketAddr::new(a.source_address.into(), a.source_port),
            destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
        },
        v2::Addresses::IPv6(a) => ProxyInfo::Tcp {
            source: SocketAddr::new(a.source_address.into(), a.source_port),
            destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
        },
        // AF_UNSPEC: the receiver must use the real connection's addresses.
        v2::Addresses::Unspecified => ProxyInfo::Local,
        v2::Addresses::Unix(_) => return Err(ProxyError::Invalid),
    };
    Ok(Some((len, info)))
}

fn parse_v1(buf: &[u8]) -> Result<Option<(usize, ProxyInfo)>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        return if buf.len() < V1_MAX && v1_prefix(buf) {
            Ok(None)
        } else {
            Err(ProxyError::Invalid)
        };
    };
    let line = &buf[..=lf];
    let header = v1::Header::try_from(line).map_err(|_| ProxyError::Invalid)?;
    // ppp stops at the first CR; the whole line must be the header. ppp is
    // also laxer than the grammar (a port `+25`): the tokens must be what
    // `v1_prefix` lets through, or a header split across reads would be
    // refused while the same header in one read is accepted.
    if header.header.len() != line.len() || !v1_prefix(&line[..lf]) {
        return Err(ProxyError::Invalid);
    }
    let info = match header.addresses {
        v1::Addresses::Tcp4(a) => ProxyInfo::Tcp {
            source: SocketAddr::new(a.source_address.into(), a.source_port),
            destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
        },
        v1::Addresses::Tcp6(a) => ProxyInfo::Tcp {
            source: SocketAddr::new(a.source_address.into(), a.source_port),
            destination: SocketAddr::new(a.destination_address.into(), a.destination_port),
        },
        v1::Addresses::Unknown => ProxyInfo::Local,
    };
    Ok(Some((line.len(), info)))
}

/// Whether `buf` (no LF yet) can still grow into a valid v1 header.
///
/// `ppp` reports some valid prefixes (a port cut right after its separating
/// space, say) as terminal errors and some hopeless ones as incomplete, so
/// this is a token-by-token check; the complete line is then left to `ppp`.
fn v1_prefix(buf: &[u8]) -> bool {
    // Bytes, not text: a read may end inside a UTF-8 sequence of the free
    // text after `UNKNOWN`, which the complete line may well carry.
    // A final CR can only be followed by the LF: every token is complete.
    let (text, cr) = match buf.strip_suffix(b"\r") {
        Some(t) => (t, true),
        None => (buf, false),
    };
    if text.contains(&b'\r') {
        return false;
    }
    let tokens: Vec<&[u8]> = text.split(|&b| b == b' ').collect();
    let last = tokens.len() - 1;
    // Token `i` matches `full`, or is its beginning when still being received.
    let fits = |i: usize, full: &str| {
        let token = tokens[i];
        token == full.as_bytes() || (i == last && !cr && full.as_bytes().starts_with(token))
    };
    if !fits(0, "PROXY") {
        return false;
    }
    if tokens.len() == 1 {
        return true;
    }
    if tokens[1] == b"UNKNOWN" {
        return true;
    }
    if tokens.len() == 2 {
        return !cr && ["TCP4", "TCP6", "UNKNOWN"].iter().any(|p| fits(1, p));
    }
    let v6 = match tokens[1] {
        b"TCP4" => false,
        b"TCP6" => true,
        _ => return false,
    };
    if tokens.len() > 6 || (cr && tokens.len() != 6) {
        return false;
    }
    tokens.iter().enumerate().skip(2).all(|(i, t)| {
        let partial = i == last && !cr;
        let chars_ok = match i {
            2 | 3 if v6 => t
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
            2 | 3 => t.iter().all(|&b| b.is_ascii_digit() || b == b'.'),
            _ => t.len() <= 5 && t.iter().all(u8::is_ascii_digit),
        };
        chars_ok && (partial || !t.is_empty())
    })
}

/// Encodes a PROXY header for a member (`v2 == false`: text v1).
///
/// When the two addresses are of different families the IPv4 one is written
/// IPv4-mapped, so the header still carries both.
pub fn encode_proxy_header(v2: bool, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    if v2 {
        let addresses = v2::Addresses::from((source, destination));
        // Writing into a Vec cannot fail.
        v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            addresses,
        )
        .build()
        .unwrap_or_default()
    } else {
        v1::Addresses::from((source, destination))
            .to_string()
            .into_bytes()
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let mapped = |s: SocketAddr| match s.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (mapped(a), mapped(b))
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
