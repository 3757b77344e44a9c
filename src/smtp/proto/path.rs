//! MAIL/RCPT path syntax (RFC 5321 4.1.2): `<mailbox>`, the null path `<>`,
//! `<postmaster>`, quoted local parts, and source routes, which are accepted
//! and stripped (RFC 5321 C: "SHOULD ignore the route").

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathError {
    /// Not a valid path; the text says what is wrong.
    Syntax(&'static str),
}

use PathError::Syntax;

/// Parses `<path>` at the front of `input`: returns the mailbox (route
/// stripped, brackets removed) and the rest of the input after `>`.
/// `null_ok`: the empty path `<>` is allowed (MAIL).
pub(crate) fn parse_path(input: &str, null_ok: bool) -> Result<(String, &str), PathError> {
    let inner = input
        .strip_prefix('<')
        .ok_or(Syntax("address must be in angle brackets"))?;
    let end = closing_bracket(inner)?;
    let (content, rest) = (&inner[..end], &inner[end + 1..]);
    if content.is_empty() {
        return if null_ok {
            Ok((String::new(), rest))
        } else {
            Err(Syntax("empty address"))
        };
    }
    let mailbox = strip_route(content)?;
    if mailbox.eq_ignore_ascii_case("postmaster") {
        return Ok((mailbox.to_owned(), rest));
    }
    check_mailbox(mailbox)?;
    Ok((mailbox.to_owned(), rest))
}

/// Index of the `>` closing the path, skipping quoted strings.
fn closing_bracket(inner: &str) -> Result<usize, PathError> {
    let mut quoted = false;
    let mut escaped = false;
    // Byte by byte: the bytes looked for are ASCII, which never occur
    // inside a UTF-8 sequence (so escaping the first byte of a character
    // escapes all of it).
    for (i, &b) in inner.as_bytes().iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Ok(i),
            b'<' | b' ' | b'\t' if !quoted => return Err(Syntax("invalid character in address")),
            _ => {}
        }
    }
    Err(Syntax("missing closing angle bracket"))
}

/// Strips an `@a,@b:` source route, checking its domains.
fn strip_route(content: &str) -> Result<&str, PathError> {
    let mut rest = content;
    if !rest.starts_with('@') {
        return Ok(rest);
    }
    loop {
        let after_at = rest.strip_prefix('@').ok_or(Syntax("bad source route"))?;
        let end = if after_at.starts_with('[') {
            after_at.find(']').map(|i| i + 1)
        } else {
            after_at.find([',', ':'])
        }
        .ok_or(Syntax("bad source route"))?;
        check_domain(&after_at[..end])?;
        // A literal's `]` may end the content: no separator left.
        let mut tail = after_at[end..].chars();
        let sep = tail.next();
        rest = tail.as_str();
        match sep {
            Some(',') => continue,
            Some(':') => return Ok(rest),
            _ => return Err(Syntax("bad source route")),
        }
    }
}

/// `local-part@domain`, the local part a dot-string or a quoted string.
fn check_mailbox(mailbox: &str) -> Result<(), PathError> {
    let (local, domain) = if let Some(q) = mailbox.strip_prefix('"') {
        let close = quoted_end(q).ok_or(Syntax("unterminated quoted local part"))?;
        let after = &q[close + 1..];
        let domain = after.strip_prefix('@').ok_or(Syntax("missing domain"))?;
        (None, domain)
    } else {
        let (local, domain) = mailbox.split_once('@').ok_or(Syntax("missing domain"))?;
        (Some(local), domain)
    };
    if let Some(local) = local {
        // Byte by byte: every byte of a non-ASCII character is >= 0x80.
        // atext (`!#$%&'*+-/=?^_`{|}~`, letters, digits), `.`, or UTF-8.
        let atext = |b: &u8| {
            matches!(b,
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
                | b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'/' | b'=' | b'?'
                | b'^'..=b'`' | b'{'..=b'~' | b'.' | 0x80..=0xff)
        };
        if local.is_empty() || !local.as_bytes().iter().all(atext) {
            return Err(Syntax("bad local part"));
        }
    }
    check_domain(domain)
}

/// Index of the closing quote of a quoted string whose opening quote was stripped.
fn quoted_end(q: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in q.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// A host name (labels of letters, digits, `-`, `_`, or UTF-8) or an address literal.
fn check_domain(domain: &str) -> Result<(), PathError> {
    if let Some(lit) = domain.strip_prefix('[') {
        let lit = lit.strip_suffix(']').ok_or(Syntax("bad address literal"))?;
        let ok = !lit.is_empty()
            && lit
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'[' | b']' | b'\\'));
        return if ok {
            Ok(())
        } else {
            Err(Syntax("bad address literal"))
        };
    }
    // Labels of letters, digits, `-`, `_` or UTF-8 (bytes >= 0x80), none empty.
    let mut label = 0usize;
    for &b in domain.as_bytes() {
        if b == b'.' {
            if label == 0 {
                return Err(Syntax("bad domain"));
            }
            label = 0;
        } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || !b.is_ascii() {
            label += 1;
        } else {
            return Err(Syntax("bad domain"));
        }
    }
    if label == 0 {
        return Err(Syntax("bad domain"));
    }
    Ok(())
}
