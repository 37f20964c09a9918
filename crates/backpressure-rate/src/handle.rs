use std::{
    fmt,
    sync::{Arc, atomic::Ordering::Relaxed},
};

use crate::{Quota, RateStore, layer::Shared};

/// Observes a [`RateLimitLayer`](crate::RateLimitLayer): cloneable, cheap.
pub struct RateLimitHandle<St> {
    shared: Arc<Shared<St>>,
}

/// A point-in-time view of a rate limiter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitSnapshot {
    /// The quota enforced.
    pub quota: Quota,
    /// Requests rejected.
    pub rejected: u64,
    /// Requests that would have been rejected, let through in shadow mode.
    pub shadow_rejected: u64,
    /// Requests delayed into a reserved slot instead of rejected.
    pub delayed: u64,
    /// Buckets held in memory (keyed stores).
    pub keys: Option<usize>,
}

impl<St> RateLimitHandle<St> {
    pub(crate) fn new(shared: Arc<Shared<St>>) -> Self {
        RateLimitHandle { shared }
    }

    /// The store, e.g. to read a [`KeyedStore`](crate::KeyedStore)'s size.
    pub fn store(&self) -> &St {
        &self.shared.store
    }

    /// Everything at once.
    pub fn snapshot<K: ?Sized>(&self) -> RateLimitSnapshot
    where
        St: RateStore<K>,
    {
        let stats = &self.shared.stats;
        RateLimitSnapshot {
            quota: self.shared.store.quota(),
            rejected: stats.rejected.load(Relaxed),
            shadow_rejected: stats.shadow_rejected.load(Relaxed),
            delayed: stats.delayed.load(Relaxed),
            keys: self.shared.store.keys(),
        }
    }
}

impl<St> Clone for RateLimitHandle<St> {
    fn clone(&self) -> Self {
        RateLimitHandle { shared: Arc::clone(&self.shared) }
    }
}

impl<St> fmt::Debug for RateLimitHandle<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHandle")
            .field("name", &self.shared.stats.name)
            .finish_non_exhaustive()
    }
}
