//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on. Only rejections record; the admit path touches no metric.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_rate_limited_total` | counter | `name` |
//!
//! The handle is resolved at the first rejection and kept (no label string
//! and key built per rejection); install the recorder before the first
//! request.

use backpressure_core::LayerName;

/// The rejection counter, resolved at first use.
#[derive(Default)]
pub(crate) struct Rejected {
    #[cfg(feature = "metrics")]
    counter: std::sync::OnceLock<metrics::Counter>,
}

impl std::fmt::Debug for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejected").finish_non_exhaustive()
    }
}

impl Rejected {
    #[cfg(feature = "metrics")]
    pub(crate) fn record(&self, name: &LayerName) {
        self.counter
            .get_or_init(
                || metrics::counter!("backpressure_rate_limited_total", "name" => name.to_string()),
            )
            .increment(1);
    }

    #[cfg(not(feature = "metrics"))]
    pub(crate) fn record(&self, _name: &LayerName) {}
}
