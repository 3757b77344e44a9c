//! The repository's top level holds source, documentation and
//! configuration examples only: nothing a run left behind is committed.

use std::process::Command;

/// What may be at the top level of the repository.
const TOP_LEVEL: &[&str] = &[
    ".ci",
    ".gitignore",
    "Cargo.lock",
    "Cargo.toml",
    "README.md",
    "benches",
    "config",
    "docs",
    "fuzz",
    "packaging",
    "src",
    "tests",
    "third_party",
];

#[test]
fn the_top_level_holds_only_source_docs_and_examples() {
    let out = Command::new("git")
        .args(["ls-files"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let Ok(out) = out.map_err(|e| println!("skipped: no git ({e})")) else {
        assert!(std::env::var_os("CI").is_none(), "git is missing in CI");
        return;
    };
    if !out.status.success() {
        // A source tarball without .git: nothing to check.
        println!("skipped: not a git checkout");
        return;
    }
    let files = String::from_utf8_lossy(&out.stdout);
    let mut strays: Vec<&str> = files
        .lines()
        .filter_map(|file| file.split('/').next())
        .filter(|top| !TOP_LEVEL.contains(top))
        .collect();
    strays.dedup();
    assert!(
        strays.is_empty(),
        "committed at the top level but not source, docs or examples: {strays:?}"
    );
}
