//! Why a session ended ([`End`]), as the session-end log line says it.

/// Why the session ended.
#[derive(Debug)]
pub(crate) enum End {
    Quit,
    ClientClosed,
    ClientTimeout,
    TooManyErrors,
    Shutdown,
    Io(std::io::Error),
    /// STARTTLS was answered `220`: the TLS handshake comes next.
    StartTls,
    /// The client's TLS handshake failed or timed out.
    TlsHandshake(String),
    /// The client's first input was a PROXY v2 header it may not send.
    ProxyHeader,
    /// A malformed BDAT: the session cannot tell where the next command starts.
    BadBdat,
    /// The client announced far more BDAT content than a message may have.
    BdatOverflow,
}

/// The session-end outcome, formatted only when the line is written.
impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Quit => f.write_str("quit"),
            End::ClientClosed => f.write_str("client closed"),
            End::ClientTimeout => f.write_str("client timeout"),
            End::TooManyErrors => f.write_str("too many errors"),
            End::Shutdown => f.write_str("shutdown"),
            End::Io(e) => write!(f, "client I/O error: {e}"),
            End::StartTls => f.write_str("STARTTLS"),
            End::TlsHandshake(e) => write!(f, "TLS handshake failed: {e}"),
            End::ProxyHeader => f.write_str("PROXY header refused"),
            End::BadBdat => f.write_str("malformed BDAT"),
            End::BdatOverflow => f.write_str("too much BDAT content"),
        }
    }
}
