//! The layers' metrics: counted in the layers, published by the library.
//!
//! A layer counts what happens to its requests in its own state, per core
//! for what is counted on every request ([`Counts`]), and registers that
//! state here. Once a second, a thread of the library's (one per process,
//! started with the first registration, named `backpressure-metrics`)
//! writes every live layer's counters and gauges to the `metrics`
//! recorder; so does [`flush`], at once, and so does a layer's state when
//! it is dropped. A request therefore never touches the recorder: no
//! contended atomic on a series every core writes, no label built, no
//! allocation, and a recorder installed after the layers were built is
//! found at the next publication.
//!
//! Two layers of the same kind under the same name add up in the counters
//! (each publishes what it counted since its last publication); for gauges
//! the last writer wins.

use std::{
    sync::{
        Arc, Mutex, Once, PoisonError, Weak,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use crate::stripe::{CachePadded, stripe_count, thread_stripe};

/// How often the library's thread publishes.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// State that writes its metrics to the recorder when asked.
pub trait Publish: Send + Sync {
    /// Writes every counter and gauge to the current recorder.
    fn publish(&self);
}

/// Live registrations, pruned of dead ones at every registration and
/// publication: never more entries than registrations made since the last
/// prune, and in a steady state exactly the live layers.
static REGISTRY: Mutex<Vec<Weak<dyn Publish>>> = Mutex::new(Vec::new());

/// Registers `state` for publication until it is dropped (the registry
/// keeps a `Weak`), and starts the publishing thread if it is not running.
pub fn register<T: Publish + 'static>(state: &Arc<T>) {
    let weak: Weak<T> = Arc::downgrade(state);
    let state: Weak<dyn Publish> = weak;
    {
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        registry.retain(|w| w.strong_count() > 0);
        registry.push(state);
    }
    static START: Once = Once::new();
    START.call_once(|| {
        let spawned = std::thread::Builder::new().name("backpressure-metrics".into()).spawn(|| {
            loop {
                std::thread::sleep(INTERVAL);
                flush();
            }
        });
        if let Err(error) = spawned {
            // Counting goes on; only the periodic publication is missing.
            eprintln!(
                "backpressure: could not start the metrics thread ({error}): \
                 metrics are published only by backpressure::metrics::flush()"
            );
        }
    });
}

/// Publishes every live layer's metrics now (the library's thread does it
/// once a second): call it before reading the recorder in a test, or before
/// rendering a scrape if a second of lag matters.
pub fn flush() {
    let live: Vec<Arc<dyn Publish>> = {
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        registry.retain(|w| w.strong_count() > 0);
        registry.iter().filter_map(Weak::upgrade).collect()
    };
    // Published outside the registry's lock: a layer dropped here
    // publishes itself, and registering must never wait for a recorder.
    for state in live {
        state.publish();
    }
}

/// How many layers are registered (for tests that build many).
#[doc(hidden)]
pub fn registered() -> usize {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner).len()
}

/// `N` counters, each striped per core: adding touches the calling core's
/// cache line only; reading sums the stripes (publish the sums through
/// [`Published`]).
pub struct Counts<const N: usize> {
    stripes: Box<[CachePadded<[AtomicU64; N]>]>,
}

impl<const N: usize> Counts<N> {
    /// `N` counters at 0.
    pub fn new() -> Self {
        Counts {
            stripes: (0..stripe_count())
                .map(|_| CachePadded(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    /// Adds one to counter `i`.
    #[inline]
    pub fn add(&self, i: usize) {
        self.stripes[thread_stripe(self.stripes.len())][i].fetch_add(1, Relaxed);
    }

    /// Counter `i`'s total.
    pub fn get(&self, i: usize) -> u64 {
        self.stripes.iter().map(|s| s[i].load(Relaxed)).fold(0, u64::wrapping_add)
    }
}

impl<const N: usize> Default for Counts<N> {
    fn default() -> Self {
        Counts::new()
    }
}

impl<const N: usize> std::fmt::Debug for Counts<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let totals: [u64; N] = std::array::from_fn(|i| self.get(i));
        f.debug_tuple("Counts").field(&totals).finish()
    }
}

/// What of a counter was published: a [`Counts`] total, or a counter kept
/// elsewhere as one atomic (rare events).
#[derive(Debug, Default)]
pub struct Published(AtomicU64);

impl Published {
    /// What `total` added since the last call, which publishes it.
    ///
    /// Two publishers may run at once (the library's thread, and `flush`
    /// from a scrape handler), each with a total read at its own moment: the
    /// published mark only moves forward, so a publisher holding an older
    /// total than the mark adds nothing, and the increments add up to the
    /// largest total published. (A plain swap let the older total come
    /// second and add `older - newer`, wrapped: 1.8e19 events.)
    pub fn since(&self, total: u64) -> u64 {
        total.saturating_sub(self.0.fetch_max(total, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_over_threads_and_publish_each_event_once() {
        let counts = Arc::new(Counts::<2>::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counts = Arc::clone(&counts);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counts.add(0);
                    }
                    counts.add(1);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let published = Published::default();
        assert_eq!(counts.get(0), 4000);
        assert_eq!(published.since(counts.get(0)), 4000);
        assert_eq!(published.since(counts.get(0)), 0);
        counts.add(0);
        assert_eq!(published.since(counts.get(0)), 1);
        assert_eq!(counts.get(1), 4);
    }

    #[test]
    fn concurrent_publishers_add_up_to_the_total_and_never_wrap() {
        let published = Arc::new(Published::default());
        let counted = Arc::new(AtomicU64::new(0));
        let sum = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (published, counted, sum) =
                    (Arc::clone(&published), Arc::clone(&counted), Arc::clone(&sum));
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let total = counted.fetch_add(1, Relaxed) + 1;
                        let added = published.since(total);
                        assert!(added <= 10_000 * 4, "wrapped: {added}");
                        sum.fetch_add(added, Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total = counted.load(Relaxed);
        assert_eq!(sum.load(Relaxed) + published.since(total), total);
    }

    struct Layer(std::sync::atomic::AtomicUsize);

    impl Publish for Layer {
        fn publish(&self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn the_registry_holds_only_live_layers() {
        let keep = Arc::new(Layer(Default::default()));
        register(&keep);
        for _ in 0..10_000 {
            let dropped = Arc::new(Layer(Default::default()));
            register(&dropped);
        }
        // Other tests of this binary may register too; never 10,000.
        assert!(registered() < 100, "{}", registered());
        flush();
        assert!(keep.0.load(Relaxed) >= 1);
    }
}
