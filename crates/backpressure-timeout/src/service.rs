use std::{
    task::{Context, Poll},
    time::Duration,
};

use backpressure_core::{BoxError, PendingDeadline};
use tower_service::Service;

use crate::{Local, Propagate, RequestTimeout, future::ResponseFuture};

/// A service whose requests fail with `Rejected(DeadlineExceeded)` once their
/// deadline passes, whether they were still waiting for the inner service to
/// become ready or already running in it.
///
/// Built by [`TimeoutLayer`](crate::TimeoutLayer). See the crate docs.
#[derive(Debug)]
pub struct Timeout<S, T = (), P = Local> {
    inner: S,
    timeout: Duration,
    per_request: T,
    propagate: P,
    // `inner` answered ready to our `poll_ready`: `call` may dispatch to it
    // at once instead of storing the request for the future.
    inner_ready: bool,
}

impl<S: Clone, T: Clone, P: Clone> Clone for Timeout<S, T, P> {
    fn clone(&self) -> Self {
        // A clone has not been polled for readiness.
        Timeout {
            inner: self.inner.clone(),
            timeout: self.timeout,
            per_request: self.per_request.clone(),
            propagate: self.propagate.clone(),
            inner_ready: false,
        }
    }
}

impl<S, T, P> Timeout<S, T, P> {
    pub(crate) fn from_parts(inner: S, timeout: Duration, per_request: T, propagate: P) -> Self {
        Timeout { inner, timeout, per_request, propagate, inner_ready: false }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the timeout, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, T, P, Req> Service<Req> for Timeout<S, T, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    T: RequestTimeout<Req>,
    P: Propagate<Req> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, P>;

    /// Always ready. The inner service is asked once: if it is ready now,
    /// `call` dispatches to it directly; if not, its readiness is awaited
    /// inside the response future, where the request's deadline is known
    /// and covers the wait.
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

    fn call(&mut self, req: Req) -> Self::Future {
        let timeout = self.per_request.timeout(&req).unwrap_or(self.timeout);
        // No clock reading here: the deadline is "timeout after arrival, and
        // no later than what outer layers or the request carry", pinned to
        // the clock only if somebody needs the instant (see PendingDeadline).
        let deadline = PendingDeadline::capture()
            .with_deadline(self.propagate.incoming(&req))
            .with_timeout(timeout);
        if std::mem::take(&mut self.inner_ready) {
            // The fast path: no request stored, no service cloned.
            return ResponseFuture::dispatch(&mut self.inner, req, deadline, &self.propagate);
        }
        // Not ready yet: a clone is as good as the instance we hold, and its
        // readiness is awaited in the future.
        ResponseFuture::new(self.inner.clone(), req, deadline, self.propagate.clone())
    }
}
