//! The daemon behind its admin socket: what `mxgate serve` and the demo run.
//! The socket is bound before anything else, so a second daemon on the same
//! `data_dir` is refused before it binds a listener. A daemon that
//! replaces a running one (`mxgate upgrade`) inherits the socket instead.
//! Once it answers, systemd hears `READY=1`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};

use super::server;
use crate::config::Config;
use crate::daemon::{self, Daemon};
use crate::service::handover::{Predecessor, Step};
use crate::service::{notify, sockets};

/// Starts the daemon of `config` and answers its admin socket
/// (`config_path` is re-read on reload; `None`: reload does nothing).
/// With a `predecessor`, the sockets came from it and it hears `ready`.
pub async fn start(
    config: Config,
    config_path: Option<PathBuf>,
    mut predecessor: Option<Predecessor>,
) -> anyhow::Result<Daemon> {
    let data_dir = &config.node.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let admin_path = config.node.admin_socket();
    let socket = server::bind(&admin_path)?;
    let daemon = match daemon::start(config, config_path, &mut predecessor).await {
        Ok(daemon) => daemon,
        Err(e) => {
            // An inherited socket is the predecessor's, which keeps serving.
            if predecessor.is_none() {
                let _ = std::fs::remove_file(&admin_path);
            }
            return Err(e);
        }
    };
    let gateway = daemon.gateway.clone();
    tokio::spawn(server::serve(socket, gateway.clone(), daemon.stopping()));
    sockets::close_unclaimed();
    if let Some(p) = &mut predecessor {
        let ready = Step::Ready {
            pid: std::process::id(),
        };
        // Serving is what counts: a predecessor that is gone changes nothing.
        if let Err(e) = p.send(&ready) {
            warn!("the daemon this one replaces did not hear that it is ready: {e}");
        }
    }
    notify::ready(&daemon::status_line(&gateway), predecessor.is_some());
    if let Some(interval) = daemon.watchdog() {
        notify::spawn_watchdog(interval, daemon.stopping());
    }
    info!(node = %gateway.snapshot().config.node.name, admin = %admin_path.display(), pid = std::process::id(), "ready");
    Ok(daemon)
}

/// `mxgate serve`: start, then run until SIGTERM or SIGINT (or until a
/// successor took over).
pub async fn serve_daemon(
    config: Config,
    config_path: PathBuf,
    predecessor: Option<Predecessor>,
) -> anyhow::Result<()> {
    let signals = daemon::Signals::install()?;
    start(config, Some(config_path), predecessor)
        .await?
        .run_until_signal(signals)
        .await
}

/// How long `mxgate upgrade` waits for the answer (the daemon's own
/// limits on each step end it first).
pub const UPGRADE_WITHIN: Duration = Duration::from_secs(180);
