//! Serving admin requests inside the daemon.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Request, Response, status};
use crate::accept::Bounded;
use crate::daemon::Gateway;
use crate::descriptors::ADMIN_CONNECTIONS;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the admin socket with mode 0600, replacing a stale one. Refuses to
/// start when another daemon answers on it.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let inherited = crate::service::sockets::inherited_unix_listener(path)
        .with_context(|| format!("cannot use the inherited admin socket {}", path.display()))?;
    if let Some(listener) = inherited {
        return UnixListener::from_std(listener)
            .with_context(|| format!("cannot use the inherited admin socket {}", path.display()));
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another mxgate daemon is running with data_dir {} (its admin socket answers); stop it first",
                path.parent()
                    .map_or_else(String::new, |p| p.display().to_string())
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale admin socket {}", path.display()))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot bind admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set mode 0600 on {}", path.display()))?;
    listener.set_nonblocking(true)?;
    // Held for a successor (`mxgate upgrade`).
    crate::service::sockets::hold_unix(&listener)?;
    Ok(UnixListener::from_std(listener)?)
}

/// Answers admin requests until `stop` is cancelled, at most
/// [`ADMIN_CONNECTIONS`] at once (the next wait in the socket's backlog).
pub async fn serve(listener: UnixListener, gateway: Arc<Gateway>, stop: CancellationToken) {
    let mut accepting = Bounded::new("admin", ADMIN_CONNECTIONS);
    while let Some(((stream, _), place)) = accepting.next(&stop, || listener.accept()).await {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let _place = place;
            answer(stream, gateway).await;
        });
    }
}

async fn answer(stream: UnixStream, gateway: Arc<Gateway>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return,
        Err(_) => {
            warn!("admin request not received within {REQUEST_TIMEOUT:?}; closed");
            return;
        }
    }
    let result = match serde_json::from_str::<Request>(&line) {
        Ok(Request::DnsCheck { domains }) => {
            let policy = gateway.snapshot().config.policy.clone();
            let report = crate::dns::check(&policy, &domains).await;
            serde_json::to_value(report).map_err(|e| e.to_string())
        }
        Ok(Request::Cluster(request)) => {
            let answer = crate::cluster::admin::handle(gateway.cluster.get(), request).await;
            // A change is answered once the daemon uses the policy it published.
            gateway.follow_cluster_policy();
            answer
        }
        Ok(Request::Upgrade) => {
            let (written, wait_written) = tokio::sync::oneshot::channel();
            let result = upgrade(&gateway, wait_written).await;
            respond(&mut write, result).await;
            // The daemon may give way now: its answer is out.
            let _ = written.send(());
            return;
        }
        Ok(request) => handle(&gateway, request),
        Err(e) => Err(format!("bad request: {e}")),
    };
    respond(&mut write, result).await;
}

/// Writes the one response line of a request.
async fn respond(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    result: Result<serde_json::Value, String>,
) {
    let response = match result {
        Ok(result) => Response {
            ok: true,
            result: Some(result),
            error: None,
        },
        Err(error) => Response {
            ok: false,
            result: None,
            error: Some(error),
        },
    };
    if let Ok(mut text) = serde_json::to_string(&response) {
        text.push('\n');
        let _ = write.write_all(text.as_bytes()).await;
    }
}

/// `upgrade`: asks the run loop, which answers once the successor serves
/// or the upgrade failed.
async fn upgrade(
    gateway: &Gateway,
    written: tokio::sync::oneshot::Receiver<()>,
) -> Result<serde_json::Value, String> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    gateway.request_upgrade(reply, written);
    let upgraded = answer
        .await
        .map_err(|_| "the daemon stopped before the upgrade ended".to_string())??;
    serde_json::to_value(upgraded).map_err(|e| e.to_string())
}

fn handle(gateway: &Gateway, request: Request) -> Result<serde_json::Value, String> {
    let value = match request {
        Request::Status => serde_json::to_value(status::collect(gateway)),
        Request::RouteExplain {
            client,
            dest,
            listener,
            text,
        } => {
            let route = status::explain(gateway, client, dest, listener.as_deref())?;
            if text {
                Ok(serde_json::Value::String(route.render_text()))
            } else {
                serde_json::to_value(route)
            }
        }
        Request::LftStatus => serde_json::to_value(crate::lft::status::collect(
            gateway.lft.get().map(|lft| &**lft),
            &gateway.snapshot().config.policy,
        )),
        Request::DnsCheck { .. } | Request::Cluster(_) | Request::Upgrade => {
            return Err("this request is answered asynchronously".into());
        }
    };
    value.map_err(|e| e.to_string())
}
