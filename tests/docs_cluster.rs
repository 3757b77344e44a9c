//! `docs/cluster.md` as a test: its walk-through is run as written, so the
//! chapter cannot drift from what mxgate does.
//!
//! The rules the test reads the chapter by (stated in its "Convention"):
//!
//! * A ```` ```toml ```` block whose first line is `# PATH` is the file PATH
//!   of the walk-through directory; nodes without a block of their own
//!   (`gw2`, `gw3`, `fe1`) get gw1's with their name and address (and `fe1`
//!   without `[local]`), as the chapter says.
//! * Every line of a ```` ```console ```` block that starts with a prompt
//!   `NODE# ` is a command, run in that directory with `sh` (and `mxgate`
//!   the binary cargo built); the lines under it, up to the next prompt, are
//!   its output (stdout and stderr). `NODE# mxgate serve -c NODE/mxgate.toml &`
//!   starts NODE's daemon (the test waits until it answers) and
//!   `NODE# kill -9 ...` kills it.
//! * Blocks with another info string are not run.
//!
//! Outputs are compared line by line with runs of blanks collapsed and what
//! legitimately differs between runs masked (`mask.rs`): ids, UUIDs, device
//! ids, times, durations, ephemeral ports, log positions and epochs (the
//! engine's own entries and the elections' terms depend on timing), and
//! which backend refused a removed node first. A command that only reads (`status`, `show`, ...)
//! is repeated until its output matches, within a bound (state settles
//! after a change); one that changes something runs once.
//!
//! `MXGATE_DOC_BLESS=1 cargo test --release --test docs_cluster` writes the
//! outputs of a run into the chapter instead of comparing (then read the
//! diff before committing it).

mod common;
#[path = "docs_cluster/mask.rs"]
mod mask;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a reading command may take to show what the chapter shows.
const SETTLE: Duration = Duration::from_secs(20);
/// The bound on any one command.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// Nodes of the walk-through and their addresses.
const NODES: [(&str, &str); 4] = [
    ("gw1", "127.70.0.1"),
    ("gw2", "127.70.0.2"),
    ("gw3", "127.70.0.3"),
    ("fe1", "127.70.0.4"),
];
/// Port of each node's MTA (`[local] smtp_upstream`), answered by [`Mta`].
const MTA_PORT: u16 = 10025;

fn chapter_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cluster.md")
}

#[test]
fn cluster_chapter_walkthrough_runs_as_written() {
    let started = Instant::now();
    let text = std::fs::read_to_string(chapter_path()).expect("read docs/cluster.md");
    let chapter = parse(&text);
    assert!(
        chapter.steps.len() >= 40,
        "docs/cluster.md: only {} commands found in ```console blocks",
        chapter.steps.len()
    );
    let bless = std::env::var("MXGATE_DOC_BLESS").is_ok_and(|v| v == "1");
    let mut walk = Walk::new(&chapter.files);
    let mut outputs = Vec::new();
    for step in &chapter.steps {
        let out = walk.run(step, bless);
        outputs.push(out);
    }
    if bless {
        std::fs::write(chapter_path(), bless_text(&text, &chapter.steps, &outputs))
            .expect("write docs/cluster.md");
        eprintln!("docs/cluster.md rewritten with this run's outputs");
    }
    eprintln!(
        "{} commands of docs/cluster.md ran as written in {:.1} s",
        chapter.steps.len(),
        started.elapsed().as_secs_f64()
    );
}

/// One command of the chapter.
#[derive(Debug, Clone)]
struct Step {
    /// 1-based line of the command in docs/cluster.md.
    line: usize,
    node: String,
    command: String,
    /// The output lines the chapter shows (lines `line+1 ..= line+len`).
    expected: Vec<String>,
}

struct Chapter {
    files: BTreeMap<String, String>,
    steps: Vec<Step>,
}

/// The files and commands of the chapter.
fn parse(text: &str) -> Chapter {
    let lines: Vec<&str> = text.lines().collect();
    let mut files = BTreeMap::new();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let indent = lines[i].len() - lines[i].trim_start().len();
        let start = i + 1;
        let mut end = start;
        while end < lines.len() && lines[end].trim() != "```" {
            end += 1;
        }
        let body: Vec<&str> = lines[start..end]
            .iter()
            .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
            .collect();
        match info.trim() {
            "toml" => {
                if let Some(path) = body.first().and_then(|l| l.strip_prefix("# "))
                    && !path.contains(' ')
                {
                    files.insert(path.to_owned(), format!("{}\n", body.join("\n")));
                }
            }
            "console" => steps.extend(commands(start, &body)),
            _ => {}
        }
        i = end + 1;
    }
    Chapter { files, steps }
}

/// The prompt of a command line: (node, command).
fn prompt(line: &str) -> Option<(&str, &str)> {
    let (node, rest) = line.split_once("# ")?;
    let ok = !node.is_empty()
        && node.chars().all(|c| c.is_ascii_alphanumeric())
        && node.starts_with(|c: char| c.is_ascii_lowercase());
    ok.then_some((node, rest))
}

/// The commands of one console block whose first line is line `start` (0-based).
fn commands(start: usize, body: &[&str]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (k, line) in body.iter().enumerate() {
        match (prompt(line), steps.last_mut()) {
            (Some((node, command)), _) => steps.push(Step {
                line: start + k + 1,
                node: node.to_owned(),
                command: command.to_owned(),
                expected: Vec::new(),
            }),
            (None, Some(step)) => step.expected.push((*line).to_owned()),
            (None, None) => panic!(
                "docs/cluster.md:{}: a console block must start with a prompt `NODE# `",
                start + k + 1
            ),
        }
    }
    steps
}

/// The chapter's text with each command's output replaced by `outputs`
/// where it differs once masked (an output that only differs in ids and
/// times is kept, so a bless changes only what changed).
fn bless_text(text: &str, steps: &[Step], outputs: &[Vec<String>]) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut result: Vec<String> = Vec::new();
    let mut next = 0; // next line of `lines` to copy (0-based)
    for (step, out) in steps.iter().zip(outputs) {
        let command = step.line - 1;
        let indent = lines[command].len() - lines[command].trim_start().len();
        let shown = command + 1 + step.expected.len();
        if mask::same(out, &step.expected, Path::new("/")) {
            result.extend(lines[next..shown].iter().map(|l| (*l).to_owned()));
        } else {
            result.extend(lines[next..=command].iter().map(|l| (*l).to_owned()));
            result.extend(out.iter().map(|l| format!("{}{l}", " ".repeat(indent))));
        }
        next = shown;
    }
    result.extend(lines[next..].iter().map(|l| (*l).to_owned()));
    format!("{}\n", result.join("\n"))
}

/// The walk-through directory, its daemons and MTAs.
struct Walk {
    dir: tempfile::TempDir,
    bin_dir: PathBuf,
    daemons: BTreeMap<String, Child>,
    _mtas: Vec<Mta>,
}

impl Drop for Walk {
    fn drop(&mut self) {
        for child in self.daemons.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Walk {
    /// The directory with the chapter's files, one MTA per backend.
    fn new(files: &BTreeMap<String, String>) -> Walk {
        let dir = common::shared_tempdir();
        let template = files
            .get("gw1/mxgate.toml")
            .expect("docs/cluster.md has no ```toml block starting `# gw1/mxgate.toml`");
        let policy = files
            .get("gw1/cluster.toml")
            .expect("docs/cluster.md has no ```toml block starting `# gw1/cluster.toml`");
        let mut all = files.clone();
        for (name, ip) in NODES {
            let n = &ip[ip.len() - 1..];
            let config = template
                .replace("gw1", name)
                .replace("mx1.", &format!("mx{n}."))
                .replace("127.70.0.1", ip);
            let config = if name.starts_with("fe") {
                without_table(&config, "[local]")
            } else {
                config
            };
            all.entry(format!("{name}/mxgate.toml")).or_insert(config);
            all.entry(format!("{name}/cluster.toml"))
                .or_insert_with(|| policy.replace("gw1", name));
        }
        for (path, text) in &all {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, text).expect("write file");
        }
        let mtas = NODES
            .iter()
            .filter(|(name, _)| name.starts_with("gw"))
            .map(|(_, ip)| Mta::start(ip))
            .collect();
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_mxgate"))
            .parent()
            .expect("bin dir")
            .to_path_buf();
        Walk {
            dir,
            bin_dir,
            daemons: BTreeMap::new(),
            _mtas: mtas,
        }
    }

    /// Runs `step`; returns its output as it printed it. Unless `bless`,
    /// panics when it differs from the chapter's.
    fn run(&mut self, step: &Step, bless: bool) -> Vec<String> {
        let cmd = step.command.trim();
        if let Some(args) = cmd
            .strip_prefix("mxgate serve -c ")
            .and_then(|c| c.strip_suffix(" &"))
        {
            self.serve(step, args.trim());
            return step.expected.clone();
        }
        if let Some(rest) = cmd.strip_prefix("kill ") {
            self.kill(&step.node, rest.starts_with("-9 "));
            return step.expected.clone();
        }
        let deadline = Instant::now()
            + if reads_only(cmd) {
                SETTLE
            } else {
                Duration::ZERO
            };
        let mut settled = (Vec::new(), 0);
        loop {
            let out = self.shell(cmd);
            if mask::same(&out, &step.expected, self.dir.path()) {
                return out;
            }
            if bless && step.expected.is_empty() {
                // Blessing: a reading command's output once it stayed the same for 2 s.
                let now = mask::masked(&out, self.dir.path());
                settled = if now == settled.0 {
                    (now, settled.1 + 1)
                } else {
                    (now, 0)
                };
                if settled.1 >= 10 || Instant::now() >= deadline {
                    return out;
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            if Instant::now() >= deadline {
                if bless {
                    return out;
                }
                panic!(
                    "docs/cluster.md:{}: `{}# {cmd}` printed something else.\n\
                     --- the chapter shows\n{}\n--- this run printed\n{}\n--- (masked: chapter / run)\n{}\n{}\n{}",
                    step.line,
                    step.node,
                    step.expected.join("\n"),
                    out.join("\n"),
                    mask::masked(&step.expected, self.dir.path()).join("\n"),
                    mask::masked(&out, self.dir.path()).join("\n"),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `sh -c CMD` in the directory: its stdout and stderr, in order.
    fn shell(&self, cmd: &str) -> Vec<String> {
        let path = format!(
            "{}:{}",
            self.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let (out, killed) = common::run_bounded(
            Command::new("sh")
                .arg("-c")
                .arg(format!("exec 2>&1\n{cmd}"))
                .current_dir(self.dir.path())
                .env("PATH", path),
            COMMAND_LIMIT,
        );
        assert!(!killed, "`{cmd}` did not finish within {COMMAND_LIMIT:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let text = text.replace(&self.dir.path().display().to_string(), "/srv/walk");
        text.lines().map(str::to_owned).collect()
    }

    /// Starts the daemon of `step.node` with `args` (`CONFIG`, then
    /// `2>LOG` or `2>>LOG`); waits until it answers.
    fn serve(&mut self, step: &Step, args: &str) {
        let (config, log) = match args.split_once(" 2>") {
            Some((config, log)) => (config.trim(), log.trim()),
            None => panic!(
                "docs/cluster.md:{}: `mxgate serve -c CONFIG 2>LOG &` is what this test runs",
                step.line
            ),
        };
        let (append, log) = match log.strip_prefix('>') {
            Some(log) => (true, log.trim()),
            None => (false, log),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(self.dir.path().join(log))
            .expect("log file");
        let child = Command::new(self.bin_dir.join("mxgate"))
            .args(["serve", "-c", config])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mxgate serve");
        if let Some(mut old) = self.daemons.insert(step.node.clone(), child) {
            let _ = old.kill();
            let _ = old.wait();
        }
        let ready = common::eventually(SETTLE, || {
            Command::new(self.bin_dir.join("mxgate"))
                .args(["status", "-c", config])
                .current_dir(self.dir.path())
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(
            ready,
            "docs/cluster.md:{}: the daemon of {} did not answer within {SETTLE:?}\n{}",
            step.line,
            step.node,
            self.logs()
        );
    }

    /// Stops the daemon of `node` (SIGKILL when `hard`, else SIGTERM) and
    /// waits until it is gone.
    fn kill(&mut self, node: &str, hard: bool) {
        let child = self
            .daemons
            .get_mut(node)
            .unwrap_or_else(|| panic!("no daemon of {node} runs"));
        if hard {
            let _ = child.kill();
        } else {
            common::signal(child.id(), "TERM");
        }
        let (pid, deadline) = (child.id(), Instant::now() + SETTLE);
        while child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "{node} ({pid}) did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of every daemon's log.
    fn logs(&self) -> String {
        let mut all = String::new();
        for node in self.daemons.keys() {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{node}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            all.push_str(&format!(
                "--- {node}'s log (last lines)\n{}\n",
                tail.join("\n")
            ));
        }
        all
    }
}

/// Whether `cmd` only reads (then it may be repeated until the state settles).
fn reads_only(cmd: &str) -> bool {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let changes = [
        "create",
        "join",
        "export",
        "apply",
        "set",
        "delete",
        "leave",
        "promote",
        "protect",
        "rotate",
        "add-backend",
        "detach",
        ">",
    ];
    !words.iter().any(|w| changes.contains(w))
}

/// A minimal MTA on `IP:10025` for the members' health checks: greets,
/// answers every command `250` (QUIT `221`) and closes.
struct Mta {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Mta {
    fn start(ip: &str) -> Mta {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind((ip, MTA_PORT)).unwrap_or_else(|e| {
            panic!("cannot listen on {ip}:{MTA_PORT} (is another run of this test going on?): {e}")
        });
        let addr = listener.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = conn.write_all(b"220 mta ESMTP\r\n");
                    let reader = BufReader::new(conn.try_clone().expect("clone"));
                    for line in reader.lines().take(100) {
                        let Ok(line) = line else { break };
                        if line.to_ascii_uppercase().starts_with("QUIT") {
                            let _ = conn.write_all(b"221 bye\r\n");
                            break;
                        }
                        let _ = conn.write_all(b"250 ok\r\n");
                    }
                });
            }
        });
        Mta { stop, addr }
    }
}

impl Drop for Mta {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Drops the table `header` (up to the next table) from a TOML text.
fn without_table(text: &str, header: &str) -> String {
    let mut skip = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            skip = line.starts_with(header);
        }
        if !skip {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
