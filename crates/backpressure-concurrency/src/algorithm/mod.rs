//! Adaptive limit algorithms: pure structs fed one [`Sample`] per completed
//! request, with the current time passed in. No tokio, no atomics: unit
//! tests drive them directly.

use std::{fmt, time::Duration};

use tokio::time::Instant;

mod aimd;
mod controller;
mod gradient;
mod probe;
mod vegas;
mod window;

pub use aimd::Aimd;
pub use gradient::Gradient2;
pub use vegas::Vegas;
pub use window::{Summary, WindowConfig};

pub(crate) use probe::Probe;
pub(crate) use window::{Window, WindowSummary};

/// One completed request, as the limit algorithms see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sample {
    /// When the request got its permit.
    pub start: Instant,
    /// How long it held the permit.
    pub rtt: Duration,
    /// Requests in flight when it started, itself included.
    pub in_flight: usize,
    /// Whether it was a drop: a congestion signal —
    /// [`Outcome::Overloaded`](backpressure_core::Outcome::Overloaded) per
    /// the layer's [`Classify`](backpressure_core::Classify) (429, 503, 504,
    /// a timeout below), or cut by its deadline before it completed.
    /// Failures that are not congestion (a 500) give no sample at all.
    pub dropped: bool,
    /// Whether the limit was the bottleneck when it started: it waited in
    /// the queue, took the last permit, or others were waiting. Saturated
    /// samples with a flat latency say the limit, not the backend, is what
    /// holds throughput back.
    pub saturated: bool,
    /// Whether the drop was a cut by the request's deadline (rather than an
    /// overload answer). Such a drop is congestion only if the request held
    /// its permit well past the unloaded RTT: a request that spent its
    /// deadline waiting in our own queue and was cut after a normal time in
    /// the backend says nothing about the backend.
    pub deadline_cut: bool,
}

/// An algorithm that adjusts a concurrency limit from samples.
///
/// Implementations are plain data: the limiter calls [`update`](Self::update)
/// under a lock with the time of the sample, and publishes the returned
/// limit.
pub trait LimitAlgorithm: fmt::Debug + Send + 'static {
    /// The limit to start with.
    fn initial_limit(&self) -> usize;

    /// The largest limit the algorithm will ever return (bounds the
    /// limiter's internal memory).
    fn max_limit(&self) -> usize;

    /// Feeds one sample; returns the limit to use from now on.
    fn update(&mut self, now: Instant, sample: Sample) -> usize;

    /// Checks the configuration; the layer's `build` calls it.
    fn validate(&self) -> Result<(), backpressure_core::ConfigError> {
        Ok(())
    }

    /// Whether the limit is temporarily lowered to re-measure the unloaded
    /// RTT (shown in snapshots, so a dip is not mistaken for a verdict).
    fn is_probing(&self) -> bool {
        false
    }
}

/// Limits shared by every algorithm, validated by their builders.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) initial: usize,
}

impl Bounds {
    pub(crate) fn validate(
        self,
        layer: &'static str,
    ) -> Result<Self, backpressure_core::ConfigError> {
        use backpressure_core::ConfigError;
        if self.min == 0 {
            return Err(ConfigError::new(layer, "min_limit", "must be at least 1"));
        }
        if self.max < self.min {
            return Err(ConfigError::new(
                layer,
                "max_limit",
                format!("must be at least min_limit ({}), got {}", self.min, self.max),
            ));
        }
        if !(self.min..=self.max).contains(&self.initial) {
            return Err(ConfigError::new(
                layer,
                "initial_limit",
                format!(
                    "must be within min_limit..=max_limit ({}..={}), got {}",
                    self.min, self.max, self.initial
                ),
            ));
        }
        Ok(self)
    }

    pub(crate) fn clamp(&self, limit: f64) -> f64 {
        limit.clamp(self.min as f64, self.max as f64)
    }
}

pub(crate) fn check_fraction(
    layer: &'static str,
    field: &'static str,
    value: f64,
    range: std::ops::RangeInclusive<f64>,
) -> Result<(), backpressure_core::ConfigError> {
    if value.is_finite() && range.contains(&value) {
        Ok(())
    } else {
        Err(backpressure_core::ConfigError::new(
            layer,
            field,
            format!("must be within {}..={}, got {value}", range.start(), range.end()),
        ))
    }
}
