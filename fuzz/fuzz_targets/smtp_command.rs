//! Fuzzes the command line reader and parser with arbitrary client input:
//! no panics, lines within the cap, every error mapped to a well-formed
//! reply, and parsed MAIL/RCPT commands re-encoded with `encode` parse back
//! to the same value; their parameters, checked with every extension
//! offered and with none, are accepted or refused with a one-line reply.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mxgate::smtp::proto::{
    Command, Extensions, LineReader, MAX_COMMAND_LINE, Reply, params, parse_command,
};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut reader = LineReader::new();
    loop {
        let before = buf.len();
        match reader.next_line(&mut buf) {
            Ok(Some(line)) => {
                assert!(line.len() < MAX_COMMAND_LINE, "line over the cap");
                assert!(!line.contains(&b'\n'), "LF inside a line");
                check_command(&line);
            }
            Ok(None) => break,
            // Too long: the reader discards the rest of that line on the next calls.
            Err(_) => assert!(buf.len() < before, "TooLong consumed nothing"),
        }
    }
});

fn check_command(line: &[u8]) {
    match parse_command(line) {
        Err(err) => {
            let reply = Reply::from(&err);
            assert!(matches!(reply.code(), 500 | 501), "{err:?}");
            let raw = reply.as_bytes();
            assert!(raw.ends_with(b"\r\n"));
            assert_eq!(raw.iter().filter(|&&b| b == b'\n').count(), 1);
        }
        Ok(Command::Mail(mail)) => {
            check_params(params::check_mail(&mail.params, Extensions::ALL));
            check_params(params::check_mail(&mail.params, Extensions::default()));
            let mut out = BytesMut::new();
            mail.encode(&mut out, |_| true);
            let again = parse_encoded(&out);
            assert_eq!(again, Ok(Command::Mail(mail)), "{:?}", out);
        }
        Ok(Command::Rcpt(rcpt)) => {
            check_params(params::check_rcpt(&rcpt.params, Extensions::ALL));
            check_params(params::check_rcpt(&rcpt.params, Extensions::default()));
            let mut out = BytesMut::new();
            rcpt.encode(&mut out);
            let again = parse_encoded(&out);
            assert_eq!(again, Ok(Command::Rcpt(rcpt)), "{:?}", out);
        }
        Ok(_) => {}
    }
}

/// A parameter refusal is one line, `501` or `555`.
fn check_params(result: Result<(), params::ParamError>) {
    if let Err(err) = result {
        let reply = Reply::from(&err);
        assert!(matches!(reply.code(), 501 | 555), "{err:?}");
        assert_eq!(reply.as_bytes().iter().filter(|&&b| b == b'\n').count(), 1);
    }
}

/// Parses an encoded command line through the reader, as a member would frame it.
fn parse_encoded(out: &[u8]) -> Result<Command, mxgate::smtp::proto::CommandError> {
    assert!(out.ends_with(b"\r\n"));
    let body = &out[..out.len() - 2];
    assert!(
        !body.contains(&b'\n') && !body.contains(&b'\r'),
        "line ending inside {out:?}"
    );
    parse_command(body)
}
