//! The DATA receiver: streams a message from the client to the member,
//! finding the exact end of data (`CRLF . CRLF`, nothing else), refusing or
//! normalising bare CR and bare LF (the SMTP smuggling family,
//! CVE-2023-51764), and enforcing the size limit.
//!
//! Data flow: the session reads client bytes into a `BytesMut` and calls
//! [`DataReceiver::feed`] until it returns [`DataStep::NeedMore`]. Clean
//! input in reject mode leaves as `split_to(n).freeze()` slices of that
//! buffer (no copy); normalisation copies into a new buffer, lazily, from the
//! first byte it has to change.
//!
//! Invariants that make the result independent of how input is chunked:
//! - input is consumed only at boundaries where the line state is known,
//!   start of a line or inside one; a trailing `\r`, or a `.` / `.\r` at
//!   a line start, stays in the input until the next byte arrives;
//! - every decision (bare line ending, size overflow, end of data) is made at
//!   a position of the byte stream, and everything before that position is
//!   forwarded first, so the forwarded bytes are the same for any chunking.

use crate::config::BareLf;
use bytes::{Buf, BufMut, BytesMut};
use memchr::{memchr, memchr2};

/// Why a message is being refused while its DATA streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRefusal {
    /// Bare CR or LF in reject mode (`550 5.5.2`).
    BareLineEnding,
    /// Over the size limit (`552 5.3.4`).
    TooBig,
}

/// One step of the DATA receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataStep {
    /// Send these bytes to the member, then call `feed` again.
    Forward(bytes::Bytes),
    /// Everything available has been handled; read more.
    NeedMore,
    /// End of data (`CRLF.CRLF`) reached: it was included in the last `Forward`
    /// unless the message is refused. Bytes after it stay in the input (pipelining).
    End,
    /// The message is refused; the receiver now discards input until end of data,
    /// returning only `NeedMore` and `End`.
    Refused(DataRefusal),
}

/// Where the consumed input ends, relative to lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line. `genuine`: the previous line ended with a real
    /// CRLF (or this is the first line), so a `.` line here is the end of data.
    Start { genuine: bool },
    /// Inside a line, the last consumed byte not a CR.
    Mid,
}

/// Where the receiver is in the DATA section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Forwarding message bytes.
    Stream,
    /// A refusal decided after forwarding the bytes before it: report it next.
    Refuse(DataRefusal),
    /// Refused: dropping input until the end of data.
    Discard,
    /// The terminator was forwarded: report `End` next.
    EndPending,
    /// Finished; `feed` only returns `End`.
    Done,
}

/// Why a scan of the input stopped.
enum Stop {
    /// Input exhausted or an undecidable tail held back.
    Hold,
    /// The terminator `.\r\n` starts at the stop position.
    End,
    /// The message is refused at the stop position.
    Refuse(DataRefusal),
}

/// Streams a DATA section: finds the exact `CRLF.CRLF` end, refuses or normalises
/// bare CR/LF, enforces the size limit. Reject mode forwards input without copying.
#[derive(Debug)]
pub struct DataReceiver {
    normalize: bool,
    /// Most message bytes allowed (use `u64::MAX` for no limit).
    max_size: u64,
    size: u64,
    line: Line,
    phase: Phase,
    /// Skip runs of clean lines in bulk ([`clean_lines`]); off only in tests,
    /// which compare the result with the line-by-line scan.
    bulk: bool,
}

impl DataReceiver {
    /// A receiver positioned right after the `354` reply (at the start of a line).
    pub fn new(bare_lf: BareLf, max_size: u64) -> Self {
        DataReceiver {
            normalize: bare_lf == BareLf::Normalize,
            max_size,
            size: 0,
            line: Line::Start { genuine: true },
            phase: Phase::Stream,
            bulk: true,
        }
    }

    /// Consumes bytes from the front of `input`.
    ///
    /// Call it until it returns `NeedMore` (then read more, appending to the
    /// same buffer: up to two undecided bytes may be left in it) or `End`.
    pub fn feed(&mut self, input: &mut BytesMut) -> DataStep {
        match self.phase {
            Phase::Stream => self.stream(input),
            Phase::Refuse(why) => {
                self.phase = Phase::Discard;
                DataStep::Refused(why)
            }
            Phase::Discard => self.discard(input),
            Phase::EndPending => {
                self.phase = Phase::Done;
                DataStep::End
            }
            Phase::Done => DataStep::End,
        }
    }

    /// Message bytes seen so far (terminator excluded).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// `true` once the end of data has been returned.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Scans from the front of `input` while forwarding, then acts on why it stopped.
    fn stream(&mut self, input: &mut BytesMut) -> DataStep {
        let buf: &[u8] = input;
        // Message bytes still allowed; every committed position stays within it.
        let room = self.max_size.saturating_sub(self.size);
        let mut out: Option<BytesMut> = None;
        let mut line = self.line;
        let mut i = 0;
        let stop = loop {
            if let Line::Start { genuine } = line {
                match buf.get(i) {
                    None => break Stop::Hold,
                    Some(b'.') => {
                        let dot_line = match (buf.get(i + 1), buf.get(i + 2)) {
                            (None, _) | (Some(b'\r'), None) => break Stop::Hold,
                            (Some(b'\r'), Some(b'\n')) if genuine => break Stop::End,
                            (Some(b'\r' | b'\n'), _) => true,
                            _ => false,
                        };
                        if over(i + 1, room) {
                            break Stop::Refuse(DataRefusal::TooBig);
                        }
                        if dot_line && self.normalize {
                            // A lone `.` that is not the real end: stuff it so
                            // it can never end data at the member.
                            put(&mut out, buf, i, b"..");
                        } else {
                            keep(&mut out, buf, i, i + 1);
                        }
                        i += 1;
                        line = Line::Mid;
                        continue;
                    }
                    Some(_) => line = Line::Mid,
                }
            }
            if self.bulk {
                // The common case, many short clean lines: one pass over
                // them instead of a search per line. Nothing is decided
                // inside the run; a limit inside it is left to the line scan.
                // Within the limit only: every line the run leaves fits.
                let cap = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
                let end = i + buf.get(i..cap).map_or(0, clean_lines);
                if end > i {
                    keep(&mut out, buf, i, end);
                    i = end;
                    line = Line::Start { genuine: true };
                    continue;
                }
            }
            let found = memchr2(b'\r', b'\n', &buf[i..]).map(|k| i + k);
            let run_end = found.unwrap_or(buf.len());
            if over(run_end, room) {
                // Forward exactly up to the limit; `i <= room` holds here.
                let cut = usize::try_from(room).unwrap_or(usize::MAX).min(run_end);
                keep(&mut out, buf, i, cut);
                i = cut;
                break Stop::Refuse(DataRefusal::TooBig);
            }
            keep(&mut out, buf, i, run_end);
            i = run_end;
            let Some(p) = found else {
                break Stop::Hold;
            };
            let crlf = match (buf[p], buf.get(p + 1)) {
                (b'\r', None) => break Stop::Hold,
                (b'\r', Some(b'\n')) => true,
                _ => false,
            };
            if !crlf && !self.normalize {
                break Stop::Refuse(DataRefusal::BareLineEnding);
            }
            let len = if crlf { 2 } else { 1 };
            if over(i + len, room) {
                break Stop::Refuse(DataRefusal::TooBig);
            }
            if crlf {
                keep(&mut out, buf, i, i + 2);
            } else {
                put(&mut out, buf, i, b"\r\n");
            }
            i += len;
            line = Line::Start { genuine: crlf };
        };

        let consumed = match stop {
            Stop::Hold => i,
            Stop::End => {
                keep(&mut out, buf, i, i + 3);
                i + 3
            }
            Stop::Refuse(_) => i,
        };
        self.size = self.size.saturating_add(i as u64);
        self.line = line;
        match stop {
            Stop::Hold => {}
            Stop::End => self.phase = Phase::EndPending,
            Stop::Refuse(why) => {
                // Discarding honours only a real CRLF before the final `.`.
                self.line = match line {
                    Line::Start { genuine: true } => line,
                    _ => Line::Mid,
                };
                if consumed == 0 {
                    self.phase = Phase::Discard;
                    return DataStep::Refused(why);
                }
                self.phase = Phase::Refuse(why);
            }
        }
        if consumed == 0 {
            return DataStep::NeedMore;
        }
        let data = match out {
            Some(out) => {
                input.advance(consumed);
                out.freeze()
            }
            None => input.split_to(consumed).freeze(),
        };
        DataStep::Forward(data)
    }

    /// Drops input through the real end of data (`CRLF.CRLF` only).
    fn discard(&mut self, input: &mut BytesMut) -> DataStep {
        let buf: &[u8] = input;
        let mut at_start = self.line == Line::Start { genuine: true };
        let mut i = 0;
        loop {
            if at_start {
                match (buf.get(i), buf.get(i + 1), buf.get(i + 2)) {
                    (None, _, _) | (Some(b'.'), None, _) | (Some(b'.'), Some(b'\r'), None) => break,
                    (Some(b'.'), Some(b'\r'), Some(b'\n')) => {
                        self.size = self.size.saturating_add(i as u64);
                        input.advance(i + 3);
                        self.phase = Phase::Done;
                        return DataStep::End;
                    }
                    _ => at_start = false,
                }
            }
            // Only CR matters: a bare LF never starts a line that could end data.
            match memchr(b'\r', &buf[i..]).map(|k| i + k) {
                None => {
                    i = buf.len();
                    break;
                }
                Some(p) => match buf.get(p + 1) {
                    None => {
                        i = p;
                        break;
                    }
                    Some(b'\n') => {
                        i = p + 2;
                        at_start = true;
                    }
                    Some(_) => i = p + 1,
                },
            }
        }
        self.size = self.size.saturating_add(i as u64);
        input.advance(i);
        self.line = if at_start {
            Line::Start { genuine: true }
        } else {
            Line::Mid
        };
        DataStep::NeedMore
    }
}

/// Length of the longest prefix of `s` made of whole lines, each ended by
/// CRLF, with no other CR or LF, where no line but the first starts with a
/// `.` (the first starts mid-line: its start was handled already). Such a
/// run is forwarded unchanged in every mode and decides nothing.
///
/// One pass over byte pairs ([`bad_pair`]), in blocks that vectorise: a
/// search per line costs more than the line itself for the short lines of
/// most mail.
fn clean_lines(s: &[u8]) -> usize {
    if s.first() == Some(&b'\n') {
        return 0;
    }
    // Whole blocks first (fixed-size arrays: the check compiles to SIMD),
    // then byte by byte from the first block with a bad pair, or the tail.
    let mut p = 1;
    while let (Some(x), Some(y)) = (
        s.get(p - 1..p - 1 + PAIR_BLOCK)
            .and_then(|x| <&[u8; PAIR_BLOCK]>::try_from(x).ok()),
        s.get(p..p + PAIR_BLOCK)
            .and_then(|y| <&[u8; PAIR_BLOCK]>::try_from(y).ok()),
    ) {
        if block_has_bad_pair(x, y) {
            break;
        }
        p += PAIR_BLOCK;
    }
    // Every pair ending before `limit` is good.
    let limit = (p..s.len())
        .find(|&k| bad_pair(s[k - 1], s[k]))
        .unwrap_or(s.len());
    memchr::memrchr(b'\n', &s[..limit]).map_or(0, |lf| lf + 1)
}

/// Bytes of pairs checked at once by [`block_has_bad_pair`].
const PAIR_BLOCK: usize = 64;

/// Whether any pair `(x[k], y[k])` is bad ([`bad_pair`]); no early exit, so
/// that it vectorises.
fn block_has_bad_pair(x: &[u8; PAIR_BLOCK], y: &[u8; PAIR_BLOCK]) -> bool {
    let mut bad = 0u8;
    for k in 0..PAIR_BLOCK {
        bad |= u8::from(bad_pair(x[k], y[k]));
    }
    bad != 0
}

/// Two consecutive bytes that end a clean run: an LF not preceded by a CR,
/// a CR not followed by an LF, or an LF followed by a `.`.
fn bad_pair(x: u8, y: u8) -> bool {
    ((x == b'\r') ^ (y == b'\n')) | ((x == b'\n') & (y == b'.'))
}

/// Committing message bytes up to `end` would exceed `room`.
fn over(end: usize, room: u64) -> bool {
    end as u64 > room
}

/// Copies unchanged input `buf[from..to]` to the output, if one was started.
fn keep(out: &mut Option<BytesMut>, buf: &[u8], from: usize, to: usize) {
    if let Some(out) = out {
        out.put_slice(&buf[from..to]);
    }
}

/// Writes `bytes` in place of the input at `at`, starting the output (with
/// the unchanged input before `at`) on the first change.
fn put(out: &mut Option<BytesMut>, buf: &[u8], at: usize, bytes: &[u8]) {
    out.get_or_insert_with(|| {
        let mut o = BytesMut::with_capacity(buf.len() + buf.len() / 8 + 16);
        o.put_slice(&buf[..at]);
        o
    })
    .put_slice(bytes);
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
