//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on, and compiled out otherwise. Only slow paths record: the
//! admit fast path touches no metric.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_concurrency_rejected_total` | counter | `name`, `reason` |
//! | `backpressure_concurrency_limit` | gauge | `name` |
//! | `backpressure_concurrency_queue_wait_seconds` | histogram | `name` |

use std::time::Duration;

use backpressure_core::{LayerName, RejectKind};

#[cfg(feature = "metrics")]
pub(crate) fn rejected(name: &LayerName, kind: RejectKind) {
    metrics::counter!("backpressure_concurrency_rejected_total", "name" => name.to_string(), "reason" => kind.as_str())
        .increment(1);
}

#[cfg(feature = "metrics")]
pub(crate) fn limit(name: &LayerName, limit: usize) {
    metrics::gauge!("backpressure_concurrency_limit", "name" => name.to_string()).set(limit as f64);
}

#[cfg(feature = "metrics")]
pub(crate) fn queue_wait(name: &LayerName, wait: Duration) {
    metrics::histogram!("backpressure_concurrency_queue_wait_seconds", "name" => name.to_string())
        .record(wait.as_secs_f64());
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn rejected(_name: &LayerName, _kind: RejectKind) {}

#[cfg(not(feature = "metrics"))]
pub(crate) fn limit(_name: &LayerName, _limit: usize) {}

#[cfg(not(feature = "metrics"))]
pub(crate) fn queue_wait(_name: &LayerName, _wait: Duration) {}
