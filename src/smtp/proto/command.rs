//! Client commands: parsing one command line (verb, MAIL/RCPT paths and
//! ESMTP parameters, XCLIENT attributes, BDAT) into a [`Command`], mapping
//! parse errors to their reply, and encoding MAIL/RCPT for a member.

use super::caps::xtext_decode;
use super::path::{PathError, parse_path};
use super::reply::Reply;
use bytes::{BufMut, BytesMut};

/// An ESMTP parameter (`SIZE=1000`, `BODY=8BITMIME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Keyword, upper-cased.
    pub keyword: String,
    /// Value, as sent.
    pub value: Option<String>,
}

/// `MAIL FROM:<path> params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    /// Reverse path without angle brackets; empty for the null sender.
    pub path: String,
    /// ESMTP parameters.
    pub params: Vec<Param>,
}

/// `RCPT TO:<path> params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptTo {
    /// Forward path without angle brackets.
    pub path: String,
    /// ESMTP parameters.
    pub params: Vec<Param>,
}

/// A parsed client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELO domain`.
    Helo(String),
    /// `EHLO domain`.
    Ehlo(String),
    /// `MAIL FROM:`.
    Mail(MailFrom),
    /// `RCPT TO:`.
    Rcpt(RcptTo),
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]`.
    Bdat {
        /// Chunk size.
        size: u64,
        /// Final chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [text]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `HELP [topic]`.
    Help,
    /// `VRFY x`.
    Vrfy,
    /// `EXPN x`.
    Expn,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH ...` (not offered).
    Auth,
    /// `XCLIENT NAME=value ...`: attribute names upper-cased, values xtext-decoded.
    Xclient(Vec<(String, String)>),
    /// A `PROXY ...` line arriving as a command.
    Proxy,
    /// Any other verb (upper-cased).
    Unknown(String),
}

/// A command line that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Syntax error in the arguments or parameters (`501 5.5.4`).
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// Not UTF-8 / not printable ASCII where required (`500 5.5.2`).
    #[error("invalid characters")]
    InvalidCharacters,
    /// The MAIL reverse path is malformed (`501 5.1.7`).
    #[error("bad sender address: {0}")]
    BadSender(&'static str),
    /// The RCPT forward path is malformed (`501 5.1.3`).
    #[error("bad recipient address: {0}")]
    BadRecipient(&'static str),
}

impl From<&CommandError> for Reply {
    fn from(err: &CommandError) -> Reply {
        match err {
            CommandError::Syntax(what) => {
                Reply::new(501, "5.5.4", &format!("Syntax error: {what}"))
            }
            CommandError::InvalidCharacters => {
                Reply::new(500, "5.5.2", "Invalid characters in command")
            }
            CommandError::BadSender(what) => {
                Reply::new(501, "5.1.7", &format!("Bad sender address syntax: {what}"))
            }
            CommandError::BadRecipient(what) => Reply::new(
                501,
                "5.1.3",
                &format!("Bad recipient address syntax: {what}"),
            ),
        }
    }
}

/// Parses one command line (without its line ending).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let (verb, args) = match memchr::memchr(b' ', line) {
        Some(sp) => (&line[..sp], &line[sp + 1..]),
        None => (line, &[][..]),
    };
    if !verb.iter().all(|b| b.is_ascii_graphic()) {
        return Err(CommandError::InvalidCharacters);
    }
    // Upper-cased on the stack: every known verb is at most 8 letters; a
    // longer one is unknown.
    let mut upper = [0u8; 8];
    let known: &[u8] = match upper.get_mut(..verb.len()) {
        Some(dst) => {
            dst.copy_from_slice(verb);
            dst.make_ascii_uppercase();
            dst
        }
        None => b"",
    };
    if known == b"PROXY" {
        // A PROXY header where a command was expected: recognised, never parsed.
        return Ok(Command::Proxy);
    }
    let args = std::str::from_utf8(args).map_err(|_| CommandError::InvalidCharacters)?;
    if has_control(args) {
        return Err(CommandError::InvalidCharacters);
    }
    let args = args.trim_matches([' ', '\t']);
    match known {
        b"HELO" => Ok(Command::Helo(required(args, "HELO needs a domain")?)),
        b"EHLO" => Ok(Command::Ehlo(required(args, "EHLO needs a domain")?)),
        b"MAIL" => parse_mail(args).map(Command::Mail),
        b"RCPT" => parse_rcpt(args).map(Command::Rcpt),
        b"DATA" => no_args(args, Command::Data, "DATA takes no arguments"),
        b"BDAT" => parse_bdat(args),
        b"RSET" => no_args(args, Command::Rset, "RSET takes no arguments"),
        b"NOOP" => Ok(Command::Noop),
        b"QUIT" => Ok(Command::Quit),
        b"HELP" => Ok(Command::Help),
        b"VRFY" => required(args, "VRFY needs an argument").map(|_| Command::Vrfy),
        b"EXPN" => required(args, "EXPN needs an argument").map(|_| Command::Expn),
        b"STARTTLS" => no_args(args, Command::StartTls, "STARTTLS takes no arguments"),
        b"AUTH" => Ok(Command::Auth),
        b"XCLIENT" => parse_xclient(args),
        // The verb is printable ASCII, checked above.
        _ => Ok(Command::Unknown(
            String::from_utf8_lossy(verb).to_ascii_uppercase(),
        )),
    }
}

/// A control character other than TAB (`char::is_control`: C0, DEL, C1),
/// looked for byte by byte while the text is ASCII.
fn has_control(text: &str) -> bool {
    let mut ascii = true;
    for &b in text.as_bytes() {
        if b >= 0x80 {
            ascii = false;
        } else if (b < 0x20 && b != b'\t') || b == 0x7f {
            return true;
        }
    }
    !ascii && text.chars().any(|c| c.is_control() && !c.is_ascii())
}

fn required(args: &str, what: &'static str) -> Result<String, CommandError> {
    if args.is_empty() {
        Err(CommandError::Syntax(what))
    } else {
        Ok(args.to_owned())
    }
}

fn no_args(args: &str, cmd: Command, what: &'static str) -> Result<Command, CommandError> {
    if args.is_empty() {
        Ok(cmd)
    } else {
        Err(CommandError::Syntax(what))
    }
}

/// Strips a case-insensitive `FROM:` / `TO:` prefix, allowing spaces after the colon.
fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let head = args.get(..keyword.len())?;
    if head.eq_ignore_ascii_case(keyword) {
        Some(args[keyword.len()..].trim_start_matches(' '))
    } else {
        None
    }
}

fn parse_mail(args: &str) -> Result<MailFrom, CommandError> {
    let rest =
        strip_keyword(args, "FROM:").ok_or(CommandError::Syntax("use MAIL FROM:<address>"))?;
    let (path, rest) = parse_path(rest, true).map_err(|e| match e {
        PathError::Syntax(what) => CommandError::BadSender(what),
    })?;
    Ok(MailFrom {
        path,
        params: parse_params(rest)?,
    })
}

fn parse_rcpt(args: &str) -> Result<RcptTo, CommandError> {
    let rest = strip_keyword(args, "TO:").ok_or(CommandError::Syntax("use RCPT TO:<address>"))?;
    let (path, rest) = parse_path(rest, false).map_err(|e| match e {
        PathError::Syntax(what) => CommandError::BadRecipient(what),
    })?;
    Ok(RcptTo {
        path,
        params: parse_params(rest)?,
    })
}

/// `KEY[=VALUE]` separated by spaces; keyword `[A-Za-z0-9][A-Za-z0-9-]*`.
fn parse_params(rest: &str) -> Result<Vec<Param>, CommandError> {
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(CommandError::Syntax(
            "parameters must follow the address after a space",
        ));
    }
    rest.split(' ')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (keyword, value) = match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p, None),
            };
            let mut chars = keyword.bytes();
            let valid = chars.next().is_some_and(|b| b.is_ascii_alphanumeric())
                && chars.all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !valid {
                return Err(CommandError::Syntax("bad parameter keyword"));
            }
            if value.is_some_and(|v| v.is_empty() || v.contains('\t')) {
                return Err(CommandError::Syntax("bad parameter value"));
            }
            Ok(Param {
                keyword: keyword.to_ascii_uppercase(),
                value: value.map(str::to_owned),
            })
        })
        .collect()
}

fn parse_bdat(args: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "use BDAT size [LAST]";
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or(CommandError::Syntax(USAGE))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(CommandError::Syntax(USAGE)),
    };
    if words.next().is_some() {
        return Err(CommandError::Syntax(USAGE));
    }
    Ok(Command::Bdat { size, last })
}

fn parse_xclient(args: &str) -> Result<Command, CommandError> {
    let attrs = args
        .split(' ')
        .filter(|a| !a.is_empty())
        .map(|attr| {
            let (name, value) = attr
                .split_once('=')
                .ok_or(CommandError::Syntax("use XCLIENT NAME=value"))?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(CommandError::Syntax("bad XCLIENT attribute name"));
            }
            let value = xtext_decode(value).ok_or(CommandError::Syntax("bad xtext value"))?;
            Ok((name.to_ascii_uppercase(), value))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if attrs.is_empty() {
        return Err(CommandError::Syntax("use XCLIENT NAME=value"));
    }
    Ok(Command::Xclient(attrs))
}

impl MailFrom {
    /// The declared `SIZE=` value, when present and numeric.
    pub fn size(&self) -> Option<u64> {
        self.params
            .iter()
            .find(|p| p.keyword == "SIZE")
            .and_then(|p| p.value.as_deref())
            .and_then(|v| v.parse().ok())
    }

    /// Appends `MAIL FROM:<path> params\r\n`, keeping only params for which `keep` is true.
    pub fn encode(&self, out: &mut BytesMut, keep: impl Fn(&Param) -> bool) {
        encode_line(
            out,
            "MAIL FROM:<",
            &self.path,
            self.params.iter().filter(|p| keep(p)),
        );
    }
}

impl RcptTo {
    /// Appends `RCPT TO:<path> params\r\n`.
    pub fn encode(&self, out: &mut BytesMut) {
        encode_line(out, "RCPT TO:<", &self.path, self.params.iter());
    }
}

fn encode_line<'a>(
    out: &mut BytesMut,
    head: &str,
    path: &str,
    params: impl Iterator<Item = &'a Param>,
) {
    out.put_slice(head.as_bytes());
    out.put_slice(path.as_bytes());
    out.put_u8(b'>');
    for param in params {
        out.put_u8(b' ');
        out.put_slice(param.keyword.as_bytes());
        if let Some(value) = &param.value {
            out.put_u8(b'=');
            out.put_slice(value.as_bytes());
        }
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
