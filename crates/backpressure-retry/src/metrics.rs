//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on. Only retries and denials are recorded (the rare path);
//! attempts are in [`RetryHandle::snapshot`](crate::RetryHandle::snapshot).
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_retry_retries_total` | counter | `name` |
//! | `backpressure_retry_denied_total` | counter | `name`, `reason` (`budget`) |

use backpressure_core::LayerName;

#[cfg(feature = "metrics")]
pub(crate) fn retried(name: &LayerName) {
    metrics::counter!("backpressure_retry_retries_total", "name" => name.to_string()).increment(1);
}

#[cfg(feature = "metrics")]
pub(crate) fn denied(name: &LayerName, reason: &'static str) {
    metrics::counter!("backpressure_retry_denied_total", "name" => name.to_string(), "reason" => reason)
        .increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn retried(_name: &LayerName) {}

#[cfg(not(feature = "metrics"))]
pub(crate) fn denied(_name: &LayerName, _reason: &'static str) {}
