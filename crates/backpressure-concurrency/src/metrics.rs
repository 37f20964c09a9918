//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on, and compiled out otherwise.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_concurrency_requests_total` | counter | `name` |
//! | `backpressure_concurrency_admitted_total` | counter | `name` |
//! | `backpressure_concurrency_rejected_total` | counter | `name`, `reason` (`overloaded`, `queue_timeout`, `deadline_exceeded`) |
//! | `backpressure_concurrency_in_flight` | gauge | `name` |
//! | `backpressure_concurrency_queued` | gauge | `name` |
//! | `backpressure_concurrency_limit` | gauge | `name` |
//! | `backpressure_concurrency_queue_wait_seconds` | histogram | `name` |
//!
//! Counters and gauges are counted in the limiter (admissions per core, the
//! rest on slow paths) and published by the library once a second
//! (`backpressure_core::metrics`): a request touches no recorder. Queue
//! waits are counted in [`WAIT_BUCKETS`] buckets, half an octave wide from
//! 25 µs, and published as histogram samples at each bucket's geometric
//! middle (within ±19 % of the true wait): the histogram's handle is
//! resolved when publishing too, so a recorder installed after the first
//! queued request sees the waits from its installation on. (The first
//! version resolved it at the first sample: a later recorder never saw a
//! queue wait.)
//!
//! `requests_total` counts requests once decided: admitted, rejected, or
//! given up by their caller while queued (in neither of the other two). It
//! is their sum, so a request counts once, with one atomic add on its own
//! core on the admit path.

use std::time::Duration;

/// The limiter's metrics state.
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    pub(crate) admitted: backpressure_core::metrics::Counts<1>,
    #[cfg(feature = "metrics")]
    published: [backpressure_core::metrics::Published; 5],
    #[cfg(feature = "metrics")]
    waits: [std::sync::atomic::AtomicU64; WAIT_BUCKETS],
    #[cfg(feature = "metrics")]
    waits_published: [backpressure_core::metrics::Published; WAIT_BUCKETS],
}

/// How many buckets queue waits are counted in: up to 25 µs × 2^23, about
/// 3.5 minutes (longer waits land in the last).
#[cfg(any(feature = "metrics", test))]
pub(crate) const WAIT_BUCKETS: usize = 48;

// Derivable only without the feature (arrays past 32 have no `Default`).
#[allow(clippy::derivable_impls)]
impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            #[cfg(feature = "metrics")]
            admitted: Default::default(),
            #[cfg(feature = "metrics")]
            published: Default::default(),
            #[cfg(feature = "metrics")]
            waits: std::array::from_fn(|_| Default::default()),
            #[cfg(feature = "metrics")]
            waits_published: std::array::from_fn(|_| Default::default()),
        }
    }
}

/// The bucket of `wait`: 0 below 25 µs, then half an octave each.
#[cfg(any(feature = "metrics", test))]
fn wait_bucket(wait: Duration) -> usize {
    let ratio = wait.as_secs_f64() / 25e-6;
    if ratio < 1.0 {
        return 0;
    }
    ((ratio.log2() * 2.0) as usize + 1).min(WAIT_BUCKETS - 1)
}

/// The value a bucket's waits are published as, in seconds: the geometric
/// middle of its bounds.
#[cfg(any(feature = "metrics", test))]
fn wait_bucket_value(bucket: usize) -> f64 {
    match bucket {
        0 => 12.5e-6,
        b => 25e-6 * 2f64.powf((b as f64 - 1.0) / 2.0 + 0.25),
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Describes the series (name, unit, help), for the recorder's output.
#[cfg(feature = "metrics")]
pub(crate) fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "backpressure_concurrency_requests_total",
        Unit::Count,
        "Requests that reached the concurrency limit."
    );
    describe_counter!(
        "backpressure_concurrency_admitted_total",
        Unit::Count,
        "Requests that got a permit, at once or after queuing."
    );
    describe_counter!(
        "backpressure_concurrency_rejected_total",
        Unit::Count,
        "Requests the concurrency limit turned away, by reason."
    );
    describe_gauge!(
        "backpressure_concurrency_in_flight",
        Unit::Count,
        "Requests holding a permit."
    );
    describe_gauge!(
        "backpressure_concurrency_queued",
        Unit::Count,
        "Requests waiting for a permit."
    );
    describe_gauge!(
        "backpressure_concurrency_limit",
        Unit::Count,
        "The concurrency limit (adaptive limits move)."
    );
    describe_histogram!(
        "backpressure_concurrency_queue_wait_seconds",
        Unit::Seconds,
        "How long admitted requests waited in the queue."
    );
}

#[cfg(feature = "metrics")]
impl backpressure_core::metrics::Publish for crate::shared::Shared {
    fn publish(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        describe();
        let name = self.name.to_string();
        let (m, s) = (&self.metrics, &self.stats);
        let admitted = m.admitted.get(0);
        let rejected = [
            ("overloaded", s.rejected_overloaded.load(Relaxed)),
            ("queue_timeout", s.rejected_queue_timeout.load(Relaxed)),
            ("deadline_exceeded", s.rejected_deadline.load(Relaxed)),
        ];
        let requests = rejected
            .iter()
            .fold(admitted.wrapping_add(s.abandoned.load(Relaxed)), |n, (_, r)| n.wrapping_add(*r));
        metrics::counter!("backpressure_concurrency_requests_total", "name" => name.clone())
            .increment(m.published[0].since(requests));
        metrics::counter!("backpressure_concurrency_admitted_total", "name" => name.clone())
            .increment(m.published[1].since(admitted));
        for ((reason, total), published) in rejected.into_iter().zip(&m.published[2..]) {
            metrics::counter!("backpressure_concurrency_rejected_total", "name" => name.clone(), "reason" => reason)
                .increment(published.since(total));
        }
        metrics::gauge!("backpressure_concurrency_in_flight", "name" => name.clone())
            .set(self.counter.in_flight() as f64);
        metrics::gauge!("backpressure_concurrency_queued", "name" => name.clone())
            .set(self.queue_len() as f64);
        metrics::gauge!("backpressure_concurrency_limit", "name" => name.clone())
            .set(self.limit.load(Relaxed) as f64);
        let histogram =
            metrics::histogram!("backpressure_concurrency_queue_wait_seconds", "name" => name);
        for (bucket, (count, published)) in m.waits.iter().zip(&m.waits_published).enumerate() {
            let new = published.since(count.load(Relaxed));
            if new > 0 {
                histogram.record_many(wait_bucket_value(bucket), new as usize);
            }
        }
    }
}

#[cfg(feature = "metrics")]
impl Metrics {
    /// Counts an admitted request.
    #[inline]
    pub(crate) fn count(&self) {
        self.admitted.add(0);
    }

    /// Counts a dequeued request's wait (the queue's slow path).
    pub(crate) fn queue_wait(&self, wait: Duration) {
        self.waits[wait_bucket(wait)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(not(feature = "metrics"))]
impl Metrics {
    pub(crate) fn queue_wait(&self, _wait: Duration) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_published_within_a_fifth_of_itself() {
        for micros in [30, 99, 1_000, 4_999, 10_000, 123_456, 1_000_000, 60_000_000] {
            let wait = Duration::from_micros(micros);
            let value = wait_bucket_value(wait_bucket(wait));
            let error = (value - wait.as_secs_f64()).abs() / wait.as_secs_f64();
            assert!(error < 0.2, "{wait:?} published as {value} s");
        }
        assert_eq!(wait_bucket(Duration::ZERO), 0);
        assert_eq!(wait_bucket(Duration::MAX), WAIT_BUCKETS - 1);
    }
}
