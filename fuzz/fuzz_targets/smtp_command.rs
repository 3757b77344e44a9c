//! Fuzzes the command line reader and parser with arbitrary client input.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mxgate::smtp::proto::{LineReader, Reply, parse_command};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut reader = LineReader::new();
    loop {
        match reader.next_line(&mut buf) {
            Ok(Some(line)) => {
                if let Err(err) = parse_command(&line) {
                    let _ = Reply::from(&err);
                }
            }
            Ok(None) => break,
            // Too long: the reader discards the rest of that line on the next calls.
            Err(_) => {}
        }
    }
});
