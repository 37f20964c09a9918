use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use backpressure_core::{BoxError, Classify, Outcome};
use pin_project_lite::pin_project;

use crate::state::{Admit, Shared};

/// An admitted call's link to the breaker: records its outcome, or gives a
/// probe slot back if the call is dropped unfinished.
pub(crate) struct CallGuard {
    shared: Arc<Shared>,
    admit: Admit,
    start: Option<u64>,
    done: bool,
}

impl CallGuard {
    #[inline]
    pub(crate) fn new(shared: Arc<Shared>, admit: Admit) -> Self {
        let start =
            if admit != Admit::Pass && shared.needs_clock() { Some(shared.now()) } else { None };
        CallGuard { shared, admit, start, done: false }
    }

    #[inline]
    fn complete(&mut self, outcome: Outcome) {
        self.done = true;
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignore => {
                if let Admit::Probe(round) = self.admit {
                    self.shared.return_probe(round);
                }
                return;
            }
        };
        match self.admit {
            Admit::Closed => self.shared.record_closed(failed, self.start),
            Admit::Probe(round) => self.shared.record_probe(round, failed, self.start),
            Admit::Pass | Admit::Reject(_) => {}
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.done
            && let Admit::Probe(round) = self.admit
        {
            self.shared.return_probe(round);
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
