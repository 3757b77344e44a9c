//! Fuzzes BDAT chunk reading (RFC 3030) as a session does it: client bytes
//! are split into command lines (`LineReader` + `parse_command`), and after
//! each `BDAT n [LAST]` exactly the next n octets are taken as its chunk
//! (`ChunkReader`), whatever they are. The first byte seeds how the input
//! is cut into reads. Invariants:
//! - the commands and chunks are the same read in one piece, in random 1 to
//!   64 byte pieces and byte by byte;
//! - a complete chunk is exactly the n octets that follow its command line
//!   in the input (checked against the input's own positions);
//! - nothing inside a chunk is ever read as a command line.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mxgate::smtp::proto::{ChunkReader, ChunkStep, Command, LineReader, parse_command};

#[derive(Debug, PartialEq, Eq)]
enum Part {
    /// A command line (not BDAT), or `None` for a line too long.
    Line(Option<Vec<u8>>),
    /// A BDAT: its announced size and the octets taken (fewer only when
    /// the input ended first).
    Chunk(u64, Vec<u8>),
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = split(input, |_| input.len());
    let mut state = u32::from(seed) | 0x5a00;
    let pieces = split(input, |_| {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        ((state >> 16) % 64 + 1) as usize
    });
    let bytes = split(input, |_| 1);
    assert_eq!(whole, pieces, "one read vs many");
    assert_eq!(whole, bytes, "one read vs bytes");
    check(input, &whole);
});

/// Splits `input`, read in pieces of `next` bytes, into lines and chunks.
fn split(input: &[u8], mut next: impl FnMut(usize) -> usize) -> Vec<Part> {
    let mut lines = LineReader::new();
    let mut buf = BytesMut::new();
    let mut rest = input;
    let mut parts = Vec::new();
    let mut chunk: Option<(ChunkReader, u64, Vec<u8>)> = None;
    loop {
        let need_more = match chunk.as_mut() {
            Some((reader, size, octets)) => match reader.feed(&mut buf) {
                ChunkStep::Forward(bytes) => {
                    assert!(!bytes.is_empty(), "empty Forward");
                    octets.extend_from_slice(&bytes);
                    assert!(octets.len() as u64 <= *size, "chunk overrun");
                    false
                }
                ChunkStep::End => {
                    assert_eq!(reader.left(), 0);
                    parts.push(Part::Chunk(*size, std::mem::take(octets)));
                    chunk = None;
                    false
                }
                ChunkStep::NeedMore => true,
            },
            None => match lines.next_line(&mut buf) {
                Ok(Some(line)) => {
                    match parse_command(&line) {
                        Ok(Command::Bdat { size, .. }) => {
                            chunk = Some((ChunkReader::new(size), size, Vec::new()));
                        }
                        _ => parts.push(Part::Line(Some(line.to_vec()))),
                    }
                    false
                }
                Ok(None) => true,
                Err(_) => {
                    parts.push(Part::Line(None));
                    false
                }
            },
        };
        if need_more {
            if rest.is_empty() {
                break;
            }
            let n = next(rest.len()).clamp(1, rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }
    if let Some((_, size, octets)) = chunk {
        parts.push(Part::Chunk(size, octets));
    }
    parts
}

/// Each chunk is the octets right after its BDAT line in `input`.
fn check(input: &[u8], parts: &[Part]) {
    let mut at = 0;
    for part in parts {
        match part {
            Part::Line(line) => {
                // Find this line's end from `at` (LF-terminated; a too-long
                // line is skipped through its LF).
                match (memchr(b'\n', &input[at..]), line) {
                    (Some(lf), Some(line)) => {
                        assert!(input[at..at + lf].starts_with(line));
                        at += lf + 1;
                    }
                    (Some(lf), None) => at += lf + 1,
                    // A too-long line the input ends inside.
                    (None, None) => at = input.len(),
                    (None, Some(_)) => panic!("a line without its LF"),
                }
            }
            Part::Chunk(size, octets) => {
                let lf = memchr(b'\n', &input[at..]).expect("BDAT line has its LF");
                let start = at + lf + 1;
                let end = start + octets.len();
                assert_eq!(&input[start..end], octets.as_slice(), "chunk octets");
                if (octets.len() as u64) < *size {
                    assert_eq!(end, input.len(), "short chunk before the input's end");
                }
                at = end;
            }
        }
    }
}

fn memchr(byte: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == byte)
}
