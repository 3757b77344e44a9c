//! What a member's EHLO reply offers ([`Capabilities`]), and the XCLIENT
//! lines mxgate sends it, with RFC 3461 xtext encoding and decoding.

use super::line::MAX_COMMAND_LINE;
use super::reply::Reply;
use bytes::Bytes;

/// What a member's EHLO reply offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING.
    pub pipelining: bool,
    /// SIZE (with its limit, 0 = none declared).
    pub size: Option<u64>,
    /// 8BITMIME.
    pub eightbitmime: bool,
    /// ENHANCEDSTATUSCODES.
    pub enhanced_status_codes: bool,
    /// STARTTLS.
    pub starttls: bool,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// CHUNKING.
    pub chunking: bool,
    /// XCLIENT with its attribute names (upper-cased); `None` when not offered.
    pub xclient: Option<Vec<String>>,
}

impl Capabilities {
    /// Reads the capabilities from an EHLO reply (the first line, the
    /// server's greeting name, is skipped; keywords are case-insensitive).
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines().skip(1) {
            let line = String::from_utf8_lossy(line);
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eightbitmime = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "STARTTLS" => caps.starttls = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "CHUNKING" => caps.chunking = true,
                "XCLIENT" => caps.xclient = Some(words.map(str::to_ascii_uppercase).collect()),
                _ => {}
            }
        }
        caps
    }
}

/// Builds the `XCLIENT` command line(s) for `attrs` (name, raw value),
/// xtext-encoding values, leaving out attributes the server did not offer,
/// and splitting so no line exceeds [`MAX_COMMAND_LINE`].
///
/// An attribute too long to fit on a line of its own is left out too: a
/// member would refuse the whole line.
pub fn encode_xclient(attrs: &[(&str, &str)], offered: &[String]) -> Vec<Bytes> {
    const HEAD: &str = "XCLIENT";
    let mut lines = Vec::new();
    let mut line = String::from(HEAD);
    for (name, value) in attrs {
        if !offered.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            continue;
        }
        let attr = format!(
            "{}={}",
            name.to_ascii_uppercase(),
            xtext_encode(value.as_bytes())
        );
        if HEAD.len() + 1 + attr.len() + 2 > MAX_COMMAND_LINE {
            continue;
        }
        if line.len() + 1 + attr.len() + 2 > MAX_COMMAND_LINE {
            line.push_str("\r\n");
            lines.push(Bytes::from(std::mem::replace(
                &mut line,
                String::from(HEAD),
            )));
        }
        line.push(' ');
        line.push_str(&attr);
    }
    if line.len() > HEAD.len() {
        line.push_str("\r\n");
        lines.push(Bytes::from(line));
    }
    lines
}

/// RFC 3461 xtext: bytes outside 33..=126, `+` and `=` become `+HH`.
pub fn xtext_encode(value: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push('+');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// Decodes RFC 3461 xtext (`+HH`, hex digits of either case); `None` when
/// malformed or when the result is not UTF-8.
pub fn xtext_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'+' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = char::from(hex[0]).to_digit(16)?;
            let lo = char::from(hex[1]).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
