//! What happens to the permit when the inner service answers: released at
//! once (the default), or held by the response until its body ends.

use crate::permit::Permit;

/// A concurrency permit handed to a response by [`OnResponse`]: the slot
/// is free again when this is dropped.
#[derive(Debug)]
pub struct HeldPermit(#[allow(dead_code)] pub(crate) Permit);

/// Decides what a response does with its request's permit.
///
/// [`Release`] (the default) returns the permit as soon as the inner
/// service's future completes. With the `http` feature, [`HoldUntilBodyEnd`]
/// moves it into the response body, so a streaming or SSE response keeps its
/// slot until the body has been sent or dropped (tower-http#447: a limit
/// released at the headers lets unbounded streams pile up behind it).
pub trait OnResponse<Res> {
    /// The response type the service returns.
    type Output;
    /// Whether the permit is handed to the response (`false`: released when
    /// the inner future completes, and `permit` is always `None`).
    const HOLDS: bool;
    /// Turns the inner service's response into the output, keeping
    /// `permit` alive as long as it needs.
    fn on_response(&self, response: Res, permit: Option<HeldPermit>) -> Self::Output;
}

/// Releases the permit when the inner future completes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Release;

impl<Res> OnResponse<Res> for Release {
    type Output = Res;
    const HOLDS: bool = false;

    #[inline(always)]
    fn on_response(&self, response: Res, _permit: Option<HeldPermit>) -> Res {
        response
    }
}

#[cfg(feature = "http")]
pub use body::{HoldUntilBodyEnd, PermitBody};

#[cfg(feature = "http")]
mod body {
    use std::{
        pin::Pin,
        task::{Context, Poll, ready},
    };

    use http_body::{Body, Frame, SizeHint};
    use pin_project_lite::pin_project;

    use super::{HeldPermit, OnResponse};

    /// Holds the permit in the `http::Response`'s body until the body
    /// reports its end, fails, or is dropped (the client went away).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct HoldUntilBodyEnd;

    impl<B: Body> OnResponse<http::Response<B>> for HoldUntilBodyEnd {
        type Output = http::Response<PermitBody<B>>;
        const HOLDS: bool = true;

        fn on_response(
            &self,
            response: http::Response<B>,
            permit: Option<HeldPermit>,
        ) -> Self::Output {
            response.map(|inner| {
                // An empty body frees the slot at once.
                let permit = if inner.is_end_stream() { None } else { permit };
                PermitBody { inner, permit }
            })
        }
    }

    pin_project! {
        /// A response body that holds its request's concurrency permit
        /// until it ends or is dropped.
        #[derive(Debug)]
        pub struct PermitBody<B> {
            #[pin]
            inner: B,
            permit: Option<HeldPermit>,
        }
    }

    impl<B: Default> Default for PermitBody<B> {
        /// An empty body holding no permit (for responses built outside the
        /// limiter, e.g. a rejection).
        fn default() -> Self {
            PermitBody { inner: B::default(), permit: None }
        }
    }

    impl<B> PermitBody<B> {
        /// Whether the body still holds its permit.
        pub fn holds_permit(&self) -> bool {
            self.permit.is_some()
        }
    }

    impl<B: Body> Body for PermitBody<B> {
        type Data = B::Data;
        type Error = B::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            let mut this = self.project();
            let frame = ready!(this.inner.as_mut().poll_frame(cx));
            match &frame {
                Some(Ok(_)) if !this.inner.is_end_stream() => {}
                // The end, an error, or the last frame: the work is done.
                _ => *this.permit = None,
            }
            Poll::Ready(frame)
        }

        fn is_end_stream(&self) -> bool {
            self.inner.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.inner.size_hint()
        }
    }
}
