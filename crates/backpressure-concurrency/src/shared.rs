//! The limiter's shared state: one per layer value, behind an `Arc`.

use std::{
    sync::{
        Mutex, MutexGuard, PoisonError, TryLockError,
        atomic::{
            AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
        },
    },
    task::{Context, Poll},
    time::Duration,
};

use backpressure_core::{
    Deadline, LayerName, Priority, RejectKind, Rejected, instant_after,
    stripe::{CachePadded, stripe_count, thread_stripe},
};
use tokio::time::Instant;

use crate::{
    algorithm::{LimitAlgorithm, Sample},
    counter::Counter,
    metrics,
    queue::{Discipline, SlotState, WaitQueue},
};

/// How many samples a core buffers before it waits for the algorithm.
const SAMPLE_BATCH: usize = 32;

/// How long a core that met the algorithm taken goes on batching.
const STICKY: Duration = Duration::from_millis(10);

/// The samples a second the algorithm is fed at most (give or take a
/// factor of two) once requests complete faster than that: above it, one
/// request in `sample_every` is measured.
const SAMPLES_PER_SECOND: u128 = 10_000;

/// How often the sampling is reconsidered, from the samples fed.
const SAMPLING_PERIOD: u64 = 100_000_000;

/// Samples one core buffered while another held the algorithm.
#[derive(Debug)]
struct SampleStripe {
    /// Requests that took a permit on this stripe (for sampling; a plain
    /// load and store, not an atomic add: a lost tick only shifts which
    /// request is measured).
    ticks: AtomicU32,
    /// How many are buffered (read without the lock).
    pending: AtomicUsize,
    /// Until when (nanoseconds since the limiter was built) it batches.
    batching_until: AtomicU64,
    buffer: Mutex<Vec<Sample>>,
}

impl Default for SampleStripe {
    fn default() -> Self {
        SampleStripe {
            ticks: AtomicU32::new(0),
            pending: AtomicUsize::new(0),
            batching_until: AtomicU64::new(0),
            buffer: Mutex::new(Vec::with_capacity(SAMPLE_BATCH)),
        }
    }
}

/// The adaptive algorithm, and what the sampling counts of the samples
/// fed to it (see `Shared::account`): all behind one lock.
#[derive(Debug)]
struct Feeder {
    algorithm: Box<dyn LimitAlgorithm>,
    /// Samples fed since `since` (nanoseconds since the limiter's epoch).
    fed: u64,
    since: Option<u64>,
}

/// Locks `mutex` if it is free now (a poisoned lock is as good: the
/// algorithm's state is plain data).
fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// The outcome of an admission that could not take the fast path.
#[derive(Debug)]
pub(crate) enum Admit {
    Now,
    Queued { slot: usize, until: Instant, kind: RejectKind },
    Reject(RejectKind),
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) queued: AtomicU64,
    pub(crate) rejected_overloaded: AtomicU64,
    pub(crate) rejected_queue_timeout: AtomicU64,
    pub(crate) rejected_deadline: AtomicU64,
    pub(crate) evicted: AtomicU64,
    /// Callers that gave up while queued (their future was dropped).
    pub(crate) abandoned: AtomicU64,
    pub(crate) queue_wait_nanos: AtomicU64,
    pub(crate) queue_wait_max_nanos: AtomicU64,
    pub(crate) dequeued: AtomicU64,
    /// Recent queue waits, smoothed (1/8 per dequeue): the `retry_after` of
    /// the limiter's own rejections.
    pub(crate) queue_wait_recent_nanos: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) counter: Counter,
    pub(crate) limit: AtomicUsize,
    /// Adaptive limits: one request in this many is measured (a power of
    /// two; see `account`). Read on every request, written at most every
    /// `SAMPLING_PERIOD`.
    pub(crate) sample_every: AtomicU32,
    /// The sparsest sampling allowed.
    max_sample_every: u32,
    /// Percent of the limit each priority may use, indexed by `Priority::index`.
    shares: [u8; 4],
    pub(crate) max_queue: usize,
    pub(crate) max_wait: Duration,
    queue: Mutex<WaitQueue>,
    /// CoDel says the queue stands: the limit is the bottleneck even for a
    /// request that finds a permit free (the queue was just cut short).
    /// Mirrors the queue's state after each slow-path visit.
    pub(crate) standing: AtomicBool,
    /// On cache lines of its own: every core locks it, and the fields
    /// around it are read on every request.
    algorithm: Option<CachePadded<Mutex<Feeder>>>,
    /// Per stripe, samples buffered while another core held the algorithm
    /// (adaptive limits only; see `record`).
    samples: Box<[CachePadded<SampleStripe>]>,
    /// When the limiter was built (the stripes' clock).
    epoch: Instant,
    /// Some stripe may hold buffered samples.
    buffered: AtomicBool,
    pub(crate) cancel_is_drop: bool,
    pub(crate) name: LayerName,
    pub(crate) stats: Stats,
    pub(crate) metrics: metrics::Metrics,
}

pub(crate) struct Config {
    pub(crate) limit: usize,
    pub(crate) shares: [u8; 4],
    pub(crate) max_queue: usize,
    pub(crate) max_wait: Duration,
    pub(crate) discipline: Discipline,
    pub(crate) algorithm: Option<Box<dyn LimitAlgorithm>>,
    pub(crate) cancel_is_drop: bool,
    pub(crate) max_sample_every: u32,
    pub(crate) name: LayerName,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        Shared {
            counter: Counter::new(config.limit, stripe_count()),
            limit: AtomicUsize::new(config.limit),
            sample_every: AtomicU32::new(1),
            max_sample_every: config.max_sample_every,
            shares: config.shares,
            max_queue: config.max_queue,
            max_wait: config.max_wait,
            queue: Mutex::new(WaitQueue::new(config.discipline, config.max_queue, Instant::now())),
            standing: AtomicBool::new(false),
            samples: if config.algorithm.is_some() {
                (0..stripe_count()).map(|_| CachePadded(SampleStripe::default())).collect()
            } else {
                Box::default()
            },
            algorithm: config.algorithm.map(|algorithm| {
                CachePadded(Mutex::new(Feeder { algorithm, fed: 0, since: None }))
            }),
            epoch: Instant::now(),
            buffered: AtomicBool::new(false),
            cancel_is_drop: config.cancel_is_drop,
            name: config.name,
            stats: Stats::default(),
            metrics: metrics::Metrics::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WaitQueue> {
        // A panic while holding the lock leaves the queue consistent (every
        // mutation is completed before anything that can panic), so poisoning
        // is not a reason to stop serving.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many permits `priority` may hold at most under the current limit.
    #[inline]
    fn threshold(&self, priority: Priority) -> usize {
        self.threshold_at(self.limit.load(Relaxed), priority)
    }

    /// [`threshold`](Self::threshold) under a limit already read.
    #[inline]
    fn threshold_at(&self, limit: usize, priority: Priority) -> usize {
        let share = usize::from(self.shares[priority.index()]);
        // The whole limit (every priority, by default): no arithmetic. The
        // rounded division below was half of the fast path's own time.
        if share >= 100 {
            return limit.max(1);
        }
        (limit * share).div_ceil(100).max(1).min(limit.max(1))
    }

    /// The fast path: a free permit and nobody queued ahead. A request that
    /// may use the whole limit may take it from its core's reserve (see
    /// `counter`).
    #[inline]
    pub(crate) fn try_fast(&self, priority: Priority) -> bool {
        let limit = self.limit.load(Relaxed);
        let threshold = self.threshold_at(limit, priority);
        let stripe = thread_stripe(self.counter.stripes());
        match self.counter.try_acquire_unqueued(threshold, stripe, threshold >= limit) {
            Some(false) => {
                self.admitted();
                true
            }
            Some(true) => {
                // Permits went back while requests wait: serve them.
                let mut q = self.lock();
                self.dispatch(&mut q, Instant::now());
                self.admitted();
                true
            }
            None => false,
        }
    }

    /// Counts a request that got a permit (for metrics).
    #[inline]
    fn admitted(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.count();
    }

    /// Nanoseconds from the limiter's epoch to `at` (0 before it).
    #[inline]
    pub(crate) fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `nanos` after the limiter's epoch.
    pub(crate) fn at_epoch(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    #[inline]
    pub(crate) fn is_adaptive(&self) -> bool {
        self.algorithm.is_some()
    }

    /// Whether the request taking a permit now is to be measured (adaptive
    /// limits only): every one while `sample_every` is 1, else one in
    /// `sample_every` per core.
    #[inline]
    pub(crate) fn should_sample(&self) -> bool {
        let every = self.sample_every.load(Relaxed);
        if every <= 1 {
            return true;
        }
        let stripe = &self.samples[thread_stripe(self.samples.len())];
        let tick = stripe.ticks.load(Relaxed);
        stripe.ticks.store(tick.wrapping_add(1), Relaxed);
        tick & (every - 1) == 0
    }

    /// `n` samples were just fed to `feeder` (its lock held): every
    /// `SAMPLING_PERIOD`, the completion rate they stand for sets the
    /// sampling so that about `SAMPLES_PER_SECOND` are fed. Under paused or
    /// slow time a period is measured in samples' timestamps, so a burst at
    /// one instant never changes the sampling.
    ///
    /// Measuring each request costs two clock reads and this lock; at a few
    /// hundred thousand completions a second (a fast, in-memory backend)
    /// that was two thirds of the limiter's cost per request and the lock
    /// every core fought over, while a window needs hundreds of samples,
    /// not tens of thousands. One in `k`, counted per core and decided
    /// before the request runs, picks requests whatever their outcome, so
    /// drop rates, RTTs and in-flight counts are estimated without bias.
    /// When the rate falls, the next measured request (within `k` requests
    /// per core) finds the period long past and sets the sampling back.
    fn account(&self, feeder: &mut Feeder, at: u64, n: u64) {
        let since = match feeder.since {
            Some(since) if since <= at => since,
            _ => {
                feeder.since = Some(at);
                feeder.fed = n;
                return;
            }
        };
        feeder.fed += n;
        let (fed, elapsed) = (feeder.fed, at - since);
        if elapsed < SAMPLING_PERIOD {
            return;
        }
        let every = u128::from(self.sample_every.load(Relaxed));
        let per_second = u128::from(fed) * every * 1_000_000_000 / u128::from(elapsed);
        let want = u32::try_from(per_second / SAMPLES_PER_SECOND).unwrap_or(u32::MAX);
        let next = match want {
            0 | 1 => 1,
            w => (1 << (31 - w.leading_zeros())).min(self.max_sample_every),
        };
        if u128::from(next) != every {
            tracing::debug!(layer = %self.name, every = next, "adaptive limit: measuring one request in `every`");
            self.sample_every.store(next, Relaxed);
        }
        feeder.since = Some(at);
        feeder.fed = 0;
    }

    pub(crate) fn rejected(&self, kind: RejectKind) -> Rejected {
        let counter = match kind {
            RejectKind::QueueTimeout => &self.stats.rejected_queue_timeout,
            RejectKind::DeadlineExceeded => &self.stats.rejected_deadline,
            _ => &self.stats.rejected_overloaded,
        };
        counter.fetch_add(1, Relaxed);
        tracing::trace!(layer = %self.name, reason = kind.as_str(), "request rejected");
        let rejected = Rejected::new(kind).with_layer(self.name.clone());
        match kind {
            // The client's own deadline passed: the same request will not
            // fare better later.
            RejectKind::DeadlineExceeded => rejected,
            _ => rejected.with_retry_after(self.retry_hint()),
        }
    }

    /// When a turned-away request may try again: how long requests have
    /// recently waited in the queue for a permit (a full queue drains in
    /// about that), measured; `max_wait` until anything was measured; 1 s
    /// with no queue at all. HTTP rounds it up to whole seconds.
    pub(crate) fn retry_hint(&self) -> Duration {
        match self.stats.queue_wait_recent_nanos.load(Relaxed) {
            0 if self.max_wait.is_zero() => Duration::from_secs(1),
            0 => self.max_wait.min(Duration::from_secs(60)),
            nanos => Duration::from_nanos(nanos),
        }
    }

    /// Admission when the fast path failed: queue, or reject.
    pub(crate) fn acquire_slow(&self, priority: Priority, deadline: Option<Deadline>) -> Admit {
        let mut q = self.lock();
        // Permits reserved by cores are free for this request too.
        self.counter.reclaim();
        if q.len() == 0 && self.counter.try_acquire(self.threshold(priority)) {
            self.admitted();
            return Admit::Now;
        }
        if self.max_queue == 0 {
            return Admit::Reject(RejectKind::Overloaded);
        }
        let now = Instant::now();
        let remaining = deadline.map(|d| d.remaining_at(now));
        if remaining == Some(Duration::ZERO) {
            return Admit::Reject(RejectKind::DeadlineExceeded);
        }
        self.cut_stale(&mut q, now);
        if q.len() >= self.max_queue {
            match q.evict_below(priority, now) {
                Some(waker) => {
                    self.counter.remove_waiter();
                    self.stats.evicted.fetch_add(1, Relaxed);
                    if let Some(w) = waker {
                        w.wake();
                    }
                }
                None => return Admit::Reject(RejectKind::Overloaded),
            }
        }
        let budget = q.wait_budget(now, self.max_wait, priority);
        let (until, kind) = match remaining {
            Some(r) if r <= budget => (instant_after(now, r), RejectKind::DeadlineExceeded),
            _ => (instant_after(now, budget), RejectKind::QueueTimeout),
        };
        let slot = q.push(priority, now);
        self.counter.add_waiter();
        self.stats.queued.fetch_add(1, Relaxed);
        // A permit may have been freed between the fast path and the
        // registration above: the releaser saw no waiter, so serve it now.
        self.dispatch(&mut q, now);
        if q.state(slot) == SlotState::Granted {
            q.release_slot(slot, now);
            self.record_wait(Duration::ZERO);
            return Admit::Now;
        }
        Admit::Queued { slot, until, kind }
    }

    /// Hands free permits to waiters, highest priority first. Caller holds
    /// the lock.
    fn dispatch(&self, q: &mut WaitQueue, now: Instant) {
        self.cut_stale(q, now);
        self.mirror_standing(q);
        while let Some(priority) = q.next_priority() {
            // Thresholds grow with priority: if the best waiter cannot have a
            // permit, nobody behind it can.
            if !self.counter.try_grant(self.threshold(priority)) {
                break;
            }
            let Some(waker) = q.grant_next(now) else {
                // Unreachable (a priority was found), but never leak the
                // permit or the waiter count.
                self.counter.release_to_word();
                self.counter.add_waiter();
                break;
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    fn mirror_standing(&self, q: &WaitQueue) {
        let standing = q.standing();
        if self.standing.load(Relaxed) != standing {
            self.standing.store(standing, Relaxed);
        }
    }

    /// Rejects the waiters CoDel says have waited too long in a standing
    /// queue. Caller holds the lock.
    fn cut_stale(&self, q: &mut WaitQueue, now: Instant) {
        while let Some(waker) = q.cut_stale(now) {
            self.counter.remove_waiter();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// Returns a permit, handing it to a waiter if there is one.
    #[inline]
    pub(crate) fn release(&self) {
        if self.counter.release(thread_stripe(self.counter.stripes())) {
            let mut q = self.lock();
            self.dispatch(&mut q, Instant::now());
        }
    }

    fn record_wait(&self, wait: Duration) {
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.stats.dequeued.fetch_add(1, Relaxed);
        self.admitted();
        self.stats.queue_wait_nanos.fetch_add(nanos, Relaxed);
        self.stats.queue_wait_max_nanos.fetch_max(nanos, Relaxed);
        // A racy read-modify-write is fine for a hint: a lost update only
        // delays the average by one sample.
        let recent = self.stats.queue_wait_recent_nanos.load(Relaxed);
        let next = if recent == 0 {
            nanos.max(1)
        } else {
            (recent - recent / 8).saturating_add(nanos / 8).max(1)
        };
        self.stats.queue_wait_recent_nanos.store(next, Relaxed);
        self.metrics.queue_wait(wait);
    }

    /// Polls a queued request: `Ok` once it holds a permit.
    pub(crate) fn poll_waiter(
        &self,
        slot: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), RejectKind>> {
        let mut q = self.lock();
        match q.state(slot) {
            SlotState::Waiting => {
                q.set_waker(slot, cx.waker());
                Poll::Pending
            }
            SlotState::Granted => {
                let now = Instant::now();
                if let Some(at) = q.enqueued_at(slot) {
                    self.record_wait(now.saturating_duration_since(at));
                }
                q.release_slot(slot, now);
                Poll::Ready(Ok(()))
            }
            SlotState::Rejected(kind) => {
                q.release_slot(slot, Instant::now());
                Poll::Ready(Err(kind))
            }
            SlotState::Free => Poll::Ready(Err(RejectKind::Overloaded)),
        }
    }

    /// A queued request's time is up: leave the queue, unless a permit
    /// arrived in the meantime.
    pub(crate) fn expire_waiter(&self, slot: usize, kind: RejectKind) -> Result<(), RejectKind> {
        let mut q = self.lock();
        let now = Instant::now();
        let enqueued = q.enqueued_at(slot);
        match q.expire_slot(slot, now) {
            SlotState::Waiting => {
                self.counter.remove_waiter();
                Err(kind)
            }
            SlotState::Granted => {
                if let Some(at) = enqueued {
                    self.record_wait(now.saturating_duration_since(at));
                }
                Ok(())
            }
            SlotState::Rejected(kind) => Err(kind),
            SlotState::Free => Err(RejectKind::Overloaded),
        }
    }

    /// A queued request's future was dropped: free its slot, and its permit
    /// if one had been handed to it.
    pub(crate) fn cancel_waiter(&self, slot: usize) {
        let mut q = self.lock();
        let now = Instant::now();
        match q.release_slot(slot, now) {
            SlotState::Waiting => {
                self.counter.remove_waiter();
                self.stats.abandoned.fetch_add(1, Relaxed);
            }
            SlotState::Granted => {
                self.counter.release_to_word();
                self.dispatch(&mut q, now);
            }
            SlotState::Rejected(_) | SlotState::Free => {}
        }
    }

    /// Feeds a completed request to the adaptive algorithm.
    ///
    /// The algorithm sits behind one lock. Taken for every sample, that lock
    /// was the cache line every core fought over (2 threads: 152 -> 512 ns
    /// per request per thread). So a core that finds it taken does not wait:
    /// it buffers the sample in its own stripe and goes on, and keeps
    /// buffering until `STICKY` has passed without it meeting the lock
    /// taken again; once its buffer holds `SAMPLE_BATCH`, it feeds them all
    /// under one lock. A core feeding samples one by one also feeds what
    /// other cores left buffered, so at most `SAMPLE_BATCH - 1` samples per
    /// core wait, and no longer than the next request after `STICKY` of
    /// quiet. A thread alone always finds the lock free: its samples are fed
    /// one by one, as before, in order.
    pub(crate) fn record(&self, now: Instant, sample: Sample) {
        let Some(algorithm) = &self.algorithm else { return };
        let stripe = &self.samples[thread_stripe(self.samples.len())];
        let at = self.since_epoch(now);
        let sticky = u64::try_from(STICKY.as_nanos()).unwrap_or(u64::MAX);
        if stripe.batching_until.load(Relaxed) <= at {
            if let Some(mut feeder) = try_lock(algorithm) {
                let drained = self.drain_buffered(&mut *feeder.algorithm, now);
                let new = feeder.algorithm.update(now, sample);
                self.account(&mut feeder, at, drained + 1);
                drop(feeder);
                self.publish(now, new);
                return;
            }
            stripe.batching_until.store(at.saturating_add(sticky), Relaxed);
        }
        let mut batch = [None; SAMPLE_BATCH];
        {
            let mut buffer = stripe.buffer.lock().unwrap_or_else(PoisonError::into_inner);
            buffer.push(sample);
            if buffer.len() < SAMPLE_BATCH {
                stripe.pending.store(buffer.len(), Relaxed);
                drop(buffer);
                // After the push: a drainer that cleared the flag before
                // reading this stripe either saw the sample or is seen here.
                if !self.buffered.load(SeqCst) {
                    self.buffered.store(true, SeqCst);
                }
                return;
            }
            for (slot, sample) in batch.iter_mut().zip(buffer.drain(..)) {
                *slot = Some(sample);
            }
            stripe.pending.store(0, Relaxed);
        }
        let mut feeder = try_lock(algorithm).unwrap_or_else(|| {
            stripe.batching_until.store(at.saturating_add(sticky), Relaxed);
            algorithm.lock().unwrap_or_else(PoisonError::into_inner)
        });
        let mut new = self.limit.load(Relaxed);
        let mut fed = 0;
        for sample in batch.into_iter().flatten() {
            new = feeder.algorithm.update(now, sample);
            fed += 1;
        }
        self.account(&mut feeder, at, fed);
        // Other cores' buffers are theirs to feed while they batch (taking
        // them would pull their lines here); a core back to one by one
        // feeds what is left.
        drop(feeder);
        self.publish(now, new);
    }

    /// Feeds what other cores buffered (caller holds the algorithm);
    /// returns how many samples that was.
    fn drain_buffered(&self, algorithm: &mut dyn LimitAlgorithm, now: Instant) -> u64 {
        // One load when nothing is buffered (a thread alone), not one per
        // stripe: cleared before the stripes are read, so a sample buffered
        // after a stripe was read sets it again (see `record`).
        if !self.buffered.load(SeqCst) || !self.buffered.swap(false, SeqCst) {
            return 0;
        }
        let mut fed = 0;
        for stripe in self.samples.iter() {
            if stripe.pending.load(Relaxed) == 0 {
                continue;
            }
            let mut buffer = stripe.buffer.lock().unwrap_or_else(PoisonError::into_inner);
            for sample in buffer.drain(..) {
                algorithm.update(now, sample);
                fed += 1;
            }
            stripe.pending.store(0, Relaxed);
        }
        fed
    }

    /// Publishes the limit the algorithm returned.
    fn publish(&self, now: Instant, new: usize) {
        // Most samples leave the limit as it was: read before writing, so
        // that the line every admission reads is not written for nothing.
        if self.limit.load(Relaxed) == new {
            return;
        }
        let old = self.limit.swap(new, Relaxed);
        if new != old {
            self.counter.set_limit(old, new);
            tracing::debug!(layer = %self.name, from = old, to = new, "concurrency limit changed");
            if new > old && self.counter.has_waiters() {
                let mut q = self.lock();
                self.dispatch(&mut q, now);
            }
        }
    }

    pub(crate) fn is_probing(&self) -> bool {
        self.algorithm.as_ref().is_some_and(|a| {
            a.lock().unwrap_or_else(PoisonError::into_inner).algorithm.is_probing()
        })
    }

    pub(crate) fn queue_len(&self) -> usize {
        self.counter.waiters()
    }

    pub(crate) fn slots_live(&self) -> usize {
        self.lock().slots_live()
    }
}

/// What was counted since the last publication is published as the
/// limiter goes.
#[cfg(feature = "metrics")]
impl Drop for Shared {
    fn drop(&mut self) {
        backpressure_core::metrics::Publish::publish(self);
    }
}
