//! Test harness: the real `mxgate` binary as a child process, scriptable fake
//! MTAs for failure injection, a blocking SMTP client that can connect from any
//! 127.x address, and wrappers for real third-party peers (Postfix `smtp-sink`,
//! a throwaway Postfix instance). Everything listens on 127.0.0.0/8 only.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod cluster;
pub mod dnsmasq;
// fake_mta.rs is owned elsewhere; its `.max(0)` on a usize trips clippy.
#[allow(clippy::unnecessary_min_or_max)]
pub mod fake_mta;
pub mod logs;
pub mod metrics;
pub mod netns;
pub mod peers;
pub mod web;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub use client::Client;
pub use fake_mta::{Behavior, FakeMta};

/// Whether a tool is installed. Missing under `CI=true` is a failure;
/// elsewhere the test prints why it skips.
pub fn require(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is required under CI but missing (.ci/run installs it)"
        );
        eprintln!("SKIP: {tool} is not installed (apt-get install it, or run .ci/run)");
    }
    found
}

/// True when running as root (Postfix instances and smtp-sink -u need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A port that was free on `ip` a moment ago.
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
}

/// A temporary directory that the `postfix` and `nobody` users can use too.
pub fn shared_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("mxgate-test-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Parses an IP address literal (tests only).
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// The default listener plus extra `[[smtp]]` keys.
pub fn listener(extra: &str) -> String {
    format!("{}{extra}\n", default_listener())
}

/// A policy with one member `m1` pointing at `fake`.
pub fn one_member(fake: &FakeMta) -> String {
    policy("", &[member("m1", fake.addr, "")])
}

/// Well-behaved fake MTAs, one for each name.
pub fn fakes(names: &[&str]) -> Vec<FakeMta> {
    names
        .iter()
        .map(|n| FakeMta::start(n, Behavior::Normal))
        .collect()
}

/// The `[[smtp]]` listener most tests use.
pub fn default_listener() -> String {
    "[[smtp]]\nname = \"inbound\"\nlisten = \"127.0.0.1:0\"\nhostname = \"mx.test\"\n".to_owned()
}

/// A running `mxgate serve` child process.
pub struct Mxgate {
    child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    logs: Arc<(Mutex<Vec<String>>, Condvar)>,
    listeners: Vec<(String, SocketAddr)>,
    /// A command the daemon runs under (e.g. `ip netns exec NS`); empty: none.
    wrap: Vec<String>,
    /// The mxgate binary run (default: the one cargo built).
    binary: PathBuf,
}

impl Mxgate {
    /// Starts mxgate with the default listener and `policy` as cluster.toml.
    pub fn start(policy: &str) -> Mxgate {
        Self::start_with(&default_listener(), policy)
    }

    /// Starts mxgate with `node` (everything in mxgate.toml after `[node]`) and `policy`.
    pub fn start_with(node: &str, policy: &str) -> Mxgate {
        Self::start_full("", node, policy)
    }

    /// Like [`Mxgate::start_with`], with extra `[node]` keys (e.g. `drain_timeout`).
    pub fn start_full(node_keys: &str, node: &str, policy: &str) -> Mxgate {
        Self::start_named("test", node_keys, node, policy)
    }

    /// Like [`Mxgate::start_full`] with `[node] name = NAME` (cluster tests
    /// run several nodes, each with its own name).
    pub fn start_named(name: &str, node_keys: &str, node: &str, policy: &str) -> Mxgate {
        Self::start_wrapped(&[], name, node_keys, node, policy)
    }

    /// Like [`Mxgate::start_named`], with the daemon run under `wrap` (a
    /// command that execs the rest of its arguments in place, e.g.
    /// `ip netns exec NS`, so that the child's pid is the daemon's).
    /// Restarts use it too; the CLI runs unwrapped (the admin socket is a
    /// file, reachable from any network namespace).
    pub fn start_wrapped(
        wrap: &[&str],
        name: &str,
        node_keys: &str,
        node: &str,
        policy: &str,
    ) -> Mxgate {
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_mxgate"));
        Self::start_binary(&binary, wrap, (name, node_keys, node), policy)
    }

    /// Like [`Mxgate::start_wrapped`] with another mxgate `binary` (e.g. a
    /// copy that a test then replaces).
    pub fn start_binary(
        binary: &Path,
        wrap: &[&str],
        (name, node_keys, node): (&str, &str, &str),
        policy: &str,
    ) -> Mxgate {
        let dir = shared_tempdir();
        let config = dir.path().join("mxgate.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\nname = \"{name}\"\ndata_dir = \"data\"\npolicy = \"cluster.toml\"\n{node_keys}\n\n{node}"
            ),
        )
        .expect("write mxgate.toml");
        let policy = without_client_names(policy);
        std::fs::write(dir.path().join("cluster.toml"), policy).expect("write cluster.toml");
        let wrap: Vec<String> = wrap.iter().map(|s| s.to_string()).collect();
        let (child, logs) = spawn_serve(binary, &config, &wrap);
        let mut gw = Mxgate {
            child,
            dir,
            config,
            logs,
            listeners: Vec::new(),
            wrap,
            binary: binary.to_path_buf(),
        };
        gw.await_ready();
        gw
    }

    /// Starts the daemon again in the same directory after it exited
    /// (SIGTERM and [`Mxgate::wait_exit`] first). Log lines start afresh.
    pub fn restart(&mut self) {
        let (child, logs) = spawn_serve(&self.binary, &self.config, &self.wrap);
        self.child = child;
        self.logs = logs;
        self.await_ready();
    }

    fn await_ready(&mut self) {
        if self.wait_log("ready", Duration::from_secs(20)).is_none() {
            let logs = self.logs().join("\n");
            panic!("mxgate did not become ready:\n{logs}");
        }
        let status = self.status();
        self.listeners = status["listeners"]
            .as_array()
            .expect("listeners")
            .iter()
            .map(|l| {
                let name = l["name"].as_str().expect("name").to_owned();
                let addr = l["listen"].as_str().expect("listen").parse().expect("addr");
                (name, addr)
            })
            .collect();
    }
}

/// Logs of a child, collected by a thread.
pub type Logs = Arc<(Mutex<Vec<String>>, Condvar)>;

/// Spawns `[WRAP...] mxgate serve -c CONFIG` with its stderr collected.
fn spawn_serve(binary: &Path, config: &Path, wrap: &[String]) -> (Child, Logs) {
    let mut command = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let mut child = command
        .args(["serve", "-c"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mxgate");
    let logs = collect_stderr(&mut child);
    (child, logs)
}

/// Collects the lines `child` writes to its (piped) stderr, by a thread;
/// echoed when `MXGATE_TEST_LOG` is set.
pub fn collect_stderr(child: &mut Child) -> Logs {
    let logs: Logs = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
    let stderr = child.stderr.take().expect("stderr");
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if std::env::var_os("MXGATE_TEST_LOG").is_some() {
                eprintln!("mxgate| {line}");
            }
            let (lines, cv) = &*sink;
            lines.lock().expect("log lock").push(line);
            cv.notify_all();
        }
    });
    logs
}

/// Starts `mxgate ARGS` for a test that reads what it prints (the demos):
/// `RUST_LOG` unset, so the command logs at its own level; stderr collected
/// ([`collect_stderr`]); each stdout line sent on the receiver by a thread.
pub fn spawn_streaming(args: &[&str]) -> (Child, Logs, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mxgate"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mxgate");
    let logs = collect_stderr(&mut child);
    let out = child.stdout.take().expect("stdout is piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, logs, lines)
}

/// Moves lines from `lines` into `printed` until one contains `needle`,
/// for at most `limit`; true if one did.
pub fn read_until(
    lines: &std::sync::mpsc::Receiver<String>,
    printed: &mut Vec<String>,
    needle: &str,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                printed.push(line);
                if found {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
}

/// A process that is not the test's child (the successor of `mxgate
/// upgrade`, which the daemon started): ended with SIGTERM, then SIGKILL,
/// when dropped, so it is not left behind on any exit path.
pub struct Orphan(pub u32);

impl Orphan {
    /// True while it runs (a zombie has ended).
    pub fn is_alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.0))
            .ok()
            .and_then(|stat| {
                let state = stat.rsplit(')').next()?.split_whitespace().next()?;
                Some(state != "Z")
            })
            .unwrap_or(false)
    }
}

impl Drop for Orphan {
    fn drop(&mut self) {
        signal(self.0, "TERM");
        if !eventually(Duration::from_secs(10), || !self.is_alive()) {
            signal(self.0, "KILL");
        }
    }
}

impl Mxgate {
    /// Address of the first SMTP listener.
    pub fn smtp_addr(&self) -> SocketAddr {
        self.listeners[0].1
    }

    /// Address of the SMTP listener called `name`.
    pub fn smtp_addr_of(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .expect("listener")
    }

    /// Address of the listener called `name` (SMTP or HTTP).
    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        self.smtp_addr_of(name)
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.0.lock().expect("log lock").clone()
    }

    /// Waits until a log line contains `needle`; returns it.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> Option<String> {
        self.wait_logs(needle, 1, limit).and_then(|mut v| v.pop())
    }

    /// Waits until `count` log lines contain `needle`.
    pub fn wait_logs(&self, needle: &str, count: usize, limit: Duration) -> Option<Vec<String>> {
        let deadline = Instant::now() + limit;
        let (lines, cv) = &*self.logs;
        let mut guard = lines.lock().expect("log lock");
        loop {
            let found: Vec<String> = guard
                .iter()
                .filter(|l| l.contains(needle))
                .cloned()
                .collect();
            if found.len() >= count {
                return Some(found);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = cv.wait_timeout(guard, deadline - now).expect("log wait").0;
        }
    }

    /// Runs the mxgate CLI against this daemon's configuration.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mxgate"))
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .output()
            .expect("run mxgate cli")
    }

    /// `mxgate status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    /// `mxgate route explain --client IP --json`.
    pub fn explain(&self, client: IpAddr) -> serde_json::Value {
        self.explain_to(client, None)
    }

    /// `mxgate route explain --client IP [--dest IP] --json`.
    pub fn explain_to(&self, client: IpAddr, dest: Option<IpAddr>) -> serde_json::Value {
        let client = client.to_string();
        let dest = dest.map(|d| d.to_string());
        let mut args = vec!["route", "explain", "--client", client.as_str(), "--json"];
        if let Some(dest) = &dest {
            args.extend(["--dest", dest.as_str()]);
        }
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "explain failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("explain json")
    }

    /// First choice for `client` per `route explain`.
    pub fn first_choice(&self, client: IpAddr) -> Option<String> {
        self.explain(client)["order"][0]["member"]
            .as_str()
            .map(str::to_owned)
    }

    /// Replaces cluster.toml and sends SIGHUP.
    pub fn reload_policy(&self, policy: &str) {
        let policy = without_client_names(policy);
        std::fs::write(self.dir.path().join("cluster.toml"), policy).expect("write cluster.toml");
        let before = self.logs().iter().filter(|l| l.contains("reload")).count();
        signal(self.child.id(), "HUP");
        assert!(
            self.wait_logs("reload", before + 1, Duration::from_secs(10))
                .is_some(),
            "no reload logged"
        );
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (drain).
    pub fn terminate(&self) {
        signal(self.child.id(), "TERM");
    }

    /// Waits for the process to exit; `None` if it is still running after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The config file path.
    pub fn config_path(&self) -> &Path {
        &self.config
    }
}

impl Drop for Mxgate {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal to a process with kill(1).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
}

/// `[health]` with the active checks off, so that a member sees only the
/// connections sessions make (tests count them) and failures are judged by
/// the passive back-off alone. `tests/health.rs` covers the active checks.
pub const PASSIVE_HEALTH: &str = "[health]\nsmtp_check = \"none\"\ngina_check = \"none\"\n";

/// A policy with the given member sections and `[routing]` defaults
/// (active health checks off: [`PASSIVE_HEALTH`]).
pub fn policy(routing: &str, members: &[String]) -> String {
    policy_with(routing, &[], members)
}

/// Like [`policy`], with `[upstream]` keys (`(key, TOML value)`) that replace
/// its defaults (`backoff = "30s"`, `connect_timeout = "2s"`,
/// `greeting_timeout = "3s"`) or come after them.
pub fn policy_with(routing: &str, upstream: &[(&str, &str)], members: &[String]) -> String {
    let mut keys: Vec<(&str, String)> = vec![
        ("backoff", "\"30s\"".into()),
        ("connect_timeout", "\"2s\"".into()),
        ("greeting_timeout", "\"3s\"".into()),
    ];
    for (k, v) in upstream {
        match keys.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = (*v).to_owned(),
            None => keys.push((k, (*v).to_owned())),
        }
    }
    let upstream: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    format!(
        "[routing]\n{routing}\n\n[upstream]\n{upstream}\n{PASSIVE_HEALTH}\n{}",
        members.join("\n")
    )
}

/// One `[members.NAME]` section with an SMTP upstream and extra lines.
pub fn member(name: &str, smtp: SocketAddr, extra: &str) -> String {
    format!("[members.{name}]\nsmtp = \"{smtp}\"\n{extra}\n")
}

/// `policy` with `[dns] client_names = false` unless it sets `client_names`
/// itself: a test daemon must not ask the machine's resolvers (off
/// loopback) for its clients' names; `tests/client_name.rs` turns them on
/// with a dnsmasq on 127.x.
pub fn without_client_names(policy: &str) -> String {
    if policy.contains("client_names") {
        return policy.to_owned();
    }
    match policy.find("[dns]\n") {
        Some(at) => {
            let end = at + "[dns]\n".len();
            format!("{}client_names = false\n{}", &policy[..end], &policy[end..])
        }
        None => format!("{policy}\n[dns]\nclient_names = false\n"),
    }
}

/// Runs `cmd` with piped output, killing it when it runs longer than `limit`.
/// Returns its output and whether it had to be killed.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (Output, bool) {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            killed = true;
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    (
        Output {
            status,
            stdout,
            stderr,
        },
        killed,
    )
}

/// Polls `check` until it returns true or `limit` passes; returns the last result.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when running as root; otherwise prints why the test skips, and fails under `CI=true`.
pub fn require_root(why: &str) -> bool {
    let root = is_root();
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why} needs root under CI"
        );
        eprintln!("SKIP: {why} needs root (run the tests as root, or .ci/run)");
    }
    root
}

/// A message whose body names the client it came from (`X-Test-Client: TAG`),
/// so any member's copy can be attributed to its sender.
pub fn tagged_body(tag: &str) -> String {
    format!(
        "From: <s@source.test>\r\nTo: <r@example.com>\r\nSubject: test\r\nX-Test-Client: {tag}\r\n\r\nbody from {tag}"
    )
}

/// One session from `source` to `addr` ([`client::send_one`]) with a message
/// tagged `tag` ([`tagged_body`]); asserts that the message was accepted.
#[track_caller]
pub fn send_tagged(source: IpAddr, addr: SocketAddr, tag: &str) {
    let r = client::send_one(source, addr, &tagged_body(tag));
    assert!(r.ok(), "end of data from {source} to {addr} ({tag}): {r}");
}

/// The `X-Test-Client` tag of a message, if any.
pub fn tag_of(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .find_map(|l| l.strip_prefix("X-Test-Client: "))
        .map(|t| t.trim().to_owned())
}

/// The member names of a `route explain --json` order, first choice first.
pub fn order_of(explain: &serde_json::Value) -> Vec<String> {
    explain["order"]
        .as_array()
        .map(|order| {
            order
                .iter()
                .filter_map(|r| r["member"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The row of member `name` in the `members` of `status --json` or
/// `cluster status --json`, if it is listed.
pub fn try_member_row<'a>(
    status: &'a serde_json::Value,
    name: &str,
) -> Option<&'a serde_json::Value> {
    status["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

/// The row of member `name` in the `members` of `status --json` or
/// `cluster status --json`; panics (showing the status) when it is not
/// listed.
#[track_caller]
pub fn member_row<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    try_member_row(status, name).unwrap_or_else(|| panic!("no member {name} in {status:#}"))
}

/// Which fakes received the message tagged `tag` (see [`tagged_body`]).
pub fn receivers<'a>(fakes: impl IntoIterator<Item = &'a FakeMta>, tag: &str) -> Vec<String> {
    fakes
        .into_iter()
        .flat_map(|f| {
            f.messages()
                .into_iter()
                .filter(|m| tag_of(&m.data).as_deref() == Some(tag))
                .map(|_| f.name.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}
