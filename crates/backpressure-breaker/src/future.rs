use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use backpressure_core::{BoxError, Classify, Deadline, Outcome, stripe::Stripe};
use pin_project_lite::pin_project;

use crate::{
    metrics,
    state::{Admit, Shared, duration_nanos},
    window::Mark,
};

/// An admitted call's link to the breaker: records its outcome, or, if the
/// call is dropped unfinished, what the drop says.
///
/// A call dropped inside [`Deadline::expired_scope`] (the timeout above cut
/// it) or after the slow-call threshold is a failure and a slow call: a
/// dependency that hangs must trip the breaker, and "timeouts everywhere"
/// only meet the breaker here. A call dropped for another reason (the
/// client went away) says nothing about the dependency: ignored, or a
/// failure with `cancel_is_failure(true)`; a probe slot goes back.
///
/// Plain words, not `Admit` and `Option<u64>`: an enum's variant or a
/// `None` is written in a few bytes, and moving the guard into the response
/// future read them back in 16, a load the CPU cannot forward from the
/// smaller stores and waits for (`perf annotate` on `cargo bench -p
/// backpressure-benches --bench layers -- circuit_breaker_closed/backpressure`:
/// the breaker's hottest instruction).
pub(crate) struct CallGuard {
    // The calling thread's stripe of the breaker: holding it touches no
    // reference count other cores write (see `backpressure_core::stripe`).
    shared: Stripe<Shared>,
    // `CLOSED`, `PASS`, or the round of a half-open probe.
    admit: u64,
    // Nanoseconds since the breaker's epoch when the call started, plus
    // one; 0 when the call is not timed.
    start: u64,
    done: bool,
}

const CLOSED: u64 = u64::MAX;
const PASS: u64 = u64::MAX - 1;

impl CallGuard {
    #[inline]
    pub(crate) fn new(shared: Stripe<Shared>, admit: Admit) -> Self {
        let start = if admit != Admit::Pass && shared.needs_clock() {
            shared.now().saturating_add(1)
        } else {
            0
        };
        let admit = match admit {
            Admit::Closed => CLOSED,
            Admit::Probe(round) => round.min(PASS - 1),
            // A rejected call has no guard.
            Admit::Pass | Admit::Reject(_) => PASS,
        };
        CallGuard { shared, admit, start, done: false }
    }

    /// How the call was admitted.
    #[inline]
    fn admit(&self) -> Admit {
        match self.admit {
            CLOSED => Admit::Closed,
            PASS => Admit::Pass,
            round => Admit::Probe(round),
        }
    }

    /// When the call started, if it is timed.
    #[inline]
    fn start(&self) -> Option<u64> {
        self.start.checked_sub(1)
    }

    #[inline]
    fn complete(&mut self, outcome: Outcome) {
        self.done = true;
        let failed = match outcome {
            Outcome::Success => {
                self.shared.count(metrics::SUCCESS);
                false
            }
            Outcome::Failure | Outcome::Overloaded => {
                self.shared.count(metrics::FAILURE);
                true
            }
            Outcome::Ignore => {
                self.shared.count(metrics::IGNORED);
                if let Admit::Probe(round) = self.admit() {
                    self.shared.return_probe(round);
                }
                return;
            }
        };
        match self.admit() {
            Admit::Closed => self.shared.record_closed(failed, self.start()),
            Admit::Probe(round) => self.shared.record_probe(round, failed, self.start()),
            Admit::Pass | Admit::Reject(_) => {}
        }
    }

    /// What a drop before completion records, if anything.
    #[cold]
    fn dropped(&self) -> Option<(Mark, u64)> {
        if matches!(self.admit(), Admit::Pass | Admit::Reject(_)) {
            return None;
        }
        let now = self.shared.now();
        let past_slow = match (self.shared.config.slow_call, self.start()) {
            (Some(limit), Some(start)) => now.saturating_sub(start) >= duration_nanos(limit),
            _ => false,
        };
        if Deadline::in_expired_scope() || past_slow {
            return Some((Mark { failed: true, slow: true }, now));
        }
        self.shared.config.cancel_is_failure.then_some((Mark { failed: true, slow: false }, now))
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let dropped = self.dropped();
        self.shared.count(match dropped {
            Some((mark, _)) if mark.failed => metrics::FAILURE,
            _ => metrics::CANCELLED,
        });
        match (dropped, self.admit()) {
            (Some((mark, now)), Admit::Closed) => self.shared.record_closed_mark(mark, Some(now)),
            (Some((mark, now)), Admit::Probe(round)) => {
                self.shared.record_probe_mark(round, mark, now);
            }
            (None, Admit::Probe(round)) => self.shared.return_probe(round),
            _ => {}
        }
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker).
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F>,
        guard: Option<CallGuard>,
        classify: Option<C>,
    }
}

/// Opaque: what a future holds is the inner service's and the request's
/// business; `Debug` names the type so that stacks of layers can derive it.
impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] fut: F },
        Rejected { error: Option<BoxError> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn called(fut: F, guard: CallGuard, classify: C) -> Self {
        ResponseFuture {
            state: State::Called { fut },
            guard: Some(guard),
            classify: Some(classify),
        }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        ResponseFuture {
            state: State::Rejected { error: Some(error) },
            guard: None,
            classify: None,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Called { fut } => {
                let result = ready!(fut.poll(cx));
                if let (Some(guard), Some(classify)) = (this.guard.as_mut(), this.classify.as_ref())
                {
                    guard.complete(classify.classify(&result));
                }
                *this.guard = None;
                Poll::Ready(result.map_err(Into::into))
            }
            StateProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "circuit breaker future polled after completion".into()))),
        }
    }
}
