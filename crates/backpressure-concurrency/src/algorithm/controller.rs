//! What every adaptive algorithm carries and does the same way: bounds, the
//! window of samples, the unloaded-RTT probe, and publishing the limit.
//! Each algorithm only supplies the rule that moves the limit when a window
//! closes.

use std::time::Duration;

use backpressure_core::ConfigError;
use tokio::time::Instant;

use super::{Bounds, Probe, Sample, Window, WindowConfig, WindowSummary, probe::Step};

#[derive(Debug, Clone)]
pub(crate) struct Controller {
    pub(crate) bounds: Bounds,
    window_config: WindowConfig,
    window: Window,
    probe: Probe,
    probe_interval: Duration,
    limit: f64,
    published: usize,
}

impl Controller {
    /// Limits 1..=1000 starting at 20, default windows; probing every
    /// `probe_interval` (zero: never).
    pub(crate) fn new(probe_interval: Duration) -> Self {
        let window_config = WindowConfig::default();
        Controller {
            bounds: Bounds { min: 1, max: 1000, initial: 20 },
            window: Window::new(window_config),
            window_config,
            probe: Probe::new(probe_interval),
            probe_interval,
            limit: 20.0,
            published: 20,
        }
    }

    pub(crate) fn set_initial(&mut self, initial: usize) {
        self.bounds.initial = initial;
        self.limit = initial as f64;
        self.published = initial;
    }

    pub(crate) fn set_window(&mut self, window: WindowConfig) {
        self.window_config = window;
        self.window = Window::new(window);
    }

    pub(crate) fn set_probe_interval(&mut self, interval: Duration) {
        self.probe_interval = interval;
        self.probe = Probe::new(interval);
    }

    pub(crate) fn set_probe_seed(&mut self, seed: u64) {
        self.probe = Probe::with_seed(self.probe_interval, seed);
    }

    pub(crate) fn validate(&self, layer: &'static str) -> Result<(), ConfigError> {
        self.bounds.validate(layer)?;
        self.window_config.validate(layer)
    }

    pub(crate) fn is_probing(&self) -> bool {
        self.probe.is_probing()
    }

    #[cfg(test)]
    pub(crate) fn published(&self) -> usize {
        self.published
    }

    /// Feeds one sample. When a window closes outside a probe, `rule` gets
    /// the current limit, the window and the unloaded-RTT baseline, and
    /// returns the new limit, which is then clamped and published.
    pub(crate) fn update(
        &mut self,
        now: Instant,
        sample: Sample,
        rule: impl FnOnce(f64, &WindowSummary, Option<Duration>) -> f64,
    ) -> usize {
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
            Step::Normal => self.limit = rule(self.limit, &w, self.probe.baseline()),
        }
        self.limit = self.bounds.clamp(self.limit);
        self.published = self.limit.round() as usize;
        self.published
    }
}

/// The builder methods every algorithm shares.
macro_rules! limit_setters {
    () => {
        /// The smallest limit (default 1).
        #[must_use]
        pub fn min_limit(mut self, min: usize) -> Self {
            self.core.bounds.min = min;
            self
        }

        /// The largest limit (default 1000).
        #[must_use]
        pub fn max_limit(mut self, max: usize) -> Self {
            self.core.bounds.max = max;
            self
        }

        /// The starting limit (default 20).
        #[must_use]
        pub fn initial_limit(mut self, initial: usize) -> Self {
            self.core.set_initial(initial);
            self
        }

        /// How samples are grouped into windows.
        #[must_use]
        pub fn window(mut self, window: $crate::algorithm::WindowConfig) -> Self {
            self.core.set_window(window);
            self
        }
    };
}

/// The builder methods of the algorithms that probe the unloaded RTT.
macro_rules! probe_setters {
    () => {
        /// How often the unloaded RTT is re-measured (default 5 s; zero turns
        /// probing off and keeps the minimum RTT ever seen).
        #[must_use]
        pub fn probe_interval(mut self, interval: std::time::Duration) -> Self {
            self.core.set_probe_interval(interval);
            self
        }

        /// Makes the probes' jitter reproducible (default: random per
        /// process, so replicas do not probe in step). For simulations and
        /// tests; set it after `probe_interval`.
        #[must_use]
        pub fn probe_seed(mut self, seed: u64) -> Self {
            self.core.set_probe_seed(seed);
            self
        }
    };
}

/// The `LimitAlgorithm` methods every algorithm answers from its controller.
macro_rules! delegate_to_controller {
    () => {
        fn initial_limit(&self) -> usize {
            self.core.bounds.initial
        }

        fn max_limit(&self) -> usize {
            self.core.bounds.max
        }

        fn validate(&self) -> Result<(), backpressure_core::ConfigError> {
            Self::validate(self)
        }

        fn is_probing(&self) -> bool {
            self.core.is_probing()
        }
    };
}

pub(crate) use {delegate_to_controller, limit_setters, probe_setters};
