//! STARTTLS on both sides: mxgate's listeners (swaks and an in-test rustls
//! client) and mxgate towards members (a real Postfix instance), with a test
//! CA and leaf certificates generated here by rcgen.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::client::ehlo_keywords;
use common::logs::{EndLines, LOG_WAIT, session_end};
use common::peers::{PostfixInstance, SmtpSink};
use common::{Behavior, FakeMta, Mxgate, member, one_member, require, require_root, run_bounded};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A test CA and one leaf certificate it signed (SAN 127.0.0.1 and localhost),
/// as PEM files in a temporary directory.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = common::shared_tempdir();
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("leaf params");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf cert");
        let pki = Pki {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            _dir: dir,
        };
        std::fs::write(&pki.ca, ca.pem()).expect("write CA");
        std::fs::write(&pki.cert, leaf.pem()).expect("write cert");
        std::fs::write(&pki.key, leaf_key.serialize_pem()).expect("write key");
        pki
    }

    fn cert_pem(&self) -> Vec<u8> {
        std::fs::read(&self.cert).expect("read cert")
    }

    fn key_pem(&self) -> Vec<u8> {
        std::fs::read(&self.key).expect("read key")
    }
}

/// A listener offering STARTTLS with `pki`'s certificate, plus `extra` lines.
fn tls_listener(pki: &Pki, extra: &str) -> String {
    format!(
        "{}tls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}\n",
        common::default_listener(),
        pki.cert.display(),
        pki.key.display()
    )
}

/// A client config trusting only `ca`, speaking `versions`.
fn client_config(
    ca: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA pem")).expect("add CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// A blocking SMTP client that can switch to TLS after STARTTLS.
struct TlsClient {
    conn: Conn,
    buf: Vec<u8>,
}

impl TlsClient {
    fn connect(addr: SocketAddr) -> TlsClient {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        tcp.set_nodelay(true).expect("nodelay");
        let mut c = TlsClient {
            conn: Conn::Plain(tcp),
            buf: Vec::new(),
        };
        let greeting = c.reply();
        assert!(greeting.starts_with("220 "), "greeting: {greeting}");
        c
    }

    fn local_addr(&self) -> SocketAddr {
        match &self.conn {
            Conn::Plain(s) => s.local_addr(),
            Conn::Tls(s) => s.sock.local_addr(),
        }
        .expect("local addr")
    }

    fn send(&mut self, bytes: &[u8]) {
        match &mut self.conn {
            Conn::Plain(s) => s.write_all(bytes),
            Conn::Tls(s) => s.write_all(bytes).and_then(|()| s.flush()),
        }
        .expect("send");
    }

    fn read_some(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = match &mut self.conn {
            Conn::Plain(s) => s.read(&mut chunk),
            Conn::Tls(s) => s.read(&mut chunk),
        }
        .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// One whole reply, lines joined by `\n`; empty when the server closed.
    fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                if self.read_some() == 0 {
                    return lines.join("\n");
                }
                continue;
            };
            let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
            self.buf.drain(..pos + 2);
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    fn expect(&mut self, line: &str, expected: &str) -> String {
        let reply = self.cmd(line);
        assert!(
            reply.starts_with(expected),
            "{line:?}: expected {expected:?}, got {reply:?}"
        );
        reply
    }

    /// After a `220` to STARTTLS: the handshake, completed before returning.
    fn handshake(&mut self, config: Arc<rustls::ClientConfig>) -> rustls::ProtocolVersion {
        assert!(
            self.buf.is_empty(),
            "bytes after the 220 to STARTTLS: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let Conn::Plain(tcp) = &self.conn else {
            panic!("already TLS")
        };
        let tcp = tcp.try_clone().expect("clone");
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let conn = rustls::ClientConnection::new(config, name).expect("client connection");
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("TLS handshake with mxgate");
        }
        let version = stream.conn.protocol_version().expect("protocol version");
        self.conn = Conn::Tls(Box::new(stream));
        version
    }

    fn send_mail(&mut self, from: &str, to: &str, body: &str) -> String {
        self.expect(&format!("MAIL FROM:<{from}>"), "250");
        self.expect(&format!("RCPT TO:<{to}>"), "250");
        self.expect("DATA", "354");
        self.send(format!("{body}\r\n.\r\n").as_bytes());
        self.reply()
    }
}

#[test]
fn swaks_starttls_delivers_through_mxgate() {
    if !require("swaks") {
        return;
    }
    let pki = Pki::new("swaks");
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&tls_listener(&pki, ""), &one_member(&fake));
    let (out, killed) = run_bounded(
        Command::new("swaks")
            .args(["--server", &gw.smtp_addr().to_string()])
            .args(["--tls", "--tls-verify", "--tls-ca-path"])
            .arg(&pki.ca)
            .args(["--from", "sender@source.test", "--to", "rcpt@example.com"])
            .args(["--header", "Subject: swaks over TLS"]),
        Duration::from_secs(30),
    );
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!killed, "swaks hung:\n{transcript}");
    assert!(out.status.success(), "swaks failed:\n{transcript}");
    assert!(
        transcript.contains("TLS started"),
        "no TLS in the transcript:\n{transcript}"
    );
    let messages = fake.messages();
    assert_eq!(messages.len(), 1, "member messages: {messages:?}");
    assert!(String::from_utf8_lossy(&messages[0].data).contains("swaks over TLS"));
    let end = gw.wait_log("session end", LOG_WAIT).expect("session end");
    assert!(end.contains("tls=true"), "session end: {end}");
}

#[test]
fn starttls_negotiates_tls_and_resets_the_session() {
    let pki = Pki::new("reset");
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&tls_listener(&pki, ""), &one_member(&fake));
    let all = [&rustls::version::TLS13, &rustls::version::TLS12];
    let mut c = TlsClient::connect(gw.smtp_addr());
    let client = c.local_addr();
    let ehlo = c.expect("EHLO client.test", "250");
    assert!(
        ehlo_keywords(&ehlo).contains(&"STARTTLS".to_owned()),
        "{ehlo}"
    );
    // A transaction started in plain text is ended by STARTTLS.
    c.expect("MAIL FROM:<early@source.test>", "250");
    c.expect("STARTTLS extra", "501 5.5.4");
    c.expect("STARTTLS", "220 2.0.0");
    let version = c.handshake(client_config(&pki.ca, &all));
    assert!(
        [
            rustls::ProtocolVersion::TLSv1_3,
            rustls::ProtocolVersion::TLSv1_2
        ]
        .contains(&version),
        "negotiated {version:?}"
    );
    // HELO/EHLO is forgotten: the client must say EHLO again.
    c.expect("MAIL FROM:<s@source.test>", "503 5.5.1");
    let ehlo = c.expect("EHLO client.test", "250");
    assert!(
        !ehlo_keywords(&ehlo).contains(&"STARTTLS".to_owned()),
        "STARTTLS offered inside TLS: {ehlo}"
    );
    c.expect("STARTTLS", "503 5.5.1");
    let reply = c.send_mail(
        "s@source.test",
        "r@example.com",
        "Subject: tls\r\n\r\nhello",
    );
    assert!(reply.starts_with("250"), "end of data: {reply}");
    c.expect("QUIT", "221");
    let end = session_end(&gw, client, EndLines::First);
    assert!(end.contains("tls=true"), "session end: {end}");
    assert!(end.contains("messages=1"), "session end: {end}");
    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].mail, "MAIL FROM:<s@source.test>");
    // The plain-text transaction's member connection was ended, not reused.
    assert_eq!(fake.connections(), 2, "{:?}", fake.commands());

    // TLS 1.2 alone is accepted too.
    let mut c = TlsClient::connect(gw.smtp_addr());
    c.expect("EHLO client.test", "250");
    c.expect("STARTTLS", "220");
    let version = c.handshake(client_config(&pki.ca, &[&rustls::version::TLS12]));
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
    c.expect("EHLO client.test", "250");
    c.expect("QUIT", "221");
}

#[test]
fn starttls_not_offered_without_a_certificate() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start(&one_member(&fake));
    let mut c = TlsClient::connect(gw.smtp_addr());
    let client = c.local_addr();
    let ehlo = c.expect("EHLO client.test", "250");
    assert!(!ehlo_keywords(&ehlo).contains(&"STARTTLS".to_owned()));
    c.expect("STARTTLS", "502 5.5.1");
    c.expect("QUIT", "221");
    let end = session_end(&gw, client, EndLines::First);
    assert!(end.contains("tls=false"), "session end: {end}");
}

#[test]
fn require_tls_refuses_mail_before_starttls() {
    let pki = Pki::new("require");
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(
        &tls_listener(&pki, "require_tls = true"),
        &one_member(&fake),
    );
    let mut c = TlsClient::connect(gw.smtp_addr());
    c.expect("EHLO client.test", "250");
    c.expect(
        "MAIL FROM:<s@source.test>",
        "530 5.7.0 Must issue a STARTTLS command first",
    );
    c.expect("STARTTLS", "220 2.0.0");
    c.handshake(client_config(
        &pki.ca,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    ));
    c.expect("EHLO client.test", "250");
    let reply = c.send_mail("s@source.test", "r@example.com", "Subject: t\r\n\r\nhi");
    assert!(reply.starts_with("250"), "end of data: {reply}");
    c.expect("QUIT", "221");
    assert_eq!(fake.messages().len(), 1);
    assert_eq!(fake.connections(), 1, "the refused MAIL reached a member");
}

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    let pki = Pki::new("inject");
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&tls_listener(&pki, ""), &one_member(&fake));
    let mut c = TlsClient::connect(gw.smtp_addr());
    let client = c.local_addr();
    c.expect("EHLO client.test", "250");
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("220 2.0.0"), "STARTTLS: {reply}");
    c.handshake(client_config(
        &pki.ca,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    ));
    let first = c.cmd("EHLO x");
    assert!(
        first.starts_with("250-mx.test"),
        "first reply inside TLS is not the EHLO reply: {first:?}"
    );
    // Nothing was left over: MAIL is the first command of the TLS session.
    c.expect("MAIL FROM:<good@source.test>", "250");
    c.expect("RSET", "250");
    c.expect("QUIT", "221");
    session_end(&gw, client, EndLines::First);
    assert!(
        !fake
            .commands()
            .iter()
            .any(|c| c.contains("evil") || c.contains("victim")),
        "injected commands reached the member: {:?}",
        fake.commands()
    );
}

#[test]
fn broken_certificate_is_a_startup_error_naming_the_file() {
    let dir = common::shared_tempdir();
    let cert = dir.path().join("broken.pem");
    let key = dir.path().join("broken.key");
    std::fs::write(&cert, "not a certificate\n").expect("write");
    std::fs::write(&key, "not a key\n").expect("write");
    std::fs::write(dir.path().join("cluster.toml"), "").expect("write");
    let config = dir.path().join("mxgate.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"test\"\ndata_dir = \"data\"\npolicy = \"cluster.toml\"\n\n{}tls_cert = \"broken.pem\"\ntls_key = \"broken.key\"\n",
            common::default_listener()
        ),
    )
    .expect("write");
    for command in ["check-config", "serve"] {
        let (out, killed) = run_bounded(
            Command::new(env!("CARGO_BIN_EXE_mxgate"))
                .args([command, "-c"])
                .arg(&config),
            Duration::from_secs(10),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!killed, "{command} with a broken certificate kept running");
        assert_eq!(out.status.code(), Some(78), "{command}: {stderr}");
        assert!(stderr.contains("broken.pem"), "{command}: {stderr}");
    }
}

#[test]
fn required_upstream_tls_fails_over_a_member_without_starttls() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let policy = format!(
        "[upstream]\ntls = \"required\"\ntls_insecure_skip_verify = true\nbackoff = \"30s\"\n\n{}",
        member("m1", fake.addr, "")
    );
    let gw = Mxgate::start(&policy);
    assert!(
        gw.wait_log("tls_insecure_skip_verify", LOG_WAIT).is_some(),
        "no warning about tls_insecure_skip_verify"
    );
    let mut c = TlsClient::connect(gw.smtp_addr());
    c.expect("EHLO client.test", "250");
    c.expect("MAIL FROM:<s@source.test>", "451 4.4.1");
    c.expect("QUIT", "221");
    assert!(
        !fake.commands().iter().any(|c| c.starts_with("MAIL")),
        "MAIL went to a member without TLS: {:?}",
        fake.commands()
    );
    assert!(
        gw.wait_log("does not offer STARTTLS", LOG_WAIT).is_some(),
        "member failure not logged"
    );
}

/// One mxgate in front of Postfix (with `pki`'s certificate) for `upstream`;
/// sends one message and returns the client's final reply and, when
/// delivered, the copy smtp-sink got from Postfix.
fn through_postfix(
    postfix: &PostfixInstance,
    sink: &SmtpSink,
    upstream: &str,
    tag: &str,
) -> (String, Option<String>) {
    let policy = format!(
        "[upstream]\n{upstream}\nbackoff = \"1s\"\n\n{}",
        member("pfx", postfix.addr, "")
    );
    let gw = Mxgate::start(&policy);
    let mut c = TlsClient::connect(gw.smtp_addr());
    c.expect("EHLO client.test", "250");
    let mail = c.cmd("MAIL FROM:<s@source.test>");
    if !mail.starts_with("250") {
        c.cmd("QUIT");
        return (mail, None);
    }
    c.expect("RCPT TO:<r@example.com>", "250");
    c.expect("DATA", "354");
    c.send(format!("Subject: {tag}\r\nX-Test-Client: {tag}\r\n\r\nbody\r\n.\r\n").as_bytes());
    let reply = c.reply();
    c.cmd("QUIT");
    if !reply.starts_with("250") {
        return (reply, None);
    }
    // Postfix relays in the background; a dump file may appear before it is
    // complete, so wait for the whole message (its end-of-body line).
    let mut copy = None;
    common::eventually(Duration::from_secs(30), || {
        copy = sink
            .messages()
            .into_iter()
            .find(|m| common::tag_of(m.as_bytes()).as_deref() == Some(tag) && m.contains("body"));
        copy.is_some()
    });
    (reply, copy)
}

/// The `with` protocol of the Received header Postfix added.
fn received_with(message: &str) -> Option<String> {
    let unfolded = message.replace("\r\n\t", " ").replace("\n\t", " ");
    unfolded
        .lines()
        .filter(|l| l.starts_with("Received:") && l.contains("(Postfix)"))
        .find_map(|l| {
            let rest = &l[l.find(" with ")? + 6..];
            rest.split_whitespace().next().map(str::to_owned)
        })
}

#[test]
fn starttls_to_a_real_postfix_member() {
    if !require("postfix") || !require("smtp-sink") || !require_root("a Postfix instance") {
        return;
    }
    let pki = Pki::new("postfix");
    let wrong = Pki::new("wrong");
    let sink = SmtpSink::start("127.0.0.1");
    let postfix = PostfixInstance::start_with_files(
        sink.addr,
        false,
        &[("tls.crt", &pki.cert_pem()), ("tls.key", &pki.key_pem())],
    );
    let ca = pki.ca.display().to_string();
    let wrong_ca = wrong.ca.display().to_string();
    let cases = [
        (
            "required, our CA",
            format!("tls = \"required\"\ntls_ca_file = \"{ca}\""),
            Some("ESMTPS"),
        ),
        (
            "required, wrong CA",
            format!("tls = \"required\"\ntls_ca_file = \"{wrong_ca}\""),
            None,
        ),
        (
            "required, wrong CA, lab skip",
            format!(
                "tls = \"required\"\ntls_ca_file = \"{wrong_ca}\"\ntls_insecure_skip_verify = true"
            ),
            Some("ESMTPS"),
        ),
        (
            "opportunistic, no CA",
            "tls = \"opportunistic\"".to_owned(),
            Some("ESMTPS"),
        ),
        (
            "opportunistic, wrong CA",
            format!("tls = \"opportunistic\"\ntls_ca_file = \"{wrong_ca}\""),
            None,
        ),
        ("none", "tls = \"none\"".to_owned(), Some("ESMTP")),
    ];
    for (i, (name, upstream, expected)) in cases.iter().enumerate() {
        let tag = format!("case{i}");
        let (reply, copy) = through_postfix(&postfix, &sink, upstream, &tag);
        match expected {
            Some(with) => {
                assert!(reply.starts_with("250"), "{name}: final reply {reply}");
                let copy = copy.unwrap_or_else(|| {
                    panic!(
                        "{name}: nothing reached the sink: {:?}\n{}",
                        sink.messages(),
                        postfix.maillog()
                    )
                });
                assert_eq!(
                    received_with(&copy).as_deref(),
                    Some(*with),
                    "{name}: Received header in\n{copy}"
                );
            }
            None => {
                assert!(
                    reply.starts_with("451 4.4.1"),
                    "{name}: expected 451 4.4.1 (the only member fails), got {reply}"
                );
            }
        }
    }
    // Postfix counted the STARTTLS commands mxgate sent.
    assert!(
        postfix.maillog().contains("starttls=1"),
        "{}",
        postfix.maillog()
    );
}

#[test]
fn reload_with_a_broken_certificate_keeps_the_old_one() {
    let pki = Pki::new("reload");
    let fake = FakeMta::start("m1", Behavior::Normal);
    let gw = Mxgate::start_with(&tls_listener(&pki, ""), &one_member(&fake));
    std::fs::write(&pki.cert, "broken\n").expect("write");
    common::signal(gw.pid(), "HUP");
    let refused = gw
        .wait_log("reload refused", LOG_WAIT)
        .unwrap_or_else(|| panic!("reload not refused:\n{}", gw.logs().join("\n")));
    // The error's lines after the first may still be on their way to the log reader.
    let mentions_cert = gw.wait_log("tls.crt", LOG_WAIT).is_some();
    assert!(mentions_cert, "{refused}\n{}", gw.logs().join("\n"));
    let mut c = TlsClient::connect(gw.smtp_addr());
    c.expect("EHLO client.test", "250");
    c.expect("STARTTLS", "220 2.0.0");
    c.handshake(client_config(
        &pki.ca,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    ));
    c.expect("EHLO client.test", "250");
    c.expect("QUIT", "221");
}
