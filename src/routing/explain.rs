//! The result of a routing decision and its explanation.
//!
//! [`Route`] is what the SMTP session follows (its `order` and `verdict`) and
//! what `mxgate route explain` prints: as JSON through serde (the SPEC keys
//! `source_member`, `order`, `excluded` come first) or as text through
//! [`Route::render_text`], where every member name and reason is escaped
//! ([`crate::text::escape`]): a reason can quote a member's reply.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::hash::AffinityKey;
use crate::config::Affinity;
use crate::smtp::proto::Extensions;
use crate::text::escape;

/// A member in routing order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// Member name.
    pub member: String,
    /// Rendezvous score (higher is better), or, with affinity `none`, minus
    /// the member's active sessions per unit of weight (`-active / weight`,
    /// so still higher is better).
    pub score: f64,
    /// Healthy now.
    pub healthy: bool,
}

/// A member left out of the order, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Excluded {
    /// Member name.
    pub member: String,
    /// Why, e.g. `not ingress`, `not in gw1's inject_to`, `down: connect refused (back-off 8s left)`.
    pub reason: String,
}

/// The outcome of routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// `order` holds at least one member.
    Route,
    /// The source member may inject nowhere (`550 5.7.1`).
    InjectionDenied,
    /// No candidate is healthy (`451 4.4.1`).
    Unavailable,
}

impl Verdict {
    /// The SMTP reply code and enhanced status code for `MAIL` when the
    /// session cannot be routed; `None` for [`Verdict::Route`].
    pub fn reply_code(self) -> Option<(u16, &'static str)> {
        match self {
            Verdict::Route => None,
            Verdict::InjectionDenied => Some((550, "5.7.1")),
            Verdict::Unavailable => Some((451, "4.4.1")),
        }
    }
}

/// Which members a session would reach, in order, and why (SPEC section 5).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// The member the client is, when it injects.
    pub source_member: Option<String>,
    /// Healthy candidates, first choice first.
    pub order: Vec<Ranked>,
    /// Everything else, with reasons.
    pub excluded: Vec<Excluded>,
    /// What the session should do.
    pub verdict: Verdict,
    /// The client address routed (after PROXY / XCLIENT).
    pub client: IpAddr,
    /// The client's group: its address masked to `client_prefix_v4` / `_v6`
    /// (IPv4-mapped IPv6 addresses count as IPv4).
    pub client_prefix: IpNet,
    /// The local address the client reached, when known.
    pub dest: Option<IpAddr>,
    /// The affinity mode the order was computed with.
    pub affinity: Affinity,
    /// The affinity key bytes (hex in JSON), see `docs/routing.md`.
    pub key: AffinityKey,
    /// The optional SMTP extensions offered to this client, and what each
    /// candidate offers (`route explain` only; sessions do not fill it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extensions: Option<ExtensionsReport>,
}

/// What EHLO offers a client of the optional SMTP extensions, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtensionsReport {
    /// Offered: what every candidate offers.
    pub offered: Extensions,
    /// Each candidate, with what its last EHLO offered (`null`: none seen yet).
    pub members: Vec<MemberExtensions>,
}

/// One candidate's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberExtensions {
    /// Member name.
    pub member: String,
    /// What its last EHLO offered, when one was seen.
    pub offers: Option<Extensions>,
}

impl Route {
    /// The member to try first, if any.
    pub fn first_choice(&self) -> Option<&str> {
        self.order.first().map(|r| r.member.as_str())
    }

    /// Human-readable explanation for `mxgate route explain`.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        write!(
            out,
            "client:   {} (group {})",
            self.client, self.client_prefix
        )?;
        match self.dest {
            Some(d) => writeln!(out, " -> {d}")?,
            None => writeln!(out, " -> (no destination address)")?,
        }
        let mode = match self.affinity {
            Affinity::SourceDestination => "source-destination (client group and destination)",
            Affinity::Source => "source (client group only)",
            Affinity::None => "none (fewest sessions per weight first; the key breaks ties)",
        };
        writeln!(out, "affinity: {mode}")?;
        writeln!(out, "key:      {}", self.key)?;
        match &self.source_member {
            Some(s) => writeln!(
                out,
                "source:   member {} (injection: only its inject_to)",
                escape(s)
            )?,
            None => writeln!(out, "source:   public (not a member)")?,
        }

        let width = self
            .order
            .iter()
            .map(|r| escape(&r.member).chars().count())
            .chain(
                self.excluded
                    .iter()
                    .map(|e| escape(&e.member).chars().count()),
            )
            .max()
            .unwrap_or(0);
        if self.order.is_empty() {
            writeln!(out, "order:    (none)")?;
        } else {
            writeln!(out, "order:")?;
            for (rank, r) in self.order.iter().enumerate() {
                let health = if r.healthy { "healthy" } else { "down" };
                writeln!(
                    out,
                    "  {:>2}. {:<width$}  score {:>14.6}  {health}",
                    rank + 1,
                    escape(&r.member),
                    r.score,
                )?;
            }
        }
        if !self.excluded.is_empty() {
            writeln!(out, "excluded:")?;
            for e in &self.excluded {
                writeln!(
                    out,
                    "      {:<width$}  {}",
                    escape(&e.member),
                    escape(&e.reason)
                )?;
            }
        }
        write!(out, "verdict:  ")?;
        self.write_verdict(out)?;
        writeln!(out)?;
        if let Some(report) = &self.extensions {
            writeln!(
                out,
                "offered:  {} (what every candidate offers)",
                report.offered
            )?;
            for m in &report.members {
                let offers = m
                    .offers
                    .map_or_else(|| "not known yet".into(), |e| e.to_string());
                writeln!(out, "      {:<width$}  {offers}", escape(&m.member))?;
            }
        }
        Ok(())
    }

    fn write_verdict(&self, out: &mut String) -> std::fmt::Result {
        match (self.verdict, self.first_choice()) {
            (Verdict::Route, Some(first)) => write!(out, "first choice {}", escape(first)),
            (Verdict::InjectionDenied, _) => {
                let source = self.source_member.as_deref().unwrap_or("the source member");
                write!(
                    out,
                    "injection denied: {} may inject nowhere (550 5.7.1)",
                    escape(source)
                )
            }
            _ => {
                let any_down = self.excluded.iter().any(|e| e.reason.starts_with("down:"));
                if any_down {
                    write!(out, "all candidates down (451 4.4.1)")
                } else {
                    write!(out, "no usable candidate (451 4.4.1)")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::tests::{member, policy};
    use crate::routing::{MemberTable, Router};

    #[test]
    fn member_names_and_reasons_cannot_forge_lines() {
        let forged = "bk\"} 9\nFAKE_LINE";
        let client: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mut route = Router::new(policy(Affinity::Source, vec![member(forged, 100)])).route(
            &MemberTable::new(),
            client,
            None,
        );
        route.source_member = Some("src\nFAKE".into());
        route.excluded.push(Excluded {
            member: "x\x1b[2J".into(),
            reason: "down: 421 bye\r\nFAKE".into(),
        });
        let text = route.render_text();
        // client, affinity, key, source, "order:", one member, "excluded:",
        // one excluded member, verdict.
        assert_eq!(text.lines().count(), 9, "{text}");
        assert!(!crate::text::has_unescaped_control(&text), "{text}");
        for needle in [
            "source:   member src\\nFAKE (injection",
            "bk\"} 9\\nFAKE_LINE  score",
            "x\\x1b[2J           down: 421 bye\\r\\nFAKE",
            "verdict:  first choice bk\"} 9\\nFAKE_LINE",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
