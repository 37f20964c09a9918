//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on, and compiled out otherwise.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_breaker_requests_total` | counter | `name` |
//! | `backpressure_breaker_admitted_total` | counter | `name` |
//! | `backpressure_breaker_rejected_total` | counter | `name`, `reason` (`circuit_open`) |
//! | `backpressure_breaker_calls_total` | counter | `name`, `outcome` (`success`, `failure`, `ignored`, `cancelled`) |
//! | `backpressure_breaker_opened_total` | counter | `name` |
//! | `backpressure_breaker_shadow_tripped_total` | counter | `name` |
//! | `backpressure_breaker_state` | gauge, 1 for the current state and 0 for every other | `name`, `state` |
//!
//! Counted in the breaker (per core for what every call counts) and
//! published by the library once a second (`backpressure_core::metrics`):
//! a call touches no recorder. A call's outcome is counted when it ends
//! (one atomic add on its own core): `failure` includes calls cut by their
//! deadline; `cancelled` is a call dropped unfinished for another reason
//! (the client went away). `admitted_total` is the calls that ended (the
//! sum of the outcomes), `requests_total` those plus the rejected: a call
//! in progress is in neither yet.
//! `opened_total` counts every trip, so an outage shorter than a scrape
//! still shows. `shadow_tripped_total` counts, in
//! [`metrics_only`](crate::CircuitBreakerBuilder::metrics_only) mode, the
//! failed calls after which the breaker would have tripped.
//!
//! The adaptive throttle publishes `backpressure_throttle_requests_total`,
//! `backpressure_throttle_rejected_total{reason="throttled"}` and the
//! `backpressure_throttle_probability` gauge (see `throttle.rs`).

/// Indices into the breaker's per-core outcome counts.
pub(crate) const SUCCESS: usize = 0;
pub(crate) const FAILURE: usize = 1;
pub(crate) const IGNORED: usize = 2;
pub(crate) const CANCELLED: usize = 3;

/// The breaker's metrics state.
#[cfg(feature = "metrics")]
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) counts: backpressure_core::metrics::Counts<4>,
    published: [backpressure_core::metrics::Published; 9],
}

#[cfg(feature = "metrics")]
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_counter!(
        "backpressure_breaker_requests_total",
        Unit::Count,
        "Calls that reached the circuit breaker."
    );
    describe_counter!(
        "backpressure_breaker_admitted_total",
        Unit::Count,
        "Calls the circuit breaker let through."
    );
    describe_counter!(
        "backpressure_breaker_rejected_total",
        Unit::Count,
        "Calls the circuit breaker rejected, by reason."
    );
    describe_counter!(
        "backpressure_breaker_calls_total",
        Unit::Count,
        "Calls through the circuit breaker that ended, by outcome."
    );
    describe_counter!(
        "backpressure_breaker_opened_total",
        Unit::Count,
        "Times the circuit opened."
    );
    describe_counter!(
        "backpressure_breaker_shadow_tripped_total",
        Unit::Count,
        "Failed calls after which a metrics-only breaker would have tripped."
    );
    describe_gauge!(
        "backpressure_breaker_state",
        Unit::Count,
        "1 for the circuit breaker's current state, 0 for the others."
    );
}

#[cfg(feature = "metrics")]
impl backpressure_core::metrics::Publish for crate::state::Shared {
    fn publish(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        describe();
        let name = self.name.to_string();
        let m = &self.metrics;
        let p = &m.published;
        let outcomes: [u64; 4] = std::array::from_fn(|i| m.counts.get(i));
        let ended = outcomes.iter().fold(0, |n: u64, c| n.wrapping_add(*c));
        let rejected = self.rejected.load(Relaxed);
        metrics::counter!("backpressure_breaker_requests_total", "name" => name.clone())
            .increment(p[0].since(ended.wrapping_add(rejected)));
        metrics::counter!("backpressure_breaker_admitted_total", "name" => name.clone())
            .increment(p[1].since(ended));
        for (outcome, i) in [
            ("success", SUCCESS),
            ("failure", FAILURE),
            ("ignored", IGNORED),
            ("cancelled", CANCELLED),
        ] {
            metrics::counter!("backpressure_breaker_calls_total", "name" => name.clone(), "outcome" => outcome)
                .increment(p[2 + i].since(outcomes[i]));
        }
        metrics::counter!("backpressure_breaker_rejected_total", "name" => name.clone(), "reason" => "circuit_open")
            .increment(p[6].since(rejected));
        metrics::counter!("backpressure_breaker_opened_total", "name" => name.clone())
            .increment(p[7].since(self.opened.load(Relaxed)));
        metrics::counter!("backpressure_breaker_shadow_tripped_total", "name" => name.clone())
            .increment(p[8].since(self.shadow_tripped.load(Relaxed)));
        let current = self.state();
        for s in crate::State::ALL {
            metrics::gauge!("backpressure_breaker_state", "name" => name.clone(), "state" => s.as_str())
                .set(if s == current { 1.0 } else { 0.0 });
        }
    }
}

impl crate::state::Shared {
    /// Counts an event of the breaker's (metrics).
    #[inline]
    pub(crate) fn count(&self, _i: usize) {
        #[cfg(feature = "metrics")]
        self.metrics.counts.add(_i);
    }
}

/// What was counted since the last publication is published as the
/// breaker goes.
#[cfg(feature = "metrics")]
impl Drop for crate::state::Shared {
    fn drop(&mut self) {
        backpressure_core::metrics::Publish::publish(self);
    }
}
