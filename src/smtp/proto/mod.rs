//! Sans-IO SMTP protocol code: command lines, replies, EHLO capabilities,
//! XCLIENT encoding, the DATA receiver and PROXY headers. Nothing here
//! touches a socket; the async driver in [`crate::smtp`] feeds bytes in and
//! writes what comes out.

use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;

/// Longest command line accepted, CRLF included (RFC 5321 4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// A command line could not be taken off the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Longer than [`MAX_COMMAND_LINE`]; the reader discards it through its line end.
    #[error("line too long")]
    TooLong,
}

/// Splits client input into command lines (CRLF, or a bare LF, terminated).
#[derive(Debug, Default)]
pub struct LineReader {
    discarding: bool,
}

impl LineReader {
    /// A reader in its initial state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one line off the front of `buf`, without its line ending.
    /// `Ok(None)`: need more bytes. `Err(TooLong)` is returned once per
    /// over-long line; its remaining bytes are discarded by later calls.
    pub fn next_line(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, LineError> {
        let _ = (&mut self.discarding, buf);
        todo!()
    }
}

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
    /// Syntax error in the parameters or path (501 5.5.4 / 501 5.1.7 ...).
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// Not UTF-8 / not printable ASCII where required (500 5.5.2).
    #[error("invalid characters")]
    InvalidCharacters,
}

impl From<&CommandError> for Reply {
    fn from(err: &CommandError) -> Reply {
        let _ = err;
        todo!()
    }
}

/// Parses one command line (without its line ending).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let _ = line;
    todo!()
}

impl MailFrom {
    /// The declared `SIZE=` value, when present and numeric.
    pub fn size(&self) -> Option<u64> {
        todo!()
    }
    /// Appends `MAIL FROM:<path> params\r\n`, keeping only params for which `keep` is true.
    pub fn encode(&self, out: &mut BytesMut, keep: impl Fn(&Param) -> bool) {
        let _ = (out, keep);
        todo!()
    }
}

impl RcptTo {
    /// Appends `RCPT TO:<path> params\r\n`.
    pub fn encode(&self, out: &mut BytesMut) {
        let _ = out;
        todo!()
    }
}

/// An SMTP reply, kept byte for byte as received (or as built) so it can be relayed verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    raw: Bytes,
}

impl Reply {
    /// One line: `CODE ENHANCED TEXT\r\n` (`enhanced` may be empty).
    pub fn new(code: u16, enhanced: &str, text: &str) -> Reply {
        let _ = (code, enhanced, text);
        todo!()
    }
    /// Multi-line reply `CODE-line` ... `CODE line`.
    pub fn multiline(code: u16, lines: &[&str]) -> Reply {
        let _ = (code, lines);
        todo!()
    }
    /// Three-digit code.
    pub fn code(&self) -> u16 {
        self.code
    }
    /// The raw bytes, every line CRLF-terminated.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }
    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
    /// 3xx (354 to DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }
    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    /// The text of every line, after the code and separator.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::empty::<&[u8]>()
    }
}

/// A reply from a member that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not `DDD[ -]text`.
    #[error("malformed reply line")]
    Malformed,
    /// Lines of one reply disagree on the code.
    #[error("inconsistent reply codes")]
    InconsistentCode,
    /// Over the line or total size cap.
    #[error("reply too long")]
    TooLong,
}

/// Takes one complete (possibly multi-line) reply off the front of `buf`; `Ok(None)`: need more.
pub fn parse_reply(buf: &mut BytesMut) -> Result<Option<Reply>, ReplyError> {
    let _ = buf;
    todo!()
}

/// What a member's EHLO reply offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING.
    pub pipelining: bool,
    /// SIZE (with its limit, 0 = none declared).
    pub size: Option<u64>,
    /// 8BITMIME.
    pub eightbitmime: bool,
    /// ENHANCEDSTATUSCODES.
    pub enhanced_status_codes: bool,
    /// STARTTLS.
    pub starttls: bool,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// CHUNKING.
    pub chunking: bool,
    /// XCLIENT with its attribute names (upper-cased); `None` when not offered.
    pub xclient: Option<Vec<String>>,
}

impl Capabilities {
    /// Reads the capabilities from an EHLO reply.
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let _ = reply;
        todo!()
    }
}

/// Builds the `XCLIENT` command line(s) for `attrs` (name, raw value),
/// xtext-encoding values, leaving out attributes the server did not offer,
/// and splitting so no line exceeds [`MAX_COMMAND_LINE`].
pub fn encode_xclient(attrs: &[(&str, &str)], offered: &[String]) -> Vec<Bytes> {
    let _ = (attrs, offered);
    todo!()
}

/// Why a message is being refused while its DATA streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRefusal {
    /// Bare CR or LF in reject mode (`550 5.5.2`).
    BareLineEnding,
    /// Over the size limit (`552 5.3.4`).
    TooBig,
}

/// One step of the DATA receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataStep {
    /// Send these bytes to the member, then call `feed` again.
    Forward(Bytes),
    /// Everything available has been handled; read more.
    NeedMore,
    /// End of data (`CRLF.CRLF`) reached: it was included in the last `Forward`
    /// unless the message is refused. Bytes after it stay in the input (pipelining).
    End,
    /// The message is refused; the receiver now discards input until end of data,
    /// returning only `NeedMore` and `End`.
    Refused(DataRefusal),
}

/// Streams a DATA section: finds the exact `CRLF.CRLF` end, refuses or normalises
/// bare CR/LF, enforces the size limit. Reject mode forwards input without copying.
#[derive(Debug)]
pub struct DataReceiver {
    _private: (),
}

impl DataReceiver {
    /// A receiver positioned right after the `354` reply (at the start of a line).
    pub fn new(bare_lf: crate::config::BareLf, max_size: u64) -> Self {
        let _ = (bare_lf, max_size);
        todo!()
    }
    /// Consumes bytes from the front of `input`.
    pub fn feed(&mut self, input: &mut BytesMut) -> DataStep {
        let _ = input;
        todo!()
    }
    /// Message bytes seen so far (terminator excluded).
    pub fn size(&self) -> u64 {
        todo!()
    }
}

/// Addresses carried by a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyInfo {
    /// The proxied connection's client and the address it reached.
    Tcp {
        /// Original client.
        source: SocketAddr,
        /// Original destination.
        destination: SocketAddr,
    },
    /// `LOCAL` / `UNKNOWN`: keep the socket's own addresses.
    Local,
}

/// A PROXY header that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Not a PROXY v1 or v2 header.
    #[error("invalid PROXY header")]
    Invalid,
}

/// Parses a PROXY v1 or v2 header at the front of `buf`: `Ok(None)` needs more,
/// `Ok(Some((len, info)))` consumed `len` bytes.
pub fn parse_proxy_header(buf: &[u8]) -> Result<Option<(usize, ProxyInfo)>, ProxyError> {
    let _ = buf;
    todo!()
}

/// Encodes a PROXY header for a member (`v2 == false`: text v1).
pub fn encode_proxy_header(v2: bool, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let _ = (v2, source, destination);
    todo!()
}
