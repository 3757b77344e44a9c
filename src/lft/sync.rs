//! Synchronisation over the cluster's mutual TLS: the uploader works the
//! durable queue (`PUT /lft/SHA256` to each target's control-plane address,
//! back-off on failure) and the receiver stores what an allowed member sends
//! after checking the hash.
//!
//! The uploader connects from this node's `[cluster] advertise` address with
//! its node certificate, like every control-plane request. The receiver
//! accepts an upload only when the effective policy's `lft_sync_to` of the
//! calling member (identified by its certificate) names the receiving node.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Lft;
use super::queue::Entry;
use super::store::{Meta, hex, is_sha256, sha256_hex, unhex};
use crate::cluster::server::Attachments;
use crate::cluster::transport;
use crate::cluster::{ClusterNode, MemberRecord, time};

/// Header carrying the attachment's [`Meta`] as hex-encoded JSON.
pub const H_META: &str = "x-mxgate-lft-meta";
/// Longest time one upload may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Works the queue until `stop`: due entries are uploaded; the task sleeps
/// until the next one is due or new entries arrive.
pub async fn run(lft: Arc<Lft>, stop: CancellationToken) {
    loop {
        let now = time::now();
        for entry in lft.queue.due(now) {
            if stop.is_cancelled() {
                return;
            }
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                outcome = upload(&lft, &entry) => outcome,
            };
            match &outcome {
                Ok(()) => {
                    info!(sha256 = %entry.sha256, target = %entry.target, "LFT attachment synchronised")
                }
                Err((reason, fatal)) => {
                    warn!(sha256 = %entry.sha256, target = %entry.target, attempt = entry.attempts + 1, reason = %reason, gave_up = fatal, "LFT upload failed")
                }
            }
            if let Err(e) = lft.queue.record(&entry, outcome, time::now()) {
                warn!(error = %e, "LFT queue entry not updated");
            }
        }
        lft.refresh_metrics();
        let wait = lft
            .queue
            .next_due()
            .map_or(60, |t| t.saturating_sub(time::now()))
            .clamp(1, 60);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = lft.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
        }
    }
}

/// One attempt: `Err((reason, final))`.
async fn upload(lft: &Lft, entry: &Entry) -> Result<(), (String, bool)> {
    let retry = |r: String| (r, false);
    let fatal = |r: String| (r, true);
    let meta = match lft.store.meta(&entry.sha256) {
        Ok(Some(meta)) => meta,
        Ok(None) => {
            return Err(fatal(
                "the attachment is no longer in the local store".into(),
            ));
        }
        Err(e) => return Err(retry(e.to_string())),
    };
    let host = lft
        .host()
        .ok_or_else(|| retry("the daemon is stopping".into()))?;
    let policy = host.policy();
    let allowed = policy
        .member(&meta.source_member)
        .is_some_and(|m| m.lft_sync_to.contains(&entry.target));
    if !allowed {
        return Err(fatal(format!(
            "{} is no longer in the lft_sync_to of {}",
            entry.target, meta.source_member
        )));
    }
    let node = host
        .cluster()
        .ok_or_else(|| retry("this node has no [cluster]; uploads wait".into()))?;
    let record = node
        .replica()
        .state
        .live_members()
        .find(|m| m.name == entry.target)
        .cloned()
        .ok_or_else(|| {
            retry(format!(
                "{} is not a node of the cluster (yet)",
                entry.target
            ))
        })?;
    let data = tokio::fs::read(lft.store.object_path(&entry.sha256))
        .await
        .map_err(|e| retry(format!("cannot read the object: {e}")))?;
    let (status, body) = put(&node, &record.address, &meta, Bytes::from(data))
        .await
        .map_err(retry)?;
    let reason = || {
        format!(
            "{} answered {status}: {}",
            record.address,
            transport::error_text(&body, status)
        )
    };
    match status {
        200 => Ok(()),
        // 403: the target may not have the policy that allows it yet.
        403 | 408 | 429 => Err(retry(reason())),
        400..=499 => Err(fatal(reason())),
        _ => Err(retry(reason())),
    }
}

/// `PUT /lft/SHA256` with the content to the control plane at `target`,
/// through the control plane's client ([`transport::send`]).
pub async fn put(
    node: &ClusterNode,
    target: &str,
    meta: &Meta,
    data: Bytes,
) -> Result<(u16, Bytes), String> {
    let config = node.client_config().map_err(|e| e.to_string())?;
    let meta_json = serde_json::to_vec(meta).map_err(|e| e.to_string())?;
    let route = transport::Route {
        config: &config,
        bind: node.advertise.ip(),
        target,
    };
    let outgoing = transport::Outgoing {
        method: "PUT",
        path: &format!("/lft/{}", meta.sha256),
        content_type: "application/octet-stream",
        body: data,
        headers: &[(H_META, hex(&meta_json))],
    };
    let answer = transport::send(route, &node.sender(), outgoing, UPLOAD_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    Ok((answer.status, answer.body))
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&value).unwrap_or_default(),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn refuse(
    peer: SocketAddr,
    path: &str,
    status: StatusCode,
    reason: String,
) -> Response<Full<Bytes>> {
    warn!(%peer, %path, status = status.as_u16(), %reason, "LFT upload refused");
    json(status, serde_json::json!({ "error": reason }))
}

/// How long an upload of at most `max_size` bytes may take: 30 s plus the
/// time at 256 KiB/s, so a stalled member cannot hold a control-plane place.
fn upload_deadline(max_size: u64) -> Duration {
    Duration::from_secs(30 + max_size / (256 * 1024))
}

/// The control plane's `/lft/...` routes for an authenticated member:
/// `PUT /lft/SHA256` stores an upload when `caller` may sync to this node.
pub async fn serve_upload(
    lft: &Lft,
    node: &ClusterNode,
    peer: SocketAddr,
    caller: &MemberRecord,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let sha = path.strip_prefix("/lft/").unwrap_or_default().to_owned();
    if req.method() != hyper::Method::PUT {
        return refuse(
            peer,
            &path,
            StatusCode::METHOD_NOT_ALLOWED,
            "only PUT /lft/SHA256 is served here".into(),
        );
    }
    if !is_sha256(&sha) {
        return refuse(
            peer,
            &path,
            StatusCode::NOT_FOUND,
            "expected /lft/ and a SHA-256 in lowercase hex".into(),
        );
    }
    let Some(policy) = lft.policy() else {
        return refuse(
            peer,
            &path,
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is stopping".into(),
        );
    };
    let allowed = policy
        .member(&caller.name)
        .is_some_and(|m| m.lft_sync_to.contains(&node.name));
    if !allowed {
        return refuse(
            peer,
            &path,
            StatusCode::FORBIDDEN,
            format!(
                "{} may not synchronise LFT attachments to {} (not in its lft_sync_to)",
                caller.name, node.name
            ),
        );
    }
    let header_meta = req
        .headers()
        .get(H_META)
        .and_then(|v| v.to_str().ok())
        .and_then(unhex)
        .and_then(|b| serde_json::from_slice::<Meta>(&b).ok());
    let limit = usize::try_from(policy.lft.max_message_size).unwrap_or(usize::MAX);
    let deadline = upload_deadline(policy.lft.max_message_size);
    let collect = Limited::new(req.into_body(), limit).collect();
    let body = match tokio::time::timeout(deadline, collect).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return refuse(
                peer,
                &path,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the body (limit [lft] max_message_size): {e}"),
            );
        }
        Err(_) => {
            return refuse(
                peer,
                &path,
                StatusCode::REQUEST_TIMEOUT,
                format!("the upload did not arrive within {deadline:?}"),
            );
        }
    };
    // Hashing megabytes is CPU work: off the runtime.
    let (body, actual) = match tokio::task::spawn_blocking(move || {
        let actual = sha256_hex(&body);
        (body, actual)
    })
    .await
    {
        Ok(hashed) => hashed,
        Err(e) => {
            return refuse(
                peer,
                &path,
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            );
        }
    };
    if actual != sha {
        return refuse(
            peer,
            &path,
            StatusCode::BAD_REQUEST,
            format!("content does not match its SHA-256: got {actual}, expected {sha}"),
        );
    }
    // Already here (idempotent): success (the body was read so the sender sees the answer).
    if lft.store.contains(&sha) {
        return json(
            StatusCode::OK,
            serde_json::json!({ "stored": false, "present": true }),
        );
    }
    let meta = header_meta.unwrap_or_else(|| Meta {
        sha256: sha.clone(),
        file_name: None,
        content_type: "application/octet-stream".into(),
        size: 0,
        message_id: None,
        source_member: caller.name.clone(),
        time: time::now(),
    });
    let store = lft.store.clone();
    match tokio::task::spawn_blocking(move || store.put(&body, meta)).await {
        Ok(Ok((_, meta))) => {
            info!(%peer, from = %caller.name, sha256 = %meta.sha256, size = meta.size, "LFT attachment received");
            json(
                StatusCode::OK,
                serde_json::json!({ "stored": true, "present": true }),
            )
        }
        Ok(Err(e)) => refuse(
            peer,
            &path,
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        ),
        Err(e) => refuse(
            peer,
            &path,
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        ),
    }
}

impl Attachments for Lft {
    fn serve<'a>(
        &'a self,
        node: &'a ClusterNode,
        peer: SocketAddr,
        caller: &'a MemberRecord,
        req: Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send + 'a>> {
        Box::pin(serve_upload(self, node, peer, caller, req))
    }
}
