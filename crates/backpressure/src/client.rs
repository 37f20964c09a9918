//! The client preset: the client stack, in the recommended order, as one
//! layer.

use std::time::Duration;

use backpressure_breaker::{AdaptiveThrottleLayer, ThrottleHandle};
use backpressure_concurrency::{
    Aimd, ConcurrencyLimitHandle, ConcurrencyLimitLayer, ConcurrencyLimitSnapshot,
};
use backpressure_core::{ConfigError, CurrentDeadline, DefaultPriority, HttpClassify};
use backpressure_http::{PushbackHandle, PushbackLayer, PushbackService, PushbackSnapshot};
use backpressure_retry::{HttpRetry, RetryHandle, RetryLayer, RetrySnapshot};
use backpressure_timeout::{HttpDeadline, SendDeadline, SendDeadlineLayer, Timeout, TimeoutLayer};
use tower_layer::{Identity, Layer};

/// The concurrency limit the client preset uses: AIMD, with HTTP 429, 503,
/// 504, gRPC overload statuses and timeouts as drops (other 5xx are the
/// breaker's business).
pub type ClientConcurrency = ConcurrencyLimitLayer<DefaultPriority, CurrentDeadline, HttpClassify>;

/// The breaker slot's default: the SRE book's adaptive client-side
/// throttling, with HTTP overload statuses as rejections.
pub type ClientThrottle = AdaptiveThrottleLayer<HttpClassify>;

/// The whole client stack in the recommended order, as one [`Layer`] in
/// front of any tower HTTP client (hyper-util's legacy `Client`, a
/// `tower::service_fn` around reqwest, a tonic `Channel`):
///
/// 1. **total deadline** ([`timeout`](Self::timeout), default 10 s) —
///    covers every attempt and every wait below; an earlier deadline in
///    scope ([`Deadline::current`](backpressure_core::Deadline::current)) or
///    in the request's extensions (a server handler passing its own
///    request's deadline on) wins;
/// 2. **retry with a budget** ([`retry`](Self::retry), default:
///    [`HttpRetry`], 3 attempts, retries ≤ 10 % of requests + 1/s);
/// 3. **pushback** — after a `Retry-After` or `grpc-retry-pushback-ms`,
///    new requests wait (within their deadline) or are refused;
/// 4. **breaker or adaptive throttling** ([`breaker`](Self::breaker),
///    default [`ClientThrottle`]);
/// 5. **concurrency limit** ([`concurrency`](Self::concurrency), default
///    AIMD from 20, queue of 50 within the deadline);
/// 6. **rate limit** ([`rate_limit`](Self::rate_limit), off by default) —
///    the downstream's quota;
/// 7. **deadline propagation** — an attempt with no budget left is not
///    sent; with [`propagate_deadline`](Self::propagate_deadline) (opt-in,
///    per upstream: a deadline is internal information a third party has
///    no use for) each attempt carries what is left of the deadline as
///    `grpc-timeout` (minus a 5 ms margin, and optionally a header);
/// 8. your client.
///
/// Why this order, and what goes wrong in the others:
///
/// - *deadline outermost*: it bounds the caller's total wait. Inside the
///   retry layer it would bound each attempt instead, and three attempts
///   could take three times the caller's budget.
/// - *retry above everything that can say no*: each attempt passes the
///   pushback, the breaker and the limits again. Below the breaker, retries
///   would bypass it; below the limit, a request would keep its permit
///   through its backoff sleeps.
/// - *pushback right below the retry*: a retry waits for the upstream's
///   `Retry-After` like any new request, and a held request holds no permit
///   (it is above the limit) and is not counted by the breaker.
/// - *breaker above the limit*: an open circuit or a throttled request is
///   refused before it takes a permit; below, it would queue first.
/// - *concurrency limit (AIMD) above the rate limit*: AIMD learns from
///   drops — 429/503 and timeouts — the right choice when the upstream's
///   latency is not yours to judge; the rate limit is the downstream's
///   stated quota and paces what gets through.
/// - *propagation innermost*: written at the last moment, the budget is
///   what is really left after queueing, backoff and holds.
///
/// The preset speaks `http::Request<B>` / `http::Response<_>`, with `B` a
/// [replayable](backpressure_retry::ReplayBody) body for retries
/// (`Full<Bytes>`, `String`, ...): hyper-util's client and tonic's
/// `Channel` take it as is. `reqwest::Client` is a tower service over its
/// own request type; put a `service_fn` in between that converts with
/// `reqwest::Request::try_from(http::Request)` and
/// `http::Response::from(reqwest::Response)` — `examples/reqwest.rs` shows
/// it, and `tests/client.rs` drives a real `reqwest::Client` through the
/// preset (retries, `Retry-After`, deadline propagation).
///
/// ```
/// use std::time::Duration;
/// use backpressure::client::ClientPreset;
/// use tower::{ServiceBuilder, service_fn};
///
/// # fn main() -> Result<(), backpressure::core::ConfigError> {
/// let client = ServiceBuilder::new()
///     .layer(ClientPreset::new().timeout(Duration::from_secs(2))?)
///     .service(service_fn(|_req: http::Request<String>| async {
///         Ok::<_, std::io::Error>(http::Response::new(()))
///     }));
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientPreset<
    R = RetryLayer<HttpRetry>,
    B = ClientThrottle,
    L = ClientConcurrency,
    Q = Identity,
> {
    timeout: TimeoutLayer<(), HttpDeadline>,
    retry: R,
    pushback: PushbackLayer,
    breaker: B,
    concurrency: L,
    rate: Q,
    send: SendDeadlineLayer<HttpDeadline>,
    handles: ClientHandles,
}

/// Handles on the client preset's default pieces (a piece you replace is
/// observed through your own layer's handle).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientHandles {
    /// The retry layer's counters and budget.
    pub retry: Option<RetryHandle>,
    /// The pushback gate.
    pub pushback: PushbackHandle,
    /// The adaptive throttle.
    pub throttle: Option<ThrottleHandle>,
    /// The concurrency limit.
    pub concurrency: Option<ConcurrencyLimitHandle>,
}

/// What the client stack is doing, for dashboards and logs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientSnapshot {
    /// Attempts, retries, retries denied (budget, deadline, pushback).
    pub retry: Option<RetrySnapshot>,
    /// The pushback in force, held and refused requests.
    pub pushback: PushbackSnapshot,
    /// The throttle's local rejection probability and rejections so far.
    pub throttle: Option<(f64, u64)>,
    /// The concurrency limit: limit, in flight, queued, rejections.
    pub concurrency: Option<ConcurrencyLimitSnapshot>,
}

impl ClientHandles {
    /// Everything now.
    pub fn snapshot(&self) -> ClientSnapshot {
        ClientSnapshot {
            retry: self.retry.as_ref().map(RetryHandle::snapshot),
            pushback: self.pushback.snapshot(),
            throttle: self.throttle.as_ref().map(|t| (t.probability(), t.rejected())),
            concurrency: self.concurrency.as_ref().map(ConcurrencyLimitHandle::snapshot),
        }
    }
}

/// [`ClientPreset::new`]: the defaults.
impl Default for ClientPreset {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientPreset {
    /// Safe defaults for a client of one upstream: a 10 s total deadline;
    /// [`HttpRetry`] with 3 attempts within a 10 % + 1/s budget; pushback
    /// held within the deadline; adaptive throttling (K = 2, from 20 requests
    /// in its 2-minute window); an AIMD limit
    /// from 20 (1..=500) with a queue of 50; the deadline not written into
    /// requests (opt in with [`propagate_deadline`](Self::propagate_deadline)
    /// for upstreams of your own). Build one preset per upstream: the
    /// budget, the pushback, the throttle, the limit and whether it may
    /// know your deadlines describe that upstream.
    pub fn new() -> Self {
        Self::try_defaults().expect("the defaults are valid (tested)")
    }

    fn try_defaults() -> Result<Self, ConfigError> {
        let retry = RetryLayer::builder(HttpRetry::new()).name("client").build()?;
        let pushback = PushbackLayer::builder().name("client").build()?;
        let throttle = AdaptiveThrottleLayer::builder()
            .min_requests(20)
            .classify(HttpClassify)
            .name("client")
            .build()?;
        let concurrency = ConcurrencyLimitLayer::builder()
            .adaptive(Aimd::new().initial_limit(20).min_limit(1).max_limit(500))
            .max_queue(50)
            .classify(HttpClassify)
            .name("client")
            .build()?;
        let handles = ClientHandles {
            retry: Some(retry.handle()),
            pushback: pushback.handle(),
            throttle: Some(throttle.handle()),
            concurrency: Some(concurrency.handle()),
        };
        Ok(ClientPreset {
            timeout: TimeoutLayer::new(Duration::from_secs(10))?.propagate(incoming_only()),
            retry,
            pushback,
            breaker: throttle,
            concurrency,
            rate: Identity::new(),
            // Nothing written until the upstream opts in: a deadline is
            // internal information (`propagate_deadline`).
            send: SendDeadlineLayer::new(
                HttpDeadline::client().write_grpc_timeout(false).margin(Duration::from_millis(5)),
            ),
            handles,
        })
    }
}

impl<R, B, L, Q> ClientPreset<R, B, L, Q> {
    /// The total deadline of a call, retries included.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `timeout` if it is zero.
    pub fn timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        self.timeout = TimeoutLayer::new(timeout)?.propagate(incoming_only());
        Ok(self)
    }

    /// Tells this upstream the deadline: each attempt carries what is left
    /// of it as `grpc-timeout`, minus a 5 ms margin for the trip. For
    /// upstreams of your own (they can honour it, and nothing leaks); a
    /// third party learns nothing of your deadlines unless you opt in.
    #[must_use]
    pub fn propagate_deadline(self) -> Self {
        self.propagate(HttpDeadline::client().margin(Duration::from_millis(5)))
    }

    /// How the deadline is written into outgoing requests (default: not at
    /// all; [`propagate_deadline`](Self::propagate_deadline) writes
    /// `grpc-timeout` with a 5 ms margin; add a millisecond header with
    /// [`HttpDeadline::header`]). Whatever is written, an attempt with no
    /// budget left is not sent.
    #[must_use]
    pub fn propagate(mut self, propagate: HttpDeadline) -> Self {
        self.send = SendDeadlineLayer::new(propagate);
        self
    }

    /// The pushback gate (e.g. in reject mode).
    pub fn pushback(mut self, pushback: PushbackLayer) -> Self {
        self.handles.pushback = pushback.handle();
        self.pushback = pushback;
        self
    }

    /// Replaces the retry layer ([`RetryLayer`] with your policy or budget,
    /// or [`Identity`] for none). Read a [`RetryLayer`]'s counters with
    /// [`retry_handle`](ClientPreset::retry_handle).
    pub fn retry<R2>(self, retry: R2) -> ClientPreset<R2, B, L, Q> {
        let mut handles = self.handles;
        handles.retry = None;
        ClientPreset {
            timeout: self.timeout,
            retry,
            pushback: self.pushback,
            breaker: self.breaker,
            concurrency: self.concurrency,
            rate: self.rate,
            send: self.send,
            handles,
        }
    }

    /// Replaces the breaker slot (a `CircuitBreakerLayer`, another
    /// throttle, or [`Identity`]).
    pub fn breaker<B2>(self, breaker: B2) -> ClientPreset<R, B2, L, Q> {
        let mut handles = self.handles;
        handles.throttle = None;
        ClientPreset {
            timeout: self.timeout,
            retry: self.retry,
            pushback: self.pushback,
            breaker,
            concurrency: self.concurrency,
            rate: self.rate,
            send: self.send,
            handles,
        }
    }

    /// Replaces the concurrency limit (or [`Identity`] for none).
    pub fn concurrency<L2>(self, concurrency: L2) -> ClientPreset<R, B, L2, Q> {
        let mut handles = self.handles;
        handles.concurrency = None;
        ClientPreset {
            timeout: self.timeout,
            retry: self.retry,
            pushback: self.pushback,
            breaker: self.breaker,
            concurrency,
            rate: self.rate,
            send: self.send,
            handles,
        }
    }

    /// Adds the downstream's rate limit (sixth in the stack).
    pub fn rate_limit<Q2>(self, rate: Q2) -> ClientPreset<R, B, L, Q2> {
        ClientPreset {
            timeout: self.timeout,
            retry: self.retry,
            pushback: self.pushback,
            breaker: self.breaker,
            concurrency: self.concurrency,
            rate,
            send: self.send,
            handles: self.handles,
        }
    }

    /// Handles on the default pieces.
    pub fn handles(&self) -> ClientHandles {
        self.handles.clone()
    }
}

impl<P, B, L, Q> ClientPreset<RetryLayer<P>, B, L, Q> {
    /// The retry layer's handle.
    pub fn retry_handle(&self) -> RetryHandle {
        self.retry.handle()
    }
}

/// The client's timeout reads a [`Deadline`](backpressure_core::Deadline)
/// the outgoing request carries in its extensions (a server handler passing
/// on its own request's deadline) and stores the effective one there, where
/// every attempt (retries copy extensions) carries it down to the
/// propagation layer; it writes no header itself: propagation happens per
/// attempt, innermost.
fn incoming_only() -> HttpDeadline {
    HttpDeadline::client().write_grpc_timeout(false).insert_extension(true)
}

/// The service the client preset builds around `S`.
pub type ClientService<S, R, B, L, Q> = Timeout<
    <R as Layer<
        PushbackService<
            <B as Layer<
                <L as Layer<<Q as Layer<SendDeadline<S, HttpDeadline>>>::Service>>::Service,
            >>::Service,
        >,
    >>::Service,
    (),
    HttpDeadline,
>;

impl<S, R, B, L, Q> Layer<S> for ClientPreset<R, B, L, Q>
where
    Q: Layer<SendDeadline<S, HttpDeadline>>,
    L: Layer<Q::Service>,
    B: Layer<L::Service>,
    R: Layer<PushbackService<B::Service>>,
{
    type Service = ClientService<S, R, B, L, Q>;

    fn layer(&self, inner: S) -> Self::Service {
        let svc = self.send.layer(inner);
        let svc = self.rate.layer(svc);
        let svc = self.concurrency.layer(svc);
        let svc = self.breaker.layer(svc);
        let svc = self.pushback.layer(svc);
        let svc = self.retry.layer(svc);
        self.timeout.layer(svc)
    }
}
