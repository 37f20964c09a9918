use std::time::Duration;

use backpressure_core::ConfigError;
use tokio::time::Instant;

use super::{
    LimitAlgorithm, Sample, check_fraction,
    controller::{Controller, Trend, delegate_to_controller, limit_setters, probe_setters},
};

/// A window's RTT within this factor of `tolerance × baseline` counts as
/// flat for slow start: averages of real latencies wander a few percent
/// around the unloaded one without any queueing.
const FLAT: f64 = 1.1;

/// Gradient2 (after Netflix's concurrency-limits), with its known defects
/// fixed. The default algorithm for servers.
///
/// Per window: `gradient = clamp(tolerance × baseline / rtt, 0.5, 1)`, and the
/// limit moves towards `limit × gradient + headroom`, smoothed. Below the
/// knee of the backend's latency curve the RTT equals the baseline, the
/// gradient is 1 and the limit grows by the headroom; past it, the RTT rises
/// in proportion to the over-commit and the limit settles at the knee plus
/// the headroom (10 % of the limit, at least 1).
///
/// What differs from Netflix's implementation:
/// - **a drop rate lowers the limit** (× `backoff` when at least
///   [`drop_threshold`](Self::drop_threshold) of a window's samples, and two
///   or more, were congestion signals: 429, 503, 504, timeouts); Netflix
///   ignores drops (concurrency-limits#176), so a backend failing fast looks
///   healthy. Reacting to a single drop instead pinned the limit to its
///   floor under any steady trickle of timeouts or cancellations;
/// - **slow start**: while requests wait for permits and the RTT is flat,
///   the limit doubles each window (up to half the limit where latency last
///   rose) instead of growing by the smoothed headroom, so an endpoint that
///   is slow but not a bottleneck gets the hundreds of permits it needs in
///   a second, not in a minute;
/// - **the baseline is the unloaded RTT, re-measured by probes** (see the
///   crate docs), not a long moving average of the RTT: an average follows
///   sustained queueing upwards, the gradient then stays near 1 and the limit
///   climbs without bound (concurrency-limits#134);
/// - **headroom proportional to the limit** instead of a constant 4, so
///   small limits settle near the knee, not 20–40 % above it;
/// - no increase while app-limited (fewer than half the permits in use).
#[derive(Debug, Clone)]
pub struct Gradient2 {
    core: Controller,
    tolerance: f64,
    smoothing: f64,
    backoff: f64,
    headroom: f64,
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self::new()
    }
}

impl Gradient2 {
    /// Defaults: limits 1..=1000 starting at 20, tolerance 1.0, smoothing
    /// 0.2, backoff 0.9, headroom 10 %, probe every 5 s.
    pub fn new() -> Self {
        Gradient2 {
            core: Controller::new(Duration::from_secs(5)),
            tolerance: 1.0,
            smoothing: 0.2,
            backoff: 0.9,
            headroom: 0.1,
        }
    }

    limit_setters!();
    probe_setters!();

    /// How much RTT above the baseline is tolerated before the limit shrinks,
    /// as a ratio in 1.0..=3.0 (default 1.0: none; Netflix uses 1.5, which
    /// settles 50 % above the knee).
    #[must_use]
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// How far each window moves the limit towards its target, in (0, 1]
    /// (default 0.2).
    #[must_use]
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// The factor applied when a window is congested (default 0.9; see
    /// [`drop_threshold`](Self::drop_threshold)).
    #[must_use]
    pub fn backoff(mut self, backoff: f64) -> Self {
        self.backoff = backoff;
        self
    }

    /// Growth allowance as a fraction of the limit, in (0, 1] (default 0.1).
    #[must_use]
    pub fn headroom(mut self, headroom: f64) -> Self {
        self.headroom = headroom;
        self
    }

    /// Checks the configuration; the layer's builder calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const L: &str = "gradient2";
        self.core.validate(L)?;
        check_fraction(L, "tolerance", self.tolerance, 1.0..=3.0)?;
        check_fraction(L, "smoothing", self.smoothing, 0.001..=1.0)?;
        check_fraction(L, "backoff", self.backoff, 0.01..=0.99)?;
        check_fraction(L, "headroom", self.headroom, 0.001..=1.0)
    }
}

impl LimitAlgorithm for Gradient2 {
    delegate_to_controller!();

    fn update(&mut self, now: Instant, sample: Sample) -> usize {
        let Gradient2 { core, tolerance, smoothing, backoff, headroom } = self;
        core.update(now, sample, |limit, w, baseline| {
            if w.congested {
                return (limit * *backoff, Trend::Shrink);
            }
            let Some(baseline) = baseline.filter(|_| w.rtt > Duration::ZERO) else {
                return (limit, Trend::Hold);
            };
            let ratio = w.rtt.as_secs_f64() / baseline.as_secs_f64();
            let gradient = (*tolerance / ratio).clamp(0.5, 1.0);
            let mut target = limit * gradient + (limit * *headroom).max(1.0);
            let app_limited = w.max_in_flight * 2 < limit as usize;
            if app_limited {
                // App-limited: the samples say nothing about more load.
                target = target.min(limit);
            }
            let next = limit * (1.0 - *smoothing) + target * *smoothing;
            let trend = if ratio <= *tolerance * FLAT && !app_limited {
                Trend::Grow
            } else if next < limit {
                Trend::Shrink
            } else {
                Trend::Hold
            };
            (next, trend)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend with `knee` slots: RTT = 10 ms × max(1, in_flight / knee).
    fn run(alg: &mut Gradient2, knee: f64, t: &mut Instant, windows: usize) -> usize {
        let mut limit = alg.core.published();
        for _ in 0..windows {
            for _ in 0..10 {
                *t += Duration::from_millis(6);
                let in_flight = limit.max(1);
                let rtt =
                    Duration::from_micros((10_000.0 * (in_flight as f64 / knee).max(1.0)) as u64);
                limit = alg.update(
                    *t,
                    Sample {
                        start: *t,
                        rtt,
                        in_flight,
                        dropped: false,
                        saturated: false,
                        deadline_cut: false,
                    },
                );
            }
        }
        limit
    }

    #[test]
    fn settles_near_the_knee_from_below_and_above() {
        for initial in [5, 200] {
            let mut t = Instant::now();
            let mut alg = Gradient2::new().initial_limit(initial);
            let limit = run(&mut alg, 20.0, &mut t, 300);
            assert!((18..=25).contains(&limit), "from {initial}: settled at {limit}");
        }
    }

    /// Feeds one window of `n` samples of which `drops` are drops.
    fn window(alg: &mut Gradient2, t: &mut Instant, n: usize, drops: usize) -> usize {
        let mut limit = 0;
        for i in 0..n {
            *t += Duration::from_micros(600);
            let sample = Sample {
                start: *t,
                rtt: Duration::from_millis(10),
                in_flight: 20,
                dropped: i < drops,
                saturated: false,
                deadline_cut: false,
            };
            limit = alg.update(*t, sample);
        }
        limit
    }

    /// One drop in a window of 100 is noise: the first version cut the
    /// limit by 10 % on it, so a 1 % background of timeouts pinned the limit
    /// to its floor. A drop rate above the threshold backs off.
    #[test]
    fn a_drop_rate_backs_off_a_single_drop_does_not() {
        let mut t = Instant::now();
        let mut alg = Gradient2::new().initial_limit(20).probe_interval(Duration::ZERO);
        for _ in 0..50 {
            assert!(window(&mut alg, &mut t, 100, 1) >= 20, "1 % drops");
        }
        let mut alg = Gradient2::new().initial_limit(20).probe_interval(Duration::ZERO);
        assert_eq!(window(&mut alg, &mut t, 100, 10), 18, "10 % drops: × 0.9");
        let mut alg =
            Gradient2::new().initial_limit(20).probe_interval(Duration::ZERO).drop_threshold(0.2);
        assert!(window(&mut alg, &mut t, 100, 10) >= 20, "below a 20 % threshold");
    }

    /// Slow start doubles while saturated and flat, and stops at half the
    /// limit where latency last rose.
    #[test]
    fn slow_start_doubles_up_to_half_the_ceiling() {
        let mut t = Instant::now();
        let mut alg = Gradient2::new().initial_limit(10).probe_interval(Duration::ZERO);
        let mut feed = |alg: &mut Gradient2, ms: u64, in_flight: usize| {
            let mut limit = 0;
            for _ in 0..10 {
                t += Duration::from_millis(6);
                let sample = Sample {
                    start: t,
                    rtt: Duration::from_millis(ms),
                    in_flight,
                    dropped: false,
                    saturated: true,
                    deadline_cut: false,
                };
                limit = alg.update(t, sample);
            }
            limit
        };
        assert_eq!(feed(&mut alg, 10, 10), 20);
        assert_eq!(feed(&mut alg, 10, 20), 40);
        assert_eq!(feed(&mut alg, 10, 40), 80);
        // Latency doubles at 80: the ceiling is 80, the limit shrinks.
        let after = feed(&mut alg, 20, 80);
        assert!(after < 80, "{after}");
        assert_eq!(alg.core.ceiling(), Some(80.0));
        // Flat again below the ceiling: slow start only up to 40.
        let mut limit = after;
        for _ in 0..3 {
            limit = feed(&mut alg, 10, limit);
        }
        assert!(limit < 80, "no doubling back past the trouble: {limit}");
    }

    #[test]
    fn drops_lower_the_limit() {
        let mut t = Instant::now();
        let mut alg = Gradient2::new().initial_limit(100);
        let mut limit = 100;
        for _ in 0..10 {
            t += Duration::from_millis(6);
            limit = alg.update(
                t,
                Sample {
                    start: t,
                    rtt: Duration::from_millis(1),
                    in_flight: 100,
                    dropped: true,
                    saturated: false,
                    deadline_cut: false,
                },
            );
        }
        assert_eq!(limit, 90);
    }

    #[test]
    fn validation_names_fields() {
        assert_eq!(Gradient2::new().tolerance(0.5).validate().unwrap_err().field(), "tolerance");
        assert_eq!(
            Gradient2::new().smoothing(f64::NAN).validate().unwrap_err().field(),
            "smoothing"
        );
        assert_eq!(Gradient2::new().max_limit(0).validate().unwrap_err().field(), "max_limit");
    }
}
