//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on, and compiled out otherwise.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_retry_attempts_total` | counter | `name` |
//! | `backpressure_retry_retries_total` | counter | `name` |
//! | `backpressure_retry_denied_total` | counter | `name`, `reason` (`budget`, `deadline`, `pushback`) |
//!
//! Counted in the layer (the same counters as
//! [`RetryHandle::snapshot`](crate::RetryHandle::snapshot)) and published by
//! the library once a second (`backpressure_core::metrics`). Requests are
//! `attempts_total - retries_total`.

#[cfg(feature = "metrics")]
fn describe() {
    use metrics::{Unit, describe_counter};
    describe_counter!(
        "backpressure_retry_attempts_total",
        Unit::Count,
        "Attempts made, first ones included."
    );
    describe_counter!("backpressure_retry_retries_total", Unit::Count, "Retries made.");
    describe_counter!(
        "backpressure_retry_denied_total",
        Unit::Count,
        "Retries not made though the policy asked for them, by reason."
    );
}

#[cfg(feature = "metrics")]
#[derive(Debug, Default)]
pub(crate) struct Published([backpressure_core::metrics::Published; 5]);

#[cfg(feature = "metrics")]
impl backpressure_core::metrics::Publish for crate::layer::Counters {
    fn publish(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        describe();
        let name = self.name.to_string();
        let p = &self.published.0;
        metrics::counter!("backpressure_retry_attempts_total", "name" => name.clone())
            .increment(p[0].since(self.attempts.load(Relaxed)));
        metrics::counter!("backpressure_retry_retries_total", "name" => name.clone())
            .increment(p[1].since(self.retries.load(Relaxed)));
        let denied = [
            ("budget", &self.denied_budget),
            ("deadline", &self.denied_deadline),
            ("pushback", &self.denied_pushback),
        ];
        for ((reason, total), published) in denied.into_iter().zip(&p[2..]) {
            metrics::counter!("backpressure_retry_denied_total", "name" => name.clone(), "reason" => reason)
                .increment(published.since(total.load(Relaxed)));
        }
    }
}

/// What was counted since the last publication is published as the layer
/// goes.
#[cfg(feature = "metrics")]
impl Drop for crate::layer::Counters {
    fn drop(&mut self) {
        backpressure_core::metrics::Publish::publish(self);
    }
}
