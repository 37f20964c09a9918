use std::{fmt, sync::Arc, sync::atomic::Ordering::Relaxed, time::Duration};

use crate::shared::Shared;

/// Observes a [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer) from
/// anywhere: cloneable, cheap, lock-free reads.
#[derive(Clone)]
pub struct ConcurrencyLimitHandle {
    shared: Arc<Shared>,
}

/// A point-in-time view of a limiter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConcurrencyLimitSnapshot {
    /// The current limit (adaptive limits move).
    pub limit: usize,
    /// Requests holding a permit.
    pub in_flight: usize,
    /// Requests waiting for a permit.
    pub queued: usize,
    /// The queue's capacity.
    pub max_queue: usize,
    /// Requests that have waited in the queue, in total.
    pub queued_total: u64,
    /// Rejected because the queue was full (or queuing is off), or evicted
    /// from it by higher-priority requests.
    pub rejected_overloaded: u64,
    /// Rejected after waiting `max_wait` (or CoDel's target).
    pub rejected_queue_timeout: u64,
    /// Rejected because their deadline passed before a permit came.
    pub rejected_deadline: u64,
    /// Waiters pushed out of a full queue by higher-priority arrivals.
    pub evicted: u64,
    /// Mean wait of the requests that got a permit after queuing.
    pub mean_queue_wait: Duration,
    /// Longest such wait.
    pub max_queue_wait: Duration,
    /// Whether an adaptive limit is briefly lowered to re-measure the
    /// unloaded RTT.
    pub probing: bool,
    /// An adaptive limit measures one completed request in this many (a
    /// power of two, 1 to 64): 1 below 20,000 completions a second, more
    /// above, so that it reads the clock and feeds its algorithm about
    /// 10,000 times a second however fast requests go. Always 1 for a fixed
    /// limit.
    pub sample_every: u32,
}

impl ConcurrencyLimitHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ConcurrencyLimitHandle { shared }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.shared.limit.load(Relaxed)
    }

    /// Requests holding a permit now.
    pub fn in_flight(&self) -> usize {
        self.shared.counter.in_flight()
    }

    /// Requests waiting for a permit now.
    pub fn queued(&self) -> usize {
        self.shared.queue_len()
    }

    /// How loaded the limiter is: `in_flight / limit`, plus
    /// `queued / max_queue` when it has a queue. 0 is idle, 1 is every
    /// permit in use with nobody waiting, 2 is a full queue. A load shedder
    /// reads this.
    #[inline]
    pub fn pressure(&self) -> f64 {
        // One load for both counts, one division: a shedder reads this on
        // every request.
        let (in_flight, queued) = self.shared.counter.load();
        let limit = self.limit().max(1) as f64;
        match self.shared.max_queue {
            0 => in_flight as f64 / limit,
            max_queue => {
                let max_queue = max_queue as f64;
                (in_flight as f64 * max_queue + queued as f64 * limit) / (limit * max_queue)
            }
        }
    }

    /// Everything at once.
    pub fn snapshot(&self) -> ConcurrencyLimitSnapshot {
        let s = &self.shared.stats;
        let dequeued = s.dequeued.load(Relaxed);
        let total = s.queue_wait_nanos.load(Relaxed);
        ConcurrencyLimitSnapshot {
            limit: self.limit(),
            in_flight: self.in_flight(),
            queued: self.queued(),
            max_queue: self.shared.max_queue,
            queued_total: s.queued.load(Relaxed),
            rejected_overloaded: s.rejected_overloaded.load(Relaxed),
            rejected_queue_timeout: s.rejected_queue_timeout.load(Relaxed),
            rejected_deadline: s.rejected_deadline.load(Relaxed),
            evicted: s.evicted.load(Relaxed),
            mean_queue_wait: Duration::from_nanos(total.checked_div(dequeued).unwrap_or(0)),
            max_queue_wait: Duration::from_nanos(s.queue_wait_max_nanos.load(Relaxed)),
            probing: self.shared.is_probing(),
            sample_every: self.shared.sample_every.load(Relaxed),
        }
    }

    /// Waiter slots allocated: queued waiters plus permits handed to waiters
    /// and not yet collected. For leak tests; locks the queue.
    #[doc(hidden)]
    pub fn slots_live(&self) -> usize {
        self.shared.slots_live()
    }
}

/// A load shedder in front of the limiter reads its
/// [`pressure`](ConcurrencyLimitHandle::pressure); a caller it rejects is
/// told to retry after what the limiter's own rejections say: the recent
/// queue wait (measured), else `max_wait`, else 1 s.
impl backpressure_core::Pressure for ConcurrencyLimitHandle {
    #[inline]
    fn pressure(&self) -> f64 {
        ConcurrencyLimitHandle::pressure(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        Some(self.shared.retry_hint())
    }
}

impl fmt::Debug for ConcurrencyLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitHandle")
            .field("name", &self.shared.name)
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}
