//! The server preset in front of a real axum router, over loopback: six
//! layers, no type annotations on the user's side.

use std::{net::SocketAddr, time::Duration};

use axum::{Router, routing::get};
use backpressure::{
    breaker::CircuitBreakerLayer,
    concurrency::ConcurrencyLimitLayer,
    core::HttpClassify,
    http::{ClientIp, PriorityHeader},
    preset::ServerPreset,
    rate::{Quota, RateLimitLayer},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

async fn status(addr: SocketAddr, extra: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    String::from_utf8_lossy(&raw).split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status")
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

/// The priority header a server opts in to: one only its own services set.
fn internal_priority() -> PriorityHeader {
    PriorityHeader::new(
        http::HeaderName::from_static("x-internal-priority"),
        backpressure::core::Priority::Critical,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_preset_drops_into_an_axum_router() {
    let preset = ServerPreset::new()
        .priority_header(internal_priority())
        .rate_limit(
            RateLimitLayer::builder(Quota::per_minute(3).burst(3))
                .keyed(ClientIp::peer())
                .build()
                .unwrap(),
        )
        .breaker(CircuitBreakerLayer::builder().classify(HttpClassify).build().unwrap());
    let handle = preset.concurrency_handle();
    let app = Router::new().route("/", get(|| async { "hello" })).layer(preset);
    let addr = serve(app).await;
    for _ in 0..3 {
        assert_eq!(status(addr, "").await, 200);
    }
    assert_eq!(status(addr, "").await, 429, "the per-client rate limit");
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(handle.limit(), 20, "Gradient2's initial limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preset_through_service_builder_with_a_fixed_limit() {
    let concurrency = ConcurrencyLimitLayer::builder()
        .limit(1)
        .max_queue(0)
        .priority(PriorityHeader::default())
        .classify(HttpClassify)
        .build()
        .unwrap();
    let preset = ServerPreset::with_concurrency(concurrency, Duration::from_secs(5)).unwrap();
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(tower::ServiceBuilder::new().layer(preset));
    let addr = serve(app).await;
    assert_eq!(status(addr, "priority: sheddable\r\n").await, 200);
    assert_eq!(status(addr, "").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preset_can_hold_permits_for_the_body() {
    let preset = ServerPreset::new().hold_until_body_end();
    let handle = preset.concurrency_handle();
    let app = Router::new().route("/", get(|| async { "hello" })).layer(preset);
    let addr = serve(app).await;
    assert_eq!(status(addr, "").await, 200);
    assert_eq!(handle.in_flight(), 0, "a finished body returns its permit");
}

#[tokio::test(start_paused = true)]
async fn layers_below_the_limit_see_the_deadline_on_the_fast_path() {
    use backpressure::{core::Deadline, timeout::TimeoutLayer};
    use tower::{ServiceBuilder, ServiceExt};

    // A probe inside the stack: the limiter dispatches at once (a free
    // permit, an inner service ready), inside the timeout's scope.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let probe = {
        let seen = seen.clone();
        tower::service_fn(move |()| {
            *seen.lock().unwrap() = Some(Deadline::current());
            async { Ok::<_, std::convert::Infallible>(()) }
        })
    };
    let stacked = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(300)).unwrap())
        .layer(ConcurrencyLimitLayer::new(4).unwrap())
        .service(probe);
    let start = tokio::time::Instant::now();
    stacked.oneshot(()).await.unwrap();
    let deadline = seen.lock().unwrap().expect("called").expect("a deadline in scope");
    assert_eq!(deadline.instant() - start, Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_still_carries_the_deadline_to_the_layers_below() {
    use backpressure::{core::Deadline, timeout::TimeoutLayer};
    use tower::{Service, ServiceBuilder, ServiceExt};

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let probe = {
        let seen = seen.clone();
        tower::service_fn(move |hold: u64| {
            seen.lock().unwrap().push(Deadline::current());
            async move {
                tokio::time::sleep(Duration::from_millis(hold)).await;
                Ok::<_, std::convert::Infallible>(())
            }
        })
    };
    let mut stack = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(300)).unwrap())
        .layer(ConcurrencyLimitLayer::builder().limit(1).max_queue(4).build().unwrap())
        .service(probe);
    let start = tokio::time::Instant::now();
    let first = stack.ready().await.unwrap().call(50);
    // The second waits in the queue for the first's permit: it is called
    // from the limiter's future, outside the timeout's `call`.
    let second = stack.ready().await.unwrap().call(0);
    let (a, b) = tokio::join!(first, second);
    a.unwrap();
    b.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for d in seen {
        assert_eq!(d.expect("a deadline in scope").instant() - start, Duration::from_millis(300));
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_delayed_by_the_rate_limit_still_carries_the_deadline() {
    use backpressure::{core::Deadline, timeout::TimeoutLayer};
    use tower::{ServiceBuilder, ServiceExt};

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let probe = {
        let seen = seen.clone();
        tower::service_fn(move |()| {
            seen.lock().unwrap().push(Deadline::current());
            async { Ok::<_, std::convert::Infallible>(()) }
        })
    };
    let rate = RateLimitLayer::builder(Quota::per_second(1).burst(1))
        .max_wait(Duration::from_secs(2))
        .build()
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(3)).unwrap())
        .layer(rate)
        .service(probe);
    let start = tokio::time::Instant::now();
    stack.clone().oneshot(()).await.unwrap();
    // The second waits about a second for its slot, then is called from the
    // rate limiter's future.
    stack.oneshot(()).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(900), "{:?}", start.elapsed());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for d in seen {
        assert_eq!(d.expect("a deadline in scope").instant() - start, Duration::from_secs(3));
    }
}

/// One request from a client bound to `from` (127.0.0.2, 127.0.0.3, …: all
/// loopback on Linux).
async fn status_from(from: &str, addr: SocketAddr) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{from}:0").parse().expect("address")).expect("bind the client");
    let mut stream = socket.connect(addr).await.expect("connect");
    let req = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    String::from_utf8_lossy(&raw).split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status")
}

/// Two clients on different addresses get two buckets, as the README's
/// snippet is installed (`features = ["http", "axum"]`). The first version
/// read axum's `ConnectInfo` only under a feature nothing in the facade
/// turned on: with `http` alone every client shared the key 0.0.0.0, and
/// the second client here got a 429 for the first client's requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_different_addresses_get_two_buckets() {
    let missing_before = ClientIp::missing_peer_count();
    let preset = ServerPreset::new().rate_limit(
        RateLimitLayer::builder(Quota::per_minute(2).burst(2))
            .keyed(ClientIp::peer())
            .build()
            .unwrap(),
    );
    let app = Router::new().route("/", get(|| async { "hello" })).layer(preset);
    let addr = serve(app).await;
    for client in ["127.0.0.2", "127.0.0.3"] {
        assert_eq!(status_from(client, addr).await, 200, "{client}: first");
        assert_eq!(status_from(client, addr).await, 200, "{client}: second");
        assert_eq!(status_from(client, addr).await, 429, "{client}: its own bucket is empty");
    }
    assert_eq!(ClientIp::missing_peer_count(), missing_before, "every request had its peer");
}

/// A client cannot give itself top priority: under the preset's defaults a
/// `priority: critical-plus` header is just a header. With a limit of 1 and
/// a queue of 1 (one running, one queued), the first version let such a
/// request evict the queued one (503 for somebody who asked nothing).
#[tokio::test(start_paused = true)]
async fn a_client_cannot_claim_top_priority_by_default() {
    use tower::{Layer, ServiceExt};

    let concurrency = ConcurrencyLimitLayer::builder()
        .limit(1)
        .max_queue(1)
        .priority(PriorityHeader::default())
        .classify(HttpClassify)
        .build()
        .unwrap();
    let preset = ServerPreset::with_concurrency(concurrency, Duration::from_secs(5)).unwrap();
    let svc = preset.layer(tower::service_fn(|_: http::Request<String>| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    }));
    let req = |priority: Option<&str>| {
        let mut b = http::Request::builder();
        if let Some(p) = priority {
            b = b.header("priority", p);
        }
        b.body(String::new()).unwrap()
    };
    let running = tokio::spawn(svc.clone().oneshot(req(None)));
    tokio::task::yield_now().await;
    let queued = tokio::spawn(svc.clone().oneshot(req(None)));
    tokio::task::yield_now().await;
    let claimed = svc.clone().oneshot(req(Some("critical-plus"))).await.unwrap();
    assert_eq!(claimed.status(), 503, "the queue is full, whatever the header says");
    // And the 503 says when to come back (the first version's had nothing).
    assert_eq!(claimed.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    assert_eq!(running.await.unwrap().unwrap().status(), 200);
    assert_eq!(queued.await.unwrap().unwrap().status(), 200, "not evicted");

    // The server opts in, with a header of its own choosing: then it counts,
    // for the limiter and the shedder alike.
    let opted = ServerPreset::new().priority_header(internal_priority());
    assert_eq!(
        opted.priority_source().header_name().map(|n| n.as_str()),
        Some("x-internal-priority")
    );
}

/// Problem details (RFC 9457) on every rejection, through the preset.
#[derive(Clone)]
struct Problem;

impl backpressure::http::OnError<String> for Problem {
    fn on_error(&self, error: backpressure::core::BoxError, grpc: bool) -> http::Response<String> {
        backpressure::http::OnError::<String>::on_error(&backpressure::http::Internal, error, grpc)
    }

    fn on_rejection(
        &self,
        rejected: &backpressure::core::Rejected,
        grpc: bool,
    ) -> http::Response<String> {
        let mut res: http::Response<String> =
            backpressure::http::rejection_response(rejected, grpc);
        *res.body_mut() = format!(
            r#"{{"status":{},"detail":"{}"}}"#,
            res.status().as_u16(),
            rejected.kind().as_str()
        );
        res.headers_mut().insert("content-type", "application/problem+json".parse().unwrap());
        res
    }
}

/// A 429 users can act on: `RateLimit-Policy` advertises the sustained
/// quota (2 per 60 s), not the burst (5) as the first version did; the
/// optional `X-RateLimit-*` headers; a body of the user's choosing; and
/// `Retry-After`, all at once.
#[tokio::test(start_paused = true)]
async fn rate_limit_rejections_carry_the_policy_legacy_headers_and_a_custom_body() {
    use tower::{Layer, ServiceExt};

    let preset = ServerPreset::new()
        .rate_limit(RateLimitLayer::builder(Quota::per_minute(2).burst(5)).build().unwrap())
        .x_ratelimit_headers(true)
        .on_error(Problem);
    let svc = preset.layer(tower::service_fn(|_: http::Request<String>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
    }));
    for _ in 0..5 {
        let res = svc.clone().oneshot(http::Request::new(String::new())).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let res = svc.clone().oneshot(http::Request::new(String::new())).await.unwrap();
    assert_eq!(res.status(), 429);
    let header = |name: &str| res.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header("ratelimit-policy").as_deref(), Some("\"default\";q=2;w=60"));
    assert_eq!(header("x-ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(header("x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(header("retry-after").as_deref(), Some("30"));
    assert_eq!(header("content-type").as_deref(), Some("application/problem+json"));
    assert_eq!(res.body(), r#"{"status":429,"detail":"rate_limited"}"#);
}

/// With no priority header every request has the same priority, and the
/// preset's queue holds as many requests as it was given. The first version
/// put a priority shedder in front of the limit all the same: it shed the
/// default priority in the queue's last tenth (kept for `critical-plus`,
/// which no request could have), so a queue of 100 turned requests away
/// from about 90 on.
#[tokio::test(start_paused = true)]
async fn without_a_priority_header_the_queue_holds_every_slot_it_was_given() {
    use tower::{Layer, ServiceExt};

    let concurrency = ConcurrencyLimitLayer::builder()
        .limit(1)
        .max_queue(100)
        .max_wait(Duration::from_secs(1))
        .priority(PriorityHeader::default())
        .classify(HttpClassify)
        .build()
        .unwrap();
    let preset = ServerPreset::with_concurrency(concurrency, Duration::from_secs(5)).unwrap();
    let handle = preset.concurrency_handle();
    let svc = preset.layer(tower::service_fn(|_: http::Request<String>| async {
        std::future::pending::<()>().await;
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    }));
    let mut tasks = Vec::new();
    for _ in 0..101 {
        tasks.push(tokio::spawn(svc.clone().oneshot(http::Request::new(String::new()))));
        tokio::task::yield_now().await;
    }
    assert_eq!(handle.in_flight(), 1);
    assert_eq!(handle.queued(), 100, "every queue slot in use, none shed");
    let turned_away = svc.clone().oneshot(http::Request::new(String::new())).await.unwrap();
    assert_eq!(turned_away.status(), 503, "the queue is full");
    assert!(tasks.iter().all(|t| !t.is_finished()), "nobody queued was answered early");
}

/// A limit that reads a priority header, handed to `with_concurrency`: the
/// preset would have no shedder reading it, so it refuses, naming the field
/// and the way to do it.
#[test]
fn a_limit_reading_a_priority_header_goes_through_priority_header() {
    let header = internal_priority();
    let limit = |priority: PriorityHeader| {
        ConcurrencyLimitLayer::builder()
            .limit(4)
            .priority(priority)
            .classify(HttpClassify)
            .build()
            .unwrap()
    };
    let err =
        ServerPreset::with_concurrency(limit(header.clone()), Duration::from_secs(5)).unwrap_err();
    assert_eq!(err.field(), "priority");
    assert!(err.to_string().contains("x-internal-priority"), "{err}");
    assert!(err.to_string().contains("priority_header"), "{err}");
    let preset =
        ServerPreset::with_concurrency(limit(PriorityHeader::default()), Duration::from_secs(5))
            .unwrap()
            .priority_header(header);
    assert_eq!(
        preset.priority_source().header_name().map(|n| n.as_str()),
        Some("x-internal-priority")
    );
}

/// Naming a priority header adds the shedder: with the permit taken and a
/// tenth of the queue used, sheddable work is turned away at once while
/// the default priority still queues.
#[tokio::test(start_paused = true)]
async fn a_priority_header_adds_a_shedder_that_reads_it() {
    use tower::{Layer, ServiceExt};

    let concurrency = ConcurrencyLimitLayer::builder()
        .limit(1)
        .max_queue(100)
        .priority(PriorityHeader::default())
        .classify(HttpClassify)
        .build()
        .unwrap();
    let preset = ServerPreset::with_concurrency(concurrency, Duration::from_secs(5))
        .unwrap()
        .priority_header(internal_priority());
    let handle = preset.concurrency_handle();
    let svc = preset.layer(tower::service_fn(|_: http::Request<String>| async {
        std::future::pending::<()>().await;
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    }));
    let req = |priority: &str| {
        http::Request::builder()
            .header("x-internal-priority", priority)
            .body(String::new())
            .unwrap()
    };
    let mut tasks = Vec::new();
    for _ in 0..11 {
        tasks.push(tokio::spawn(svc.clone().oneshot(req("critical"))));
        tokio::task::yield_now().await;
    }
    assert_eq!((handle.in_flight(), handle.queued()), (1, 10));
    let start = tokio::time::Instant::now();
    let shed = svc.clone().oneshot(req("sheddable")).await.unwrap();
    assert_eq!(shed.status(), 503, "shed at a tenth of the queue");
    assert_eq!(start.elapsed(), Duration::ZERO, "at once, not after a wait in the queue");
    tasks.push(tokio::spawn(svc.clone().oneshot(req("critical"))));
    tokio::task::yield_now().await;
    assert_eq!(handle.queued(), 11, "the default priority still queues");
}
