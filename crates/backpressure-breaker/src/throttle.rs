//! Adaptive client-side throttling, after Google SRE's "Handling Overload".

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use backpressure_core::{
    BoxError, Classify, ConfigError, DefaultClassify, Draw, LayerName, RejectKind, Rejected,
};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::{state::duration_nanos, window::TimeWindow};

const LAYER: &str = "adaptive-throttle";

struct Shared {
    // calls = requests attempted (including those rejected here); the
    // "failures" field counts accepts.
    window: TimeWindow,
    k: f64,
    max_probability: f64,
    min_requests: u64,
    epoch: Instant,
    rng: Draw,
    rejected: AtomicU64,
    name: LayerName,
    #[cfg(feature = "metrics")]
    metrics: ThrottleMetrics,
}

/// Requests counted per core, and what was published.
#[cfg(feature = "metrics")]
#[derive(Default)]
struct ThrottleMetrics {
    requests: backpressure_core::metrics::Counts<1>,
    published: [backpressure_core::metrics::Published; 2],
}

/// | name | kind | labels |
/// |---|---|---|
/// | `backpressure_throttle_requests_total` | counter | `name` |
/// | `backpressure_throttle_rejected_total` | counter | `name`, `reason` (`throttled`) |
/// | `backpressure_throttle_probability` | gauge: the chance the next request is rejected locally | `name` |
#[cfg(feature = "metrics")]
impl backpressure_core::metrics::Publish for Shared {
    fn publish(&self) {
        use metrics::{Unit, describe_counter, describe_gauge};
        describe_counter!(
            "backpressure_throttle_requests_total",
            Unit::Count,
            "Requests that reached the client-side adaptive throttle."
        );
        describe_counter!(
            "backpressure_throttle_rejected_total",
            Unit::Count,
            "Requests the adaptive throttle rejected before they left, by reason."
        );
        describe_gauge!(
            "backpressure_throttle_probability",
            Unit::Count,
            "The probability that the adaptive throttle rejects the next request."
        );
        let name = self.name.to_string();
        let p = &self.metrics.published;
        metrics::counter!("backpressure_throttle_requests_total", "name" => name.clone())
            .increment(p[0].since(self.metrics.requests.get(0)));
        metrics::counter!("backpressure_throttle_rejected_total", "name" => name.clone(), "reason" => "throttled")
            .increment(p[1].since(self.rejected.load(Relaxed)));
        let (requests, accepts) = self.counts(self.now());
        metrics::gauge!("backpressure_throttle_probability", "name" => name)
            .set(self.probability(requests, accepts));
    }
}

/// What was counted since the last publication is published as the layer
/// goes.
#[cfg(feature = "metrics")]
impl Drop for Shared {
    fn drop(&mut self) {
        backpressure_core::metrics::Publish::publish(self);
    }
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(Instant::now().saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
    }

    fn counts(&self, now: u64) -> (u64, u64) {
        let c = self.window.counts(now);
        (c.calls, c.failures)
    }

    fn probability(&self, requests: u64, accepts: u64) -> f64 {
        if requests < self.min_requests {
            return 0.0;
        }
        let p = (requests as f64 - self.k * accepts as f64) / (requests as f64 + 1.0);
        p.clamp(0.0, self.max_probability)
    }
}

/// Sheds requests on the client, before they leave, in proportion to how
/// much the backend has been refusing lately.
///
/// Over a sliding window (default 2 minutes) it counts `requests` (every
/// attempt, including those it rejected itself) and `accepts` (calls the
/// backend answered with anything but a failure per the classifier), and
/// rejects a new request locally with probability
/// `max(0, (requests − K·accepts) / (requests + 1))`, K default 2, capped at
/// `max_probability`. While the backend accepts more than 1/K of requests
/// nothing is shed; below that, the client sends roughly K times what the
/// backend accepts, smoothly, with no threshold to tune per service.
///
/// ```
/// use backpressure_breaker::AdaptiveThrottleLayer;
///
/// let throttle = AdaptiveThrottleLayer::builder().k(2.0).max_probability(0.9).build()?;
/// # let _ = throttle;
/// # Ok::<(), backpressure_core::ConfigError>(())
/// ```
pub struct AdaptiveThrottleLayer<C = DefaultClassify> {
    shared: Arc<Shared>,
    classify: C,
}

/// [`AdaptiveThrottleLayer::new`]: the defaults.
impl Default for AdaptiveThrottleLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl AdaptiveThrottleLayer {
    /// The SRE book's defaults: K = 2, a 2-minute window, no cap.
    pub fn new() -> Self {
        Self::builder().build().expect("the defaults are valid (tested)")
    }

    /// A builder.
    pub fn builder() -> AdaptiveThrottleBuilder {
        AdaptiveThrottleBuilder {
            k: 2.0,
            window: Duration::from_secs(120),
            buckets: 24,
            max_probability: 1.0,
            min_requests: 0,
            classify: DefaultClassify,
            seed: None,
            name: None,
        }
    }
}

impl<C> AdaptiveThrottleLayer<C> {
    /// A handle: counts and the current rejection probability.
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle { shared: Arc::clone(&self.shared) }
    }
}

impl<C: Clone> Clone for AdaptiveThrottleLayer<C> {
    fn clone(&self) -> Self {
        AdaptiveThrottleLayer { shared: Arc::clone(&self.shared), classify: self.classify.clone() }
    }
}

impl<C> fmt::Debug for AdaptiveThrottleLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottleLayer")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for AdaptiveThrottleLayer<C> {
    type Service = AdaptiveThrottle<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveThrottle {
            inner,
            shared: Arc::clone(&self.shared),
            classify: self.classify.clone(),
        }
    }
}

/// Builds an [`AdaptiveThrottleLayer`].
pub struct AdaptiveThrottleBuilder<C = DefaultClassify> {
    k: f64,
    window: Duration,
    buckets: usize,
    max_probability: f64,
    min_requests: u64,
    classify: C,
    seed: Option<u64>,
    name: Option<LayerName>,
}

impl<C> fmt::Debug for AdaptiveThrottleBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottleBuilder")
            .field("k", &self.k)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl<C> AdaptiveThrottleBuilder<C> {
    /// The multiplier K (≥ 1, default 2): lower sheds earlier.
    #[must_use]
    pub fn k(mut self, k: f64) -> Self {
        self.k = k;
        self
    }

    /// The sliding window (default 2 minutes, in 24 buckets).
    #[must_use]
    pub fn window(mut self, window: Duration, buckets: usize) -> Self {
        self.window = window;
        self.buckets = buckets;
        self
    }

    /// The highest rejection probability (0 < p ≤ 1, default 1): a cap below
    /// 1 keeps a trickle of requests probing a backend that refuses
    /// everything.
    #[must_use]
    pub fn max_probability(mut self, p: f64) -> Self {
        self.max_probability = p;
        self
    }

    /// No local rejection until the window holds at least this many
    /// requests (default 0, the SRE book's formula as is). With few
    /// requests the formula is harsh — one refusal out of one request gives
    /// p = 0.5 — so a client's first failure would throttle half its next
    /// requests; the client preset uses 20.
    #[must_use]
    pub fn min_requests(mut self, min: u64) -> Self {
        self.min_requests = min;
        self
    }

    /// What counts as a refusal (default [`DefaultClassify`]; `HttpClassify`
    /// makes 429 and 5xx refusals).
    pub fn classify<C2>(self, classify: C2) -> AdaptiveThrottleBuilder<C2> {
        AdaptiveThrottleBuilder {
            k: self.k,
            window: self.window,
            buckets: self.buckets,
            max_probability: self.max_probability,
            min_requests: self.min_requests,
            classify,
            seed: self.seed,
            name: self.name,
        }
    }

    /// Seeds the draws, for reproducible tests.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The instance name.
    #[must_use]
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Validates and builds.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `k`, `window` or `max_probability`.
    pub fn build(self) -> Result<AdaptiveThrottleLayer<C>, ConfigError> {
        if !(self.k.is_finite() && self.k >= 1.0) {
            return Err(ConfigError::new(
                LAYER,
                "k",
                format!("must be at least 1, got {}", self.k),
            ));
        }
        if self.buckets == 0
            || self.buckets > 3_600
            || self.window < Duration::from_millis(self.buckets as u64)
        {
            return Err(ConfigError::new(
                LAYER,
                "window",
                "needs 1..=3600 buckets of at least 1 ms",
            ));
        }
        if !(self.max_probability.is_finite()
            && self.max_probability > 0.0
            && self.max_probability <= 1.0)
        {
            return Err(ConfigError::new(LAYER, "max_probability", "must be in (0, 1]"));
        }
        let width = duration_nanos(self.window) / self.buckets as u64;
        let shared = Arc::new(Shared {
            window: TimeWindow::new(self.buckets, width),
            k: self.k,
            max_probability: self.max_probability,
            min_requests: self.min_requests,
            epoch: Instant::now(),
            rng: self.seed.map_or_else(Draw::from_entropy, Draw::new),
            rejected: AtomicU64::new(0),
            name: self.name.unwrap_or(LayerName::from_static(LAYER)),
            #[cfg(feature = "metrics")]
            metrics: ThrottleMetrics::default(),
        });
        #[cfg(feature = "metrics")]
        backpressure_core::metrics::register(&shared);
        Ok(AdaptiveThrottleLayer { shared, classify: self.classify })
    }
}

/// Observes an [`AdaptiveThrottleLayer`].
#[derive(Clone)]
pub struct ThrottleHandle {
    shared: Arc<Shared>,
}

impl ThrottleHandle {
    /// `(requests, accepts)` in the window now.
    pub fn counts(&self) -> (u64, u64) {
        self.shared.counts(self.shared.now())
    }

    /// The probability the next request is rejected locally.
    pub fn probability(&self) -> f64 {
        let (requests, accepts) = self.counts();
        self.shared.probability(requests, accepts)
    }

    /// Requests rejected locally so far.
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Relaxed)
    }
}

impl fmt::Debug for ThrottleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleHandle").field("name", &self.shared.name).finish_non_exhaustive()
    }
}

/// The service of [`AdaptiveThrottleLayer`].
pub struct AdaptiveThrottle<S, C> {
    inner: S,
    shared: Arc<Shared>,
    classify: C,
}

impl<S: Clone, C: Clone> Clone for AdaptiveThrottle<S, C> {
    fn clone(&self) -> Self {
        AdaptiveThrottle {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for AdaptiveThrottle<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottle").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for AdaptiveThrottle<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ThrottleFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        #[cfg(feature = "metrics")]
        shared.metrics.requests.add(0);
        let now = shared.now();
        let (requests, accepts) = shared.counts(now);
        let p = shared.probability(requests, accepts);
        shared.window.add_call(now);
        if p > 0.0 && shared.rng.next_f64() < p {
            shared.rejected.fetch_add(1, Relaxed);
            let error =
                Rejected::new(RejectKind::Overloaded).with_layer(shared.name.clone()).into();
            return ThrottleFuture { state: ThrottleState::Rejected { error: Some(error) } };
        }
        ThrottleFuture {
            state: ThrottleState::Called {
                fut: self.inner.call(req),
                shared: Arc::clone(&self.shared),
                classify: self.classify.clone(),
            },
        }
    }
}

pin_project! {
    /// The response future of [`AdaptiveThrottle`].
    pub struct ThrottleFuture<F, C> {
        #[pin]
        state: ThrottleState<F, C>,
    }
}

/// Opaque: what a future holds is the inner service's and the request's
/// business; `Debug` names the type so that stacks of layers can derive it.
impl<F, C> std::fmt::Debug for ThrottleFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThrottleFuture").finish_non_exhaustive()
    }
}

pin_project! {
    #[project = ThrottleProj]
    enum ThrottleState<F, C> {
        Called { #[pin] fut: F, shared: Arc<Shared>, classify: C },
        Rejected { error: Option<BoxError> },
    }
}

impl<F, C, T, E> Future for ThrottleFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            ThrottleProj::Called { fut, shared, classify } => {
                let result = ready!(fut.poll(cx));
                if !classify.classify(&result).is_failure() {
                    shared.window.add_failure_field(shared.now());
                }
                Poll::Ready(result.map_err(Into::into))
            }
            ThrottleProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "adaptive throttle future polled after completion".into()))),
        }
    }
}
