use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use backpressure_core::BoxError;
use pin_project_lite::pin_project;

use crate::signal::InFlightGuard;

pin_project! {
    /// The response future of [`LoadShed`](crate::LoadShed): the inner
    /// future, or an immediate rejection.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        guard: Option<InFlightGuard>,
    }
}

/// Opaque: what a future holds is the inner service's and the request's
/// business; `Debug` names the type so that stacks of layers can derive it.
impl<F> std::fmt::Debug for ResponseFuture<F> {
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

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn called(fut: F, guard: Option<InFlightGuard>) -> Self {
        ResponseFuture { state: State::Called { fut }, guard }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        ResponseFuture { state: State::Rejected { error: Some(error) }, guard: None }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Called { fut } => {
                let result = ready!(fut.poll(cx));
                this.guard.take();
                Poll::Ready(result.map_err(Into::into))
            }
            StateProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "load shed future polled after completion".into()))),
        }
    }
}
