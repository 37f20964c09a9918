//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on. Only rejections record; the admit path touches no metric.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_rate_limited_total` | counter | `name` |

use backpressure_core::LayerName;

#[cfg(feature = "metrics")]
pub(crate) fn rejected(name: &LayerName) {
    metrics::counter!("backpressure_rate_limited_total", "name" => name.to_string()).increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn rejected(_name: &LayerName) {}
