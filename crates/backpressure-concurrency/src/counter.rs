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
//! RUSTFLAGS="--cfg backpressure_loom" cargo test -p backpressure-concurrency --lib --release loom
//! ```

#[cfg(backpressure_loom)]
use loom::sync::atomic::{AtomicU64, Ordering::AcqRel, Ordering::Acquire};
#[cfg(not(backpressure_loom))]
use std::sync::atomic::{AtomicU64, Ordering::AcqRel, Ordering::Acquire};

/// Low half: permits held. High half: requests queued.
const IN_FLIGHT: u64 = 1;
const WAITER: u64 = 1 << 32;
const LOW: u64 = WAITER - 1;

fn in_flight_of(word: u64) -> usize {
    (word & LOW) as usize
}

fn waiters_of(word: u64) -> usize {
    (word >> 32) as usize
}

/// In-flight requests and queued waiters.
#[derive(Debug)]
pub(crate) struct Counter {
    word: AtomicU64,
}

impl Counter {
    pub(crate) fn new() -> Self {
        Counter { word: AtomicU64::new(0) }
    }

    /// The fast path: takes a permit if nobody is queued and fewer than
    /// `threshold` are in flight.
    #[inline]
    pub(crate) fn try_acquire_unqueued(&self, threshold: usize) -> bool {
        let mut word = self.word.load(Acquire);
        while waiters_of(word) == 0 && in_flight_of(word) < threshold {
            match self.word.compare_exchange_weak(word, word + IN_FLIGHT, AcqRel, Acquire) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
        false
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

    /// Returns a permit; `true` if waiters exist and must be served.
    #[inline]
    pub(crate) fn release(&self) -> bool {
        waiters_of(self.word.fetch_sub(IN_FLIGHT, AcqRel)) > 0
    }

    /// Whether anyone is queued.
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        waiters_of(self.word.load(Acquire)) > 0
    }

    /// Called under the queue lock when a waiter is queued.
    pub(crate) fn add_waiter(&self) {
        self.word.fetch_add(WAITER, AcqRel);
    }

    /// Called under the queue lock when a waiter leaves the queue without a
    /// permit (timed out, cancelled, evicted).
    pub(crate) fn remove_waiter(&self) {
        self.word.fetch_sub(WAITER, AcqRel);
    }

    /// `(in_flight, waiters)` from one load.
    #[inline]
    pub(crate) fn load(&self) -> (usize, usize) {
        let word = self.word.load(Acquire);
        (in_flight_of(word), waiters_of(word))
    }

    pub(crate) fn in_flight(&self) -> usize {
        in_flight_of(self.word.load(Acquire))
    }

    pub(crate) fn waiters(&self) -> usize {
        waiters_of(self.word.load(Acquire))
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
        fn dispatch(&self, q: &mut (Vec<usize>, Vec<usize>), limit: usize) {
            while !q.0.is_empty() {
                if !self.counter.try_grant(limit) {
                    break;
                }
                let id = q.0.remove(0);
                q.1.push(id);
            }
        }

        /// `ConcurrencyLimit::call`: fast path, else queue and re-check.
        fn acquire(&self, id: usize, limit: usize) -> bool {
            if self.counter.try_acquire_unqueued(limit) {
                return true;
            }
            let mut q = self.queue.lock().unwrap();
            if q.0.is_empty() && self.counter.try_acquire(limit) {
                return true;
            }
            q.0.push(id);
            self.counter.add_waiter();
            self.dispatch(&mut q, limit);
            false
        }

        /// `Shared::release`.
        fn release(&self, limit: usize) {
            if self.counter.release() {
                let mut q = self.queue.lock().unwrap();
                self.dispatch(&mut q, limit);
            }
        }
    }

    #[test]
    fn loom_a_released_permit_always_reaches_a_waiter() {
        loom::model(|| {
            let model = Arc::new(Model {
                counter: Counter::new(),
                queue: Mutex::new((Vec::new(), Vec::new())),
            });
            assert!(model.acquire(0, 1), "the first request takes the only permit");
            let m = Arc::clone(&model);
            let releaser = loom::thread::spawn(move || m.release(1));
            let got_it_directly = model.acquire(1, 1);
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

    #[test]
    fn loom_the_limit_holds_between_racing_acquirers() {
        loom::model(|| {
            let model = Arc::new(Model {
                counter: Counter::new(),
                queue: Mutex::new((Vec::new(), Vec::new())),
            });
            let handles: Vec<_> = (0..2)
                .map(|id| {
                    let m = Arc::clone(&model);
                    loom::thread::spawn(move || m.acquire(id, 1))
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
