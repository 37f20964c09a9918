use std::{
    future::Ready,
    sync::atomic::{AtomicU64, Ordering::AcqRel, Ordering::Acquire},
    time::Duration,
};

use backpressure_core::{BoxError, ConfigError};

use super::{Check, Decision, RateStore, duration_nanos};
use crate::{Quota, clock::Clock, gcra::Gcra};

/// One bucket for every request: a single atomic TAT, updated with a
/// compare-and-swap. No lock, no allocation.
#[derive(Debug)]
pub struct DirectStore {
    gcra: Gcra,
    quota: Quota,
    clock: Clock,
    tat: AtomicU64,
}

impl DirectStore {
    /// A store enforcing `quota`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if the quota is invalid.
    pub fn new(quota: Quota) -> Result<Self, ConfigError> {
        quota.validate("rate-limit")?;
        let gcra = Gcra::new(&quota)
            .ok_or_else(|| ConfigError::new("rate-limit", "quota", "cannot be represented"))?;
        Ok(DirectStore { gcra, quota, clock: Clock::tokio(), tat: AtomicU64::new(0) })
    }

    /// Reads time from the CPU's timestamp counter instead of tokio's clock
    /// (see the crate docs).
    #[cfg(feature = "fast-clock")]
    #[must_use]
    pub fn with_fast_clock(mut self) -> Self {
        self.clock = Clock::fast();
        self
    }

    /// Decides at an explicit time (nanoseconds since the store was created)
    /// instead of the clock: for conformance tests of other stores against
    /// this one.
    #[doc(hidden)]
    pub fn decide_at(&self, now_nanos: u64, cost: u32, max_wait: Duration) -> Decision {
        let mut tat = self.tat.load(Acquire);
        loop {
            let v = self.gcra.check(tat, now_nanos, cost, duration_nanos(max_wait));
            let Some(new_tat) = v.new_tat else {
                return Decision::from_gcra(v, &self.quota, &self.gcra);
            };
            match self.tat.compare_exchange_weak(tat, new_tat, AcqRel, Acquire) {
                Ok(_) => return Decision::from_gcra(v, &self.quota, &self.gcra),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Checks without going through the trait (the layer's fast path).
    #[inline]
    pub(crate) fn decide(&self, cost: u32, max_wait: Duration) -> Decision {
        let now = self.clock.nanos();
        let max_wait = duration_nanos(max_wait);
        let mut tat = self.tat.load(Acquire);
        loop {
            let v = self.gcra.check(tat, now, cost, max_wait);
            let Some(new_tat) = v.new_tat else {
                return Decision::from_gcra(v, &self.quota, &self.gcra);
            };
            match self.tat.compare_exchange_weak(tat, new_tat, AcqRel, Acquire) {
                Ok(_) => return Decision::from_gcra(v, &self.quota, &self.gcra),
                Err(actual) => tat = actual,
            }
        }
    }
}

impl<K: ?Sized> RateStore<K> for DirectStore {
    type Future = Ready<Result<Decision, BoxError>>;

    #[inline]
    fn check(&self, _key: &K, cost: u32, max_wait: Duration) -> Check<Self::Future> {
        Check::Ready(Ok(self.decide(cost, max_wait)))
    }

    fn quota(&self) -> Quota {
        self.quota
    }
}
