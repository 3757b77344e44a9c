//! The daemon's life after start: SIGHUP reloads, SIGTERM and SIGINT
//! drain, SIGUSR2 and the admin socket's `upgrade` replace the binary
//! ([`super::upgrade`]); systemd hears of each step (`service::notify`).
//! It ends in one of two ways: a drain (sessions finish their transaction,
//! then `421 4.3.2`), or giving way to a successor, which serves on the
//! same sockets while this process lets its sessions finish.

use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{Daemon, Gateway};
use crate::service::notify;

/// How often `STATUS=` is refreshed for `systemctl status`.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How long sessions that outlive a drain get to write their `421`.
const ABORT_GRACE: Duration = Duration::from_secs(5);

/// How the run ends.
enum End {
    /// SIGTERM or SIGINT.
    Drain,
    /// A successor serves now.
    GiveWay,
}

impl Daemon {
    /// Cancelled when the daemon stops accepting.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops accepting at once, lets sessions finish their transaction for up
    /// to `drain` (each then gets `421 4.3.2`), then ends the rest with `421 4.3.2`.
    pub async fn shutdown(self, drain: Duration) {
        self.stop.cancel();
        self.gateway.shutdown.drain();
        self.sessions.close();
        self.wait_then_abort(drain).await;
        let _ = std::fs::remove_file(&self.admin_path);
    }

    /// Waits up to `limit` for the sessions, then ends the rest with `421 4.3.2`.
    async fn wait_then_abort(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.sessions.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = self.sessions.len(),
                "drain timeout: ending the remaining sessions with 421 4.3.2"
            );
            self.gateway.shutdown.abort();
            // Each session only has its 421 to write; do not wait on a stuck peer for long.
            let _ = tokio::time::timeout(ABORT_GRACE, self.sessions.wait()).await;
        }
    }

    /// After a successor took over: this process stops accepting (the
    /// successor accepts on the same sockets, the admin socket included,
    /// which stays in place) and lets every session go on until it ends by
    /// itself, for up to `drain`; then it drains as on SIGTERM.
    async fn give_way(self, drain: Duration) {
        self.stop.cancel();
        self.sessions.close();
        info!(sessions = self.sessions.len(), drain_timeout = ?drain,
            "handed over to the new process: no new sessions here; those in flight go on");
        if tokio::time::timeout(drain, self.sessions.wait())
            .await
            .is_err()
        {
            self.gateway.shutdown.drain();
            self.wait_then_abort(ABORT_GRACE).await;
        }
    }

    /// Runs until SIGTERM or SIGINT (then drains), or until a successor
    /// took over (then gives way); reloads on SIGHUP.
    pub async fn run_until_signal(mut self, signals: Signals) -> anyhow::Result<()> {
        let Signals {
            mut hup,
            mut term,
            mut int,
            mut usr2,
        } = signals;
        spawn_status(self.gateway.clone(), self.stop.clone());
        let end = loop {
            tokio::select! {
                _ = hup.recv() => reload(&self.gateway),
                _ = usr2.recv() => {
                    info!("SIGUSR2: upgrading to the binary at the daemon's path");
                    if self.upgrade_answering(None).await {
                        break End::GiveWay;
                    }
                }
                Some(request) = self.upgrades.recv() => {
                    if self.upgrade_answering(Some(request)).await {
                        break End::GiveWay;
                    }
                }
                _ = term.recv() => break End::Drain,
                _ = int.recv() => break End::Drain,
            }
        };
        let drain = self.gateway.snapshot().config.node.drain_timeout;
        match end {
            End::Drain => {
                info!(drain_timeout = ?drain, "stopping: no new sessions; transactions in flight may finish");
                notify::stopping("draining");
                self.shutdown(drain).await;
            }
            End::GiveWay => self.give_way(drain).await,
        }
        info!("stopped");
        Ok(())
    }
}

/// The signals the daemon answers. Installed before the daemon starts, so
/// that one sent as soon as systemd hears `READY=1` (`systemctl reload` or
/// `stop`) waits for [`Daemon::run_until_signal`] instead of killing the
/// process (the default action) or being lost.
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
    usr2: Signal,
}

impl Signals {
    /// Catches SIGHUP, SIGTERM, SIGINT and SIGUSR2 from now on.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}

/// SIGHUP: re-reads the configuration, telling systemd.
fn reload(gateway: &Gateway) {
    notify::reloading();
    if let Err(errors) = gateway.reload() {
        error!("reload refused, the running configuration stays:\n{errors}");
    }
    notify::reloaded(&status_line(gateway));
}

/// `STATUS=` every [`STATUS_EVERY`] until `stop`.
fn spawn_status(gateway: std::sync::Arc<Gateway>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STATUS_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => notify::status(&status_line(&gateway)),
            }
        }
    });
}

/// One line for `systemctl status`: sessions now and members up.
pub fn status_line(gateway: &Gateway) -> String {
    let sessions = gateway.sessions_now();
    let snapshot = gateway.snapshot();
    let members = snapshot.router.status(&gateway.members);
    let up = members.iter().filter(|m| m.health.healthy).count();
    format!("{sessions} sessions, {up} of {} members up", members.len())
}
