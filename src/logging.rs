//! Log output (tracing): text or JSON lines on stderr.

use std::io::IsTerminal;

use crate::config::LogFormat;

/// Installs the global subscriber, filtered by `level` (RUST_LOG overrides it).
/// Calling it twice is harmless: the second call changes nothing.
pub fn init(format: LogFormat, level: &str) {
    let from_env = std::env::var("RUST_LOG").ok().and_then(|text| {
        tracing_subscriber::EnvFilter::try_new(crate::config::trim_directives(&text)).ok()
    });
    let filter = from_env
        .or_else(|| {
            tracing_subscriber::EnvFilter::try_new(crate::config::trim_directives(level)).ok()
        })
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
