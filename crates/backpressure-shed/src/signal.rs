//! Built-in pressure signals.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use backpressure_core::{ConfigError, Pressure};
use tokio::time::{Instant, sleep_until};

/// No pressure at all: for a shedder driven only by readiness or its own
/// in-flight count.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSignal;

impl Pressure for NoSignal {
    fn pressure(&self) -> f64 {
        0.0
    }
}

/// The highest of several signals (CPU and queue depth, say).
///
/// ```
/// use backpressure_core::Pressure;
/// use backpressure_shed::MaxOf;
///
/// let signal = MaxOf::new(vec![Box::new(|| 0.3), Box::new(|| 0.9)]);
/// assert_eq!(signal.pressure(), 0.9);
/// ```
pub struct MaxOf {
    signals: Vec<Box<dyn Pressure>>,
}

impl MaxOf {
    /// The maximum of `signals` (0 if there are none).
    pub fn new(signals: Vec<Box<dyn Pressure>>) -> Self {
        MaxOf { signals }
    }
}

impl std::fmt::Debug for MaxOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaxOf").field("signals", &self.signals.len()).finish()
    }
}

impl Pressure for MaxOf {
    fn pressure(&self) -> f64 {
        self.signals.iter().map(|s| s.pressure()).filter(|p| !p.is_nan()).fold(0.0, f64::max)
    }

    fn retry_after(&self) -> Option<Duration> {
        self.signals.iter().filter_map(|s| s.retry_after()).max()
    }
}

/// Requests inside a shedder, against a threshold: pressure is
/// `in_flight / threshold`. Set with
/// [`LoadShedBuilder::in_flight_limit`](crate::LoadShedBuilder::in_flight_limit).
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) count: AtomicUsize,
    pub(crate) threshold: usize,
}

impl InFlight {
    #[inline]
    pub(crate) fn pressure(&self) -> f64 {
        self.count.load(Relaxed) as f64 / self.threshold as f64
    }
}

/// Decrements a shedder's in-flight count when the request ends.
#[derive(Debug)]
pub(crate) struct InFlightGuard(pub(crate) Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Relaxed);
    }
}

/// How late the tokio event loop runs timers: a blocked or saturated
/// runtime fires them late, and everything on it is slow.
///
/// One probe task per signal (not per request) sleeps `interval` at a time
/// and measures how late it wakes; pressure is the lag (smoothed over the
/// last few probes) divided by `target`. The probe stops by itself once every
/// clone of the signal is dropped.
///
/// ```
/// use std::time::Duration;
/// use backpressure_core::Pressure;
/// use backpressure_shed::LagSignal;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), backpressure_core::ConfigError> {
/// // Pressure 1.0 when timers fire 50 ms late.
/// let lag = LagSignal::spawn(Duration::from_millis(10), Duration::from_millis(50))?;
/// assert_eq!(lag.pressure(), 0.0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LagSignal {
    shared: Arc<LagShared>,
}

#[derive(Debug)]
struct LagShared {
    lag_nanos: AtomicU64,
    target: Duration,
}

/// Watches whether a [`LagSignal`]'s probe task is still running.
#[derive(Debug, Clone)]
pub struct ProbeWatch(Weak<()>);

impl ProbeWatch {
    /// Whether the probe task is still alive.
    pub fn is_running(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl LagSignal {
    /// Starts the probe on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if `interval` or `target` is zero, or if called
    /// outside a tokio runtime.
    pub fn spawn(interval: Duration, target: Duration) -> Result<Self, ConfigError> {
        Ok(Self::spawn_watched(interval, target)?.0)
    }

    /// Like [`spawn`](Self::spawn), also returning a [`ProbeWatch`].
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    pub fn spawn_watched(
        interval: Duration,
        target: Duration,
    ) -> Result<(Self, ProbeWatch), ConfigError> {
        if interval.is_zero() {
            return Err(ConfigError::new("lag-signal", "interval", "must be greater than zero"));
        }
        if target.is_zero() {
            return Err(ConfigError::new("lag-signal", "target", "must be greater than zero"));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConfigError::new("lag-signal", "runtime", "must be created inside a tokio runtime")
        })?;
        let shared = Arc::new(LagShared { lag_nanos: AtomicU64::new(0), target });
        let weak = Arc::downgrade(&shared);
        let alive = Arc::new(());
        let watch = ProbeWatch(Arc::downgrade(&alive));
        runtime.spawn(probe(weak, interval, alive));
        Ok((LagSignal { shared }, watch))
    }

    /// The smoothed lag.
    pub fn lag(&self) -> Duration {
        Duration::from_nanos(self.shared.lag_nanos.load(Relaxed))
    }
}

async fn probe(shared: Weak<LagShared>, interval: Duration, _alive: Arc<()>) {
    let mut smoothed = 0u64;
    loop {
        let expected = backpressure_core::instant_after(Instant::now(), interval);
        sleep_until(expected).await;
        let lag = u64::try_from(Instant::now().saturating_duration_since(expected).as_nanos())
            .unwrap_or(u64::MAX);
        // Rise at once, decay by half per probe: a blocked loop shows up on
        // the next tick, a recovered one within a few.
        smoothed = lag.max(smoothed / 2);
        match shared.upgrade() {
            Some(s) => s.lag_nanos.store(smoothed, Relaxed),
            None => return,
        }
    }
}

impl Pressure for LagSignal {
    fn pressure(&self) -> f64 {
        self.shared.lag_nanos.load(Relaxed) as f64 / self.shared.target.as_nanos() as f64
    }
}
