use std::{convert::Infallible, error::Error};

use crate::{BoxError, RejectKind, Rejected};

/// What a completed call says about the service behind it.
///
/// Two questions, one answer: whether the call failed (what a circuit
/// breaker counts) and whether it is a sign of *congestion* (what shrinks an
/// adaptive concurrency limit). Only [`Overloaded`](Self::Overloaded) is
/// both. A handler's bug that answers 500 is a failure to break on, not a
/// reason to cut capacity; cutting the limit on it would pin the limit to
/// its floor under any steady background of errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The dependency did its job.
    Success,
    /// The dependency failed (a 500, a reset connection): counts against a
    /// circuit breaker; says nothing about capacity, so an adaptive limit
    /// ignores it.
    Failure,
    /// The dependency is overloaded or too slow: it said so (429, 503, 504,
    /// gRPC `RESOURCE_EXHAUSTED` / `UNAVAILABLE` / `DEADLINE_EXCEEDED`) or
    /// the request ran out of time. A failure for a circuit breaker, and a
    /// congestion signal ("drop") for an adaptive concurrency limit.
    Overloaded,
    /// Says nothing about the dependency (a client error, or a rejection by
    /// one of our own layers further in): not counted at all.
    Ignore,
}

impl Outcome {
    /// Whether a circuit breaker counts this as a failure
    /// ([`Failure`](Self::Failure) or [`Overloaded`](Self::Overloaded)).
    #[inline]
    pub const fn is_failure(self) -> bool {
        matches!(self, Outcome::Failure | Outcome::Overloaded)
    }
}

/// Maps the result of a call to an [`Outcome`].
///
/// Closures `Fn(&Result<Res, Err>) -> Outcome` are classifiers:
///
/// ```
/// use backpressure_core::{Classify, Outcome};
///
/// // A service whose `Ok(false)` means "the backend said it is busy".
/// let busy_is_overload = |r: &Result<bool, std::io::Error>| match r {
///     Ok(true) => Outcome::Success,
///     Ok(false) => Outcome::Overloaded,
///     Err(_) => Outcome::Failure,
/// };
/// assert_eq!(busy_is_overload.classify(&Ok(false)), Outcome::Overloaded);
/// ```
pub trait Classify<Res, Err> {
    /// Classifies one call's result.
    fn classify(&self, result: &Result<Res, Err>) -> Outcome;
}

impl<F, Res, Err> Classify<Res, Err> for F
where
    F: Fn(&Result<Res, Err>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, Err>) -> Outcome {
        self(result)
    }
}

/// How [`DefaultClassify`] and [`HttpClassify`] classify an error.
///
/// The rule: a [`Rejected`] from one of our own layers further in is
/// [`Outcome::Ignore`] (it says nothing about the dependency), except
/// [`RejectKind::DeadlineExceeded`], which means the dependency was too slow
/// and is [`Outcome::Overloaded`]; an `std::io::Error` of kind `TimedOut`
/// is `Overloaded` too; every other error is a [`Outcome::Failure`].
pub trait ClassifyError {
    /// Classifies this error.
    fn classify_error(&self) -> Outcome;
}

fn classify_dyn(error: &(dyn Error + 'static)) -> Outcome {
    if let Some(r) = Rejected::find_in(error) {
        return classify_rejected(r);
    }
    match error.downcast_ref::<std::io::Error>() {
        Some(io) => classify_io(io),
        None => Outcome::Failure,
    }
}

fn classify_rejected(r: &Rejected) -> Outcome {
    match r.kind() {
        RejectKind::DeadlineExceeded => Outcome::Overloaded,
        _ => Outcome::Ignore,
    }
}

fn classify_io(error: &std::io::Error) -> Outcome {
    match error.kind() {
        std::io::ErrorKind::TimedOut => Outcome::Overloaded,
        _ => Outcome::Failure,
    }
}

impl ClassifyError for BoxError {
    fn classify_error(&self) -> Outcome {
        classify_dyn(&**self)
    }
}

impl ClassifyError for Box<dyn Error + Send> {
    fn classify_error(&self) -> Outcome {
        classify_dyn(&**self)
    }
}

impl ClassifyError for Box<dyn Error> {
    fn classify_error(&self) -> Outcome {
        classify_dyn(&**self)
    }
}

impl ClassifyError for Rejected {
    fn classify_error(&self) -> Outcome {
        classify_rejected(self)
    }
}

impl ClassifyError for std::io::Error {
    fn classify_error(&self) -> Outcome {
        classify_io(self)
    }
}

impl ClassifyError for Infallible {
    fn classify_error(&self) -> Outcome {
        match *self {}
    }
}

/// The default classifier: `Ok` is a success; errors follow [`ClassifyError`].
///
/// ```
/// use backpressure_core::{BoxError, Classify, DefaultClassify, Outcome, RejectKind, Rejected};
///
/// let ok: Result<(), BoxError> = Ok(());
/// let io: Result<(), BoxError> = Err("connection reset".into());
/// let shed: Result<(), BoxError> = Err(Rejected::new(RejectKind::Overloaded).into());
/// assert_eq!(DefaultClassify.classify(&ok), Outcome::Success);
/// assert_eq!(DefaultClassify.classify(&io), Outcome::Failure);
/// assert_eq!(DefaultClassify.classify(&shed), Outcome::Ignore);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassify;

impl<Res, Err: ClassifyError> Classify<Res, Err> for DefaultClassify {
    fn classify(&self, result: &Result<Res, Err>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => e.classify_error(),
        }
    }
}

/// Classifies `http::Response`s by status:
///
/// - 429, 503 and 504, and trailers-only gRPC responses with `grpc-status`
///   4 `DEADLINE_EXCEEDED`, 8 `RESOURCE_EXHAUSTED` or 14 `UNAVAILABLE`, are
///   [`Outcome::Overloaded`]: the server's own overload signals;
/// - every other 5xx (500, 501, 502, …) is a [`Outcome::Failure`]: the
///   breaker's business, not a reason to cut capacity;
/// - everything else — 4xx included, since a client's mistake is not the
///   dependency's — is a success.
///
/// Errors follow [`ClassifyError`].
///
/// ```
/// use backpressure_core::{Classify, HttpClassify, Outcome};
/// use http::{Response, StatusCode};
///
/// let with = |s: StatusCode| -> Result<Response<()>, std::io::Error> {
///     Ok(Response::builder().status(s).body(()).unwrap())
/// };
/// assert_eq!(HttpClassify.classify(&with(StatusCode::OK)), Outcome::Success);
/// assert_eq!(HttpClassify.classify(&with(StatusCode::NOT_FOUND)), Outcome::Success);
/// assert_eq!(HttpClassify.classify(&with(StatusCode::TOO_MANY_REQUESTS)), Outcome::Overloaded);
/// assert_eq!(HttpClassify.classify(&with(StatusCode::SERVICE_UNAVAILABLE)), Outcome::Overloaded);
/// assert_eq!(HttpClassify.classify(&with(StatusCode::INTERNAL_SERVER_ERROR)), Outcome::Failure);
/// assert_eq!(HttpClassify.classify(&with(StatusCode::BAD_GATEWAY)), Outcome::Failure);
/// let grpc: Result<Response<()>, std::io::Error> =
///     Ok(Response::builder().header("grpc-status", "14").body(()).unwrap());
/// assert_eq!(HttpClassify.classify(&grpc), Outcome::Overloaded);
/// ```
#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassify;

#[cfg(feature = "http")]
const GRPC_DEADLINE_EXCEEDED: u32 = 4;
#[cfg(feature = "http")]
const GRPC_RESOURCE_EXHAUSTED: u32 = 8;
#[cfg(feature = "http")]
const GRPC_UNAVAILABLE: u32 = 14;

#[cfg(feature = "http")]
impl<B, Err: ClassifyError> Classify<http::Response<B>, Err> for HttpClassify {
    fn classify(&self, result: &Result<http::Response<B>, Err>) -> Outcome {
        match result {
            Ok(res) => {
                let status = res.status();
                if matches!(
                    status,
                    http::StatusCode::TOO_MANY_REQUESTS
                        | http::StatusCode::SERVICE_UNAVAILABLE
                        | http::StatusCode::GATEWAY_TIMEOUT
                ) {
                    return Outcome::Overloaded;
                }
                if status.is_server_error() {
                    return Outcome::Failure;
                }
                // gRPC answers errors with HTTP 200: only then is the header
                // worth a look-up.
                let grpc_overload = status == http::StatusCode::OK
                    && matches!(
                        crate::pushback::grpc_status(res.headers()),
                        Some(GRPC_DEADLINE_EXCEEDED | GRPC_RESOURCE_EXHAUSTED | GRPC_UNAVAILABLE)
                    );
                if grpc_overload { Outcome::Overloaded } else { Outcome::Success }
            }
            Err(e) => e.classify_error(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rejections_are_ignored_except_deadlines() {
        for (kind, expected) in [
            (RejectKind::RateLimited, Outcome::Ignore),
            (RejectKind::Overloaded, Outcome::Ignore),
            (RejectKind::QueueTimeout, Outcome::Ignore),
            (RejectKind::CircuitOpen, Outcome::Ignore),
            (RejectKind::DeadlineExceeded, Outcome::Overloaded),
        ] {
            let boxed: Result<(), BoxError> = Err(Rejected::new(kind).into());
            assert_eq!(DefaultClassify.classify(&boxed), expected, "{kind:?}");
            let bare: Result<(), Rejected> = Err(Rejected::new(kind));
            assert_eq!(DefaultClassify.classify(&bare), expected, "{kind:?}");
        }
    }

    #[test]
    fn timeouts_are_congestion_other_errors_are_failures() {
        use std::io::{Error, ErrorKind};
        let timed_out: Result<(), BoxError> = Err(Error::from(ErrorKind::TimedOut).into());
        let reset: Result<(), BoxError> = Err(Error::from(ErrorKind::ConnectionReset).into());
        let other: Result<(), BoxError> = Err("handler bug".into());
        assert_eq!(DefaultClassify.classify(&timed_out), Outcome::Overloaded);
        assert_eq!(DefaultClassify.classify(&reset), Outcome::Failure);
        assert_eq!(DefaultClassify.classify(&other), Outcome::Failure);
        assert!(Outcome::Overloaded.is_failure() && Outcome::Failure.is_failure());
        assert!(!Outcome::Success.is_failure() && !Outcome::Ignore.is_failure());
    }

    #[cfg(feature = "http")]
    #[test]
    fn http_statuses_split_overload_from_failure() {
        use http::{Response, StatusCode};
        let with = |code: u16| -> Result<Response<()>, std::io::Error> {
            Ok(Response::builder().status(StatusCode::from_u16(code).unwrap()).body(()).unwrap())
        };
        for (code, expected) in [
            (200, Outcome::Success),
            (404, Outcome::Success),
            (429, Outcome::Overloaded),
            (500, Outcome::Failure),
            (501, Outcome::Failure),
            (502, Outcome::Failure),
            (503, Outcome::Overloaded),
            (504, Outcome::Overloaded),
        ] {
            assert_eq!(HttpClassify.classify(&with(code)), expected, "{code}");
        }
    }
}
