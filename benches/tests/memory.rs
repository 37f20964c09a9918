//! Heap bytes per tracked key: our keyed store next to governor's keyed
//! limiter, measured with a byte-counting allocator.
//! `cargo test -p backpressure-benches --test memory -- --nocapture`

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only
// forwards to `System`.
#![allow(unsafe_code)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    num::NonZeroU32,
    sync::atomic::{AtomicIsize, Ordering::Relaxed},
    time::Duration,
};

use backpressure::rate::{KeyedStore, Quota, RateStore};
use governor::{Quota as GQuota, RateLimiter};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const KEYS: u64 = 100_000;

#[test]
fn bytes_per_key_ours_and_governors() {
    // One test (one thread) measures both, so nothing else allocates meanwhile.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _ctx = rt.enter();

    let before = LIVE.load(Relaxed);
    let ours = KeyedStore::new(Quota::per_second(10), KEYS as usize).unwrap();
    for k in 0..KEYS {
        let _ = RateStore::<u64>::check(&ours, &k, 1, Duration::ZERO);
    }
    let ours_bytes = LIVE.load(Relaxed) - before;
    assert_eq!(ours.len(), KEYS as usize);

    let before = LIVE.load(Relaxed);
    let theirs = RateLimiter::keyed(GQuota::per_second(NonZeroU32::new(10).unwrap()));
    for k in 0..KEYS {
        let _ = theirs.check_key(&k);
    }
    let theirs_bytes = LIVE.load(Relaxed) - before;
    assert_eq!(theirs.len(), KEYS as usize);

    let (ours_per_key, theirs_per_key) =
        (ours_bytes as f64 / KEYS as f64, theirs_bytes as f64 / KEYS as f64);
    println!(
        "heap per key, {KEYS} u64 keys: backpressure {ours_per_key:.2} B, governor {theirs_per_key:.2} B"
    );
    // Same entry size (16 B): equal up to table rounding.
    assert!(
        ours_per_key <= theirs_per_key * 1.01,
        "ours {ours_per_key:.2} B > governor {theirs_per_key:.2} B"
    );
    drop(theirs);
    drop(ours);

    // Per-client limits key by address: governor stores the key, we store
    // its 64-bit hash.
    let ip = |k: u64| std::net::IpAddr::from(std::net::Ipv6Addr::from(u128::from(k) << 16));
    let before = LIVE.load(Relaxed);
    let ours = KeyedStore::new(Quota::per_second(10), KEYS as usize).unwrap();
    for k in 0..KEYS {
        let _ = RateStore::<std::net::IpAddr>::check(&ours, &ip(k), 1, Duration::ZERO);
    }
    let ours_ip = (LIVE.load(Relaxed) - before) as f64 / KEYS as f64;
    let before = LIVE.load(Relaxed);
    let theirs = RateLimiter::keyed(GQuota::per_second(NonZeroU32::new(10).unwrap()));
    for k in 0..KEYS {
        let _ = theirs.check_key(&ip(k));
    }
    let theirs_ip = (LIVE.load(Relaxed) - before) as f64 / KEYS as f64;
    println!(
        "heap per key, {KEYS} IpAddr keys: backpressure {ours_ip:.2} B, governor {theirs_ip:.2} B"
    );
    assert!(ours_ip < theirs_ip);
}
