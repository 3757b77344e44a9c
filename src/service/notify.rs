//! systemd's notify protocol (`Type=notify`), through the `sd-notify`
//! crate: `READY=1`, `RELOADING=1` with `MONOTONIC_USEC`, `STOPPING=1`,
//! `STATUS=`, `MAINPID=` after a binary upgrade, and watchdog pings.
//!
//! Every function is a no-op when `NOTIFY_SOCKET` is not set (not run by
//! systemd). `NOTIFY_SOCKET` stays in the environment: the successor of a
//! binary upgrade, a child of this process, notifies on it too (the unit
//! has `NotifyAccess=all`).

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::debug;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// Every listener is bound and the admin socket answers. A process that
/// replaced its predecessor says first that it is the main process now.
pub fn ready(status: &str, replaced_predecessor: bool) {
    let pid = std::process::id();
    let mut states = vec![NotifyState::Ready, NotifyState::Status(status)];
    if replaced_predecessor {
        states.insert(0, NotifyState::MainPid(pid));
    }
    send(&states);
}

/// A reload (SIGHUP) begins.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => debug!(error = %e, "no monotonic clock for RELOADING"),
    }
}

/// The reload ended (applied or refused): serving again.
pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The drain began.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// A line of status for `systemctl status`.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC` for this
/// process), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half of `interval` until `stop`.
pub fn spawn_watchdog(interval: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval((interval / 2).max(Duration::from_millis(10)));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    });
}
