//! SMTP replies: building mxgate's own, and taking a member's (possibly
//! multi-line) reply off its input byte for byte so it can be relayed verbatim.

use bytes::{BufMut, Bytes, BytesMut};

/// Longest reply line accepted from a member, line ending included.
pub const MAX_REPLY_LINE: usize = 4096;
/// Largest reply accepted from a member, all lines together.
pub const MAX_REPLY_SIZE: usize = 64 * 1024;
/// Most lines in one reply.
pub const MAX_REPLY_LINES: usize = 256;

/// An SMTP reply, kept byte for byte as received (or as built) so it can be relayed verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    raw: Bytes,
}

impl Reply {
    /// One line: `CODE ENHANCED TEXT\r\n` (`enhanced` may be empty).
    pub fn new(code: u16, enhanced: &str, text: &str) -> Reply {
        // Exactly the length: `freeze` then keeps the buffer as it is (a
        // buffer with spare room gets a shared header allocated).
        let len = 5 + [enhanced, text]
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.len() + 1)
            .sum::<usize>();
        let mut out = BytesMut::with_capacity(len);
        put_line(&mut out, code, b' ', &[enhanced, text]);
        Reply {
            code,
            raw: out.freeze(),
        }
    }

    /// Multi-line reply `CODE-line` ... `CODE line`.
    pub fn multiline(code: u16, lines: &[&str]) -> Reply {
        // Exactly the length, as in `new`: `CODE-text\r\n` per line, the last
        // `CODE text\r\n` (`CODE\r\n` when empty).
        let len = match lines.last() {
            None => 5,
            Some(last) => {
                lines.iter().map(|l| l.len() + 6).sum::<usize>() - usize::from(last.is_empty())
            }
        };
        let mut out = BytesMut::with_capacity(len);
        match lines.split_last() {
            None => put_line(&mut out, code, b' ', &[]),
            Some((last, rest)) => {
                for line in rest {
                    put_line(&mut out, code, b'-', &[line]);
                }
                put_line(&mut out, code, b' ', &[last]);
            }
        }
        Reply {
            code,
            raw: out.freeze(),
        }
    }

    /// Three-digit code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The raw bytes, every line CRLF-terminated.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The raw bytes as a cheaply cloned buffer.
    pub fn to_bytes(&self) -> Bytes {
        self.raw.clone()
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx (354 to DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The text of every line, after the code and separator.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let raw: &[u8] = &self.raw;
        let body = raw.strip_suffix(b"\r\n").unwrap_or(raw);
        body.split(|&b| b == b'\n').map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            line.get(4..).unwrap_or_default()
        })
    }
}

/// Appends `CODE<sep>part part...\r\n`, skipping empty parts; CR and LF in the
/// text become spaces so a built reply is always well formed.
fn put_line(out: &mut BytesMut, code: u16, sep: u8, parts: &[&str]) {
    let code = code.min(999);
    // Three digits, zero-padded, without a formatter.
    out.put_slice(&[
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]);
    let mut first = true;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        out.put_u8(if first { sep } else { b' ' });
        first = false;
        if memchr::memchr2(b'\r', b'\n', part.as_bytes()).is_none() {
            out.put_slice(part.as_bytes());
        } else {
            out.extend(
                part.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
        }
    }
    if first && sep == b'-' {
        out.put_u8(b'-');
    }
    out.put_slice(b"\r\n");
}

/// A reply from a member that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not `DDD[ -]text`.
    #[error("malformed reply line")]
    Malformed,
    /// Lines of one reply disagree on the code.
    #[error("inconsistent reply codes")]
    InconsistentCode,
    /// Over the line or total size cap.
    #[error("reply too long")]
    TooLong,
}

/// Takes one complete (possibly multi-line) reply off the front of `buf`; `Ok(None)`: need more.
///
/// Lines ended by a bare LF are stored with CRLF, so the reply can be relayed
/// as valid SMTP. On error nothing is consumed (the caller drops the member).
pub fn parse_reply(buf: &mut BytesMut) -> Result<Option<Reply>, ReplyError> {
    // Every read of a reply starts here with nothing buffered yet.
    if buf.is_empty() {
        return Ok(None);
    }
    let mut pos = 0;
    let mut code = None;
    let mut bare_lf = false;
    for _ in 0..MAX_REPLY_LINES {
        let rest = &buf[pos..];
        let Some(lf) = memchr::memchr(b'\n', rest) else {
            return if rest.len() >= MAX_REPLY_LINE || buf.len() >= MAX_REPLY_SIZE {
                Err(ReplyError::TooLong)
            } else {
                Ok(None)
            };
        };
        if lf + 1 > MAX_REPLY_LINE || pos + lf + 1 > MAX_REPLY_SIZE {
            return Err(ReplyError::TooLong);
        }
        let line = &rest[..lf];
        let line = match line.strip_suffix(b"\r") {
            Some(l) => l,
            None => {
                bare_lf = true;
                line
            }
        };
        let (line_code, more) = parse_line(line)?;
        if *code.get_or_insert(line_code) != line_code {
            return Err(ReplyError::InconsistentCode);
        }
        pos += lf + 1;
        if !more {
            let raw = if bare_lf {
                crlf_lines(&buf.split_to(pos))
            } else {
                buf.split_to(pos).freeze()
            };
            return Ok(Some(Reply {
                code: line_code,
                raw,
            }));
        }
    }
    Err(ReplyError::TooLong)
}

/// Reads `DDD`, `DDD text` or `DDD-text`; returns the code and whether more lines follow.
fn parse_line(line: &[u8]) -> Result<(u16, bool), ReplyError> {
    let digits = line.get(..3).ok_or(ReplyError::Malformed)?;
    if !matches!(digits[0], b'1'..=b'5') || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ReplyError::Malformed);
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None | Some(b' ') => Ok((code, false)),
        Some(b'-') => Ok((code, true)),
        Some(_) => Err(ReplyError::Malformed),
    }
}

/// Rewrites every line ending of a complete reply as CRLF.
fn crlf_lines(raw: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(raw.len() + 16);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.put_slice(line);
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build() {
        assert_eq!(
            Reply::new(451, "4.4.1", "text").as_bytes(),
            b"451 4.4.1 text\r\n"
        );
        assert_eq!(Reply::new(220, "", "text").as_bytes(), b"220 text\r\n");
        assert_eq!(Reply::new(250, "", "").as_bytes(), b"250\r\n");
        assert_eq!(
            Reply::new(500, "5.5.2", "a\r\nb").as_bytes(),
            b"500 5.5.2 a  b\r\n"
        );
        let r = Reply::multiline(250, &["mx.example", "PIPELINING", "SIZE 1000"]);
        assert_eq!(
            r.as_bytes(),
            b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
        );
        assert_eq!(r.code(), 250);
        assert!(r.is_positive() && !r.is_transient() && !r.is_intermediate());
        let lines: Vec<&[u8]> = r.lines().collect();
        assert_eq!(lines, vec![&b"mx.example"[..], b"PIPELINING", b"SIZE 1000"]);
        assert_eq!(Reply::multiline(354, &["go"]).as_bytes(), b"354 go\r\n");
    }

    #[test]
    fn parse_table() {
        // (input, Ok(Some(raw stored)) / Ok(None) / Err, rest)
        type Want = Result<Option<&'static [u8]>, ReplyError>;
        let cases: &[(&[u8], Want, &[u8])] = &[
            (b"250 ok\r\n", Ok(Some(b"250 ok\r\n")), b""),
            (b"250\r\n", Ok(Some(b"250\r\n")), b""),
            (b"250 ok\n", Ok(Some(b"250 ok\r\n")), b""),
            (
                b"250-a\r\n250-b\r\n250 c\r\n354 x\r\n",
                Ok(Some(b"250-a\r\n250-b\r\n250 c\r\n")),
                b"354 x\r\n",
            ),
            (b"250-a\n250 c\r\n", Ok(Some(b"250-a\r\n250 c\r\n")), b""),
            (b"250-a\r\n250", Ok(None), b"250-a\r\n250"),
            (b"", Ok(None), b""),
            (b"25", Ok(None), b"25"),
            (
                b"250-a\r\n251 b\r\n",
                Err(ReplyError::InconsistentCode),
                b"250-a\r\n251 b\r\n",
            ),
            (b"25x ok\r\n", Err(ReplyError::Malformed), b"25x ok\r\n"),
            (b"250_ok\r\n", Err(ReplyError::Malformed), b"250_ok\r\n"),
            (b"\r\n", Err(ReplyError::Malformed), b"\r\n"),
            (b"650 no\r\n", Err(ReplyError::Malformed), b"650 no\r\n"),
        ];
        for (input, want, rest) in cases {
            let mut buf = BytesMut::from(*input);
            let got = parse_reply(&mut buf);
            let got = got.map(|r| r.map(|r| r.as_bytes().to_vec()));
            let want = want.clone().map(|r| r.map(<[u8]>::to_vec));
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(&buf[..], *rest);
        }
    }

    #[test]
    fn parse_lines_and_code() {
        let mut buf = BytesMut::from(&b"550-5.1.1 no such user\r\n550 5.1.1 really\r\n"[..]);
        let r = parse_reply(&mut buf).unwrap().unwrap();
        assert_eq!(r.code(), 550);
        assert!(r.is_permanent());
        let lines: Vec<&[u8]> = r.lines().collect();
        assert_eq!(lines, vec![&b"5.1.1 no such user"[..], b"5.1.1 really"]);
    }

    #[test]
    fn caps() {
        let long_line = [b"250 ".as_slice(), &[b'x'; MAX_REPLY_LINE]].concat();
        let mut buf = BytesMut::from(&long_line[..]);
        assert_eq!(parse_reply(&mut buf), Err(ReplyError::TooLong));
        let mut many = Vec::new();
        for _ in 0..MAX_REPLY_LINES {
            many.extend_from_slice(b"250-x\r\n");
        }
        many.extend_from_slice(b"250 x\r\n");
        assert_eq!(
            parse_reply(&mut BytesMut::from(&many[..])),
            Err(ReplyError::TooLong)
        );
        let mut big = Vec::new();
        for _ in 0..20 {
            big.extend_from_slice(b"250-");
            big.extend_from_slice(&[b'y'; 4000]);
            big.extend_from_slice(b"\r\n");
        }
        assert_eq!(
            parse_reply(&mut BytesMut::from(&big[..])),
            Err(ReplyError::TooLong)
        );
        // just under the line cap is fine
        let ok = [b"250 ".as_slice(), &[b'x'; MAX_REPLY_LINE - 6], b"\r\n"].concat();
        assert!(parse_reply(&mut BytesMut::from(&ok[..])).unwrap().is_some());
    }

    mod props {
        //! Property tests: arbitrary bytes never panic and consume all or
        //! nothing; a built multi-line reply parses back identically.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..600)) {
                let mut buf = BytesMut::from(&input[..]);
                match parse_reply(&mut buf) {
                    Ok(Some(reply)) => {
                        let consumed = input.len() - buf.len();
                        prop_assert!(consumed > 0 && input[consumed - 1] == b'\n');
                        prop_assert!((100..600).contains(&reply.code()));
                        prop_assert!(reply.as_bytes().ends_with(b"\r\n"));
                        prop_assert!(reply.as_bytes().len() >= consumed);
                    }
                    Ok(None) | Err(_) => prop_assert_eq!(&buf[..], &input[..]),
                }
            }

            #[test]
            fn reply_like_bytes_never_panic(
                lines in prop::collection::vec("[1-6][0-9]{2}[ -]?[ -~]{0,10}\r?\n?", 0..6),
            ) {
                let input = lines.concat();
                let mut buf = BytesMut::from(input.as_bytes());
                if let Ok(None) | Err(_) = parse_reply(&mut buf) {
                    prop_assert_eq!(&buf[..], input.as_bytes());
                }
            }

            #[test]
            fn multiline_round_trip(
                code in 100u16..600,
                lines in prop::collection::vec("[ -~\r\n]{0,40}", 0..12),
            ) {
                let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
                let reply = Reply::multiline(code, &refs);
                let mut buf = BytesMut::from(reply.as_bytes());
                buf.extend_from_slice(b"220 next\r\n");
                prop_assert_eq!(parse_reply(&mut buf), Ok(Some(reply.clone())));
                prop_assert_eq!(&buf[..], b"220 next\r\n");
                let got: Vec<&[u8]> = reply.lines().collect();
                let want: Vec<String> = if lines.is_empty() {
                    vec![String::new()]
                } else {
                    lines.iter().map(|l| l.replace(['\r', '\n'], " ")).collect()
                };
                let want: Vec<&[u8]> = want.iter().map(String::as_bytes).collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn incremental() {
        let input = b"250-mx\r\n250-SIZE 10\r\n250 8BITMIME\r\n";
        for cut in 0..input.len() {
            let mut buf = BytesMut::from(&input[..cut]);
            assert_eq!(parse_reply(&mut buf), Ok(None), "cut {cut}");
            buf.extend_from_slice(&input[cut..]);
            assert_eq!(parse_reply(&mut buf).unwrap().unwrap().as_bytes(), input);
        }
    }
}
