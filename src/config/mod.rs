//! Configuration: `mxgate.toml` (node-local) and `cluster.toml` (policy).
//!
//! Files are read into serde `File*` structs (`deny_unknown_fields`), then
//! validated into the immutable runtime types of [`types`]. Every problem is
//! reported with file, line and key path, all of them, not just the first.
//!
//! Flow: [`load`] reads `mxgate.toml` ([`node`]), then the policy it names
//! ([`policy`]); each file is parsed into a spanned tree, checked for unknown
//! keys and deserialized table by table ([`source`], [`file`]), then built
//! into the runtime types with defaults ([`units`] for value syntax).
//! [`render_effective`] prints the result for `check-config`.

mod file;
mod node;
mod policy;
mod render;
mod source;
#[cfg(test)]
mod tests;
pub mod types;
mod units;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use node::trim_directives;
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
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
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
///
/// Relative paths in the file are resolved against its directory. Errors of
/// both files are reported together.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = read(path)?;
    let dir = base_dir(path);
    let mut ctx = source::Ctx::new(path, &text);
    let Some(node) = node::build(&mut ctx, &text, &dir) else {
        return Err(ConfigErrors(ctx.into_errors()));
    };
    let mut errors = ctx.into_errors();
    let policy = match std::fs::read_to_string(&node.node.policy) {
        Ok(policy_text) => {
            let mut pctx = source::Ctx::new(&node.node.policy, &policy_text);
            let policy = policy::build(&mut pctx, &policy_text, &base_dir(&node.node.policy));
            errors.append(&mut pctx.into_errors());
            policy
        }
        Err(e) => {
            let mut ctx = source::Ctx::new(path, &text);
            let message = format!(
                "cannot read policy file {}: {e}",
                node.node.policy.display()
            );
            ctx.error(node.policy_span.clone(), "node.policy", message);
            errors.append(&mut ctx.into_errors());
            None
        }
    };
    match policy {
        Some(policy) if errors.is_empty() => Ok(Config {
            node: node.node,
            smtp: node.smtp,
            local: node.local,
            metrics: node.metrics,
            log: node.log,
            policy: Arc::new(policy),
            http: node.http,
            cluster: node.cluster,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

/// Loads and validates only `mxgate.toml`, not the policy it names: what the
/// CLI needs to find the daemon's admin socket. A broken policy file (which a
/// running daemon refuses on reload, keeping the old one) must not lock the
/// operator out of that daemon.
pub fn load_node(path: &Path) -> Result<NodeConfig, ConfigErrors> {
    load_node_str(path, &read(path)?)
}

/// [`load_node`] on text already read: `name` is the file the text came
/// from, used in errors and to resolve relative paths.
pub fn load_node_str(name: &Path, text: &str) -> Result<NodeConfig, ConfigErrors> {
    let dir = base_dir(name);
    let mut ctx = source::Ctx::new(name, text);
    let node = node::build(&mut ctx, text, &dir);
    let errors = ctx.into_errors();
    match node {
        Some(node) if errors.is_empty() => Ok(node.node),
        _ => Err(ConfigErrors(errors)),
    }
}

/// Loads and validates a policy file (`cluster.toml`) on its own.
pub fn load_policy(path: &Path) -> Result<Policy, ConfigErrors> {
    load_policy_str(path, &read(path)?)
}

/// [`load_policy`] on text already read: `name` is the file the text came
/// from, used in errors and to resolve relative paths. For tests and fuzzing.
pub fn load_policy_str(name: &Path, text: &str) -> Result<Policy, ConfigErrors> {
    let mut ctx = source::Ctx::new(name, text);
    let policy = policy::build(&mut ctx, text, &base_dir(name));
    let errors = ctx.into_errors();
    match policy {
        Some(policy) if errors.is_empty() => Ok(policy),
        _ => Err(ConfigErrors(errors)),
    }
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })
}

/// The directory relative paths in `path` are resolved against: the
/// file's own, so that `-c mxgate.toml` gives `cluster.toml` and `-c
/// /etc/mxgate/mxgate.toml` gives `/etc/mxgate/cluster.toml` (paths are
/// printed the way the file was named, never with a `./` of their own).
fn base_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Renders the effective configuration (defaults filled in) as TOML, for `check-config`.
pub fn render_effective(config: &Config) -> String {
    render::render(config)
}

/// Parses `10MiB`, `512KiB`, `1GiB` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    units::parse_size(text)
}

/// Parses `250ms`, `5s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    units::parse_duration(text)
}

/// Parses an upstream `host:port` (as in `[local] smtp_upstream`); for the
/// cluster, which carries upstreams as text between nodes.
pub fn parse_host_port(text: &str) -> Result<HostPort, String> {
    units::parse_host_port(text)
}

/// Checks a node, member or listener name as `check-config` does (`[node]
/// name`); the cluster applies the same rule to the name a node joins with.
pub fn check_name(text: &str) -> Result<(), String> {
    units::check_name(text)
}

/// Parses an `IP:PORT` address as `check-config` does for listeners and
/// `[cluster] advertise` (no host names).
pub fn parse_socket(text: &str) -> Result<std::net::SocketAddr, String> {
    units::parse_socket(text)
}

/// Parses a GINA upstream as validated by the config: `host:port` (plain
/// HTTP, `false`) or `https://host:port` (TLS, `true`).
pub fn parse_gina(text: &str) -> Result<(bool, HostPort), String> {
    units::check_gina(text)?;
    match text.strip_prefix("https://") {
        Some(rest) => units::parse_host_port(rest).map(|hp| (true, hp)),
        None => units::parse_host_port(text).map(|hp| (false, hp)),
    }
}
