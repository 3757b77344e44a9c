//! The long-running mixed test of issue 7: three backends and a frontend (separate `mxgate
//! serve` processes on 127.66.0.x), a stream of policy changes on whoever
//! is master, and at random: SIGKILL and restart of a backend, SIGKILL of
//! the master and `cluster promote` of a backend (the old master comes back
//! later and must step down and resynchronise by itself), or a handover
//! (`promote --force` while the master runs).
//!
//! Invariants: no two nodes ever accept writes in the same epoch (sampled
//! all along, and checked again on the logs at the end: every epoch's
//! entries, kept or discarded, come from the node promoted in it); after a
//! bounded settle time every live node holds exactly the master's log
//! (head and SHA-256 of every entry, `cluster status --json` `log`).
//!
//! A frontend (fe1, following all three backends) is killed and restarted
//! at random too; at the end it must hold the master's log as well.
//!
//! Seeded: `MXGATE_CHAOS_SEED` (printed on every run) replays a run.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{Node, one_master_per_epoch, rows, try_status, writers};
use common::{eventually, policy, signal};

/// Steps of one run.
const STEPS: usize = 20;
/// The run stops taking steps after this long (the settle comes on top).
const BUDGET: Duration = Duration::from_secs(100);
/// SPEC section 8: after a promote the others follow within 30 s (the
/// longest of its bounds; catch-up is 15 s, a change 10 s).
const SETTLE: Duration = Duration::from_secs(30);
/// Bound on getting a majority of promises while two of three backends run.
const PROMOTE: Duration = Duration::from_secs(20);
const DEFAULT_SEED: u64 = 0x6d78_6761_7465_0007;
/// `nodes[..BACKENDS]` are the backends; `nodes[BACKENDS]` is the frontend.
const BACKENDS: usize = 3;

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

struct Chaos {
    nodes: Vec<Node>,
    /// Running processes (index into `nodes`).
    up: Vec<bool>,
    /// The node that accepts changes now.
    master: usize,
    /// Who was made master of each epoch (by create, promote or handover).
    masters: BTreeMap<u64, String>,
    /// Every (epoch, writer) seen accepting writes at any moment.
    seen: BTreeMap<u64, String>,
    rng: Rng,
    version: u64,
}

impl Chaos {
    /// The live nodes whose state is checked: every running backend and
    /// the frontend when it runs.
    fn live(&self) -> Vec<&Node> {
        self.nodes
            .iter()
            .zip(&self.up)
            .filter(|(_, up)| **up)
            .map(|(n, _)| n)
            .collect()
    }

    fn down(&self) -> Option<usize> {
        self.up.iter().position(|up| !up)
    }

    /// One sample of "no two masters in one epoch", across the whole run.
    fn check_writers(&mut self) {
        let now = one_master_per_epoch(&self.live());
        for (epoch, name) in now {
            let first = self.seen.entry(epoch).or_insert_with(|| name.clone());
            assert_eq!(
                *first, name,
                "{name} accepts writes in epoch {epoch}, which {first} wrote in before"
            );
        }
    }

    /// Samples the invariant for `pause`.
    fn watch(&mut self, pause: Duration) {
        let end = Instant::now() + pause;
        loop {
            self.check_writers();
            if Instant::now() >= end {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self, i: usize) {
        signal(self.nodes[i].gw.pid(), "KILL");
        assert!(
            self.nodes[i]
                .gw
                .wait_exit(Duration::from_secs(10))
                .is_some(),
            "{} survived SIGKILL",
            self.nodes[i].name
        );
        self.up[i] = false;
    }

    fn restart(&mut self, i: usize) {
        self.nodes[i].gw.restart();
        self.up[i] = true;
    }

    fn apply(&mut self, step: usize) {
        self.version += 1;
        let master = &self.nodes[self.master];
        let out = master.apply_policy(
            &format!("step{step}.toml"),
            &format!(
                "# chaos step {step} on {}\n[routing]\nmax_attempts = {}\n",
                master.name,
                2 + step % 7
            ),
        );
        assert!(out.contains("policy version"), "{out}");
        eprintln!("  step {step}: {} on {}", out.trim(), master.name);
    }

    /// Promotes a running backend, the master being gone: without `--force`
    /// (two of three backends run, a majority), trying the other one when
    /// the first holds the older log or the other was promised the epoch.
    /// When a candidate finds its master reachable (a returned old master
    /// that no peer has told of the newer epoch yet), the code's rule is a
    /// handover: `promote --force` there.
    fn promote(&mut self) {
        let candidates: Vec<usize> = (0..BACKENDS)
            .filter(|&i| self.up[i] && i != self.master)
            .collect();
        let first = candidates[self.rng.below(candidates.len())];
        let mut order = vec![first];
        order.extend(candidates.iter().copied().filter(|&c| c != first));
        let mut refusals = Vec::new();
        let deadline = Instant::now() + PROMOTE;
        while Instant::now() < deadline {
            for &c in &order {
                let out = self.nodes[c].cli(&["cluster", "promote"]);
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                if out.status.success() {
                    self.promoted(c, &stdout);
                    return;
                }
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                if stderr.contains("is reachable") && stderr.contains("--force") {
                    eprintln!("  {}: {}", self.nodes[c].name, stderr.trim());
                    let out = self.nodes[c].ok(&["cluster", "promote", "--force"]);
                    assert!(out.contains("nothing was lost"), "{out}");
                    self.promoted(c, &out);
                    return;
                }
                refusals.push(format!("{}: {}", self.nodes[c].name, stderr.trim()));
                self.check_writers();
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("no backend could be promoted with two of three running: {refusals:#?}");
    }

    /// Records a promotion reported by `cluster promote` on node `c`.
    fn promoted(&mut self, c: usize, stdout: &str) {
        let epoch: u64 = stdout
            .split("at epoch ")
            .nth(1)
            .and_then(|r| r.split(|ch: char| !ch.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no epoch in {stdout:?}"));
        let name = self.nodes[c].name.clone();
        assert!(
            stdout.contains(&format!("{name} is now the master")),
            "{stdout}"
        );
        if let Some(before) = self.masters.insert(epoch, name.clone()) {
            panic!("epoch {epoch} promoted twice: {before} and {name}");
        }
        eprintln!("  {}", stdout.trim());
        self.master = c;
    }

    /// Handover while the master runs: nothing is lost.
    /// A returned old master may not have heard of the newer epoch yet
    /// ("the master of epoch N already"): it must within SPEC's 30 s.
    fn handover(&mut self) {
        let others: Vec<usize> = (0..BACKENDS)
            .filter(|&i| self.up[i] && i != self.master)
            .collect();
        let c = others[self.rng.below(others.len())];
        let deadline = Instant::now() + SETTLE;
        loop {
            let out = self.nodes[c].cli(&["cluster", "promote", "--force"]);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() {
                assert!(stdout.contains("nothing was lost"), "{stdout}");
                self.promoted(c, &stdout);
                return;
            }
            assert!(
                stderr.contains("already") && Instant::now() < deadline,
                "{}: handover failed: {stderr}",
                self.nodes[c].name
            );
            self.watch(Duration::from_millis(500));
        }
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

/// Three backends gw1..gw3 on `net`.1-3, gw1 the master, all in sync.
fn cluster(net: &str) -> Vec<Node> {
    let nodes: Vec<Node> = (1..=3)
        .map(|i| {
            let ip = format!("{net}.{i}");
            let upstream = format!("{ip}:2525");
            Node::start(&format!("gw{i}"), &ip, &upstream, &policy("", &[]))
        })
        .collect();
    common::cluster::form(&nodes.iter().collect::<Vec<_>>(), SETTLE);
    nodes
}

/// Frontend fe1 on `ip`, joined through gw1, following gw1, gw2 and gw3.
fn frontend(backends: &[Node], ip: &str) -> Node {
    let fe = Node::start_frontend("fe1", ip, &policy("", &[]));
    let gw1 = &backends[0];
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
    for backend in &backends[1..] {
        fe.ok(&["cluster", "add-backend", &backend.address()]);
    }
    fe
}

#[test]
fn random_kills_promotes_and_restarts_under_a_stream_of_changes() {
    let seed = seed();
    eprintln!("chaos seed {seed:#x} (replay with MXGATE_CHAOS_SEED={seed:#x})");
    let mut nodes = cluster("127.66.0");
    nodes.push(frontend(&nodes, "127.66.0.4"));
    let mut chaos = Chaos {
        up: vec![true; nodes.len()],
        nodes,
        master: 0,
        masters: BTreeMap::from([(1, "gw1".to_owned())]),
        seen: BTreeMap::new(),
        rng: Rng::new(seed),
        version: 1,
    };

    let started = Instant::now();
    for step in 1..=STEPS {
        if started.elapsed() > BUDGET {
            eprintln!("time budget spent after {} steps", step - 1);
            break;
        }
        // A node that is down comes back (usually at once, sometimes a step later).
        if let Some(i) = chaos.down()
            && chaos.rng.below(3) > 0
        {
            eprintln!("  restart {}", chaos.nodes[i].name);
            chaos.restart(i);
        }
        chaos.apply(step);
        // At most one node is down at a time: two of three backends are a
        // majority, so a promote never needs --force.
        let action = if chaos.down().is_some() {
            9
        } else {
            chaos.rng.below(10)
        };
        match action {
            0..=3 => {
                let others: Vec<usize> = (0..BACKENDS).filter(|&i| i != chaos.master).collect();
                let victim = others[chaos.rng.below(others.len())];
                eprintln!("  SIGKILL backend {}", chaos.nodes[victim].name);
                chaos.kill(victim);
            }
            4..=6 => {
                let old = chaos.master;
                eprintln!("  SIGKILL master {}", chaos.nodes[old].name);
                chaos.kill(old);
                chaos.promote();
            }
            7 => chaos.handover(),
            8 => {
                eprintln!("  SIGKILL frontend {}", chaos.nodes[BACKENDS].name);
                chaos.kill(BACKENDS);
            }
            _ => {}
        }
        let pause = Duration::from_millis(300 + 300 * chaos.rng.below(6) as u64);
        chaos.watch(pause);
    }
    eprintln!(
        "{} steps in {:?}; epochs {:?}",
        STEPS,
        started.elapsed(),
        chaos.masters
    );

    // Settle: everyone back, one master, every live node with its log.
    if let Some(i) = chaos.down() {
        eprintln!("  restart {}", chaos.nodes[i].name);
        chaos.restart(i);
    }
    let master = chaos.nodes[chaos.master].name.clone();
    let settle_start = Instant::now();
    let mut last = String::new();
    let settled = eventually(SETTLE, || {
        chaos.check_writers();
        let statuses: Vec<Option<serde_json::Value>> =
            chaos.live().iter().map(|n| try_status(n)).collect();
        let Some(m) = statuses
            .iter()
            .flatten()
            .find(|s| s["node"] == master.as_str())
        else {
            return false;
        };
        let ok = m["accepts_writes"] == true
            && m["master"] == master.as_str()
            && rows(m).len() == BACKENDS + 1
            && rows(m).iter().all(|r| r.2 == "A" && r.3 == r.4)
            && statuses.iter().all(|s| {
                s.as_ref().is_some_and(|s| {
                    s["log"] == m["log"]
                        && s["master"] == m["master"]
                        && s["epoch"] == m["epoch"]
                        && (s["node"] == m["node"] || s["accepts_writes"] == false)
                })
            });
        if !ok {
            last = statuses
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join("\n");
        }
        ok
    });
    assert!(settled, "the cluster did not settle on {master}:\n{last}");
    eprintln!("settled in {:?}", settle_start.elapsed());

    // The logs: one writer per epoch, the one promoted in it, for kept and
    // discarded entries alike; the policy text is the master's everywhere.
    let statuses: Vec<serde_json::Value> = chaos.live().iter().map(|n| n.status()).collect();
    let log = &statuses[0]["log"];
    for run in log["epochs"].as_array().unwrap() {
        let epoch = run["epoch"].as_u64().unwrap();
        assert_eq!(
            chaos.masters.get(&epoch).map(String::as_str),
            run["origin"].as_str(),
            "epoch {epoch} written by {} in the final log; masters {:?}",
            run["origin"],
            chaos.masters
        );
    }
    let mut discarded = 0;
    for s in &statuses {
        for d in s["discarded"].as_array().unwrap() {
            discarded += 1;
            let epoch = d["csn"]["epoch"].as_u64().unwrap();
            assert_eq!(
                chaos.masters.get(&epoch).map(String::as_str),
                d["csn"]["origin"].as_str(),
                "{} discarded {d}, written in epoch {epoch} by another node than its master; masters {:?}",
                s["node"],
                chaos.masters
            );
        }
    }
    let text = chaos.nodes[chaos.master].ok(&["cluster", "policy", "show"]);
    for node in chaos.live() {
        assert_eq!(
            node.ok(&["cluster", "policy", "show"]),
            text,
            "{}",
            node.name
        );
    }
    eprintln!(
        "final log {} ({} discarded changes on the way; {} policy changes applied)",
        log,
        discarded,
        chaos.version - 1
    );
}

/// The case the default seed found (a handover reused an epoch): gw2 is
/// promoted to epoch 2 with gw3's promise and dies before any peer heard of
/// epoch 2 from it; gw1, the master of epoch 1, comes back. gw3 sees gw1 as
/// its reachable master, so `promote --force` is a handover from gw1: it
/// must take epoch 3, since gw2 may have (and did) commit changes in
/// epoch 2. gw2 then returns, steps down and discards them.
#[test]
fn a_handover_after_an_unnoticed_promotion_takes_a_new_epoch() {
    let mut nodes = cluster("127.66.1");
    let kill = |node: &mut Node| {
        signal(node.gw.pid(), "KILL");
        assert!(node.gw.wait_exit(Duration::from_secs(10)).is_some());
    };
    kill(&mut nodes[0]);
    let out = nodes[1].ok(&["cluster", "promote"]);
    assert!(out.contains("gw2 is now the master at epoch 2"), "{out}");
    nodes[1].apply_policy("p.toml", "[routing]\nmax_attempts = 9\n");
    kill(&mut nodes[1]);
    nodes[0].gw.restart();
    let out = nodes[2].ok(&["cluster", "promote", "--force"]);
    assert!(out.contains("gw3 is now the master at epoch 3"), "{out}");
    nodes[1].gw.restart();
    let all: Vec<&Node> = nodes.iter().collect();
    let mut last = String::new();
    let settled = eventually(SETTLE, || {
        let now = writers(&all);
        assert!(
            now.iter().all(|(epoch, name)| *epoch != 3 || name == "gw3"),
            "{now:?}"
        );
        let statuses: Vec<Option<serde_json::Value>> = all.iter().map(|n| try_status(n)).collect();
        let ok = now == [(3, "gw3".to_owned())]
            && statuses.iter().all(|s| {
                s.as_ref().is_some_and(|s| {
                    s["master"] == "gw3"
                        && s["epoch"] == 3
                        && s["log"] == statuses[2].as_ref().unwrap()["log"]
                })
            });
        last = format!("{now:?} {statuses:?}");
        ok
    });
    assert!(settled, "{last}");
    // Rarely gw3 hears of epoch 2 before gw2 dies and keeps its changes;
    // usually gw2's epoch 2 is discarded. Either way one writer per epoch.
    let gw2 = nodes[1].status();
    let runs: Vec<(u64, String)> = gw2["log"]["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["epoch"].as_u64().unwrap(),
                r["origin"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let discarded: Vec<(u64, String)> = gw2["discarded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["csn"]["epoch"].as_u64().unwrap(),
                d["summary"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let masters = ["", "gw1", "gw2", "gw3"];
    assert!(
        runs.iter()
            .all(|(e, o)| masters.get(*e as usize) == Some(&o.as_str())),
        "{runs:?}"
    );
    assert_eq!(runs.last().map(|r| r.0), Some(3), "{runs:?}");
    if !runs.iter().any(|r| r.0 == 2) {
        assert!(
            discarded
                .iter()
                .any(|(e, s)| *e == 2 && s.contains("promoted")),
            "{discarded:?}"
        );
    }
}
