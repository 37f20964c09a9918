//! Per-request cost of each layer next to its closest tower equivalent, in
//! one run: `cargo bench -p backpressure-benches --bench layers`.
//!
//! Futures are polled directly with a no-op waker inside a runtime context
//! (tower's timeout needs one to build its timer), so the figures are the
//! layers' own cost, not a scheduler's.

use std::{convert::Infallible, hint::black_box, time::Duration};

use backpressure::{
    breaker::CircuitBreakerLayer,
    concurrency::{ConcurrencyLimitLayer, Gradient2},
    shed::LoadShedLayer,
    timeout::TimeoutLayer,
};
use backpressure_benches::call_now;
use criterion::{Criterion, criterion_group, criterion_main};
use tower::{ServiceBuilder, service_fn};

fn bench_timeout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _ctx = rt.enter();
    let bare = service_fn(|x: u64| async move { Ok::<_, Infallible>(x + 1) });
    let mut group = c.benchmark_group("timeout");

    group.bench_function("bare", |b| {
        let mut svc = bare;
        b.iter(|| call_now(&mut svc, black_box(1)))
    });
    group.bench_function("tower", |b| {
        let mut svc = ServiceBuilder::new().timeout(Duration::from_secs(1)).service(bare);
        b.iter(|| call_now(&mut svc, black_box(1)))
    });
    group.bench_function("backpressure", |b| {
        let mut svc = ServiceBuilder::new()
            .layer(TimeoutLayer::new(Duration::from_secs(1)).expect("valid"))
            .service(bare);
        b.iter(|| call_now(&mut svc, black_box(1)))
    });
    group.finish();
}

fn bench_concurrency(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _ctx = rt.enter();
    let bare = service_fn(|x: u64| async move { Ok::<_, Infallible>(x + 1) });
    let mut group = c.benchmark_group("concurrency");

    group.bench_function("bare", |b| {
        let mut svc = bare;
        b.iter(|| call_now(&mut svc, black_box(1)))
    });
    group.bench_function("tower", |b| {
        let mut svc = ServiceBuilder::new().concurrency_limit(1_000).service(bare);
        b.iter(|| call_now(&mut svc, black_box(1)))
    });
    group.bench_function("backpressure", |b| {
        let mut svc = ServiceBuilder::new()
            .layer(ConcurrencyLimitLayer::new(1_000).expect("valid"))
            .service(bare);
        b.iter(|| call_now(&mut svc, black_box(1)))
    });
    // Built once, outside the timed routine (which criterion runs once per
    // sample): an adaptive limit picks its sampling from the completion
    // rate it has seen over the last 100 ms, as a long-lived server's does.
    let adaptive = |every: u32| {
        ConcurrencyLimitLayer::builder()
            .adaptive(Gradient2::new().initial_limit(1_000).max_limit(1_000))
            .max_sample_every(every)
            .build()
            .expect("valid")
    };
    let (sampled, every_request) = (adaptive(64), adaptive(1));
    group.bench_function("backpressure_adaptive", |b| {
        let mut svc = ServiceBuilder::new().layer(sampled.clone()).service(bare);
        b.iter(|| call_now(&mut svc, black_box(1)))
    });
    group.bench_function("backpressure_adaptive_every_request", |b| {
        let mut svc = ServiceBuilder::new().layer(every_request.clone()).service(bare);
        b.iter(|| call_now(&mut svc, black_box(1)))
    });
    group.finish();
}

fn bench_shed(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _ctx = rt.enter();
    let bare = service_fn(|x: u64| async move { Ok::<_, Infallible>(x + 1) });
    let mut group = c.benchmark_group("load_shed");
    group.bench_function("tower", |b| {
        let mut svc = ServiceBuilder::new().load_shed().service(bare);
        b.iter(|| call_now(&mut svc, black_box(1)))
    });
    group.bench_function("backpressure", |b| {
        // Reading a concurrency limiter's occupancy: the common signal.
        let limit = ConcurrencyLimitLayer::new(1_000).expect("valid");
        let mut svc = ServiceBuilder::new().layer(LoadShedLayer::new(limit.handle())).service(bare);
        b.iter(|| call_now(&mut svc, black_box(1)))
    });
    group.finish();
}

fn bench_breaker(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _ctx = rt.enter();
    let bare = service_fn(|x: u64| async move { Ok::<_, Infallible>(x + 1) });
    let mut group = c.benchmark_group("circuit_breaker_closed");
    group.bench_function("bare", |b| {
        let mut svc = bare;
        b.iter(|| call_now(&mut svc, black_box(1)))
    });
    group.bench_function("tower_resilience", |b| {
        let layer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .failure_rate_threshold(0.5)
            .sliding_window_size(100)
            .build()
            .expect("valid");
        let mut svc = ServiceBuilder::new().layer(layer).service(bare);
        b.iter(|| call_now(&mut svc, black_box(1)))
    });
    group.bench_function("backpressure", |b| {
        let mut svc = ServiceBuilder::new().layer(CircuitBreakerLayer::new()).service(bare);
        b.iter(|| call_now(&mut svc, black_box(1)))
    });
    group.finish();
}

fn bench_preset(c: &mut Criterion) {
    use backpressure::{
        breaker::CircuitBreakerLayer,
        core::HttpClassify,
        preset::ServerPreset,
        rate::{Quota, RateLimitLayer},
    };
    use tower::Layer;

    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _ctx = rt.enter();
    let bare = service_fn(|_req: http::Request<()>| async move {
        Ok::<_, Infallible>(http::Response::new(()))
    });
    // Built once (see the adaptive limit above); each routine clones it.
    // Every layer: the rate limit, the breaker and (with a priority header)
    // the shedder added to the default three.
    let full = ServerPreset::new()
        .priority_header(backpressure_benches::internal_priority())
        .rate_limit(RateLimitLayer::new(Quota::per_second(1_000_000_000)).expect("valid"))
        .breaker(CircuitBreakerLayer::builder().classify(HttpClassify).build().expect("valid"));
    let full = || full.clone();
    let mut group = c.benchmark_group("preset");
    group.bench_function("bare", |b| {
        let mut svc = bare;
        b.iter(|| call_now(&mut svc, black_box(http::Request::new(()))))
    });
    group.bench_function("tower_shed_limit_timeout", |b| {
        let mut svc = ServiceBuilder::new()
            .load_shed()
            .concurrency_limit(1_000)
            .timeout(Duration::from_secs(1))
            .service(bare);
        b.iter(|| call_now(&mut svc, black_box(http::Request::new(()))))
    });
    // The preset as `ServerPreset::new()` builds it: respond, timeout and
    // the adaptive limit (the rate limit and the breaker are opt-in, and so
    // is the shedder, with a priority header).
    let default = ServerPreset::new().deadline_extension(false);
    group.bench_function("backpressure_default", |b| {
        let mut svc = default.clone().layer(bare);
        b.iter(|| call_now(&mut svc, black_box(http::Request::new(()))))
    });
    // With a priority header named: the shedder joins, and the header is
    // looked up (absent here: the default priority).
    let prioritised = ServerPreset::new()
        .deadline_extension(false)
        .priority_header(backpressure_benches::internal_priority());
    group.bench_function("backpressure_priority_header", |b| {
        let mut svc = prioritised.clone().layer(bare);
        b.iter(|| call_now(&mut svc, black_box(http::Request::new(()))))
    });
    // Each layer of the default preset alone on the same request, beside
    // tower's: what one layer costs on `http::Request<()>` (224 bytes, moved
    // into every layer's `call`) rather than on a `u64`.
    {
        use backpressure::{
            http::{PriorityHeader, RespondLayer},
            timeout::HttpDeadline,
        };
        let limit = ConcurrencyLimitLayer::builder()
            .adaptive(Gradient2::new())
            .max_queue(100)
            .priority(PriorityHeader::default())
            .classify(HttpClassify)
            .build()
            .expect("valid");
        let shed = LoadShedLayer::builder(limit.handle())
            .priority(PriorityHeader::default())
            .build()
            .expect("valid");
        let timeout = TimeoutLayer::new(Duration::from_secs(10))
            .expect("valid")
            .propagate(HttpDeadline::server().insert_extension(false));
        group.bench_function("layer_respond", |b| {
            let mut svc = RespondLayer::new().layer(bare);
            b.iter(|| call_now(&mut svc, black_box(http::Request::new(()))))
        });
        group.bench_function("layer_timeout", |b| {
            let mut svc = timeout.layer(bare);
            b.iter(|| call_now(&mut svc, black_box(http::Request::new(()))))
        });
        group.bench_function("layer_shed", |b| {
            let mut svc = shed.layer(bare);
            b.iter(|| call_now(&mut svc, black_box(http::Request::new(()))))
        });
        group.bench_function("layer_limit_adaptive", |b| {
            let mut svc = limit.layer(bare);
            b.iter(|| call_now(&mut svc, black_box(http::Request::new(()))))
        });
        group.bench_function("tower_layer_timeout", |b| {
            let mut svc = ServiceBuilder::new().timeout(Duration::from_secs(10)).service(bare);
            b.iter(|| call_now(&mut svc, black_box(http::Request::new(()))))
        });
        group.bench_function("tower_layer_shed", |b| {
            let mut svc = ServiceBuilder::new().load_shed().service(bare);
            b.iter(|| call_now(&mut svc, black_box(http::Request::new(()))))
        });
        group.bench_function("tower_layer_limit", |b| {
            let mut svc = ServiceBuilder::new().concurrency_limit(1_000).service(bare);
            b.iter(|| call_now(&mut svc, black_box(http::Request::new(()))))
        });
    }
    group.bench_function("backpressure_full", |b| {
        let mut svc = full().deadline_extension(false).layer(bare);
        b.iter(|| call_now(&mut svc, black_box(http::Request::new(()))))
    });
    group.bench_function("backpressure_full_with_deadline_extension", |b| {
        let mut svc = full().layer(bare);
        b.iter(|| call_now(&mut svc, black_box(http::Request::new(()))))
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_timeout,
    bench_concurrency,
    bench_shed,
    bench_breaker,
    bench_preset
);
criterion_main!(benches);
