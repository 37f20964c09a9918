//! The server preset: the whole stack, in the recommended order, as one
//! layer.

use std::time::Duration;

use backpressure_concurrency::{
    ConcurrencyLimit, ConcurrencyLimitHandle, ConcurrencyLimitLayer, Gradient2, HoldUntilBodyEnd,
    Release,
};
use backpressure_core::{ConfigError, CurrentDeadline, HttpClassify};
use backpressure_http::{Internal, PriorityHeader, Respond, RespondLayer};
use backpressure_shed::LoadShedLayer;
use backpressure_timeout::{HttpDeadline, Timeout, TimeoutLayer};
use tower_layer::{Identity, Layer};

/// The concurrency limit the preset uses: priorities from the `priority`
/// header, the deadline from the timeout above it, HTTP 429, 503, 504 and
/// gRPC overload statuses as drops (congestion); other 5xx are failures,
/// which the limit ignores and a breaker counts.
pub type PresetConcurrency = ConcurrencyLimitLayer<PriorityHeader, CurrentDeadline, HttpClassify>;

/// The whole server stack in the recommended order, as one [`Layer`]:
///
/// 1. **respond** — rejections become 429 / 503 / 504 (or gRPC statuses)
///    with `Retry-After`; the error type becomes `Infallible`;
/// 2. **timeout** — one deadline from arrival, covering every wait below,
///    honouring an incoming `grpc-timeout`;
/// 3. **rate limit** (optional, [`rate_limit`](Self::rate_limit)) — per
///    client, the cheapest rejection first;
/// 4. **load shed** (with [`priority_header`](Self::priority_header)) — by
///    priority, on the concurrency limit's occupancy;
/// 5. **concurrency limit** — adaptive (Gradient2) by default, with a bounded
///    queue that never waits past the deadline;
/// 6. **circuit breaker** (optional, [`breaker`](Self::breaker));
/// 7. your service.
///
/// Why this order, and what goes wrong in the others:
///
/// - *respond outermost*: every rejection below must become a response;
///   anywhere lower, the layers above it see errors axum cannot serve.
/// - *timeout above the queue*: the deadline must start at arrival and cover
///   queueing. Below the concurrency limit it would only time the handler,
///   and requests could wait in the queue long after their client left.
/// - *rate limit above shedding and the limiter*: it is the cheapest check
///   and per client; below the limiter, an abusive client would hold
///   permits (and queue slots) before being told to slow down, crowding out
///   everybody else.
/// - *shed above the limiter*: it reads the limiter's occupancy and drops
///   low-priority work before it takes a queue slot; below it, shed
///   requests would already have waited for a permit. *No shedder without
///   priorities*: with every request at one priority a priority shedder has
///   nothing to choose between, and only shortens the queue (the default
///   ramps shed the default priority in the queue's last tenth, kept for
///   `critical-plus`); the queue's own bound does that job, one layer
///   cheaper (146 ns per request against 199 with the shedder and its
///   header, in one run of `cargo bench -p backpressure-benches --bench
///   layers -- preset/`).
/// - *breaker innermost*: it judges the dependency, so it must only see
///   requests that reached it; above the limiter it would count our own
///   queue timeouts and overload rejections as the dependency's failures
///   (our classifiers ignore them, but then it learns nothing while they
///   happen). Below the timeout, it still sees the dependency hang: the
///   timeout drops what it cuts inside
///   [`Deadline::expired_scope`](backpressure_core::Deadline::expired_scope),
///   and the breaker counts such a call as a failure (a client that hangs
///   up is not one). Measured in the overload lab's *hung dependency*
///   scenario: the breaker trips once its minimum calls have timed out, and
///   every later request fails at once.
///
/// # Guard rails
///
/// Configurations that defeat the stack without any error:
///
/// - **a timeout shorter than the queue's `max_wait`**: queued requests are
///   cut by the timeout (504) instead of being turned away early (503) —
///   warned about (a `tracing` warning) when the preset is built;
/// - **HTTP/2 `max_concurrent_streams` below the limit**: hyper stops
///   reading a connection's streams at that number (hyper#3559), so
///   requests queue invisibly in the connection, before any layer sees
///   them, and a single busy client can never reach the limit. With
///   HTTP/2 set the server's per-connection stream limit at or above
///   the concurrency limit's `max_limit` (hyper's default is 200; the
///   preset's adaptive limit may grow to 1,000);
/// - **a rate limit keyed on the peer address behind a proxy**: every
///   client shares the proxy's address; say what your proxies write and how
///   many there are (`ClientIp::x_forwarded_for(n)`, `ClientIp::forwarded(n)`)
///   or which addresses they have (`ClientIp::trusted_ranges(…)`), never
///   the leftmost `X-Forwarded-For` entry (any client can write it);
/// - **no peer address at all** (axum served without
///   `into_make_service_with_connect_info::<SocketAddr>()`, or the facade
///   without its `axum` / `tonic` feature): `ClientIp` falls back to one
///   shared key, `0.0.0.0`, and says so — an error logged once,
///   `ClientIp::missing_peer_count()`, and with `metrics` the counter
///   `backpressure_client_ip_missing_peer_total`;
/// - **layers outside the preset that buffer** (tower's `Buffer`, a
///   per-connection queue): an unbounded wait in front of the timeout is
///   time no deadline covers.
///
/// # Who can influence priority and keys
///
/// Nothing a client sends, by default:
///
/// - **priority**: the preset reads no header; every request has the
///   default priority (`Critical`), and there is no shedder.
///   [`priority_header`](ServerPreset::priority_header) opts in to a
///   header *you* name, for the limiter and a shedder it adds in front of
///   it — choose one only your own services can set (not `priority`, which
///   is RFC 9218's and which browsers send);
/// - **rate-limit keys**: `ClientIp::peer()` is the connection's address;
///   forwarding headers count only as far as you trust them (see
///   `backpressure::http::ClientIp`), and IPv6 clients are grouped by /64
///   so that one host cannot rotate addresses for fresh buckets.
///
/// ```
/// use backpressure::preset::ServerPreset;
/// use backpressure::rate::{Quota, RateLimitLayer};
/// use backpressure::breaker::CircuitBreakerLayer;
/// use backpressure::http::ClientIp;
///
/// # fn main() -> Result<(), backpressure::core::ConfigError> {
/// let preset = ServerPreset::new()
///     .rate_limit(RateLimitLayer::builder(Quota::per_second(20)).keyed(ClientIp::peer()).build()?)
///     .breaker(CircuitBreakerLayer::new());
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .layer(preset);
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
///
/// The type parameters are the layers you chose: `R` the rate limit, `B`
/// the breaker, `H` what holds the permit, `E` the error responses, `L` the
/// shedder ([`PresetShed`] once a priority header is named; [`Identity`],
/// none, until then).
#[derive(Debug, Clone)]
pub struct ServerPreset<R = Identity, B = Identity, H = Release, E = Internal, L = Identity> {
    respond: RespondLayer<E>,
    timeout: TimeoutLayer<(), HttpDeadline>,
    rate: R,
    shed: L,
    concurrency: ConcurrencyLimitLayer<PriorityHeader, CurrentDeadline, HttpClassify, H>,
    breaker: B,
}

/// The shedder [`ServerPreset::priority_header`] adds: by priority, on the
/// concurrency limit's occupancy, reading the limit's header.
pub type PresetShed = LoadShedLayer<ConcurrencyLimitHandle, PriorityHeader>;

/// [`ServerPreset::new`]: the defaults.
impl Default for ServerPreset {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerPreset {
    /// Safe defaults for a typical service: a 10 s deadline; an adaptive
    /// (Gradient2) limit starting at 20 with a queue of 100 and waits of at
    /// most 1 s, cut to about 5 ms while the queue stands under sustained
    /// overload (the default CoDel [`Discipline`](crate::concurrency::Discipline));
    /// every request at the default priority (no header is read, and
    /// nothing is shed by priority, until you opt in with
    /// [`priority_header`](Self::priority_header)). No rate limit and no
    /// breaker until you add them.
    pub fn new() -> Self {
        let concurrency = ConcurrencyLimitLayer::builder()
            .adaptive(Gradient2::new())
            .max_queue(100)
            .max_wait(Duration::from_secs(1))
            .priority(PriorityHeader::default())
            .classify(HttpClassify)
            .name("server");
        concurrency
            .build()
            .and_then(|c| Self::with_concurrency(c, Duration::from_secs(10)))
            .expect("the defaults are valid (tested)")
    }

    /// The preset around a concurrency limit of your own (fixed, another
    /// algorithm, other queue settings), with a `timeout`.
    ///
    /// Warns (a `tracing` warning) when the timeout is shorter than the
    /// queue's longest wait: requests would then be cut by the timeout
    /// rather than rejected early by the queue.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `timeout` if it is zero, or naming
    /// `priority` if the limit reads a priority header: name it with
    /// [`priority_header`](Self::priority_header) instead, which gives the
    /// shedder the same header (a preset without a shedder would silently
    /// never shed by it).
    pub fn with_concurrency(
        concurrency: PresetConcurrency,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        if let Some(name) = concurrency.priority_source().header_name() {
            return Err(ConfigError::new(
                "server-preset",
                "priority",
                format!(
                    "is read from the `{name}` header by the concurrency limit alone: build the \
                     limit without a header and name it with ServerPreset::priority_header, \
                     which sheds by it too"
                ),
            ));
        }
        let preset = ServerPreset {
            respond: RespondLayer::new(),
            timeout: TimeoutLayer::new(timeout)?.propagate(HttpDeadline::server()),
            rate: Identity::new(),
            shed: Identity::new(),
            concurrency,
            breaker: Identity::new(),
        };
        preset.check_guard_rails();
        Ok(preset)
    }
}

impl<R, B, H, E, L> ServerPreset<R, B, H, E, L> {
    /// Reads request priorities from `header`, for the limiter and for a
    /// shedder this adds in front of it (by priority, on the limit's
    /// occupancy: sheddable work goes first as the permits run out; see
    /// [`Thresholds`](crate::shed::Thresholds)). Opt in only with a header
    /// that outside clients cannot set (one your proxy strips, or one only
    /// your own services send): a client that can set it can declare itself
    /// `critical-plus`, is never shed on occupancy, and evicts queued
    /// requests.
    #[must_use]
    pub fn priority_header(self, header: PriorityHeader) -> ServerPreset<R, B, H, E, PresetShed> {
        let concurrency = self.concurrency.with_priority(header);
        // One priority source for the shedder and the limiter: the one the
        // limit reads (the first version gave the shedder its own
        // `priority` header whatever the limit read).
        let shed = LoadShedLayer::builder(concurrency.handle())
            .priority(concurrency.priority_source().clone())
            .name("server")
            .build()
            .expect("the shedder's defaults are valid");
        ServerPreset {
            respond: self.respond,
            timeout: self.timeout,
            rate: self.rate,
            shed,
            concurrency,
            breaker: self.breaker,
        }
    }

    /// Where request priorities come from (by default, nowhere: every
    /// request has the default priority).
    pub fn priority_source(&self) -> &PriorityHeader {
        self.concurrency.priority_source()
    }

    /// The responses for errors and rejections: an [`OnError`] of your own
    /// (for instance a problem+json body on every 429 and 503, through
    /// [`OnError::on_rejection`]; see its example). Default:
    /// [`Internal`] — rejections as status + `Retry-After` + `RateLimit`
    /// headers with an empty body, other errors as a logged, empty 500.
    ///
    /// [`OnError`]: backpressure_http::OnError
    /// [`OnError::on_rejection`]: backpressure_http::OnError::on_rejection
    pub fn on_error<E2>(self, on_error: E2) -> ServerPreset<R, B, H, E2, L> {
        ServerPreset {
            respond: self.respond.on_error(on_error),
            timeout: self.timeout,
            rate: self.rate,
            shed: self.shed,
            concurrency: self.concurrency,
            breaker: self.breaker,
        }
    }

    /// Also writes `X-RateLimit-Limit`, `-Remaining` and `-Reset` on 429s,
    /// for clients that know only those (the IETF draft's `RateLimit`
    /// headers are always written).
    #[must_use]
    pub fn x_ratelimit_headers(mut self, yes: bool) -> Self {
        self.respond = self.respond.x_ratelimit_headers(yes);
        self
    }

    /// Adds a rate limit (third in the stack). For `RateLimit` headers on
    /// admitted responses too, pass
    /// `ServiceBuilder::new().layer(RateLimitHeadersLayer::new()).layer(rate)`
    /// with `rate` built with `publish_admitted(true)`.
    pub fn rate_limit<R2>(self, rate: R2) -> ServerPreset<R2, B, H, E, L> {
        ServerPreset {
            respond: self.respond,
            timeout: self.timeout,
            rate,
            shed: self.shed,
            concurrency: self.concurrency,
            breaker: self.breaker,
        }
    }

    /// Adds a circuit breaker (innermost).
    pub fn breaker<B2>(self, breaker: B2) -> ServerPreset<R, B2, H, E, L> {
        ServerPreset {
            respond: self.respond,
            timeout: self.timeout,
            rate: self.rate,
            shed: self.shed,
            concurrency: self.concurrency,
            breaker,
        }
    }

    /// Whether the timeout stores the request's [`Deadline`] in its
    /// extensions, where handlers read it (e.g. to pass it on to a
    /// [`ClientPreset`](crate::client::ClientPreset) call). Default: yes.
    ///
    /// The insertion allocates when the request has no extensions yet
    /// (`http::Extensions` boxes its map on first use): 3 allocations per
    /// request on a bare `http::Request`, measured in
    /// `tests/allocations.rs` (the map's box, its table, the boxed value);
    /// behind an axum router, which inserts extensions of its own first,
    /// usually only the boxed value is left. With `false` the whole preset
    /// allocates nothing per admitted request.
    ///
    /// [`Deadline`]: backpressure_core::Deadline
    #[must_use]
    pub fn deadline_extension(mut self, yes: bool) -> Self {
        self.timeout = self.timeout.propagate(HttpDeadline::server().insert_extension(yes));
        self
    }

    /// Keeps each request's concurrency permit until its response body has
    /// been sent or dropped, for streaming responses and server-sent events
    /// (tower-http#447); see
    /// [`ConcurrencyLimitLayer::hold_until_body_end`].
    pub fn hold_until_body_end(self) -> ServerPreset<R, B, HoldUntilBodyEnd, E, L> {
        ServerPreset {
            respond: self.respond,
            timeout: self.timeout,
            rate: self.rate,
            shed: self.shed,
            concurrency: self.concurrency.hold_until_body_end(),
            breaker: self.breaker,
        }
    }

    /// The concurrency limit's handle (limit, in-flight, queue).
    pub fn concurrency_handle(&self) -> ConcurrencyLimitHandle {
        self.concurrency.handle()
    }

    fn check_guard_rails(&self) {
        let snapshot = self.concurrency.handle().snapshot();
        let max_wait = self.concurrency.max_wait();
        if snapshot.max_queue > 0 && self.timeout.timeout() < max_wait {
            tracing::warn!(
                timeout = ?self.timeout.timeout(),
                ?max_wait,
                "server preset: the timeout is shorter than the queue's max_wait; queued requests will time out instead of being rejected early"
            );
        }
    }
}

type Limited<B, S, H> =
    ConcurrencyLimit<<B as Layer<S>>::Service, PriorityHeader, CurrentDeadline, HttpClassify, H>;

impl<S, R, B, H: Clone, E: Clone, L> Layer<S> for ServerPreset<R, B, H, E, L>
where
    B: Layer<S>,
    L: Layer<Limited<B, S, H>>,
    R: Layer<L::Service>,
{
    type Service = Respond<Timeout<R::Service, (), HttpDeadline>, E>;

    fn layer(&self, inner: S) -> Self::Service {
        let svc = self.breaker.layer(inner);
        let svc = self.concurrency.layer(svc);
        let svc = self.shed.layer(svc);
        let svc = self.rate.layer(svc);
        let svc = self.timeout.layer(svc);
        self.respond.layer(svc)
    }
}
