//! Rejections (and other errors) into responses: HTTP statuses or gRPC
//! trailers-only responses, with the headers a client needs to back off.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use backpressure_core::{BoxError, RejectKind, Rejected};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// Makes the response for errors that are not our rejections (default: an
/// empty 500, leaking no internal detail).
pub trait OnError<B> {
    /// The response for `error`; `grpc` says whether the request was gRPC.
    fn on_error(&self, error: BoxError, grpc: bool) -> Response<B>;

    /// The response for a rejection (default: [`rejection_response`]: the
    /// status, `Retry-After`, `RateLimit` headers, an empty body). Override
    /// it for a body of your own — start from `rejection_response` to keep
    /// the status and headers:
    ///
    /// ```
    /// use backpressure_core::{BoxError, RejectKind, Rejected};
    /// use backpressure_http::{OnError, RespondLayer, rejection_response};
    /// use http::{Request, Response, header};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// /// RFC 9457 problem details for rejections; 500s stay empty.
    /// #[derive(Clone)]
    /// struct Problem;
    ///
    /// impl OnError<String> for Problem {
    ///     fn on_error(&self, _error: BoxError, grpc: bool) -> Response<String> {
    ///         backpressure_http::Internal.on_error(_error, grpc)
    ///     }
    ///
    ///     fn on_rejection(&self, rejected: &Rejected, grpc: bool) -> Response<String> {
    ///         let mut res: Response<String> = rejection_response(rejected, grpc);
    ///         if !grpc {
    ///             let status = res.status();
    ///             *res.body_mut() = format!(
    ///                 r#"{{"type":"about:blank","status":{},"title":"{}","detail":"{}"}}"#,
    ///                 status.as_u16(),
    ///                 status.canonical_reason().unwrap_or(""),
    ///                 rejected.kind().as_str(),
    ///             );
    ///             res.headers_mut()
    ///                 .insert(header::CONTENT_TYPE, "application/problem+json".parse().unwrap());
    ///         }
    ///         res
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let limited = service_fn(|_: Request<()>| async {
    ///     Err::<Response<String>, BoxError>(Rejected::new(RejectKind::RateLimited).into())
    /// });
    /// let res = RespondLayer::new().on_error(Problem).layer(limited).oneshot(Request::new(())).await.unwrap();
    /// assert_eq!(res.status(), 429);
    /// assert_eq!(res.headers()["content-type"], "application/problem+json");
    /// assert!(res.body().contains(r#""status":429"#));
    /// # }
    /// ```
    fn on_rejection(&self, rejected: &Rejected, grpc: bool) -> Response<B>
    where
        B: Default,
    {
        rejection_response(rejected, grpc)
    }
}

/// The default [`OnError`]: 500 (or gRPC `INTERNAL`), empty body, and the
/// error logged (`tracing`, level `error`): the response leaks nothing, so
/// the log is the only place the cause is seen.
#[derive(Debug, Clone, Copy, Default)]
pub struct Internal;

impl<B: Default> OnError<B> for Internal {
    fn on_error(&self, error: BoxError, grpc: bool) -> Response<B> {
        tracing::error!(error = %error, grpc, "an inner service failed; answered 500 (gRPC INTERNAL)");
        if grpc {
            grpc_response(13, "internal error", None)
        } else {
            let mut res = Response::new(B::default());
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            res
        }
    }
}

impl<B, F> OnError<B> for F
where
    F: Fn(BoxError, bool) -> Response<B>,
{
    fn on_error(&self, error: BoxError, grpc: bool) -> Response<B> {
        self(error, grpc)
    }
}

/// The outermost layer of a server stack: turns every error into a response,
/// so the stack's error type is `Infallible` and it drops into
/// `axum::Router::layer` or a tonic server with no `HandleErrorLayer`.
///
/// | rejection | HTTP | gRPC (`grpc-status`) |
/// |---|---|---|
/// | `RateLimited` | 429 + `RateLimit-Policy`, `RateLimit` | 8 `RESOURCE_EXHAUSTED` |
/// | `Overloaded`, `QueueTimeout`, `CircuitOpen` | 503 | 14 `UNAVAILABLE` |
/// | `DeadlineExceeded` | 504 | 4 `DEADLINE_EXCEEDED` |
/// | any other error | [`OnError`] (500) | 13 `INTERNAL` |
///
/// Each rejection with a known retry time carries `Retry-After` (seconds,
/// rounded up) or `grpc-retry-pushback-ms`. A request is gRPC when its
/// `content-type` starts with `application/grpc`; gRPC rejections are
/// trailers-only responses (status 200, the `grpc-status` in the headers).
/// Bodies are empty (`B::default()`): the status and headers say it all.
///
/// ```
/// use backpressure_core::{BoxError, RejectKind, Rejected};
/// use backpressure_http::RespondLayer;
/// use http::{Request, Response, StatusCode};
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let overloaded = service_fn(|_req: Request<()>| async {
///     let r = Rejected::new(RejectKind::Overloaded).with_retry_after(Duration::from_millis(1_500));
///     Err::<Response<String>, BoxError>(r.into())
/// });
/// let res = RespondLayer::new().layer(overloaded).oneshot(Request::new(())).await.unwrap();
/// assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(res.headers()["retry-after"], "2");
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RespondLayer<F = Internal> {
    on_error: F,
    x_ratelimit: bool,
}

impl RespondLayer {
    /// Responses for rejections, an empty 500 for anything else.
    pub fn new() -> Self {
        crate::metrics::init();
        RespondLayer { on_error: Internal, x_ratelimit: false }
    }
}

impl<F> RespondLayer<F> {
    /// Decides the response for errors that are not rejections, and — with
    /// [`OnError::on_rejection`] — for rejections too (a JSON body, say).
    pub fn on_error<F2>(self, on_error: F2) -> RespondLayer<F2> {
        RespondLayer { on_error, x_ratelimit: self.x_ratelimit }
    }

    /// Also writes `X-RateLimit-Limit`, `-Remaining` and `-Reset` on rate
    /// limit rejections ([`insert_x_rate_limit`]), for clients that know
    /// only those (default: the IETF draft's `RateLimit` headers alone).
    #[must_use]
    pub fn x_ratelimit_headers(mut self, yes: bool) -> Self {
        self.x_ratelimit = yes;
        self
    }
}

impl<S, F: Clone> Layer<S> for RespondLayer<F> {
    type Service = Respond<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Respond {
            inner,
            on_error: self.on_error.clone(),
            x_ratelimit: self.x_ratelimit,
            ready_error: None,
        }
    }
}

/// The service of [`RespondLayer`].
pub struct Respond<S, F> {
    inner: S,
    on_error: F,
    x_ratelimit: bool,
    /// The inner service failed in `poll_ready`: answer the next call with it.
    ready_error: Option<BoxError>,
}

impl<S: Clone, F: Clone> Clone for Respond<S, F> {
    fn clone(&self) -> Self {
        Respond {
            inner: self.inner.clone(),
            on_error: self.on_error.clone(),
            x_ratelimit: self.x_ratelimit,
            ready_error: None,
        }
    }
}

impl<S: fmt::Debug, F> fmt::Debug for Respond<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Respond").field("inner", &self.inner).finish_non_exhaustive()
    }
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl<S, F, B, ResBody> Service<Request<B>> for Respond<S, F>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Default,
    F: OnError<ResBody> + Clone,
{
    type Response = Response<ResBody>;
    type Error = Infallible;
    type Future = RespondFuture<S::Future, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.ready_error.is_none()
            && let Err(e) = ready!(self.inner.poll_ready(cx))
        {
            self.ready_error = Some(e.into());
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let grpc = is_grpc(&req);
        let (x_ratelimit, on_error) = (self.x_ratelimit, self.on_error.clone());
        if let Some(error) = self.ready_error.take() {
            let state = State::Failed { error: Some(error) };
            return RespondFuture { state, grpc, x_ratelimit, on_error };
        }
        // The inner future built straight into the returned one: built into
        // a local first, it was copied twice (320 bytes each time on the
        // server preset's stack).
        RespondFuture {
            state: State::Called { fut: self.inner.call(req) },
            grpc,
            x_ratelimit,
            on_error,
        }
    }
}

pin_project! {
    /// The response future of [`Respond`].
    pub struct RespondFuture<Fut, F> {
        #[pin]
        state: State<Fut>,
        grpc: bool,
        x_ratelimit: bool,
        on_error: F,
    }
}

/// Opaque: what a future holds is the inner service's and the request's
/// business; `Debug` names the type so that stacks of layers can derive it.
impl<Fut, F> std::fmt::Debug for RespondFuture<Fut, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespondFuture").finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut> {
        Called { #[pin] fut: Fut },
        Failed { error: Option<BoxError> },
    }
}

impl<Fut, F, E, B> Future for RespondFuture<Fut, F>
where
    Fut: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Default,
    F: OnError<B>,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let error = match this.state.project() {
            StateProj::Called { fut } => match ready!(fut.poll(cx)) {
                Ok(res) => return Poll::Ready(Ok(res)),
                Err(e) => e.into(),
            },
            StateProj::Failed { error } => {
                error.take().unwrap_or_else(|| "polled after completion".into())
            }
        };
        let rejected = Rejected::find(&error);
        crate::metrics::responded(rejected.map(Rejected::kind));
        let response = match rejected {
            Some(rejected) => {
                let mut res = this.on_error.on_rejection(rejected, *this.grpc);
                if *this.x_ratelimit
                    && !*this.grpc
                    && let Some(info) = rejected.rate_limit()
                {
                    insert_x_rate_limit(res.headers_mut(), info);
                }
                res
            }
            None => this.on_error.on_error(error, *this.grpc),
        };
        Poll::Ready(Ok(response))
    }
}

/// The response for a rejection (public so client-side and custom stacks can
/// reuse it).
pub fn rejection_response<B: Default>(rejected: &Rejected, grpc: bool) -> Response<B> {
    if grpc {
        let (code, message) = match rejected.kind() {
            RejectKind::RateLimited => (8, "rate limited"),
            RejectKind::DeadlineExceeded => (4, "deadline exceeded"),
            RejectKind::CircuitOpen => (14, "circuit open"),
            RejectKind::QueueTimeout => (14, "timed out in queue"),
            _ => (14, "overloaded"),
        };
        return grpc_response(code, message, rejected.retry_after());
    }
    let status = match rejected.kind() {
        RejectKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        RejectKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut res = Response::new(B::default());
    *res.status_mut() = status;
    let headers = res.headers_mut();
    if let Some(after) = rejected.retry_after() {
        headers.insert(header::RETRY_AFTER, number(ceil_secs(after)));
    }
    if let Some(info) = rejected.rate_limit() {
        insert_rate_limit(headers, info);
    }
    res
}

/// Writes the IETF draft's `RateLimit-Policy` and `RateLimit` headers
/// (`draft-ietf-httpapi-ratelimit-headers`, structured-field syntax).
///
/// The policy advertises the sustained quota (`q` per `w` seconds), not the
/// burst: the first version wrote the burst, which overstates the rate
/// whenever the two differ (a quota of 10/s with a burst of 50 is not 50/s).
pub fn insert_rate_limit(headers: &mut HeaderMap, info: &backpressure_core::RateLimitInfo) {
    let policy = format!("\"default\";q={};w={}", info.quota, ceil_secs(info.window));
    let state = format!("\"default\";r={};t={}", info.remaining, ceil_secs(info.reset));
    if let Ok(v) = HeaderValue::from_str(&policy) {
        headers.insert("ratelimit-policy", v);
    }
    if let Ok(v) = HeaderValue::from_str(&state) {
        headers.insert("ratelimit", v);
    }
}

/// Writes the de-facto `X-RateLimit-Limit` (the sustained quota per
/// window), `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds until
/// the full burst is back), for clients that know only those (GitHub's and
/// most API gateways' names).
pub fn insert_x_rate_limit(headers: &mut HeaderMap, info: &backpressure_core::RateLimitInfo) {
    headers.insert("x-ratelimit-limit", number(u64::from(info.quota)));
    headers.insert("x-ratelimit-remaining", number(u64::from(info.remaining)));
    headers.insert("x-ratelimit-reset", number(ceil_secs(info.reset)));
}

fn grpc_response<B: Default>(
    code: u32,
    message: &'static str,
    retry_after: Option<Duration>,
) -> Response<B> {
    let mut res = Response::new(B::default());
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(backpressure_core::GRPC_STATUS.clone(), number(u64::from(code)));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    if let Some(after) = retry_after {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        headers.insert(backpressure_core::GRPC_RETRY_PUSHBACK_MS.clone(), number(ms));
    }
    res
}

/// Seconds, rounded up (a client retrying early would only be rejected).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn number(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}
