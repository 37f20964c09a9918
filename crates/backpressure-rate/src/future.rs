use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll, ready},
    time::Duration,
};

use backpressure_core::{BoxError, Deadline};
use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep};
use tower_service::Service;

use crate::{Decision, layer::Shared, service::rejection, store::Verdict};

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit): the inner
    /// future, an immediate rejection, a bounded wait for a reserved slot,
    /// or — with a remote store — the store's answer first.
    ///
    /// `F` is the store's check future (never constructed for in-memory
    /// stores).
    pub struct ResponseFuture<S, Req, F, St>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, S::Future, F, St>,
    }
}

/// Opaque: what a future holds is the inner service's and the request's
/// business; `Debug` names the type so that stacks of layers can derive it.
impl<S, Req, F, St> std::fmt::Debug for ResponseFuture<S, Req, F, St>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, Fut, F, St> {
        Called { #[pin] fut: Fut },
        Failed { error: Option<BoxError> },
        // Boxed timer, request and service (and the deadline to re-open
        // around the inner call, which happens from `poll`): only requests
        // that wait pay for it, and the future of every other request stays
        // small — it is moved into every layer's future above.
        Delayed { sleep: Pin<Box<Delay<S, Req>>> },
        // Waiting for an asynchronous store's decision; the inner call
        // happens from `poll`, inside the deadline read in `call`. Boxed
        // whole (the store's future with the request: one allocation): an
        // in-memory store's check future is never built, but inline its
        // type alone made every future of the layer 112 bytes.
        Checking { checking: Pin<Box<Checking<S, Req, F, St>>> },
        Done,
    }
}

pin_project! {
    #[project = CheckingProj]
    struct Checking<S, Req, F, St> {
        #[pin]
        check: F,
        parts: Option<(S, Req)>,
        shared: Arc<Shared<St>>,
        deadline: Option<Deadline>,
    }
}

pin_project! {
    struct Delay<S, Req> {
        #[pin]
        sleep: Sleep,
        deadline: Option<Deadline>,
        parts: Option<(S, Req)>,
    }
}

impl<S, Req> Delay<S, Req> {
    fn boxed(wait: Duration, deadline: Option<Deadline>, parts: (S, Req)) -> Pin<Box<Self>> {
        Box::pin(Delay { sleep: sleep(wait), deadline, parts: Some(parts) })
    }
}

impl<S, Req, F, St> ResponseFuture<S, Req, F, St>
where
    S: Service<Req>,
{
    #[inline]
    pub(crate) fn called(fut: S::Future) -> Self {
        ResponseFuture { state: State::Called { fut } }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture { state: State::Failed { error: Some(error) } }
    }

    pub(crate) fn delayed(wait: Duration, svc: S, req: Req, deadline: Option<Deadline>) -> Self {
        ResponseFuture { state: State::Delayed { sleep: Delay::boxed(wait, deadline, (svc, req)) } }
    }

    pub(crate) fn checking(
        check: F,
        svc: S,
        req: Req,
        shared: Arc<Shared<St>>,
        deadline: Option<Deadline>,
    ) -> Self {
        let checking = Box::pin(Checking { check, parts: Some((svc, req)), shared, deadline });
        ResponseFuture { state: State::Checking { checking } }
    }
}

impl<S, Req, F, St> Future for ResponseFuture<S, Req, F, St>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: Future<Output = Result<Decision, BoxError>>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Called { fut } => {
                    let result = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(result.map_err(Into::into));
                }
                StateProj::Failed { error } => {
                    let error = error
                        .take()
                        .unwrap_or_else(|| "rate limit future polled after completion".into());
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Delayed { sleep } => {
                    let delay = sleep.as_mut().project();
                    ready!(delay.sleep.poll(cx));
                    // The instance was polled ready before the wait began.
                    let Some((mut svc, req)) = delay.parts.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err("rate limit future polled after a panic".into()));
                    };
                    let deadline = *delay.deadline;
                    let fut = Deadline::scope_opt(deadline, || svc.call(req));
                    this.state.set(State::Called { fut });
                }
                StateProj::Checking { checking } => {
                    let CheckingProj { check, parts, shared, deadline } =
                        checking.as_mut().project();
                    let decision = match ready!(check.poll(cx)) {
                        Ok(decision) => decision,
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                    };
                    let Some(parts) = parts.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err("rate limit future polled after a panic".into()));
                    };
                    let (mut svc, req) = parts;
                    match decision.verdict {
                        Verdict::Allow => {
                            shared.stats.admitted();
                            let fut = Deadline::scope_opt(*deadline, || svc.call(req));
                            this.state.set(State::Called { fut });
                        }
                        Verdict::AllowAfter(wait) => {
                            shared.stats.admitted();
                            shared.stats.delayed.fetch_add(1, Relaxed);
                            let sleep = Delay::boxed(wait, *deadline, (svc, req));
                            this.state.set(State::Delayed { sleep });
                        }
                        Verdict::Reject { .. } if shared.shadow => {
                            shared.stats.admitted();
                            shared.stats.shadow_rejected.fetch_add(1, Relaxed);
                            let fut = Deadline::scope_opt(*deadline, || svc.call(req));
                            this.state.set(State::Called { fut });
                        }
                        Verdict::Reject { retry_after } => {
                            let error = rejection(shared, &decision, retry_after);
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                    }
                }
                StateProj::Done => {
                    return Poll::Ready(Err("rate limit future polled after completion".into()));
                }
            }
        }
    }
}
