//! The `/metrics` endpoint: Prometheus text from the recorder's handle,
//! over hyper's HTTP/1.1 server, accepted like every other listener
//! ([`crate::accept`]) and capped at [`METRICS_CONNECTIONS`] connections, each
//! given [`HEADER_TIMEOUT`] to send its request head.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::accept::Bounded;
use crate::descriptors::METRICS_CONNECTIONS;

/// How long a scraper has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the recorder's upkeep runs (histogram buckets, idle series).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Serves `/metrics` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, stop: CancellationToken) {
    let upkeep = handle.clone();
    let upkeep_stop = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = upkeep_stop.cancelled() => return,
                _ = tick.tick() => upkeep.run_upkeep(),
            }
        }
    });
    let mut accepting = Bounded::new("metrics", METRICS_CONNECTIONS);
    while let Some(((stream, _), place)) = accepting.next(&stop, || listener.accept()).await {
        let handle = handle.clone();
        tokio::spawn(async move {
            let _place = place;
            let service = service_fn(move |req| {
                let answer = respond(&handle, &req);
                async move { Ok::<_, Infallible>(answer) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(handle: &PrometheusHandle, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => (StatusCode::OK, handle.render()),
        _ => (
            StatusCode::NOT_FOUND,
            "metrics are at GET /metrics\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
