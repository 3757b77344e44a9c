//! `mxgate lft status`: the upload queue per target.

use serde::{Deserialize, Serialize};

use super::Lft;
use crate::cluster::time::rfc3339;
use crate::config::Policy;

/// One target's row (SPEC section 9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    /// Member name.
    pub target: String,
    /// Attachments waiting to be uploaded.
    pub pending: u64,
    /// Attachments the target has.
    pub synced: u64,
    /// Attachments given up on.
    pub failed: u64,
    /// Queue time of the oldest pending attachment (RFC 3339), if any.
    pub oldest_pending: Option<String>,
}

/// The answer of `lft status --json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LftStatus {
    /// Every target named in some `lft_sync_to`, and any other with queue entries.
    pub targets: Vec<TargetStatus>,
}

/// The daemon's answer to the admin request: the queue of `lft` (`None`:
/// not running) for the targets of `policy`.
pub fn collect(lft: Option<&Lft>, policy: &Policy) -> LftStatus {
    let Some(lft) = lft else {
        return LftStatus::default();
    };
    let targets = Lft::targets(policy);
    LftStatus {
        targets: lft
            .queue
            .counts(&targets)
            .into_iter()
            .map(|c| TargetStatus {
                target: c.target,
                pending: c.pending,
                synced: c.synced,
                failed: c.failed,
                oldest_pending: c.oldest_pending.map(rfc3339),
            })
            .collect(),
    }
}

/// The text form.
pub fn render_text(status: &LftStatus) -> String {
    if status.targets.is_empty() {
        return "no LFT sync targets (no member has lft_sync_to)\n".to_owned();
    }
    let mut out = format!(
        "{:<16} {:>8} {:>8} {:>8}  {}\n",
        "TARGET", "PENDING", "SYNCED", "FAILED", "OLDEST PENDING"
    );
    for t in &status.targets {
        out.push_str(&format!(
            "{:<16} {:>8} {:>8} {:>8}  {}\n",
            crate::text::escape(&t.target),
            t.pending,
            t.synced,
            t.failed,
            crate::text::escape(t.oldest_pending.as_deref().unwrap_or("-"))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_shape() {
        let status = LftStatus {
            targets: vec![TargetStatus {
                target: "gw2".into(),
                pending: 1,
                synced: 2,
                failed: 0,
                oldest_pending: Some("2026-01-01T00:00:00Z".into()),
            }],
        };
        let text = render_text(&status);
        assert!(text.contains("gw2"), "{text}");
        assert!(text.contains("2026-01-01T00:00:00Z"), "{text}");
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"targets": [{"target": "gw2", "pending": 1, "synced": 2, "failed": 0, "oldest_pending": "2026-01-01T00:00:00Z"}]})
        );
        assert!(render_text(&LftStatus::default()).contains("no LFT sync targets"));
    }
}
