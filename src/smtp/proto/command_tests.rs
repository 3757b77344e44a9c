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
        // Found by fuzzing: a route ending in an address literal, no `:` left.
        (
            b"RCPT TO:<@s1,@[192.0.2.2]>",
            |e| matches!(e, BadRecipient(_)),
            b"501 5.1.3 ",
        ),
        (
            b"MAIL FROM:<@[192.0.2.2]>",
            |e| matches!(e, BadSender(_)),
            b"501 5.1.7 ",
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
fn local_part_and_domain_characters() {
    // Every printable ASCII byte in a dot-string local part and in a domain
    // label, against RFC 5321 atext and the label set (the path syntax
    // characters themselves are covered above).
    const ATEXT: &[u8] = b"!#$%&'*+-/=?^_`{|}~.";
    for b in 0x21u8..0x7f {
        if b"<>\"@\\".contains(&b) {
            continue;
        }
        let c = char::from(b);
        let local = format!("MAIL FROM:<a{c}b@x.example>");
        let ok = b.is_ascii_alphanumeric() || ATEXT.contains(&b);
        assert_eq!(
            parse_command(local.as_bytes()).is_ok(),
            ok,
            "local part with {c:?}"
        );
        let domain = format!("RCPT TO:<a@x{c}y.example>");
        let ok = b.is_ascii_alphanumeric() || b"-_.".contains(&b);
        assert_eq!(
            parse_command(domain.as_bytes()).is_ok(),
            ok,
            "domain with {c:?}"
        );
    }
    for (line, ok) in [
        ("RCPT TO:<a@.example>", false),
        ("RCPT TO:<a@x..example>", false),
        ("RCPT TO:<a@x.example.>", false),
        ("RCPT TO:<a@>", false),
        ("RCPT TO:<a@b\u{e9}.example>", true),
        ("RCPT TO:<\u{e9}l\u{e8}ve@b.example>", true),
        ("RCPT TO:<\"a\\\u{e9}>\"@b.example>", true),
        ("RCPT TO:<a@b.example\u{85}>", false),
    ] {
        assert_eq!(parse_command(line.as_bytes()).is_ok(), ok, "{line}");
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

mod props {
    //! Property tests: no input panics the reader or the parser, every error
    //! maps to a 500/501 reply, and MAIL/RCPT survive encode -> parse.
    use super::*;
    use proptest::prelude::*;

    /// Lines built from the pieces the path and parameter code cares about.
    fn command_like() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop::sample::select(vec![
            "MAIL FROM:",
            "RCPT TO:",
            "mail from:",
            "XCLIENT ",
            "BDAT ",
            "EHLO ",
            "<",
            ">",
            "@",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\\",
            " ",
            "\t",
            "=",
            ".",
            "a",
            "x.example",
            "192.0.2.1",
            "SIZE=10",
            "postmaster",
            "é",
            "\r",
            "\0",
            "+2B",
            "LAST",
        ]);
        prop::collection::vec(piece, 0..24).prop_map(|p| p.concat().into_bytes())
    }

    /// Re-encodes a parsed MAIL/RCPT and parses it back.
    fn round_trip(cmd: &Command) -> Option<Result<Command, CommandError>> {
        let mut out = BytesMut::new();
        match cmd {
            Command::Mail(m) => m.encode(&mut out, |_| true),
            Command::Rcpt(r) => r.encode(&mut out),
            _ => return None,
        }
        let line = out.strip_suffix(b"\r\n")?;
        assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
        Some(parse_command(line))
    }

    fn check(line: &[u8]) -> Result<(), TestCaseError> {
        match parse_command(line) {
            Err(e) => {
                let reply = Reply::from(&e);
                prop_assert!(matches!(reply.code(), 500 | 501));
                prop_assert!(reply.as_bytes().ends_with(b"\r\n"));
            }
            Ok(cmd) => {
                if let Some(again) = round_trip(&cmd) {
                    prop_assert_eq!(again, Ok(cmd));
                }
            }
        }
        Ok(())
    }

    fn local_part() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]{1,12}",
            r#""([a-z @<>,:\[\]]|\\[a-z"\\])*""#,
        ]
    }

    fn domain() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_-]{1,10}(\\.[a-z0-9-]{1,10}){0,3}",
            "\\[(IPv6:)?[0-9a-f.:]{1,20}\\]",
        ]
    }

    fn params() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
        prop::collection::vec(
            (
                "[A-Za-z0-9][A-Za-z0-9-]{0,8}",
                prop::option::of("[!-~]{1,10}"),
            ),
            0..4,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_input_never_panics(input in prop::collection::vec(any::<u8>(), 0..1200)) {
            let mut reader = LineReader::new();
            let mut buf = BytesMut::from(&input[..]);
            loop {
                match reader.next_line(&mut buf) {
                    Ok(Some(line)) => {
                        prop_assert!(line.len() < MAX_COMMAND_LINE);
                        check(&line)?;
                    }
                    Ok(None) => break,
                    Err(LineError::TooLong) => {}
                }
            }
            check(&input)?;
        }

        #[test]
        fn command_like_lines_never_panic(line in command_like()) {
            check(&line)?;
        }

        #[test]
        fn mail_and_rcpt_round_trip(
            rcpt in any::<bool>(),
            route in prop::collection::vec(domain(), 0..3),
            local in local_part(),
            domain in domain(),
            params in params(),
            spaces in 0usize..3,
        ) {
            let mailbox = format!("{local}@{domain}");
            let route: Vec<String> = route.iter().map(|d| format!("@{d}")).collect();
            let route = if route.is_empty() { String::new() } else { format!("{}:", route.join(",")) };
            let head = if rcpt { "RCPT TO:" } else { "MAIL FROM:" };
            let mut line = format!("{head}{}<{route}{mailbox}>", " ".repeat(spaces));
            for (k, v) in &params {
                line.push(' ');
                line.push_str(k);
                if let Some(v) = v {
                    line.push('=');
                    line.push_str(v);
                }
            }
            let params: Vec<Param> = params
                .iter()
                .map(|(k, v)| Param { keyword: k.to_ascii_uppercase(), value: v.clone() })
                .collect();
            let want = if rcpt {
                Command::Rcpt(RcptTo { path: mailbox, params })
            } else {
                Command::Mail(MailFrom { path: mailbox, params })
            };
            let got = parse_command(line.as_bytes());
            prop_assert_eq!(&got, &Ok(want.clone()), "{}", line);
            prop_assert_eq!(round_trip(&want), Some(Ok(want)));
        }
    }
}
