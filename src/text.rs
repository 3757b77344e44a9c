//! Text for a terminal: every human-readable line the CLI prints passes
//! through [`escape`], so a value that came from a peer, a file or the
//! network (a member name, an upstream's reply, a refusal reason) can neither
//! start a line of its own nor send terminal control sequences.
//!
//! [`escape`] is for one value (a table cell, a name in a sentence): every
//! control character is escaped, line breaks included. [`escape_lines`] is
//! for a whole document or message whose line breaks are meant (a policy
//! file, a list of configuration errors, a rendered table as a last guard):
//! it keeps `\n` and escapes everything else on each line the same way.
//!
//! Escaped: the C0 controls, DEL and the C1 controls (Unicode category Cc),
//! the line and paragraph separators U+2028/U+2029, and the bidirectional
//! embedding, override and isolate controls (U+202A..U+202E,
//! U+2066..U+2069), which reorder what a line shows. `\n`, `\r` and `\t`
//! become those two-character escapes, the other C0 controls and DEL
//! `\x1b`-style, the rest `\u{85}`-style. A backslash is left as it is, so
//! the escaping is for reading, not a reversible encoding.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is escaped by [`escape`].
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control character escaped (see the module
/// documentation); borrowed when there is nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// `text` with its line breaks (`\n`) kept and every other control
/// character escaped as [`escape`] does (a `\r` before a `\n` too).
pub fn escape_lines(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && needs_escape(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\n' {
            out.push(c);
        } else {
            push_escaped(&mut out, c);
        }
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    if !needs_escape(c) {
        out.push(c);
        return;
    }
    // Writing into a String cannot fail.
    let _ = match c {
        '\n' => write!(out, "\\n"),
        '\r' => write!(out, "\\r"),
        '\t' => write!(out, "\\t"),
        '\0'..='\x1f' | '\x7f' => write!(out, "\\x{:02x}", u32::from(c)),
        _ => write!(out, "\\u{{{:x}}}", u32::from(c)),
    };
}

/// True when `text` holds a control character other than a line break,
/// which escaped output never does (the tests of rendered tables).
#[cfg(test)]
pub(crate) fn has_unescaped_control(text: &str) -> bool {
    text.chars().any(|c| c != '\n' && needs_escape(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in [
            "",
            "gw1",
            "a b",
            "ERROR: no contact for 61s",
            "é ü 日本",
            "C:\\path",
        ] {
            assert!(
                matches!(escape(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
            assert!(
                matches!(escape_lines(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        for (input, want) in [
            ("a\nb", "a\\nb"),
            ("a\r\nb", "a\\r\\nb"),
            ("a\tb", "a\\tb"),
            ("\0", "\\x00"),
            ("\x1b[31mred", "\\x1b[31mred"),
            ("\x07", "\\x07"),
            ("\x1f", "\\x1f"),
            ("del\x7f", "del\\x7f"),
            ("\u{80}", "\\u{80}"),
            ("next\u{85}line", "next\\u{85}line"),
            ("\u{9b}2J", "\\u{9b}2J"),
            ("\u{9f}", "\\u{9f}"),
            ("\u{2028}", "\\u{2028}"),
            ("\u{2029}", "\\u{2029}"),
            ("abc\u{202e}fed", "abc\\u{202e}fed"),
            ("\u{2066}x\u{2069}", "\\u{2066}x\\u{2069}"),
            ("bk\"} 9\nFAKE_LINE", "bk\"} 9\\nFAKE_LINE"),
        ] {
            assert_eq!(escape(input), want, "{input:?}");
        }
    }

    #[test]
    fn printable_neighbours_of_the_escaped_ranges_stay() {
        for c in [
            ' ', '~', '\u{a0}', '\u{ff}', '\u{2027}', '\u{202f}', '\u{2065}', '\u{206a}',
        ] {
            assert_eq!(escape(&c.to_string()), c.to_string(), "{c:?}");
        }
    }

    #[test]
    fn escape_lines_keeps_line_breaks_only() {
        assert_eq!(escape_lines("a\nb\n"), "a\nb\n");
        assert_eq!(escape_lines("a\r\nb\x1b[2J\n"), "a\\r\nb\\x1b[2J\n");
        assert_eq!(escape_lines("k = 1\t# x\n"), "k = 1\\t# x\n");
    }

    #[test]
    fn escaped_text_is_one_line_without_controls_and_escaping_is_idempotent() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let once = escape(&all);
        assert!(!once.chars().any(needs_escape));
        assert_eq!(once.lines().count(), 1);
        assert_eq!(escape(&once), once);
        let lines = escape_lines(&all);
        assert_eq!(lines.matches('\n').count(), 1);
        assert!(!lines.chars().any(|c| c != '\n' && needs_escape(c)));
    }
}
