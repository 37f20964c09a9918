//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on. Only shedding records; the admit path touches no metric.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_shed_total` | counter | `name`, `priority` |
//!
//! Each priority's handle is resolved at its first shed request and kept
//! (no label string and key built per shed request); install the recorder
//! before the first request.

use backpressure_core::{LayerName, Priority};

/// The shed counters, one per priority, resolved at first use.
#[derive(Default)]
pub(crate) struct Shed {
    #[cfg(feature = "metrics")]
    counters: [std::sync::OnceLock<metrics::Counter>; 4],
}

impl std::fmt::Debug for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shed").finish_non_exhaustive()
    }
}

impl Shed {
    #[cfg(feature = "metrics")]
    pub(crate) fn record(&self, name: &LayerName, priority: Priority) {
        self.counters[priority.index()]
            .get_or_init(|| {
                metrics::counter!("backpressure_shed_total", "name" => name.to_string(), "priority" => priority.as_str())
            })
            .increment(1);
    }

    #[cfg(not(feature = "metrics"))]
    pub(crate) fn record(&self, _name: &LayerName, _priority: Priority) {}
}
