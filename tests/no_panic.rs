//! Anything a builder accepts never makes a layer panic later: every
//! builder's durations and sizes, extremes included (`Duration::MAX`, zero,
//! `usize::MAX`), either fail `build()` with a `ConfigError` or give a layer
//! that serves requests — queued, delayed, timed out, retried, probed —
//! through a simulated day without a panic.
//!
//! The first version validated `max_wait(Duration::MAX)` and then panicked
//! in `Instant + Duration` when the first request queued; a huge
//! `probe_interval` panicked inside `Permit::drop`; a huge breaker
//! `open_duration` with a backoff panicked in `Duration::from_secs_f64`.

use std::time::Duration;

use backpressure::{
    breaker::{
        AdaptiveThrottleLayer, Backoff as BreakerBackoff, CircuitBreakerLayer, SlidingWindow,
    },
    concurrency::{Aimd, ConcurrencyLimitLayer, Discipline, Gradient2, Vegas, WindowConfig},
    core::BoxError,
    http::PushbackLayer,
    rate::{Quota, RateLimitLayer},
    retry::{Backoff, FnPolicy, RetryBudget, RetryLayer, Verdict},
    timeout::TimeoutLayer,
};
use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt, service_fn};

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_millis(1)),
        Just(Duration::from_secs(1)),
        Just(Duration::from_secs(86_400)),
        Just(Duration::from_nanos(u64::MAX)),
        Just(Duration::from_secs(u64::MAX)),
        Just(Duration::MAX),
        any::<u64>().prop_map(Duration::from_nanos),
        any::<u64>().prop_map(Duration::from_millis),
        (0u64..10_000).prop_map(Duration::from_millis),
    ]
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(2),
        Just(100),
        Just(1 << 20),
        Just((1 << 20) + 1),
        Just(usize::MAX),
        0usize..5_000,
    ]
}

fn fraction() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), 0.0..2.0f64]
}

/// Drives `svc` (over a backend that answers after 1 ms, or never for every
/// third request) with a burst, a second burst a day later, and lets every
/// timer fire.
fn drive<S>(svc: S)
where
    S: Service<u32, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for round in 0..2 {
            for i in 0..12u32 {
                tasks.spawn(svc.clone().oneshot(i));
            }
            if round == 0 {
                tokio::time::advance(Duration::from_millis(3)).await;
                for i in 0..4u32 {
                    let one = svc.clone().oneshot(i * 3 + 1);
                    let _ = tokio::time::timeout(Duration::from_secs(60), one).await;
                }
                tokio::time::advance(Duration::from_secs(86_400)).await;
            }
        }
        // Whatever waits longer than a simulated day is abandoned (dropped,
        // which runs every layer's drop path).
        let _ = tokio::time::timeout(Duration::from_secs(86_400), async {
            while let Some(joined) = tasks.join_next().await {
                // A panic in a task is caught by tokio: surface it.
                if let Err(e) = joined
                    && e.is_panic()
                {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        })
        .await;
        tasks.abort_all();
    });
}

fn backend() -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|n: u32| async move {
        if n.is_multiple_of(3) {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        if n.is_multiple_of(5) { Err::<u32, BoxError>("failed".into()) } else { Ok(n) }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn concurrency_limits(
        limit in prop_oneof![1usize..4, size()], queue in size(), wait in duration(),
        target in duration(), interval in duration(), codel in any::<bool>(),
        algorithm in 0u8..4, probe in duration(), min_w in duration(), max_w in duration(),
        min_samples in size(), threshold in fraction(), rtt in duration(),
    ) {
        let window =
            WindowConfig::default().min_duration(min_w).max_duration(max_w).min_samples(min_samples);
        let builder = ConcurrencyLimitLayer::builder();
        let builder = match algorithm {
            0 => builder.limit(limit),
            1 => builder.adaptive(
                Gradient2::new().probe_interval(probe).window(window).drop_threshold(threshold)
                    .max_limit(limit.max(1)).initial_limit(limit.clamp(1, 1000)),
            ),
            2 => builder.adaptive(Aimd::new().rtt_threshold(rtt).window(window).max_limit(limit)),
            _ => builder.adaptive(Vegas::new().probe_interval(probe).window(window)),
        };
        let builder = builder.max_queue(queue).max_wait(wait);
        let builder = if codel {
            builder.discipline(Discipline::Codel { target, interval, adaptive_lifo: true })
        } else {
            builder
        };
        if let Ok(layer) = builder.build() {
            // Bare (waits bounded by `max_wait` alone) and under a deadline.
            drive(layer.layer(backend()));
            drive(TimeoutLayer::new(Duration::from_secs(5)).unwrap().layer(layer.layer(backend())));
        }
    }

    #[test]
    fn timeouts(timeout in duration()) {
        if let Ok(layer) = TimeoutLayer::new(timeout) {
            drive(layer.layer(backend()));
        }
    }

    #[test]
    fn rate_limits(
        count in any::<u32>(), period in duration(), burst in any::<u32>(), wait in duration(),
        keys in size(), keyed in any::<bool>(),
    ) {
        let quota = Quota::per(count, period).burst(burst);
        let builder = RateLimitLayer::builder(quota).max_wait(wait);
        if keyed {
            let layer = builder.keyed(|n: &u32| *n % 4).max_keys(keys).build();
            if let Ok(layer) = layer {
                drive(layer.layer(backend()));
            }
        } else if let Ok(layer) = builder.build() {
            drive(layer.layer(backend()));
        }
    }

    #[test]
    fn circuit_breakers(
        open in duration(), slow in duration(), half_open in duration(), bucket in duration(),
        buckets in size(), calls in size(), max in duration(), multiplier in 0.0..100.0f64,
        jitter in fraction(), time_window in any::<bool>(),
    ) {
        let window = if time_window {
            SlidingWindow::Time { bucket, buckets }
        } else {
            SlidingWindow::Calls(calls)
        };
        let layer = CircuitBreakerLayer::builder()
            .window(window)
            .minimum_calls(1)
            .open_duration(open)
            .slow_call(slow, 0.5)
            .half_open_max_wait(half_open)
            .backoff(BreakerBackoff::new(multiplier, max).jitter(jitter))
            .build();
        if let Ok(layer) = layer {
            drive(TimeoutLayer::new(Duration::from_secs(2)).unwrap().layer(layer.layer(backend())));
        }
    }

    #[test]
    fn adaptive_throttles(window in duration(), buckets in size(), k in fraction()) {
        if let Ok(layer) = AdaptiveThrottleLayer::builder().window(window, buckets).k(k).build() {
            drive(layer.layer(backend()));
        }
    }

    #[test]
    fn retries(base in duration(), max in duration(), after in duration(), attempts in 0u32..6) {
        let Ok(backoff) = Backoff::new(base, max) else { return Ok(()) };
        let policy = FnPolicy::new(
            |n: &u32| Some(*n),
            |r: &Result<u32, BoxError>| match r {
                Ok(_) => Verdict::Done,
                Err(_) => Verdict::Retry { not_before: Some(Duration::MAX) },
            },
        );
        let layer = RetryLayer::builder(policy)
            .max_attempts(attempts)
            .backoff(backoff)
            .max_retry_after(after)
            .budget(RetryBudget::builder().build().unwrap())
            .build();
        if let Ok(layer) = layer {
            drive(TimeoutLayer::new(Duration::from_secs(3)).unwrap().layer(layer.layer(backend())));
        }
    }

    #[test]
    fn pushback(max in duration(), spread in fraction(), held in any::<u64>()) {
        if let Ok(layer) =
            PushbackLayer::builder().max_pushback(max).release_spread(spread).max_held(held).build()
        {
            let svc = layer.layer(service_fn(|req: http::Request<u32>| async move {
                let n = *req.body();
                let res = http::Response::builder()
                    .status(if n.is_multiple_of(2) { 503 } else { 200 })
                    .header("retry-after", "99999999999")
                    .body(())
                    .unwrap();
                Ok::<_, BoxError>(res)
            }));
            drive(tower::util::MapRequestLayer::new(|n: u32| {
                http::Request::builder().body(n).unwrap()
            }).layer(svc));
        }
    }
}
