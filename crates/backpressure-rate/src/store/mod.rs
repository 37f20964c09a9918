//! Where buckets live: the [`RateStore`] trait, an in-memory store for one
//! bucket ([`DirectStore`]) and for many keys ([`KeyedStore`]).

use std::{future::Future, time::Duration};

use backpressure_core::{BoxError, RateLimitInfo};

use crate::{
    Quota,
    clock::Clock,
    gcra::{Gcra, Verdict as GcraVerdict},
};

mod direct;
mod keyed;
mod siphash;

pub use direct::DirectStore;
pub use keyed::KeyedStore;

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Conforms: go now.
    Allow,
    /// Conforms after waiting this long (within the layer's `max_wait`); the
    /// slot is already reserved.
    AllowAfter(Duration),
    /// Does not conform. `retry_after` is exact: retrying after exactly that
    /// long conforms (if nothing else used the bucket meanwhile); `None` when
    /// the cost exceeds the burst and can never conform.
    Reject {
        /// Time until the request would conform.
        retry_after: Option<Duration>,
    },
}

/// A store's answer: the verdict, and the bucket's state for headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// What to do with the request.
    pub verdict: Verdict,
    info: Info,
}

/// Header information, computed only when asked for: `remaining` needs a
/// division, which would be a fifth of the admit path's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Info {
    Gcra {
        ahead: u64,
        t: u64,
        tolerance: u64,
        burst: u32,
        quota: u32,
        window: Duration,
    },
    /// Served from a core's reserve, which needs no clock: the bucket's TAT,
    /// and the clock to read if the information is asked for.
    Reserved {
        tat: u64,
        clock: Clock,
        t: u64,
        tolerance: u64,
        burst: u32,
        quota: u32,
        window: Duration,
    },
    Known(RateLimitInfo),
}

impl Decision {
    /// A decision from an external store, with its header information.
    pub fn new(verdict: Verdict, info: RateLimitInfo) -> Self {
        Decision { verdict, info: Info::Known(info) }
    }

    /// Limit, window, remaining and reset, for the `RateLimit` headers.
    pub fn info(&self) -> RateLimitInfo {
        let gcra = |ahead: u64, t: u64, tolerance: u64, burst, quota, window| {
            RateLimitInfo::new(
                burst,
                quota,
                window,
                u32::try_from(tolerance.saturating_sub(ahead) / t.max(1))
                    .unwrap_or(u32::MAX)
                    .min(burst),
                Duration::from_nanos(ahead),
            )
        };
        match self.info {
            Info::Known(info) => info,
            Info::Gcra { ahead, t, tolerance, burst, quota, window } => {
                gcra(ahead, t, tolerance, burst, quota, window)
            }
            Info::Reserved { tat, clock, t, tolerance, burst, quota, window } => {
                gcra(tat.saturating_sub(clock.nanos()), t, tolerance, burst, quota, window)
            }
        }
    }

    /// Admitted from a core's reserve, without reading the clock: the
    /// header information reads it when asked for.
    #[inline]
    pub(crate) fn reserved(tat: u64, clock: Clock, quota: &Quota, gcra: &Gcra) -> Self {
        let info = Info::Reserved {
            tat,
            clock,
            t: gcra.interval(),
            tolerance: gcra.tolerance(),
            burst: gcra.burst(),
            quota: quota.count(),
            window: quota.period(),
        };
        Decision { verdict: Verdict::Allow, info }
    }

    #[inline]
    pub(crate) fn from_gcra(v: GcraVerdict, quota: &Quota, gcra: &Gcra) -> Self {
        let verdict = match v.new_tat {
            Some(_) if v.wait == 0 => Verdict::Allow,
            Some(_) => Verdict::AllowAfter(Duration::from_nanos(v.wait)),
            None if v.impossible => Verdict::Reject { retry_after: None },
            None => Verdict::Reject { retry_after: Some(Duration::from_nanos(v.wait)) },
        };
        let info = Info::Gcra {
            ahead: v.ahead,
            t: gcra.interval(),
            tolerance: gcra.tolerance(),
            burst: gcra.burst(),
            quota: quota.count(),
            window: quota.period(),
        };
        Decision { verdict, info }
    }
}

/// A store's answer, now or later. In-memory stores always answer now, so
/// their path stays synchronous; a remote store (Redis) returns a future.
#[derive(Debug)]
pub enum Check<F> {
    /// Decided synchronously.
    Ready(Result<Decision, BoxError>),
    /// Decided when the future completes.
    Pending(F),
}

/// Checks and updates rate-limit buckets by key.
///
/// Implement it to keep buckets elsewhere (a shared Redis, say) without
/// touching the layer. `K` is what the layer's key extractor returns (`()`
/// for a direct limiter).
pub trait RateStore<K: ?Sized>: Send + Sync + 'static {
    /// The future of an asynchronous check.
    type Future: Future<Output = Result<Decision, BoxError>> + Send + 'static;

    /// Decides a request of `cost` on `key`'s bucket and updates the bucket
    /// if it conforms, allowing a wait of up to `max_wait` (the slot is then
    /// reserved). Must never admit more than the quota.
    fn check(&self, key: &K, cost: u32, max_wait: Duration) -> Check<Self::Future>;

    /// The quota the store enforces.
    fn quota(&self) -> Quota;

    /// Buckets held in memory, if the store keeps any.
    fn keys(&self) -> Option<usize> {
        None
    }
}

#[inline]
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
