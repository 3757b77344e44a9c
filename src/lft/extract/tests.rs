use super::*;

/// Base64 of `data`, 76 characters a line (test helper; no crate needed).
fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s.as_bytes()
        .chunks(76)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn attachment(boundary: &str, name: &str, ctype: &str, data: &[u8]) -> String {
    format!(
        "--{boundary}\r\nContent-Type: {ctype}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        b64(data)
    )
}

fn message(parts: &str, boundary: &str) -> Vec<u8> {
    format!(
        "From: a@example.com\r\nTo: b@example.com\r\nMessage-ID: <m1@example.com>\r\nSubject: t\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\nhello\r\n{parts}--{boundary}--\r\n"
    )
    .into_bytes()
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn base64_attachments_at_or_above_the_threshold() {
    let big = data(5000, 1);
    let exact = data(4096, 2);
    let small = data(4095, 3);
    let parts = attachment("b", "big.bin", "application/octet-stream", &big)
        + &attachment("b", "exact.pdf", "Application/PDF", &exact)
        + &attachment("b", "small.bin", "application/octet-stream", &small);
    let found = extract(&message(&parts, "b"), 4096);
    assert_eq!(found.message_id.as_deref(), Some("m1@example.com"));
    let view: Vec<_> = found
        .attachments
        .iter()
        .map(|a| {
            (
                a.file_name.as_deref(),
                a.content_type.as_str(),
                a.data.len(),
            )
        })
        .collect();
    assert_eq!(
        view,
        [
            (Some("big.bin"), "application/octet-stream", 5000),
            (Some("exact.pdf"), "application/pdf", 4096)
        ]
    );
    assert_eq!(found.attachments[0].data, big);
    assert_eq!(found.attachments[1].data, exact);
}

#[test]
fn nested_multiparts_and_attached_messages() {
    let inner = data(3000, 7);
    let deep = data(3000, 9);
    let alternative = format!(
        "--b\r\nContent-Type: multipart/mixed; boundary=\"c\"\r\n\r\n--c\r\nContent-Type: text/plain\r\n\r\nx\r\n{}--c--\r\n",
        attachment("c", "inner.bin", "application/zip", &inner)
    );
    let attached = String::from_utf8(message(
        &attachment("b2", "deep.bin", "image/png", &deep),
        "b2",
    ))
    .unwrap();
    let rfc822 = format!(
        "--b\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"fwd.eml\"\r\n\r\n{attached}\r\n"
    );
    let found = extract(&message(&(alternative + &rfc822), "b"), 2000);
    let names: Vec<_> = found
        .attachments
        .iter()
        .map(|a| a.file_name.clone().unwrap_or_default())
        .collect();
    assert!(names.contains(&"inner.bin".to_string()), "{names:?}");
    assert!(names.contains(&"deep.bin".to_string()), "{names:?}");
    let deep_found = found
        .attachments
        .iter()
        .find(|a| a.file_name.as_deref() == Some("deep.bin"))
        .unwrap();
    assert_eq!(deep_found.data, deep);
    assert_eq!(deep_found.content_type, "image/png");
}

#[test]
fn no_attachments_and_garbage() {
    assert!(
        extract(b"Subject: x\r\n\r\nbody\r\n", 1)
            .attachments
            .is_empty()
    );
    assert!(extract(b"", 1).attachments.is_empty());
    let found = extract(&message("", "b"), 0);
    assert!(found.attachments.is_empty(), "{found:?}");
}

#[test]
fn unstuffing_is_independent_of_chunking() {
    // What the relay forwards: dot-stuffed lines and the terminator.
    let wire: &[u8] = b"a\r\n..b\r\n.\r\nc\r\n...\r\n.\r\n";
    let expected: &[u8] = b"a\r\n.b\r\n\r\nc\r\n..\r\n";
    for cut in 0..wire.len() {
        for cut2 in cut..wire.len() {
            let mut u = Unstuffer::default();
            let mut out = Vec::new();
            u.push(&wire[..cut], &mut out);
            u.push(&wire[cut..cut2], &mut out);
            u.push(&wire[cut2..], &mut out);
            assert_eq!(
                Unstuffer::strip_terminator(&out),
                expected,
                "cuts {cut} {cut2}"
            );
        }
    }
    let mut out = Vec::new();
    Unstuffer::default().push(b".\r\n", &mut out);
    assert_eq!(Unstuffer::strip_terminator(&out), b"");
}
