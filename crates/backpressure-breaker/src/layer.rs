use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    sync::Arc,
    time::Duration,
};

use backpressure_core::{ConfigError, DefaultClassify, LayerName, stripe::StripedArc};
use tower_layer::Layer;

use crate::{
    Backoff, BreakerHandle, CircuitBreaker, State,
    state::{Config, Listener, Shared, Window, duration_nanos},
    window::{CountWindow, MAX_COUNT_WINDOW, TimeWindow},
};

const LAYER: &str = "circuit-breaker";

/// How the breaker remembers recent calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlidingWindow {
    /// The last `n` calls (default: 100).
    Calls(usize),
    /// The last `buckets × bucket` of time (e.g. 10 buckets of 1 s).
    Time {
        /// Width of one bucket.
        bucket: Duration,
        /// Buckets in the window.
        buckets: usize,
    },
}

/// Applies [`CircuitBreaker`]: one breaker shared by every service this
/// layer value builds.
pub struct CircuitBreakerLayer<C = DefaultClassify> {
    shared: StripedArc<Shared>,
    classify: C,
}

/// [`CircuitBreakerLayer::new`]: the defaults.
impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitBreakerLayer {
    /// A breaker with the defaults: trip when at least 50 % of the last 100
    /// calls failed (after at least 20), stay open 30 s, then let 3 probes
    /// through.
    pub fn new() -> Self {
        Self::builder().build().expect("the defaults are valid (tested)")
    }

    /// A builder for every option.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            window: SlidingWindow::Calls(100),
            failure_rate: 0.5,
            slow_rate: 1.0,
            slow_call: None,
            minimum_calls: 20,
            open_duration: Duration::from_secs(30),
            backoff: None,
            half_open_calls: 3,
            half_open_max_wait: Duration::from_secs(60),
            metrics_only: false,
            cancel_is_failure: false,
            classify: DefaultClassify,
            listener: None,
            seed: None,
            name: None,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// A handle: state, counts, manual controls.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(Arc::clone(self.shared.shared()))
    }
}

impl<C: Clone> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer { shared: self.shared.clone(), classify: self.classify.clone() }
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("handle", &self.handle())
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::from_parts(inner, self.shared.clone(), self.classify.clone())
    }
}

/// Builds a [`CircuitBreakerLayer`].
///
/// ```
/// use std::time::Duration;
/// use backpressure_breaker::{Backoff, CircuitBreakerLayer, SlidingWindow};
///
/// let layer = CircuitBreakerLayer::builder()
///     .window(SlidingWindow::Time { bucket: Duration::from_secs(1), buckets: 10 })
///     .failure_rate(0.25)
///     .slow_call(Duration::from_millis(500), 0.5)
///     .minimum_calls(10)
///     .open_duration(Duration::from_secs(5))
///     .backoff(Backoff::new(2.0, Duration::from_secs(120)).jitter(0.1))
///     .half_open_calls(5)
///     .on_state_change(|from, to| eprintln!("breaker: {from} -> {to}"))
///     .name("payments")
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), backpressure_core::ConfigError>(())
/// ```
pub struct CircuitBreakerBuilder<C = DefaultClassify> {
    window: SlidingWindow,
    failure_rate: f64,
    slow_rate: f64,
    slow_call: Option<Duration>,
    minimum_calls: u64,
    open_duration: Duration,
    backoff: Option<Backoff>,
    half_open_calls: u32,
    half_open_max_wait: Duration,
    metrics_only: bool,
    cancel_is_failure: bool,
    classify: C,
    listener: Option<Listener>,
    seed: Option<u64>,
    name: Option<LayerName>,
}

impl<C> fmt::Debug for CircuitBreakerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("window", &self.window)
            .field("failure_rate", &self.failure_rate)
            .field("minimum_calls", &self.minimum_calls)
            .finish_non_exhaustive()
    }
}

impl<C> CircuitBreakerBuilder<C> {
    /// The sliding window (default: the last 100 calls).
    #[must_use]
    pub fn window(mut self, window: SlidingWindow) -> Self {
        self.window = window;
        self
    }

    /// Trip when at least this fraction of the window's calls failed
    /// (0 < rate ≤ 1, default 0.5).
    #[must_use]
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }

    /// Count calls slower than `duration` as slow, and trip when at least
    /// `rate` of the window's calls are slow. Off by default (it costs two
    /// clock reads per call).
    #[must_use]
    pub fn slow_call(mut self, duration: Duration, rate: f64) -> Self {
        self.slow_call = Some(duration);
        self.slow_rate = rate;
        self
    }

    /// Never trip on fewer calls than this in the window (default 20; may be
    /// smaller than the window).
    #[must_use]
    pub fn minimum_calls(mut self, calls: u64) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// How long the breaker stays open before probing (default 30 s).
    #[must_use]
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.open_duration = duration;
        self
    }

    /// Grow the open time on consecutive re-opens.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Probe calls admitted when half-open, across all clones (default 3).
    #[must_use]
    pub fn half_open_calls(mut self, calls: u32) -> Self {
        self.half_open_calls = calls;
        self
    }

    /// If the probes have not all completed this long after the breaker
    /// turned half-open, it opens again (default 60 s).
    #[must_use]
    pub fn half_open_max_wait(mut self, wait: Duration) -> Self {
        self.half_open_max_wait = wait;
        self
    }

    /// Record and report, but never trip: for rolling a breaker out safely.
    #[must_use]
    pub fn metrics_only(mut self, yes: bool) -> Self {
        self.metrics_only = yes;
        self
    }

    /// Whether a call dropped before it completed *for a reason other than
    /// its deadline* — the client went away — counts as a failure (default
    /// false: it says nothing about the dependency).
    ///
    /// Whatever this says, a call dropped because its deadline passed (the
    /// timeout layer above cut it, see
    /// [`Deadline::expired_scope`](backpressure_core::Deadline::expired_scope)),
    /// or dropped after the [`slow_call`](Self::slow_call) threshold, counts
    /// as a failure and a slow call: that is how a dependency that hangs
    /// trips the breaker.
    #[must_use]
    pub fn cancel_is_failure(mut self, yes: bool) -> Self {
        self.cancel_is_failure = yes;
        self
    }

    /// What counts as a failure (default [`DefaultClassify`]: errors other
    /// than our own rejections; `HttpClassify` for HTTP services).
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerBuilder<C2> {
        CircuitBreakerBuilder {
            window: self.window,
            failure_rate: self.failure_rate,
            slow_rate: self.slow_rate,
            slow_call: self.slow_call,
            minimum_calls: self.minimum_calls,
            open_duration: self.open_duration,
            backoff: self.backoff,
            half_open_calls: self.half_open_calls,
            half_open_max_wait: self.half_open_max_wait,
            metrics_only: self.metrics_only,
            cancel_is_failure: self.cancel_is_failure,
            classify,
            listener: self.listener,
            seed: self.seed,
            name: self.name,
        }
    }

    /// Called on every state change with `(from, to)`.
    #[must_use]
    pub fn on_state_change(mut self, f: impl Fn(State, State) + Send + Sync + 'static) -> Self {
        self.listener = Some(Box::new(f));
        self
    }

    /// Seeds the backoff jitter, for reproducible tests.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The instance name, in rejections, logs and metric labels.
    #[must_use]
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        let rate_ok = |r: f64| r.is_finite() && r > 0.0 && r <= 1.0;
        if !rate_ok(self.failure_rate) {
            return Err(ConfigError::new(
                LAYER,
                "failure_rate",
                format!("must be in (0, 1], got {}", self.failure_rate),
            ));
        }
        if !rate_ok(self.slow_rate) {
            return Err(ConfigError::new(
                LAYER,
                "slow_call",
                format!("rate must be in (0, 1], got {}", self.slow_rate),
            ));
        }
        if self.slow_call.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(LAYER, "slow_call", "duration must be greater than zero"));
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::new(LAYER, "minimum_calls", "must be at least 1"));
        }
        if self.open_duration.is_zero() {
            return Err(ConfigError::new(LAYER, "open_duration", "must be greater than zero"));
        }
        if self.half_open_calls == 0 {
            return Err(ConfigError::new(LAYER, "half_open_calls", "must be at least 1"));
        }
        if self.half_open_max_wait.is_zero() {
            return Err(ConfigError::new(LAYER, "half_open_max_wait", "must be greater than zero"));
        }
        if let Some(b) = self.backoff {
            if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
                return Err(ConfigError::new(LAYER, "backoff.multiplier", "must be at least 1"));
            }
            if b.max < self.open_duration {
                return Err(ConfigError::new(
                    LAYER,
                    "backoff.max",
                    "must be at least open_duration",
                ));
            }
            if !(b.jitter.is_finite() && (0.0..1.0).contains(&b.jitter)) {
                return Err(ConfigError::new(LAYER, "backoff.jitter", "must be in [0, 1)"));
            }
        }
        let window = match self.window {
            SlidingWindow::Calls(n) if n == 0 || n > MAX_COUNT_WINDOW => {
                return Err(ConfigError::new(
                    LAYER,
                    "window",
                    format!("calls must be within 1..={MAX_COUNT_WINDOW}"),
                ));
            }
            SlidingWindow::Calls(n) => {
                if self.minimum_calls > n as u64 {
                    return Err(ConfigError::new(
                        LAYER,
                        "minimum_calls",
                        "must not exceed the window's calls",
                    ));
                }
                Window::Count(CountWindow::new(n))
            }
            SlidingWindow::Time { bucket, buckets } => {
                if bucket.is_zero() || buckets == 0 || buckets > 3_600 {
                    return Err(ConfigError::new(
                        LAYER,
                        "window",
                        "needs a bucket > 0 and 1..=3600 buckets",
                    ));
                }
                Window::Time(TimeWindow::new(buckets, duration_nanos(bucket)))
            }
        };
        let seed = self.seed.unwrap_or_else(|| RandomState::new().hash_one(0u8));
        let config = Config {
            failure_rate: self.failure_rate,
            slow_rate: self.slow_rate,
            slow_call: self.slow_call,
            minimum_calls: self.minimum_calls,
            open_duration: self.open_duration,
            backoff: self.backoff,
            half_open_calls: self.half_open_calls,
            half_open_max_wait: self.half_open_max_wait,
            metrics_only: self.metrics_only,
            cancel_is_failure: self.cancel_is_failure,
        };
        let name = self.name.unwrap_or(LayerName::from_static(LAYER));
        let shared = Arc::new(Shared::new(config, window, self.listener, name, seed));
        #[cfg(feature = "metrics")]
        backpressure_core::metrics::register(&shared);
        Ok(CircuitBreakerLayer { shared: StripedArc::new(shared), classify: self.classify })
    }
}
