//! A quick per-layer probe with `http::Request<()>` (not criterion: a timed
//! loop of 2M calls after 100k warm-up), to see where the server preset's
//! per-request cost goes: `cargo run --release -p backpressure-benches
//! --example preset_probe`. Absolute figures include building and dropping
//! the request and response ("bare"); compare rows with each other.

use std::{
    convert::Infallible,
    hint::black_box,
    time::{Duration, Instant},
};

use backpressure::{
    breaker::CircuitBreakerLayer,
    concurrency::ConcurrencyLimitLayer,
    core::HttpClassify,
    http::{PriorityHeader, RespondLayer},
    preset::ServerPreset,
    rate::{Quota, RateLimitLayer},
    shed::LoadShedLayer,
    timeout::{HttpDeadline, TimeoutLayer},
};
use backpressure_benches::call_now;
use tower::{Layer, Service, ServiceBuilder, service_fn};

fn time<S: Service<http::Request<()>>>(name: &str, svc: S)
where
    S::Error: std::fmt::Debug,
{
    time_with(name, svc, || http::Request::new(()));
}

/// `time` on a `u64` request: the layers' own cost, without moving the
/// 224-byte `http::Request` (the criterion groups other than `preset`).
fn time_u64<S: Service<u64>>(name: &str, svc: S)
where
    S::Error: std::fmt::Debug,
{
    time_with(name, svc, || 1);
}

fn time_with<Req, S: Service<Req>>(name: &str, mut svc: S, req: impl Fn() -> Req)
where
    S::Error: std::fmt::Debug,
{
    // `PROBE_CALLS` sets the timed calls (2M).
    if !backpressure_benches::probe_row_selected(name) {
        return;
    }
    // The future of one call, readied first (as `call_now` does).
    let _ = backpressure_benches::ready_now(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    let size = std::mem::size_of_val(&svc.call(req()));
    for _ in 0..100_000 {
        let _ = call_now(&mut svc, req());
    }
    let n: u32 =
        std::env::var("PROBE_CALLS").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000_000);
    let t = Instant::now();
    for _ in 0..n {
        let _ = black_box(call_now(&mut svc, black_box(req())));
    }
    println!(
        "{name:<40} {:>7.1} ns   response future {size:>5} B",
        t.elapsed().as_nanos() as f64 / f64::from(n)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _ctx = rt.enter();
    let bare =
        service_fn(
            |_r: http::Request<()>| async move { Ok::<_, Infallible>(http::Response::new(())) },
        );
    let bare_u64 = service_fn(|x: u64| async move { Ok::<_, Infallible>(x + 1) });
    time_u64("u64 bare", bare_u64);
    time_u64("u64 tower limit", ServiceBuilder::new().concurrency_limit(1000).service(bare_u64));
    time_u64("u64 concurrency fixed", ConcurrencyLimitLayer::new(1000).unwrap().layer(bare_u64));
    time_u64(
        "u64 tower timeout",
        ServiceBuilder::new().timeout(Duration::from_secs(1)).service(bare_u64),
    );
    time_u64("u64 timeout", TimeoutLayer::new(Duration::from_secs(1)).unwrap().layer(bare_u64));
    time("bare", bare);
    time(
        "tower3",
        ServiceBuilder::new()
            .load_shed()
            .concurrency_limit(1000)
            .timeout(Duration::from_secs(1))
            .service(bare),
    );
    time("tower timeout", ServiceBuilder::new().timeout(Duration::from_secs(1)).service(bare));
    time("tower limit", ServiceBuilder::new().concurrency_limit(1000).service(bare));
    time("tower shed", ServiceBuilder::new().load_shed().service(bare));
    time("respond", RespondLayer::new().layer(bare));
    time("timeout local", TimeoutLayer::new(Duration::from_secs(1)).unwrap().layer(bare));
    time(
        "timeout http server noext",
        TimeoutLayer::new(Duration::from_secs(1))
            .unwrap()
            .propagate(HttpDeadline::server().insert_extension(false))
            .layer(bare),
    );
    time("rate direct", RateLimitLayer::new(Quota::per_second(1_000_000_000)).unwrap().layer(bare));
    time("concurrency fixed", ConcurrencyLimitLayer::new(1000).unwrap().layer(bare));
    let lim = ConcurrencyLimitLayer::builder()
        .limit(1000)
        .priority(PriorityHeader::default())
        .classify(HttpClassify)
        .build()
        .unwrap();
    time("concurrency fixed prio", lim.clone().layer(bare));
    time(
        "shed+fixed",
        LoadShedLayer::builder(lim.handle())
            .priority(PriorityHeader::default())
            .build()
            .unwrap()
            .layer(lim.layer(bare)),
    );
    time(
        "breaker",
        CircuitBreakerLayer::builder().classify(HttpClassify).build().unwrap().layer(bare),
    );
    let p = ServerPreset::new().deadline_extension(false);
    time("preset default (adaptive) noext", p.layer(bare));
    let fixed = ConcurrencyLimitLayer::builder()
        .limit(1000)
        .max_queue(100)
        .priority(PriorityHeader::default())
        .classify(HttpClassify)
        .build()
        .unwrap();
    let p = ServerPreset::with_concurrency(fixed, Duration::from_secs(1))
        .unwrap()
        .deadline_extension(false);
    time("preset fixed noext", p.clone().layer(bare));
    let p2 = p
        .priority_header(backpressure_benches::internal_priority())
        .rate_limit(RateLimitLayer::new(Quota::per_second(1_000_000_000)).unwrap())
        .breaker(CircuitBreakerLayer::builder().classify(HttpClassify).build().unwrap());
    time("preset fixed full noext", p2.layer(bare));
    // The criterion bench's `preset/backpressure_full`.
    let full = ServerPreset::new()
        .priority_header(backpressure_benches::internal_priority())
        .rate_limit(RateLimitLayer::new(Quota::per_second(1_000_000_000)).unwrap())
        .breaker(CircuitBreakerLayer::builder().classify(HttpClassify).build().unwrap())
        .deadline_extension(false);
    time("preset full (adaptive) noext", full.layer(bare));
}
