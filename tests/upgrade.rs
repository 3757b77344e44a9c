//! Binary upgrade (`mxgate upgrade`, SIGUSR2; SPEC section 12): the
//! running daemon starts the binary at its path, hands it every listening
//! socket and drains once the new process serves. Real peers: Postfix's
//! `smtp-source` keeps sending through the upgrade into `smtp-sink`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::peers::SmtpSink;
use common::{
    Client, Mxgate, Orphan, default_listener, eventually, ip, member, policy, require, run_bounded,
};

/// How long an upgrade may take here.
const UPGRADE: Duration = Duration::from_secs(60);

/// The pid in the daemon's `status --json`.
fn serving_pid(gw: &Mxgate) -> Option<u32> {
    let out = gw.cli(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    status["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

/// `mxgate upgrade -c FILE`, bounded.
fn upgrade(gw: &Mxgate) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mxgate"));
    cmd.args(["upgrade", "-c"]).arg(gw.config_path());
    let (out, killed) = run_bounded(&mut cmd, UPGRADE);
    assert!(!killed, "mxgate upgrade did not end in time");
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One message through the daemon, from `source`.
fn one_message(gw: &Mxgate, source: &str) {
    let mut c = Client::greeted_from(ip(source), gw.smtp_addr());
    c.expect("EHLO upgrade.example", "250");
    assert_eq!(
        c.send_mail("a@x.example", &["b@y.example"], "after").code,
        250
    );
}

#[test]
fn an_upgrade_under_load_refuses_nothing_and_loses_no_message() {
    if !require("smtp-source") || !require("smtp-sink") {
        return;
    }
    let sink = SmtpSink::start("127.94.0.2");
    let mut gw = Mxgate::start_full(
        "drain_timeout = \"30s\"",
        &default_listener(),
        &policy("", &[member("sink", sink.addr, "")]),
    );
    let old = gw.pid();
    let total = 3000;
    let addr = gw.smtp_addr().to_string();
    let source = std::thread::spawn(move || {
        let mut cmd = Command::new("smtp-source");
        cmd.args(["-s", "10", "-m", &total.to_string(), "-l", "1024"])
            .args(["-f", "sender@example.org", "-t", "rcpt@example.com"])
            .arg(&addr);
        run_bounded(&mut cmd, Duration::from_secs(180))
    });
    assert!(
        sink.wait_count(300, Duration::from_secs(60)) >= 300,
        "mail does not flow before the upgrade"
    );
    let out = upgrade(&gw);
    assert!(
        out.status.success(),
        "upgrade failed: {}",
        text(&out.stderr)
    );
    let said = text(&out.stdout);
    eprintln!("mxgate upgrade said: {said}");
    let new = serving_pid(&gw).expect("the new process answers status");
    let successor = Orphan(new);
    assert_ne!(new, old, "{said}");
    assert!(said.contains(&format!("pid {new}")), "{said}");

    let (source_out, killed) = source.join().expect("smtp-source thread");
    assert!(!killed, "smtp-source did not finish in time");
    assert!(
        source_out.status.success(),
        "smtp-source failed: {}{}",
        text(&source_out.stdout),
        text(&source_out.stderr)
    );
    assert_eq!(
        sink.wait_count(total, Duration::from_secs(30)),
        total,
        "every message reaches the member"
    );
    // The old process drained and exited by itself; the new one serves.
    let exited = gw.wait_exit(Duration::from_secs(40));
    assert!(
        exited.is_some_and(|s| s.success()),
        "the old process did not end its drain: {exited:?}"
    );
    assert!(successor.is_alive());
    one_message(&gw, "127.94.0.10");
    assert_eq!(serving_pid(&gw), Some(new));
    assert!(
        gw.logs()
            .iter()
            .any(|l| l.contains("using an inherited listening socket")),
        "the new process took the sockets over"
    );
}

#[test]
fn a_configuration_the_new_process_refuses_keeps_the_old_one_serving() {
    let sink = SmtpSink::start("127.94.1.2");
    let gw = Mxgate::start(&policy("", &[member("sink", sink.addr, "")]));
    let old = gw.pid();
    let cluster = gw.dir.path().join("cluster.toml");
    let good = std::fs::read_to_string(&cluster).expect("policy");
    std::fs::write(&cluster, "[routing]\nmax_attempts = \"many\"\n").expect("break the policy");
    let out = upgrade(&gw);
    assert!(
        !out.status.success(),
        "an upgrade to a refused configuration failed"
    );
    let said = text(&out.stderr);
    assert!(said.contains("keeps serving"), "{said}");
    assert!(
        said.contains("max_attempts"),
        "the reason names the key: {said}"
    );
    assert_eq!(serving_pid(&gw), Some(old));
    one_message(&gw, "127.94.1.10");

    // Fixed, the same command succeeds; SIGUSR2 does it too.
    std::fs::write(&cluster, good).expect("fix the policy");
    common::signal(old, "USR2");
    let mut new = None;
    assert!(
        eventually(UPGRADE, || {
            new = serving_pid(&gw).filter(|pid| *pid != old);
            new.is_some()
        }),
        "SIGUSR2 did not upgrade"
    );
    let _successor = new.map(Orphan);
    one_message(&gw, "127.94.1.11");
}

/// A copy of the built binary in `dir`, to be replaced by the test.
fn binary_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("mxgate");
    std::fs::copy(env!("CARGO_BIN_EXE_mxgate"), &copy).expect("copy the binary");
    copy
}

#[test]
fn the_binary_installed_at_the_path_is_started_and_a_broken_one_changes_nothing() {
    let sink = SmtpSink::start("127.94.2.2");
    let bin = common::shared_tempdir();
    let binary = binary_copy(bin.path());
    let gw = Mxgate::start_binary(
        &binary,
        &[],
        ("test", "", &default_listener()),
        &policy("", &[member("sink", sink.addr, "")]),
    );
    let old = gw.pid();
    // A package upgrade replaces the file (a new inode, as dpkg does).
    let broken = bin.path().join("mxgate.new");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho 'mxgate: broken build' >&2\nexit 3\n",
    )
    .expect("write");
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::rename(&broken, &binary).expect("install the broken binary");
    let out = upgrade(&gw);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("exited before it was ready") && said.contains("keeps serving"),
        "{said}"
    );
    assert_eq!(serving_pid(&gw), Some(old));
    one_message(&gw, "127.94.2.10");

    // A working binary installed the same way takes over.
    let fixed = bin.path().join("mxgate.new");
    std::fs::copy(env!("CARGO_BIN_EXE_mxgate"), &fixed).expect("copy");
    std::fs::rename(&fixed, &binary).expect("install");
    let out = upgrade(&gw);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new = serving_pid(&gw).expect("status");
    let _successor = Orphan(new);
    assert_ne!(new, old);
    let exe = std::fs::read_link(format!("/proc/{new}/exe")).expect("exe");
    assert_eq!(exe, binary, "the new process runs the installed binary");
    one_message(&gw, "127.94.2.11");
}

#[test]
fn a_cluster_backend_hands_its_database_over() {
    let sink = SmtpSink::start("127.94.3.2");
    let node = common::cluster::Node::start(
        "gw1",
        "127.94.3.1",
        &sink.addr.to_string(),
        &policy("", &[]),
    );
    node.ok(&["cluster", "create"]);
    let applied = node.apply_policy("p.toml", "[routing]\nmax_attempts = 4\n");
    assert!(applied.contains("policy version"), "{applied}");
    let before = node.policy_version();
    let old = node.gw.pid();
    let out = upgrade(&node.gw);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new = serving_pid(&node.gw).expect("status");
    let _successor = Orphan(new);
    assert_ne!(new, old);
    // The new process opened the database and leads the cluster again.
    assert!(
        eventually(UPGRADE, || node
            .master()
            .is_some_and(|(name, _)| name == "gw1")),
        "no master after the upgrade: {:?}",
        node.master()
    );
    assert_eq!(node.policy_version(), before);
    let applied = node.apply_policy("q.toml", "[routing]\nmax_attempts = 5\n");
    assert!(applied.contains("applied"), "{applied}");
}
