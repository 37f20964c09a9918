//! A quick probe of the keyed and direct rate-limit checks, ours next to
//! governor's (not criterion: a timed loop after a warm-up), for callgrind
//! and `perf record`: `cargo run --release -p backpressure-benches --example
//! rate_probe [=row]`. `PROBE_CALLS` sets the timed calls (2M).

use std::{hint::black_box, num::NonZeroU32, time::Duration, time::Instant};

use backpressure::rate::{Check, DirectStore, KeyedStore, Quota, RateStore};
use governor::{Quota as GQuota, RateLimiter};

const PER_SECOND: u32 = 1_000_000_000;

fn row(name: &str, keys: u64, mut check: impl FnMut(u64) -> bool) {
    if !backpressure_benches::probe_row_selected(name) {
        return;
    }
    for k in 0..keys.max(100_000) {
        black_box(check(k % keys));
    }
    let n: u64 =
        std::env::var("PROBE_CALLS").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000_000);
    let t = Instant::now();
    let mut k = 0;
    for _ in 0..n {
        k = (k + 1) % keys;
        black_box(check(black_box(k)));
    }
    println!("{name:<32} {:>7.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _ctx = rt.enter();
    let ok = |c: Check<_>| matches!(c, Check::Ready(Ok(_)));
    let direct = DirectStore::new(Quota::per_second(PER_SECOND)).unwrap().with_fast_clock();
    row("direct ours", 1, |_| ok(direct.check(&(), 1, Duration::ZERO)));
    let gquota = GQuota::per_second(NonZeroU32::new(PER_SECOND).unwrap());
    let gdirect = RateLimiter::direct(gquota);
    row("direct governor", 1, |_| gdirect.check().is_ok());
    for keys in [1u64, 10_000, 1_000_000] {
        let ours =
            KeyedStore::new(Quota::per_second(PER_SECOND), 2_000_000).unwrap().with_fast_clock();
        row(&format!("keyed ours {keys}"), keys, |k| ok(ours.check(&k, 1, Duration::ZERO)));
        let theirs = RateLimiter::keyed(gquota);
        row(&format!("keyed governor {keys}"), keys, |k| theirs.check_key(&k).is_ok());
    }
}
