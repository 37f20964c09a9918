//! Many cores, one limit: one layer value shared by T threads (each thread
//! calls its own clone: ready → call → poll), T = 1, 2, 4, … up to the
//! cores present, ours next to tower and governor in the same run:
//! `cargo bench -p backpressure-benches --bench scaling`.
//!
//! Each sample starts T threads, lines them up on a barrier and times them
//! all doing the same number of requests; the figure is the wall time per
//! request *per thread* (so perfect scaling keeps it flat, and total
//! requests/s is T / that). `SCALING_THREADS=1,2,16` picks the thread
//! counts (default: powers of two up to `available_parallelism`).

use std::{
    convert::Infallible,
    hint::black_box,
    num::NonZeroU32,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use backpressure::{
    breaker::CircuitBreakerLayer,
    concurrency::{ConcurrencyLimitLayer, Gradient2},
    core::HttpClassify,
    preset::ServerPreset,
    rate::{Check, DirectStore, Quota, RateLimitLayer, RateStore},
    shed::LoadShedLayer,
    timeout::TimeoutLayer,
};
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use tower::{Layer, Service, ServiceBuilder, service_fn};

/// The thread counts to run: `SCALING_THREADS`, else 1, 2, 4, … ≤ cores.
fn thread_counts() -> Vec<usize> {
    if let Ok(list) = std::env::var("SCALING_THREADS") {
        let counts: Vec<usize> = list.split(',').filter_map(|t| t.trim().parse().ok()).collect();
        if !counts.is_empty() {
            return counts;
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::iter::successors(Some(1usize), |t| Some(t * 2)).take_while(|t| *t <= cores).collect()
}

/// Polls `fut` with a no-op waker until it is ready. Under contention a
/// layer may answer `Pending` (tower-resilience's breaker takes an async
/// lock): it is polled again at once, as a busy executor would.
fn spin<F: std::future::Future>(fut: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::hint::spin_loop();
    }
}

/// Ready, then call, then the response: each polled until done.
fn call_spin<S: Service<Req>, Req>(svc: &mut S, req: Req) -> Result<S::Response, S::Error> {
    spin(std::future::poll_fn(|cx| svc.poll_ready(cx)))?;
    spin(svc.call(req))
}

/// Runs `iters` requests on each of `threads` threads, each with its own
/// clone of `svc` and its own runtime context; returns the wall time from
/// the moment all of them are lined up to the moment the last one is done.
fn run_threads<Req, S>(threads: usize, iters: u64, svc: &S, req: fn() -> Req) -> Duration
where
    S: Service<Req> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    let barrier = Arc::new(Barrier::new(threads));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let mut svc = svc.clone();
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .expect("runtime");
                    let _ctx = rt.enter();
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        let _ = black_box(call_spin(&mut svc, black_box(req())));
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        let spans: Vec<(Instant, Instant)> =
            workers.into_iter().map(|w| w.join().expect("bench thread")).collect();
        let start = spans.iter().map(|s| s.0).min().expect("a thread");
        let end = spans.iter().map(|s| s.1).max().expect("a thread");
        end - start
    })
}

fn new_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(format!("scaling_{name}"));
    group.sample_size(10).warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    group
}

/// `svc` (cloned into each thread) at `threads` threads.
fn bench<Req, S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    threads: usize,
    svc: &S,
    req: fn() -> Req,
) where
    S: Service<Req> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    group.bench_with_input(BenchmarkId::new(id, threads), &threads, |b, &threads| {
        b.iter_custom(|iters| run_threads(threads, iters, svc, req))
    });
}

fn unit() -> u64 {
    1
}

fn http_request() -> http::Request<()> {
    http::Request::new(())
}

/// A `Service` that runs one direct rate check per call, so that stores
/// with no layer (governor) are driven the same way as ours.
#[derive(Clone)]
struct Checker<F>(F);

impl<F: Fn() -> bool> Service<u64> for Checker<F> {
    type Response = bool;
    type Error = Infallible;
    type Future = std::future::Ready<Result<bool, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u64) -> Self::Future {
        std::future::ready(Ok((self.0)()))
    }
}

fn bench_scaling(c: &mut Criterion) {
    // Building tower's timeout and our layers needs no runtime; each thread
    // enters its own.
    let bare = service_fn(|x: u64| async move { Ok::<_, Infallible>(x + 1) });
    let counts = thread_counts();

    let tower_timeout = tower::timeout::TimeoutLayer::new(Duration::from_secs(1)).layer(bare);
    let timeout = TimeoutLayer::new(Duration::from_secs(1)).expect("valid").layer(bare);
    let mut g = new_group(c, "timeout");
    for &t in &counts {
        bench(&mut g, "tower", t, &tower_timeout, unit);
        bench(&mut g, "backpressure", t, &timeout, unit);
    }
    g.finish();

    let tower_limit = tower::limit::ConcurrencyLimitLayer::new(1_000).layer(bare);
    let limit = ConcurrencyLimitLayer::new(1_000).expect("valid").layer(bare);
    let adaptive = ConcurrencyLimitLayer::builder()
        .adaptive(Gradient2::new().initial_limit(1_000).max_limit(1_000))
        .build()
        .expect("valid")
        .layer(bare);
    // As the server preset builds it: Gradient2 from its initial limit of
    // 20, too small for per-core reserves of permits (a sixteenth of the
    // limit per stripe must be at least 2).
    let adaptive_default = ConcurrencyLimitLayer::builder()
        .adaptive(Gradient2::new())
        .build()
        .expect("valid")
        .layer(bare);
    let mut g = new_group(c, "concurrency");
    for &t in &counts {
        bench(&mut g, "tower", t, &tower_limit, unit);
        bench(&mut g, "backpressure", t, &limit, unit);
        bench(&mut g, "backpressure_adaptive", t, &adaptive, unit);
        bench(&mut g, "backpressure_adaptive_default", t, &adaptive_default, unit);
    }
    g.finish();

    let tower_shed = tower::load_shed::LoadShedLayer::new().layer(bare);
    let occupancy = ConcurrencyLimitLayer::new(1_000).expect("valid");
    let shed = LoadShedLayer::new(occupancy.handle()).layer(bare);
    let mut g = new_group(c, "load_shed");
    for &t in &counts {
        bench(&mut g, "tower", t, &tower_shed, unit);
        bench(&mut g, "backpressure", t, &shed, unit);
    }
    g.finish();

    let resilience = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .expect("valid")
        .layer(bare);
    let breaker = CircuitBreakerLayer::new().layer(bare);
    let mut g = new_group(c, "breaker_closed");
    for &t in &counts {
        bench(&mut g, "tower_resilience", t, &resilience, unit);
        bench(&mut g, "backpressure", t, &breaker, unit);
    }
    g.finish();

    // Rate limits: a quota that always admits, both on a TSC clock.
    let per_second = 1_000_000_000;
    let ours =
        Arc::new(DirectStore::new(Quota::per_second(per_second)).expect("valid").with_fast_clock());
    let theirs = Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(
        NonZeroU32::new(per_second).expect("non-zero"),
    )));
    let governor = Checker(move || theirs.check().is_ok());
    let direct = Checker(move || matches!(ours.check(&(), 1, Duration::ZERO), Check::Ready(Ok(_))));
    let rate_layer = RateLimitLayer::new(Quota::per_second(per_second)).expect("valid").layer(bare);
    let mut g = new_group(c, "rate_direct");
    for &t in &counts {
        bench(&mut g, "governor", t, &governor, unit);
        bench(&mut g, "backpressure_fast_clock", t, &direct, unit);
        bench(&mut g, "backpressure_layer", t, &rate_layer, unit);
    }
    g.finish();

    // The server preset on `http::Request<()>` against tower's three layers.
    let bare_http = service_fn(|_req: http::Request<()>| async move {
        Ok::<_, Infallible>(http::Response::new(()))
    });
    let tower3 = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1_000)
        .timeout(Duration::from_secs(1))
        .service(bare_http);
    // Every layer (as `preset/backpressure_full` in the layers bench).
    let preset = ServerPreset::new()
        .deadline_extension(false)
        .priority_header(backpressure_benches::internal_priority())
        .rate_limit(RateLimitLayer::new(Quota::per_second(per_second)).expect("valid"))
        .breaker(CircuitBreakerLayer::builder().classify(HttpClassify).build().expect("valid"))
        .layer(bare_http);
    let mut g = new_group(c, "preset");
    for &t in &counts {
        bench(&mut g, "tower_shed_limit_timeout", t, &tower3, http_request);
        bench(&mut g, "backpressure_full", t, &preset, http_request);
    }
    g.finish();
}

criterion_group!(benches, bench_scaling);
criterion_main!(benches);
