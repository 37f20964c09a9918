use std::task::{Context, Poll};

use backpressure_core::{BoxError, Classify, Deadline, Extract, Priority, stripe::StripedArc};
use tower_service::Service;

use crate::{
    OnResponse, Release,
    future::ResponseFuture,
    permit::{Permit, Waiter},
    shared::{Admit, Shared},
};

/// A service that lets at most `limit` requests into the inner service at
/// once, across every service built from the same
/// [`ConcurrencyLimitLayer`](crate::ConcurrencyLimitLayer).
#[derive(Debug)]
pub struct ConcurrencyLimit<S, P, D, C, H = Release> {
    inner: S,
    shared: StripedArc<Shared>,
    priority: P,
    deadline: D,
    classify: C,
    hold: H,
    // `inner` answered ready to our `poll_ready`: an admitted request can be
    // dispatched to it at once instead of being stored for the future.
    inner_ready: bool,
}

impl<S, P, D, C, H> ConcurrencyLimit<S, P, D, C, H> {
    pub(crate) fn from_parts(
        inner: S,
        shared: StripedArc<Shared>,
        priority: P,
        deadline: D,
        classify: C,
        hold: H,
    ) -> Self {
        ConcurrencyLimit { inner, shared, priority, deadline, classify, hold, inner_ready: false }
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

impl<S: Clone, P: Clone, D: Clone, C: Clone, H: Clone> Clone for ConcurrencyLimit<S, P, D, C, H> {
    fn clone(&self) -> Self {
        ConcurrencyLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            priority: self.priority.clone(),
            deadline: self.deadline.clone(),
            classify: self.classify.clone(),
            hold: self.hold.clone(),
            inner_ready: false,
        }
    }
}

impl<S, P, D, C, H, Req> Service<Req> for ConcurrencyLimit<S, P, D, C, H>
where
    H: OnResponse<S::Response> + Clone,
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: Extract<Req, Output = Priority>,
    D: Extract<Req, Output = Option<Deadline>>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = H::Output;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, H>;

    /// Always ready: admission is decided in `call`, where the request's
    /// priority and deadline are visible, and any wait happens in the
    /// response future, bounded. The inner service is asked once: if it is
    /// ready now, a request admitted at once is dispatched to it directly.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.inner_ready {
            match self.inner.poll_ready(cx) {
                Poll::Ready(Ok(())) => self.inner_ready = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {}
            }
        }
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let priority = self.priority.extract(&req);
        let classify = (self.classify.clone(), self.hold.clone());
        if self.inner_ready && self.shared.try_fast(priority) {
            // The fast path: a permit, and an inner service ready now.
            self.inner_ready = false;
            let permit = Permit::new(self.shared.local(), false);
            return ResponseFuture::called(self.inner.call(req), permit, classify);
        }
        // A clone is as good as the instance we hold (whose readiness, if it
        // has any, stays for the next request), and its readiness is awaited
        // in the future, under the permit.
        //
        // Either way the inner call happens later, from the future: keep the
        // deadline in scope now (an outer timeout's) to re-open it there.
        let svc = self.inner.clone();
        let scope = Deadline::current();
        if self.shared.try_fast(priority) {
            let permit = Permit::new(self.shared.local(), false);
            return ResponseFuture::admitted(svc, req, scope, permit, classify);
        }
        let deadline = self.deadline.extract(&req);
        match self.shared.acquire_slow(priority, deadline) {
            Admit::Now => {
                let permit = Permit::new(self.shared.local(), false);
                ResponseFuture::admitted(svc, req, scope, permit, classify)
            }
            Admit::Queued { slot, until, kind } => {
                let waiter = Waiter::new(self.shared.local(), slot, until, kind);
                ResponseFuture::queued(svc, req, waiter, scope, classify)
            }
            Admit::Reject(kind) => {
                ResponseFuture::rejected(self.shared.rejected(kind).into(), classify)
            }
        }
    }
}
