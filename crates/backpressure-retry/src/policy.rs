//! What may be retried, and when.

use std::time::Duration;

/// The verdict on one attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Return this result to the caller.
    Done,
    /// Worth another attempt, not before `not_before` (the upstream's
    /// `Retry-After` or pushback) if given, and never before the backoff.
    Retry {
        /// The earliest the upstream said it wants to hear from us again.
        not_before: Option<Duration>,
    },
}

/// Decides which requests may be retried and which results are worth it.
///
/// Implemented by [`HttpRetry`](crate::HttpRetry) (feature `http`) and by
/// [`FnPolicy`] for any request type:
///
/// ```
/// use backpressure_retry::{FnPolicy, Verdict};
///
/// // Retry every request (it is a `u32`: trivially replayable) on any error.
/// let policy = FnPolicy::new(
///     |req: &u32| Some(*req),
///     |res: &Result<String, std::io::Error>| match res {
///         Ok(_) => Verdict::Done,
///         Err(_) => Verdict::Retry { not_before: None },
///     },
/// );
/// # let _ = policy;
/// ```
pub trait Policy<Req, Res, E> {
    /// A copy of `req` to send again, or `None` if it must never be resent
    /// (not idempotent, or its body cannot be replayed). Called once per
    /// request before the first attempt, and once per retry on that copy.
    fn replay(&self, req: &Req) -> Option<Req>;

    /// Whether an attempt's result is worth retrying.
    fn check(&self, result: &Result<Res, E>) -> Verdict;
}

/// A [`Policy`] from two closures: `replay(&Req) -> Option<Req>` and
/// `check(&Result<Res, E>) -> Verdict`.
#[derive(Debug, Clone, Copy)]
pub struct FnPolicy<R, C> {
    replay: R,
    check: C,
}

impl<R, C> FnPolicy<R, C> {
    /// A policy from its two rules.
    pub const fn new(replay: R, check: C) -> Self {
        FnPolicy { replay, check }
    }
}

impl<Req, Res, E, R, C> Policy<Req, Res, E> for FnPolicy<R, C>
where
    R: Fn(&Req) -> Option<Req>,
    C: Fn(&Result<Res, E>) -> Verdict,
{
    fn replay(&self, req: &Req) -> Option<Req> {
        (self.replay)(req)
    }

    fn check(&self, result: &Result<Res, E>) -> Verdict {
        (self.check)(result)
    }
}
