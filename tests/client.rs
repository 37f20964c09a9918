//! The client preset against axum servers we control, over real loopback
//! HTTP, in paused time (the runtime advances the clock only when every
//! task, the servers' included, is idle).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    response::IntoResponse,
    routing::any,
};
use backpressure::{
    client::ClientPreset,
    core::{BoxError, Deadline, RejectKind, Rejected},
    preset::ServerPreset,
    retry::{HttpRetry, RetryBudget, RetryLayer},
    timeout::grpc::parse_grpc_timeout,
};
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{net::TcpListener, time::Instant};
use tower::{Service, ServiceBuilder, ServiceExt};

/// What a test server saw: arrival time, method, body, grpc-timeout.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Hit>>>);

/// One request as a server saw it: arrival, method, body, `grpc-timeout`.
type Hit = (Instant, Method, Bytes, Option<Duration>);

impl Seen {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn all(&self) -> Vec<Hit> {
        self.0.lock().unwrap().clone()
    }
}

type Script =
    Arc<dyn Fn(usize) -> (StatusCode, Vec<(&'static str, &'static str)>, Duration) + Send + Sync>;

#[derive(Clone)]
struct Server {
    seen: Seen,
    script: Script,
}

async fn handler(
    State(s): State<Server>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let grpc = headers.get("grpc-timeout").and_then(|v| parse_grpc_timeout(v.as_bytes()));
    let n = {
        let mut seen = s.seen.0.lock().unwrap();
        seen.push((Instant::now(), method, body, grpc));
        seen.len() - 1
    };
    let (status, headers, delay) = (s.script)(n);
    tokio::time::sleep(delay).await;
    let mut res = status.into_response();
    for (k, v) in headers {
        res.headers_mut().insert(k, v.parse().unwrap());
    }
    res
}

async fn serve(script: Script) -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/{*path}", any(handler))
        .with_state(Server { seen: seen.clone(), script });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

type Body = Full<Bytes>;

fn hyper_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn request(method: Method, addr: SocketAddr, body: &'static str) -> http::Request<Body> {
    http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}/x"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn script(
    f: impl Fn(usize) -> (StatusCode, Vec<(&'static str, &'static str)>, Duration)
    + Send
    + Sync
    + 'static,
) -> Script {
    Arc::new(f)
}

#[tokio::test(start_paused = true)]
async fn retry_after_2_means_nothing_is_sent_for_2_seconds() {
    let (addr, seen) = serve(script(|n| {
        if n == 0 {
            (StatusCode::SERVICE_UNAVAILABLE, vec![("retry-after", "2")], Duration::ZERO)
        } else {
            (StatusCode::OK, vec![], Duration::ZERO)
        }
    }))
    .await;
    let preset = ClientPreset::new()
        .retry(tower::layer::util::Identity::new())
        .breaker(tower::layer::util::Identity::new());
    let handles = preset.handles();
    let client = ServiceBuilder::new().layer(preset).service(hyper_client());

    let start = Instant::now();
    let first = client.clone().oneshot(request(Method::GET, addr, "")).await.unwrap();
    assert_eq!(first.status(), 503);
    // Requests made every 100 ms during the next 3 s.
    let mut tasks = Vec::new();
    for i in 0..30u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100 * i)).await;
            client.oneshot(request(Method::GET, addr, "")).await.map(|r| r.status())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    let arrivals: Vec<Duration> = seen.all().iter().map(|e| e.0 - start).collect();
    assert_eq!(arrivals.len(), 31);
    let during: Vec<_> = arrivals[1..].iter().filter(|t| **t < Duration::from_secs(2)).collect();
    assert!(during.is_empty(), "sent during the Retry-After: {during:?}");
    let s = handles.snapshot();
    assert_eq!(s.pushback.holds, 20, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dead_server_sees_at_most_the_budget_not_three_times_the_traffic() {
    let (addr, seen) =
        serve(script(|_| (StatusCode::SERVICE_UNAVAILABLE, vec![], Duration::ZERO))).await;
    let (ratio, floor) = (0.1, 1.0);
    let budget = RetryBudget::builder().ratio(ratio).min_per_sec(floor).build().unwrap();
    let retry = RetryLayer::builder(HttpRetry::new())
        .max_attempts(3)
        .budget(budget)
        .seed(9)
        .build()
        .unwrap();
    // No throttle: this test is about the budget alone.
    let preset =
        ClientPreset::new().retry(retry.clone()).breaker(tower::layer::util::Identity::new());
    let client = ServiceBuilder::new().layer(preset).service(hyper_client());
    let start = Instant::now();
    let requests = 300;
    for _ in 0..requests {
        let res = client.clone().oneshot(request(Method::GET, addr, "")).await.unwrap();
        assert_eq!(res.status(), 503);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = (Instant::now() - start).as_secs_f64();
    let received = seen.len() as f64;
    let bound = (1.0 + ratio) * requests as f64 + floor * (1.0 + elapsed);
    let s = retry.handle().snapshot();
    println!(
        "received {received} for {requests} requests in {elapsed:.2} s (bound {bound:.1}); {s:?}"
    );
    assert!(received <= bound, "{received} > {bound}");
    assert!(s.denied_by_budget > 0);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_requests_are_never_retried_and_bodies_are_resent_intact() {
    let (addr, seen) = serve(script(|n| {
        let status =
            if n.is_multiple_of(2) { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
        (status, vec![], Duration::ZERO)
    }))
    .await;
    let preset = ClientPreset::new();
    let handles = preset.handles();
    let client = ServiceBuilder::new().layer(preset).service(hyper_client());
    let put = client.clone().oneshot(request(Method::PUT, addr, "the row, intact")).await;
    let put = put.unwrap_or_else(|e| panic!("{e}: {:?}", handles.snapshot()));
    assert_eq!(put.status(), 200, "the PUT was retried");
    let post = client.clone().oneshot(request(Method::POST, addr, "an order")).await.unwrap();
    assert_eq!(post.status(), 503, "the POST must not be retried");
    let seen = seen.all();
    assert_eq!(seen.len(), 3);
    assert_eq!((&seen[0].1, &seen[0].2[..]), (&Method::PUT, &b"the row, intact"[..]));
    assert_eq!((&seen[1].1, &seen[1].2[..]), (&Method::PUT, &b"the row, intact"[..]));
    assert_eq!(seen[2].1, Method::POST);
}

/// An upstream is told nothing of our deadlines unless the preset opts in
/// for it: the first version wrote `grpc-timeout` into every request, to
/// third parties too, leaking internal deadlines. Opted in, each attempt
/// carries what is left (minus the margin). Either way, an attempt with no
/// budget left is not sent.
#[tokio::test(start_paused = true)]
async fn the_deadline_reaches_only_upstreams_that_opt_in() {
    let (addr, seen) = serve(script(|_| (StatusCode::OK, vec![], Duration::ZERO))).await;
    let third_party = ServiceBuilder::new()
        .layer(ClientPreset::new().timeout(Duration::from_secs(2)).unwrap())
        .service(hyper_client());
    third_party.oneshot(request(Method::GET, addr, "")).await.unwrap();
    let internal = ServiceBuilder::new()
        .layer(ClientPreset::new().timeout(Duration::from_secs(2)).unwrap().propagate_deadline())
        .service(hyper_client());
    internal.oneshot(request(Method::GET, addr, "")).await.unwrap();
    let seen = seen.all();
    assert_eq!(seen[0].3, None, "no grpc-timeout to an upstream that did not opt in");
    let sent = seen[1].3.expect("grpc-timeout to the upstream that opted in");
    assert!(
        sent <= Duration::from_millis(1_995) && sent > Duration::from_millis(1_900),
        "{sent:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_shrinks_across_hops_and_nothing_is_sent_after_it() {
    // B: the slow back end, 2 s per request.
    let (b_addr, b_seen) =
        serve(script(|_| (StatusCode::OK, vec![], Duration::from_secs(2)))).await;
    // A: a server behind the server preset whose handler calls B through
    // the client preset, passing its own deadline on.
    let a_seen = Seen::default();
    // Internal hops: the deadline goes along.
    let to_b = ServiceBuilder::new()
        .layer(ClientPreset::new().propagate_deadline())
        .service(hyper_client());
    let a_app = Router::new()
        .route(
            "/{*path}",
            any({
                let a_seen = a_seen.clone();
                move |headers: HeaderMap, deadline: Option<axum::Extension<Deadline>>| {
                    let (a_seen, to_b) = (a_seen.clone(), to_b.clone());
                    async move {
                        let grpc = headers
                            .get("grpc-timeout")
                            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
                        a_seen.0.lock().unwrap().push((
                            Instant::now(),
                            Method::GET,
                            Bytes::new(),
                            grpc,
                        ));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let mut req = request(Method::GET, b_addr, "");
                        if let Some(axum::Extension(d)) = deadline {
                            req.extensions_mut().insert(d);
                        }
                        match to_b.oneshot(req).await {
                            Ok(res) => res.status(),
                            Err(e) => match Rejected::find(&e).map(Rejected::kind) {
                                Some(RejectKind::DeadlineExceeded) => StatusCode::GATEWAY_TIMEOUT,
                                _ => StatusCode::BAD_GATEWAY,
                            },
                        }
                    }
                }
            }),
        )
        .layer(ServerPreset::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, a_app).await.unwrap() });

    let client = ServiceBuilder::new()
        .layer(
            ClientPreset::new().timeout(Duration::from_millis(800)).unwrap().propagate_deadline(),
        )
        .service(hyper_client());
    let start = Instant::now();
    // A's own deadline (what the client sent, minus the 5 ms margin) ends
    // first: A answers 504 just before the client would have given up.
    let res = client.oneshot(request(Method::GET, a_addr, "")).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    let waited = Instant::now() - start;
    assert!(
        waited >= Duration::from_millis(790) && waited <= Duration::from_millis(800),
        "{waited:?}"
    );

    // Let everything downstream finish, then read what each hop saw.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let a = a_seen.all();
    let b = b_seen.all();
    assert_eq!(a.len(), 1);
    let at_a = a[0].3.expect("A received a grpc-timeout");
    assert!(at_a <= Duration::from_millis(795) && at_a > Duration::from_millis(700), "{at_a:?}");
    assert!(!b.is_empty());
    let at_b = b[0].3.expect("B received a grpc-timeout");
    assert!(at_b < at_a - Duration::from_millis(100), "A {at_a:?} -> B {at_b:?}");
    // Nothing reached B after the original deadline.
    let deadline = start + Duration::from_millis(800);
    assert!(
        b.iter().all(|e| e.0 < deadline),
        "{:?}",
        b.iter().map(|e| e.0 - start).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn the_stack_is_a_plain_tower_service_with_boxed_errors() {
    let (addr, _seen) = serve(script(|_| (StatusCode::OK, vec![], Duration::ZERO))).await;
    let mut client = ServiceBuilder::new().layer(ClientPreset::new()).service(hyper_client());
    let res: Result<_, BoxError> =
        client.ready().await.unwrap().call(request(Method::GET, addr, "")).await;
    assert_eq!(res.unwrap().status(), 200);
}

/// A real `reqwest::Client` behind the client preset. reqwest speaks its own
/// request and response types; the preset speaks `http`'s. This is the
/// whole adapter a user writes (also in `examples/reqwest.rs`).
mod with_reqwest {
    use super::*;

    fn reqwest_service(
        client: reqwest::Client,
    ) -> impl Service<
        http::Request<String>,
        Response = http::Response<reqwest::Body>,
        Error = reqwest::Error,
        Future: Send,
    > + Clone
    + Send {
        tower::service_fn(move |req: http::Request<String>| {
            let client = client.clone();
            async move {
                let res = client.execute(reqwest::Request::try_from(req)?).await?;
                Ok(http::Response::from(res))
            }
        })
    }

    fn get(addr: SocketAddr) -> http::Request<String> {
        http::Request::get(format!("http://{addr}/x")).body(String::new()).unwrap()
    }

    /// The upstream answers 503 with `Retry-After: 1`, then 200: reqwest's
    /// request is retried (within the budget) and not before the second
    /// the upstream asked for.
    #[tokio::test(start_paused = true)]
    async fn reqwest_is_retried_within_the_budget_and_after_the_retry_after() {
        let (addr, seen) = serve(script(|n| {
            if n == 0 {
                (StatusCode::SERVICE_UNAVAILABLE, vec![("retry-after", "1")], Duration::ZERO)
            } else {
                (StatusCode::OK, vec![], Duration::ZERO)
            }
        }))
        .await;
        let preset = ClientPreset::new();
        let handles = preset.handles();
        let client =
            ServiceBuilder::new().layer(preset).service(reqwest_service(reqwest::Client::new()));
        let res = client.oneshot(get(addr)).await.unwrap();
        assert_eq!(res.status(), 200, "{:?}", handles.snapshot());
        let seen = seen.all();
        assert_eq!(seen.len(), 2, "one retry");
        let gap = seen[1].0 - seen[0].0;
        assert!(gap >= Duration::from_secs(1), "retried {gap:?} after a Retry-After of 1 s");
        let s = handles.snapshot();
        assert_eq!(s.retry.map(|r| r.retries), Some(1), "{s:?}");
    }

    /// The deadline goes to the upstream that opted in, not to the other.
    #[tokio::test(start_paused = true)]
    async fn reqwest_sends_the_deadline_only_where_asked() {
        let (addr, seen) = serve(script(|_| (StatusCode::OK, vec![], Duration::ZERO))).await;
        for preset in [ClientPreset::new(), ClientPreset::new().propagate_deadline()] {
            let client = ServiceBuilder::new()
                .layer(preset.timeout(Duration::from_secs(3)).unwrap())
                .service(reqwest_service(reqwest::Client::new()));
            assert_eq!(client.oneshot(get(addr)).await.unwrap().status(), 200);
        }
        let seen = seen.all();
        assert_eq!(seen[0].3, None);
        let sent = seen[1].3.expect("grpc-timeout where asked");
        assert!(sent > Duration::from_millis(2_900) && sent <= Duration::from_millis(2_995));
    }
}
