use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll, ready},
    time::Duration,
};

use backpressure_core::{Deadline, instant_after};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::{Policy, Verdict, layer::Shared};

pin_project! {
    /// The response future of [`Retry`](crate::Retry).
    pub struct ResponseFuture<S, Req, P>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, S::Future>,
        // For later attempts: the service prototype and the request copy.
        svc: Option<S>,
        template: Option<Req>,
        deadline: Option<Deadline>,
        retries: u32,
        shared: Arc<Shared<P>>,
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
    enum State<S, Req, F> {
        Ready { svc: S, req: Option<Req> },
        Called { #[pin] fut: F },
        Backoff { #[pin] sleep: Sleep, svc: Option<S>, req: Option<Req> },
        Done,
    }
}

impl<S, Req, P> ResponseFuture<S, Req, P>
where
    S: Service<Req> + Clone,
{
    pub(crate) fn new(
        svc: S,
        req: Req,
        template: Option<Req>,
        deadline: Option<Deadline>,
        shared: Arc<Shared<P>>,
    ) -> Self {
        let prototype = template.as_ref().map(|_| svc.clone());
        ResponseFuture {
            state: State::Ready { svc, req: Some(req) },
            svc: prototype,
            template,
            deadline,
            retries: 0,
            shared,
        }
    }
}

enum Next<Req> {
    Return,
    Retry { delay: Duration, req: Req },
}

impl<S, Req, P> ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    P: Policy<Req, S::Response, S::Error>,
{
    /// Whether (and when) to send another attempt after `result`.
    fn next(
        shared: &Shared<P>,
        template: &mut Option<Req>,
        deadline: Option<Deadline>,
        retries: u32,
        result: &Result<S::Response, S::Error>,
    ) -> Next<Req> {
        let Some(tpl) = template.as_ref() else { return Next::Return };
        if retries + 1 >= shared.max_attempts {
            return Next::Return;
        }
        let Verdict::Retry { not_before } = shared.policy.check(result) else {
            return Next::Return;
        };
        let counters = &shared.counters;
        if let Some(nb) = not_before {
            let limit = match deadline {
                Some(d) => d.remaining(),
                None => shared.max_retry_after,
            };
            if nb > limit {
                counters.denied_pushback.fetch_add(1, Relaxed);
                tracing::debug!(layer = %shared.counters.name, ?nb, "retry: the upstream's Retry-After is beyond the deadline");
                return Next::Return;
            }
        }
        let delay =
            shared.backoff.delay(retries + 1, &shared.draw).max(not_before.unwrap_or_default());
        let needed = delay.saturating_add(shared.min_attempt_time);
        if deadline.is_some_and(|d| instant_after(Instant::now(), needed) >= d.instant()) {
            counters.denied_deadline.fetch_add(1, Relaxed);
            tracing::debug!(layer = %shared.counters.name, "retry: no time left before the deadline");
            return Next::Return;
        }
        // The last attempt can take the template itself.
        let req = if retries + 2 >= shared.max_attempts {
            template.take()
        } else {
            shared.policy.replay(tpl)
        };
        let Some(req) = req else { return Next::Return };
        if !shared.budget.withdraw() {
            counters.denied_budget.fetch_add(1, Relaxed);
            tracing::debug!(layer = %shared.counters.name, "retry: denied by the retry budget");
            return Next::Return;
        }
        counters.retries.fetch_add(1, Relaxed);
        tracing::debug!(layer = %shared.counters.name, retry = retries + 1, ?delay, "retrying");
        Next::Retry { delay, req }
    }
}

impl<S, Req, P> Future for ResponseFuture<S, Req, P>
where
    S: Service<Req> + Clone,
    P: Policy<Req, S::Response, S::Error>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Ready { svc, req } => {
                    if let Err(e) = ready!(svc.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e));
                    }
                    let Some(req) = req.take() else {
                        panic!("retry future polled after a panic in the inner service's call");
                    };
                    let fut = Deadline::scope_opt(*this.deadline, || svc.call(req));
                    this.state.set(State::Called { fut });
                }
                StateProj::Called { fut } => {
                    let result = ready!(fut.poll(cx));
                    match Self::next(
                        this.shared,
                        this.template,
                        *this.deadline,
                        *this.retries,
                        &result,
                    ) {
                        Next::Return => {
                            this.state.set(State::Done);
                            return Poll::Ready(result);
                        }
                        Next::Retry { delay, req } => {
                            drop(result);
                            *this.retries += 1;
                            this.shared.counters.attempts.fetch_add(1, Relaxed);
                            let svc = this.svc.clone();
                            if delay.is_zero() {
                                let svc = svc.expect("a retried request has a service prototype");
                                this.state.set(State::Ready { svc, req: Some(req) });
                            } else {
                                let sleep = sleep_until(instant_after(Instant::now(), delay));
                                this.state.set(State::Backoff { sleep, svc, req: Some(req) });
                            }
                        }
                    }
                }
                StateProj::Backoff { sleep, svc, req } => {
                    ready!(sleep.poll(cx));
                    let svc = svc.take().expect("a retried request has a service prototype");
                    let req = req.take();
                    this.state.set(State::Ready { svc, req });
                }
                StateProj::Done => panic!("retry future polled after completion"),
            }
        }
    }
}
