//! The text forms of `cluster status` and `cluster replication`.
//!
//! Every value that came from a member (names, addresses, versions, error
//! reasons, the origin of a change) goes through [`crate::text::escape`]:
//! the table escapes each cell, the lines around it each value, so a
//! member's data can never start a line of its own.

use std::fmt::Write;

use super::{ClusterStatus, Replication};
use crate::cluster::time;
use crate::text::escape;

/// Uptime as `3d 4h`, `2h 5m`, `42s`.
pub fn uptime(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// The table of `cluster status` (`wide`: COMMENT and LOCATION too).
pub fn render_text(status: &ClusterStatus, wide: bool) -> String {
    let mut header = vec![
        "NAME(CID)",
        "DEVICE-ID/UUID",
        "ADDRESS",
        "ROLE",
        "STATE",
        "FRONTEND-OF/BACKEND-OF",
        "VERSION",
        "UPTIME",
        "LAST-UPDATE",
        "LAG",
        "LAST-CONTACT",
        "ENTRIES",
    ];
    if wide {
        header.extend(["COMMENT", "LOCATION"]);
    }
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for m in &status.members {
        let links: Vec<String> = m.frontend_of.iter().chain(&m.backend_of).cloned().collect();
        let mut row = vec![
            format!("{}({})", m.name, status.cid_label(m)),
            format!("{}/{}", m.device_id, m.uuid),
            m.address.clone(),
            m.role.clone(),
            m.state.clone(),
            if links.is_empty() {
                "-".into()
            } else {
                links.join(",")
            },
            m.version.clone(),
            uptime(m.uptime_s),
            m.last_update.clone().unwrap_or_else(|| "-".into()),
            m.replication_lag_s.map_or("-".into(), |l| format!("{l}s")),
            m.last_contact.clone().unwrap_or_else(|| "-".into()),
            format!(
                "OK ({} entries in remote database, {} entries in local database)",
                m.remote_entries, m.local_entries
            ),
        ];
        if wide {
            row.push(m.comment.clone().unwrap_or_default());
            row.push(m.location.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    // A node out of the cluster (deleted, fenced) knows no master, and a
    // restarted one no epoch either: said in words, not as blanks and zeros.
    let epoch = match status.epoch {
        0 => "unknown".to_owned(),
        epoch => epoch.to_string(),
    };
    let master = match status.master.as_str() {
        "" => "none known".into(),
        master => escape(master),
    };
    let mut out = format!("cluster epoch {epoch}, master {master}\n");
    out.push_str(&table(&rows));
    for warning in &status.warnings {
        let _ = writeln!(out, "warning: {}", escape(warning));
    }
    if !status.discarded.is_empty() {
        let _ = writeln!(
            out,
            "discarded on {} (entries it had appended that the master of a later epoch replaced; never committed, never acknowledged to anyone):",
            escape(&status.node)
        );
        for d in &status.discarded {
            let _ = writeln!(
                out,
                "  {}.{} by {} at {}: {} (replaced by epoch {})",
                d.csn.epoch,
                d.csn.seq,
                escape(&d.csn.origin),
                time::rfc3339(d.csn.time),
                escape(&d.summary),
                d.by_epoch
            );
        }
    }
    out
}

/// `cluster replication` as text.
pub fn render_replication(r: &Replication) -> String {
    let mut rows = vec![vec![
        "NAME(CID)".to_string(),
        "LAST-CSN(EPOCH.SEQ)".into(),
        "ORIGIN".into(),
        "TIME".into(),
        "LAST-CONTACT".into(),
    ]];
    for b in &r.backends {
        rows.push(vec![
            format!("{}({})", b.name, b.cid),
            b.last_csn
                .as_ref()
                .map_or("-".into(), |c| format!("{}.{}", c.epoch, c.seq)),
            b.last_csn.as_ref().map_or("-".into(), |c| c.origin.clone()),
            b.last_csn
                .as_ref()
                .map_or("-".into(), |c| time::rfc3339(c.time)),
            b.last_contact.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let head = r.head.as_ref().map_or("empty".into(), |c| {
        format!(
            "{}.{} by {} at {}",
            c.epoch,
            c.seq,
            escape(&c.origin),
            time::rfc3339(c.time)
        )
    });
    format!("master log head: {head}\n{}", table(&rows))
}

/// Aligned columns; every cell escaped (and measured escaped).
fn table(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<std::borrow::Cow<'_, str>>> = rows
        .iter()
        .map(|r| r.iter().map(|c| escape(c)).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{BackendPosition, Discarded, MemberStatus};
    use super::*;
    use crate::cluster::Csn;

    const FORGED: &str = "bk\"} 9\nFAKE_LINE";

    fn member(name: &str, cid: u32, state: &str) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            cid,
            device_id: "0A1B2C3D4E5F".into(),
            uuid: "u-1".into(),
            address: "127.0.0.1:7025".into(),
            role: "backend".into(),
            state: state.into(),
            version: "0.1.0\r".into(),
            uptime_s: 61,
            last_update: None,
            local_entries: 3,
            remote_entries: 3,
            frontend_of: Vec::new(),
            backend_of: vec!["fe\u{85}1".into()],
            comment: Some("rack\t4".into()),
            location: Some("\u{202e}moc.live".into()),
            last_contact: None,
            replication_lag_s: Some(0),
            clock_offset_ms: Some(0),
            protocol: Some(2),
        }
    }

    #[test]
    fn a_member_cannot_forge_a_line_of_the_status_table() {
        let status = ClusterStatus {
            epoch: 2,
            master: "gw1\nFAKE master".into(),
            members: vec![
                member("gw1", 1, "A"),
                member(FORGED, 2, "ERROR: \x1b[2Jgone\nFAKE"),
            ],
            discarded: vec![Discarded {
                csn: Csn {
                    epoch: 1,
                    seq: 4,
                    origin: "old\nFAKE".into(),
                    time: 0,
                },
                summary: "policy\x1b]0;pwned\x07".into(),
                discarded_at: 0,
                by_epoch: 2,
            }],
            node: "gw1".into(),
            node_epoch: 2,
            accepts_writes: true,
            log: None,
            warnings: Vec::new(),
        };
        for wide in [false, true] {
            let text = render_text(&status, wide);
            // Title, header, two members, the discarded title and entry.
            assert_eq!(text.lines().count(), 6, "{text}");
            assert!(
                !text
                    .chars()
                    .any(|c| c != '\n' && crate::text::needs_escape(c))
            );
            assert!(text.starts_with("cluster epoch 2, master gw1\\nFAKE master\n"));
            let row = text.lines().nth(3).unwrap_or_default();
            assert!(row.starts_with("bk\"} 9\\nFAKE_LINE(2)  "), "{row}");
            assert!(row.contains("ERROR: \\x1b[2Jgone\\nFAKE"), "{row}");
            assert!(
                row.contains("0.1.0\\r") && row.contains("fe\\u{85}1"),
                "{row}"
            );
            if wide {
                assert!(row.ends_with("rack\\t4  \\u{202e}moc.live"), "{row}");
            }
            assert!(text.contains("by old\\nFAKE at"), "{text}");
            assert!(text.contains("policy\\x1b]0;pwned\\x07"), "{text}");
            // Columns stay aligned: the escaped name sets the column width.
            let header = text.lines().nth(1).unwrap_or_default();
            let column = header.find("DEVICE-ID/UUID").unwrap_or_default();
            assert_eq!(row.find("0A1B2C3D4E5F"), Some(column), "{text}");
        }
    }

    #[test]
    fn replication_escapes_names_and_origins() {
        let csn = Csn {
            epoch: 1,
            seq: 2,
            origin: "o\nFAKE".into(),
            time: 0,
        };
        let r = Replication {
            head: Some(csn.clone()),
            backends: vec![BackendPosition {
                name: FORGED.into(),
                cid: 2,
                last_csn: Some(csn),
                last_contact: Some("now\n".into()),
            }],
        };
        let text = render_replication(&r);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.contains("by o\\nFAKE at"), "{text}");
        assert!(text.contains("bk\"} 9\\nFAKE_LINE(2)"), "{text}");
        assert!(text.contains("now\\n"), "{text}");
    }
}
