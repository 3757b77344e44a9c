//! `mxgate demo`: the product working on 127.0.0.1 with nothing installed.
//!
//! Starts two built-in sink MTAs ([`sink`]) and two GINA web members
//! ([`web`]), writes a configuration for them into a temporary directory,
//! runs the daemon in this process with SMTP on 127.0.0.1:2525, the GINA
//! proxy on 127.0.0.1:8080 and Prometheus metrics on 127.0.0.1:9325, and
//! prints commands to try. `mxgate demo --cluster` is [`cluster`]: three
//! backends and a frontend as child processes, formed into a cluster.

pub mod cluster;
pub mod sink;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::config::{self, LogFormat};
use crate::{admin, logging};

/// Where the demo's SMTP listener is.
pub const DEMO_SMTP: &str = "127.0.0.1:2525";

/// Where the demo's GINA (HTTP) listener is.
pub const DEMO_HTTP: &str = "127.0.0.1:8080";

/// Where the demo's metrics endpoint is.
pub const DEMO_METRICS: &str = "127.0.0.1:9325";

/// What the demo logs: the usual lines, and every routing decision.
pub const LOG_LEVEL: &str = "info,mxgate::route=debug";

/// Runs the demo until Ctrl-C.
pub async fn run() -> anyhow::Result<()> {
    logging::init(LogFormat::Text, LOG_LEVEL);
    let dir = std::env::temp_dir().join(format!("mxgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let sink1 = sink::start("sink1").await?;
    let sink2 = sink::start("sink2").await?;
    let web1 = web::start("sink1").await?;
    let web2 = web::start("sink2").await?;
    let config_path = write_config(&dir, [sink1, sink2], [web1, web2])?;
    let config =
        config::load(&config_path).map_err(|e| anyhow::anyhow!("demo configuration: {e}"))?;
    let daemon = admin::start(config, Some(config_path.clone()), None)
        .await
        .with_context(|| {
            format!(
                "cannot start the demo on {DEMO_SMTP}, {DEMO_HTTP} and {DEMO_METRICS} (is another demo running?)"
            )
        })?;
    let exe = std::env::args().next().unwrap_or_else(|| "mxgate".into());
    let cfg = config_path.display();
    // The demo serves on when nobody reads its stdout.
    let _ = crate::stdout::write_lines(&format!(
        "\nmxgate demo is running.\n\
         \x20 SMTP     {DEMO_SMTP}  -> members sink1 ({sink1}) and sink2 ({sink2}), built-in sink MTAs\n\
         \x20 GINA     http://{DEMO_HTTP}/  -> the same members' web portals sink1 ({web1}) and sink2 ({web2})\n\
         \x20 metrics  http://{DEMO_METRICS}/metrics  (Prometheus text)\n\n\
         Try, in another terminal:\n\
         \x20 swaks --server {DEMO_SMTP} --from alice@example.org --to bob@example.com\n\
         \x20 swaks --server {DEMO_SMTP} --to bob@example.com --pipeline --data 'Subject: hi\\n\\nhello'\n\
         \x20 curl -si http://{DEMO_HTTP}/portal\n\
         \x20 curl -s --interface 127.0.0.2 http://{DEMO_HTTP}/portal   (another client address, maybe another member)\n\
         \x20 curl -s http://{DEMO_METRICS}/metrics | grep ^mxgate_\n\
         \x20 {exe} status -c {cfg}\n\
         \x20 {exe} route explain -c {cfg} --client 203.0.113.7\n\
         Every routing decision, every message the sinks take and every web request is logged below. Ctrl-C stops the demo.\n"
    ));
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    daemon.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn write_config(
    dir: &std::path::Path,
    [sink1, sink2]: [SocketAddr; 2],
    [web1, web2]: [SocketAddr; 2],
) -> anyhow::Result<PathBuf> {
    let node = format!(
        "# Written by `mxgate demo`.\n\
         [node]\nname = \"demo\"\ndata_dir = \"data\"\npolicy = \"cluster.toml\"\n\n\
         [[smtp]]\nname = \"demo\"\nlisten = \"{DEMO_SMTP}\"\nhostname = \"mx.demo.test\"\n\
         # A demo on a laptop: well within a 1024-descriptor limit (docs/configuration.md).\n\
         max_sessions = 200\n\n\
         [[http]]\nname = \"gina\"\nlisten = \"{DEMO_HTTP}\"\nsticky_cookie = \"MXGATE_MEMBER\"\n\n\
         [metrics]\nlisten = \"{DEMO_METRICS}\"\n"
    );
    let policy = format!(
        "# Written by `mxgate demo`: two built-in sink MTAs with web portals as members.\n\
         [routing]\naffinity = \"source-destination\"\n\n\
         [members.sink1]\nsmtp = \"{sink1}\"\ngina = \"{web1}\"\ncomment = \"built-in sink MTA and web member\"\n\n\
         [members.sink2]\nsmtp = \"{sink2}\"\ngina = \"{web2}\"\ncomment = \"built-in sink MTA and web member\"\n"
    );
    let node_path = dir.join("mxgate.toml");
    std::fs::write(&node_path, node)
        .with_context(|| format!("cannot write {}", node_path.display()))?;
    let policy_path = dir.join("cluster.toml");
    std::fs::write(&policy_path, policy)
        .with_context(|| format!("cannot write {}", policy_path.display()))?;
    Ok(node_path)
}
