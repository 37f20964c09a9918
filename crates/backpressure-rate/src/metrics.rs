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
//! Counted in the layer (admissions per core, the rest on slow paths) and
//! published by the library once a second (`backpressure_core::metrics`): a
//! request touches no recorder. `admitted_total` includes requests let
//! through after a wait (`delayed_total`) and, in shadow mode, those that
//! would have been rejected (`shadow_rejected_total`). `requests_total` is
//! admitted plus rejected: requests once decided (one whose store failed
//! is in neither).

/// The layer's metrics state.
#[cfg(feature = "metrics")]
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) admitted: backpressure_core::metrics::Counts<1>,
    published: [backpressure_core::metrics::Published; 5],
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
        let admitted = m.admitted.get(0);
        let rejected = self.rejected.load(Relaxed);
        metrics::counter!("backpressure_rate_requests_total", "name" => name.clone())
            .increment(m.published[0].since(admitted.wrapping_add(rejected)));
        metrics::counter!("backpressure_rate_admitted_total", "name" => name.clone())
            .increment(m.published[1].since(admitted));
        metrics::counter!("backpressure_rate_rejected_total", "name" => name.clone(), "reason" => "rate_limited")
            .increment(m.published[2].since(rejected));
        metrics::counter!("backpressure_rate_delayed_total", "name" => name.clone())
            .increment(m.published[3].since(self.delayed.load(Relaxed)));
        metrics::counter!("backpressure_rate_shadow_rejected_total", "name" => name)
            .increment(m.published[4].since(self.shadow_rejected.load(Relaxed)));
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
