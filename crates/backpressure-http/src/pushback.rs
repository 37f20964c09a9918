//! The client side of pushback: hold (or refuse) new requests to an
//! upstream that said "not before".

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll, ready},
    time::{Duration, SystemTime},
};

use backpressure_core::{
    BoxError, ConfigError, Deadline, Draw, LayerName, Pushback as Said, RejectKind, Rejected,
};
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower_layer::Layer;
use tower_service::Service;

/// What to do with a request that arrives while the upstream's pushback
/// holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PushbackMode {
    /// Wait until the pushback ends, if the request's deadline (see
    /// [`Deadline::current`]) lasts that long; otherwise reject at once.
    #[default]
    Hold,
    /// Reject at once with `Rejected(RateLimited)` carrying the time left.
    Reject,
}

struct Gate {
    /// Milliseconds after `base` until which the upstream asked for quiet;
    /// 0 when no pushback is in force (the fast path reads only this).
    until_ms: AtomicU64,
    base: OnceLock<Instant>,
    held: AtomicU64,
    holds: AtomicU64,
    rejected: AtomicU64,
    armed: AtomicU64,
    mode: PushbackMode,
    max_held: u64,
    max_pushback: Duration,
    spread: f64,
    draw: Draw,
    name: LayerName,
    #[cfg(feature = "metrics")]
    published: [backpressure_core::metrics::Published; 3],
}

/// | name | kind | labels |
/// |---|---|---|
/// | `backpressure_pushback_held_total` | counter: requests held until the upstream's time | `name` |
/// | `backpressure_pushback_rejected_total` | counter: requests rejected because of a pushback | `name` |
/// | `backpressure_pushback_pushbacks_total` | counter: times the upstream asked for quiet | `name` |
/// | `backpressure_pushback_holding` | gauge: requests held now | `name` |
/// | `backpressure_pushback_remaining_seconds` | gauge: time left of the pushback in force | `name` |
#[cfg(feature = "metrics")]
impl backpressure_core::metrics::Publish for Gate {
    fn publish(&self) {
        use metrics::{Unit, describe_counter, describe_gauge};
        describe_counter!(
            "backpressure_pushback_held_total",
            Unit::Count,
            "Requests held until the time the upstream asked for."
        );
        describe_counter!(
            "backpressure_pushback_rejected_total",
            Unit::Count,
            "Requests rejected because the upstream asked for quiet."
        );
        describe_counter!(
            "backpressure_pushback_pushbacks_total",
            Unit::Count,
            "Times the upstream asked for quiet (Retry-After, grpc-retry-pushback-ms)."
        );
        describe_gauge!("backpressure_pushback_holding", Unit::Count, "Requests held now.");
        describe_gauge!(
            "backpressure_pushback_remaining_seconds",
            Unit::Seconds,
            "Time left of the pushback in force."
        );
        let name = self.name.to_string();
        let p = &self.published;
        let counters = [
            ("backpressure_pushback_held_total", &self.holds),
            ("backpressure_pushback_rejected_total", &self.rejected),
            ("backpressure_pushback_pushbacks_total", &self.armed),
        ];
        for ((metric, total), published) in counters.into_iter().zip(p) {
            metrics::counter!(metric, "name" => name.clone())
                .increment(published.since(total.load(Relaxed)));
        }
        metrics::gauge!("backpressure_pushback_holding", "name" => name.clone())
            .set(self.held.load(Relaxed) as f64);
        let now = Instant::now();
        let remaining = self.until(now).map_or(Duration::ZERO, |u| u - now);
        metrics::gauge!("backpressure_pushback_remaining_seconds", "name" => name)
            .set(remaining.as_secs_f64());
    }
}

/// What was counted since the last publication is published as the layer
/// goes.
#[cfg(feature = "metrics")]
impl Drop for Gate {
    fn drop(&mut self) {
        backpressure_core::metrics::Publish::publish(self);
    }
}

impl Gate {
    /// When a request held until `until` goes: spread over the next
    /// `spread × left` (at most 1 s), never past its deadline, so the held
    /// requests do not all hit the upstream at the instant it asked for.
    fn release_at(&self, now: Instant, until: Instant, deadline: Option<Deadline>) -> Instant {
        let window = (until - now).mul_f64(self.spread).min(Duration::from_secs(1));
        let at = until + window.mul_f64(self.draw.next_f64());
        deadline.map_or(at, |d| at.min(d.instant()).max(until))
    }

    fn base(&self) -> Instant {
        *self.base.get_or_init(Instant::now)
    }

    /// The instant the current pushback ends, if one is in force at `now`.
    fn until(&self, now: Instant) -> Option<Instant> {
        let ms = self.until_ms.load(Relaxed);
        if ms == 0 {
            return None;
        }
        let until = self.base() + Duration::from_millis(ms);
        (until > now).then_some(until)
    }

    fn arm(&self, delay: Duration) {
        let delay = delay.min(self.max_pushback);
        if delay.is_zero() {
            return;
        }
        let at = backpressure_core::instant_after(Instant::now(), delay);
        // Round up to the next millisecond: never end the hold early.
        let ms = (at - self.base()).as_micros().div_ceil(1000);
        let ms = u64::try_from(ms).unwrap_or(u64::MAX).max(1);
        let before = self.until_ms.fetch_max(ms, Relaxed);
        if ms > before {
            self.armed.fetch_add(1, Relaxed);
            tracing::debug!(layer = %self.name, ?delay, "upstream pushback: holding new requests");
        }
    }

    fn observe<B>(&self, res: &Response<B>) {
        let status = res.status();
        if status != StatusCode::TOO_MANY_REQUESTS
            && status != StatusCode::SERVICE_UNAVAILABLE
            && !res.headers().contains_key(&backpressure_core::GRPC_RETRY_PUSHBACK_MS)
        {
            return;
        }
        if let Said::After(d) =
            backpressure_core::pushback(status, res.headers(), SystemTime::now())
        {
            self.arm(d);
        }
    }
}

/// Makes a client obey its upstream's pushback: after a 429 or 503 with
/// `Retry-After` (delay-seconds or HTTP-date), or a response with
/// `grpc-retry-pushback-ms`, new requests to that upstream are held until
/// the time given (bounded by each request's deadline, and by
/// [`max_pushback`](PushbackBuilder::max_pushback)) or rejected at once
/// with `Rejected(RateLimited)` carrying the time left.
///
/// One layer = one upstream: every service it builds shares the gate. In
/// the client stack it sits right below the retry layer, so that a retry
/// waits for the upstream's time too, and above the breaker and the limits,
/// so that held requests hold no permit.
///
/// The fast path, with no pushback in force, is one atomic load: no clock
/// read. At most [`max_held`](PushbackBuilder::max_held) requests wait
/// at once; more are rejected.
///
/// ```
/// use std::time::Duration;
/// use backpressure_http::{PushbackLayer, PushbackMode};
///
/// let hold = PushbackLayer::new();
/// let refuse = PushbackLayer::builder()
///     .mode(PushbackMode::Reject)
///     .max_pushback(Duration::from_secs(10))
///     .build()?;
/// # let _ = (hold, refuse);
/// # Ok::<(), backpressure_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct PushbackLayer {
    gate: Arc<Gate>,
}

impl fmt::Debug for PushbackLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushbackLayer")
            .field("name", &self.gate.name)
            .field("mode", &self.gate.mode)
            .field("max_held", &self.gate.max_held)
            .field("max_pushback", &self.gate.max_pushback)
            .finish()
    }
}

impl Default for PushbackLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl PushbackLayer {
    /// Hold mode, at most 1,024 held requests, pushback honoured up to 60 s.
    pub fn new() -> Self {
        Self::builder().build().expect("the defaults are valid")
    }

    /// A layer to configure.
    pub fn builder() -> PushbackBuilder {
        PushbackBuilder {
            mode: PushbackMode::Hold,
            max_held: 1024,
            max_pushback: Duration::from_secs(60),
            spread: 0.25,
            seed: None,
            name: LayerName::from("pushback"),
        }
    }

    /// Counters and the pushback in force.
    pub fn handle(&self) -> PushbackHandle {
        PushbackHandle { gate: Arc::clone(&self.gate) }
    }
}

impl<S> Layer<S> for PushbackLayer {
    type Service = PushbackService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PushbackService { inner, gate: Arc::clone(&self.gate) }
    }
}

/// Builds a [`PushbackLayer`].
#[derive(Debug, Clone)]
pub struct PushbackBuilder {
    mode: PushbackMode,
    max_held: u64,
    max_pushback: Duration,
    spread: f64,
    seed: Option<u64>,
    name: LayerName,
}

impl PushbackBuilder {
    /// Hold or reject requests while the pushback lasts. Default: hold.
    #[must_use]
    pub fn mode(mut self, mode: PushbackMode) -> Self {
        self.mode = mode;
        self
    }

    /// Most requests held at once (at least 1); more are rejected. Default 1,024.
    #[must_use]
    pub fn max_held(mut self, max_held: u64) -> Self {
        self.max_held = max_held;
        self
    }

    /// The longest pushback honoured (at least 1 ms): a longer `Retry-After`
    /// counts as this long, so a buggy upstream cannot silence a client for
    /// a day. Default 60 s.
    #[must_use]
    pub fn max_pushback(mut self, max: Duration) -> Self {
        self.max_pushback = max;
        self
    }

    /// Held requests are released over a window after the pushback ends, of
    /// this fraction of the time they were held (at most 1 s, never past a
    /// request's deadline), in `[0, 1]`. Default 0.25. Released at one
    /// instant, every held request would reach the upstream as one burst at
    /// the very moment it said it could take traffic again — the
    /// synchronised retry wave the pushback was meant to prevent.
    #[must_use]
    pub fn release_spread(mut self, fraction: f64) -> Self {
        self.spread = fraction;
        self
    }

    /// Seeds the release jitter, for reproducible tests.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The layer's name in rejections and logs. Default `"pushback"`.
    #[must_use]
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<PushbackLayer, ConfigError> {
        if self.max_held == 0 {
            return Err(ConfigError::new("pushback", "max_held", "must be at least 1"));
        }
        if self.max_pushback < Duration::from_millis(1) {
            return Err(ConfigError::new("pushback", "max_pushback", "must be at least 1 ms"));
        }
        if !(0.0..=1.0).contains(&self.spread) {
            return Err(ConfigError::new(
                "pushback",
                "release_spread",
                format!("must be in [0, 1], got {}", self.spread),
            ));
        }
        let gate = Arc::new(Gate {
            until_ms: AtomicU64::new(0),
            base: OnceLock::new(),
            held: AtomicU64::new(0),
            holds: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            armed: AtomicU64::new(0),
            mode: self.mode,
            max_held: self.max_held,
            max_pushback: self.max_pushback,
            spread: self.spread,
            draw: self.seed.map_or_else(Draw::from_entropy, Draw::new),
            name: self.name,
            #[cfg(feature = "metrics")]
            published: Default::default(),
        });
        #[cfg(feature = "metrics")]
        backpressure_core::metrics::register(&gate);
        Ok(PushbackLayer { gate })
    }
}

/// Reads a [`PushbackLayer`]'s state.
#[derive(Clone)]
pub struct PushbackHandle {
    gate: Arc<Gate>,
}

impl fmt::Debug for PushbackHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PushbackHandle").field(&self.snapshot()).finish()
    }
}

impl PushbackHandle {
    /// The state now.
    pub fn snapshot(&self) -> PushbackSnapshot {
        let g = &*self.gate;
        let now = Instant::now();
        PushbackSnapshot {
            remaining: g.until(now).map_or(Duration::ZERO, |u| u - now),
            held: g.held.load(Relaxed),
            holds: g.holds.load(Relaxed),
            rejected: g.rejected.load(Relaxed),
            pushbacks: g.armed.load(Relaxed),
        }
    }
}

/// A [`PushbackLayer`]'s state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushbackSnapshot {
    /// Time left of the pushback in force (zero when none).
    pub remaining: Duration,
    /// Requests waiting now.
    pub held: u64,
    /// Requests that waited, in total.
    pub holds: u64,
    /// Requests rejected because of a pushback.
    pub rejected: u64,
    /// Times the upstream extended the pushback.
    pub pushbacks: u64,
}

/// The service built by [`PushbackLayer`].
#[derive(Clone)]
pub struct PushbackService<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S: fmt::Debug> fmt::Debug for PushbackService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushbackService")
            .field("inner", &self.inner)
            .field("name", &self.gate.name)
            .finish()
    }
}

impl<S, B, RB> Service<Request<B>> for PushbackService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = PushbackFuture<S, Request<B>>;

    /// Always ready: the inner service's readiness is awaited in the
    /// response future, after any hold, so a held request holds no permit.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let gate = Arc::clone(&self.gate);
        // The inner call happens later, in the future: keep the deadline in
        // scope to re-open it there (free unless a timeout above has not
        // pinned it yet).
        let deadline = Deadline::current();
        if gate.until_ms.load(Relaxed) == 0 {
            return PushbackFuture::ready(self.inner.clone(), req, gate, deadline);
        }
        let now = Instant::now();
        let Some(until) = gate.until(now) else {
            return PushbackFuture::ready(self.inner.clone(), req, gate, deadline);
        };
        let left = until - now;
        let fits = deadline.is_none_or(|d| d.instant() >= until);
        if gate.mode == PushbackMode::Reject || !fits {
            return PushbackFuture::reject(gate, left);
        }
        if gate.held.fetch_add(1, Relaxed) >= gate.max_held {
            gate.held.fetch_sub(1, Relaxed);
            return PushbackFuture::reject(gate, left);
        }
        gate.holds.fetch_add(1, Relaxed);
        PushbackFuture {
            state: State::Held {
                sleep: sleep_until(gate.release_at(now, until, deadline)),
                svc: Some(self.inner.clone()),
                req: Some(req),
            },
            held: Some(HeldGuard(Arc::clone(&gate))),
            deadline,
            gate,
        }
    }
}

/// Decrements the held gauge however the held request ends (sent, or
/// dropped by its caller).
struct HeldGuard(Arc<Gate>);

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Relaxed);
    }
}

pin_project! {
    /// The response future of [`PushbackService`].
    pub struct PushbackFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, S::Future>,
        held: Option<HeldGuard>,
        deadline: Option<Deadline>,
        gate: Arc<Gate>,
    }
}

/// Opaque: what a future holds is the inner service's and the request's
/// business; `Debug` names the type so that stacks of layers can derive it.
impl<S, Req> std::fmt::Debug for PushbackFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushbackFuture").finish_non_exhaustive()
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F> {
        Held { #[pin] sleep: Sleep, svc: Option<S>, req: Option<Req> },
        Ready { svc: S, req: Option<Req> },
        Called { #[pin] fut: F },
        Rejected { left: Duration },
        Done,
    }
}

impl<S: Service<Req>, Req> PushbackFuture<S, Req> {
    fn ready(svc: S, req: Req, gate: Arc<Gate>, deadline: Option<Deadline>) -> Self {
        PushbackFuture { state: State::Ready { svc, req: Some(req) }, held: None, deadline, gate }
    }

    fn reject(gate: Arc<Gate>, left: Duration) -> Self {
        gate.rejected.fetch_add(1, Relaxed);
        PushbackFuture { state: State::Rejected { left }, held: None, deadline: None, gate }
    }
}

impl<S, B, RB> Future for PushbackFuture<S, Request<B>>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Held { mut sleep, svc, req } => {
                    ready!(sleep.as_mut().poll(cx));
                    // The upstream may have extended its pushback meanwhile.
                    let now = Instant::now();
                    if let Some(until) = this.gate.until(now) {
                        if this.deadline.is_some_and(|d| d.instant() < until) {
                            *this.held = None;
                            this.gate.rejected.fetch_add(1, Relaxed);
                            this.state.set(State::Rejected { left: until - now });
                            continue;
                        }
                        sleep.reset(this.gate.release_at(now, until, *this.deadline));
                        continue;
                    }
                    let (svc, req) = (svc.take(), req.take());
                    *this.held = None;
                    match svc {
                        Some(svc) => this.state.set(State::Ready { svc, req }),
                        None => this.state.set(State::Done),
                    }
                }
                StateProj::Ready { svc, req } => {
                    if let Err(e) = ready!(svc.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    let Some(req) = req.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err("pushback future polled after a panic".into()));
                    };
                    let fut = Deadline::scope_opt(*this.deadline, || svc.call(req));
                    this.state.set(State::Called { fut });
                }
                StateProj::Called { fut } => {
                    let result = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(match result {
                        Ok(res) => {
                            this.gate.observe(&res);
                            Ok(res)
                        }
                        Err(e) => Err(e.into()),
                    });
                }
                StateProj::Rejected { left } => {
                    let left = *left;
                    this.state.set(State::Done);
                    let rejected = Rejected::new(RejectKind::RateLimited)
                        .with_retry_after(left)
                        .with_layer(this.gate.name.clone());
                    return Poll::Ready(Err(rejected.into()));
                }
                StateProj::Done => {
                    return Poll::Ready(Err("pushback future polled after completion".into()));
                }
            }
        }
    }
}
