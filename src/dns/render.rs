//! Text form of a [`CheckReport`]: the summary line first (what monitoring
//! systems show), then one block per domain.

use std::fmt::Write;

use super::report::{CheckReport, DomainReport, MxReport, MxRole, PtrStatus};

/// The whole report as printed by `mxgate dns check`.
pub fn render_text(report: &CheckReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", report.summary);
    if !report.nameservers.is_empty() {
        let _ = writeln!(out, "nameservers: {}", report.nameservers.join(", "));
    }
    for d in &report.domains {
        out.push('\n');
        domain(&mut out, d);
    }
    out
}

fn domain(out: &mut String, d: &DomainReport) {
    let _ = writeln!(out, "{}: {}", d.domain, d.status.label());
    if let Some(e) = &d.mx_error {
        let _ = writeln!(out, "  MX lookup: {e}");
    }
    if d.implicit_mx {
        let _ = writeln!(
            out,
            "  no MX record: implicit MX (the domain's own address)"
        );
    }
    for mx in &d.mx {
        mx_line(out, mx, d);
        for a in &mx.addresses {
            let smtp = if a.smtp.answers {
                format!("SMTP ok ({})", a.smtp.banner.as_deref().unwrap_or("220"))
            } else {
                format!(
                    "SMTP FAILED ({})",
                    a.smtp.error.as_deref().unwrap_or("no 220 greeting")
                )
            };
            let ptr = match a.ptr.status {
                PtrStatus::Confirmed => format!("PTR {} confirmed", a.ptr.names.join(", ")),
                PtrStatus::Missing => "PTR missing".to_owned(),
                PtrStatus::Unconfirmed => {
                    format!("PTR {} NOT confirmed", a.ptr.names.join(", "))
                }
                PtrStatus::Unknown => format!(
                    "PTR unknown ({})",
                    a.ptr.error.as_deref().unwrap_or("lookup failed")
                ),
            };
            let members = if a.members.is_empty() {
                "no member".to_owned()
            } else {
                format!("member {}", a.members.join(", "))
            };
            let _ = writeln!(
                out,
                "    {:<4} {} ttl {}; {smtp}; {ptr}; {members}",
                a.family,
                a.address,
                ttl(a.ttl)
            );
        }
    }
    if !d.ingress_not_pointed_at.is_empty() {
        let _ = writeln!(
            out,
            "  ingress members no MX address points at: {}",
            d.ingress_not_pointed_at.join(", ")
        );
    }
    for p in &d.problems {
        let _ = writeln!(out, "  {}: {}", p.status.label(), p.message);
    }
}

fn mx_line(out: &mut String, mx: &MxReport, d: &DomainReport) {
    let mut notes = vec![match mx.role {
        MxRole::Primary => "primary".to_owned(),
        MxRole::Backup => "backup".to_owned(),
    }];
    if mx.round_robin {
        let others =
            d.mx.iter()
                .filter(|m| m.preference == mx.preference && m.host != mx.host)
                .count();
        notes.push(format!(
            "round robin with {others} other MX of preference {}",
            mx.preference
        ));
    }
    if mx.address_round_robin {
        notes.push(format!("round robin over {} addresses", mx.addresses.len()));
    }
    if let Some(e) = &mx.error {
        notes.push(format!("does not resolve: {e}"));
    }
    let ttl_text = mx
        .ttl
        .map(|t| format!(" ttl {}", ttl(t)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  MX {} {}{ttl_text}: {}",
        mx.preference,
        mx.host,
        notes.join(", ")
    );
}

fn ttl(seconds: u32) -> String {
    format!("{seconds}s")
}
