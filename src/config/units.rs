//! Value syntax shared by both files: sizes, durations, `host:port`, networks,
//! GINA upstreams and names.
//!
//! Every parser returns `Err(message)` worded for an operator; the caller adds
//! file, line and key.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use super::types::HostPort;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Splits `"10MiB"` into `("10", "MiB")`, allowing one space between them.
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    (&text[..end], text[end..].trim_start())
}

pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = split_number(text);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a size: expected a number of bytes or a number with KiB, MiB or GiB, e.g. \"50MiB\""
        ));
    }
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => KIB,
        "mib" => MIB,
        "gib" => GIB,
        "k" | "kb" | "m" | "mb" | "g" | "gb" => {
            return Err(format!(
                "{text:?}: ambiguous unit {unit:?}; sizes use binary units B, KiB, MiB or GiB (1MiB = 1048576 bytes)"
            ));
        }
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use B, KiB, MiB or GiB, e.g. \"50MiB\""
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("{text:?} is too large"))
}

pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = split_number(text);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a duration: expected a number with ms, s, m or h, e.g. \"5s\""
        ));
    }
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => {
            return Err(format!(
                "{text:?}: missing unit; write e.g. \"{digits}s\" (units: ms, s, m, h)"
            ));
        }
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use ms, s, m or h, e.g. \"5s\""
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `52428800` -> `"50MiB"` when exact, else the plain byte count.
pub(crate) fn format_size(bytes: u64) -> Option<String> {
    [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")]
        .into_iter()
        .find(|(unit, _)| bytes != 0 && bytes.is_multiple_of(*unit))
        .map(|(unit, suffix)| format!("{}{suffix}", bytes / unit))
}

/// Serializes a byte count as `"50MiB"` where exact, else as an integer.
pub(crate) fn ser_size<S: serde::Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
    match format_size(*bytes) {
        Some(text) => s.serialize_str(&text),
        None => s.serialize_u64(*bytes),
    }
}

/// `host:port` or `[v6]:port`; the host is an IP literal or a DNS name.
pub(super) fn parse_host_port(text: &str) -> Result<HostPort, String> {
    let hint =
        "expected host:port, e.g. \"10.0.0.1:25\", \"mta.example.com:25\" or \"[2001:db8::1]:25\"";
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("{text:?}: {hint}"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{text:?}: {host:?} is not an IPv6 address"));
        }
        (host, port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?}: missing port; {hint}"))?;
        if host.contains(':') {
            return Err(format!(
                "{text:?}: write IPv6 addresses in brackets, e.g. \"[2001:db8::1]:25\""
            ));
        }
        if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
            return Err(format!(
                "{text:?}: {host:?} is not an IP address or host name"
            ));
        }
        (host, port)
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => p,
        _ => return Err(format!("{text:?}: port must be 1..65535")),
    };
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A domain name for `[dns] domains`.
pub(super) fn check_domain(text: &str) -> Result<(), String> {
    if is_dns_name(text) && text.parse::<IpAddr>().is_err() {
        Ok(())
    } else {
        Err(format!("{text:?} is not a domain name"))
    }
}

/// An `IP:PORT` socket address (listeners, name servers).
pub(super) fn parse_socket(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "{text:?} is not an IP:PORT address, e.g. \"0.0.0.0:25\" or \"[::]:25\" (host names are not allowed here)"
        )
    })
}

/// An IP (a /32 or /128) or a CIDR; host bits are cleared.
pub(super) fn parse_net(text: &str) -> Result<IpNet, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    text.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
        format!("{text:?} is not an IP address or CIDR, e.g. \"10.0.0.1\" or \"192.0.2.0/24\"")
    })
}

/// A GINA upstream: `host:port` (plain HTTP) or `https://host:port`.
pub(super) fn check_gina(text: &str) -> Result<(), String> {
    let rest = text.strip_prefix("https://").unwrap_or(text);
    if rest.contains("://") {
        return Err(format!(
            "{text:?}: expected \"host:port\" (plain HTTP) or \"https://host:port\" (TLS)"
        ));
    }
    if rest.contains('/') {
        return Err(format!(
            "{text:?}: no path allowed, only \"[https://]host:port\""
        ));
    }
    parse_host_port(rest).map(|_| ())
}

/// The path of the GINA HTTP health check: absolute, printable ASCII, no spaces.
pub(super) fn check_http_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!(
            "{text:?}: must start with \"/\", e.g. \"/\" or \"/health\""
        ));
    }
    if text.bytes().any(|b| !b.is_ascii_graphic())
        || text.parse::<http::uri::PathAndQuery>().is_err()
    {
        return Err(format!(
            "{text:?}: not a valid request path (printable ASCII without spaces; percent-encode the rest)"
        ));
    }
    Ok(text.to_owned())
}

/// Member, listener and node names: letters, digits, `.`, `_`, `-`.
pub(super) fn check_name(text: &str) -> Result<(), String> {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a valid name: use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        ))
    }
}

/// Picks one of `valid` (lowercase names) or lists them.
pub(super) fn parse_enum<T: Copy>(text: &str, valid: &[(&str, T)]) -> Result<T, String> {
    valid
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<String> = valid.iter().map(|(n, _)| format!("{n:?}")).collect();
            format!(
                "{text:?} is not valid; expected one of {}",
                names.join(", ")
            )
        })
}

/// Levenshtein distance, for "did you mean".
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}
