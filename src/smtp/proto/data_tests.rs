//! Tests for the DATA receiver: end-of-data detection, smuggling cases,
//! normalisation, size limit, chunking invariance.

use super::*;
use crate::config::BareLf;
use bytes::Bytes;
use proptest::prelude::*;

/// What a receiver did with an input: forwarded bytes, the non-forward
/// outcome steps (`Refused`, `End`), bytes left after `End`, and the size.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    forwarded: Vec<u8>,
    events: Vec<DataStep>,
    rest: Vec<u8>,
    size: u64,
}

fn run_chunks(mode: BareLf, max: u64, chunks: &[&[u8]]) -> Run {
    run_receiver(DataReceiver::new(mode, max), chunks)
}

/// The same run with the bulk skip over clean lines off: line by line only.
fn run_chunks_line_scan(mode: BareLf, max: u64, chunks: &[&[u8]]) -> Run {
    let mut rx = DataReceiver::new(mode, max);
    rx.bulk = false;
    run_receiver(rx, chunks)
}

/// `input` cut into chunks at the offsets `cuts` (in any order, clamped to its length).
fn cut_at(input: &[u8], cuts: Vec<usize>) -> Vec<&[u8]> {
    let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut prev = 0;
    for c in cuts.into_iter().chain([input.len()]) {
        chunks.push(&input[prev..c]);
        prev = c;
    }
    chunks
}

fn run_receiver(mut rx: DataReceiver, chunks: &[&[u8]]) -> Run {
    let mut buf = BytesMut::new();
    let mut forwarded = Vec::new();
    let mut events = Vec::new();
    let mut chunks = chunks.iter();
    'outer: for chunk in chunks.by_ref() {
        buf.extend_from_slice(chunk);
        loop {
            match rx.feed(&mut buf) {
                DataStep::Forward(b) => {
                    assert!(!b.is_empty(), "empty Forward");
                    forwarded.extend_from_slice(&b);
                }
                DataStep::NeedMore => break,
                DataStep::End => {
                    events.push(DataStep::End);
                    break 'outer;
                }
                step @ DataStep::Refused(_) => events.push(step),
            }
        }
    }
    let mut rest = buf.to_vec();
    for chunk in chunks {
        rest.extend_from_slice(chunk);
    }
    Run {
        forwarded,
        events,
        rest,
        size: rx.size(),
    }
}

fn run(mode: BareLf, input: &[u8]) -> Run {
    run_chunks(mode, u64::MAX, &[input])
}

/// (input, forwarded, events, rest)
type Case = (
    &'static [u8],
    &'static [u8],
    &'static [DataStep],
    &'static [u8],
);

const END: &[DataStep] = &[DataStep::End];
const BARE: &[DataStep] = &[
    DataStep::Refused(DataRefusal::BareLineEnding),
    DataStep::End,
];
const BIG: &[DataStep] = &[DataStep::Refused(DataRefusal::TooBig), DataStep::End];

#[test]
fn reject_mode_table() {
    // (input, forwarded, events, rest)
    let cases: &[Case] = &[
        (b".\r\n", b".\r\n", END, b""),
        (b".\r\nQUIT\r\n", b".\r\n", END, b"QUIT\r\n"),
        (b"a\r\n.\r\n", b"a\r\n.\r\n", END, b""),
        (b"a\r\n..foo\r\n.\r\n", b"a\r\n..foo\r\n.\r\n", END, b""),
        (b"..\r\n.\r\n", b"..\r\n.\r\n", END, b""),
        (b"a\r\n.b\r\n.\r\nMAIL", b"a\r\n.b\r\n.\r\n", END, b"MAIL"),
        (b"\r\n.\r\n", b"\r\n.\r\n", END, b""),
        // smuggling attempts: refused, and discarded through the real end
        (b"a\n.\nb\r\n.\r\n", b"a", BARE, b""),
        (b"a\n.\r\nb\r\n.\r\n", b"a", BARE, b""),
        (b"a\r\n.\nb\r\n.\r\n", b"a\r\n.", BARE, b""),
        (b"a\r.\rb\r\n.\r\n", b"a", BARE, b""),
        (b"a\r\n.\rb\r\n.\r\nX", b"a\r\n.", BARE, b"X"),
        (b"\n.\r\n.\r\nX", b"", BARE, b"X"),
        (b"\n\r\n.\r\nX", b"", BARE, b"X"),
        (b"a\rb\r\n.\r\n", b"a", BARE, b""),
        (b"a\r\r\n.\r\n", b"a", BARE, b""),
        // incomplete
        (b"a\r\n.\r", b"a\r\n", &[], b".\r"),
        (b"a\r\n.", b"a\r\n", &[], b"."),
        (b"a\r", b"a", &[], b"\r"),
    ];
    for (input, forwarded, events, rest) in cases {
        let r = run(BareLf::Reject, input);
        assert_eq!(
            (
                r.forwarded.as_slice(),
                r.events.as_slice(),
                r.rest.as_slice()
            ),
            (*forwarded, *events, *rest),
            "input {:?}",
            Bytes::copy_from_slice(input)
        );
    }
}

#[test]
fn normalize_mode_table() {
    let cases: &[Case] = &[
        (b"a\r\nb\r\n.\r\n", b"a\r\nb\r\n.\r\n", END, b""),
        (b"a\nb\r\n.\r\n", b"a\r\nb\r\n.\r\n", END, b""),
        (b"a\rb\r\n.\r\n", b"a\r\nb\r\n.\r\n", END, b""),
        (b"a\n.\nb\r\n.\r\n", b"a\r\n..\r\nb\r\n.\r\n", END, b""),
        (b"a\n.\r\nb\r\n.\r\n", b"a\r\n..\r\nb\r\n.\r\n", END, b""),
        (b"a\r\n.\nb\r\n.\r\n", b"a\r\n..\r\nb\r\n.\r\n", END, b""),
        (b"a\r.\rb\r\n.\r\n", b"a\r\n..\r\nb\r\n.\r\n", END, b""),
        (b"a\r\n.\rb\r\n.\r\n", b"a\r\n..\r\nb\r\n.\r\n", END, b""),
        (b".\nb\r\n.\r\n", b"..\r\nb\r\n.\r\n", END, b""),
        (b"a\r\n..x\n.\r\n", b"a\r\n..x\r\n..\r\n", &[], b""),
        (b"\r\r\n.\r\nQ", b"\r\n\r\n.\r\n", END, b"Q"),
        (b"\n\r\n.\r\n", b"\r\n\r\n.\r\n", END, b""),
        (b".\r\n", b".\r\n", END, b""),
    ];
    for (input, forwarded, events, rest) in cases {
        let r = run(BareLf::Normalize, input);
        assert_eq!(
            (
                r.forwarded.as_slice(),
                r.events.as_slice(),
                r.rest.as_slice()
            ),
            (*forwarded, *events, *rest),
            "input {:?}",
            Bytes::copy_from_slice(input)
        );
    }
}

#[test]
fn terminator_split_at_every_position() {
    let input: &[u8] = b"hello\r\nworld\r\n.\r\nNEXT";
    for mode in [BareLf::Reject, BareLf::Normalize] {
        let whole = run(mode, input);
        assert_eq!(whole.forwarded, &input[..input.len() - 4]);
        assert_eq!(whole.events, END);
        assert_eq!(whole.rest, b"NEXT");
        assert_eq!(whole.size, 14);
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(run_chunks(mode, u64::MAX, &[a, b]), whole, "cut at {cut}");
        }
    }
}

#[test]
fn bare_cr_after_dot_split_across_chunks() {
    let whole = run(BareLf::Reject, b"a\r\n.\rb\r\n.\r\n");
    let split = run_chunks(
        BareLf::Reject,
        u64::MAX,
        &[b"a\r", b"\n", b".", b"\r", b"b\r\n.\r\n"],
    );
    assert_eq!(split, whole);
    assert_eq!(whole.events, BARE);
}

#[test]
fn reject_mode_is_zero_copy() {
    let mut rx = DataReceiver::new(BareLf::Reject, u64::MAX);
    let mut buf = BytesMut::from(&b"line one\r\nline two\r\n.\r\nQUIT\r\n"[..]);
    let base = buf.as_ptr();
    match rx.feed(&mut buf) {
        DataStep::Forward(b) => {
            assert_eq!(b.as_ptr(), base, "forwarded bytes must be the input's own");
            assert_eq!(&b[..], b"line one\r\nline two\r\n.\r\n");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(rx.feed(&mut buf), DataStep::End);
    assert_eq!(&buf[..], b"QUIT\r\n");
    assert_eq!(rx.feed(&mut buf), DataStep::End);
    assert_eq!(&buf[..], b"QUIT\r\n");
}

#[test]
fn normalize_mode_copies_only_when_needed() {
    let mut rx = DataReceiver::new(BareLf::Normalize, u64::MAX);
    let mut buf = BytesMut::from(&b"clean\r\nlines\r\n"[..]);
    let base = buf.as_ptr();
    match rx.feed(&mut buf) {
        DataStep::Forward(b) => assert_eq!(b.as_ptr(), base),
        other => panic!("unexpected {other:?}"),
    }
    buf.extend_from_slice(b"bare\nlf\r\n.\r\n");
    assert_eq!(
        rx.feed(&mut buf),
        DataStep::Forward(Bytes::from_static(b"bare\r\nlf\r\n.\r\n"))
    );
    assert_eq!(rx.feed(&mut buf), DataStep::End);
    assert!(rx.is_done());
}

#[test]
fn empty_message() {
    let r = run(BareLf::Reject, b".\r\n");
    assert_eq!(r.size, 0);
    assert_eq!(r.events, END);
}

#[test]
fn refused_then_only_needmore_until_end() {
    let mut rx = DataReceiver::new(BareLf::Reject, u64::MAX);
    let mut buf = BytesMut::from(&b"\nabc"[..]);
    assert_eq!(
        rx.feed(&mut buf),
        DataStep::Refused(DataRefusal::BareLineEnding)
    );
    assert_eq!(rx.feed(&mut buf), DataStep::NeedMore);
    assert!(buf.is_empty());
    buf.extend_from_slice(b"\n.\n\r\n.\r");
    assert_eq!(rx.feed(&mut buf), DataStep::NeedMore);
    buf.extend_from_slice(b"\nRSET\r\n");
    assert_eq!(rx.feed(&mut buf), DataStep::End);
    assert_eq!(&buf[..], b"RSET\r\n");
}

#[test]
fn size_limit() {
    // exactly at the limit passes; one more byte is refused
    let ok = run_chunks(BareLf::Reject, 5, &[b"abc\r\n.\r\n"]);
    assert_eq!(ok.events, END);
    assert_eq!(ok.size, 5);
    let big = run_chunks(BareLf::Reject, 4, &[b"abc\r\n.\r\nQUIT"]);
    assert_eq!(big.events, BIG);
    assert_eq!(big.forwarded, b"abc");
    assert_eq!(big.rest, b"QUIT");
    let big = run_chunks(BareLf::Normalize, 3, &[b"abcdef\n.\r\n", b"x\r\n.\r\n"]);
    assert_eq!(big.events, BIG);
    assert_eq!(big.forwarded, b"abc");
    assert_eq!(big.size, 13);
    // refusal on a CRLF split by the limit still finds the real end
    let big = run_chunks(BareLf::Reject, 2, &[b"ab\r", b"\n.\r\nQ"]);
    assert_eq!(big.events, BIG);
    assert_eq!(big.rest, b"Q");
}

#[test]
fn clean_lines_table() {
    let cases: &[(&[u8], usize)] = &[
        (b"", 0),
        (b"abc", 0),
        (b"abc\r\n", 5),
        (b"\r\n", 2),
        (b"\r\n\r\n", 4),
        (b".a\r\nb\r\n", 7),
        (b"a\r\n.b\r\n", 3),
        (b"a\r\nb\r\nc", 6),
        (b"a\r\nb\r", 3),
        (b"\n", 0),
        (b"a\nb\r\n", 0),
        (b"a\r\n\nb\r\n", 3),
        (b"a\r\nb\rc\r\nd\r\n", 3),
        (b"a\rb\r\n", 0),
        (b"a\r\nb\r\nc\r\r\n", 6),
        (b"a\r\r\n", 0),
    ];
    for (input, want) in cases {
        assert_eq!(
            clean_lines(input),
            *want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn bulk_scan_stops_at_the_limit_inside_a_run() {
    let input = b"aaaa\r\nbbbb\r\ncccc\r\n.\r\n";
    for max in 0..20 {
        let bulk = run_chunks(BareLf::Reject, max, &[input]);
        assert_eq!(
            bulk,
            run_chunks_line_scan(BareLf::Reject, max, &[input]),
            "max {max}"
        );
        // The body is 18 bytes.
        assert_eq!(bulk.events, if max < 18 { BIG } else { END }, "max {max}");
    }
}

/// Mail-like input: lines of letters and dots, mostly CRLF-ended, with
/// the odd bare CR or LF, an end of data somewhere.
fn mail_like() -> impl Strategy<Value = Vec<u8>> {
    let line = (
        "[a.]{0,3}[a-z]{0,20}",
        prop_oneof![8 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r"), 1 => Just("")],
    );
    proptest::collection::vec(line, 0..40).prop_map(|lines| {
        let mut out = Vec::new();
        for (text, end) in lines {
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(end.as_bytes());
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn bulk_scan_matches_line_scan(
        input in prop_oneof![
            mail_like(),
            proptest::collection::vec(prop::sample::select(vec![b'\r', b'\n', b'.', b'a', b'a', b'a']), 0..200),
        ],
        cuts in proptest::collection::vec(0usize..600, 0..6),
        normalize in any::<bool>(),
        max in prop_oneof![Just(u64::MAX), 0u64..400],
    ) {
        let mode = if normalize { BareLf::Normalize } else { BareLf::Reject };
        let chunks = cut_at(&input, cuts);
        prop_assert_eq!(run_chunks(mode, max, &chunks), run_chunks_line_scan(mode, max, &chunks));
        let mut ended = input.clone();
        ended.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
        prop_assert_eq!(run_chunks(mode, max, &[&ended]), run_chunks_line_scan(mode, max, &[&ended]));
    }

    #[test]
    fn chunking_does_not_matter(
        input in proptest::collection::vec(prop::sample::select(vec![b'\r', b'\n', b'.', b'a']), 0..64),
        cuts in proptest::collection::vec(0usize..64, 0..8),
        normalize in any::<bool>(),
        max in prop_oneof![Just(u64::MAX), 0u64..40],
    ) {
        let mode = if normalize { BareLf::Normalize } else { BareLf::Reject };
        let whole = run_chunks(mode, max, &[&input]);
        let chunks = cut_at(&input, cuts);
        prop_assert_eq!(run_chunks(mode, max, &chunks), whole);
    }

    #[test]
    fn reject_mode_forwards_crlf_input_verbatim(
        lines in proptest::collection::vec("[a-z. ]{0,12}", 0..12),
        tail in "[A-Z]{0,6}",
        split in 0usize..200,
    ) {
        let mut input = Vec::new();
        for line in &lines {
            // dot-stuff as a client would
            if line.starts_with('.') {
                input.push(b'.');
            }
            input.extend_from_slice(line.as_bytes());
            input.extend_from_slice(b"\r\n");
        }
        let body_len = input.len() as u64;
        input.extend_from_slice(b".\r\n");
        let end = input.len();
        input.extend_from_slice(tail.as_bytes());
        let cut = split.min(input.len());
        let r = run_chunks(BareLf::Reject, u64::MAX, &[&input[..cut], &input[cut..]]);
        prop_assert_eq!(&r.forwarded[..], &input[..end]);
        prop_assert_eq!(&r.events[..], END);
        prop_assert_eq!(&r.rest[..], tail.as_bytes());
        prop_assert_eq!(r.size, body_len);
    }

    #[test]
    fn normalized_output_has_only_crlf_and_one_end(
        input in proptest::collection::vec(prop::sample::select(vec![b'\r', b'\n', b'.', b'a']), 0..64),
    ) {
        let mut data = input.clone();
        data.extend_from_slice(b"\r\n.\r\n");
        let r = run(BareLf::Normalize, &data);
        prop_assert_eq!(&r.events[..], END);
        let out = &r.forwarded;
        // every CR is followed by LF and every LF preceded by CR
        for (i, &b) in out.iter().enumerate() {
            if b == b'\r' { prop_assert_eq!(out.get(i + 1), Some(&b'\n')); }
            if b == b'\n' { prop_assert!(i > 0 && out[i - 1] == b'\r'); }
        }
        // the only end of data is at the very end
        let first_end = out.windows(5).position(|w| w == b"\r\n.\r\n").map(|p| p + 5);
        let starts_with_end = out.starts_with(b".\r\n");
        prop_assert!(starts_with_end && out.len() == 3 || first_end == Some(out.len()));
    }
}
