use std::time::Duration;

use backpressure_core::ConfigError;
use tokio::time::Instant;

use super::Sample;

/// How a window's RTTs are summarised into one figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Summary {
    /// The mean RTT.
    Average,
    /// The given quantile (0 < q ≤ 1), e.g. 0.9, of the window's RTTs.
    Percentile(f64),
}

/// When a window of samples closes: after `min_duration` *and*
/// `min_samples`, or after `max_duration` with at least one sample. At most
/// `max_samples` RTTs are kept for percentiles (memory is bounded; later
/// samples still count towards drops and in-flight).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct WindowConfig {
    /// Shortest window (default 50 ms).
    pub min_duration: Duration,
    /// Longest window (default 1 s).
    pub max_duration: Duration,
    /// Fewest samples in a window (default 10).
    pub min_samples: usize,
    /// Most RTTs kept per window (default 500).
    pub max_samples: usize,
    /// How RTTs are summarised (default: average).
    pub summary: Summary,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            min_duration: Duration::from_millis(50),
            max_duration: Duration::from_secs(1),
            min_samples: 10,
            max_samples: 500,
            summary: Summary::Average,
        }
    }
}

impl WindowConfig {
    /// Sets the shortest window.
    #[must_use]
    pub const fn min_duration(mut self, d: Duration) -> Self {
        self.min_duration = d;
        self
    }

    /// Sets the longest window.
    #[must_use]
    pub const fn max_duration(mut self, d: Duration) -> Self {
        self.max_duration = d;
        self
    }

    /// Sets the fewest samples in a window.
    #[must_use]
    pub const fn min_samples(mut self, n: usize) -> Self {
        self.min_samples = n;
        self
    }

    /// Sets the most RTTs kept per window.
    #[must_use]
    pub const fn max_samples(mut self, n: usize) -> Self {
        self.max_samples = n;
        self
    }

    /// Sets how RTTs are summarised.
    #[must_use]
    pub const fn summary(mut self, summary: Summary) -> Self {
        self.summary = summary;
        self
    }

    pub(crate) fn validate(&self, layer: &'static str) -> Result<(), ConfigError> {
        if self.min_duration.is_zero() {
            return Err(ConfigError::new(
                layer,
                "window.min_duration",
                "must be greater than zero",
            ));
        }
        if self.max_duration < self.min_duration {
            return Err(ConfigError::new(
                layer,
                "window.max_duration",
                "must be at least window.min_duration",
            ));
        }
        if self.min_samples == 0 {
            return Err(ConfigError::new(layer, "window.min_samples", "must be at least 1"));
        }
        if self.max_samples < self.min_samples || self.max_samples > 100_000 {
            return Err(ConfigError::new(
                layer,
                "window.max_samples",
                "must be within window.min_samples..=100000",
            ));
        }
        if let Summary::Percentile(q) = self.summary
            && !(q.is_finite() && q > 0.0 && q <= 1.0)
        {
            return Err(ConfigError::new(
                layer,
                "window.summary",
                format!("percentile must be in (0, 1], got {q}"),
            ));
        }
        Ok(())
    }
}

/// A closed window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WindowSummary {
    pub(crate) rtt: Duration,
    pub(crate) min_rtt: Duration,
    pub(crate) max_in_flight: usize,
    /// Samples that were drops (congestion signals).
    pub(crate) drops: usize,
    pub(crate) samples: usize,
    /// At least half the samples started with the limit saturated.
    pub(crate) saturated: bool,
    /// Whether the drops make the window congested (set by the controller,
    /// which knows the threshold).
    pub(crate) congested: bool,
}

/// Collects samples until the window closes.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    config: WindowConfig,
    start: Option<Instant>,
    rtts: Vec<Duration>,
    sum: Duration,
    min_rtt: Duration,
    count: usize,
    successes: usize,
    max_in_flight: usize,
    drops: usize,
    saturated: usize,
}

impl Window {
    pub(crate) fn new(config: WindowConfig) -> Self {
        Window {
            config,
            start: None,
            rtts: Vec::new(),
            sum: Duration::ZERO,
            min_rtt: Duration::MAX,
            count: 0,
            successes: 0,
            max_in_flight: 0,
            drops: 0,
            saturated: 0,
        }
    }

    /// Forgets the samples collected so far (used when a probe starts).
    pub(crate) fn reset(&mut self) {
        self.start = None;
        self.rtts.clear();
        self.sum = Duration::ZERO;
        self.min_rtt = Duration::MAX;
        self.count = 0;
        self.successes = 0;
        self.max_in_flight = 0;
        self.drops = 0;
        self.saturated = 0;
    }

    pub(crate) fn add(&mut self, now: Instant, sample: Sample) -> Option<WindowSummary> {
        let start = *self.start.get_or_insert(now);
        self.count += 1;
        self.max_in_flight = self.max_in_flight.max(sample.in_flight);
        self.saturated += usize::from(sample.saturated);
        if sample.dropped {
            self.drops += 1;
        } else {
            self.successes += 1;
            self.sum += sample.rtt;
            self.min_rtt = self.min_rtt.min(sample.rtt);
            if matches!(self.config.summary, Summary::Percentile(_))
                && self.rtts.len() < self.config.max_samples
            {
                if self.rtts.capacity() == 0 {
                    self.rtts.reserve_exact(self.config.max_samples);
                }
                self.rtts.push(sample.rtt);
            }
        }
        let elapsed = now.saturating_duration_since(start);
        let full = self.count >= self.config.min_samples && elapsed >= self.config.min_duration;
        if !full && elapsed < self.config.max_duration {
            return None;
        }
        let rtt = if self.successes == 0 {
            Duration::ZERO
        } else {
            match self.config.summary {
                Summary::Average => self.sum / u32::try_from(self.successes).unwrap_or(u32::MAX),
                Summary::Percentile(q) => {
                    self.rtts.sort_unstable();
                    let idx = ((self.rtts.len().saturating_sub(1)) as f64 * q).round() as usize;
                    self.rtts.get(idx).copied().unwrap_or(Duration::ZERO)
                }
            }
        };
        let summary = WindowSummary {
            rtt,
            min_rtt: if self.min_rtt == Duration::MAX { Duration::ZERO } else { self.min_rtt },
            max_in_flight: self.max_in_flight,
            drops: self.drops,
            samples: self.count,
            saturated: self.saturated * 2 >= self.count,
            congested: false,
        };
        self.reset();
        Some(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(now: Instant, ms: u64, in_flight: usize, dropped: bool) -> Sample {
        Sample {
            start: now,
            rtt: Duration::from_millis(ms),
            in_flight,
            dropped,
            saturated: false,
            deadline_cut: false,
        }
    }

    #[test]
    fn closes_after_min_duration_and_min_samples() {
        let t0 = Instant::now();
        let mut w = Window::new(WindowConfig { min_samples: 3, ..WindowConfig::default() });
        assert!(w.add(t0, sample(t0, 10, 1, false)).is_none());
        assert!(
            w.add(t0 + Duration::from_millis(60), sample(t0, 20, 4, false)).is_none(),
            "2 samples"
        );
        let s = w.add(t0 + Duration::from_millis(61), sample(t0, 30, 2, true)).expect("closed");
        assert_eq!(s.rtt, Duration::from_millis(15), "drops carry no RTT");
        assert_eq!(s.min_rtt, Duration::from_millis(10));
        assert_eq!(s.max_in_flight, 4);
        assert_eq!(s.drops, 1);
        assert_eq!(s.samples, 3);
    }

    #[test]
    fn closes_at_max_duration_with_few_samples() {
        let t0 = Instant::now();
        let mut w = Window::new(WindowConfig::default());
        assert!(w.add(t0, sample(t0, 10, 1, false)).is_none());
        assert!(w.add(t0 + Duration::from_secs(1), sample(t0, 10, 1, false)).is_some());
    }

    #[test]
    fn percentile_summary() {
        let t0 = Instant::now();
        let cfg = WindowConfig {
            min_samples: 10,
            summary: Summary::Percentile(0.9),
            ..WindowConfig::default()
        };
        let mut w = Window::new(cfg);
        let mut out = w.add(t0, sample(t0, 1, 1, false));
        for ms in 2..=10 {
            out = w.add(t0 + Duration::from_millis(50), sample(t0, ms, 1, false));
        }
        assert_eq!(out.unwrap().rtt, Duration::from_millis(9));
    }

    #[test]
    fn invalid_configs_name_their_field() {
        let bad = WindowConfig { summary: Summary::Percentile(1.5), ..WindowConfig::default() };
        assert_eq!(bad.validate("concurrency").unwrap_err().field(), "window.summary");
        let bad = WindowConfig { min_samples: 0, ..WindowConfig::default() };
        assert_eq!(bad.validate("concurrency").unwrap_err().field(), "window.min_samples");
    }
}
