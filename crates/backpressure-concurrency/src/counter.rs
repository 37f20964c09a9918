//! The lock-free part of the limiter: the in-flight count and the number of
//! queued waiters, packed in one atomic word. Everything else happens under
//! the queue's lock.
//!
//! One word is what keeps a freed permit from being lost. A releaser's
//! `fetch_sub` returns the waiter count as of its own decrement; a request
//! that must queue registers itself with an RMW on the same word and then
//! retries. RMWs on one location are totally ordered, so either the releaser
//! sees the waiter (and hands the permit over under the lock), or the
//! waiter's retry sees the freed permit. Granting a permit to a waiter is one
//! CAS that moves it from "waiting" to "in flight". The loom model below
//! checks this exhaustively:
//!
//! ```text
//! RUSTFLAGS="--cfg backpressure_loom" cargo test -p backpressure-concurrency --lib loom
//! ```
//!
//! # Reserves: many cores, one limit
//!
//! One word that every request writes twice (take, give back) is one cache
//! line that every core fights over: on 2 cores the fixed limit went from
//! 52 ns per request to 216 ns per request per thread, less total work than
//! one thread. With room to spare (a limit of at least 32 permits per
//! stripe), each core's stripe keeps a small *reserve*: permits taken from
//! the word in a batch and handed to its next requests without touching
//! the word; a permit given back refills the reserve, and a reserve grown
//! past its batch gives half back. The word counts reserved permits as
//! taken, so the limit is never exceeded; what a reserve costs is that
//! other cores cannot use those permits (at most a sixteenth of the limit
//! in all, `limit / (16 × stripes)` per stripe) until they are reclaimed:
//! a request that finds no permit on the fast path reclaims every reserve
//! before it queues, and a shrinking limit reclaims them at once.
//!
//! A reserve must never sit on permits while a request waits: a waiter
//! registers (an RMW on the word) and *then* reclaims every reserve (a swap
//! each); a core putting a permit into its reserve adds it (an RMW) and
//! *then* looks at the word for waiters, emptying its reserve into the word
//! if there are any. All four are sequentially consistent, so at least one
//! side sees the other (the loom model below checks it). Only requests of
//! priorities that may use the whole limit use reserves; the others, whose
//! share is checked against the word, take the word's path.

#[cfg(backpressure_loom)]
use loom::sync::atomic::{
    AtomicU64, AtomicUsize, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed,
    Ordering::SeqCst,
};
#[cfg(not(backpressure_loom))]
use std::sync::atomic::{
    AtomicU64, AtomicUsize, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed,
    Ordering::SeqCst,
};

use backpressure_core::stripe::CachePadded;

/// Low half: permits held (or reserved). High half: requests queued.
const IN_FLIGHT: u64 = 1;
const WAITER: u64 = 1 << 32;
const LOW: u64 = WAITER - 1;

fn in_flight_of(word: u64) -> usize {
    (word & LOW) as usize
}

fn waiters_of(word: u64) -> usize {
    (word >> 32) as usize
}

/// The permits of a limit of `limit` a stripe may reserve, out of
/// `stripes`: a sixteenth of the limit over all stripes, none below 2.
fn batch_for(limit: usize, stripes: usize) -> usize {
    match limit / (16 * stripes.max(1)) {
        0 | 1 => 0,
        b => b,
    }
}

/// In-flight requests and queued waiters, and per-stripe reserves.
#[derive(Debug)]
pub(crate) struct Counter {
    word: CachePadded<AtomicU64>,
    /// Per stripe: permits taken from `word`, not yet handed to a request.
    reserves: Box<[CachePadded<AtomicUsize>]>,
    /// The most a stripe reserves (0: no reserves).
    batch: AtomicUsize,
}

impl Counter {
    /// A counter for a limit of `limit`, with `stripes` reserves.
    pub(crate) fn new(limit: usize, stripes: usize) -> Self {
        Counter {
            word: CachePadded(AtomicU64::new(0)),
            reserves: (0..stripes).map(|_| CachePadded(AtomicUsize::new(0))).collect(),
            batch: AtomicUsize::new(batch_for(limit, stripes)),
        }
    }

    /// How many reserves (a power of two).
    #[inline]
    pub(crate) fn stripes(&self) -> usize {
        self.reserves.len()
    }

    /// The limit changed: resize the reserves. A lower limit reclaims them
    /// at once, so that no core goes on using permits the limit took away.
    pub(crate) fn set_limit(&self, old: usize, new: usize) {
        self.batch.store(batch_for(new, self.reserves.len()), Relaxed);
        if new < old {
            self.reclaim();
        }
    }

    /// The fast path: takes a permit if nobody is queued and fewer than
    /// `threshold` are in flight. `reserve`: the request may use the whole
    /// limit (`threshold` is the limit), so `stripe`'s reserve may serve it.
    /// `Some(dispatch)`: taken, and if `dispatch`, permits went back to the
    /// word while requests wait — the caller serves them.
    #[inline]
    pub(crate) fn try_acquire_unqueued(
        &self,
        threshold: usize,
        stripe: usize,
        reserve: bool,
    ) -> Option<bool> {
        let mut word = self.word.load(Acquire);
        let batch = if reserve { self.batch.load(Relaxed) } else { 0 };
        if batch > 0 && waiters_of(word) == 0 {
            let own = &self.reserves[stripe];
            let mut left = own.load(Relaxed);
            while left > 0 {
                match own.compare_exchange_weak(left, left - 1, AcqRel, Relaxed) {
                    Ok(_) => return Some(false),
                    Err(actual) => left = actual,
                }
            }
        }
        while waiters_of(word) == 0 && in_flight_of(word) < threshold {
            // With reserves: take a share of the room left as a batch.
            let room = threshold - in_flight_of(word);
            let take = if batch > 0 { (room / self.reserves.len()).clamp(1, batch + 1) } else { 1 };
            match self.word.compare_exchange_weak(
                word,
                word + take as u64 * IN_FLIGHT,
                AcqRel,
                Acquire,
            ) {
                Ok(_) if take > 1 => return Some(self.stash(stripe, take - 1)),
                Ok(_) => return Some(false),
                Err(actual) => word = actual,
            }
        }
        None
    }

    /// Puts `n` taken permits into `stripe`'s reserve, then looks for
    /// waiters: if any, empties the reserve into the word and says so
    /// (`true`: the caller must serve them).
    fn stash(&self, stripe: usize, n: usize) -> bool {
        let own = &self.reserves[stripe];
        own.fetch_add(n, SeqCst);
        if waiters_of(self.word.load(SeqCst)) == 0 {
            return false;
        }
        let back = own.swap(0, SeqCst);
        back > 0 && waiters_of(self.word.fetch_sub(back as u64 * IN_FLIGHT, SeqCst)) > 0
    }

    /// Takes a permit if fewer than `threshold` are in flight, whatever the
    /// queue (the caller holds the queue lock and knows its order).
    pub(crate) fn try_acquire(&self, threshold: usize) -> bool {
        let mut word = self.word.load(Acquire);
        while in_flight_of(word) < threshold {
            match self.word.compare_exchange_weak(word, word + IN_FLIGHT, AcqRel, Acquire) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
        false
    }

    /// Moves one queued waiter to in flight if fewer than `threshold` are in
    /// flight. Caller holds the queue lock.
    pub(crate) fn try_grant(&self, threshold: usize) -> bool {
        let mut word = self.word.load(Acquire);
        while in_flight_of(word) < threshold && waiters_of(word) > 0 {
            match self.word.compare_exchange_weak(word, word - WAITER + IN_FLIGHT, AcqRel, Acquire)
            {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
        false
    }

    /// Returns a permit (into `stripe`'s reserve while nobody waits); `true`
    /// if waiters exist and must be served.
    #[inline]
    pub(crate) fn release(&self, stripe: usize) -> bool {
        let batch = self.batch.load(Relaxed);
        if batch > 0 && waiters_of(self.word.load(Acquire)) == 0 {
            let own = &self.reserves[stripe];
            let mut held = own.fetch_add(1, SeqCst) + 1;
            // Grown past its batch: give half back.
            let mut back = 0;
            while held > batch {
                match own.compare_exchange_weak(held, batch / 2, SeqCst, Relaxed) {
                    Ok(_) => {
                        back = held - batch / 2;
                        break;
                    }
                    Err(actual) => held = actual,
                }
            }
            // Then look for waiters: the give-back's own read does, if any.
            let word = if back > 0 {
                self.word.fetch_sub(back as u64 * IN_FLIGHT, SeqCst)
            } else {
                self.word.load(SeqCst)
            };
            if waiters_of(word) == 0 {
                return false;
            }
            // Waiters: nothing stays in the reserve; serve them if any
            // permit went back.
            let drained = own.swap(0, SeqCst);
            if drained > 0 {
                self.word.fetch_sub(drained as u64 * IN_FLIGHT, SeqCst);
            }
            return back + drained > 0;
        }
        self.release_to_word()
    }

    /// Returns a permit to the word; `true` if waiters exist and must be
    /// served.
    pub(crate) fn release_to_word(&self) -> bool {
        waiters_of(self.word.fetch_sub(IN_FLIGHT, AcqRel)) > 0
    }

    /// Empties every reserve into the word (a waiter registered, or the
    /// limit shrank). Returns how many permits came back.
    pub(crate) fn reclaim(&self) -> usize {
        let back: usize = self.reserves.iter().map(|r| r.swap(0, SeqCst)).sum();
        if back > 0 {
            self.word.fetch_sub(back as u64 * IN_FLIGHT, SeqCst);
        }
        back
    }

    /// Whether anyone is queued.
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        waiters_of(self.word.load(Acquire)) > 0
    }

    /// Called under the queue lock when a waiter is queued; reclaims every
    /// reserve after registering (see the module docs).
    pub(crate) fn add_waiter(&self) {
        self.word.fetch_add(WAITER, SeqCst);
        self.reclaim();
    }

    /// Called under the queue lock when a waiter leaves the queue without a
    /// permit (timed out, cancelled, evicted).
    pub(crate) fn remove_waiter(&self) {
        self.word.fetch_sub(WAITER, AcqRel);
    }

    /// `(taken, waiters)` from one load: reserved permits count as taken
    /// (at most a sixteenth of the limit), so that a shedder reading this
    /// on every request reads one cache line.
    #[inline]
    pub(crate) fn load(&self) -> (usize, usize) {
        let word = self.word.load(Acquire);
        (in_flight_of(word), waiters_of(word))
    }

    /// Requests holding a permit (reserves not counted).
    pub(crate) fn in_flight(&self) -> usize {
        let reserved: usize = self.reserves.iter().map(|r| r.load(Acquire)).sum();
        in_flight_of(self.word.load(Acquire)).saturating_sub(reserved)
    }

    pub(crate) fn waiters(&self) -> usize {
        waiters_of(self.word.load(Acquire))
    }
}

#[cfg(test)]
impl Counter {
    /// A counter whose stripes reserve up to `batch` permits whatever the
    /// limit (the models below use a limit of 1).
    pub(crate) fn with_batch(stripes: usize, batch: usize) -> Self {
        let counter = Counter::new(0, stripes);
        counter.batch.store(batch, Relaxed);
        counter
    }
}

#[cfg(all(test, not(backpressure_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_permit_given_back_is_reserved_for_the_same_core() {
        let c = Counter::with_batch(2, 4);
        // Room 8 over 2 stripes: takes 4 at once (1 used, 3 reserved).
        assert_eq!(c.try_acquire_unqueued(8, 0, true), Some(false));
        assert_eq!((c.load().0, c.in_flight()), (4, 1), "reserved permits count as taken");
        // The next three come from the reserve: the word does not move.
        let word = c.word.load(Acquire);
        for _ in 0..3 {
            assert_eq!(c.try_acquire_unqueued(8, 0, true), Some(false));
        }
        assert_eq!(c.word.load(Acquire), word);
        assert_eq!(c.in_flight(), 4);
        // Given back into the reserve, up to the batch; past it, half goes
        // back to the word.
        for _ in 0..4 {
            assert!(!c.release(0));
        }
        assert_eq!(c.reserves[0].load(Acquire), 4);
        assert_eq!((c.load().0, c.in_flight()), (4, 0));
        assert_eq!(c.try_acquire_unqueued(8, 0, true), Some(false));
        assert!(!c.release(0));
        assert!(!c.release(1));
        assert_eq!(c.in_flight(), 0);
        assert!(c.load().0 <= 4 + 1, "a reserve never holds more than its batch + 1");
    }

    #[test]
    fn requests_below_the_whole_limit_never_use_a_reserve() {
        let c = Counter::with_batch(1, 4);
        assert_eq!(c.try_acquire_unqueued(8, 0, true), Some(false));
        // Took 5 (1 used, 4 reserved); given back, the reserve grew past
        // its batch of 4 and gave 3 back: 2 reserved, 2 taken in the word.
        assert!(!c.release(0));
        assert_eq!((c.reserves[0].load(Acquire), c.load().0), (2, 2));
        // A share-limited request takes from the word, checked against its
        // threshold with the reserves counted as taken; the reserve is
        // left alone.
        assert_eq!(c.try_acquire_unqueued(3, 0, false), Some(false));
        assert_eq!(c.try_acquire_unqueued(3, 0, false), None, "3 taken of a threshold of 3");
        assert_eq!(c.reserves[0].load(Acquire), 2);
    }

    #[test]
    fn a_waiter_or_a_lower_limit_empties_every_reserve() {
        let c = Counter::with_batch(2, 4);
        assert_eq!(c.try_acquire_unqueued(100, 0, true), Some(false));
        assert_eq!(c.try_acquire_unqueued(100, 1, true), Some(false));
        assert!(c.load().0 > 2);
        c.add_waiter();
        assert_eq!(c.load(), (2, 1), "only the two held permits stay taken");
        c.remove_waiter();
        assert!(!c.release(0));
        assert!(c.load().0 >= 2);
        c.set_limit(1_000, 10);
        assert_eq!(c.load().0, 1, "a lower limit reclaims the reserves");
        assert!(!c.release(1));
        assert_eq!(c.load(), (0, 0));
    }
}

#[cfg(all(test, backpressure_loom))]
mod loom_model {
    use super::Counter;
    use loom::sync::{Arc, Mutex};

    /// The slow paths of `Shared`, reduced to their synchronisation: a queue
    /// of waiter ids behind a mutex, and a record of who was granted.
    struct Model {
        counter: Counter,
        queue: Mutex<(Vec<usize>, Vec<usize>)>, // (waiting, granted)
    }

    impl Model {
        fn new(counter: Counter) -> Arc<Self> {
            Arc::new(Model { counter, queue: Mutex::new((Vec::new(), Vec::new())) })
        }

        fn dispatch(&self, q: &mut (Vec<usize>, Vec<usize>), limit: usize) {
            while !q.0.is_empty() {
                if !self.counter.try_grant(limit) {
                    break;
                }
                let id = q.0.remove(0);
                q.1.push(id);
            }
        }

        /// `ConcurrencyLimit::call` from `stripe`: fast path, else reclaim
        /// the reserves, queue and re-check.
        fn acquire(&self, id: usize, limit: usize, stripe: usize) -> bool {
            match self.counter.try_acquire_unqueued(limit, stripe, true) {
                Some(false) => return true,
                Some(true) => {
                    let mut q = self.queue.lock().unwrap();
                    self.dispatch(&mut q, limit);
                    return true;
                }
                None => {}
            }
            let mut q = self.queue.lock().unwrap();
            self.counter.reclaim();
            if q.0.is_empty() && self.counter.try_acquire(limit) {
                return true;
            }
            q.0.push(id);
            self.counter.add_waiter();
            self.dispatch(&mut q, limit);
            false
        }

        /// `Shared::release` from `stripe`.
        fn release(&self, limit: usize, stripe: usize) {
            if self.counter.release(stripe) {
                let mut q = self.queue.lock().unwrap();
                self.dispatch(&mut q, limit);
            }
        }
    }

    #[test]
    fn loom_a_released_permit_always_reaches_a_waiter() {
        loom::model(|| {
            let model = Model::new(Counter::new(1, 1));
            assert!(model.acquire(0, 1, 0), "the first request takes the only permit");
            let m = Arc::clone(&model);
            let releaser = loom::thread::spawn(move || m.release(1, 0));
            let got_it_directly = model.acquire(1, 1, 0);
            releaser.join().unwrap();
            let q = model.queue.lock().unwrap();
            // Either request 1 took the freed permit itself, or it was queued
            // and the releaser (or its own re-check) granted it: never both,
            // never neither.
            assert_eq!(got_it_directly, q.1.is_empty());
            assert!(q.0.is_empty(), "nobody left waiting with a free permit");
            assert_eq!(model.counter.in_flight(), 1);
            assert_eq!(model.counter.waiters(), 0);
        });
    }

    /// The same race with reserves: the permit is given back into one
    /// core's reserve while a request on another core queues. It must not
    /// stay reserved while the request waits.
    #[test]
    fn loom_a_reserved_permit_always_reaches_a_waiter() {
        loom::model(|| {
            let model = Model::new(Counter::with_batch(2, 2));
            assert!(model.acquire(0, 1, 0), "the first request takes the only permit");
            let m = Arc::clone(&model);
            let releaser = loom::thread::spawn(move || m.release(1, 0));
            let got_it_directly = model.acquire(1, 1, 1);
            releaser.join().unwrap();
            let q = model.queue.lock().unwrap();
            assert_eq!(got_it_directly, q.1.is_empty());
            assert!(q.0.is_empty(), "nobody left waiting while a permit is reserved");
            assert_eq!(model.counter.in_flight(), 1);
            assert_eq!(model.counter.waiters(), 0);
        });
    }

    #[test]
    fn loom_the_limit_holds_between_racing_acquirers() {
        loom::model(|| {
            let model = Model::new(Counter::with_batch(2, 2));
            let handles: Vec<_> = (0..2)
                .map(|id| {
                    let m = Arc::clone(&model);
                    loom::thread::spawn(move || m.acquire(id, 1, id))
                })
                .collect();
            let direct = handles.into_iter().map(|h| h.join().unwrap()).filter(|&d| d).count();
            let q = model.queue.lock().unwrap();
            assert_eq!(direct + q.1.len(), 1, "exactly one request holds the permit");
            assert_eq!(q.0.len(), 1, "the other waits");
            assert_eq!(model.counter.in_flight(), 1);
        });
    }
}
