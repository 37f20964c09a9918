use std::time::Duration;

use backpressure_core::ConfigError;
use tokio::time::Instant;

use super::{
    LimitAlgorithm, Sample, check_fraction,
    controller::{Controller, Trend, delegate_to_controller, limit_setters},
};

/// Additive increase, multiplicative decrease: the classic, and the right
/// choice for clients.
///
/// Per window of samples: if the window was congested (at least
/// [`drop_threshold`](Self::drop_threshold) of its samples, and two or more,
/// were overload signals — 429, 503, 504, timeouts), or its RTT exceeded
/// `rtt_threshold`, the limit is multiplied by `backoff` (0.9); otherwise,
/// if the service used at least half its limit (it is not app-limited), the
/// limit grows by one — or doubles while requests wait for permits, up to
/// half the limit of the last back-off (TCP's slow start and `ssthresh`).
///
/// ```
/// use std::time::Duration;
/// use backpressure_concurrency::Aimd;
///
/// let aimd = Aimd::new().initial_limit(10).max_limit(200).rtt_threshold(Duration::from_millis(250));
/// # let _ = aimd;
/// ```
#[derive(Debug, Clone)]
pub struct Aimd {
    core: Controller,
    backoff: f64,
    rtt_threshold: Option<Duration>,
}

impl Default for Aimd {
    fn default() -> Self {
        Self::new()
    }
}

impl Aimd {
    /// Defaults: limits 1..=1000 starting at 20, backoff 0.9, no RTT
    /// threshold (only drops back off), default windows.
    pub fn new() -> Self {
        // AIMD compares against a threshold, not an unloaded RTT: no probes.
        Aimd { core: Controller::new(Duration::ZERO), backoff: 0.9, rtt_threshold: None }
    }

    limit_setters!();

    /// The factor applied on a drop, in (0, 1) (default 0.9).
    #[must_use]
    pub fn backoff(mut self, backoff: f64) -> Self {
        self.backoff = backoff;
        self
    }

    /// Back off also when a window's RTT exceeds this.
    #[must_use]
    pub fn rtt_threshold(mut self, threshold: Duration) -> Self {
        self.rtt_threshold = Some(threshold);
        self
    }

    /// Checks the configuration; the layer's builder calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const L: &str = "aimd";
        self.core.validate(L)?;
        check_fraction(L, "backoff", self.backoff, 0.01..=0.99)?;
        if self.rtt_threshold.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new(L, "rtt_threshold", "must be greater than zero"));
        }
        Ok(())
    }
}

impl LimitAlgorithm for Aimd {
    delegate_to_controller!();

    fn update(&mut self, now: Instant, sample: Sample) -> usize {
        let Aimd { core, backoff, rtt_threshold } = self;
        core.update(now, sample, |limit, w, _baseline| {
            let slow = rtt_threshold.is_some_and(|t| w.rtt > t);
            if w.congested || slow {
                ((limit * *backoff).floor(), Trend::Shrink)
            } else if w.max_in_flight * 2 >= limit as usize {
                (limit + 1.0, Trend::Grow)
            } else {
                (limit, Trend::Hold)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window_of(
        aimd: &mut Aimd,
        t: &mut Instant,
        ms: u64,
        in_flight: usize,
        dropped: bool,
    ) -> usize {
        let mut limit = 0;
        for _ in 0..10 {
            *t += Duration::from_millis(6);
            let s = Sample {
                start: *t,
                rtt: Duration::from_millis(ms),
                in_flight,
                dropped,
                saturated: false,
                deadline_cut: false,
            };
            limit = aimd.update(*t, s);
        }
        limit
    }

    #[test]
    fn grows_by_one_per_busy_window_and_backs_off_on_drops() {
        let mut t = Instant::now();
        let mut aimd = Aimd::new().initial_limit(10);
        assert_eq!(window_of(&mut aimd, &mut t, 10, 10, false), 11);
        assert_eq!(window_of(&mut aimd, &mut t, 10, 11, false), 12);
        assert_eq!(window_of(&mut aimd, &mut t, 10, 12, true), 10, "12 × 0.9, floored");
    }

    #[test]
    fn no_growth_while_app_limited() {
        let mut t = Instant::now();
        let mut aimd = Aimd::new().initial_limit(10);
        assert_eq!(window_of(&mut aimd, &mut t, 10, 4, false), 10);
    }

    #[test]
    fn rtt_threshold_backs_off_and_bounds_hold() {
        let mut t = Instant::now();
        let mut aimd =
            Aimd::new().initial_limit(3).min_limit(2).rtt_threshold(Duration::from_millis(50));
        assert_eq!(window_of(&mut aimd, &mut t, 80, 3, false), 2);
        assert_eq!(window_of(&mut aimd, &mut t, 80, 3, false), 2, "never below min_limit");
    }

    #[test]
    fn validation_names_fields() {
        assert_eq!(Aimd::new().backoff(1.5).validate().unwrap_err().field(), "backoff");
        assert_eq!(Aimd::new().min_limit(0).validate().unwrap_err().field(), "min_limit");
        assert_eq!(
            Aimd::new().initial_limit(5000).validate().unwrap_err().field(),
            "initial_limit"
        );
    }
}
