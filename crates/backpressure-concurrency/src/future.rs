use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use backpressure_core::{BoxError, Classify, Deadline};
use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep_until};

pin_project! {
    /// What only a request that could not be called at once needs: the
    /// service and the request until the call, and for a queued request its
    /// queue slot and its timer. Boxed (one allocation per such request),
    /// so the future of a request called at once stays small: it is moved
    /// into the future of every layer above, and an inline timer made the
    /// fast path 45 % slower, an inline `http::Request<()>` (224 bytes)
    /// the server preset's future 568 bytes. A request that queues already
    /// takes a lock and reads the clock.
    struct Parked<S, Req> {
        svc: S,
        req: Option<Req>,
        // The deadline in scope when the request arrived; the inner call
        // happens later, from `poll`, and re-opens it for the layers below.
        deadline: Option<Deadline>,
        // Set while queued (with its timer); taken once the slot is
        // collected, and the timer with it.
        waiter: Option<Waiter>,
        #[pin]
        sleep: Option<Sleep>,
    }
}
use tower_service::Service;

use crate::{
    hold::{HeldPermit, OnResponse, Release},
    permit::{Permit, Waiter},
};

pin_project! {
    /// The response future of [`ConcurrencyLimit`](crate::ConcurrencyLimit).
    ///
    /// States: rejected at once; waiting in the queue (bounded by a timer);
    /// holding a permit and waiting for the inner service's readiness;
    /// called. The permit is held until the inner future completes or this
    /// future is dropped, whichever comes first.
    pub struct ResponseFuture<S, Req, C, H = Release>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, S::Future>,
        permit: Option<Permit>,
        // The classifier and what the response does with the permit.
        classify: (C, H),
    }
}

/// Opaque: what a future holds is the inner service's and the request's
/// business; `Debug` names the type so that stacks of layers can derive it.
impl<S, Req, C, H> std::fmt::Debug for ResponseFuture<S, Req, C, H>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F> {
        // Already boxed: the error is a `BoxError` in the end, and a boxed
        // one keeps this variant (and so every future) small.
        Rejected { error: Option<BoxError> },
        // Waiting for a permit (while queued), then for readiness.
        Pending { parked: Pin<Box<Parked<S, Req>>> },
        Called { #[pin] fut: F },
        Done,
    }
}

impl<S, Req, C, H> ResponseFuture<S, Req, C, H>
where
    S: Service<Req>,
{
    /// Admitted, to be called once `svc` is ready, inside `deadline`.
    #[inline]
    pub(crate) fn admitted(
        svc: S,
        req: Req,
        deadline: Option<Deadline>,
        permit: Permit,
        classify: (C, H),
    ) -> Self {
        let parked = Parked { svc, req: Some(req), deadline, waiter: None, sleep: None };
        ResponseFuture {
            state: State::Pending { parked: Box::pin(parked) },
            permit: Some(permit),
            classify,
        }
    }

    /// Admitted and already dispatched to an inner service that was ready.
    #[inline]
    pub(crate) fn called(fut: S::Future, permit: Permit, classify: (C, H)) -> Self {
        ResponseFuture { state: State::Called { fut }, permit: Some(permit), classify }
    }

    pub(crate) fn queued(
        svc: S,
        req: Req,
        waiter: Waiter,
        deadline: Option<Deadline>,
        classify: (C, H),
    ) -> Self {
        let sleep = Some(sleep_until(waiter.until));
        let parked = Parked { svc, req: Some(req), deadline, waiter: Some(waiter), sleep };
        ResponseFuture {
            state: State::Pending { parked: Box::pin(parked) },
            permit: None,
            classify,
        }
    }

    pub(crate) fn rejected(error: BoxError, classify: (C, H)) -> Self {
        ResponseFuture { state: State::Rejected { error: Some(error) }, permit: None, classify }
    }
}

impl<S, Req, C, H> Future for ResponseFuture<S, Req, C, H>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
    H: OnResponse<S::Response>,
{
    type Output = Result<H::Output, BoxError>;

    // The common case, small enough to be inlined into the caller: a
    // dispatched request's inner future, and its output. Every other state
    // is outlined into `ResponseFuture::advance`, which returns a small
    // control value (in registers), never the output: a
    // `Poll<Result<_, BoxError>>` is 24 bytes and returns through memory,
    // written in one width and read in another by the caller (a
    // store-forwarding stall: the hottest instruction of `cargo bench -p
    // backpressure-benches --bench layers -- concurrency/backpressure`).
    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            if let StateProj::Called { fut } = this.state.as_mut().project() {
                // A dispatched request holds its permit until it is answered
                // (or the response takes it): none left means answered. The
                // finished inner future stays where it is, dropped with this
                // one, rather than replaced by `Done` here (a second call
                // to the state's drop glue per request, 22 of our 236
                // instructions per request on a `u64`: scripts/instructions.sh).
                let Some(permit) = this.permit.as_mut() else {
                    return Poll::Ready(Err(polled_after_completion()));
                };
                let result = ready!(fut.poll(cx));
                if permit.wants_outcome() {
                    permit.complete(this.classify.0.classify(&result));
                }
                if H::HOLDS {
                    // The response keeps the permit (e.g. in its body).
                    let permit = this.permit.take().map(HeldPermit);
                    return Poll::Ready(match result {
                        Ok(res) => Ok(this.classify.1.on_response(res, permit)),
                        Err(e) => Err(e.into()),
                    });
                }
                // Released in place: moving the permit out first costs a
                // store-forwarding stall that doubled the fast path.
                *this.permit = None;
                let hold = &this.classify.1;
                return Poll::Ready(match result {
                    Ok(res) => Ok(hold.on_response(res, None)),
                    Err(e) => Err(e.into()),
                });
            }
            match self.as_mut().advance(cx) {
                Ok(true) => {}
                Ok(false) => return Poll::Pending,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl<S, Req, C, H> ResponseFuture<S, Req, C, H>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    /// Every state but a dispatched request's: `Ok(true)` once the request
    /// is dispatched, `Ok(false)` while it waits (for a permit or the inner
    /// service), `Err` when it fails without a response (rejected, timed
    /// out in the queue, the inner service failed, polled after the end).
    #[inline(never)]
    fn advance(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Result<bool, BoxError> {
        let mut this = self.as_mut().project();
        match this.state.as_mut().project() {
            StateProj::Rejected { error } => {
                let error = error.take().unwrap_or_else(polled_after_completion);
                this.state.set(State::Done);
                Err(error)
            }
            StateProj::Pending { parked } => {
                let mut parked = parked.as_mut().project();
                if let Some(waiter) = parked.waiter.as_mut() {
                    let shared = waiter.shared();
                    let admitted = match shared.poll_waiter(waiter.slot, cx) {
                        Poll::Ready(result) => result,
                        Poll::Pending => {
                            if let Some(sleep) = parked.sleep.as_mut().as_pin_mut()
                                && sleep.poll(cx).is_pending()
                            {
                                return Ok(false);
                            }
                            shared.expire_waiter(waiter.slot, waiter.kind)
                        }
                    };
                    // The slot is collected: the waiter has nothing left to
                    // give back, only its handle on the limiter; the timer
                    // goes now, not at the call.
                    let shared = waiter.settle();
                    *parked.waiter = None;
                    parked.sleep.set(None);
                    match admitted {
                        Ok(()) => *this.permit = Some(Permit::new(shared, true)),
                        Err(kind) => {
                            let error = shared.rejected(kind);
                            this.state.set(State::Done);
                            return Err(error.into());
                        }
                    }
                }
                // Holding a permit: now wait for the inner service.
                let svc = parked.svc;
                match svc.poll_ready(cx) {
                    Poll::Pending => return Ok(false),
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => {
                        this.state.set(State::Done);
                        // Not the dependency's answer to a request: no sample.
                        if let Some(permit) = this.permit.as_mut() {
                            permit.complete(backpressure_core::Outcome::Ignore);
                        }
                        *this.permit = None;
                        return Err(e.into());
                    }
                }
                let Some(req) = parked.req.take() else {
                    this.state.set(State::Done);
                    return Err("concurrency limit future polled after a panic".into());
                };
                let fut = Deadline::scope_opt(*parked.deadline, || svc.call(req));
                this.state.set(State::Called { fut });
                Ok(true)
            }
            // Handled by `poll`, which never calls this in that state.
            StateProj::Called { .. } => Ok(true),
            StateProj::Done => Err(polled_after_completion()),
        }
    }
}

#[cold]
fn polled_after_completion() -> BoxError {
    "concurrency limit future polled after completion".into()
}
