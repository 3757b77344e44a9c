//! The durable upload queue: one small JSON file per (target, attachment)
//! in `data_dir/lft/queue/TARGET/SHA.json`. An entry is pending until the
//! target confirms it (then synced) or refuses it for good (then failed);
//! entries stay on disk either way, so counts and retries survive restarts.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::store::{is_sha256, write_atomic};
use super::{LftError, Result};

/// First retry delay; doubled per failed attempt up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for (another) upload attempt.
    Pending,
    /// The target has it.
    Synced,
    /// Given up: the target refused it for good, or it is no sync target any more.
    Failed,
}

/// One attachment for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Attachment.
    pub sha256: String,
    /// Member it goes to.
    pub target: String,
    /// State.
    pub state: State,
    /// When it was queued (Unix time).
    pub queued: u64,
    /// Upload attempts so far.
    pub attempts: u32,
    /// Not before this Unix time.
    pub next_attempt: u64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// Per-target counts for `mxgate lft status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetCounts {
    /// Member name.
    pub target: String,
    /// Pending entries.
    pub pending: u64,
    /// Synced entries.
    pub synced: u64,
    /// Failed entries.
    pub failed: u64,
    /// Queue time of the oldest pending entry (Unix time).
    pub oldest_pending: Option<u64>,
}

/// The delay before attempt `attempts + 1` after `attempts` failures.
pub fn backoff(attempts: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Whether `name` can be a directory name of the queue.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The queue in one directory; operations are serialised.
#[derive(Debug)]
pub struct Queue {
    root: PathBuf,
    lock: Mutex<()>,
}

impl Queue {
    /// The queue in `dir` (`data_dir/lft/queue`).
    pub fn new(dir: &Path) -> Queue {
        Queue {
            root: dir.to_path_buf(),
            lock: Mutex::new(()),
        }
    }

    fn path(&self, target: &str, sha: &str) -> PathBuf {
        self.root.join(target).join(format!("{sha}.json"))
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `sha` for `target` unless it is queued already. Returns true when added.
    pub fn add(&self, target: &str, sha: &str, now: u64) -> Result<bool> {
        if !safe_name(target) || !is_sha256(sha) {
            return Err(LftError::Corrupt(format!(
                "cannot queue {sha:?} for {target:?}: bad name"
            )));
        }
        let _g = self.guard();
        let path = self.path(target, sha);
        if path.exists() {
            return Ok(false);
        }
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).map_err(|e| LftError::io(&dir, e))?;
        let entry = Entry {
            sha256: sha.to_owned(),
            target: target.to_owned(),
            state: State::Pending,
            queued: now,
            attempts: 0,
            next_attempt: now,
            last_error: None,
        };
        write_entry(&path, &entry)?;
        Ok(true)
    }

    /// Every entry (unreadable files are skipped with a log line).
    pub fn entries(&self) -> Vec<Entry> {
        let _g = self.guard();
        let mut out = Vec::new();
        let Ok(targets) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for target in targets.flatten() {
            let Ok(files) = std::fs::read_dir(target.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                match std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Entry>(&b).map_err(|e| e.to_string()))
                {
                    Ok(entry) => out.push(entry),
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "unreadable LFT queue entry skipped")
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.queued, &a.target, &a.sha256).cmp(&(b.queued, &b.target, &b.sha256)));
        out
    }

    /// Pending entries due at `now`.
    pub fn due(&self, now: u64) -> Vec<Entry> {
        self.entries()
            .into_iter()
            .filter(|e| e.state == State::Pending && e.next_attempt <= now)
            .collect()
    }

    /// The earliest next attempt of any pending entry.
    pub fn next_due(&self) -> Option<u64> {
        self.entries()
            .into_iter()
            .filter(|e| e.state == State::Pending)
            .map(|e| e.next_attempt)
            .min()
    }

    /// Records the outcome of an attempt: `Ok` synced, `Err((reason, final))`
    /// retried with back-off, or failed when `final`.
    pub fn record(
        &self,
        entry: &Entry,
        outcome: std::result::Result<(), (String, bool)>,
        now: u64,
    ) -> Result<Entry> {
        let _g = self.guard();
        let mut e = entry.clone();
        e.attempts = e.attempts.saturating_add(1);
        match outcome {
            Ok(()) => {
                e.state = State::Synced;
                e.last_error = None;
            }
            Err((reason, fatal)) => {
                e.last_error = Some(reason);
                if fatal {
                    e.state = State::Failed;
                } else {
                    e.next_attempt = now + backoff(e.attempts).as_secs();
                }
            }
        }
        write_entry(&self.path(&e.target, &e.sha256), &e)?;
        Ok(e)
    }

    /// Counts per target, for `targets` (always listed) and any other queued target.
    pub fn counts(&self, targets: &[String]) -> Vec<TargetCounts> {
        let mut out: Vec<TargetCounts> = targets
            .iter()
            .map(|t| TargetCounts {
                target: t.clone(),
                ..TargetCounts::default()
            })
            .collect();
        for e in self.entries() {
            let i = match out.iter().position(|c| c.target == e.target) {
                Some(i) => i,
                None => {
                    out.push(TargetCounts {
                        target: e.target.clone(),
                        ..TargetCounts::default()
                    });
                    out.len() - 1
                }
            };
            let c = &mut out[i];
            match e.state {
                State::Pending => {
                    c.pending += 1;
                    c.oldest_pending = Some(c.oldest_pending.map_or(e.queued, |o| o.min(e.queued)));
                }
                State::Synced => c.synced += 1,
                State::Failed => c.failed += 1,
            }
        }
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }
}

fn write_entry(path: &Path, entry: &Entry) -> Result<()> {
    let json = serde_json::to_vec(entry).map_err(|e| LftError::Corrupt(e.to_string()))?;
    write_atomic(path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let secs: Vec<u64> = (0..10).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn entries_survive_a_new_queue_and_count_per_target() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        assert!(q.add("gw2", &sha('a'), 100).unwrap());
        assert!(!q.add("gw2", &sha('a'), 200).unwrap(), "idempotent");
        assert!(q.add("gw2", &sha('b'), 150).unwrap());
        assert!(q.add("gw3", &sha('a'), 120).unwrap());
        assert!(q.add("../x", &sha('a'), 1).is_err());
        assert!(q.add("gw2", "nope", 1).is_err());

        // A restart: a new queue over the same directory.
        let q = Queue::new(dir.path());
        assert_eq!(q.due(99).len(), 0);
        assert_eq!(q.due(200).len(), 3);
        let first = q
            .due(200)
            .into_iter()
            .find(|e| e.target == "gw2" && e.sha256 == sha('a'))
            .unwrap();
        let retried = q.record(&first, Err(("down".into(), false)), 200).unwrap();
        assert_eq!((retried.attempts, retried.next_attempt), (1, 201));
        let retried = q
            .record(&retried, Err(("down".into(), false)), 201)
            .unwrap();
        assert_eq!(retried.next_attempt, 203);
        assert_eq!(q.next_due(), Some(120));
        q.record(&retried, Ok(()), 202).unwrap();
        let b = q
            .due(300)
            .into_iter()
            .find(|e| e.sha256 == sha('b'))
            .unwrap();
        q.record(&b, Err(("refused".into(), true)), 300).unwrap();

        let counts = Queue::new(dir.path()).counts(&["gw1".to_string(), "gw2".to_string()]);
        let view: Vec<_> = counts
            .iter()
            .map(|c| {
                (
                    c.target.as_str(),
                    c.pending,
                    c.synced,
                    c.failed,
                    c.oldest_pending,
                )
            })
            .collect();
        assert_eq!(
            view,
            [
                ("gw1", 0, 0, 0, None),
                ("gw2", 0, 1, 1, None),
                ("gw3", 1, 0, 0, Some(120))
            ]
        );
    }
}
