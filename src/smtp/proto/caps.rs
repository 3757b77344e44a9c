//! What a member's EHLO reply offers ([`Capabilities`]), and the XCLIENT
//! lines mxgate sends it, with RFC 3461 xtext encoding and decoding.

use super::line::MAX_COMMAND_LINE;
use super::reply::Reply;

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
    /// DSN.
    pub dsn: bool,
    /// XCLIENT with the attribute names mxgate knows; `None` when not offered.
    pub xclient: Option<XclientAttrs>,
}

/// The optional extensions mxgate offers a client only when every member
/// the client could be routed to offers them (SPEC 4.2): what a member's
/// EHLO says of them, and what a session was promised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Extensions {
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// CHUNKING (RFC 3030 BDAT).
    pub chunking: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
}

impl Extensions {
    /// All of them.
    pub const ALL: Extensions = Extensions {
        smtputf8: true,
        chunking: true,
        dsn: true,
    };

    /// What both `self` and `other` offer.
    pub fn and(self, other: Extensions) -> Extensions {
        Extensions {
            smtputf8: self.smtputf8 && other.smtputf8,
            chunking: self.chunking && other.chunking,
            dsn: self.dsn && other.dsn,
        }
    }

    /// Whether `self` offers everything `needed` does.
    pub fn covers(self, needed: Extensions) -> bool {
        self.and(needed) == needed
    }

    /// The EHLO keywords, in the order mxgate advertises them.
    pub fn keywords(self) -> impl Iterator<Item = &'static str> {
        [
            (self.smtputf8, "SMTPUTF8"),
            (self.chunking, "CHUNKING"),
            (self.dsn, "DSN"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
    }
}

impl serde::Serialize for Extensions {
    /// The keywords, as a list.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.keywords())
    }
}

impl std::fmt::Display for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words: Vec<_> = self.keywords().collect();
        if words.is_empty() {
            return f.write_str("-");
        }
        f.write_str(&words.join(" "))
    }
}

/// The XCLIENT attribute names mxgate can send (Postfix's set).
const XCLIENT_NAMES: [&str; 9] = [
    "NAME",
    "ADDR",
    "PORT",
    "PROTO",
    "HELO",
    "LOGIN",
    "DESTADDR",
    "DESTPORT",
    "REVERSE_NAME",
];

/// Which XCLIENT attributes a member offered, among those mxgate can send
/// (one bit per name of `XCLIENT_NAMES`; names mxgate never sends are not
/// kept, so nothing is allocated per name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XclientAttrs(u16);

impl XclientAttrs {
    /// The attributes among `names` (case-insensitive; unknown names ignored).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> XclientAttrs {
        let mut bits = 0;
        for name in names {
            if let Some(i) = bit(name) {
                bits |= 1 << i;
            }
        }
        XclientAttrs(bits)
    }

    /// True when the attribute `name` (case-insensitive) was offered.
    pub fn offers(&self, name: &str) -> bool {
        bit(name.as_bytes()).is_some_and(|i| self.0 & (1 << i) != 0)
    }
}

fn bit(name: &[u8]) -> Option<usize> {
    XCLIENT_NAMES
        .iter()
        .position(|known| known.as_bytes().eq_ignore_ascii_case(name))
}

impl Capabilities {
    /// The optional extensions among these capabilities.
    pub fn extensions(&self) -> Extensions {
        Extensions {
            smtputf8: self.smtputf8,
            chunking: self.chunking,
            dsn: self.dsn,
        }
    }

    /// Reads the capabilities from an EHLO reply (the first line, the
    /// server's greeting name, is skipped; keywords are case-insensitive).
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines().skip(1) {
            // Words are ASCII; compared in place, nothing is allocated per line.
            let mut words = line
                .split(u8::is_ascii_whitespace)
                .filter(|word| !word.is_empty());
            let Some(keyword) = words.next() else {
                continue;
            };
            let is = |name: &str| keyword.eq_ignore_ascii_case(name.as_bytes());
            if is("PIPELINING") {
                caps.pipelining = true;
            } else if is("SIZE") {
                caps.size = Some(
                    words
                        .next()
                        .and_then(|n| std::str::from_utf8(n).ok())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0),
                );
            } else if is("8BITMIME") {
                caps.eightbitmime = true;
            } else if is("ENHANCEDSTATUSCODES") {
                caps.enhanced_status_codes = true;
            } else if is("STARTTLS") {
                caps.starttls = true;
            } else if is("SMTPUTF8") {
                caps.smtputf8 = true;
            } else if is("CHUNKING") {
                caps.chunking = true;
            } else if is("DSN") {
                caps.dsn = true;
            } else if is("XCLIENT") {
                caps.xclient = Some(XclientAttrs::from_names(words));
            }
        }
        caps
    }
}

/// The capabilities of the last EHLO reply parsed: a member answers every
/// EHLO with the same bytes (both EHLOs of a connection, and every
/// connection), so a reply equal to the last one is not parsed again (one
/// comparison instead of about 2.7 k instructions per reply).
#[derive(Debug, Default)]
pub struct EhloCache {
    raw: Vec<u8>,
    caps: Capabilities,
}

impl EhloCache {
    /// Longest reply kept (longer ones are parsed every time).
    const MAX: usize = 1024;

    /// [`Capabilities::from_ehlo`] of `reply`, from the cache when `reply`
    /// is byte for byte the last one.
    pub fn capabilities(&mut self, reply: &Reply) -> Capabilities {
        let raw = reply.as_bytes();
        if !self.raw.is_empty() && self.raw == raw {
            return self.caps.clone();
        }
        let caps = Capabilities::from_ehlo(reply);
        if raw.len() <= Self::MAX {
            self.raw.clear();
            self.raw.extend_from_slice(raw);
            self.caps = caps.clone();
        }
        caps
    }
}

/// Builds the `XCLIENT` command line(s) for `attrs` (name, raw value),
/// xtext-encoding values, leaving out attributes the server did not offer,
/// and splitting so no line exceeds [`MAX_COMMAND_LINE`].
///
/// An attribute too long to fit on a line of its own is left out too: a
/// member would refuse the whole line. Each attribute is encoded straight
/// into the line (no buffer per attribute).
pub fn encode_xclient(attrs: &[(&str, &str)], offered: XclientAttrs) -> Vec<Vec<u8>> {
    const HEAD: &[u8] = b"XCLIENT";
    let mut lines = Vec::new();
    let mut line = Vec::with_capacity(160);
    line.extend_from_slice(HEAD);
    for (name, value) in attrs {
        if !offered.offers(name) {
            continue;
        }
        let before = line.len();
        line.push(b' ');
        line.extend(name.bytes().map(|b| b.to_ascii_uppercase()));
        line.push(b'=');
        xtext_encode_into(value.as_bytes(), &mut line);
        let attr_len = line.len() - before - 1;
        if HEAD.len() + 1 + attr_len + 2 > MAX_COMMAND_LINE {
            line.truncate(before);
            continue;
        }
        if line.len() + 2 > MAX_COMMAND_LINE {
            // The attribute (with its leading space) starts the next line.
            let attr = line.split_off(before);
            line.extend_from_slice(b"\r\n");
            let mut next = Vec::with_capacity(160);
            next.extend_from_slice(HEAD);
            next.extend_from_slice(&attr);
            lines.push(std::mem::replace(&mut line, next));
        }
    }
    if line.len() > HEAD.len() {
        line.extend_from_slice(b"\r\n");
        lines.push(line);
    }
    lines
}

/// RFC 3461 xtext: bytes outside 33..=126, `+` and `=` become `+HH`.
pub fn xtext_encode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    xtext_encode_into(value, &mut out);
    // xtext is ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// [`xtext_encode`], appending to `out`; runs that need no encoding are
/// copied whole.
fn xtext_encode_into(value: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let plain = |b: &u8| (33..=126).contains(b) && *b != b'+' && *b != b'=';
    let mut rest = value;
    while let Some(i) = rest.iter().position(|b| !plain(b)) {
        let b = rest[i];
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(&[b'+', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(lines: &[&str]) -> Capabilities {
        Capabilities::from_ehlo(&Reply::multiline(250, lines))
    }

    #[test]
    fn from_ehlo() {
        let caps = ehlo(&[
            "mx.example greets you",
            "pipelining",
            "SIZE 10240000",
            "8BITMIME",
            "EnhancedStatusCodes",
            "STARTTLS",
            "SMTPUTF8",
            "CHUNKING",
            "dsn",
            "XCLIENT NAME addr Port PROTO HELO LOGIN DESTADDR DESTPORT",
            "ETRN",
        ]);
        assert_eq!(
            caps,
            Capabilities {
                pipelining: true,
                size: Some(10_240_000),
                eightbitmime: true,
                enhanced_status_codes: true,
                starttls: true,
                smtputf8: true,
                chunking: true,
                dsn: true,
                xclient: Some(XclientAttrs(0xff)),
            }
        );
        // The greeting line is not a capability; SIZE without a number is 0.
        let caps = ehlo(&["PIPELINING", "SIZE"]);
        assert!(!caps.pipelining);
        assert_eq!(caps.size, Some(0));
        assert_eq!(ehlo(&["mx"]), Capabilities::default());
        assert_eq!(
            ehlo(&["mx", "XCLIENT"]).xclient,
            Some(XclientAttrs::default())
        );
        let some = ehlo(&["mx", "XCLIENT addr FOO helo"]).xclient.unwrap();
        assert!(some.offers("ADDR") && some.offers("helo"));
        assert!(!some.offers("NAME") && !some.offers("FOO"));
    }

    #[test]
    fn blanks_and_cache() {
        // Leading blanks and tabs between words, as some servers send them.
        let caps = ehlo(&["mx", " SIZE\t 2048", "XCLIENT\tADDR  HELO"]);
        assert_eq!(caps.size, Some(2048));
        let attrs = caps.xclient.unwrap();
        assert!(attrs.offers("ADDR") && attrs.offers("HELO") && !attrs.offers("NAME"));

        // The cache answers like the parser, for the same reply and for others.
        let mut cache = EhloCache::default();
        let replies = [
            Reply::multiline(250, &["mx", "PIPELINING", "SIZE 10"]),
            Reply::multiline(250, &["mx", "PIPELINING", "SIZE 10"]),
            Reply::multiline(250, &["mx", "SIZE 20", "STARTTLS"]),
            Reply::multiline(250, &["mx", "PIPELINING", "SIZE 10"]),
            Reply::multiline(250, &["mx"]),
            Reply::new(250, "", &"x".repeat(2000)),
            Reply::new(250, "", &"x".repeat(2000)),
            Reply::multiline(250, &["mx", "XCLIENT ADDR"]),
        ];
        for reply in &replies {
            assert_eq!(cache.capabilities(reply), Capabilities::from_ehlo(reply));
        }
    }

    fn attrs(names: &[&str]) -> XclientAttrs {
        XclientAttrs::from_names(names.iter().map(|n| n.as_bytes()))
    }

    #[test]
    fn xtext() {
        assert_eq!(
            xtext_encode(b"a b+c=d\x7f\xc3\xa9"),
            "a+20b+2Bc+3Dd+7F+C3+A9"
        );
        assert_eq!(xtext_decode("a+20b+2bc+3Dd").as_deref(), Some("a b+c=d"));
        assert_eq!(xtext_decode("+"), None);
        assert_eq!(xtext_decode("+4"), None);
        assert_eq!(xtext_decode("+G0"), None);
        assert_eq!(xtext_decode("+FF"), None);
        for s in [
            "",
            "plain",
            "with space",
            "ünïcödé",
            "[UNAVAILABLE]",
            "a+b=c",
        ] {
            assert_eq!(
                xtext_decode(&xtext_encode(s.as_bytes())).as_deref(),
                Some(s)
            );
        }
    }

    #[test]
    fn xclient_lines() {
        let offered = attrs(&["ADDR", "PORT", "NAME", "HELO", "PROTO"]);
        let lines = encode_xclient(
            &[
                ("ADDR", "192.0.2.1"),
                ("port", "4711"),
                ("NAME", "[UNAVAILABLE]"),
                ("HELO", "my host"),
                ("DESTADDR", "192.0.2.2"),
                ("PROTO", "ESMTP"),
            ],
            offered,
        );
        assert_eq!(
            lines,
            vec![
                b"XCLIENT ADDR=192.0.2.1 PORT=4711 NAME=[UNAVAILABLE] HELO=my+20host PROTO=ESMTP\r\n"
                    .to_vec()
            ]
        );
        assert!(encode_xclient(&[("DESTADDR", "x")], offered).is_empty());
        assert!(encode_xclient(&[], offered).is_empty());
        // Round trip through the command parser.
        let line = &lines[0];
        let parsed = super::super::parse_command(&line[..line.len() - 2]).unwrap();
        assert_eq!(
            parsed,
            super::super::Command::Xclient(vec![
                ("ADDR".into(), "192.0.2.1".into()),
                ("PORT".into(), "4711".into()),
                ("NAME".into(), "[UNAVAILABLE]".into()),
                ("HELO".into(), "my host".into()),
                ("PROTO".into(), "ESMTP".into()),
            ])
        );
    }

    #[test]
    fn xclient_split() {
        let offered = attrs(&["NAME", "HELO", "LOGIN"]);
        let name = "n".repeat(250);
        let helo = " ".repeat(100); // 300 bytes encoded
        let login = "l".repeat(600); // too long for any line
        let lines = encode_xclient(
            &[("NAME", &name), ("HELO", &helo), ("LOGIN", &login)],
            offered,
        );
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert!(line.len() <= MAX_COMMAND_LINE);
            assert!(line.starts_with(b"XCLIENT ") && line.ends_with(b"\r\n"));
        }
        assert!(lines[0].starts_with(b"XCLIENT NAME=nnn"));
        assert!(lines[1].starts_with(b"XCLIENT HELO=+20+20"));
    }
}
