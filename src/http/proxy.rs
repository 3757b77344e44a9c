//! Forwarding one request: routing, the attempts, the answer.
//!
//! Retry rule: a request moves to the next member only when connecting to
//! the member failed (refused, unreachable, connect timeout, TLS handshake),
//! so nothing of it reached a portal; that holds for every method,
//! including `POST` (nginx's `proxy_next_upstream error` does the same).
//! Once a member has the request, its answer, or the failure, is final:
//! no answer within `upstream_timeout` is `504`, a broken connection `502`.
//! A failed connect also puts the member in back-off (`[upstream] backoff`)
//! for every session, SMTP and HTTP alike, as SMTP's passive check does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::timeout;
use tracing::{debug, warn};

use super::HttpContext;
use super::body::{PendingBody, ResponseBody};
use super::headers::{self, ConnForward};
use super::local_content::LocalResponse;
use super::log::Access;
use super::route::RouteCache;
use super::upstream::{LocalPool, SendError};
use super::watchdog::Activity;
use super::{sticky, upgrade};

/// The client side of one connection.
pub struct ConnInfo {
    /// The client.
    pub client: SocketAddr,
    /// The local address the client reached (the routing destination).
    pub local: SocketAddr,
    /// The listener speaks TLS.
    pub secure: bool,
    /// Where upgraded connections are tracked for the drain.
    pub tasks: super::server::Trackers,
    /// This connection's member connections.
    pub pool: LocalPool,
    /// Its member order, cached across its requests.
    pub routes: RouteCache,
    /// Its forwarding header values.
    pub forward: ConnForward,
    /// Its requests in flight, for the request-head watchdog.
    pub activity: Arc<Activity>,
}

/// Member health as the GINA proxy sees it: the one place to switch to
/// per-service health (`Service::Gina`) when it exists.
mod health {
    use std::time::Duration;

    use crate::routing::{MemberTable, Service};

    /// A connect to `member`'s portal failed: its GINA service (not its MTA)
    /// is suspect.
    pub(super) fn mark_failed(table: &MemberTable, member: &str, reason: &str, backoff: Duration) {
        table.mark_service_failed(member, Service::Gina, reason, backoff);
    }
}

/// Answers one request.
pub async fn handle(
    ctx: &HttpContext,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
) -> Response<ResponseBody> {
    let client = conn.client.ip().to_canonical();
    let mut access = Access::new(
        ctx.name.clone(),
        client,
        req.method().clone(),
        req.uri().clone(),
        Instant::now(),
    );
    access.busy = Some(conn.activity.busy());
    if req.method() == Method::CONNECT {
        return local(
            access,
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported",
        );
    }
    // Boxed (and only for the paths it claims): inline, these futures would
    // be moved with every request's future.
    if let Some(content) = &ctx.local_content
        && content.claims(req.uri().path())
        && let Some(answer) = content.serve(&req).await
    {
        return Box::pin(served_locally(answer, access)).await;
    }
    let limit = ctx.listener.max_body_size;
    if content_length(req.headers()).is_some_and(|len| len > limit) {
        return local(
            access,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body larger than {limit} bytes"),
        );
    }

    let order = conn
        .routes
        .order(ctx, client, conn.local.ip().to_canonical());
    let cookie_name = ctx.listener.sticky_cookie.as_deref();
    // The member the request's cookie names, when it is a candidate: tried first.
    let cookie_member = cookie_name
        .and_then(|name| sticky::find(req.headers(), name))
        .and_then(|wanted| order.iter().position(|c| &*c.name == wanted));
    if order.is_empty() {
        return local(
            access,
            StatusCode::SERVICE_UNAVAILABLE,
            "no GINA member is available",
        );
    }

    let is_upgrade = headers::is_upgrade_request(req.method(), req.version(), req.headers());
    let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    headers::remove_hop_by_hop(&mut parts.headers, is_upgrade);
    // HTTP/2 has `:authority` instead, and `Connection` may have named it.
    if let Some(host) = &host
        && !parts.headers.contains_key(header::HOST)
    {
        parts.headers.insert(header::HOST, host.clone());
    }
    conn.forward
        .apply(&mut parts.headers, host.as_ref(), parts.version);

    let pending = PendingBody::new(body, limit);
    let attempts = order.len().min(ctx.max_attempts);
    let tries = cookie_member
        .into_iter()
        .chain((0..order.len()).filter(|&i| Some(i) != cookie_member));
    let mut failures: Vec<Arc<str>> = Vec::new();
    for (i, pos) in tries.take(attempts).enumerate() {
        let candidate = &order[pos];
        let member = candidate.name.clone();
        let Some(up) = &candidate.upstream else {
            continue;
        };
        let Some(body) = pending.attempt() else {
            break;
        };
        let mut out = Request::new(body);
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = origin_form(&parts.uri);
        *out.headers_mut() = if i + 1 < attempts {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        if !out.headers().contains_key(header::HOST)
            && let Ok(h) = HeaderValue::from_str(up.authority.as_str())
        {
            out.headers_mut().insert(header::HOST, h);
        }
        let sent = timeout(
            ctx.listener.upstream_timeout,
            ctx.upstreams.send(&conn.pool, up, out, is_upgrade),
        )
        .await;
        match sent {
            Ok(Ok(resp)) => {
                // Set unless the request's cookie already named this member.
                let cookie = cookie_name.filter(|_| cookie_member.is_none() || i > 0);
                return respond(ctx, conn, access, member, resp, client_upgrade, cookie);
            }
            Err(_) => {
                warn!(listener = %ctx.name, member = %member, client = %client, timeout = ?ctx.listener.upstream_timeout, "GINA member did not answer in time");
                access.member = Some(member);
                return local(
                    access,
                    StatusCode::GATEWAY_TIMEOUT,
                    "the GINA member did not answer in time",
                );
            }
            Ok(Err(_)) if pending.exceeded() => {
                return local(
                    access,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("request body larger than {limit} bytes"),
                );
            }
            Ok(Err(SendError::Connect(e))) => {
                let reason = format!("gina connect failed: {}", error_chain(e.as_ref()));
                warn!(listener = %ctx.name, member = %member, client = %client, reason = %reason, "GINA member unreachable; trying the next one");
                health::mark_failed(&ctx.members, &member, &reason, ctx.backoff);
                failures.push(member);
            }
            Ok(Err(SendError::Request(e))) => {
                warn!(listener = %ctx.name, member = %member, client = %client, error = %error_chain(&e), "GINA request failed");
                access.member = Some(member);
                return local(
                    access,
                    StatusCode::BAD_GATEWAY,
                    "the GINA member failed to answer",
                );
            }
        }
    }
    debug!(tried = ?failures, "no GINA member reachable");
    local(
        access,
        StatusCode::BAD_GATEWAY,
        "no GINA member could be reached",
    )
}

/// The member's answer, passed on: hop-by-hop headers removed, the sticky
/// cookie set, an upgrade spliced.
fn respond(
    ctx: &HttpContext,
    conn: &ConnInfo,
    mut access: Access,
    member: Arc<str>,
    mut resp: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    cookie: Option<&str>,
) -> Response<ResponseBody> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upgraded = match client_upgrade {
        Some(client_side) if switching => {
            let member_side = hyper::upgrade::on(&mut resp);
            Some((client_side, member_side))
        }
        _ => None,
    };
    let (mut parts, body) = resp.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers, upgraded.is_some());
    if let Some(name) = cookie
        && let Some(value) = sticky::set_cookie(name, &member, conn.secure)
    {
        parts.headers.append(header::SET_COOKIE, value);
    }
    access.status = parts.status.as_u16();
    if let Some((client_side, member_side)) = upgraded {
        upgrade::splice(
            &conn.tasks,
            ctx.shutdown.clone(),
            client_side,
            member_side,
            member.to_string(),
        );
        access.member = Some(member);
        return Response::from_parts(parts, ResponseBody::empty(access));
    }
    access.member = Some(member);
    Response::from_parts(parts, ResponseBody::upstream(body, access))
}

/// An answer of the listener's [`LocalContent`](super::LocalContent) (the
/// LFT store: `GET`/`HEAD /lft/SHA256`).
async fn served_locally(answer: LocalResponse, mut access: Access) -> Response<ResponseBody> {
    use http_body_util::BodyExt;
    let (parts, body) = answer.into_parts();
    access.status = parts.status.as_u16();
    // `Full` cannot fail: its error type is `Infallible`.
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    Response::from_parts(parts, ResponseBody::local(bytes, access))
}

/// mxgate's own answer: status and a one-line plain-text reason.
fn local(mut access: Access, status: StatusCode, reason: &str) -> Response<ResponseBody> {
    access.status = status.as_u16();
    let text = format!(
        "{} {}: {reason}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(ResponseBody::local(Bytes::from(text), access));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The request target as sent to a member: `/path?query`.
fn origin_form(uri: &http::Uri) -> http::Uri {
    match uri.path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => http::Uri::from(pq.clone()),
        _ => http::Uri::from_static("/"),
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// An error with its causes, `a: b: c`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
