//! Fuzzes the member reply parser. The first byte selects the check:
//! - arbitrary bytes (or a piece of them repeated up to 1020 times), parsed
//!   reply after reply: no panic; on success the
//!   consumed bytes are the reply (bare LF rewritten as CRLF), within the
//!   caps, every line CRLF-ended with the same code, and every shorter prefix
//!   asks for more; on `Ok(None)` or an error nothing is consumed;
//! - round trip: a built `Reply::multiline` parses back identically.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mxgate::smtp::proto::{MAX_REPLY_LINE, MAX_REPLY_LINES, MAX_REPLY_SIZE, Reply, parse_reply};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        if selector & 2 == 0 {
            parse_all(rest);
        } else if let Some((&times, unit)) = rest.split_first() {
            // The input repeated, to reach the line and size caps (64 KiB)
            // past libFuzzer's default 4 KiB input limit.
            parse_all(&unit.repeat(usize::from(times) * 4));
        }
    } else {
        round_trip(selector, rest);
    }
});

fn parse_all(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match parse_reply(&mut buf) {
            Ok(Some(reply)) => {
                let consumed = &before[..before.len() - buf.len()];
                check_reply(&reply, consumed);
                for cut in prefix_cuts(consumed) {
                    let mut prefix = BytesMut::from(&consumed[..cut]);
                    assert_eq!(parse_reply(&mut prefix), Ok(None), "prefix {cut}");
                    assert_eq!(&prefix[..], &consumed[..cut]);
                }
            }
            Ok(None) | Err(_) => {
                assert_eq!(buf, before, "consumed without a reply");
                break;
            }
        }
    }
}

/// Where to cut a reply to check that its prefixes ask for more: everywhere
/// in a short one; in a long one (up to 64 KiB) at 32 points and around the
/// first line ends, so that the check stays cheap enough to fuzz.
fn prefix_cuts(reply: &[u8]) -> Vec<usize> {
    let len = reply.len();
    if len <= 600 {
        return (0..len).collect();
    }
    let mut cuts: Vec<usize> = (0..len).step_by(len / 32).collect();
    let line_ends = reply.iter().enumerate().filter(|&(_, &b)| b == b'\n');
    for (i, _) in line_ends.take(16) {
        cuts.extend([i.saturating_sub(1), i, i + 1]);
    }
    cuts.retain(|&c| c < len);
    cuts
}

fn check_reply(reply: &Reply, consumed: &[u8]) {
    assert!(!consumed.is_empty() && consumed.len() <= MAX_REPLY_SIZE);
    assert!(consumed.ends_with(b"\n"));
    let raw = reply.as_bytes();
    // The stored reply is the input with every line ending made CRLF.
    let mut want = Vec::new();
    for line in consumed.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(line.len() + 2 <= MAX_REPLY_LINE + 1);
        want.extend_from_slice(line);
        want.extend_from_slice(b"\r\n");
    }
    assert_eq!(raw, &want[..]);
    let code = reply.code();
    assert!((100..600).contains(&code), "code {code}");
    let digits = format!("{code:03}");
    let lines: Vec<&[u8]> = raw.split_inclusive(|&b| b == b'\n').collect();
    assert!(lines.len() <= MAX_REPLY_LINES);
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with(digits.as_bytes()), "code differs");
        let last = i + 1 == lines.len();
        let sep = line.get(3).copied();
        if last {
            assert!(sep == Some(b' ') || sep == Some(b'\r'));
        } else {
            assert_eq!(sep, Some(b'-'));
        }
    }
    assert_eq!(reply.lines().count(), lines.len());
    // A reply parsed off the wire parses again to itself.
    let mut again = BytesMut::from(raw);
    assert_eq!(parse_reply(&mut again), Ok(Some(reply.clone())));
    assert!(again.is_empty());
}

fn round_trip(selector: u8, data: &[u8]) {
    let code = 100 + u16::from(selector >> 1) * 499 / 127;
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\u{0}').take(MAX_REPLY_LINES).collect();
    if lines.iter().any(|l| l.len() + 6 > MAX_REPLY_LINE) {
        return;
    }
    let reply = Reply::multiline(code, &lines);
    assert_eq!(reply.code(), code);
    let mut buf = BytesMut::from(reply.as_bytes());
    buf.extend_from_slice(b"250 next\r\n");
    assert_eq!(
        parse_reply(&mut buf),
        Ok(Some(reply.clone())),
        "{:?}",
        reply.as_bytes()
    );
    assert_eq!(&buf[..], b"250 next\r\n");
    // The text of every line comes back, CR and LF turned into spaces.
    let got: Vec<Vec<u8>> = reply.lines().map(<[u8]>::to_vec).collect();
    let want: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| l.replace(['\r', '\n'], " ").into_bytes())
        .collect();
    assert_eq!(got, want);
}
