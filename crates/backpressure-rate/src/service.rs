use std::{
    mem,
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll},
    time::Duration,
};

use backpressure_core::{BoxError, Deadline, Extract, RejectKind, Rejected};
use tower_service::Service;

use crate::{
    future::ResponseFuture,
    layer::Shared,
    store::{Check, Decision, RateStore, Verdict},
};

/// A service that admits requests within a quota and rejects the rest with
/// `Rejected(RateLimited)` carrying the exact `retry_after`. Built by
/// [`RateLimitLayer`](crate::RateLimitLayer).
pub struct RateLimit<S, E, C, St> {
    inner: S,
    shared: Arc<Shared<St>>,
    key: E,
    cost: C,
}

impl<S, E, C, St> RateLimit<S, E, C, St> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared<St>>, key: E, cost: C) -> Self {
        RateLimit { inner, shared, key, cost }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the limiter, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, E: Clone, C: Clone, St> Clone for RateLimit<S, E, C, St> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            key: self.key.clone(),
            cost: self.cost.clone(),
        }
    }
}

impl<S: std::fmt::Debug, E, C, St> std::fmt::Debug for RateLimit<S, E, C, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("name", &self.shared.stats.name)
            .finish()
    }
}

pub(crate) fn rejection<St>(
    shared: &Shared<St>,
    decision: &Decision,
    retry_after: Option<Duration>,
) -> BoxError {
    shared.stats.rejected.fetch_add(1, Relaxed);
    tracing::trace!(layer = %shared.stats.name, ?retry_after, "rate limited");
    let mut r = Rejected::new(RejectKind::RateLimited)
        .with_layer(shared.stats.name.clone())
        .with_rate_limit(decision.info());
    if let Some(after) = retry_after {
        r = r.with_retry_after(after);
    }
    r.into()
}

impl<S, E, C, St, Req> Service<Req> for RateLimit<S, E, C, St>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    E: Extract<Req>,
    C: Extract<Req, Output = u32>,
    St: RateStore<E::Output>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, St::Future, St>;

    /// The inner service's readiness: the decision itself is made in `call`,
    /// where the request (its key and cost) is visible.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.key.extract(&req);
        let cost = self.cost.extract(&req);
        let max_wait = if self.shared.max_wait.is_zero() {
            Duration::ZERO
        } else {
            // Never wait past the request's deadline.
            Deadline::current()
                .map_or(self.shared.max_wait, |d| d.remaining().min(self.shared.max_wait))
        };
        match self.shared.store.check(&key, cost, max_wait) {
            Check::Ready(Ok(decision)) => self.decided(decision, req),
            Check::Ready(Err(error)) => ResponseFuture::failed(error),
            Check::Pending(check) => {
                // The decision comes later, from the future: keep the
                // deadline in scope now to re-open it around the inner call.
                let deadline = Deadline::current();
                let svc = take_ready(&mut self.inner);
                ResponseFuture::checking(check, svc, req, Arc::clone(&self.shared), deadline)
            }
        }
    }
}

impl<S, E, C, St> RateLimit<S, E, C, St> {
    #[inline]
    fn decided<Req, F>(&mut self, decision: Decision, req: Req) -> ResponseFuture<S, Req, F, St>
    where
        S: Service<Req> + Clone,
    {
        if self.shared.publish && !matches!(decision.verdict, Verdict::Reject { .. }) {
            decision.info().publish();
        }
        match decision.verdict {
            Verdict::Allow => {
                self.shared.stats.admitted();
                ResponseFuture::called(self.inner.call(req))
            }
            Verdict::AllowAfter(wait) => {
                self.shared.stats.admitted();
                self.shared.stats.delayed.fetch_add(1, Relaxed);
                ResponseFuture::delayed(wait, take_ready(&mut self.inner), req, Deadline::current())
            }
            Verdict::Reject { retry_after } if self.shared.shadow => {
                self.shared.stats.admitted();
                self.shared.stats.shadow_rejected.fetch_add(1, Relaxed);
                tracing::trace!(layer = %self.shared.stats.name, ?retry_after, "would rate limit (shadow mode)");
                ResponseFuture::called(self.inner.call(req))
            }
            Verdict::Reject { retry_after } => {
                ResponseFuture::failed(rejection(&self.shared, &decision, retry_after))
            }
        }
    }
}

/// Takes the instance that was polled ready, leaving a fresh clone (which
/// the next `poll_ready` will poll) in its place.
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    mem::replace(inner, clone)
}
