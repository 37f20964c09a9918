//! `RateLimit` headers on admitted responses.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use backpressure_core::RateLimitInfo;
use http::Response;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::insert_rate_limit;

/// Adds the IETF draft's `RateLimit-Policy` and `RateLimit` headers to
/// *admitted* responses (the respond layer already puts them on 429s), so
/// well-behaved clients can pace themselves before they are limited.
///
/// Place it directly above a rate limit built with
/// `publish_admitted(true)` (nothing in between may defer the inner call:
/// the state is handed over on the thread, during `call`); with any other
/// inner service it adds nothing. The headers are formatted once per
/// admitted response (two small allocations).
///
/// ```
/// use backpressure_http::RateLimitHeadersLayer;
/// use backpressure_rate::{Quota, RateLimitLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let svc = ServiceBuilder::new()
///     .layer(RateLimitHeadersLayer::new())
///     .layer(RateLimitLayer::builder(Quota::per_second(10)).publish_admitted(true).build()?)
///     .service(service_fn(|_req: http::Request<()>| async {
///         Ok::<_, std::io::Error>(http::Response::new(()))
///     }));
/// let res = svc.oneshot(http::Request::new(())).await?;
/// assert_eq!(res.headers()["ratelimit-policy"], "\"default\";q=10;w=1");
/// assert_eq!(res.headers()["ratelimit"], "\"default\";r=9;t=1");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RateLimitHeadersLayer {
    x_ratelimit: bool,
}

impl RateLimitHeadersLayer {
    /// The layer.
    pub const fn new() -> Self {
        RateLimitHeadersLayer { x_ratelimit: false }
    }

    /// Also writes `X-RateLimit-Limit`, `-Remaining` and `-Reset`
    /// ([`insert_x_rate_limit`](crate::insert_x_rate_limit)), for clients
    /// that know only those.
    #[must_use]
    pub const fn x_ratelimit_headers(mut self, yes: bool) -> Self {
        self.x_ratelimit = yes;
        self
    }
}

impl<S> Layer<S> for RateLimitHeadersLayer {
    type Service = RateLimitHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitHeaders { inner, x_ratelimit: self.x_ratelimit }
    }
}

/// The service of [`RateLimitHeadersLayer`].
#[derive(Debug, Clone)]
pub struct RateLimitHeaders<S> {
    inner: S,
    x_ratelimit: bool,
}

impl<S, Req, B> Service<Req> for RateLimitHeaders<S>
where
    S: Service<Req, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = RateLimitHeadersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Whatever an earlier request left on this thread is not ours.
        let _ = RateLimitInfo::take_published();
        let fut = self.inner.call(req);
        RateLimitHeadersFuture {
            fut,
            info: RateLimitInfo::take_published(),
            x_ratelimit: self.x_ratelimit,
        }
    }
}

pin_project! {
    /// The response future of [`RateLimitHeaders`].
    pub struct RateLimitHeadersFuture<F> {
        #[pin]
        fut: F,
        info: Option<RateLimitInfo>,
        x_ratelimit: bool,
    }
}

/// Opaque: what a future holds is the inner service's and the request's
/// business; `Debug` names the type so that stacks of layers can derive it.
impl<F> std::fmt::Debug for RateLimitHeadersFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitHeadersFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for RateLimitHeadersFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.fut.poll(cx));
        if let (Ok(res), Some(info)) = (&mut result, this.info.take()) {
            insert_rate_limit(res.headers_mut(), &info);
            if *this.x_ratelimit {
                crate::insert_x_rate_limit(res.headers_mut(), &info);
            }
        }
        Poll::Ready(result)
    }
}
