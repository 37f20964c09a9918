use std::time::Duration;

use backpressure_core::ConfigError;
use tower_layer::Layer;

use crate::{Local, Timeout};

/// Applies [`Timeout`] to a service: one deadline per request, covering the
/// inner service's readiness and its call.
///
/// The layer holds no state, so every service it builds behaves the same.
///
/// Type parameters, which users rarely name: `T` picks a per-request timeout
/// ([`per_request`](Self::per_request)), `P` reads and writes deadlines on the
/// request ([`propagate`](Self::propagate)).
#[derive(Debug, Clone)]
pub struct TimeoutLayer<T = (), P = Local> {
    timeout: Duration,
    per_request: T,
    propagate: P,
}

impl TimeoutLayer {
    /// A layer that fails a request with `Rejected(DeadlineExceeded)` when it
    /// has not completed `timeout` after it arrived.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `timeout` when it is zero (every request would
    /// fail).
    pub fn new(timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::new("timeout", "timeout", "must be greater than zero"));
        }
        crate::metrics::init();
        Ok(TimeoutLayer { timeout, per_request: (), propagate: Local })
    }
}

impl<T, P> TimeoutLayer<T, P> {
    /// Chooses the timeout per request: `f` returns `Some(timeout)` to
    /// override the default, `None` to keep it. A zero override fails the
    /// request at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use backpressure_timeout::TimeoutLayer;
    ///
    /// // Uploads get a minute; everything else the default 5 s.
    /// let layer = TimeoutLayer::new(Duration::from_secs(5))?
    ///     .per_request(|req: &http::Request<()>| {
    ///         (req.uri().path() == "/upload").then_some(Duration::from_secs(60))
    ///     });
    /// # let _ = layer;
    /// # Ok::<(), backpressure_core::ConfigError>(())
    /// ```
    pub fn per_request<F>(self, f: F) -> TimeoutLayer<F, P> {
        TimeoutLayer { timeout: self.timeout, per_request: f, propagate: self.propagate }
    }

    /// Sets how deadlines are read from and written onto requests; see
    /// [`Propagate`](crate::Propagate).
    pub fn propagate<P2>(self, propagate: P2) -> TimeoutLayer<T, P2> {
        TimeoutLayer { timeout: self.timeout, per_request: self.per_request, propagate }
    }

    /// The default timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S, T: Clone, P: Clone> Layer<S> for TimeoutLayer<T, P> {
    type Service = Timeout<S, T, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::from_parts(inner, self.timeout, self.per_request.clone(), self.propagate.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_timeout_is_a_config_error_naming_the_field() {
        let err = TimeoutLayer::new(Duration::ZERO).unwrap_err();
        assert_eq!(err.field(), "timeout");
        assert_eq!(
            err.to_string(),
            "invalid timeout configuration: `timeout` must be greater than zero"
        );
    }
}
