//! What legitimately differs between two runs of the chapter's commands,
//! masked so that outputs compare: ids, UUIDs, device ids, times,
//! durations, ephemeral ports, log positions and epochs, and which backend
//! refused a removed node first.

use std::path::Path;

/// Whether `out` is `expected` once masked.
pub fn same(out: &[String], expected: &[String], dir: &Path) -> bool {
    masked(out, dir) == masked(expected, dir)
}

/// Lines with runs of blanks collapsed and [`mask`] applied; trailing empty
/// lines dropped.
pub fn masked(lines: &[String], _dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| mask(&l.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out
}

/// JSON keys whose numbers differ from run to run: times, and log
/// positions and epochs (the engine's own entries for membership changes
/// and the elections' terms depend on timing).
const MASKED_NUMBERS: [&str; 10] = [
    "\"uptime_s\": ",
    "\"time\": ",
    "\"clock_offset_ms\": ",
    "\"epoch\": ",
    "\"node_epoch\": ",
    "\"term\": ",
    "\"index\": ",
    "\"seq\": ",
    "\"entries\": ",
    "_entries\": ",
];

/// `line` with what differs from run to run replaced by a placeholder:
/// UUIDs, cluster ids (32 hex digits), hashes (64), device ids (12
/// upper-case hex digits), RFC 3339 times, durations (`9s`, `120ms`),
/// ephemeral ports, log positions (`change 1.17`, `log index 7`, `17
/// entries`) and epochs (`epoch 2`), and those of [`MASKED_NUMBERS`].
pub fn mask(line: &str) -> String {
    let mut line = line.to_owned();
    for key in MASKED_NUMBERS {
        if let Some(at) = line.find(key) {
            let start = at + key.len();
            let end = line[start..]
                .find(|c: char| !c.is_ascii_digit() && c != '-')
                .map_or(line.len(), |e| start + e);
            if end > start {
                line = format!("{}<n>{}", &line[..start], &line[end..]);
            }
        }
    }
    let mut out = String::new();
    let mut word = String::new();
    let mut previous = String::new();
    for c in line.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.') {
            word.push(c);
            continue;
        }
        let number = !word.is_empty() && word.chars().all(|c| c.is_ascii_digit());
        if number && (previous == "epoch" || previous == "index") {
            out.push_str("<n>");
        } else if previous == "peer"
            && let Some((ip, _)) = word.rsplit_once(':')
        {
            // An ephemeral port.
            out.push_str(&format!("{ip}:<port>"));
        } else {
            out.push_str(&mask_word(&word));
        }
        if !word.is_empty() {
            previous = std::mem::take(&mut word);
        }
        if c != '\n' {
            out.push(c);
        }
    }
    // A removed node names the first backend that refused it: any of them.
    let removed = "removed from the cluster: ";
    if let Some(at) = out.find(removed)
        && let Some(end) = out[at..].find(") refuses")
    {
        out = format!("{}{removed}<node>{}", &out[..at], &out[at + end + 1..]);
    }
    // `1m 2s` is one duration.
    while out.contains("<duration> <duration>") {
        out = out.replace("<duration> <duration>", "<duration>");
    }
    number_before(&number_before(&out, " entries"), " log entries")
}

/// `text` with the number right before each `suffix` replaced by `<n>`.
fn number_before(text: &str, suffix: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(suffix) {
        let head = &rest[..at];
        let digits = head.len() - head.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        out.push_str(&head[..head.len() - digits]);
        out.push_str(if digits > 0 { "<n>" } else { "" });
        out.push_str(suffix);
        rest = &rest[at + suffix.len()..];
    }
    out.push_str(rest);
    out
}

fn mask_word(word: &str) -> String {
    let hex = |s: &str, upper: bool| {
        s.chars().all(|c| {
            c.is_ascii_digit()
                || if upper {
                    ('A'..='F').contains(&c)
                } else {
                    ('a'..='f').contains(&c)
                }
        })
    };
    let trimmed = word.trim_end_matches(['.', ':']);
    let tail = &word[trimmed.len()..];
    let parts: Vec<&str> = trimmed.split('-').collect();
    let placeholder = if parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts.iter().all(|p| hex(p, false))
    {
        "<uuid>"
    } else if trimmed.len() == 32 && hex(trimmed, false) {
        "<id>"
    } else if trimmed.len() == 64 && hex(trimmed, false) {
        "<sha256>"
    } else if trimmed.len() == 12
        && hex(trimmed, true)
        && trimmed.chars().any(|c| c.is_ascii_uppercase())
    {
        "<device>"
    } else if is_time(trimmed) {
        "<time>"
    } else if is_duration(trimmed) {
        "<duration>"
    } else if trimmed.split_once('.').is_some_and(|(e, i)| {
        [e, i]
            .iter()
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    }) {
        "<csn>"
    } else {
        return word.to_owned();
    };
    format!("{placeholder}{tail}")
}

/// `2026-11-22T07:26:23Z`, with optional fractions.
fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && s.ends_with('Z')
        && b[..4].iter().all(u8::is_ascii_digit)
}

/// `9s`, `120ms`, `1.5s`, `1m`, `2h`, `3d`.
fn is_duration(s: &str) -> bool {
    let number = s
        .strip_suffix("ms")
        .or_else(|| s.strip_suffix(['s', 'm', 'h', 'd']));
    number.is_some_and(|n| {
        !n.is_empty()
            && n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars().all(|c| c.is_ascii_digit() || c == '.')
    })
}

#[test]
fn masks_what_differs_between_runs() {
    assert_eq!(
        mask(
            "gw1(1) 95200C855DB7/01971757-d56e-403d-abf6-87f7e7b3200f 127.70.0.1:7025 2s 2026-11-22T07:26:23Z"
        ),
        "gw1(1) <device>/<uuid> 127.70.0.1:7025 <duration> <time>"
    );
    assert_eq!(
        mask("cluster 434548f58fdf4eb4a8f66ef6033de1a1 created; change 1.12 committed"),
        "cluster <id> created; change <csn> committed"
    );
    assert_eq!(mask("  \"uptime_s\": 12,"), "  \"uptime_s\": <n>,");
    assert_eq!(
        mask("ERROR: no contact for 9s"),
        "ERROR: no contact for <duration>"
    );
    assert_eq!(mask("0.1.0 1m 2s 2026"), "0.1.0 <duration> 2026");
    assert_eq!(
        mask("ERROR: removed from the cluster: gw2 (127.70.0.2:7025) refuses this"),
        "ERROR: removed from the cluster: <node> refuses this"
    );
    assert_eq!(
        mask("cluster epoch 2, master gw2; OK (17 entries in remote database, 7 log entries)"),
        "cluster epoch <n>, master gw2; OK (<n> entries in remote database, <n> log entries)"
    );
    assert_eq!(
        mask("(change 1.17 committed) up to log index 7 taken"),
        "(change <csn> committed) up to log index <n> taken"
    );
    assert_eq!(
        mask("peer=127.70.0.4:50645 path=/join version 0.1.0"),
        "peer=127.70.0.4:<port> path=/join version 0.1.0"
    );
}
