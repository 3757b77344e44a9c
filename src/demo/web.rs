//! A tiny GINA web member for the demo: answers every request with a page
//! that names the member and what mxgate told it about the client.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::info;

/// Starts a web member called `name` on an ephemeral 127.0.0.1 port.
pub async fn start(name: &'static str) -> std::io::Result<SocketAddr> {
    start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Starts a web member called `name` listening on `addr`; the address it got.
pub async fn start_on(name: &'static str, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| page(name, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn page(
    name: &'static str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let client = header("x-forwarded-for");
    // A request that did not come through mxgate's proxy carries no
    // X-Forwarded-For: mxgate's own health check, every few seconds.
    if req.headers().contains_key("x-forwarded-for") {
        info!(target: "mxgate::demo", member = name, client = %client, path = %req.uri().path(), "web member answered");
    }
    let body = format!(
        "GINA portal of member {name}\n\
         path:             {}\n\
         X-Forwarded-For:  {client}\n\
         X-Forwarded-Proto: {}\n\
         Forwarded:        {}\n",
        req.uri().path(),
        header("x-forwarded-proto"),
        header("forwarded"),
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}
