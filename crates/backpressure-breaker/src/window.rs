//! Sliding windows of call outcomes: lock-free, O(1) per recorded call.

use std::sync::atomic::{
    AtomicU8, AtomicU64, AtomicUsize, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed,
    Ordering::Release,
};

use backpressure_core::stripe::{CachePadded, stripe_count, thread_stripe};

/// One call's outcome, as the windows store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) failed: bool,
    pub(crate) slow: bool,
}

/// Calls, failures and slow calls in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Counts {
    /// Calls recorded.
    pub calls: u64,
    /// Of which failures.
    pub failures: u64,
    /// Of which slower than the slow-call threshold.
    pub slow: u64,
}

impl Counts {
    /// Failures / calls (0 with no calls).
    pub fn failure_rate(&self) -> f64 {
        if self.calls == 0 { 0.0 } else { self.failures as f64 / self.calls as f64 }
    }

    /// Slow calls / calls (0 with no calls).
    pub fn slow_rate(&self) -> f64 {
        if self.calls == 0 { 0.0 } else { self.slow as f64 / self.calls as f64 }
    }
}

// Packed counts: three 21-bit fields (calls, failures, slow).
const BITS: u32 = 21;
const MASK: u64 = (1 << BITS) - 1;

fn pack(calls: u64, failures: u64, slow: u64) -> u64 {
    calls | (failures << BITS) | (slow << (2 * BITS))
}

fn unpack(word: u64) -> Counts {
    Counts {
        calls: word & MASK,
        failures: (word >> BITS) & MASK,
        slow: (word >> (2 * BITS)) & MASK,
    }
}

fn code(mark: Mark) -> u8 {
    1 | (u8::from(mark.failed) << 1) | (u8::from(mark.slow) << 2)
}

fn packed_of(code: u8) -> u64 {
    if code == 0 { 0 } else { pack(1, u64::from((code >> 1) & 1), u64::from((code >> 2) & 1)) }
}

/// The last `size` calls: a ring of outcome codes and one packed word of
/// running counts. Recording swaps the ring slot and adds the difference
/// between the new and the evicted outcome to the counts in one wrapping
/// `fetch_add` — subtract-on-evict, O(1), no lock. A breaker that was
/// healthy for 10,000 calls sees an outage's failures displace the
/// successes one for one.
///
/// Many cores: a shared cursor for the next slot is one atomic add per call
/// on one cache line for every core. A window with room for it (`size` at
/// least 8 slots per core) hands slots out to each core's stripe in
/// batches instead, at most a quarter of the window claimed at once: a core
/// takes its next slot from its own batch, and the cursor moves once per
/// batch. The ring is then in call order batch by batch, not call by call,
/// and a batch a core claimed but had not filled when it went idle keeps
/// the outcomes of the ring's previous lap until the cursor comes round
/// again — the window is the last `size` calls give or take a quarter of
/// it. The counts always match the slots (every change is a swap of one
/// slot and the difference it made). One thread alone fills its batches in
/// order: the exact last `size` calls.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// On cache lines of its own: every core moves it (once per batch),
    /// and the fields around it are read on every call (it shared their
    /// line: 2 threads, 46 -> 66 ns per call per thread).
    next: CachePadded<AtomicUsize>,
    counts: AtomicU64,
    /// Slots per claimed batch (1: no batching, every call moves `next`).
    batch: usize,
    /// Per stripe: the next slot of its batch (`<< 16`) and how many of the
    /// batch are left (low 16 bits).
    claims: Box<[CachePadded<AtomicU64>]>,
}

/// The largest count window (keeps every packed field within 21 bits).
pub(crate) const MAX_COUNT_WINDOW: usize = 1 << 20;

/// The largest batch of slots a stripe claims at once (fits 16 bits).
const MAX_BATCH: usize = 64;

impl CountWindow {
    pub(crate) fn new(size: usize) -> Self {
        Self::with_stripes(size, stripe_count())
    }

    fn with_stripes(size: usize, stripes: usize) -> Self {
        let batch = (size / (4 * stripes)).clamp(1, MAX_BATCH);
        let stripes = if batch > 1 { stripes } else { 0 };
        CountWindow {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            next: CachePadded(AtomicUsize::new(0)),
            counts: AtomicU64::new(0),
            batch,
            claims: (0..stripes).map(|_| CachePadded(AtomicU64::new(0))).collect(),
        }
    }

    /// The slot for the calling thread's next outcome.
    #[inline]
    fn position(&self) -> usize {
        let len = self.slots.len();
        if self.batch == 1 {
            return self.next.fetch_add(1, Relaxed) % len;
        }
        let claim = &self.claims[thread_stripe(self.claims.len())];
        let mut word = claim.load(Relaxed);
        loop {
            let left = word & 0xFFFF;
            if left > 0 {
                let pos = (word >> 16) as usize;
                let after = if pos + 1 == len { 0 } else { pos + 1 };
                let taken = ((after as u64) << 16) | (left - 1);
                match claim.compare_exchange_weak(word, taken, Relaxed, Relaxed) {
                    Ok(_) => return pos,
                    Err(actual) => word = actual,
                }
                continue;
            }
            // Batch used up: claim the next one from the shared cursor.
            let base = self.next.fetch_add(self.batch, Relaxed) % len;
            let after = if base + 1 == len { 0 } else { base + 1 };
            let fresh = ((after as u64) << 16) | (self.batch as u64 - 1);
            match claim.compare_exchange(word, fresh, Relaxed, Relaxed) {
                Ok(_) => return base,
                // Another thread of this stripe claimed one first: ours is
                // left unfilled this lap (its slots keep their outcomes).
                Err(actual) => word = actual,
            }
        }
    }

    /// Records one outcome; returns the window's counts when the outcome
    /// was a failure or slow (only those can trip the breaker).
    #[inline]
    pub(crate) fn record(&self, mark: Mark) -> Option<Counts> {
        let i = self.position();
        let new = code(mark);
        let slot = &self.slots[i];
        // In a steady state an outcome mostly evicts an equal one: then
        // neither the slot nor the counts change, and two atomic writes are
        // saved. Every delta below comes from the value actually swapped out,
        // so skipping a no-op cannot make the counts drift.
        if slot.load(Acquire) == new && !(mark.failed || mark.slow) {
            return None;
        }
        let old = slot.swap(new, AcqRel);
        let delta = packed_of(new).wrapping_sub(packed_of(old));
        let word = self.counts.fetch_add(delta, AcqRel).wrapping_add(delta);
        (mark.failed || mark.slow).then(|| self.read_word(word))
    }

    pub(crate) fn counts(&self) -> Counts {
        self.read_word(self.counts.load(Acquire))
    }

    /// Concurrent recordings may apply their differences out of order, so a
    /// field can transiently borrow from its neighbour; such a reading is
    /// out of range and reads as empty (no decision is taken on it).
    fn read_word(&self, word: u64) -> Counts {
        let c = unpack(word);
        let n = self.slots.len() as u64;
        if c.calls > n || c.failures > c.calls || c.slow > c.calls || word >> (3 * BITS) != 0 {
            Counts::default()
        } else {
            c
        }
    }

    pub(crate) fn reset(&self) {
        for slot in self.slots.iter() {
            let old = slot.swap(0, AcqRel);
            self.counts.fetch_sub(packed_of(old), AcqRel);
        }
    }
}

/// The last `buckets × width` of time, in buckets.
///
/// Each bucket is two words: the full epoch (bucket number since the
/// breaker's start) it holds counts for, and its counts packed like the
/// count window's (three 21-bit fields). A stale bucket is reset the first
/// time it is written in a new epoch, and ignored when read, however long
/// the breaker was idle: the first version packed a 16-bit epoch into the
/// counts' word and read stale counts as fresh once it wrapped (18 hours of
/// one-second buckets). Writing is a load of the epoch and one CAS; summing the window (`buckets` loads)
/// happens only when a failure or slow call is recorded.
///
/// A bucket holds up to 2,097,151 calls; a call that would overflow it
/// first halves all three of its counts, which keeps its rates (the first
/// version stopped counting at 65,535, freezing the rates at the first
/// calls of a busy bucket).
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    width_nanos: u64,
}

#[derive(Debug, Default)]
struct Bucket {
    /// The epoch the counts belong to; `RESETTING` while a writer moves the
    /// bucket to a new epoch.
    epoch: AtomicU64,
    counts: AtomicU64,
}

/// Epochs count from 1, so a fresh bucket (epoch 0) is stale.
const RESETTING: u64 = u64::MAX;

impl TimeWindow {
    pub(crate) fn new(buckets: usize, width_nanos: u64) -> Self {
        TimeWindow {
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            width_nanos: width_nanos.max(1),
        }
    }

    fn epoch(&self, now: u64) -> u64 {
        // +1: epoch 0 marks a bucket never written. Saturates well below
        // `RESETTING` (now / width ≤ u64::MAX / 1).
        (now / self.width_nanos).min(RESETTING - 2) + 1
    }

    pub(crate) fn record(&self, now: u64, mark: Mark) -> Option<Counts> {
        let add = pack(1, u64::from(mark.failed), u64::from(mark.slow));
        self.add(now, add);
        (mark.failed || mark.slow).then(|| self.counts(now))
    }

    /// Adds one to the current bucket's calls (the throttle's requests).
    pub(crate) fn add_call(&self, now: u64) {
        self.add(now, pack(1, 0, 0));
    }

    /// Adds one to the current bucket's failures field (the throttle counts
    /// its accepts there).
    pub(crate) fn add_failure_field(&self, now: u64) {
        self.add(now, pack(0, 1, 0));
    }

    /// Adds packed `calls | failures << 21 | slow << 42` to the current bucket.
    fn add(&self, now: u64, add: u64) {
        let epoch = self.epoch(now);
        let bucket = &self.buckets[(epoch % self.buckets.len() as u64) as usize];
        loop {
            let seen = bucket.epoch.load(Acquire);
            if seen == epoch {
                break;
            }
            if seen == RESETTING {
                // Another writer is moving the bucket to this epoch. Drop
                // this one call rather than spin behind a writer that may
                // be descheduled: the window's rates lose nothing that
                // matters.
                return;
            }
            if seen > epoch {
                // A writer that stalled across the bucket's whole ring: its
                // call belongs to a period already gone.
                return;
            }
            // Stale: take the bucket, clear it, publish the new epoch. The
            // RESETTING mark keeps writers of the new epoch from adding to
            // counts that are about to be cleared.
            if bucket.epoch.compare_exchange(seen, RESETTING, AcqRel, Acquire).is_ok() {
                bucket.counts.store(0, Release);
                bucket.epoch.store(epoch, Release);
                break;
            }
        }
        let mut cur = bucket.counts.load(Acquire);
        loop {
            let c = unpack(cur);
            // Full (any field): halve all three, keeping the rates, then add.
            let full = c.calls >= MASK || c.failures >= MASK || c.slow >= MASK;
            let base = if full { pack(c.calls / 2, c.failures / 2, c.slow / 2) } else { cur };
            match bucket.counts.compare_exchange_weak(cur, base + add, AcqRel, Acquire) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    pub(crate) fn counts(&self, now: u64) -> Counts {
        let epoch = self.epoch(now);
        let n = self.buckets.len() as u64;
        let mut c = Counts::default();
        for bucket in self.buckets.iter() {
            let seen = bucket.epoch.load(Acquire);
            // Valid if its epoch is one of the last `n`.
            if seen != RESETTING && seen <= epoch && epoch - seen < n && seen != 0 {
                let b = unpack(bucket.counts.load(Acquire));
                c.calls += b.calls;
                c.failures += b.failures;
                c.slow += b.slow;
            }
        }
        c
    }

    pub(crate) fn reset(&self) {
        for bucket in self.buckets.iter() {
            bucket.epoch.store(0, Release);
            bucket.counts.store(0, Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Mark = Mark { failed: false, slow: false };
    const FAIL: Mark = Mark { failed: true, slow: false };
    const SLOW: Mark = Mark { failed: false, slow: true };

    #[test]
    fn the_count_window_slides() {
        let w = CountWindow::new(10);
        for _ in 0..10_000 {
            assert_eq!(w.record(OK), None);
        }
        assert_eq!(w.counts(), Counts { calls: 10, failures: 0, slow: 0 });
        for i in 1..=10 {
            let c = w.record(FAIL).unwrap();
            assert_eq!(c.failures, i, "each failure displaces one success");
        }
        assert_eq!(w.record(SLOW), Some(Counts { calls: 10, failures: 9, slow: 1 }));
        for _ in 0..10 {
            w.record(OK);
        }
        assert_eq!(
            w.counts(),
            Counts { calls: 10, failures: 0, slow: 0 },
            "successes displace failures"
        );
        w.reset();
        assert_eq!(w.counts(), Counts::default());
    }

    #[test]
    fn one_thread_fills_a_batched_window_in_call_order() {
        // 1,000 slots over 4 stripes: batches of 62.
        let w = CountWindow::with_stripes(1_000, 4);
        assert_eq!(w.batch, 62);
        for _ in 0..5_000 {
            w.record(OK);
        }
        assert_eq!(w.counts(), Counts { calls: 1_000, failures: 0, slow: 0 });
        for i in 1..=1_000 {
            let c = w.record(FAIL).unwrap();
            assert_eq!(c.failures, i, "each failure displaces one success");
        }
        for _ in 0..999 {
            w.record(OK);
        }
        assert_eq!(w.counts(), Counts { calls: 1_000, failures: 1, slow: 0 });
    }

    #[test]
    fn counts_match_the_slots_whatever_the_threads_do() {
        // Threads sharing stripes (8 threads, 2 stripes) race for batches;
        // the counts must still be exactly what the slots hold, and a
        // window of 1,000 calls must hold 1,000 recent outcomes.
        let w = std::sync::Arc::new(CountWindow::with_stripes(1_000, 2));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let w = std::sync::Arc::clone(&w);
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        let failed = (i + t) % 4 == 0;
                        w.record(Mark { failed, slow: i % 7 == 0 });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let from_slots = w.slots.iter().fold(0u64, |acc, s| acc + packed_of(s.load(Acquire)));
        assert_eq!(w.counts(), unpack(from_slots));
        let c = w.counts();
        assert_eq!(c.calls, 1_000);
        assert!((c.failure_rate() - 0.25).abs() < 0.1, "{c:?}");
    }

    #[test]
    fn the_time_window_forgets_old_buckets() {
        let second = 1_000_000_000;
        let w = TimeWindow::new(10, second);
        for s in 0..10 {
            w.record(s * second, OK);
            w.record(s * second, FAIL);
        }
        assert_eq!(w.counts(9 * second), Counts { calls: 20, failures: 10, slow: 0 });
        // Five seconds later, five buckets have aged out.
        assert_eq!(w.counts(14 * second), Counts { calls: 10, failures: 5, slow: 0 });
        // Writing into a stale bucket resets it first.
        let c = w.record(15 * second, FAIL).unwrap();
        assert_eq!(c, Counts { calls: 9, failures: 5, slow: 0 });
        // Long idle: everything aged out.
        assert_eq!(w.counts(100 * second), Counts::default());
    }

    #[test]
    fn a_busy_bucket_keeps_its_rates() {
        // 100,000 successes, then 100,000 failures in one bucket: the first
        // version stopped counting at 65,535 calls and reported 0 % failed.
        let w = TimeWindow::new(10, 1_000_000_000);
        for _ in 0..100_000 {
            w.record(0, OK);
        }
        for _ in 0..100_000 {
            w.record(0, FAIL);
        }
        let c = w.counts(0);
        assert_eq!(c.calls, 200_000);
        assert!((c.failure_rate() - 0.5).abs() < 1e-9, "{c:?}");
    }

    #[test]
    fn a_full_bucket_halves_instead_of_saturating() {
        let w = TimeWindow::new(1, 1_000_000_000);
        w.add(0, pack(MASK, MASK / 4, 0));
        w.record(0, FAIL);
        let c = w.counts(0);
        assert_eq!(c.calls, MASK / 2 + 1);
        assert!((c.failure_rate() - 0.25).abs() < 1e-3, "{c:?}");
    }

    #[test]
    fn stale_buckets_stay_stale_after_any_idle_time() {
        // The first version tagged buckets with a 16-bit epoch: after
        // exactly 65,536 buckets of idle time, old counts read as fresh.
        let second = 1_000_000_000;
        let w = TimeWindow::new(10, second);
        for _ in 0..50 {
            w.record(0, FAIL);
        }
        assert_eq!(w.counts(0).failures, 50);
        assert_eq!(w.counts(65_536 * second), Counts::default());
        let c = w.record(65_536 * second, OK).unwrap_or_else(|| w.counts(65_536 * second));
        assert_eq!(c, Counts { calls: 1, failures: 0, slow: 0 });
    }
}
