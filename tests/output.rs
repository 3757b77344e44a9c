//! What the command line does when the reader of its output goes away
//! (`mxgate status | head -1`): it ends quietly, with 0 when everything
//! was written and 141 (128 + SIGPIPE, what shells expect) when not, and
//! never panics.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};

use common::cluster::Node;
use common::dnsmasq::Dnsmasq;
use common::{Behavior, FakeMta, require};

/// How often each command is piped into a reader that stops after one line.
const RUNS: usize = 50;

/// The exit status of a command whose reader went away.
const CLOSED: i32 = 141;

/// Starts mxgate with `args`, its stdout and stderr piped.
fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mxgate"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mxgate")
}

/// Runs mxgate with `args`, reads one line of its stdout and closes the
/// pipe; returns the line, the exit status and stderr.
fn first_line_then_close(args: &[&str]) -> (String, ExitStatus, String) {
    let mut child = spawn(args);
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout is piped");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read one line");
    // The reader is dropped here: the pipe is closed after one line.
    let mut stderr = String::new();
    let mut errors = child.stderr.take().expect("stderr is piped");
    errors.read_to_string(&mut stderr).expect("read stderr");
    let status = child.wait().expect("wait for mxgate");
    (line, status, stderr)
}

/// Pipes `args` into a one-line reader `RUNS` times: every run printed its
/// first line, ended with one of `codes` or 141, and panicked never.
fn survives_a_closing_reader(args: &[&str], codes: &[i32]) {
    let mut closed = 0;
    for run in 0..RUNS {
        let (line, status, stderr) = first_line_then_close(args);
        let code = status.code();
        assert!(
            !stderr.contains("panicked"),
            "run {run} of {args:?} panicked: {stderr}"
        );
        assert!(
            !line.is_empty(),
            "run {run} of {args:?} printed nothing: {stderr}"
        );
        assert!(
            code.is_some_and(|c| c == CLOSED || codes.contains(&c)),
            "run {run} of {args:?} ended with {status}: {stderr}"
        );
        if code == Some(CLOSED) {
            closed += 1;
            assert!(stderr.is_empty(), "a closed pipe is not an error: {stderr}");
        }
    }
    println!("{args:?}: {RUNS} runs, {closed} ended with 141");
}

/// Runs mxgate with stdout a pipe whose reader is gone before it writes.
fn closed_from_the_start(args: &[&str]) -> (ExitStatus, String) {
    let mut child = spawn(args);
    drop(child.stdout.take());
    let mut stderr = String::new();
    let mut errors = child.stderr.take().expect("stderr is piped");
    errors.read_to_string(&mut stderr).expect("read stderr");
    (child.wait().expect("wait for mxgate"), stderr)
}

#[test]
fn help_and_completions_survive_a_closing_reader() {
    survives_a_closing_reader(&["--help"], &[0]);
    survives_a_closing_reader(&["cluster", "--help"], &[0]);
    survives_a_closing_reader(&["completions", "bash"], &[0]);
    let (status, stderr) = closed_from_the_start(&["--help"]);
    assert_eq!(status.code(), Some(CLOSED), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn daemon_answers_survive_a_closing_reader() {
    if !require("dnsmasq") {
        return;
    }
    let mta = FakeMta::start("gw1", Behavior::Normal);
    // An MX whose host has no SMTP server: a report of several lines, quickly.
    let dns = Dnsmasq::start(
        "127.95.0.53",
        &[
            "--mx-host=example.test,mx.example.test,10".to_owned(),
            "--host-record=mx.example.test,127.95.0.25".to_owned(),
        ],
    );
    let policy = format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\nattempts = 1\nprobe_timeout = \"2s\"\n",
        dns.addr
    );
    let gw1 = Node::start("gw1", "127.95.0.1", &mta.addr.to_string(), &policy);
    gw1.ok(&["cluster", "create"]);
    let config = gw1.gw.config_path().to_string_lossy().into_owned();
    let with_config = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["-c".to_owned(), config.clone()]);
        all
    };
    let commands: [(&[&str], &[i32]); 5] = [
        (&["status"], &[0]),
        (&["status", "--json"], &[0]),
        (&["route", "explain", "--client", "203.0.113.7"], &[0]),
        (&["cluster", "status"], &[0]),
        // The plugin codes: the MX host answers no SMTP, so CRITICAL (2).
        (&["dns", "check", "example.test"], &[0, 1, 2, 3]),
    ];
    for (args, codes) in commands {
        let args = with_config(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        survives_a_closing_reader(&args, codes);
        let (status, stderr) = closed_from_the_start(&args);
        assert_eq!(status.code(), Some(CLOSED), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}
