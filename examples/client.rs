//! The client preset in front of hyper-util's client, against a local axum
//! server that degrades and pushes back.
//!
//! ```text
//! cargo run --example client [-- --real]
//! ```
//!
//! The application sends 200 GETs per second (open loop) to the server,
//! whose script is:
//!
//! | seconds | the server |
//! |---|---|
//! | 0–3 | healthy, 10 ms |
//! | 3–6 | broken: half its answers are 503 |
//! | 6–9 | overloaded: every answer is 503 with `Retry-After: 1` |
//! | 9–12 | healthy again |
//!
//! Each second the example prints what the application asked for, what
//! reached the server (attempts, so retries included), and what the stack
//! did: retries, retries the budget refused, requests held or refused
//! because of the server's pushback, the throttle's rejection probability
//! and the AIMD limit. A naive client retrying three times would send the
//! server up to 3x the requests while it is down; this one stays within
//! 10 % (+1/s) of the application's traffic, and stops entirely while the
//! server says "not before".
//!
//! By default the clock is tokio's paused clock (the run takes well under a
//! second of wall time and is deterministic); `--real` runs the same over
//! wall-clock time (12 s).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use axum::{Router, http::StatusCode, response::IntoResponse, routing::get};
use backpressure::{
    client::ClientPreset,
    core::{RejectKind, Rejected},
};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{net::TcpListener, time::Instant};
use tower::{ServiceBuilder, ServiceExt};

const RATE: u64 = 200;
const SECONDS: u64 = 12;

#[derive(Default)]
struct Counts {
    app: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    refused_locally: AtomicU64,
    server_received: AtomicU64,
}

fn phase(elapsed: Duration) -> &'static str {
    match elapsed.as_secs() {
        0..3 => "healthy",
        3..6 => "broken (50% 503)",
        6..9 => "overloaded (503, Retry-After: 1)",
        _ => "healthy again",
    }
}

async fn serve(counts: Arc<Counts>, start: Instant) -> SocketAddr {
    let app = Router::new().route(
        "/",
        get(move || {
            let counts = Arc::clone(&counts);
            async move {
                let n = counts.server_received.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
                match phase(start.elapsed()) {
                    "broken (50% 503)" if n.is_multiple_of(2) => {
                        StatusCode::SERVICE_UNAVAILABLE.into_response()
                    }
                    "overloaded (503, Retry-After: 1)" => {
                        (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")]).into_response()
                    }
                    _ => "row".into_response(),
                }
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("a local address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

async fn run() {
    let start = Instant::now();
    let counts = Arc::new(Counts::default());
    let addr = serve(Arc::clone(&counts), start).await;

    let preset = ClientPreset::new().timeout(Duration::from_secs(2)).expect("2 s is valid");
    let handles = preset.handles();
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let client = ServiceBuilder::new().layer(preset).service(hyper);
    let uri: http::Uri = format!("http://{addr}/").parse().expect("a valid URI");

    println!(
        "{:>3}  {:<33} {:>5} {:>7} {:>5} {:>6} {:>6} {:>7} {:>8} {:>5} {:>8} {:>6} {:>5}",
        "s",
        "server",
        "app",
        "server",
        "ok",
        "failed",
        "local",
        "retries",
        "denied",
        "held",
        "refused",
        "thr p",
        "limit"
    );
    let mut last = handles.snapshot();
    let mut last_counts = [0u64; 5];
    let interval = Duration::from_micros(1_000_000 / RATE);
    let mut next = start;
    for second in 1..=SECONDS {
        let until = start + Duration::from_secs(second);
        while next < until {
            tokio::time::sleep_until(next).await;
            next += interval;
            counts.app.fetch_add(1, Relaxed);
            let (client, counts) = (client.clone(), Arc::clone(&counts));
            let req = http::Request::get(uri.clone())
                .body(Full::new(Bytes::new()))
                .expect("a valid request");
            tokio::spawn(async move {
                match client.oneshot(req).await {
                    Ok(res) if res.status().is_success() => counts.ok.fetch_add(1, Relaxed),
                    Ok(_) => counts.failed.fetch_add(1, Relaxed),
                    Err(e) => match Rejected::find(&e).map(Rejected::kind) {
                        Some(RejectKind::DeadlineExceeded) | None => {
                            counts.failed.fetch_add(1, Relaxed)
                        }
                        Some(_) => counts.refused_locally.fetch_add(1, Relaxed),
                    },
                };
            });
        }
        tokio::time::sleep_until(until).await;
        let now = [
            &counts.app,
            &counts.server_received,
            &counts.ok,
            &counts.failed,
            &counts.refused_locally,
        ]
        .map(|c| c.load(Relaxed));
        let d: Vec<u64> = now.iter().zip(last_counts).map(|(n, l)| n - l).collect();
        last_counts = now;
        let s = handles.snapshot();
        let (retry, last_retry) =
            (s.retry.expect("the default retry"), last.retry.expect("the default retry"));
        println!(
            "{:>3}  {:<33} {:>5} {:>7} {:>5} {:>6} {:>6} {:>7} {:>8} {:>5} {:>8} {:>6.2} {:>5}",
            second,
            phase(Duration::from_secs(second - 1)),
            d[0],
            d[1],
            d[2],
            d[3],
            d[4],
            retry.retries - last_retry.retries,
            retry.denied_by_budget - last_retry.denied_by_budget,
            s.pushback.holds - last.pushback.holds,
            s.pushback.rejected - last.pushback.rejected,
            s.throttle.map_or(0.0, |t| t.0),
            s.concurrency.as_ref().map_or(0, |c| c.limit),
        );
        last = s;
    }
    let app = counts.app.load(Relaxed);
    let received = counts.server_received.load(Relaxed);
    println!(
        "\napplication requests {app}, reached the server {received} ({:.2}x); a naive 3-attempt retry could send up to {}",
        received as f64 / app as f64,
        3 * app
    );
    // The budget's promise: retries <= 10 % of requests + 1/s (+1 to start).
    let bound = 1.1 * app as f64 + SECONDS as f64 + 1.0;
    assert!(
        received as f64 <= bound,
        "the server saw {received} attempts, over the budget's {bound}"
    );
    println!(
        "columns: app = requests made; server = attempts received; local = refused by the stack (pushback, throttle, limit);\n\
         retries / denied = retries sent / refused by the budget; held / refused = requests that waited for / were refused by the server's Retry-After;\n\
         thr p = adaptive throttle's rejection probability; limit = AIMD concurrency limit"
    );
}

fn main() {
    let real = std::env::args().any(|a| a == "--real");
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if !real {
        builder.start_paused(true);
    }
    builder.build().expect("a tokio runtime").block_on(run());
}
