//! The client side of deadline propagation: write what is left of the
//! deadline into each request as it leaves, and do not send it if nothing is.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use backpressure_core::{BoxError, Deadline, RejectKind, Rejected};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::Propagate;

/// Writes the deadline in scope ([`Deadline::current`]), or the one the
/// request carries (e.g. a [`Deadline`] extension, read by
/// [`Propagate::incoming`]) if earlier, into each request just before it
/// is sent — as `grpc-timeout` and optionally a header, with
/// [`HttpDeadline::client`](crate::HttpDeadline::client) — and refuses to
/// send a request with less than `min_remaining` of its budget left
/// (`Rejected(DeadlineExceeded)`, without calling the inner service).
///
/// It belongs innermost in a client stack, right above the client: every
/// attempt of a retried request passes it, so each carries the budget that
/// is left *now*, not what was left when the first attempt started (the
/// timeout layer itself writes the budget once, at dispatch).
///
/// ```
/// # #[cfg(feature = "http")] {
/// use std::time::Duration;
/// use backpressure_timeout::{HttpDeadline, SendDeadlineLayer};
///
/// let send = SendDeadlineLayer::new(HttpDeadline::client().margin(Duration::from_millis(5)))
///     .min_remaining(Duration::from_millis(2));
/// # let _ = send;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SendDeadlineLayer<P> {
    propagate: P,
    min_remaining: Duration,
}

impl<P> SendDeadlineLayer<P> {
    /// Writes the deadline with `propagate`; refuses requests with no
    /// budget left (`min_remaining` 1 ms).
    pub const fn new(propagate: P) -> Self {
        SendDeadlineLayer { propagate, min_remaining: Duration::from_millis(1) }
    }

    /// The least budget worth sending a request with. Default 1 ms.
    #[must_use]
    pub const fn min_remaining(mut self, min: Duration) -> Self {
        self.min_remaining = min;
        self
    }
}

impl<S, P: Clone> Layer<S> for SendDeadlineLayer<P> {
    type Service = SendDeadline<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        SendDeadline { inner, propagate: self.propagate.clone(), min_remaining: self.min_remaining }
    }
}

/// The service built by [`SendDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct SendDeadline<S, P> {
    inner: S,
    propagate: P,
    min_remaining: Duration,
}

impl<S, P, Req> Service<Req> for SendDeadline<S, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Propagate<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = SendFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let deadline = Deadline::earliest(Deadline::current(), self.propagate.incoming(&req));
        if let Some(deadline) = deadline {
            if deadline.remaining() < self.min_remaining {
                return SendFuture { state: SendState::Expired };
            }
            self.propagate.outgoing(&mut req, || deadline);
        }
        SendFuture { state: SendState::Sent { fut: self.inner.call(req) } }
    }
}

pin_project! {
    /// The response future of [`SendDeadline`].
    pub struct SendFuture<F> {
        #[pin]
        state: SendState<F>,
    }
}

/// Opaque: what a future holds is the inner service's and the request's
/// business; `Debug` names the type so that stacks of layers can derive it.
impl<F> std::fmt::Debug for SendFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendFuture").finish_non_exhaustive()
    }
}

pin_project! {
    #[project = SendProj]
    enum SendState<F> {
        Sent { #[pin] fut: F },
        Expired,
    }
}

impl<F, T, E> Future for SendFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            SendProj::Sent { fut } => fut.poll(cx).map_err(Into::into),
            SendProj::Expired => Poll::Ready(Err(Rejected::new(RejectKind::DeadlineExceeded)
                .with_layer("send deadline")
                .into())),
        }
    }
}
