use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use backpressure_core::{BoxError, Deadline, PendingDeadline, RejectKind, Rejected};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::Propagate;

const NAME: &str = "timeout";

#[cold]
fn deadline_exceeded() -> BoxError {
    crate::metrics::expired();
    Rejected::new(RejectKind::DeadlineExceeded).with_layer(NAME).into()
}

pin_project! {
    /// The response future of [`Timeout`](crate::Timeout).
    ///
    /// Waits for the inner service's readiness, calls it, and awaits its
    /// response, all under one deadline. The clock is read and the timer
    /// created only when something is pending (or an inner layer asks for
    /// the deadline), so a request answered at once costs neither.
    #[project = ResponseFutureProj]
    pub struct ResponseFuture<S, Req, P>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, S::Future, P>,
        #[pin]
        sleep: Option<Sleep>,
        pending: PendingDeadline,
        // The propagation lives in the `Ready` state's box, the only one
        // that still needs it: stored here it made every future of the
        // server preset 64 bytes larger, for one use at dispatch.
        deadline: Option<Deadline>,
    }
}

/// Opaque: what a future holds is the inner service's and the request's
/// business; `Debug` names the type so that stacks of layers can derive it.
impl<S, Req, P> std::fmt::Debug for ResponseFuture<S, Req, P>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F, P> {
        // Waiting for the cloned inner service to become ready. Boxed: only
        // a request whose inner service was not ready pays for it, and the
        // future of every other request stays small (it is moved into the
        // future of every layer above; inline, the request made it 368
        // bytes on `http::Request<()>`). The propagation travels with it,
        // to be applied when the request is dispatched.
        Ready { parked: Box<(S, Option<Req>, P)> },
        // Dispatched: awaiting the inner future.
        Called { #[pin] fut: F },
        // Finished or expired: the inner future has been dropped.
        Done,
    }
}

impl<S, Req, P> ResponseFuture<S, Req, P>
where
    S: Service<Req>,
{
    pub(crate) fn new(svc: S, req: Req, pending: PendingDeadline, propagate: P) -> Self {
        let state = if pending.is_zero() {
            State::Done
        } else {
            State::Ready { parked: Box::new((svc, Some(req), propagate)) }
        };
        ResponseFuture { state, sleep: None, pending, deadline: None }
    }
}

impl<S, Req, P> ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    P: Propagate<Req>,
{
    /// Dispatched by `Timeout::call` (which holds the dispatch steps).
    #[inline(always)]
    pub(crate) fn called(
        fut: S::Future,
        pending: PendingDeadline,
        deadline: Option<Deadline>,
    ) -> Self {
        ResponseFuture { state: State::Called { fut }, sleep: None, pending, deadline }
    }

    /// Out of time before dispatch: the first poll answers the deadline.
    #[inline(always)]
    pub(crate) fn done(pending: PendingDeadline, deadline: Option<Deadline>) -> Self {
        ResponseFuture { state: State::Done, sleep: None, pending, deadline }
    }
}

/// Pins the deadline to the clock if nobody has yet: the first moment
/// something is pending is, to within the same poll, the request's arrival.
pub(crate) fn pin_deadline(
    pending: PendingDeadline,
    deadline: &mut Option<Deadline>,
) -> Option<Deadline> {
    if deadline.is_none() {
        *deadline = pending.resolve_at(Instant::now());
    }
    *deadline
}

impl<S, Req, P> Future for ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Propagate<Req>,
{
    type Output = Result<S::Response, BoxError>;

    /// The common case, small enough to be inlined into the caller: a
    /// dispatched request whose inner future is ready. Everything else is
    /// outlined. As one function the whole poll was never inlined, so the
    /// response went through memory on its way out, written in one width
    /// and read in another (a store-forwarding stall; `perf annotate` on
    /// `cargo bench -p backpressure-benches --bench layers --
    /// timeout/backpressure`).
    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.as_mut().project();
        if let StateProj::Called { fut } = this.state.as_mut().project() {
            return match fut.poll(cx) {
                Poll::Ready(result) => {
                    this.state.set(State::Done);
                    Poll::Ready(result.map_err(Into::into))
                }
                Poll::Pending => Self::wait(&mut this, cx),
            };
        }
        self.poll_slow(cx)
    }
}

impl<S, Req, P> ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Propagate<Req>,
{
    /// The inner side is pending: only now pin the deadline and arm the
    /// timer; once it fires, drop the inner side and answer the deadline.
    #[inline(never)]
    fn wait(
        this: &mut ResponseFutureProj<'_, S, Req, P>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<S::Response, BoxError>> {
        if this.sleep.is_none() {
            match pin_deadline(*this.pending, this.deadline) {
                Some(at) => this.sleep.set(Some(sleep_until(at.instant()))),
                None => return Poll::Pending,
            }
        }
        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        // Expired: drop the inner future (or the waiting service) now,
        // marked as a timeout, so the layers below can tell it from a
        // client that left (a breaker counts it as a failure, an adaptive
        // limit as a drop).
        Deadline::expired_scope(|| this.state.set(State::Done));
        Poll::Ready(Err(deadline_exceeded()))
    }

    /// Every state but a dispatched request's: waiting for the inner
    /// service's readiness, dispatching, and done.
    #[inline(never)]
    fn poll_slow(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<S::Response, BoxError>> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Ready { parked } => {
                    let (svc, req, propagate) = &mut **parked;
                    // A deadline carried from outside may already have
                    // passed: then the request is not worth dispatching.
                    if this.pending.has_fixed() {
                        let now = Instant::now();
                        let at = pin_deadline(*this.pending, this.deadline);
                        if at.is_some_and(|d| d.instant() <= now) {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(deadline_exceeded()));
                        }
                    }
                    match svc.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            let Some(mut req) = req.take() else {
                                // Only reachable if the inner `call` panicked
                                // and the future is polled again.
                                this.state.set(State::Done);
                                return Poll::Ready(Err(
                                    "timeout future polled after a panic".into()
                                ));
                            };
                            let (pending, deadline) = (*this.pending, &mut *this.deadline);
                            propagate.outgoing(&mut req, || {
                                pin_deadline(pending, deadline)
                                    .unwrap_or_else(|| Deadline::at(Instant::now()))
                            });
                            // Inner layers see our deadline through
                            // `Deadline::current`; if one of them pins it, we
                            // keep the same instant.
                            let scope = match *this.deadline {
                                Some(d) => PendingDeadline::default().with_deadline(Some(d)),
                                None => *this.pending,
                            };
                            let (fut, pinned) = scope.scope(|| svc.call(req));
                            if this.deadline.is_none() {
                                *this.deadline = pinned;
                            }
                            this.state.set(State::Called { fut });
                            continue;
                        }
                        Poll::Ready(Err(e)) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e.into()));
                        }
                        Poll::Pending => {}
                    }
                }
                // Just dispatched: the fast path's poll takes it from here.
                StateProj::Called { .. } => return self.as_mut().poll(cx),
                // Out of time on arrival, or polled again after completing:
                // the deadline is the answer either way.
                StateProj::Done => return Poll::Ready(Err(deadline_exceeded())),
            }
            return Self::wait(&mut this, cx);
        }
    }
}
