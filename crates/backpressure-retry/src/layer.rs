//! The retry layer, its builder and its handle.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use backpressure_core::{ConfigError, Draw, LayerName};
use tower_layer::Layer;

use crate::{Backoff, Retry, RetryBudget, RetryBudgetSnapshot};

pub(crate) struct Shared<P> {
    pub(crate) policy: P,
    pub(crate) budget: RetryBudget,
    pub(crate) backoff: Backoff,
    pub(crate) max_attempts: u32,
    pub(crate) max_retry_after: Duration,
    pub(crate) min_attempt_time: Duration,
    pub(crate) draw: Draw,
    /// Counters, and the layer's name.
    pub(crate) counters: Arc<Counters>,
}

#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) name: LayerName,
    pub(crate) attempts: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) denied_budget: AtomicU64,
    pub(crate) denied_deadline: AtomicU64,
    pub(crate) denied_pushback: AtomicU64,
    #[cfg(feature = "metrics")]
    pub(crate) published: crate::metrics::Published,
}

impl Counters {
    fn new(name: LayerName) -> Arc<Self> {
        let counters = Arc::new(Counters {
            name,
            attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            denied_budget: AtomicU64::new(0),
            denied_deadline: AtomicU64::new(0),
            denied_pushback: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            published: crate::metrics::Published::default(),
        });
        #[cfg(feature = "metrics")]
        backpressure_core::metrics::register(&counters);
        counters
    }
}

/// Retries failed requests, within a [`RetryBudget`], with capped
/// exponential backoff and full jitter, never past the request's deadline.
///
/// Place it below the timeout (the deadline covers every attempt, and the
/// retry layer reads it through [`Deadline::current`]) and above the
/// breaker, the concurrency limit and the rate limit (each attempt passes
/// them again). Each attempt runs in the deadline's scope, so a deadline
/// propagation layer further in writes the budget that is *left* into the
/// retried request.
///
/// [`Deadline::current`]: backpressure_core::Deadline::current
///
/// ```
/// # #[cfg(feature = "http")] {
/// use std::time::Duration;
/// use backpressure_retry::{Backoff, HttpRetry, RetryBudget, RetryLayer};
///
/// let retry = RetryLayer::builder(HttpRetry::new())
///     .max_attempts(3)
///     .backoff(Backoff::new(Duration::from_millis(20), Duration::from_millis(500))?)
///     .budget(RetryBudget::builder().ratio(0.2).build()?)
///     .build()?;
/// # let _ = retry;
/// # }
/// # Ok::<(), backpressure_core::ConfigError>(())
/// ```
pub struct RetryLayer<P> {
    shared: Arc<Shared<P>>,
}

impl<P> Clone for RetryLayer<P> {
    fn clone(&self) -> Self {
        RetryLayer { shared: Arc::clone(&self.shared) }
    }
}

impl<P> fmt::Debug for RetryLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("name", &self.shared.counters.name)
            .field("max_attempts", &self.shared.max_attempts)
            .field("backoff", &self.shared.backoff)
            .field("budget", &self.shared.budget)
            .finish_non_exhaustive()
    }
}

impl<P> RetryLayer<P> {
    /// Up to 3 attempts, 25 ms → 1 s backoff, a fresh default budget (10 %
    /// plus 1/s).
    pub fn new(policy: P) -> Self {
        RetryLayer::builder(policy).build().expect("the defaults are valid")
    }

    /// A layer to configure.
    pub fn builder(policy: P) -> RetryBuilder<P> {
        RetryBuilder {
            policy,
            budget: None,
            backoff: Backoff::default(),
            max_attempts: 3,
            max_retry_after: Duration::from_secs(30),
            min_attempt_time: Duration::from_millis(10),
            seed: None,
            name: LayerName::from("retry"),
        }
    }

    /// Counters, for dashboards and tests.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            counters: Arc::clone(&self.shared.counters),
            budget: self.shared.budget.clone(),
        }
    }
}

impl<S, P> Layer<S> for RetryLayer<P> {
    type Service = Retry<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, Arc::clone(&self.shared))
    }
}

/// Builds a [`RetryLayer`].
#[derive(Debug)]
pub struct RetryBuilder<P> {
    policy: P,
    budget: Option<RetryBudget>,
    backoff: Backoff,
    max_attempts: u32,
    max_retry_after: Duration,
    min_attempt_time: Duration,
    seed: Option<u64>,
    name: LayerName,
}

impl<P> RetryBuilder<P> {
    /// Attempts per request, the first included, 1 to 10. Default 3.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The backoff between attempts. Default 25 ms doubling to 1 s.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The budget; share one among all clients of an upstream. Default: a
    /// fresh [`RetryBudget::new`] for this layer.
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The longest `Retry-After` worth waiting for when the request has no
    /// deadline; a longer one ends the retries. Default 30 s.
    #[must_use]
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The least time a retry must have left before the request's deadline,
    /// after its backoff, to be sent at all (default 10 ms). An attempt with
    /// less would be refused by a send-deadline margin below (the client
    /// preset's is 5 ms) or cut at once; then its refusal would replace the
    /// answer the request already had (a 504, say) with a bare
    /// `DeadlineExceeded`.
    #[must_use]
    pub fn min_attempt_time(mut self, min: Duration) -> Self {
        self.min_attempt_time = min;
        self
    }

    /// Seeds the jitter, for reproducible runs. Default: random.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The layer's name in logs and metrics. Default `"retry"`.
    #[must_use]
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<RetryLayer<P>, ConfigError> {
        if !(1..=10).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "retry",
                "max_attempts",
                format!("must be in 1..=10, got {}", self.max_attempts),
            ));
        }
        Ok(RetryLayer {
            shared: Arc::new(Shared {
                policy: self.policy,
                budget: self.budget.unwrap_or_default(),
                backoff: self.backoff,
                max_attempts: self.max_attempts,
                max_retry_after: self.max_retry_after,
                min_attempt_time: self.min_attempt_time,
                draw: self.seed.map_or_else(Draw::from_entropy, Draw::new),
                counters: Counters::new(self.name),
            }),
        })
    }
}

/// Reads a [`RetryLayer`]'s counters.
#[derive(Clone)]
pub struct RetryHandle {
    counters: Arc<Counters>,
    budget: RetryBudget,
}

impl fmt::Debug for RetryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RetryHandle").field(&self.snapshot()).finish()
    }
}

impl RetryHandle {
    /// The counters now.
    pub fn snapshot(&self) -> RetrySnapshot {
        let c = &*self.counters;
        RetrySnapshot {
            attempts: c.attempts.load(Relaxed),
            retries: c.retries.load(Relaxed),
            denied_by_budget: c.denied_budget.load(Relaxed),
            denied_by_deadline: c.denied_deadline.load(Relaxed),
            denied_by_pushback: c.denied_pushback.load(Relaxed),
            budget: self.budget.snapshot(),
        }
    }
}

/// A [`RetryLayer`]'s counters.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetrySnapshot {
    /// Attempts sent to the inner service, first attempts included.
    pub attempts: u64,
    /// Retries sent.
    pub retries: u64,
    /// Retries the budget refused (the result went back to the caller).
    pub denied_by_budget: u64,
    /// Retries not sent because the backoff would end past the deadline.
    pub denied_by_deadline: u64,
    /// Retries not sent because the upstream's `Retry-After` exceeded
    /// `max_retry_after`.
    pub denied_by_pushback: u64,
    /// The budget's own counters (shared with other layers using it).
    pub budget: RetryBudgetSnapshot,
}
