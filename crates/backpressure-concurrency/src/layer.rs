use crate::Release;
use std::{fmt, sync::Arc, time::Duration};

use backpressure_core::{
    ConfigError, CurrentDeadline, DefaultClassify, DefaultPriority, LayerName, Priority,
    stripe::StripedArc,
};
use tower_layer::Layer;

use crate::{
    ConcurrencyLimit, ConcurrencyLimitHandle, Discipline,
    algorithm::LimitAlgorithm,
    shared::{Config, Shared},
};

const LAYER: &str = "concurrency-limit";

/// Applies [`ConcurrencyLimit`]: one limit shared by every service this
/// layer value (and its clones) builds.
///
/// The state lives in an `Arc` created when the layer is built, not in
/// [`Layer::layer`]: axum calls `layer` once per connection and clones routes
/// per request, and a limit created there (as tower's is) limits nothing.
pub struct ConcurrencyLimitLayer<
    P = DefaultPriority,
    D = CurrentDeadline,
    C = DefaultClassify,
    H = Release,
> {
    shared: StripedArc<Shared>,
    priority: P,
    deadline: D,
    classify: C,
    hold: H,
}

impl ConcurrencyLimitLayer {
    /// A fixed limit of `limit` requests at once, with the default queue:
    /// up to `limit` waiters, each for at most 1 s (and never past its
    /// deadline), served oldest first.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `limit` if it is zero.
    pub fn new(limit: usize) -> Result<Self, ConfigError> {
        Self::builder().limit(limit).build()
    }

    /// A builder for every option: adaptive limits, queue size and
    /// discipline, priorities, deadlines, classification.
    pub fn builder() -> ConcurrencyLimitBuilder {
        ConcurrencyLimitBuilder {
            limit: None,
            max_queue: None,
            max_wait: Duration::from_secs(1),
            discipline: Discipline::default(),
            shares: DEFAULT_SHARES,
            priority: DefaultPriority,
            deadline: CurrentDeadline,
            classify: DefaultClassify,
            name: None,
            cancel_is_drop: false,
            max_sample_every: DEFAULT_MAX_SAMPLE_EVERY,
        }
    }
}

impl<P, D, C, H> ConcurrencyLimitLayer<P, D, C, H> {
    /// A handle to observe the limiter: current limit, in-flight, queue,
    /// rejections.
    pub fn handle(&self) -> ConcurrencyLimitHandle {
        ConcurrencyLimitHandle::new(Arc::clone(self.shared.shared()))
    }

    /// How requests' priorities are found.
    pub fn priority_source(&self) -> &P {
        &self.priority
    }

    /// The same limit (the same shared state) with priorities found by
    /// `priority` instead.
    pub fn with_priority<P2>(self, priority: P2) -> ConcurrencyLimitLayer<P2, D, C, H> {
        ConcurrencyLimitLayer {
            shared: self.shared,
            priority,
            deadline: self.deadline,
            classify: self.classify,
            hold: self.hold,
        }
    }

    /// The longest a request may wait in the queue.
    pub fn max_wait(&self) -> Duration {
        self.shared.max_wait
    }

    /// Keeps each request's permit until its `http::Response`'s body has
    /// ended or been dropped, instead of releasing it when the response's
    /// headers are ready (feature `http`). For streaming and server-sent
    /// events: otherwise a limit of 10 lets any number of long streams run
    /// at once (tower-http#447). The adaptive algorithms still time the
    /// request to its headers.
    #[cfg(feature = "http")]
    pub fn hold_until_body_end(self) -> ConcurrencyLimitLayer<P, D, C, crate::HoldUntilBodyEnd> {
        ConcurrencyLimitLayer {
            shared: self.shared,
            priority: self.priority,
            deadline: self.deadline,
            classify: self.classify,
            hold: crate::HoldUntilBodyEnd,
        }
    }
}

impl<P: Clone, D: Clone, C: Clone, H: Clone> Clone for ConcurrencyLimitLayer<P, D, C, H> {
    fn clone(&self) -> Self {
        ConcurrencyLimitLayer {
            shared: self.shared.clone(),
            priority: self.priority.clone(),
            deadline: self.deadline.clone(),
            classify: self.classify.clone(),
            hold: self.hold.clone(),
        }
    }
}

impl<P, D, C, H> fmt::Debug for ConcurrencyLimitLayer<P, D, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("handle", &self.handle())
            .finish_non_exhaustive()
    }
}

impl<S, P: Clone, D: Clone, C: Clone, H: Clone> Layer<S> for ConcurrencyLimitLayer<P, D, C, H> {
    type Service = ConcurrencyLimit<S, P, D, C, H>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::from_parts(
            inner,
            self.shared.clone(),
            self.priority.clone(),
            self.deadline.clone(),
            self.classify.clone(),
            self.hold.clone(),
        )
    }
}

/// Default share of the limit per priority, in percent, indexed by
/// [`Priority::index`]: 100 for every priority — the limiter is
/// work-conserving, and priorities act through the queue's order (a
/// waiting critical request gets the next permit) and the load shedder.
///
/// A share below 100 reserves permits for higher priorities even when
/// nobody needs them: the first defaults (`Sheddable` 50, `SheddablePlus`
/// 75) left half the backend idle under a sheddable flood in the overload
/// lab's priority scenario (goodput 54 % of capacity, critical traffic
/// served 100 % either way). Set shares only when critical traffic must
/// never wait for a permit at all.
pub const DEFAULT_SHARES: [u8; 4] = [100, 100, 100, 100];

enum LimitKind {
    Fixed(usize),
    Adaptive(Box<dyn LimitAlgorithm>),
}

/// Builds a [`ConcurrencyLimitLayer`]; see [`ConcurrencyLimitLayer::builder`].
///
/// ```
/// use std::time::Duration;
/// use backpressure_concurrency::{ConcurrencyLimitLayer, Discipline, Gradient2};
/// use backpressure_core::Priority;
///
/// let layer = ConcurrencyLimitLayer::builder()
///     .adaptive(Gradient2::new().initial_limit(20).max_limit(500))
///     .max_queue(100)
///     .max_wait(Duration::from_millis(200))
///     .discipline(Discipline::codel())
///     .priority(|job: &(Priority, u32)| job.0)
///     .priority_share(Priority::Sheddable, 40)
///     .name("db")
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), backpressure_core::ConfigError>(())
/// ```
pub struct ConcurrencyLimitBuilder<P = DefaultPriority, D = CurrentDeadline, C = DefaultClassify> {
    limit: Option<LimitKind>,
    max_queue: Option<usize>,
    max_wait: Duration,
    discipline: Discipline,
    shares: [u8; 4],
    priority: P,
    deadline: D,
    classify: C,
    name: Option<LayerName>,
    cancel_is_drop: bool,
    max_sample_every: u32,
}

impl<P, D, C> fmt::Debug for ConcurrencyLimitBuilder<P, D, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitBuilder")
            .field("max_queue", &self.max_queue)
            .field("max_wait", &self.max_wait)
            .field("discipline", &self.discipline)
            .field("shares", &self.shares)
            .finish_non_exhaustive()
    }
}

impl<P, D, C> ConcurrencyLimitBuilder<P, D, C> {
    /// A fixed limit.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(LimitKind::Fixed(limit));
        self
    }

    /// A limit driven by an algorithm: [`Gradient2`](crate::Gradient2)
    /// (servers), [`Aimd`](crate::Aimd) (clients), [`Vegas`](crate::Vegas),
    /// or your own [`LimitAlgorithm`].
    #[must_use]
    pub fn adaptive(mut self, algorithm: impl LimitAlgorithm) -> Self {
        self.limit = Some(LimitKind::Adaptive(Box::new(algorithm)));
        self
    }

    /// Most requests waiting for a permit (default: the initial limit).
    /// Zero rejects at once instead of queuing.
    #[must_use]
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = Some(max_queue);
        self
    }

    /// Longest a request waits for a permit (default 1 s). A request never
    /// waits past its deadline either.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How the queue orders and cuts its waiters (default
    /// [`Discipline::codel()`]: FIFO while the queue drains, so bursts are
    /// absorbed, and no request waits long behind a queue that stands
    /// under sustained overload). [`Discipline::Fifo`] keeps every waiter's
    /// `max_wait` whatever happens.
    #[must_use]
    pub fn discipline(mut self, discipline: Discipline) -> Self {
        self.discipline = discipline;
        self
    }

    /// The percentage of the limit that requests of `priority` may hold
    /// (see [`DEFAULT_SHARES`]). Shares must not decrease with priority.
    #[must_use]
    pub fn priority_share(mut self, priority: Priority, percent: u8) -> Self {
        self.shares[priority.index()] = percent;
        self
    }

    /// How a request's [`Priority`] is found (default: every request is
    /// `Critical`). Any `Fn(&Req) -> Priority`.
    pub fn priority<P2>(self, priority: P2) -> ConcurrencyLimitBuilder<P2, D, C> {
        ConcurrencyLimitBuilder {
            limit: self.limit,
            max_queue: self.max_queue,
            max_wait: self.max_wait,
            discipline: self.discipline,
            shares: self.shares,
            priority,
            deadline: self.deadline,
            classify: self.classify,
            name: self.name,
            cancel_is_drop: self.cancel_is_drop,
            max_sample_every: self.max_sample_every,
        }
    }

    /// How a request's deadline is found (default: the one an outer layer
    /// put in scope, [`CurrentDeadline`]). Any
    /// `Fn(&Req) -> Option<Deadline>`.
    pub fn deadline<D2>(self, deadline: D2) -> ConcurrencyLimitBuilder<P, D2, C> {
        ConcurrencyLimitBuilder {
            limit: self.limit,
            max_queue: self.max_queue,
            max_wait: self.max_wait,
            discipline: self.discipline,
            shares: self.shares,
            priority: self.priority,
            deadline,
            classify: self.classify,
            name: self.name,
            cancel_is_drop: self.cancel_is_drop,
            max_sample_every: self.max_sample_every,
        }
    }

    /// What counts as a drop for an adaptive limit (default:
    /// [`DefaultClassify`]; use `HttpClassify` for HTTP services).
    pub fn classify<C2>(self, classify: C2) -> ConcurrencyLimitBuilder<P, D, C2> {
        ConcurrencyLimitBuilder {
            limit: self.limit,
            max_queue: self.max_queue,
            max_wait: self.max_wait,
            discipline: self.discipline,
            shares: self.shares,
            priority: self.priority,
            deadline: self.deadline,
            classify,
            name: self.name,
            cancel_is_drop: self.cancel_is_drop,
            max_sample_every: self.max_sample_every,
        }
    }

    /// The instance name, in rejections, logs and metric labels.
    #[must_use]
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether a request whose future is dropped before completing *for a
    /// reason other than its deadline* — most often, the client went away —
    /// counts as a drop for an adaptive limit (default false: a client
    /// hanging up says nothing about capacity, and counting it pinned the
    /// limit to its floor under any steady trickle of hang-ups).
    ///
    /// Whatever this says, a request dropped because its deadline passed
    /// (the timeout layer above cut it, inside
    /// [`Deadline::expired_scope`](backpressure_core::Deadline::expired_scope))
    /// is a drop.
    #[must_use]
    pub fn cancel_is_drop(mut self, yes: bool) -> Self {
        self.cancel_is_drop = yes;
        self
    }

    /// An adaptive limit's sparsest sampling: above about 20,000 completed
    /// requests a second it measures one request in `k` (a power of two up
    /// to this, default 64), so that it reads the clock and feeds its
    /// algorithm about 10,000 times a second however fast requests go (see
    /// [`ConcurrencyLimitSnapshot::sample_every`](crate::ConcurrencyLimitSnapshot::sample_every)).
    /// 1 measures every request (an algorithm of your own that must see
    /// each one).
    #[must_use]
    pub fn max_sample_every(mut self, k: u32) -> Self {
        self.max_sample_every = k;
        self
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    pub fn build(self) -> Result<ConcurrencyLimitLayer<P, D, C>, ConfigError> {
        let (limit, algorithm, max_limit) = match self.limit {
            None => {
                return Err(ConfigError::new(
                    LAYER,
                    "limit",
                    "is required: set a fixed `limit` or an `adaptive` algorithm",
                ));
            }
            Some(LimitKind::Fixed(0)) => {
                return Err(ConfigError::new(LAYER, "limit", "must be at least 1"));
            }
            Some(LimitKind::Fixed(n)) => (n, None, n),
            Some(LimitKind::Adaptive(alg)) => {
                alg.validate()?;
                (alg.initial_limit(), Some(alg), 0)
            }
        };
        let max_limit = algorithm.as_ref().map_or(max_limit, |a| a.max_limit());
        if max_limit > MAX_LIMIT {
            return Err(ConfigError::new(LAYER, "limit", format!("must be at most {MAX_LIMIT}")));
        }
        let max_queue = self.max_queue.unwrap_or(limit);
        if max_queue > MAX_QUEUE {
            return Err(ConfigError::new(
                LAYER,
                "max_queue",
                format!("must be at most {MAX_QUEUE}"),
            ));
        }
        if max_queue > 0 && self.max_wait.is_zero() {
            return Err(ConfigError::new(
                LAYER,
                "max_wait",
                "must be greater than zero when max_queue > 0 (set max_queue(0) to reject instead of queuing)",
            ));
        }
        if let Discipline::Codel { target, interval, .. } = self.discipline {
            if target.is_zero() {
                return Err(ConfigError::new(
                    LAYER,
                    "discipline.target",
                    "must be greater than zero",
                ));
            }
            if interval.is_zero() {
                return Err(ConfigError::new(
                    LAYER,
                    "discipline.interval",
                    "must be greater than zero",
                ));
            }
        }
        if !self.max_sample_every.is_power_of_two() || self.max_sample_every > 1024 {
            return Err(ConfigError::new(
                LAYER,
                "max_sample_every",
                format!("must be a power of two within 1..=1024, got {}", self.max_sample_every),
            ));
        }
        for (i, &share) in self.shares.iter().enumerate() {
            if share == 0 || share > 100 {
                return Err(ConfigError::new(
                    LAYER,
                    "priority_share",
                    format!("{} must be within 1..=100 percent, got {share}", Priority::ALL[i]),
                ));
            }
            if i > 0 && share < self.shares[i - 1] {
                return Err(ConfigError::new(
                    LAYER,
                    "priority_share",
                    format!(
                        "must not decrease with priority: {} has {share} % but {} has {} %",
                        Priority::ALL[i],
                        Priority::ALL[i - 1],
                        self.shares[i - 1]
                    ),
                ));
            }
        }
        let shared = Shared::new(Config {
            limit,
            shares: self.shares,
            max_queue,
            max_wait: self.max_wait,
            discipline: self.discipline,
            algorithm,
            cancel_is_drop: self.cancel_is_drop,
            max_sample_every: self.max_sample_every,
            name: self.name.unwrap_or(LayerName::from_static(LAYER)),
        });
        let shared = Arc::new(shared);
        #[cfg(feature = "metrics")]
        backpressure_core::metrics::register(&shared);
        Ok(ConcurrencyLimitLayer {
            shared: StripedArc::new(shared),
            priority: self.priority,
            deadline: self.deadline,
            classify: self.classify,
            hold: Release,
        })
    }
}

/// [`ConcurrencyLimitBuilder::max_sample_every`]'s default.
const DEFAULT_MAX_SAMPLE_EVERY: u32 = 64;

/// The largest limit accepted (bounds the waiter slab).
const MAX_LIMIT: usize = 1 << 20;
/// The largest queue accepted.
const MAX_QUEUE: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Gradient2;

    fn field<P, D, C>(r: Result<ConcurrencyLimitLayer<P, D, C>, ConfigError>) -> &'static str {
        r.expect_err("invalid").field()
    }

    #[test]
    fn invalid_configurations_name_their_field() {
        assert_eq!(field(ConcurrencyLimitLayer::new(0)), "limit");
        assert_eq!(field(ConcurrencyLimitLayer::builder().build()), "limit");
        assert_eq!(
            field(ConcurrencyLimitLayer::builder().limit(5).max_wait(Duration::ZERO).build()),
            "max_wait"
        );
        assert_eq!(
            field(
                ConcurrencyLimitLayer::builder()
                    .limit(5)
                    .priority_share(Priority::Sheddable, 0)
                    .build()
            ),
            "priority_share"
        );
        assert_eq!(
            field(
                ConcurrencyLimitLayer::builder()
                    .limit(5)
                    .priority_share(Priority::Critical, 40)
                    .build()
            ),
            "priority_share"
        );
        assert_eq!(
            field(
                ConcurrencyLimitLayer::builder().adaptive(Gradient2::new().smoothing(2.0)).build()
            ),
            "smoothing"
        );
        assert_eq!(
            field(ConcurrencyLimitLayer::builder().limit(5).max_queue(usize::MAX).build()),
            "max_queue"
        );
        // Zero queue with zero wait is fine: it rejects instead of queuing.
        assert!(
            ConcurrencyLimitLayer::builder()
                .limit(5)
                .max_queue(0)
                .max_wait(Duration::ZERO)
                .build()
                .is_ok()
        );
    }
}
