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
//! (`backpressure_core::metrics`): a request touches no recorder. The queue
//! wait histogram is recorded per dequeued request (a request that queued
//! has taken a lock already), through a handle resolved at its first
//! sample.
//!
//! `requests_total` counts requests once decided: admitted, rejected, or
//! given up by their caller while queued (in neither of the other two). It
//! is their sum, so a request counts once, with one atomic add on its own
//! core on the admit path.

use std::time::Duration;

use backpressure_core::LayerName;

/// The limiter's metrics state.
#[derive(Default)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    pub(crate) admitted: backpressure_core::metrics::Counts<1>,
    #[cfg(feature = "metrics")]
    published: [backpressure_core::metrics::Published; 5],
    #[cfg(feature = "metrics")]
    queue_wait: std::sync::OnceLock<metrics::Histogram>,
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
        metrics::gauge!("backpressure_concurrency_limit", "name" => name)
            .set(self.limit.load(Relaxed) as f64);
    }
}

#[cfg(feature = "metrics")]
impl Metrics {
    /// Counts an admitted request.
    #[inline]
    pub(crate) fn count(&self) {
        self.admitted.add(0);
    }

    pub(crate) fn queue_wait(&self, name: &LayerName, wait: Duration) {
        self.queue_wait
            .get_or_init(|| {
                metrics::histogram!("backpressure_concurrency_queue_wait_seconds", "name" => name.to_string())
            })
            .record(wait.as_secs_f64());
    }
}

#[cfg(not(feature = "metrics"))]
impl Metrics {
    pub(crate) fn queue_wait(&self, _name: &LayerName, _wait: Duration) {}
}
