//! The files the Debian package ships that are generated from the sources:
//! the manual pages (`mxgate(8)` from the clap definitions with
//! clap_mangen, `mxgate.toml(5)` and `mxgate-cluster.toml(5)` from the
//! configuration reference, `docs/configuration.md`) and the bash and zsh
//! completions (clap_complete).
//!
//! They are committed under `packaging/`, so that a plain `cargo deb` on a
//! fresh clone packages them; `tests/packaging.rs` regenerates them with
//! [`generate`] and fails when the committed copies are stale.
//! `mxgate completions SHELL` prints a completion script ([`completions`]).

mod command;
mod markdown;

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// One generated file: where it lives in the repository and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Path relative to the repository root, e.g. `packaging/man/mxgate.8`.
    pub path: &'static str,
    /// The file's content.
    pub content: Vec<u8>,
}

/// Why the manual pages cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    /// A `##` section of the configuration reference that no page takes.
    #[error(
        "docs/configuration.md: section \"{0}\" belongs to no manual page; add it to manual::markdown::SECTIONS"
    )]
    UnknownSection(String),
    /// A page the configuration reference gave no section.
    #[error(
        "docs/configuration.md: no section for {0}; expected one of manual::markdown::SECTIONS"
    )]
    EmptyPage(&'static str),
    /// Writing roff into memory failed.
    #[error("rendering a manual page: {0}")]
    Render(#[from] std::io::Error),
}

/// The name of the binary in completions and manual pages.
const BIN: &str = "mxgate";

/// Every generated file of `packaging/`, from the clap definitions and
/// `configuration_md` (the text of `docs/configuration.md`).
pub fn generate(configuration_md: &str) -> Result<Vec<Generated>, ManualError> {
    let pages = markdown::config_pages(configuration_md, version())?;
    let mut files = vec![Generated {
        path: "packaging/man/mxgate.8",
        content: command::page(Cli::command(), version())?,
    }];
    for page in pages {
        files.push(Generated {
            path: page.path,
            content: page.roff.into_bytes(),
        });
    }
    for (path, shell) in [
        ("packaging/completions/mxgate.bash", Shell::Bash),
        ("packaging/completions/_mxgate", Shell::Zsh),
    ] {
        files.push(Generated {
            path,
            content: completions(shell),
        });
    }
    Ok(files)
}

/// The completion script of `shell` for `mxgate` (made in memory: clap_complete
/// panics on a failed write, a `Vec` never fails).
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut script);
    script
}

/// The version the pages name: the crate's.
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `mxgate completions SHELL`: the script on standard output.
pub(super) fn print_completions(shell: Shell) -> std::process::ExitCode {
    match crate::stdout::write(&completions(shell)) {
        Ok(()) => super::Exit::Ok.into(),
        Err(error) => super::output::write_failed(&error).into(),
    }
}
