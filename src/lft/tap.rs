//! The relay's side of LFT: [`Lft`] is the data plane's [`MessageTap`], and
//! the [`LftTap`] it gives for an injected message receives the bytes the
//! relay forwards to the member and hands them to a spool task without ever
//! waiting; the transaction's end-of-data result decides whether the spool
//! is parsed and stored or discarded. DATA content is unstuffed on its way
//! into the spool; BDAT chunks go in as they are ([`Framing`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::extract::{Unstuffer, extract};
use super::store::Meta;
use super::{Lft, MAX_IN_FLIGHT, MAX_SPOOLS};
use crate::config::Policy;
use crate::routing::Router;
use crate::smtp::tap::{Framing, MessageCopy, MessageTap};

/// Copies one message's relayed bytes to a spool task. Dropping it (or
/// [`MessageCopy::finish`] with `false`) discards the spool.
#[derive(Debug)]
pub struct LftTap {
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    done: Option<oneshot::Sender<bool>>,
    in_flight: Arc<AtomicU64>,
    size: u64,
    limit: u64,
    session: u64,
    source: String,
}

impl MessageTap for Lft {
    /// A tap for a message of `session` from `client`, when the client is a
    /// member (an injected message); `None` otherwise or when too many
    /// messages are being spooled.
    fn tap(
        &self,
        policy: &Arc<Policy>,
        router: &Router,
        client: std::net::IpAddr,
        session: u64,
        framing: Framing,
    ) -> Option<Box<dyn MessageCopy>> {
        let source = router.source_member(client)?.to_owned();
        let targets = policy.member(&source)?.lft_sync_to.clone();
        let lft = self.me.upgrade()?;
        if self.spools.fetch_add(1, Ordering::SeqCst) >= MAX_SPOOLS {
            self.spools.fetch_sub(1, Ordering::SeqCst);
            warn!(session, source = %source, "LFT: too many messages being spooled; this one is not searched for attachments");
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (done, outcome) = oneshot::channel();
        let job = Job {
            lft,
            path: self
                .dir
                .join("spool")
                .join(format!("{}.eml", uuid::Uuid::new_v4().simple())),
            session,
            source: source.clone(),
            targets,
            threshold: policy.lft.threshold,
            framing,
        };
        tokio::spawn(job.run(rx, outcome, self.in_flight.clone(), self.spools.clone()));
        Some(Box::new(LftTap {
            tx: Some(tx),
            done: Some(done),
            in_flight: self.in_flight.clone(),
            size: 0,
            limit: policy.lft.max_message_size,
            session,
            source,
        }))
    }
}

impl MessageCopy for LftTap {
    /// Takes a copy of bytes being forwarded (a reference count, no copy).
    fn feed(&mut self, chunk: &Bytes) {
        let Some(tx) = &self.tx else { return };
        self.size += chunk.len() as u64;
        let why = if self.size > self.limit {
            Some("the message is larger than [lft] max_message_size")
        } else if self
            .in_flight
            .fetch_add(chunk.len() as u64, Ordering::SeqCst)
            + chunk.len() as u64
            > MAX_IN_FLIGHT
        {
            self.in_flight
                .fetch_sub(chunk.len() as u64, Ordering::SeqCst);
            Some("the spool cannot keep up with the relay")
        } else if tx.send(chunk.clone()).is_err() {
            self.in_flight
                .fetch_sub(chunk.len() as u64, Ordering::SeqCst);
            Some("the spool task ended")
        } else {
            None
        };
        if let Some(why) = why {
            warn!(session = self.session, source = %self.source, reason = why, "LFT: message skipped; it is relayed as usual but not searched for attachments");
            self.tx = None;
            if let Some(done) = self.done.take() {
                let _ = done.send(false);
            }
        }
    }

    /// The member's verdict: `accepted` (end of data `2xx`) stores the
    /// attachments, anything else discards the spool.
    fn finish(mut self: Box<Self>, accepted: bool) {
        self.tx = None;
        if let Some(done) = self.done.take() {
            let _ = done.send(accepted);
        }
    }
}

struct Job {
    lft: Arc<Lft>,
    path: PathBuf,
    session: u64,
    source: String,
    targets: Vec<String>,
    threshold: u64,
    framing: Framing,
}

impl Job {
    async fn run(
        self,
        mut rx: mpsc::UnboundedReceiver<Bytes>,
        outcome: oneshot::Receiver<bool>,
        in_flight: Arc<AtomicU64>,
        spools: Arc<AtomicUsize>,
    ) {
        let written = self.spool(&mut rx, &in_flight).await;
        // Whatever is left (after a write error) is released too.
        while let Some(chunk) = rx.recv().await {
            in_flight.fetch_sub(chunk.len() as u64, Ordering::SeqCst);
        }
        let accepted = outcome.await.unwrap_or(false);
        if let Err(e) = &written {
            warn!(session = self.session, file = %self.path.display(), error = %e, "LFT: cannot write the spool; message not searched for attachments");
        } else if accepted {
            let path = self.path.clone();
            let lft = self.lft.clone();
            let (threshold, source, targets, session) = (
                self.threshold,
                self.source.clone(),
                self.targets.clone(),
                self.session,
            );
            let framing = self.framing;
            let stored = tokio::task::spawn_blocking(move || {
                let spool = Spool {
                    path: &path,
                    framing,
                };
                store_from_spool(&lft, spool, threshold, &source, &targets, session)
            })
            .await;
            if let Ok(Err(e)) = stored {
                warn!(session = self.session, error = %e, "LFT: attachments of the message not stored");
            }
        }
        let _ = tokio::fs::remove_file(&self.path).await;
        spools.fetch_sub(1, Ordering::SeqCst);
    }

    async fn spool(
        &self,
        rx: &mut mpsc::UnboundedReceiver<Bytes>,
        in_flight: &AtomicU64,
    ) -> std::io::Result<()> {
        let file = tokio::fs::File::create(&self.path).await?;
        let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, file);
        let mut unstuffer = Unstuffer::default();
        let mut buf = Vec::new();
        while let Some(chunk) = rx.recv().await {
            let result = match self.framing {
                Framing::DotStuffed => {
                    buf.clear();
                    unstuffer.push(&chunk, &mut buf);
                    file.write_all(&buf).await
                }
                Framing::Chunks => file.write_all(&chunk).await,
            };
            in_flight.fetch_sub(chunk.len() as u64, Ordering::SeqCst);
            result?;
        }
        file.flush().await
    }
}

/// A spool file: the message, and how the relay framed it.
struct Spool<'a> {
    path: &'a std::path::Path,
    framing: Framing,
}

/// Parses the spool file and stores and queues its attachments.
fn store_from_spool(
    lft: &Lft,
    spool: Spool<'_>,
    threshold: u64,
    source: &str,
    targets: &[String],
    session: u64,
) -> super::Result<()> {
    let path = spool.path;
    let bytes = std::fs::read(path).map_err(|e| super::LftError::io(path, e))?;
    let message = match spool.framing {
        Framing::DotStuffed => Unstuffer::strip_terminator(&bytes),
        Framing::Chunks => &bytes,
    };
    let found = extract(message, threshold);
    let now = crate::cluster::time::now();
    let mut queued = false;
    for attachment in found.attachments {
        let meta = Meta {
            sha256: String::new(),
            file_name: attachment.file_name,
            content_type: attachment.content_type,
            size: 0,
            message_id: found.message_id.clone(),
            source_member: source.to_owned(),
            time: now,
        };
        let (new, meta) = lft.store.put(&attachment.data, meta)?;
        for target in targets.iter().filter(|t| **t != lft.node_name) {
            queued |= lft.queue.add(target, &meta.sha256, now)?;
        }
        info!(session, sha256 = %meta.sha256, size = meta.size, file_name = meta.file_name.as_deref().unwrap_or("-"), source = %source, targets = %targets.join(","), new, "LFT attachment stored");
    }
    if queued {
        lft.refresh_metrics();
        lft.wake.notify_one();
    }
    Ok(())
}
