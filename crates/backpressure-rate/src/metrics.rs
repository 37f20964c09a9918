//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on, and compiled out otherwise.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_rate_requests_total` | counter | `name` |
//! | `backpressure_rate_admitted_total` | counter | `name` |
//! | `backpressure_rate_rejected_total` | counter | `name`, `reason` (`rate_limited`) |
//! | `backpressure_rate_delayed_total` | counter | `name` |
//! | `backpressure_rate_shadow_rejected_total` | counter | `name` |
//!
//! Counted in the layer (requests and admissions per core) and published by
//! the library once a second (`backpressure_core::metrics`): a request
//! touches no recorder. `admitted_total` includes requests let through
//! after a wait (`delayed_total`) and, in shadow mode, those that would
//! have been rejected (`shadow_rejected_total`); a request whose store
//! failed is neither admitted nor rejected.

/// Indices into the per-core counts.
#[cfg(feature = "metrics")]
pub(crate) const REQUESTS: usize = 0;
#[cfg(feature = "metrics")]
pub(crate) const ADMITTED: usize = 1;

/// The layer's metrics state.
#[cfg(feature = "metrics")]
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) counts: backpressure_core::metrics::Counts<2>,
    published: [backpressure_core::metrics::Published; 3],
}

#[cfg(feature = "metrics")]
fn describe() {
    use metrics::{Unit, describe_counter};
    describe_counter!(
        "backpressure_rate_requests_total",
        Unit::Count,
        "Requests that reached the rate limit."
    );
    describe_counter!(
        "backpressure_rate_admitted_total",
        Unit::Count,
        "Requests the rate limit let through (after a wait, or in shadow mode, included)."
    );
    describe_counter!(
        "backpressure_rate_rejected_total",
        Unit::Count,
        "Requests the rate limit turned away, by reason."
    );
    describe_counter!(
        "backpressure_rate_delayed_total",
        Unit::Count,
        "Requests let through after waiting for their turn."
    );
    describe_counter!(
        "backpressure_rate_shadow_rejected_total",
        Unit::Count,
        "Requests shadow mode let through that would have been rejected."
    );
}

#[cfg(feature = "metrics")]
impl backpressure_core::metrics::Publish for crate::layer::Stats {
    fn publish(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        describe();
        let name = self.name.to_string();
        let m = &self.metrics;
        metrics::counter!("backpressure_rate_requests_total", "name" => name.clone())
            .increment(m.counts.unpublished(REQUESTS));
        metrics::counter!("backpressure_rate_admitted_total", "name" => name.clone())
            .increment(m.counts.unpublished(ADMITTED));
        metrics::counter!("backpressure_rate_rejected_total", "name" => name.clone(), "reason" => "rate_limited")
            .increment(m.published[0].since(self.rejected.load(Relaxed)));
        metrics::counter!("backpressure_rate_delayed_total", "name" => name.clone())
            .increment(m.published[1].since(self.delayed.load(Relaxed)));
        metrics::counter!("backpressure_rate_shadow_rejected_total", "name" => name)
            .increment(m.published[2].since(self.shadow_rejected.load(Relaxed)));
    }
}

/// What was counted since the last publication is published as the layer
/// goes.
#[cfg(feature = "metrics")]
impl Drop for crate::layer::Stats {
    fn drop(&mut self) {
        backpressure_core::metrics::Publish::publish(self);
    }
}
