//! The chaos test of issue 17: three backends (Raft voters) and a frontend,
//! each a `mxgate serve` in its own network namespace on one virtual switch
//! (`common::netns`, as in `cluster_partition.rs`), go through at least
//! [`STEPS`] seeded steps of SIGKILLs, restarts, switch-port cuts and heals
//! of the backends and SIGKILLs and restarts of the frontend. Never more
//! than one backend is down or cut off at once, so a majority normally
//! remains. Between two steps one policy change (`# change K`, K unique) is
//! applied with `cluster policy apply` on a random running backend (any
//! backend forwards to the master) and its outcome recorded: acknowledged
//! (exit 0: `policy version N applied and replicated (change E.S
//! committed)`), refused (`nothing was changed`: it must never appear) or
//! unknown (any other failure: it may appear later, or not). A change is
//! never in flight while a fault is injected. After a cut, the test waits
//! (bounded) until the connected backends agree on a master, so that a
//! change is seldom forwarded to a cut-off master (that waits 25 s).
//!
//! Sampled all along, in parallel and with bounded CLI calls on every
//! running node: no two nodes accept writes in one epoch (the invariant of
//! `common::cluster::one_master_per_epoch`), never two masters named for
//! one epoch in `cluster status` over the whole run, and every policy text
//! any node holds is the one of the change whose version it is.
//!
//! At the end everything is healed and restarted, one more change must be
//! acknowledged, and within [`SETTLE`] every backend and the frontend hold
//! the same state (`log`: head, SHA-256, the recent changes) under one
//! master. Then, on every node: every acknowledged change is in its
//! `log.recent` with the CSN and version it was acknowledged with, in the
//! order of the acknowledgements; the policy versions there run without a
//! gap and each one that was not acknowledged belongs to a change whose
//! outcome was unknown, issued between the same two acknowledged ones; the
//! policy it holds is the text of the last version, at least the last
//! acknowledged one.
//!
//! Seeded: `MXGATE_CHAOS_SEED` (printed on every run) replays a run's
//! choices (timing on a busy machine still varies). On a failure the nodes'
//! logs (across restarts) are written to `/tmp/mxgate-chaos-SEED-NODE.log`
//! (after a success too when `MXGATE_CHAOS_KEEP_LOGS` is set).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Node, one_master_per_epoch, rows};
use common::netns::Lan;
use common::{policy, run_bounded};

/// Steps of one run (the issue: at least 40).
const STEPS: usize = 40;
/// The run stops taking steps after this long (setup and settle come on
/// top); the steps normally take well under it.
const BUDGET: Duration = Duration::from_secs(170);
/// After everything is back: the state converges everywhere within this.
const SETTLE: Duration = Duration::from_secs(45);
/// A new master among the others after a cut (the issue: 15 s).
const ELECTION: Duration = Duration::from_secs(15);
/// Forming the cluster.
const FORM: Duration = Duration::from_secs(30);
/// A sampling CLI call (a cut-off follower's `cluster status` waits for its
/// master that long and more).
const PROBE: Duration = Duration::from_secs(3);
/// One `cluster policy apply` (the product's own bounds: 10 s to refuse,
/// 10 s to commit, 25 s for a forwarded change).
const APPLY: Duration = Duration::from_secs(60);
const DEFAULT_SEED: u64 = 0x6d78_6761_7465_0007;
/// `nodes[..BACKENDS]` are the backends; `nodes[FE]` is the frontend.
const BACKENDS: usize = 3;
const FE: usize = 3;
const IPS: [&str; 4] = ["127.66.0.1", "127.66.0.2", "127.66.0.3", "127.66.0.4"];

/// xorshift64: small, seedable, good enough to pick actions.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn seed() -> u64 {
    match std::env::var("MXGATE_CHAOS_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("MXGATE_CHAOS_SEED={s:?}: {e}"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// What became of one `cluster policy apply`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Exit 0: the version and the CSN (term, index) it was committed at.
    Acked { version: u64, term: u64, index: u64 },
    /// "nothing was changed": must never appear.
    Refused,
    /// Any other failure: may appear later, or never.
    Unknown,
}

/// One change of the stream: `# change K`.
#[derive(Debug)]
struct Change {
    k: usize,
    text: String,
    on: String,
    outcome: Outcome,
    /// What the CLI said.
    said: String,
}

/// The policy text of change `k`.
fn change_text(k: usize) -> String {
    format!("# change {k}\n[routing]\nmax_attempts = {}\n", 2 + k % 7)
}

/// The K of a `# change K` policy text.
fn change_of(text: &str) -> Option<usize> {
    text.lines()
        .find_map(|l| l.strip_prefix("# change "))
        .and_then(|k| k.trim().parse().ok())
}

/// `policy version N applied and replicated (change E.S committed)`:
/// (N, E, S).
fn parse_ack(out: &str) -> Option<(u64, u64, u64)> {
    let version = out
        .split("policy version ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let csn = out.split("(change ").nth(1)?.split_whitespace().next()?;
    let (term, index) = csn.split_once('.')?;
    Some((version, term.parse().ok()?, index.parse().ok()?))
}

/// `cluster policy show`: (version, text after the header line).
fn parse_policy(out: &str) -> Option<(u64, String)> {
    let (first, text) = out.split_once('\n')?;
    let version = first
        .strip_prefix("# policy version ")?
        .trim()
        .parse()
        .ok()?;
    Some((version, text.to_owned()))
}

/// The policy changes of a `log.recent`, oldest first: (version, term, index).
fn policy_records(log: &serde_json::Value) -> Vec<(u64, u64, u64)> {
    log["recent"]
        .as_array()
        .map(|recent| {
            recent
                .iter()
                .filter_map(|r| {
                    let version = r["summary"]
                        .as_str()?
                        .strip_prefix("policy version ")?
                        .trim()
                        .parse()
                        .ok()?;
                    Some((version, r["term"].as_u64()?, r["index"].as_u64()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `mxgate ARGS -c CONFIG`, killed after `limit`: stdout when it succeeded.
fn cli_bounded(config: &PathBuf, args: &[&str], limit: Duration) -> Result<String, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mxgate"));
    cmd.args(args).arg("-c").arg(config);
    let (out, killed) = run_bounded(&mut cmd, limit);
    if out.status.success() && !killed {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else if killed {
        Err(format!("no answer within {limit:?}"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// One node's answers in one sample.
struct Seen {
    node: usize,
    status: Option<serde_json::Value>,
    policy: Option<(u64, String)>,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Kill(usize),
    Restart(usize),
    Cut(usize),
    Heal(usize),
    KillFrontend,
    RestartFrontend,
    Nothing,
}

struct Chaos<'a> {
    lan: &'a Lan,
    seed: u64,
    nodes: Vec<Node>,
    up: Vec<bool>,
    cut: Vec<bool>,
    rng: Rng,
    started: Instant,
    changes: Vec<Change>,
    /// The policy version before the first change.
    initial_version: u64,
    /// The master each epoch had, as any `cluster status` named it.
    masters: BTreeMap<u64, String>,
    /// Who accepted writes in each epoch, as sampled.
    writers: BTreeMap<u64, String>,
    /// Policy version -> the text any node held as that version.
    held: BTreeMap<u64, String>,
    /// The master of the latest sample that named one.
    master: Option<usize>,
    samples: usize,
    /// Log lines of earlier runs of each node (a restart starts afresh).
    history: Vec<Vec<String>>,
}

impl Chaos<'_> {
    fn t(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn impaired(&self) -> Option<usize> {
        (0..BACKENDS).find(|&i| !self.up[i] || self.cut[i])
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// One sample of every running node, in parallel; checks and records
    /// the invariants. The `cluster status` of each node that answered.
    fn sample(&mut self) -> BTreeMap<usize, serde_json::Value> {
        let targets: Vec<(usize, PathBuf)> = (0..self.nodes.len())
            .filter(|&i| self.up[i])
            .map(|i| (i, self.nodes[i].gw.config.clone()))
            .collect();
        let seen: Vec<Seen> = std::thread::scope(|s| {
            let handles: Vec<_> = targets
                .iter()
                .map(|(i, config)| {
                    s.spawn(move || {
                        let status =
                            cli_bounded(config, &["cluster", "status", "--json"], PROBE).ok();
                        let policy = cli_bounded(config, &["cluster", "policy", "show"], PROBE)
                            .ok()
                            .and_then(|out| parse_policy(&out));
                        Seen {
                            node: *i,
                            status: status.and_then(|s| serde_json::from_str(&s).ok()),
                            policy,
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("sampler"))
                .collect()
        });
        self.samples += 1;
        let mut now: Vec<(u64, String)> = Vec::new();
        for s in &seen {
            let name = self.nodes[s.node].name.clone();
            if let Some(st) = &s.status {
                if st["accepts_writes"] == true {
                    let epoch = st["node_epoch"].as_u64().unwrap_or(0);
                    now.push((epoch, name.clone()));
                }
                let master = st["master"].as_str().unwrap_or_default();
                if !master.is_empty() {
                    let epoch = st["epoch"].as_u64().unwrap_or(0);
                    let first = self
                        .masters
                        .entry(epoch)
                        .or_insert_with(|| master.to_owned());
                    assert_eq!(
                        first, master,
                        "epoch {epoch} had two masters: {first}, and {master} as {name} says now: {st}"
                    );
                    self.master = self.index_of(master);
                }
            }
            if let Some((version, text)) = &s.policy {
                match self.held.get(version) {
                    Some(first) => assert_eq!(
                        first, text,
                        "policy version {version} has two texts ({name} holds the second)"
                    ),
                    None => {
                        self.check_held(*version, text, &name);
                        self.held.insert(*version, text.clone());
                    }
                }
            }
        }
        for (i, a) in now.iter().enumerate() {
            for b in &now[i + 1..] {
                assert_ne!(a.0, b.0, "two nodes accept writes in one epoch: {now:?}");
            }
        }
        for (epoch, name) in now {
            let first = self.writers.entry(epoch).or_insert_with(|| name.clone());
            assert_eq!(
                *first, name,
                "{name} accepts writes in epoch {epoch}, which {first} accepted writes in before"
            );
        }
        seen.into_iter()
            .filter_map(|s| Some((s.node, s.status?)))
            .collect()
    }

    /// After a cut: samples until the backends that are up and connected
    /// all name one master among them (or `limit` passes), so that a
    /// change is not forwarded to a cut-off master (a forward to a master
    /// that does not answer waits 25 s).
    fn await_master(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            let statuses = self.sample();
            let connected: Vec<usize> = (0..BACKENDS)
                .filter(|&i| self.up[i] && !self.cut[i])
                .collect();
            let named: Vec<Option<&str>> = connected
                .iter()
                .map(|i| statuses.get(i).and_then(|s| s["master"].as_str()))
                .collect();
            let agreed = named[0]
                .and_then(|m| self.index_of(m))
                .is_some_and(|m| connected.contains(&m) && named.iter().all(|n| *n == named[0]));
            if agreed {
                return;
            }
            if Instant::now() >= end {
                let views: Vec<String> = connected
                    .iter()
                    .map(|&i| {
                        let view = statuses.get(&i).map_or("no answer".into(), |s| {
                            format!("master {} epoch {}", s["master"], s["epoch"])
                        });
                        format!("{}: {view}", self.nodes[i].name)
                    })
                    .collect();
                eprintln!(
                    "[{:6.1}s]   no master agreed among the connected backends within {limit:?}: {views:?}",
                    self.t()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Samples for `pause` (at least once).
    fn watch(&mut self, pause: Duration) {
        let end = Instant::now() + pause;
        loop {
            self.sample();
            if Instant::now() >= end {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
        self.up[i] = false;
    }

    fn restart(&mut self, i: usize) {
        let mut lines = self.nodes[i].gw.logs();
        lines.push(format!("---- restarted at {:.1}s ----", self.t()));
        self.history[i].append(&mut lines);
        self.nodes[i].gw.restart();
        self.up[i] = true;
    }

    /// A backend to kill or cut: the master half of the time.
    fn victim(&mut self) -> usize {
        match self.master {
            Some(m) if m < BACKENDS && self.rng.below(2) == 0 => m,
            _ => self.rng.below(BACKENDS),
        }
    }

    fn choose(&mut self) -> Action {
        let mut options: Vec<(Action, usize)> = Vec::new();
        match self.impaired() {
            None => {
                let kill = self.victim();
                let cut = self.victim();
                options.push((Action::Kill(kill), 3));
                options.push((Action::Cut(cut), 3));
            }
            Some(i) => {
                if !self.up[i] {
                    options.push((Action::Restart(i), 4));
                } else {
                    options.push((Action::Kill(i), 1));
                }
                if self.cut[i] {
                    options.push((Action::Heal(i), 4));
                } else {
                    options.push((Action::Cut(i), 1));
                }
            }
        }
        if self.up[FE] {
            options.push((Action::KillFrontend, 1));
        } else {
            options.push((Action::RestartFrontend, 2));
        }
        options.push((Action::Nothing, 1));
        let total: usize = options.iter().map(|o| o.1).sum();
        let mut pick = self.rng.below(total);
        for (action, weight) in options {
            if pick < weight {
                return action;
            }
            pick -= weight;
        }
        Action::Nothing
    }

    fn act(&mut self, step: usize, action: Action) {
        let name = |i: usize| self.nodes[i].name.clone();
        let what = match action {
            Action::Kill(i) => format!("SIGKILL {}", name(i)),
            Action::Restart(i) => format!("restart {}", name(i)),
            Action::Cut(i) => format!("cut {} off", name(i)),
            Action::Heal(i) => format!("heal {}", name(i)),
            Action::KillFrontend => format!("SIGKILL {}", name(FE)),
            Action::RestartFrontend => format!("restart {}", name(FE)),
            Action::Nothing => "nothing".into(),
        };
        let master = self.master.map(name).unwrap_or_default();
        eprintln!("[{:6.1}s] step {step}: {what} (master {master})", self.t());
        match action {
            Action::Kill(i) => self.kill(i),
            Action::Restart(i) => self.restart(i),
            Action::Cut(i) => {
                self.lan.cut(i);
                self.cut[i] = true;
                self.await_master(ELECTION);
            }
            Action::Heal(i) => {
                self.lan.heal(i);
                self.cut[i] = false;
            }
            Action::KillFrontend => self.kill(FE),
            Action::RestartFrontend => self.restart(FE),
            Action::Nothing => {}
        }
    }

    /// Applies change number `changes.len() + 1` on a random running
    /// backend (a cut-off one less often: it may wait for its master long)
    /// and records its outcome.
    fn apply(&mut self) -> Outcome {
        let k = self.changes.len() + 1;
        let running: Vec<usize> = (0..BACKENDS).filter(|&i| self.up[i]).collect();
        let mut on = running[self.rng.below(running.len())];
        let connected: Vec<usize> = running.iter().copied().filter(|&i| !self.cut[i]).collect();
        if self.cut[on] && !connected.is_empty() && self.rng.below(3) > 0 {
            on = connected[self.rng.below(connected.len())];
        }
        let node = &self.nodes[on];
        let text = change_text(k);
        let path = node.file(&format!("change{k}.toml"), &text);
        let begun = Instant::now();
        let answer = cli_bounded(
            &node.gw.config,
            &["cluster", "policy", "apply", path.to_str().expect("path")],
            APPLY,
        );
        let (outcome, said) = match answer {
            Ok(out) => {
                let (version, term, index) =
                    parse_ack(&out).unwrap_or_else(|| panic!("change {k}: {out}"));
                assert!(out.contains("applied and replicated"), "{out}");
                (
                    Outcome::Acked {
                        version,
                        term,
                        index,
                    },
                    out,
                )
            }
            Err(err) if err.contains("nothing was changed") => (Outcome::Refused, err),
            Err(err) => (Outcome::Unknown, err),
        };
        let said = said.trim().to_owned();
        eprintln!(
            "[{:6.1}s]   change {k} on {}{}: {outcome:?} in {:.1}s: {}",
            self.t(),
            node.name,
            if self.cut[on] { " (cut off)" } else { "" },
            begun.elapsed().as_secs_f64(),
            said.lines().next().unwrap_or_default()
        );
        self.changes.push(Change {
            k,
            text,
            on: node.name.clone(),
            outcome: outcome.clone(),
            said,
        });
        outcome
    }

    fn change(&self, k: usize) -> &Change {
        &self.changes[k - 1]
    }

    /// Checks that text `text` held as policy `version` anywhere belongs to
    /// a change that was acknowledged as that version or whose outcome is
    /// unknown.
    fn check_held(&self, version: u64, text: &str, whose: &str) {
        let Some(k) = change_of(text) else {
            assert!(
                version <= self.initial_version,
                "{whose}: policy version {version} is no change of this run: {text:?}"
            );
            return;
        };
        let change = self.change(k);
        assert_eq!(change.text, text, "{whose}: version {version}");
        match &change.outcome {
            Outcome::Acked { version: v, .. } => assert_eq!(
                *v, version,
                "{whose}: change {k}, acknowledged as version {v}, is held as version {version}"
            ),
            Outcome::Refused => panic!(
                "{whose}: change {k} was refused on {} ({}) but is held as policy version {version}",
                change.on, change.said
            ),
            Outcome::Unknown => {}
        }
    }

    /// The final checks on one node's `log` and policy (see the module).
    fn check_final(&self, name: &str, log: &serde_json::Value, policy: &(u64, String)) {
        let records = policy_records(log);
        let acked: Vec<(usize, u64, u64, u64)> = self
            .changes
            .iter()
            .filter_map(|c| match c.outcome {
                Outcome::Acked {
                    version,
                    term,
                    index,
                } => Some((c.k, version, term, index)),
                _ => None,
            })
            .collect();
        // Acknowledged in order: versions and log positions increase.
        for w in acked.windows(2) {
            assert!(
                w[0].1 < w[1].1 && (w[0].2, w[0].3) < (w[1].2, w[1].3),
                "acknowledged out of order: change {} as {:?}, then change {} as {:?}",
                w[0].0,
                w[0],
                w[1].0,
                w[1]
            );
        }
        // Every acknowledged change is there, with its version and CSN.
        let first_index = log["recent"][0]["index"].as_u64().unwrap_or(u64::MAX);
        for &(k, version, term, index) in &acked {
            assert!(
                index >= first_index,
                "{name}: change {k} ({index}) is older than the {} recent changes kept; fewer steps",
                log["recent"].as_array().map_or(0, Vec::len)
            );
            assert!(
                records.contains(&(version, term, index)),
                "{name}: acknowledged change {k} (policy version {version} at {term}.{index}) is missing: {records:?}"
            );
        }
        // The versions run without a gap, in log order.
        for w in records.windows(2) {
            assert_eq!(w[0].0 + 1, w[1].0, "{name}: a gap in {records:?}");
            assert!((w[0].1, w[0].2) < (w[1].1, w[1].2), "{name}: {records:?}");
        }
        // Each version that was not acknowledged belongs to a change of
        // unknown outcome, issued between the acknowledged changes whose
        // versions enclose it (a change's version is the master's next one
        // when it is proposed, after every acknowledged change before it).
        let mut unacked_by_gap: BTreeMap<usize, usize> = BTreeMap::new();
        for &(version, term, index) in &records {
            if version <= self.initial_version || acked.iter().any(|a| a.1 == version) {
                continue;
            }
            let gap = acked.iter().filter(|a| a.1 < version).count();
            *unacked_by_gap.entry(gap).or_default() += 1;
            if let Some(text) = self.held.get(&version) {
                let k = change_of(text).expect("checked while sampling");
                assert_eq!(
                    self.change(k).outcome,
                    Outcome::Unknown,
                    "{name}: version {version} ({term}.{index})"
                );
                let after = gap.checked_sub(1).map_or(0, |g| acked[g].0);
                let before = acked.get(gap).map_or(usize::MAX, |a| a.0);
                assert!(
                    after < k && k < before,
                    "{name}: version {version} is change {k}, not between changes {after} and {before}"
                );
            }
        }
        for (gap, count) in unacked_by_gap {
            let after = gap.checked_sub(1).map_or(0, |g| acked[g].0);
            let before = acked.get(gap).map_or(usize::MAX, |a| a.0);
            let unknown: Vec<usize> = self
                .changes
                .iter()
                .filter(|c| c.outcome == Outcome::Unknown && after < c.k && c.k < before)
                .map(|c| c.k)
                .collect();
            assert!(
                count <= unknown.len(),
                "{name}: {count} policy versions between changes {after} and {before} that were not acknowledged, but only changes {unknown:?} had an unknown outcome: {records:?}"
            );
        }
        // The policy held: the last version, at least the last acknowledged.
        let (version, text) = policy;
        assert_eq!(
            records.last().map(|r| r.0),
            Some(*version),
            "{name}: holds policy version {version}; its log: {records:?}"
        );
        if let Some(last) = acked.last() {
            assert!(*version >= last.1, "{name}: version {version} < {last:?}");
        }
        self.check_held(*version, text, name);
    }
}

impl Drop for Chaos<'_> {
    fn drop(&mut self) {
        let keep = std::env::var_os("MXGATE_CHAOS_KEEP_LOGS").is_some();
        if !std::thread::panicking() && !keep {
            return;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let path = format!("/tmp/mxgate-chaos-{:#x}-{}.log", self.seed, node.name);
            let mut lines = self.history[i].clone();
            lines.extend(node.gw.logs());
            match std::fs::write(&path, lines.join("\n")) {
                Ok(()) => eprintln!("{}'s log: {path}", node.name),
                Err(e) => eprintln!("cannot write {path}: {e}"),
            }
        }
        if std::thread::panicking() {
            eprintln!("changes: {:#?}", self.changes);
        }
    }
}

/// Frontend fe1 (nodes[FE]) joined through gw1, following gw1, gw2, gw3.
fn join_frontend(nodes: &[Node]) {
    let (fe, gw1) = (&nodes[FE], &nodes[0]);
    let id = gw1.gw.dir.path().join("clusterid.txt");
    let pw = fe.file("password", "pw\n");
    fe.ok(&[
        "cluster",
        "join",
        "--identifier",
        id.to_str().unwrap(),
        "--master",
        &gw1.address(),
        "--role",
        "frontend",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    for backend in &nodes[1..BACKENDS] {
        fe.ok(&["cluster", "add-backend", &backend.address()]);
    }
}

#[test]
fn kills_restarts_and_partitions_under_a_stream_of_changes() {
    if !common::require_root("the chaos test (ip netns)") || !common::require("ip") {
        return;
    }
    let seed = seed();
    eprintln!("chaos seed {seed:#x} (replay with MXGATE_CHAOS_SEED={seed:#x})");
    // Declared before the nodes, so it is dropped after them.
    let Some(lan) = Lan::for_test(&IPS) else {
        return;
    };
    let setup = Instant::now();
    let mut nodes: Vec<Node> = (0..BACKENDS)
        .map(|i| {
            let ip = lan.hosts[i].ip.as_str();
            Node::start_wrapped(
                &lan.wrap(i),
                &format!("gw{}", i + 1),
                ip,
                &format!("{ip}:2525"),
                &policy("", &[]),
            )
        })
        .collect();
    common::cluster::form(&nodes.iter().collect::<Vec<_>>(), FORM);
    nodes.push(Node::start_frontend_wrapped(
        &lan.wrap(FE),
        "fe1",
        lan.hosts[FE].ip.as_str(),
        &policy("", &[]),
    ));
    join_frontend(&nodes);
    let initial_version = nodes[0].policy_version().expect("a policy version");
    eprintln!(
        "cluster of {} formed in {:?}; policy version {initial_version}",
        nodes.len(),
        setup.elapsed()
    );

    let count = nodes.len();
    let mut chaos = Chaos {
        lan: &lan,
        seed,
        nodes,
        up: vec![true; count],
        cut: vec![false; count],
        rng: Rng::new(seed),
        started: Instant::now(),
        changes: Vec::new(),
        initial_version,
        masters: BTreeMap::new(),
        writers: BTreeMap::new(),
        held: BTreeMap::new(),
        master: None,
        samples: 0,
        history: vec![Vec::new(); count],
    };
    chaos.sample();

    let mut steps = 0;
    for step in 1..=STEPS {
        if chaos.started.elapsed() > BUDGET {
            eprintln!("WARNING: time budget spent after {} steps", step - 1);
            break;
        }
        let action = chaos.choose();
        chaos.act(step, action);
        chaos.apply();
        let pause = Duration::from_millis(200 + 200 * chaos.rng.below(5) as u64);
        chaos.watch(pause);
        steps = step;
    }
    let chaos_took = chaos.started.elapsed();
    eprintln!("[{:6.1}s] {steps} steps done", chaos.t());

    // Everything back.
    for i in 0..count {
        if chaos.cut[i] {
            chaos.act(0, Action::Heal(i));
        }
        if !chaos.up[i] {
            chaos.act(0, Action::Restart(i));
        }
    }
    let settle = Instant::now();
    // One more change must get through once a majority is back.
    let mut last_acked = None;
    while settle.elapsed() < SETTLE && last_acked.is_none() {
        if let Outcome::Acked { version, .. } = chaos.apply() {
            last_acked = Some(version);
        } else {
            chaos.watch(Duration::from_millis(500));
        }
    }
    let last_acked = last_acked.expect("no change was acknowledged after everything came back");

    // Every node the same state under one master.
    let all: Vec<(usize, PathBuf)> = (0..count)
        .map(|i| (i, chaos.nodes[i].gw.config.clone()))
        .collect();
    let mut last = String::new();
    let deadline = settle + SETTLE;
    let settled = loop {
        chaos.sample();
        let statuses: Vec<Option<serde_json::Value>> = all
            .iter()
            .map(|(_, c)| {
                cli_bounded(c, &["cluster", "status", "--json"], PROBE)
                    .ok()
                    .and_then(|s| serde_json::from_str(&s).ok())
            })
            .collect();
        let ok = statuses.iter().all(Option::is_some) && {
            let s: Vec<&serde_json::Value> = statuses.iter().flatten().collect();
            let master = s[0]["master"].as_str().unwrap_or_default();
            let writers: Vec<&str> = s
                .iter()
                .filter(|st| st["accepts_writes"] == true)
                .filter_map(|st| st["node"].as_str())
                .collect();
            !master.is_empty()
                && writers == [master]
                && s.iter().all(|st| {
                    st["log"]["head"] == s[0]["log"]["head"]
                        && st["log"]["sha256"] == s[0]["log"]["sha256"]
                        && st["log"] == s[0]["log"]
                        && st["master"] == s[0]["master"]
                        && st["epoch"] == s[0]["epoch"]
                })
                && rows(s[0]).len() == count
                && rows(s[0]).iter().all(|r| r.2 == "A" && r.3 == r.4)
        };
        if ok {
            break true;
        }
        last = statuses
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join("\n");
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        settled,
        "the nodes did not converge within {SETTLE:?}:\n{last}"
    );
    eprintln!(
        "[{:6.1}s] converged {:?} after everything came back",
        chaos.t(),
        settle.elapsed()
    );
    let live: Vec<&Node> = chaos.nodes.iter().collect();
    let writers = one_master_per_epoch(&live);
    assert_eq!(writers.len(), 1, "{writers:?}");

    // The final state of every node.
    for node in &chaos.nodes {
        let status = node.status();
        let policy = parse_policy(&node.ok(&["cluster", "policy", "show"])).expect("policy show");
        chaos.check_final(&node.name, &status["log"], &policy);
        assert!(policy.0 >= last_acked, "{}: {policy:?}", node.name);
    }
    for (version, text) in &chaos.held {
        chaos.check_held(*version, text, "a sample");
    }

    let count = |f: fn(&Outcome) -> bool| chaos.changes.iter().filter(|c| f(&c.outcome)).count();
    let acked = count(|o| matches!(o, Outcome::Acked { .. }));
    let refused = count(|o| *o == Outcome::Refused);
    let unknown = count(|o| *o == Outcome::Unknown);
    let log = chaos.nodes[0].status()["log"].clone();
    let others: Vec<&str> = log["recent"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|c| c["summary"].as_str())
                .filter(|s| !s.starts_with("policy version "))
                .collect()
        })
        .unwrap_or_default();
    eprintln!("other changes among the recent ones: {others:?}");
    eprintln!(
        "seed {seed:#x}: {steps} steps in {chaos_took:?}, {} changes: {acked} acknowledged, {refused} refused, {unknown} unknown; \
         {} samples; masters by epoch {:?}; final head {} policy version {}",
        chaos.changes.len(),
        chaos.samples,
        chaos.masters,
        log["head"],
        policy_records(&log).last().map_or(0, |r| r.0),
    );
    assert_eq!(steps, STEPS, "the time budget ran out");
    assert!(acked >= STEPS / 8, "too few changes got through: {acked}");
}
