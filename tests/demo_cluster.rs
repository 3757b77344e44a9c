//! `mxgate demo --cluster` as a newcomer runs it: the real binary forms a
//! cluster of three backends and a frontend on 127.71.0.1-4 (fixed
//! addresses; no other test uses 127.71.x), and every command its Try block
//! prints is then run as printed (`sh -c LINE`): `cluster status` on each
//! node, the `policy apply` and the frontend's `route explain` showing the
//! change, mail and the portal through the frontend, the `kill` of the
//! master and the election that follows. Ctrl-C (SIGINT) then stops every node, removes
//! the demo's directory and exits 0.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Logs, Orphan, eventually, ip, require, run_bounded, signal};

/// The demo must print its Try block within this (about 5 s here).
const FORMED_WITHIN: Duration = Duration::from_secs(45);
/// A surviving backend names a new master within this after the kill.
const ELECTED_WITHIN: Duration = Duration::from_secs(15);
/// The frontend's SMTP listener.
const FRONTEND: &str = "127.71.0.4:2525";

/// The demo process: stopped when dropped before it exited (a failed
/// assertion); nodes it left are then ended by their [`Orphan`] guards.
struct Demo {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Logs,
    printed: Vec<String>,
    /// Its nodes, once it printed them; dropped after the demo stopped.
    nodes: Vec<Orphan>,
}

impl Demo {
    fn start() -> Demo {
        let (child, stderr, stdout) = common::spawn_streaming(&["demo", "--cluster"]);
        Demo {
            child,
            stdout,
            stderr,
            printed: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// Reads stdout until a line contains `needle` (bounded); true if one did.
    fn read_until(&mut self, needle: &str, limit: Duration) -> bool {
        common::read_until(&self.stdout, &mut self.printed, needle, limit)
    }

    fn transcript(&self) -> String {
        let err = self.stderr.0.lock().expect("log lock").join("\n");
        format!("{}\n--- stderr:\n{err}", self.printed.join("\n"))
    }

    fn stderr_has(&self, needle: &str, limit: Duration) -> bool {
        eventually(limit, || {
            let lines = self.stderr.0.lock().expect("log lock");
            lines.iter().any(|l| l.contains(needle))
        })
    }
}

impl Drop for Demo {
    /// A failed test still lets the demo stop its nodes and remove its
    /// directory (SIGINT); SIGKILL when it does not exit within 20 s.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), "INT");
            let ended = eventually(Duration::from_secs(20), || {
                matches!(self.child.try_wait(), Ok(Some(_)))
            });
            if !ended {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// The commands of the Try block, as printed.
fn try_commands(printed: &[String]) -> Vec<String> {
    printed
        .iter()
        .skip_while(|l| !l.contains("Try, in another terminal"))
        .filter(|l| l.starts_with("  ") && !l.trim_start().starts_with('#'))
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The first printed command containing every one of `parts`.
#[track_caller]
fn command<'a>(commands: &'a [String], parts: &[&str]) -> &'a str {
    commands
        .iter()
        .find(|c| parts.iter().all(|p| c.contains(p)))
        .unwrap_or_else(|| panic!("no {parts:?} in {commands:#?}"))
}

/// Runs a printed line with `sh -c`; (success, stdout and stderr).
fn sh(line: &str) -> (bool, String) {
    let (out, killed) = run_bounded(
        Command::new("sh").args(["-c", line]),
        Duration::from_secs(30),
    );
    assert!(!killed, "`{line}` did not finish within 30 s");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `sh -c LINE`, which must succeed; its output.
#[track_caller]
fn sh_ok(line: &str) -> String {
    let (ok, text) = sh(line);
    assert!(ok, "`{line}` failed:\n{text}");
    text
}

/// The master a `cluster status` text names on its first line.
fn master_of(status: &str) -> Option<String> {
    let first = status.lines().next()?;
    let name = first.split(", master ").nth(1)?;
    Some(name.trim().to_owned())
}

/// The pid the demo printed for node `name` (`  gw1 (pid 123): ...`).
fn pid_of(printed: &[String], name: &str) -> u32 {
    let prefix = format!("  {name} (pid ");
    printed
        .iter()
        .find_map(|l| l.strip_prefix(&prefix)?.split(')').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no pid of {name} in {printed:#?}"))
}

#[test]
fn the_cluster_demo_forms_a_cluster_and_every_printed_command_works() {
    let started = Instant::now();
    let mut demo = Demo::start();
    let formed = demo.read_until("Ctrl-C stops all four nodes", FORMED_WITHIN);
    assert!(formed, "no Try block:\n{}", demo.transcript());
    eprintln!("Try block after {:.1} s", started.elapsed().as_secs_f64());
    let printed = demo.printed.clone();
    demo.nodes = ["gw1", "gw2", "gw3", "fe1"]
        .iter()
        .map(|n| Orphan(pid_of(&printed, n)))
        .collect();
    let dir = PathBuf::from(
        printed[0]
            .rsplit(" in ")
            .next()
            .expect("the first line names the directory"),
    );
    assert!(dir.join("gw1/mxgate.toml").exists(), "{}", dir.display());
    let commands = try_commands(&printed);

    // The real commands formed it: each printed with its output.
    let text = printed.join("\n");
    for shown in [
        "gw1$ ",
        "cluster create",
        "created; gw1 is its master",
        "cluster identifier export",
        "joined cluster",
        "as a frontend",
        "fe1 F(1,2,3) now follows",
    ] {
        assert!(text.contains(shown), "{shown} not shown:\n{text}");
    }

    // `cluster status` on each node: gw1 master, every member listed.
    for node in ["gw1", "gw2", "gw3", "fe1"] {
        let line = command(&commands, &["cluster status", &format!("/{node}/")]);
        let status = sh_ok(line);
        assert_eq!(master_of(&status).as_deref(), Some("gw1"), "{status}");
        for row in ["gw1(1)", "gw2(2)", "gw3(3)", "fe1(F(1,2,3))"] {
            assert!(status.contains(row), "{node}: no {row}:\n{status}");
        }
    }

    // The policy apply on gw2 takes the client's first choice out of
    // ingress; the frontend's route explain shows it.
    let explain = command(&commands, &["route explain", "/fe1/"]);
    let before = sh_ok(explain);
    let first = before
        .lines()
        .find_map(|l| l.trim().strip_prefix("verdict:  first choice "))
        .unwrap_or_else(|| panic!("no first choice:\n{before}"))
        .trim()
        .to_owned();
    let applied = sh_ok(command(&commands, &["policy apply", "/gw2/"]));
    assert!(applied.contains("applied and replicated"), "{applied}");
    let mut after = String::new();
    let changed = eventually(Duration::from_secs(10), || {
        after = sh_ok(explain);
        after.contains(&format!("{first}  not ingress"))
            && !after.contains(&format!("choice {first}"))
    });
    assert!(changed, "route before:\n{before}\nafter:\n{after}");

    // Mail through the frontend reaches a sink (swaks as printed).
    let swaks = command(&commands, &["swaks", FRONTEND]);
    if require("swaks") {
        sh_ok(swaks);
    } else {
        let body = "From: <alice@example.org>\r\nSubject: demo\r\n\r\nhello";
        let reply =
            common::client::send_one(ip("127.0.0.1"), FRONTEND.parse().expect("addr"), body);
        assert!(reply.ok(), "{reply}");
    }
    assert!(
        demo.stderr_has("sink accepted a message", Duration::from_secs(10)),
        "no sink took the message:\n{}",
        demo.transcript()
    );

    // The portal through the frontend (curl as printed).
    if require("curl") {
        let page = sh_ok(command(&commands, &["curl", "127.71.0.4:8080/portal"]));
        assert!(page.contains("GINA portal of member gw"), "{page}");
    }

    // The printed kill ends the master; a survivor names a new master.
    let kill = command(&commands, &["kill "]);
    assert!(kill.ends_with(&format!(" {}", demo.nodes[0].0)), "{kill}");
    let killed_at = Instant::now();
    sh_ok(kill);
    assert!(eventually(Duration::from_secs(5), || !demo.nodes[0].is_alive()));
    let status2 = command(&commands, &["cluster status", "/gw2/"]);
    let mut status = String::new();
    let elected = eventually(ELECTED_WITHIN, || {
        status = sh(status2).1;
        matches!(master_of(&status).as_deref(), Some("gw2" | "gw3"))
    });
    assert!(elected, "no new master:\n{status}");
    eprintln!(
        "new master after {:.1} s",
        killed_at.elapsed().as_secs_f64()
    );
    assert!(status.contains("ERROR: no contact"), "{status}");
    assert!(
        demo.read_until("is the master now", Duration::from_secs(10)),
        "the demo did not say who was elected:\n{}",
        demo.transcript()
    );

    // Ctrl-C: every node stopped, the directory removed, exit 0.
    signal(demo.child.id(), "INT");
    let mut exit = None;
    eventually(Duration::from_secs(20), || {
        exit = demo.child.try_wait().ok().flatten();
        exit.is_some()
    });
    let exit = exit.unwrap_or_else(|| panic!("the demo did not exit:\n{}", demo.transcript()));
    assert!(exit.success(), "{exit}:\n{}", demo.transcript());
    for node in &demo.nodes {
        assert!(!node.is_alive(), "pid {} still runs", node.0);
    }
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(
        demo.read_until("All four nodes stopped", Duration::from_secs(5)),
        "{}",
        demo.transcript()
    );
}
