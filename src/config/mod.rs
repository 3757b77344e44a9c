//! Configuration: `mxgate.toml` (node-local) and `cluster.toml` (policy).
//!
//! Files are read into serde `File*` structs (`deny_unknown_fields`), then
//! validated into the immutable runtime types of [`types`]. Every problem is
//! reported with file, line and key path, all of them, not just the first.

pub mod types;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use types::*;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file it is in.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `members.gw1.lft_sync_to`.
    pub key: String,
    /// What is wrong and, where useful, what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                line,
                self.key,
                self.message
            ),
            None => write!(f, "{}: {}: {}", self.file.display(), self.key, self.message),
        }
    }
}

/// Every problem found while loading; never empty.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Loads and validates `mxgate.toml` and the policy file it names.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    todo!("{}", path.display())
}

/// Loads and validates a policy file (`cluster.toml`) on its own.
pub fn load_policy(path: &Path) -> Result<Policy, ConfigErrors> {
    todo!("{}", path.display())
}

/// Renders the effective configuration (defaults filled in) as TOML, for `check-config`.
pub fn render_effective(config: &Config) -> String {
    todo!("{:?}", config.node)
}

/// Parses `10MiB`, `512KiB`, `1GiB` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    todo!("{text}")
}

/// Parses `250ms`, `5s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    todo!("{text}")
}
