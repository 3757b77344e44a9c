//! Tests for command-line framing and command parsing: table-driven, with
//! pipelined batches, case-insensitivity, bad paths and over-long lines.

use super::*;
use crate::smtp::proto::line::{LineError, LineReader, MAX_COMMAND_LINE};

/// (line, expected error, expected reply prefix)
type BadCase = (&'static [u8], fn(&CommandError) -> bool, &'static [u8]);

fn mail(path: &str, params: &[(&str, Option<&str>)]) -> Command {
    Command::Mail(MailFrom {
        path: path.into(),
        params: to_params(params),
    })
}

fn rcpt(path: &str, params: &[(&str, Option<&str>)]) -> Command {
    Command::Rcpt(RcptTo {
        path: path.into(),
        params: to_params(params),
    })
}

fn to_params(params: &[(&str, Option<&str>)]) -> Vec<Param> {
    params
        .iter()
        .map(|(k, v)| Param {
            keyword: (*k).into(),
            value: v.map(Into::into),
        })
        .collect()
}

#[test]
fn good_commands() {
    let cases: Vec<(&[u8], Command)> = vec![
        (b"HELO mx.example", Command::Helo("mx.example".into())),
        (b"ehlo mx.example", Command::Ehlo("mx.example".into())),
        (b"EhLo [192.0.2.1]", Command::Ehlo("[192.0.2.1]".into())),
        (b"MAIL FROM:<a@b.example>", mail("a@b.example", &[])),
        (b"mail from:<a@b.example>", mail("a@b.example", &[])),
        (b"MAIL FROM: <a@b.example>", mail("a@b.example", &[])),
        (b"MAIL FROM:<>", mail("", &[])),
        (
            b"MAIL FROM:<> size=100 BODY=8BITMIME smtputf8",
            mail(
                "",
                &[
                    ("SIZE", Some("100")),
                    ("BODY", Some("8BITMIME")),
                    ("SMTPUTF8", None),
                ],
            ),
        ),
        (
            b"MAIL FROM:<\"a b\"@x.example>",
            mail("\"a b\"@x.example", &[]),
        ),
        (
            b"MAIL FROM:<\"a>b\"@x.example>",
            mail("\"a>b\"@x.example", &[]),
        ),
        (b"MAIL FROM:<@a,@b:u@d.example>", mail("u@d.example", &[])),
        (b"MAIL FROM:<@[192.0.2.1]:u@d>", mail("u@d", &[])),
        (
            b"MAIL FROM:<u@[IPv6:2001:db8::1]>",
            mail("u@[IPv6:2001:db8::1]", &[]),
        ),
        (
            b"MAIL FROM:<j\xc3\xb6rg@b\xc3\xa4r.example> SMTPUTF8",
            mail("jörg@bär.example", &[("SMTPUTF8", None)]),
        ),
        (b"RCPT TO:<postmaster>", rcpt("postmaster", &[])),
        (b"RCPT TO:<PostMaster>", rcpt("PostMaster", &[])),
        (
            b"rcpt to: <u@d.example> NOTIFY=NEVER",
            rcpt("u@d.example", &[("NOTIFY", Some("NEVER"))]),
        ),
        (
            b"RCPT TO:<u@d.example> ORCPT=rfc822;u+40d",
            rcpt("u@d.example", &[("ORCPT", Some("rfc822;u+40d"))]),
        ),
        (b"DATA", Command::Data),
        (b"data", Command::Data),
        (
            b"BDAT 1000",
            Command::Bdat {
                size: 1000,
                last: false,
            },
        ),
        (
            b"BDAT 0 last",
            Command::Bdat {
                size: 0,
                last: true,
            },
        ),
        (b"RSET", Command::Rset),
        (b"NOOP", Command::Noop),
        (b"noop hello there", Command::Noop),
        (b"QUIT", Command::Quit),
        (b"HELP", Command::Help),
        (b"HELP mail", Command::Help),
        (b"VRFY user", Command::Vrfy),
        (b"EXPN list", Command::Expn),
        (b"StartTLS", Command::StartTls),
        (b"AUTH PLAIN AGJvYgBwdw==", Command::Auth),
        (
            b"XCLIENT addr=192.0.2.1 NAME=mx+2Eexample HELO=a+20b",
            Command::Xclient(vec![
                ("ADDR".into(), "192.0.2.1".into()),
                ("NAME".into(), "mx.example".into()),
                ("HELO".into(), "a b".into()),
            ]),
        ),
        (b"PROXY TCP4 192.0.2.1 192.0.2.2 1 25", Command::Proxy),
        (b"FOO bar", Command::Unknown("FOO".into())),
        (b"x-verb", Command::Unknown("X-VERB".into())),
    ];
    for (line, want) in cases {
        assert_eq!(
            parse_command(line),
            Ok(want),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn bad_commands() {
    use CommandError::*;
    let cases: &[BadCase] = &[
        (b"HELO", |e| matches!(e, Syntax(_)), b"501 5.5.4 "),
        (b"EHLO   ", |e| matches!(e, Syntax(_)), b"501 5.5.4 "),
        (b"MAIL TO:<a@b>", |e| matches!(e, Syntax(_)), b"501 5.5.4 "),
        (
            b"MAIL FROM:a@b",
            |e| matches!(e, BadSender(_)),
            b"501 5.1.7 ",
        ),
        (
            b"MAIL FROM:<a@b",
            |e| matches!(e, BadSender(_)),
            b"501 5.1.7 ",
        ),
        (
            b"MAIL FROM:<a b@c>",
            |e| matches!(e, BadSender(_)),
            b"501 5.1.7 ",
        ),
        (
            b"MAIL FROM:<a@>",
            |e| matches!(e, BadSender(_)),
            b"501 5.1.7 ",
        ),
        (
            b"MAIL FROM:<@a:>",
            |e| matches!(e, BadSender(_)),
            b"501 5.1.7 ",
        ),
        (
            b"MAIL FROM:<a@b..c>",
            |e| matches!(e, BadSender(_)),
            b"501 5.1.7 ",
        ),
        (
            b"MAIL FROM:<\"ab@c>",
            |e| matches!(e, BadSender(_)),
            b"501 5.1.7 ",
        ),
        (
            b"MAIL FROM:<a@b>SIZE=1",
            |e| matches!(e, Syntax(_)),
            b"501 5.5.4 ",
        ),
        (
            b"MAIL FROM:<a@b> -X=1",
            |e| matches!(e, Syntax(_)),
            b"501 5.5.4 ",
        ),
        (
            b"MAIL FROM:<a@b> SIZE=",
            |e| matches!(e, Syntax(_)),
            b"501 5.5.4 ",
        ),
        (
            b"RCPT TO:<>",
            |e| matches!(e, BadRecipient(_)),
            b"501 5.1.3 ",
        ),
        (
            b"RCPT TO:<a<b@c>",
            |e| matches!(e, BadRecipient(_)),
            b"501 5.1.3 ",
        ),
        (
            b"RCPT TO:<user>",
            |e| matches!(e, BadRecipient(_)),
            b"501 5.1.3 ",
        ),
        (b"RCPT <a@b>", |e| matches!(e, Syntax(_)), b"501 5.5.4 "),
        (b"DATA x", |e| matches!(e, Syntax(_)), b"501 5.5.4 "),
        (b"BDAT", |e| matches!(e, Syntax(_)), b"501 5.5.4 "),
        (b"BDAT -1", |e| matches!(e, Syntax(_)), b"501 5.5.4 "),
        (b"BDAT 10 FIRST", |e| matches!(e, Syntax(_)), b"501 5.5.4 "),
        (
            b"BDAT 99999999999999999999999",
            |e| matches!(e, Syntax(_)),
            b"501 5.5.4 ",
        ),
        (b"XCLIENT", |e| matches!(e, Syntax(_)), b"501 5.5.4 "),
        (b"XCLIENT ADDR", |e| matches!(e, Syntax(_)), b"501 5.5.4 "),
        (
            b"XCLIENT NAME=a+2",
            |e| matches!(e, Syntax(_)),
            b"501 5.5.4 ",
        ),
        (
            b"XCLIENT NAME=a+ZZ",
            |e| matches!(e, Syntax(_)),
            b"501 5.5.4 ",
        ),
        (b"VRFY", |e| matches!(e, Syntax(_)), b"501 5.5.4 "),
        (
            b"M\xc3\x84IL FROM:<a@b>",
            |e| *e == InvalidCharacters,
            b"500 5.5.2 ",
        ),
        (
            b"MAIL FROM:<a@b\xff>",
            |e| *e == InvalidCharacters,
            b"500 5.5.2 ",
        ),
        (b"NOOP \x00", |e| *e == InvalidCharacters, b"500 5.5.2 "),
    ];
    for (line, check, reply) in cases {
        let err = parse_command(line).expect_err(&String::from_utf8_lossy(line));
        assert!(check(&err), "{:?}: {err:?}", String::from_utf8_lossy(line));
        let r = Reply::from(&err);
        assert!(
            r.as_bytes().starts_with(reply),
            "{:?}",
            String::from_utf8_lossy(r.as_bytes())
        );
        assert!(r.as_bytes().ends_with(b"\r\n"));
    }
}

#[test]
fn encode_mail_and_rcpt() {
    let Ok(Command::Mail(m)) = parse_command(b"mail from:<a@b> size=10 BODY=8BITMIME SMTPUTF8")
    else {
        panic!()
    };
    assert_eq!(m.size(), Some(10));
    let mut out = BytesMut::new();
    m.encode(&mut out, |_| true);
    assert_eq!(
        &out[..],
        b"MAIL FROM:<a@b> SIZE=10 BODY=8BITMIME SMTPUTF8\r\n"
    );
    out.clear();
    m.encode(&mut out, |p| p.keyword != "SMTPUTF8");
    assert_eq!(&out[..], b"MAIL FROM:<a@b> SIZE=10 BODY=8BITMIME\r\n");
    let Ok(Command::Mail(null)) = parse_command(b"MAIL FROM:<>") else {
        panic!()
    };
    assert_eq!(null.size(), None);
    out.clear();
    null.encode(&mut out, |_| true);
    assert_eq!(&out[..], b"MAIL FROM:<>\r\n");
    let Ok(Command::Rcpt(r)) = parse_command(b"RCPT TO:<@x:\"a b\"@c> NOTIFY=SUCCESS,FAILURE")
    else {
        panic!()
    };
    out.clear();
    r.encode(&mut out);
    assert_eq!(&out[..], b"RCPT TO:<\"a b\"@c> NOTIFY=SUCCESS,FAILURE\r\n");
}

/// Runs `input` through a LineReader and parse_command, as the session does.
fn batch(reader: &mut LineReader, buf: &mut BytesMut) -> Vec<Result<Command, String>> {
    let mut out = Vec::new();
    loop {
        match reader.next_line(buf) {
            Ok(Some(line)) => out.push(parse_command(&line).map_err(|e| e.to_string())),
            Ok(None) => return out,
            Err(LineError::TooLong) => out.push(Err("too long".into())),
        }
    }
}

#[test]
fn pipelined_batch() {
    let mut reader = LineReader::new();
    let mut buf =
        BytesMut::from(&b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\nrcpt to:<e@f>\r\nDATA\r\nQUI"[..]);
    assert_eq!(
        batch(&mut reader, &mut buf),
        vec![
            Ok(mail("a@b", &[])),
            Ok(rcpt("c@d", &[])),
            Ok(rcpt("e@f", &[])),
            Ok(Command::Data),
        ]
    );
    assert_eq!(&buf[..], b"QUI");
    buf.extend_from_slice(b"T\r\n");
    assert_eq!(batch(&mut reader, &mut buf), vec![Ok(Command::Quit)]);
    assert!(buf.is_empty());
}

#[test]
fn line_lengths() {
    // 510 + CRLF = 512: accepted; 511 + CRLF: too long; 511 + LF: accepted.
    for (content, ending, ok) in [
        (510, &b"\r\n"[..], true),
        (511, &b"\r\n"[..], false),
        (511, &b"\n"[..], true),
        (512, &b"\n"[..], false),
    ] {
        let mut reader = LineReader::new();
        let mut buf = BytesMut::from(&vec![b'x'; content][..]);
        buf.extend_from_slice(ending);
        buf.extend_from_slice(b"NOOP\r\n");
        let first = reader.next_line(&mut buf);
        if ok {
            assert_eq!(first.unwrap().unwrap().len(), content);
        } else {
            assert_eq!(first, Err(LineError::TooLong));
        }
        assert_eq!(
            reader.next_line(&mut buf),
            Ok(Some(Bytes::from_static(b"NOOP")))
        );
        assert_eq!(reader.next_line(&mut buf), Ok(None));
    }
}

#[test]
fn too_long_line_then_good_line_across_reads() {
    let mut reader = LineReader::new();
    let mut buf = BytesMut::new();
    let mut results = Vec::new();
    // A 2000-byte line arriving in 100-byte reads, then a good line.
    let mut input = vec![b'A'; 2000];
    input.extend_from_slice(b"\r\nHELO x\r\n");
    for chunk in input.chunks(100) {
        buf.extend_from_slice(chunk);
        results.extend(batch(&mut reader, &mut buf));
        assert!(buf.len() < MAX_COMMAND_LINE, "buffer must stay bounded");
    }
    assert_eq!(
        results,
        vec![Err("too long".into()), Ok(Command::Helo("x".into()))]
    );
}

#[test]
fn too_long_line_in_one_buffer() {
    let mut reader = LineReader::new();
    let mut buf = BytesMut::from(&vec![b'B'; 600][..]);
    buf.extend_from_slice(b"\r\nRSET\r\nNOOP\r\n");
    assert_eq!(
        batch(&mut reader, &mut buf),
        vec![Err("too long".into()), Ok(Command::Rset), Ok(Command::Noop)]
    );
}

use bytes::Bytes;
