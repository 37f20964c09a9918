use std::{
    fmt,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use backpressure_core::{ConfigError, Extract, LayerName};
use tower_layer::Layer;

use crate::{DirectStore, KeyedStore, Quota, RateLimit, RateLimitHandle};

const LAYER: &str = "rate-limit";

/// One bucket for everything: the key extractor of a direct limiter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl<Req> Extract<Req> for Global {
    type Output = ();

    #[inline]
    fn extract(&self, _req: &Req) {}
}

/// Every request costs one unit: the default cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCost;

impl<Req> Extract<Req> for UnitCost {
    type Output = u32;

    #[inline]
    fn extract(&self, _req: &Req) -> u32 {
        1
    }
}

#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) name: LayerName,
    pub(crate) rejected: AtomicU64,
    pub(crate) shadow_rejected: AtomicU64,
    pub(crate) delayed: AtomicU64,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::metrics::Metrics,
}

impl Stats {
    fn new(name: LayerName) -> Arc<Self> {
        let stats = Arc::new(Stats {
            name,
            rejected: AtomicU64::new(0),
            shadow_rejected: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::Metrics::default(),
        });
        #[cfg(feature = "metrics")]
        backpressure_core::metrics::register(&stats);
        stats
    }

    /// Counts a request let through, shadow mode's included (for metrics).
    #[inline]
    pub(crate) fn admitted(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.admitted.add(0);
    }
}

pub(crate) struct Shared<St> {
    pub(crate) store: St,
    pub(crate) max_wait: Duration,
    pub(crate) shadow: bool,
    pub(crate) publish: bool,
    /// Counters, and the layer's name.
    pub(crate) stats: Arc<Stats>,
}

/// Applies [`RateLimit`]: GCRA rate limiting, one bucket (direct) or one per
/// key, shared by every service this layer value (and its clones) builds.
pub struct RateLimitLayer<E = Global, C = UnitCost, St = DirectStore> {
    shared: Arc<Shared<St>>,
    key: E,
    cost: C,
}

impl RateLimitLayer {
    /// One bucket for all requests, rejecting what exceeds `quota`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid quota field.
    pub fn new(quota: Quota) -> Result<Self, ConfigError> {
        Self::builder(quota).build()
    }

    /// A builder: keys, costs, bounded waiting, shadow mode, names.
    pub fn builder(quota: Quota) -> RateLimitBuilder<Global, UnitCost, Direct> {
        RateLimitBuilder {
            store: Direct { quota, fast_clock: false },
            key: Global,
            cost: UnitCost,
            max_wait: Duration::ZERO,
            shadow: false,
            publish: false,
            name: None,
        }
    }

    /// A builder over a store of your own (a shared Redis, say); the quota
    /// is the store's.
    pub fn with_store<St>(store: St) -> RateLimitBuilder<Global, UnitCost, Custom<St>> {
        RateLimitBuilder {
            store: Custom(store),
            key: Global,
            cost: UnitCost,
            max_wait: Duration::ZERO,
            shadow: false,
            publish: false,
            name: None,
        }
    }
}

impl<E, C, St> RateLimitLayer<E, C, St> {
    /// A handle to observe the limiter.
    pub fn handle(&self) -> RateLimitHandle<St> {
        RateLimitHandle::new(Arc::clone(&self.shared))
    }
}

impl<E: Clone, C: Clone, St> Clone for RateLimitLayer<E, C, St> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            shared: Arc::clone(&self.shared),
            key: self.key.clone(),
            cost: self.cost.clone(),
        }
    }
}

impl<E, C, St> fmt::Debug for RateLimitLayer<E, C, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("name", &self.shared.stats.name)
            .finish_non_exhaustive()
    }
}

impl<S, E: Clone, C: Clone, St> Layer<S> for RateLimitLayer<E, C, St> {
    type Service = RateLimit<S, E, C, St>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::from_parts(inner, Arc::clone(&self.shared), self.key.clone(), self.cost.clone())
    }
}

/// The store of a direct limiter, to be built.
#[derive(Debug, Clone, Copy)]
pub struct Direct {
    quota: Quota,
    fast_clock: bool,
}

/// The store of a keyed limiter, to be built.
#[derive(Debug, Clone, Copy)]
pub struct Keyed {
    quota: Quota,
    max_keys: usize,
    fast_clock: bool,
}

/// A store supplied by the user.
#[derive(Debug)]
pub struct Custom<St>(St);

/// How a builder makes its store.
pub trait StoreSpec {
    /// The store built.
    type Store;

    /// Builds it.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if the store's settings are invalid.
    fn build(self) -> Result<Self::Store, ConfigError>;
}

impl StoreSpec for Direct {
    type Store = DirectStore;

    fn build(self) -> Result<DirectStore, ConfigError> {
        let store = DirectStore::new(self.quota)?;
        #[cfg(feature = "fast-clock")]
        if self.fast_clock {
            return Ok(store.with_fast_clock());
        }
        let _ = self.fast_clock;
        Ok(store)
    }
}

impl StoreSpec for Keyed {
    type Store = KeyedStore;

    fn build(self) -> Result<KeyedStore, ConfigError> {
        let store = KeyedStore::new(self.quota, self.max_keys)?;
        #[cfg(feature = "fast-clock")]
        if self.fast_clock {
            return Ok(store.with_fast_clock());
        }
        let _ = self.fast_clock;
        Ok(store)
    }
}

impl<St> StoreSpec for Custom<St> {
    type Store = St;

    fn build(self) -> Result<St, ConfigError> {
        Ok(self.0)
    }
}

/// Builds a [`RateLimitLayer`]; see [`RateLimitLayer::builder`].
///
/// ```
/// use std::time::Duration;
/// use backpressure_rate::{Quota, RateLimitLayer};
///
/// // 10 requests per second per tenant, bursts of 20, at most 50,000 tenants
/// // tracked; a request that would conform within 100 ms waits instead of
/// // being rejected; uploads cost 5.
/// struct Req { tenant: u64, upload: bool }
/// let layer = RateLimitLayer::builder(Quota::per_second(10).burst(20))
///     .keyed(|r: &Req| r.tenant)
///     .max_keys(50_000)
///     .cost(|r: &Req| if r.upload { 5 } else { 1 })
///     .max_wait(Duration::from_millis(100))
///     .name("per-tenant")
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), backpressure_core::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct RateLimitBuilder<E, C, Spec> {
    store: Spec,
    key: E,
    cost: C,
    max_wait: Duration,
    shadow: bool,
    publish: bool,
    name: Option<LayerName>,
}

impl<E, C> RateLimitBuilder<E, C, Direct> {
    /// One bucket per key: `key` is any `Fn(&Req) -> K` with `K: Hash`
    /// (for HTTP, the extractors of `backpressure-http`). At most 100,000
    /// keys are tracked unless [`max_keys`](RateLimitBuilder::max_keys) says
    /// otherwise.
    pub fn keyed<E2>(self, key: E2) -> RateLimitBuilder<E2, C, Keyed> {
        RateLimitBuilder {
            store: Keyed {
                quota: self.store.quota,
                max_keys: 100_000,
                fast_clock: self.store.fast_clock,
            },
            key,
            cost: self.cost,
            max_wait: self.max_wait,
            shadow: self.shadow,
            publish: self.publish,
            name: self.name,
        }
    }
}

impl<E, C> RateLimitBuilder<E, C, Direct> {
    /// Reads time from the CPU's timestamp counter (via `quanta`) instead of
    /// tokio's clock: a few nanoseconds instead of a `clock_gettime`, but a
    /// paused tokio clock no longer drives the limiter.
    #[cfg(feature = "fast-clock")]
    #[must_use]
    pub fn fast_clock(mut self) -> Self {
        self.store.fast_clock = true;
        self
    }
}

impl<E, C, St> RateLimitBuilder<E, C, Custom<St>> {
    /// One bucket per key in a store of your own: `key` is any
    /// `Fn(&Req) -> K` the store accepts.
    pub fn keyed<E2>(self, key: E2) -> RateLimitBuilder<E2, C, Custom<St>> {
        RateLimitBuilder {
            store: self.store,
            key,
            cost: self.cost,
            max_wait: self.max_wait,
            shadow: self.shadow,
            publish: self.publish,
            name: self.name,
        }
    }
}

impl<E, C> RateLimitBuilder<E, C, Keyed> {
    /// See [`RateLimitBuilder::fast_clock`] on a direct builder.
    #[cfg(feature = "fast-clock")]
    #[must_use]
    pub fn fast_clock(mut self) -> Self {
        self.store.fast_clock = true;
        self
    }

    /// The most keys tracked at once (default 100,000): memory is bounded by
    /// this, whatever clients send. Beyond it, new keys share one overflow
    /// bucket (see [`KeyedStore`]).
    #[must_use]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.store.max_keys = max_keys;
        self
    }
}

impl<E, C, Spec> RateLimitBuilder<E, C, Spec> {
    /// The cost of a request (default 1): any `Fn(&Req) -> u32`.
    pub fn cost<C2>(self, cost: C2) -> RateLimitBuilder<E, C2, Spec> {
        RateLimitBuilder {
            store: self.store,
            key: self.key,
            cost,
            max_wait: self.max_wait,
            shadow: self.shadow,
            publish: self.publish,
            name: self.name,
        }
    }

    /// Instead of rejecting a request that would conform within `max_wait`,
    /// delay it that long ("smoothing"); never past its deadline. Default
    /// zero: reject at once.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Count and report would-be rejections, but let them through: for
    /// rolling a new limit out safely.
    #[must_use]
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Publishes each admitted request's quota state
    /// ([`RateLimitInfo::publish`](backpressure_core::RateLimitInfo::publish))
    /// during `call`, for a layer right above to put in the response — the
    /// `RateLimit` headers on admitted responses
    /// (`backpressure_http::RateLimitHeadersLayer`). In-memory stores only:
    /// an asynchronous store (Redis) decides after `call` returns. Default
    /// off (no cost).
    #[must_use]
    pub fn publish_admitted(mut self, yes: bool) -> Self {
        self.publish = yes;
        self
    }

    /// The instance name, in rejections, logs and metric labels.
    #[must_use]
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    pub fn build(self) -> Result<RateLimitLayer<E, C, Spec::Store>, ConfigError>
    where
        Spec: StoreSpec,
    {
        let store = self.store.build()?;
        let name = self.name.unwrap_or(LayerName::from_static(LAYER));
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                store,
                max_wait: self.max_wait,
                shadow: self.shadow,
                publish: self.publish,
                stats: Stats::new(name),
            }),
            key: self.key,
            cost: self.cost,
        })
    }
}
