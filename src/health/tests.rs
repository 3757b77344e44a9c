//! Scheduler tests under a paused tokio clock: check times are exact.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;

const INTERVAL: Duration = Duration::from_secs(5);

/// A scheduler run with a scripted check.
struct Run {
    table: Arc<MemberTable>,
    /// Check start times, in whole seconds after `t0`.
    starts: Arc<Mutex<Vec<u64>>>,
    stop: CancellationToken,
    t0: Instant,
}

impl Run {
    /// Starts the scheduler: one outcome per check from `script` (true:
    /// pass), then passes; each check takes `took`.
    fn start(script: Vec<bool>, took: Duration) -> Run {
        let table = MemberTable::new();
        let job = Job {
            member: "gw1".into(),
            service: Service::Smtp,
            check: Check::Unusable {
                kind: "smtp",
                reason: "scripted".into(),
            },
            interval: INTERVAL,
            timeout: Duration::from_secs(2),
            thresholds: Thresholds { rise: 2, fall: 3 },
        };
        table.set_check(&job.member, job.service, Some(job.fresh_state()), true);
        let stop = CancellationToken::new();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let script = Arc::new(Mutex::new(script.into_iter()));
        let seen = starts.clone();
        tokio::spawn(schedule(job, table.clone(), stop.clone(), move || {
            let script = script.clone();
            let seen = seen.clone();
            async move {
                seen.lock().expect("lock").push(t0.elapsed().as_secs());
                tokio::time::sleep(took).await;
                match script.lock().expect("lock").next() {
                    Some(false) => Outcome::Fail("refused".into()),
                    _ => Outcome::Pass,
                }
            }
        }));
        Run {
            table,
            starts,
            stop,
            t0,
        }
    }

    /// Lets the paused clock run to `secs` after start (and a hair past it).
    async fn at(&self, secs: u64) {
        let when = self.t0 + Duration::from_secs(secs) + Duration::from_millis(1);
        tokio::time::sleep_until(when).await;
    }

    fn up(&self) -> bool {
        self.table.health("gw1").healthy
    }

    fn starts(&self) -> Vec<u64> {
        self.starts.lock().expect("lock").clone()
    }
}

#[tokio::test(start_paused = true)]
async fn first_check_at_once_then_every_interval_with_exact_fall_and_rise() {
    let run = Run::start(vec![false, false, false, true, true], Duration::ZERO);
    run.at(0).await;
    assert_eq!(run.starts(), [0], "first check at once");
    assert!(run.up(), "1 of 3 failures: still up");
    run.at(5).await;
    assert!(run.up(), "2 of 3 failures: still up");
    run.at(10).await;
    let h = run.table.health("gw1");
    assert!(!h.healthy, "3rd failure, at (fall - 1) x interval: down");
    assert_eq!(
        h.reason.as_deref(),
        Some("smtp check failed: refused (3 of 3 checks); 0 of 2 passing checks to come back")
    );
    run.at(15).await;
    assert!(!run.up(), "1 of 2 passes: still down");
    run.at(20).await;
    assert!(run.up(), "2 of 2 passes: up");
    assert_eq!(run.starts(), [0, 5, 10, 15, 20]);
    let report = run.table.service_report("gw1", Service::Smtp);
    assert_eq!(
        (report.check, report.passes, report.failures),
        (Some("smtp"), 2, 0)
    );
    assert!(report.last_check.is_some_and(|l| l.passed));
    run.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn slow_checks_never_overlap() {
    let run = Run::start(vec![], Duration::from_secs(7));
    run.at(22).await;
    // Each check takes longer than the interval: the next starts when it ends.
    assert_eq!(run.starts(), [0, 7, 14, 21]);
    run.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn passive_failure_needs_rise_checks_started_after_it() {
    let run = Run::start(vec![], Duration::from_secs(2));
    run.at(6).await;
    // During the check that started at 5 s (it will pass at 7 s).
    run.table
        .mark_failed("gw1", "connect refused", Duration::from_secs(30));
    assert!(!run.up(), "suspect: down at once");
    run.at(7).await;
    assert!(
        !run.up(),
        "the check in flight at the failure does not count"
    );
    run.at(12).await;
    assert!(!run.up(), "1 of 2 passes since");
    run.at(17).await;
    assert!(
        run.up(),
        "2 of 2 passes since: up, long before the 30 s back-off"
    );
    run.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn stop_ends_the_checks() {
    let run = Run::start(vec![], Duration::ZERO);
    run.at(5).await;
    run.stop.cancel();
    run.at(30).await;
    assert_eq!(run.starts(), [0, 5]);
}

#[tokio::test(start_paused = true)]
async fn unchecked_services_keep_the_back_off() {
    let table = MemberTable::new();
    table.mark_failed("gw2", "connect refused", Duration::from_secs(10));
    assert!(!table.health("gw2").healthy);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(table.health("gw2").healthy);
    // GINA health is separate from SMTP health.
    table.mark_service_failed("gw2", Service::Gina, "503", Duration::from_secs(10));
    assert!(table.health("gw2").healthy);
    assert!(!table.service_health("gw2", Service::Gina).healthy);
}

/// Loads a configuration with `policy` as cluster.toml.
fn config(policy: &str) -> crate::config::Config {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = "[node]\nname = \"n1\"\ndata_dir = \"data\"\npolicy = \"cluster.toml\"\n\
                [[smtp]]\nname = \"in\"\nlisten = \"127.0.0.1:0\"\nhostname = \"mx.test\"\n";
    std::fs::write(dir.path().join("mxgate.toml"), node).expect("write");
    std::fs::write(dir.path().join("cluster.toml"), policy).expect("write");
    crate::config::load(&dir.path().join("mxgate.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// (member, service, kind) of every job.
fn jobs(plan: &Plan) -> Vec<(String, Service, &'static str)> {
    plan.jobs
        .iter()
        .map(|j| (j.member.clone(), j.service, j.check.kind()))
        .collect()
}

#[test]
fn plans_one_job_per_checked_upstream() {
    let members = "[members.a]\nsmtp = \"127.0.0.1:25\"\ngina = \"127.0.0.1:80\"\n\
                   [members.b]\ngina = \"https://127.0.0.1:443\"\n\
                   [members.c]\nsmtp = \"127.0.0.1:2525\"\n";
    let s = |m: &str, service, kind| (m.to_owned(), service, kind);
    let plan = Plan::new(&config(members), None);
    assert_eq!(
        jobs(&plan),
        [
            s("a", Service::Smtp, "smtp"),
            s("a", Service::Gina, "http"),
            s("b", Service::Gina, "http"),
            s("c", Service::Smtp, "smtp")
        ]
    );
    let Some(Check::Smtp(spec)) = plan.jobs.first().map(|j| &j.check) else {
        panic!("{plan:?}")
    };
    assert_eq!(spec.ehlo_name, "mx.test");
    assert!(matches!(&plan.jobs[2].check, Check::Http(h) if h.tls.is_some() && h.path == "/"));
    assert_eq!(plan.jobs[0].timeout, plan.jobs[0].interval);

    let other = format!("[health]\nsmtp_check = \"tcp\"\ngina_check = \"none\"\n{members}");
    assert_eq!(
        jobs(&Plan::new(&config(&other), None)),
        [s("a", Service::Smtp, "tcp"), s("c", Service::Smtp, "tcp")]
    );
    let off = format!("[health]\nsmtp_check = \"none\"\ngina_check = \"tcp\"\n{members}");
    assert_eq!(
        jobs(&Plan::new(&config(&off), None)),
        [s("a", Service::Gina, "tcp"), s("b", Service::Gina, "tcp")]
    );
}

/// A plan with one always-failing SMTP job for `gw1` of `kind`.
fn failing_plan(kind: &'static str, interval: Duration) -> Plan {
    Plan {
        jobs: vec![Job {
            member: "gw1".into(),
            service: Service::Smtp,
            check: Check::Unusable {
                kind,
                reason: "scripted".into(),
            },
            interval,
            timeout: Duration::from_secs(1),
            thresholds: Thresholds { rise: 2, fall: 1 },
        }],
    }
}

#[tokio::test(start_paused = true)]
async fn reloads_keep_state_unless_the_check_changes() {
    let table = MemberTable::new();
    let stop = CancellationToken::new();
    let hour = Duration::from_secs(3600);
    let sup = Supervisor::start(table.clone(), failing_plan("smtp", hour), stop.clone());
    // Registered before start() returns.
    assert_eq!(
        table.service_report("gw1", Service::Smtp).check,
        Some("smtp")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = table.service_report("gw1", Service::Smtp);
    assert_eq!((r.healthy, r.failures), (false, 1), "first check at once");

    // Same check, another interval: the task restarts (checking at once), the state stays.
    sup.update(failing_plan("smtp", hour * 2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = table.service_report("gw1", Service::Smtp);
    assert_eq!(
        (r.healthy, r.failures),
        (false, 2),
        "state kept across the reload"
    );

    // Another kind of check: a fresh state (then its first check).
    sup.update(failing_plan("tcp", hour));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = table.service_report("gw1", Service::Smtp);
    assert_eq!((r.check, r.failures), (Some("tcp"), 1), "state reset");

    // Removed from the plan: no longer checked.
    sup.update(Plan::default());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(table.service_report("gw1", Service::Smtp).check, None);
    stop.cancel();
}

/// A rustls server configuration with a fresh self-signed certificate for 127.0.0.1.
pub(super) fn server_tls() -> Arc<tokio_rustls::rustls::ServerConfig> {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&c, cert.pem()).expect("write");
    std::fs::write(&k, key.serialize_pem()).expect("write");
    crate::tls::server_config(&c, &k).expect("server config")
}
