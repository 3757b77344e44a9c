//! What a node's change log holds, in a few comparable fields for
//! `cluster status --json` (`log`): its head CSN, a SHA-256 over every
//! entry in order, and the runs of entries by epoch and origin. Two nodes
//! hold the same log exactly when `head` and `sha256` are equal; the runs
//! show which node wrote each epoch's changes (one master per epoch).

use sha2::{Digest, Sha256};

use super::super::LogEntry;
use super::super::identity::hex;
pub use crate::cluster::api::{EpochRun, LogPosition, LogSummary};

impl LogSummary {
    /// The summary of `entries` (the whole log, in order).
    pub fn of(entries: &[LogEntry]) -> serde_json::Result<LogSummary> {
        let mut hash = Sha256::new();
        let mut epochs: Vec<EpochRun> = Vec::new();
        for e in entries {
            hash.update(serde_json::to_vec(e)?);
            hash.update(b"\n");
            match epochs.last_mut() {
                Some(run) if run.epoch == e.csn.epoch && run.origin == e.csn.origin => {
                    run.last = e.csn.seq;
                }
                _ => epochs.push(EpochRun {
                    epoch: e.csn.epoch,
                    origin: e.csn.origin.clone(),
                    first: e.csn.seq,
                    last: e.csn.seq,
                }),
            }
        }
        Ok(LogSummary {
            head: entries.last().map(|e| LogPosition {
                epoch: e.csn.epoch,
                seq: e.csn.seq,
            }),
            entries: entries.len() as u64,
            sha256: hex(&hash.finalize()),
            epochs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Change, Csn};

    fn entry(epoch: u64, seq: u64, origin: &str, version: u64) -> LogEntry {
        LogEntry {
            csn: Csn {
                epoch,
                seq,
                origin: origin.into(),
                time: 1,
            },
            change: Change::Policy {
                version,
                text: String::new(),
            },
        }
    }

    #[test]
    fn equal_logs_have_equal_summaries_and_any_difference_shows() {
        let log = vec![
            entry(1, 1, "gw1", 1),
            entry(1, 2, "gw1", 2),
            entry(2, 3, "gw2", 3),
        ];
        let a = LogSummary::of(&log).unwrap();
        assert_eq!(a, LogSummary::of(&log.clone()).unwrap());
        assert_eq!(a.head, Some(LogPosition { epoch: 2, seq: 3 }));
        assert_eq!(a.entries, 3);
        assert_eq!(a.sha256.len(), 64);
        assert_eq!(
            a.epochs
                .iter()
                .map(|r| (r.epoch, r.origin.as_str(), r.first, r.last))
                .collect::<Vec<_>>(),
            vec![(1, "gw1", 1, 2), (2, "gw2", 3, 3)]
        );
        // Same length and head, one entry different (another origin, another
        // change): the digest differs.
        for changed in [
            vec![entry(1, 1, "gw1", 1), entry(1, 2, "gw3", 2), log[2].clone()],
            vec![entry(1, 1, "gw1", 1), entry(1, 2, "gw1", 9), log[2].clone()],
        ] {
            let b = LogSummary::of(&changed).unwrap();
            assert_eq!(a.head, b.head);
            assert_ne!(a.sha256, b.sha256);
        }
        let empty = LogSummary::of(&[]).unwrap();
        assert_eq!((empty.head, empty.entries), (None, 0));
        assert!(empty.epochs.is_empty());
    }
}
