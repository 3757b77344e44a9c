//! What the command line prints: text for people with every control
//! character escaped and line breaks kept ([`crate::text::escape_lines`]),
//! JSON for programs as the daemon gave it, errors on stderr. Everything
//! goes through [`crate::stdout`], so a reader that closes the pipe ends
//! the command with [`Exit::Closed`] instead of a panic.

use super::Exit;
use super::call::CallError;
use crate::stdout::{self, WriteError};
use crate::text::escape_lines;

/// Prints human-readable `text` on stdout with its control characters
/// escaped and its line breaks kept: each renderer escapes the values it
/// shows; this is the last guard, also for text the daemon rendered.
pub fn print_text(text: &str) -> Exit {
    print_raw(&escape_lines(text.trim_end()))
}

/// Prints `text` on stdout as it is (JSON, a configuration file, a script),
/// ending it with a line break.
pub fn print_raw(text: &str) -> Exit {
    match stdout::write_lines(text) {
        Ok(()) => Exit::Ok,
        Err(error) => write_failed(&error),
    }
}

/// The exit of a command whose output could not be written: quiet when
/// the reader went away, a message otherwise.
pub fn write_failed(error: &WriteError) -> Exit {
    match error {
        WriteError::Closed => Exit::Closed,
        WriteError::Failed(_) => {
            print_error(&format!("mxgate: {error}"));
            Exit::Failed
        }
    }
}

/// Prints `text` on stderr escaped the same way (errors quote peers and files).
/// A closed or failing stderr is ignored: there is nowhere left to say it.
pub fn print_error(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{}", escape_lines(text));
}

/// Prints the failure of a call to the daemon; its exit code.
pub fn failed(error: &CallError) -> Exit {
    print_error(&format!("mxgate: {error}"));
    error.exit()
}

/// Prints the daemon's answer: pretty JSON with `json`, else the text
/// `render` makes of it.
pub fn answer(
    answer: Result<serde_json::Value, CallError>,
    json: bool,
    render: impl FnOnce(&serde_json::Value) -> Result<String, String>,
) -> Exit {
    let value = match answer {
        Ok(value) => value,
        Err(error) => return failed(&error),
    };
    let text = if json {
        serde_json::to_string_pretty(&value).map_err(|e| e.to_string())
    } else {
        render(&value)
    };
    match text {
        Ok(text) if json => print_raw(&text),
        Ok(text) => print_text(&text),
        Err(e) => {
            print_error(&format!("mxgate: cannot render the daemon's answer: {e}"));
            Exit::Software
        }
    }
}
