use std::time::Duration;

use backpressure_core::ConfigError;
use tokio::time::Instant;

use super::{
    Bounds, LimitAlgorithm, Probe, Sample, Window, WindowConfig, check_fraction, probe::Step,
};

/// TCP Vegas applied to concurrency: estimate how many requests are queued
/// downstream, `queue = limit × (1 − baseline / rtt)`, and keep it between
/// `alpha` and `beta`.
///
/// Per window: below `alpha` the limit grows by `max(1, log10(limit))`, above
/// `beta` it shrinks by as much, on a drop it is multiplied by `backoff`.
/// `alpha` and `beta` are fractions of the limit (5 % and 10 %, at least 1
/// and 2 requests): Netflix's `3·log10(limit)` and `6·log10(limit)` keep 4–8
/// requests queued downstream, which at a knee of 20 is 20–40 % over.
///
/// The baseline (unloaded RTT) is re-measured by periodic probes, so a
/// permanent latency shift (a slower replica, a new region) is adopted
/// instead of shrinking the limit forever.
#[derive(Debug, Clone)]
pub struct Vegas {
    bounds: Bounds,
    alpha: f64,
    beta: f64,
    backoff: f64,
    window_config: WindowConfig,
    window: Window,
    probe: Probe,
    probe_interval: Duration,
    limit: f64,
    published: usize,
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
        let window_config = WindowConfig::default();
        Vegas {
            bounds: Bounds { min: 1, max: 1000, initial: 20 },
            alpha: 0.05,
            beta: 0.1,
            backoff: 0.9,
            window: Window::new(window_config),
            window_config,
            probe: Probe::new(Duration::from_secs(5)),
            probe_interval: Duration::from_secs(5),
            limit: 20.0,
            published: 20,
        }
    }

    /// The smallest limit (default 1).
    #[must_use]
    pub fn min_limit(mut self, min: usize) -> Self {
        self.bounds.min = min;
        self
    }

    /// The largest limit (default 1000).
    #[must_use]
    pub fn max_limit(mut self, max: usize) -> Self {
        self.bounds.max = max;
        self
    }

    /// The starting limit (default 20).
    #[must_use]
    pub fn initial_limit(mut self, initial: usize) -> Self {
        self.bounds.initial = initial;
        self.limit = initial as f64;
        self.published = initial;
        self
    }

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

    /// How often the unloaded RTT is re-measured (default 5 s; zero turns
    /// probing off).
    #[must_use]
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe = Probe::new(interval);
        self.probe_interval = interval;
        self
    }

    /// Makes the probes' jitter reproducible (default: random per process,
    /// so replicas do not probe in step). For simulations and tests.
    #[must_use]
    pub fn probe_seed(mut self, seed: u64) -> Self {
        self.probe = Probe::with_seed(self.probe_interval, seed);
        self
    }

    /// How samples are grouped into windows.
    #[must_use]
    pub fn window(mut self, window: WindowConfig) -> Self {
        self.window_config = window;
        self.window = Window::new(window);
        self
    }

    /// Checks the configuration; the layer's builder calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const L: &str = "vegas";
        self.bounds.validate(L)?;
        check_fraction(L, "alpha", self.alpha, 0.0..=1.0)?;
        check_fraction(L, "beta", self.beta, 0.0..=1.0)?;
        if self.beta <= self.alpha {
            return Err(ConfigError::new(
                L,
                "beta",
                format!("must be greater than alpha ({})", self.alpha),
            ));
        }
        check_fraction(L, "backoff", self.backoff, 0.01..=0.99)?;
        self.window_config.validate(L)
    }
}

impl LimitAlgorithm for Vegas {
    fn initial_limit(&self) -> usize {
        self.bounds.initial
    }

    fn max_limit(&self) -> usize {
        self.bounds.max
    }

    fn validate(&self) -> Result<(), ConfigError> {
        Self::validate(self)
    }

    fn is_probing(&self) -> bool {
        self.probe.is_probing()
    }

    fn update(&mut self, now: Instant, sample: Sample) -> usize {
        if !self.probe.accepts(&sample) {
            return self.published;
        }
        let Some(w) = self.window.add(now, sample) else { return self.published };
        match self.probe.observe(now, &w, self.limit, self.bounds.min) {
            Step::Start(probe_limit) => {
                self.window.reset();
                self.published = probe_limit;
                return probe_limit;
            }
            Step::Restore(saved) => self.limit = saved,
            Step::Normal => {
                if w.dropped {
                    self.limit = (self.limit * self.backoff).floor();
                } else if let Some(baseline) = self.probe.baseline()
                    && w.rtt > Duration::ZERO
                {
                    let queue = self.limit * (1.0 - baseline.as_secs_f64() / w.rtt.as_secs_f64());
                    let step = self.limit.log10().max(1.0);
                    let alpha = (self.alpha * self.limit).max(1.0);
                    let beta = (self.beta * self.limit).max(2.0);
                    let app_limited = w.max_in_flight * 2 < self.limit as usize;
                    if queue <= alpha && !app_limited {
                        self.limit += step;
                    } else if queue >= beta {
                        self.limit -= step;
                    }
                }
            }
        }
        self.limit = self.bounds.clamp(self.limit);
        self.published = self.limit.round() as usize;
        self.published
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
                limit = alg.update(t, Sample { start: t, rtt, in_flight: limit, dropped: false });
            }
            assert!((18..=25).contains(&limit), "from {initial}: settled at {limit}");
        }
    }

    #[test]
    fn validation_names_fields() {
        assert_eq!(Vegas::new().alpha(0.2).beta(0.1).validate().unwrap_err().field(), "beta");
    }
}
