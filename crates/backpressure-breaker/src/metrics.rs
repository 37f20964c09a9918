//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_breaker_state` | gauge, 1 for the current state and 0 for every other | `name`, `state` |
//! | `backpressure_breaker_rejected_total` | counter | `name` |
//!
//! The state gauge writes every state's series on each transition, so the
//! old state's series drops to 0 instead of staying at 1.

use backpressure_core::LayerName;

use crate::State;

#[cfg(feature = "metrics")]
pub(crate) fn state(name: &LayerName, current: State) {
    for s in State::ALL {
        metrics::gauge!("backpressure_breaker_state", "name" => name.to_string(), "state" => s.as_str())
            .set(if s == current { 1.0 } else { 0.0 });
    }
}

/// The rejection counter, resolved at the first rejection and kept (no
/// label string and key built per rejection while the circuit is open);
/// install the recorder before the first request.
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
            .get_or_init(|| {
                metrics::counter!("backpressure_breaker_rejected_total", "name" => name.to_string())
            })
            .increment(1);
    }

    #[cfg(not(feature = "metrics"))]
    pub(crate) fn record(&self, _name: &LayerName) {}
}

#[cfg(not(feature = "metrics"))]
pub(crate) fn state(_name: &LayerName, _current: State) {}
