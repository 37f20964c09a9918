//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on, and compiled out otherwise. Only slow paths record: the
//! admit fast path touches no metric.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_concurrency_rejected_total` | counter | `name`, `reason` |
//! | `backpressure_concurrency_limit` | gauge | `name` |
//! | `backpressure_concurrency_queue_wait_seconds` | histogram | `name` |
//!
//! Each series' handle is resolved once, at its first event, and kept: a
//! rejection then costs an atomic add, not a label string and a key built
//! per event (the first version allocated exactly when the system was
//! overloaded). Install the recorder before the first request: a handle
//! resolved earlier keeps the recorder it found.

use std::time::Duration;

use backpressure_core::{LayerName, RejectKind};

/// The limiter's metric handles, resolved at first use.
#[derive(Default)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    rejected: [std::sync::OnceLock<metrics::Counter>; 5],
    #[cfg(feature = "metrics")]
    limit: std::sync::OnceLock<metrics::Gauge>,
    #[cfg(feature = "metrics")]
    queue_wait: std::sync::OnceLock<metrics::Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(feature = "metrics")]
impl Metrics {
    pub(crate) fn rejected(&self, name: &LayerName, kind: RejectKind) {
        let index = match kind {
            RejectKind::RateLimited => 0,
            RejectKind::Overloaded => 1,
            RejectKind::QueueTimeout => 2,
            RejectKind::CircuitOpen => 3,
            RejectKind::DeadlineExceeded => 4,
            // A kind added later: correct, if not cached.
            _ => {
                metrics::counter!("backpressure_concurrency_rejected_total", "name" => name.to_string(), "reason" => kind.as_str())
                    .increment(1);
                return;
            }
        };
        self.rejected[index]
            .get_or_init(|| {
                metrics::counter!("backpressure_concurrency_rejected_total", "name" => name.to_string(), "reason" => kind.as_str())
            })
            .increment(1);
    }

    pub(crate) fn limit(&self, name: &LayerName, limit: usize) {
        self.limit
            .get_or_init(
                || metrics::gauge!("backpressure_concurrency_limit", "name" => name.to_string()),
            )
            .set(limit as f64);
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
    pub(crate) fn rejected(&self, _name: &LayerName, _kind: RejectKind) {}

    pub(crate) fn limit(&self, _name: &LayerName, _limit: usize) {}

    pub(crate) fn queue_wait(&self, _name: &LayerName, _wait: Duration) {}
}
