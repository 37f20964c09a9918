//! Metric names, recorded through the `metrics` facade when the `metrics`
//! feature is on, and compiled out otherwise.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `backpressure_shed_requests_total` | counter | `name`, `priority` |
//! | `backpressure_shed_admitted_total` | counter | `name`, `priority` |
//! | `backpressure_shed_rejected_total` | counter | `name`, `priority` |
//! | `backpressure_shed_in_flight` | gauge (with `in_flight_limit` only) | `name` |
//!
//! Counted in the layer (admissions per core, sheds on the shed path) and
//! published by the library once a second (`backpressure_core::metrics`): a
//! request touches no recorder. `requests_total` is admitted plus shed.

/// The shedder's metrics state.
#[cfg(feature = "metrics")]
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) admitted: backpressure_core::metrics::Counts<4>,
    published: [[backpressure_core::metrics::Published; 3]; 4],
}

#[cfg(feature = "metrics")]
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_counter!(
        "backpressure_shed_requests_total",
        Unit::Count,
        "Requests that reached the load shedder, by priority."
    );
    describe_counter!(
        "backpressure_shed_admitted_total",
        Unit::Count,
        "Requests the load shedder let through, by priority."
    );
    describe_counter!(
        "backpressure_shed_rejected_total",
        Unit::Count,
        "Requests the load shedder shed, by priority."
    );
    describe_gauge!(
        "backpressure_shed_in_flight",
        Unit::Count,
        "Requests inside the load shedder (with in_flight_limit)."
    );
}

#[cfg(feature = "metrics")]
impl backpressure_core::metrics::Publish for crate::layer::Stats {
    fn publish(&self) {
        use backpressure_core::Priority;
        use std::sync::atomic::Ordering::Relaxed;
        describe();
        let name = self.name.to_string();
        let m = &self.metrics;
        for p in Priority::ALL {
            let i = p.index();
            let (admitted, shed) = (m.admitted.get(i), self.shed[i].load(Relaxed));
            let published = &m.published[i];
            metrics::counter!("backpressure_shed_requests_total", "name" => name.clone(), "priority" => p.as_str())
                .increment(published[0].since(admitted.wrapping_add(shed)));
            metrics::counter!("backpressure_shed_admitted_total", "name" => name.clone(), "priority" => p.as_str())
                .increment(published[1].since(admitted));
            metrics::counter!("backpressure_shed_rejected_total", "name" => name.clone(), "priority" => p.as_str())
                .increment(published[2].since(shed));
        }
        if let Some(in_flight) = &self.in_flight {
            metrics::gauge!("backpressure_shed_in_flight", "name" => name)
                .set(in_flight.count.load(Relaxed) as f64);
        }
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
