use std::{convert::Infallible, error::Error};

use crate::{BoxError, RejectKind, Rejected};

/// What a completed call says about the health of the service behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The dependency did its job.
    Success,
    /// The dependency failed or was overloaded: counts against a circuit
    /// breaker, and is a "drop" for an adaptive concurrency limit.
    Failure,
    /// Says nothing about the dependency (a client error, or a rejection by
    /// one of our own layers further in): not counted at all.
    Ignore,
}

/// Maps the result of a call to an [`Outcome`].
///
/// Closures `Fn(&Result<Res, Err>) -> Outcome` are classifiers:
///
/// ```
/// use backpressure_core::{Classify, Outcome};
///
/// // A service whose `Ok(false)` means "the backend said it is busy".
/// let busy_is_failure = |r: &Result<bool, std::io::Error>| match r {
///     Ok(true) => Outcome::Success,
///     Ok(false) | Err(_) => Outcome::Failure,
/// };
/// assert_eq!(busy_is_failure.classify(&Ok(false)), Outcome::Failure);
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
/// and is a [`Outcome::Failure`]; every other error is a failure.
pub trait ClassifyError {
    /// Classifies this error.
    fn classify_error(&self) -> Outcome;
}

fn classify_dyn(error: &(dyn Error + 'static)) -> Outcome {
    match Rejected::find_in(error) {
        Some(r) => classify_rejected(r),
        None => Outcome::Failure,
    }
}

fn classify_rejected(r: &Rejected) -> Outcome {
    match r.kind() {
        RejectKind::DeadlineExceeded => Outcome::Failure,
        _ => Outcome::Ignore,
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
        Outcome::Failure
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

/// Classifies `http::Response`s by status: 5xx and 429 are failures (429 and
/// 503 are the upstream's overload signals), and so are trailers-only gRPC
/// responses with `grpc-status` 4 `DEADLINE_EXCEEDED`, 8
/// `RESOURCE_EXHAUSTED` or 14 `UNAVAILABLE`; everything else — 4xx
/// included, since a client's mistake is not the dependency's — is a success.
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
/// assert_eq!(HttpClassify.classify(&with(StatusCode::TOO_MANY_REQUESTS)), Outcome::Failure);
/// assert_eq!(HttpClassify.classify(&with(StatusCode::BAD_GATEWAY)), Outcome::Failure);
/// let grpc: Result<Response<()>, std::io::Error> =
///     Ok(Response::builder().header("grpc-status", "14").body(()).unwrap());
/// assert_eq!(HttpClassify.classify(&grpc), Outcome::Failure);
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
                if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
                    return Outcome::Failure;
                }
                // gRPC answers errors with HTTP 200: only then is the header
                // worth a look-up.
                let grpc_overload = status == http::StatusCode::OK
                    && matches!(
                        crate::pushback::grpc_status(res.headers()),
                        Some(GRPC_DEADLINE_EXCEEDED | GRPC_RESOURCE_EXHAUSTED | GRPC_UNAVAILABLE)
                    );
                if grpc_overload { Outcome::Failure } else { Outcome::Success }
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
            (RejectKind::DeadlineExceeded, Outcome::Failure),
        ] {
            let boxed: Result<(), BoxError> = Err(Rejected::new(kind).into());
            assert_eq!(DefaultClassify.classify(&boxed), expected, "{kind:?}");
            let bare: Result<(), Rejected> = Err(Rejected::new(kind));
            assert_eq!(DefaultClassify.classify(&bare), expected, "{kind:?}");
        }
    }
}
