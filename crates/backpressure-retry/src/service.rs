use std::{
    fmt,
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll},
};

use backpressure_core::Deadline;
use tower_service::Service;

use crate::{Policy, future::ResponseFuture, layer::Shared};

/// A service that retries failed requests; built by
/// [`RetryLayer`](crate::RetryLayer).
pub struct Retry<S, P> {
    inner: S,
    shared: Arc<Shared<P>>,
}

impl<S, P> Retry<S, P> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<P>>) -> Self {
        Retry { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, P> Clone for Retry<S, P> {
    fn clone(&self) -> Self {
        Retry { inner: self.inner.clone(), shared: Arc::clone(&self.shared) }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for Retry<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("name", &self.shared.counters.name)
            .finish()
    }
}

impl<S, P, Req> Service<Req> for Retry<S, P>
where
    S: Service<Req> + Clone,
    P: Policy<Req, S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, P>;

    /// Always ready: every attempt awaits the inner service's readiness in
    /// the response future (a retry must pass the limits below again).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        shared.budget.deposit();
        shared.counters.attempts.fetch_add(1, Relaxed);
        let template = if shared.max_attempts > 1 { shared.policy.replay(&req) } else { None };
        // Later attempts run outside the outer layers' `call`, so keep the
        // deadline to re-open its scope around each of them.
        let deadline = if template.is_some() { Deadline::current() } else { None };
        ResponseFuture::new(self.inner.clone(), req, template, deadline, Arc::clone(shared))
    }
}
