//! `GET`/`HEAD /lft/SHA256` for a GINA listener: the stored attachment with
//! its content type and file name, from the local store; `404` when absent.
//!
//! The GINA proxy reaches it as the listener's [`LocalContent`], which
//! [`Lft`] implements: it claims the paths under `/lft/` and answers them
//! with [`serve`]; every other request is proxied as usual. The body is read
//! whole (attachments are bounded by `[lft] max_message_size`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::Lft;
use super::store::{Store, is_sha256};
use crate::http::LocalContent;
use crate::http::local_content::LocalFuture;

/// The paths of stored attachments: `/lft/SHA256`.
const PREFIX: &str = "/lft/";

impl LocalContent for Lft {
    fn claims(&self, path: &str) -> bool {
        path.starts_with(PREFIX)
    }

    fn serve<'a>(&'a self, req: &'a Request<Incoming>) -> LocalFuture<'a> {
        Box::pin(serve(&self.store, req))
    }
}

/// The answer to `req` when its path is `/lft/...`; `None` otherwise.
pub async fn serve<B>(store: &Store, req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let sha = req.uri().path().strip_prefix(PREFIX)?;
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(r);
        }
    };
    if !is_sha256(sha) || !store.contains(sha) {
        return Some(plain(StatusCode::NOT_FOUND, "no such attachment\n"));
    }
    let meta = match store.meta(sha) {
        Ok(Some(meta)) => meta,
        Ok(None) => return Some(plain(StatusCode::NOT_FOUND, "no such attachment\n")),
        Err(e) => {
            tracing::warn!(sha256 = %sha, error = %e, "LFT metadata unreadable");
            return Some(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "attachment unreadable\n",
            ));
        }
    };
    let body = if head {
        Bytes::new()
    } else {
        match tokio::fs::read(store.object_path(sha)).await {
            Ok(data) => Bytes::from(data),
            Err(e) => {
                tracing::warn!(sha256 = %sha, error = %e, "LFT object unreadable");
                return Some(plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "attachment unreadable\n",
                ));
            }
        }
    };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    let content_type = HeaderValue::from_str(&meta.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    if let Ok(v) = HeaderValue::from_str(&disposition(meta.file_name.as_deref())) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{sha}\"")) {
        headers.insert(header::ETAG, v);
    }
    Some(response)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `Content-Disposition` for `name` (RFC 6266): an ASCII fallback and the
/// UTF-8 name percent-encoded (RFC 8187).
pub fn disposition(name: Option<&str>) -> String {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return "attachment".to_owned();
    };
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests;
