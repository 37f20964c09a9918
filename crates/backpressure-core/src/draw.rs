use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Lock-free pseudo-random draws for probabilistic decisions (shedding
/// ramps, breaker jitter, client throttling): SplitMix64 over an atomic
/// counter. One `fetch_add` per draw; deterministic for a seed on one
/// thread, so tests can fix it.
///
/// ```
/// use backpressure_core::Draw;
///
/// let a = Draw::new(7);
/// let b = Draw::new(7);
/// let x = a.next_f64();
/// assert_eq!(x, b.next_f64());
/// assert!((0.0..1.0).contains(&x));
/// ```
#[derive(Debug)]
pub struct Draw(AtomicU64);

impl Draw {
    /// A generator from `seed`.
    pub const fn new(seed: u64) -> Self {
        Draw(AtomicU64::new(seed))
    }

    /// A generator seeded from the process's random hasher keys.
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, RandomState};
        Draw::new(RandomState::new().hash_one(0x5eed_u64))
    }

    /// A uniform draw in `[0, 1)`.
    #[inline]
    pub fn next_f64(&self) -> f64 {
        let mut z = self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}
