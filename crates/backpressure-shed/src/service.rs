use std::{
    fmt,
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll},
};

use backpressure_core::{BoxError, Extract, Pressure, Priority, RejectKind, Rejected};
use tokio::task::coop;
use tower_service::Service;

use crate::{future::ResponseFuture, layer::Shared, signal::InFlightGuard};

/// A service that sheds requests, least important first, when its pressure
/// signal says the service behind it is saturated. Built by
/// [`LoadShedLayer`](crate::LoadShedLayer).
pub struct LoadShed<S, P, E> {
    inner: S,
    shared: Arc<Shared<P>>,
    priority: E,
    /// The inner service said "not ready" in our last `poll_ready`.
    not_ready: bool,
}

impl<S, P, E> LoadShed<S, P, E> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared<P>>, priority: E) -> Self {
        LoadShed { inner, shared, priority, not_ready: false }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Consumes the shedder, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, P, E: Clone> Clone for LoadShed<S, P, E> {
    fn clone(&self) -> Self {
        // A clone has not been polled: it must not inherit our readiness.
        LoadShed::from_parts(self.inner.clone(), Arc::clone(&self.shared), self.priority.clone())
    }
}

impl<S: fmt::Debug, P, E> fmt::Debug for LoadShed<S, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShed")
            .field("inner", &self.inner)
            .field("name", &self.shared.stats.name)
            .finish()
    }
}

impl<S, P, E, Req> Service<Req> for LoadShed<S, P, E>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Pressure,
    E: Extract<Req, Output = Priority>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.shared.shed_not_ready {
            return self.inner.poll_ready(cx).map_err(Into::into);
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(result) => {
                self.not_ready = false;
                Poll::Ready(result.map_err(Into::into))
            }
            // The task's co-operative budget is spent (by the inner service
            // or before it): a co-operative inner service returns `Pending`
            // to yield, which is not overload. Wait like everybody else.
            Poll::Pending if !coop::has_budget_remaining() => Poll::Pending,
            Poll::Pending => {
                // Ready to reject: `call` sheds this request.
                self.not_ready = true;
                Poll::Ready(Ok(()))
            }
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let priority = self.priority.extract(&req);
        if std::mem::take(&mut self.not_ready) {
            return ResponseFuture::rejected(self.reject(priority));
        }
        let shared = &*self.shared;
        let mut pressure = shared.signal.pressure();
        if let Some(in_flight) = &shared.in_flight {
            pressure = pressure.max(in_flight.pressure());
        }
        let probability = shared.thresholds.probability(priority, pressure);
        // Draw only inside a ramp: below it nothing is spent, above it
        // everything is shed.
        if probability >= 1.0 || (probability > 0.0 && shared.rng.next_f64() < probability) {
            return ResponseFuture::rejected(self.reject(priority));
        }
        let guard = shared.in_flight.as_ref().map(|c| {
            c.count.fetch_add(1, Relaxed);
            InFlightGuard(Arc::clone(c))
        });
        shared.stats.admitted(priority);
        ResponseFuture::called(self.inner.call(req), guard)
    }
}

impl<S, P: Pressure, E> LoadShed<S, P, E> {
    #[cold]
    fn reject(&self, priority: Priority) -> BoxError {
        self.shared.stats.shed[priority.index()].fetch_add(1, Relaxed);
        tracing::trace!(layer = %self.shared.stats.name, %priority, "request shed");
        let mut r =
            Rejected::new(RejectKind::Overloaded).with_layer(self.shared.stats.name.clone());
        if let Some(after) = self.shared.signal.retry_after() {
            r = r.with_retry_after(after);
        }
        r.into()
    }
}
