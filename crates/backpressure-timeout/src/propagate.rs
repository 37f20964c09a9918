//! How a request's deadline is read from it on arrival and written onto it
//! before dispatch.

use std::time::Duration;

use backpressure_core::Deadline;
#[cfg(feature = "http")]
use tokio::time::Instant;

/// Reads the deadline a request carries and writes the effective one back.
///
/// [`Local`], the default, does neither: the deadline reaches inner layers
/// through [`Deadline::current`] only. With the `http` feature,
/// [`HttpDeadline`] speaks `grpc-timeout` and request extensions.
pub trait Propagate<Req> {
    /// The deadline `req` arrived with, if any (e.g. from `grpc-timeout`).
    fn incoming(&self, req: &Req) -> Option<Deadline>;

    /// Attaches the effective deadline to `req` just before it is dispatched
    /// to the inner service (e.g. as an extension, or an outgoing header).
    ///
    /// `deadline` pins the deadline to the clock when called; an
    /// implementation that attaches nothing should not call it, so the fast
    /// path never reads the clock.
    fn outgoing(&self, req: &mut Req, deadline: impl FnOnce() -> Deadline);
}

/// No request inspection: works for any request type and costs nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Local;

impl<Req> Propagate<Req> for Local {
    #[inline]
    fn incoming(&self, _req: &Req) -> Option<Deadline> {
        None
    }

    #[inline]
    fn outgoing(&self, _req: &mut Req, _deadline: impl FnOnce() -> Deadline) {}
}

/// Deadline propagation for `http::Request`s.
///
/// - [`server`](HttpDeadline::server): honours an incoming `grpc-timeout`
///   (parsed strictly; a malformed value means "no deadline", never an
///   error) and stores the effective [`Deadline`] in the request's
///   extensions, where handlers and inner layers can read it. Storing an
///   extension costs the allocation `http::Extensions` makes.
/// - [`client`](HttpDeadline::client): writes the remaining budget, minus a
///   transit margin, into the outgoing request's `grpc-timeout`.
///
/// ```
/// use std::time::Duration;
/// use backpressure_timeout::{HttpDeadline, TimeoutLayer};
///
/// let server = TimeoutLayer::new(Duration::from_secs(10))?.propagate(HttpDeadline::server());
/// let client = TimeoutLayer::new(Duration::from_secs(2))?
///     .propagate(HttpDeadline::client().margin(Duration::from_millis(5)));
/// # Ok::<(), backpressure_core::ConfigError>(())
/// ```
#[cfg(feature = "http")]
#[derive(Debug, Clone)]
pub struct HttpDeadline {
    read_grpc_timeout: bool,
    insert_extension: bool,
    write_grpc_timeout: bool,
    margin: Duration,
    header: Option<http::HeaderName>,
}

#[cfg(feature = "http")]
static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

#[cfg(feature = "http")]
impl HttpDeadline {
    /// Server side: read `grpc-timeout`, store the deadline in extensions.
    pub const fn server() -> Self {
        HttpDeadline {
            read_grpc_timeout: true,
            insert_extension: true,
            write_grpc_timeout: false,
            margin: Duration::ZERO,
            header: None,
        }
    }

    /// Client side: write the remaining budget into `grpc-timeout`.
    pub const fn client() -> Self {
        HttpDeadline {
            read_grpc_timeout: false,
            insert_extension: false,
            write_grpc_timeout: true,
            margin: Duration::ZERO,
            header: None,
        }
    }

    /// Whether to honour an incoming `grpc-timeout`.
    #[must_use]
    pub const fn read_grpc_timeout(mut self, yes: bool) -> Self {
        self.read_grpc_timeout = yes;
        self
    }

    /// Whether to store the effective [`Deadline`] in the request's extensions.
    #[must_use]
    pub const fn insert_extension(mut self, yes: bool) -> Self {
        self.insert_extension = yes;
        self
    }

    /// Whether to write the remaining budget into the outgoing `grpc-timeout`.
    #[must_use]
    pub const fn write_grpc_timeout(mut self, yes: bool) -> Self {
        self.write_grpc_timeout = yes;
        self
    }

    /// Time subtracted from the budget written downstream, for transit.
    #[must_use]
    pub const fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Also carries the budget, in whole milliseconds, in this HTTP header
    /// (for services that do not speak `grpc-timeout`): read on the server
    /// side when `read_grpc_timeout` is on (digits only; anything else means
    /// "no deadline"), written on the client side next to `grpc-timeout`.
    ///
    /// ```
    /// use backpressure_timeout::HttpDeadline;
    /// use http::HeaderName;
    ///
    /// let client = HttpDeadline::client().header(HeaderName::from_static("x-timeout-ms"));
    /// let server = HttpDeadline::server().header(HeaderName::from_static("x-timeout-ms"));
    /// # let _ = (client, server);
    /// ```
    #[must_use]
    pub fn header(mut self, name: http::HeaderName) -> Self {
        self.header = Some(name);
        self
    }
}

#[cfg(feature = "http")]
impl<B> Propagate<http::Request<B>> for HttpDeadline {
    #[inline]
    fn incoming(&self, req: &http::Request<B>) -> Option<Deadline> {
        let from_extension = req.extensions().get::<Deadline>().copied();
        let from_header = if self.read_grpc_timeout {
            req.headers()
                .get(&GRPC_TIMEOUT)
                .and_then(|v| crate::grpc::parse_grpc_timeout(v.as_bytes()))
                .map(Deadline::after)
        } else {
            None
        };
        let from_custom = match (&self.header, self.read_grpc_timeout) {
            (Some(name), true) => req
                .headers()
                .get(name)
                .and_then(|v| parse_millis(v.as_bytes()))
                .map(Deadline::after),
            _ => None,
        };
        Deadline::earliest(Deadline::earliest(from_extension, from_header), from_custom)
    }

    #[inline]
    fn outgoing(&self, req: &mut http::Request<B>, deadline: impl FnOnce() -> Deadline) {
        if !self.insert_extension && !self.write_grpc_timeout {
            return;
        }
        let deadline = deadline();
        if self.insert_extension {
            req.extensions_mut().insert(deadline);
        }
        if self.write_grpc_timeout {
            let budget = deadline.remaining_at(Instant::now()).saturating_sub(self.margin);
            let encoded = crate::grpc::encode_grpc_timeout(budget);
            // Digits and a unit letter: always a valid header value.
            if let Ok(value) = http::HeaderValue::from_str(encoded.as_str()) {
                req.headers_mut().insert(GRPC_TIMEOUT.clone(), value);
            }
            if let Some(name) = &self.header {
                req.headers_mut()
                    .insert(name.clone(), http::HeaderValue::from(budget.as_millis() as u64));
            }
        }
    }
}

/// Whole milliseconds: ASCII digits only, at most 12 of them (≈ 31 years).
#[cfg(feature = "http")]
fn parse_millis(value: &[u8]) -> Option<Duration> {
    if value.is_empty() || value.len() > 12 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ms = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(Duration::from_millis(ms))
}

/// Chooses a request's own timeout; `None` means the layer's default.
///
/// `()` (the default) always says `None`; closures
/// `Fn(&Req) -> Option<Duration>` choose per request.
pub trait RequestTimeout<Req> {
    /// This request's timeout, or `None` for the layer's default.
    fn timeout(&self, req: &Req) -> Option<Duration>;
}

impl<Req> RequestTimeout<Req> for () {
    #[inline]
    fn timeout(&self, _req: &Req) -> Option<Duration> {
        None
    }
}

impl<Req, F> RequestTimeout<Req> for F
where
    F: Fn(&Req) -> Option<Duration>,
{
    fn timeout(&self, req: &Req) -> Option<Duration> {
        self(req)
    }
}
