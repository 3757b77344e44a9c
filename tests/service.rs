//! mxgate as a systemd service, over real processes and sockets (issue 19):
//! the notify protocol (`NOTIFY_SOCKET`) across start, reload, a refused
//! reload and drain; signals sent the moment READY=1 is heard; MAINPID= and
//! READY=1 from the new process after `mxgate upgrade`; watchdog
//! pings; socket activation under
//! `systemd-socket-activate`, SMTP and metrics served on the inherited
//! sockets. Addresses: 127.93.0.0/16.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::metrics::{http_get_text, with_metrics};
use common::{
    Behavior, Client, FakeMta, Orphan, eventually, free_port, ip, member, policy, require,
    send_tagged, shared_tempdir, signal, tag_of, without_client_names,
};

/// How long a daemon gets to start, and to exit after SIGTERM.
const START: Duration = Duration::from_secs(20);
/// How long a notification after a signal may take.
const STEP: Duration = Duration::from_secs(10);

/// The test's end of `NOTIFY_SOCKET`: a datagram socket in a temporary
/// directory, read with a timeout.
struct Notifications {
    socket: UnixDatagram,
    path: PathBuf,
    /// Every datagram received so far (for failure messages).
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Notifications {
    fn bind() -> Notifications {
        let dir = shared_tempdir();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Notifications {
            socket,
            path,
            seen: Vec::new(),
            _dir: dir,
        }
    }

    /// The next datagram, or `None` after `limit`.
    fn recv(&mut self, limit: Duration) -> Option<String> {
        let limit = limit.max(Duration::from_millis(1));
        self.socket
            .set_read_timeout(Some(limit))
            .expect("read timeout");
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        self.seen.push(text.clone());
        Some(text)
    }

    /// The next datagram that is not a periodic `STATUS=` alone (sent
    /// every 5 s, between any two steps); panics after `limit`.
    #[track_caller]
    fn next_step(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while let Some(text) = self.recv(deadline.saturating_duration_since(Instant::now())) {
            if !is_status_only(&text) {
                return text;
            }
        }
        panic!(
            "no notification within {limit:?}; received: {:#?}",
            self.seen
        );
    }

    /// Waits until `count` datagrams with the line `line` arrived, for up
    /// to `limit`; returns how many did.
    fn count_lines(&mut self, line: &str, count: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut found = 0;
        while found < count {
            let Some(text) = self.recv(deadline.saturating_duration_since(Instant::now())) else {
                break;
            };
            found += usize::from(has_line(&text, line));
        }
        found
    }
}

/// True when the datagram `text` has the line `line` (e.g. `READY=1`).
fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// The value of `KEY=` in the datagram `text`.
fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|l| l.strip_prefix('=')))
}

fn is_status_only(text: &str) -> bool {
    text.lines().all(|l| l.starts_with("STATUS="))
}

/// Asserts `text` is `READY=1` with a status line naming `members` members.
#[track_caller]
fn assert_ready(text: &str, members: usize) {
    assert!(has_line(text, "READY=1"), "expected READY=1: {text:?}");
    let status = value(text, "STATUS").unwrap_or_else(|| panic!("no STATUS= in {text:?}"));
    assert!(
        status.ends_with(&format!(" of {members} members up")) && status.contains(" sessions, "),
        "STATUS= should give sessions and members up: {status:?}"
    );
}

/// Asserts `text` is `RELOADING=1` with `MONOTONIC_USEC=`; returns its value.
#[track_caller]
fn assert_reloading(text: &str) -> u64 {
    assert!(
        has_line(text, "RELOADING=1"),
        "expected RELOADING=1: {text:?}"
    );
    let usec = value(text, "MONOTONIC_USEC")
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC= beside RELOADING=1: {text:?}"));
    usec.parse()
        .unwrap_or_else(|_| panic!("MONOTONIC_USEC is not a number: {text:?}"))
}

/// A directory with mxgate.toml (`[node]` then `node`) and cluster.toml.
struct Files {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Files {
    fn write(node: &str, policy: &str) -> Files {
        let dir = shared_tempdir();
        let config = dir.path().join("mxgate.toml");
        let text = format!(
            "[node]\nname = \"svc\"\ndata_dir = \"data\"\npolicy = \"cluster.toml\"\n\n{node}"
        );
        std::fs::write(&config, text).expect("write mxgate.toml");
        let files = Files { dir, config };
        files.set_policy(&without_client_names(policy));
        files
    }

    fn set_policy(&self, text: &str) {
        std::fs::write(self.dir.path().join("cluster.toml"), text).expect("write cluster.toml");
    }

    /// `mxgate status --json`, asserted to succeed.
    #[track_caller]
    fn status(&self) -> serde_json::Value {
        let out = Command::new(mxgate())
            .args(["status", "--json", "-c"])
            .arg(&self.config)
            .output()
            .expect("run mxgate status");
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }
}

fn mxgate() -> &'static str {
    env!("CARGO_BIN_EXE_mxgate")
}

/// An `[[smtp]]` listener on `addr`.
fn smtp_on(addr: SocketAddr) -> String {
    format!("[[smtp]]\nname = \"inbound\"\nlisten = \"{addr}\"\nhostname = \"mx.test\"\n")
}

/// A fresh address on `ip` (in 127.93.0.0/16).
fn addr_on(ip_text: &str) -> SocketAddr {
    SocketAddr::new(ip(ip_text), free_port(ip_text))
}

/// A process under test (the daemon, or what execs it in place), its
/// stderr collected; SIGTERM then SIGKILL when dropped, so that no test
/// leaves it behind on any exit path.
struct Process {
    child: Child,
    logs: common::Logs,
}

impl Process {
    fn spawn(command: &mut Command) -> Process {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let logs = common::collect_stderr(&mut child);
        Process { child, logs }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn logs(&self) -> Vec<String> {
        self.logs.0.lock().expect("log lock").clone()
    }

    /// The log lines containing `needle`, once there are `count` (bounded).
    #[track_caller]
    fn wait_logs(&self, needle: &str, count: usize) -> Vec<String> {
        let found = || -> Vec<String> {
            self.logs()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect()
        };
        let enough = eventually(STEP, || found().len() >= count);
        assert!(
            enough,
            "expected {count} log lines with {needle:?}:\n{}",
            self.logs().join("\n")
        );
        found()
    }

    /// SIGTERM, then the exit status (bounded).
    #[track_caller]
    fn terminate(&mut self) -> ExitStatus {
        signal(self.pid(), "TERM");
        self.wait_exit()
    }

    /// The exit status, once the process has exited (bounded).
    #[track_caller]
    fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        eventually(START, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
            .unwrap_or_else(|| panic!("still running after {START:?}:\n{}", self.logs().join("\n")))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        signal(self.pid(), "TERM");
        if !eventually(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `mxgate serve -c CONFIG` with `NOTIFY_SOCKET` and the `env` pairs.
fn serve_notifying(files: &Files, notify: &Path, env: &[(&str, &str)]) -> Process {
    let mut command = Command::new(mxgate());
    command
        .args(["serve", "-c"])
        .arg(&files.config)
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", notify)
        .env_remove("WATCHDOG_PID")
        .env_remove("WATCHDOG_USEC")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    command.envs(env.iter().copied());
    Process::spawn(&mut command)
}

#[test]
fn notify_says_ready_reloading_and_stopping_across_the_life_of_the_daemon() {
    let (m1, m2) = (
        FakeMta::start("m1", Behavior::Normal),
        FakeMta::start("m2", Behavior::Normal),
    );
    let smtp = addr_on("127.93.0.1");
    let files = Files::write(&smtp_on(smtp), &policy("", &[member("m1", m1.addr, "")]));
    let mut notes = Notifications::bind();
    // A watchdog meant for another process (pid 1): this one must not ping.
    let watchdog_elsewhere = [("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")];
    let mut daemon = serve_notifying(&files, &notes.path, &watchdog_elsewhere);

    // READY=1 comes first, once the listener accepts and the admin socket
    // answers: both work at once, without a retry.
    let ready = notes
        .recv(START)
        .unwrap_or_else(|| panic!("no READY=1:\n{}", daemon.logs().join("\n")));
    assert_ready(&ready, 1);
    let mut client = Client::connect_from(ip("127.93.0.2"), smtp);
    assert_eq!(client.reply().code, 220);
    client.expect("QUIT", "221");
    assert_eq!(files.status()["members"].as_array().map(Vec::len), Some(1));

    // SIGHUP: RELOADING=1 with the time, then READY=1 with the new members.
    let both = policy("", &[member("m1", m1.addr, ""), member("m2", m2.addr, "")]);
    files.set_policy(&without_client_names(&both));
    signal(daemon.pid(), "HUP");
    let first = assert_reloading(&notes.next_step(STEP));
    assert_ready(&notes.next_step(STEP), 2);
    assert_eq!(files.status()["members"].as_array().map(Vec::len), Some(2));

    // A broken policy: the reload is refused, and still ends in READY=1.
    files.set_policy("[routing\nthis is not TOML");
    signal(daemon.pid(), "HUP");
    let second = assert_reloading(&notes.next_step(STEP));
    assert!(
        second > first,
        "MONOTONIC_USEC goes forward: {first}, then {second}"
    );
    assert_ready(&notes.next_step(STEP), 2);
    daemon.wait_logs("reload refused", 1);
    assert_eq!(files.status()["members"].as_array().map(Vec::len), Some(2));
    send_tagged(ip("127.93.0.3"), smtp, "after-refused-reload");
    assert_eq!(m1.messages().len() + m2.messages().len(), 1);

    // SIGTERM: STOPPING=1, then a clean exit.
    signal(daemon.pid(), "TERM");
    let stopping = notes.next_step(STEP);
    assert!(
        has_line(&stopping, "STOPPING=1"),
        "expected STOPPING=1: {stopping:?}"
    );
    let status = daemon.wait_exit();
    assert!(status.success(), "exit status {status}");
    while notes.recv(Duration::from_millis(100)).is_some() {}
    assert!(
        !notes.seen.iter().any(|t| has_line(t, "WATCHDOG=1")),
        "no watchdog pings for a WATCHDOG_PID that is not the daemon's: {:#?}",
        notes.seen
    );
}

#[test]
fn the_watchdog_is_pinged_at_half_its_interval() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let smtp = addr_on("127.93.0.11");
    let files = Files::write(&smtp_on(smtp), &policy("", &[member("m1", fake.addr, "")]));
    let mut notes = Notifications::bind();
    // WATCHDOG_PID must be the daemon's pid, known only once it runs: a
    // shell exports its own pid, then becomes the daemon (exec keeps it).
    let mut command = Command::new("sh");
    command
        .args(["-c", "export WATCHDOG_PID=$$; exec \"$0\" serve -c \"$1\""])
        .arg(mxgate())
        .arg(&files.config)
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &notes.path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    let mut daemon = Process::spawn(&mut command);

    await_ready(&mut notes, &daemon);
    // Every 100 ms: three pings well within 5 s.
    let started = Instant::now();
    let pings = notes.count_lines("WATCHDOG=1", 3, Duration::from_secs(5));
    assert_eq!(pings, 3, "received: {:#?}", notes.seen);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "three pings 100 ms apart took {:?}",
        started.elapsed()
    );
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status}");
}

/// `systemd-socket-activate -l ADDR... --fdname=NAMES mxgate serve -c
/// CONFIG`, the daemon notifying on `notify` (the activator passes on only
/// the variables given with `-E`).
fn activated(files: &Files, sockets: &[SocketAddr], names: &str, notify: &Path) -> Process {
    let mut command = Command::new("systemd-socket-activate");
    for addr in sockets {
        command.arg("-l").arg(addr.to_string());
    }
    command
        .arg(format!("--fdname={names}"))
        .args(["-E", "RUST_LOG=info", "-E"])
        .arg(format!("NOTIFY_SOCKET={}", notify.display()))
        .args([mxgate(), "serve", "-c"])
        .arg(&files.config);
    Process::spawn(&mut command)
}

/// Waits for `READY=1` (the daemon handles SIGTERM from then on).
#[track_caller]
fn await_ready(notes: &mut Notifications, daemon: &Process) {
    let ready = notes
        .recv(START)
        .unwrap_or_else(|| panic!("no READY=1:\n{}", daemon.logs().join("\n")));
    assert_ready(&ready, 1);
}

/// Connects to `addr` once something listens there (bounded: the
/// activator binds just after it starts; the daemon starts on this
/// connection, which waits in the backlog) and reads the greeting.
#[track_caller]
fn first_greeting(addr: SocketAddr, daemon: &Process) -> String {
    let mut stream = None;
    eventually(STEP, || {
        stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok();
        stream.is_some()
    });
    let mut stream = stream.unwrap_or_else(|| panic!("nothing listens on {addr}"));
    stream.set_read_timeout(Some(START)).expect("timeout");
    let mut line = String::new();
    let _ = BufReader::new(&stream).read_line(&mut line);
    let _ = stream.write_all(b"QUIT\r\n");
    assert!(
        line.starts_with("220 "),
        "greeting {line:?}; log:\n{}",
        daemon.logs().join("\n")
    );
    line
}

#[test]
fn socket_activation_serves_smtp_on_the_inherited_socket() {
    if !require("systemd-socket-activate") {
        return;
    }
    let fake = FakeMta::start("m1", Behavior::Normal);
    let smtp = addr_on("127.93.1.1");
    let files = Files::write(&smtp_on(smtp), &policy("", &[member("m1", fake.addr, "")]));
    let mut notes = Notifications::bind();
    let mut daemon = activated(&files, &[smtp], "smtp", &notes.path);

    first_greeting(smtp, &daemon);
    await_ready(&mut notes, &daemon);
    send_tagged(ip("127.93.1.2"), smtp, "activated");
    let tags: Vec<_> = fake.messages().iter().map(|m| tag_of(&m.data)).collect();
    assert_eq!(tags, [Some("activated".to_owned())]);
    let inherited = daemon.wait_logs("using an inherited listening socket", 1);
    assert!(
        inherited[0].contains(&smtp.to_string()) && inherited[0].contains("socket activation"),
        "{inherited:?}"
    );
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn socket_activation_passes_smtp_and_metrics_sockets() {
    if !require("systemd-socket-activate") {
        return;
    }
    let fake = FakeMta::start("m1", Behavior::Normal);
    let (smtp, metrics) = (addr_on("127.93.2.1"), addr_on("127.93.2.2"));
    let node = with_metrics(&smtp_on(smtp), metrics);
    let files = Files::write(&node, &policy("", &[member("m1", fake.addr, "")]));
    let mut notes = Notifications::bind();
    let mut daemon = activated(&files, &[smtp, metrics], "smtp:metrics", &notes.path);

    first_greeting(smtp, &daemon);
    await_ready(&mut notes, &daemon);
    let body = http_get_text(metrics, "/metrics");
    assert!(body.contains("mxgate_"), "metrics page: {body}");
    let inherited = daemon.wait_logs("using an inherited listening socket", 2);
    for addr in [smtp, metrics] {
        assert!(
            inherited.iter().any(|l| l.contains(&addr.to_string())),
            "{addr} should be inherited: {inherited:#?}"
        );
    }
    assert!(
        !daemon
            .logs()
            .iter()
            .any(|l| l.contains("matches no listener")),
        "{:#?}",
        daemon.logs()
    );
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn signals_sent_as_soon_as_ready_is_heard_are_handled() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let smtp = addr_on("127.93.0.21");
    let files = Files::write(&smtp_on(smtp), &policy("", &[member("m1", fake.addr, "")]));
    let mut notes = Notifications::bind();
    let mut daemon = serve_notifying(&files, &notes.path, &[]);
    // `systemctl reload` or `stop` may come the moment systemd hears
    // READY=1: neither may kill the daemon (the default action) or be lost.
    await_ready(&mut notes, &daemon);
    signal(daemon.pid(), "HUP");
    assert_reloading(&notes.next_step(STEP));
    assert_ready(&notes.next_step(STEP), 1);
    signal(daemon.pid(), "TERM");
    let stopping = notes.next_step(STEP);
    assert!(has_line(&stopping, "STOPPING=1"), "{stopping:?}");
    let status = daemon.wait_exit();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn after_an_upgrade_the_new_process_says_mainpid_and_ready() {
    let fake = FakeMta::start("m1", Behavior::Normal);
    let smtp = addr_on("127.93.0.31");
    let files = Files::write(&smtp_on(smtp), &policy("", &[member("m1", fake.addr, "")]));
    let mut notes = Notifications::bind();
    let mut daemon = serve_notifying(&files, &notes.path, &[]);
    await_ready(&mut notes, &daemon);
    let upgraded = Command::new(mxgate())
        .args(["upgrade", "-c"])
        .arg(&files.config)
        .output()
        .expect("run mxgate upgrade");
    assert!(
        upgraded.status.success(),
        "{}",
        String::from_utf8_lossy(&upgraded.stderr)
    );
    let new = files.status()["pid"].as_u64().expect("pid");
    // The successor is not the test's child: stopped here on every path.
    let _successor = Orphan(u32::try_from(new).expect("pid"));
    assert_ne!(new, u64::from(daemon.pid()));
    // The new process tells systemd that it is the main process now; the
    // old one says nothing more (no STOPPING=1: the service goes on).
    let ready = notes.next_step(STEP);
    assert_eq!(
        value(&ready, "MAINPID"),
        Some(new.to_string().as_str()),
        "{ready:?}"
    );
    assert!(has_line(&ready, "READY=1"), "{ready:?}");
    let status = daemon.wait_exit();
    assert!(status.success(), "the old process exits 0: {status}");
    while notes.recv(Duration::from_millis(100)).is_some() {}
    assert!(
        !notes.seen.iter().any(|t| has_line(t, "STOPPING=1")),
        "{:#?}",
        notes.seen
    );
    send_tagged(ip("127.93.0.32"), smtp, "after-upgrade");
    assert_eq!(fake.messages().len(), 1);
}
