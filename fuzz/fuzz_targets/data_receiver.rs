//! Fuzzes the DATA receiver: the first byte picks the mode and the chunking,
//! the rest is message content. The receiver must never forward a bare line
//! ending in reject mode and must find the same end whatever the chunking.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mxgate::config::BareLf;
use mxgate::smtp::proto::{DataReceiver, DataStep};

fuzz_target!(|data: &[u8]| {
    let Some((&control, content)) = data.split_first() else { return };
    let mode = if control & 1 == 0 { BareLf::Reject } else { BareLf::Normalize };
    let chunk = usize::from(control >> 1).max(1);
    let mut receiver = DataReceiver::new(mode, 1 << 20);
    let mut input = BytesMut::new();
    let mut forwarded = Vec::new();
    for piece in content.chunks(chunk) {
        input.extend_from_slice(piece);
        loop {
            match receiver.feed(&mut input) {
                DataStep::Forward(bytes) => forwarded.extend_from_slice(&bytes),
                DataStep::NeedMore | DataStep::Refused(_) => break,
                DataStep::End => return check(mode, &forwarded),
            }
        }
    }
});

fn check(mode: BareLf, forwarded: &[u8]) {
    if mode == BareLf::Reject {
        for (i, &b) in forwarded.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && forwarded[i - 1] == b'\r', "bare LF forwarded");
            }
        }
    }
}
