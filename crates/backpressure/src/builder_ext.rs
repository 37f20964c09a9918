//! One `ServiceBuilder` method per layer, plus the preset.

use backpressure_breaker::CircuitBreakerLayer;
use backpressure_concurrency::ConcurrencyLimitLayer;
use backpressure_rate::RateLimitLayer;
use backpressure_shed::LoadShedLayer;
use backpressure_timeout::TimeoutLayer;
use tower::ServiceBuilder;
use tower_layer::Stack;

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// Adds the `backpressure` layers to a [`ServiceBuilder`], outermost first,
/// like tower-http's extension trait. The names differ from `ServiceBuilder`'s
/// own `timeout` / `rate_limit` / `load_shed` / `concurrency_limit` (tower's
/// layers), which would otherwise shadow them.
///
/// ```
/// use std::time::Duration;
/// use backpressure::ServiceBuilderExt;
/// use backpressure::{concurrency::ConcurrencyLimitLayer, timeout::TimeoutLayer};
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), backpressure::core::ConfigError> {
/// let stack = ServiceBuilder::new()
///     .deadline(TimeoutLayer::new(Duration::from_secs(5))?)
///     .concurrency_limited(ConcurrencyLimitLayer::new(32)?)
///     .service_fn(|n: u32| async move { Ok::<_, backpressure::core::BoxError>(n) });
/// # let _ = stack;
/// # Ok(())
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// A [`TimeoutLayer`]: one deadline over readiness and the call.
    fn deadline<T, P>(
        self,
        layer: TimeoutLayer<T, P>,
    ) -> ServiceBuilder<Stack<TimeoutLayer<T, P>, L>>;

    /// A [`RateLimitLayer`].
    fn rate_limited<E, C, St>(
        self,
        layer: RateLimitLayer<E, C, St>,
    ) -> ServiceBuilder<Stack<RateLimitLayer<E, C, St>, L>>;

    /// A [`LoadShedLayer`].
    fn shed_load<P, E>(
        self,
        layer: LoadShedLayer<P, E>,
    ) -> ServiceBuilder<Stack<LoadShedLayer<P, E>, L>>;

    /// A [`ConcurrencyLimitLayer`].
    fn concurrency_limited<P, D, C, H>(
        self,
        layer: ConcurrencyLimitLayer<P, D, C, H>,
    ) -> ServiceBuilder<Stack<ConcurrencyLimitLayer<P, D, C, H>, L>>;

    /// A [`CircuitBreakerLayer`].
    fn circuit_breaker<C>(
        self,
        layer: CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer<C>, L>>;

    /// A [`RetryLayer`](crate::retry::RetryLayer): retries within a budget.
    fn retried<P>(
        self,
        layer: backpressure_retry::RetryLayer<P>,
    ) -> ServiceBuilder<Stack<backpressure_retry::RetryLayer<P>, L>>;

    /// A [`PushbackLayer`](crate::http::PushbackLayer): obey the upstream's
    /// `Retry-After` / `grpc-retry-pushback-ms`.
    #[cfg(feature = "http")]
    fn pushback(
        self,
        layer: backpressure_http::PushbackLayer,
    ) -> ServiceBuilder<Stack<backpressure_http::PushbackLayer, L>>;

    /// A [`SendDeadlineLayer`](crate::timeout::SendDeadlineLayer): write the
    /// budget left into each outgoing request.
    fn send_deadline<P>(
        self,
        layer: backpressure_timeout::SendDeadlineLayer<P>,
    ) -> ServiceBuilder<Stack<backpressure_timeout::SendDeadlineLayer<P>, L>>;

    /// The [`RespondLayer`](crate::http::RespondLayer): rejections as responses.
    #[cfg(feature = "http")]
    fn respond(self) -> ServiceBuilder<Stack<backpressure_http::RespondLayer, L>>;

    /// The whole [`ServerPreset`](crate::preset::ServerPreset).
    #[cfg(feature = "http")]
    fn server_preset<R, B, H>(
        self,
        preset: crate::preset::ServerPreset<R, B, H>,
    ) -> ServiceBuilder<Stack<crate::preset::ServerPreset<R, B, H>, L>>;

    /// The whole [`ClientPreset`](crate::client::ClientPreset).
    #[cfg(feature = "http")]
    fn client_preset<R, B, C, Q>(
        self,
        preset: crate::client::ClientPreset<R, B, C, Q>,
    ) -> ServiceBuilder<Stack<crate::client::ClientPreset<R, B, C, Q>, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn deadline<T, P>(
        self,
        layer: TimeoutLayer<T, P>,
    ) -> ServiceBuilder<Stack<TimeoutLayer<T, P>, L>> {
        self.layer(layer)
    }

    fn rate_limited<E, C, St>(
        self,
        layer: RateLimitLayer<E, C, St>,
    ) -> ServiceBuilder<Stack<RateLimitLayer<E, C, St>, L>> {
        self.layer(layer)
    }

    fn shed_load<P, E>(
        self,
        layer: LoadShedLayer<P, E>,
    ) -> ServiceBuilder<Stack<LoadShedLayer<P, E>, L>> {
        self.layer(layer)
    }

    fn concurrency_limited<P, D, C, H>(
        self,
        layer: ConcurrencyLimitLayer<P, D, C, H>,
    ) -> ServiceBuilder<Stack<ConcurrencyLimitLayer<P, D, C, H>, L>> {
        self.layer(layer)
    }

    fn circuit_breaker<C>(
        self,
        layer: CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer<C>, L>> {
        self.layer(layer)
    }

    fn retried<P>(
        self,
        layer: backpressure_retry::RetryLayer<P>,
    ) -> ServiceBuilder<Stack<backpressure_retry::RetryLayer<P>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "http")]
    fn pushback(
        self,
        layer: backpressure_http::PushbackLayer,
    ) -> ServiceBuilder<Stack<backpressure_http::PushbackLayer, L>> {
        self.layer(layer)
    }

    fn send_deadline<P>(
        self,
        layer: backpressure_timeout::SendDeadlineLayer<P>,
    ) -> ServiceBuilder<Stack<backpressure_timeout::SendDeadlineLayer<P>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "http")]
    fn respond(self) -> ServiceBuilder<Stack<backpressure_http::RespondLayer, L>> {
        self.layer(backpressure_http::RespondLayer::new())
    }

    #[cfg(feature = "http")]
    fn server_preset<R, B, H>(
        self,
        preset: crate::preset::ServerPreset<R, B, H>,
    ) -> ServiceBuilder<Stack<crate::preset::ServerPreset<R, B, H>, L>> {
        self.layer(preset)
    }

    #[cfg(feature = "http")]
    fn client_preset<R, B, C, Q>(
        self,
        preset: crate::client::ClientPreset<R, B, C, Q>,
    ) -> ServiceBuilder<Stack<crate::client::ClientPreset<R, B, C, Q>, L>> {
        self.layer(preset)
    }
}
