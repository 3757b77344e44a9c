//! The daemon behind its admin socket: what `mxgate serve` and the demo run.
//! The socket is bound before anything else, so a second daemon on the same
//! `data_dir` is refused before it binds a listener.

use std::path::PathBuf;

use anyhow::Context;
use tracing::info;

use super::server;
use crate::config::Config;
use crate::daemon::{self, Daemon};

/// Starts the daemon of `config` and answers its admin socket
/// (`config_path` is re-read on reload; `None`: reload does nothing).
pub async fn start(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<Daemon> {
    let data_dir = &config.node.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let admin_path = config.node.admin_socket();
    let socket = server::bind(&admin_path)?;
    let daemon = match daemon::start(config, config_path).await {
        Ok(daemon) => daemon,
        Err(e) => {
            let _ = std::fs::remove_file(&admin_path);
            return Err(e);
        }
    };
    let gateway = daemon.gateway.clone();
    tokio::spawn(server::serve(socket, gateway.clone(), daemon.stopping()));
    info!(node = %gateway.snapshot().config.node.name, admin = %admin_path.display(), "ready");
    Ok(daemon)
}

/// `mxgate serve`: start, then run until SIGTERM or SIGINT.
pub async fn serve_daemon(config: Config, config_path: PathBuf) -> anyhow::Result<()> {
    start(config, Some(config_path))
        .await?
        .run_until_signal()
        .await
}
