use std::{
    collections::HashMap,
    future::Ready,
    hash::{BuildHasherDefault, Hash, Hasher},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed},
    },
    time::Duration,
};

use backpressure_core::{BoxError, ConfigError};

use super::{Check, Decision, RateStore, duration_nanos, siphash::SecretKey};
use crate::{Quota, clock::Clock, gcra::Gcra};

/// How often a full shard may sweep its expired buckets.
const SWEEP_GAP_NANOS: u64 = 1_000_000;

/// Buckets per key, in bounded memory.
///
/// - **Keys are hashed, not stored**: a bucket is 16 bytes plus the table's
///   control byte (a 64-bit hash of the key under a secret per-store SipHash
///   key, and the TAT), whatever the key type. Measured at the cap under a
///   key spray, the tables hold 48.4 bytes per `max_keys` slot (churn leaves
///   tombstones, so a table at its cap grows one size step and stays there). An attacker cannot aim two keys at one bucket without the
///   secret; an accidental collision (odds ~n²/2⁶⁴) makes two keys share a
///   quota — it never grants more.
/// - **Bounded by construction**: at most `max_keys` buckets, in shards with
///   a hard cap each. A bucket whose TAT is in the past is identical to a
///   fresh one, so a full shard drops those (at most once per millisecond)
///   before anything else happens — once they have also been idle for a
///   grace period (the quota's period, at most 10 s), so that a client
///   using its quota steadily keeps its bucket and cannot be displaced by a
///   spray. No background task, nothing to call.
/// - **The cap is exact**: one atomic count of live buckets, touched only
///   when a bucket is inserted or swept (never on a hit), holds the total at
///   `max_keys` however unevenly keys hash across the shards. (An earlier
///   per-shard cap let only 98,963 of 100,000 keys have a bucket at
///   `max_keys = 100_000`.) A full store sweeps the shard the new key hashes
///   to.
/// - **Overflow**: when a shard is full of live buckets (a key-spray attack),
///   new keys share one overflow bucket with the same quota. The spray
///   cannot grow memory or lift the limit; clients already tracked keep
///   their own buckets and their full quota.
#[derive(Debug)]
pub struct KeyedStore {
    gcra: Gcra,
    quota: Quota,
    clock: Clock,
    key: SecretKey,
    shards: Box<[Shard]>,
    shard_mask: u64,
    max_keys: usize,
    overflow: AtomicU64,
    overflow_hits: AtomicU64,
    grace: u64,
    live: AtomicUsize,
}

#[derive(Debug)]
#[repr(align(64))]
struct Shard(Mutex<ShardState>);

#[derive(Debug)]
struct ShardState {
    map: HashMap<u64, u64, BuildHasherDefault<PreHashed>>,
    next_sweep: u64,
}

/// The map's keys are already uniform random hashes: use them as they are.
#[derive(Debug, Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed (through `write_u64`); fold anything
        // else rather than panic.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl KeyedStore {
    /// A store enforcing `quota` per key, holding at most `max_keys` buckets.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if the quota is invalid or `max_keys` is zero.
    pub fn new(quota: Quota, max_keys: usize) -> Result<Self, ConfigError> {
        quota.validate("rate-limit")?;
        if max_keys == 0 {
            return Err(ConfigError::new("rate-limit", "max_keys", "must be at least 1"));
        }
        if max_keys > 1 << 32 {
            return Err(ConfigError::new("rate-limit", "max_keys", "must be at most 2^32"));
        }
        let gcra = Gcra::new(&quota)
            .ok_or_else(|| ConfigError::new("rate-limit", "quota", "cannot be represented"))?;
        // Up to 64 shards, a power of two, never more shards than keys.
        let count = max_keys.min(64).next_power_of_two();
        let count = if count > max_keys { count / 2 } else { count }.max(1);
        let shards = (0..count)
            .map(|_| Shard(Mutex::new(ShardState { map: HashMap::default(), next_sweep: 0 })))
            .collect();
        Ok(KeyedStore {
            gcra,
            quota,
            clock: Clock::tokio(),
            key: SecretKey::random(),
            shards,
            shard_mask: count as u64 - 1,
            max_keys,
            overflow: AtomicU64::new(0),
            overflow_hits: AtomicU64::new(0),
            grace: duration_nanos(quota.period().min(Duration::from_secs(10))),
            live: AtomicUsize::new(0),
        })
    }

    /// Reads time from the CPU's timestamp counter instead of tokio's clock
    /// (see the crate docs).
    #[cfg(feature = "fast-clock")]
    #[must_use]
    pub fn with_fast_clock(mut self) -> Self {
        self.clock = Clock::fast();
        self
    }

    /// The cap on buckets.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Buckets held now (locks each shard in turn).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests decided on the shared overflow bucket so far.
    pub fn overflow_hits(&self) -> u64 {
        self.overflow_hits.load(Relaxed)
    }

    /// Heap bytes held by the buckets' tables (capacity, not just length).
    pub fn memory_bytes(&self) -> usize {
        let per_slot = std::mem::size_of::<(u64, u64)>() + 1; // entry + control byte
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(PoisonError::into_inner).map.capacity() * per_slot)
            .sum()
    }

    fn decide_hashed(&self, hash: u64, cost: u32, max_wait: Duration) -> Decision {
        let now = self.clock.nanos();
        let max_wait = duration_nanos(max_wait);
        // The table indexes buckets by the low bits and tags them with the top
        // seven: pick the shard from bits used by neither.
        let shard = &self.shards[((hash >> 40) & self.shard_mask) as usize];
        let mut state = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = state.map.get_mut(&hash) {
            let v = self.gcra.check(*tat, now, cost, max_wait);
            if let Some(new_tat) = v.new_tat {
                *tat = new_tat;
            }
            return Decision::from_gcra(v, &self.quota, &self.gcra);
        }
        // A new key's bucket is full: only store it if the request conforms.
        let v = self.gcra.check(0, now, cost, max_wait);
        let Some(new_tat) = v.new_tat else {
            return Decision::from_gcra(v, &self.quota, &self.gcra);
        };
        if self.live.load(Acquire) >= self.max_keys && now >= state.next_sweep {
            // Buckets already refilled (and idle for the grace period) are
            // identical to fresh ones.
            let grace = self.grace;
            let before = state.map.len();
            state.map.retain(|_, tat| tat.saturating_add(grace) > now);
            self.live.fetch_sub(before - state.map.len(), AcqRel);
            state.next_sweep = now.saturating_add(SWEEP_GAP_NANOS);
        }
        // Reserve a slot in the global count before inserting.
        if self.live.fetch_add(1, AcqRel) < self.max_keys {
            state.map.insert(hash, new_tat);
            return Decision::from_gcra(v, &self.quota, &self.gcra);
        }
        self.live.fetch_sub(1, AcqRel);
        drop(state);
        self.overflow_hits.fetch_add(1, Relaxed);
        self.decide_overflow(now, cost, max_wait)
    }

    fn decide_overflow(&self, now: u64, cost: u32, max_wait: u64) -> Decision {
        let mut tat = self.overflow.load(Acquire);
        loop {
            let v = self.gcra.check(tat, now, cost, max_wait);
            let Some(new_tat) = v.new_tat else {
                return Decision::from_gcra(v, &self.quota, &self.gcra);
            };
            match self.overflow.compare_exchange_weak(tat, new_tat, AcqRel, Acquire) {
                Ok(_) => return Decision::from_gcra(v, &self.quota, &self.gcra),
                Err(actual) => tat = actual,
            }
        }
    }
}

impl<K: Hash + ?Sized> RateStore<K> for KeyedStore {
    type Future = Ready<Result<Decision, BoxError>>;

    #[inline]
    fn check(&self, key: &K, cost: u32, max_wait: Duration) -> Check<Self::Future> {
        // Our SipHash-1-3, not `RandomState`'s: the same function, but a
        // fixed-size key's hash is always inlined here (see `siphash`).
        let mut hasher = self.key.hasher();
        key.hash(&mut hasher);
        Check::Ready(Ok(self.decide_hashed(hasher.finish(), cost, max_wait)))
    }

    fn quota(&self) -> Quota {
        self.quota
    }

    fn keys(&self) -> Option<usize> {
        Some(self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_cap_is_exact_however_keys_hash() {
        for max_keys in [1, 2, 3, 7, 63, 64, 65, 1000, 10_000] {
            let store = KeyedStore::new(Quota::per_second(1), max_keys).unwrap();
            for k in 0..(2 * max_keys as u64) {
                let _ = RateStore::<u64>::check(&store, &k, 1, Duration::ZERO);
            }
            assert_eq!(store.len(), max_keys, "exactly max_keys buckets, the rest overflow");
            assert_eq!(store.overflow_hits(), max_keys as u64);
        }
    }

    #[test]
    fn zero_max_keys_is_a_config_error() {
        assert_eq!(KeyedStore::new(Quota::per_second(1), 0).unwrap_err().field(), "max_keys");
    }
}
