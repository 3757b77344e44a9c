//! Fuzzes the configuration loader with arbitrary text as `mxgate.toml` and
//! as `cluster.toml`: no panics, and every error names the file, a key and
//! what is wrong, with a line inside the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mxgate::config::{ConfigErrors, load_node_str, load_policy_str};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // A directory that does not exist: relative paths in the text resolve
    // there, so the loader opens nothing of the machine's.
    let node = Path::new("/nonexistent/mxgate-fuzz/mxgate.toml");
    let policy = Path::new("/nonexistent/mxgate-fuzz/cluster.toml");
    if let Err(errors) = load_node_str(node, &text) {
        check(&errors, node, &text);
    }
    if let Err(errors) = load_policy_str(policy, &text) {
        check(&errors, policy, &text);
    }
});

fn check(errors: &ConfigErrors, file: &Path, text: &str) {
    assert!(!errors.0.is_empty(), "an error result without errors");
    let lines = text.split('\n').count();
    for e in &errors.0 {
        assert_eq!(e.file, file);
        assert!(!e.key.is_empty(), "error without a key: {e:?}");
        assert!(
            !e.message.trim().is_empty(),
            "error without a message: {e:?}"
        );
        if let Some(line) = e.line {
            assert!(line >= 1 && line <= lines, "line {line} of {lines}: {e:?}");
        }
        let shown = e.to_string();
        assert!(shown.contains(&e.message));
    }
}
