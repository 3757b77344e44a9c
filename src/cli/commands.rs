//! The commands of `mxgate` but `cluster` ([`super::cluster`]): run the
//! daemon, check the configuration, and ask the daemon (status, route
//! explain, DNS check, LFT status).

use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::Exit;
use super::call::{ANSWER_WITHIN, CallError, call};
use super::output::{answer, print_error, print_raw, print_text};
use crate::admin::{self, Request};
use crate::config;
use crate::descriptors::Budget;
use crate::service::handover::{Predecessor, Step};

/// How long a DNS check may take.
const DNS_CHECK_WITHIN: Duration = Duration::from_secs(300);
/// The monitoring-plugin code for "no report".
const PLUGIN_UNKNOWN: u8 = 3;

/// Loads both files and checks that every certificate, key and CA file is usable.
fn load_checked(path: &Path) -> Result<config::Config, config::ConfigErrors> {
    let config = config::load(path)?;
    crate::tls::TlsSnapshot::load(&config)?;
    Ok(config)
}

/// `mxgate serve`.
/// Started by `mxgate upgrade`, it first takes the sockets of the daemon it
/// replaces, and tells that daemon when its configuration is refused.
pub fn serve(path: &Path) -> ExitCode {
    let mut predecessor = match Predecessor::from_environment() {
        Ok(predecessor) => predecessor,
        Err(e) => {
            print_error(&format!(
                "mxgate: cannot take over from the running daemon: {e}"
            ));
            return Exit::Software.into();
        }
    };
    crate::service::sockets::inherit_from_systemd();
    let config = match load_checked(path) {
        Ok(config) => config,
        Err(errors) => {
            if let Some(p) = &mut predecessor {
                let reason = format!("the new binary refuses {}:\n{errors}", path.display());
                let _ = p.send(&Step::Failed { reason });
            }
            print_error(&format!(
                "{errors}\nmxgate: configuration refused; fix the lines above and start again"
            ));
            return Exit::Config.into();
        }
    };
    crate::logging::init(config.log.format, &config.log.level);
    let workers = config.node.worker_threads;
    let serving = admin::serve_daemon(config, path.to_path_buf(), predecessor);
    run_async_on(serving, workers)
}

/// `mxgate upgrade`: the daemon starts the binary now installed at its
/// path, hands it its sockets and drains once it serves.
pub fn upgrade(path: &Path) -> ExitCode {
    let answered = call(path, &Request::Upgrade, admin::UPGRADE_WITHIN);
    answer(answered, false, |value| {
        let done: crate::daemon::Upgraded =
            serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        Ok(format!(
            "upgraded: pid {} ({}) serves now; pid {} drains its {} session(s) and exits",
            done.new_pid, done.binary, done.old_pid, done.draining_sessions
        ))
    })
    .into()
}

/// `mxgate check-config`.
pub fn check_config(path: &Path) -> ExitCode {
    match load_checked(path) {
        Ok(config) => {
            let printed = print_raw(&config::render_effective(&config));
            let workers = crate::workers::count(config.node.worker_threads);
            let limit = crate::descriptors::hard_limit();
            if let Some(warning) = Budget::plan(limit, &config, workers).warning() {
                print_error(&format!("mxgate: warning: {warning}"));
            }
            print_error(&format!(
                "mxgate: {} and {} are valid",
                path.display(),
                config.node.policy.display()
            ));
            printed.into()
        }
        Err(errors) => {
            print_error(&format!(
                "{errors}\nmxgate: {} error(s); fix them and run check-config again",
                errors.0.len()
            ));
            Exit::Config.into()
        }
    }
}

/// `mxgate status`.
pub fn status(path: &Path, json: bool) -> ExitCode {
    let answered = call(path, &Request::Status, ANSWER_WITHIN);
    answer(answered, json, |value| {
        serde_json::from_value::<admin::Status>(value.clone())
            .map(|status| admin::render_text(&status))
            .map_err(|e| e.to_string())
    })
    .into()
}

/// `mxgate route explain`.
pub fn route_explain(
    path: &Path,
    (client, dest, listener): (IpAddr, Option<IpAddr>, Option<String>),
    json: bool,
) -> ExitCode {
    let request = Request::RouteExplain {
        client,
        dest,
        listener,
        text: !json,
    };
    answer(call(path, &request, ANSWER_WITHIN), json, |value| {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "expected the explanation text".to_owned())
    })
    .into()
}

/// `mxgate lft status`.
pub fn lft_status(path: &Path, json: bool) -> ExitCode {
    let answered = call(path, &Request::LftStatus, ANSWER_WITHIN);
    answer(answered, json, |value| {
        serde_json::from_value::<crate::lft::status::LftStatus>(value.clone())
            .map(|status| crate::lft::status::render_text(&status))
            .map_err(|e| e.to_string())
    })
    .into()
}

/// `mxgate dns check`: the daemon runs the check; the exit code is the
/// report's (plugin codes); anything that prevents a report is UNKNOWN (3).
pub fn dns_check(path: &Path, domains: Vec<String>, json: bool) -> ExitCode {
    let unknown = |short: &str, detail: &str| {
        let printed = print_text(&format!("DNS UNKNOWN - {short}"));
        print_error(&format!("mxgate: {detail}"));
        match printed {
            Exit::Ok => ExitCode::from(PLUGIN_UNKNOWN),
            other => other.into(),
        }
    };
    let request = Request::DnsCheck { domains };
    let value = match call(path, &request, DNS_CHECK_WITHIN) {
        Ok(value) => value,
        Err(e) => {
            let short = match &e {
                CallError::Unreadable { .. } => format!("cannot read {}", path.display()),
                CallError::Invalid { .. } => format!("{} is invalid", path.display()),
                CallError::Unreachable { socket, .. } => {
                    format!("cannot reach the mxgate daemon at {}", socket.display())
                }
                _ => e.to_string(),
            };
            return unknown(&short, &e.to_string());
        }
    };
    let report: crate::dns::CheckReport = match serde_json::from_value(value.clone()) {
        Ok(report) => report,
        Err(e) => return unknown("bad answer from the daemon", &e.to_string()),
    };
    let printed = if json {
        print_raw(&serde_json::to_string_pretty(&value).unwrap_or_default())
    } else {
        print_text(&crate::dns::render_text(&report))
    };
    match printed {
        Exit::Ok => ExitCode::from(report.exit_code),
        other => other.into(),
    }
}

/// Runs `fut` on a runtime with one worker per CPU.
pub fn run_async(fut: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    run_async_on(fut, 0)
}

/// The runtime for `[node] worker_threads`: 1 is tokio's current-thread
/// runtime (one event loop: no cross-thread wake-ups or work stealing, the
/// cheapest per session and message; see docs/performance.md), N > 1 a
/// multi-thread runtime with N workers, 0 one worker per CPU.
fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Runtime::new(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

fn run_async_on(fut: impl Future<Output = anyhow::Result<()>>, worker_threads: usize) -> ExitCode {
    let runtime = match runtime(worker_threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            print_error(&format!("mxgate: cannot start the async runtime: {e}"));
            return Exit::Software.into();
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&format!("mxgate: {e:#}"));
            Exit::Failed.into()
        }
    }
}
