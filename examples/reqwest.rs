//! A `reqwest::Client` behind the client preset, against a local server that
//! is overloaded for its first request (`503`, `Retry-After: 1`) and healthy
//! after:
//!
//! ```text
//! cargo run --example reqwest
//! ```
//!
//! reqwest speaks its own request and response types and the preset speaks
//! `http`'s, so a four-line `service_fn` sits in between
//! ([`reqwest_service`]). The run prints what the server saw: the request,
//! then its retry one second later (not before: the server said so), each
//! with the deadline left as `grpc-timeout` — this upstream is our own, so
//! the preset opts in with `propagate_deadline()`; a third party would be
//! told nothing. `--smoke` checks all that and exits non-zero if it fails
//! (`scripts/test.sh` runs it).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::get,
};
use backpressure::{client::ClientPreset, core::BoxError, timeout::grpc::parse_grpc_timeout};
use tower::{Service, ServiceBuilder, ServiceExt};

/// The adapter: `http::Request<String>` in, `http::Response<reqwest::Body>`
/// out. `String` bodies can be replayed, which retries need.
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

/// What the server saw: when, and the `grpc-timeout` it was sent.
type Seen = Arc<Mutex<Vec<(Instant, Option<Duration>)>>>;

async fn server(seen: Seen) -> SocketAddr {
    let app = Router::new().route(
        "/",
        get(move |headers: HeaderMap| {
            let seen = Arc::clone(&seen);
            async move {
                let budget =
                    headers.get("grpc-timeout").and_then(|v| parse_grpc_timeout(v.as_bytes()));
                let first = {
                    let mut seen = seen.lock().expect("lock");
                    seen.push((Instant::now(), budget));
                    seen.len() == 1
                };
                if first {
                    (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")]).into_response()
                } else {
                    "ok".into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let seen = Seen::default();
    let addr = server(Arc::clone(&seen)).await;

    let client = ServiceBuilder::new()
        .layer(ClientPreset::new().timeout(Duration::from_secs(5))?.propagate_deadline())
        .service(reqwest_service(reqwest::Client::new()));
    let start = Instant::now();
    let res =
        client.oneshot(http::Request::get(format!("http://{addr}/")).body(String::new())?).await?;
    println!("answer: {} after {:?}", res.status(), start.elapsed());

    let seen = seen.lock().expect("lock").clone();
    for (i, (at, budget)) in seen.iter().enumerate() {
        println!(
            "  the server saw attempt {} at {:?}, grpc-timeout {budget:?}",
            i + 1,
            *at - start
        );
    }
    if smoke {
        assert_eq!(res.status(), 200, "retried to success");
        assert_eq!(seen.len(), 2, "one retry");
        assert!(seen[1].0 - seen[0].0 >= Duration::from_secs(1), "not before the Retry-After");
        let (first, second) = (seen[0].1.expect("a budget"), seen[1].1.expect("a budget"));
        assert!(
            first <= Duration::from_millis(4_995) && second < first - Duration::from_millis(900)
        );
        println!("smoke: ok");
    }
    Ok(())
}
