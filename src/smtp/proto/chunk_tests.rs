//! Tests for BDAT chunk reading and the transaction's size accounting:
//! chunks are taken whole and verbatim however the input is cut, and a
//! pipelined stream of BDAT commands and chunks comes apart into the same
//! commands and octets.

use super::*;
use crate::smtp::proto::{Command, LineReader, parse_command};
use proptest::prelude::*;

/// Feeds `input` cut at `cuts` to a reader for `size` octets: the octets
/// forwarded, and the input left after the chunk.
fn read_chunk(size: u64, input: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<u8>) {
    let mut reader = ChunkReader::new(size);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pieces = pieces(input, cuts).into_iter();
    loop {
        match reader.feed(&mut buf) {
            ChunkStep::Forward(bytes) => {
                assert!(!bytes.is_empty(), "empty Forward");
                out.extend_from_slice(&bytes);
            }
            ChunkStep::NeedMore => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => break,
            },
            ChunkStep::End => break,
        }
    }
    let mut rest = buf.to_vec();
    for piece in pieces {
        rest.extend_from_slice(piece);
    }
    (out, rest)
}

/// `input` cut at the offsets `cuts` (any order, clamped to its length).
fn pieces<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for c in cuts.into_iter().chain([input.len()]) {
        out.push(&input[prev..c]);
        prev = c;
    }
    out
}

#[test]
fn a_chunk_is_its_octets_verbatim_and_the_rest_stays() {
    let chunk = b"a\r\n.\r\n..b\n\rc\r\n.\r\n";
    let input = [&chunk[..], b"BDAT 0 LAST\r\n"].concat();
    let (out, rest) = read_chunk(chunk.len() as u64, &input, &[1, 5, 9]);
    assert_eq!(out, chunk);
    assert_eq!(rest, b"BDAT 0 LAST\r\n");
}

#[test]
fn an_empty_chunk_takes_nothing() {
    let (out, rest) = read_chunk(0, b"QUIT\r\n", &[]);
    assert!(out.is_empty());
    assert_eq!(rest, b"QUIT\r\n");
}

#[test]
fn a_short_input_leaves_octets_due() {
    let mut reader = ChunkReader::new(10);
    let mut buf = BytesMut::from(&b"abc"[..]);
    assert_eq!(
        reader.feed(&mut buf),
        ChunkStep::Forward(Bytes::from_static(b"abc"))
    );
    assert_eq!(reader.feed(&mut buf), ChunkStep::NeedMore);
    assert_eq!(reader.left(), 7);
}

#[test]
fn the_size_limit_counts_every_chunk_and_a_failure_sticks() {
    let mut c = Chunking::default();
    assert!(!c.is_open());
    assert_eq!(c.admit(60, 100), Admission::Relay);
    assert!(c.is_first() && c.is_open());
    assert_eq!(c.admit(40, 100), Admission::Relay);
    assert!(!c.is_first());
    assert_eq!(c.total(), 100);
    assert_eq!(c.admit(1, 100), Admission::Refuse(too_big()));
    assert!(c.is_failed());
    // Even an empty chunk gets the failure until the transaction ends.
    assert_eq!(c.admit(0, 100), Admission::Refuse(too_big()));
    c.end();
    assert_eq!(c, Chunking::default());
    assert_eq!(c.admit(u64::MAX, u64::MAX), Admission::Relay);
    assert_eq!(c.admit(1, u64::MAX), Admission::Refuse(too_big()));
}

#[test]
fn a_member_failure_is_repeated_to_later_chunks() {
    let mut c = Chunking::default();
    assert_eq!(c.admit(5, 100), Admission::Relay);
    let lost = Reply::new(451, "4.4.2", "lost");
    c.fail(lost.clone());
    assert_eq!(c.admit(5, 100), Admission::Refuse(lost));
}

#[test]
fn bdat_lines_are_recognised_by_their_verb() {
    for line in [&b"BDAT"[..], b"bdat 10", b"BdAt x y z", b"BDAT "] {
        assert!(is_bdat(line), "{line:?}");
    }
    for line in [&b"BDA"[..], b"BDATX 1", b"DATA", b" BDAT 1", b""] {
        assert!(!is_bdat(line), "{line:?}");
    }
}

#[test]
fn encoding() {
    let mut out = BytesMut::new();
    encode_bdat(0, true, &mut out);
    encode_bdat(12345, false, &mut out);
    assert_eq!(&out[..], b"BDAT 0 LAST\r\nBDAT 12345\r\n");
}

/// What a pipelined client stream comes apart into: each BDAT's size,
/// LAST flag and octets, then the other command lines.
#[derive(Debug, PartialEq, Eq)]
enum Part {
    Chunk(u64, bool, Vec<u8>),
    Line(Vec<u8>),
}

/// Splits a client stream, read in `pieces`, as a session does: command
/// lines, and after each BDAT line exactly its octets.
fn split_stream(pieces: &[&[u8]]) -> Vec<Part> {
    let mut lines = LineReader::new();
    let mut buf = BytesMut::new();
    let mut parts = Vec::new();
    let mut chunk: Option<(ChunkReader, u64, bool, Vec<u8>)> = None;
    let mut pieces = pieces.iter();
    loop {
        if let Some((reader, size, last, octets)) = chunk.as_mut() {
            match reader.feed(&mut buf) {
                ChunkStep::Forward(bytes) => octets.extend_from_slice(&bytes),
                ChunkStep::End => {
                    parts.push(Part::Chunk(*size, *last, std::mem::take(octets)));
                    chunk = None;
                }
                ChunkStep::NeedMore => match pieces.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None => return parts,
                },
            }
            continue;
        }
        match lines.next_line(&mut buf) {
            Ok(Some(line)) => match parse_command(&line) {
                Ok(Command::Bdat { size, last }) => {
                    chunk = Some((ChunkReader::new(size), size, last, Vec::new()));
                }
                _ => parts.push(Part::Line(line.to_vec())),
            },
            Ok(None) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return parts,
            },
            Err(_) => parts.push(Part::Line(b"<too long>".to_vec())),
        }
    }
}

/// A message with the bytes DATA cares about, and any others.
fn message() -> impl Strategy<Value = Vec<u8>> {
    let special = prop::sample::select(vec![
        &b"\r\n.\r\n"[..],
        b".",
        b"\r",
        b"\n",
        b"\r\n",
        b"..",
        b"BDAT 5 LAST\r\n",
        b"QUIT\r\n",
    ]);
    let piece = prop_oneof![
        special.prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 0..20),
    ];
    prop::collection::vec(piece, 0..20).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A message cut into chunks at arbitrary points, sent as pipelined
    /// BDAT commands, read in arbitrary pieces: the same chunks arrive,
    /// octet for octet, and the message is whole again; the command after
    /// the last chunk is read as a command.
    #[test]
    fn chunks_arrive_identical_for_any_split(
        message in message(),
        chunk_cuts in prop::collection::vec(0usize..400, 0..6),
        read_cuts in prop::collection::vec(0usize..600, 0..12),
    ) {
        let chunks = pieces(&message, &chunk_cuts);
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let mut line = BytesMut::new();
            encode_bdat(chunk.len() as u64, last, &mut line);
            stream.extend_from_slice(&line);
            stream.extend_from_slice(chunk);
            expected.push(Part::Chunk(chunk.len() as u64, last, chunk.to_vec()));
        }
        stream.extend_from_slice(b"QUIT\r\n");
        expected.push(Part::Line(b"QUIT".to_vec()));
        let parts = split_stream(&pieces(&stream, &read_cuts));
        let whole: Vec<u8> = parts
            .iter()
            .filter_map(|p| match p {
                Part::Chunk(_, _, octets) => Some(octets.as_slice()),
                Part::Line(_) => None,
            })
            .collect::<Vec<_>>()
            .concat();
        prop_assert_eq!(&parts, &expected);
        prop_assert_eq!(whole, message);
    }

    /// One chunk read in any pieces: its octets exactly, the rest untouched.
    #[test]
    fn one_chunk_any_reads(
        chunk in prop::collection::vec(any::<u8>(), 0..300),
        after in prop::collection::vec(any::<u8>(), 0..40),
        cuts in prop::collection::vec(0usize..400, 0..10),
    ) {
        let input = [chunk.as_slice(), after.as_slice()].concat();
        let (out, rest) = read_chunk(chunk.len() as u64, &input, &cuts);
        prop_assert_eq!(out, chunk);
        prop_assert_eq!(rest, after);
    }
}
