//! Sans-IO: undoing SMTP dot-stuffing on the relayed byte stream, and finding
//! the attachments of a message (mail-parser) at or above the threshold.

use mail_parser::{Message, MessageParser, MimeHeaders};

/// Undoes dot-stuffing (RFC 5321 4.5.2) chunk by chunk, independent of how
/// the stream is cut. The input is what the relay forwards after `354`,
/// terminator included; [`Unstuffer::finish`] drops the terminator.
#[derive(Debug, Clone)]
pub struct Unstuffer {
    at_line_start: bool,
}

impl Default for Unstuffer {
    fn default() -> Self {
        Unstuffer {
            at_line_start: true,
        }
    }
}

impl Unstuffer {
    /// Appends the unstuffed form of `chunk` to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        for &b in chunk {
            if self.at_line_start && b == b'.' {
                self.at_line_start = false;
                continue;
            }
            self.at_line_start = b == b'\n';
            out.push(b);
        }
    }

    /// The message without the unstuffed terminator: after unstuffing,
    /// the final `.CRLF` became a lone `CRLF` at the very end.
    pub fn strip_terminator(unstuffed: &[u8]) -> &[u8] {
        unstuffed.strip_suffix(b"\r\n").unwrap_or(unstuffed)
    }
}

/// One attachment found in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `filename` / `name` parameter, when given.
    pub file_name: Option<String>,
    /// `type/subtype` (default `application/octet-stream`).
    pub content_type: String,
    /// Decoded content.
    pub data: Vec<u8>,
}

/// What a parsed message yields for the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// `Message-ID`, when present.
    pub message_id: Option<String>,
    /// Attachments of at least the threshold, in message order (attached
    /// messages are searched too).
    pub attachments: Vec<Found>,
}

/// Parses `message` (unstuffed, without terminator) and returns every
/// attachment whose decoded size is at least `threshold` bytes.
pub fn extract(message: &[u8], threshold: u64) -> Extracted {
    let Some(parsed) = MessageParser::default().parse(message) else {
        return Extracted::default();
    };
    let mut out = Extracted {
        message_id: parsed.message_id().map(str::to_owned),
        attachments: Vec::new(),
    };
    collect(&parsed, threshold, 0, &mut out.attachments);
    out
}

/// Nested messages deeper than this are not searched.
const MAX_DEPTH: usize = 8;

fn collect(message: &Message<'_>, threshold: u64, depth: usize, out: &mut Vec<Found>) {
    for part in message.attachments() {
        let data = part.contents();
        if data.len() as u64 >= threshold {
            let content_type = part.content_type().map_or_else(
                || "application/octet-stream".to_owned(),
                |ct| match &ct.c_subtype {
                    Some(sub) => format!("{}/{}", ct.c_type, sub),
                    None => ct.c_type.to_string(),
                },
            );
            out.push(Found {
                file_name: part.attachment_name().map(str::to_owned),
                content_type: content_type.to_ascii_lowercase(),
                data: data.to_vec(),
            });
        }
        if let Some(inner) = part.message()
            && depth < MAX_DEPTH
        {
            collect(inner, threshold, depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests;
