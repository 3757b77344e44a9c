//! Web members for GINA proxy tests: a small hyper server on 127.x that names
//! itself in every answer, echoes the request headers, answers `/slow` after 1.5 s, counts (and discards)
//! request bodies, and echoes bytes after a WebSocket-style upgrade on `/ws`;
//! and a member that accepts connections and never answers.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// A running web member.
pub struct WebMember {
    /// Its name, in every answer as `member=NAME`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests answered so far.
    pub requests: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WebMember {
    /// Starts a member called `name` on `ip`, port chosen by the system.
    pub fn start(name: &str, ip: &str) -> WebMember {
        let std_listener = StdListener::bind((ip, 0)).expect("bind web member");
        Self::serve(name, std_listener)
    }

    /// Starts a member on a given address (to bring a stopped one back).
    pub fn start_at(name: &str, addr: SocketAddr) -> WebMember {
        let std_listener = StdListener::bind(addr).expect("bind web member");
        Self::serve(name, std_listener)
    }

    /// Starts a member speaking HTTPS with `tls` on `ip`.
    pub fn start_tls(name: &str, ip: &str, tls: Arc<rustls::ServerConfig>) -> WebMember {
        let std_listener = StdListener::bind((ip, 0)).expect("bind web member");
        Self::serve_with(
            name,
            std_listener,
            Some(tokio_rustls::TlsAcceptor::from(tls)),
        )
    }

    fn serve(name: &str, std_listener: StdListener) -> WebMember {
        Self::serve_with(name, std_listener, None)
    }

    fn serve_with(
        name: &str,
        std_listener: StdListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> WebMember {
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let requests = Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        let member: Arc<str> = Arc::from(name);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
                loop {
                    let accepted = tokio::select! {
                        _ = &mut stopped => return,
                        a = listener.accept() => a,
                    };
                    let Ok((stream, _)) = accepted else { continue };
                    let member = member.clone();
                    let count = count.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            count.fetch_add(1, Ordering::Relaxed);
                            answer(member.clone(), req)
                        });
                        let http = hyper::server::conn::http1::Builder::new();
                        match tls {
                            Some(acceptor) => {
                                let Ok(stream) = acceptor.accept(stream).await else {
                                    return;
                                };
                                let _ = http
                                    .serve_connection(TokioIo::new(stream), service)
                                    .with_upgrades()
                                    .await;
                            }
                            None => {
                                let _ = http
                                    .serve_connection(TokioIo::new(stream), service)
                                    .with_upgrades()
                                    .await;
                            }
                        }
                    });
                }
            });
            // Dropping the runtime here closes every connection.
        });
        WebMember {
            name: name.to_owned(),
            addr,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops the member: its port refuses connections and open connections close.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// The `gina = ...` value for this member.
    pub fn gina(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for WebMember {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(
    member: Arc<str>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/ws" && req.headers().contains_key(hyper::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on.await {
                let mut io = TokioIo::new(upgraded);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("x-member", &*member)
            .body(Full::new(Bytes::new()))
            .expect("101");
        return Ok(resp);
    }
    if req.uri().path() == "/slow" {
        // A page that takes a while: requests in flight during a drain.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let mut text = format!(
        "member={member}\nmethod={}\npath={}\n",
        req.method(),
        req.uri().path()
    );
    for (name, value) in req.headers() {
        text.push_str(&format!(
            "h:{}: {}\n",
            name.as_str(),
            value.to_str().unwrap_or("?")
        ));
    }
    // Count the body frame by frame: never hold it.
    let mut body = req.into_body();
    let mut bytes = 0u64;
    let mut ok = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => {
                ok = false;
                break;
            }
        }
    }
    text.push_str(&format!("bytes={bytes}\ncomplete={ok}\n"));
    let resp = Response::builder()
        .header("x-member", &*member)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(text)))
        .expect("200");
    Ok(resp)
}

/// A member that accepts connections, reads nothing and never answers.
pub struct HangingMember {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HangingMember {
    /// Starts on `ip`; gives up by itself after a minute.
    pub fn start(ip: &str) -> HangingMember {
        let listener = StdListener::bind((ip, 0)).expect("bind hanging member");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        HangingMember {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HangingMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
