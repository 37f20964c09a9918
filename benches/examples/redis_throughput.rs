//! Many checks in flight against one Redis: N tasks share one store (one
//! multiplexed connection, which pipelines their round trips) and check as
//! fast as they can for 2 s each, N = 1, 16, 256. Prints checks/s and the
//! p50/p99 of one check, next to `redis-benchmark` running the same Lua
//! script (`EVALSHA`) with N connections on the same machine — the ceiling
//! Redis itself sets:
//!
//! `cargo run --release -p backpressure-benches --example redis_throughput`
//!
//! Starts its own redis-server on a free loopback port.

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use backpressure::rate::{Check, Quota, RateStore};
use backpressure_redis::{RedisStore, testing::RedisServer};

const RUN: Duration = Duration::from_secs(2);

/// Checks/s, p50 and p99 of N tasks checking as fast as they can.
async fn ours(store: &RedisStore, n: usize) -> (f64, Duration, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = format!("bench-{i}");
                let mut latencies = Vec::with_capacity(100_000);
                while start.elapsed() < RUN {
                    let t = Instant::now();
                    let ok = match RateStore::<str>::check(&store, &key, 1, Duration::ZERO) {
                        Check::Ready(r) => r.is_ok(),
                        Check::Pending(f) => f.await.is_ok(),
                    };
                    assert!(ok, "a check failed");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("bench task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    (all.len() as f64 / elapsed, at(0.5), at(0.99))
}

/// `redis-benchmark` running the store's script with `n` connections:
/// requests/s, if the tool is installed.
fn ceiling(port: u16, sha: &str, n: usize) -> Option<f64> {
    let requests = if n == 1 { 20_000 } else { 100_000 };
    let out = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-c", &n.to_string(), "-n", &requests.to_string(), "-q"])
        .args(["EVALSHA", sha, "1", "bp:{ceiling}", "1", "1000000", "1", "0", ""])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "EVALSHA ...: 123456.79 requests per second, p50=0.1 msec"
    let line = text.lines().rev().find(|l| l.contains("requests per second"))?;
    let figure = line.rsplit(':').next()?.split_whitespace().next()?;
    figure.parse().ok()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = RedisServer::start();
    let quota = Quota::per_second(1_000_000);
    let store = rt
        .block_on(
            RedisStore::builder(server.url(), quota).timeout(Duration::from_millis(500)).connect(),
        )
        .expect("connect");
    let sha: String = rt.block_on(async {
        let client = redis::Client::open(server.url()).expect("url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connection");
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(include_str!("../../crates/backpressure-redis/src/gcra.lua"))
            .query_async(&mut conn)
            .await
            .expect("script load")
    });
    let store = Arc::new(store);
    println!(
        "in flight  checks/s (ours)   p50 check   p99 check   redis-benchmark EVALSHA, same N"
    );
    for n in [1usize, 16, 256] {
        let (rate, p50, p99) = rt.block_on(ours(&store, n));
        let ceiling = ceiling(server.port, &sha, n)
            .map_or_else(|| "(redis-benchmark not installed)".to_owned(), |r| format!("{r:.0}/s"));
        println!("{n:>9}  {rate:>15.0}   {:>9.1?}   {:>9.1?}   {ceiling}", p50, p99);
    }
}
