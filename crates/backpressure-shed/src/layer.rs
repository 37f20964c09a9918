use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize},
    },
};

use backpressure_core::{ConfigError, DefaultPriority, Draw, LayerName, Pressure};
use tower_layer::Layer;

use crate::{LoadShed, LoadShedHandle, NoSignal, Thresholds, signal::InFlight};

const LAYER: &str = "load-shed";

pub(crate) struct Shared<P> {
    pub(crate) signal: P,
    pub(crate) thresholds: Thresholds,
    pub(crate) in_flight: Option<Arc<InFlight>>,
    pub(crate) shed_not_ready: bool,
    pub(crate) rng: Draw,
    /// Counters, and the layer's name.
    pub(crate) stats: Arc<Stats>,
}

/// What the shedder counts (registered for metrics on its own: it does not
/// depend on the signal's type).
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) name: LayerName,
    /// Requests shed, by priority.
    pub(crate) shed: [AtomicU64; 4],
    /// The same count as `Shared::in_flight` (which the request path reads
    /// without going through this `Arc`), for the gauge.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) in_flight: Option<Arc<InFlight>>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::metrics::Metrics,
}

impl Stats {
    fn new(name: LayerName, in_flight: Option<Arc<InFlight>>) -> Arc<Self> {
        let stats = Arc::new(Stats {
            name,
            shed: Default::default(),
            in_flight,
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::Metrics::default(),
        });
        #[cfg(feature = "metrics")]
        backpressure_core::metrics::register(&stats);
        stats
    }

    /// Counts a request of `priority` let through (metrics).
    #[inline]
    pub(crate) fn admitted(&self, _priority: backpressure_core::Priority) {
        #[cfg(feature = "metrics")]
        self.metrics.admitted.add(_priority.index());
    }
}

/// Applies [`LoadShed`]: sheds requests by priority when a pressure signal
/// says the service is saturated. One state per layer value, shared by every
/// service it builds.
pub struct LoadShedLayer<P = NoSignal, E = DefaultPriority> {
    shared: Arc<Shared<P>>,
    priority: E,
}

impl<P: Pressure> LoadShedLayer<P> {
    /// Sheds on `signal` with the default thresholds; every request is
    /// `Critical` until a priority extractor is set.
    pub fn new(signal: P) -> Self {
        Self::builder(signal).build().expect("the defaults are valid (tested)")
    }

    /// A builder: thresholds, priorities, in-flight limit, readiness.
    pub fn builder(signal: P) -> LoadShedBuilder<P> {
        LoadShedBuilder {
            signal,
            thresholds: Thresholds::default(),
            priority: DefaultPriority,
            in_flight_limit: None,
            shed_not_ready: false,
            seed: None,
            name: None,
        }
    }
}

impl<P, E> LoadShedLayer<P, E> {
    /// A handle: shed counts per priority, current pressure.
    pub fn handle(&self) -> LoadShedHandle<P> {
        LoadShedHandle::new(Arc::clone(&self.shared))
    }
}

impl<P, E: Clone> Clone for LoadShedLayer<P, E> {
    fn clone(&self) -> Self {
        LoadShedLayer { shared: Arc::clone(&self.shared), priority: self.priority.clone() }
    }
}

impl<P, E> fmt::Debug for LoadShedLayer<P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedLayer")
            .field("name", &self.shared.stats.name)
            .finish_non_exhaustive()
    }
}

impl<S, P, E: Clone> Layer<S> for LoadShedLayer<P, E> {
    type Service = LoadShed<S, P, E>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed::from_parts(inner, Arc::clone(&self.shared), self.priority.clone())
    }
}

/// Builds a [`LoadShedLayer`].
///
/// ```
/// use backpressure_core::Priority;
/// use backpressure_shed::{LoadShedLayer, Thresholds};
///
/// let cpu = || 0.5; // any Fn() -> f64 is a signal
/// let layer = LoadShedLayer::builder(cpu)
///     .priority(|p: &Priority| *p)
///     .thresholds(Thresholds::default().set(Priority::Sheddable, 0.6, 0.9))
///     .in_flight_limit(10_000)
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), backpressure_core::ConfigError>(())
/// ```
pub struct LoadShedBuilder<P, E = DefaultPriority> {
    signal: P,
    thresholds: Thresholds,
    priority: E,
    in_flight_limit: Option<usize>,
    shed_not_ready: bool,
    seed: Option<u64>,
    name: Option<LayerName>,
}

impl<P, E> fmt::Debug for LoadShedBuilder<P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedBuilder")
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl<P, E> LoadShedBuilder<P, E> {
    /// Where each priority starts and finishes being shed.
    #[must_use]
    pub fn thresholds(mut self, thresholds: Thresholds) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// How a request's priority is found (default: all `Critical`).
    pub fn priority<E2>(self, priority: E2) -> LoadShedBuilder<P, E2> {
        LoadShedBuilder {
            signal: self.signal,
            thresholds: self.thresholds,
            priority,
            in_flight_limit: self.in_flight_limit,
            shed_not_ready: self.shed_not_ready,
            seed: self.seed,
            name: self.name,
        }
    }

    /// Also count requests inside this layer: pressure is at least
    /// `in_flight / limit` (two atomic operations per request).
    #[must_use]
    pub fn in_flight_limit(mut self, limit: usize) -> Self {
        self.in_flight_limit = Some(limit);
        self
    }

    /// tower's classic behaviour as well: reject with `Overloaded` when the
    /// inner service is not ready — except when it is not ready only because
    /// the task's co-operative budget ran out (a yield, not overload;
    /// apollographql/router#9034), which is passed through as `Pending`.
    #[must_use]
    pub fn shed_when_not_ready(mut self, yes: bool) -> Self {
        self.shed_not_ready = yes;
        self
    }

    /// Seeds the draws inside the ramps, for reproducible tests.
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
    /// A [`ConfigError`] naming `thresholds` (not finite, `full <= start`,
    /// or a priority shed before a less important one) or
    /// `in_flight_limit` (zero).
    pub fn build(self) -> Result<LoadShedLayer<P, E>, ConfigError> {
        self.thresholds.validate()?;
        let in_flight = match self.in_flight_limit {
            Some(0) => {
                return Err(ConfigError::new(LAYER, "in_flight_limit", "must be at least 1"));
            }
            Some(threshold) => Some(Arc::new(InFlight { count: AtomicUsize::new(0), threshold })),
            None => None,
        };

        let name = self.name.unwrap_or(LayerName::from_static(LAYER));
        Ok(LoadShedLayer {
            shared: Arc::new(Shared {
                signal: self.signal,
                thresholds: self.thresholds,
                in_flight: in_flight.clone(),
                shed_not_ready: self.shed_not_ready,
                rng: self.seed.map_or_else(Draw::from_entropy, Draw::new),
                stats: Stats::new(name, in_flight),
            }),
            priority: self.priority,
        })
    }
}
