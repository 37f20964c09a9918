use std::{
    fmt,
    sync::atomic::Ordering::Relaxed,
    task::{Context, Poll},
};

use backpressure_core::{BoxError, Classify, RejectKind, Rejected, stripe::StripedArc};
use tower_service::Service;

use crate::{
    future::{CallGuard, ResponseFuture},
    state::{Admit, Shared},
};

/// A service that fails fast with `Rejected(CircuitOpen)` while its
/// dependency is failing, and probes it back to health. Built by
/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
pub struct CircuitBreaker<S, C> {
    inner: S,
    shared: StripedArc<Shared>,
    classify: C,
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn from_parts(inner: S, shared: StripedArc<Shared>, classify: C) -> Self {
        CircuitBreaker { inner, shared, classify }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Consumes the breaker, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    /// The inner service's readiness; the breaker decides in `call`.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let admit = self.shared.admit();
        if let Admit::Reject(retry_after) = admit {
            return ResponseFuture::rejected(self.reject(retry_after));
        }
        let guard = CallGuard::new(self.shared.local(), admit);
        ResponseFuture::called(self.inner.call(req), guard, self.classify.clone())
    }
}

impl<S, C> CircuitBreaker<S, C> {
    #[cold]
    fn reject(&self, retry_after: Option<std::time::Duration>) -> BoxError {
        self.shared.rejected.fetch_add(1, Relaxed);
        let mut r = Rejected::new(RejectKind::CircuitOpen).with_layer(self.shared.name.clone());
        if let Some(after) = retry_after {
            r = r.with_retry_after(after);
        }
        r.into()
    }
}
