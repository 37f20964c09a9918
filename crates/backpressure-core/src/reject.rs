use std::{error::Error, fmt, sync::Arc, time::Duration};

use crate::BoxError;

/// Why a layer turned a request away.
///
/// The HTTP respond layer maps each kind to a status: `RateLimited` to 429,
/// `DeadlineExceeded` to 504, the others to 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectKind {
    /// The caller exceeded a rate limit; retry after `retry_after`.
    RateLimited,
    /// The service is at capacity: the queue is full, or the request was shed.
    Overloaded,
    /// The request waited in a queue for as long as it was allowed to.
    QueueTimeout,
    /// A circuit breaker is open: the dependency is failing.
    CircuitOpen,
    /// The request's deadline passed, or is too close to be worth starting.
    DeadlineExceeded,
}

impl RejectKind {
    /// A short lowercase name, stable for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectKind::RateLimited => "rate_limited",
            RejectKind::Overloaded => "overloaded",
            RejectKind::QueueTimeout => "queue_timeout",
            RejectKind::CircuitOpen => "circuit_open",
            RejectKind::DeadlineExceeded => "deadline_exceeded",
        }
    }

    const fn describe(self) -> &'static str {
        match self {
            RejectKind::RateLimited => "rate limited",
            RejectKind::Overloaded => "overloaded",
            RejectKind::QueueTimeout => "timed out in queue",
            RejectKind::CircuitOpen => "circuit open",
            RejectKind::DeadlineExceeded => "deadline exceeded",
        }
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The name of the layer (instance) that rejected a request.
///
/// Either a `&'static str` (free) or a configured instance name shared in an
/// `Arc<str>` (one reference-count increment per rejection, no allocation).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LayerName(NameRepr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum NameRepr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl LayerName {
    /// A name known at compile time.
    pub const fn from_static(name: &'static str) -> Self {
        LayerName(NameRepr::Static(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            NameRepr::Static(s) => s,
            NameRepr::Shared(s) => s,
        }
    }
}

impl From<&'static str> for LayerName {
    fn from(name: &'static str) -> Self {
        LayerName::from_static(name)
    }
}

impl From<Arc<str>> for LayerName {
    fn from(name: Arc<str>) -> Self {
        LayerName(NameRepr::Shared(name))
    }
}

impl From<String> for LayerName {
    fn from(name: String) -> Self {
        LayerName(NameRepr::Shared(name.into()))
    }
}

impl fmt::Debug for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rate limit knows about a caller's quota, for the `RateLimit-Policy`,
/// `RateLimit` and `Retry-After` headers (IETF draft
/// `draft-ietf-httpapi-ratelimit-headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RateLimitInfo {
    /// Requests (cost units) that can be spent at once: the burst.
    pub limit: u32,
    /// Requests (cost units) the quota allows per `window`, sustained (what
    /// `RateLimit-Policy`'s `q` advertises; equal to `limit` unless the
    /// burst differs from the rate).
    pub quota: u32,
    /// The quota's window.
    pub window: Duration,
    /// Cost units that could be spent right now.
    pub remaining: u32,
    /// Time until the full burst is available again.
    pub reset: Duration,
}

thread_local! {
    static PUBLISHED: std::cell::Cell<Option<RateLimitInfo>> = const { std::cell::Cell::new(None) };
}

impl RateLimitInfo {
    /// A quota's state: `limit` (the burst), `quota` per `window`
    /// sustained, `remaining` now, full again after `reset`.
    pub const fn new(
        limit: u32,
        quota: u32,
        window: Duration,
        remaining: u32,
        reset: Duration,
    ) -> Self {
        RateLimitInfo { limit, quota, window, remaining, reset }
    }

    /// Hands this state to a layer right above, on this thread, for the
    /// request being dispatched: a rate limit publishes what it decided
    /// during `call`, and the outer layer [`take`](Self::take_published)s
    /// it right after its own `call` to the rate limit returns (how the
    /// `RateLimit` headers reach admitted responses without an allocation
    /// or a type parameter). Anything left over is overwritten by the next
    /// publication.
    pub fn publish(self) {
        PUBLISHED.with(|c| c.set(Some(self)));
    }

    /// Takes what was published on this thread, if anything.
    ///
    /// ```
    /// use std::time::Duration;
    /// use backpressure_core::RateLimitInfo;
    ///
    /// let info =
    ///     RateLimitInfo::new(10, 10, Duration::from_secs(1), 9, Duration::from_millis(100));
    /// info.publish();
    /// assert_eq!(RateLimitInfo::take_published(), Some(info));
    /// assert_eq!(RateLimitInfo::take_published(), None);
    /// ```
    pub fn take_published() -> Option<RateLimitInfo> {
        PUBLISHED.with(std::cell::Cell::take)
    }
}

/// The error every `backpressure` layer rejects a request with.
///
/// It travels inside tower's [`BoxError`]; use [`Rejected::find`] to get it
/// back however many layers wrapped it.
///
/// ```
/// use backpressure_core::{RejectKind, Rejected};
///
/// let r = Rejected::new(RejectKind::Overloaded).with_layer("shed");
/// assert_eq!(r.kind(), RejectKind::Overloaded);
/// assert_eq!(r.retry_after(), None);
/// assert_eq!(r.layer().map(|n| n.as_str()), Some("shed"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Rejected {
    kind: RejectKind,
    retry_after: Option<Duration>,
    layer: Option<LayerName>,
    rate_limit: Option<RateLimitInfo>,
}

impl Rejected {
    /// A rejection of the given kind, with no retry hint and no layer name.
    pub const fn new(kind: RejectKind) -> Self {
        Rejected { kind, retry_after: None, layer: None, rate_limit: None }
    }

    /// Sets how long the caller should wait before retrying.
    #[must_use]
    pub const fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Sets the rejecting layer's name (shown in `Display` and logs).
    #[must_use]
    pub fn with_layer(mut self, layer: impl Into<LayerName>) -> Self {
        self.layer = Some(layer.into());
        self
    }

    /// Attaches the rate-limit state, for response headers.
    #[must_use]
    pub const fn with_rate_limit(mut self, info: RateLimitInfo) -> Self {
        self.rate_limit = Some(info);
        self
    }

    /// The rate-limit state, when a rate limiter rejected the request.
    pub const fn rate_limit(&self) -> Option<&RateLimitInfo> {
        self.rate_limit.as_ref()
    }

    /// Why the request was rejected.
    pub const fn kind(&self) -> RejectKind {
        self.kind
    }

    /// How long to wait before retrying, where the layer knows it exactly
    /// (a rate limit's next conforming time, a breaker's remaining open time).
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The rejecting layer's name, if it gave one.
    pub fn layer(&self) -> Option<&LayerName> {
        self.layer.as_ref()
    }

    /// Finds a `Rejected` in a boxed error or anywhere in its source chain.
    ///
    /// ```
    /// use backpressure_core::{BoxError, RejectKind, Rejected};
    /// use std::{error::Error, fmt};
    ///
    /// // Some other middleware wraps our rejection in its own error.
    /// #[derive(Debug)]
    /// struct Wrapper(BoxError);
    /// impl fmt::Display for Wrapper {
    ///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str("wrapped") }
    /// }
    /// impl Error for Wrapper {
    ///     fn source(&self) -> Option<&(dyn Error + 'static)> { Some(&*self.0) }
    /// }
    ///
    /// let err: BoxError = Box::new(Wrapper(Rejected::new(RejectKind::CircuitOpen).into()));
    /// assert_eq!(Rejected::find(&err).map(Rejected::kind), Some(RejectKind::CircuitOpen));
    /// ```
    pub fn find(error: &BoxError) -> Option<&Rejected> {
        Self::find_in(&**error)
    }

    /// Like [`find`](Rejected::find), for any error reference.
    pub fn find_in<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a Rejected> {
        let mut current = Some(error);
        while let Some(err) = current {
            if let Some(rejected) = err.downcast_ref::<Rejected>() {
                return Some(rejected);
            }
            current = err.source();
        }
        None
    }
}

impl fmt::Debug for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Rejected");
        d.field("kind", &self.kind);
        if let Some(retry_after) = self.retry_after {
            d.field("retry_after", &retry_after);
        }
        if let Some(layer) = &self.layer {
            d.field("layer", layer);
        }
        if let Some(info) = &self.rate_limit {
            d.field("rate_limit", info);
        }
        d.finish()
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.layer {
            Some(layer) => write!(f, "request rejected by {layer}: {}", self.kind)?,
            None => write!(f, "request rejected: {}", self.kind)?,
        }
        if let Some(retry_after) = self.retry_after {
            write!(f, " (retry after {retry_after:?})")?;
        }
        Ok(())
    }
}

impl Error for Rejected {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap(Box<dyn Error + Send + Sync>);
    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrap")
        }
    }
    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn find_walks_a_boxed_chain() {
        let inner: BoxError = Rejected::new(RejectKind::QueueTimeout).into();
        let twice: BoxError = Box::new(Wrap(Box::new(Wrap(inner))));
        let found = Rejected::find(&twice).expect("found through two wrappers");
        assert_eq!(found.kind(), RejectKind::QueueTimeout);
    }

    #[test]
    fn find_returns_none_for_other_errors() {
        let err: BoxError = "plain".into();
        assert!(Rejected::find(&err).is_none());
        let wrapped: BoxError = Box::new(Wrap("plain".into()));
        assert!(Rejected::find(&wrapped).is_none());
    }

    #[test]
    fn display_names_layer_kind_and_retry() {
        let r = Rejected::new(RejectKind::DeadlineExceeded);
        assert_eq!(r.to_string(), "request rejected: deadline exceeded");
        let r = Rejected::new(RejectKind::CircuitOpen)
            .with_layer(String::from("db-breaker"))
            .with_retry_after(Duration::from_secs(3));
        assert_eq!(r.to_string(), "request rejected by db-breaker: circuit open (retry after 3s)");
    }

    #[test]
    fn rejected_is_send_sync_static() {
        fn assert_bounds<T: Error + Send + Sync + 'static>() {}
        assert_bounds::<Rejected>();
    }
}
