//! What every adaptive algorithm carries and does the same way: bounds, the
//! window of samples, the drop-rate threshold, slow start, the unloaded-RTT
//! probe, and publishing the limit. Each algorithm only supplies the rule
//! that moves the limit when a window closes.

use std::time::Duration;

use backpressure_core::ConfigError;
use tokio::time::Instant;

use super::{Bounds, Probe, Sample, Window, WindowConfig, WindowSummary, probe::Step};

/// Which way an algorithm's rule says the limit should go, for slow start
/// and its ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trend {
    /// Latency flat, no congestion: more load would be served as fast.
    Grow,
    /// Neither.
    Hold,
    /// Latency rose or the window was congested: past the knee.
    Shrink,
}

/// The default share of a window's samples that must be drops before the
/// limit backs off.
pub(crate) const DEFAULT_DROP_THRESHOLD: f64 = 0.05;

/// Drops in a window needed before it can count as congested, whatever its
/// rate: one drop among ten samples is noise, not a verdict.
const MIN_DROPS: usize = 2;

#[derive(Debug, Clone)]
pub(crate) struct Controller {
    pub(crate) bounds: Bounds,
    window_config: WindowConfig,
    window: Window,
    probe: Probe,
    probe_interval: Duration,
    pub(crate) drop_threshold: f64,
    /// The limit at which latency last rose or drops last came: slow start
    /// stops at half of it (TCP's `ssthresh`). Forgotten once the limit
    /// grows well past it without trouble.
    ceiling: Option<f64>,
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
            drop_threshold: DEFAULT_DROP_THRESHOLD,
            ceiling: None,
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
        self.window_config.validate(layer)?;
        super::check_fraction(layer, "drop_threshold", self.drop_threshold, 0.0..=1.0)
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
    /// returns the new limit and the trend it saw; slow start may raise the
    /// limit further; it is then clamped and published.
    pub(crate) fn update(
        &mut self,
        now: Instant,
        sample: Sample,
        rule: impl FnOnce(f64, &WindowSummary, Option<Duration>) -> (f64, Trend),
    ) -> usize {
        if !self.probe.accepts(&sample) {
            return self.published;
        }
        if sample.deadline_cut
            && self.probe.baseline().is_some_and(|b| sample.rtt <= b.saturating_mul(2))
        {
            // Cut after an ordinary time downstream: the deadline went on
            // waiting before the permit. Neither a drop nor an RTT.
            return self.published;
        }
        let Some(mut w) = self.window.add(now, sample) else { return self.published };
        w.congested =
            w.drops >= MIN_DROPS && w.drops as f64 >= self.drop_threshold * w.samples as f64;
        match self.probe.observe(now, &w, self.limit, self.bounds.min) {
            Step::Start(probe_limit) => {
                self.window.reset();
                self.published = probe_limit;
                return probe_limit;
            }
            Step::Restore(saved) => self.limit = saved,
            Step::Normal => {
                let limit = self.limit;
                let (next, trend) = rule(limit, &w, self.probe.baseline());
                self.limit = self.slow_start(limit, next, trend, &w);
            }
        }
        self.limit = self.bounds.clamp(self.limit);
        self.published = self.limit.round() as usize;
        self.published
    }

    /// TCP's slow start, for concurrency: while the limit itself is the
    /// bottleneck (the window's requests waited for permits) and latency is
    /// flat, double it each window instead of adding a few percent. An
    /// endpoint that is slow but not a bottleneck (a handler waiting 200 ms
    /// on a remote API) needs 400 permits for 2,000 requests/s; growing by
    /// 2 % a window from 20 takes 150 windows, and meanwhile the queue turns
    /// most requests away. Doubling stops at half the limit where latency
    /// last rose (the ceiling), so a pooled backend sitting at its knee under
    /// sustained overload is not pushed past it again and again.
    fn slow_start(&mut self, limit: f64, next: f64, trend: Trend, w: &WindowSummary) -> f64 {
        if trend == Trend::Shrink || w.congested {
            self.ceiling = Some(limit);
            return next;
        }
        if let Some(c) = self.ceiling
            && next > c * 1.5
        {
            // Grown well past the old trouble without any: the world
            // changed. (Not merely past it: a limit hovering at a pooled
            // backend's knee crosses its ceiling by a request or two.)
            self.ceiling = None;
        }
        if trend != Trend::Grow || !w.saturated {
            return next;
        }
        let cap = self.ceiling.map_or(f64::INFINITY, |c| c / 2.0);
        if limit < cap { next.max((limit * 2.0).min(cap)) } else { next }
    }

    #[cfg(test)]
    pub(crate) fn ceiling(&self) -> Option<f64> {
        self.ceiling
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

        /// The share of a window's samples that must be drops (congestion
        /// signals: 429, 503, 504, timeouts) before the limit backs off, in
        /// 0..=1 (default 0.05); a window also needs at least two drops.
        /// One drop is noise: backing off on it lets a steady trickle of
        /// timeouts pin the limit to its floor at any traffic volume.
        #[must_use]
        pub fn drop_threshold(mut self, share: f64) -> Self {
            self.core.drop_threshold = share;
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
