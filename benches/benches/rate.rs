//! Rate-limit checks, ours next to governor 0.10, in one run:
//! `cargo bench -p backpressure-benches --bench rate`.
//!
//! Both limiters get a quota that always admits (a billion per second), so
//! the figures are the cost of the admit path. Keys are `u64`.

use std::{hint::black_box, num::NonZeroU32, time::Duration};

use backpressure::rate::{Check, DirectStore, KeyedStore, Quota, RateStore};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use governor::{Quota as GQuota, RateLimiter};

const PER_SECOND: u32 = 1_000_000_000;

fn ours_ok<K: ?Sized, St: RateStore<K>>(store: &St, key: &K) -> bool {
    matches!(store.check(key, 1, Duration::ZERO), Check::Ready(Ok(_)))
}

fn gquota() -> GQuota {
    GQuota::per_second(NonZeroU32::new(PER_SECOND).expect("non-zero"))
}

fn bench_direct(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _ctx = rt.enter();
    let mut group = c.benchmark_group("rate_direct");
    let ours = DirectStore::new(Quota::per_second(PER_SECOND)).expect("valid");
    group.bench_function("backpressure", |b| b.iter(|| ours_ok(&ours, black_box(&()))));
    let fast = DirectStore::new(Quota::per_second(PER_SECOND)).expect("valid").with_fast_clock();
    group.bench_function("backpressure_fast_clock", |b| b.iter(|| ours_ok(&fast, black_box(&()))));
    let theirs = RateLimiter::direct(gquota());
    group.bench_function("governor", |b| b.iter(|| black_box(theirs.check()).is_ok()));
    group.finish();
}

fn bench_keyed(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _ctx = rt.enter();
    let mut group = c.benchmark_group("rate_keyed");
    for keys in [1u64, 10_000, 1_000_000] {
        let ours = KeyedStore::new(Quota::per_second(PER_SECOND), 2_000_000).expect("valid");
        let fast = KeyedStore::new(Quota::per_second(PER_SECOND), 2_000_000)
            .expect("valid")
            .with_fast_clock();
        let theirs = RateLimiter::keyed(gquota());
        for k in 0..keys {
            ours_ok(&ours, &k);
            ours_ok(&fast, &k);
            let _ = theirs.check_key(&k);
        }
        group.bench_with_input(BenchmarkId::new("backpressure", keys), &keys, |b, &keys| {
            let mut k = 0u64;
            b.iter(|| {
                k = (k + 1) % keys;
                ours_ok(&ours, black_box(&k))
            })
        });
        group.bench_with_input(
            BenchmarkId::new("backpressure_fast_clock", keys),
            &keys,
            |b, &keys| {
                let mut k = 0u64;
                b.iter(|| {
                    k = (k + 1) % keys;
                    ours_ok(&fast, black_box(&k))
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("governor", keys), &keys, |b, &keys| {
            let mut k = 0u64;
            b.iter(|| {
                k = (k + 1) % keys;
                black_box(theirs.check_key(black_box(&k))).is_ok()
            })
        });
    }
    group.finish();
}

fn bench_contended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _ctx = rt.enter();
    let mut group = c.benchmark_group("rate_two_threads_one_bucket");
    let ours = DirectStore::new(Quota::per_second(PER_SECOND)).expect("valid").with_fast_clock();
    let theirs = RateLimiter::direct(gquota());
    // Both on a TSC clock. Time per check while a second thread checks the same bucket.
    group.bench_function("backpressure_fast_clock", |b| {
        b.iter_custom(|iters| {
            std::thread::scope(|s| {
                let handle = rt.handle().clone();
                let ours = &ours;
                let other = s.spawn(move || {
                    let _ctx = handle.enter();
                    for _ in 0..iters {
                        ours_ok(ours, &());
                    }
                });
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    ours_ok(ours, black_box(&()));
                }
                let elapsed = start.elapsed();
                other.join().expect("thread");
                elapsed
            })
        })
    });
    group.bench_function("governor", |b| {
        b.iter_custom(|iters| {
            std::thread::scope(|s| {
                let other = s.spawn(|| {
                    for _ in 0..iters {
                        let _ = theirs.check();
                    }
                });
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    let _ = black_box(theirs.check());
                }
                let elapsed = start.elapsed();
                other.join().expect("thread");
                elapsed
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_direct, bench_keyed, bench_contended);
criterion_main!(benches);
