use std::{sync::Arc, time::Duration};

/// How loaded something is, as one number: 0 is idle, 1 is at capacity,
/// above 1 is overloaded.
///
/// The contract between a layer that knows its load (a concurrency limiter's
/// handle, an event-loop lag probe) and one that acts on it (the load
/// shedder), so neither depends on the other. Reads must be cheap and
/// lock-free: the shedder reads once per request.
///
/// Closures `Fn() -> f64` are signals:
///
/// ```
/// use backpressure_core::Pressure;
///
/// let cpu = || 0.42;
/// assert_eq!(cpu.pressure(), 0.42);
/// ```
pub trait Pressure: Send + Sync + 'static {
    /// The current pressure. NaN is read as 0 (never shed on garbage).
    fn pressure(&self) -> f64;

    /// How long a rejected caller should wait, if the signal can tell.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

impl<F> Pressure for F
where
    F: Fn() -> f64 + Send + Sync + 'static,
{
    fn pressure(&self) -> f64 {
        self()
    }
}

impl<P: Pressure + ?Sized> Pressure for Arc<P> {
    fn pressure(&self) -> f64 {
        (**self).pressure()
    }

    fn retry_after(&self) -> Option<Duration> {
        (**self).retry_after()
    }
}
