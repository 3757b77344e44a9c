//! Fuzzes the DATA receiver in both modes. The first bytes pick the mode,
//! the size limit and the chunking; the rest is message content (with
//! whatever follows the end of data). Invariants:
//! - the result (forwarded bytes, refusal, end, bytes left over) is the same
//!   when the content is fed in one chunk and in many;
//! - reject mode never forwards a bare CR or LF;
//! - normalize mode never forwards a bare line ending, nor a `CRLF.CRLF`
//!   before the real end of data;
//! - once refused, nothing more is forwarded.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mxgate::config::BareLf;
use mxgate::smtp::proto::{DataReceiver, DataRefusal, DataStep};

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    forwarded: Vec<u8>,
    refused: Option<DataRefusal>,
    ended: bool,
    /// Input not consumed: held-back bytes, or what follows the end of data.
    left: Vec<u8>,
    size: u64,
}

fuzz_target!(|data: &[u8]| {
    let Some((&[control, limit, seed], content)) = data.split_first_chunk::<3>() else {
        return;
    };
    let mode = if control & 1 == 0 {
        BareLf::Reject
    } else {
        BareLf::Normalize
    };
    // Mostly unlimited; sometimes a small limit to reach the size refusal.
    let max_size = if control & 2 == 0 {
        u64::MAX
    } else {
        u64::from(limit)
    };
    let whole = run(mode, max_size, content, |_| content.len());
    // Chunk sizes 1..=16 from a small generator seeded by the input.
    let mut state = u32::from(seed) | u32::from(control) << 8;
    let chunked = run(mode, max_size, content, |_| {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        ((state >> 16) % 16 + 1) as usize
    });
    let one_byte = run(mode, max_size, content, |_| 1);
    assert_eq!(whole, chunked, "one chunk vs many");
    assert_eq!(whole, one_byte, "one chunk vs bytes");
    check(mode, max_size, &whole);
});

fn run(
    mode: BareLf,
    max_size: u64,
    content: &[u8],
    mut next_chunk: impl FnMut(usize) -> usize,
) -> Outcome {
    let mut receiver = DataReceiver::new(mode, max_size);
    let mut input = BytesMut::new();
    let mut out = Outcome {
        forwarded: Vec::new(),
        refused: None,
        ended: false,
        left: Vec::new(),
        size: 0,
    };
    let mut rest = content;
    'read: loop {
        loop {
            match receiver.feed(&mut input) {
                DataStep::Forward(bytes) => {
                    assert!(out.refused.is_none(), "forwarded after refusal");
                    assert!(!bytes.is_empty(), "empty Forward");
                    out.forwarded.extend_from_slice(&bytes);
                }
                DataStep::NeedMore => break,
                DataStep::Refused(why) => {
                    assert!(out.refused.is_none(), "refused twice");
                    out.refused = Some(why);
                }
                DataStep::End => {
                    assert!(receiver.is_done());
                    assert_eq!(receiver.feed(&mut input), DataStep::End);
                    out.ended = true;
                    break 'read;
                }
            }
        }
        assert!(
            input.len() <= 2,
            "more than two bytes held back: {:?}",
            &input[..]
        );
        if rest.is_empty() {
            break;
        }
        let n = next_chunk(rest.len()).clamp(1, rest.len());
        input.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    out.left = [&input[..], rest].concat();
    out.size = receiver.size();
    out
}

fn check(mode: BareLf, max_size: u64, out: &Outcome) {
    let f = &out.forwarded;
    // Every CR is followed by LF and every LF preceded by CR, in both modes:
    // reject mode refuses bare ones, normalize mode rewrites them.
    for (i, &b) in f.iter().enumerate() {
        match b {
            b'\n' => assert!(i > 0 && f[i - 1] == b'\r', "bare LF forwarded at {i}"),
            b'\r' => assert!(f.get(i + 1) == Some(&b'\n'), "bare CR forwarded at {i}"),
            _ => {}
        }
    }
    // The terminator appears once, at the very end, and only when the end was
    // forwarded (not refused); nothing before it can end data at the member.
    let mut framed = b"\r\n".to_vec();
    framed.extend_from_slice(f);
    let first_end = framed.windows(5).position(|w| w == b"\r\n.\r\n");
    if out.ended && out.refused.is_none() {
        assert_eq!(
            first_end,
            Some(framed.len() - 5),
            "early or missing end of data"
        );
    } else {
        assert_eq!(first_end, None, "end of data forwarded without End");
    }
    if !out.ended {
        assert!(out.refused.is_some() || out.left.len() <= 2);
    }
    if mode == BareLf::Reject && max_size != u64::MAX {
        let body = if out.ended && out.refused.is_none() {
            f.len() - 3
        } else {
            f.len()
        };
        assert!(
            body as u64 <= max_size,
            "forwarded {body} bytes over {max_size}"
        );
    }
    if mode == BareLf::Reject && out.refused.is_none() {
        // Clean input in reject mode is forwarded unchanged.
        let body = if out.ended { f.len() - 3 } else { f.len() };
        assert_eq!(out.size, body as u64);
    }
}
