//! End to end over real loopback: axum served on 127.0.0.1:0, requests on
//! separate TCP connections, raw HTTP/1.1.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, routing::get};
use backpressure_concurrency::ConcurrencyLimitLayer;
use backpressure_http::RespondLayer;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tower::ServiceBuilder;

/// Sends one request on its own connection; returns the status and headers.
async fn request(addr: SocketAddr, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut req = String::from("GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw);
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(": ").map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())))
        .collect();
    (status, headers)
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .expect("serve");
    });
    addr
}

/// A handler that counts how many run at once and waits for the test.
#[derive(Clone)]
struct Gate {
    open: Arc<Semaphore>,
    running: Arc<tokio::sync::watch::Sender<usize>>,
    peak: Arc<AtomicUsize>,
}

impl Gate {
    fn new() -> Self {
        let (running, _) = tokio::sync::watch::channel(0);
        Gate { open: Arc::new(Semaphore::new(0)), running: Arc::new(running), peak: Arc::default() }
    }

    fn router(&self) -> Router {
        let gate = self.clone();
        Router::new().route(
            "/",
            get(move || {
                let gate = gate.clone();
                async move {
                    gate.running.send_modify(|n| {
                        *n += 1;
                        gate.peak.fetch_max(*n, Ordering::SeqCst);
                    });
                    let _permit = gate.open.acquire().await.expect("gate");
                    gate.running.send_modify(|n| *n -= 1);
                    "ok"
                }
            }),
        )
    }

    /// Waits, without polling, until `n` handlers are inside.
    async fn wait_for_running(&self, n: usize) {
        let mut rx = self.running.subscribe();
        rx.wait_for(|running| *running >= n).await.expect("gate alive");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_across_fifty_connections() {
    let gate = Gate::new();
    let app = gate.router().layer(
        ServiceBuilder::new()
            .layer(RespondLayer::new())
            .layer(ConcurrencyLimitLayer::builder().limit(5).max_queue(0).build().unwrap()),
    );
    let addr = serve(app).await;
    let (done, mut statuses) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..50 {
        let done = done.clone();
        tokio::spawn(async move {
            let _ = done.send(request(addr, &[]).await.0);
        });
    }
    drop(done);
    // A broken limit would let every request in and answer none before the
    // gate opens: bound the wait so that fails instead of hanging.
    let guard = std::time::Duration::from_secs(30);
    tokio::time::timeout(guard, gate.wait_for_running(5)).await.expect("5 handlers started");
    // The 45 others are answered at once, while the 5 still hold their permits.
    let mut seen = Vec::new();
    for _ in 0..45 {
        let status = tokio::time::timeout(guard, statuses.recv()).await;
        seen.push(status.expect("45 answered while 5 run").expect("a response"));
    }
    gate.open.add_permits(50);
    while let Some(status) = statuses.recv().await {
        seen.push(status);
    }
    let ok = seen.iter().filter(|s| **s == 200).count();
    let unavailable = seen.iter().filter(|s| **s == 503).count();
    println!(
        "ours: peak {} handlers at once; {ok} x 200, {unavailable} x 503",
        gate.peak.load(Ordering::SeqCst)
    );
    assert_eq!(gate.peak.load(Ordering::SeqCst), 5, "the limit held across connections");
    assert_eq!((ok, unavailable), (5, 45));
}

#[cfg(feature = "axum")]
mod headers {
    use super::*;
    use backpressure_http::ClientIp;
    use backpressure_rate::{Quota, RateLimitLayer};

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_429_carries_retry_after_and_ratelimit_headers() {
        let app = Router::new().route("/", get(|| async { "ok" })).layer(
            ServiceBuilder::new().layer(RespondLayer::new()).layer(
                RateLimitLayer::builder(Quota::per_minute(2).burst(2))
                    .keyed(ClientIp::peer())
                    .build()
                    .unwrap(),
            ),
        );
        let addr = serve(app).await;
        assert_eq!(request(addr, &[]).await.0, 200);
        assert_eq!(request(addr, &[]).await.0, 200);
        let (status, headers) = request(addr, &[]).await;
        assert_eq!(status, 429);
        assert_eq!(header(&headers, "retry-after"), Some("30"), "one unit of 2/min frees in 30 s");
        assert_eq!(header(&headers, "ratelimit-policy"), Some("\"default\";q=2;w=60"));
        assert_eq!(header(&headers, "ratelimit"), Some("\"default\";r=0;t=60"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spoofed_forwarded_for_entries_do_not_change_the_key() {
        // Behind one trusted proxy that appends 203.0.113.9.
        let app = Router::new().route("/", get(|| async { "ok" })).layer(
            ServiceBuilder::new().layer(RespondLayer::new()).layer(
                RateLimitLayer::builder(Quota::per_minute(1).burst(1))
                    .keyed(ClientIp::behind_proxies(1))
                    .build()
                    .unwrap(),
            ),
        );
        let addr = serve(app).await;
        assert_eq!(request(addr, &[("x-forwarded-for", "1.1.1.1, 203.0.113.9")]).await.0, 200);
        for spoof in ["2.2.2.2", "3.3.3.3, 4.4.4.4", "not-an-ip", ""] {
            let xff = format!("{spoof}, 203.0.113.9");
            let (status, _) = request(addr, &[("x-forwarded-for", &xff)]).await;
            assert_eq!(status, 429, "spoofed prefix {spoof:?} must not buy a new bucket");
        }
        // A different real client (as the proxy reports it) has its own.
        assert_eq!(request(addr, &[("x-forwarded-for", "203.0.113.10")]).await.0, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grpc_requests_get_grpc_statuses() {
        let app = Router::new().route("/", get(|| async { "ok" })).layer(
            ServiceBuilder::new()
                .layer(RespondLayer::new())
                .layer(RateLimitLayer::builder(Quota::per_second(1).burst(1)).build().unwrap()),
        );
        let addr = serve(app).await;
        let grpc = [("content-type", "application/grpc")];
        assert_eq!(request(addr, &grpc).await.0, 200);
        let (status, headers) = request(addr, &grpc).await;
        assert_eq!(status, 200, "trailers-only gRPC response");
        assert_eq!(header(&headers, "grpc-status"), Some("8"));
        let pushback: u64 = header(&headers, "grpc-retry-pushback-ms").unwrap().parse().unwrap();
        assert!(pushback > 0 && pushback <= 1_000);
    }
}

mod streaming {
    use std::{
        convert::Infallible,
        pin::Pin,
        task::{Context, Poll},
    };

    use axum::body::Body;
    use bytes::Bytes;
    use http_body::Frame;
    use tokio::sync::{mpsc, oneshot};

    use super::*;

    /// A server-sent-events-like body fed by a channel; tells the test when
    /// the server drops it.
    struct Events {
        rx: mpsc::Receiver<Bytes>,
        dropped: Option<oneshot::Sender<()>>,
    }

    impl http_body::Body for Events {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
        }
    }

    impl Drop for Events {
        fn drop(&mut self) {
            if let Some(tx) = self.dropped.take() {
                let _ = tx.send(());
            }
        }
    }

    type Streams = Arc<std::sync::Mutex<Vec<(mpsc::Receiver<Bytes>, oneshot::Sender<()>)>>>;

    fn app(
        layer: ConcurrencyLimitLayer<
            backpressure_core::DefaultPriority,
            backpressure_core::CurrentDeadline,
            backpressure_core::DefaultClassify,
            backpressure_concurrency::HoldUntilBodyEnd,
        >,
        streams: Streams,
    ) -> Router {
        Router::new()
            .route(
                "/",
                get(move || {
                    let streams = Arc::clone(&streams);
                    async move {
                        let (rx, dropped) =
                            streams.lock().unwrap().pop().expect("a prepared stream");
                        Body::new(Events { rx, dropped: Some(dropped) })
                    }
                }),
            )
            .layer(ServiceBuilder::new().layer(RespondLayer::new()).layer(layer))
    }

    async fn open_stream(addr: SocketAddr) -> (TcpStream, String) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.expect("read the head");
            head.push(byte[0]);
        }
        (stream, String::from_utf8_lossy(&head).into_owned())
    }

    // Current-thread: when the server drops a body, its permit is released
    // in the same synchronous drop, before this test's task runs again.
    #[tokio::test(flavor = "current_thread")]
    async fn a_streaming_body_holds_its_permit_until_it_ends_or_the_client_leaves() {
        let layer = ConcurrencyLimitLayer::builder()
            .limit(2)
            .max_queue(0)
            .build()
            .unwrap()
            .hold_until_body_end();
        let handle = layer.handle();
        let streams: Streams = Arc::default();
        let (tx_a, rx_a) = mpsc::channel(4);
        let (drop_a, dropped_a) = oneshot::channel();
        let (tx_b, rx_b) = mpsc::channel(4);
        let (drop_b, dropped_b) = oneshot::channel();
        // Popped from the end: A first, then B.
        streams.lock().unwrap().extend([(rx_b, drop_b), (rx_a, drop_a)]);
        let addr = serve(app(layer, Arc::clone(&streams))).await;

        let (mut a, head) = open_stream(addr).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let (mut b, _) = open_stream(addr).await;
        assert_eq!(handle.in_flight(), 2, "two open streams hold both permits");
        // A third request while both stream: rejected by the limit.
        let (status, _) = request(addr, &[]).await;
        assert_eq!(status, 503);

        // Stream A ends normally: its permit comes back.
        tx_a.send(Bytes::from_static(b"data: 1\n\n")).await.unwrap();
        drop(tx_a);
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).await.ok();
        assert!(String::from_utf8_lossy(&rest).contains("data: 1"));
        dropped_a.await.expect("A's body dropped");
        assert_eq!(handle.in_flight(), 1);

        // Client B disconnects mid-stream: the server drops the body.
        tx_b.send(Bytes::from_static(b"data: 1\n\n")).await.unwrap();
        let mut chunk = [0u8; 8];
        let _ = b.read(&mut chunk).await;
        drop(b);
        dropped_b.await.expect("B's body dropped");
        assert_eq!(handle.in_flight(), 0);
        drop(tx_b);
    }
}
