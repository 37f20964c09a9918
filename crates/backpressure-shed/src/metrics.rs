//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on. Only shedding records; the admit path touches no metric.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_shed_total` | counter | `name`, `priority` |

use backpressure_core::{LayerName, Priority};

#[cfg(feature = "metrics")]
pub(crate) fn shed(name: &LayerName, priority: Priority) {
    metrics::counter!("backpressure_shed_total", "name" => name.to_string(), "priority" => priority.as_str())
        .increment(1);
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn shed(_name: &LayerName, _priority: Priority) {}
