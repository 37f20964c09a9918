//! A Redis check round trip on loopback next to the in-memory store, in one
//! run: `cargo bench -p backpressure-benches --bench redis`. Starts its own
//! redis-server on a free port (scripts/install-deps.sh installs it).

use std::{hint::black_box, time::Duration};

use backpressure::rate::{Check, DirectStore, Quota, RateStore};
use backpressure_redis::{RedisStore, testing::RedisServer};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench_redis(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let server = RedisServer::start();
    let quota = Quota::per_second(1_000_000);
    let redis = rt
        .block_on(
            RedisStore::builder(server.url(), quota).timeout(Duration::from_millis(500)).connect(),
        )
        .expect("connect");
    let memory = {
        let _ctx = rt.enter();
        DirectStore::new(quota).expect("valid")
    };
    let mut group = c.benchmark_group("rate_store_check");
    group.bench_function("in_memory", |b| {
        let _ctx = rt.enter();
        b.iter(|| matches!(memory.check(black_box(&()), 1, Duration::ZERO), Check::Ready(Ok(_))))
    });
    group.bench_function("redis_loopback", |b| {
        b.iter(|| {
            rt.block_on(async {
                match RateStore::<()>::check(&redis, black_box(&()), 1, Duration::ZERO) {
                    Check::Ready(r) => r.is_ok(),
                    Check::Pending(f) => f.await.is_ok(),
                }
            })
        })
    });
    group.finish();
    drop(server);
}

criterion_group!(benches, bench_redis);
criterion_main!(benches);
