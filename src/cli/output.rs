//! What the command line prints: text for people with every control
//! character escaped and line breaks kept ([`crate::text::escape_lines`]),
//! JSON for programs as the daemon gave it, errors on stderr.

use super::Exit;
use super::call::CallError;
use crate::text::escape_lines;

/// Prints human-readable `text` on stdout with its control characters
/// escaped and its line breaks kept: each renderer escapes the values it
/// shows; this is the last guard, also for text the daemon rendered.
pub fn print_text(text: &str) {
    println!("{}", escape_lines(text.trim_end()));
}

/// Prints `text` on stderr escaped the same way (errors quote peers and files).
pub fn print_error(text: &str) {
    eprintln!("{}", escape_lines(text));
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
        Ok(text) if json => {
            println!("{text}");
            Exit::Ok
        }
        Ok(text) => {
            print_text(&text);
            Exit::Ok
        }
        Err(e) => {
            print_error(&format!("mxgate: cannot render the daemon's answer: {e}"));
            Exit::Software
        }
    }
}
