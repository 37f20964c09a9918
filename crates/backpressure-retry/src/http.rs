//! The HTTP and gRPC retry rules.

use std::{fmt, time::SystemTime};

use backpressure_core::{ClassifyError, Outcome, Pushback, grpc_status, pushback};
use http::{HeaderMap, Method, Request, Response, StatusCode};

use crate::{Policy, Verdict};

const GRPC_RESOURCE_EXHAUSTED: u32 = 8;
const GRPC_UNAVAILABLE: u32 = 14;

/// A request body that can be sent again.
///
/// Implemented for bodies held in memory (`()`, `String`, `Vec<u8>`,
/// `Bytes`, `&'static str`, `&'static [u8]`, and `http_body_util`'s `Full`
/// and `Empty`). A streaming body is not replayable: its request is sent
/// once and never retried.
pub trait ReplayBody: Sized {
    /// A copy of this body, or `None` if it cannot be replayed.
    fn replay(&self) -> Option<Self>;
}

macro_rules! replay_by_clone {
    ($($t:ty),* $(,)?) => {$(
        impl ReplayBody for $t {
            fn replay(&self) -> Option<Self> {
                Some(self.clone())
            }
        }
    )*};
}

replay_by_clone!((), String, Vec<u8>, bytes::Bytes, &'static str, &'static [u8]);

impl<D: Clone> ReplayBody for http_body_util::Full<D> {
    fn replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> ReplayBody for http_body_util::Empty<D> {
    fn replay(&self) -> Option<Self> {
        Some(http_body_util::Empty::new())
    }
}

/// Which requests are idempotent: `Fn(&Method, &HeaderMap) -> bool`.
pub trait Idempotent {
    /// Whether a request with this method and these headers may be sent twice.
    fn idempotent(&self, method: &Method, headers: &HeaderMap) -> bool;
}

impl<F: Fn(&Method, &HeaderMap) -> bool> Idempotent for F {
    fn idempotent(&self, method: &Method, headers: &HeaderMap) -> bool {
        self(method, headers)
    }
}

/// The default idempotency rule: GET, HEAD, PUT, DELETE, OPTIONS and TRACE
/// (RFC 9110 §9.2.2), or any request carrying an `Idempotency-Key` header
/// (IETF `draft-ietf-httpapi-idempotency-key-header`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultIdempotent;

impl Idempotent for DefaultIdempotent {
    fn idempotent(&self, method: &Method, headers: &HeaderMap) -> bool {
        matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::PUT
                | Method::DELETE
                | Method::OPTIONS
                | Method::TRACE
        ) || headers.contains_key("idempotency-key")
    }
}

/// The retry rules for HTTP and gRPC over `http::Request` / `http::Response`:
///
/// - **which requests**: idempotent ones ([`DefaultIdempotent`], or your
///   rule via [`idempotent`](Self::idempotent)) whose body is
///   [replayable](ReplayBody);
/// - **which outcomes**: errors that are not our own layers' rejections
///   (connection errors; a [`DeadlineExceeded`](backpressure_core::RejectKind)
///   from a per-attempt timeout), 502, 503, 504, and trailers-only gRPC
///   `UNAVAILABLE`; a 429 or gRPC `RESOURCE_EXHAUSTED` only when it says when
///   (`Retry-After`, `grpc-retry-pushback-ms`), and never before that time;
///   never any other 4xx, never a rejection by one of our layers (an open
///   circuit, a rate limit, a held pushback), never after a negative
///   `grpc-retry-pushback-ms`.
///
/// ```
/// use backpressure_retry::{HttpRetry, Policy, Verdict};
/// use http::{Method, Request, Response};
///
/// let policy = HttpRetry::new();
/// let get = Request::get("http://db/row/1").body(String::new()).unwrap();
/// let post = Request::post("http://db/rows").body("{}".to_string()).unwrap();
/// assert!(Policy::<_, Response<()>, std::io::Error>::replay(&policy, &get).is_some());
/// assert!(Policy::<_, Response<()>, std::io::Error>::replay(&policy, &post).is_none());
///
/// let busy: Result<Response<()>, std::io::Error> =
///     Ok(Response::builder().status(503).header("retry-after", "2").body(()).unwrap());
/// assert_eq!(
///     Policy::<Request<String>, _, _>::check(&policy, &busy),
///     Verdict::Retry { not_before: Some(std::time::Duration::from_secs(2)) },
/// );
/// ```
#[derive(Clone, Copy, Default)]
pub struct HttpRetry<I = DefaultIdempotent> {
    idempotent: I,
}

impl HttpRetry {
    /// The default rules.
    pub const fn new() -> Self {
        HttpRetry { idempotent: DefaultIdempotent }
    }
}

impl<I> HttpRetry<I> {
    /// Replaces the idempotency rule, e.g. to allow a POST your API
    /// deduplicates: `|method, headers| method == Method::GET || headers.contains_key("x-request-id")`.
    pub fn idempotent<I2: Idempotent>(self, rule: I2) -> HttpRetry<I2> {
        HttpRetry { idempotent: rule }
    }
}

impl<I> fmt::Debug for HttpRetry<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRetry").finish_non_exhaustive()
    }
}

impl<B, RB, E, I> Policy<Request<B>, Response<RB>, E> for HttpRetry<I>
where
    B: ReplayBody,
    E: ClassifyError,
    I: Idempotent,
{
    fn replay(&self, req: &Request<B>) -> Option<Request<B>> {
        if !self.idempotent.idempotent(req.method(), req.headers()) {
            return None;
        }
        let mut copy = Request::new(req.body().replay()?);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }

    fn check(&self, result: &Result<Response<RB>, E>) -> Verdict {
        let res = match result {
            Ok(res) => res,
            Err(e) => {
                return match e.classify_error() {
                    Outcome::Failure | Outcome::Overloaded => Verdict::Retry { not_before: None },
                    Outcome::Success | Outcome::Ignore => Verdict::Done,
                };
            }
        };
        let status = res.status();
        let grpc = grpc_status(res.headers());
        let unavailable = matches!(
            status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ) || grpc == Some(GRPC_UNAVAILABLE);
        let throttled =
            status == StatusCode::TOO_MANY_REQUESTS || grpc == Some(GRPC_RESOURCE_EXHAUSTED);
        if !unavailable && !throttled {
            return Verdict::Done;
        }
        match pushback(status, res.headers(), SystemTime::now()) {
            Pushback::Stop => Verdict::Done,
            Pushback::After(d) => Verdict::Retry { not_before: Some(d) },
            Pushback::None if throttled => Verdict::Done,
            Pushback::None => Verdict::Retry { not_before: None },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use backpressure_core::{BoxError, RejectKind, Rejected};

    use super::*;

    fn check(res: Result<Response<()>, BoxError>) -> Verdict {
        Policy::<Request<()>, _, _>::check(&HttpRetry::new(), &res)
    }

    fn status(
        code: u16,
        headers: &[(&'static str, &'static str)],
    ) -> Result<Response<()>, BoxError> {
        let mut b = Response::builder().status(code);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Ok(b.body(()).unwrap())
    }

    const RETRY: Verdict = Verdict::Retry { not_before: None };

    #[test]
    fn statuses() {
        assert_eq!(check(status(200, &[])), Verdict::Done);
        assert_eq!(check(status(500, &[])), Verdict::Done);
        assert_eq!(check(status(404, &[])), Verdict::Done);
        assert_eq!(check(status(502, &[])), RETRY);
        assert_eq!(check(status(503, &[])), RETRY);
        assert_eq!(check(status(504, &[])), RETRY);
        // A 429 only when it says when.
        assert_eq!(check(status(429, &[])), Verdict::Done);
        assert_eq!(
            check(status(429, &[("retry-after", "3")])),
            Verdict::Retry { not_before: Some(Duration::from_secs(3)) }
        );
        assert_eq!(check(status(429, &[("retry-after", "soon")])), Verdict::Done);
    }

    #[test]
    fn grpc_trailers_only() {
        assert_eq!(check(status(200, &[("grpc-status", "14")])), RETRY);
        assert_eq!(check(status(200, &[("grpc-status", "8")])), Verdict::Done);
        assert_eq!(
            check(status(200, &[("grpc-status", "8"), ("grpc-retry-pushback-ms", "150")])),
            Verdict::Retry { not_before: Some(Duration::from_millis(150)) }
        );
        assert_eq!(
            check(status(200, &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")])),
            Verdict::Done
        );
        assert_eq!(check(status(200, &[("grpc-status", "3")])), Verdict::Done);
    }

    #[test]
    fn errors() {
        assert_eq!(check(Err("connection refused".into())), RETRY);
        assert_eq!(check(Err(Rejected::new(RejectKind::CircuitOpen).into())), Verdict::Done);
        assert_eq!(check(Err(Rejected::new(RejectKind::RateLimited).into())), Verdict::Done);
        assert_eq!(check(Err(Rejected::new(RejectKind::DeadlineExceeded).into())), RETRY);
    }

    #[test]
    fn idempotency_and_bodies() {
        let p = HttpRetry::new();
        let replay = |r: &Request<String>| Policy::<_, Response<()>, BoxError>::replay(&p, r);
        for m in ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"] {
            assert!(
                replay(&Request::builder().method(m).body(String::new()).unwrap()).is_some(),
                "{m}"
            );
        }
        for m in ["POST", "PATCH", "CONNECT"] {
            assert!(
                replay(&Request::builder().method(m).body(String::new()).unwrap()).is_none(),
                "{m}"
            );
        }
        let keyed = Request::post("/")
            .header("idempotency-key", "abc")
            .body("payload".to_string())
            .unwrap();
        let copy = replay(&keyed).unwrap();
        assert_eq!(copy.body(), "payload");
        assert_eq!(copy.method(), Method::POST);
        assert_eq!(copy.headers()["idempotency-key"], "abc");

        let custom = HttpRetry::new().idempotent(|m: &Method, _: &HeaderMap| m == Method::POST);
        let post = Request::post("/").body(String::new()).unwrap();
        assert!(Policy::<_, Response<()>, BoxError>::replay(&custom, &post).is_some());
    }
}
