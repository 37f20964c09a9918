use std::time::Duration;

use backpressure_core::ConfigError;
use tokio::time::Instant;

use super::{
    LimitAlgorithm, Sample, check_fraction,
    controller::{Controller, Trend, delegate_to_controller, limit_setters, probe_setters},
};

/// TCP Vegas applied to concurrency: estimate how many requests are queued
/// downstream, `queue = limit × (1 − baseline / rtt)`, and keep it between
/// `alpha` and `beta`.
///
/// Per window: below `alpha` the limit grows by `max(1, log10(limit))` (or
/// doubles while requests wait for permits: slow start, as in
/// [`Gradient2`](crate::Gradient2)), above `beta` it shrinks by as much, and
/// when the window is congested (see
/// [`drop_threshold`](Self::drop_threshold)) it is multiplied by `backoff`.
/// `alpha` and `beta` are fractions of the limit (5 % and 10 %, at least 1
/// and 2 requests): Netflix's `3·log10(limit)` and `6·log10(limit)` keep 4–8
/// requests queued downstream, which at a knee of 20 is 20–40 % over.
///
/// The baseline (unloaded RTT) is re-measured by periodic probes, so a
/// permanent latency shift (a slower replica, a new region) is adopted
/// instead of shrinking the limit forever.
#[derive(Debug, Clone)]
pub struct Vegas {
    core: Controller,
    alpha: f64,
    beta: f64,
    backoff: f64,
}

impl Default for Vegas {
    fn default() -> Self {
        Self::new()
    }
}

impl Vegas {
    /// Defaults: limits 1..=1000 starting at 20, alpha 5 %, beta 10 %,
    /// backoff 0.9, probe every 5 s.
    pub fn new() -> Self {
        Vegas {
            core: Controller::new(Duration::from_secs(5)),
            alpha: 0.05,
            beta: 0.1,
            backoff: 0.9,
        }
    }

    limit_setters!();
    probe_setters!();

    /// Grow while the estimated downstream queue is below this fraction of
    /// the limit (default 0.05).
    #[must_use]
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Shrink while the estimated downstream queue is above this fraction of
    /// the limit (default 0.1).
    #[must_use]
    pub fn beta(mut self, beta: f64) -> Self {
        self.beta = beta;
        self
    }

    /// The factor applied when a window contains a drop (default 0.9).
    #[must_use]
    pub fn backoff(mut self, backoff: f64) -> Self {
        self.backoff = backoff;
        self
    }

    /// Checks the configuration; the layer's builder calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const L: &str = "vegas";
        self.core.validate(L)?;
        check_fraction(L, "alpha", self.alpha, 0.0..=1.0)?;
        check_fraction(L, "beta", self.beta, 0.0..=1.0)?;
        if self.beta <= self.alpha {
            return Err(ConfigError::new(
                L,
                "beta",
                format!("must be greater than alpha ({})", self.alpha),
            ));
        }
        check_fraction(L, "backoff", self.backoff, 0.01..=0.99)
    }
}

impl LimitAlgorithm for Vegas {
    delegate_to_controller!();

    fn update(&mut self, now: Instant, sample: Sample) -> usize {
        let Vegas { core, alpha, beta, backoff } = self;
        core.update(now, sample, |limit, w, baseline| {
            if w.congested {
                return ((limit * *backoff).floor(), Trend::Shrink);
            }
            let Some(baseline) = baseline.filter(|_| w.rtt > Duration::ZERO) else {
                return (limit, Trend::Hold);
            };
            let queue = limit * (1.0 - baseline.as_secs_f64() / w.rtt.as_secs_f64());
            let step = limit.log10().max(1.0);
            let app_limited = w.max_in_flight * 2 < limit as usize;
            if queue <= (*alpha * limit).max(1.0) && !app_limited {
                (limit + step, Trend::Grow)
            } else if queue >= (*beta * limit).max(2.0) {
                (limit - step, Trend::Shrink)
            } else {
                (limit, Trend::Hold)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settles_near_the_knee() {
        for initial in [5, 200] {
            let mut t = Instant::now();
            let mut alg = Vegas::new().initial_limit(initial);
            let mut limit = initial;
            for _ in 0..3000 {
                t += Duration::from_millis(6);
                let rtt = Duration::from_micros((10_000.0 * (limit as f64 / 20.0).max(1.0)) as u64);
                limit = alg.update(
                    t,
                    Sample {
                        start: t,
                        rtt,
                        in_flight: limit,
                        dropped: false,
                        saturated: false,
                        deadline_cut: false,
                    },
                );
            }
            assert!((18..=25).contains(&limit), "from {initial}: settled at {limit}");
        }
    }

    #[test]
    fn validation_names_fields() {
        assert_eq!(Vegas::new().alpha(0.2).beta(0.1).validate().unwrap_err().field(), "beta");
    }
}
