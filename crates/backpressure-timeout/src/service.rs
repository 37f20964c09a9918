use std::{
    task::{Context, Poll},
    time::Duration,
};

use backpressure_core::{BoxError, Deadline, PendingDeadline};
use tokio::time::Instant;
use tower_service::Service;

use crate::{
    Local, Propagate, RequestTimeout,
    future::{ResponseFuture, pin_deadline},
};

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

    /// Reads the request's deadline, then calls the inner service at once
    /// if it is ready (without storing the request), or stores the request
    /// with a clone of the service to await its readiness in the future.
    fn call(&mut self, mut req: Req) -> Self::Future {
        // All in this one function, so that the request is copied once on its
        // way through. A function that borrows a request and then moves it on
        // copies it (rustc turns the move of a borrowed local into a copy):
        // 224 bytes for an `http::Request<()>`, a `memcpy` call each. Reading
        // the deadline here and dispatching in a helper copied it twice: the
        // server preset with a fixed limit made 7 copies and 1126 instructions
        // per request, 6 and 1088 since (tower's three layers: 4 and 848;
        // `scripts/instructions.sh "preset fixed noext" tower3`).
        //
        // The dispatch steps are those of the future's `Ready` state, written
        // out twice on purpose: shared through helper functions they took the
        // fast path from 22.0 to 31.4 ns (`cargo bench -p backpressure-benches
        // --bench layers -- timeout/backpressure`, measured twice each way),
        // and the `PendingDeadline` handed to a helper went through memory,
        // written field by field and read back in 16-byte loads (a
        // store-forwarding stall; 18.5 -> 16.4 ns).
        let timeout = self.per_request.timeout(&req).unwrap_or(self.timeout);
        // No clock reading here: the deadline is "timeout after arrival, and
        // no later than what outer layers or the request carry", pinned to
        // the clock only if somebody needs the instant (see PendingDeadline).
        let pending = PendingDeadline::capture()
            .with_deadline(self.propagate.incoming(&req))
            .with_timeout(timeout);
        if std::mem::take(&mut self.inner_ready) {
            // The fast path: no request stored, no service cloned.
            let mut deadline = None;
            if pending.is_zero() {
                return ResponseFuture::done(pending, deadline);
            }
            if pending.has_fixed() {
                let now = Instant::now();
                let at = pin_deadline(pending, &mut deadline);
                if at.is_some_and(|d| d.instant() <= now) {
                    return ResponseFuture::done(pending, deadline);
                }
            }
            self.propagate.outgoing(&mut req, || {
                pin_deadline(pending, &mut deadline).unwrap_or_else(|| Deadline::at(Instant::now()))
            });
            let scope = match deadline {
                Some(d) => PendingDeadline::default().with_deadline(Some(d)),
                None => pending,
            };
            let inner = &mut self.inner;
            let (fut, pinned) = scope.scope(|| inner.call(req));
            if deadline.is_none() {
                deadline = pinned;
            }
            return ResponseFuture::called(fut, pending, deadline);
        }
        // Not ready yet: a clone is as good as the instance we hold, and its
        // readiness is awaited in the future.
        ResponseFuture::new(self.inner.clone(), req, pending, self.propagate.clone())
    }
}
