use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::*;
use crate::lft::store::Meta;

fn stored() -> (tempfile::TempDir, Store, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let meta = Meta {
        sha256: String::new(),
        file_name: Some("Bericht März.pdf".into()),
        content_type: "application/pdf".into(),
        size: 0,
        message_id: None,
        source_member: "gw1".into(),
        time: 0,
    };
    let (_, meta) = store.put(b"%PDF-1.7 content", meta).unwrap();
    (dir, store, meta.sha256)
}

fn request(method: &str, path: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .unwrap()
}

#[tokio::test]
async fn get_head_404_and_other_paths() {
    let (_dir, store, sha) = stored();
    assert!(
        serve(&store, &request("GET", "/portal/login"))
            .await
            .is_none()
    );

    let r = serve(&store, &request("GET", &format!("/lft/{sha}")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/pdf");
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "16");
    assert_eq!(
        r.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename=\"Bericht M_rz.pdf\"; filename*=UTF-8''Bericht%20M%C3%A4rz.pdf"
    );
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"%PDF-1.7 content");

    let r = serve(&store, &request("HEAD", &format!("/lft/{sha}")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "16");
    assert!(r.into_body().collect().await.unwrap().to_bytes().is_empty());

    for path in [
        format!("/lft/{}", "0".repeat(64)),
        "/lft/../x".into(),
        "/lft/".into(),
    ] {
        let r = serve(&store, &request("GET", &path)).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let r = serve(&store, &request("POST", &format!("/lft/{sha}")))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
}

#[test]
fn disposition_forms() {
    assert_eq!(disposition(None), "attachment");
    assert_eq!(disposition(Some("")), "attachment");
    assert_eq!(
        disposition(Some("a \"b\".txt")),
        "attachment; filename=\"a _b_.txt\"; filename*=UTF-8''a%20%22b%22.txt"
    );
}

/// Through a real hyper server on 127.0.0.1, as the GINA listener will call it.
#[tokio::test]
async fn over_a_hyper_server() {
    let (_dir, store, sha) = stored();
    let store = Arc::new(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_store = store.clone();
    tokio::spawn(async move {
        for _ in 0..3 {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = server_store.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        let r = serve(&store, &req).await.unwrap_or_else(|| {
                            let mut r = Response::new(Full::new(Bytes::from_static(b"proxied")));
                            *r.status_mut() = StatusCode::BAD_GATEWAY;
                            r
                        });
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    for (path, status, body) in [
        (format!("/lft/{sha}"), 200, &b"%PDF-1.7 content"[..]),
        (
            format!("/lft/{}", "a".repeat(64)),
            404,
            &b"no such attachment\n"[..],
        ),
        ("/other".to_string(), 502, &b"proxied"[..]),
    ] {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .uri(&path)
            .header("host", "gina")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let r = send.send_request(req).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(
            &r.into_body().collect().await.unwrap().to_bytes()[..],
            body,
            "{path}"
        );
    }
}

/// As the GINA proxy's local content, the service claims `/lft/...` only.
#[test]
fn lft_claims_only_its_paths() {
    let dir = tempfile::tempdir().unwrap();
    let lft = Lft::open("n1", dir.path(), crate::lft::no_host()).unwrap();
    let content: &dyn LocalContent = &*lft;
    assert!(content.claims("/lft/"));
    assert!(content.claims(&format!("/lft/{}", "a".repeat(64))));
    for path in ["/", "/lft", "/portal/lft/x", "/LFT/x"] {
        assert!(!content.claims(path), "{path}");
    }
}
